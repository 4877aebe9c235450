//! Payments' use cases: pay (the order's intent, made once), cancel an order with an intent
//! (the intent first), refund, Stripe's webhook, and the sweep that settles every payment the
//! server has not heard the end of. What a provider says is recorded through the store's
//! transitions (`domain::decide` says what it does to the order), one atomic call per change,
//! with its event in the same commit. Every provider call and the recording of what it said run
//! in a task of their own: a client that hangs up at any await point leaves nothing half done
//! (an intent made but not recorded is never handed to anyone and can take no money; a refund
//! decided but not confirmed is retried by the sweep until the provider confirms it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::error::ServiceError;
use super::returns::StockReturns;
use super::Service;
use crate::domain::{
    decide, Action, Actor, InvalidField, Order, OrderId, Payment, PaymentState, ProviderFact,
    Verdict,
};
use crate::events::DeliveryLedger;
use crate::payments::{
    verify_stripe_signature, IntentRequest, IntentStatus, PaymentProvider, ProviderError,
    SignatureError,
};
use crate::store::{OrderStore, Transition};

/// The ledger name of the payments sweep's lease: one node at a time sweeps (sink names cannot
/// hold a `:`).
const SWEEP_LEASE: &str = "payments:sweep";
const SWEEP_LEASE_LENGTH: Duration = Duration::from_secs(30);
/// Most unsettled payments one round looks at (earliest deadline first).
const SWEEP_BATCH_MAX: usize = 1000;
/// A decided refund the request that decided it is still making is not made again by the
/// sweep until this long after: longer than a provider call may take.
const REFUND_RETRY_AFTER: SignedDuration = SignedDuration::from_secs(30);

/// What the storefront needs to take a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentPage {
    pub provider: &'static str,
    /// Stripe.js (`stripe_js_url`), for the card form.
    pub stripe_js_url: Option<String>,
    pub publishable_key: Option<String>,
}

/// A service's payment provider and the settings around it.
pub struct PaymentParts {
    pub provider: Arc<dyn PaymentProvider>,
    pub currency: String,
    /// Stripe's webhook secret (`whsec_…`); none: the webhook route refuses everything.
    pub webhook_secret: Option<String>,
    /// How long past its deadline an order whose intent the provider cannot be asked to cancel
    /// stays pending before it is expired all the same.
    pub expiry_grace: SignedDuration,
    /// How often the sweep asks the provider about an open intent it has heard nothing of.
    pub poll_interval: SignedDuration,
    pub page: PaymentPage,
    /// Where the sweep's lease is kept (a cluster: PostgreSQL), and this node's name in it.
    pub ledger: Option<Arc<dyn DeliveryLedger>>,
    pub holder: String,
}

impl PaymentParts {
    /// The simulated provider: the buyer's word is the payment.
    pub fn simulated() -> Self {
        Self {
            provider: Arc::new(crate::payments::SimulatedProvider),
            currency: "eur".into(),
            webhook_secret: None,
            expiry_grace: SignedDuration::from_secs(600),
            poll_interval: SignedDuration::from_secs(10),
            page: PaymentPage {
                provider: "simulated",
                stripe_js_url: None,
                publishable_key: None,
            },
            ledger: None,
            holder: "this-node".into(),
        }
    }
}

/// The payment work a service does, shared with the tasks it spawns.
pub(super) struct Payments {
    parts: PaymentParts,
    returns: Arc<StockReturns>,
    store: Arc<dyn OrderStore>,
    /// When the sweep last asked the provider about each open intent (this node's memory: a
    /// restart asks again at once, which is harmless).
    polled: Mutex<HashMap<OrderId, Timestamp>>,
}

/// What one sweep round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Whether this node holds the sweep (else it did nothing).
    pub held: bool,
    pub paid: usize,
    pub expired: usize,
    pub refunded: usize,
    /// Provider calls that failed (retried next round).
    pub failed: usize,
}

