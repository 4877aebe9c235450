//! The NATS JetStream sink (`async-nats`): each event is published to
//! `<subject_prefix>.<type>.<sale id>` with `Nats-Msg-Id` = its id, and delivered only once the
//! stream acknowledges it (so a redelivery inside the stream's duplicate window is dropped by
//! JetStream itself). The client connects on the first delivery and reconnects on its own; the
//! first delivery also makes sure a stream covers `<subject_prefix>.>`, creating one (file
//! storage, a duplicate window) if none does. Every delivery is bounded by the sink's timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use async_nats::{ConnectOptions, ServerAddr};
use serde::Deserialize;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::broker::{redacted_url, InvalidSinkSetting, DELIVERY_TIMEOUT};
use super::sink::{DeliveryError, EventSink, OutboundEvent};
use crate::BoxFuture;

/// How long the stream this sink creates remembers message ids: a redelivery within it is
/// dropped by JetStream (consumers still dedupe by the event id past it).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How often the client pings the server (a silent connection is dropped after two misses).
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// A `Content-Type` header, as the CloudEvents NATS binding (structured mode) has it.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// `kind = "nats"` in `[[events.sinks]]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkSettings {
    /// `nats://[user:password@]host:port`, or `tls://`; several servers of one cluster are
    /// separated by commas.
    pub url: String,
    /// Events go to `<subject_prefix>.<type>.<sale id>`, e.g. `shop.flashsale.order.paid.<id>`.
    pub subject_prefix: String,
}

impl std::fmt::Debug for NatsSinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSinkSettings")
            .field("url", &redacted_url(&self.url))
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}

impl NatsSinkSettings {
    /// Refuses what could never be delivered to; an unreachable server is no error (the sink
    /// waits for it).
    pub fn validate(&self) -> Result<(), InvalidSinkSetting> {
        self.servers()?;
        let prefix = &self.subject_prefix;
        if prefix.is_empty() || prefix.len() > 200 {
            return Err(InvalidSinkSetting::new(
                "subject_prefix",
                "must be 1 to 200 characters",
            ));
        }
        // Narrower than NATS allows, so that the stream name made from it is valid too.
        let valid_token = |token: &str| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !prefix.split('.').all(valid_token) {
            return Err(InvalidSinkSetting::new(
                "subject_prefix",
                "must be dot-separated tokens of letters, digits, '-' and '_'",
            ));
        }
        Ok(())
    }

    fn servers(&self) -> Result<Vec<ServerAddr>, InvalidSinkSetting> {
        self.url
            .split(',')
            .map(|one| {
                let one = one.trim();
                let invalid = || {
                    InvalidSinkSetting::new(
                        "url",
                        format!("is not a nats:// or tls:// URL: {}", redacted_url(one)),
                    )
                };
                let parsed = url::Url::parse(one).map_err(|_| invalid())?;
                if !matches!(parsed.scheme(), "nats" | "tls") || parsed.host_str().is_none() {
                    return Err(invalid());
                }
                ServerAddr::from_url(parsed).map_err(|_| invalid())
            })
            .collect()
    }

    /// The stream this sink creates when none covers its subjects: the prefix, its dots made
    /// dashes (stream names may not contain dots).
    pub fn stream_name(&self) -> String {
        format!("flashsale-{}", self.subject_prefix.replace('.', "-"))
    }

    pub fn subject(&self, event: &OutboundEvent) -> String {
        format!(
            "{}.{}.{}",
            self.subject_prefix, event.event_type, event.sale_id
        )
    }
}

pub struct NatsSink {
    name: String,
    settings: NatsSinkSettings,
    timeout: Duration,
    /// Made by the first delivery (not by `new`, which does no IO); it reconnects by itself
    /// for as long as it lives, so it is never replaced.
    jetstream: OnceCell<jetstream::Context>,
    /// Set once a stream is known to cover the subjects; cleared when a publish finds none
    /// (someone deleted it), so that the next delivery looks again.
    stream_ready: AtomicBool,
    ensuring_stream: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Does no IO: the server is first contacted by the first delivery.
    pub fn new(
        name: impl Into<String>,
        settings: NatsSinkSettings,
    ) -> Result<Self, InvalidSinkSetting> {
        settings.validate()?;
        Ok(Self {
            name: name.into(),
            settings,
            timeout: DELIVERY_TIMEOUT,
            jetstream: OnceCell::new(),
            stream_ready: AtomicBool::new(false),
            ensuring_stream: tokio::sync::Mutex::new(()),
        })
    }

