//! What a node reads of the Redis order queue outside the purchase script: the sales that have
//! a queue, and the orders acknowledged but not yet in PostgreSQL.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

mod consumer;
pub mod record;

pub use self::consumer::{Entry, ReadFrom};
use super::connection::Redis;
use super::keys::{self, RedisKeys};
use crate::domain::{Order, OrderId, SaleId, UserId};

/// Redis failed a read or write of the order queue.
#[derive(Debug, thiserror::Error)]
#[error("Redis: {0}")]
pub struct QueueError(#[from] redis::RedisError);

/// The orders queue entries carry.
fn decode_entries(reply: &redis::streams::StreamRangeReply) -> Vec<Order> {
    reply
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("order"))
        .filter_map(|text| record::decode(&text))
        .collect()
}

#[derive(Clone)]
pub struct OrderQueue {
    connection: ConnectionManager,
    keys: RedisKeys,
    acknowledge: redis::Script,
}

impl OrderQueue {
    pub fn new(redis: &Redis) -> Self {
        Self {
            connection: redis.manager(),
            keys: redis.keys().clone(),
            acknowledge: redis::Script::new(include_str!("acknowledge.lua")),
        }
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// The sales with orders in their queue (only they can have orders not yet in PostgreSQL).
    pub async fn queued_sale_ids(&self) -> Result<Vec<SaleId>, QueueError> {
        let members: Vec<String> = self.connection().smembers(self.keys.queued_sales()).await?;
        let mut sale_ids: Vec<SaleId> = members
            .iter()
            .filter_map(|text| SaleId::parse(text))
            .collect();
        sale_ids.sort();
        Ok(sale_ids)
    }

    /// Whether no order of the sale waits in its queue for PostgreSQL.
    pub async fn is_drained(&self, sale_id: &SaleId) -> Result<bool, QueueError> {
        let (entries, copies): (u64, u64) = redis::pipe()
            .xlen(self.keys.queue(sale_id))
            .hlen(self.keys.old_order_copies(sale_id))
            .query_async(&mut self.connection())
            .await?;
        Ok(entries == 0 && copies == 0)
    }

    /// A queued order by id, whichever sale it belongs to. Its holding names its queue entry;
    /// a holding that names none (written by an earlier version, or by a repair) sends the
    /// search through that sale's queue. No holding, no queued order: an id that names nothing
    /// costs one round trip, whatever the queues hold.
    pub async fn find(&self, order_id: &OrderId) -> Result<Option<Order>, QueueError> {
        let sale_ids = self.queued_sale_ids().await?;
        if sale_ids.is_empty() {
            return Ok(None);
        }
        let mut pipeline = redis::pipe();
        for sale_id in &sale_ids {
            pipeline.hget(self.keys.holds(sale_id), order_id.as_str());
        }
        let holdings: Vec<Option<String>> = pipeline.query_async(&mut self.connection()).await?;
        for (sale_id, holding) in sale_ids.iter().zip(&holdings) {
            let Some(holding) = holding else {
                continue;
            };
            let candidates = match record::holding_entry(holding) {
                Some(entry) => self.entries(sale_id, &entry, &entry).await?,
                None => self.unpersisted(sale_id).await?,
            };
            if let Some(order) = candidates.into_iter().find(|order| &order.id == order_id) {
                return Ok(Some(order));
            }
        }
        Ok(None)
    }

    /// The orders of a sale's queue entries from `first` to `last` (`-` and `+`: all).
    async fn entries(
        &self,
        sale_id: &SaleId,
        first: &str,
        last: &str,
    ) -> Result<Vec<Order>, QueueError> {
        let reply: redis::streams::StreamRangeReply = self
            .connection()
            .xrange(self.keys.queue(sale_id), first, last)
            .await?;
        Ok(decode_entries(&reply))
    }

    /// Every queued order of a sale (the queue holds each until PostgreSQL has committed it),
    /// with the copies an earlier version kept beside the queue (normally none).
    pub async fn unpersisted(&self, sale_id: &SaleId) -> Result<Vec<Order>, QueueError> {
        let (entries, copies): (redis::streams::StreamRangeReply, HashMap<String, String>) =
            redis::pipe()
                .xrange_all(self.keys.queue(sale_id))
                .hgetall(self.keys.old_order_copies(sale_id))
                .query_async(&mut self.connection())
                .await?;
        let mut orders = decode_entries(&entries);
        for order in copies.values().filter_map(|text| record::decode(text)) {
            if !orders.iter().any(|known| known.id == order.id) {
                orders.push(order);
            }
        }
        Ok(orders)
    }

    /// The order an idempotency key made, as the gate remembers it.
    pub async fn key_owner(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        key: &str,
    ) -> Result<Option<OrderId>, QueueError> {
        Ok(keys::key_owner(&mut self.connection(), &self.keys, sale_id, user_id, key).await?)
    }

    /// Every holding Redis keeps for a sale: order id → quantity.
    pub async fn holdings(&self, sale_id: &SaleId) -> Result<HashMap<String, u64>, QueueError> {
        let entries: HashMap<String, String> =
            self.connection().hgetall(self.keys.holds(sale_id)).await?;
        Ok(entries
            .into_iter()
            .map(|(order_id, holding)| (order_id, record::holding_quantity(&holding).unwrap_or(0)))
            .collect())
    }
}
