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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use jiff::Timestamp;

use super::{GateDecision, GateError, Holding, OrderKey, Reservation, StockGate};
use crate::domain::{OrderId, Sale, SaleId, UserId};
use crate::hashing::{entries_for_stock, FastMap, RandomState};
use crate::BoxFuture;

/// Enough shards that two cores rarely meet on one; each empty shard costs a few dozen bytes.
const SHARDS_PER_SALE: usize = 64;

#[derive(Default)]
pub struct MemoryGate {
    // A std RwLock: sales are added rarely and the lock is never held across an await.
    sales: RwLock<FastMap<SaleId, Arc<SaleGate>>>,
}

struct SaleGate {
    remaining: AtomicU64,
    starts_at: Timestamp,
    ends_at: Option<Timestamp>,
    /// Picks a buyer's shard; a seed of its own, apart from the shards' maps (the same hash
    /// picking the shard and the bucket would crowd each shard's buckets).
    shard_seed: RandomState,
    shards: Box<[Mutex<FastMap<UserId, Holder>>]>,
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

/// A shard's share of the buyers `units` can go to, with an eighth more for the shards the hash
/// favours.
fn holders_per_shard(units: u64) -> usize {
    let share = entries_for_stock(units).div_ceil(SHARDS_PER_SALE);
    share + share / 8
}

impl SaleGate {
    fn new(sale: &Sale, remaining: u64) -> Self {
        // Sized for what is left to sell: a sale restored sold out sets nothing aside.
        let holders = holders_per_shard(remaining);
        Self {
            remaining: AtomicU64::new(remaining),
            starts_at: sale.starts_at,
            ends_at: sale.ends_at,
            shard_seed: RandomState::default(),
            shards: (0..SHARDS_PER_SALE)
                .map(|_| {
                    Mutex::new(FastMap::with_capacity_and_hasher(
                        holders,
                        Default::default(),
                    ))
                })
                .collect(),
        }
    }

    fn shard(&self, user_id: &UserId) -> MutexGuard<'_, FastMap<UserId, Holder>> {
        let index = (self.shard_seed.hash_one(user_id) % SHARDS_PER_SALE as u64) as usize;
        // A poisoned shard means a panic while holding it; the map itself is still whole
        // (every mutation below is a single insert or remove), so keep serving.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes `quantity` units if that many remain; otherwise says how many do.
    fn take(&self, quantity: u64) -> Result<(), u64> {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |remaining| {
                remaining.checked_sub(quantity)
            })
            .map(|_| ())
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
        if self.ends_at.is_some_and(|ends_at| now >= ends_at) {
            return GateDecision::Ended;
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
        if let Err(remaining) = self.take(u64::from(order.quantity)) {
            return GateDecision::SoldOut { remaining };
        }
        holders.entry(order.user_id.clone()).or_default().hold(
            order.id.clone(),
            order.quantity,
            order.idempotency_key.clone(),
        );
        GateDecision::Reserved { created_at: now }
    }

    /// Gives back an order's stock; `forget_key` also drops the key it was made with (the
    /// order was never recorded).
    fn release(&self, holding: &Holding, forget_key: bool) -> bool {
        let mut holders = self.shard(&holding.user_id);
        let Entry::Occupied(mut entry) = holders.entry(holding.user_id.clone()) else {
            return false;
        };
        let holder = entry.get_mut();
        if forget_key {
            holder
                .keys
                .retain(|(_, order_id)| *order_id != holding.order_id);
        }
        let released = match holder
            .orders
            .iter()
            .position(|held| held.order_id == holding.order_id)
        {
            Some(position) => {
                let held = holder.orders.swap_remove(position);
                holder.quantity -= held.quantity;
                self.remaining
                    .fetch_add(u64::from(held.quantity), Ordering::AcqRel);
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

    fn key_owner(&self, user_id: &UserId, key: &str) -> Option<OrderId> {
        self.shard(user_id)
            .get(user_id)
            .and_then(|holder| holder.key_owner(key).cloned())
    }
}

impl MemoryGate {
    pub fn new() -> Self {
        Self::default()
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
}

impl StockGate for MemoryGate {
    fn open_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), GateError>> {
        if self.sale(&sale.id).is_err() {
            self.put_sale(&sale.id, SaleGate::new(sale, sale.stock));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn restore_sale(
        &self,
        sale: &Sale,
        holdings: Vec<Holding>,
        keys: Vec<OrderKey>,
    ) -> BoxFuture<'_, Result<(), GateError>> {
        let held: u64 = holdings.iter().map(|h| u64::from(h.quantity)).sum();
        // The store's constraints keep its active orders within the stock; more held than the
        // stock means the store itself is corrupt, and serving would oversell.
        let Some(remaining) = sale.stock.checked_sub(held) else {
            return Box::pin(std::future::ready(Err(GateError::Corrupt(format!(
                "sale {}: the store's active orders hold {held} units of a stock of {}",
                sale.id, sale.stock
            )))));
        };
        let gate = SaleGate::new(sale, remaining);
        for holding in holdings {
            gate.add_holding(holding);
        }
        for key in keys {
            gate.add_key(key);
        }
        self.put_sale(&sale.id, gate);
        Box::pin(std::future::ready(Ok(())))
    }

    fn reserve(&self, reservation: &Reservation) -> BoxFuture<'_, Result<GateDecision, GateError>> {
        let decision = self
            .sale(&reservation.order.sale_id)
            .map(|sale| sale.reserve(reservation));
        Box::pin(std::future::ready(decision))
    }

    fn release(&self, holding: &Holding) -> BoxFuture<'_, Result<bool, GateError>> {
        let released = self
            .sale(&holding.sale_id)
            .map(|sale| sale.release(holding, false));
        Box::pin(std::future::ready(released))
    }

    fn abandon(&self, holding: &Holding) -> BoxFuture<'_, Result<bool, GateError>> {
        let released = self
            .sale(&holding.sale_id)
            .map(|sale| sale.release(holding, true));
        Box::pin(std::future::ready(released))
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
        Box::pin(std::future::ready(Ok(owner)))
    }

    fn remaining(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
        let remaining = self
            .sale(sale_id)
            .ok()
            .map(|sale| sale.remaining.load(Ordering::Acquire));
        Box::pin(std::future::ready(Ok(remaining)))
    }

    fn held(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
        let held = self.sale(sale_id).ok().map(|sale| {
            sale.shards
                .iter()
                .map(|shard| {
                    shard
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .values()
                        .map(|holder| u64::from(holder.quantity))
                        .sum::<u64>()
                })
                .sum()
        });
        Box::pin(std::future::ready(Ok(held)))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), GateError>> {
        Box::pin(std::future::ready(Ok(())))
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

    #[test]
    fn a_sale_sold_to_one_buyer_per_unit_never_grows_its_maps() {
        let sale = Sale::of_stock_for_test(64_000);
        let gate = SaleGate::new(&sale, sale.stock);
        let before = capacities(&gate);
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
        assert_eq!(gate.remaining.load(Ordering::Acquire), 0);
        assert_eq!(
            capacities(&gate),
            before,
            "a shard's map grew during the sale"
        );
    }
}
