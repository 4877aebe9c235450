//! The contract's purchase scenarios against a real server over HTTP, each checked twice: by the
//! replies clients saw and by the audit of what the stores hold.

use std::collections::HashSet;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::{tally, users, TestServer};

/// Exactly `winners` replies are 201 with distinct orders, every other is 409 `sold_out`, and
/// the audit holds exactly the winners' units as pending.
async fn stampede(server: &TestServer, stock: u64, buyers: usize) {
    let sale_id = server.create_sale(json!({ "stock": stock })).await;
    let replies = server
        .purchase_all(&sale_id, users(&format!("buyer-{sale_id}"), buyers))
        .await;
    let winners = (stock as usize).min(buyers);
    let counts = tally(&replies);
    assert_eq!(
        counts.get(&(201, String::new())),
        Some(&winners),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&(409, "sold_out".into())).copied().unwrap_or(0),
        buyers - winners,
        "{counts:?}"
    );
    let order_ids: HashSet<&str> = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .map(|reply| reply.body["id"].as_str().expect("order id"))
        .collect();
    assert_eq!(order_ids.len(), winners, "every winner has its own order");
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["pending"], json!(winners));
    assert_eq!(audit["remaining"], json!(stock as usize - winners));
}

pub async fn seven_thousand_buyers_for_one_hundred_units(server: TestServer) {
    stampede(&server, 100, 7000).await;
}

pub async fn ten_thousand_units_for_twenty_thousand_buyers(server: TestServer) {
    stampede(&server, 10_000, 20_000).await;
}

pub async fn three_sales_at_once_each_get_exactly_their_winners(server: TestServer) {
    let (a, b, c) = tokio::join!(
        stampede(&server, 50, 1000),
        stampede(&server, 50, 1000),
        stampede(&server, 50, 1000)
    );
    let ((), (), ()) = (a, b, c);
}

pub async fn one_buyer_sending_twenty_purchases_wins_once(server: TestServer) {
    let sale_id = server.create_sale(json!({ "stock": 100 })).await;
    let replies = server
        .purchase_all(&sale_id, vec!["greedy".to_owned(); 20])
        .await;
    let counts = tally(&replies);
    assert_eq!(counts.get(&(201, String::new())), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&(409, "already_purchased".into())), Some(&19));
    let order_id = replies
        .iter()
        .find(|reply| reply.status == StatusCode::CREATED)
        .map(|reply| reply.body["id"].clone())
        .expect("a winner");
    for reply in replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CONFLICT)
    {
        assert_eq!(reply.body["error"]["order_id"], order_id, "names the order");
    }
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["pending"], json!(1));
}

pub async fn per_user_limit_counts_quantities(server: TestServer) {
    let sale_id = server
        .create_sale(json!({ "stock": 10, "per_user_limit": 3 }))
        .await;
    let first = server.purchase(&sale_id, "carol", Some(2)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["quantity"], json!(2));
    let too_many = server.purchase(&sale_id, "carol", Some(2)).await;
    assert_eq!(too_many.status, StatusCode::CONFLICT);
    assert_eq!(too_many.code(), "already_purchased");
    assert_eq!(too_many.body["error"]["order_id"], first.body["id"]);
    let last = server.purchase(&sale_id, "carol", Some(1)).await;
    assert_eq!(last.status, StatusCode::CREATED, "{}", last.body);
    for quantity in [0, 4] {
        let invalid = server.purchase(&sale_id, "dave", Some(quantity)).await;
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST, "{quantity}");
        assert_eq!(invalid.code(), "invalid_quantity");
    }
    // All or nothing: 3 wanted, 7 left, then 3 + 3 + 1 ... the last asks for more than is left.
    for user in ["erin", "frank"] {
        let reply = server.purchase(&sale_id, user, Some(3)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let short = server.purchase(&sale_id, "grace", Some(3)).await;
    assert_eq!(short.status, StatusCode::CONFLICT);
    assert_eq!(short.code(), "sold_out");
    assert_eq!(short.body["error"]["remaining"], json!(1));
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["remaining"], json!(1));
    assert_eq!(audit["pending"], json!(9));
}

