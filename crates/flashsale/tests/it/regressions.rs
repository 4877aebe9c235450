//! One regression test per bug of issue #8, each failing on the code before its fix. The cluster
//! ones need the services named in `services.rs`, and say so when skipped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flashsale_server::clock::{Clock, ManualClock};
use flashsale_server::domain::{Actor, Order, OrderId, OrderStatus, SaleDraft, SaleId, UserId};
use flashsale_server::gate::{GateDecision, GateRecords, MemoryGate, Reservation, StockGate};
use flashsale_server::metrics::Metrics;
use flashsale_server::redis::{RedisGate, RedisGateOptions};
use flashsale_server::service::{PrivateIntake, Service};
use flashsale_server::store::{OrderStore, SqliteStore, SqliteStoreOptions, StoreError};
use hyper::StatusCode;
use jiff::{SignedDuration, Timestamp};
use redis::AsyncCommands;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::cluster::{metric, postgres, reconcile};
use crate::harness::{eventually, test_settings, users, TestServer};
use crate::services::{ClusterBackends, KeyPrefix};

fn sqlite(data_dir: &Path) -> Arc<dyn OrderStore> {
    Arc::new(
        SqliteStore::open(
            data_dir,
            SqliteStoreOptions::default(),
            Arc::new(Metrics::default()),
        )
        .expect("store opens"),
    )
}

async fn embedded_service(data_dir: &Path, clock: Arc<ManualClock>) -> Service {
    let gate: Arc<dyn StockGate> = Arc::new(MemoryGate::new());
    let store = sqlite(data_dir);
    let intake = Arc::new(PrivateIntake::new(Arc::clone(&gate), Arc::clone(&store)));
    Service::start(gate, store, intake, clock, 100)
        .await
        .expect("service starts")
}

fn live_sale(stock: i64, now: Timestamp) -> SaleDraft {
    SaleDraft {
        name: "Regression".into(),
        stock,
        starts_at: now - SignedDuration::from_secs(60),
        ends_at: Some(now + SignedDuration::from_secs(3600)),
        ..SaleDraft::default()
    }
}

/// Waits (bounded) until the sale's audit balances with `remaining` units left.
async fn settles_at(service: &Service, sale_id: &str, remaining: u64) -> bool {
    eventually(Duration::from_secs(10), || async {
        let audit = service.audit(sale_id).await.expect("audit");
        audit.consistent && audit.remaining == remaining
    })
    .await
}

/// Bug 1: a cancel whose caller goes away once it is queued still returns the stock. The
/// cancel future is polled once (the transition reaches the store's writer) and dropped, as
/// hyper drops a handler whose client reset the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_caller_hangs_up_still_returns_its_stock() {
    let data_dir = tempfile::tempdir().unwrap();
    let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
    let service = embedded_service(data_dir.path(), Arc::new(ManualClock::new(now))).await;
    let sale = service.create_sale(live_sale(50, now)).await.unwrap();
    let sale_id = sale.sale.id.to_string();
    let mut orders = Vec::new();
    for buyer in users("hang-up", 50) {
        let buyer = UserId::parse(&buyer).unwrap();
        let order = service
            .purchase(buyer.clone(), &sale_id, 1, None, None, None)
            .await;
        orders.push((buyer, order.unwrap().order.id));
    }
    assert!(settles_at(&service, &sale_id, 0).await);
    for (buyer, order_id) in &orders {
        let actor = Actor::Buyer(buyer.clone());
        let cancel = service.cancel(&actor, order_id.as_str());
        // One poll, then the caller is gone.
        let _ = tokio::time::timeout(Duration::ZERO, cancel).await;
    }
    assert!(
        settles_at(&service, &sale_id, 50).await,
        "every cancelled unit is back: {:?}",
        service.audit(&sale_id).await
    );
    for (buyer, _) in &orders {
        let again = service
            .purchase(buyer.clone(), &sale_id, 1, None, None, None)
            .await;
        assert!(again.is_ok(), "the buyer's limit is free again: {again:?}");
    }
}

