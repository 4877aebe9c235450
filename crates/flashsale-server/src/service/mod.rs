//! The use cases: create and list sales, purchase, pay, cancel, expire, audit. This is the only
//! code that talks to both the stock gate and the order store, and it owns the order in which it
//! does so:
//!
//! - a purchase looks up a repeated idempotency key first, then takes stock in the gate, then
//!   hands the order to the intake, which answers once the order is durable (`intake.rs`: the
//!   one place where an embedded node and a cluster node differ);
//! - pay, cancel and expire change the store first (one atomic decision there), and only the
//!   call that moved an order out of an active status gives its stock back to the gate, once per
//!   order, in a task that does not depend on the caller (`returns.rs`).

mod catalog;
mod changes;
mod codes;
mod error;
mod export;
mod feed;
mod intake;
mod payments;
mod queue;
mod queue_log;
mod returns;

use std::sync::Arc;

use jiff::Timestamp;

use self::catalog::Catalog;
pub use self::catalog::CatalogPolicy;
pub use self::codes::CodeBatches;
pub use self::error::ServiceError;
pub use self::export::{ExportFilter, ExportRow, EXPORT_PAGE_ORDERS};
pub use self::feed::{EventPage, EventsParts, SinkView};
pub use self::intake::{Intake, PrivateIntake, SharedIntake};
use self::payments::Payments;
pub use self::payments::{PaymentPage, PaymentParts, SweepReport};
pub use self::queue::{QueueView, WaitingRoomParts};
pub use self::queue_log::{
    run_keeper as run_queue_log_keeper, LogPage, PublicKey, QueueLog, LOG_PAGE_MAX,
};
use self::returns::StockReturns;
use crate::access_codes::AccessCodes;
use crate::clock::Clock;
use crate::domain::{
    check_quantity, check_window, new_order, Action, Actor, AdmissionChange, DrawSeed,
    InvalidField, Order, OrderId, Refusal, Rejection, Sale, SaleAccess, SaleDraft, SaleId,
    SaleState, UserId, SEED_BYTES,
};
use crate::gate::{GateDecision, Reservation, StockGate};
use crate::store::{OrderQuery, OrderStore};

/// A sale with its live figures.
#[derive(Clone, Debug)]
pub struct SaleView {
    pub sale: Arc<Sale>,
    pub remaining: u64,
    pub state: SaleState,
    /// When the view was taken: what of the sale the public may see depends on it (the draw's
    /// seed, from `starts_at` on).
    pub at: Timestamp,
}

/// A new draw seed from the operating system's generator: chosen before anyone can join, its
/// SHA-256 published at once.
fn new_draw_seed() -> Result<DrawSeed, ServiceError> {
    let mut bytes = [0u8; SEED_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| {
        ServiceError::Unavailable(format!("no randomness for the draw's seed: {error}"))
    })?;
    Ok(DrawSeed::from_bytes(bytes))
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
    pub refunded: u64,
    pub consistent: bool,
}

pub struct SalePage {
    pub sales: Vec<SaleView>,
    /// The last sale of a page with more after it: pass it back to get the next one.
    pub next: Option<SaleId>,
}

pub struct OrderPage {
    pub orders: Vec<Order>,
    /// The last order of a full page: pass it back to get the next one.
    pub next: Option<OrderId>,
}

pub struct Service {
    gate: Arc<dyn StockGate>,
    store: Arc<dyn OrderStore>,
    intake: Arc<dyn Intake>,
    returns: Arc<StockReturns>,
    clock: Arc<dyn Clock>,
    catalog: Arc<Catalog>,
    expiry_batch_max: usize,
    waiting_room: Option<WaitingRoomParts>,
    /// The event feed (`feed.rs`).
    events: Option<EventsParts>,
    /// Presale codes (made and checked here); without them a code sale sells to nobody.
    codes: Option<AccessCodes>,
    /// The payment provider and its sweep (`payments.rs`).
    payments: Arc<Payments>,
}

fn refusal_error(refusal: Refusal) -> ServiceError {
    match refusal {
        Refusal::NotFound => ServiceError::OrderNotFound,
        Refusal::Forbidden => ServiceError::Forbidden,
        Refusal::NotPayable => ServiceError::NotPayable,
        Refusal::NotCancellable | Refusal::PaymentOpen => ServiceError::NotCancellable,
        Refusal::NotRefundable => ServiceError::NotRefundable,
    }
}

