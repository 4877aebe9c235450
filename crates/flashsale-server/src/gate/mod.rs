//! The stock gate decides, atomically, whether a purchase may take stock: per sale it keeps the
//! remaining stock and what each buyer holds. It is the only thing consulted on the hot path, so
//! it answers from memory (embedded) or from one Redis script call (cluster), never from SQL.
//!
//! Memory grows with the number of winners (at most the stock), never with the number of requests.

mod memory;

pub use memory::MemoryGate;

use jiff::Timestamp;

use crate::domain::{Order, OrderId, Sale, SaleId, SaleRevision, UserId};
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
    /// The operator paused the sale (the gate keeps the pause, so a node whose copy of the sale
    /// is older cannot sell).
    Paused,
    /// The purchase's access code is bound to another buyer.
    CodeTaken,
}

/// What the gate did with the first step of a sale's change (`begin_change`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeStep {
    /// The gate is at the new version (also when it already was: a repeated step).
    Applied,
    /// The gate's version is not the one the change was made from: another change came first.
    /// `pending` is the gate's own change still to be recorded by the store, if any.
    Conflict { pending: Option<Box<SaleRevision>> },
    /// Fewer units remain than the change takes off sale: nothing changed.
    InsufficientStock { remaining: u64 },
}

/// One active order's claim on a sale's stock, as a store reports it when the gate is rebuilt.
#[derive(Clone, Debug)]
pub struct Holding {
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub order_id: OrderId,
    pub quantity: u32,
    pub idempotency_key: Option<String>,
    pub access_code: Option<String>,
}

impl From<&Order> for Holding {
    fn from(order: &Order) -> Self {
        Self {
            sale_id: order.sale_id.clone(),
            user_id: order.user_id.clone(),
            order_id: order.id.clone(),
            quantity: order.quantity,
            idempotency_key: order.idempotency_key.clone(),
            access_code: order.access_code.clone(),
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

/// An access code and the buyer it is bound to (by the order that first used it): bound for
/// good, like a key to its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeBinding {
    pub code: String,
    pub user_id: UserId,
    pub order_id: OrderId,
}

impl CodeBinding {
    pub fn of(order: &Order) -> Option<Self> {
        order.access_code.as_ref().map(|code| Self {
            code: code.clone(),
            user_id: order.user_id.clone(),
            order_id: order.id.clone(),
        })
    }
}

/// What the system of record says a gate must hold for a sale (see `restore_sale`).
#[derive(Clone, Debug, Default)]
pub struct GateRecords {
    /// Every active order.
    pub holdings: Vec<Holding>,
    /// Every idempotency key, of active orders and others.
    pub keys: Vec<OrderKey>,
    /// Every access code bound to a buyer.
    pub codes: Vec<CodeBinding>,
}

impl GateRecords {
    /// The records of a sale's orders as `OrderStore::orders_for_gate` gives them.
    pub fn of_orders(orders: &[Order]) -> Self {
        let mut records = Self::default();
        for order in orders {
            if order.status.is_active() {
                records.holdings.push(Holding::from(order));
            }
            records.keys.extend(OrderKey::of(order));
            records.codes.extend(CodeBinding::of(order));
        }
        records
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

    /// Replaces a sale's state with what the system of record says: its version, its stock
    /// minus the active holdings, every idempotency key its orders were made with and every
    /// access code they bound. Used at start-up (embedded); a shared gate is repaired by
    /// `flashsale reconcile --repair` instead.
    fn restore_sale(
        &self,
        sale: &Sale,
        records: GateRecords,
    ) -> BoxFuture<'_, Result<(), GateError>>;

    /// Decides a purchase: a known idempotency key first (its order, whatever else changed since),
    /// then the sale's window, its pause, the buyer's limit, the access code and the stock. An
    /// access code is bound to the buyer by the purchase that takes stock with it.
    fn reserve(&self, reservation: &Reservation) -> BoxFuture<'_, Result<GateDecision, GateError>>;

    /// Gives back the stock an order holds, at `now` (when a sold-out sale's line goes on).
    /// Returns whether it did: a second release of the same order is a no-op, so stock comes
    /// back once per order. The order's idempotency key and access code stay.
    fn release(&self, holding: &Holding, now: Timestamp) -> BoxFuture<'_, Result<bool, GateError>>;

    /// Undoes a reservation whose order was never recorded (the store refused or failed it):
    /// the stock comes back and the key and the code are forgotten, so a retry is decided afresh.
    fn abandon(&self, holding: &Holding, now: Timestamp) -> BoxFuture<'_, Result<bool, GateError>>;

    /// The buyer an access code of the sale is bound to, if any.
    fn code_owner(
        &self,
        sale_id: &SaleId,
        code: &str,
    ) -> BoxFuture<'_, Result<Option<UserId>, GateError>>;

    /// The first step of a change from version `base_version` to `target` (the revision's sale),
    /// at `at`: atomically,
    /// only if the gate is at `base_version`, everything the target says (its window, its
    /// pause, its line's rate) except added stock, which waits for `finish_change` (the store
    /// records it first: it may never count fewer units than the gate sells). Units taken off
    /// sale come off `remaining` here, or nothing changes when fewer remain. The revision is kept
    /// as the gate's pending change until `finish_change`.
    fn begin_change<'a>(
        &'a self,
        base_version: u64,
        target: &'a SaleRevision,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<ChangeStep, GateError>>;

    /// The last step, once the store has recorded `target`: added stock goes on sale, and the
    /// pending change is done. Repeating it changes nothing; a gate already past `target` ignores it.
    fn finish_change<'a>(
        &'a self,
        target: &'a Sale,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<(), GateError>>;

    /// Changes the gate began and did not finish (a node died between the steps): any node
    /// finishes them.
    fn pending_changes(&self) -> BoxFuture<'_, Result<Vec<SaleRevision>, GateError>>;

    /// A number that moves whenever a sale is created or changed (`announce_sales_change`), so
    /// that nodes know when to reload their catalog.
    fn sales_revision(&self) -> BoxFuture<'_, Result<u64, GateError>>;

    fn announce_sales_change(&self) -> BoxFuture<'_, Result<(), GateError>>;

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
