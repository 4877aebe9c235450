//! The outbox as the sinks of one node read it: each event read from the store and rendered as a
//! CloudEvent once, however many sinks deliver it. Sinks that keep pace with each other share a
//! short window of each sale's latest rendered events; one that falls behind the window reads
//! and renders for itself, as before. The window is bounded (per sale and in all), so a sink
//! that is down costs no memory here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::cloudevent::outbound;
use super::sink::OutboundEvent;
use crate::domain::SaleId;
use crate::hashing::FastMap;
use crate::store::{EventHead, OrderStore, RecordedEvent, StoreError};
use crate::BoxFuture;

/// What the sinks read of a store: its outbox. Every store is one.
pub trait Outbox: Send + Sync {
    fn read_events<'a>(
        &'a self,
        sale_id: &'a SaleId,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>>;
    fn heads(&self) -> BoxFuture<'_, Result<Vec<EventHead>, StoreError>>;
}

impl<T: OrderStore + ?Sized> Outbox for T {
    fn read_events<'a>(
        &'a self,
        sale_id: &'a SaleId,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>> {
        self.events(sale_id, after, limit)
    }

    fn heads(&self) -> BoxFuture<'_, Result<Vec<EventHead>, StoreError>> {
        self.event_heads()
    }
}

/// Events kept per sale (a few reads of every lane).
const WINDOW_PER_SALE: usize = 1024;
/// Events kept in all; past it, the windows of the other sales are dropped.
const WINDOW_TOTAL: usize = 8192;

/// One event rendered, with when it took effect (the sinks' lag is told from it).
#[derive(Debug)]
pub struct Rendered {
    pub at: jiff::Timestamp,
    pub outbound: OutboundEvent,
}

/// A sale's latest rendered events, in sequence order without a gap (never empty).
struct Window {
    events: VecDeque<Arc<Rendered>>,
}

impl Window {
    fn first(&self) -> u64 {
        self.events
            .front()
            .map_or(0, |event| event.outbound.sequence)
    }

    /// The sequence after the window's last.
    fn end(&self) -> u64 {
        self.events
            .back()
            .map_or(0, |event| event.outbound.sequence + 1)
    }
}

/// Generic over the outbox only for its tests; the server reads its store.
pub struct RenderedEvents<S: Outbox + ?Sized = dyn OrderStore> {
    store: Arc<S>,
    /// The events' `source`.
    source: String,
    windows: Mutex<(FastMap<SaleId, Window>, usize)>,
}

impl<S: Outbox + ?Sized> RenderedEvents<S> {
    pub fn new(store: Arc<S>, source: String) -> Self {
        Self {
            store,
            source,
            windows: Mutex::new((FastMap::default(), 0)),
        }
    }

