//! Order and sale events going out: the seam every sink implements (`sink.rs`). The outbox the
//! events are recorded in, the pull feed and the delivery loop land here too (issue #26).

pub mod sink;

pub use self::sink::{DeliveryError, EventSink, OutboundEvent};