pub async fn the_same_idempotency_key_five_times_at_once_makes_one_order(server: TestServer) {
    let sale_id = server.create_sale(json!({ "stock": 100 })).await;
    let token = server.token("ivan");
    let path = format!("/api/v1/sales/{sale_id}/purchase");
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (client, addr, token, path) = (
            server.client.clone(),
            server.next_addr(),
            token.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            crate::harness::send(
                &client,
                addr,
                Method::POST,
                &path,
                Some(&token),
                None,
                &[("idempotency-key", "checkout-42")],
            )
            .await
        }));
    }
    let mut order_ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(
            reply.status == StatusCode::CREATED || reply.status == StatusCode::OK,
            "{} {}",
            reply.status,
            reply.body
        );
        created += usize::from(reply.status == StatusCode::CREATED);
        order_ids.insert(reply.body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(order_ids.len(), 1, "one order: {order_ids:?}");
    assert_eq!(created, 1);
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["pending"], json!(1));

    // The key keeps answering with its order after a cancel, and after a restart.
    let order_id = order_ids.into_iter().next().unwrap();
    let cancel = server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::OK);
    let again = server
        .send(
            Method::POST,
            &path,
            Some(&token),
            None,
            &[("idempotency-key", "checkout-42")],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], json!(order_id));
    assert_eq!(again.body["status"], json!("cancelled"));
    let other_key = server
        .send(
            Method::POST,
            &path,
            Some(&token),
            None,
            &[("idempotency-key", "checkout-43")],
        )
        .await;
    assert_eq!(
        other_key.status,
        StatusCode::CREATED,
        "a new key buys again"
    );
    server.assert_consistent(&sale_id).await;
}

pub async fn a_refused_key_is_not_remembered(server: TestServer) {
    let sale_id = server.create_sale(json!({ "stock": 1 })).await;
    assert_eq!(
        server.purchase(&sale_id, "first", None).await.status,
        StatusCode::CREATED
    );
    let token = server.token("second");
    let path = format!("/api/v1/sales/{sale_id}/purchase");
    let refused = server
        .send(
            Method::POST,
            &path,
            Some(&token),
            None,
            &[("idempotency-key", "k")],
        )
        .await;
    assert_eq!(refused.code(), "sold_out");
    let order_id = server
        .get("/api/v1/orders", Some(&server.admin_token))
        .await
        .body["orders"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancel = server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&server.admin_token),
            None,
            &[],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::OK, "admin may cancel");
    let retried = server
        .send(
            Method::POST,
            &path,
            Some(&token),
            None,
            &[("idempotency-key", "k")],
        )
        .await;
    assert_eq!(
        retried.status,
        StatusCode::CREATED,
        "decided afresh: {}",
        retried.body
    );
    server.assert_consistent(&sale_id).await;
}

pub async fn the_sale_window_is_enforced(server: TestServer) {
    let now = server.now();
    let starts_at = now + jiff::SignedDuration::from_millis(1500);
    let ends_at = now + jiff::SignedDuration::from_millis(3000);
    let sale_id = server
        .create_sale(json!({
            "stock": 5,
            "starts_at": starts_at.to_string(),
            "ends_at": ends_at.to_string(),
        }))
        .await;
    let sale = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
    assert_eq!(sale.body["state"], json!("scheduled"));
    let early = server.purchase(&sale_id, "early", None).await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    assert_eq!(early.code(), "not_started");
    assert_eq!(
        early.body["error"]["starts_at"],
        json!(starts_at.to_string())
    );

    server.advance(jiff::SignedDuration::from_millis(1600));
    let live = server.purchase(&sale_id, "on-time", None).await;
    assert_eq!(live.status, StatusCode::CREATED, "{}", live.body);
    let sale = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
    assert_eq!(sale.body["state"], json!("live"));

    server.advance(jiff::SignedDuration::from_millis(1600));
    let late = server.purchase(&sale_id, "late", None).await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert_eq!(late.code(), "sale_ended");
    let sale = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
    assert_eq!(sale.body["state"], json!("ended"));
    server.assert_consistent(&sale_id).await;
}

