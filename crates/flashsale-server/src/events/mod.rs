//! Order and sale events going out. The stores record each change's events with the change
//! (the outbox, `store`); this module renders them as CloudEvents (`cloudevent.rs`), reads the
//! sinks' settings (`settings.rs`), builds the sinks (`sinks_from_settings`: the webhook sink,
//! `webhook.rs`; RabbitMQ and NATS join here), delivers each sink's events in per-sale order in
//! tasks of its own (`delivery.rs`, keeping its place in a `ledger`), reports what the sinks do
//! (`status.rs`) and bounds the outbox by age (`retention.rs`).

pub mod cloudevent;
pub mod delivery;
pub mod ledger;
pub mod retention;
pub mod settings;
pub mod sink;
pub mod status;
pub mod webhook;

use std::sync::Arc;

pub use self::cloudevent::{data_json, envelope_json, event_id, outbound, recorded, source};
pub use self::ledger::{DeadLetter, DeliveryLedger, FileLedger, LedgerError};
pub use self::settings::{SinkConfig, SinkKind};
pub use self::sink::{DeliveryError, EventSink, OutboundEvent};
pub use self::status::SinkStatus;

/// Why a configured sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error("events sink {name:?}: kind {kind:?} is not built into this server yet")]
    NotBuilt { name: String, kind: &'static str },
}

/// Builds every configured sink (settings already checked). A kind whose sink this build lacks
/// stops the server at start: a sink that silently dropped its events would be worse.
pub fn sinks_from_settings(
    configs: &[SinkConfig],
) -> Result<Vec<Arc<dyn EventSink>>, SinkBuildError> {
    configs
        .iter()
        .map(|config| match &config.kind {
            SinkKind::Webhook { .. } => {
                Ok(Arc::new(webhook::WebhookSink::new(config)?) as Arc<dyn EventSink>)
            }
            SinkKind::Amqp { .. } | SinkKind::Nats { .. } => Err(SinkBuildError::NotBuilt {
                name: config.name.clone(),
                kind: config.kind.name(),
            }),
        })
        .collect()
}