impl From<ProviderError> for ServiceError {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::Declined(message) => Self::PaymentDeclined(message),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

fn spawn_error(error: tokio::task::JoinError) -> ServiceError {
    ServiceError::Internal(error.to_string())
}

fn checked(transition: Transition) -> Result<Order, ServiceError> {
    match transition.refusal {
        Some(refusal) => Err(super::refusal_error(refusal)),
        None => Ok(transition.order),
    }
}

impl Payments {
    pub(super) fn new(
        parts: PaymentParts,
        returns: Arc<StockReturns>,
        store: Arc<dyn OrderStore>,
    ) -> Self {
        Self {
            parts,
            returns,
            store,
            polled: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn page(&self) -> &PaymentPage {
        &self.parts.page
    }

    fn provider(&self) -> &dyn PaymentProvider {
        self.parts.provider.as_ref()
    }

    async fn record(
        &self,
        order: &Order,
        fact: ProviderFact,
        now: Timestamp,
    ) -> Result<Transition, ServiceError> {
        self.returns
            .transition(order.id.clone(), Action::Provider(fact), Actor::Admin, now)
            .await
    }

    /// Cancels an intent nobody was handed (a concurrent `pay` recorded another), best effort:
    /// its secret never left the server, so it can take no money either way.
    fn cancel_orphan(self: &Arc<Self>, order_id: OrderId, intent_id: String) {
        let payments = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = payments
                .provider()
                .cancel_intent(&order_id, &intent_id)
                .await
            {
                tracing::debug!(%error, %order_id, "an intent nobody was given stays open");
            }
        });
    }

    /// `pay` of an order that costs money (see `Service::pay`).
    pub(super) async fn pay(
        self: Arc<Self>,
        order: Order,
        actor: Actor,
        amount_cents: u64,
        payment_method: Option<String>,
        now: Timestamp,
    ) -> Result<Order, ServiceError> {
        let mut order = order;
        if order.payment.is_none() {
            // Asked first with a stand-in for the intent, so a refused pay costs the provider
            // nothing; the store decides again when the intent is recorded.
            let probe = Action::Provider(ProviderFact::IntentCreated(Box::new(Payment {
                provider: self.provider().name().into(),
                intent_id: String::new(),
                client_secret: None,
                state: PaymentState::Open,
                refund_id: None,
            })));
            match decide(&order, &probe, &actor, now) {
                Verdict::Apply(_) => {}
                Verdict::Unchanged => return Ok(order),
                Verdict::Refuse(refusal) => return Err(super::refusal_error(refusal)),
                Verdict::ExpireThenRefuse(refusal) => {
                    self.returns
                        .transition(order.id.clone(), Action::Expire, Actor::Admin, now)
                        .await?;
                    return Err(super::refusal_error(refusal));
                }
            }
            let intent = self
                .provider()
                .create_intent(&IntentRequest {
                    order_id: order.id.clone(),
                    sale_id: order.sale_id.clone(),
                    amount_cents,
                    currency: self.parts.currency.clone(),
                })
                .await?;
            let payment = Payment {
                provider: self.provider().name().into(),
                intent_id: intent.id.clone(),
                client_secret: intent.client_secret.clone(),
                state: if intent.status == IntentStatus::Succeeded {
                    PaymentState::Succeeded
                } else {
                    PaymentState::Open
                },
                refund_id: None,
            };
            let transition = self
                .returns
                .transition(
                    order.id.clone(),
                    Action::Provider(ProviderFact::IntentCreated(Box::new(payment))),
                    actor.clone(),
                    now,
                )
                .await?;
            let recorded = transition
                .order
                .payment
                .as_ref()
                .is_some_and(|payment| payment.intent_id == intent.id);
            if !recorded {
                self.cancel_orphan(order.id.clone(), intent.id.clone());
            }
            order = checked(transition)?;
        }
        let Some(method) = payment_method else {
            return Ok(order);
        };
        let Some(payment) = order.payment.as_ref().filter(|_| order.has_open_payment()) else {
            return Ok(order);
        };
        let intent = self
            .provider()
            .confirm_intent(&order.id, &payment.intent_id, &method)
            .await?;
        if intent.status == IntentStatus::Succeeded {
            let fact = ProviderFact::Succeeded {
                intent_id: intent.id,
            };
            return checked(self.record(&order, fact, now).await?);
        }
        Ok(order)
    }

