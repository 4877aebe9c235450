//! Cluster faults, each ending with a consistent audit and every acknowledged (`201`) order in
//! PostgreSQL: a node killed with SIGKILL, Redis killed and restarted from its AOF, PostgreSQL
//! unreachable, Redis wiped and repaired; plus the local sold-out path and unfinished releases.
//! They need the services named in `services.rs`, and say so when skipped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{eventually, eventually_holds, send, users, TestServer};
use crate::process::{acknowledged_reach, buy_until_stopped, create_sale, Server, LOAD_LIMIT};
use crate::services::ClusterBackends;

pub async fn postgres(backends: &ClusterBackends) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&backends.postgres.url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL connects");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path = {}", backends.postgres.name))
        .await
        .expect("schema");
    client
}

/// How many of these orders PostgreSQL holds.
async fn stored(database: &tokio_postgres::Client, order_ids: &[String]) -> usize {
    database
        .query_one(
            "SELECT count(*) FROM orders WHERE id = ANY($1)",
            &[&order_ids],
        )
        .await
        .map(|row| row.get::<_, i64>(0) as usize)
        .unwrap_or(0)
}

/// Every acknowledged order reaches PostgreSQL, and the audit then holds with the acknowledged
/// units pending, plus at most `ambiguous` more: a `503` whose order Redis had made when the
/// connection broke (the buyer finds it in their orders; it is neither lost nor oversold).
async fn assert_all_persisted(
    server: &TestServer,
    backends: &ClusterBackends,
    sale_id: &str,
    acknowledged: &[String],
    ambiguous: usize,
) {
    let database = postgres(backends).await;
    let all_there = eventually(Duration::from_secs(30), || async {
        stored(&database, acknowledged).await == acknowledged.len()
    })
    .await;
    assert!(
        all_there,
        "only {} of {} acknowledged orders reached PostgreSQL",
        stored(&database, acknowledged).await,
        acknowledged.len()
    );
    let audit = server.assert_consistent(sale_id).await;
    let pending = audit["pending"].as_u64().unwrap() as usize;
    assert!(
        (acknowledged.len()..=acknowledged.len() + ambiguous).contains(&pending),
        "{pending} pending for {} acknowledged and {ambiguous} unanswered: {audit}",
        acknowledged.len()
    );
}