/// Bug 1, over HTTP: cancels whose clients reset the connection right after sending them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_from_clients_that_reset_the_connection_return_their_stock() {
    let server = TestServer::start().await;
    let sale_id = server.create_sale(json!({ "stock": 40 })).await;
    let buyers = users("reset", 40);
    let replies = server.purchase_all(&sale_id, buyers.clone()).await;
    let addr = server.next_addr();
    for (buyer, reply) in buyers.iter().zip(&replies) {
        assert_eq!(reply.status, StatusCode::CREATED);
        let order_id = reply.body["id"].as_str().unwrap();
        let request = format!(
            "POST /api/v1/orders/{order_id}/cancel HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
            server.token(buyer)
        );
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        // SO_LINGER 0: closing sends a reset, not a polite end of stream (and with a zero
        // timeout the drop does not block, which is why tokio deprecates the call in general).
        #[allow(deprecated)]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
        drop(stream);
    }
    // A reset that reaches the server before the request is read cancels nothing; every cancel
    // that was recorded has its unit back on sale.
    let settled = eventually(Duration::from_secs(10), || async {
        let audit = server.audit(&sale_id).await;
        audit["consistent"] == json!(true) && audit["remaining"] == audit["cancelled"]
    })
    .await;
    assert!(settled, "{}", server.audit(&sale_id).await);
    let again = server.purchase_all(&sale_id, users("again", 40)).await;
    let sold = again
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .count() as u64;
    // A late cancel may land while the second round buys, or just after it: its unit goes back
    // to the gate in a task after the store records it, so count at the next quiescent point
    // (a unit that never came back keeps the audit inconsistent and fails here).
    let quiescent = eventually(Duration::from_secs(10), || async {
        server.audit(&sale_id).await["consistent"] == json!(true)
    })
    .await;
    assert!(quiescent, "{}", server.audit(&sale_id).await);
    let audit = server.assert_consistent(&sale_id).await;
    let (cancelled, remaining) = (
        audit["cancelled"].as_u64().unwrap(),
        audit["remaining"].as_u64().unwrap(),
    );
    assert_eq!(
        sold + remaining,
        cancelled,
        "every cancelled unit came back once: {audit}"
    );
}

/// Starts `nodes` servers sharing `clock` (and, given backends, one cluster).
async fn servers_on_clock(
    clock: Arc<ManualClock>,
    backends: Option<&ClusterBackends>,
    nodes: usize,
) -> (Vec<TestServer>, Vec<tempfile::TempDir>) {
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..nodes {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = test_settings(dir.path());
        if let Some(backends) = backends {
            backends.configure(&mut settings);
        }
        servers.push(TestServer::start_on(settings, Some(Arc::clone(&clock))).await);
        dirs.push(dir);
    }
    (servers, dirs)
}

async fn keyed_purchase(
    server: &TestServer,
    sale_id: &str,
    buyer: &str,
    key: &str,
) -> (StatusCode, String, String) {
    let reply = server
        .send(
            hyper::Method::POST,
            &format!("/api/v1/sales/{sale_id}/purchase"),
            Some(&server.token(buyer)),
            None,
            &[("idempotency-key", key)],
        )
        .await;
    let id = reply.body["id"].as_str().unwrap_or("").to_owned();
    (reply.status, reply.code().to_owned(), id)
}

