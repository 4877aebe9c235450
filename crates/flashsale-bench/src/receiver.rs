//! `--webhook-receiver`: a webhook receiver in Rust that the bench starts as its own process
//! (`flashsale webhook-receiver`), so a webhook sink's cost is measured against a receiver that
//! costs little (the Python one the tests use checks every signature at a few thousand a
//! second, on the same cores as the server). It checks what a receiver must: each signature
//! (Standard Webhooks, by the server's own function: the tests hold that function to an
//! independent implementation), and that each sale's events come in `sequence` order; at-least-
//! once redeliveries are counted apart. `GET /stats` tells the bench what it saw.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use flashsale_server::events::webhook::signature;

use crate::client::Connection;
use crate::target::TargetError;

/// What the receiver saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Seen {
    /// Requests that carried a valid signature.
    pub received: u64,
    /// Events seen for the first time.
    pub distinct: u64,
    /// Events seen again (at-least-once delivery).
    pub redelivered: u64,
    /// Events that came before an earlier one of their sale.
    pub out_of_order: u64,
    /// Requests refused for a missing or wrong signature.
    pub bad_signatures: u64,
    /// How long after its change each event first arrived (its CloudEvent `time` to now), ms.
    pub lag_p50_ms: u64,
    pub lag_p99_ms: u64,
    pub lag_max_ms: u64,
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    distinct: AtomicU64,
    redelivered: AtomicU64,
    out_of_order: AtomicU64,
    bad_signatures: AtomicU64,
}

struct Receiver {
    secret: Vec<u8>,
    counts: Counts,
    /// Each sale's last sequence in order.
    last: Mutex<HashMap<String, u64>>,
    /// First arrivals' lag, in ms.
    lag: Mutex<Histogram<u64>>,
}

impl Receiver {
    fn new(secret: Vec<u8>) -> Self {
        Self {
            secret,
            counts: Counts::default(),
            last: Mutex::new(HashMap::new()),
            // An hour at 3 significant digits; a lag beyond it is recorded as an hour.
            lag: Mutex::new(Histogram::new_with_max(3_600_000, 3).unwrap_or_else(|_| {
                unreachable!("3 significant digits and a max above 1 are valid bounds")
            })),
        }
    }
}

/// The part of a CloudEvent the receiver reads.
#[derive(Deserialize)]
struct Stamped {
    time: jiff::Timestamp,
}