    /// Each sale's last sequence.
    pub async fn heads(&self) -> Result<Vec<EventHead>, StoreError> {
        self.store.heads().await
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, (FastMap<SaleId, Window>, usize)> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `limit` of the sale's events after sequence `after`, in order (fewer at the end).
    pub async fn after(
        &self,
        sale_id: &SaleId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Rendered>>, StoreError> {
        let wanted = after + 1;
        {
            let (windows, _) = &*self.windows();
            if let Some(window) = windows.get(sale_id) {
                if window.first() <= wanted && wanted < window.end() {
                    let skip = (wanted - window.first()) as usize;
                    return Ok(window
                        .events
                        .iter()
                        .skip(skip)
                        .take(limit)
                        .cloned()
                        .collect());
                }
            }
        }
        let events: Vec<Arc<Rendered>> = self
            .store
            .read_events(sale_id, after, limit)
            .await?
            .iter()
            .map(|event| {
                Arc::new(Rendered {
                    at: event.at,
                    outbound: outbound(&self.source, event),
                })
            })
            .collect();
        self.keep(sale_id, &events);
        Ok(events)
    }

    /// Adds what was just read to the sale's window when it follows on from it (or starts
    /// one); reads behind the window are not kept (a slow sink does not push out the others').
    fn keep(&self, sale_id: &SaleId, events: &[Arc<Rendered>]) {
        let Some(head) = events.first() else {
            return;
        };
        let (windows, total) = &mut *self.windows();
        let follows = windows
            .get(sale_id)
            .is_none_or(|window| window.end() <= head.outbound.sequence);
        if !follows {
            return;
        }
        if *total + events.len() > WINDOW_TOTAL {
            windows.retain(|kept, _| kept == sale_id);
            *total = windows.values().map(|window| window.events.len()).sum();
        }
        let window = windows.entry(sale_id.clone()).or_insert_with(|| Window {
            events: VecDeque::new(),
        });
        if !window.events.is_empty() && window.end() != head.outbound.sequence {
            // A gap (pruned events, or a sink far ahead): start the window anew.
            *total -= window.events.len();
            window.events.clear();
        }
        for event in events {
            window.events.push_back(Arc::clone(event));
            *total += 1;
        }
        while window.events.len() > WINDOW_PER_SALE {
            window.events.pop_front();
            *total -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;
    use crate::domain::{EventKind, OrderEvent};

    /// An outbox of one sale with `events` events, counting its reads.
    struct Counted {
        sale_id: SaleId,
        events: u64,
        reads: AtomicUsize,
    }

    impl Outbox for Counted {
        fn read_events<'a>(
            &'a self,
            sale_id: &'a SaleId,
            after: u64,
            limit: usize,
        ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>> {
            self.reads.fetch_add(1, SeqCst);
            let events = (after + 1..=self.events)
                .take(limit)
                .map(|sequence| RecordedEvent {
                    sale_id: sale_id.clone(),
                    sequence,
                    kind: EventKind::Order(OrderEvent::Created),
                    subject: format!("order-{sequence}"),
                    at: jiff::Timestamp::UNIX_EPOCH,
                    data: "{}".into(),
                })
                .collect();
            Box::pin(async move { Ok(events) })
        }

        fn heads(&self) -> BoxFuture<'_, Result<Vec<EventHead>, StoreError>> {
            let head = EventHead {
                sale_id: self.sale_id.clone(),
                sequence: self.events,
            };
            Box::pin(async move { Ok(vec![head]) })
        }
    }

    fn outbox(events: u64) -> (Arc<Counted>, RenderedEvents<Counted>) {
        let counted = Arc::new(Counted {
            sale_id: crate::domain::Sale::of_stock_for_test(1).id,
            events,
            reads: AtomicUsize::new(0),
        });
        let rendered = RenderedEvents::new(Arc::clone(&counted), "src".into());
        (counted, rendered)
    }

    fn sequences(events: &[Arc<Rendered>]) -> Vec<u64> {
        events.iter().map(|event| event.outbound.sequence).collect()
    }

    #[tokio::test]
    async fn sinks_that_keep_pace_read_and_render_each_event_once() {
        let (outbox, rendered) = outbox(250);
        let sale = outbox.sale_id.clone();
        let mut lanes = [0u64, 0u64];
        loop {
            let mut moved = false;
            for delivered in &mut lanes {
                let events = rendered.after(&sale, *delivered, 100).await.unwrap();
                let expected: Vec<u64> = (*delivered + 1..=(*delivered + 100).min(250)).collect();
                assert_eq!(sequences(&events), expected);
                if let Some(last) = events.last() {
                    *delivered = last.outbound.sequence;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        assert_eq!(lanes, [250, 250]);
        // Three reads of 100, 100 and 50, then one that finds the end for each lane.
        assert_eq!(outbox.reads.load(SeqCst), 3 + 2);
    }

    #[tokio::test]
    async fn a_sink_behind_the_window_reads_for_itself_and_the_window_stays_bounded() {
        let (outbox, rendered) = outbox(5_000);
        let sale = outbox.sale_id.clone();
        let mut ahead = 0;
        while ahead < 5_000 {
            let events = rendered.after(&sale, ahead, 100).await.unwrap();
            ahead = events.last().unwrap().outbound.sequence;
        }
        let reads = outbox.reads.load(SeqCst);
        let behind = rendered.after(&sale, 10, 100).await.unwrap();
        assert_eq!(sequences(&behind), (11..=110).collect::<Vec<_>>());
        assert_eq!(outbox.reads.load(SeqCst), reads + 1);
        {
            let (windows, total) = &*rendered.windows();
            assert!(*total <= WINDOW_PER_SALE, "{total} kept");
            assert_eq!(windows[&sale].end(), 5_001);
        }
        // The slow reader did not push the lead's window out: near the head is still kept.
        let near_head = rendered.after(&sale, 4_950, 100).await.unwrap();
        assert_eq!(sequences(&near_head), (4_951..=5_000).collect::<Vec<_>>());
        assert_eq!(outbox.reads.load(SeqCst), reads + 1);
    }
}
