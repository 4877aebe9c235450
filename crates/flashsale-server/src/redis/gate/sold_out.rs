//! The local sold-out fast path. Once Redis says a sale has nothing left, this node answers
//! further purchases of it from memory, without a Redis call. It can only ever refuse, so it
//! cannot oversell; the cost is that a returned unit may be offered late. Redis announces
//! returned stock on a pub/sub channel, which clears the mark at once; a mark also lapses after
//! `recheck` (the bound, should an announcement be lost), and every mark is dropped whenever
//! the subscription (re)connects.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::domain::SaleId;

pub struct SoldOutCache {
    recheck: Duration,
    marks: RwLock<HashMap<SaleId, Instant>>,
}

impl SoldOutCache {
    pub fn new(recheck: Duration) -> Self {
        Self {
            recheck,
            marks: RwLock::new(HashMap::new()),
        }
    }

    pub fn is_sold_out(&self, sale_id: &SaleId) -> bool {
        self.is_sold_out_at(sale_id, Instant::now())
    }

    pub fn mark(&self, sale_id: &SaleId) {
        self.mark_at(sale_id, Instant::now());
    }

    /// Whether a mark made before `now` still holds (`now` given, so tests need not sleep).
    fn is_sold_out_at(&self, sale_id: &SaleId, now: Instant) -> bool {
        if self.recheck.is_zero() {
            return false;
        }
        self.marks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(sale_id)
            .is_some_and(|since| now.saturating_duration_since(*since) < self.recheck)
    }

    fn mark_at(&self, sale_id: &SaleId, now: Instant) {
        if self.recheck.is_zero() {
            return;
        }
        self.marks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(sale_id.clone(), now);
    }

    pub fn clear(&self, sale_id: &str) {
        let mut marks = self
            .marks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sale_id) = SaleId::parse(sale_id) {
            marks.remove(&sale_id);
        }
    }

    pub fn clear_all(&self) {
        self.marks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_holds_until_cleared_or_lapsed() {
        let cache = SoldOutCache::new(Duration::from_millis(50));
        let sale = SaleId::generate();
        assert!(!cache.is_sold_out(&sale));
        cache.mark(&sale);
        assert!(cache.is_sold_out(&sale));
        cache.clear(sale.as_str());
        assert!(!cache.is_sold_out(&sale));
        let marked = Instant::now();
        cache.mark_at(&sale, marked);
        let just_before = marked + Duration::from_millis(49);
        assert!(cache.is_sold_out_at(&sale, just_before));
        let at_bound = marked + Duration::from_millis(50);
        assert!(
            !cache.is_sold_out_at(&sale, at_bound),
            "lapses at the recheck bound"
        );
        let off = SoldOutCache::new(Duration::ZERO);
        off.mark(&sale);
        assert!(
            !off.is_sold_out(&sale),
            "a zero bound turns the fast path off"
        );
    }
}
