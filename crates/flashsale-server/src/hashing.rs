//! Hash maps keyed by ids on the purchase path. The standard library's SipHash cost about 2 % of
//! a durable order's CPU (a purchase hashes its sale and buyer ids a handful of times: the
//! catalog, the gate's shard and holders, the store's buyers); foldhash is several times faster.
//! Each map gets its own random seed, so colliding ids cannot be computed in advance (and the ids
//! are the server's own or come from signed tokens, not free text).

use std::collections::HashMap;

pub use foldhash::fast::RandomState;

pub type FastMap<K, V> = HashMap<K, V, RandomState>;

/// The most entries a map growing with one sale's buyers is sized for when the sale opens.
const PRESIZED_ENTRIES_MAX: u64 = 1 << 20;
/// Below this stock nothing is set aside: such maps grow as buyers come, each step copying at
/// most a few hundred KB, and a shop with thousands of small sales keeps no room for buyers who
/// never came (a 100-unit sale used to cost ~29 KiB at creation).
pub const PRESIZED_FROM_STOCK: u64 = 4096;

/// How many entries to set aside for maps that grow with a sale's buyers: none for a small sale,
/// else one per unit of stock (a buyer holding stock holds at least one unit), up to a bound, so
/// a huge stock does not reserve memory it may never use. Growing a map rehashes it whole into fresh memory while a
/// purchase waits (at a million buyers, one step copies tens of MB), so these maps are sized when
/// the sale opens, before the crowd arrives.
pub fn entries_for_stock(stock: u64) -> usize {
    if stock < PRESIZED_FROM_STOCK {
        return 0;
    }
    usize::try_from(stock.min(PRESIZED_ENTRIES_MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizing_follows_the_stock_of_big_sales_up_to_a_bound() {
        assert_eq!(entries_for_stock(0), 0);
        assert_eq!(entries_for_stock(100), 0);
        assert_eq!(entries_for_stock(PRESIZED_FROM_STOCK - 1), 0);
        assert_eq!(entries_for_stock(PRESIZED_FROM_STOCK), 4096);
        assert_eq!(entries_for_stock(1 << 20), 1 << 20);
        assert_eq!(entries_for_stock(1_000_000_000), 1 << 20);
    }
}
