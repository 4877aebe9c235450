//! Running a live sale over HTTP, on an embedded server and on two cluster nodes with requests
//! alternating between them: stock added in the middle of a stampede, a pause on one node met by
//! a purchase on the other at once, resume, end, stock taken off (never held units), a change's
//! version followed by every node and by the cached reads, presale codes, and the CSV export
//! read back and compared with the JSON listing. Each case ends with the audit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{eventually, send, users, Reply, TestServer};

async fn patch(server: &TestServer, sale_id: &str, body: Value) -> Reply {
    server
        .send(
            Method::PATCH,
            &format!("/api/v1/sales/{sale_id}"),
            Some(&server.admin_token),
            Some(body.to_string()),
            &[],
        )
        .await
}

async fn control(server: &TestServer, sale_id: &str, action: &str) -> Reply {
    server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale_id}/{action}"),
            Some(&server.admin_token),
            None,
            &[],
        )
        .await
}

fn ok(reply: &Reply) -> &Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    &reply.body
}

async fn order_action(server: &TestServer, user: &str, order_id: &str, action: &str) -> Reply {
    server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/{action}"),
            Some(&server.token(user)),
            None,
            &[],
        )
        .await
}

/// Every node shows the sale at `version` (each node within a second of the change).
async fn every_node_shows(server: &TestServer, sale_id: &str, version: u64) {
    let shown = eventually(Duration::from_secs(5), || async {
        let mut all = true;
        for _ in 0..server.addrs.len() {
            let sale = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
            all &= sale.body["version"] == json!(version);
        }
        all
    })
    .await;
    assert!(shown, "every node shows version {version} of {sale_id}");
}

pub async fn adding_stock_during_a_stampede_sells_exactly_the_new_total(server: TestServer) {
    let sale_id = server.create_sale(json!({ "stock": 200 })).await;
    let server = Arc::new(server);
    let answered = Arc::new(AtomicUsize::new(0));
    let mut buyers = Vec::new();
    for user in users(&format!("first-{sale_id}"), 1500) {
        let (server, answered, path) = (
            Arc::clone(&server),
            Arc::clone(&answered),
            format!("/api/v1/sales/{sale_id}/purchase"),
        );
        buyers.push(tokio::spawn(async move {
            let reply = send(
                &server.client,
                server.next_addr(),
                Method::POST,
                &path,
                Some(&server.token(&user)),
                None,
                &[],
            )
            .await;
            answered.fetch_add(1, Ordering::Relaxed);
            reply
        }));
    }
    // Once the crowd is under way, 300 more units.
    let under_way = crate::harness::eventually_holds(Duration::from_secs(30), || {
        answered.load(Ordering::Relaxed) >= 100
    })
    .await;
    assert!(under_way);
    let added = patch(&server, &sale_id, json!({ "add_stock": 300 })).await;
    assert_eq!(ok(&added)["stock"], json!(500));
    assert_eq!(added.body["version"], json!(2));
    let mut counts: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for buyer in buyers {
        let reply = buyer.await.expect("buyer");
        *counts
            .entry((reply.status.as_u16(), reply.code().to_owned()))
            .or_default() += 1;
    }
    // Whatever of the 500 the first crowd did not take, a second one takes, and not one more.
    let second = server
        .purchase_all(&sale_id, users(&format!("second-{sale_id}"), 600))
        .await;
    for reply in &second {
        *counts
            .entry((reply.status.as_u16(), reply.code().to_owned()))
            .or_default() += 1;
    }
    assert_eq!(counts.get(&(201, String::new())), Some(&500), "{counts:?}");
    assert_eq!(
        counts.get(&(409, "sold_out".into())),
        Some(&(2100 - 500)),
        "{counts:?}"
    );
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(
        (
            audit["stock"].clone(),
            audit["remaining"].clone(),
            audit["pending"].clone()
        ),
        (json!(500), json!(0), json!(500))
    );
}

