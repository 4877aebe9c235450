//! Order and sale events going out. The stores record each change's events with the change
//! (the outbox, `store`); this module renders them as CloudEvents (`cloudevent.rs`) and hands
//! them to the sinks (the seam every sink implements: `sink.rs`).

pub mod cloudevent;
pub mod settings;
pub mod sink;

pub use self::cloudevent::{data_json, envelope_json, event_id, outbound, recorded, source};
pub use self::sink::{DeliveryError, EventSink, OutboundEvent};
