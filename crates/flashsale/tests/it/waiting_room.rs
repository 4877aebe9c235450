//! The waiting room over HTTP, on an embedded server and on two cluster nodes (one manual clock):
//! the pre-start shuffle, arrival order after the start, admission at the configured rate, the
//! pass a purchase needs, a pass that runs out, and admission pausing while the sale is sold out.

use hyper::{Method, StatusCode};
use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::harness::{Reply, TestServer};

/// A sale with a waiting room starting `starts_in` seconds from the server's now.
pub async fn room_sale(server: &TestServer, stock: u64, starts_in: i64, room: Value) -> String {
    let starts_at = server.now() + SignedDuration::from_secs(starts_in);
    let id = server
        .create_sale(json!({
            "stock": stock,
            "starts_at": starts_at.to_string(),
            "waiting_room": room,
        }))
        .await;
    let sale = server.get(&format!("/api/v1/sales/{id}"), None).await;
    assert_eq!(
        sale.body["waiting_room"]["admit_per_sec"],
        room["admit_per_sec"]
    );
    id
}

pub async fn join(server: &TestServer, sale: &str, user: &str) -> Reply {
    let token = server.token(user);
    server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale}/queue"),
            Some(&token),
            None,
            &[],
        )
        .await
}

pub async fn status(server: &TestServer, sale: &str, user: &str) -> Reply {
    let token = server.token(user);
    server
        .get(&format!("/api/v1/sales/{sale}/queue"), Some(&token))
        .await
}

pub async fn buy_with(server: &TestServer, sale: &str, user: &str, pass: Option<&str>) -> Reply {
    let token = server.token(user);
    let headers: Vec<(&str, &str)> = pass.map(|pass| ("queue-pass", pass)).into_iter().collect();
    server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale}/purchase"),
            Some(&token),
            None,
            &headers,
        )
        .await
}

pub fn ok(reply: &Reply) -> &Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    &reply.body
}

fn position(reply: &Reply) -> u64 {
    ok(reply)["position"]
        .as_u64()
        .unwrap_or_else(|| panic!("no position: {}", reply.body))
}

/// Spearman's rank correlation of two permutations of 1..=n.
fn rank_correlation(first: &[u64], second: &[u64]) -> f64 {
    let n = first.len() as f64;
    let squares: f64 = first
        .iter()
        .zip(second)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    1.0 - 6.0 * squares / (n * (n * n - 1.0))
}

pub async fn early_joiners_are_shuffled_and_later_ones_queue_in_order(server: TestServer) {
    let sale = room_sale(&server, 10, 60, json!({ "admit_per_sec": 1 })).await;
    let early: Vec<String> = (0..100).map(|i| format!("early-{i}")).collect();
    for user in &early {
        let reply = join(&server, &sale, user).await;
        assert_eq!(ok(&reply)["state"], "waiting");
        assert_eq!(
            reply.body["position"],
            Value::Null,
            "no place before the draw"
        );
        assert_eq!(reply.body["eta_secs"], Value::Null);
    }
    // Joining again before the start keeps the (still secret) place.
    assert_eq!(
        ok(&join(&server, &sale, "early-0").await)["state"],
        "waiting"
    );
    server.advance(SignedDuration::from_secs(60));
    let mut places = Vec::new();
    for user in &early {
        places.push(position(&status(&server, &sale, user).await));
    }
    let mut sorted = places.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=100).collect::<Vec<u64>>(), "a permutation");
    let arrival: Vec<u64> = (1..=100).collect();
    let correlation = rank_correlation(&arrival, &places);
    assert!(
        correlation.abs() < 0.4,
        "the draw follows arrival order: rho = {correlation}"
    );
    for i in 0..20 {
        let reply = join(&server, &sale, &format!("late-{i}")).await;
        assert_eq!(position(&reply), 101 + i, "arrival order after the start");
        assert_eq!(reply.body["eta_secs"], json!(101 + i));
    }
    // Joining again keeps the place.
    assert_eq!(position(&join(&server, &sale, "late-3").await), 104);
    assert_eq!(position(&join(&server, &sale, &early[7]).await), places[7]);
}