impl Service {
    /// Loads every sale and lets the intake bring the gate in line with the store, so that a
    /// restart changes nothing a client can see.
    pub async fn start(
        gate: Arc<dyn StockGate>,
        store: Arc<dyn OrderStore>,
        intake: Arc<dyn Intake>,
        clock: Arc<dyn Clock>,
        expiry_batch_max: usize,
    ) -> Result<Self, ServiceError> {
        let sales = store.sales().await?;
        intake.recover(&sales).await?;
        let catalog = Arc::new(Catalog::new(intake.catalog_policy()));
        for sale in sales {
            catalog.remember(sale);
        }
        let returns = Arc::new(StockReturns {
            gate: Arc::clone(&gate),
            store: Arc::clone(&store),
        });
        let payments = Arc::new(Payments::new(
            PaymentParts::simulated(),
            Arc::clone(&returns),
            Arc::clone(&store),
        ));
        Ok(Self {
            returns,
            payments,
            gate,
            store,
            intake,
            clock,
            catalog,
            expiry_batch_max: expiry_batch_max.max(1),
            waiting_room: None,
            events: None,
            codes: None,
        })
    }

    /// Lets sales have a waiting room, kept in `parts.line`. A private gate was just rebuilt
    /// from the store: each line's admission is brought in line with it (a crash can come
    /// between an order's record and the line's, or a change's). A shared gate changes its lines
    /// in the same script as itself, and may hold a change the store has yet to record: nothing
    /// to bring in line, and the store's word would be the older one.
    pub async fn with_waiting_room(
        mut self,
        parts: WaitingRoomParts,
    ) -> Result<Self, ServiceError> {
        let now_ms = self.clock.now().as_millisecond();
        let sales = if self.catalog.policy() == CatalogPolicy::Complete {
            self.catalog.all(self.store.as_ref()).await?
        } else {
            Vec::new()
        };
        for sale in sales {
            let Some(room) = sale.waiting_room else {
                continue;
            };
            let sold_out = self.gate.remaining(&sale.id).await? == Some(0);
            parts
                .line
                .change_admission(
                    &sale,
                    now_ms,
                    AdmissionChange {
                        paused: Some(sale.paused),
                        sold_out: Some(sold_out && now_ms >= sale.starts_at.as_millisecond()),
                        admit_per_sec: Some(room.admit_per_sec),
                    },
                )
                .await?;
        }
        self.waiting_room = Some(parts);
        Ok(self)
    }

    /// Lets sales be sold by presale codes.
    pub fn with_access_codes(mut self, codes: AccessCodes) -> Self {
        self.codes = Some(codes);
        self
    }

    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    /// The clock's reading at `instant`, a moment of the recent past.
    pub fn clock_at(&self, instant: std::time::Instant) -> jiff::Timestamp {
        self.clock.at_instant(instant)
    }

    async fn known_sale(&self, sale_id: &str) -> Result<Arc<Sale>, ServiceError> {
        self.catalog.sale(self.store.as_ref(), sale_id).await
    }

    fn view(&self, sale: Arc<Sale>, remaining: Option<u64>) -> SaleView {
        let remaining = remaining.unwrap_or(0);
        let now = self.clock.now();
        let state = sale.state(now, remaining);
        SaleView {
            sale,
            remaining,
            state,
            at: now,
        }
    }

    /// Opens the sale on the gate first (in a cluster one script sets up its stock, its queue
    /// and the persisters' group together), then records it: a sale is visible to buyers (in
    /// the store's catalog) only once it is whole on the gate. In a task of its own, so an
    /// admin who hangs up cannot leave a recorded sale out of this node's catalog.
    pub async fn create_sale(&self, draft: SaleDraft) -> Result<SaleView, ServiceError> {
        let mut sale = draft.validate(SaleId::generate(), self.clock.now())?;
        if sale.waiting_room.is_some() && self.waiting_room.is_none() {
            return Err(ServiceError::Unavailable(
                "this server has no waiting line configured".into(),
            ));
        }
        if let Some(room) = sale.waiting_room.as_mut() {
            room.draw_seed = Some(new_draw_seed()?);
        }
        let remaining = Some(sale.stock);
        let (gate, store, catalog) = (
            Arc::clone(&self.gate),
            Arc::clone(&self.store),
            Arc::clone(&self.catalog),
        );
        let sale = tokio::spawn(async move {
            gate.open_sale(&sale).await?;
            store.create_sale(&sale).await?;
            let sale = catalog.remember(sale);
            // Other nodes reload their catalog; the sale is whole already if this fails.
            if let Err(error) = gate.announce_sales_change().await {
                tracing::warn!(%error, "could not announce a new sale to the other nodes");
            }
            Ok::<_, ServiceError>(sale)
        })
        .await
        .map_err(|error| ServiceError::Internal(error.to_string()))??;
        Ok(self.view(sale, remaining))
    }