    /// Bounds each delivery (the stream check, the publish, its acknowledgement) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn settings(&self) -> &NatsSinkSettings {
        &self.settings
    }

    async fn jetstream(&self) -> Result<&jetstream::Context, DeliveryError> {
        self.jetstream
            .get_or_try_init(|| async {
                let servers = self
                    .settings
                    .servers()
                    .map_err(|invalid| DeliveryError::Retry(invalid.to_string()))?;
                if self.settings.url.contains("tls://") {
                    crate::tls::install_default_provider();
                }
                // Returns at once and connects in the background, retrying for ever: a server
                // that is down at start-up is a sink that waits, not an error.
                let sink = self.name.clone();
                let client = ConnectOptions::new()
                    .name(format!("flashsale sink {}", self.name))
                    .retry_on_initial_connect()
                    // A connection that went silent without closing is found within two pings.
                    .ping_interval(PING_INTERVAL)
                    // Why deliveries wait (a refused password, a server gone) is told here: a
                    // delivery only sees its acknowledgement not coming.
                    .event_callback(move |event| {
                        let sink = sink.clone();
                        async move {
                            match event {
                                async_nats::Event::Connected => {
                                    tracing::info!(%sink, "NATS sink connected");
                                }
                                other => tracing::warn!(%sink, event = %other, "NATS sink"),
                            }
                        }
                    })
                    .connection_timeout(self.timeout)
                    .request_timeout(Some(self.timeout))
                    .connect(servers)
                    .await
                    .map_err(|error| DeliveryError::Retry(format!("NATS: {error}")))?;
                let mut context = jetstream::new(client);
                context.set_timeout(self.timeout);
                Ok(context)
            })
            .await
    }

    async fn ensure_stream(&self, jetstream: &jetstream::Context) -> Result<(), DeliveryError> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _ensuring = self.ensuring_stream.lock().await;
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let subjects = format!("{}.>", self.settings.subject_prefix);
        match jetstream.stream_by_subject(subjects.as_str()).await {
            Ok(existing) => {
                tracing::info!(sink = %self.name, stream = %existing, "NATS sink publishes to an existing stream");
            }
            Err(error)
                if error.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound =>
            {
                let name = self.settings.stream_name();
                jetstream
                    .get_or_create_stream(stream::Config {
                        name: name.clone(),
                        subjects: vec![subjects],
                        storage: stream::StorageType::File,
                        duplicate_window: DUPLICATE_WINDOW,
                        description: Some("flashsale order and sale events".into()),
                        ..stream::Config::default()
                    })
                    .await
                    .map_err(|error| {
                        DeliveryError::Retry(format!(
                            "NATS: cannot create the stream {name}: {error}"
                        ))
                    })?;
                tracing::info!(sink = %self.name, stream = %name, "NATS sink created its stream");
            }
            Err(error) => {
                return Err(DeliveryError::Retry(format!(
                    "NATS: cannot look up the stream for {subjects}: {error}"
                )))
            }
        }
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn publish(&self, event: &OutboundEvent) -> Result<(), DeliveryError> {
        let jetstream = self.jetstream().await?;
        self.ensure_stream(jetstream).await?;
        let message = PublishMessage::build()
            .payload(event.json.clone().into())
            .header("Content-Type", CONTENT_TYPE)
            .message_id(&event.id);
        let acknowledgement = jetstream
            .send_publish(self.settings.subject(event), message)
            .await
            .map_err(|error| DeliveryError::Retry(format!("NATS: cannot publish: {error}")))?;
        match acknowledgement.await {
            // A duplicate was stored before: the receiver has it.
            Ok(_ack) => Ok(()),
            Err(error) => {
                if error.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                    self.stream_ready.store(false, Ordering::Release);
                }
                Err(DeliveryError::Retry(format!(
                    "NATS: no acknowledgement from the stream: {error}"
                )))
            }
        }
    }
}

impl EventSink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, event: &'a OutboundEvent) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            tokio::time::timeout_at(deadline, self.publish(event))
                .await
                .map_err(|_| {
                    DeliveryError::Retry(format!(
                        "NATS: no acknowledgement within {:?}",
                        self.timeout
                    ))
                })?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, prefix: &str) -> NatsSinkSettings {
        NatsSinkSettings {
            url: url.into(),
            subject_prefix: prefix.into(),
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_field() {
        assert_eq!(settings("nats://127.0.0.1:4222", "shop").validate(), Ok(()));
        assert_eq!(
            settings("nats://a:4222, tls://user:pw@b:4222", "shop.events").validate(),
            Ok(())
        );
        for (url, prefix, field) in [
            ("http://127.0.0.1:4222", "shop", "url"),
            ("ws://127.0.0.1:4222", "shop", "url"),
            ("nats://a:4222,", "shop", "url"),
            ("nats://127.0.0.1", "", "subject_prefix"),
            ("nats://127.0.0.1", "shop.>", "subject_prefix"),
            ("nats://127.0.0.1", "shop..events", "subject_prefix"),
            ("nats://127.0.0.1", "shop events", "subject_prefix"),
            ("nats://127.0.0.1", "$JS.x", "subject_prefix"),
        ] {
            let refused = settings(url, prefix).validate().unwrap_err();
            assert_eq!(refused.field, field, "{url} {prefix}: {refused}");
        }
    }

    #[test]
    fn settings_are_read_strictly_and_printed_without_credentials() {
        let read: NatsSinkSettings = serde_json::from_str(
            r#"{"url": "nats://app:s3cret@h:4222", "subject_prefix": "shop"}"#,
        )
        .unwrap();
        assert!(!format!("{read:?}").contains("s3cret"));
        let sink = NatsSink::new("nats", read).unwrap();
        assert!(!format!("{sink:?}").contains("s3cret"));
        assert!(serde_json::from_str::<NatsSinkSettings>(
            r#"{"url": "nats://h", "subject_prefix": "s", "stream": "x"}"#
        )
        .is_err());
    }

    #[test]
    fn subjects_and_the_stream_name_follow_the_prefix() {
        let settings = settings("nats://h", "shop.events");
        let event = OutboundEvent {
            id: "e1".into(),
            event_type: "flashsale.sale.paused".into(),
            sale_id: "s1".into(),
            sequence: 3,
            time_secs: 0,
            json: b"{}".to_vec(),
        };
        assert_eq!(
            settings.subject(&event),
            "shop.events.flashsale.sale.paused.s1"
        );
        assert_eq!(settings.stream_name(), "flashsale-shop-events");
    }
}
