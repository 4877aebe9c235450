//! A short `flashsale bench chaos` run on each backend, through the real binary: the embedded
//! server killed with SIGKILL and restarted twice; two cluster nodes, killed and restarted, their
//! Redis killed and restarted from its AOF, and their PostgreSQL stalled. Each must end with zero violations of the
//! checker (stock conserved everywhere, no unit sold twice, every acknowledged order and
//! transition kept, every returned unit sold again once, winning keys answered with their order,
//! no buyer over the limit, no 5xx but 503). Fixed seeds, so a failure replays. The same runs
//! with payments through a private localstripe add the money: what localstripe took less what it
//! refunded is the price of the paid orders, every payment has one outcome, the feed agrees.

use std::process::Command;

use crate::services::database_url;

fn chaos(arguments: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["bench", "chaos"])
        .args(arguments)
        .output()
        .expect("the bench runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_embedded_server_with_kill_dash_nine() {
    let (passed, output) = tokio::task::spawn_blocking(|| {
        chaos(&["--seed", "2", "--duration", "6", "--buyers", "120"])
    })
    .await
    .unwrap();
    assert!(passed, "{output}");
    assert!(
        output.contains("PASSED: 0 invariant violations (seed 2)"),
        "{output}"
    );
    assert!(output.contains("kill -9 node 0, restarted"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_two_cluster_nodes_with_node_kills_a_redis_restart_and_a_postgres_stall() {
    let Some(url) = database_url() else {
        return;
    };
    let (passed, output) = tokio::task::spawn_blocking(move || {
        chaos(&[
            "--seed",
            "4",
            "--duration",
            "8",
            "--buyers",
            "120",
            "--cluster-nodes",
            "2",
            "--database-url",
            &url,
        ])
    })
    .await
    .unwrap();
    assert!(passed, "{output}");
    assert!(
        output.contains("PASSED: 0 invariant violations (seed 4)"),
        "{output}"
    );
    assert!(
        output.contains("kill -9 Redis, restarted from its AOF"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_payments_on_the_embedded_server() {
    let (passed, output) = tokio::task::spawn_blocking(|| {
        chaos(&[
            "--seed",
            "3",
            "--duration",
            "6",
            "--buyers",
            "100",
            "--payments",
        ])
    })
    .await
    .unwrap();
    assert!(passed, "{output}");
    assert!(
        output.contains("PASSED: 0 invariant violations (seed 3)"),
        "{output}"
    );
    assert!(output.contains("money at localstripe"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_payments_on_two_cluster_nodes() {
    let Some(url) = database_url() else {
        return;
    };
    let (passed, output) = tokio::task::spawn_blocking(move || {
        chaos(&[
            "--seed",
            "5",
            "--duration",
            "8",
            "--buyers",
            "100",
            "--cluster-nodes",
            "2",
            "--database-url",
            &url,
            "--payments",
        ])
    })
    .await
    .unwrap();
    assert!(passed, "{output}");
    assert!(
        output.contains("PASSED: 0 invariant violations (seed 5)"),
        "{output}"
    );
    assert!(output.contains("webhooks from localstripe"), "{output}");
}