    /// Cancels an order, its intent at the provider first. If the intent already took the
    /// money, the order is paid instead and the cancel refused.
    pub(super) async fn cancel(
        self: Arc<Self>,
        order_id: OrderId,
        actor: Actor,
        now: Timestamp,
    ) -> Result<Order, ServiceError> {
        // Twice at most: a concurrent `pay` may record an intent between the two.
        for _ in 0..2 {
            let transition = self
                .returns
                .transition(order_id.clone(), Action::Cancel, actor.clone(), now)
                .await?;
            if transition.refusal != Some(crate::domain::Refusal::PaymentOpen) {
                return checked(transition);
            }
            let order = transition.order;
            let Some(payment) = order.payment.as_ref() else {
                return Err(ServiceError::Internal("an open payment without one".into()));
            };
            let intent = self
                .provider()
                .cancel_intent(&order.id, &payment.intent_id)
                .await?;
            match intent.status {
                IntentStatus::Canceled => {
                    let fact = ProviderFact::Canceled {
                        intent_id: intent.id,
                    };
                    self.record(&order, fact, now).await?;
                }
                IntentStatus::Succeeded => {
                    let fact = ProviderFact::Succeeded {
                        intent_id: intent.id,
                    };
                    self.record(&order, fact, now).await?;
                    return Err(ServiceError::NotCancellable);
                }
                IntentStatus::Processing | IntentStatus::AwaitingBuyer => {
                    return Err(ServiceError::Unavailable(
                        "the payment is being processed; retry in a moment".into(),
                    ))
                }
            }
        }
        Err(ServiceError::Unavailable(
            "the order's payment kept changing; retry".into(),
        ))
    }

    /// The admin's refund: the order becomes `refunded` (its units back on sale) at once, then
    /// the provider refunds it; a provider that does not answer leaves the refund to the sweep.
    pub(super) async fn refund(
        self: Arc<Self>,
        order_id: OrderId,
        actor: Actor,
        now: Timestamp,
    ) -> Result<Order, ServiceError> {
        let transition = self
            .returns
            .transition(order_id, Action::Refund, actor, now)
            .await?;
        let changed = transition.changed;
        let order = checked(transition)?;
        if changed && order.payment_state() == Some(PaymentState::RefundPending) {
            return Ok(self
                .refund_at_provider(order, now)
                .await
                .unwrap_or_else(|order| order));
        }
        Ok(order)
    }