/// Bug 2: a winner's retry with its key after the sale ended gets its order (both backends).
async fn a_winning_key_is_answered_after_the_end(servers: &[TestServer], clock: &ManualClock) {
    let first = &servers[0];
    let now = clock.now();
    let sale_id = first
        .create_sale(json!({
            "stock": 5,
            "starts_at": (now - SignedDuration::from_hours(1)).to_string(),
            "ends_at": (now + SignedDuration::from_hours(1)).to_string(),
        }))
        .await;
    let (status, _, won) = keyed_purchase(first, &sale_id, "winner", "retry-me").await;
    assert_eq!(status, StatusCode::CREATED);
    clock.advance(SignedDuration::from_hours(2));
    for server in servers {
        let (status, code, order) = keyed_purchase(server, &sale_id, "winner", "retry-me").await;
        assert_eq!(
            (status, order.as_str()),
            (StatusCode::OK, won.as_str()),
            "{code}"
        );
        let (status, code, _) = keyed_purchase(server, &sale_id, "winner", "new-key").await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::CONFLICT, "sale_ended")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_winning_key_is_answered_after_the_end() {
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let (servers, _dirs) = servers_on_clock(Arc::clone(&clock), None, 1).await;
    a_winning_key_is_answered_after_the_end(&servers, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_winning_key_is_answered_after_the_end() {
    let Some(backends) = ClusterBackends::new() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let (servers, _dirs) = servers_on_clock(Arc::clone(&clock), Some(&backends), 2).await;
    a_winning_key_is_answered_after_the_end(&servers, &clock).await;
}

/// Bug 2: a winner whose `201` was lost retries on a node that saw the sale sold out: the
/// node's sold-out mark must not answer before the key is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_winning_key_is_answered_by_a_node_that_saw_the_sale_sold_out() {
    let Some(server) = TestServer::start_cluster(2).await else {
        return;
    };
    let [node_a, node_b] = [server.addrs[0], server.addrs[1]];
    let sale_id = server.create_sale(json!({ "stock": 1 })).await;
    let buy = |addr, buyer: &'static str, key: Option<&'static str>| {
        let server = &server;
        let sale_id = sale_id.clone();
        async move {
            let headers: Vec<(&str, &str)> = key
                .map(|key| ("idempotency-key", key))
                .into_iter()
                .collect();
            crate::harness::send(
                &server.client,
                addr,
                hyper::Method::POST,
                &format!("/api/v1/sales/{sale_id}/purchase"),
                Some(&server.token(buyer)),
                None,
                &headers,
            )
            .await
        }
    };
    let won = buy(node_a, "winner", Some("k1")).await;
    assert_eq!(won.status, StatusCode::CREATED);
    // Until node B refuses from its own sold-out mark (its pub/sub subscription, made at start,
    // drops every mark when it connects).
    let mut refused_locally = false;
    for _ in 0..100 {
        let before = metric(&server, node_b, "flashsale_gate_local_sold_out_total").await;
        let late = buy(node_b, "late", None).await;
        assert_eq!(late.code(), "sold_out");
        if metric(&server, node_b, "flashsale_gate_local_sold_out_total").await > before {
            refused_locally = true;
            break;
        }
    }
    assert!(refused_locally, "node B holds a sold-out mark");
    let retry = buy(node_b, "winner", Some("k1")).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(retry.body["id"], won.body["id"]);
    let other_key = buy(node_b, "late", Some("k1")).await;
    assert_eq!(other_key.code(), "sold_out", "a key is its buyer's own");
}

async fn redis_gate(prefix: &KeyPrefix, time_from_caller: bool) -> RedisGate {
    RedisGate::on(
        &prefix.connect().await,
        &RedisGateOptions {
            sold_out_recheck: Duration::from_millis(1000),
            replicas_ack: 0,
            replicas_ack_timeout: Duration::from_secs(1),
            time_from_caller,
        },
        Arc::new(Metrics::default()),
    )
}

/// Bug 3: a node whose clock is an hour off can neither sell before the start nor make an
/// order that expires an hour early: Redis's clock decides the window and the order's times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_skewed_clock_cannot_move_the_window_or_the_deadline() {
    let Some(prefix) = KeyPrefix::new() else {
        return;
    };
    let gate = redis_gate(&prefix, false).await;
    let now = Timestamp::now();
    let hour = SignedDuration::from_hours(1);
    let sale = |starts_at: Timestamp| {
        SaleDraft {
            name: "Skew".into(),
            stock: 5,
            starts_at,
            payment_window_secs: Some(900),
            ..SaleDraft::default()
        }
        .validate(SaleId::generate(), now)
        .unwrap()
    };
    let reservation = |sale: &flashsale_server::domain::Sale, node_now: Timestamp| Reservation {
        order: Order {
            id: OrderId::generate(),
            sale_id: sale.id.clone(),
            user_id: UserId::parse("skewed").unwrap(),
            quantity: 1,
            status: OrderStatus::PendingPayment,
            created_at: node_now,
            expires_at: node_now + SignedDuration::from_secs(900),
            paid_at: None,
            idempotency_key: None,
            access_code: None,
            refunded_at: None,
            payment: None,
        },
        per_user_limit: 1,
        payment_window_secs: 900,
    };
    let later = sale(now + SignedDuration::from_mins(30));
    gate.open_sale(&later).await.unwrap();
    assert_eq!(
        gate.reserve(&reservation(&later, now + hour))
            .await
            .unwrap(),
        GateDecision::NotStarted,
        "a node an hour ahead does not sell a sale that starts in 30 minutes"
    );
    let live = sale(now - SignedDuration::from_mins(1));
    gate.open_sale(&live).await.unwrap();
    let behind = reservation(&live, now - hour);
    let GateDecision::Reserved { created_at } = gate.reserve(&behind).await.unwrap() else {
        panic!("a live sale sells to a node an hour behind");
    };
    let off = created_at.duration_since(Timestamp::now()).abs();
    assert!(
        off < SignedDuration::from_secs(5),
        "Redis's time, not the node's: {created_at}"
    );
    let queued: redis::streams::StreamRangeReply = redis::Client::open(prefix.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
        .xrange_all(gate.redis().keys().queue(&live.id))
        .await
        .unwrap();
    let order = queued
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("order"))
        .filter_map(|text| flashsale_server::redis::record::decode(&text))
        .find(|order| order.id == behind.order.id)
        .expect("the order is queued");
    assert_eq!(order.created_at, created_at);
    assert_eq!(
        order.expires_at,
        created_at + SignedDuration::from_secs(900)
    );
}

/// Bug 4 and 6: opening a sale sets up its queue and the persisters' group in the same step;
/// the persisters' work list holds a sale only while it has queued orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_opens_whole_and_leaves_the_work_list_once_persisted() {
    let Some(server) = TestServer::start_cluster(1).await else {
        return;
    };
    let backends = server.backends().unwrap();
    let keys = flashsale_server::redis::RedisKeys::new(&backends.redis.prefix);
    let mut redis = redis::Client::open(backends.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut sale_ids = Vec::new();
    for _ in 0..5 {
        let sale_id = server.create_sale(json!({ "stock": 10 })).await;
        let queue = keys.queue(&SaleId::parse(&sale_id).unwrap());
        let groups: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&queue)
            .query_async(&mut redis)
            .await
            .expect("the queue exists as soon as the sale does");
        assert_eq!(groups.len(), 1, "the persisters' group exists");
        sale_ids.push(sale_id);
    }
    let in_list: Vec<String> = redis.smembers(keys.queued_sales()).await.unwrap();
    assert!(in_list.is_empty(), "no orders, no work: {in_list:?}");
    for sale_id in &sale_ids {
        let replies = server.purchase_all(sale_id, users(sale_id, 3)).await;
        assert!(replies
            .iter()
            .all(|reply| reply.status == StatusCode::CREATED));
    }
    let drained = eventually(Duration::from_secs(10), || async {
        let in_list: Vec<String> = redis.clone().smembers(keys.queued_sales()).await.unwrap();
        in_list.is_empty()
    })
    .await;
    assert!(drained, "persisted sales leave the work list");
    let database = postgres(backends).await;
    let count: i64 = database
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 15);
}

