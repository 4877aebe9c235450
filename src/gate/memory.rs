//! The embedded stock gate: decisions in memory, with no IO.
//!
//! Per sale, the remaining stock is one atomic counter taken by compare-and-swap, and holdings
//! live in shards keyed by buyer. A purchase locks only its buyer's shard (so one buyer's
//! concurrent requests are serialized and the per-user limit is exact), and winners of different
//! shards never wait on each other. Once a sale is sold out, a request costs one uncontended
//! shard lock and one atomic load.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::{GateDecision, GateError, Holding, Reservation, StockGate};
use crate::domain::{OrderId, Sale, SaleId, UserId};
use crate::BoxFuture;

/// Enough shards that two cores rarely meet on one; each empty shard costs a few dozen bytes.
const SHARDS_PER_SALE: usize = 64;

#[derive(Default)]
pub struct MemoryGate {
    // A std RwLock: sales are added rarely and the lock is never held across an await.
    sales: RwLock<HashMap<SaleId, Arc<SaleGate>>>,
}

struct SaleGate {
    remaining: AtomicU64,
    shards: Box<[Mutex<HashMap<UserId, Holder>>]>,
}

#[derive(Default)]
struct Holder {
    quantity: u32,
    orders: Vec<HeldOrder>,
}

struct HeldOrder {
    order_id: OrderId,
    quantity: u32,
    idempotency_key: Option<String>,
}

impl SaleGate {
    fn new(remaining: u64) -> Self {
        Self {
            remaining: AtomicU64::new(remaining),
            shards: (0..SHARDS_PER_SALE)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, user_id: &UserId) -> MutexGuard<'_, HashMap<UserId, Holder>> {
        let mut hasher = DefaultHasher::new();
        user_id.hash(&mut hasher);
        let index = (hasher.finish() % SHARDS_PER_SALE as u64) as usize;
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
        if let Some(holder) = holders.get(&order.user_id) {
            if let Some(key) = &order.idempotency_key {
                if let Some(same) = holder
                    .orders
                    .iter()
                    .find(|held| held.idempotency_key.as_ref() == Some(key))
                {
                    return GateDecision::SameKey {
                        order_id: same.order_id.clone(),
                    };
                }
            }
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
        let holder = holders.entry(order.user_id.clone()).or_default();
        holder.quantity += order.quantity;
        holder.orders.push(HeldOrder {
            order_id: order.id.clone(),
            quantity: order.quantity,
            idempotency_key: order.idempotency_key.clone(),
        });
        GateDecision::Reserved
    }

    fn release(&self, holding: &Holding) -> bool {
        let mut holders = self.shard(&holding.user_id);
        let Entry::Occupied(mut entry) = holders.entry(holding.user_id.clone()) else {
            return false;
        };
        let holder = entry.get_mut();
        let Some(position) = holder
            .orders
            .iter()
            .position(|held| held.order_id == holding.order_id)
        else {
            return false;
        };
        let held = holder.orders.swap_remove(position);
        holder.quantity -= held.quantity;
        if holder.orders.is_empty() {
            entry.remove();
        }
        self.remaining
            .fetch_add(u64::from(held.quantity), Ordering::AcqRel);
        true
    }

    fn add_holding(&self, holding: Holding) {
        let mut holders = self.shard(&holding.user_id);
        let holder = holders.entry(holding.user_id).or_default();
        holder.quantity += holding.quantity;
        holder.orders.push(HeldOrder {
            order_id: holding.order_id,
            quantity: holding.quantity,
            idempotency_key: holding.idempotency_key,
        });
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
            self.put_sale(&sale.id, SaleGate::new(sale.stock));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn restore_sale(
        &self,
        sale: &Sale,
        holdings: Vec<Holding>,
    ) -> BoxFuture<'_, Result<(), GateError>> {
        let held: u64 = holdings.iter().map(|h| u64::from(h.quantity)).sum();
        let gate = SaleGate::new(sale.stock.saturating_sub(held));
        for holding in holdings {
            gate.add_holding(holding);
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
            .map(|sale| sale.release(holding));
        Box::pin(std::future::ready(released))
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
