//! The verifiable draw end to end, on an embedded server and on two cluster nodes (one manual
//! clock): a line drawn, placed and admitted while buyers buy; its public admission log read in
//! pages and checked here apart from the server's code (hashes with `sha2`, the chain, the draw
//! order); `flashsale verify` (the real binary) passing against the server; and the same
//! binary failing, naming the break, against a fake server that serves the log doctored one way
//! at a time (a seed that does not match, an entry out of draw order, an admission ahead of the
//! rate, a broken chain link, a bad signature, an order without a pass).

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use hyper::StatusCode;
use jiff::SignedDuration;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::{eventually, users, TestServer};
use crate::waiting_room::{buy_with, join, ok, room_sale, status};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Entry `n`'s hash as the contract defines it, computed here.
fn entry_hash(prev: &str, n: u64, buyer_hash: &str, draw: Option<&str>) -> String {
    sha256_hex(&format!(
        "{prev}\n{n}\n{buyer_hash}\n{}",
        draw.unwrap_or("-")
    ))
}

/// Every page of the sale's log, `limit` entries at a time: the entries, and the checkpoints of
/// the page that reached the end.
async fn read_log(server: &TestServer, sale: &str, limit: usize) -> (Vec<Value>, Vec<Value>) {
    let mut entries = Vec::new();
    loop {
        let page = server
            .get(
                &format!(
                    "/api/v1/sales/{sale}/queue/log?after={}&limit={limit}",
                    entries.len()
                ),
                None,
            )
            .await;
        let body = ok(&page).clone();
        let read = body["entries"].as_array().expect("entries").clone();
        let last = read.len() < limit;
        assert_eq!(
            body["next_after"],
            json!(entries.len() + read.len()),
            "{body}"
        );
        entries.extend(read);
        if last {
            return (
                entries,
                body["checkpoints"].as_array().expect("checkpoints").clone(),
            );
        }
        assert_eq!(
            body["checkpoints"],
            json!([]),
            "only the last page has them"
        );
    }
}