pub async fn admission_follows_the_rate_and_purchases_need_a_valid_pass(server: TestServer) {
    let sale = room_sale(
        &server,
        100,
        10,
        json!({ "admit_per_sec": 2, "pass_ttl_secs": 30, "opens_before_secs": 5 }),
    )
    .await;
    let too_early = join(&server, &sale, "ann").await;
    assert_eq!(too_early.status, StatusCode::CONFLICT, "{}", too_early.body);
    assert_eq!(too_early.code(), "queue_not_open");
    assert!(too_early.body["error"]["opens_at"].is_string());
    server.advance(SignedDuration::from_secs(5));
    for user in ["ann", "bob", "cy", "dee", "eve", "fay"] {
        ok(&join(&server, &sale, user).await);
    }
    server.advance(SignedDuration::from_secs(5));
    let mut by_place: Vec<(u64, &str)> = Vec::new();
    for user in ["ann", "bob", "cy", "dee", "eve", "fay"] {
        let reply = status(&server, &sale, user).await;
        assert_eq!(ok(&reply)["state"], "waiting", "nobody at the start itself");
        by_place.push((position(&reply), user));
    }
    by_place.sort_unstable();
    server.advance(SignedDuration::from_millis(1500));
    let mut admitted = Vec::new();
    for (_, user) in &by_place {
        let reply = status(&server, &sale, user).await;
        if ok(&reply)["state"] == "admitted" {
            assert!(reply.body["pass"].is_string() && reply.body["pass_expires_at"].is_string());
            admitted.push((*user, reply.body["pass"].as_str().unwrap_or("").to_owned()));
        } else {
            assert_eq!(reply.body["state"], "waiting");
            assert!(reply.body["eta_secs"].as_u64().unwrap_or(0) >= 1);
        }
    }
    let first_three: Vec<&str> = by_place.iter().take(3).map(|(_, user)| *user).collect();
    let admitted_users: Vec<&str> = admitted.iter().map(|(user, _)| *user).collect();
    assert_eq!(admitted_users, first_three, "1.5 s at 2/s: the first three");

    let (winner, pass) = (&admitted[0].0, admitted[0].1.clone());
    let (other, other_pass) = (&admitted[1].0, admitted[1].1.clone());
    let waiting = by_place[5].1;
    for (who, pass) in [
        (*winner, None),
        (*winner, Some("not a pass")),
        (*winner, Some(other_pass.as_str())),
        (waiting, Some(pass.as_str())),
    ] {
        let refused = buy_with(&server, &sale, who, pass).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
        assert_eq!(refused.code(), "queue_pass_required");
    }
    // A pass of another sale does not open this one.
    let other_sale = room_sale(&server, 5, -1, json!({ "admit_per_sec": 1000 })).await;
    server.advance(SignedDuration::from_millis(10));
    let elsewhere = ok(&join(&server, &other_sale, winner).await)["pass"]
        .as_str()
        .expect("admitted at once")
        .to_owned();
    let refused = buy_with(&server, &sale, winner, Some(&elsewhere)).await;
    assert_eq!(refused.code(), "queue_pass_required");
    let bought = buy_with(&server, &sale, winner, Some(&pass)).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    // Past its expiry a pass opens nothing.
    server.advance(SignedDuration::from_secs(31));
    let late = buy_with(&server, &sale, other, Some(&other_pass)).await;
    assert_eq!(late.status, StatusCode::FORBIDDEN, "{}", late.body);
    server.assert_consistent(&sale).await;
}

