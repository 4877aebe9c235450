//! The persister every cluster node runs: it reads the Redis order queues as one consumer of the
//! `persisters` group, writes each batch to PostgreSQL in one transaction (idempotent on the
//! order id), and only after the commit acknowledges and deletes the entries. A node that dies
//! leaves its entries pending; another node claims them after `claim_idle`. While PostgreSQL is
//! unreachable the entries wait in Redis and the batch is retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::domain::{Order, SaleId};
use crate::metrics::Metrics;
use crate::redis::{Entry, OrderQueue, ReadFrom};
use crate::store::{PostgresStore, StoreError};

const IDLE_PAUSE: Duration = Duration::from_millis(5);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);
const SALES_REFRESH: Duration = Duration::from_millis(100);
const LAG_REFRESH: Duration = Duration::from_millis(500);
/// Longest a stopping node keeps writing what it read.
const DRAIN_MAX: Duration = Duration::from_secs(5);

pub struct Persister {
    queue: OrderQueue,
    postgres: PostgresStore,
    consumer: String,
    batch_max: usize,
    claim_idle: Duration,
    metrics: Arc<Metrics>,
}

struct Round {
    sales: Vec<SaleId>,
    sales_read: Option<Instant>,
    last_claim: Option<Instant>,
    last_lag: Option<Instant>,
    /// Entries delivered to this consumer may be unacknowledged (at start, after a failure).
    own_pending: bool,
}

impl Persister {
    pub fn new(
        queue: OrderQueue,
        postgres: PostgresStore,
        consumer: String,
        batch_max: usize,
        claim_idle: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            queue,
            postgres,
            consumer,
            batch_max: batch_max.max(1),
            claim_idle,
            metrics,
        }
    }

    /// Persists until `stop` turns true, then drains what is queued for a few seconds.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut round = Round {
            sales: Vec::new(),
            sales_read: None,
            last_claim: None,
            last_lag: None,
            own_pending: true,
        };
        let mut pause = IDLE_PAUSE;
        let mut stopping_since: Option<Instant> = None;
        loop {
            if stopping_since.is_none() && *stop.borrow() {
                stopping_since = Some(Instant::now());
            }
            let outcome = self.round(&mut round).await;
            match (&outcome, stopping_since) {
                (Ok(0), Some(_)) => return,
                (Err(_), Some(_)) => return,
                (_, Some(since)) if since.elapsed() > DRAIN_MAX => return,
                _ => {}
            }
            pause = match outcome {
                Ok(0) => IDLE_PAUSE,
                Ok(_) => continue,
                Err(error) => {
                    round.own_pending = true;
                    tracing::warn!(%error, "persisting queued orders failed; retrying");
                    (pause * 2).clamp(Duration::from_millis(50), RETRY_PAUSE_MAX)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed(), if stopping_since.is_none() => {}
            }
        }
    }

    /// Reads one batch (claimed, own pending, or new entries) and persists it; returns how many
    /// entries it handled.
    async fn round(&self, round: &mut Round) -> Result<usize, StoreError> {
        if round
            .sales_read
            .is_none_or(|at| at.elapsed() > SALES_REFRESH)
        {
            round.sales = self.queue.queued_sale_ids().await?;
            round.sales_read = Some(Instant::now());
        }
        if round.last_lag.is_none_or(|at| at.elapsed() > LAG_REFRESH) {
            self.measure_lag(&round.sales).await?;
            round.last_lag = Some(Instant::now());
        }
        if round.sales.is_empty() {
            return Ok(0);
        }
        if round
            .last_claim
            .is_none_or(|at| at.elapsed() > self.claim_idle / 2)
        {
            let claimed = self
                .queue
                .claim_idle(
                    &self.consumer,
                    &round.sales,
                    self.claim_idle,
                    self.batch_max,
                )
                .await?;
            if !claimed.is_empty() {
                return self.persist(claimed).await;
            }
            round.last_claim = Some(Instant::now());
        }
        if round.own_pending {
            let pending = self
                .queue
                .read_group(
                    &self.consumer,
                    &round.sales,
                    ReadFrom::OwnPending,
                    self.batch_max,
                )
                .await?;
            if !pending.is_empty() {
                return self.persist(pending).await;
            }
            round.own_pending = false;
        }
        let entries = self
            .queue
            .read_group(&self.consumer, &round.sales, ReadFrom::New, self.batch_max)
            .await?;
        self.persist(entries).await
    }

    async fn persist(&self, entries: Vec<Entry>) -> Result<usize, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let orders: Vec<Order> = entries
            .iter()
            .filter_map(|entry| entry.order.clone())
            .collect();
        let outcomes = self.postgres.insert_orders(&orders).await?;
        let mut refused = 0;
        for (order, outcome) in orders.iter().zip(&outcomes) {
            if let Err(error) = outcome {
                refused += 1;
                tracing::error!(%error, order_id = %order.id, sale_id = %order.sale_id,
                    "PostgreSQL refused an acknowledged order; kept in refused_orders");
                self.postgres
                    .record_refused(order, &error.to_string())
                    .await?;
            }
        }
        for entry in entries.iter().filter(|entry| entry.order.is_none()) {
            // Only the purchase script writes entries, so this is never an acknowledged order.
            tracing::error!(sale_id = %entry.sale_id, entry_id = %entry.entry_id,
                "a queue entry is not an order; dropped");
        }
        self.queue.acknowledge(&entries).await?;
        self.metrics
            .record_persisted(orders.len() - refused, refused);
        Ok(entries.len())
    }

    /// Publishes the age of the oldest order not yet in PostgreSQL, and how many there are.
    async fn measure_lag(&self, sales: &[SaleId]) -> Result<(), StoreError> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let (lag, unpersisted) = self.queue.lag(sales, now_ms).await?;
        self.metrics.record_queue(lag, unpersisted);
        Ok(())
    }
}
