//! Everything flashsale keeps in Redis, in one place: the key layout (`keys.rs`), and the Redis
//! implementations of the stock gate (`gate/`), the waiting line (`line/`), the order queue
//! (`queue/`: the stream of acknowledged orders PostgreSQL has not written yet, and its record)
//! and the cluster's clock (`clock.rs`). Scripts live beside the code that calls them. No module
//! outside this one names a Redis key.

mod clock;
mod connection;
mod gate;
mod keys;
mod line;
mod queue;

pub use self::clock::RedisClock;
pub use self::connection::{Redis, RedisDurability, RedisOptions};
pub use self::gate::{RedisGate, RedisGateOptions};
pub use self::keys::{RedisKeys, PERSISTERS};
pub use self::line::RedisLine;
pub use self::queue::{record, Entry, OrderQueue, QueueError, ReadFrom};