pub async fn a_buyer_whose_pass_ran_out_joins_again_at_the_end(server: TestServer) {
    let sale = room_sale(
        &server,
        100,
        5,
        json!({ "admit_per_sec": 1, "pass_ttl_secs": 10 }),
    )
    .await;
    for i in 0..5 {
        ok(&join(&server, &sale, &format!("b{i}")).await);
    }
    server.advance(SignedDuration::from_secs(6));
    let mut first = None;
    for i in 0..5 {
        let user = format!("b{i}");
        if ok(&status(&server, &sale, &user).await)["state"] == "admitted" {
            first = Some(user);
        }
    }
    let first = first.expect("one admitted after 1 s at 1/s");
    for i in 0..20 {
        ok(&join(&server, &sale, &format!("after-{i}")).await);
    }
    server.advance(SignedDuration::from_secs(10));
    let gone = status(&server, &sale, &first).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    assert_eq!(gone.code(), "not_in_queue");
    let last = position(&status(&server, &sale, "after-19").await);
    let again = join(&server, &sale, &first).await;
    assert_eq!(ok(&again)["state"], "waiting", "{}", again.body);
    assert_eq!(
        position(&again),
        last + 1,
        "behind everyone who was in line"
    );
    server.advance(SignedDuration::from_secs(
        i64::try_from(last).unwrap_or(0) + 1,
    ));
    assert_eq!(
        ok(&status(&server, &sale, &first).await)["state"],
        "admitted"
    );
}

pub async fn admission_pauses_while_sold_out_and_resumes_when_stock_returns(server: TestServer) {
    let sale = room_sale(&server, 1, 5, json!({ "admit_per_sec": 1 })).await;
    for i in 0..4 {
        ok(&join(&server, &sale, &format!("b{i}")).await);
    }
    server.advance(SignedDuration::from_secs(5));
    let mut order: Vec<(u64, String)> = Vec::new();
    for i in 0..4 {
        let user = format!("b{i}");
        order.push((position(&status(&server, &sale, &user).await), user));
    }
    order.sort_unstable();
    server.advance(SignedDuration::from_secs(1));
    let first = &order[0].1;
    let pass = ok(&status(&server, &sale, first).await)["pass"]
        .as_str()
        .expect("the first is admitted")
        .to_owned();
    let bought = buy_with(&server, &sale, first, Some(&pass)).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let order_id = bought.body["id"].as_str().expect("order id").to_owned();
    let second = &order[1].1;
    let reply = status(&server, &sale, second).await;
    assert_eq!(ok(&reply)["state"], "sold_out", "{}", reply.body);
    assert_eq!(reply.body["position"], json!(1));
    server.advance(SignedDuration::from_secs(30));
    assert_eq!(
        ok(&status(&server, &sale, second).await)["state"],
        "sold_out"
    );
    let cancelled = server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&server.token(first)),
            None,
            &[],
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    // The stock is back: admission goes on from where it paused (one admitted so far).
    // The unit comes back in a task of its own (the cancel does not wait for it).
    let back = crate::harness::eventually(std::time::Duration::from_secs(5), || async {
        ok(&status(&server, &sale, second).await)["state"] == "waiting"
    })
    .await;
    assert!(back, "stock returned: waiting again, position 1");
    server.advance(SignedDuration::from_secs(1));
    assert_eq!(
        ok(&status(&server, &sale, second).await)["state"],
        "admitted"
    );
    assert_eq!(
        ok(&status(&server, &sale, &order[2].1).await)["state"],
        "waiting"
    );
    server.assert_consistent(&sale).await;
}