pub async fn unpaid_orders_expire_and_their_stock_sells_again(server: TestServer) {
    let sale_id = server
        .create_sale(json!({ "stock": 1, "payment_window_secs": 1 }))
        .await;
    let order = server.purchase(&sale_id, "slow-payer", None).await;
    assert_eq!(order.status, StatusCode::CREATED);
    let order_id = order.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.purchase(&sale_id, "waiting", None).await.code(),
        "sold_out"
    );

    server.advance(jiff::SignedDuration::from_millis(1100));
    // Past expires_at, paying is refused even if the sweep has not run yet.
    let pay = server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/pay"),
            Some(&server.token("slow-payer")),
            None,
            &[],
        )
        .await;
    assert_eq!(pay.status, StatusCode::CONFLICT);
    assert_eq!(pay.code(), "order_not_payable");

    let winner = wait_for_created(&server, &sale_id, "waiting").await;
    assert_eq!(winner.body["user_id"], json!("waiting"));
    let expired = server
        .get(
            &format!("/api/v1/orders/{order_id}"),
            Some(&server.token("slow-payer")),
        )
        .await;
    assert_eq!(expired.body["status"], json!("expired"));
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["expired"], json!(1));
    assert_eq!(audit["pending"], json!(1));

    // The buyer whose order expired may buy again once stock is back.
    let paid_by_waiting = server
        .send(
            Method::POST,
            &format!(
                "/api/v1/orders/{}/cancel",
                winner.body["id"].as_str().unwrap()
            ),
            Some(&server.token("waiting")),
            None,
            &[],
        )
        .await;
    assert_eq!(paid_by_waiting.status, StatusCode::OK);
    let again = server.purchase(&sale_id, "slow-payer", None).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    server.assert_consistent(&sale_id).await;
}

/// Retries a purchase until it succeeds: the sweep (every 100 ms in tests) returns the unit of
/// the order the manual clock made overdue. Every refusal meanwhile is `sold_out`.
async fn wait_for_created(server: &TestServer, sale_id: &str, user: &str) -> crate::harness::Reply {
    let created = std::sync::Mutex::new(None);
    let sold = crate::harness::eventually(Duration::from_secs(5), || async {
        let reply = server.purchase(sale_id, user, None).await;
        if reply.status != StatusCode::CREATED {
            assert_eq!(reply.code(), "sold_out", "{}", reply.body);
            return false;
        }
        *created.lock().unwrap() = Some(reply);
        true
    })
    .await;
    assert!(sold, "{user} never got the returned unit");
    created
        .into_inner()
        .unwrap()
        .expect("the purchase that succeeded")
}

