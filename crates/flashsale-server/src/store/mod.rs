//! The order store is the system of record: sales and orders, durable. Every write that answers
//! a client is committed before the answer leaves. Besides the gate's own checks, a store
//! enforces stock, the per-buyer limit and the idempotency key with constraints, so a bug in a
//! gate cannot oversell.

mod commands;
mod journal;
mod postgres;
mod sqlite;

pub use journal::{JournalStore, JournalStoreOptions, WriterBatching};
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{SqliteStore, SqliteStoreOptions};

use jiff::Timestamp;

use crate::domain::{
    Action, Actor, EventKind, Order, OrderId, OrderStatus, Refusal, Sale, SaleId, SaleRevision,
    UserId, WaitingRoom,
};
use crate::BoxFuture;

/// Quantities summed over a sale's orders in each status, and the store's own count of what is
/// left (kept by the store next to the orders, so the two can be checked against each other).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaleTally {
    /// Whether the sale is archived: ended and settled, its gate state dropped, the store alone
    /// answering for it (cluster; the embedded store never archives).
    pub archived: bool,
    pub remaining: u64,
    pub pending: u64,
    pub paid: u64,
    pub cancelled: u64,
    pub expired: u64,
    pub refunded: u64,
}

/// Which orders to list, newest first.
#[derive(Clone, Debug)]
pub struct OrderQuery {
    pub user_id: Option<UserId>,
    pub sale_id: Option<SaleId>,
    /// Only orders older than this one (the previous page's last order).
    pub before: Option<OrderId>,
    pub status: Option<OrderStatus>,
    pub limit: usize,
}

/// The result of asking a store to change an order (pay, cancel, expire, refund, what a payment
/// provider said).
#[derive(Clone, Debug)]
pub struct Transition {
    /// The order after the change (or as it was, when nothing changed).
    pub order: Order,
    /// True when this call moved the order out of an active status, so its stock must go back
    /// to the gate. Exactly one call per order ever sees true.
    pub released: bool,
    /// True when this call changed the order (so the work the change calls for, such as
    /// refunding late money, is this caller's: exactly one call makes each change).
    pub changed: bool,
    /// Set when the change was refused (possibly after recording an overdue order as expired).
    pub refusal: Option<Refusal>,
}

/// An event as a store gives it back: its facts, and its data (the Order or the Sale right after
/// the change) as the JSON the API writes for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub sale_id: SaleId,
    /// Per sale: 1, 2, 3 … with no gap.
    pub sequence: u64,
    pub kind: EventKind,
    /// The order or sale id the event is about.
    pub subject: String,
    /// When the change took effect.
    pub at: Timestamp,
    pub data: String,
}

/// A sale's last event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventHead {
    pub sale_id: SaleId,
    pub sequence: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the order store is overloaded: its write queue is full")]
    Overloaded,
    #[error("the order store is closed")]
    Closed,
    #[error("the order store failed: {0}")]
    Failed(String),
    /// Writes are refused for lack of disk space; reads go on, and writing resumes by itself.
    #[error("the order store is out of space: {0}")]
    NoSpace(String),
}

