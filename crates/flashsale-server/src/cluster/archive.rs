//! Archiving: once a sale has ended, its payment window has passed and it has settled (no
//! pending order, every return confirmed, nothing queued for PostgreSQL), its Redis keys (stock,
//! holdings, idempotency keys, queue) are dropped and PostgreSQL alone answers for it. Redis then
//! holds only sales that can still change, however many sales were ever made.
//!
//! Nothing can join a settled sale: the purchase script refuses it by Redis's clock, and a
//! keyed retry is answered from PostgreSQL once the gate no longer knows the key.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use tokio::sync::watch;

use crate::clock::{Clock, StoppableTicker};
use crate::gate::GateError;
use crate::redis::OrderQueue;
use crate::redis::RedisGate;
use crate::store::{PostgresStore, StoreError};

/// How often a node looks for sales to archive, by the cluster's clock.
const CHECK_EVERY: SignedDuration = SignedDuration::from_secs(60);
/// How often the node's own timer asks whether that time has come.
const TICK: Duration = Duration::from_secs(1);
/// Time past a sale's end and payment window before it may be archived: room for the clock's
/// uncertainty and for the expiry sweep to finish its last orders.
const SETTLE_MARGIN: SignedDuration = SignedDuration::from_secs(300);
const SALES_PER_CHECK: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Queue(#[from] crate::redis::QueueError),
}

pub struct Archiver {
    gate: Arc<RedisGate>,
    queue: OrderQueue,
    postgres: PostgresStore,
    clock: Arc<dyn Clock>,
}

impl Archiver {
    pub fn new(
        gate: Arc<RedisGate>,
        queue: OrderQueue,
        postgres: PostgresStore,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            gate,
            queue,
            postgres,
            clock,
        }
    }

    /// Archives the settled sales it finds; returns how many. Any node may run it at any time,
    /// several at once: each step is idempotent.
    pub async fn archive_settled(&self) -> Result<usize, ArchiveError> {
        let now = self.clock.now();
        let ended_before = now - SETTLE_MARGIN;
        let mut archived = 0;
        for sale_id in self
            .postgres
            .archivable_sales(ended_before, SALES_PER_CHECK)
            .await?
        {
            // The queue first, then PostgreSQL again: an order leaves the queue only once
            // PostgreSQL has it, and none can join it any more, so a sale whose queue is empty
            // and whose stored orders are settled is settled for good.
            if !self.queue.is_drained(&sale_id).await?
                || !self.postgres.is_archivable(&sale_id, ended_before).await?
            {
                continue;
            }
            if self.gate.archive(&sale_id).await? {
                self.postgres.mark_archived(&sale_id, now).await?;
                archived += 1;
            }
        }
        Ok(archived)
    }

    /// Looks for sales to archive every `CHECK_EVERY` of the cluster's clock until `stop`.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let mut ticker = StoppableTicker::new(TICK, stop);
        let mut last_check = None;
        while ticker.tick().await {
            let now = self.clock.now();
            if last_check
                .is_some_and(|last: jiff::Timestamp| now.duration_since(last) < CHECK_EVERY)
            {
                continue;
            }
            last_check = Some(now);
            match self.archive_settled().await {
                Ok(0) => {}
                Ok(archived) => tracing::info!(archived, "archived settled sales"),
                Err(error) => tracing::warn!(%error, "archiving settled sales failed; retrying"),
            }
        }
    }
}
