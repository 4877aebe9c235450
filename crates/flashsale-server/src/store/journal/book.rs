//! The embedded store's state in memory: every sale and order, with the indexes its reads and its
//! checks need, rebuilt from the journal at start. The checks repeat the gate's rules (stock, the
//! per-buyer limit, the idempotency key) so that no bug above the store can oversell.

use std::collections::hash_map::Entry;
use std::collections::{btree_map, BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;

use super::codec::EventFacts;
use super::events::{About, EventIndex, Kept};
use crate::domain::SaleRevision;
use crate::domain::{
    order_as_of, order_event, outcome, stock_event, Action, Actor, Event, EventKind, EventSubject,
    Order, OrderEvent, OrderId, OrderStatus, Outcome, Sale, SaleEvent, SaleId, UserId,
};
use crate::hashing::{entries_for_stock, FastMap};
use crate::store::{
    ChangeError, InsertError, OrderQuery, SaleTally, StoreError, Transition, TransitionError,
};

/// An order as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub order: Order,
    /// False from the moment the order leaves an active status until the gate confirmed it has
    /// the stock back: the record that lets any sweep finish a return a crash interrupted.
    pub stock_returned: bool,
}

struct SaleEntry {
    /// Shared with the sale's events that tell it as it was.
    sale: Arc<Sale>,
    tally: SaleTally,
}

#[derive(Default)]
pub struct Book {
    sales: FastMap<SaleId, SaleEntry>,
    /// Boxed: ids are made in time order, so the map's nodes fill only about half (a node
    /// splits in the middle and new ids keep landing in the right half); a node of boxes leaves
    /// 8 bytes empty per slot instead of a whole order (measured: RSS per order 0.95 → 0.7 KB).
    orders: BTreeMap<OrderId, Box<Stored>>,
    /// Each buyer's order ids, oldest first: the buyer's listing, and (a buyer has a few orders)
    /// the per-buyer limit and the idempotency keys, without indexes of their own. Given room
    /// for a new sale's buyers when the sale is recorded, so it does not rehash mid-sale.
    by_buyer: FastMap<UserId, Vec<OrderId>>,
    /// Pending orders by the end of their payment window (but those with an open intent, which
    /// the payments sweep settles with the provider).
    due: BTreeSet<(Timestamp, OrderId)>,
    unreturned: BTreeSet<OrderId>,
    /// Orders whose payment the server still has work on with the provider, by deadline.
    unsettled: BTreeSet<(Timestamp, OrderId)>,
    /// The outbox: every sale's events.
    events: EventIndex,
}

fn no_sale(sale_id: &SaleId) -> StoreError {
    StoreError::Failed(format!("no sale {sale_id}"))
}

impl Book {
    // --- reads -----------------------------------------------------------------------------

    pub fn sales(&self) -> Vec<Sale> {
        let mut sales: Vec<Sale> = self
            .sales
            .values()
            .map(|entry| Sale::clone(&entry.sale))
            .collect();
        sales.sort_by(|a, b| b.id.cmp(&a.id));
        sales
    }

    pub fn sale(&self, sale_id: &SaleId) -> Option<Sale> {
        self.sales
            .get(sale_id)
            .map(|entry| Sale::clone(&entry.sale))
    }

    pub fn order(&self, order_id: &OrderId) -> Option<&Stored> {
        self.orders.get(order_id).map(Box::as_ref)
    }