/// Bug 5: one queue entry PostgreSQL refuses for good (here an order of a sale it does not
/// have) is set aside in `refused_orders`; the orders around it are persisted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_queue_entry_does_not_stall_the_persister() {
    let Some(server) = TestServer::start_cluster(1).await else {
        return;
    };
    let backends = server.backends().unwrap();
    let keys = flashsale_server::redis::RedisKeys::new(&backends.redis.prefix);
    let mut redis = redis::Client::open(backends.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let sale_id = server.create_sale(json!({ "stock": 100 })).await;
    let sale = SaleId::parse(&sale_id).unwrap();
    let poison = format!(
        r#"{{"id":"{}","sale_id":"{}","user_id":"ghost","quantity":1,"created_at_ms":1,"expires_at_ms":2}}"#,
        OrderId::generate(),
        SaleId::generate()
    );
    // Queued the way the purchase script queues, in the middle of real purchases.
    let before = server.purchase_all(&sale_id, users("before", 5)).await;
    let _: String = redis
        .xadd(keys.queue(&sale), "*", &[("order", poison.as_str())])
        .await
        .unwrap();
    let _: i64 = redis.sadd(keys.queued_sales(), &sale_id).await.unwrap();
    let after = server.purchase_all(&sale_id, users("after", 5)).await;
    assert!(before
        .iter()
        .chain(&after)
        .all(|reply| reply.status == StatusCode::CREATED));
    let database = postgres(backends).await;
    let persisted = eventually(Duration::from_secs(15), || async {
        let orders: i64 = database
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get(0);
        let refused: i64 = database
            .query_one(
                "SELECT count(*) FROM refused_orders WHERE user_id = 'ghost'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        orders == 10 && refused == 1
    })
    .await;
    assert!(
        persisted,
        "the ten real orders are in PostgreSQL, the poisoned one set aside"
    );
    server.assert_consistent(&sale_id).await;
}

/// Bug 7: a repair that read PostgreSQL before an order was persisted (and the queue after)
/// keeps that order's holding instead of putting its stock back on sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_racing_the_persister_keeps_the_holding() {
    let Some(prefix) = KeyPrefix::new() else {
        return;
    };
    let gate = redis_gate(&prefix, true).await;
    let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
    let sale = live_sale(10, now)
        .validate(SaleId::generate(), now)
        .unwrap();
    gate.open_sale(&sale).await.unwrap();
    let order = Order {
        id: OrderId::generate(),
        sale_id: sale.id.clone(),
        user_id: UserId::parse("racer").unwrap(),
        quantity: 2,
        status: OrderStatus::PendingPayment,
        created_at: now,
        expires_at: now + SignedDuration::from_secs(900),
        paid_at: None,
        idempotency_key: None,
        access_code: None,
        refunded_at: None,
        payment: None,
    };
    let reservation = Reservation {
        order: order.clone(),
        per_user_limit: 2,
        payment_window_secs: 900,
    };
    assert!(matches!(
        gate.reserve(&reservation).await.unwrap(),
        GateDecision::Reserved { .. }
    ));
    // The persister wrote it and forgot its queue entry: the repair's read of PostgreSQL
    // (empty) came before, its read of the queue after.
    let mut redis = redis::Client::open(prefix.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let queued: redis::streams::StreamRangeReply = redis
        .xrange_all(gate.redis().keys().queue(&sale.id))
        .await
        .unwrap();
    let entry_ids: Vec<&str> = queued.ids.iter().map(|entry| entry.id.as_str()).collect();
    assert_eq!(entry_ids.len(), 1, "the order is queued once");
    let _: i64 = redis
        .xdel(gate.redis().keys().queue(&sale.id), &entry_ids)
        .await
        .unwrap();
    gate.repair_sale(&sale, &GateRecords::default(), &[])
        .await
        .unwrap();
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(8));
    assert_eq!(gate.held(&sale.id).await.unwrap(), Some(2));
    // A verified orphan does come back.
    gate.repair_sale(&sale, &GateRecords::default(), &[order.id.to_string()])
        .await
        .unwrap();
    assert_eq!(gate.remaining(&sale.id).await.unwrap(), Some(10));
}