    /// Sales, newest first: every one, or a page of `limit` older than the cursor; with
    /// `current`, only those a buyer can still act on or has just seen end (`Sale::is_current`).
    /// Only the page's sales cost the gate anything (their counts read in one call).
    pub async fn sales(
        &self,
        limit: Option<usize>,
        cursor: Option<&str>,
        current: bool,
    ) -> Result<SalePage, ServiceError> {
        let before = cursor
            .map(|text| {
                SaleId::parse(text)
                    .ok_or_else(|| InvalidField::new("cursor", "is not a cursor this API gave"))
            })
            .transpose()?;
        let current_at = current.then(|| self.clock.now());
        let (sales, more) = self
            .catalog
            .page(
                self.store.as_ref(),
                before.as_ref(),
                limit.unwrap_or(usize::MAX - 1),
                current_at,
            )
            .await?;
        let next = match more {
            true => sales.last().map(|sale| sale.id.clone()),
            false => None,
        };
        let ids: Vec<SaleId> = sales.iter().map(|sale| sale.id.clone()).collect();
        let remaining = self.gate.remaining_of(&ids).await?;
        let mut views = Vec::with_capacity(sales.len());
        for (sale, remaining) in sales.into_iter().zip(remaining) {
            let remaining = self.remaining_or_archived(&sale, remaining).await?;
            views.push(self.view(sale, remaining));
        }
        Ok(SalePage { sales: views, next })
    }

    pub async fn sale(&self, sale_id: &str) -> Result<SaleView, ServiceError> {
        let sale = self.known_sale(sale_id).await?;
        let remaining = self.gate.remaining(&sale.id).await?;
        let remaining = self.remaining_or_archived(&sale, remaining).await?;
        Ok(self.view(sale, remaining))
    }

    /// The gate's count, or for a sale the gate no longer keeps (archived: ended and settled),
    /// the store's.
    async fn remaining_or_archived(
        &self,
        sale: &Sale,
        remaining: Option<u64>,
    ) -> Result<Option<u64>, ServiceError> {
        if remaining.is_some() || !sale.has_ended(self.clock.now()) {
            return Ok(remaining);
        }
        let tally = self.store.tally(&sale.id).await?;
        Ok(tally.archived.then_some(tally.remaining))
    }

    pub async fn purchase(
        &self,
        user_id: UserId,
        sale_id: &str,
        quantity: i64,
        idempotency_key: Option<String>,
        queue_pass: Option<&str>,
        access_code: Option<&str>,
    ) -> Result<Purchased, ServiceError> {
        let sale = self.known_sale(sale_id).await?;
        let quantity = check_quantity(&sale, quantity).map_err(ServiceError::Rejected)?;
        let access_code = self.verified_code(&sale, access_code);
        let refused = if !self.pass_admits(&sale, &user_id, queue_pass) {
            Some(ServiceError::QueuePassRequired)
        } else if sale.access == SaleAccess::Codes && access_code.is_none() {
            Some(ServiceError::AccessCodeRequired)
        } else {
            None
        };
        if let Some(refused) = refused {
            // A retry of a key that won gets its order, with or without a pass or code.
            if let Some(key) = &idempotency_key {
                if let Some(found) = self.order_by_key(&sale, &user_id, key).await? {
                    return Ok(found);
                }
            }
            return Err(refused);
        }
        let now = self.clock.now();
        if let Err(rejection) = check_window(&sale, now, self.clock.uncertainty()) {
            // A retry of a key that won gets its order whenever it comes, after the end too.
            if let Some(key) = &idempotency_key {
                if let Some(found) = self.order_by_key(&sale, &user_id, key).await? {
                    return Ok(found);
                }
            }
            return Err(ServiceError::Rejected(rejection));
        }
        let reservation = Reservation {
            order: new_order(
                OrderId::generate(),
                &sale,
                user_id,
                quantity,
                idempotency_key,
                access_code,
                now,
            ),
            per_user_limit: sale.per_user_limit,
            payment_window_secs: sale.payment_window_secs,
        };
        let rejection = match self.gate.reserve(&reservation).await? {
            GateDecision::Reserved { created_at } => {
                let mut order = reservation.order;
                order.created_at = created_at;
                order.expires_at = sale.payment_deadline(created_at);
                return self.intake.place(order).await;
            }
            GateDecision::SameKey { order_id } => return self.repeated(&order_id).await,
            GateDecision::SoldOut { remaining } => Rejection::SoldOut { remaining },
            GateDecision::AlreadyPurchased { order_id } => Rejection::AlreadyPurchased { order_id },
            GateDecision::NotStarted => Rejection::NotStarted {
                starts_at: sale.starts_at,
            },
            GateDecision::Ended => Rejection::SaleEnded,
            GateDecision::Paused => Rejection::SalePaused,
            GateDecision::CodeTaken => return Err(ServiceError::AccessCodeRequired),
        };
        Err(ServiceError::Rejected(rejection))
    }