fn verify(url: &str, sale: &str, token: Option<&str>, buyers: &[&str]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flashsale"));
    command
        .args(["verify", "--sale", sale, "--url", url])
        .env_remove("FLASHSALE_ADMIN_TOKEN");
    if let Some(token) = token {
        command.args(["--admin-token", token]);
    }
    for buyer in buyers {
        command.args(["--buyer", buyer]);
    }
    let output = command.output().expect("verify runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// What a fake server serves: the real server's answers, to be doctored.
#[derive(Clone)]
struct Served {
    sale: Value,
    keys: Value,
    entries: Vec<Value>,
    checkpoints: Vec<Value>,
    orders: Vec<Value>,
}

impl Served {
    /// Makes the chain whole again after entries were changed (as a forger would), the
    /// checkpoints' hashes included (their signatures then fail, but later in the check).
    fn rechain(&mut self) {
        let mut prev = "0".repeat(64);
        for (index, entry) in self.entries.iter_mut().enumerate() {
            let n = index as u64 + 1;
            entry["n"] = json!(n);
            entry["prev_hash"] = json!(prev);
            let hash = entry_hash(
                &prev,
                n,
                entry["buyer_hash"].as_str().unwrap(),
                entry["draw"].as_str(),
            );
            entry["hash"] = json!(hash);
            prev = hash;
        }
        for checkpoint in &mut self.checkpoints {
            let n = checkpoint["n"].as_u64().unwrap() as usize;
            checkpoint["hash"] = self.entries[n - 1]["hash"].clone();
        }
    }
}

async fn fake_server(served: Served) -> String {
    #[derive(serde::Deserialize)]
    struct Page {
        after: Option<usize>,
        limit: Option<usize>,
    }
    let served = Arc::new(served);
    let router = Router::new()
        .route(
            "/api/v1/sales/{sale_id}",
            get(|State(served): State<Arc<Served>>| async move { Json(served.sale.clone()) }),
        )
        .route(
            "/api/v1/keys",
            get(|State(served): State<Arc<Served>>| async move { Json(served.keys.clone()) }),
        )
        .route(
            "/api/v1/sales/{sale_id}/queue/log",
            get(
                |State(served): State<Arc<Served>>, Query(page): Query<Page>| async move {
                    let after = page.after.unwrap_or(0);
                    let limit = page.limit.unwrap_or(1000);
                    let entries: Vec<Value> = served
                        .entries
                        .iter()
                        .skip(after)
                        .take(limit)
                        .cloned()
                        .collect();
                    let last = entries.len() < limit;
                    Json(json!({
                        "entries": entries,
                        "checkpoints": if last { served.checkpoints.clone() } else { Vec::new() },
                        "next_after": after + entries.len(),
                    }))
                },
            ),
        )
        .route(
            "/api/v1/orders",
            get(|State(served): State<Arc<Served>>| async move {
                Json(json!({ "orders": served.orders, "next_cursor": null }))
            }),
        )
        .with_state(served);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// Runs `verify` against a fake serving `served` doctored by `doctor`; it must fail naming
/// `expected`.
async fn planted(served: &Served, sale: &str, doctor: impl FnOnce(&mut Served), expected: &str) {
    let mut doctored = served.clone();
    doctor(&mut doctored);
    let url = fake_server(doctored).await;
    let sale = sale.to_owned();
    let (code, output) = tokio::task::spawn_blocking(move || verify(&url, &sale, Some("any"), &[]))
        .await
        .unwrap();
    assert_eq!(code, 1, "a planted break ({expected}) must fail:\n{output}");
    assert!(
        output.contains(expected),
        "expected {expected:?}:\n{output}"
    );
}

pub async fn a_line_verifies_and_every_planted_break_is_named(server: TestServer) {
    let sale = room_sale(
        &server,
        20,
        30,
        json!({ "admit_per_sec": 2, "pass_ttl_secs": 300, "opens_before_secs": 60 }),
    )
    .await;
    let drawn = users("drawn", 12);
    for buyer in &drawn {
        ok(&join(&server, &sale, buyer).await);
    }
    let log_of = |after: u64| format!("/api/v1/sales/{sale}/queue/log?after={after}");
    let early = server.get(&log_of(0), None).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.body);
    assert_eq!(early.code(), "not_started");
    server.advance(SignedDuration::from_secs(30));
    let closing = server.get(&log_of(0), None).await;
    assert_eq!(ok(&closing)["entries"], json!([]), "the draw is still open");
    server.advance(SignedDuration::from_secs(2));
    let late = users("late", 3);
    for buyer in &late {
        ok(&join(&server, &sale, buyer).await);
    }
    let everyone: Vec<String> = drawn.iter().chain(&late).cloned().collect();
    let mut bought = HashSet::new();
    for _ in 0..8 {
        server.advance(SignedDuration::from_secs(1));
        let now = server.now().to_string();
        let checkpointed = eventually(Duration::from_secs(20), || async {
            let (_, checkpoints) = read_log(&server, &sale, 1000).await;
            // One a second while admission moves; none once everyone is admitted.
            checkpoints.iter().any(|checkpoint| {
                checkpoint["time"] == json!(now) || checkpoint["admitted_through"] == json!(15)
            })
        })
        .await;
        assert!(
            checkpointed,
            "a checkpoint at {now}: {:?}",
            read_log(&server, &sale, 1000).await.1
        );
        for buyer in &everyone {
            let reply = status(&server, &sale, buyer).await;
            if ok(&reply)["state"] == "admitted" && !bought.contains(buyer) {
                let pass = reply.body["pass"].as_str().expect("a pass").to_owned();
                let order = buy_with(&server, &sale, buyer, Some(&pass)).await;
                assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
                bought.insert(buyer.clone());
            }
        }
    }
    assert_eq!(bought.len(), 15, "2 a second for 10 s admits all 15");

    // The log, read in pages of 4, checked here.
    let (entries, checkpoints) = read_log(&server, &sale, 4).await;
    assert_eq!(entries.len(), 15);
    let mut prev = "0".repeat(64);
    let mut last_draw = String::new();
    for (index, entry) in entries.iter().enumerate() {
        let n = index as u64 + 1;
        assert_eq!(entry["n"], json!(n));
        assert_eq!(entry["prev_hash"], json!(prev));
        let hash = entry_hash(
            &prev,
            n,
            entry["buyer_hash"].as_str().unwrap(),
            entry["draw"].as_str(),
        );
        assert_eq!(entry["hash"], json!(hash), "entry {n}");
        assert!(entry["admitted_at"].is_string(), "{entry}");
        assert!(entry["joined"].is_string(), "{entry}");
        if index < 12 {
            let draw = entry["draw"].as_str().expect("drawn").to_owned();
            assert!(draw > last_draw, "draw order at {n}");
            last_draw = draw;
        } else {
            assert_eq!(entry["draw"], Value::Null);
            assert_eq!(entry["buyer_hash"], json!(sha256_hex(&late[index - 12])));
        }
        prev = hash;
    }
    let hashes: HashSet<&str> = entries
        .iter()
        .map(|entry| entry["buyer_hash"].as_str().unwrap())
        .collect();
    for buyer in &drawn {
        assert!(hashes.contains(sha256_hex(buyer).as_str()), "{buyer}");
    }
    assert!(
        checkpoints.len() >= 6,
        "one a second while admission moved: {checkpoints:?}"
    );
    let last = checkpoints.last().unwrap();
    assert_eq!(last["n"], json!(15));
    assert_eq!(last["admitted_through"], json!(15));
    assert_eq!(last["hash"], entries[14]["hash"]);
    // A buyer finds their own entry from their status.
    let mine = ok(&status(&server, &sale, &drawn[3]).await).clone();
    assert_eq!(mine["buyer_hash"], json!(sha256_hex(&drawn[3])));
    let n = mine["log_entry"].as_u64().expect("log_entry") as usize;
    assert_eq!(entries[n - 1]["buyer_hash"], mine["buyer_hash"]);
    let keys = ok(&server.get("/api/v1/keys", None).await).clone();
    assert_eq!(keys["keys"][0]["alg"], "Ed25519");
    assert_eq!(keys["keys"][0]["kid"], last["kid"]);

    let url = format!("http://{}", server.addrs[0]);
    let (code, output) = {
        let (url, sale, token, buyer) = (
            url.clone(),
            sale.clone(),
            server.admin_token.clone(),
            drawn[3].clone(),
        );
        tokio::task::spawn_blocking(move || verify(&url, &sale, Some(&token), &[&buyer]))
            .await
            .unwrap()
    };
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("15 entries (12 drawn)"), "{output}");
    assert!(
        output.contains("15 orders each bought with a pass"),
        "{output}"
    );
    let (code, output) = {
        let (url, sale) = (url.clone(), sale.clone());
        tokio::task::spawn_blocking(move || verify(&url, &sale, None, &[]))
            .await
            .unwrap()
    };
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("orders not checked"), "{output}");

    // The same log, doctored one way at a time.
    let orders = ok(&server
        .get(
            &format!("/api/v1/orders?sale_id={sale}&limit=500"),
            Some(&server.admin_token),
        )
        .await)["orders"]
        .as_array()
        .unwrap()
        .clone();
    let served = Served {
        sale: ok(&server.get(&format!("/api/v1/sales/{sale}"), None).await).clone(),
        keys,
        entries,
        checkpoints,
        orders,
    };
    let passing = fake_server(served.clone()).await;
    let (code, output) = {
        let sale = sale.clone();
        tokio::task::spawn_blocking(move || verify(&passing, &sale, Some("any"), &[]))
            .await
            .unwrap()
    };
    assert_eq!(code, 0, "the fake serves the true log:\n{output}");
    planted(
        &served,
        &sale,
        |log| log.sale["waiting_room"]["draw_seed"] = json!("11".repeat(32)),
        "does not match the draw_commitment",
    )
    .await;
    planted(
        &served,
        &sale,
        |log| {
            log.entries.swap(2, 3);
            log.rechain();
        },
        "entry 4 is out of draw order",
    )
    .await;
    planted(
        &served,
        &sale,
        |log| {
            let admitted: jiff::Timestamp = log.entries[9]["admitted_at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let earlier = admitted - SignedDuration::from_millis(1500);
            log.entries[9]["admitted_at"] = json!(earlier.to_string());
        },
        "admission ahead of the rate: entry 10",
    )
    .await;
    planted(
        &served,
        &sale,
        |log| log.entries[6]["prev_hash"] = json!("ab".repeat(32)),
        "broken chain link: entry 7",
    )
    .await;
    planted(
        &served,
        &sale,
        |log| {
            let signature = log.checkpoints[1]["signature"].as_str().unwrap().to_owned();
            let flipped = if signature.starts_with('A') { "B" } else { "A" };
            log.checkpoints[1]["signature"] = json!(format!("{flipped}{}", &signature[1..]));
        },
        "checkpoint 1's signature is not valid",
    )
    .await;
    planted(
        &served,
        &sale,
        |log| {
            let mut order = log.orders[0].clone();
            order["id"] = json!("planted-order");
            order["user_id"] = json!("never-in-line");
            log.orders.push(order);
        },
        "order planted-order was bought by a buyer the line had not admitted",
    )
    .await;
    server.assert_consistent(&sale).await;
}

/// The log is durable like the line: after a restart the same entries and checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_survives_a_restart() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(flashsale_server::clock::ManualClock::new(
        jiff::Timestamp::now(),
    ));
    let settings = || crate::harness::test_settings(data_dir.path());
    let server = TestServer::start_on(settings(), Some(Arc::clone(&clock))).await;
    let sale = room_sale(&server, 10, 10, json!({ "admit_per_sec": 1 })).await;
    for buyer in users("kept", 6) {
        ok(&join(&server, &sale, &buyer).await);
    }
    server.advance(SignedDuration::from_secs(13));
    let checkpointed = eventually(Duration::from_secs(20), || async {
        !read_log(&server, &sale, 1000).await.1.is_empty()
    })
    .await;
    assert!(checkpointed);
    let before = read_log(&server, &sale, 1000).await;
    let keys = ok(&server.get("/api/v1/keys", None).await).clone();
    server.stop().await;
    let server = TestServer::start_on(settings(), Some(Arc::clone(&clock))).await;
    let after = read_log(&server, &sale, 1000).await;
    assert_eq!(after.0, before.0, "the same entries");
    assert_eq!(
        after.1[..before.1.len()],
        before.1[..],
        "the same checkpoints"
    );
    assert_eq!(
        ok(&server.get("/api/v1/keys", None).await).clone(),
        keys,
        "the same key"
    );
    server.stop().await;
}

