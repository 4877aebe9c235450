//! The stock gate decides, atomically, whether a purchase may take stock: per sale it keeps the
//! remaining stock and what each buyer holds. It is the only thing consulted on the hot path, so
//! it answers from memory (embedded) or from one Redis script call (cluster), never from SQL.
//!
//! Memory grows with the number of winners (at most the stock), never with the number of requests.

mod memory;
mod redis;

pub use self::redis::{
    record, RedisDurability, RedisGate, RedisGateOptions, RedisKeys, PERSISTERS,
};
pub use memory::MemoryGate;

use crate::domain::{Order, OrderId, Sale, SaleId, UserId};
use crate::BoxFuture;

/// A purchase that passed the rules and asks for stock. It carries the whole order so that a
/// gate that also queues orders (the cluster's Redis script) can do both in one step.
#[derive(Clone, Debug)]
pub struct Reservation {
    pub order: Order,
    pub per_user_limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateDecision {
    /// The stock is taken and the holding recorded under the order's id.
    Reserved,
    SoldOut {
        remaining: u64,
    },
    AlreadyPurchased {
        order_id: OrderId,
    },
    /// The buyer already holds an order made with this idempotency key (maybe still in flight).
    SameKey {
        order_id: OrderId,
    },
    /// The purchase's time is outside the sale's window (a gate that keeps the window checks
    /// it again, so a node with a wrong clock cannot sell early or late).
    Closed,
}

/// One active order's claim on a sale's stock, as a store reports it when the gate is rebuilt.
#[derive(Clone, Debug)]
pub struct Holding {
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub order_id: OrderId,
    pub quantity: u32,
    pub idempotency_key: Option<String>,
}

impl From<&Order> for Holding {
    fn from(order: &Order) -> Self {
        Self {
            sale_id: order.sale_id.clone(),
            user_id: order.user_id.clone(),
            order_id: order.id.clone(),
            quantity: order.quantity,
            idempotency_key: order.idempotency_key.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the stock gate does not know sale {0}")]
    UnknownSale(SaleId),
    #[error("the stock gate is unavailable: {0}")]
    Unavailable(String),
}

pub trait StockGate: Send + Sync + 'static {
    /// Puts a new sale on the gate with its whole stock. Opening a sale the gate knows already
    /// changes nothing.
    fn open_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), GateError>>;

    /// Replaces a sale's state with what the system of record says: its stock minus the active
    /// holdings. Used at start-up (embedded) and by repair (cluster).
    fn restore_sale(
        &self,
        sale: &Sale,
        holdings: Vec<Holding>,
    ) -> BoxFuture<'_, Result<(), GateError>>;

    fn reserve(&self, reservation: &Reservation) -> BoxFuture<'_, Result<GateDecision, GateError>>;

    /// Gives back the stock an order holds. Returns whether it did: a second release of the same
    /// order is a no-op, so stock comes back once per order.
    fn release(&self, holding: &Holding) -> BoxFuture<'_, Result<bool, GateError>>;

    /// Remaining stock of a sale, or `None` when the gate does not know it.
    fn remaining(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>>;

    /// Units held by the holdings the gate keeps for a sale (what the audit compares with the
    /// store's active orders), or `None` when the gate does not know the sale.
    fn held(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>>;

    fn ping(&self) -> BoxFuture<'_, Result<(), GateError>>;

    /// True for a gate that also queues each reserved order durably for the store and is shared
    /// by several nodes (Redis): a `Reserved` answer is then an acknowledged order, and the
    /// gate outlives any one node, so a node never rebuilds it on start.
    fn queues_orders(&self) -> bool {
        false
    }
}
