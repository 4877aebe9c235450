//! A full disk under the embedded journal store (issue #24), on a small tmpfs the test mounts
//! (as root; skipped visibly otherwise) with the real binary: it starts on a nearly full disk,
//! refuses purchases clearly once the disk is full while every acknowledged order stays
//! readable, gives its reserve back and leaves freed space alone until there is enough to
//! resume, resumes by itself once space is back, drains on SIGTERM with exit 0, starts again on
//! the tight disk with nothing acknowledged lost, and a failed start leaves nothing behind.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{eventually, send, Reply};
use crate::process::{create_sale, Server, SECRET};

const MIB: u64 = 1 << 20;

/// A tmpfs of its own, unmounted when dropped (also when the test fails).
struct Volume {
    dir: tempfile::TempDir,
}

impl Volume {
    fn mount(size_mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mounting a tmpfs");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let dir = std::fs::File::open(self.path()).unwrap();
        flashsale_server::record_file::free_bytes(&dir).unwrap()
    }

    /// Writes the file `name` until at most `leave` bytes are free (0: until the disk refuses).
    fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            let free = self.free();
            if free <= leave {
                break;
            }
            let length = usize::try_from(free - leave)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            if file.write_all(&chunk[..length]).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.dir.path()).status();
        if !unmounted.is_ok_and(|status| status.success()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
}