fn node_variables(backends: &ClusterBackends, claim_idle_ms: u64) -> Vec<(String, String)> {
    [
        ("FLASHSALE_REDIS_URL", backends.redis.url.clone()),
        ("FLASHSALE_DATABASE_URL", backends.postgres.url.clone()),
        ("FLASHSALE_REDIS_KEY_PREFIX", backends.redis.prefix.clone()),
        ("FLASHSALE_DATABASE_SCHEMA", backends.postgres.name.clone()),
        ("FLASHSALE_REDIS_REQUIRE_DURABLE", "false".into()),
        ("FLASHSALE_QUEUE_CLAIM_IDLE_MS", claim_idle_ms.to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_node_mid_stampede_loses_no_acknowledged_order() {
    let Some(backends) = ClusterBackends::new() else {
        return;
    };
    let variables = node_variables(&backends, 1000);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut doomed = Server::start_with_env(dir_a.path(), &variables).await;
    let survivor = Server::start_with_env(dir_b.path(), &variables).await;
    let sale_id = create_sale(&doomed, 1_000_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let on_doomed = buy_until_stopped(
        &doomed,
        &sale_id,
        8,
        Arc::clone(&stop),
        Arc::clone(&acknowledged),
    );
    let on_survivor = buy_until_stopped(
        &survivor,
        &sale_id,
        8,
        Arc::clone(&stop),
        Arc::clone(&acknowledged),
    );
    let acknowledged_now = || acknowledged.lock().unwrap().len();
    let killer = async {
        acknowledged_reach(200, acknowledged_now).await;
        let killed = Command::new("kill").args(["-KILL", &doomed.pid()]).status();
        assert!(killed.expect("kill runs").success());
        // The survivor goes on selling: another hundred orders after the kill.
        let at_kill = acknowledged_now();
        acknowledged_reach(at_kill + 100, acknowledged_now).await;
        stop.store(true, Ordering::SeqCst);
    };
    let ((_, _), (_, survivor_errors), ()) = tokio::join!(on_doomed, on_survivor, killer);
    let _ = doomed.child.wait();
    assert_eq!(survivor_errors, 0, "the surviving node kept answering");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 50,
        "the load ran: {}",
        acknowledged.len()
    );
    // The survivor takes over what the dead node's persister had read but not written.
    let database = postgres(&backends).await;
    let all_there = eventually(Duration::from_secs(30), || async {
        stored(&database, &acknowledged).await == acknowledged.len()
    })
    .await;
    assert!(all_there, "acknowledged orders were lost with the node");
    let audit = survivor
        .admin(Method::GET, &format!("/api/v1/sales/{sale_id}/audit"), None)
        .await
        .body;
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    // Each of the dead node's 8 buyers may have had one purchase made but not answered.
    let pending = audit["pending"].as_u64().unwrap() as usize;
    assert!(
        (acknowledged.len()..=acknowledged.len() + 8).contains(&pending),
        "{pending} pending for {} acknowledged: {audit}",
        acknowledged.len()
    );
}

/// A Redis server of the test's own, on its own port and directory, with AOF fsynced per write.
pub(crate) struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    settings: Vec<String>,
}

impl PrivateRedis {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With these settings on top of the durable ones (a later setting wins).
    async fn start_with(settings: &[&str]) -> Self {
        let port = free_port().await;
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        };
        redis.launch().await;
        redis
    }

    /// Serving TLS only, with this certificate and key (`rediss://localhost:port/`).
    pub(crate) async fn start_tls(certificate: &std::path::Path, key: &std::path::Path) -> Self {
        let port = free_port().await;
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            settings: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                certificate.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        };
        redis.launch().await;
        redis
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(&self.settings)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (Debian package redis-server)");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let up = eventually(Duration::from_secs(10), || async {
            TcpStream::connect(&address).await.is_ok()
        })
        .await;
        assert!(up, "private redis-server listens");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL: no shutdown, no final save
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// What the buyers of `buy_on_cluster` have seen so far, readable while they run.
#[derive(Default)]
struct Tally {
    acknowledged: Mutex<Vec<String>>,
    unavailable: std::sync::atomic::AtomicUsize,
}

impl Tally {
    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    fn unavailable(&self) -> usize {
        self.unavailable.load(Ordering::SeqCst)
    }

    /// The acknowledged order ids and how many purchases got `503`.
    fn into_parts(self) -> (Vec<String>, usize) {
        (
            self.acknowledged.into_inner().unwrap(),
            self.unavailable.into_inner(),
        )
    }
}

