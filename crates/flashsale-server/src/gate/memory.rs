//! The embedded stock gate: decisions in memory, with no IO.
//!
//! Per sale, the remaining stock is one atomic counter taken by compare-and-swap, and holdings
//! live in shards keyed by buyer. A purchase locks only its buyer's shard (so one buyer's
//! concurrent requests are serialized and the per-user limit is exact), and winners of different
//! shards never wait on each other. Once a sale is sold out, a request costs one uncontended
//! shard lock and one atomic load. Idempotency keys are kept per buyer for good (they name their
//! order also after it was cancelled), so memory grows with keyed orders, i.e. with winners.

use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use jiff::Timestamp;

use super::{
    ChangeStep, CodeBinding, GateDecision, GateError, GateRecords, Holding, OrderKey, Reservation,
    StockGate,
};
use crate::domain::{Admission, AdmissionChange, OrderId, Sale, SaleId, SaleRevision, UserId};
use crate::hashing::{entries_for_stock, FastMap, RandomState};
use crate::line::AdmissionLog;
use crate::BoxFuture;

/// Enough shards that two cores rarely meet on one; each empty shard costs a few dozen bytes.
const SHARDS_PER_SALE_MAX: usize = 64;
/// Units per shard below which a sale has fewer shards: a small sale has few winners to keep
/// apart, and thousands of small sales would otherwise cost kilobytes each in empty shards.
const UNITS_PER_SHARD: u64 = 64;
/// Access codes are fewer than buyers and bound once each.
const CODE_SHARDS_PER_SALE_MAX: usize = 16;
/// Set in a sale's `remaining` word while the operator pauses it.
const PAUSED: u64 = 1 << 63;
/// `ends_at_ms` of a sale without an end.
const NO_END: i64 = i64::MAX;

#[derive(Default)]
pub struct MemoryGate {
    // A std RwLock: sales are added rarely and the lock is never held across an await.
    sales: RwLock<FastMap<SaleId, Arc<SaleGate>>>,
    /// Where the waiting lines' admission changes go (the embedded line's journal), if any.
    admission_log: Option<Arc<dyn AdmissionLog>>,
    revision: AtomicU64,
}

struct SaleGate {
    sale_id: SaleId,
    /// Units on sale, with `PAUSED` set while the operator pauses the sale: one word, so that a
    /// purchase takes its units and sees a pause in one compare-and-swap (a pause answered is
    /// a pause every later purchase meets).
    remaining: AtomicU64,
    starts_at: Timestamp,
    /// Milliseconds; `NO_END` for none. Changed by an operator's change, read by every purchase.
    ends_at_ms: AtomicI64,
    /// Picks a buyer's shard; a seed of its own, apart from the shards' maps (the same hash
    /// picking the shard and the bucket would crowd each shard's buckets).
    shard_seed: RandomState,
    shards: Box<[Mutex<FastMap<UserId, Holder>>]>,
    /// Access code → the buyer it is bound to and the order that bound it.
    codes: Box<[Mutex<CodeShard>]>,
    /// The operator's changes, one at a time; also held while the line is told that the sale
    /// ran out or has stock again, so the line hears every change in the order it happened.
    change: Mutex<ChangeState>,
    /// The sale's waiting line, for a sale with one (and a gate given a log).
    line: Option<LineHook>,
}

/// Access code → the buyer it is bound to and the order that bound it.
type CodeShard = FastMap<String, (UserId, OrderId)>;

struct ChangeState {
    version: u64,
    stock: u64,
    /// The line's rate as the gate last told it.
    admit_per_sec: u32,
    /// A change begun and not finished (`begin_change`).
    pending: Option<SaleRevision>,
}

struct LineHook {
    log: Arc<dyn AdmissionLog>,
    /// The admission before any change was recorded.
    initial: Admission,
}

/// Why units could not be taken.
enum Untaken {
    Paused,
    SoldOut(u64),
}

/// What the gate knows of one buyer of a sale: the orders holding stock, and the keys of every
/// order made with one.
#[derive(Default)]
struct Holder {
    quantity: u32,
    orders: Vec<HeldOrder>,
    keys: Vec<(String, OrderId)>,
}

