//! The persister every cluster node runs: it reads the Redis order queues as one consumer of the
//! `persisters` group, writes each batch to PostgreSQL in one transaction (idempotent on the
//! order id), and only after the commit acknowledges and deletes the entries. A node that dies
//! leaves its entries pending; another node claims them after `claim_idle`. While PostgreSQL is
//! unreachable the entries wait in Redis and the batch is retried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::streams::StreamReadReply;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions};
use tokio::sync::watch;

use crate::domain::{Order, SaleId};
use crate::metrics::Metrics;
use crate::redis::{record, redis_failed, OrderQueue, PERSISTERS};
use crate::store::{PostgresStore, StoreError};

const IDLE_PAUSE: Duration = Duration::from_millis(5);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);
const SALES_REFRESH: Duration = Duration::from_millis(100);
const LAG_REFRESH: Duration = Duration::from_millis(500);
/// Longest a stopping node keeps writing what it read.
const DRAIN_MAX: Duration = Duration::from_secs(5);

pub struct Persister {
    queue: OrderQueue,
    acknowledge: redis::Script,
    postgres: PostgresStore,
    consumer: String,
    batch_max: usize,
    claim_idle: Duration,
    metrics: Arc<Metrics>,
}

/// One entry read from a sale's queue.
struct Entry {
    sale_id: SaleId,
    entry_id: String,
    order: Option<Order>,
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
            acknowledge: redis::Script::new(include_str!("../redis/queue/acknowledge.lua")),
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
            let claimed = self.claim(&round.sales).await?;
            if !claimed.is_empty() {
                return self.persist(claimed).await;
            }
            round.last_claim = Some(Instant::now());
        }
        if round.own_pending {
            let pending = self.read(&round.sales, "0").await?;
            if !pending.is_empty() {
                return self.persist(pending).await;
            }
            round.own_pending = false;
        }
        let entries = self.read(&round.sales, ">").await?;
        self.persist(entries).await
    }

    async fn read(&self, sales: &[SaleId], from: &str) -> Result<Vec<Entry>, StoreError> {
        let keys: Vec<String> = sales.iter().map(|id| self.queue.keys().queue(id)).collect();
        let ids = vec![from; keys.len()];
        let options = StreamReadOptions::default()
            .group(PERSISTERS, &self.consumer)
            .count(self.batch_max);
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg(&options)
            .arg("STREAMS")
            .arg(&keys)
            .arg(&ids)
            .query_async(&mut self.queue.connection())
            .await
            .map_err(redis_failed)?;
        let mut entries = Vec::new();
        for stream in reply.map(|reply| reply.keys).unwrap_or_default() {
            if let Some(index) = keys.iter().position(|key| *key == stream.key) {
                entries.extend(
                    stream
                        .ids
                        .into_iter()
                        .map(|id| entry(sales[index].clone(), id)),
                );
            }
        }
        Ok(entries)
    }

    /// Takes over entries another consumer left unacknowledged for `claim_idle`.
    async fn claim(&self, sales: &[SaleId]) -> Result<Vec<Entry>, StoreError> {
        let idle_ms = u64::try_from(self.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        for sale_id in sales {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(self.queue.keys().queue(sale_id))
                .arg(PERSISTERS)
                .arg(&self.consumer)
                .arg(idle_ms)
                .arg("0-0")
                .arg(StreamAutoClaimOptions::default().count(self.batch_max))
                .query_async(&mut self.queue.connection())
                .await
                .map_err(redis_failed)?;
            if !reply.claimed.is_empty() {
                tracing::info!(sale_id = %sale_id, orders = reply.claimed.len(),
                    "took over queued orders another node left unacknowledged");
            }
            entries.extend(
                reply
                    .claimed
                    .into_iter()
                    .map(|id| entry(sale_id.clone(), id)),
            );
            if entries.len() >= self.batch_max {
                break;
            }
        }
        Ok(entries)
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
        self.acknowledge(&entries).await?;
        self.metrics
            .record_persisted(orders.len() - refused, refused);
        Ok(entries.len())
    }

    /// Acknowledges committed entries and forgets them, one script per sale (atomic with the
    /// purchases of that sale): from now on PostgreSQL answers for them, and a sale whose queue
    /// is empty leaves the persisters' work list.
    async fn acknowledge(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut by_sale: BTreeMap<&SaleId, Vec<&Entry>> = BTreeMap::new();
        for entry in entries {
            by_sale.entry(&entry.sale_id).or_default().push(entry);
        }
        let keys = self.queue.keys();
        for (sale_id, entries) in by_sale {
            let mut invocation = self.acknowledge.prepare_invoke();
            invocation
                .key(keys.queue(sale_id))
                .key(keys.queued_sales())
                .key(keys.old_order_copies(sale_id))
                .arg(PERSISTERS)
                .arg(sale_id.as_str())
                .arg(entries.len());
            for entry in &entries {
                invocation.arg(&entry.entry_id);
            }
            for order in entries.iter().filter_map(|entry| entry.order.as_ref()) {
                invocation.arg(order.id.as_str());
            }
            invocation
                .invoke_async::<i64>(&mut self.queue.connection())
                .await
                .map_err(redis_failed)?;
        }
        Ok(())
    }

    /// Publishes the age of the oldest order not yet in PostgreSQL, and how many there are.
    async fn measure_lag(&self, sales: &[SaleId]) -> Result<(), StoreError> {
        if sales.is_empty() {
            self.metrics.record_queue(Duration::ZERO, 0);
            return Ok(());
        }
        let keys = self.queue.keys();
        let mut pipeline = redis::pipe();
        for sale_id in sales {
            pipeline
                .cmd("XRANGE")
                .arg(keys.queue(sale_id))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
            pipeline.xlen(keys.queue(sale_id));
        }
        let replies: Vec<redis::Value> = pipeline
            .query_async(&mut self.queue.connection())
            .await
            .map_err(redis_failed)?;
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let mut oldest_ms: Option<i64> = None;
        let mut unpersisted = 0u64;
        for pair in replies.chunks(2) {
            if let [first, count] = pair {
                let first: redis::streams::StreamRangeReply =
                    redis::from_redis_value_ref(first).unwrap_or_default();
                if let Some(ms) = first
                    .ids
                    .first()
                    .and_then(|id| id.id.split('-').next())
                    .and_then(|ms| ms.parse::<i64>().ok())
                {
                    oldest_ms = Some(oldest_ms.map_or(ms, |oldest| oldest.min(ms)));
                }
                unpersisted += redis::from_redis_value_ref::<u64>(count).unwrap_or(0);
            }
        }
        let lag = oldest_ms
            .map(|ms| Duration::from_millis(u64::try_from(now_ms - ms).unwrap_or(0)))
            .unwrap_or_default();
        self.metrics.record_queue(lag, unpersisted);
        Ok(())
    }
}

fn entry(sale_id: SaleId, id: StreamId) -> Entry {
    let order = id
        .get::<String>("order")
        .and_then(|text| record::decode(&text));
    Entry {
        sale_id,
        entry_id: id.id,
        order,
    }
}