    /// Makes the decided refund of `order` at the provider and records it; on failure gives the
    /// order back as it is (the sweep tries again).
    async fn refund_at_provider(&self, order: Order, now: Timestamp) -> Result<Order, Order> {
        let Some(payment) = order.payment.as_ref() else {
            return Err(order);
        };
        match self.provider().refund(&order.id, &payment.intent_id).await {
            Ok(receipt) => {
                let fact = ProviderFact::Refunded {
                    refund_id: receipt.id,
                };
                match self.record(&order, fact, now).await {
                    Ok(transition) => Ok(transition.order),
                    Err(error) => {
                        tracing::warn!(%error, order_id = %order.id,
                            "a refund was made but not recorded; the sweep records it");
                        Err(order)
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, order_id = %order.id,
                    "the refund is decided but not made; the sweep tries again");
                Err(order)
            }
        }
    }

    /// The provider said the intent took the money: the order is paid, or (expired, cancelled)
    /// its money goes back, once: the call that recorded the refund makes it.
    async fn succeeded(
        self: &Arc<Self>,
        order: &Order,
        intent_id: String,
        now: Timestamp,
    ) -> Result<Transition, ServiceError> {
        let transition = self
            .record(order, ProviderFact::Succeeded { intent_id }, now)
            .await?;
        if transition.changed
            && transition.order.payment_state() == Some(PaymentState::RefundPending)
        {
            tracing::info!(order_id = %order.id, "money came for a closed order: refunding it");
            let payments = Arc::clone(self);
            let late = transition.order.clone();
            tokio::spawn(async move {
                let _ = payments.refund_at_provider(late, now).await;
            });
        }
        Ok(transition)
    }

    /// A Stripe webhook: its signature checked, then `payment_intent.succeeded` recorded (other
    /// events change nothing: a failed attempt leaves the intent open).
    pub(super) async fn stripe_webhook(
        self: Arc<Self>,
        signature: Option<String>,
        body: Vec<u8>,
        now: Timestamp,
    ) -> Result<(), ServiceError> {
        let Some(secret) = self.parts.webhook_secret.as_deref() else {
            return Err(ServiceError::NoStripe);
        };
        verify_stripe_signature(secret, signature.as_deref(), &body, now)
            .map_err(|error: SignatureError| ServiceError::BadSignature(error.to_string()))?;
        let event: Value = serde_json::from_slice(&body)
            .map_err(|_| InvalidField::new("body", "is not a Stripe event"))?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| InvalidField::new("type", "is missing"))?;
        if kind != "payment_intent.succeeded" {
            return Ok(());
        }
        let intent = event
            .pointer("/data/object")
            .ok_or_else(|| InvalidField::new("data", "has no object"))?;
        let intent_id = intent
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| InvalidField::new("data", "has no intent id"))?;
        // An intent of another shop on the same account, or made by hand: not ours.
        let Some(order_id) = intent
            .pointer("/metadata/order_id")
            .and_then(Value::as_str)
            .and_then(OrderId::parse)
        else {
            return Ok(());
        };
        let Some(order) = self.store.order(&order_id).await? else {
            return Ok(());
        };
        self.succeeded(&order, intent_id.to_owned(), now).await?;
        Ok(())
    }

    /// One round of the payments sweep (on the node that holds it): every unsettled payment,
    /// earliest deadline first, asked about at the provider and settled. An open intent of an
    /// overdue order is cancelled before the order is expired; one that already took the money
    /// makes the order paid instead.
    pub(super) async fn sweep(
        self: Arc<Self>,
        now: Timestamp,
    ) -> Result<SweepReport, ServiceError> {
        let mut report = SweepReport::default();
        if let Some(ledger) = &self.parts.ledger {
            let held = ledger
                .hold(SWEEP_LEASE, &self.parts.holder, SWEEP_LEASE_LENGTH)
                .await
                .map_err(|error| ServiceError::Unavailable(error.to_string()))?;
            if !held {
                return Ok(report);
            }
        }
        report.held = true;
        let started = std::time::Instant::now();
        let orders = self.store.payments_unsettled(SWEEP_BATCH_MAX).await?;
        self.forget_polls_but(&orders);
        for order in orders {
            // The round stops well inside its lease, so no other node sweeps alongside it.
            if started.elapsed() > SWEEP_LEASE_LENGTH / 2 {
                break;
            }
            match self.settle(&order, now).await {
                Ok(Settled::Paid) => report.paid += 1,
                Ok(Settled::Expired) => report.expired += 1,
                Ok(Settled::Refunded) => report.refunded += 1,
                Ok(Settled::Nothing) => {}
                Err(error) => {
                    report.failed += 1;
                    tracing::debug!(%error, order_id = %order.id, "a payment stays unsettled");
                }
            }
        }
        Ok(report)
    }

    fn forget_polls_but(&self, orders: &[Order]) {
        let mut polled = self.polled.lock().unwrap_or_else(|p| p.into_inner());
        let kept: std::collections::HashSet<&OrderId> =
            orders.iter().map(|order| &order.id).collect();
        polled.retain(|order_id, _| kept.contains(order_id));
    }

