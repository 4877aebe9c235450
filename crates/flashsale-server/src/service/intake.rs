//! The seam between a stock gate private to this process and one shared by every node. This is
//! the only place where the two deployments differ; the use cases have no mode branches:
//!
//! - **where a reserved order becomes durable**: a private gate (memory) only decides, so the
//!   order is committed to the store before it is acknowledged, and its stock is given back if
//!   the store refuses it; a shared gate (Redis) queued the order durably in the same step that
//!   took the stock, so it is acknowledged at once;
//! - **what the gate knows at start**: a private gate starts empty and is rebuilt from the store;
//!   a shared one outlives nodes and is repaired only by `flashsale reconcile --repair`;
//! - **who creates sales**: a private node knows every sale (it made them); a shared one asks the
//!   store for sales other nodes made.

use std::sync::Arc;

use super::error::ServiceError;
use super::{CatalogPolicy, Purchased};
use crate::domain::{Order, Rejection, Sale};
use crate::gate::{GateRecords, Holding, StockGate};
use crate::store::{InsertError, OrderQuery, OrderStore};
use crate::BoxFuture;

pub trait Intake: Send + Sync + 'static {
    /// Makes a reserved order durable and answers with it. The work runs to its end even if
    /// the returned future is dropped (a client that hung up), so no stock is stranded.
    fn place(&self, order: Order) -> BoxFuture<'static, Result<Purchased, ServiceError>>;

    /// Brings the gate in line with the store at start-up.
    fn recover<'a>(&'a self, sales: &'a [Sale]) -> BoxFuture<'a, Result<(), ServiceError>>;

    fn catalog_policy(&self) -> CatalogPolicy;
}

/// An order queued to the store, whose outcome must be seen through: a refused order's stock
/// goes back to the gate. The caller waits for it; if the caller stops waiting (a client that
/// hung up drops the future), the wait moves to a task of its own. (A task for every order was
/// a spawn and a wake-up more per durable order.)
struct Placement {
    committed: Option<BoxFuture<'static, Result<(), InsertError>>>,
    gate: Arc<dyn StockGate>,
    order: Option<Order>,
}

impl Placement {
    async fn outcome(mut self) -> Result<Order, InsertError> {
        let outcome = match self.committed.as_mut() {
            Some(committed) => committed.await,
            None => Err(InsertError::Store(crate::store::StoreError::Closed)),
        };
        self.committed = None;
        let order = self.order.take();
        match (outcome, order) {
            (Ok(()), Some(order)) => Ok(order),
            (Ok(()), None) => Err(InsertError::Store(crate::store::StoreError::Closed)),
            (Err(error), order) => {
                if let Some(order) = order {
                    // In a task, so that it ends even if this caller stops waiting.
                    let returned = tokio::spawn(abandon_reservation(Arc::clone(&self.gate), order));
                    drop(returned.await);
                }
                Err(error)
            }
        }
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        let (Some(committed), Some(order)) = (self.committed.take(), self.order.take()) else {
            return;
        };
        let gate = Arc::clone(&self.gate);
        let settle = async move {
            if committed.await.is_err() {
                abandon_reservation(gate, order).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(settle)),
            Err(_) => tracing::error!("an abandoned order's outcome cannot be awaited: no runtime"),
        }
    }
}

/// Returns the stock of an order the store did not take.
async fn abandon_reservation(gate: Arc<dyn StockGate>, order: Order) {
    // The gate's own time of the order: the moment it took the units.
    if let Err(error) = gate.abandon(&Holding::from(&order), order.created_at).await {
        tracing::error!(%error, order_id = %order.id,
            "could not return the stock of an order that was not committed");
    }
}

/// The embedded deployment: a gate in this process in front of the store.
pub struct PrivateIntake {
    gate: Arc<dyn StockGate>,
    store: Arc<dyn OrderStore>,
}

impl PrivateIntake {
    pub fn new(gate: Arc<dyn StockGate>, store: Arc<dyn OrderStore>) -> Self {
        Self { gate, store }
    }
}

/// How many of a buyer's orders of a sale are looked at for the active one a limit refusal names
/// (at most the limit are active; the rest are cancelled or expired, newest first).
const ORDERS_LOOKED_AT_MAX: usize = 500;

/// The refusal the store's backstop made of an order the gate had accepted (a gate bug: the
/// error is logged), answered as the refusal a correct gate would have given.
async fn store_refusal(
    store: &dyn OrderStore,
    order: &Order,
    refusal: &InsertError,
) -> Result<Purchased, ServiceError> {
    tracing::error!(order_id = %order.id, sale_id = %order.sale_id, %refusal,
        "the store refused an order the gate accepted");
    let rejection = match refusal {
        InsertError::LimitExceeded => {
            let held = store
                .orders(OrderQuery {
                    user_id: Some(order.user_id.clone()),
                    sale_id: Some(order.sale_id.clone()),
                    before: None,
                    status: None,
                    limit: ORDERS_LOOKED_AT_MAX,
                })
                .await?
                .into_iter()
                .find(|held| held.status.is_active());
            match held {
                Some(held) => Rejection::AlreadyPurchased { order_id: held.id },
                None => Rejection::SoldOut { remaining: 0 },
            }
        }
        _ => Rejection::SoldOut { remaining: 0 },
    };
    Err(ServiceError::Rejected(rejection))
}

impl Intake for PrivateIntake {
    fn place(&self, order: Order) -> BoxFuture<'static, Result<Purchased, ServiceError>> {
        let store = Arc::clone(&self.store);
        let placed = order.clone();
        // Queued to the writer before anything awaits.
        let placement = Placement {
            committed: Some(self.store.insert_order(order.clone())),
            gate: Arc::clone(&self.gate),
            order: Some(order),
        };
        Box::pin(async move {
            match placement.outcome().await {
                Ok(order) => Ok(Purchased {
                    order,
                    created: true,
                }),
                Err(InsertError::SameKey(existing)) => Ok(Purchased {
                    order: *existing,
                    created: false,
                }),
                Err(refusal @ (InsertError::SoldOut | InsertError::LimitExceeded)) => {
                    store_refusal(store.as_ref(), &placed, &refusal).await
                }
                Err(InsertError::Store(error)) => Err(error.into()),
            }
        })
    }

    fn recover<'a>(&'a self, sales: &'a [Sale]) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            for sale in sales {
                let orders = self.store.orders_for_gate(&sale.id).await?;
                self.gate
                    .restore_sale(sale, GateRecords::of_orders(&orders))
                    .await?;
            }
            Ok(())
        })
    }

    fn catalog_policy(&self) -> CatalogPolicy {
        CatalogPolicy::Complete
    }
}

/// A cluster node: the shared gate queues each order durably with its reservation.
pub struct SharedIntake;

impl Intake for SharedIntake {
    fn place(&self, order: Order) -> BoxFuture<'static, Result<Purchased, ServiceError>> {
        Box::pin(std::future::ready(Ok(Purchased {
            order,
            created: true,
        })))
    }

    fn recover<'a>(&'a self, _sales: &'a [Sale]) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn catalog_policy(&self) -> CatalogPolicy {
        CatalogPolicy::Shared
    }
}
