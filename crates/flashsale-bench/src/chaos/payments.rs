//! Payments in a chaos run (`--payments`): a private localstripe the nodes pay through (Stripe's
//! PaymentIntents API; PyPI, pinned, installed by the repository's `scripts/localstripe-venv`
//! and started by `scripts/localstripe-server.py` on 127.0.0.1 with its state in memory only),
//! the buyers' cards confirming intents at it, and a webhook relay between it and the nodes that
//! drops a share of the webhooks, sends a share twice (to two nodes, the second late), and loses
//! those it sends to a node that is down (localstripe never retries). After the run, the
//! checker reads localstripe's own records: every intent, every refund.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;

use super::wire::{exchange, Answer, HangUp, Request};
use super::ChaosError;
use crate::SplitMix64;

pub const SECRET_KEY: &str = "sk_test_chaos";
pub const PUBLISHABLE_KEY: &str = "pk_test_chaos";
pub const WEBHOOK_SECRET: &str = "whsec_chaos";
/// Each order costs this per unit, so every payment moves money.
pub const PRICE_CENTS: u64 = 1000;

/// The repository the bench runs in (its scripts install and start localstripe).
fn repository() -> Result<PathBuf, ChaosError> {
    let mut dir = std::env::current_dir().map_err(ChaosError::Io)?;
    loop {
        if dir.join("scripts/localstripe-server.py").exists() {
            return Ok(dir);
        }
        if !dir.pop() {
            return Err(ChaosError::Usage(
                "--payments runs in the repository (it needs scripts/localstripe-venv)".into(),
            ));
        }
    }
}

pub struct LocalStripe {
    pub address: SocketAddr,
    child: Child,
}