    /// Whether it is time to ask the provider about this order again (and notes that it was):
    /// once a poll interval after the order was made (its webhook normally comes within
    /// seconds), then every interval.
    fn poll_due(&self, order: &Order, now: Timestamp) -> bool {
        let interval = self.parts.poll_interval;
        let after = |at: &Timestamp| at.checked_add(interval).is_ok_and(|next| now >= next);
        if !after(&order.created_at) {
            return false;
        }
        let mut polled = self.polled.lock().unwrap_or_else(|p| p.into_inner());
        let due = polled.get(&order.id).is_none_or(after);
        if due {
            polled.insert(order.id.clone(), now);
        }
        due
    }

    async fn settle(
        self: &Arc<Self>,
        order: &Order,
        now: Timestamp,
    ) -> Result<Settled, ServiceError> {
        use crate::domain::OrderStatus::*;
        let Some(payment) = order.payment.as_ref() else {
            return Ok(Settled::Nothing);
        };
        let intent_id = payment.intent_id.clone();
        match (order.status, payment.state) {
            (_, PaymentState::RefundPending) => {
                let decided = order.refunded_at.unwrap_or(now);
                let retry_at = decided.checked_add(REFUND_RETRY_AFTER).unwrap_or(now);
                if now < retry_at {
                    return Ok(Settled::Nothing);
                }
                match self.refund_at_provider(order.clone(), now).await {
                    Ok(_) => Ok(Settled::Refunded),
                    Err(_) => Err(ServiceError::Unavailable(
                        "the refund is not made yet".into(),
                    )),
                }
            }
            (PendingPayment, PaymentState::Open) if order.is_overdue(now) => {
                match self.provider().cancel_intent(&order.id, &intent_id).await {
                    Ok(intent) if intent.status == IntentStatus::Canceled => {
                        self.record(order, ProviderFact::Canceled { intent_id }, now)
                            .await?;
                        Ok(Settled::Expired)
                    }
                    Ok(intent) if intent.status == IntentStatus::Succeeded => {
                        self.succeeded(order, intent_id, now).await?;
                        Ok(Settled::Paid)
                    }
                    // Being processed: its outcome decides, unless that takes past the grace.
                    Ok(_) => self.expire_unconfirmed(order, now).await,
                    Err(error) => {
                        tracing::warn!(%error, order_id = %order.id,
                            "an overdue order's intent could not be cancelled; it stays pending");
                        self.expire_unconfirmed(order, now).await
                    }
                }
            }
            (PendingPayment, PaymentState::Open) => {
                if !self.poll_due(order, now) {
                    return Ok(Settled::Nothing);
                }
                let intent = self.provider().retrieve_intent(&intent_id).await?;
                if intent.status == IntentStatus::Succeeded {
                    self.succeeded(order, intent_id, now).await?;
                    return Ok(Settled::Paid);
                }
                Ok(Settled::Nothing)
            }
            // Closed while its intent's outcome was unknown: cancel it so it can take nothing,
            // or, if it took the money, give it back.
            (Cancelled | Expired, PaymentState::Open) => {
                if !self.poll_due(order, now) {
                    return Ok(Settled::Nothing);
                }
                let intent = self.provider().cancel_intent(&order.id, &intent_id).await?;
                match intent.status {
                    IntentStatus::Succeeded => {
                        self.succeeded(order, intent_id, now).await?;
                        Ok(Settled::Refunded)
                    }
                    IntentStatus::Canceled => {
                        self.record(order, ProviderFact::Canceled { intent_id }, now)
                            .await?;
                        Ok(Settled::Nothing)
                    }
                    IntentStatus::Processing | IntentStatus::AwaitingBuyer => Ok(Settled::Nothing),
                }
            }
            _ => Ok(Settled::Nothing),
        }
    }

