//! The real `flashsale` binary: killed with SIGKILL in the middle of a stream of purchases, and
//! stopped with SIGTERM under load. Every order that got a 201 must be there after a restart.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::{eventually, eventually_holds, http_client, send, HttpClient};

pub const ADMIN: &str = "process-admin-token-of-at-least-32-bytes";
pub const SECRET: &str = "process-jwt-secret-of-at-least-32-bytes";

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub client: HttpClient,
}

impl Server {
    /// Starts the binary on port 0 and reads the address it prints.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with_env(data_dir, &[]).await
    }

    /// Starts the binary with these environment variables on top of the test defaults.
    pub async fn start_with_env(data_dir: &Path, variables: &[(String, String)]) -> Self {
        Self::start_with_open_files(data_dir, variables, None).await
    }

    /// Starts the binary, its open-file limit (soft and hard) set to `open_files` if given.
    pub async fn start_with_open_files(
        data_dir: &Path,
        variables: &[(String, String)],
        open_files: Option<u64>,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flashsale"));
        if let Some(open_files) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and only reads the struct on the stack.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: open_files,
                        rlim_max: open_files,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("FLASHSALE_ADMIN_TOKEN", ADMIN)
            .env("FLASHSALE_JWT_SECRET", SECRET)
            .env("FLASHSALE_BUYER_REQUESTS_PER_SEC", "0")
            .env("FLASHSALE_LOG", "warn")
            .stdout(Stdio::piped());
        for (name, value) in variables {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("binary starts");
        let stdout = child.stdout.take().expect("stdout");
        // Read the first line, then keep draining so the server never writes to a closed pipe.
        let (line_sender, line_receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = line_sender.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let first_line = tokio::task::spawn_blocking(move || line_receiver.recv())
            .await
            .unwrap()
            .expect("reads stdout");
        let addr = first_line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first_line:?}"));
        Self {
            child,
            addr,
            client: http_client(),
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> crate::harness::Reply {
        send(
            &self.client,
            self.addr,
            method,
            path,
            Some(ADMIN),
            body,
            &[],
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Buyers purchase in a loop from `workers` tasks until `stop` is set or the server goes away;
/// returns the ids of orders that got a 201, and counts any reply that is neither 201 nor a
/// refusal (a 5xx would be a failure of the contract).
pub async fn buy_until_stopped(
    server: &Server,
    sale_id: &str,
    workers: usize,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
) -> (Vec<String>, usize) {
    let unexpected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (client, addr, stop) = (server.client.clone(), server.addr, Arc::clone(&stop));
        let (acknowledged, unexpected) = (Arc::clone(&acknowledged), Arc::clone(&unexpected));
        let path = format!("/api/v1/sales/{sale_id}/purchase");
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let user = format!("w{worker}-n{n}");
                let token = flashsale_server::auth::mint_token(
                    SECRET,
                    &user,
                    jiff::Timestamp::now().as_second() + 600,
                );
                let request = hyper::Request::builder()
                    .method(Method::POST)
                    .uri(format!("http://{addr}{path}"))
                    .header("authorization", format!("Bearer {token}"))
                    .body(http_body_util::Full::new(hyper::body::Bytes::new()))
                    .unwrap();
                let Ok(response) = client.request(request).await else {
                    return; // the server is gone
                };
                let status = response.status();
                let Ok(body) = http_body_util::BodyExt::collect(response.into_body()).await else {
                    return;
                };
                if status == StatusCode::CREATED {
                    let order: serde_json::Value =
                        serde_json::from_slice(&body.to_bytes()).unwrap();
                    acknowledged
                        .lock()
                        .unwrap()
                        .push(order["id"].as_str().unwrap().to_owned());
                } else if status.is_server_error() {
                    unexpected.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let ids = acknowledged.lock().unwrap().clone();
    (ids, unexpected.load(Ordering::SeqCst))
}

/// How long a test waits for load to reach a mark before it fails: generous, since it bounds only
/// a failure (a working server reaches each mark in well under a second).
pub const LOAD_LIMIT: Duration = Duration::from_secs(30);

/// Waits until `seen` reaches `count` (or `LOAD_LIMIT` passes); says whether it did.
pub async fn acknowledged_reach(count: usize, seen: impl Fn() -> usize) -> bool {
    eventually_holds(LOAD_LIMIT, || seen() >= count).await
}

pub async fn create_sale(server: &Server, stock: u64) -> String {
    let reply = server
        .admin(
            Method::POST,
            "/api/v1/sales",
            Some(
                json!({"name": "Crash", "stock": stock, "starts_at": "2020-01-01T00:00:00Z"})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// Every acknowledged order exists after the restart, and the audit holds.
async fn verify_after_restart(
    data_dir: &Path,
    variables: &[(String, String)],
    sale_id: &str,
    acknowledged: &[String],
) {
    let server = Server::start_with_env(data_dir, variables).await;
    for order_id in acknowledged {
        let reply = server
            .admin(Method::GET, &format!("/api/v1/orders/{order_id}"), None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "acknowledged order {order_id} was lost"
        );
        assert_eq!(reply.body["status"], json!("pending_payment"));
    }
    let audit = server
        .admin(Method::GET, &format!("/api/v1/sales/{sale_id}/audit"), None)
        .await
        .body;
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    let pending = audit["pending"].as_u64().unwrap() as usize;
    assert!(
        pending >= acknowledged.len(),
        "{pending} pending < {} acknowledged",
        acknowledged.len()
    );
    assert_eq!(
        audit["remaining"].as_u64().unwrap() + audit["pending"].as_u64().unwrap(),
        audit["stock"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_order() {
    kill_dash_nine_mid_stampede("journal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_order_on_the_sqlite_store() {
    kill_dash_nine_mid_stampede("sqlite").await;
}

/// Buyers buy from the real binary, which is killed with `-9` mid-load; every order it
/// acknowledged is there after a restart, and the audit balances.
async fn kill_dash_nine_mid_stampede(store: &str) {
    let variables = [("FLASHSALE_EMBEDDED_STORE".to_owned(), store.to_owned())];
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with_env(data_dir.path(), &variables).await;
    let sale_id = create_sale(&server, 1_000_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let buying = {
        let stop = Arc::clone(&stop);
        let server_ref: &Server = &server;
        // Run the buyers and the killer side by side.
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let buyers = buy_until_stopped(
            server_ref,
            &sale_id,
            16,
            Arc::clone(&stop),
            Arc::clone(&acknowledged),
        );
        let killer = async {
            // Mid-stream however fast the machine: once orders are flowing, not at a set time.
            acknowledged_reach(200, || acknowledged.lock().unwrap().len()).await;
            let killed = Command::new("kill")
                .args(["-KILL", &server_ref.pid()])
                .status();
            assert!(killed.expect("kill runs").success());
            stop.store(true, Ordering::SeqCst);
        };
        let (result, ()) = tokio::join!(buyers, killer);
        result
    };
    let (acknowledged, _) = buying;
    let _ = server.child.wait();
    assert!(
        acknowledged.len() > 50,
        "the load ran: {} orders",
        acknowledged.len()
    );
    drop(server);
    verify_after_restart(data_dir.path(), &variables, &sale_id, &acknowledged).await;
    let (journal, database) = (
        data_dir.path().join("orders.journal").exists(),
        data_dir.path().join("flashsale.db").exists(),
    );
    assert_eq!(
        (journal, database),
        (store == "journal", store == "sqlite"),
        "the {store} store kept the orders"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(data_dir.path()).await;
    let sale_id = create_sale(&server, 1_000_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (acknowledged, server_errors) = {
        let server_ref: &Server = &server;
        let buyers = buy_until_stopped(
            server_ref,
            &sale_id,
            8,
            Arc::clone(&stop),
            Arc::clone(&seen),
        );
        let terminator = async {
            acknowledged_reach(300, || seen.lock().unwrap().len()).await;
            let sent = Command::new("kill")
                .args(["-TERM", &server_ref.pid()])
                .status();
            assert!(sent.expect("kill runs").success());
            // Buyers keep sending through the drain, until the listener is gone.
            let addr = server_ref.addr;
            let closed = eventually(LOAD_LIMIT, || async move {
                tokio::net::TcpStream::connect(addr).await.is_err()
            })
            .await;
            stop.store(true, Ordering::SeqCst);
            assert!(closed, "the server stops listening after SIGTERM");
        };
        let (result, ()) = tokio::join!(buyers, terminator);
        result
    };
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait();
        (server, status)
    })
    .await
    .unwrap()
    .1
    .expect("waits");
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    assert_eq!(
        server_errors, 0,
        "draining answers requests, it does not fail them"
    );
    assert!(!acknowledged.is_empty());
    verify_after_restart(data_dir.path(), &[], &sale_id, &acknowledged).await;
}

/// The embedded waiting line survives `kill -9`: every acknowledged place and pass is there after
/// a restart (places move only by the admissions in between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_keeps_every_place_in_the_waiting_line() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(data_dir.path()).await;
    let starts_at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
    let created = server
        .admin(
            Method::POST,
            "/api/v1/sales",
            Some(
                json!({
                    "name": "line", "stock": 1000, "starts_at": starts_at.to_string(),
                    "waiting_room": { "admit_per_sec": 1 },
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let sale_id = created.body["id"].as_str().unwrap().to_owned();
    let queue = format!("/api/v1/sales/{sale_id}/queue");
    let token = |user: &str| {
        flashsale_server::auth::mint_token(SECRET, user, jiff::Timestamp::now().as_second() + 600)
    };
    let mut before = Vec::new();
    for i in 0..100 {
        let user = format!("b{i}");
        let reply = send(
            &server.client,
            server.addr,
            Method::POST,
            &queue,
            Some(&token(&user)),
            None,
            &[],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        before.push((user, reply.body));
    }
    let killed = Command::new("kill").args(["-KILL", &server.pid()]).status();
    assert!(killed.expect("kill runs").success());
    let _ = server.child.wait();
    drop(server);
    let server = Server::start(data_dir.path()).await;
    let mut shifts = std::collections::BTreeSet::new();
    for (user, seen) in &before {
        let reply = send(
            &server.client,
            server.addr,
            Method::GET,
            &queue,
            Some(&token(user)),
            None,
            &[],
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{user} lost its place: {}",
            reply.body
        );
        if seen["state"] == "admitted" {
            assert_eq!(reply.body["state"], "admitted", "{user}");
            assert_eq!(
                reply.body["pass_expires_at"], seen["pass_expires_at"],
                "{user}"
            );
        } else if reply.body["state"] == "waiting" {
            let (now, then) = (
                reply.body["position"].as_u64().unwrap(),
                seen["position"].as_u64().unwrap(),
            );
            shifts.insert(then - now);
        }
    }
    assert!(
        shifts.len() <= 1,
        "places kept their order: shifts {shifts:?}"
    );
}

/// The `/proc/<pid>/task/<tid>` directories of the server's threads with this name.
fn threads_named(server: &Server, name: &str) -> Vec<std::path::PathBuf> {
    let tasks = std::path::PathBuf::from(format!("/proc/{}/task", server.pid()));
    std::fs::read_dir(&tasks)
        .unwrap()
        .filter_map(Result::ok)
        .map(|task| task.path())
        .filter(|task| {
            std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// The order journal's writer runs `SCHED_BATCH`, so its wake-ups wait for the runtime thread
/// instead of preempting it (policy 3 in the kernel's `/proc/<pid>/task/<tid>/sched`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_writer_does_not_preempt_the_runtime() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path()).await;
    let writer = threads_named(&server, "flashsale-write")
        .pop()
        .expect("a thread named flashsale-write");
    let sched = std::fs::read_to_string(writer.join("sched")).unwrap();
    let policy = sched
        .lines()
        .find_map(|line| line.strip_prefix("policy"))
        .and_then(|rest| {
            rest.trim_start_matches([' ', ':'])
                .trim()
                .parse::<i32>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no policy in {sched}"));
    assert_eq!(policy, libc::SCHED_BATCH, "{sched}");
}

/// The server runs without transparent huge pages (`THP_enabled: 0` in `/proc/<pid>/status`):
/// the first touch of a 2-MB page stalls every request on its thread while the kernel zeroes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_does_not_use_transparent_huge_pages() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path()).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let enabled = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled in {status}"));
    assert_eq!(enabled.trim(), "0", "{status}");
}

/// With one worker the server's whole runtime is one thread (no `tokio-rt-worker`: the
/// current-thread scheduler), with two it has two workers; either way it sells exactly its
/// stock to a crowd, with no server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_runs_the_runtime_on_one_thread() {
    for (workers, worker_threads) in [(1, 0), (2, 2)] {
        let data_dir = tempfile::tempdir().unwrap();
        let variables = [("FLASHSALE_WORKER_THREADS".to_owned(), workers.to_string())];
        let server = Server::start_with_env(data_dir.path(), &variables).await;
        assert_eq!(
            threads_named(&server, "tokio-rt-worker").len(),
            worker_threads,
            "with {workers} worker(s)"
        );
        let sale_id = create_sale(&server, 30).await;
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let buyers = buy_until_stopped(
            &server,
            &sale_id,
            8,
            Arc::clone(&stop),
            Arc::clone(&acknowledged),
        );
        let sold_out = async {
            acknowledged_reach(30, || acknowledged.lock().unwrap().len()).await;
            stop.store(true, Ordering::SeqCst);
        };
        let ((sold, unexpected), ()) = tokio::join!(buyers, sold_out);
        assert_eq!(unexpected, 0, "with {workers} worker(s)");
        assert_eq!(sold.len(), 30, "with {workers} worker(s)");
        let audit = server
            .admin(Method::GET, &format!("/api/v1/sales/{sale_id}/audit"), None)
            .await
            .body;
        assert_eq!(audit["consistent"], json!(true), "{audit}");
        assert_eq!(audit["remaining"], json!(0), "{audit}");
    }
}