    /// The order an idempotency key made, if any: the gate remembers keys for good; the store
    /// answers for a gate that forgot (a cluster's keys of long-ended sales).
    async fn order_by_key(
        &self,
        sale: &Sale,
        user_id: &UserId,
        key: &str,
    ) -> Result<Option<Purchased>, ServiceError> {
        if let Some(order_id) = self.gate.key_owner(&sale.id, user_id, key).await? {
            return self.repeated(&order_id).await.map(Some);
        }
        Ok(self
            .store
            .order_by_key(&sale.id, user_id, key)
            .await?
            .map(|order| Purchased {
                order,
                created: false,
            }))
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
                status: None,
                limit,
            })
            .await?;
        let next = (orders.len() == limit)
            .then(|| orders.last().map(|order| order.id.clone()))
            .flatten();
        Ok(OrderPage { orders, next })
    }

    /// A payment without a provider (an order that costs nothing): paid at once.
    pub async fn pay(&self, actor: &Actor, order_id: &str) -> Result<Order, ServiceError> {
        self.transition(actor, order_id, Action::Pay).await
    }

    /// A cancel (an order with an open intent: see `cancel_order`).
    pub async fn cancel(&self, actor: &Actor, order_id: &str) -> Result<Order, ServiceError> {
        self.cancel_order(actor, order_id).await
    }

    async fn transition(
        &self,
        actor: &Actor,
        order_id: &str,
        action: Action,
    ) -> Result<Order, ServiceError> {
        let order_id = OrderId::parse(order_id).ok_or(ServiceError::OrderNotFound)?;
        let transition = self
            .returns
            .transition(order_id, action, actor.clone(), self.clock.now())
            .await?;
        match transition.refusal {
            Some(refusal) => Err(refusal_error(refusal)),
            None => Ok(transition.order),
        }
    }

    /// Finishes stock returns a node did not (it died, or the gate was unreachable); returns
    /// how many orders it settled.
    pub async fn return_unreturned(&self) -> Result<usize, ServiceError> {
        self.returns
            .return_unreturned(self.expiry_batch_max, self.clock.now())
            .await
    }

    /// Expires one batch of overdue orders; returns how many.
    pub async fn expire_due(&self) -> Result<usize, ServiceError> {
        self.returns
            .expire_due(self.clock.now(), self.expiry_batch_max)
            .await
    }

    pub fn expiry_batch_max(&self) -> usize {
        self.expiry_batch_max
    }

    pub async fn audit(&self, sale_id: &str) -> Result<Audit, ServiceError> {
        let known = self.known_sale(sale_id).await?;
        // The store's version, not this node's copy: another node may have just changed the stock.
        let sale = self
            .store
            .sale(&known.id)
            .await?
            .map(Arc::new)
            .unwrap_or(known);
        let tally = self.store.tally(&sale.id).await?;
        let gate_remaining = self.gate.remaining(&sale.id).await?;
        let (remaining, consistent) = if tally.archived {
            // The store alone answers, settled: nothing pending, the gate holding nothing.
            let consistent = tally.remaining + tally.paid == sale.stock
                && tally.pending == 0
                && gate_remaining.is_none();
            (tally.remaining, consistent)
        } else {
            let remaining = gate_remaining.unwrap_or(0);
            let held = self.gate.held(&sale.id).await?.unwrap_or(0);
            // Both sides balance, and they agree: the gate's count and holdings, the store's
            // count and active orders.
            let consistent = remaining + tally.pending + tally.paid == sale.stock
                && tally.remaining == remaining
                && held == tally.pending + tally.paid;
            (remaining, consistent)
        };
        Ok(Audit {
            sale_id: sale.id.clone(),
            stock: sale.stock,
            remaining,
            pending: tally.pending,
            paid: tally.paid,
            cancelled: tally.cancelled,
            expired: tally.expired,
            refunded: tally.refunded,
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
