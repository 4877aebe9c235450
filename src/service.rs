//! The use cases: create and list sales, purchase, pay, cancel, expire, audit. This is the only
//! code that talks to both the stock gate and the order store, and it owns the order in which it
//! does so:
//!
//! - a purchase takes stock in the gate first (memory or one Redis call), then queues the order for
//!   the store and answers only after the store committed it; if the commit fails, the gate gets the
//!   stock back;
//! - in a cluster the gate's one Redis script also queues the order durably, so the purchase is
//!   acknowledged then, and the node's persister writes it to PostgreSQL shortly after;
//! - pay, cancel and expire change the store first (one atomic decision there), and only the call
//!   that moved an order out of an active status gives its stock back to the gate: once per order.
//!   The store remembers which releases the gate has not confirmed, and they are retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::clock::Clock;
use crate::domain::{
    check_purchase, new_order, Action, Actor, InvalidField, Order, OrderId, Refusal, Rejection,
    Sale, SaleDraft, SaleId, SaleState, UserId,
};
use crate::gate::{GateDecision, GateError, Holding, Reservation, StockGate};
use crate::store::{InsertError, OrderQuery, OrderStore, StoreError, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("sale not found")]
    SaleNotFound,
    #[error("order not found")]
    OrderNotFound,
    #[error("not allowed")]
    Forbidden,
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("purchase refused: {0:?}")]
    Rejected(Rejection),
    #[error("the order can no longer be paid")]
    NotPayable,
    #[error("the order can no longer be cancelled")]
    NotCancellable,
    #[error("over capacity")]
    Overloaded,
    #[error("a backend is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Overloaded => Self::Overloaded,
            StoreError::Closed | StoreError::Failed(_) => Self::Unavailable(error.to_string()),
        }
    }
}