async fn metrics(server: &Server) -> String {
    server
        .admin(Method::GET, "/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned()
}

async fn buy(server: &Server, sale_id: &str, user: &str) -> Reply {
    buy_on(&server.client, server.addr, sale_id, user).await
}

async fn buy_on(
    client: &crate::harness::HttpClient,
    addr: std::net::SocketAddr,
    sale_id: &str,
    user: &str,
) -> Reply {
    let token =
        flashsale_server::auth::mint_token(SECRET, user, jiff::Timestamp::now().as_second() + 3600);
    send(
        client,
        addr,
        Method::POST,
        &format!("/api/v1/sales/{sale_id}/purchase"),
        Some(&token),
        None,
        &[],
    )
    .await
}

/// Buyers buy from `workers` tasks until the disk is full: every reply is a `201` or the
/// disk-full `503` (with `Retry-After`); returns the acknowledged order ids once `refusals`
/// refusals have been seen.
async fn buy_until_refused(
    server: &Server,
    sale_id: &str,
    prefix: &str,
    refusals: usize,
) -> Vec<String> {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (acknowledged, refused, stop) = (
                Arc::clone(&acknowledged),
                Arc::clone(&refused),
                Arc::clone(&stop),
            );
            let (client, addr) = (server.client.clone(), server.addr);
            let (sale_id, prefix) = (sale_id.to_owned(), prefix.to_owned());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let reply =
                        buy_on(&client, addr, &sale_id, &format!("{prefix}-{worker}-{n}")).await;
                    match reply.status {
                        StatusCode::CREATED => acknowledged
                            .lock()
                            .unwrap()
                            .push(reply.body["id"].as_str().unwrap().to_owned()),
                        StatusCode::SERVICE_UNAVAILABLE => {
                            assert_eq!(reply.code(), "unavailable", "{}", reply.body);
                            assert_eq!(
                                reply
                                    .headers
                                    .get("retry-after")
                                    .map(|v| v.to_str().unwrap()),
                                Some("5")
                            );
                            if refused.fetch_add(1, Ordering::SeqCst) + 1 >= refusals {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                        other => {
                            panic!("a purchase on a full disk answered {other}: {}", reply.body)
                        }
                    }
                    assert!(n < 200_000, "the disk never filled up");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a buyer");
    }
    let ids = acknowledged.lock().unwrap().clone();
    ids
}

/// Every acknowledged order is readable, the sale's listing is exactly them, and the audit
/// balances with them pending.
async fn assert_all_readable(server: &Server, sale_id: &str, acknowledged: &[String]) {
    for order_id in acknowledged {
        let reply = server
            .admin(Method::GET, &format!("/api/v1/orders/{order_id}"), None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "order {order_id}: {}",
            reply.body
        );
    }
    let mut listed = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page = server
            .admin(
                Method::GET,
                &format!("/api/v1/orders?sale_id={sale_id}&limit=500{cursor}"),
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for order in page.body["orders"].as_array().unwrap() {
            listed.insert(order["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let expected: BTreeSet<String> = acknowledged.iter().cloned().collect();
    assert_eq!(listed, expected, "the listing is the acknowledged orders");
    let audit: Value = server
        .admin(Method::GET, &format!("/api/v1/sales/{sale_id}/audit"), None)
        .await
        .body;
    assert_eq!(audit["consistent"], json!(true), "{audit}");
    assert_eq!(audit["pending"], json!(acknowledged.len()), "{audit}");
}

async fn terminate(mut server: Server) {
    let sent = Command::new("kill")
        .args(["-TERM", &server.pid()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .expect("waits");
    assert!(
        status.success(),
        "SIGTERM exits 0 on a full disk, got {status:?}"
    );
}

/// Sizes of the files in `dir`.
fn sizes(dir: &Path) -> Vec<(String, u64)> {
    let mut sizes: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.metadata().unwrap().len(),
            )
        })
        .collect();
    sizes.sort();
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_clearly_keeps_every_order_readable_and_recovers_by_itself() {
    if !crate::services::root_or_skip() {
        return;
    }
    let volume = Volume::mount(32);
    let data_dir = volume.path().join("data");
    // A nearly full disk: the server starts with the reserve that fits above the floor.
    let filler_start = volume.fill("filler-start", 5 * MIB + 512 * 1024);
    let server = Server::start(&data_dir).await;
    let text = metrics(&server).await;
    let reserve = metric(&text, "flashsale_journal_reserve_bytes");
    assert!(
        reserve > 0 && reserve <= 2 * MIB,
        "reserve {reserve}\n{text}"
    );
    assert_eq!(metric(&text, "flashsale_journal_out_of_space"), 0);
    let sale_id = create_sale(&server, 1_000_000).await;
    let mut before = Vec::new();
    for n in 0..20 {
        let reply = buy(&server, &sale_id, &format!("first-{n}")).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        before.push(reply.body["id"].as_str().unwrap().to_owned());
    }

    // The disk fills up: purchases go on in the reserve, then are refused, clearly.
    let filler = volume.fill("filler-full", 0);
    let mut acknowledged = before;
    acknowledged.extend(buy_until_refused(&server, &sale_id, "crowd", 50).await);
    assert!(
        acknowledged.len() > 100,
        "{} orders before the disk was full",
        acknowledged.len()
    );
    // Reads keep working from memory: every order, the listing, the audit.
    assert_all_readable(&server, &sale_id, &acknowledged).await;
    let ready = server.admin(Method::GET, "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = ready.body["error"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("disk is full"), "{}", ready.body);
    let text = metrics(&server).await;
    assert_eq!(metric(&text, "flashsale_journal_out_of_space"), 1, "{text}");
    assert_eq!(
        metric(&text, "flashsale_journal_reserve_bytes"),
        0,
        "given back"
    );

    // A little space freed (less than the floor and a piece) is left alone, not taken back.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    let length = file.metadata().unwrap().len();
    file.set_len(length - 3 * MIB).unwrap();
    let freed = volume.free();
    assert!(freed >= 3 * MIB, "{freed}");
    let taken = eventually(Duration::from_millis(500), || async {
        volume.free() < freed - 64 * 1024
    })
    .await;
    assert!(
        !taken,
        "freed space was taken back: {} left of {freed}",
        volume.free()
    );
    let still = buy(&server, &sale_id, "too-early").await;
    assert_eq!(
        still.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        still.body
    );

    // SIGTERM drains and exits 0 on the full disk; a start on it works with the reserve that
    // fits (none) and has every order.
    drop(file);
    terminate(server).await;
    let server = Server::start(&data_dir).await;
    assert_all_readable(&server, &sale_id, &acknowledged).await;
    // Its reserve ahead is empty (the 3 MiB free are under the floor), but orders may use them.
    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, "flashsale_journal_reserve_bytes"),
        0,
        "{text}"
    );
    let restarted = buy(&server, &sale_id, "after-restart").await;
    assert_eq!(restarted.status, StatusCode::CREATED, "{}", restarted.body);
    acknowledged.push(restarted.body["id"].as_str().unwrap().to_owned());

    // Space is back: purchases go through again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&filler_start).unwrap();
    let attempt = AtomicUsize::new(0);
    let resumed_order = Mutex::new(None);
    let resumed = eventually(Duration::from_secs(10), || async {
        let n = attempt.fetch_add(1, Ordering::SeqCst);
        let reply = buy(&server, &sale_id, &format!("after-{n}")).await;
        let created = reply.status == StatusCode::CREATED;
        if created {
            *resumed_order.lock().unwrap() = reply.body["id"].as_str().map(str::to_owned);
        }
        created
    })
    .await;
    acknowledged.extend(resumed_order.into_inner().unwrap());
    assert!(resumed, "writing resumed once space was back");
    for n in 0..20 {
        let reply = buy(&server, &sale_id, &format!("resumed-{n}")).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        acknowledged.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let ready = eventually(Duration::from_secs(5), || async {
        server.admin(Method::GET, "/readyz", None).await.status == StatusCode::OK
    })
    .await;
    assert!(ready, "ready again");
    assert_all_readable(&server, &sale_id, &acknowledged).await;

    terminate(server).await;

    // A failed start (its address is taken) leaves the disk as it found it.
    let (free_before, files_before) = (volume.free(), sizes(&data_dir));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let failed = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args([
            "serve",
            "--listen",
            &taken.local_addr().unwrap().to_string(),
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("FLASHSALE_ADMIN_TOKEN", crate::process::ADMIN)
        .env("FLASHSALE_JWT_SECRET", SECRET)
        .env("FLASHSALE_LOG", "warn")
        .output()
        .expect("the binary runs");
    assert!(!failed.status.success(), "the address is taken");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("listening on"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert_eq!(sizes(&data_dir), files_before, "no file grew or appeared");
    assert!(
        volume.free() + 64 * 1024 >= free_before,
        "{} free after the failed start, {free_before} before",
        volume.free()
    );
}