/// Bug 7: `flashsale reconcile` that finds no sale at all says so and fails: it most likely
/// looks at the wrong database or schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_with_no_sales_fails_loudly() {
    let Some(backends) = ClusterBackends::new() else {
        return;
    };
    let (status, report) = reconcile(&backends, false).await;
    assert_eq!(status, 2, "{report}");
}

/// Bug 7: a command that fails inside a group-commit batch fails alone; the other commands of
/// the batch commit, and a `Close` in the same batch is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_command_does_not_fail_its_batch() {
    let data_dir = tempfile::tempdir().unwrap();
    let store = sqlite(data_dir.path());
    let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
    let sale = live_sale(1000, now)
        .validate(SaleId::generate(), now)
        .unwrap();
    store.create_sale(&sale).await.unwrap();
    for round in 0..5 {
        // Queued together so the writer takes them in one batch: orders, then a sale whose id
        // is taken (a primary-key failure that is not a refusal the store expects).
        let inserts: Vec<_> = (0..50)
            .map(|buyer| {
                store.insert_order(Order {
                    id: OrderId::generate(),
                    sale_id: sale.id.clone(),
                    user_id: UserId::parse(&format!("b{round}-{buyer}")).unwrap(),
                    quantity: 1,
                    status: OrderStatus::PendingPayment,
                    created_at: now,
                    expires_at: now + SignedDuration::from_secs(60),
                    paid_at: None,
                    idempotency_key: None,
                    access_code: None,
                    refunded_at: None,
                    payment: None,
                })
            })
            .collect();
        let (duplicate, inserted) = tokio::join!(
            store.create_sale(&sale),
            futures_util::future::join_all(inserts)
        );
        assert!(matches!(duplicate, Err(StoreError::Failed(_))));
        assert!(
            inserted.iter().all(Result::is_ok),
            "round {round}: {:?}",
            inserted.iter().filter(|r| r.is_err()).collect::<Vec<_>>()
        );
    }
    assert_eq!(store.tally(&sale.id).await.unwrap().pending, 250);
    let (duplicate, closed) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(store.create_sale(&sale), store.close())
    })
    .await
    .expect("closing never hangs");
    assert!(duplicate.is_err());
    closed.unwrap();
}

