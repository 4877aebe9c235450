//! The NATS sink's side of the tests: a reader of the stream that covers the test's own subject
//! prefix (message by message, by stream sequence), and the sink held to the conformance suite
//! through a proxy in front of the machine's NATS server.

use std::time::Duration;

use async_nats::jetstream;
use flashsale_server::events::{EventSink, NatsSink, NatsSinkSettings, OutboundEvent};
use flashsale_server::BoxFuture;

use super::proxy::{Proxy, Reach};
use super::{address, with_address, SINK_TIMEOUT};
use crate::conformance::sink::{Received, SinkBackend};
use crate::services::{blocking_cleanup, nats_url, unique_name};

/// Reads what JetStream holds under a subject prefix of the test's own.
pub struct NatsReader {
    pub url: String,
    pub settings: NatsSinkSettings,
    jetstream: jetstream::Context,
    got: tokio::sync::Mutex<Vec<Received>>,
    /// Streams the test made itself, deleted with the reader.
    own_streams: std::sync::Mutex<Vec<String>>,
}

impl NatsReader {
    pub async fn new(url: &str) -> Self {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .expect("the test's reader connects to NATS");
        Self {
            url: url.to_owned(),
            settings: NatsSinkSettings {
                url: url.to_owned(),
                subject_prefix: unique_name("events"),
            },
            jetstream: jetstream::new(client),
            got: tokio::sync::Mutex::new(Vec::new()),
            own_streams: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A stream as an operator would set one up, over `subjects`.
    pub async fn create_stream_of_its_own(&self, name: &str, subjects: &str) {
        self.own_streams.lock().unwrap().push(name.to_owned());
        self.jetstream
            .create_stream(jetstream::stream::Config {
                name: name.to_owned(),
                subjects: vec![subjects.to_owned()],
                storage: jetstream::stream::StorageType::File,
                ..jetstream::stream::Config::default()
            })
            .await
            .expect("the operator's stream");
    }

    /// Everything the stream holds under the prefix, in stream order (nothing before the sink's
    /// first delivery made the stream).
    pub async fn received(&self) -> Vec<Received> {
        let mut got = self.got.lock().await;
        let subjects = format!("{}.>", self.settings.subject_prefix);
        let Ok(name) = self.jetstream.stream_by_subject(subjects.as_str()).await else {
            return got.clone();
        };
        let mut stream = self.jetstream.get_stream(&name).await.expect("stream");
        let last = stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        let first_unread = got.len() as u64 + 1;
        for sequence in first_unread..=last {
            let message = stream
                .get_raw_message(sequence)
                .await
                .expect("stored message");
            assert_eq!(
                message
                    .headers
                    .get("Content-Type")
                    .map(|value| value.as_str()),
                Some("application/cloudevents+json")
            );
            got.push(Received {
                id: message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default(),
                address: message.subject.to_string(),
                body: message.payload.to_vec(),
            });
        }
        got.clone()
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }
}

impl Drop for NatsReader {
    fn drop(&mut self) {
        // The stream the sink made for this prefix, and those the test made; never another's.
        let mut streams = std::mem::take(&mut *self.own_streams.lock().unwrap());
        streams.push(self.settings.stream_name());
        let url = self.url.clone();
        blocking_cleanup(async move {
            if let Ok(client) = async_nats::connect(url).await {
                let jetstream = jetstream::new(client);
                for stream in streams {
                    let _ = jetstream.delete_stream(&stream).await;
                }
            }
        });
    }
}

/// The sink against the machine's NATS, reached through a proxy the case controls.
pub struct SharedNats {
    sink: NatsSink,
    proxy: Proxy,
    reader: NatsReader,
}

impl SharedNats {
    pub async fn new() -> Option<Self> {
        let url = nats_url()?;
        let reader = NatsReader::new(&url).await;
        let proxy = Proxy::start(address(&url)).await;
        let sink = NatsSink::new(
            "nats-conformance",
            NatsSinkSettings {
                url: with_address(&url, proxy.addr),
                subject_prefix: reader.settings.subject_prefix.clone(),
            },
        )
        .expect("valid settings")
        .with_timeout(SINK_TIMEOUT);
        Some(Self {
            sink,
            proxy,
            reader,
        })
    }
}

impl SinkBackend for SharedNats {
    fn sink(&self) -> &dyn EventSink {
        &self.sink
    }
    fn timeout(&self) -> Duration {
        SINK_TIMEOUT
    }
    fn received(&self) -> BoxFuture<'_, Vec<Received>> {
        Box::pin(self.reader.received())
    }
    fn address_of(&self, event: &OutboundEvent) -> String {
        self.reader.settings.subject(event)
    }
    fn drops_redeliveries(&self) -> bool {
        true
    }
    fn refuse(&self) {
        self.proxy.set(Reach::Refusing);
    }
    fn hang(&self) {
        self.proxy.set(Reach::Hanging);
    }
    fn restore(&self) {
        self.proxy.set(Reach::Up);
    }
}
