//! The RabbitMQ sink (AMQP 0-9-1, `lapin`): each event is one persistent message on a durable
//! `topic` exchange, routed by `<type>.<sale id>`, and delivered only once the broker confirms
//! it (publisher confirms). The broker may be down when the server starts, restart, or hang:
//! the sink connects on its first delivery, drops its connection after any failure and makes a
//! new one on the next, and bounds every delivery by its timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::tcp::{AsyncTcpStream, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::Deserialize;
use tokio::time::Instant;

use super::broker::{redacted_url, InvalidSinkSetting, DELIVERY_TIMEOUT};
use super::sink::{DeliveryError, EventSink, OutboundEvent};
use crate::BoxFuture;

/// The body's media type: the message is one whole CloudEvent (structured mode).
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// AMQP's "persistent" delivery mode: a durable queue keeps the message across a restart.
const PERSISTENT: u8 = 2;

/// `kind = "amqp"` in `[[events.sinks]]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkSettings {
    /// `amqp://user:password@host:port/vhost` (`%2f` for the default vhost `/`), or `amqps://`.
    pub url: String,
    /// A durable `topic` exchange, declared so if it does not exist yet.
    pub exchange: String,
}

impl std::fmt::Debug for AmqpSinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSinkSettings")
            .field("url", &redacted_url(&self.url))
            .field("exchange", &self.exchange)
            .finish()
    }
}

impl AmqpSinkSettings {
    /// Refuses what could never be delivered to; an unreachable broker is no error (the sink
    /// waits for it).
    pub fn validate(&self) -> Result<(), InvalidSinkSetting> {
        self.uri()?;
        let exchange = &self.exchange;
        if exchange.is_empty() || exchange.len() > 255 {
            return Err(InvalidSinkSetting::new(
                "exchange",
                "must be 1 to 255 characters",
            ));
        }
        if !exchange
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(InvalidSinkSetting::new(
                "exchange",
                "may contain only letters, digits, '-', '_', '.' and ':'",
            ));
        }
        if exchange.starts_with("amq.") {
            return Err(InvalidSinkSetting::new(
                "exchange",
                "must not start with \"amq.\" (the broker reserves those names)",
            ));
        }
        Ok(())
    }

    fn uri(&self) -> Result<AMQPUri, InvalidSinkSetting> {
        let invalid = || {
            InvalidSinkSetting::new(
                "url",
                format!(
                    "is not an amqp:// or amqps:// URL: {}",
                    redacted_url(&self.url)
                ),
            )
        };
        let parsed = url::Url::parse(&self.url).map_err(|_| invalid())?;
        if !matches!(parsed.scheme(), "amqp" | "amqps") || parsed.host_str().is_none() {
            return Err(invalid());
        }
        self.url.parse::<AMQPUri>().map_err(|_| invalid())
    }
}

pub struct AmqpSink {
    name: String,
    settings: AmqpSinkSettings,
    timeout: Duration,
    /// The connection deliveries share (they pipeline on its one channel); `None` until the
    /// first delivery and after a failure. A std mutex: it is held only to clone or swap.
    session: Mutex<Option<Arc<Session>>>,
    /// One connection attempt at a time: deliveries arriving meanwhile wait for it.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One connection with its channel in confirm mode, the exchange declared on it.
struct Session {
    // Kept for its lifetime: dropping the last handle closes the connection.
    _connection: Connection,
    channel: Channel,
    socket: SocketCutter,
}

/// A second handle on a connection's socket, to cut it. lapin's IO thread lets go of a
/// connection only when its socket closes, and a broker that stopped answering never closes it:
/// without this, every attempt on a hung broker would leave a thread behind.
#[derive(Clone, Default)]
struct SocketCutter(Arc<Mutex<Option<std::net::TcpStream>>>);

impl SocketCutter {
    fn hold(&self, socket: &tokio::net::TcpStream) {
        use std::os::fd::AsFd;
        if let Ok(duplicate) = socket.as_fd().try_clone_to_owned() {
            *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::net::TcpStream::from(duplicate));
        }
    }