    /// A buyer's orders in one sale, oldest first.
    fn buyer_orders<'a>(
        &'a self,
        sale_id: &'a SaleId,
        user_id: &UserId,
    ) -> impl Iterator<Item = &'a Order> + 'a {
        self.by_buyer
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|order_id| self.orders.get(order_id))
            .map(|stored| &stored.order)
            .filter(move |order| &order.sale_id == sale_id)
    }

    pub fn order_by_key<'a>(
        &'a self,
        sale_id: &'a SaleId,
        user_id: &UserId,
        key: &str,
    ) -> Option<&'a Order> {
        self.buyer_orders(sale_id, user_id)
            .find(|order| order.idempotency_key.as_deref() == Some(key))
    }

    pub fn orders(&self, query: &OrderQuery) -> Vec<Order> {
        let wanted = |order: &Order| {
            query
                .sale_id
                .as_ref()
                .is_none_or(|sale| &order.sale_id == sale)
                && query
                    .before
                    .as_ref()
                    .is_none_or(|before| &order.id < before)
                && query.status.is_none_or(|status| order.status == status)
        };
        match &query.user_id {
            Some(user_id) => self
                .by_buyer
                .get(user_id)
                .into_iter()
                .flatten()
                .rev()
                .filter_map(|order_id| self.orders.get(order_id))
                .map(|stored| &stored.order)
                .filter(|order| wanted(order))
                .take(query.limit)
                .cloned()
                .collect(),
            None => {
                let newer_first: Box<dyn Iterator<Item = &Stored>> = match &query.before {
                    Some(before) => Box::new(
                        self.orders
                            .range(..before)
                            .rev()
                            .map(|(_, stored)| stored.as_ref()),
                    ),
                    None => Box::new(self.orders.values().rev().map(Box::as_ref)),
                };
                newer_first
                    .map(|stored| &stored.order)
                    .filter(|order| wanted(order))
                    .take(query.limit)
                    .cloned()
                    .collect()
            }
        }
    }

    /// The orders of a sale that `keep` selects.
    pub fn orders_of_sale(&self, sale_id: &SaleId, keep: impl Fn(&Order) -> bool) -> Vec<Order> {
        self.orders
            .values()
            .map(|stored| &stored.order)
            .filter(|order| &order.sale_id == sale_id && keep(order))
            .cloned()
            .collect()
    }

    pub fn tally(&self, sale_id: &SaleId) -> Result<SaleTally, StoreError> {
        self.sales
            .get(sale_id)
            .map(|entry| entry.tally.clone())
            .ok_or_else(|| no_sale(sale_id))
    }

    pub fn payments_unsettled(&self, max: usize) -> Vec<Order> {
        self.unsettled
            .iter()
            .take(max)
            .filter_map(|(_, order_id)| self.orders.get(order_id))
            .map(|stored| stored.order.clone())
            .collect()
    }

    pub fn unreturned(&self, max: usize) -> Vec<Order> {
        self.unreturned
            .iter()
            .take(max)
            .filter_map(|order_id| self.orders.get(order_id))
            .map(|stored| stored.order.clone())
            .collect()
    }

    pub fn sale_count(&self) -> usize {
        self.sales.len()
    }

    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    pub fn each_order(&self, mut visit: impl FnMut(&Stored)) {
        self.orders
            .values()
            .for_each(|stored| visit(stored.as_ref()));
    }

    // --- changes: each checks first and changes nothing when it refuses --------------------

    pub fn create_sale(&mut self, sale: &Sale) -> Result<EventFacts, StoreError> {
        if self.sales.contains_key(&sale.id) {
            return Err(StoreError::Failed(format!("sale {} exists", sale.id)));
        }
        self.put_sale(sale.clone());
        self.record_sale_event(&sale.id, SaleEvent::Created, sale.created_at)
            .ok_or_else(|| no_sale(&sale.id))
    }

    /// Records a sale's next version with its event; `None` when the book holds this version
    /// already (a repeat changes nothing and records no event).
    pub fn change_sale(
        &mut self,
        revision: &SaleRevision,
    ) -> Result<Option<EventFacts>, ChangeError> {
        let sale = &revision.sale;
        let entry = self.sales.get(&sale.id).ok_or(ChangeError::NotFound)?;
        let stored = entry.sale.version;
        if stored >= sale.version {
            return Ok(None);
        }
        if stored + 1 != sale.version {
            return Err(ChangeError::Conflict { stored });
        }
        self.put_sale(sale.clone());
        Ok(self.record_sale_event(&sale.id, revision.event(), revision.at))
    }

    /// Records a sale event telling the sale as it is now (none for a sale the book lacks).
    fn record_sale_event(
        &mut self,
        sale_id: &SaleId,
        event: SaleEvent,
        at: Timestamp,
    ) -> Option<EventFacts> {
        let entry = self.sales.get(sale_id)?;
        let kept = Kept {
            kind: EventKind::Sale(event),
            at,
            remaining: entry.tally.remaining,
            about: About::Sale(Arc::clone(&entry.sale)),
        };
        Some(self.events.record(sale_id, kept))
    }

    fn remaining(&self, sale_id: &SaleId) -> u64 {
        self.sales
            .get(sale_id)
            .map_or(0, |entry| entry.tally.remaining)
    }

    /// Records an order's event, then the sale's if its stock ran out or came back
    /// (`remaining_before` is the sale's stock before the change).
    fn record_order_events(
        &mut self,
        order: &Order,
        event: OrderEvent,
        at: Timestamp,
        remaining_before: u64,
    ) -> Vec<EventFacts> {
        let mut facts = Vec::with_capacity(1);
        facts.push(self.events.record(
            &order.sale_id,
            Kept {
                kind: EventKind::Order(event),
                at,
                remaining: 0,
                about: About::Order(order.id.clone()),
            },
        ));
        let remaining_after = self.remaining(&order.sale_id);
        if let Some(event) = stock_event(remaining_before, remaining_after) {
            facts.extend(self.record_sale_event(&order.sale_id, event, at));
        }
        facts
    }

    pub fn insert_order(&mut self, order: &Order) -> Result<Vec<EventFacts>, InsertError> {
        let entry = self
            .sales
            .get(&order.sale_id)
            .ok_or_else(|| no_sale(&order.sale_id))?;
        if let Some(key) = &order.idempotency_key {
            if let Some(existing) = self.order_by_key(&order.sale_id, &order.user_id, key) {
                return Err(InsertError::SameKey(Box::new(existing.clone())));
            }
        }
        if self.orders.contains_key(&order.id) {
            return Err(StoreError::Failed(format!("order {} exists", order.id)).into());
        }
        if order.quantity == 0 {
            return Err(StoreError::Failed("an order of no units".into()).into());
        }
        if order.status.is_active() {
            let quantity = u64::from(order.quantity);
            let held: u64 = self
                .buyer_orders(&order.sale_id, &order.user_id)
                .filter(|order| order.status.is_active())
                .map(|order| u64::from(order.quantity))
                .sum();
            if held + quantity > u64::from(entry.sale.per_user_limit) {
                return Err(InsertError::LimitExceeded);
            }
            if entry.tally.remaining < quantity {
                return Err(InsertError::SoldOut);
            }
        }
        let remaining_before = entry.tally.remaining;
        self.put_order(Stored {
            order: order.clone(),
            stock_returned: true,
        });
        Ok(self.record_order_events(
            order,
            order_event(order.status),
            order.created_at,
            remaining_before,
        ))
    }

    /// Applies `domain::decide`; a change that takes the order out of an active status owes the
    /// gate a return, recorded with the change itself. Also gives the events the change made (a
    /// refusal or a repeat leaves the order as it was and makes none).
    pub fn transition(
        &mut self,
        order_id: &OrderId,
        action: &Action,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(Transition, Vec<EventFacts>), TransitionError> {
        let Some(stored) = self.orders.get(order_id) else {
            return Err(TransitionError::NotFound);
        };
        let before = stored.order.clone();
        let outcome = outcome(&before, action, actor, now);
        let facts = if outcome.changed {
            self.write_change(&before, &outcome, now)
        } else {
            Vec::new()
        };
        let transition = Transition {
            released: outcome.releases(&before),
            changed: outcome.changed,
            order: outcome.order,
            refusal: outcome.refusal,
        };
        Ok((transition, facts))
    }

    /// How many of `expire_due(now, max)`'s orders are due (it expires at most these).
    pub fn due_count(&self, now: Timestamp, max: usize) -> usize {
        self.due
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(max)
            .count()
    }

    /// Expires up to `max` pending orders whose payment window closed by `now`, each with the
    /// events its expiry made.
    pub fn expire_due(&mut self, now: Timestamp, max: usize) -> Vec<(Order, Vec<EventFacts>)> {
        let due: Vec<OrderId> = self
            .due
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(max)
            .map(|(_, order_id)| order_id.clone())
            .collect();
        let mut expired = Vec::with_capacity(due.len());
        for order_id in due {
            let Some(stored) = self.orders.get(&order_id) else {
                continue;
            };
            let before = stored.order.clone();
            let outcome = outcome(&before, &Action::Expire, &Actor::Admin, now);
            if outcome.changed {
                let facts = self.write_change(&before, &outcome, now);
                expired.push((outcome.order, facts));
            }
        }
        expired
    }

    /// Records that the gate has these orders' stock back; returns the orders that changed.
    pub fn stock_returned(&mut self, order_ids: &[OrderId]) -> Vec<OrderId> {
        let mut changed = Vec::new();
        for order_id in order_ids {
            let Some(stored) = self.orders.get(order_id) else {
                continue;
            };
            if !stored.stock_returned {
                let order = stored.order.clone();
                self.put_order(Stored {
                    order,
                    stock_returned: true,
                });
                changed.push(order_id.clone());
            }
        }
        changed
    }

    /// Records an order as a change left it, and the change's events. Leaving an active status
    /// owes the gate a return, recorded with the change itself.
    fn write_change(
        &mut self,
        before: &Order,
        outcome: &Outcome,
        now: Timestamp,
    ) -> Vec<EventFacts> {
        let Some(stored) = self.orders.get(&before.id) else {
            return Vec::new();
        };
        let stock_returned = stored.stock_returned && !outcome.releases(before);
        let remaining_before = self.remaining(&before.sale_id);
        self.put_order(Stored {
            order: outcome.order.clone(),
            stock_returned,
        });
        match outcome.event {
            Some(event) => self.record_order_events(&outcome.order, event, now, remaining_before),
            None => Vec::new(),
        }
    }

    // --- the two primitives every change and the replay go through -------------------------

    /// Records a sale (the journal's replay, or a checked creation or change): a new sale, or a
    /// later version of one, whose stock the tally's `remaining` follows.
    pub fn put_sale(&mut self, sale: Sale) {
        match self.sales.entry(sale.id.clone()) {
            Entry::Vacant(vacant) => {
                let tally = SaleTally {
                    remaining: sale.stock,
                    ..SaleTally::default()
                };
                self.by_buyer.reserve(entries_for_stock(sale.stock));
                vacant.insert(SaleEntry {
                    sale: Arc::new(sale),
                    tally,
                });
            }
            Entry::Occupied(mut kept) if kept.get().sale.version < sale.version => {
                let entry = kept.get_mut();
                let held = entry.tally.pending.saturating_add(entry.tally.paid);
                entry.tally.remaining = sale.stock.saturating_sub(held);
                entry.sale = Arc::new(sale);
            }
            Entry::Occupied(_) => {}
        }
    }

    // --- the outbox ------------------------------------------------------------------------

    /// Replays a sale record that carries its event: a new sale, or a new definition of one.
    pub fn restore_sale_change(&mut self, sale: Sale, facts: &EventFacts) {
        let sale_id = sale.id.clone();
        if let Some(entry) = self.sales.get_mut(&sale_id) {
            let held = entry.tally.pending.saturating_add(entry.tally.paid);
            entry.tally.remaining = sale.stock.saturating_sub(held);
            entry.sale = Arc::new(sale);
        } else {
            self.put_sale(sale);
        }
        self.restore_sale_event(&sale_id, facts, None);
    }

    /// Replays a sale event; `as_it_was` is its sale when the record carries one, else the
    /// sale as the book has it at this point of the replay.
    pub fn restore_sale_event(
        &mut self,
        sale_id: &SaleId,
        facts: &EventFacts,
        as_it_was: Option<Sale>,
    ) {
        let sale = match as_it_was {
            Some(sale) => Arc::new(sale),
            None => match self.sales.get(sale_id) {
                Some(entry) => Arc::clone(&entry.sale),
                None => return,
            },
        };
        self.events.restore(sale_id, facts, About::Sale(sale));
    }

    pub fn restore_order_event(
        &mut self,
        sale_id: &SaleId,
        order_id: &OrderId,
        facts: &EventFacts,
    ) {
        self.events
            .restore(sale_id, facts, About::Order(order_id.clone()));
    }

    pub fn restore_event_counter(&mut self, sale_id: &SaleId, last: u64) {
        self.events.restore_counter(sale_id, last);
    }

    /// Up to `limit` retained events of a sale after sequence `after`, told whole.
    pub fn events(&self, sale_id: &SaleId, after: u64, limit: usize) -> Vec<Event> {
        self.events
            .after(sale_id, after, limit)
            .into_iter()
            .filter_map(|(sequence, kept)| {
                let subject = match kept.about {
                    About::Order(order_id) => {
                        let EventKind::Order(event) = kept.kind else {
                            return None;
                        };
                        EventSubject::Order(order_as_of(&self.orders.get(&order_id)?.order, event))
                    }
                    About::Sale(sale) => EventSubject::Sale {
                        sale: Sale::clone(&sale),
                        remaining: kept.remaining,
                    },
                };
                Some(Event {
                    sale_id: sale_id.clone(),
                    sequence,
                    kind: kept.kind,
                    at: kept.at,
                    subject,
                })
            })
            .collect()
    }

    pub fn event_heads(&self) -> Vec<(SaleId, u64)> {
        self.events.heads()
    }

    /// Whether `prune_events(before)` would drop any event.
    pub fn has_events_before(&self, before: Timestamp) -> bool {
        self.events.has_before(before)
    }

    pub fn prune_events(&mut self, before: Timestamp) -> u64 {
        self.events.prune(before)
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Every sale's event counter and retained events as compaction writes them.
    pub fn each_event(
        &self,
        visit: impl FnMut(&SaleId, u64, &mut dyn Iterator<Item = (u64, &Kept)>),
    ) {
        self.events.each(visit)
    }

    /// Records an order's state, new or replacing the one kept, and keeps every index and the
    /// sale's tally true. One walk of the order map either way (a removal and an insertion were
    /// two, for every order of every batch).
    pub fn put_order(&mut self, stored: Stored) {
        let Self {
            sales,
            orders,
            by_buyer,
            due,
            unreturned,
            unsettled,
            events: _,
        } = self;
        let mut counts = Counts {
            sales,
            due,
            unreturned,
            unsettled,
        };
        match orders.entry(stored.order.id.clone()) {
            btree_map::Entry::Occupied(mut kept) => {
                counts.count(kept.get(), false);
                counts.count(&stored, true);
                // The box is reused: a change of status allocates nothing.
                **kept.get_mut() = stored;
            }
            btree_map::Entry::Vacant(slot) => {
                index_new(by_buyer, &stored.order);
                counts.count(&stored, true);
                slot.insert(Box::new(stored));
            }
        }
    }
}

/// The index of what never changes in an order: its buyer.
fn index_new(by_buyer: &mut FastMap<UserId, Vec<OrderId>>, order: &Order) {
    let ids = by_buyer.entry(order.user_id.clone()).or_default();
    // Ids sort by creation; orders mostly arrive in that order.
    let at = ids.partition_point(|known| known < &order.id);
    // Most buyers hold one order: room for exactly one, not the four a first push makes.
    ids.reserve_exact(1);
    ids.insert(at, order.id.clone());
}

/// What an order's status counts for: its sale's tally, the payment deadlines and the returns
/// owed (the book's parts that `put_order` changes beside the order map itself).
struct Counts<'a> {
    sales: &'a mut FastMap<SaleId, SaleEntry>,
    due: &'a mut BTreeSet<(Timestamp, OrderId)>,
    unreturned: &'a mut BTreeSet<OrderId>,
    unsettled: &'a mut BTreeSet<(Timestamp, OrderId)>,
}

