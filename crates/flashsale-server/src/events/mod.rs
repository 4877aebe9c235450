//! Order and sale events going out: the seam every sink implements (`sink.rs`), and the sinks
//! on message brokers (`amqp.rs`: RabbitMQ; `nats.rs`: NATS JetStream; `broker.rs`: what they
//! share). The outbox the events are recorded in, the pull feed and the delivery loop land here
//! too (issue #26).

pub mod amqp;
pub mod broker;
pub mod nats;
pub mod sink;

pub use self::amqp::{AmqpSink, AmqpSinkSettings};
pub use self::broker::InvalidSinkSetting;
pub use self::nats::{NatsSink, NatsSinkSettings};
pub use self::sink::{DeliveryError, EventSink, OutboundEvent};
