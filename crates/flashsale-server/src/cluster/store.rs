//! The order store a cluster node uses: PostgreSQL, plus the orders Redis acknowledged that are
//! still on their way there. Reads fall back to the queue, and paying or cancelling a queued
//! order first writes it to PostgreSQL (idempotently), so an order is usable the moment its
//! purchase is acknowledged.

use jiff::Timestamp;

use crate::domain::{
    Action, Actor, Order, OrderId, OrderStatus, Sale, SaleId, SaleRevision, UserId,
};
use crate::redis::{OrderQueue, QueueError};
use crate::store::{
    ChangeError, EventHead, InsertError, OrderQuery, OrderStore, PostgresStore, RecordedEvent,
    SaleTally, StoreError, Transition, TransitionError,
};
use crate::BoxFuture;

impl From<QueueError> for StoreError {
    fn from(error: QueueError) -> Self {
        Self::Failed(error.to_string())
    }
}

pub struct ClusterStore {
    postgres: PostgresStore,
    queue: OrderQueue,
}

impl ClusterStore {
    pub fn new(postgres: PostgresStore, queue: OrderQueue) -> Self {
        Self { postgres, queue }
    }

    /// The queued orders PostgreSQL does not hold yet. Call it after reading the queue and
    /// before reading PostgreSQL's own rows, and merge with `merged`: an order leaves the queue
    /// only after its commit, so one committed before this call is in the rows read after it,
    /// and one committed later is kept from the queue (and, found twice, kept once). Asked after
    /// the rows instead, an order committed between the two was in neither.
    async fn not_stored(&self, queued: Vec<Order>) -> Result<Vec<Order>, StoreError> {
        if queued.is_empty() {
            return Ok(queued);
        }
        let ids: Vec<&str> = queued.iter().map(|order| order.id.as_str()).collect();
        let stored = self.postgres.stored_ids(&ids).await?;
        Ok(queued
            .into_iter()
            .filter(|order| !stored.contains(order.id.as_str()))
            .collect())
    }

    async fn find(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError> {
        if let Some(order) = self.postgres.order(order_id).await? {
            return Ok(Some(order));
        }
        if let Some(order) = self.queue.find(order_id).await? {
            return Ok(Some(order));
        }
        // Persisted between the two reads: the queue forgets an order only after its commit.
        self.postgres.order(order_id).await
    }
}

/// PostgreSQL's rows and the queued orders it did not hold a moment before, each order once
/// (PostgreSQL's version of an order found in both: it may have been paid since).
fn merged(mut stored: Vec<Order>, queued: Vec<Order>) -> Vec<Order> {
    let known: std::collections::HashSet<OrderId> =
        stored.iter().map(|order| order.id.clone()).collect();
    stored.extend(
        queued
            .into_iter()
            .filter(|order| !known.contains(&order.id)),
    );
    stored
}

impl OrderStore for ClusterStore {
    fn create_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), StoreError>> {
        self.postgres.create_sale(sale)
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>> {
        self.postgres.sales()
    }

    fn sale(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<Sale>, StoreError>> {
        OrderStore::sale(&self.postgres, sale_id)
    }

    fn change_sale<'a>(
        &'a self,
        revision: &'a SaleRevision,
    ) -> BoxFuture<'a, Result<(), ChangeError>> {
        OrderStore::change_sale(&self.postgres, revision)
    }