/// A cluster archives an ended, settled sale's keys in Redis, but the log stays public: its
/// places and checkpoints are kept, and it still verifies.
pub async fn the_log_outlives_the_archive(server: TestServer) {
    use redis::AsyncCommands;
    let starts_at = server.now() + SignedDuration::from_secs(10);
    let sale = server
        .create_sale(json!({
            "stock": 5,
            "starts_at": starts_at.to_string(),
            "ends_at": (starts_at + SignedDuration::from_secs(20)).to_string(),
            "waiting_room": { "admit_per_sec": 5 },
        }))
        .await;
    for buyer in users("archived", 4) {
        ok(&join(&server, &sale, &buyer).await);
    }
    server.advance(SignedDuration::from_secs(13));
    let admitted = eventually(Duration::from_secs(20), || async {
        read_log(&server, &sale, 1000)
            .await
            .1
            .last()
            .map(|c| c["admitted_through"].clone())
            == Some(json!(4))
    })
    .await;
    assert!(admitted);
    let before = read_log(&server, &sale, 1000).await;
    let backends = server.backends().expect("a cluster");
    let redis = redis::Client::open(backends.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let sale_key = format!("{}:{{{sale}}}:sale", backends.redis.prefix);
    let archived = eventually(Duration::from_secs(30), || {
        server.advance(SignedDuration::from_secs(61));
        let (mut redis, sale_key) = (redis.clone(), sale_key.clone());
        async move { !redis.exists::<_, bool>(sale_key).await.unwrap() }
    })
    .await;
    assert!(archived, "the settled sale's gate is still in Redis");
    let after = read_log(&server, &sale, 1000).await;
    assert_eq!(after, before, "the same log after the archive");
    let (url, sale) = (format!("http://{}", server.addrs[0]), sale.clone());
    let (code, output) = tokio::task::spawn_blocking(move || verify(&url, &sale, None, &[]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{output}");
}

crate::server_suite!(one_node_archiving, TestServer::start_cluster(1);
    the_log_outlives_the_archive);
crate::server_suite!(embedded, async { Some(TestServer::start().await) };
    a_line_verifies_and_every_planted_break_is_named);
crate::server_suite!(two_nodes, TestServer::start_cluster(2);
    a_line_verifies_and_every_planted_break_is_named);
