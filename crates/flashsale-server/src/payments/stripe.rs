//! Stripe's PaymentIntents API over HTTP/1.1 (rustls with ring for `https://`; plain HTTP for a
//! local stand-in such as localstripe): form-encoded requests, `Authorization: Bearer sk_…`, and
//! an `Idempotency-Key` on every request that changes something (the order id for its intent,
//! `refund-<order id>` for its refund), so that a retry is safe. Each call has a deadline; an
//! attempt that fails in a way Stripe calls retryable (no connection, no answer in time, a 5xx, a
//! 429, or `Stripe-Should-Retry: true`) is tried again after a back-off, within that deadline.
//! Connections are kept alive and reused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::{Intent, IntentRequest, IntentStatus, PaymentProvider, ProviderError, RefundReceipt};
use crate::domain::OrderId;
use crate::BoxFuture;

/// How long one call (all its attempts) may take: less than a request's own timeout, so a
/// provider that hangs is a `503` the buyer can retry, not a request the edge cuts.
const CALL_DEADLINE: Duration = Duration::from_secs(8);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
const ATTEMPTS: u32 = 3;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// Most of a reply read (an intent is a few KB).
const REPLY_BYTES_MAX: usize = 1 << 20;
const IDLE_MAX: usize = 16;

/// Where Stripe is and how to sign in. `Debug` leaves the key out.
#[derive(Clone)]
pub struct StripeSettings {
    /// `https://api.stripe.com`, or a stand-in's base URL.
    pub api_base: url::Url,
    pub secret_key: String,
}

impl std::fmt::Debug for StripeSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StripeSettings")
            .field("api_base", &self.api_base.as_str())
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("stripe_api_base: {0}")]
pub struct StripeSettingsError(String);

type Sender = SendRequest<Full<Bytes>>;

struct Endpoint {
    host: String,
    port: u16,
    authority: String,
    /// The base URL's path, without a trailing slash (`/v1/…` follows).
    prefix: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

pub struct StripeProvider {
    endpoint: Endpoint,
    authorization: String,
    idle: Mutex<Vec<Sender>>,
}

/// One request to Stripe: a method, a path under `/v1`, a form, and the idempotency key of a
/// request that changes something.
struct Call<'a> {
    method: Method,
    path: String,
    form: Vec<(&'a str, String)>,
    idempotency_key: Option<String>,
}

/// An attempt's failure: whether another attempt may help.
enum Failure {
    Retry(String),
    Final(ProviderError),
}

fn message_of(body: &Value) -> String {
    body.pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_owned()
}

/// Longest id or client secret kept from Stripe's replies (its own are far shorter): what an
/// order's record holds stays bounded (`store::journal::codec::ORDER_RECORD_MAX`).
pub const PROVIDER_TEXT_MAX: usize = 255;

fn intent_from(body: &Value) -> Result<Intent, ProviderError> {
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| id.starts_with("pi_") && checked_id(id).is_ok())
        .ok_or_else(|| ProviderError::Refused("an intent without a valid id".into()))?;
    let client_secret = match body.get("client_secret").and_then(Value::as_str) {
        Some(secret) if secret.len() > PROVIDER_TEXT_MAX => {
            return Err(ProviderError::Refused(
                "an intent's client secret is too long".into(),
            ))
        }
        secret => secret.map(str::to_owned),
    };
    let status = match body.get("status").and_then(Value::as_str) {
        Some("succeeded") => IntentStatus::Succeeded,
        Some("canceled") => IntentStatus::Canceled,
        Some("processing") => IntentStatus::Processing,
        Some(_) => IntentStatus::AwaitingBuyer,
        None => return Err(ProviderError::Refused("an intent without a status".into())),
    };
    Ok(Intent {
        id: id.to_owned(),
        client_secret,
        status,
        amount_cents: body.get("amount").and_then(Value::as_u64).unwrap_or(0),
    })
}