    fn insert_order(&self, order: Order) -> BoxFuture<'static, Result<(), InsertError>> {
        self.postgres.insert_order(order)
    }

    fn order(&self, order_id: &OrderId) -> BoxFuture<'_, Result<Option<Order>, StoreError>> {
        let order_id = order_id.clone();
        Box::pin(async move { self.find(&order_id).await })
    }

    fn order_by_key(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<Order>, StoreError>> {
        let (sale_id, user_id, key) =
            (sale_id.clone(), user_id.clone(), idempotency_key.to_owned());
        // The gate's record first: it also knows keys of orders still queued.
        Box::pin(async move {
            match self.queue.key_owner(&sale_id, &user_id, &key).await? {
                Some(order_id) => self.find(&order_id).await,
                None => self.postgres.order_by_key(&sale_id, &user_id, &key).await,
            }
        })
    }

    fn orders(&self, query: OrderQuery) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        // A buyer sees an order in their listing as soon as it is acknowledged: the queued
        // orders are read first and merged, PostgreSQL's version winning (it may be paid).
        Box::pin(async move {
            // A queued order is pending: a listing of other statuses has none of them.
            let sale_ids = match (&query.sale_id, query.status) {
                (_, Some(status)) if status != OrderStatus::PendingPayment => Vec::new(),
                (Some(sale_id), _) => vec![sale_id.clone()],
                (None, _) => self.queue.queued_sale_ids().await?,
            };
            let mut queued = Vec::new();
            for sale_id in &sale_ids {
                queued.extend(
                    self.queue
                        .unpersisted(sale_id)
                        .await?
                        .into_iter()
                        .filter(|order| {
                            query
                                .user_id
                                .as_ref()
                                .is_none_or(|user| order.user_id == *user)
                                && query
                                    .before
                                    .as_ref()
                                    .is_none_or(|before| order.id < *before)
                        }),
                );
            }
            let limit = query.limit;
            let queued = self.not_stored(queued).await?;
            let orders = self.postgres.orders(query).await?;
            if queued.is_empty() {
                return Ok(orders);
            }
            let mut orders = merged(orders, queued);
            orders.sort_by(|a, b| b.id.cmp(&a.id));
            orders.truncate(limit);
            Ok(orders)
        })
    }

    fn transition(
        &self,
        order_id: &OrderId,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Transition, TransitionError>> {
        let (order_id, actor) = (order_id.clone(), actor.clone());
        Box::pin(async move {
            match self
                .postgres
                .transition(&order_id, action.clone(), &actor, now)
                .await
            {
                Err(TransitionError::NotFound) => {}
                other => return other,
            }
            let Some(queued) = self.queue.find(&order_id).await.map_err(StoreError::from)? else {
                return self
                    .postgres
                    .transition(&order_id, action, &actor, now)
                    .await;
            };
            if let Some(Err(error)) = self
                .postgres
                .insert_orders(std::slice::from_ref(&queued))
                .await?
                .pop()
            {
                return Err(StoreError::Failed(format!(
                    "a queued order could not be written to PostgreSQL: {error}"
                ))
                .into());
            }
            self.postgres
                .transition(&order_id, action, &actor, now)
                .await
        })
    }

    fn expire_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        self.postgres.expire_due(now, max)
    }

    fn active_orders(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move {
            let queued = self.queue.unpersisted(&sale_id).await?;
            let queued = self.not_stored(queued).await?;
            let active = self.postgres.active_orders(&sale_id).await?;
            Ok(merged(active, queued))
        })
    }

    fn orders_for_gate(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move {
            let queued = self.queue.unpersisted(&sale_id).await?;
            let queued = self.not_stored(queued).await?;
            let orders = self.postgres.orders_for_gate(&sale_id).await?;
            Ok(merged(orders, queued))
        })
    }

    fn tally(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<SaleTally, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move {
            // The queue first, then one PostgreSQL snapshot: an order leaves the queue only after
            // its commit, so each order is counted exactly once.
            let queued = self.queue.unpersisted(&sale_id).await?;
            self.postgres.tally_including(&sale_id, &queued).await
        })
    }

    fn barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.postgres.barrier()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.postgres.ping()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.postgres.close()
    }

    fn unreturned(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        self.postgres.unreturned(max)
    }

    fn stock_returned(&self, order_ids: Vec<OrderId>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.postgres.stock_returned(order_ids)
    }

    fn payments_unsettled(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        // A queued order has no payment yet: `pay` writes it to PostgreSQL first.
        self.postgres.payments_unsettled(max)
    }

    // Events exist only for what PostgreSQL committed: an order still queued has none yet (its
    // `created` is written by the transaction that persists it).

    fn events(
        &self,
        sale_id: &SaleId,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, StoreError>> {
        self.postgres.events(sale_id, after, limit)
    }

    fn event_heads(&self) -> BoxFuture<'_, Result<Vec<EventHead>, StoreError>> {
        self.postgres.event_heads()
    }

    fn prune_events(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.postgres.prune_events(before)
    }
}
