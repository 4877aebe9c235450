//! The event feed's use cases: a sale's events as CloudEvents, from a sequence on (the pull
//! feed), and what each sink's delivery is doing (the admin console).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::error::ServiceError;
use super::Service;
use crate::events::{DeadLetter, DeliveryLedger, SinkStatus};

/// What the feed and the console need: the events' `source`, the sinks, their ledger.
pub struct EventsParts {
    pub source: String,
    pub sinks: Vec<Arc<SinkStatus>>,
    pub ledger: Arc<dyn DeliveryLedger>,
}

/// A page of the feed: each event a whole CloudEvent as JSON.
pub struct EventPage {
    pub events: Vec<Vec<u8>>,
    /// Pass as `after` for the next page: the last sequence returned (or `after` itself).
    pub next_after: u64,
}

/// One sink as the console shows it.
pub struct SinkView {
    pub name: String,
    pub kind: &'static str,
    pub held_here: bool,
    pub delivered: u64,
    pub retries: u64,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub dead_letters: u64,
    pub recent_dead_letters: Vec<DeadLetter>,
}

/// Most dead letters the console lists per sink.
const RECENT_DEAD_LETTERS: usize = 20;

impl Service {
    /// Lets the feed render events with `parts.source` and the console show the sinks.
    pub fn with_events(mut self, parts: EventsParts) -> Self {
        self.events = Some(parts);
        self
    }

    fn events_parts(&self) -> Result<&EventsParts, ServiceError> {
        self.events
            .as_ref()
            .ok_or_else(|| ServiceError::Unavailable("this server has no event feed".into()))
    }

    /// Up to `limit` of a sale's retained events with sequences after `after`, in order.
    pub async fn events(
        &self,
        sale_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, ServiceError> {
        let parts = self.events_parts()?;
        let sale = self.known_sale(sale_id).await?;
        let recorded = self.store.events(&sale.id, after, limit).await?;
        let next_after = recorded.last().map_or(after, |event| event.sequence);
        Ok(EventPage {
            events: recorded
                .iter()
                .map(|event| crate::events::envelope_json(&parts.source, event))
                .collect(),
            next_after,
        })
    }

    /// Every configured sink with its delivery's state on this node and its dead letters.
    pub async fn sinks(&self) -> Result<Vec<SinkView>, ServiceError> {
        let parts = self.events_parts()?;
        let mut views = Vec::with_capacity(parts.sinks.len());
        for sink in &parts.sinks {
            let (dead_letters, recent_dead_letters) = parts
                .ledger
                .dead_letters(&sink.name, RECENT_DEAD_LETTERS)
                .await
                .map_err(|error| ServiceError::Unavailable(error.to_string()))?;
            views.push(SinkView {
                name: sink.name.clone(),
                kind: sink.kind,
                held_here: sink.held.load(Relaxed),
                delivered: sink.delivered.load(Relaxed),
                retries: sink.retries.load(Relaxed),
                lag_events: sink.lag_events.load(Relaxed),
                lag_seconds: sink.lag_ms.load(Relaxed) as f64 / 1000.0,
                last_error: sink.last_error(),
                dead_letters,
                recent_dead_letters,
            });
        }
        Ok(views)
    }
}
