//! `flashsale bench`: the real binary runs the small scenarios against an embedded server and must
//! pass; against a fake server with planted faults its verification must fail, naming the fault.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

fn bench(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .arg("bench")
        .args(args)
        .args(["--quiet", "--seed", "11"])
        .output()
        .expect("bench runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_small_scenarios_pass_against_an_embedded_server() {
    for scenario in ["oversell", "idempotency", "multi", "lifecycle"] {
        let (passed, output) = bench(&[scenario]);
        assert!(passed, "{scenario} failed:\n{output}");
        assert!(output.contains("PASSED"), "{output}");
        assert!(!output.contains("FAIL "), "{output}");
    }
}

#[test]
fn viewers_poll_on_the_pages_schedule_beside_the_stampede() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("viewers.json");
    let (passed, output) = bench(&[
        "viewers",
        "--viewers",
        "400",
        "--viewer-connections",
        "8",
        "--duration",
        "4",
        "--buyers",
        "3000",
        "--stock",
        "100",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert!(passed, "{output}");
    assert!(
        output.contains("purchase req/s with viewers / without = "),
        "{output}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let names: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["viewers", "purchase", "purchase+v", "viewers+buy"]);
    // Pages revalidate with the ETag they hold: after its first poll a page reads 304s.
    let outcomes = report["phases"][0]["outcomes"].as_array().unwrap();
    let count = |name: &str| {
        outcomes
            .iter()
            .find(|row| row["outcome"] == json!(name))
            .map_or(0, |row| row["count"].as_u64().unwrap())
    };
    assert_eq!(count("sales 200"), 400, "{outcomes:?}");
    assert!(count("sales 304") > 400, "{outcomes:?}");
    assert_eq!(report["sales"].as_array().unwrap().len(), 2);
}

#[test]
fn the_fairness_scenario_runs_every_round_and_the_line_costs() {
    // A small crowd: too few buyers for the decile and bot-share targets to be more than noise,
    // so this checks the rounds run, the stock sells in each, and the line's phases answer.
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["bench", "fairness", "--quiet", "--seed", "11"])
        .args(["--buyers", "400", "--requests", "2000"])
        .output()
        .expect("bench runs");
    let text = String::from_utf8_lossy(&output.stdout);
    for line in [
        "ok   every join is answered 200",
        "ok   every look at the line is answered 200",
        "ok   crowd before the start with room: the whole stock sells",
        "ok   arrivals after the start with room: the whole stock sells",
        "ok   arrivals after the start with room: later arrivals are served in arrival order",
        "ok   crowd before the start without room: the whole stock sells",
        "ok   arrivals after the start without room: the whole stock sells",
        "join req/s / sold-out purchase req/s = ",
        "waiting buyers: ",
        "ok   the logged line verifies, everyone admitted",
        "admission log of 2000 buyers read and verified in ",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn figures_are_written_as_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("run.json");
    let svg_path = dir.path().join("run.svg");
    let (passed, output) = bench(&[
        "oversell",
        "--buyers",
        "500",
        "--with-baseline",
        "--json",
        json_path.to_str().unwrap(),
        "--plot",
        svg_path.to_str().unwrap(),
    ]);
    assert!(passed, "{output}");
    assert!(
        output.contains("purchase req/s / baseline req/s = "),
        "{output}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["seed"], json!(11));
    assert_eq!(report["phases"][0]["name"], json!("baseline"));
    assert_eq!(report["phases"][0]["requests"], json!(500));
    assert_eq!(report["phases"][1]["requests"], json!(500));
    assert!(report["ratio_to_baseline"].as_f64().unwrap() > 0.0);
    assert_eq!(report["passed"], json!(true));
    let (passed, output) = bench(&["oversell", "--buyers", "500", "--with-bare-baseline"]);
    assert!(passed, "{output}");
    assert!(
        output.contains("purchase req/s / bare responder req/s = "),
        "{output}"
    );
    assert!(
        output.contains("\nbare "),
        "the bare phase is in the table: {output}"
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
}

/// An open-loop run reports where its late requests were, by 100-ms window of the schedule, and
/// how many requests the client itself sent late.
#[test]
fn an_open_loop_run_reports_its_late_windows() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("sustained.json");
    let (passed, output) = bench(&[
        "sustained",
        "--rate",
        "2000",
        "--duration",
        "1",
        "--stock",
        "10",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert!(passed, "{output}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let phase = &report["phases"][0];
    assert_eq!(phase["requests"], json!(2000));
    let late_windows = phase["windows_with_late_requests"].as_u64().unwrap();
    let worst = phase["worst_windows"].as_array().unwrap();
    assert!(worst.len() as u64 <= late_windows.min(5), "{phase}");
    for window in worst {
        let at_ms = window["at_ms"].as_u64().unwrap();
        assert!(at_ms < 1000 && at_ms % 100 == 0, "{window}");
        let late = window["late"].as_u64().unwrap();
        assert!(
            late >= 1 && late <= window["requests"].as_u64().unwrap(),
            "{window}"
        );
        assert!(window["slowest_ms"].as_f64().unwrap() > 5.0, "{window}");
        assert!(
            window["sent_late"].as_u64().unwrap() <= window["requests"].as_u64().unwrap(),
            "{window}"
        );
    }
    // The client's own lateness is reported beside the latencies it is part of.
    assert!(
        phase["requests_sent_late"].as_u64().unwrap() <= 2000,
        "{phase}"
    );
    if late_windows > 0 {
        assert!(output.contains("windows of 100 ms; the worst:"), "{output}");
    }
}

/// The faults a fake server can plant.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Accepts every purchase: more winners than stock.
    Oversell,
    /// Gives two buyers the same order id.
    Duplicate,
    /// Sells correctly but cannot find one of its orders afterwards.
    Missing,
}

struct Fake {
    fault: Fault,
    stock: AtomicU64,
    sold: AtomicU64,
    orders: Mutex<HashMap<String, String>>,
}

fn buyer_of(headers: &HeaderMap) -> String {
    let token = headers["authorization"]
        .to_str()
        .unwrap()
        .trim_start_matches("Bearer ");
    let claims = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

async fn create(
    State(fake): State<Arc<Fake>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    fake.stock
        .store(body["stock"].as_u64().unwrap(), Ordering::SeqCst);
    (StatusCode::CREATED, Json(json!({ "id": "fake-sale" })))
}

async fn purchase(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let buyer = buyer_of(&headers);
    let number = fake.sold.fetch_add(1, Ordering::SeqCst);
    if fake.fault != Fault::Oversell && number >= fake.stock.load(Ordering::SeqCst) {
        let error = json!({ "error": { "code": "sold_out", "message": "", "remaining": 0 } });
        return (StatusCode::CONFLICT, Json(error));
    }
    let id = match fake.fault {
        Fault::Duplicate => format!("order-{}", number / 2),
        _ => format!("order-{number}"),
    };
    fake.orders
        .lock()
        .unwrap()
        .insert(id.clone(), buyer.clone());
    (
        StatusCode::CREATED,
        Json(json!({ "id": id, "sale_id": "fake-sale", "user_id": buyer })),
    )
}

async fn audit(State(fake): State<Arc<Fake>>) -> Json<Value> {
    let held = fake.orders.lock().unwrap().len() as u64;
    let stock = fake.stock.load(Ordering::SeqCst);
    Json(
        json!({ "sale_id": "fake-sale", "stock": stock, "remaining": stock.saturating_sub(held),
        "pending": held, "paid": 0, "cancelled": 0, "expired": 0, "consistent": true }),
    )
}

async fn order(State(fake): State<Arc<Fake>>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    if fake.fault == Fault::Missing && id == "order-7" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": { "code": "order_not_found", "message": "" } })),
        );
    }
    match fake.orders.lock().unwrap().get(&id) {
        Some(buyer) => (
            StatusCode::OK,
            Json(json!({ "id": id, "sale_id": "fake-sale", "user_id": buyer,
            "quantity": 1, "status": "pending_payment" })),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": { "code": "order_not_found", "message": "" } })),
        ),
    }
}

async fn list(State(fake): State<Arc<Fake>>) -> Json<Value> {
    let orders: Vec<Value> = fake.orders.lock().unwrap().iter().map(|(id, buyer)| json!({
        "id": id, "sale_id": "fake-sale", "user_id": buyer, "quantity": 1, "status": "pending_payment" })).collect();
    Json(json!({ "orders": orders, "next_cursor": null }))
}

/// Runs the oversell scenario against a fake server with `fault`; returns the bench's output.
async fn against_fake(fault: Fault) -> (bool, String) {
    let fake = Arc::new(Fake {
        fault,
        stock: AtomicU64::new(0),
        sold: AtomicU64::new(0),
        orders: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route("/api/v1/sales", post(create))
        .route("/api/v1/sales/{id}/purchase", post(purchase))
        .route("/api/v1/sales/{id}/audit", get(audit))
        .route("/api/v1/orders", get(list))
        .route("/api/v1/orders/{id}", get(order))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let target = format!("http://{address}");
    tokio::task::spawn_blocking(move || {
        bench(&[
            "oversell",
            "--buyers",
            "300",
            "--target",
            &target,
            "--admin-token",
            "a",
            "--jwt-secret",
            "s",
        ])
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_a_planted_oversell() {
    let (passed, output) = against_fake(Fault::Oversell).await;
    assert!(!passed, "{output}");
    assert!(
        output.contains("FAIL sale fake-sale: winners == min(stock, buyers x limit)"),
        "{output}"
    );
    assert!(
        output.contains("300 distinct orders acknowledged, 100 expected"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_a_planted_duplicate() {
    let (passed, output) = against_fake(Fault::Duplicate).await;
    assert!(!passed, "{output}");
    assert!(
        output.contains("FAIL sale fake-sale: no order acknowledged to two buyers"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_a_planted_missing_order() {
    let (passed, output) = against_fake(Fault::Missing).await;
    assert!(!passed, "{output}");
    assert!(
        output.contains("FAIL sale fake-sale: every acknowledged order is retrievable"),
        "{output}"
    );
    assert!(output.contains("order-7 not found"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_small_scenarios_pass_against_a_cluster_node() {
    let Some(server) = crate::harness::TestServer::start_cluster_on_redis_time(2).await else {
        return;
    };
    let (admin, secret) = (server.admin_token.clone(), server.jwt_secret.clone());
    for addr in server.addrs.clone() {
        let target = format!("http://{addr}");
        for scenario in ["oversell", "lifecycle"] {
            let (admin, secret, url) = (admin.clone(), secret.clone(), target.clone());
            let (passed, output) = tokio::task::spawn_blocking(move || {
                bench(&[
                    scenario,
                    "--target",
                    &url,
                    "--admin-token",
                    &admin,
                    "--jwt-secret",
                    &secret,
                ])
            })
            .await
            .unwrap();
            assert!(passed, "{scenario} on {target} failed:\n{output}");
            assert!(output.contains("PASSED"), "{output}");
        }
    }
    server.stop().await;
}

/// `--compare-config`: in one run, the same scenario against a second server that delivers its
/// events to RabbitMQ; the run reports each phase's ratio and the sink catching up, and the
/// queue bound to the sink's exchange holds every event the compared server reported delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compared_run_with_a_sink_reports_the_ratio_and_the_sink_catching_up() {
    let Some(url) = crate::services::amqp_url() else {
        return;
    };
    let consumer = crate::brokers::amqp::AmqpConsumer::bind(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sinks.toml");
    std::fs::write(
        &config,
        format!(
            "[[events.sinks]]\nname = \"rabbit\"\nkind = \"amqp\"\nurl = \"{url}\"\nexchange = \"{}\"\n",
            consumer.exchange
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let (passed, output) = tokio::task::spawn_blocking(move || {
        bench(&[
            "oversell",
            "--buyers",
            "500",
            "--compare-config",
            &config_arg,
        ])
    })
    .await
    .unwrap();
    assert!(passed, "{output}");
    assert!(output.contains(": ratio "), "{output}");
    assert!(
        output.contains("ok   every sink caught up after the load"),
        "{output}"
    );
    assert!(
        output.contains("ok   with "),
        "the compared run is verified too:\n{output}"
    );
    let delivered: usize = output
        .split("the sinks delivered ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no delivered count:\n{output}"));
    // 100 units: the sale's creation, 100 orders made, and its sell-out.
    assert_eq!(delivered, 102, "{output}");
    // Delivered means confirmed by the broker, so routed to the queue already.
    let received = consumer.received().await;
    let ids: std::collections::HashSet<_> = received.iter().map(|event| &event.id).collect();
    assert_eq!(
        ids.len(),
        delivered,
        "every delivered event is in the queue, once by id"
    );
}

/// `--webhook-receiver --compare-rounds 2 --server-cpu 0`: two rounds, each a plain server beside
/// one that delivers to the bench's own webhook receiver (pinned to CPU 0 both); each round's
/// receiver has every event its sink delivered, signed right and in order, and the run prints
/// the median ratio of the rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_against_the_benchs_webhook_receiver_get_every_event_signed_and_in_order() {
    let (passed, output) = tokio::task::spawn_blocking(|| {
        bench(&[
            "oversell",
            "--buyers",
            "300",
            "--webhook-receiver",
            "--compare-rounds",
            "2",
            "--server-cpu",
            "0",
        ])
    })
    .await
    .unwrap();
    assert!(passed, "{output}");
    for check in [
        "ok   the webhook receiver has every event its sink delivered",
        "ok   every webhook was signed right",
        "ok   each sale's webhooks came in sequence order",
        "ok   every sink caught up after the load",
    ] {
        assert_eq!(
            output.matches(check).count(),
            2,
            "{check}, once a round:\n{output}"
        );
    }
    assert!(output.contains("(round 2)"), "{output}");
    assert!(output.contains("median of 2 rounds"), "{output}");
    // 100 units: the sale's creation, 100 orders made, and its sell-out, in each round.
    assert!(
        output.contains("102 distinct events (0 redelivered), the sink delivered 102"),
        "{output}"
    );
    assert!(output.contains("ok   plain (round 2): "), "{output}");
}
