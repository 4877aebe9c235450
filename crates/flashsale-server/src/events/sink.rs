//! The seam between the outbox and the world: a sink takes one event at a time and says whether
//! the receiver has it. Sinks know nothing of stores or sales; the delivery loop decides what to
//! send next (a sale's events in `sequence` order, the next only after the previous is
//! delivered), retries with back-off, and dead-letters. Every implementation is held to one
//! conformance suite.

use crate::BoxFuture;

/// One event as it goes out: a whole CloudEvent 1.0, already serialized, with the fields a sink
/// needs for its own headers and routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundEvent {
    /// The CloudEvent `id`: unique, the same on every redelivery (receivers dedupe by it).
    pub id: String,
    /// The CloudEvent `type`, e.g. `flashsale.order.paid`.
    pub event_type: String,
    pub sale_id: String,
    /// Per sale: 1, 2, 3 … with no gap.
    pub sequence: u64,
    /// When the change took effect, in seconds since the Unix epoch (webhook timestamps).
    pub time_secs: i64,
    /// The CloudEvent as JSON (`application/cloudevents+json` / the body of a webhook).
    pub json: Vec<u8>,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again later: the receiver is down, slow, refused with a status that may
    /// change, or the connection broke before it confirmed.
    #[error("delivery failed, to be retried: {0}")]
    Retry(String),
}

pub trait EventSink: Send + Sync + 'static {
    /// The sink's configured `name` (metrics and the console show it).
    fn name(&self) -> &str;

    /// Delivers one event; resolves `Ok` only once the receiver confirmed it (a webhook's `2xx`,
    /// a broker's publisher confirm, a JetStream acknowledgement). Must not block the runtime and
    /// must bound its own time (a hung receiver is a `Retry`, never a hang).
    fn deliver<'a>(&'a self, event: &'a OutboundEvent) -> BoxFuture<'a, Result<(), DeliveryError>>;
}
