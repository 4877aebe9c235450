//! The webhook sink: one `POST` per event to the configured URL, the body the whole CloudEvent,
//! signed as the Standard Webhooks specification says: `webhook-id` (the event id, the same on
//! every redelivery), `webhook-timestamp` (this attempt's Unix seconds: receivers refuse old
//! ones) and `webhook-signature: v1,<base64 of HMAC-SHA256 over "id.timestamp.body">`, keyed with
//! the bytes of the base64 after `whsec_`. A `2xx` is delivered; anything else, a broken
//! connection or the timeout is a `Retry`. HTTP/1.1 over TCP, or TLS (rustls, the system's
//! roots) for `https://`; connections are kept alive and reused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpStream;

use super::settings::{SinkConfig, SinkKind};
use super::sink::{DeliveryError, EventSink, OutboundEvent};
use crate::BoxFuture;

/// Connections kept open for reuse (a sink delivers a few sales at once).
const IDLE_MAX: usize = 8;
/// Most of a receiver's reply read (the status is what counts; the rest is drained so the
/// connection can be reused).
const REPLY_BYTES_MAX: usize = 64 * 1024;

/// The Standard Webhooks signature of one attempt: `v1,<base64>`.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

struct Endpoint {
    host: String,
    port: u16,
    /// `Host` header.
    authority: String,
    path_and_query: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

type Sender = SendRequest<Full<Bytes>>;

pub struct WebhookSink {
    name: String,
    endpoint: Endpoint,
    secret: Vec<u8>,
    timeout: Duration,
    idle: Mutex<Vec<Sender>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("events sink {name:?}: {reason}")]
    Settings { name: String, reason: String },
}

fn retry(what: &str, error: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Retry(format!("{what}: {error}"))
}

impl WebhookSink {
    pub fn new(config: &SinkConfig) -> Result<Self, WebhookError> {
        let refuse = |reason: String| WebhookError::Settings {
            name: config.name.clone(),
            reason,
        };
        let SinkKind::Webhook { url, secret } = &config.kind else {
            return Err(refuse("not a webhook sink".into()));
        };
        let host = url
            .host_str()
            .ok_or_else(|| refuse("url has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| refuse("url has no port".into()))?;
        let tls = match url.scheme() {
            "https" => {
                let config = crate::tls::https_client_config()
                    .map_err(|error| refuse(format!("TLS: {error}")))?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|error| refuse(format!("url host: {error}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or(&host)),
            None => url.host_str().unwrap_or(&host).to_owned(),
        };
        let path_and_query = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Self {
            name: config.name.clone(),
            endpoint: Endpoint {
                host,
                port,
                authority,
                path_and_query,
                tls,
            },
            secret: secret.clone(),
            timeout: config.timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn connect(&self) -> Result<Sender, DeliveryError> {
        let endpoint = &self.endpoint;
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|error| retry("connecting", error))?;
        let _ = tcp.set_nodelay(true);
        match &endpoint.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|error| retry("TLS", error))?;
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

    fn request(&self, event: &OutboundEvent) -> Result<hyper::Request<Full<Bytes>>, DeliveryError> {
        let timestamp = jiff::Timestamp::now().as_second();
        hyper::Request::post(self.endpoint.path_and_query.as_str())
            .header(hyper::header::HOST, self.endpoint.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "flashsale")
            .header("webhook-id", event.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature(&self.secret, &event.id, timestamp, &event.json),
            )
            .body(Full::new(Bytes::from(event.json.clone())))
            .map_err(|error| retry("building the request", error))
    }

    /// Sends on `sender`; gives it back for reuse when the exchange ended cleanly.
    async fn send(&self, mut sender: Sender, event: &OutboundEvent) -> Result<(), DeliveryError> {
        sender
            .ready()
            .await
            .map_err(|error| retry("connection", error))?;
        let response = sender
            .send_request(self.request(event)?)
            .await
            .map_err(|error| retry("sending", error))?;
        let status = response.status();
        if Limited::new(response.into_body(), REPLY_BYTES_MAX)
            .collect()
            .await
            .is_ok()
        {
            self.keep(sender);
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Retry(format!(
                "the receiver answered {status}"
            )))
        }
    }

    async fn attempt(&self, event: &OutboundEvent) -> Result<(), DeliveryError> {
        // A kept connection the receiver closed meanwhile fails at once: then a fresh one.
        if let Some(sender) = self.idle_sender() {
            match self.send(sender, event).await {
                Ok(()) => return Ok(()),
                Err(DeliveryError::Retry(reason)) if !reason.starts_with("the receiver") => {}
                Err(error) => return Err(error),
            }
        }
        let sender = self.connect().await?;
        self.send(sender, event).await
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<Sender, DeliveryError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| retry("HTTP handshake", error))?;
    tokio::spawn(async move {
        // Ends when the receiver or this side closes the connection.
        let _ = connection.await;
    });
    Ok(sender)
}

impl EventSink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, event: &'a OutboundEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.attempt(event)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(DeliveryError::Retry(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signature = signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