/// The stock-return record survives a restart on the embedded backend too: an order recorded as
/// cancelled whose return was never confirmed is settled by the next sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_return_is_settled_by_the_sweep() {
    let data_dir = tempfile::tempdir().unwrap();
    let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let service = embedded_service(data_dir.path(), Arc::clone(&clock)).await;
    let sale = service.create_sale(live_sale(3, now)).await.unwrap();
    let sale_id = sale.sale.id.to_string();
    let buyer = UserId::parse("b").unwrap();
    let order = service
        .purchase(buyer.clone(), &sale_id, 1, None, None, None)
        .await
        .unwrap()
        .order;
    service.close().await.unwrap();
    drop(service);
    // The transition committed, then the process died before the gate's return was recorded.
    let store = sqlite(data_dir.path());
    let transition = store
        .transition(
            &order.id,
            flashsale_server::domain::Action::Cancel,
            &Actor::Buyer(buyer),
            now,
        )
        .await
        .unwrap();
    assert!(transition.released);
    assert_eq!(store.unreturned(10).await.unwrap().len(), 1);
    store.close().await.unwrap();
    drop(store);
    let service = embedded_service(data_dir.path(), clock).await;
    assert_eq!(service.return_unreturned().await.unwrap(), 1);
    assert_eq!(
        service.return_unreturned().await.unwrap(),
        0,
        "settled once"
    );
    let audit = service.audit(&sale_id).await.unwrap();
    assert!(audit.consistent && audit.remaining == 3, "{audit:?}");
}

/// Found in review: an admin who hangs up while a sale is being created must not leave a sale
/// the store recorded out of the node's catalog (embedded, it would stay invisible until a
/// restart, its stock unsellable). The hang-up point is not hit deterministically here (the
/// embedded store often answers within the first poll), so this checks the outcome, not the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_creator_hangs_up_is_still_on_sale() {
    let data_dir = tempfile::tempdir().unwrap();
    let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
    let service = embedded_service(data_dir.path(), Arc::new(ManualClock::new(now))).await;
    let create = service.create_sale(live_sale(7, now));
    let _ = tokio::time::timeout(Duration::ZERO, create).await;
    let listed = eventually(Duration::from_secs(10), || async {
        service
            .sales(None, None, false)
            .await
            .is_ok_and(|page| page.sales.len() == 1)
    })
    .await;
    assert!(listed, "the recorded sale is in the catalog");
    let page = service.sales(None, None, false).await.unwrap();
    let sale_id = page.sales[0].sale.id.to_string();
    let bought = service
        .purchase(
            UserId::parse("first").unwrap(),
            &sale_id,
            1,
            None,
            None,
            None,
        )
        .await;
    assert!(bought.is_ok(), "{bought:?}");
}