pub async fn the_line_refuses_what_the_contract_refuses(server: TestServer) {
    let plain = server.create_sale(json!({})).await;
    let reply = join(&server, &plain, "ann").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.code(), "no_waiting_room");
    let sale = room_sale(&server, 5, 10, json!({ "admit_per_sec": 5 })).await;
    let reply = status(&server, &sale, "never-joined").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_in_queue");
    let reply = join(&server, "01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ann").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let admin = server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale}/queue"),
            Some(&server.admin_token),
            None,
            &[],
        )
        .await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN, "{}", admin.body);
    for (room, field) in [
        (json!({}), "waiting_room"),
        (json!({ "admit_per_sec": 0 }), "waiting_room.admit_per_sec"),
        (
            json!({ "admit_per_sec": 1, "pass_ttl_secs": 5 }),
            "waiting_room.pass_ttl_secs",
        ),
        (
            json!({ "admit_per_sec": 1, "opens_before_secs": 86_401 }),
            "waiting_room.opens_before_secs",
        ),
        (json!({ "admit_per_sec": 1, "extra": 1 }), "waiting_room"),
    ] {
        let reply = server
            .post(
                "/api/v1/sales",
                Some(&server.admin_token),
                json!({ "name": "x", "stock": 1, "starts_at": "2030-01-01T00:00:00Z", "waiting_room": room }),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{room}: {}",
            reply.body
        );
        assert!(
            reply.body["error"]["field"]
                .as_str()
                .is_some_and(|got| got.starts_with(field)),
            "{room}: {}",
            reply.body
        );
    }
    let ended = server
        .create_sale(json!({
            "starts_at": (server.now() - SignedDuration::from_secs(10)).to_string(),
            "ends_at": (server.now() + SignedDuration::from_secs(5)).to_string(),
            "waiting_room": { "admit_per_sec": 1 },
        }))
        .await;
    server.advance(SignedDuration::from_secs(6));
    let reply = join(&server, &ended, "ann").await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "sale_ended");
}