impl Counts<'_> {
    /// Adds (or takes away) what an order's status counts for.
    fn count(&mut self, stored: &Stored, add: bool) {
        let order = &stored.order;
        let quantity = u64::from(order.quantity);
        let change = |value: &mut u64| {
            *value = if add {
                value.saturating_add(quantity)
            } else {
                value.saturating_sub(quantity)
            }
        };
        if let Some(entry) = self.sales.get_mut(&order.sale_id) {
            let tally = &mut entry.tally;
            change(match order.status {
                OrderStatus::PendingPayment => &mut tally.pending,
                OrderStatus::Paid => &mut tally.paid,
                OrderStatus::Cancelled => &mut tally.cancelled,
                OrderStatus::Expired => &mut tally.expired,
                OrderStatus::Refunded => &mut tally.refunded,
            });
            if order.status.is_active() {
                let held = tally.pending.saturating_add(tally.paid);
                tally.remaining = entry.sale.stock.saturating_sub(held);
            }
        }
        let keyed = || (order.expires_at, order.id.clone());
        if order.status == OrderStatus::PendingPayment && !order.has_open_payment() {
            if add {
                self.due.insert(keyed());
            } else {
                self.due.remove(&keyed());
            }
        }
        if order.payment_unsettled() {
            if add {
                self.unsettled.insert(keyed());
            } else {
                self.unsettled.remove(&keyed());
            }
        }
        if !stored.stock_returned {
            if add {
                self.unreturned.insert(order.id.clone());
            } else {
                self.unreturned.remove(&order.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sale_sold_to_one_buyer_per_unit_never_grows_the_buyer_index() {
        let sale = Sale::of_stock_for_test(50_000);
        let mut book = Book::default();
        book.create_sale(&sale).unwrap();
        let before = book.by_buyer.capacity();
        let now: Timestamp = "2026-12-01T12:00:01Z".parse().unwrap();
        for buyer in 0..sale.stock {
            let order = Order::pending_for_test(&sale.id, &format!("buyer-{buyer}"), now);
            book.insert_order(&order).unwrap();
        }
        assert_eq!(book.tally(&sale.id).unwrap().remaining, 0);
        assert_eq!(book.by_buyer.capacity(), before, "the buyer index grew");
    }
}
