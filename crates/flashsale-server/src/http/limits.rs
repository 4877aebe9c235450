//! The per-buyer request rate (requests in flight and time per request are bounded in `edge.rs`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots of the per-buyer rate table. Fixed, so memory does not grow with the crowd.
const BUYER_SLOTS: usize = 1 << 16;

/// Counts each buyer's requests in the current second. Buyers are hashed into a fixed table of
/// slots, each packing (second, count) into one atomic: no lock, no allocation, and bounded
/// memory. Two buyers sharing a slot share a budget, which can only make the limit stricter for
/// them; with 65,536 slots that needs an unlucky crowd of very active buyers.
pub struct BuyerLimiter {
    requests_per_sec: u32,
    slots: Box<[AtomicU64]>,
}

impl BuyerLimiter {
    /// `requests_per_sec` of 0 turns the limit off.
    pub fn new(requests_per_sec: u32) -> Self {
        let slots = if requests_per_sec == 0 {
            0
        } else {
            BUYER_SLOTS
        };
        Self {
            requests_per_sec,
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn allow(&self, buyer: &str, now_secs: i64) -> bool {
        if self.requests_per_sec == 0 {
            return true;
        }
        let mut hasher = DefaultHasher::new();
        buyer.hash(&mut hasher);
        let slot = &self.slots[(hasher.finish() % BUYER_SLOTS as u64) as usize];
        let second = (now_secs as u64) & 0xffff_ffff;
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
            let (slot_second, count) = (packed >> 32, packed & 0xffff_ffff);
            if slot_second != second {
                Some((second << 32) | 1)
            } else if count < u64::from(self.requests_per_sec) {
                Some(packed + 1)
            } else {
                None
            }
        })
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buyer_gets_the_limit_per_second() {
        let limiter = BuyerLimiter::new(3);
        let allowed = (0..10).filter(|_| limiter.allow("alice", 100)).count();
        assert_eq!(allowed, 3);
        assert!(limiter.allow("alice", 101), "a new second starts afresh");
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = BuyerLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.allow("alice", 100)));
    }
}