async fn admin(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> Reply {
    server
        .send(
            method,
            path,
            Some(&server.admin_token),
            body.map(|body| body.to_string()),
            &[],
        )
        .await
}

/// The users of `order`, by their place in line (first place first).
async fn by_place(server: &TestServer, sale: &str, users: &[String]) -> Vec<String> {
    let mut placed = Vec::new();
    for user in users {
        placed.push((position(&status(server, sale, user).await), user.clone()));
    }
    placed.sort_unstable();
    placed.into_iter().map(|(_, user)| user).collect()
}

async fn state_of(server: &TestServer, sale: &str, user: &str) -> String {
    ok(&status(server, sale, user).await)["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

pub async fn a_paused_sale_admits_nobody_and_its_paused_seconds_never_count(server: TestServer) {
    let sale = room_sale(&server, 100, 5, json!({ "admit_per_sec": 1 })).await;
    let buyers: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for user in &buyers {
        ok(&join(&server, &sale, user).await);
    }
    server.advance(SignedDuration::from_secs(5));
    let line = by_place(&server, &sale, &buyers).await;
    server.advance(SignedDuration::from_secs(2));
    let paused = admin(
        &server,
        Method::POST,
        &format!("/api/v1/sales/{sale}/pause"),
        None,
    )
    .await;
    assert_eq!(ok(&paused)["state"], "paused");
    let refused = join(&server, &sale, "newcomer").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.code(), "sale_paused");
    server.advance(SignedDuration::from_secs(60));
    assert_eq!(state_of(&server, &sale, &line[1]).await, "admitted");
    let third = status(&server, &sale, &line[2]).await;
    assert_eq!(ok(&third)["state"], "paused", "{}", third.body);
    assert_eq!(third.body["position"], json!(1));
    let resumed = admin(
        &server,
        Method::POST,
        &format!("/api/v1/sales/{sale}/resume"),
        None,
    )
    .await;
    assert_eq!(ok(&resumed)["state"], "live");
    assert_eq!(state_of(&server, &sale, &line[2]).await, "waiting");
    server.advance(SignedDuration::from_secs(1));
    assert_eq!(
        state_of(&server, &sale, &line[2]).await,
        "admitted",
        "the line goes on from where it stopped"
    );
    assert_eq!(state_of(&server, &sale, &line[3]).await, "waiting");
    ok(&join(&server, &sale, "newcomer").await);
    server.assert_consistent(&sale).await;
}

pub async fn a_new_admission_rate_applies_from_the_reply_on(server: TestServer) {
    let sale = room_sale(&server, 100, 5, json!({ "admit_per_sec": 1 })).await;
    let buyers: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    for user in &buyers {
        ok(&join(&server, &sale, user).await);
    }
    server.advance(SignedDuration::from_secs(5));
    let line = by_place(&server, &sale, &buyers).await;
    server.advance(SignedDuration::from_secs(2));
    let faster = admin(
        &server,
        Method::PATCH,
        &format!("/api/v1/sales/{sale}"),
        Some(json!({ "waiting_room": { "admit_per_sec": 10 } })),
    )
    .await;
    assert_eq!(ok(&faster)["waiting_room"]["admit_per_sec"], json!(10));
    assert_eq!(state_of(&server, &sale, &line[1]).await, "admitted");
    let third = status(&server, &sale, &line[2]).await;
    assert_eq!(ok(&third)["state"], "waiting", "admitted so far: two");
    assert_eq!(third.body["eta_secs"], json!(1), "at the new rate");
    server.advance(SignedDuration::from_secs(1));
    assert_eq!(state_of(&server, &sale, &line[11]).await, "admitted");
    assert_eq!(state_of(&server, &sale, &line[12]).await, "waiting");
    let refused = admin(
        &server,
        Method::PATCH,
        &format!("/api/v1/sales/{sale}"),
        Some(json!({ "waiting_room": { "admit_per_sec": 0 } })),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["error"]["field"], "waiting_room.admit_per_sec");
    server.assert_consistent(&sale).await;
}

/// Regression (issue #28): a line whose buyers did not look while the sale was sold out went on
/// counting those seconds, and admitted the whole of them at the next look after stock came back.
pub async fn a_line_stops_at_the_sell_out_even_when_nobody_looks(server: TestServer) {
    let sale = room_sale(&server, 2, 5, json!({ "admit_per_sec": 1 })).await;
    let buyers: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for user in &buyers {
        ok(&join(&server, &sale, user).await);
    }
    server.advance(SignedDuration::from_secs(5));
    let line = by_place(&server, &sale, &buyers).await;
    server.advance(SignedDuration::from_secs(2));
    let mut orders = Vec::new();
    for user in &line[..2] {
        let pass = ok(&status(&server, &sale, user).await)["pass"]
            .as_str()
            .expect("admitted")
            .to_owned();
        let bought = buy_with(&server, &sale, user, Some(&pass)).await;
        assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
        orders.push(bought.body["id"].as_str().unwrap().to_owned());
    }
    // Sold out at the second second; nobody looks for a minute; then a unit comes back.
    server.advance(SignedDuration::from_secs(60));
    let cancelled = server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{}/cancel", orders[0]),
            Some(&server.token(&line[0])),
            None,
            &[],
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    let back = crate::harness::eventually(std::time::Duration::from_secs(5), || async {
        state_of(&server, &sale, &line[2]).await == "waiting"
    })
    .await;
    assert!(back, "the third waits: the sold-out minute did not count");
    let third = status(&server, &sale, &line[2]).await;
    assert_eq!(third.body["position"], json!(1), "{}", third.body);
    server.advance(SignedDuration::from_secs(1));
    assert_eq!(state_of(&server, &sale, &line[2]).await, "admitted");
    assert_eq!(state_of(&server, &sale, &line[3]).await, "waiting");
    server.assert_consistent(&sale).await;
}

async fn join_coded(server: &TestServer, sale: &str, user: &str, code: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = code.map(|code| ("access-code", code)).into_iter().collect();
    server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale}/queue"),
            Some(&server.token(user)),
            None,
            &headers,
        )
        .await
}