impl LocalStripe {
    pub async fn start() -> Result<Self, ChaosError> {
        let repository = repository()?;
        let (child, port) = tokio::task::spawn_blocking(move || {
            let installed = Command::new(repository.join("scripts/localstripe-venv"))
                .output()
                .map_err(ChaosError::Io)?;
            if !installed.status.success() {
                return Err(ChaosError::Start(format!(
                    "installing localstripe: {}",
                    String::from_utf8_lossy(&installed.stderr)
                )));
            }
            let python = String::from_utf8_lossy(&installed.stdout).trim().to_owned();
            let mut child = Command::new(python)
                .arg(repository.join("scripts/localstripe-server.py"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(ChaosError::Io)?;
            let mut line = String::new();
            if let Some(stdout) = child.stdout.take() {
                use std::io::BufRead;
                let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            }
            let port: u16 = line
                .trim()
                .parse()
                .map_err(|_| ChaosError::Start(format!("localstripe said {line:?}")))?;
            Ok((child, port))
        })
        .await
        .map_err(|error| ChaosError::Start(error.to_string()))??;
        let stripe = Self {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        for _ in 0..200 {
            if stripe
                .call("GET", "/v1/payment_intents", None)
                .await
                .status()
                == Some(200)
            {
                return Ok(stripe);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ChaosError::Start("localstripe did not answer".into()))
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A call with the secret key (localstripe reads JSON bodies as forms).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let request = Request {
            method,
            path,
            bearer: Some(SECRET_KEY),
            idempotency_key: None,
            body: body.map(|body| body.to_string()),
            headers: &[],
        };
        exchange(self.address, &request, HangUp::Never).await
    }

    /// The buyer's card at Stripe: the method set on the intent, then the intent confirmed.
    /// Whether the money was taken.
    pub async fn pay(&self, intent_id: &str, payment_method: &str) -> bool {
        let path = format!("/v1/payment_intents/{intent_id}");
        let set = self
            .call(
                "POST",
                &path,
                Some(serde_json::json!({ "payment_method": payment_method })),
            )
            .await;
        if set.status() != Some(200) {
            return false;
        }
        let confirmed = self.call("POST", &format!("{path}/confirm"), None).await;
        confirmed.status() == Some(200)
            && confirmed
                .body()
                .is_some_and(|body| body["status"] == "succeeded")
    }

    pub async fn register_webhook(&self, url: &str) -> Result<(), ChaosError> {
        let answer = self
            .call(
                "POST",
                "/_config/webhooks/chaos",
                Some(serde_json::json!({ "url": url, "secret": WEBHOOK_SECRET })),
            )
            .await;
        if answer.status() == Some(200) {
            Ok(())
        } else {
            Err(ChaosError::Start(format!(
                "registering the webhook: {answer:?}"
            )))
        }
    }

    /// Every intent localstripe holds, with the refunds of each that was charged.
    pub async fn records(&self) -> Result<Vec<(Value, Vec<Value>)>, ChaosError> {
        let answer = self
            .call("GET", "/v1/payment_intents?limit=1000000", None)
            .await;
        let intents = answer
            .body()
            .filter(|_| answer.status() == Some(200))
            .and_then(|body| body["data"].as_array().cloned())
            .ok_or_else(|| ChaosError::Start(format!("listing intents: {answer:?}")))?;
        let mut records = Vec::with_capacity(intents.len());
        for intent in intents {
            // localstripe lists refunds only of an intent that was charged.
            let refunds = if intent["latest_charge"].is_null() {
                Vec::new()
            } else {
                let id = intent["id"].as_str().unwrap_or_default();
                let answer = self
                    .call(
                        "GET",
                        &format!("/v1/refunds?payment_intent={id}&limit=100"),
                        None,
                    )
                    .await;
                answer
                    .body()
                    .filter(|_| answer.status() == Some(200))
                    .and_then(|body| body["data"].as_array().cloned())
                    .ok_or_else(|| ChaosError::Start(format!("listing refunds: {answer:?}")))?
            };
            records.push((intent, refunds));
        }
        Ok(records)
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the relay did with localstripe's webhooks.
#[derive(Default)]
pub struct RelayCounts {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    /// Sends a node did not take (it was down, or refused the event).
    pub lost: AtomicU64,
}

struct RelayState {
    nodes: Vec<SocketAddr>,
    random: Mutex<SplitMix64>,
    counts: Arc<RelayCounts>,
}

/// Between localstripe and the nodes; its address is the webhook URL localstripe is given.
pub struct WebhookRelay {
    pub address: SocketAddr,
    pub counts: Arc<RelayCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookRelay {
    pub async fn start(nodes: Vec<SocketAddr>, seed: u64) -> Result<Self, ChaosError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ChaosError::Io)?;
        let address = listener.local_addr().map_err(ChaosError::Io)?;
        let counts = Arc::new(RelayCounts::default());
        let state = Arc::new(RelayState {
            nodes,
            random: Mutex::new(SplitMix64::new(seed ^ 0x5eed_f00d)),
            counts: Arc::clone(&counts),
        });
        let app = axum::Router::new()
            .route("/webhook", axum::routing::post(relay))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            counts,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.address)
    }
}

impl Drop for WebhookRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    state.counts.received.fetch_add(1, Ordering::Relaxed);
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (fate, first, second, delay) = {
        let mut random = state.random.lock().unwrap_or_else(|p| p.into_inner());
        let nodes = state.nodes.len() as u64;
        (
            random.below(100),
            random.below(nodes) as usize,
            random.below(nodes) as usize,
            Duration::from_millis(random.below(1500)),
        )
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let send = |node: SocketAddr, state: Arc<RelayState>, body: String, signature: String| async move {
        let headers = [("Stripe-Signature", signature.as_str())];
        let request = Request {
            method: "POST",
            path: "/api/v1/payments/stripe/webhook",
            bearer: None,
            idempotency_key: None,
            body: Some(body),
            headers: &headers,
        };
        if exchange(node, &request, HangUp::Never).await.status() != Some(200) {
            state.counts.lost.fetch_add(1, Ordering::Relaxed);
        }
    };
    match fate {
        // A quarter never arrives.
        0..=24 => {
            state.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
        // A fifth arrives twice: at one node now, at another a moment later.
        25..=44 => {
            state.counts.duplicated.fetch_add(1, Ordering::Relaxed);
            let (late_state, late_body, late_signature) =
                (Arc::clone(&state), body.clone(), signature.clone());
            let late = state.nodes[second];
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send(late, late_state, late_body, late_signature).await;
            });
            send(state.nodes[first], Arc::clone(&state), body, signature).await;
        }
        _ => send(state.nodes[first], Arc::clone(&state), body, signature).await,
    }
    // localstripe is told it arrived either way: it never retries.
    "ok"
}