impl From<GateError> for ServiceError {
    fn from(error: GateError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<TransitionError> for ServiceError {
    fn from(error: TransitionError) -> Self {
        match error {
            TransitionError::NotFound => Self::OrderNotFound,
            TransitionError::Store(error) => error.into(),
        }
    }
}

/// A sale with its live figures.
#[derive(Clone, Debug)]
pub struct SaleView {
    pub sale: Arc<Sale>,
    pub remaining: u64,
    pub state: SaleState,
}

/// A successful purchase: a new order, or the one an earlier request with the same key made.
#[derive(Clone, Debug)]
pub struct Purchased {
    pub order: Order,
    pub created: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub sale_id: SaleId,
    pub stock: u64,
    pub remaining: u64,
    pub pending: u64,
    pub paid: u64,
    pub cancelled: u64,
    pub expired: u64,
    pub consistent: bool,
}

pub struct OrderPage {
    pub orders: Vec<Order>,
    /// The last order of a full page: pass it back to get the next one.
    pub next: Option<OrderId>,
}

pub struct Service {
    gate: Arc<dyn StockGate>,
    store: Arc<dyn OrderStore>,
    clock: Arc<dyn Clock>,
    /// Sales never change once created, so every purchase reads them from here, not a store.
    catalog: RwLock<HashMap<SaleId, Arc<Sale>>>,
    /// When the last reload of the catalog from the store started.
    catalog_loaded: Mutex<Option<Instant>>,
    catalog_reload: tokio::sync::Mutex<()>,
    expiry_batch_max: usize,
}

fn refusal_error(refusal: Refusal) -> ServiceError {
    match refusal {
        Refusal::NotFound => ServiceError::OrderNotFound,
        Refusal::Forbidden => ServiceError::Forbidden,
        Refusal::NotPayable => ServiceError::NotPayable,
        Refusal::NotCancellable => ServiceError::NotCancellable,
    }
}

impl Service {
    /// Loads every sale and, for a gate private to this process, rebuilds the gate from the
    /// store's active orders, so that a restart changes nothing a client can see. A shared gate
    /// (Redis) outlives nodes and is never rebuilt here: that is `flashsale reconcile --repair`.
    pub async fn start(
        gate: Arc<dyn StockGate>,
        store: Arc<dyn OrderStore>,
        clock: Arc<dyn Clock>,
        expiry_batch_max: usize,
    ) -> Result<Self, ServiceError> {
        let service = Self {
            gate,
            store,
            clock,
            catalog: RwLock::new(HashMap::new()),
            catalog_loaded: Mutex::new(None),
            catalog_reload: tokio::sync::Mutex::new(()),
            expiry_batch_max: expiry_batch_max.max(1),
        };
        if service.gate.queues_orders() {
            service.reload_catalog().await?;
            return Ok(service);
        }
        for sale in service.store.sales().await? {
            let holdings = service
                .store
                .active_orders(&sale.id)
                .await?
                .iter()
                .map(Holding::from)
                .collect();
            service.gate.restore_sale(&sale, holdings).await?;
            service.remember(sale);
        }
        Ok(service)
    }

    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    fn remember(&self, sale: Sale) -> Arc<Sale> {
        let sale = Arc::new(sale);
        self.catalog
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(sale.id.clone(), Arc::clone(&sale));
        sale
    }

    fn cached_sale(&self, sale_id: &SaleId) -> Option<Arc<Sale>> {
        self.catalog
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(sale_id)
            .cloned()
    }

    /// Reloads every sale from the store (other nodes create sales too). Reloads never
    /// overlap, and callers that arrive while one runs share the next: a crowd asking for a
    /// sale this node does not know (or for made-up ids) costs the store one query at a time.
    async fn reload_catalog(&self) -> Result<(), ServiceError> {
        let asked_at = Instant::now();
        let _one_at_a_time = self.catalog_reload.lock().await;
        let reloaded_since = self
            .catalog_loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|started| started >= asked_at);
        if reloaded_since {
            return Ok(());
        }
        let started = Instant::now();
        for sale in self.store.sales().await? {
            if self.cached_sale(&sale.id).is_none() {
                self.remember(sale);
            }
        }
        *self
            .catalog_loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(started);
        Ok(())
    }

    async fn known_sale(&self, sale_id: &str) -> Result<Arc<Sale>, ServiceError> {
        let sale_id = SaleId::parse(sale_id).ok_or(ServiceError::SaleNotFound)?;
        if let Some(sale) = self.cached_sale(&sale_id) {
            return Ok(sale);
        }
        // A sale another node created since this one last looked.
        if self.gate.queues_orders() {
            self.reload_catalog().await?;
            if let Some(sale) = self.cached_sale(&sale_id) {
                return Ok(sale);
            }
        }
        Err(ServiceError::SaleNotFound)
    }

    async fn view(&self, sale: Arc<Sale>) -> Result<SaleView, ServiceError> {
        let remaining = self.gate.remaining(&sale.id).await?.unwrap_or(0);
        let state = sale.state(self.clock.now(), remaining);
        Ok(SaleView {
            sale,
            remaining,
            state,
        })
    }

    pub async fn create_sale(&self, draft: SaleDraft) -> Result<SaleView, ServiceError> {
        let sale = draft.validate(SaleId::generate(), self.clock.now())?;
        self.store.create_sale(&sale).await?;
        self.gate.open_sale(&sale).await?;
        let sale = self.remember(sale);
        self.view(sale).await
    }

    /// Every sale, newest first.
    pub async fn sales(&self) -> Result<Vec<SaleView>, ServiceError> {
        if self.gate.queues_orders() {
            self.reload_catalog().await?;
        }
        let mut sales: Vec<Arc<Sale>> = self
            .catalog
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect();
        sales.sort_by(|a, b| b.id.cmp(&a.id));
        let mut views = Vec::with_capacity(sales.len());
        for sale in sales {
            views.push(self.view(sale).await?);
        }
        Ok(views)
    }

    pub async fn sale(&self, sale_id: &str) -> Result<SaleView, ServiceError> {
        let sale = self.known_sale(sale_id).await?;
        self.view(sale).await
    }

    pub async fn purchase(
        &self,
        user_id: UserId,
        sale_id: &str,
        quantity: i64,
        idempotency_key: Option<String>,
    ) -> Result<Purchased, ServiceError> {
        let sale = self.known_sale(sale_id).await?;
        let now = self.clock.now();
        let quantity = check_purchase(&sale, quantity, now).map_err(ServiceError::Rejected)?;
        // A key that bought before returns that order, even if it was cancelled since. A gate
        // that queues orders (Redis) remembers every key for good and answers `SameKey` itself,
        // which keeps the store off the purchase path.
        if let Some(key) = idempotency_key
            .as_ref()
            .filter(|_| !self.gate.queues_orders())
        {
            if let Some(order) = self.store.order_by_key(&sale.id, &user_id, key).await? {
                return Ok(Purchased {
                    order,
                    created: false,
                });
            }
        }
        let reservation = Reservation {
            order: new_order(&sale, user_id, quantity, idempotency_key, now),
            per_user_limit: sale.per_user_limit,
        };
        match self.gate.reserve(&reservation).await? {
            GateDecision::Reserved => {}
            GateDecision::SoldOut { remaining } => {
                return Err(ServiceError::Rejected(Rejection::SoldOut { remaining }))
            }
            GateDecision::AlreadyPurchased { order_id } => {
                return Err(ServiceError::Rejected(Rejection::AlreadyPurchased {
                    order_id,
                }))
            }
            GateDecision::SameKey { order_id } => return self.repeated(&order_id).await,
            GateDecision::Closed => {
                return Err(ServiceError::Rejected(match sale.state(now, 1) {
                    SaleState::Scheduled => Rejection::NotStarted {
                        starts_at: sale.starts_at,
                    },
                    _ => Rejection::SaleEnded,
                }))
            }
        }
        if self.gate.queues_orders() {
            // The gate's script queued the order durably with the reservation.
            return Ok(Purchased {
                order: reservation.order,
                created: true,
            });
        }
        self.commit(reservation.order).await
    }

    /// Commits a reserved order, or gives its stock back. The order is queued before anything
    /// awaits, and the wait runs in its own task, so a client that disconnects cannot leave
    /// stock reserved for an order that was never written.
    async fn commit(&self, order: Order) -> Result<Purchased, ServiceError> {
        let committed = self.store.insert_order(order.clone());
        let gate = Arc::clone(&self.gate);
        let holding = Holding::from(&order);
        let outcome = tokio::spawn(async move {
            let outcome = committed.await;
            if outcome.is_err() {
                if let Err(error) = gate.release(&holding).await {
                    tracing::error!(%error, order_id = %holding.order_id,
                        "could not return the stock of an order that was not committed");
                }
            }
            outcome
        })
        .await
        .map_err(|error| ServiceError::Internal(error.to_string()))?;
        match outcome {
            Ok(()) => Ok(Purchased {
                order,
                created: true,
            }),
            Err(InsertError::SameKey(existing)) => Ok(Purchased {
                order: *existing,
                created: false,
            }),
            Err(InsertError::SoldOut) => {
                tracing::error!(order_id = %order.id, "the store refused an order the gate accepted: no stock");
                Err(ServiceError::Rejected(Rejection::SoldOut { remaining: 0 }))
            }
            Err(InsertError::LimitExceeded) => {
                tracing::error!(order_id = %order.id, "the store refused an order the gate accepted: per-user limit");
                Err(ServiceError::Internal(
                    "the order store refused the order: per-user limit".into(),
                ))
            }
            Err(InsertError::Store(error)) => Err(error.into()),
        }
    }

    /// Answers a repeated idempotency key whose first request may still be in flight: once every
    /// write queued before now is committed, that order is in the store or was refused.
    async fn repeated(&self, order_id: &OrderId) -> Result<Purchased, ServiceError> {
        self.store.barrier().await?;
        match self.store.order(order_id).await? {
            Some(order) => Ok(Purchased {
                order,
                created: false,
            }),
            None => Err(ServiceError::Unavailable(
                "the first request with this idempotency key failed; retry".into(),
            )),
        }
    }

    pub async fn order(&self, actor: &Actor, order_id: &str) -> Result<Order, ServiceError> {
        let order_id = OrderId::parse(order_id).ok_or(ServiceError::OrderNotFound)?;
        let order = self
            .store
            .order(&order_id)
            .await?
            .ok_or(ServiceError::OrderNotFound)?;
        match actor {
            Actor::Buyer(user_id) if *user_id != order.user_id => Err(ServiceError::OrderNotFound),
            _ => Ok(order),
        }
    }

    pub async fn orders(
        &self,
        actor: &Actor,
        sale_id: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<OrderPage, ServiceError> {
        let sale_id = match sale_id {
            None => None,
            // An unknown sale simply has no orders.
            Some(text) => match SaleId::parse(text) {
                Some(sale_id) => Some(sale_id),
                None => {
                    return Ok(OrderPage {
                        orders: Vec::new(),
                        next: None,
                    })
                }
            },
        };
        let before = cursor
            .map(|text| {
                OrderId::parse(text)
                    .ok_or_else(|| InvalidField::new("cursor", "is not a cursor this API gave"))
            })
            .transpose()?;
        let user_id = match actor {
            Actor::Admin => None,
            Actor::Buyer(user_id) => Some(user_id.clone()),
        };
        let orders = self
            .store
            .orders(OrderQuery {
                user_id,
                sale_id,
                before,
                limit,
            })
            .await?;
        let next = (orders.len() == limit)
            .then(|| orders.last().map(|order| order.id.clone()))
            .flatten();
        Ok(OrderPage { orders, next })
    }

    pub async fn pay(&self, actor: &Actor, order_id: &str) -> Result<Order, ServiceError> {
        self.transition(actor, order_id, Action::Pay).await
    }

    pub async fn cancel(&self, actor: &Actor, order_id: &str) -> Result<Order, ServiceError> {
        self.transition(actor, order_id, Action::Cancel).await
    }

    async fn transition(
        &self,
        actor: &Actor,
        order_id: &str,
        action: Action,
    ) -> Result<Order, ServiceError> {
        let order_id = OrderId::parse(order_id).ok_or(ServiceError::OrderNotFound)?;
        let now = self.clock.now();
        let transition = self.store.transition(&order_id, action, actor, now).await?;
        if transition.released {
            self.return_stock(std::slice::from_ref(&transition.order))
                .await;
        }
        match transition.refusal {
            Some(refusal) => Err(refusal_error(refusal)),
            None => Ok(transition.order),
        }
    }

    /// Gives orders' stock back to the gate, then records which releases the gate confirmed.
    /// The store already recorded the orders as inactive (and, in a cluster, that the gate has
    /// yet to confirm), so a failure here is repaired by the next sweep (cluster) or rebuild
    /// from the store (embedded).
    async fn return_stock(&self, orders: &[Order]) {
        let mut returned = Vec::with_capacity(orders.len());
        for order in orders {
            match self.gate.release(&Holding::from(order)).await {
                Ok(_) => returned.push(order.id.clone()),
                Err(error) => tracing::error!(%error, order_id = %order.id,
                    "could not return stock to the gate; retried by the next sweep"),
            }
        }
        if returned.is_empty() {
            return;
        }
        if let Err(error) = self.store.stock_returned(returned).await {
            tracing::warn!(%error, "could not record releases; they will be repeated, harmlessly");
        }
    }

    /// Returns the stock of orders whose release a node did not finish (it died, or the gate
    /// was unreachable); each release is idempotent, so repeating one is harmless. Returns how
    /// many orders it settled.
    pub async fn return_unreturned(&self) -> Result<usize, ServiceError> {
        let orders = self.store.unreturned(self.expiry_batch_max).await?;
        let mut settled = Vec::with_capacity(orders.len());
        for order in orders {
            self.gate.release(&Holding::from(&order)).await?;
            settled.push(order.id);
        }
        let count = settled.len();
        self.store.stock_returned(settled).await?;
        Ok(count)
    }

    /// Expires one batch of overdue orders; returns how many.
    pub async fn expire_due(&self) -> Result<usize, ServiceError> {
        let expired = self
            .store
            .expire_due(self.clock.now(), self.expiry_batch_max)
            .await?;
        self.return_stock(&expired).await;
        Ok(expired.len())
    }

    pub fn expiry_batch_max(&self) -> usize {
        self.expiry_batch_max
    }

    pub async fn audit(&self, sale_id: &str) -> Result<Audit, ServiceError> {
        let sale = self.known_sale(sale_id).await?;
        let tally = self.store.tally(&sale.id).await?;
        let remaining = self.gate.remaining(&sale.id).await?.unwrap_or(0);
        let held = self.gate.held(&sale.id).await?.unwrap_or(0);
        // Both sides balance, and they agree: the gate's count and holdings, the store's count
        // and active orders.
        let consistent = remaining + tally.pending + tally.paid == sale.stock
            && tally.remaining == remaining
            && held == tally.pending + tally.paid;
        Ok(Audit {
            sale_id: sale.id.clone(),
            stock: sale.stock,
            remaining,
            pending: tally.pending,
            paid: tally.paid,
            cancelled: tally.cancelled,
            expired: tally.expired,
            consistent,
        })
    }

    /// Whether every backend answers.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        self.store.ping().await?;
        self.gate.ping().await?;
        Ok(())
    }

    /// Commits what is queued and closes the store.
    pub async fn close(&self) -> Result<(), ServiceError> {
        self.store.close().await?;
        Ok(())
    }
}