pub async fn a_pause_on_one_node_stops_purchases_on_the_other_at_once(server: TestServer) {
    let sale_id = server.create_sale(json!({ "stock": 10 })).await;
    let bought = server.purchase(&sale_id, "early", None).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let order_id = bought.body["id"].as_str().expect("order id").to_owned();
    // Consecutive requests go to alternating nodes: the pause to one, each purchase after it
    // to the next, whose copy of the sale may be older.
    let paused = control(&server, &sale_id, "pause").await;
    assert_eq!(ok(&paused)["state"], json!("paused"));
    assert_eq!(paused.body["version"], json!(2));
    for buyer in 0..6 {
        let refused = server
            .purchase(&sale_id, &format!("during-{buyer}"), None)
            .await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert_eq!(refused.code(), "sale_paused");
    }
    every_node_shows(&server, &sale_id, 2).await;
    let shown = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
    assert_eq!(shown.body["state"], json!("paused"));
    assert_eq!(
        ok(&control(&server, &sale_id, "pause").await)["version"],
        json!(2),
        "pausing a paused sale changes nothing"
    );
    // Orders already taken can still be paid.
    let paid = order_action(&server, "early", &order_id, "pay").await;
    assert_eq!(ok(&paid)["status"], json!("paid"));
    let resumed = control(&server, &sale_id, "resume").await;
    assert_eq!(ok(&resumed)["state"], json!("live"));
    for buyer in 0..4 {
        let again = server
            .purchase(&sale_id, &format!("after-{buyer}"), None)
            .await;
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    }
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(
        (audit["paid"].clone(), audit["pending"].clone()),
        (json!(1), json!(4))
    );
}

pub async fn an_ended_sale_sells_nothing_anywhere(server: TestServer) {
    let sale_id = server
        .create_sale(json!({ "stock": 10, "ends_at": (server.now() + jiff::SignedDuration::from_secs(3600)).to_string() }))
        .await;
    let bought = server.purchase(&sale_id, "in-time", None).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let ended = control(&server, &sale_id, "end").await;
    assert_eq!(ok(&ended)["state"], json!("ended"));
    let ends_at: jiff::Timestamp = ended.body["ends_at"]
        .as_str()
        .expect("ends_at")
        .parse()
        .expect("a time");
    assert_eq!(ends_at, server.now(), "ends_at becomes now");
    for buyer in 0..4 {
        let refused = server
            .purchase(&sale_id, &format!("late-{buyer}"), None)
            .await;
        assert_eq!(refused.code(), "sale_ended", "{}", refused.body);
    }
    assert_eq!(
        ok(&control(&server, &sale_id, "end").await)["version"],
        ended.body["version"],
        "ending an ended sale changes nothing"
    );
    let extended = patch(
        &server,
        &sale_id,
        json!({ "ends_at": (server.now() + jiff::SignedDuration::from_secs(60)).to_string() }),
    )
    .await;
    assert_eq!(
        ok(&extended)["state"],
        json!("live"),
        "an end can be moved later"
    );
    // A node whose copy is older refuses what the new end allows for at most its second.
    let version = extended.body["version"].as_u64().unwrap();
    every_node_shows(&server, &sale_id, version).await;
    let again = server.purchase(&sale_id, "reopened", None).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    server.assert_consistent(&sale_id).await;
}

pub async fn removing_stock_never_takes_held_units(server: TestServer) {
    let sale_id = server.create_sale(json!({ "stock": 10 })).await;
    let mut orders = Vec::new();
    for buyer in 0..4 {
        let user = format!("holder-{buyer}");
        let reply = server.purchase(&sale_id, &user, None).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        orders.push((user, reply.body["id"].as_str().unwrap().to_owned()));
    }
    let refused = patch(&server, &sale_id, json!({ "remove_stock": 7 })).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.code(), "insufficient_stock");
    assert_eq!(refused.body["error"]["remaining"], json!(6));
    let beyond = patch(&server, &sale_id, json!({ "remove_stock": 11 })).await;
    assert_eq!(beyond.code(), "insufficient_stock");
    let removed = patch(&server, &sale_id, json!({ "remove_stock": 6 })).await;
    assert_eq!(
        (
            ok(&removed)["stock"].clone(),
            removed.body["remaining"].clone()
        ),
        (json!(4), json!(0))
    );
    assert_eq!(removed.body["state"], json!("sold_out"));
    let sold_out = server.purchase(&sale_id, "after", None).await;
    assert_eq!(sold_out.code(), "sold_out", "{}", sold_out.body);
    server.assert_consistent(&sale_id).await;
    // A unit given back goes on sale again.
    let (user, order_id) = &orders[0];
    assert_eq!(
        ok(&order_action(&server, user, order_id, "cancel").await)["status"],
        json!("cancelled")
    );
    let returned = eventually(Duration::from_secs(5), || async {
        server.purchase(&sale_id, "after", None).await.status == StatusCode::CREATED
    })
    .await;
    assert!(returned, "the cancelled unit sells again");
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(
        (
            audit["stock"].clone(),
            audit["pending"].clone(),
            audit["cancelled"].clone()
        ),
        (json!(4), json!(4), json!(1))
    );
}