pub async fn a_presale_line_takes_only_buyers_with_a_code(server: TestServer) {
    let starts_at = server.now() + SignedDuration::from_secs(5);
    let sale = server
        .create_sale(json!({
            "stock": 5,
            "starts_at": starts_at.to_string(),
            "access": "codes",
            "waiting_room": { "admit_per_sec": 100 },
        }))
        .await;
    let made = admin(
        &server,
        Method::POST,
        &format!("/api/v1/sales/{sale}/codes"),
        Some(json!({ "count": 2 })),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let code = made.body["codes"][0].as_str().unwrap().to_owned();
    let without = join_coded(&server, &sale, "ann", None).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN, "{}", without.body);
    assert_eq!(without.code(), "access_code_required");
    ok(&join_coded(&server, &sale, "ann", Some(&code)).await);
    server.advance(SignedDuration::from_secs(6));
    let pass = ok(&status(&server, &sale, "ann").await)["pass"]
        .as_str()
        .expect("admitted")
        .to_owned();
    let token = server.token("ann");
    let bought = server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale}/purchase"),
            Some(&token),
            None,
            &[("queue-pass", &pass), ("access-code", &code)],
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let taken = join_coded(&server, &sale, "bob", Some(&code)).await;
    assert_eq!(
        taken.code(),
        "access_code_required",
        "ann's code: {}",
        taken.body
    );
    server.assert_consistent(&sale).await;
}

/// Hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

/// HMAC-SHA256(key = seed, message = sale id + "\n" + buyer id), computed here with the crates
/// themselves: what a buyer checking the draw computes.
fn draw_of(seed: &[u8], sale: &str, buyer: &str) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(seed).expect("any key length");
    mac.update(format!("{sale}\n{buyer}").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Each buyer's place as the draw orders them (rank by draw, from 1).
fn places_by_draw(seed: &[u8], sale: &str, buyers: &[String]) -> Vec<u64> {
    let draws: Vec<Vec<u8>> = buyers
        .iter()
        .map(|buyer| draw_of(seed, sale, buyer))
        .collect();
    draws
        .iter()
        .map(|draw| draws.iter().filter(|other| *other < draw).count() as u64 + 1)
        .collect()
}

/// The sale's commitment, checked to be 64 hex digits, with its seed still hidden.
async fn commitment_before_the_start(server: &TestServer, sale: &str) -> (String, String) {
    let read = server.get(&format!("/api/v1/sales/{sale}"), None).await;
    let room = &ok(&read)["waiting_room"];
    let commitment = room["draw_commitment"]
        .as_str()
        .unwrap_or_else(|| panic!("a commitment: {room}"))
        .to_owned();
    assert_eq!(commitment.len(), 64, "{commitment}");
    assert!(commitment
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(
        room["draw_seed"],
        Value::Null,
        "no seed before the start: {room}"
    );
    let etag = read.headers["etag"].to_str().unwrap().to_owned();
    (commitment, etag)
}

/// After the start: the seed, checked against the commitment, and each early buyer's place
/// against the draw computed here.
async fn check_the_revealed_draw(
    server: &TestServer,
    sale: &str,
    commitment: &str,
    etag_before: &str,
    early: &[String],
) {
    use sha2::Digest;
    let read = server.get(&format!("/api/v1/sales/{sale}"), None).await;
    let room = &ok(&read)["waiting_room"];
    assert_eq!(
        room["draw_commitment"],
        json!(commitment),
        "the same commitment"
    );
    let seed = unhex(
        room["draw_seed"]
            .as_str()
            .unwrap_or_else(|| panic!("a seed: {room}")),
    );
    assert_eq!(seed.len(), 32);
    assert_eq!(
        hex(&sha2::Sha256::digest(&seed)),
        commitment,
        "SHA-256(seed) = commitment"
    );
    assert_ne!(
        read.headers["etag"].to_str().unwrap(),
        etag_before,
        "the seed's reveal changes the ETag"
    );
    let expected = places_by_draw(&seed, sale, early);
    for (buyer, place) in early.iter().zip(&expected) {
        assert_eq!(
            position(&status(server, sale, buyer).await),
            *place,
            "{buyer}"
        );
    }
}

pub async fn the_draw_is_committed_at_creation_and_revealed_at_the_start(server: TestServer) {
    let sale = room_sale(&server, 10, 60, json!({ "admit_per_sec": 1 })).await;
    let (commitment, etag) = commitment_before_the_start(&server, &sale).await;
    let early: Vec<String> = (0..40).map(|i| format!("early-{i}")).collect();
    for buyer in &early {
        ok(&join(&server, &sale, buyer).await);
    }
    server.advance(SignedDuration::from_secs(59));
    assert_eq!(
        commitment_before_the_start(&server, &sale).await.0,
        commitment
    );
    server.advance(SignedDuration::from_secs(1));
    check_the_revealed_draw(&server, &sale, &commitment, &etag, &early).await;
    // Later joiners queue behind the drawn crowd; the listing shows the same room.
    assert_eq!(position(&join(&server, &sale, "late").await), 41);
    let list = server.get("/api/v1/sales", None).await;
    let listed = ok(&list)["sales"]
        .as_array()
        .unwrap()
        .iter()
        .find(|listed| listed["id"] == json!(sale))
        .expect("listed")
        .clone();
    assert_eq!(listed["waiting_room"]["draw_commitment"], json!(commitment));
    assert!(listed["waiting_room"]["draw_seed"].is_string());
}

/// The seed is kept with the sale: after a restart before the start the commitment is the same,
/// and the seed revealed at the start matches it and the places made before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_draw_seed_survives_a_restart() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let clock = std::sync::Arc::new(flashsale_server::clock::ManualClock::new(
        jiff::Timestamp::now(),
    ));
    let settings = || crate::harness::test_settings(data_dir.path());
    let server = TestServer::start_on(settings(), Some(std::sync::Arc::clone(&clock))).await;
    let sale = room_sale(&server, 10, 60, json!({ "admit_per_sec": 1 })).await;
    let (commitment, etag) = commitment_before_the_start(&server, &sale).await;
    let early: Vec<String> = (0..20).map(|i| format!("early-{i}")).collect();
    for buyer in &early {
        ok(&join(&server, &sale, buyer).await);
    }
    server.stop().await;
    let server = TestServer::start_on(settings(), Some(std::sync::Arc::clone(&clock))).await;
    assert_eq!(
        commitment_before_the_start(&server, &sale).await.0,
        commitment
    );
    server.advance(SignedDuration::from_secs(60));
    check_the_revealed_draw(&server, &sale, &commitment, &etag, &early).await;
    server.stop().await;
}

