//! Order events over HTTP, once embedded and once on two cluster nodes: the pull feed tells every
//! change in order, and a webhook receiver that is down for a while and refuses a third of the
//! deliveries gets every event, in per-sale order, each signature verified by an independent
//! Standard Webhooks implementation (`standardwebhooks` from PyPI, `scripts/webhook-receiver.py`).

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flashsale_server::config::Settings;
use flashsale_server::events::settings::SinkSettings;
use hyper::StatusCode;
use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::harness::{eventually, TestServer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every event of a sale, read from the feed in pages of `limit`.
async fn feed(server: &TestServer, sale_id: &str, limit: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let reply = server
            .get(
                &format!("/api/v1/events?sale_id={sale_id}&after={after}&limit={limit}"),
                Some(&server.admin_token),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let page = reply.body["events"].as_array().expect("events").clone();
        let next = reply.body["next_after"].as_u64().expect("next_after");
        if page.is_empty() {
            assert_eq!(next, after, "an empty page leaves next_after where it was");
            return events;
        }
        assert_eq!(next, page.last().unwrap()["sequence"].as_u64().unwrap());
        after = next;
        events.extend(page);
    }
}

/// A sale's life with every kind of change: purchases to the sell-out (and one refused after
/// it), two payments, a cancel, and the rest left to expire. Returns the sale and its orders.
async fn a_sale_lived(server: &TestServer) -> (String, Vec<String>) {
    let sale_id = server
        .create_sale(json!({"stock": 5, "payment_window_secs": 60}))
        .await;
    let mut orders = Vec::new();
    for buyer in 0..6 {
        let reply = server.purchase(&sale_id, &format!("b{buyer}"), None).await;
        if buyer < 5 {
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            orders.push(reply.body["id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(reply.code(), "sold_out");
        }
    }
    // A cluster records an order once PostgreSQL has it (the persister, in the background):
    // the story below starts once every purchase is recorded, so the sell-out is in it.
    assert!(
        eventually(Duration::from_secs(20), || async {
            feed(server, &sale_id, 100)
                .await
                .iter()
                .any(|e| e["type"] == "flashsale.sale.sold_out")
        })
        .await,
        "the sell-out is recorded"
    );
    for (at, buyer) in [(0, "b0"), (1, "b1")] {
        let reply = server
            .post(
                &format!("/api/v1/orders/{}/pay", orders[at]),
                Some(&server.token(buyer)),
                json!({}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let reply = server
        .post(
            &format!("/api/v1/orders/{}/cancel", orders[2]),
            Some(&server.token("b2")),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    server.advance(SignedDuration::from_secs(61));
    // The sweep (real time) expires the two left pending.
    assert!(
        eventually(Duration::from_secs(20), || async {
            let audit = server.audit(&sale_id).await;
            audit["expired"] == json!(2)
        })
        .await,
        "the unpaid orders expire"
    );
    (sale_id, orders)
}

/// The feed, in every way it may be asked.
pub async fn the_feed_tells_every_change_in_order(server: TestServer) {
    let (sale_id, orders) = a_sale_lived(&server).await;
    // The cluster records an order's `created` when PostgreSQL has it: all of them by now (the
    // pay and cancel above wrote them), and the expiries with them.
    let events = feed(&server, &sale_id, 3).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let created = types
        .iter()
        .filter(|t| **t == "flashsale.order.created")
        .count();
    assert_eq!(created, 5, "{types:?}");
    assert_eq!(types[0], "flashsale.sale.created");
    for (kind, count) in [
        ("flashsale.order.paid", 2),
        ("flashsale.order.cancelled", 1),
        ("flashsale.order.expired", 2),
        ("flashsale.sale.sold_out", 1),
        ("flashsale.sale.updated", 1),
    ] {
        assert_eq!(
            types.iter().filter(|t| **t == kind).count(),
            count,
            "{kind} in {types:?}"
        );
    }
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=events.len() as u64).collect::<Vec<_>>());
    // Each order's last event is its final status.
    for order_id in &orders {
        let reply = server
            .get(
                &format!("/api/v1/orders/{order_id}"),
                Some(&server.admin_token),
            )
            .await;
        let status = reply.body["status"].as_str().unwrap().to_owned();
        let last = events
            .iter()
            .rev()
            .find(|e| e["subject"] == json!(order_id))
            .expect("the order has events");
        assert_eq!(last["data"]["status"], json!(status), "{last}");
        let kind = match status.as_str() {
            "paid" => "flashsale.order.paid",
            "cancelled" => "flashsale.order.cancelled",
            "expired" => "flashsale.order.expired",
            other => panic!("unexpected final status {other}"),
        };
        assert_eq!(last["type"], kind);
    }
    // Every CloudEvent field.
    let first = &events[1];
    assert_eq!(first["specversion"], "1.0");
    assert_eq!(first["saleid"], json!(sale_id));
    assert_eq!(first["datacontenttype"], "application/json");
    assert!(first["source"].as_str().unwrap().starts_with("flashsale/"));
    assert_eq!(
        first["id"],
        json!(format!("{sale_id}-{}", first["sequence"]))
    );
    assert!(first["time"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .is_ok());
    let sources: HashSet<&str> = events
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources.len(),
        1,
        "one installation, one source on every node"
    );
    // Refusals.
    let buyer = server.token("b0");
    for (path, bearer, status, code) in [
        (
            format!("/api/v1/events?sale_id={sale_id}"),
            Some(buyer.as_str()),
            403,
            "forbidden",
        ),
        (
            format!("/api/v1/events?sale_id={sale_id}"),
            None,
            401,
            "unauthenticated",
        ),
        (
            "/api/v1/events".to_owned(),
            Some(server.admin_token.as_str()),
            400,
            "invalid_request",
        ),
        (
            format!("/api/v1/events?sale_id={sale_id}&limit=0"),
            Some(server.admin_token.as_str()),
            400,
            "invalid_request",
        ),
        (
            format!("/api/v1/events?sale_id={sale_id}&limit=1001"),
            Some(server.admin_token.as_str()),
            400,
            "invalid_request",
        ),
        (
            format!("/api/v1/events?sale_id={sale_id}&after=-1"),
            Some(server.admin_token.as_str()),
            400,
            "invalid_request",
        ),
        (
            "/api/v1/events?sale_id=nope".to_owned(),
            Some(server.admin_token.as_str()),
            404,
            "sale_not_found",
        ),
    ] {
        let reply = server.get(&path, bearer).await;
        assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.body);
        assert_eq!(reply.code(), code, "{path}");
    }
    server.assert_consistent(&sale_id).await;
    server.stop().await;
}

crate::server_suite!(embedded, async { Some(TestServer::start().await) };
    the_feed_tells_every_change_in_order);
crate::server_suite!(two_nodes, TestServer::start_cluster(2);
    the_feed_tells_every_change_in_order);

/// The Python receiver, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start(down_secs: f64, refuse: f64) -> Self {
        let venv = Command::new(repository().join("scripts/webhook-venv"))
            .output()
            .expect("scripts/webhook-venv runs");
        assert!(
            venv.status.success(),
            "{}",
            String::from_utf8_lossy(&venv.stderr)
        );
        let python = String::from_utf8(venv.stdout).unwrap().trim().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let mut child = Command::new(python)
            .arg(repository().join("scripts/webhook-receiver.py"))
            .args(["--secret", SECRET, "--seed", "26"])
            .args(["--down-secs", &down_secs.to_string()])
            .args(["--refuse", &refuse.to_string()])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the receiver starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the receiver prints its port");
        Self {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    fn configure(&self, settings: &mut Settings) {
        settings.events.sinks = vec![SinkSettings {
            name: "shop".into(),
            kind: "webhook".into(),
            url: Some(format!("http://127.0.0.1:{}/flashsale-events", self.port)),
            secret: Some(SECRET.into()),
            timeout_ms: Some(2000),
            ..SinkSettings::default()
        }];
        settings.events_sink_lease_ms = 5000;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn every_event_reaches_the_receiver(server: TestServer, receiver: Receiver) {
    let (sale_id, _) = a_sale_lived(&server).await;
    let other_sale = server.create_sale(json!({"stock": 2})).await;
    for buyer in ["x1", "x2"] {
        assert_eq!(
            server.purchase(&other_sale, buyer, None).await.status,
            StatusCode::CREATED
        );
    }
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sale in [&sale_id, &other_sale] {
        let ids = feed(&server, sale, 100)
            .await
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        expected.insert(sale.clone(), ids);
    }
    // The second sale's purchases are persisted by the cluster in the background.
    assert!(
        eventually(Duration::from_secs(20), || async {
            feed(&server, &other_sale, 100).await.len() == 4
        })
        .await
    );
    expected.insert(
        other_sale.clone(),
        feed(&server, &other_sale, 100)
            .await
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect(),
    );
    let total: usize = expected.values().map(Vec::len).sum();
    let all_in = eventually(Duration::from_secs(90), || async {
        let ids: HashSet<String> = receiver
            .received()
            .iter()
            .filter_map(|line| line["id"].as_str().map(str::to_owned))
            .collect();
        ids.len() >= total
    })
    .await;
    let received = receiver.received();
    assert!(
        all_in,
        "received {} of {total}: {received:?}",
        received.len()
    );
    assert!(
        received
            .iter()
            .all(|line| line.get("bad_signature").is_none()),
        "every signature verifies: {received:?}"
    );
    // Per sale, first deliveries in sequence order: each waited for the one before.
    for (sale, ids) in &expected {
        let mut seen = HashSet::new();
        let delivered: Vec<String> = received
            .iter()
            .filter(|line| line["saleid"] == json!(sale))
            .filter_map(|line| line["id"].as_str().map(str::to_owned))
            .filter(|id| seen.insert(id.clone()))
            .collect();
        assert_eq!(&delivered, ids, "sale {sale}: in order, none missing");
    }
    assert!(received
        .iter()
        .all(|line| line["content_type"] == "application/json"));
    // The sinks' state: every event delivered by the node holding the sink, with retries (the
    // receiver was down, then refused some).
    let mut delivered = 0;
    let mut retries = 0;
    for _ in 0..server.addrs.len() {
        let reply = server
            .get("/api/v1/events/sinks", Some(&server.admin_token))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let sink = &reply.body["sinks"][0];
        assert_eq!(sink["name"], "shop");
        assert_eq!(sink["kind"], "webhook");
        assert_eq!(sink["dead_letters"], 0);
        delivered += sink["delivered"].as_u64().unwrap();
        retries += sink["retries"].as_u64().unwrap();
    }
    assert!(delivered >= total as u64, "{delivered} < {total}");
    assert!(retries > 0, "the receiver refused deliveries");
    for sale in [&sale_id, &other_sale] {
        server.assert_consistent(sale).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_refusing_webhook_gets_every_event_in_order() {
    let receiver = Receiver::start(2.0, 0.33);
    let server = TestServer::start_with(|settings| receiver.configure(settings)).await;
    every_event_reaches_the_receiver(server, receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_a_refusing_webhook_gets_every_event_in_order() {
    let receiver = Receiver::start(2.0, 0.33);
    let Some(server) =
        TestServer::start_cluster_with(2, |settings| receiver.configure(settings)).await
    else {
        return;
    };
    every_event_reaches_the_receiver(server, receiver).await;
}

/// Runs `flashsale serve` with `config` as its file; returns whether it was still serving after
/// it answered (or failed), and what it wrote to stderr.
fn serve_with_config(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flashsale.toml");
    std::fs::write(&file, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--config",
        ])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts prints its announcement on stdout; one refused exits first.
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let running = child.try_wait().unwrap().is_none() && !line.is_empty();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    (
        running,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Bad sink settings stop the server at start with the sink's name and the reason; a receiver
/// nobody listens on is no error (the sink waits for it).
#[test]
fn bad_sink_settings_stop_the_server_and_an_unreachable_url_does_not() {
    let sink = |rest: &str| format!("[[events.sinks]]\nname = \"shop\"\n{rest}\n");
    let cases = [
        (
            sink("kind = \"kafka\"\nurl = \"http://127.0.0.1:9/\""),
            "unknown kind \"kafka\"",
        ),
        (
            sink("kind = \"webhook\"\nurl = \"http://127.0.0.1:9/\""),
            "needs secret",
        ),
        (
            sink("kind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"hunter2\""),
            "whsec_",
        ),
        (
            sink(&format!(
                "kind = \"webhook\"\nurl = \"not a url\"\nsecret = \"{SECRET}\""
            )),
            "url",
        ),
        (
            sink(&format!(
                "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"{SECRET}\"\nretry_hours = -1"
            )),
            "retry_hours",
        ),
        (
            sink("kind = \"amqp\"\nurl = \"http://127.0.0.1:5672\"\nexchange = \"flashsale\""),
            "url",
        ),
        (
            sink("kind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject_prefix = \"a b\""),
            "subject_prefix",
        ),
    ];
    for (config, reason) in cases {
        let (running, stderr) = serve_with_config(&config);
        assert!(!running, "started with {config}");
        assert!(stderr.contains(reason), "{reason:?} not in {stderr}");
    }
    // Port 9 (discard) has no listener here: each sink waits, the server serves.
    for unreachable in [
        format!("kind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\""),
        "kind = \"amqp\"\nurl = \"amqp://127.0.0.1:9/%2f\"\nexchange = \"flashsale\"".to_owned(),
        "kind = \"nats\"\nurl = \"nats://127.0.0.1:9\"\nsubject_prefix = \"shop\"".to_owned(),
    ] {
        let (running, stderr) = serve_with_config(&sink(&unreachable));
        assert!(
            running,
            "an unreachable receiver stopped the server ({unreachable}): {stderr}"
        );
    }
}