/// Buys with fresh buyers from `workers` tasks spread over the nodes until `stop`, counting in
/// `tally`.
async fn buy_on_cluster(
    server: &TestServer,
    sale_id: &str,
    workers: usize,
    stop: &AtomicBool,
    tally: &Tally,
) {
    let worker = |worker: usize| async move {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let reply = server
                .purchase(sale_id, &format!("c{worker}-{n}"), None)
                .await;
            if reply.status == StatusCode::CREATED {
                let id = reply.body["id"].as_str().unwrap().to_owned();
                tally.acknowledged.lock().unwrap().push(id);
            } else {
                if reply.status == StatusCode::SERVICE_UNAVAILABLE {
                    tally.unavailable.fetch_add(1, Ordering::SeqCst);
                }
                // Refused or briefly unavailable (Redis restarting): never a lost order.
                assert!(
                    [StatusCode::CONFLICT, StatusCode::SERVICE_UNAVAILABLE].contains(&reply.status),
                    "{} {}",
                    reply.status,
                    reply.body
                );
                // A client's pause before trying again, not a test's timing.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    futures_util::future::join_all((0..workers).map(worker)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_keeps_every_acknowledged_order() {
    let Some(backends) = ClusterBackends::new() else {
        return;
    };
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let server = TestServer::start_cluster_with(2, |settings| {
        backends.configure(settings);
        settings.redis_url = Some(url.clone());
        // This Redis fsyncs every write: the node's durability check must pass.
        settings.redis_require_durable = true;
    })
    .await
    .expect("cluster starts");
    let sale_id = server.create_sale(json!({ "stock": 1_000_000 })).await;
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let restarter = async {
        acknowledged_reach(200, || tally.acknowledged()).await;
        redis.kill();
        // Down until the nodes have felt it: purchases answered 503.
        let felt = eventually_holds(LOAD_LIMIT, || tally.unavailable() >= 16).await;
        redis.launch().await;
        let at_restart = tally.acknowledged();
        acknowledged_reach(at_restart + 200, || tally.acknowledged()).await;
        stop.store(true, Ordering::SeqCst);
        assert!(felt, "purchases got 503 while Redis was down");
    };
    tokio::join!(
        buy_on_cluster(&server, &sale_id, 16, &stop, &tally),
        restarter
    );
    let (acknowledged, unanswered) = tally.into_parts();
    assert!(
        acknowledged.len() > 50,
        "the load ran: {}",
        acknowledged.len()
    );
    // Both nodes sell again on the restarted Redis (its scripts reloaded on demand).
    let mut acknowledged = acknowledged;
    for n in 0..server.addrs.len() {
        let after = server.purchase(&sale_id, &format!("after-{n}"), None).await;
        assert_eq!(after.status, StatusCode::CREATED, "{}", after.body);
        acknowledged.push(after.body["id"].as_str().unwrap().to_owned());
    }
    assert_all_persisted(&server, &backends, &sale_id, &acknowledged, unanswered).await;
    server.stop().await;
}

/// A TCP proxy the test can cut: while down it drops every connection and refuses new ones.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped by each cut; a relay ends when it sees a cut made after it began.
    cuts: tokio::sync::watch::Sender<usize>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cuts = tokio::sync::watch::Sender::new(0usize);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (up_now, cuts_now, open_now) = (Arc::clone(&up), cuts.clone(), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                // Subscribed before looking at `up`: a cut made after the look still ends it.
                let mut cut = cuts_now.subscribe();
                if !up_now.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let open_now = Arc::clone(&open_now);
                open_now.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    }
                    open_now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            up,
            cuts,
            open,
        }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|cuts| *cuts += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Connections it is relaying now.
    fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_are_acknowledged_while_postgres_is_unreachable() {
    let Some(backends) = ClusterBackends::new() else {
        return;
    };
    let target: url_parts::Target = url_parts::parse(&backends.postgres.url);
    let proxy = Proxy::start(target.addr).await;
    let proxied = target.with_addr(proxy.addr);
    let server = TestServer::start_cluster_with(2, |settings| {
        backends.configure(settings);
        settings.database_url = Some(proxied.clone());
    })
    .await
    .expect("cluster starts");
    let sale_id = server.create_sale(json!({ "stock": 1_000_000 })).await;
    // Both nodes know the sale before the outage (sales are created ahead of a flash sale).
    for _ in &server.addrs {
        let reply = server.get(&format!("/api/v1/sales/{sale_id}"), None).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let database = postgres(&backends).await; // straight to PostgreSQL, not through the proxy
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let outage = async {
        acknowledged_reach(200, || tally.acknowledged()).await;
        proxy.down();
        let cut = eventually_holds(LOAD_LIMIT, || proxy.open_connections() == 0).await;
        // Purchases during the outage itself, counted separately: they must succeed too.
        let replies = server
            .purchase_all(&sale_id, users("during-outage", 200))
            .await;
        let during: Vec<String> = replies
            .iter()
            .filter(|reply| reply.status == StatusCode::CREATED)
            .map(|reply| reply.body["id"].as_str().unwrap().to_owned())
            .collect();
        // The outage is real: the nodes could not have written these yet.
        let reached_while_down = stored(&database, &during).await;
        proxy.restore();
        let at_restore = tally.acknowledged();
        acknowledged_reach(at_restore + 100, || tally.acknowledged()).await;
        stop.store(true, Ordering::SeqCst);
        (cut, during, reached_while_down)
    };
    let ((), (cut, during, reached_while_down)) =
        tokio::join!(buy_on_cluster(&server, &sale_id, 8, &stop, &tally), outage);
    let (mut acknowledged, unanswered) = tally.into_parts();
    assert!(cut, "the proxy cut the nodes' PostgreSQL connections");
    assert_eq!(unanswered, 0, "PostgreSQL is not on the purchase path");
    assert_eq!(
        during.len(),
        200,
        "every purchase is acknowledged while PostgreSQL is away"
    );
    assert_eq!(
        reached_while_down, 0,
        "no order reached PostgreSQL while it was away"
    );
    acknowledged.extend(during);
    assert_all_persisted(&server, &backends, &sale_id, &acknowledged, 0).await;
    server.stop().await;
}

/// Splits a `postgres://user@host:port/db` URL to swap its address.
mod url_parts {
    use std::net::SocketAddr;

    pub struct Target {
        pub addr: SocketAddr,
        before: String,
        after: String,
    }

    impl Target {
        pub fn with_addr(&self, addr: SocketAddr) -> String {
            format!("{}{addr}{}", self.before, self.after)
        }
    }

    pub fn parse(url: &str) -> Target {
        let at = url.find('@').expect("URL names a user") + 1;
        let slash = url[at..].find('/').map_or(url.len(), |index| at + index);
        Target {
            addr: url[at..slash].parse().expect("URL has host:port"),
            before: url[..at].to_owned(),
            after: url[slash..].to_owned(),
        }
    }
}

pub async fn reconcile(backends: &ClusterBackends, repair: bool) -> (i32, serde_json::Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flashsale"));
    command.args(["reconcile", "--json"]);
    if repair {
        command.arg("--repair");
    }
    for (name, value) in node_variables(backends, 1000) {
        command.env(name, value);
    }
    command.env("FLASHSALE_LOG", "warn");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("reconcile runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "reconcile printed no JSON: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiping_redis_then_repairing_keeps_selling_without_oversell_or_lost_payments() {
    let Some(server) = TestServer::start_cluster(2).await else {
        return;
    };
    let backends = server.backends().expect("cluster");
    let sale_id = server.create_sale(json!({ "stock": 100 })).await;
    let replies = server.purchase_all(&sale_id, users("early", 60)).await;
    let winners: Vec<(String, String)> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            (
                reply.body["user_id"].as_str().unwrap().to_owned(),
                reply.body["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let (paid, rest) = winners.split_at(20);
    let (cancelled, _) = rest.split_at(5);
    for (user, order_id) in paid {
        let path = format!("/api/v1/orders/{order_id}/pay");
        let reply = server
            .send(Method::POST, &path, Some(&server.token(user)), None, &[])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    for (user, order_id) in cancelled {
        let path = format!("/api/v1/orders/{order_id}/cancel");
        let reply = server
            .send(Method::POST, &path, Some(&server.token(user)), None, &[])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let (code, report) = reconcile(backends, false).await;
    assert_eq!(code, 0, "all agree before the wipe: {report}");

    crate::services::delete_keys(backends.redis.url.clone(), backends.redis.prefix.clone()).await;
    let lost = server.purchase(&sale_id, "during-wipe", None).await;
    assert_eq!(
        lost.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        lost.body
    );
    let (code, report) = reconcile(backends, false).await;
    assert_eq!(code, 2, "the wipe is reported: {report}");
    assert_eq!(report["sales"][0]["redis_remaining"], json!(null));

    let (code, report) = reconcile(backends, true).await;
    assert_eq!(code, 0, "repaired: {report}");
    assert_eq!(report["sales"][0]["repaired"], json!(true));
    assert_eq!(report["sales"][0]["redis_remaining"], json!(45));

    // Selling resumes: exactly the 45 units not held by the 55 active orders.
    let replies = server.purchase_all(&sale_id, users("late", 200)).await;
    let created = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 45, "no oversell after the repair");
    let again = server.purchase(&sale_id, &paid[0].0, None).await;
    assert_eq!(again.code(), "sold_out");
    for (user, order_id) in paid {
        let order = server
            .get(
                &format!("/api/v1/orders/{order_id}"),
                Some(&server.token(user)),
            )
            .await;
        assert_eq!(order.body["status"], json!("paid"), "payments survive");
    }
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["paid"], json!(20));
    assert_eq!(audit["remaining"], json!(0));

    // A holding whose order exists nowhere is found and its stock returned by the repair.
    let mut redis = redis::Client::open(backends.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let tag = format!("{}:{{{sale_id}}}", backends.redis.prefix);
    let _: () = redis::pipe()
        .hset(
            format!("{tag}:holds"),
            "ghost-order",
            r#"{"u":"ghost","q":1,"k":""}"#,
        )
        .hset(format!("{tag}:buyers"), "ghost", "ghost-order:1")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (code, report) = reconcile(backends, false).await;
    assert_eq!(code, 2, "{report}");
    assert_eq!(
        report["sales"][0]["orphan_holdings"],
        json!(["ghost-order"])
    );
    let (code, report) = reconcile(backends, true).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["sales"][0]["orphan_holdings"], json!([]));
    server.assert_consistent(&sale_id).await;
    server.stop().await;
}

pub async fn metric(server: &TestServer, addr: SocketAddr, name: &str) -> u64 {
    let reply = send(
        &server.client,
        addr,
        Method::GET,
        "/metrics",
        None,
        None,
        &[],
    )
    .await;
    let text = reply.body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

async fn metric_total(server: &TestServer, name: &str) -> u64 {
    let mut total = 0;
    for addr in &server.addrs {
        total += metric(server, *addr, name).await;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sell_out_nodes_refuse_without_redis_until_stock_comes_back() {
    let Some(server) = TestServer::start_cluster(2).await else {
        return;
    };
    let sale_id = server.create_sale(json!({ "stock": 5 })).await;
    let winners = server.purchase_all(&sale_id, users("winner", 5)).await;
    assert!(winners
        .iter()
        .all(|reply| reply.status == StatusCode::CREATED));
    // Each node learns the sell-out from one Redis call...
    for _ in &server.addrs {
        assert_eq!(
            server.purchase(&sale_id, "learner", None).await.code(),
            "sold_out"
        );
    }
    let calls_before = metric_total(&server, "flashsale_gate_redis_calls_total").await;
    let local_before = metric_total(&server, "flashsale_gate_local_sold_out_total").await;
    // ...and answers the crowd that follows from memory.
    let late = server.purchase_all(&sale_id, users("late", 100)).await;
    assert!(late.iter().all(|reply| reply.code() == "sold_out"));
    assert_eq!(
        metric_total(&server, "flashsale_gate_redis_calls_total").await,
        calls_before,
        "no Redis call after the sell-out"
    );
    assert_eq!(
        metric_total(&server, "flashsale_gate_local_sold_out_total").await,
        local_before + 100
    );
    // A cancelled unit is announced and sold again, well within the recheck bound (1 s).
    let order_id = winners[0].body["id"].as_str().unwrap();
    let cancel = server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&server.admin_token),
            None,
            &[],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.body);
    let started = Instant::now();
    let mut resold = false;
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(900) && !resold {
        n += 1;
        resold = server
            .purchase(&sale_id, &format!("second-chance-{n}"), None)
            .await
            .status
            == StatusCode::CREATED;
    }
    assert!(resold, "the returned unit sold again within the bound");
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["pending"], json!(5));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_a_node_did_not_finish_is_finished_by_the_sweep() {
    let Some(server) = TestServer::start_cluster(2).await else {
        return;
    };
    let backends = server.backends().expect("cluster");
    let sale_id = server.create_sale(json!({ "stock": 3 })).await;
    let reply = server.purchase(&sale_id, "quitter", None).await;
    let order_id = reply.body["id"].as_str().unwrap().to_owned();
    let database = postgres(backends).await;
    let persisted = eventually(Duration::from_secs(10), || async {
        stored(&database, std::slice::from_ref(&order_id)).await == 1
    })
    .await;
    assert!(persisted);
    // What a node that died right after its PostgreSQL commit leaves behind: the order is
    // cancelled there, its stock not yet back in Redis.
    database
        .batch_execute(&format!(
            "UPDATE orders SET status = 'cancelled', stock_returned = false WHERE id = '{order_id}';
             UPDATE sales SET remaining = remaining + 1 WHERE id = '{sale_id}'"
        ))
        .await
        .unwrap();
    let settled = eventually(Duration::from_secs(10), || async {
        server.audit(&sale_id).await["consistent"] == json!(true)
    })
    .await;
    assert!(settled, "the sweep returned the stock");
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["remaining"], json!(3));
    // The flag is set right after the release: wait for it, then nothing more may happen.
    let flagged = eventually(Duration::from_secs(10), || async {
        database
            .query_one(
                "SELECT stock_returned FROM orders WHERE id = $1",
                &[&order_id],
            )
            .await
            .is_ok_and(|row| row.get::<_, bool>(0))
    })
    .await;
    assert!(flagged, "the release is recorded as finished");
    // Exactly once: after a whole sweep round more on every node, the stock is as it was.
    for addr in &server.addrs {
        let rounds = metric(&server, *addr, "flashsale_sweep_rounds_total").await;
        let swept = eventually(Duration::from_secs(10), || async {
            metric(&server, *addr, "flashsale_sweep_rounds_total").await >= rounds + 2
        })
        .await;
        assert!(swept, "the sweep goes on running on {addr}");
    }
    assert_eq!(server.audit(&sale_id).await["remaining"], json!(3));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sweeping_together_expire_each_order_once() {
    let Some(server) = TestServer::start_cluster_with(2, |settings| {
        settings.expiry_sweep_interval_ms = 20;
        settings.expiry_batch_max = 7;
    })
    .await
    else {
        return;
    };
    let sale_id = server
        .create_sale(json!({ "stock": 300, "payment_window_secs": 1 }))
        .await;
    let replies = server.purchase_all(&sale_id, users("slow", 300)).await;
    assert!(replies
        .iter()
        .all(|reply| reply.status == StatusCode::CREATED));
    server.advance(jiff::SignedDuration::from_secs(2));
    let all_expired = eventually(Duration::from_secs(20), || async {
        server.audit(&sale_id).await["expired"] == json!(300)
    })
    .await;
    assert!(all_expired, "{}", server.audit(&sale_id).await);
    // Both nodes swept in small batches at the same time; each unit came back exactly once.
    let settled = eventually(Duration::from_secs(10), || async {
        server.audit(&sale_id).await["consistent"] == json!(true)
    })
    .await;
    assert!(settled, "{}", server.audit(&sale_id).await);
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["remaining"], json!(300), "{audit}");
    assert_eq!(audit["pending"], json!(0), "{audit}");
    let again = server
        .purchase_all(&sale_id, users("second-round", 300))
        .await;
    let created = again
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 300, "every unit sells again, none twice");
    server.stop().await;
}

/// A node refuses to start (it does not merely warn) against a Redis that can lose an
/// acknowledged order: replies before the AOF write, no AOF, or keys that may be evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_redis_that_can_lose_acknowledged_orders() {
    let Some(backends) = ClusterBackends::new() else {
        return;
    };
    for (bad, named) in [
        (&["--appendonly", "no"][..], "appendonly is no"),
        (
            &["--appendfsync", "everysec"][..],
            "appendfsync is everysec",
        ),
        (
            &["--maxmemory-policy", "allkeys-lru"][..],
            "maxmemory-policy is allkeys-lru",
        ),
    ] {
        let redis = PrivateRedis::start_with(bad).await;
        let dir = tempfile::tempdir().unwrap();
        let mut settings = crate::harness::test_settings(dir.path());
        backends.configure(&mut settings);
        settings.redis_url = Some(redis.url());
        settings.redis_require_durable = true;
        match flashsale_server::app::App::build(&settings).await {
            Ok(_) => panic!("a node started on a Redis with {bad:?}"),
            Err(error) => assert!(error.to_string().contains(named), "{error}"),
        }
    }
    let durable = PrivateRedis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::harness::test_settings(dir.path());
    backends.configure(&mut settings);
    settings.redis_url = Some(durable.url());
    settings.redis_require_durable = true;
    assert!(flashsale_server::app::App::build(&settings).await.is_ok());
}

/// With `redis_replicas_ack`, a purchase is reserved only once a replica has it (Redis `WAIT`);
/// with no replica to confirm, it answers unavailable (the order exists, a keyed retry finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_acknowledgement_waits_for_a_replica() {
    let Some(prefix) = crate::services::KeyPrefix::new() else {
        return;
    };
    use flashsale_server::gate::{GateDecision, GateError, StockGate};
    use flashsale_server::redis::RedisGate;
    // Replicas sync at once (by default a primary waits 5 s for more replicas to sync together).
    let primary = PrivateRedis::start_with(&["--repl-diskless-sync-delay", "0"]).await;
    let key_prefix = prefix.prefix.clone();
    let gate = |url: String, replicas_ack| async move {
        RedisGate::on(
            &crate::services::connect_redis(&url, &key_prefix).await,
            &gate_options(replicas_ack, Duration::from_millis(1000)),
            Arc::new(flashsale_server::metrics::Metrics::default()),
        )
    };
    let now = jiff::Timestamp::now();
    let sale = sale_on_since_a_minute("Replicated", 10, now);
    let reservation = |buyer: &str| one_unit(&sale.id, buyer, now);
    let alone = gate(primary.url(), 1).await;
    alone.open_sale(&sale).await.unwrap();
    assert!(
        matches!(
            alone.reserve(&reservation("no-replica")).await,
            Err(GateError::Unavailable(_))
        ),
        "no replica confirmed: not acknowledged"
    );
    let port = primary.port.to_string();
    let _replica = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &port]).await;
    let confirmed = eventually(Duration::from_secs(20), || async {
        matches!(
            alone
                .reserve(&reservation(&format!("b{}", rand_suffix())))
                .await,
            Ok(GateDecision::Reserved { .. })
        )
    })
    .await;
    assert!(confirmed, "a replica in sync confirms the order");
}

/// Purchases of one sale that arrive while its script call is in flight go together in the next
/// call: a crowd costs Redis fewer calls than purchases, and every purchase still gets its own
/// verdict (exactly the stock sold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_purchases_share_script_calls() {
    let Some(prefix) = crate::services::KeyPrefix::new() else {
        return;
    };
    use flashsale_server::gate::{GateDecision, StockGate};
    use flashsale_server::redis::RedisGate;
    let metrics = Arc::new(flashsale_server::metrics::Metrics::default());
    metrics.enable_cluster();
    // No sold-out mark: every purchase goes to Redis.
    let gate = Arc::new(RedisGate::on(
        &prefix.connect().await,
        &gate_options(0, Duration::ZERO),
        Arc::clone(&metrics),
    ));
    let now = jiff::Timestamp::now();
    let sale = sale_on_since_a_minute("Grouped", 300, now);
    gate.open_sale(&sale).await.unwrap();
    let buyers = 1000;
    let mut tasks = Vec::new();
    for buyer in 0..buyers {
        let gate = Arc::clone(&gate);
        let reservation = one_unit(&sale.id, &format!("g{buyer}"), now);
        tasks.push(tokio::spawn(async move {
            gate.reserve(&reservation).await.unwrap()
        }));
    }
    let mut sold = 0;
    for task in tasks {
        match task.await.unwrap() {
            GateDecision::Reserved { .. } => sold += 1,
            GateDecision::SoldOut { remaining } => assert_eq!(remaining, 0),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sold, 300);
    let counter = |name: &str| -> u64 {
        let text = metrics.render();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {text}")) as u64
    };
    let calls = counter("flashsale_gate_redis_calls_total");
    let scripts = counter("flashsale_gate_redis_scripts_total");
    assert_eq!(
        calls, buyers,
        "every purchase went to Redis (no sold-out mark)"
    );
    assert!(
        scripts < calls / 2,
        "{scripts} script calls for {calls} purchases: concurrent purchases were not grouped"
    );
}

/// A Redis gate's options for a test: Redis's clock.
fn gate_options(
    replicas_ack: u32,
    sold_out_recheck: Duration,
) -> flashsale_server::redis::RedisGateOptions {
    flashsale_server::redis::RedisGateOptions {
        sold_out_recheck,
        replicas_ack,
        replicas_ack_timeout: Duration::from_millis(300),
        time_from_caller: false,
    }
}

/// A sale of `stock` units that opened a minute before `now`.
fn sale_on_since_a_minute(
    name: &str,
    stock: i64,
    now: jiff::Timestamp,
) -> flashsale_server::domain::Sale {
    flashsale_server::domain::SaleDraft {
        name: name.into(),
        stock,
        starts_at: now - jiff::SignedDuration::from_secs(60),
        ..flashsale_server::domain::SaleDraft::default()
    }
    .validate(flashsale_server::domain::SaleId::generate(), now)
    .unwrap()
}

/// One unit of a sale for `buyer`, placed `now`, payable for 15 minutes.
fn one_unit(
    sale_id: &flashsale_server::domain::SaleId,
    buyer: &str,
    now: jiff::Timestamp,
) -> flashsale_server::gate::Reservation {
    flashsale_server::gate::Reservation {
        order: flashsale_server::domain::Order {
            id: flashsale_server::domain::OrderId::generate(),
            sale_id: sale_id.clone(),
            user_id: flashsale_server::domain::UserId::parse(buyer).unwrap(),
            quantity: 1,
            status: flashsale_server::domain::OrderStatus::PendingPayment,
            created_at: now,
            expires_at: now + jiff::SignedDuration::from_secs(900),
            paid_at: None,
            idempotency_key: None,
            access_code: None,
            refunded_at: None,
            payment: None,
        },
        per_user_limit: 1,
        payment_window_secs: 900,
    }
}

fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
