//! Where a deployment's data lives in Redis. Every key of one sale carries the sale id as its
//! hash tag (`{...}`), so one script can touch all of them on Redis Cluster too; scripts get
//! their keys in `KEYS`, never build names themselves.

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::domain::{OrderId, SaleId, UserId};

/// The consumer group every node's order persister joins.
pub const PERSISTERS: &str = "persisters";

#[derive(Clone, Debug)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn of(&self, sale_id: &str, what: &str) -> String {
        format!("{}:{{{sale_id}}}:{what}", self.prefix)
    }

    /// Hash: stock, remaining, starts_ms, ends_ms, version, paused, room_rate (the waiting line's
    /// rate, 0 without one), pending (a change begun and not finished, as `record::encode_sale`).
    pub fn sale(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "sale")
    }

    /// Hash: buyer → the orders they hold, as `order_id:quantity` separated by spaces.
    pub fn buyers(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "buyers")
    }

    /// Hash: order id → the holding as JSON `{u, q, k}`.
    pub fn holds(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "holds")
    }

    /// Hash: buyer and idempotency key → order id. Kept for good: a key names one order.
    pub fn idempotency(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "keys")
    }

    /// Hash: access code → `order_id buyer`, the order that bound the code to its buyer.
    pub fn codes(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "codes")
    }

    /// Stream of new orders for the persisters.
    pub fn queue(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "queue")
    }

    /// Hash: order id → order JSON, a second copy of the queued orders that versions before the
    /// order journal kept; no longer written (the queue entry is the only copy), still emptied as
    /// its orders persist and dropped with the sale.
    pub fn old_order_copies(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "unpersisted")
    }

    /// Sorted set: the buyers who joined the sale's waiting line before its start, scored by
    /// their draw.
    pub fn line_draws(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "line-draws")
    }

    /// Hash: buyer → number, for those who joined the line after the start (or again).
    pub fn line_numbers(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "line-numbers")
    }

    /// Hash: the line's last number, its admission (base, since, paused, held, rate) and the
    /// last checkpoint's time, places and admissions (cp_time, cp_n, cp_through).
    pub fn line_meta(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "line-meta")
    }

    /// Hash: buyer → when their pass runs out (ms).
    pub fn line_passes(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "line-passes")
    }

    /// Hash: a drawn buyer → when their join arrived (ms), for the admission log.
    pub fn line_arrivals(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "line-arrivals")
    }

    /// List: the places at the end of the line in number order, as `arrival ms:buyer`.
    pub fn line_ends(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "line-ends")
    }

    /// List: the admission log's signed checkpoints, oldest first (`line::encode_checkpoint`).
    pub fn line_checkpoints(&self, sale_id: &SaleId) -> String {
        self.of(sale_id.as_str(), "line-checkpoints")
    }

    /// Set of the sales that have orders in their queue: the persisters' work list, kept by the
    /// scripts (the purchase adds its sale, the acknowledgement of a sale's last entry removes
    /// it), so its size follows the sales being bought, not every sale ever made.
    pub fn queued_sales(&self) -> String {
        format!("{}:queued-sales", self.prefix)
    }

    /// Set of the sales whose change the gate began and the store may not have recorded yet.
    pub fn sale_changes(&self) -> String {
        format!("{}:sale-changes", self.prefix)
    }

    /// Counter moved by every creation and change of a sale: nodes reload their catalog when it
    /// moves.
    pub fn sales_revision(&self) -> String {
        format!("{}:sales-revision", self.prefix)
    }

    /// Pub/sub channel announcing that a sold-out sale has stock again.
    pub fn stock_back(&self) -> String {
        format!("{}:stock-back", self.prefix)
    }

    /// The field of `idempotency` for this buyer and key; length-prefixed, as buyer ids may
    /// hold any character.
    pub fn key_field(user_id: &str, key: &str) -> String {
        format!("{}:{user_id}{key}", user_id.len())
    }
}

/// The order a buyer's idempotency key made, as the gate remembers it (`None` also for a stored
/// value that is not an order id: the scripts only ever write ids).
pub async fn key_owner(
    connection: &mut ConnectionManager,
    keys: &RedisKeys,
    sale_id: &SaleId,
    user_id: &UserId,
    key: &str,
) -> redis::RedisResult<Option<OrderId>> {
    let owner: Option<String> = connection
        .hget(
            keys.idempotency(sale_id),
            RedisKeys::key_field(user_id.as_str(), key),
        )
        .await?;
    Ok(owner.and_then(|text| OrderId::parse(&text)))
}