/// How long ago the event's change took effect, in ms (0 if its time cannot be read).
fn lag_ms(body: &[u8]) -> u64 {
    serde_json::from_slice::<Stamped>(body).map_or(0, |stamped| {
        let lag = jiff::Timestamp::now().duration_since(stamped.time);
        u64::try_from(lag.as_millis()).unwrap_or(0)
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

async fn take(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let counts = &receiver.counts;
    let signed = (|| {
        let id = header(&headers, "webhook-id")?;
        let timestamp: i64 = header(&headers, "webhook-timestamp")?.parse().ok()?;
        let expected = signature(&receiver.secret, id, timestamp, &body);
        header(&headers, "webhook-signature")?
            .split(' ')
            .any(|given| given == expected)
            .then_some(id)
    })();
    let Some((sale, sequence)) = signed.and_then(|id| {
        let (sale, sequence) = id.rsplit_once('-')?;
        Some((sale.to_owned(), sequence.parse::<u64>().ok()?))
    }) else {
        counts.bad_signatures.fetch_add(1, Relaxed);
        return StatusCode::UNAUTHORIZED;
    };
    counts.received.fetch_add(1, Relaxed);
    let mut last = receiver.last.lock().unwrap_or_else(|p| p.into_inner());
    let last = last.entry(sale).or_insert(0);
    if sequence <= *last {
        counts.redelivered.fetch_add(1, Relaxed);
    } else {
        if sequence != *last + 1 {
            counts.out_of_order.fetch_add(1, Relaxed);
        }
        *last = sequence;
        counts.distinct.fetch_add(1, Relaxed);
        let lag = lag_ms(&body);
        let mut histogram = receiver.lag.lock().unwrap_or_else(|p| p.into_inner());
        histogram.saturating_record(lag);
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(receiver): State<Arc<Receiver>>) -> Json<Seen> {
    let counts = &receiver.counts;
    let lag = receiver.lag.lock().unwrap_or_else(|p| p.into_inner());
    Json(Seen {
        lag_p50_ms: lag.value_at_quantile(0.5),
        lag_p99_ms: lag.value_at_quantile(0.99),
        lag_max_ms: lag.max(),
        received: counts.received.load(Relaxed),
        distinct: counts.distinct.load(Relaxed),
        redelivered: counts.redelivered.load(Relaxed),
        out_of_order: counts.out_of_order.load(Relaxed),
        bad_signatures: counts.bad_signatures.load(Relaxed),
    })
}

/// The bytes of a `whsec_` secret.
fn secret_bytes(secret: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()
}

/// Serves until killed; prints `listening on http://ADDR` first, as `serve` does. Two worker
/// threads: a receiver that takes more than the server's delivery needs would only take CPU
/// from the server it measures.
pub fn serve(listen: SocketAddr, secret: &str) -> std::io::Result<()> {
    let Some(secret) = secret_bytes(secret) else {
        return Err(std::io::Error::other(
            "the secret must be whsec_ and base64",
        ));
    };
    let receiver = Arc::new(Receiver::new(secret));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/", post(take))
            .route("/stats", get(stats))
            .with_state(receiver);
        axum::serve(listener, app).await
    })
}

/// The receiver's process on a free port, with a fresh secret; killed when dropped.
pub struct WebhookReceiver {
    child: Child,
    pub address: SocketAddr,
    pub secret: String,
}

impl WebhookReceiver {
    pub fn start() -> Result<Self, TargetError> {
        let mut bytes = [0u8; 32];
        let _ = getrandom::fill(&mut bytes);
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let executable = std::env::current_exe().map_err(TargetError::Spawn)?;
        let mut child = Command::new(executable)
            .args(["webhook-receiver", "--listen", "127.0.0.1:0"])
            .env("FLASHSALE_BENCH_WEBHOOK_SECRET", &secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(TargetError::Spawn)?;
        match crate::target::read_address(&mut child) {
            Ok(address) => Ok(Self {
                child,
                address,
                secret,
            }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    /// The settings that add this receiver as a webhook sink named `bench-receiver`, after
    /// whatever `base` (a settings file's text) holds.
    pub fn settings_after(&self, base: &str) -> String {
        sink_after(base, self.address, &self.secret)
    }

    /// What it saw so far.
    pub async fn seen(&self) -> Result<Seen, String> {
        let mut connection = Connection::open(self.address, 0, Duration::from_secs(5))
            .await
            .map_err(|error| error.to_string())?;
        let reply = connection
            .send(hyper::Method::GET, "/stats", None, &[], None)
            .await
            .map_err(|error| error.to_string())?;
        serde_json::from_slice(&reply.body).map_err(|error| error.to_string())
    }
}

/// The sink's name in the compared server's settings.
pub const SINK_NAME: &str = "bench-receiver";

fn sink_after(base: &str, address: SocketAddr, secret: &str) -> String {
    format!(
        "{base}\n\n[[events.sinks]]\nname = \"{SINK_NAME}\"\nkind = \"webhook\"\n\
         url = \"http://{address}/\"\nsecret = \"{secret}\"\n"
    )
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> Arc<Receiver> {
        Arc::new(Receiver::new(b"0123456789abcdef01234567".to_vec()))
    }

    fn signed(receiver: &Receiver, id: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = |text: &str| text.parse().unwrap();
        headers.insert("webhook-id", value(id));
        headers.insert("webhook-timestamp", value("1700000000"));
        let signature = signature(&receiver.secret, id, 1_700_000_000, body);
        headers.insert("webhook-signature", value(&signature));
        headers
    }

    async fn deliver(receiver: &Arc<Receiver>, id: &str) -> StatusCode {
        let headers = signed(receiver, id, b"{}");
        take(
            State(Arc::clone(receiver)),
            headers,
            Bytes::from_static(b"{}"),
        )
        .await
    }

    #[test]
    fn an_events_lag_is_read_from_its_time() {
        let ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3);
        let body = format!(r#"{{"id":"s-1","time":"{ago}","data":{{}}}}"#);
        assert!((3_000..4_000).contains(&lag_ms(body.as_bytes())));
        assert_eq!(lag_ms(b"{}"), 0);
    }

    #[tokio::test]
    async fn it_counts_order_redeliveries_and_bad_signatures_apart() {
        let receiver = receiver();
        for id in ["s1-1", "s1-2", "s2-1", "s1-2", "s1-4"] {
            assert_eq!(deliver(&receiver, id).await, StatusCode::NO_CONTENT);
        }
        let mut headers = signed(&receiver, "s2-2", b"{}");
        headers.insert("webhook-timestamp", "1700000001".parse().unwrap());
        let refused = take(
            State(Arc::clone(&receiver)),
            headers,
            Bytes::from_static(b"{}"),
        )
        .await;
        assert_eq!(refused, StatusCode::UNAUTHORIZED);
        let Json(seen) = stats(State(receiver)).await;
        assert_eq!(
            seen,
            Seen {
                received: 5,
                distinct: 4,
                redelivered: 1,
                out_of_order: 1,
                bad_signatures: 1,
                lag_p50_ms: 0,
                lag_p99_ms: 0,
                lag_max_ms: 0,
            }
        );
    }

    #[test]
    fn its_sink_follows_the_sinks_of_the_compared_settings() {
        use flashsale_server::config::Settings;
        use flashsale_server::events::settings::check;
        let base = "[[events.sinks]]\nname = \"rabbit\"\nkind = \"amqp\"\n\
                    url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\nexchange = \"bench\"\n";
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let text = sink_after(base, "127.0.0.1:9".parse().unwrap(), secret);
        let file = std::env::temp_dir().join(format!("receiver-{}.toml", std::process::id()));
        std::fs::write(&file, text).unwrap();
        let settings = Settings::load(Some(&file), HashMap::<String, String>::new());
        let _ = std::fs::remove_file(&file);
        let sinks = check(&settings.unwrap().events).unwrap();
        let names: Vec<&str> = sinks.iter().map(|sink| sink.name.as_str()).collect();
        assert_eq!(names, ["rabbit", SINK_NAME]);
        assert_eq!(secret_bytes(secret).unwrap().len(), 24);
        assert!(secret_bytes("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
    }
}