fn refund_from(body: &Value) -> Option<RefundReceipt> {
    let status = body.get("status").and_then(Value::as_str)?;
    if !matches!(status, "succeeded" | "pending" | "requires_action") {
        return None;
    }
    Some(RefundReceipt {
        id: body
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| checked_id(id).is_ok())?
            .to_owned(),
        amount_cents: body.get("amount").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Ids go into paths: Stripe's are `[A-Za-z0-9_]`; anything else is refused before it is sent.
fn checked_id(id: &str) -> Result<&str, ProviderError> {
    let valid = !id.is_empty()
        && id.len() <= PROVIDER_TEXT_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(id)
    } else {
        Err(ProviderError::Refused(format!("{id:?} is not a Stripe id")))
    }
}

impl StripeProvider {
    pub fn new(settings: &StripeSettings) -> Result<Self, StripeSettingsError> {
        let url = &settings.api_base;
        let refuse = |reason: &str| StripeSettingsError(format!("{url}: {reason}"));
        let host = url
            .host_str()
            .ok_or_else(|| refuse("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| refuse("no port"))?;
        let tls = match url.scheme() {
            "https" => {
                let config = crate::tls::https_client_config()
                    .map_err(|error| refuse(&format!("TLS: {error}")))?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|error| refuse(&format!("host: {error}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            "http" => None,
            _ => return Err(refuse("must be http:// or https://")),
        };
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or(&host)),
            None => url.host_str().unwrap_or(&host).to_owned(),
        };
        Ok(Self {
            endpoint: Endpoint {
                host,
                port,
                authority,
                prefix: url.path().trim_end_matches('/').to_owned(),
                tls,
            },
            authorization: format!("Bearer {}", settings.secret_key),
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn connect(&self) -> Result<Sender, Failure> {
        let endpoint = &self.endpoint;
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|error| Failure::Retry(format!("connecting: {error}")))?;
        let _ = tcp.set_nodelay(true);
        match &endpoint.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|error| Failure::Retry(format!("TLS: {error}")))?;
                handshake(TokioIo::new(tls)).await
            }
        }
    }

    fn idle_sender(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn keep(&self, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push(sender);
        }
    }

    fn request(&self, call: &Call<'_>) -> Result<hyper::Request<Full<Bytes>>, Failure> {
        let form = {
            let mut serializer = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in &call.form {
                serializer.append_pair(key, value);
            }
            serializer.finish()
        };
        let (path, body) = if call.method == Method::GET && !form.is_empty() {
            (
                format!("{}{}?{form}", self.endpoint.prefix, call.path),
                String::new(),
            )
        } else {
            (format!("{}{}", self.endpoint.prefix, call.path), form)
        };
        let mut builder = hyper::Request::builder()
            .method(call.method.clone())
            .uri(path)
            .header(hyper::header::HOST, self.endpoint.authority.as_str())
            .header(hyper::header::AUTHORIZATION, self.authorization.as_str())
            .header(hyper::header::USER_AGENT, "flashsale");
        if call.method != Method::GET {
            builder = builder.header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        if let Some(key) = &call.idempotency_key {
            builder = builder.header("Idempotency-Key", key.as_str());
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| Failure::Final(ProviderError::Refused(error.to_string())))
    }

    /// One attempt on one connection: the reply's status and JSON body.
    async fn attempt(&self, call: &Call<'_>) -> Result<(StatusCode, Value), Failure> {
        let mut sender = match self.idle_sender() {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|error| Failure::Retry(format!("connection: {error}")))?;
        let response = sender
            .send_request(self.request(call)?)
            .await
            .map_err(|error| Failure::Retry(format!("sending: {error}")))?;
        let status = response.status();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|value| value.to_str().ok())
            .map(|value| value == "true");
        let body = Limited::new(response.into_body(), REPLY_BYTES_MAX)
            .collect()
            .await
            .map_err(|error| Failure::Retry(format!("reading the reply: {error}")))?
            .to_bytes();
        self.keep(sender);
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let retryable = should_retry
            .unwrap_or(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS);
        if status.is_success() {
            Ok((status, json))
        } else if retryable {
            Err(Failure::Retry(format!(
                "Stripe answered {status}: {}",
                message_of(&json)
            )))
        } else if status == StatusCode::NOT_FOUND {
            Err(Failure::Final(ProviderError::NotFound))
        } else if status == StatusCode::PAYMENT_REQUIRED {
            Err(Failure::Final(ProviderError::Declined(message_of(&json))))
        } else {
            Ok((status, json))
        }
    }

    /// A call with its retries, within `CALL_DEADLINE`: the reply's status and body (a 4xx that
    /// is not retryable comes back for the caller to read).
    async fn call(&self, call: Call<'_>) -> Result<(StatusCode, Value), ProviderError> {
        // Every request that changes something carries a key: repeating it is safe.
        debug_assert!(call.method == Method::GET || call.idempotency_key.is_some());
        let started = Instant::now();
        let mut backoff = BACKOFF_FIRST;
        let mut last = String::from("no attempt");
        for attempt in 1..=ATTEMPTS {
            let left = CALL_DEADLINE.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(ATTEMPT_TIMEOUT.min(left), self.attempt(&call)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(Failure::Final(error))) => return Err(error),
                Ok(Err(Failure::Retry(reason))) => last = reason,
                Err(_) => {
                    last = format!(
                        "no answer within {} ms",
                        ATTEMPT_TIMEOUT.min(left).as_millis()
                    )
                }
            }
            if attempt < ATTEMPTS {
                let left = CALL_DEADLINE.saturating_sub(started.elapsed());
                tokio::time::sleep(jittered(backoff).min(left)).await;
                backoff *= 4;
            }
        }
        tracing::warn!(path = %call.path, reason = %last, "Stripe could not be reached");
        Err(ProviderError::Unavailable(last))
    }

    async fn intent_call(&self, call: Call<'_>) -> Result<Intent, ProviderError> {
        let (status, body) = self.call(call).await?;
        if !status.is_success() {
            return Err(ProviderError::Refused(message_of(&body)));
        }
        intent_from(&body)
    }
}

/// Up to a quarter more, so retries of many calls do not arrive together.
fn jittered(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    delay + delay * u32::from(byte[0]) / 1024
}

async fn handshake<T>(io: TokioIo<T>) -> Result<Sender, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| Failure::Retry(format!("HTTP handshake: {error}")))?;
    tokio::spawn(async move {
        // Ends when Stripe or this side closes the connection.
        let _ = connection.await;
    });
    Ok(sender)
}

impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn create_intent<'a>(
        &'a self,
        request: &'a IntentRequest,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>> {
        Box::pin(async move {
            self.intent_call(Call {
                method: Method::POST,
                path: "/v1/payment_intents".into(),
                form: vec![
                    ("amount", request.amount_cents.to_string()),
                    ("currency", request.currency.clone()),
                    ("payment_method_types[]", "card".into()),
                    ("metadata[order_id]", request.order_id.to_string()),
                    ("metadata[sale_id]", request.sale_id.to_string()),
                ],
                idempotency_key: Some(request.order_id.to_string()),
            })
            .await
        })
    }

    fn retrieve_intent<'a>(
        &'a self,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>> {
        Box::pin(async move {
            self.intent_call(Call {
                method: Method::GET,
                path: format!("/v1/payment_intents/{}", checked_id(intent_id)?),
                form: Vec::new(),
                idempotency_key: None,
            })
            .await
        })
    }

    fn cancel_intent<'a>(
        &'a self,
        order_id: &'a OrderId,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>> {
        Box::pin(async move {
            let (status, body) = self
                .call(Call {
                    method: Method::POST,
                    path: format!("/v1/payment_intents/{}/cancel", checked_id(intent_id)?),
                    form: Vec::new(),
                    idempotency_key: Some(format!("cancel-{order_id}")),
                })
                .await?;
            if status.is_success() {
                return intent_from(&body);
            }
            // Refused: it succeeded, is being processed, or was cancelled already. Its state
            // says which.
            let intent = self.retrieve_intent(intent_id).await?;
            if intent.status == IntentStatus::AwaitingBuyer {
                return Err(ProviderError::Refused(message_of(&body)));
            }
            Ok(intent)
        })
    }

    fn confirm_intent<'a>(
        &'a self,
        order_id: &'a OrderId,
        intent_id: &'a str,
        payment_method: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>> {
        Box::pin(async move {
            let intent_id = checked_id(intent_id)?;
            let payment_method = checked_id(payment_method)?;
            // The method is set first, then confirmed (one key per method: another card after a
            // decline is another request).
            self.intent_call(Call {
                method: Method::POST,
                path: format!("/v1/payment_intents/{intent_id}"),
                form: vec![("payment_method", payment_method.to_owned())],
                idempotency_key: Some(format!("method-{order_id}-{payment_method}")),
            })
            .await?;
            self.intent_call(Call {
                method: Method::POST,
                path: format!("/v1/payment_intents/{intent_id}/confirm"),
                form: Vec::new(),
                idempotency_key: Some(format!("confirm-{order_id}-{payment_method}")),
            })
            .await
        })
    }

    fn refund<'a>(
        &'a self,
        order_id: &'a OrderId,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<RefundReceipt, ProviderError>> {
        Box::pin(async move {
            let intent_id = checked_id(intent_id)?;
            // A refund made by an attempt whose answer was lost is found, not made again.
            let (status, body) = self
                .call(Call {
                    method: Method::GET,
                    path: "/v1/refunds".into(),
                    form: vec![("payment_intent", intent_id.to_owned())],
                    idempotency_key: None,
                })
                .await?;
            if !status.is_success() {
                return Err(ProviderError::Refused(message_of(&body)));
            }
            let made = body
                .get("data")
                .and_then(Value::as_array)
                .and_then(|refunds| refunds.iter().find_map(refund_from));
            if let Some(refund) = made {
                return Ok(refund);
            }
            let (status, body) = self
                .call(Call {
                    method: Method::POST,
                    path: "/v1/refunds".into(),
                    form: vec![
                        ("payment_intent", intent_id.to_owned()),
                        ("metadata[order_id]", order_id.to_string()),
                    ],
                    idempotency_key: Some(format!("refund-{order_id}")),
                })
                .await?;
            if !status.is_success() {
                return Err(ProviderError::Refused(message_of(&body)));
            }
            refund_from(&body).ok_or_else(|| ProviderError::Refused(format!("a refund {body}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_reads_from_stripes_json_and_its_status_maps() {
        let intent = intent_from(&serde_json::json!({
            "id": "pi_1", "client_secret": "pi_1_secret_2", "status": "requires_payment_method",
            "amount": 4999
        }))
        .unwrap();
        assert_eq!(intent.status, IntentStatus::AwaitingBuyer);
        assert_eq!(intent.amount_cents, 4999);
        assert_eq!(intent.client_secret.as_deref(), Some("pi_1_secret_2"));
        for (text, status) in [
            ("succeeded", IntentStatus::Succeeded),
            ("canceled", IntentStatus::Canceled),
            ("processing", IntentStatus::Processing),
            ("requires_action", IntentStatus::AwaitingBuyer),
        ] {
            let read = intent_from(&serde_json::json!({"id": "pi_1", "status": text})).unwrap();
            assert_eq!(read.status, status, "{text}");
        }
        assert!(intent_from(&serde_json::json!({"status": "succeeded"})).is_err());
    }

    #[test]
    fn ids_that_could_change_a_path_are_refused() {
        assert!(checked_id("pi_3MtwBwLkdIwHu7ix28a3tqPa").is_ok());
        for bad in ["", "pi_1/../refunds", "pi 1", "pi_1?x=1"] {
            assert!(checked_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_leaves_the_secret_key_out() {
        let settings = StripeSettings {
            api_base: "https://api.stripe.com".parse().unwrap(),
            secret_key: "sk_test_hunter2".into(),
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