/// Why a store refused an order the gate had accepted.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("the buyer already has an order with this idempotency key")]
    SameKey(Box<Order>),
    #[error("the store's per-buyer limit refused the order")]
    LimitExceeded,
    #[error("the store's stock count refused the order")]
    SoldOut,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a store did not record a sale's new version.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The store holds another version than the one the change was made from (it is not the
    /// target's: a repeated change of the same version is recorded once and answers `Ok`).
    #[error("the store holds version {stored} of the sale, not the one the change was made from")]
    Conflict { stored: u64 },
    #[error("no such sale")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("no such order")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub trait OrderStore: Send + Sync + 'static {
    fn create_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), StoreError>>;

    fn sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>>;

    /// One sale as recorded now (not a cached copy).
    fn sale(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<Sale>, StoreError>>;

    /// Records a sale's next version, in one write (a journal record, a transaction), if the
    /// store holds the version before it; `Ok` also when it holds this version already. Every
    /// change of a sale goes through here (the place its event is recorded with it).
    fn change_sale<'a>(
        &'a self,
        revision: &'a SaleRevision,
    ) -> BoxFuture<'a, Result<(), ChangeError>>;

    /// Records a new order. The order is queued before this returns (so dropping the future
    /// does not lose it); the future resolves once it is committed or refused.
    fn insert_order(&self, order: Order) -> BoxFuture<'static, Result<(), InsertError>>;

    fn order(&self, order_id: &OrderId) -> BoxFuture<'_, Result<Option<Order>, StoreError>>;

    fn order_by_key(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<Order>, StoreError>>;

    fn orders(&self, query: OrderQuery) -> BoxFuture<'_, Result<Vec<Order>, StoreError>>;

    /// Applies `domain::decide` to the order and records its verdict, atomically.
    fn transition(
        &self,
        order_id: &OrderId,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Transition, TransitionError>>;

    /// Expires up to `max` pending orders whose payment window closed by `now`, returning them.
    fn expire_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Order>, StoreError>>;

    /// Every pending or paid order: what the gate must hold after a restart.
    fn active_orders(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>>;

    /// What a gate must know of a sale when it is rebuilt: every active order (its holding),
    /// every order made with an idempotency key (the key names it for good) and every order made
    /// with an access code (the code stays its buyer's).
    fn orders_for_gate(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>>;

    fn tally(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<SaleTally, StoreError>>;

    /// Resolves once every write queued before this call is committed or refused.
    fn barrier(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Commits what is queued and stops taking writes.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Orders that left an active status but whose stock the gate has not confirmed back (the
    /// process died between the two, or the gate was away): the one retry record of stock
    /// returns, written in the transaction that moved the order.
    fn unreturned(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>>;

    /// Records that the gate has these orders' stock back.
    fn stock_returned(&self, order_ids: Vec<OrderId>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Up to `max` orders whose payment the server still has work on with the provider (an
    /// intent whose outcome it has not heard, a refund not confirmed), earliest deadline first.
    fn payments_unsettled(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>>;

    // --- the outbox: every change above records its events in the same commit ---------------

    /// Up to `limit` retained events of a sale with sequences after `after`, in order.
    fn events(
        &self,
        sale_id: &SaleId,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, StoreError>>;

    /// Every sale's last event sequence (sales without events are left out).
    fn event_heads(&self) -> BoxFuture<'_, Result<Vec<EventHead>, StoreError>>;

    /// Drops the events that took effect before `before` (the retention); returns how many.
    /// Sequences are never reused.
    fn prune_events(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// A waiting room as both stores keep it, in one text column: `admit_per_sec/pass_ttl_secs/
/// opens_before_secs` (NULL for a sale without one).
pub(crate) fn waiting_room_text(room: Option<&WaitingRoom>) -> Option<String> {
    room.map(|room| {
        format!(
            "{}/{}/{}",
            room.admit_per_sec, room.pass_ttl_secs, room.opens_before_secs
        )
    })
}

/// The room's draw seed as every store keeps it beside the room's text (a column or a field of
/// its own): the 32 bytes, or `None` (no room, or one made before seeds).
pub(crate) fn draw_seed_bytes(room: Option<&WaitingRoom>) -> Option<Vec<u8>> {
    room.and_then(|room| room.draw_seed)
        .map(|seed| seed.as_bytes().to_vec())
}

/// `room` with the seed a store read beside it; `None` when the bytes are not a seed.
pub(crate) fn with_draw_seed(mut room: WaitingRoom, seed: Option<&[u8]>) -> Option<WaitingRoom> {
    if let Some(bytes) = seed {
        room.draw_seed = Some(crate::domain::DrawSeed::from_slice(bytes)?);
    }
    Some(room)
}

/// Reads back what `waiting_room_text` wrote; `None` when the text is not of that form.
pub(crate) fn waiting_room_from_text(text: &str) -> Option<WaitingRoom> {
    let mut parts = text.split('/').map(str::parse::<u32>);
    let room = WaitingRoom {
        admit_per_sec: parts.next()?.ok()?,
        pass_ttl_secs: parts.next()?.ok()?,
        opens_before_secs: parts.next()?.ok()?,
        draw_seed: None,
    };
    parts.next().is_none().then_some(room)
}
