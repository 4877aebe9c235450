//! Order and sale events going out. The stores record each change's events with the change
//! (the outbox, `store`); this module renders them as CloudEvents (`cloudevent.rs`), reads the
//! sinks' settings (`settings.rs`), builds the sinks (`sinks_from_settings`: the webhook sink,
//! `webhook.rs`; RabbitMQ, `amqp.rs`; NATS JetStream, `nats.rs`; what the two brokers share,
//! `broker.rs`), renders each event once for all sinks (`rendered.rs`), delivers each sink's
//! events in per-sale order in tasks of its own, yielding to buyers (`delivery.rs`, `pace.rs`;
//! keeping its place in a `ledger`), reports what the sinks do (`status.rs`) and bounds the
//! outbox by age (`retention.rs`).

pub mod amqp;
pub mod broker;
pub mod cloudevent;
pub mod delivery;
pub mod ledger;
pub mod nats;
pub mod pace;
pub mod rendered;
pub mod retention;
pub mod settings;
pub mod sink;
pub mod status;
pub mod webhook;

use std::sync::Arc;

pub use self::amqp::{AmqpSink, AmqpSinkSettings};
pub use self::broker::InvalidSinkSetting;
pub use self::cloudevent::{data_json, envelope_json, event_id, outbound, recorded, source};
pub use self::ledger::{DeadLetter, DeliveryLedger, FileLedger, LedgerError};
pub use self::nats::{NatsSink, NatsSinkSettings};
pub use self::settings::{SinkConfig, SinkKind};
pub use self::sink::{DeliveryError, EventSink, OutboundEvent};
pub use self::status::SinkStatus;

/// Why a configured sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error("events sink {name:?}: {source}")]
    Broker {
        name: String,
        source: InvalidSinkSetting,
    },
}

/// Builds every configured sink (settings already checked; a broker sink checks its own URL and
/// names here, so a bad one stops the server at start). Nothing connects yet: a broker that is
/// down is a sink that waits.
pub fn sinks_from_settings(
    configs: &[SinkConfig],
) -> Result<Vec<Arc<dyn EventSink>>, SinkBuildError> {
    configs
        .iter()
        .map(|config| match &config.kind {
            SinkKind::Webhook { .. } => {
                Ok(Arc::new(webhook::WebhookSink::new(config)?) as Arc<dyn EventSink>)
            }
            SinkKind::Amqp { url, exchange } => AmqpSink::new(
                config.name.clone(),
                AmqpSinkSettings {
                    url: url.clone(),
                    exchange: exchange.clone(),
                },
            )
            .map(|sink| Arc::new(sink) as Arc<dyn EventSink>)
            .map_err(|source| SinkBuildError::Broker {
                name: config.name.clone(),
                source,
            }),
            SinkKind::Nats {
                url,
                subject_prefix,
            } => NatsSink::new(
                config.name.clone(),
                NatsSinkSettings {
                    url: url.clone(),
                    subject_prefix: subject_prefix.clone(),
                },
            )
            .map(|sink| Arc::new(sink) as Arc<dyn EventSink>)
            .map_err(|source| SinkBuildError::Broker {
                name: config.name.clone(),
                source,
            }),
        })
        .collect()
}