struct HeldOrder {
    order_id: OrderId,
    quantity: u32,
}

impl Holder {
    fn key_owner(&self, key: &str) -> Option<&OrderId> {
        self.keys
            .iter()
            .find(|(known, _)| known == key)
            .map(|(_, order_id)| order_id)
    }

    fn hold(&mut self, order_id: OrderId, quantity: u32, key: Option<String>) {
        self.quantity += quantity;
        if let Some(key) = key {
            if self.key_owner(&key).is_none() {
                self.keys.push((key, order_id.clone()));
            }
        }
        // Most buyers hold one order: room for exactly one, not the four a first push makes.
        self.orders.reserve_exact(1);
        self.orders.push(HeldOrder { order_id, quantity });
    }

    fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.keys.is_empty()
    }
}

/// The shards of a sale of `stock` units: one per `UNITS_PER_SHARD`, 1 to the most. Fixed when
/// the gate takes the sale up (a stock raised later grows the shards' maps, not their number).
fn shards_for(stock: u64) -> usize {
    usize::try_from(stock.div_ceil(UNITS_PER_SHARD)).map_or(SHARDS_PER_SALE_MAX, |shards| {
        shards.clamp(1, SHARDS_PER_SALE_MAX)
    })
}

/// A shard's share of the buyers `units` can go to, with an eighth more for the shards the hash
/// favours.
fn holders_per_shard(units: u64, shards: usize) -> usize {
    let share = entries_for_stock(units).div_ceil(shards);
    share + share / 8
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; every mutation under these locks is a
    // single insert, remove or assignment, so the data is whole: keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SaleGate {
    fn new(sale: &Sale, remaining: u64, log: Option<&Arc<dyn AdmissionLog>>) -> Self {
        // Sized for what is left to sell: a sale restored sold out sets nothing aside.
        let shards = shards_for(sale.stock);
        let holders = holders_per_shard(remaining, shards);
        let line = match (log, &sale.waiting_room) {
            (Some(log), Some(room)) => Some(LineHook {
                log: Arc::clone(log),
                initial: Admission::initial(sale, room),
            }),
            _ => None,
        };
        Self {
            sale_id: sale.id.clone(),
            remaining: AtomicU64::new(remaining | if sale.paused { PAUSED } else { 0 }),
            starts_at: sale.starts_at,
            ends_at_ms: AtomicI64::new(end_ms(sale)),
            shard_seed: RandomState::default(),
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(FastMap::with_capacity_and_hasher(
                        holders,
                        Default::default(),
                    ))
                })
                .collect(),
            codes: (0..shards.min(CODE_SHARDS_PER_SALE_MAX))
                .map(|_| Mutex::new(FastMap::default()))
                .collect(),
            change: Mutex::new(ChangeState {
                version: sale.version,
                stock: sale.stock,
                admit_per_sec: sale.waiting_room.map_or(0, |room| room.admit_per_sec),
                pending: None,
            }),
            line,
        }
    }

    fn shard(&self, user_id: &UserId) -> MutexGuard<'_, FastMap<UserId, Holder>> {
        let index = (self.shard_seed.hash_one(user_id) % self.shards.len() as u64) as usize;
        lock(&self.shards[index])
    }

    fn code_shard(&self, code: &str) -> MutexGuard<'_, CodeShard> {
        let index = (self.shard_seed.hash_one(code) % self.codes.len() as u64) as usize;
        lock(&self.codes[index])
    }

    /// Tells the line what changed at `at_ms`; call with `change` held.
    fn tell_line(&self, at_ms: i64, change: AdmissionChange) {
        if let Some(line) = &self.line {
            line.log.record(&self.sale_id, line.initial, at_ms, change);
        }
    }

    /// Takes `quantity` units if the sale is not paused and that many remain. The one purchase
    /// that takes the last unit does so holding `change` and tells the line at once, at its own
    /// time: a sold-out sale's line stops at the moment the last unit goes.
    fn take(&self, quantity: u64, at_ms: i64) -> Result<(), Untaken> {
        loop {
            let current = self.remaining.load(Ordering::Acquire);
            if current & PAUSED != 0 {
                return Err(Untaken::Paused);
            }
            let Some(next) = current.checked_sub(quantity) else {
                return Err(Untaken::SoldOut(current));
            };
            if next == 0 && self.line.is_some() {
                let _changes = lock(&self.change);
                if self
                    .remaining
                    .compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.tell_line(at_ms, sold_out(true));
                    return Ok(());
                }
                continue;
            }
            if self
                .remaining
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Puts `quantity` units back on sale; the return that ends a sell-out tells the line (under
    /// `change`, so it cannot overtake the sell-out it ends); `change_held` when the caller holds
    /// it already.
    fn return_units(&self, quantity: u64, at_ms: i64, change_held: bool) {
        loop {
            let current = self.remaining.load(Ordering::Acquire);
            if current & !PAUSED == 0 && self.line.is_some() {
                let _changes = (!change_held).then(|| lock(&self.change));
                let before = self.remaining.fetch_add(quantity, Ordering::AcqRel);
                if before & !PAUSED == 0 {
                    self.tell_line(at_ms, sold_out(false));
                }
                return;
            }
            if self
                .remaining
                .compare_exchange_weak(
                    current,
                    current + quantity,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                return;
            }
        }
    }

    fn reserve(&self, reservation: &Reservation) -> GateDecision {
        let order = &reservation.order;
        let mut holders = self.shard(&order.user_id);
        let holder = holders.get(&order.user_id);
        if let Some(key) = &order.idempotency_key {
            if let Some(order_id) = holder.and_then(|holder| holder.key_owner(key)) {
                return GateDecision::SameKey {
                    order_id: order_id.clone(),
                };
            }
        }
        let now = order.created_at;
        if now < self.starts_at {
            return GateDecision::NotStarted;
        }
        if now.as_millisecond() >= self.ends_at_ms.load(Ordering::Acquire) {
            return GateDecision::Ended;
        }
        if self.remaining.load(Ordering::Acquire) & PAUSED != 0 {
            return GateDecision::Paused;
        }
        if let Some(holder) = holder {
            if holder.quantity + order.quantity > reservation.per_user_limit {
                if let Some(first) = holder.orders.first() {
                    return GateDecision::AlreadyPurchased {
                        order_id: first.order_id.clone(),
                    };
                }
            }
        }
        // The code's shard stays locked from the check to the binding: of two buyers racing
        // with one code, exactly one takes stock with it.
        let mut code_guard = order.access_code.as_deref().map(|code| {
            let shard = self.code_shard(code);
            (code, shard)
        });
        if let Some((code, shard)) = &code_guard {
            if shard
                .get(*code)
                .is_some_and(|(owner, _)| *owner != order.user_id)
            {
                return GateDecision::CodeTaken;
            }
        }
        match self.take(u64::from(order.quantity), now.as_millisecond()) {
            Ok(()) => {}
            Err(Untaken::Paused) => return GateDecision::Paused,
            Err(Untaken::SoldOut(remaining)) => return GateDecision::SoldOut { remaining },
        }
        if let Some((code, shard)) = code_guard.as_mut() {
            shard
                .entry((*code).to_owned())
                .or_insert_with(|| (order.user_id.clone(), order.id.clone()));
        }
        drop(code_guard);
        holders.entry(order.user_id.clone()).or_default().hold(
            order.id.clone(),
            order.quantity,
            order.idempotency_key.clone(),
        );
        GateDecision::Reserved { created_at: now }
    }

    /// Gives back an order's stock; `forget` also drops the key and the code it was made with
    /// (the order was never recorded).
    fn release(&self, holding: &Holding, forget: bool, at_ms: i64) -> bool {
        let mut holders = self.shard(&holding.user_id);
        let Entry::Occupied(mut entry) = holders.entry(holding.user_id.clone()) else {
            return false;
        };
        let holder = entry.get_mut();
        if forget {
            holder
                .keys
                .retain(|(_, order_id)| *order_id != holding.order_id);
            if let Some(code) = &holding.access_code {
                let mut shard = self.code_shard(code);
                if shard
                    .get(code)
                    .is_some_and(|(_, order_id)| *order_id == holding.order_id)
                {
                    shard.remove(code);
                }
            }
        }
        let released = match holder
            .orders
            .iter()
            .position(|held| held.order_id == holding.order_id)
        {
            Some(position) => {
                let held = holder.orders.swap_remove(position);
                holder.quantity -= held.quantity;
                self.return_units(u64::from(held.quantity), at_ms, false);
                true
            }
            None => false,
        };
        if holder.is_empty() {
            entry.remove();
        }
        released
    }

    fn add_holding(&self, holding: Holding) {
        let mut holders = self.shard(&holding.user_id);
        holders.entry(holding.user_id).or_default().hold(
            holding.order_id,
            holding.quantity,
            holding.idempotency_key,
        );
    }

    fn add_key(&self, key: OrderKey) {
        let mut holders = self.shard(&key.user_id);
        let holder = holders.entry(key.user_id).or_default();
        if holder.key_owner(&key.key).is_none() {
            holder.keys.push((key.key, key.order_id));
        }
    }

    fn add_code(&self, binding: CodeBinding) {
        self.code_shard(&binding.code)
            .entry(binding.code)
            .or_insert((binding.user_id, binding.order_id));
    }

    fn key_owner(&self, user_id: &UserId, key: &str) -> Option<OrderId> {
        self.shard(user_id)
            .get(user_id)
            .and_then(|holder| holder.key_owner(key).cloned())
    }

    fn units(&self) -> u64 {
        self.remaining.load(Ordering::Acquire) & !PAUSED
    }

    fn begin_change(
        &self,
        base_version: u64,
        revision: &SaleRevision,
        at: Timestamp,
    ) -> ChangeStep {
        let target = &revision.sale;
        let mut state = lock(&self.change);
        if state.version == target.version && state.pending.as_ref() == Some(revision) {
            return ChangeStep::Applied;
        }
        if state.version != base_version {
            return ChangeStep::Conflict {
                pending: state.pending.clone().map(Box::new),
            };
        }
        let at_ms = at.as_millisecond();
        let mut line_change = AdmissionChange::default();
        let removed = state.stock.saturating_sub(target.stock);
        if removed > 0 {
            loop {
                let current = self.remaining.load(Ordering::Acquire);
                let units = current & !PAUSED;
                if units < removed {
                    return ChangeStep::InsufficientStock { remaining: units };
                }
                if self
                    .remaining
                    .compare_exchange_weak(
                        current,
                        current - removed,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    if units == removed {
                        line_change.sold_out = Some(true);
                    }
                    break;
                }
            }
            state.stock -= removed;
        }
        self.ends_at_ms.store(end_ms(target), Ordering::Release);
        let was_paused = self.remaining.load(Ordering::Acquire) & PAUSED != 0;
        if target.paused != was_paused {
            if target.paused {
                self.remaining.fetch_or(PAUSED, Ordering::AcqRel);
            } else {
                self.remaining.fetch_and(!PAUSED, Ordering::AcqRel);
            }
            line_change.paused = Some(target.paused);
        }
        let rate = target.waiting_room.map_or(0, |room| room.admit_per_sec);
        if rate != state.admit_per_sec {
            state.admit_per_sec = rate;
            line_change.admit_per_sec = Some(rate);
        }
        if line_change != AdmissionChange::default() {
            self.tell_line(at_ms, line_change);
        }
        state.version = target.version;
        state.pending = Some(revision.clone());
        ChangeStep::Applied
    }

    fn finish_change(&self, target: &Sale, at: Timestamp) {
        let mut state = lock(&self.change);
        if state.version != target.version {
            return;
        }
        if target.stock > state.stock {
            let added = target.stock - state.stock;
            state.stock = target.stock;
            self.return_units(added, at.as_millisecond(), true);
        }
        state.pending = None;
    }
}

fn sold_out(value: bool) -> AdmissionChange {
    AdmissionChange {
        sold_out: Some(value),
        ..AdmissionChange::default()
    }
}

fn end_ms(sale: &Sale) -> i64 {
    sale.ends_at
        .map_or(NO_END, |ends_at| ends_at.as_millisecond())
}

impl MemoryGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// A gate that tells `log` of every change of a waiting line's admission the moment it
    /// happens (the last unit taken, stock back, a pause, a new rate).
    pub fn with_admission_log(log: Arc<dyn AdmissionLog>) -> Self {
        Self {
            admission_log: Some(log),
            ..Self::default()
        }
    }

    fn sale(&self, sale_id: &SaleId) -> Result<Arc<SaleGate>, GateError> {
        self.sales
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(sale_id)
            .cloned()
            .ok_or_else(|| GateError::UnknownSale(sale_id.clone()))
    }

    fn put_sale(&self, sale_id: &SaleId, gate: SaleGate) {
        self.sales
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(sale_id.clone(), Arc::new(gate));
    }

    fn sale_gate(&self, sale: &Sale, remaining: u64) -> SaleGate {
        SaleGate::new(sale, remaining, self.admission_log.as_ref())
    }
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(value))
}