crate::server_suite!(embedded, async { Some(TestServer::start().await) };
    the_draw_is_committed_at_creation_and_revealed_at_the_start,
    early_joiners_are_shuffled_and_later_ones_queue_in_order,
    admission_follows_the_rate_and_purchases_need_a_valid_pass,
    a_buyer_whose_pass_ran_out_joins_again_at_the_end,
    admission_pauses_while_sold_out_and_resumes_when_stock_returns,
    the_line_refuses_what_the_contract_refuses,
    a_paused_sale_admits_nobody_and_its_paused_seconds_never_count,
    a_new_admission_rate_applies_from_the_reply_on,
    a_line_stops_at_the_sell_out_even_when_nobody_looks,
    a_presale_line_takes_only_buyers_with_a_code);
crate::server_suite!(two_nodes, TestServer::start_cluster(2);
    the_draw_is_committed_at_creation_and_revealed_at_the_start,
    early_joiners_are_shuffled_and_later_ones_queue_in_order,
    admission_follows_the_rate_and_purchases_need_a_valid_pass,
    a_buyer_whose_pass_ran_out_joins_again_at_the_end,
    admission_pauses_while_sold_out_and_resumes_when_stock_returns,
    the_line_refuses_what_the_contract_refuses,
    a_paused_sale_admits_nobody_and_its_paused_seconds_never_count,
    a_new_admission_rate_applies_from_the_reply_on,
    a_line_stops_at_the_sell_out_even_when_nobody_looks,
    a_presale_line_takes_only_buyers_with_a_code);