    /// An overdue order whose intent the provider has not cancelled: expired once the grace is
    /// over (a payment that comes later is refunded), else left for the next round.
    async fn expire_unconfirmed(
        &self,
        order: &Order,
        now: Timestamp,
    ) -> Result<Settled, ServiceError> {
        let transition = self
            .returns
            .transition(
                order.id.clone(),
                Action::ExpireUnconfirmed {
                    grace: self.parts.expiry_grace,
                },
                Actor::Admin,
                now,
            )
            .await?;
        if transition.changed {
            tracing::warn!(order_id = %order.id,
                "expired without the provider's word on its intent; late money will be refunded");
            return Ok(Settled::Expired);
        }
        Err(ServiceError::Unavailable(
            "the provider did not settle the intent".into(),
        ))
    }
}

/// What settling one payment did.
enum Settled {
    Nothing,
    Paid,
    Expired,
    Refunded,
}

impl Service {
    /// `pay`: with a provider, makes the order's intent once (a retried or concurrent `pay`
    /// answers with the one recorded) and leaves the order pending until the provider says the
    /// money was taken; with `payment_method` (from the buyer's page), also confirms it. An
    /// order that costs nothing is paid at once. The provider down: `503`.
    pub async fn pay_order(
        &self,
        actor: &Actor,
        order_id: &str,
        payment_method: Option<String>,
    ) -> Result<Order, ServiceError> {
        if *actor == Actor::Admin {
            return Err(ServiceError::Forbidden);
        }
        let order = self.order(actor, order_id).await?;
        let sale = self.known_sale(order.sale_id.as_str()).await?;
        let amount_cents = sale.price_cents.saturating_mul(u64::from(order.quantity));
        if amount_cents == 0 {
            return self.pay(actor, order_id).await;
        }
        let payments = Arc::clone(&self.payments);
        let (actor, now) = (actor.clone(), self.clock.now());
        tokio::spawn(payments.pay(order, actor, amount_cents, payment_method, now))
            .await
            .map_err(spawn_error)?
    }

    /// `cancel`: an order with an open intent has it cancelled at the provider first.
    pub async fn cancel_order(&self, actor: &Actor, order_id: &str) -> Result<Order, ServiceError> {
        let order_id = OrderId::parse(order_id).ok_or(ServiceError::OrderNotFound)?;
        let payments = Arc::clone(&self.payments);
        tokio::spawn(payments.cancel(order_id, actor.clone(), self.clock.now()))
            .await
            .map_err(spawn_error)?
    }

    /// `refund` (admin): paid → refunded, the units back on sale, the money back once.
    pub async fn refund(&self, actor: &Actor, order_id: &str) -> Result<Order, ServiceError> {
        let order_id = OrderId::parse(order_id).ok_or(ServiceError::OrderNotFound)?;
        let payments = Arc::clone(&self.payments);
        tokio::spawn(payments.refund(order_id, actor.clone(), self.clock.now()))
            .await
            .map_err(spawn_error)?
    }

    /// Stripe's webhook (its raw body and `Stripe-Signature`).
    pub async fn stripe_webhook(
        &self,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> Result<(), ServiceError> {
        let payments = Arc::clone(&self.payments);
        tokio::spawn(payments.stripe_webhook(signature, body, self.clock.now()))
            .await
            .map_err(spawn_error)?
    }

    /// One round of the payments sweep.
    pub async fn sweep_payments(&self) -> Result<SweepReport, ServiceError> {
        let payments = Arc::clone(&self.payments);
        tokio::spawn(payments.sweep(self.clock.now()))
            .await
            .map_err(spawn_error)?
    }

    /// What the storefront needs to take a payment.
    pub fn payment_page(&self) -> PaymentPage {
        self.payments.page().clone()
    }

    /// Lets orders be paid through `parts.provider`.
    pub fn with_payments(mut self, parts: PaymentParts) -> Self {
        self.payments = Arc::new(Payments::new(
            parts,
            Arc::clone(&self.returns),
            Arc::clone(&self.store),
        ));
        self
    }
}
