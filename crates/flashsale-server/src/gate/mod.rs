//! The stock gate decides, atomically, whether a purchase may take stock: per sale it keeps the
//! remaining stock and what each buyer holds. It is the only thing consulted on the hot path, so
//! it answers from memory (embedded) or from one Redis script call (cluster), never from SQL.
//!
//! Memory grows with the number of winners (at most the stock), never with the number of requests.

mod memory;

pub use memory::MemoryGate;

use jiff::Timestamp;

use crate::domain::{Order, OrderId, Sale, SaleId, UserId};
use crate::BoxFuture;

/// A purchase that passed the rules and asks for stock. It carries the whole order so that a
/// gate that also queues orders (the cluster's Redis script) can do both in one step. The
/// order's `created_at` is the node's time; a gate with a clock of its own (Redis) decides the
/// window and the order's times with that clock instead.
#[derive(Clone, Debug)]
pub struct Reservation {
    pub order: Order,
    pub per_user_limit: u32,
    pub payment_window_secs: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateDecision {
    /// The stock is taken and the holding recorded under the order's id, at `created_at` by
    /// the gate's clock (the order's payment deadline counts from it).
    Reserved {
        created_at: Timestamp,
    },
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
    /// Before the sale's start, by the gate's clock (the gate keeps the window, so a node with
    /// a wrong clock cannot sell early).
    NotStarted,
    /// After the sale's end, by the gate's clock.
    Ended,
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

/// An idempotency key and the order it made; a gate remembers these for good (also after the
/// order was cancelled), so a retry finds its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderKey {
    pub user_id: UserId,
    pub key: String,
    pub order_id: OrderId,
}

impl OrderKey {
    pub fn of(order: &Order) -> Option<Self> {
        order.idempotency_key.as_ref().map(|key| Self {
            user_id: order.user_id.clone(),
            key: key.clone(),
            order_id: order.id.clone(),
        })
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum GateError {
    #[error("the stock gate does not know sale {0}")]
    UnknownSale(SaleId),
    #[error("the stock gate is unavailable: {0}")]
    Unavailable(String),
    #[error("the stock gate's records contradict each other: {0}")]
    Corrupt(String),
}

pub trait StockGate: Send + Sync + 'static {
    /// Puts a new sale on the gate with its whole stock. Opening a sale the gate knows already
    /// changes nothing.
    fn open_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), GateError>>;

    /// Replaces a sale's state with what the system of record says: its stock minus the active
    /// holdings, and every idempotency key its orders were made with. Used at start-up
    /// (embedded); a shared gate is repaired by `flashsale reconcile --repair` instead.
    fn restore_sale(
        &self,
        sale: &Sale,
        holdings: Vec<Holding>,
        keys: Vec<OrderKey>,
    ) -> BoxFuture<'_, Result<(), GateError>>;

    /// Decides a purchase: a known idempotency key first (its order, whatever else changed since),
    /// then the sale's window, the buyer's limit and the stock.
    fn reserve(&self, reservation: &Reservation) -> BoxFuture<'_, Result<GateDecision, GateError>>;

    /// Gives back the stock an order holds. Returns whether it did: a second release of the same
    /// order is a no-op, so stock comes back once per order. The order's idempotency key stays.
    fn release(&self, holding: &Holding) -> BoxFuture<'_, Result<bool, GateError>>;

    /// Undoes a reservation whose order was never recorded (the store refused or failed it):
    /// the stock comes back and the key is forgotten, so a retry is decided afresh.
    fn abandon(&self, holding: &Holding) -> BoxFuture<'_, Result<bool, GateError>>;

    /// The order an idempotency key made, if the gate remembers one.
    fn key_owner(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        key: &str,
    ) -> BoxFuture<'_, Result<Option<OrderId>, GateError>>;

    /// Remaining stock of a sale, or `None` when the gate does not know it.
    fn remaining(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>>;

    /// Remaining stock of several sales (a listing), in their order. A gate behind a network
    /// answers in one round trip.
    fn remaining_of<'a>(
        &'a self,
        sale_ids: &'a [SaleId],
    ) -> BoxFuture<'a, Result<Vec<Option<u64>>, GateError>> {
        Box::pin(async move {
            let mut remaining = Vec::with_capacity(sale_ids.len());
            for sale_id in sale_ids {
                remaining.push(self.remaining(sale_id).await?);
            }
            Ok(remaining)
        })
    }

    /// Units held by the holdings the gate keeps for a sale (what the audit compares with the
    /// store's active orders), or `None` when the gate does not know the sale.
    fn held(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>>;

    fn ping(&self) -> BoxFuture<'_, Result<(), GateError>>;
}
