//! The persisters' side of the order queue: reading a consumer group's entries across the
//! streams of the sales on the work list, taking over entries a dead consumer left, the
//! acknowledgement after PostgreSQL's commit (one script per sale, atomic with its purchases),
//! and the queue's lag.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadOptions,
    StreamReadReply,
};

use super::{record, OrderQueue, QueueError};
use crate::domain::{Order, SaleId};
use crate::redis::keys::PERSISTERS;

/// One entry read from a sale's queue.
pub struct Entry {
    pub sale_id: SaleId,
    pub entry_id: String,
    /// `None` when the entry is not an order (only the purchase script writes entries, so this
    /// would be a bug or a foreign writer).
    pub order: Option<Order>,
}

/// Where a read of the group starts.
#[derive(Clone, Copy, Debug)]
pub enum ReadFrom {
    /// Entries delivered to this consumer and not acknowledged (after a restart or a failure).
    OwnPending,
    /// Entries never delivered to any consumer.
    New,
}

impl OrderQueue {
    /// Up to `count` entries of the persisters' group for `consumer`.
    pub async fn read_group(
        &self,
        consumer: &str,
        sales: &[SaleId],
        from: ReadFrom,
        count: usize,
    ) -> Result<Vec<Entry>, QueueError> {
        let keys: Vec<String> = sales.iter().map(|id| self.keys.queue(id)).collect();
        let from = match from {
            ReadFrom::OwnPending => "0",
            ReadFrom::New => ">",
        };
        let ids = vec![from; keys.len()];
        let options = StreamReadOptions::default()
            .group(PERSISTERS, consumer)
            .count(count);
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg(&options)
            .arg("STREAMS")
            .arg(&keys)
            .arg(&ids)
            .query_async(&mut self.connection())
            .await?;
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

    /// Takes over for `consumer` entries another consumer left unacknowledged for `idle`.
    pub async fn claim_idle(
        &self,
        consumer: &str,
        sales: &[SaleId],
        idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, QueueError> {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        for sale_id in sales {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(self.keys.queue(sale_id))
                .arg(PERSISTERS)
                .arg(consumer)
                .arg(idle_ms)
                .arg("0-0")
                .arg(StreamAutoClaimOptions::default().count(count))
                .query_async(&mut self.connection())
                .await?;
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
            if entries.len() >= count {
                break;
            }
        }
        Ok(entries)
    }

    /// Acknowledges committed entries and forgets them, one script per sale (atomic with the
    /// purchases of that sale): from now on PostgreSQL answers for them, and a sale whose queue
    /// is empty leaves the persisters' work list.
    pub async fn acknowledge(&self, entries: &[Entry]) -> Result<(), QueueError> {
        let mut by_sale: BTreeMap<&SaleId, Vec<&Entry>> = BTreeMap::new();
        for entry in entries {
            by_sale.entry(&entry.sale_id).or_default().push(entry);
        }
        for (sale_id, entries) in by_sale {
            let mut invocation = self.acknowledge.prepare_invoke();
            invocation
                .key(self.keys.queue(sale_id))
                .key(self.keys.queued_sales())
                .key(self.keys.old_order_copies(sale_id))
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
                .invoke_async::<i64>(&mut self.connection())
                .await?;
        }
        Ok(())
    }

    /// The age of the oldest order not yet in PostgreSQL, by the entry ids' Redis time against
    /// `now_ms`, and how many there are.
    pub async fn lag(&self, sales: &[SaleId], now_ms: i64) -> Result<(Duration, u64), QueueError> {
        if sales.is_empty() {
            return Ok((Duration::ZERO, 0));
        }
        let mut pipeline = redis::pipe();
        for sale_id in sales {
            pipeline
                .cmd("XRANGE")
                .arg(self.keys.queue(sale_id))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
            pipeline.xlen(self.keys.queue(sale_id));
        }
        let replies: Vec<redis::Value> = pipeline.query_async(&mut self.connection()).await?;
        let mut oldest_ms: Option<i64> = None;
        let mut unpersisted = 0u64;
        for pair in replies.chunks(2) {
            if let [first, count] = pair {
                let first: StreamRangeReply =
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
        Ok((lag, unpersisted))
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
