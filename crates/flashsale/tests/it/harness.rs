//! Starts a real server on port 0 with a fresh data directory, and talks to it over real HTTP.
//! Every server runs on a manual clock (cluster nodes share one): tests move time with
//! `TestServer::advance` instead of sleeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flashsale_server::app::App;
use flashsale_server::auth::mint_token;
use flashsale_server::clock::{Clock, ManualClock};
use flashsale_server::config::Settings;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .build_http()
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns whether it held. Tests
/// wait for an event this way (orders flowing, a node's backlog drained), never for a fixed time:
/// the limit only bounds a failure, so a slow machine makes a test slower, not flaky.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// `eventually` for a condition read without waiting (a counter the test's own tasks keep).
pub async fn eventually_holds(limit: Duration, check: impl Fn() -> bool) -> bool {
    eventually(limit, || {
        let holds = check();
        async move { holds }
    })
    .await
}

/// Settings for a test server: port 0, the given data directory, short expiry sweeps, and no
/// per-buyer rate limit unless a test sets one.
pub fn test_settings(data_dir: &std::path::Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        admin_token: Some("test-admin-token-of-at-least-32-bytes".into()),
        jwt_secret: Some("test-jwt-secret-of-at-least-32-bytes".into()),
        buyer_requests_per_sec: 0,
        expiry_sweep_interval_ms: 100,
        ..Settings::default()
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// One server, or several cluster nodes sharing Redis and PostgreSQL; requests go to the nodes
/// in turn.
pub struct TestServer {
    pub addrs: Vec<SocketAddr>,
    /// The time of every node of this server; `None` for nodes on the real clock (Redis's).
    clock: Option<Arc<ManualClock>>,
    next: std::sync::atomic::AtomicUsize,
    pub admin_token: String,
    pub jwt_secret: String,
    pub client: HttpClient,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<Result<(), flashsale_server::app::StartError>>>,
    _data_dirs: Vec<tempfile::TempDir>,
    _backends: Option<crate::services::ClusterBackends>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(data_dir.path());
        tweak(&mut settings);
        let mut server = Self::start_on(settings, None).await;
        server._data_dirs.push(data_dir);
        server
    }

    /// `nodes` cluster nodes on a fresh Redis key prefix and PostgreSQL schema, or `None` (after
    /// saying so) when the test services are not configured.
    pub async fn start_cluster(nodes: usize) -> Option<Self> {
        Self::start_cluster_with(nodes, |_| {}).await
    }

    pub async fn start_cluster_with(nodes: usize, tweak: impl Fn(&mut Settings)) -> Option<Self> {
        let clock = Arc::new(ManualClock::new(jiff::Timestamp::now()));
        Self::start_nodes(nodes, tweak, Some(clock)).await
    }

    /// Cluster nodes as in production: their time is Redis's (for the bench, whose scenarios
    /// wait on real time).
    pub async fn start_cluster_on_redis_time(nodes: usize) -> Option<Self> {
        Self::start_nodes(nodes, |_| {}, None).await
    }

    async fn start_nodes(
        nodes: usize,
        tweak: impl Fn(&mut Settings),
        clock: Option<Arc<ManualClock>>,
    ) -> Option<Self> {
        let backends = crate::services::ClusterBackends::new()?;
        let mut cluster: Option<Self> = None;
        for _ in 0..nodes {
            let data_dir = tempfile::tempdir().expect("temp dir");
            let mut settings = test_settings(data_dir.path());
            backends.configure(&mut settings);
            tweak(&mut settings);
            let node = match &clock {
                Some(clock) => Self::start_on(settings, Some(Arc::clone(clock))).await,
                None => Self::start_app(App::build(&settings).await, None),
            };
            cluster = Some(match cluster {
                None => node,
                Some(mut cluster) => {
                    cluster.join(node);
                    cluster
                }
            });
            if let Some(cluster) = cluster.as_mut() {
                cluster._data_dirs.push(data_dir);
            }
        }
        let mut cluster = cluster.expect("at least one node");
        cluster._backends = Some(backends);
        Some(cluster)
    }

    /// Takes over another running node: its requests are spread over both.
    fn join(&mut self, mut node: TestServer) {
        self.addrs.append(&mut node.addrs);
        self.stops.append(&mut node.stops);
        self.tasks.append(&mut node.tasks);
        self._data_dirs.append(&mut node._data_dirs);
    }

    pub fn next_addr(&self) -> SocketAddr {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.addrs[turn % self.addrs.len()]
    }

    pub fn backends(&self) -> Option<&crate::services::ClusterBackends> {
        self._backends.as_ref()
    }

    /// Starts a server with exactly these settings, on `clock` (a new manual clock at the
    /// current time when `None`).
    pub async fn start_on(settings: Settings, clock: Option<Arc<ManualClock>>) -> Self {
        let clock = clock.unwrap_or_else(|| Arc::new(ManualClock::new(jiff::Timestamp::now())));
        let app = App::build_with_clock(&settings, Arc::clone(&clock) as Arc<dyn Clock>).await;
        Self::start_app(app, Some(clock))
    }

    fn start_app(
        app: Result<App, flashsale_server::app::StartError>,
        clock: Option<Arc<ManualClock>>,
    ) -> Self {
        // FLASHSALE_TEST_LOG=warn (say) shows the servers' logs when a test is debugged.
        if let Ok(filter) = std::env::var("FLASHSALE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let app = app.expect("server starts");
        let addr = app.local_addr();
        let admin_token = app.credentials.admin_token.clone();
        let jwt_secret = app.credentials.jwt_secret.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            addrs: vec![addr],
            clock,
            next: std::sync::atomic::AtomicUsize::new(0),
            admin_token,
            jwt_secret,
            client: http_client(),
            stops: vec![stop],
            tasks: vec![task],
            _data_dirs: Vec::new(),
            _backends: None,
        }
    }

    /// Drains and stops the server, as SIGTERM would.
    pub async fn stop(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }

    /// The server's time.
    pub fn now(&self) -> jiff::Timestamp {
        match &self.clock {
            Some(clock) => clock.now(),
            None => jiff::Timestamp::now(),
        }
    }

    /// A buyer token valid for a day of the server's clock.
    pub fn token(&self, user: &str) -> String {
        mint_token(&self.jwt_secret, user, self.now().as_second() + 86_400)
    }

    /// Moves every node's clock forward.
    pub fn advance(&self, by: jiff::SignedDuration) {
        self.clock
            .as_ref()
            .expect("a server on a manual clock")
            .advance(by);
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        send(
            &self.client,
            self.next_addr(),
            method,
            path,
            bearer,
            body,
            headers,
        )
        .await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        self.send(Method::GET, path, bearer, None, &[]).await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Reply {
        self.send(Method::POST, path, bearer, Some(body.to_string()), &[])
            .await
    }

    /// Creates a sale that is live now, with the given fields on top of a default.
    pub async fn create_sale(&self, fields: Value) -> String {
        let mut body = json!({
            "name": "Test sale",
            "stock": 100,
            "starts_at": "2020-01-01T00:00:00Z",
        });
        for (key, value) in fields.as_object().expect("object").clone() {
            body[key] = value;
        }
        let reply = self
            .post("/api/v1/sales", Some(&self.admin_token), body)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().expect("sale id").to_owned()
    }

    pub async fn purchase(&self, sale_id: &str, user: &str, quantity: Option<u32>) -> Reply {
        let body = quantity.map(|quantity| json!({ "quantity": quantity }).to_string());
        self.send(
            Method::POST,
            &format!("/api/v1/sales/{sale_id}/purchase"),
            Some(&self.token(user)),
            body,
            &[],
        )
        .await
    }

    pub async fn audit(&self, sale_id: &str) -> Value {
        let reply = self
            .get(
                &format!("/api/v1/sales/{sale_id}/audit"),
                Some(&self.admin_token),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// Asserts the audit invariant and returns the audit.
    pub async fn assert_consistent(&self, sale_id: &str) -> Value {
        let audit = self.audit(sale_id).await;
        assert_eq!(audit["consistent"], json!(true), "{audit}");
        let sum = audit["remaining"].as_u64().unwrap()
            + audit["pending"].as_u64().unwrap()
            + audit["paid"].as_u64().unwrap();
        assert_eq!(sum, audit["stock"].as_u64().unwrap(), "{audit}");
        audit
    }

    /// Buys once for each user, all at once (at most `concurrency` in flight), returning the
    /// replies in user order.
    pub async fn purchase_all(&self, sale_id: &str, users: Vec<String>) -> Vec<Reply> {
        let gate = Arc::new(Semaphore::new(512));
        let mut tasks = Vec::with_capacity(users.len());
        for user in users {
            let (client, addr, gate) = (self.client.clone(), self.next_addr(), Arc::clone(&gate));
            let token = self.token(&user);
            let path = format!("/api/v1/sales/{sale_id}/purchase");
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.expect("semaphore");
                send(&client, addr, Method::POST, &path, Some(&token), None, &[]).await
            }));
        }
        let mut replies = Vec::with_capacity(tasks.len());
        for task in tasks {
            replies.push(task.await.expect("purchase task"));
        }
        replies
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

pub async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("reply within 30 s")
        .expect("HTTP exchange");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Counts replies by (status, error code).
pub fn tally(replies: &[Reply]) -> std::collections::BTreeMap<(u16, String), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for reply in replies {
        *counts
            .entry((reply.status.as_u16(), reply.code().to_owned()))
            .or_insert(0) += 1;
    }
    counts
}

pub fn users(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Runs each case `fn(TestServer)` of the calling module once per server setup: `$start` is an
/// async expression giving `Option<TestServer>` (`None`: the setup's services are not
/// configured here, and the case is skipped, saying so).
#[macro_export]
macro_rules! server_suite {
    ($mode:ident, $start:expr; $($case:ident),*) => {
        mod $mode {
            #[allow(unused_imports)]
            use $crate::harness::TestServer;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(server) = $start.await {
                        super::$case(server).await;
                    }
                }
            )*
        }
    };
}