pub async fn a_change_makes_a_version_every_node_and_every_cached_read_follows(server: TestServer) {
    let sale_id = server.create_sale(json!({ "stock": 20 })).await;
    let before = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
    assert_eq!(before.body["version"], json!(1));
    let tag = before.headers["etag"].to_str().unwrap().to_owned();
    let ends_at = server.now() + jiff::SignedDuration::from_secs(7200);
    let changed = patch(
        &server,
        &sale_id,
        json!({ "name": "Renamed", "description": "Now with more", "per_user_limit": 3,
                "ends_at": ends_at.to_string() }),
    )
    .await;
    let body = ok(&changed);
    assert_eq!(
        (
            body["name"].clone(),
            body["description"].clone(),
            body["per_user_limit"].clone(),
            body["version"].clone()
        ),
        (json!("Renamed"), json!("Now with more"), json!(3), json!(2))
    );
    assert_eq!(body["ends_at"], json!(ends_at.to_string()));
    every_node_shows(&server, &sale_id, 2).await;
    for _ in 0..server.addrs.len() {
        let revalidated = server
            .send(
                Method::GET,
                &format!("/api/v1/sales/{sale_id}"),
                None,
                None,
                &[("if-none-match", &tag)],
            )
            .await;
        assert_eq!(
            revalidated.status,
            StatusCode::OK,
            "the old ETag names an old version"
        );
        assert_ne!(revalidated.headers["etag"].to_str().unwrap(), tag);
    }
    let three = server.purchase(&sale_id, "bulk", Some(3)).await;
    assert_eq!(
        three.status,
        StatusCode::CREATED,
        "the raised limit: {}",
        three.body
    );
    let unchanged = patch(&server, &sale_id, json!({})).await;
    assert_eq!(
        ok(&unchanged)["version"],
        json!(2),
        "an empty change changes nothing"
    );
    let listed = server.get("/api/v1/sales", None).await;
    let listed_sale = listed.body["sales"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sale| sale["id"] == json!(sale_id))
        .cloned()
        .expect("listed");
    assert_eq!(listed_sale["name"], json!("Renamed"));
    server.assert_consistent(&sale_id).await;
}

async fn buy_with_code(
    server: &TestServer,
    sale_id: &str,
    user: &str,
    code: Option<&str>,
) -> Reply {
    let headers: Vec<(&str, &str)> = code.map(|code| ("access-code", code)).into_iter().collect();
    server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale_id}/purchase"),
            Some(&server.token(user)),
            None,
            &headers,
        )
        .await
}

async fn make_codes(server: &TestServer, sale_id: &str, count: u64, query: &str) -> Reply {
    server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale_id}/codes{query}"),
            Some(&server.admin_token),
            Some(json!({ "count": count }).to_string()),
            &[],
        )
        .await
}