    /// Shuts the socket down for every handle on it; the IO thread sees it closed and ends.
    fn cut(&self) {
        let held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(socket) = held {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Cuts the socket when dropped, unless disarmed.
struct CutOnDrop(Option<SocketCutter>);

impl CutOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CutOnDrop {
    fn drop(&mut self) {
        if let Some(socket) = self.0.take() {
            socket.cut();
        }
    }
}

impl AmqpSink {
    /// Does no IO: the broker is first contacted by the first delivery.
    pub fn new(
        name: impl Into<String>,
        settings: AmqpSinkSettings,
    ) -> Result<Self, InvalidSinkSetting> {
        settings.validate()?;
        Ok(Self {
            name: name.into(),
            settings,
            timeout: DELIVERY_TIMEOUT,
            session: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Bounds each delivery (connecting, declaring, publishing, the confirm) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn settings(&self) -> &AmqpSinkSettings {
        &self.settings
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The shared session, connecting if there is none.
    async fn session(&self) -> Result<Arc<Session>, DeliveryError> {
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(session) = self.current() {
            return Ok(session); // made by the delivery this one waited for
        }
        let session = Arc::new(self.connect().await?);
        *self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&session));
        tracing::info!(sink = %self.name, url = %redacted_url(&self.settings.url), "AMQP sink connected");
        Ok(session)
    }

    /// Forgets `failed` (if it is still the current session), so that the next delivery
    /// connects anew, and cuts its socket: a broker that failed once is not waited for again
    /// (deliveries still in flight on it end as `Retry`).
    fn discard(&self, failed: &Arc<Session>) {
        failed.socket.cut();
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if session
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, failed))
        {
            *session = None;
        }
    }

    async fn connect(&self) -> Result<Session, DeliveryError> {
        let uri = self
            .settings
            .uri()
            .map_err(|invalid| DeliveryError::Retry(invalid.to_string()))?;
        if uri.scheme == AMQPScheme::AMQPS {
            crate::tls::install_default_provider();
        }
        let runtime = lapin::runtime::default_runtime().map_err(failed("no runtime"))?;
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("flashsale sink {}", self.name).into());
        let connect_timeout = self.timeout;
        let socket = SocketCutter::default();
        // Until the session is made, any way out of here (an error, or the delivery's timeout
        // dropping this future) cuts the socket, so that lapin's IO thread ends with it.
        let unfinished = CutOnDrop(Some(socket.clone()));
        let connecting_socket = socket.clone();
        // lapin's own connect has no timeout (a broker that drops SYNs would hold its IO thread
        // for minutes) and keeps no handle on the socket; this one has both.
        let connection = Connection::connector(
            uri,
            runtime,
            async move |uri: AMQPUri, runtime| {
                let connecting = async {
                    let host = uri.authority.host.clone();
                    let addresses: Vec<std::net::SocketAddr> =
                        tokio::net::lookup_host((host.as_str(), uri.authority.port))
                            .await?
                            .collect();
                    let stream = AsyncTcpStream::connect(&runtime, addresses).await?;
                    if let AsyncTcpStream::Plain(plain) = &stream {
                        connecting_socket.hold(plain.get_ref());
                    }
                    if uri.scheme == AMQPScheme::AMQPS {
                        stream
                            .into_tls(&host, OwnedTLSConfig::default().as_ref())
                            .await
                    } else {
                        Ok(stream)
                    }
                };
                match tokio::time::timeout(connect_timeout, connecting).await {
                    Ok(Ok(stream)) => Ok(stream),
                    Ok(Err(error)) => Err(error.into()),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connecting timed out",
                    )
                    .into()),
                }
            },
            properties,
        )
        .await
        .map_err(failed("cannot connect"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(failed("cannot open a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed("cannot turn publisher confirms on"))?;
        channel
            .exchange_declare(
                self.settings.exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(failed(
                "cannot declare the exchange (does it exist with another type or durability?)",
            ))?;
        unfinished.disarm();
        Ok(Session {
            _connection: connection,
            channel,
            socket,
        })
    }

    async fn publish(&self, session: &Session, event: &OutboundEvent) -> Result<(), Failure> {
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(event.id.as_str().into())
            .with_type(event.event_type.as_str().into())
            .with_timestamp(u64::try_from(event.time_secs).unwrap_or(0))
            .with_app_id("flashsale".into());
        let confirm = session
            .channel
            .basic_publish(
                self.settings.exchange.as_str().into(),
                routing_key(event).as_str().into(),
                BasicPublishOptions {
                    mandatory: false,
                    immediate: false,
                },
                &event.json,
                properties,
            )
            .await
            .map_err(|error| Failure::Broken(failed("cannot publish")(error)))?;
        match confirm
            .await
            .map_err(|error| Failure::Broken(failed("no publisher confirm")(error)))?
        {
            Confirmation::Ack(_) => Ok(()),
            Confirmation::Nack(_) => Err(Failure::Refused(DeliveryError::Retry(
                "the broker refused the message (nack)".into(),
            ))),
            Confirmation::NotRequested => Err(Failure::Broken(DeliveryError::Retry(
                "the channel is not in confirm mode".into(),
            ))),
        }
    }
}

/// Why a publish failed: a broken session is replaced, a refusal leaves it in place.
enum Failure {
    Broken(DeliveryError),
    Refused(DeliveryError),
}

/// `<type>.<sale id>`, e.g. `flashsale.order.paid.<sale id>`: bind `flashsale.order.#` for every
/// order change, `#.<sale id>` for one sale.
pub fn routing_key(event: &OutboundEvent) -> String {
    format!("{}.{}", event.event_type, event.sale_id)
}

fn failed(what: &'static str) -> impl Fn(lapin::Error) -> DeliveryError {
    move |error| DeliveryError::Retry(format!("AMQP: {what}: {error}"))
}

impl EventSink for AmqpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, event: &'a OutboundEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let timed_out = || {
                DeliveryError::Retry(format!(
                    "AMQP: no publisher confirm within {:?}",
                    self.timeout
                ))
            };
            let session = tokio::time::timeout_at(deadline, self.session())
                .await
                .map_err(|_| timed_out())??;
            match tokio::time::timeout_at(deadline, self.publish(&session, event)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(Failure::Refused(error))) => Err(error),
                Ok(Err(Failure::Broken(error))) => {
                    self.discard(&session);
                    Err(error)
                }
                Err(_) => {
                    // A broker that stopped answering: the next delivery tries a new connection.
                    self.discard(&session);
                    Err(timed_out())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, exchange: &str) -> AmqpSinkSettings {
        AmqpSinkSettings {
            url: url.into(),
            exchange: exchange.into(),
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_field() {
        let valid = settings("amqp://guest:guest@127.0.0.1:5672/%2f", "shop.events");
        assert_eq!(valid.validate(), Ok(()));
        assert_eq!(
            settings("amqps://rabbit.example/prod", "x").validate(),
            Ok(())
        );
        for (url, exchange, field) in [
            ("http://127.0.0.1:5672", "x", "url"),
            ("amqp://", "x", "url"),
            ("not a url", "x", "url"),
            ("amqp://127.0.0.1", "", "exchange"),
            ("amqp://127.0.0.1", "amq.topic", "exchange"),
            ("amqp://127.0.0.1", "has space", "exchange"),
        ] {
            let refused = settings(url, exchange).validate().unwrap_err();
            assert_eq!(refused.field, field, "{url} {exchange}: {refused}");
        }
        let long = "e".repeat(256);
        assert_eq!(
            settings("amqp://h", &long).validate().unwrap_err().field,
            "exchange"
        );
    }

    #[test]
    fn settings_are_read_strictly_and_printed_without_the_password() {
        let read: AmqpSinkSettings = serde_json::from_str(
            r#"{"url": "amqp://shop:s3cret@h:5672/%2f", "exchange": "events"}"#,
        )
        .unwrap();
        let printed = format!("{read:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("events"), "{printed}");
        let sink = AmqpSink::new("rabbit", read).unwrap();
        assert!(!format!("{sink:?}").contains("s3cret"));
        let typo = serde_json::from_str::<AmqpSinkSettings>(
            r#"{"url": "amqp://h", "exchange": "e", "exchnage": "f"}"#,
        );
        assert!(typo.is_err());
    }

    #[test]
    fn the_routing_key_is_the_type_then_the_sale() {
        let event = OutboundEvent {
            id: "e1".into(),
            event_type: "flashsale.order.paid".into(),
            sale_id: "s1".into(),
            sequence: 1,
            time_secs: 0,
            json: b"{}".to_vec(),
        };
        assert_eq!(routing_key(&event), "flashsale.order.paid.s1");
    }
}