impl StockGate for MemoryGate {
    fn open_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), GateError>> {
        if self.sale(&sale.id).is_err() {
            self.put_sale(&sale.id, self.sale_gate(sale, sale.stock));
        }
        ready(Ok(()))
    }

    fn restore_sale(
        &self,
        sale: &Sale,
        records: GateRecords,
    ) -> BoxFuture<'_, Result<(), GateError>> {
        let held: u64 = records.holdings.iter().map(|h| u64::from(h.quantity)).sum();
        // The store's constraints keep its active orders within the stock; more held than the
        // stock means the store itself is corrupt, and serving would oversell.
        let Some(remaining) = sale.stock.checked_sub(held) else {
            return ready(Err(GateError::Corrupt(format!(
                "sale {}: the store's active orders hold {held} units of a stock of {}",
                sale.id, sale.stock
            ))));
        };
        let gate = self.sale_gate(sale, remaining);
        for holding in records.holdings {
            gate.add_holding(holding);
        }
        for key in records.keys {
            gate.add_key(key);
        }
        for binding in records.codes {
            gate.add_code(binding);
        }
        self.put_sale(&sale.id, gate);
        ready(Ok(()))
    }

    fn reserve(&self, reservation: &Reservation) -> BoxFuture<'_, Result<GateDecision, GateError>> {
        ready(
            self.sale(&reservation.order.sale_id)
                .map(|sale| sale.reserve(reservation)),
        )
    }

    fn release(&self, holding: &Holding, now: Timestamp) -> BoxFuture<'_, Result<bool, GateError>> {
        ready(
            self.sale(&holding.sale_id)
                .map(|sale| sale.release(holding, false, now.as_millisecond())),
        )
    }

    fn abandon(&self, holding: &Holding, now: Timestamp) -> BoxFuture<'_, Result<bool, GateError>> {
        ready(
            self.sale(&holding.sale_id)
                .map(|sale| sale.release(holding, true, now.as_millisecond())),
        )
    }

    fn key_owner(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        key: &str,
    ) -> BoxFuture<'_, Result<Option<OrderId>, GateError>> {
        let owner = self
            .sale(sale_id)
            .ok()
            .and_then(|sale| sale.key_owner(user_id, key));
        ready(Ok(owner))
    }

    fn code_owner(
        &self,
        sale_id: &SaleId,
        code: &str,
    ) -> BoxFuture<'_, Result<Option<UserId>, GateError>> {
        let owner = self.sale(sale_id).ok().and_then(|sale| {
            sale.code_shard(code)
                .get(code)
                .map(|(user_id, _)| user_id.clone())
        });
        ready(Ok(owner))
    }

    fn remaining(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
        ready(Ok(self.sale(sale_id).ok().map(|sale| sale.units())))
    }

    fn held(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
        let held = self.sale(sale_id).ok().map(|sale| {
            sale.shards
                .iter()
                .map(|shard| {
                    lock(shard)
                        .values()
                        .map(|holder| u64::from(holder.quantity))
                        .sum::<u64>()
                })
                .sum()
        });
        ready(Ok(held))
    }

    fn begin_change<'a>(
        &'a self,
        base_version: u64,
        target: &'a SaleRevision,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<ChangeStep, GateError>> {
        ready(
            self.sale(&target.sale.id)
                .map(|sale| sale.begin_change(base_version, target, at)),
        )
    }

    fn finish_change<'a>(
        &'a self,
        target: &'a Sale,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<(), GateError>> {
        ready(
            self.sale(&target.id)
                .map(|sale| sale.finish_change(target, at)),
        )
    }

    fn pending_changes(&self) -> BoxFuture<'_, Result<Vec<SaleRevision>, GateError>> {
        let sales: Vec<Arc<SaleGate>> = self
            .sales
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect();
        let pending = sales
            .iter()
            .filter_map(|sale| lock(&sale.change).pending.clone())
            .collect();
        ready(Ok(pending))
    }

    fn sales_revision(&self) -> BoxFuture<'_, Result<u64, GateError>> {
        ready(Ok(self.revision.load(Ordering::Acquire)))
    }

    fn announce_sales_change(&self) -> BoxFuture<'_, Result<(), GateError>> {
        self.revision.fetch_add(1, Ordering::AcqRel);
        ready(Ok(()))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), GateError>> {
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Order;

    fn capacities(gate: &SaleGate) -> Vec<usize> {
        gate.shards
            .iter()
            .map(|shard| shard.lock().unwrap().capacity())
            .collect()
    }

    fn sell_one_unit_to_each_buyer(gate: &SaleGate, sale: &Sale) {
        let now: Timestamp = "2026-12-01T12:00:01Z".parse().unwrap();
        for buyer in 0..sale.stock {
            let reservation = Reservation {
                order: Order::pending_for_test(&sale.id, &format!("buyer-{buyer}"), now),
                per_user_limit: sale.per_user_limit,
                payment_window_secs: sale.payment_window_secs,
            };
            assert!(matches!(
                gate.reserve(&reservation),
                GateDecision::Reserved { .. }
            ));
        }
    }

    /// What a sale costs the gate before anyone buys: the gate's own struct, its shards and code
    /// shards (empty maps allocate nothing).
    fn fixed_bytes(gate: &SaleGate) -> usize {
        let shard = std::mem::size_of::<Mutex<FastMap<UserId, Holder>>>();
        let code_shard = std::mem::size_of::<Mutex<CodeShard>>();
        std::mem::size_of::<SaleGate>()
            + gate.shards.len() * shard
            + gate.codes.len() * code_shard
            + capacities(gate).iter().sum::<usize>() * std::mem::size_of::<(UserId, Holder)>()
    }

    #[test]
    fn a_small_sale_costs_the_gate_little_until_buyers_come() {
        let sale = Sale::of_stock_for_test(100);
        let gate = SaleGate::new(&sale, sale.stock, None);
        assert_eq!(gate.shards.len(), 2);
        assert_eq!(capacities(&gate), [0, 0]);
        assert!(fixed_bytes(&gate) <= 1024, "{} bytes", fixed_bytes(&gate));
        sell_one_unit_to_each_buyer(&gate, &sale);
        assert_eq!(gate.remaining.load(Ordering::Acquire), 0);
        let big = Sale::of_stock_for_test(1_000_000);
        assert_eq!(SaleGate::new(&big, big.stock, None).shards.len(), 64);
    }

    #[test]
    fn a_sale_sold_to_one_buyer_per_unit_never_grows_its_maps() {
        let sale = Sale::of_stock_for_test(64_000);
        let gate = SaleGate::new(&sale, sale.stock, None);
        let before = capacities(&gate);
        sell_one_unit_to_each_buyer(&gate, &sale);
        assert_eq!(gate.remaining.load(Ordering::Acquire), 0);
        assert_eq!(
            capacities(&gate),
            before,
            "a shard's map grew during the sale"
        );
    }
}