pub async fn a_presale_sells_only_to_buyers_with_their_codes(server: TestServer) {
    let sale_id = server
        .create_sale(json!({ "stock": 10, "access": "codes" }))
        .await;
    let shown = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
    assert_eq!(shown.body["access"], json!("codes"));
    let made = make_codes(&server, &sale_id, 20, "").await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let codes: Vec<String> = made.body["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 20);
    let csv = make_codes(&server, &sale_id, 2, "?format=csv").await;
    assert_eq!(csv.status, StatusCode::CREATED);
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.body.as_str().expect("CSV text").to_owned();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(
        (lines.len(), lines[0], lines[3]),
        (4, "code", ""),
        "{text:?}"
    );
    // One of the CSV's codes works too.
    let from_csv = buy_with_code(&server, &sale_id, "csv-holder", Some(lines[1])).await;
    assert_eq!(from_csv.status, StatusCode::CREATED, "{}", from_csv.body);

    let other_sale = server
        .create_sale(json!({ "stock": 10, "access": "codes" }))
        .await;
    let elsewhere = make_codes(&server, &other_sale, 1, "").await.body["codes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    for (what, code) in [
        ("no code", None),
        ("an unknown code", Some("AAAAAAAAAAAAAAAAAAAAAA")),
        ("garbage", Some("not a code")),
        ("another sale's code", Some(elsewhere.as_str())),
    ] {
        let refused = buy_with_code(&server, &sale_id, "ann", code).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{what}: {}",
            refused.body
        );
        assert_eq!(refused.code(), "access_code_required", "{what}");
    }
    let ann = buy_with_code(&server, &sale_id, "ann", Some(&codes[0])).await;
    assert_eq!(ann.status, StatusCode::CREATED, "{}", ann.body);
    let bob = buy_with_code(&server, &sale_id, "bob", Some(&codes[0])).await;
    assert_eq!(
        bob.status,
        StatusCode::FORBIDDEN,
        "another buyer's code: {}",
        bob.body
    );
    assert_eq!(bob.code(), "access_code_required");
    let ann_again = buy_with_code(&server, &sale_id, "ann", Some(&codes[0])).await;
    assert_eq!(ann_again.code(), "already_purchased", "{}", ann_again.body);
    // Two buyers racing with one code, on alternating nodes: exactly one wins.
    for (round, code) in codes[1..6].iter().enumerate() {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        let (first, second) = tokio::join!(
            buy_with_code(&server, &sale_id, &x, Some(code)),
            buy_with_code(&server, &sale_id, &y, Some(code)),
        );
        let statuses = [first.status.as_u16(), second.status.as_u16()];
        assert!(
            statuses.contains(&201) && statuses.contains(&403),
            "round {round}: {statuses:?} {} {}",
            first.body,
            second.body
        );
    }
    // The code stays bound after its order is cancelled: its buyer may buy again with it.
    let ann_order = ann.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ok(&order_action(&server, "ann", &ann_order, "cancel").await)["status"],
        json!("cancelled")
    );
    let rebought = eventually(Duration::from_secs(5), || async {
        buy_with_code(&server, &sale_id, "ann", Some(&codes[0]))
            .await
            .status
            == StatusCode::CREATED
    })
    .await;
    assert!(rebought);
    assert_eq!(
        buy_with_code(&server, &sale_id, "carl", Some(&codes[0]))
            .await
            .code(),
        "access_code_required"
    );
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(
        audit["pending"],
        json!(7),
        "the CSV's buyer, ann, and five racers"
    );
    // A public sale ignores the header.
    let public = server.create_sale(json!({ "stock": 1 })).await;
    let plain = buy_with_code(&server, &public, "dee", Some("whatever")).await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.body);
}

/// Reads RFC 4180 text: rows of fields, quoted fields with doubled quotes and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "CRLF ends a row");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "the last row ends with CRLF"
    );
    rows
}

