//! The delivery loop of one sink, in tasks of its own (nothing here is on the purchase path:
//! it reads the outbox and the ledger, never the gate, and never holds what a purchase waits
//! for). Every node runs one per sink; only the node that holds the sink's lease delivers.
//!
//! - Per sale, one *lane* delivers the events in `sequence` order, the next only once the
//!   previous is confirmed; sales are delivered side by side.
//! - A failed attempt is retried with exponential back-off and jitter; an event that still fails
//!   `retry_hours` after its first attempt (by the server's clock) is set aside as a dead letter
//!   (kept, shown) and its sale goes on.
//! - Each sale's cursor is kept in the ledger a few times a second (delivery is at least once:
//!   after a crash the events since the last save go out again; receivers dedupe by id).
//! - While buyers crowd in, the node's sinks share a small budget of deliveries a second
//!   (`pace.rs`): the events wait in the outbox and catch up once the crowd is gone.
//! - A node starts a delivery only while its hold on the sink outlasts the delivery's timeout,
//!   so one that lost its hold has finished before another takes over.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ledger::{DeadLetter, DeliveryLedger, LedgerError};
use super::pace::Pace;
use super::rendered::RenderedEvents;
use super::sink::{DeliveryError, EventSink};
use super::status::SinkStatus;
use crate::clock::Clock;
use crate::domain::SaleId;

/// How often the loop looks for new events (and refreshes its lag).
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// How often delivered cursors are saved.
const SAVE_EVERY: Duration = Duration::from_millis(250);
/// Events a lane reads at once.
const READ_BATCH: usize = 100;
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything a sink's delivery needs.
pub struct Delivery {
    pub sink: Arc<dyn EventSink>,
    pub status: Arc<SinkStatus>,
    /// The outbox, rendered once for all of the node's sinks.
    pub events: Arc<RenderedEvents>,
    /// Shared by the node's sinks: deliveries yield while buyers crowd in.
    pub pace: Arc<Pace>,
    pub ledger: Arc<dyn DeliveryLedger>,
    pub clock: Arc<dyn Clock>,
    /// Names this node in the sink's lease.
    pub holder: String,
    pub lease: Duration,
    pub retry_hours: u32,
    /// Longest one delivery may take (the sink bounds it; the lease must outlast it).
    pub timeout: Duration,
}

/// A sale's progress, shared by its lane and the loop.
#[derive(Default)]
struct Progress {
    delivered: u64,
    saved: u64,
    /// When the oldest event not yet delivered took effect.
    oldest_pending: Option<jiff::Timestamp>,
}

struct Shared {
    delivery: Delivery,
    progress: Mutex<HashMap<SaleId, Progress>>,
    /// Until when this node may start deliveries (its hold's end, as this node measures it).
    held_until: watch::Sender<Option<Instant>>,
}