pub async fn pay_and_cancel_follow_the_life_cycle(server: TestServer) {
    let sale_id = server.create_sale(json!({ "stock": 2 })).await;
    let token = server.token("henry");
    let order = server.purchase(&sale_id, "henry", None).await;
    let order_id = order.body["id"].as_str().unwrap().to_owned();
    let pay_path = format!("/api/v1/orders/{order_id}/pay");
    let cancel_path = format!("/api/v1/orders/{order_id}/cancel");

    let paid = server
        .send(Method::POST, &pay_path, Some(&token), None, &[])
        .await;
    assert_eq!(paid.status, StatusCode::OK);
    assert_eq!(paid.body["status"], json!("paid"));
    assert!(paid.body["paid_at"].is_string());
    let paid_again = server
        .send(Method::POST, &pay_path, Some(&token), None, &[])
        .await;
    assert_eq!(paid_again.status, StatusCode::OK);
    assert_eq!(paid_again.body, paid.body, "unchanged");
    let cancel_paid = server
        .send(Method::POST, &cancel_path, Some(&token), None, &[])
        .await;
    assert_eq!(cancel_paid.status, StatusCode::CONFLICT);
    assert_eq!(cancel_paid.code(), "order_not_cancellable");

    let second = server.purchase(&sale_id, "iris", None).await;
    let second_id = second.body["id"].as_str().unwrap().to_owned();
    let iris = server.token("iris");
    let cancel = format!("/api/v1/orders/{second_id}/cancel");
    let cancelled = server
        .send(Method::POST, &cancel, Some(&iris), None, &[])
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["status"], json!("cancelled"));
    let cancelled_again = server
        .send(Method::POST, &cancel, Some(&iris), None, &[])
        .await;
    assert_eq!(cancelled_again.status, StatusCode::OK);
    assert_eq!(cancelled_again.body, cancelled.body);
    let pay_cancelled = server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{second_id}/pay"),
            Some(&iris),
            None,
            &[],
        )
        .await;
    assert_eq!(pay_cancelled.code(), "order_not_payable");

    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(
        (
            audit["paid"].clone(),
            audit["cancelled"].clone(),
            audit["remaining"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    let rebuy = server.purchase(&sale_id, "iris", None).await;
    assert_eq!(
        rebuy.status,
        StatusCode::CREATED,
        "cancelled stock sells again"
    );
    server.assert_consistent(&sale_id).await;
}

pub async fn orders_are_listed_newest_first_and_paginated(server: TestServer) {
    let sales = [
        server
            .create_sale(json!({ "stock": 10, "per_user_limit": 10 }))
            .await,
        server
            .create_sale(json!({ "stock": 10, "per_user_limit": 10 }))
            .await,
    ];
    let mut made = Vec::new();
    for round in 0..5 {
        for sale_id in &sales {
            let reply = server.purchase(sale_id, "lister", None).await;
            assert_eq!(reply.status, StatusCode::CREATED, "round {round}");
            made.push(reply.body["id"].as_str().unwrap().to_owned());
        }
    }
    server.purchase(&sales[0], "someone-else", None).await;
    let token = server.token("lister");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/orders?limit=3".to_owned(),
            Some(cursor) => format!("/api/v1/orders?limit=3&cursor={cursor}"),
        };
        let page = server.get(&path, Some(&token)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for order in page.body["orders"].as_array().unwrap() {
            assert_eq!(order["user_id"], json!("lister"));
            seen.push(order["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    made.reverse();
    assert_eq!(seen, made, "every order once, newest first");
    let filtered = server
        .get(
            &format!("/api/v1/orders?sale_id={}", sales[1]),
            Some(&token),
        )
        .await;
    assert_eq!(filtered.body["orders"].as_array().unwrap().len(), 5);
    let all = server
        .get("/api/v1/orders?limit=500", Some(&server.admin_token))
        .await;
    assert_eq!(
        all.body["orders"].as_array().unwrap().len(),
        11,
        "the admin sees all"
    );
    let listed = server.get("/api/v1/sales", None).await;
    let ids: Vec<&str> = listed.body["sales"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![sales[1].as_str(), sales[0].as_str()],
        "newest sale first"
    );
}

/// `?current=true` lists only the sales a buyer can still act on or has just seen end: a sale
/// that ended over an hour ago (its payment window shorter) is left out, one that ended minutes
/// ago and those that have not ended stay; without it every sale is listed; a bad value is `400`.
pub async fn the_current_sales_leave_out_those_long_ended(server: TestServer) {
    let now = server.now();
    let ending = server
        .create_sale(json!({
            "stock": 3,
            "payment_window_secs": 60,
            "ends_at": (now + jiff::SignedDuration::from_secs(10)).to_string(),
        }))
        .await;
    let endless = server.create_sale(json!({ "stock": 3 })).await;
    let upcoming = server
        .create_sale(json!({
            "stock": 3,
            "starts_at": (now + jiff::SignedDuration::from_hours(24)).to_string(),
        }))
        .await;
    let listed = |path: &'static str| {
        let server = &server;
        async move {
            let reply = server.get(path, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            reply.body["sales"]
                .as_array()
                .unwrap()
                .iter()
                .map(|sale| sale["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let all = vec![
        upcoming.to_string(),
        endless.to_string(),
        ending.to_string(),
    ];
    // A cluster node learns of sales another node made within a second.
    let everywhere = crate::harness::eventually(Duration::from_secs(5), || async {
        let mut every = true;
        for _ in 0..server.addrs.len() {
            every &= listed("/api/v1/sales?current=true").await == all;
        }
        every
    })
    .await;
    assert!(everywhere, "every node lists the three sales as current");
    server.advance(jiff::SignedDuration::from_mins(30));
    assert_eq!(
        listed("/api/v1/sales?current=true").await,
        all,
        "ended minutes ago"
    );
    server.advance(jiff::SignedDuration::from_mins(31));
    for _ in 0..server.addrs.len() {
        assert_eq!(
            listed("/api/v1/sales?current=true").await,
            vec![upcoming.to_string(), endless.to_string()],
            "ended over an hour ago"
        );
        assert_eq!(listed("/api/v1/sales").await, all, "every sale without it");
        assert_eq!(listed("/api/v1/sales?current=false").await, all);
    }
    let page = server.get("/api/v1/sales?current=true&limit=1", None).await;
    assert_eq!(page.body["sales"][0]["id"], json!(upcoming.to_string()));
    let rest = format!(
        "/api/v1/sales?current=true&limit=1&cursor={}",
        page.body["next_cursor"].as_str().unwrap()
    );
    let rest = server.get(&rest, None).await;
    assert_eq!(rest.body["sales"][0]["id"], json!(endless.to_string()));
    assert_eq!(
        rest.body["next_cursor"],
        json!(null),
        "the long-ended sale is not a page"
    );
    let bad = server.get("/api/v1/sales?current=yes", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(bad.code(), "invalid_request");
}

/// Runs every scenario against one kind of deployment; `$start` is an async expression giving
/// `Option<TestServer>` (`None`: not available here, skipped).
/// `GET /api/v1/sales` lists every sale without `limit` (the contract's form, no cursor field), and
/// pages of `limit` with a `next_cursor` when asked; bad paging values are `400`.
pub async fn sales_are_listed_newest_first_and_paginated_on_request(server: TestServer) {
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(server.create_sale(json!({ "stock": 3 })).await);
    }
    created.reverse();
    // A cluster node learns of sales another node made within a second.
    let everywhere = crate::harness::eventually(Duration::from_secs(5), || async {
        let mut all = true;
        for _ in 0..server.addrs.len() {
            let listed = server.get("/api/v1/sales", None).await.body;
            all &= listed["sales"].as_array().map_or(0, Vec::len) == 5;
        }
        all
    })
    .await;
    assert!(everywhere, "every node lists the five sales");
    let whole = server.get("/api/v1/sales", None).await.body;
    assert!(whole.get("next_cursor").is_none(), "{whole}");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/sales?limit=2".to_owned(),
            Some(cursor) => format!("/api/v1/sales?limit=2&cursor={cursor}"),
        };
        let page = server.get(&path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let sales = page.body["sales"].as_array().unwrap().clone();
        assert!(sales.len() <= 2);
        paged.extend(
            sales
                .iter()
                .map(|sale| sale["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert_eq!(page.body["next_cursor"], json!(null));
                break;
            }
        }
    }
    assert_eq!(paged, created, "newest first, each once");
    for bad in ["limit=0", "limit=501", "limit=x", "cursor=a.b"] {
        let reply = server.get(&format!("/api/v1/sales?{bad}"), None).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_request");
    }
}

crate::server_suite!(embedded, async { Some(TestServer::start().await) };
    seven_thousand_buyers_for_one_hundred_units, ten_thousand_units_for_twenty_thousand_buyers, three_sales_at_once_each_get_exactly_their_winners, one_buyer_sending_twenty_purchases_wins_once, per_user_limit_counts_quantities, the_same_idempotency_key_five_times_at_once_makes_one_order, a_refused_key_is_not_remembered, the_sale_window_is_enforced, unpaid_orders_expire_and_their_stock_sells_again, pay_and_cancel_follow_the_life_cycle, orders_are_listed_newest_first_and_paginated, sales_are_listed_newest_first_and_paginated_on_request, the_current_sales_leave_out_those_long_ended);
// Two cluster nodes sharing Redis and PostgreSQL, requests spread across both.
crate::server_suite!(two_nodes, TestServer::start_cluster(2);
    seven_thousand_buyers_for_one_hundred_units, ten_thousand_units_for_twenty_thousand_buyers, three_sales_at_once_each_get_exactly_their_winners, one_buyer_sending_twenty_purchases_wins_once, per_user_limit_counts_quantities, the_same_idempotency_key_five_times_at_once_makes_one_order, a_refused_key_is_not_remembered, the_sale_window_is_enforced, unpaid_orders_expire_and_their_stock_sells_again, pay_and_cancel_follow_the_life_cycle, orders_are_listed_newest_first_and_paginated, sales_are_listed_newest_first_and_paginated_on_request, the_current_sales_leave_out_those_long_ended);