pub async fn the_csv_export_says_what_the_json_listing_says(server: TestServer) {
    let sale_id = server
        .create_sale(json!({ "stock": 100, "per_user_limit": 3, "price_cents": 250 }))
        .await;
    let other = server.create_sale(json!({ "stock": 5 })).await;
    assert_eq!(
        server.purchase(&other, "elsewhere", None).await.status,
        StatusCode::CREATED
    );
    let odd_buyer = "O'Brien, \"the\" buyer\nof lines";
    for (index, user) in users("csv", 12)
        .into_iter()
        .chain([odd_buyer.to_owned()])
        .enumerate()
    {
        let quantity = (index % 3 + 1) as u32;
        let reply = server.purchase(&sale_id, &user, Some(quantity)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let order_id = reply.body["id"].as_str().unwrap().to_owned();
        match index % 4 {
            1 => assert_eq!(
                order_action(&server, &user, &order_id, "pay").await.status,
                StatusCode::OK
            ),
            2 => assert_eq!(
                order_action(&server, &user, &order_id, "cancel")
                    .await
                    .status,
                StatusCode::OK
            ),
            _ => {}
        }
    }
    let listing = server
        .get(
            &format!("/api/v1/orders?sale_id={sale_id}&limit=500"),
            Some(&server.admin_token),
        )
        .await;
    let listed = ok(&listing)["orders"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 13);
    let export = server
        .get(
            &format!("/api/v1/orders.csv?sale_id={sale_id}"),
            Some(&server.admin_token),
        )
        .await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(export.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let rows = parse_csv(export.body.as_str().expect("CSV text"));
    assert_eq!(
        rows[0],
        [
            "id",
            "sale_id",
            "user_id",
            "quantity",
            "status",
            "amount_cents",
            "created_at",
            "expires_at",
            "paid_at",
            "refunded_at"
        ]
    );
    assert_eq!(rows.len() - 1, listed.len(), "one row per order");
    for (row, order) in rows[1..].iter().zip(&listed) {
        let text = |field: &str| order[field].as_str().unwrap_or("").to_owned();
        let quantity = order["quantity"].as_u64().unwrap();
        assert_eq!(
            row,
            &[
                text("id"),
                text("sale_id"),
                text("user_id"),
                quantity.to_string(),
                text("status"),
                (quantity * 250).to_string(),
                text("created_at"),
                text("expires_at"),
                text("paid_at"),
                String::new(),
            ],
            "newest first, as the listing"
        );
    }
    assert!(
        rows.iter().any(|row| row[2] == odd_buyer),
        "quoted and read back whole"
    );
    let paid = server
        .get(
            &format!("/api/v1/orders.csv?sale_id={sale_id}&status=paid"),
            Some(&server.admin_token),
        )
        .await;
    let paid_rows = parse_csv(paid.body.as_str().unwrap());
    let listed_paid = listed
        .iter()
        .filter(|order| order["status"] == json!("paid"))
        .count();
    assert_eq!(paid_rows.len() - 1, listed_paid);
    assert!(paid_rows[1..]
        .iter()
        .all(|row| row[4] == "paid" && !row[8].is_empty()));
    let everything = server
        .get("/api/v1/orders.csv", Some(&server.admin_token))
        .await;
    assert_eq!(
        parse_csv(everything.body.as_str().unwrap()).len() - 1,
        14,
        "both sales"
    );
    let nothing = server
        .get(
            "/api/v1/orders.csv?sale_id=no-such-sale",
            Some(&server.admin_token),
        )
        .await;
    assert_eq!(
        parse_csv(nothing.body.as_str().unwrap()).len(),
        1,
        "the header alone"
    );
    server.assert_consistent(&sale_id).await;
}

crate::server_suite!(embedded, async { Some(TestServer::start().await) };
    adding_stock_during_a_stampede_sells_exactly_the_new_total,
    a_pause_on_one_node_stops_purchases_on_the_other_at_once,
    an_ended_sale_sells_nothing_anywhere,
    removing_stock_never_takes_held_units,
    a_change_makes_a_version_every_node_and_every_cached_read_follows,
    a_presale_sells_only_to_buyers_with_their_codes,
    the_csv_export_says_what_the_json_listing_says);
crate::server_suite!(two_nodes, TestServer::start_cluster(2);
    adding_stock_during_a_stampede_sells_exactly_the_new_total,
    a_pause_on_one_node_stops_purchases_on_the_other_at_once,
    an_ended_sale_sells_nothing_anywhere,
    removing_stock_never_takes_held_units,
    a_change_makes_a_version_every_node_and_every_cached_read_follows,
    a_presale_sells_only_to_buyers_with_their_codes,
    the_csv_export_says_what_the_json_listing_says);

/// Every change survives a restart of the embedded server: the journal's versions of the sale,
/// the gate rebuilt from them (the pause, the stock), the codes bound by orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_change_of_a_sale() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = crate::harness::test_settings(data_dir.path());
    let server = TestServer::start_on(settings.clone(), None).await;
    let sale_id = server
        .create_sale(json!({ "stock": 4, "access": "codes" }))
        .await;
    let codes = make_codes(&server, &sale_id, 2, "").await.body["codes"].clone();
    let code = codes[0].as_str().unwrap().to_owned();
    let bought = buy_with_code(&server, &sale_id, "ann", Some(&code)).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    assert_eq!(
        ok(&patch(&server, &sale_id, json!({ "add_stock": 6 })).await)["stock"],
        json!(10)
    );
    assert_eq!(
        ok(&control(&server, &sale_id, "pause").await)["version"],
        json!(3)
    );
    server.stop().await;

    let server = TestServer::start_on(settings, None).await;
    let sale = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
    assert_eq!(
        (
            sale.body["state"].clone(),
            sale.body["stock"].clone(),
            sale.body["remaining"].clone()
        ),
        (json!("paused"), json!(10), json!(9))
    );
    assert_eq!(sale.body["version"], json!(3));
    let second = codes[1].as_str().unwrap();
    assert_eq!(
        buy_with_code(&server, &sale_id, "bob", Some(second))
            .await
            .code(),
        "sale_paused"
    );
    ok(&control(&server, &sale_id, "resume").await);
    assert_eq!(
        buy_with_code(&server, &sale_id, "bob", Some(&code))
            .await
            .code(),
        "access_code_required",
        "ann's code is still hers"
    );
    let bob = buy_with_code(&server, &sale_id, "bob", Some(second)).await;
    assert_eq!(bob.status, StatusCode::CREATED, "{}", bob.body);
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(
        (audit["stock"].clone(), audit["pending"].clone()),
        (json!(10), json!(2))
    );
    server.stop().await;
}

/// A node that dies between a change's steps leaves it begun in the gate (which refuses what it
/// forbids at once) and not in the store: the other nodes' followers finish it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_a_node_began_and_did_not_finish_is_finished_by_the_others() {
    use flashsale_server::domain::SaleChange;
    use flashsale_server::gate::{ChangeStep, StockGate};
    use flashsale_server::redis::{RedisGate, RedisGateOptions};
    use flashsale_server::store::{OrderStore, PostgresOptions, PostgresStore};

    let Some(server) = TestServer::start_cluster(2).await else {
        return;
    };
    let sale_id = server.create_sale(json!({ "stock": 5 })).await;
    let backends = server.backends().expect("cluster backends");
    let store = PostgresStore::open(PostgresOptions {
        url: backends.postgres.url.clone(),
        schema: backends.postgres.name.clone(),
        connections_max: 2,
        connect_timeout: Duration::from_secs(3),
    })
    .await
    .expect("PostgreSQL");
    let gate = RedisGate::on(
        &backends.redis.connect().await,
        &RedisGateOptions {
            sold_out_recheck: Duration::from_millis(1000),
            replicas_ack: 0,
            replicas_ack_timeout: Duration::from_secs(1),
            time_from_caller: true,
        },
        Arc::new(flashsale_server::metrics::Metrics::default()),
    );
    let sale_id_typed = flashsale_server::domain::SaleId::parse(&sale_id).unwrap();
    let base = store.sale(&sale_id_typed).await.unwrap().expect("the sale");
    let paused = SaleChange::Pause
        .apply(&base, server.now())
        .unwrap()
        .unwrap();
    // The first step only, as a node that died right after it.
    assert_eq!(
        gate.begin_change(base.version, &paused, server.now())
            .await
            .unwrap(),
        ChangeStep::Applied
    );
    for buyer in 0..2 {
        let refused = server.purchase(&sale_id, &format!("b{buyer}"), None).await;
        assert_eq!(refused.code(), "sale_paused", "the gate refuses at once");
    }
    every_node_shows(&server, &sale_id, 2).await;
    let recorded = store.sale(&sale_id_typed).await.unwrap().unwrap();
    assert_eq!((recorded.version, recorded.paused), (2, true));
    assert!(gate.pending_changes().await.unwrap().is_empty());
    let resumed = control(&server, &sale_id, "resume").await;
    assert_eq!(ok(&resumed)["version"], json!(3));
    let bought = server.purchase(&sale_id, "after", None).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    server.assert_consistent(&sale_id).await;
}