/// Bug 6 (Redis keys never expire): a sale that has ended and settled leaves Redis (every key of
/// it, idempotency keys included); PostgreSQL then answers for it: its counts, its audit, a
/// winner's keyed retry, reconcile. A sale that has not ended keeps its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_settled_sale_leaves_redis_and_postgres_answers_for_it() {
    let Some(backends) = ClusterBackends::new() else {
        return;
    };
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let (servers, _dirs) = servers_on_clock(Arc::clone(&clock), Some(&backends), 2).await;
    let now = clock.now();
    let sale_id = servers[0]
        .create_sale(json!({
            "stock": 4,
            "starts_at": (now - SignedDuration::from_mins(1)).to_string(),
            "ends_at": (now + SignedDuration::from_mins(1)).to_string(),
            "payment_window_secs": 60,
        }))
        .await;
    let open_ended = servers[0].create_sale(json!({ "stock": 4 })).await;
    let (status, _, won) = keyed_purchase(&servers[0], &sale_id, "payer", "k-1").await;
    assert_eq!(status, StatusCode::CREATED);
    let pay = servers[1]
        .send(
            hyper::Method::POST,
            &format!("/api/v1/orders/{won}/pay"),
            Some(&servers[1].token("payer")),
            None,
            &[],
        )
        .await;
    assert_eq!(pay.status, StatusCode::OK, "{}", pay.body);
    let (status, _, _) = keyed_purchase(&servers[1], &sale_id, "forgets-to-pay", "k-2").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        servers[0].purchase(&open_ended, "payer", None).await.status,
        StatusCode::CREATED
    );

    let redis = redis::Client::open(backends.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = |sale: &str| format!("{}:{{{sale}}}:*", backends.redis.prefix);
    let keys_of = |sale: String| {
        let mut redis = redis.clone();
        let pattern = pattern(&sale);
        async move {
            let keys: Vec<String> = redis.keys(pattern).await.unwrap();
            keys.len()
        }
    };
    assert!(keys_of(sale_id.clone()).await > 0);
    // Ended, its payment window over, the unpaid order expired by the sweep: archived within a
    // check or two of the archiver (each minute of the cluster's clock).
    let database = postgres(&backends).await;
    let archived = eventually(Duration::from_secs(20), || {
        clock.advance(SignedDuration::from_secs(61));
        let keys = keys_of(sale_id.clone());
        let (database, sale_id) = (&database, &sale_id);
        async move {
            // Redis's keys go first, then PostgreSQL records the archive.
            let recorded: bool = database
                .query_one(
                    "SELECT archived_at IS NOT NULL FROM sales WHERE id = $1",
                    &[sale_id],
                )
                .await
                .unwrap()
                .get(0);
            keys.await == 0 && recorded
        }
    })
    .await;
    assert!(archived, "the settled sale's keys are still in Redis");
    assert!(
        keys_of(open_ended.clone()).await > 0,
        "a sale that has not ended keeps its keys"
    );

    for server in &servers {
        let audit = server.assert_consistent(&sale_id).await;
        assert_eq!(
            (&audit["remaining"], &audit["paid"], &audit["expired"]),
            (&json!(3), &json!(1), &json!(1)),
            "{audit}"
        );
        let sale = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
        assert_eq!(
            (&sale.body["remaining"], &sale.body["state"]),
            (&json!(3), &json!("ended")),
            "{}",
            sale.body
        );
        let (status, _, order) = keyed_purchase(server, &sale_id, "payer", "k-1").await;
        assert_eq!((status, order.as_str()), (StatusCode::OK, won.as_str()));
        let (status, code, _) = keyed_purchase(server, &sale_id, "late", "k-3").await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::CONFLICT, "sale_ended")
        );
    }
    let (code, report) = reconcile(&backends, false).await;
    assert_eq!(code, 0, "{report}");
    let archived_report = report["sales"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sale| sale["sale_id"] == json!(sale_id))
        .cloned()
        .unwrap();
    assert_eq!(
        archived_report["archived"],
        json!(true),
        "{archived_report}"
    );
    for server in servers {
        server.stop().await;
    }
}

/// A gate that forgets every buyer's limit (a bug the store's backstop must catch): it asks the
/// memory gate with an unlimited limit, and delegates everything else.
struct LimitlessGate(MemoryGate);

mod limitless {
    use flashsale_server::domain::{OrderId, Sale, SaleId, SaleRevision, UserId};
    use flashsale_server::gate::{
        ChangeStep, GateDecision, GateError, GateRecords, Holding, Reservation, StockGate,
    };
    use flashsale_server::BoxFuture;
    use jiff::Timestamp;