impl Shared {
    fn progress(&self) -> std::sync::MutexGuard<'_, HashMap<SaleId, Progress>> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a delivery may start (the hold outlasts its timeout); false once the hold
    /// is gone.
    async fn may_deliver(&self) -> bool {
        let mut held = self.held_until.subscribe();
        loop {
            let until = *held.borrow_and_update();
            match until {
                None => return false,
                Some(until)
                    if until.saturating_duration_since(Instant::now()) > self.delivery.timeout =>
                {
                    return true
                }
                Some(_) => {
                    // Renewed meanwhile, or still too close to its end: look again shortly.
                    if let Ok(Err(_)) = tokio::time::timeout(LOOK_EVERY, held.changed()).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// A pseudo-random factor in [0.5, 1.0) for the back-off's jitter (not for secrets).
fn jitter(seed: &mut u64) -> f64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    0.5 + (*seed >> 11) as f64 / (1u64 << 53) as f64 / 2.0
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes) | 1
}

impl Delivery {
    /// Delivers until `stop` turns true, then saves its cursors and gives the sink up.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let shared = Arc::new(Shared {
            delivery: self,
            progress: Mutex::new(HashMap::new()),
            held_until: watch::Sender::new(None),
        });
        let delivery = &shared.delivery;
        let mut lanes: HashMap<SaleId, JoinHandle<()>> = HashMap::new();
        let mut renewed_at: Option<Instant> = None;
        let mut saved_at = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            if renewed_at.is_none_or(|at| at.elapsed() > delivery.lease / 3) {
                let started = Instant::now();
                match delivery
                    .ledger
                    .hold(delivery.sink.name(), &delivery.holder, delivery.lease)
                    .await
                {
                    Ok(true) => {
                        if shared.held_until.borrow().is_none() {
                            if let Err(error) = load_cursors(&shared).await {
                                tracing::warn!(sink = delivery.sink.name(), %error,
                                    "could not read the sink's cursors; retrying");
                                tokio::time::sleep(LOOK_EVERY * 10).await;
                                continue;
                            }
                            tracing::info!(sink = delivery.sink.name(), "delivering this sink");
                        }
                        shared
                            .held_until
                            .send_replace(Some(started + delivery.lease));
                        delivery.status.held.store(true, Relaxed);
                        renewed_at = Some(started);
                    }
                    Ok(false) => {
                        give_up(&shared, &mut lanes);
                        renewed_at = Some(started);
                    }
                    Err(error) => {
                        // The hold runs out on its own; lanes stop starting deliveries then.
                        tracing::warn!(sink = delivery.sink.name(), %error,
                            "could not renew the hold on the sink");
                        if shared
                            .held_until
                            .borrow()
                            .is_some_and(|until| until <= Instant::now())
                        {
                            give_up(&shared, &mut lanes);
                        }
                    }
                }
            }
            if shared.held_until.borrow().is_some() {
                lanes.retain(|_, lane| !lane.is_finished());
                if let Err(error) = start_lanes(&shared, &mut lanes).await {
                    tracing::warn!(sink = delivery.sink.name(), %error,
                        "could not read the outbox; retrying");
                }
                if saved_at.elapsed() >= SAVE_EVERY {
                    saved_at = Instant::now();
                    if let Err(LedgerError::LeaseLost) = save_cursors(&shared).await {
                        give_up(&shared, &mut lanes);
                        renewed_at = None;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
        for lane in lanes.values() {
            lane.abort();
        }
        if shared.held_until.borrow().is_some() {
            let _ = save_cursors(&shared).await;
            let _ = delivery
                .ledger
                .let_go(delivery.sink.name(), &delivery.holder)
                .await;
        }
        shared.held_until.send_replace(None);
        delivery.status.held.store(false, Relaxed);
    }
}

/// Stops delivering: another node holds the sink (or this one cannot reach the ledger).
fn give_up(shared: &Shared, lanes: &mut HashMap<SaleId, JoinHandle<()>>) {
    if shared.held_until.borrow().is_some() {
        tracing::info!(
            sink = shared.delivery.sink.name(),
            "another node delivers this sink"
        );
    }
    shared.held_until.send_replace(None);
    for (_, lane) in lanes.drain() {
        lane.abort();
    }
    shared.progress().clear();
    let status = &shared.delivery.status;
    status.held.store(false, Relaxed);
    status.lag_events.store(0, Relaxed);
    status.lag_ms.store(0, Relaxed);
}

async fn load_cursors(shared: &Shared) -> Result<(), LedgerError> {
    let cursors = shared
        .delivery
        .ledger
        .cursors(shared.delivery.sink.name())
        .await?;
    let mut progress = shared.progress();
    progress.clear();
    for (sale_id, delivered) in cursors {
        progress.insert(
            sale_id,
            Progress {
                delivered,
                saved: delivered,
                oldest_pending: None,
            },
        );
    }
    Ok(())
}

async fn save_cursors(shared: &Shared) -> Result<(), LedgerError> {
    let moved: Vec<(SaleId, u64)> = shared
        .progress()
        .iter()
        .filter(|(_, progress)| progress.delivered > progress.saved)
        .map(|(sale_id, progress)| (sale_id.clone(), progress.delivered))
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let delivery = &shared.delivery;
    match delivery
        .ledger
        .advance(delivery.sink.name(), &delivery.holder, moved.clone())
        .await
    {
        Ok(()) => {
            let mut progress = shared.progress();
            for (sale_id, delivered) in moved {
                if let Some(progress) = progress.get_mut(&sale_id) {
                    progress.saved = progress.saved.max(delivered);
                }
            }
            Ok(())
        }
        Err(error) => {
            tracing::warn!(sink = delivery.sink.name(), %error, "could not save delivery cursors");
            Err(error)
        }
    }
}

/// Starts a lane for every sale with undelivered events and none running; refreshes the lag.
async fn start_lanes(
    shared: &Arc<Shared>,
    lanes: &mut HashMap<SaleId, JoinHandle<()>>,
) -> Result<(), crate::store::StoreError> {
    let heads = shared.delivery.events.heads().await?;
    let now = shared.delivery.clock.now();
    let mut lag_events = 0;
    let mut oldest: Option<jiff::Timestamp> = None;
    let mut idle = Vec::new();
    {
        let mut progress = shared.progress();
        for head in heads {
            let sale = progress.entry(head.sale_id.clone()).or_default();
            let behind = head.sequence.saturating_sub(sale.delivered);
            lag_events += behind;
            if behind == 0 {
                continue;
            }
            if let Some(pending) = sale.oldest_pending {
                oldest = Some(oldest.map_or(pending, |oldest| oldest.min(pending)));
            }
            if !lanes.contains_key(&head.sale_id) {
                idle.push((head.sale_id, sale.delivered));
            }
        }
    }
    let status = &shared.delivery.status;
    status.lag_events.store(lag_events, Relaxed);
    let lag_ms = oldest.map_or(0, |oldest| {
        u64::try_from(now.duration_since(oldest).as_millis()).unwrap_or(0)
    });
    status.lag_ms.store(lag_ms, Relaxed);
    for (sale_id, delivered) in idle {
        let lane = tokio::spawn(run_lane(Arc::clone(shared), sale_id.clone(), delivered));
        lanes.insert(sale_id, lane);
    }
    Ok(())
}

/// Delivers one sale's events in order until it has none left (or the hold is gone).
async fn run_lane(shared: Arc<Shared>, sale_id: SaleId, mut delivered: u64) {
    let delivery = &shared.delivery;
    let mut seed = random_seed();
    loop {
        let events = match delivery.events.after(&sale_id, delivered, READ_BATCH).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(sink = delivery.sink.name(), %error, "reading the outbox failed");
                tokio::time::sleep(BACKOFF_FIRST).await;
                continue;
            }
        };
        if events.is_empty() {
            if let Some(progress) = shared.progress().get_mut(&sale_id) {
                progress.oldest_pending = None;
            }
            return;
        }
        for event in events {
            let outbound = &event.outbound;
            if outbound.sequence > delivered + 1 {
                // Pruned by the retention before this sink had them.
                delivery
                    .status
                    .pruned_undelivered
                    .fetch_add(outbound.sequence - delivered - 1, Relaxed);
            }
            if let Some(progress) = shared.progress().get_mut(&sale_id) {
                progress.oldest_pending = Some(event.at);
            }
            delivery.pace.turn().await;
            let first_attempt = delivery.clock.now();
            let mut backoff = BACKOFF_FIRST;
            loop {
                if !shared.may_deliver().await {
                    return;
                }
                let failure = match delivery.sink.deliver(outbound).await {
                    Ok(()) => {
                        delivery.status.delivered.fetch_add(1, Relaxed);
                        delivery.status.set_error(None);
                        break;
                    }
                    Err(DeliveryError::Retry(reason)) => reason,
                };
                delivery.status.retries.fetch_add(1, Relaxed);
                delivery.status.set_error(Some(failure.clone()));
                let tried_for = delivery.clock.now().duration_since(first_attempt);
                if tried_for >= jiff::SignedDuration::from_hours(i64::from(delivery.retry_hours)) {
                    let letter = DeadLetter {
                        sale_id: sale_id.clone(),
                        sequence: outbound.sequence,
                        event: String::from_utf8_lossy(&outbound.json).into_owned(),
                        reason: failure.clone(),
                        recorded_at: delivery.clock.now(),
                    };
                    match delivery
                        .ledger
                        .dead_letter(delivery.sink.name(), &delivery.holder, letter)
                        .await
                    {
                        Ok(()) => {
                            tracing::warn!(sink = delivery.sink.name(), event = %outbound.id,
                                reason = %failure, "set an event aside after its retries ran out");
                            delivery.status.dead_letters.fetch_add(1, Relaxed);
                            break;
                        }
                        Err(LedgerError::LeaseLost) => return,
                        Err(error) => tracing::warn!(sink = delivery.sink.name(), %error,
                            "could not set an event aside; trying it again"),
                    }
                }
                let pause = backoff.mul_f64(jitter(&mut seed));
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            delivered = outbound.sequence;
            if let Some(progress) = shared.progress().get_mut(&sale_id) {
                progress.delivered = progress.delivered.max(delivered);
                progress.oldest_pending = None;
            }
        }
    }
}
