//! The journal store's outbox in memory: per sale, its events in sequence order, each kept as
//! facts (kind, time) and what it is about (an order's id, or the sale as it was). An order
//! event's data is told from the order's state now (`domain::order_as_of`), so an event costs
//! about 40 bytes here and none of the order is copied. Rebuilt from the journal at start.

use std::collections::VecDeque;
use std::sync::Arc;

use jiff::Timestamp;

use super::codec::EventFacts;
use crate::domain::{EventKind, OrderId, Sale, SaleId};
use crate::hashing::FastMap;

/// What an event is about.
#[derive(Clone, Debug)]
pub enum About {
    Order(OrderId),
    /// The sale as it was right after the change, with its remaining stock.
    Sale(Arc<Sale>),
}

#[derive(Clone, Debug)]
pub struct Kept {
    pub kind: EventKind,
    pub at: Timestamp,
    pub remaining: u64,
    pub about: About,
}

impl Kept {
    pub fn facts(&self, sequence: u64) -> EventFacts {
        EventFacts {
            sequence,
            kind: self.kind,
            at: self.at,
            remaining: self.remaining,
        }
    }
}

#[derive(Default)]
struct SaleEvents {
    /// The sequence of the sale's last event (0: none yet). Never goes back, also when events
    /// are pruned, so a sequence names one event for good.
    last: u64,
    /// The retained events, oldest first: sequences `last - len + 1 ..= last`.
    kept: VecDeque<Kept>,
}

#[derive(Default)]
pub struct EventIndex {
    sales: FastMap<SaleId, SaleEvents>,
}

impl EventIndex {
    /// Records a new event of the sale and returns its facts (its sequence: the next one).
    pub fn record(&mut self, sale_id: &SaleId, kept: Kept) -> EventFacts {
        let events = self.sales.entry(sale_id.clone()).or_default();
        events.last += 1;
        let facts = kept.facts(events.last);
        events.kept.push_back(kept);
        facts
    }

    /// Puts back an event read from the journal. Records come in sequence order per sale; one
    /// that skips ahead (compaction pruned the ones before it) starts the retained run anew.
    pub fn restore(&mut self, sale_id: &SaleId, facts: &EventFacts, about: About) {
        let events = self.sales.entry(sale_id.clone()).or_default();
        if facts.sequence <= events.last {
            return;
        }
        if facts.sequence != events.last + 1 {
            events.kept.clear();
        }
        events.last = facts.sequence;
        events.kept.push_back(Kept {
            kind: facts.kind,
            at: facts.at,
            remaining: facts.remaining,
            about,
        });
    }

    /// Sets a sale's counter (compaction's record, read before its retained events).
    pub fn restore_counter(&mut self, sale_id: &SaleId, last: u64) {
        let events = self.sales.entry(sale_id.clone()).or_default();
        if last > events.last {
            events.last = last;
            events.kept.clear();
        }
    }

    /// Up to `limit` retained events of the sale after sequence `after`, with their sequences.
    pub fn after(&self, sale_id: &SaleId, after: u64, limit: usize) -> Vec<(u64, Kept)> {
        let Some(events) = self.sales.get(sale_id) else {
            return Vec::new();
        };
        let first = events.last + 1 - events.kept.len() as u64;
        let skip = usize::try_from(after.saturating_sub(first - 1)).unwrap_or(usize::MAX);
        events
            .kept
            .iter()
            .skip(skip)
            .take(limit)
            .enumerate()
            .map(|(at, kept)| (first + (skip + at) as u64, kept.clone()))
            .collect()
    }

    /// Each sale's last sequence.
    pub fn heads(&self) -> Vec<(SaleId, u64)> {
        self.sales
            .iter()
            .filter(|(_, events)| events.last > 0)
            .map(|(sale_id, events)| (sale_id.clone(), events.last))
            .collect()
    }

    /// Drops the events that took effect before `before`; returns how many.
    pub fn has_before(&self, before: Timestamp) -> bool {
        self.sales
            .values()
            .any(|events| events.kept.front().is_some_and(|kept| kept.at < before))
    }

    pub fn prune(&mut self, before: Timestamp) -> u64 {
        let mut pruned = 0;
        for events in self.sales.values_mut() {
            while events.kept.front().is_some_and(|kept| kept.at < before) {
                events.kept.pop_front();
                pruned += 1;
            }
        }
        pruned
    }

    pub fn len(&self) -> usize {
        self.sales.values().map(|events| events.kept.len()).sum()
    }

    /// Every sale's counter and retained events, in sequence order (compaction).
    pub fn each(
        &self,
        mut visit: impl FnMut(&SaleId, u64, &mut dyn Iterator<Item = (u64, &Kept)>),
    ) {
        for (sale_id, events) in &self.sales {
            let first = events.last + 1 - events.kept.len() as u64;
            let mut kept = events
                .kept
                .iter()
                .enumerate()
                .map(move |(at, kept)| (first + at as u64, kept));
            visit(sale_id, events.last, &mut kept);
        }
    }
}