    impl StockGate for super::LimitlessGate {
        fn open_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), GateError>> {
            self.0.open_sale(sale)
        }
        fn restore_sale(
            &self,
            sale: &Sale,
            records: GateRecords,
        ) -> BoxFuture<'_, Result<(), GateError>> {
            self.0.restore_sale(sale, records)
        }
        fn reserve(
            &self,
            reservation: &Reservation,
        ) -> BoxFuture<'_, Result<GateDecision, GateError>> {
            let forgetful = Reservation {
                per_user_limit: u32::MAX,
                ..reservation.clone()
            };
            Box::pin(async move { self.0.reserve(&forgetful).await })
        }
        fn release(
            &self,
            holding: &Holding,
            now: Timestamp,
        ) -> BoxFuture<'_, Result<bool, GateError>> {
            self.0.release(holding, now)
        }
        fn abandon(
            &self,
            holding: &Holding,
            now: Timestamp,
        ) -> BoxFuture<'_, Result<bool, GateError>> {
            self.0.abandon(holding, now)
        }
        fn code_owner(
            &self,
            sale_id: &SaleId,
            code: &str,
        ) -> BoxFuture<'_, Result<Option<UserId>, GateError>> {
            self.0.code_owner(sale_id, code)
        }
        fn begin_change<'a>(
            &'a self,
            base_version: u64,
            target: &'a SaleRevision,
            at: Timestamp,
        ) -> BoxFuture<'a, Result<ChangeStep, GateError>> {
            self.0.begin_change(base_version, target, at)
        }
        fn finish_change<'a>(
            &'a self,
            target: &'a Sale,
            at: Timestamp,
        ) -> BoxFuture<'a, Result<(), GateError>> {
            self.0.finish_change(target, at)
        }
        fn pending_changes(&self) -> BoxFuture<'_, Result<Vec<SaleRevision>, GateError>> {
            self.0.pending_changes()
        }
        fn sales_revision(&self) -> BoxFuture<'_, Result<u64, GateError>> {
            self.0.sales_revision()
        }
        fn announce_sales_change(&self) -> BoxFuture<'_, Result<(), GateError>> {
            self.0.announce_sales_change()
        }
        fn key_owner(
            &self,
            sale_id: &SaleId,
            user_id: &UserId,
            key: &str,
        ) -> BoxFuture<'_, Result<Option<OrderId>, GateError>> {
            self.0.key_owner(sale_id, user_id, key)
        }
        fn remaining(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
            self.0.remaining(sale_id)
        }
        fn held(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
            self.0.held(sale_id)
        }
        fn ping(&self) -> BoxFuture<'_, Result<(), GateError>> {
            self.0.ping()
        }
    }
}

/// Issue #25: when the store's backstop refuses an order a buggy gate accepted (here, over the
/// buyer's limit), the buyer gets the refusal a correct gate would have given (`409
/// already_purchased` naming the active order), not a 500, and the unit is back on sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backstop_refusal_is_the_refusal_a_correct_gate_gives() {
    let data_dir = tempfile::tempdir().unwrap();
    let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
    let gate: Arc<dyn StockGate> = Arc::new(LimitlessGate(MemoryGate::new()));
    let store = sqlite(data_dir.path());
    let intake = Arc::new(PrivateIntake::new(Arc::clone(&gate), Arc::clone(&store)));
    let service = Service::start(gate, store, intake, Arc::new(ManualClock::new(now)), 100)
        .await
        .expect("service starts");
    let sale = service.create_sale(live_sale(5, now)).await.unwrap();
    let sale_id = sale.sale.id.to_string();
    let buyer = UserId::parse("greedy").unwrap();
    let first = service
        .purchase(buyer.clone(), &sale_id, 1, None, None, None)
        .await
        .expect("the first unit sells");
    let second = service.purchase(buyer, &sale_id, 1, None, None, None).await;
    match second {
        Err(flashsale_server::service::ServiceError::Rejected(
            flashsale_server::domain::Rejection::AlreadyPurchased { order_id },
        )) => assert_eq!(order_id, first.order.id),
        other => panic!("expected already_purchased naming the first order, got {other:?}"),
    }
    assert!(
        settles_at(&service, &sale_id, 4).await,
        "the refused unit went back: {:?}",
        service.audit(&sale_id).await
    );
}
