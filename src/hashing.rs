//! Hash maps keyed by ids on the purchase path. The standard library's SipHash cost about 2 % of
//! a durable order's CPU (a purchase hashes its sale and buyer ids a handful of times: the
//! catalog, the gate's shard and holders, the store's buyers); foldhash is several times faster.
//! Each map gets its own random seed, so colliding ids cannot be computed in advance (and the ids
//! are the server's own or come from signed tokens, not free text).

use std::collections::HashMap;

pub use foldhash::fast::RandomState;

pub type FastMap<K, V> = HashMap<K, V, RandomState>;
