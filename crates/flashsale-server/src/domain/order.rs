//! An order and its life cycle: `pending_payment → paid | cancelled | expired`, and
//! `paid → refunded`. An order holds stock while it is active (pending or paid); leaving that
//! state returns the stock, and because the terminal states never change again, that happens at
//! most once per order. Its payment (the provider's intent, `payment.rs`) moves beside the
//! status: what the provider says may make it paid, or owe a refund.

use jiff::{SignedDuration, Timestamp};

use super::{OrderEvent, OrderId, Payment, PaymentState, ProviderFact, SaleId, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Cancelled,
    Expired,
    /// Paid, then refunded: its units went back on sale. Final.
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        Self::PendingPayment,
        Self::Paid,
        Self::Cancelled,
        Self::Expired,
        Self::Refunded,
    ];

    /// Whether an order in this status holds stock.
    pub fn is_active(self) -> bool {
        matches!(self, Self::PendingPayment | Self::Paid)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub quantity: u32,
    pub status: OrderStatus,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub paid_at: Option<Timestamp>,
    /// The buyer's `Idempotency-Key` for the purchase that made this order, if any.
    pub idempotency_key: Option<String>,
    /// The presale code the purchase was made with (the code stays bound to this buyer).
    pub access_code: Option<String>,
    /// When its money was decided to go back (a refund, or late money of an expired or
    /// cancelled order).
    pub refunded_at: Option<Timestamp>,
    /// The provider's intent, once `pay` made one. Boxed: most orders of a flash sale are never
    /// paid, and the box keeps them one word wider instead of five.
    pub payment: Option<Box<Payment>>,
}

impl Order {
    /// A pending order whose payment window has closed: it is expired in all but the record.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.status == OrderStatus::PendingPayment && now >= self.expires_at
    }

    /// The state of its payment, if it has one.
    pub fn payment_state(&self) -> Option<PaymentState> {
        self.payment.as_ref().map(|payment| payment.state)
    }

    /// Whether its payment may still take money the server has not heard of: such an order is
    /// neither expired nor cancelled without asking the provider first.
    pub fn has_open_payment(&self) -> bool {
        self.payment_state() == Some(PaymentState::Open)
    }

    /// Whether the server still has work with the provider for it (see `PaymentState`).
    pub fn payment_unsettled(&self) -> bool {
        self.payment_state().is_some_and(PaymentState::is_unsettled)
    }

    /// The order as the world outside may see it (events): without the client secret.
    pub fn without_secret(&self) -> Order {
        let mut order = self.clone();
        if let Some(payment) = order.payment.as_mut() {
            payment.client_secret = None;
        }
        order
    }
}

#[cfg(test)]
impl Order {
    /// A pending order of one unit, for tests of what keeps orders.
    pub(crate) fn pending_for_test(sale_id: &SaleId, user: &str, at: Timestamp) -> Self {
        Self {
            id: OrderId::generate(),
            sale_id: sale_id.clone(),
            user_id: UserId::parse(user).unwrap(),
            quantity: 1,
            status: OrderStatus::PendingPayment,
            created_at: at,
            expires_at: at,
            paid_at: None,
            idempotency_key: None,
            access_code: None,
            refunded_at: None,
            payment: None,
        }
    }
}

/// Who asks for a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Buyer(UserId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A payment without a provider: the buyer says they paid (free orders).
    Pay,
    Cancel,
    /// The payment-expiry sweep.
    Expire,
    /// The sweep, for an order whose intent the provider could not be asked to cancel: once
    /// `grace` past its deadline it is expired all the same (a payment that succeeds later is
    /// refunded).
    ExpireUnconfirmed {
        grace: SignedDuration,
    },
    /// The admin's refund of a paid order.
    Refund,
    /// What the payment provider said (`pay` made the intent, the money was taken, the intent
    /// was cancelled, the refund went through).
    Provider(ProviderFact),
}

/// Why a change is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The order is not the actor's: answered as if it did not exist, so ids cannot be probed.
    NotFound,
    /// The actor may see the order but not do this to it (an admin paying for a buyer).
    Forbidden,
    NotPayable,
    NotCancellable,
    NotRefundable,
    /// Its intent may still take money: cancel it at the provider first.
    PaymentOpen,
}

/// An order's new state and the event the change makes, if it makes one (recording an intent
/// or a confirmed refund changes the order but tells the world nothing new).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub order: Order,
    pub event: Option<OrderEvent>,
}

/// What to do with an order, decided by the rules and carried out by a store atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Record the order as the change leaves it.
    Apply(Box<Change>),
    /// Nothing to change; answer with the order as it is (paying a paid order, say).
    Unchanged,
    /// The order is overdue: record it as expired (returning its stock), then refuse.
    ExpireThenRefuse(Refusal),
    Refuse(Refusal),
}

fn apply(order: Order, event: Option<OrderEvent>) -> Verdict {
    Verdict::Apply(Box::new(Change { order, event }))
}

/// `order` moved to `status` at `now`, with that status's event.
fn moved(order: &Order, status: OrderStatus, now: Timestamp) -> Order {
    let mut next = order.clone();
    next.status = status;
    match status {
        OrderStatus::Paid => next.paid_at = Some(now),
        OrderStatus::Refunded => next.refunded_at = Some(now),
        _ => {}
    }
    next
}

fn with_payment(mut order: Order, state: PaymentState) -> Order {
    if let Some(payment) = order.payment.as_mut() {
        payment.state = state;
    }
    order
}

/// The one place that says which transitions are allowed.
pub fn decide(order: &Order, action: &Action, actor: &Actor, now: Timestamp) -> Verdict {
    use OrderStatus::*;
    let owns = match actor {
        Actor::Admin => true,
        Actor::Buyer(user) => *user == order.user_id,
    };
    if !owns {
        return Verdict::Refuse(Refusal::NotFound);
    }
    // An overdue order with an open intent is the sweep's to settle with the provider.
    let overdue = |refusal| {
        if order.has_open_payment() {
            Verdict::Refuse(refusal)
        } else {
            Verdict::ExpireThenRefuse(refusal)
        }
    };
    match action {
        Action::Pay => {
            if *actor == Actor::Admin {
                return Verdict::Refuse(Refusal::Forbidden);
            }
            match order.status {
                Paid => Verdict::Unchanged,
                PendingPayment if order.is_overdue(now) => overdue(Refusal::NotPayable),
                PendingPayment if order.payment.is_none() => {
                    apply(moved(order, Paid, now), Some(OrderEvent::Paid))
                }
                PendingPayment | Cancelled | Expired | Refunded => {
                    Verdict::Refuse(Refusal::NotPayable)
                }
            }
        }
        Action::Provider(ProviderFact::IntentCreated(payment)) => {
            if *actor == Actor::Admin {
                return Verdict::Refuse(Refusal::Forbidden);
            }
            match (order.status, order.payment_state()) {
                (Paid, _) => Verdict::Unchanged,
                (PendingPayment, Some(PaymentState::Canceled)) => {
                    Verdict::Refuse(Refusal::NotPayable)
                }
                // The first intent recorded is the order's: a concurrent `pay` answers with it.
                (PendingPayment, Some(_)) => Verdict::Unchanged,
                (PendingPayment, None) if order.is_overdue(now) => {
                    Verdict::ExpireThenRefuse(Refusal::NotPayable)
                }
                (PendingPayment, None) => {
                    let mut next = order.clone();
                    next.payment = Some(payment.clone());
                    if payment.state == PaymentState::Succeeded {
                        apply(moved(&next, Paid, now), Some(OrderEvent::Paid))
                    } else {
                        apply(next, None)
                    }
                }
                (Cancelled | Expired | Refunded, _) => Verdict::Refuse(Refusal::NotPayable),
            }
        }
        Action::Cancel => match order.status {
            Cancelled => Verdict::Unchanged,
            PendingPayment if order.has_open_payment() => Verdict::Refuse(Refusal::PaymentOpen),
            PendingPayment if order.is_overdue(now) => overdue(Refusal::NotCancellable),
            PendingPayment => apply(moved(order, Cancelled, now), Some(OrderEvent::Cancelled)),
            Paid | Expired | Refunded => Verdict::Refuse(Refusal::NotCancellable),
        },
        Action::Expire => {
            if order.is_overdue(now) && !order.has_open_payment() {
                apply(moved(order, Expired, now), Some(OrderEvent::Expired))
            } else {
                Verdict::Unchanged
            }
        }
        Action::ExpireUnconfirmed { grace } => {
            let past_grace = order
                .expires_at
                .checked_add(*grace)
                .is_ok_and(|deadline| now >= deadline);
            if order.is_overdue(now) && past_grace {
                apply(moved(order, Expired, now), Some(OrderEvent::Expired))
            } else {
                Verdict::Unchanged
            }
        }
        Action::Refund => {
            if *actor != Actor::Admin {
                return Verdict::Refuse(Refusal::Forbidden);
            }
            match order.status {
                Refunded => Verdict::Unchanged,
                Paid => {
                    let next = moved(order, Refunded, now);
                    let next = if order.payment.is_some() {
                        with_payment(next, PaymentState::RefundPending)
                    } else {
                        next
                    };
                    apply(next, Some(OrderEvent::Refunded))
                }
                PendingPayment | Cancelled | Expired => Verdict::Refuse(Refusal::NotRefundable),
            }
        }
        Action::Provider(ProviderFact::Succeeded { intent_id }) => {
            let Some(payment) = order
                .payment
                .as_ref()
                .filter(|payment| payment.intent_id == *intent_id)
            else {
                return Verdict::Unchanged;
            };
            match (order.status, payment.state) {
                // Money taken before the order was recorded as expired: it is paid, even past
                // its deadline (its units are still held).
                (PendingPayment, _) => apply(
                    with_payment(moved(order, Paid, now), PaymentState::Succeeded),
                    Some(OrderEvent::Paid),
                ),
                // Late money: the units went back on sale, so the money goes back.
                (Cancelled | Expired, PaymentState::Open | PaymentState::Canceled) => {
                    let mut next = with_payment(order.clone(), PaymentState::RefundPending);
                    next.refunded_at = Some(now);
                    apply(next, Some(OrderEvent::Refunded))
                }
                _ => Verdict::Unchanged,
            }
        }
        Action::Provider(ProviderFact::Canceled { intent_id }) => {
            let open = order.payment.as_ref().is_some_and(|payment| {
                payment.intent_id == *intent_id && payment.state == PaymentState::Open
            });
            if !open {
                return Verdict::Unchanged;
            }
            let next = with_payment(order.clone(), PaymentState::Canceled);
            if order.is_overdue(now) {
                apply(moved(&next, Expired, now), Some(OrderEvent::Expired))
            } else {
                apply(next, None)
            }
        }
        Action::Provider(ProviderFact::Refunded { refund_id }) => {
            if order.payment_state() != Some(PaymentState::RefundPending) {
                return Verdict::Unchanged;
            }
            let mut next = with_payment(order.clone(), PaymentState::Refunded);
            if let Some(payment) = next.payment.as_mut() {
                payment.refund_id = Some(refund_id.clone());
            }
            apply(next, None)
        }
    }
}

/// A verdict carried out on the order: what every store records (the order after the change,
/// its event) and answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub order: Order,
    /// Whether the order changed (and must be written).
    pub changed: bool,
    pub event: Option<OrderEvent>,
    pub refusal: Option<Refusal>,
}

impl Outcome {
    /// Whether this change moved the order out of an active status: its stock goes back.
    pub fn releases(&self, before: &Order) -> bool {
        before.status.is_active() && !self.order.status.is_active()
    }
}

/// Decides and carries out: the order as the verdict leaves it.
pub fn outcome(order: &Order, action: &Action, actor: &Actor, now: Timestamp) -> Outcome {
    match decide(order, action, actor, now) {
        Verdict::Apply(change) => Outcome {
            order: change.order,
            changed: true,
            event: change.event,
            refusal: None,
        },
        Verdict::Unchanged => Outcome {
            order: order.clone(),
            changed: false,
            event: None,
            refusal: None,
        },
        Verdict::ExpireThenRefuse(refusal) => Outcome {
            order: moved(order, OrderStatus::Expired, now),
            changed: true,
            event: Some(OrderEvent::Expired),
            refusal: Some(refusal),
        },
        Verdict::Refuse(refusal) => Outcome {
            order: order.clone(),
            changed: false,
            event: None,
            refusal: Some(refusal),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: OrderStatus) -> Order {
        Order {
            id: OrderId::generate(),
            sale_id: SaleId::generate(),
            user_id: UserId::parse("alice").unwrap(),
            quantity: 1,
            status,
            created_at: "2026-12-01T12:00:00Z".parse().unwrap(),
            expires_at: "2026-12-01T12:15:00Z".parse().unwrap(),
            paid_at: None,
            idempotency_key: None,
            access_code: None,
            refunded_at: None,
            payment: None,
        }
    }

    fn alice() -> Actor {
        Actor::Buyer(UserId::parse("alice").unwrap())
    }

    fn before() -> Timestamp {
        "2026-12-01T12:10:00Z".parse().unwrap()
    }

    fn after() -> Timestamp {
        "2026-12-01T12:15:00Z".parse().unwrap()
    }

    fn payment(state: PaymentState) -> Box<Payment> {
        Box::new(Payment {
            provider: "stripe".into(),
            intent_id: "pi_1".into(),
            client_secret: Some("pi_1_secret".into()),
            state,
            refund_id: None,
        })
    }

    fn with(status: OrderStatus, state: PaymentState) -> Order {
        let mut order = order(status);
        order.payment = Some(payment(state));
        order
    }

    /// What a verdict makes of an order: its status and payment state after, and its event.
    fn after_verdict(
        order: &Order,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> (
        OrderStatus,
        Option<PaymentState>,
        Option<OrderEvent>,
        Option<Refusal>,
    ) {
        let outcome = outcome(order, &action, actor, now);
        (
            outcome.order.status,
            outcome.order.payment_state(),
            outcome.event,
            outcome.refusal,
        )
    }

    #[test]
    fn the_transition_table() {
        use Action::*;
        use OrderStatus::*;
        use Verdict::*;
        let table = [
            (PendingPayment, Pay, before(), "apply paid"),
            (PendingPayment, Pay, after(), "expire, not payable"),
            (Paid, Pay, after(), "unchanged"),
            (Cancelled, Pay, before(), "not payable"),
            (Expired, Pay, before(), "not payable"),
            (Refunded, Pay, before(), "not payable"),
            (PendingPayment, Cancel, before(), "apply cancelled"),
            (PendingPayment, Cancel, after(), "expire, not cancellable"),
            (Cancelled, Cancel, before(), "unchanged"),
            (Paid, Cancel, before(), "not cancellable"),
            (Expired, Cancel, before(), "not cancellable"),
            (Refunded, Cancel, before(), "not cancellable"),
            (PendingPayment, Expire, before(), "unchanged"),
            (PendingPayment, Expire, after(), "apply expired"),
            (Paid, Expire, after(), "unchanged"),
            (Cancelled, Expire, after(), "unchanged"),
        ];
        for (status, action, now, expected) in table {
            let verdict = decide(&order(status), &action, &alice(), now);
            let seen = match &verdict {
                Apply(change) => format!("apply {}", change.order.status.as_str()),
                Unchanged => "unchanged".into(),
                ExpireThenRefuse(Refusal::NotPayable) => "expire, not payable".into(),
                ExpireThenRefuse(Refusal::NotCancellable) => "expire, not cancellable".into(),
                Refuse(Refusal::NotPayable) => "not payable".into(),
                Refuse(Refusal::NotCancellable) => "not cancellable".into(),
                other => format!("{other:?}"),
            };
            assert_eq!(seen, expected, "{status:?} {action:?} at {now}");
        }
    }

    #[test]
    fn paying_sets_paid_at_and_tells_paid() {
        let outcome = outcome(
            &order(OrderStatus::PendingPayment),
            &Action::Pay,
            &alice(),
            before(),
        );
        assert_eq!(outcome.order.paid_at, Some(before()));
        assert_eq!(outcome.event, Some(OrderEvent::Paid));
        assert!(!outcome.releases(&order(OrderStatus::PendingPayment)));
    }

    #[test]
    fn an_intent_is_recorded_once_and_the_order_waits_for_the_money() {
        use PaymentState::*;
        let pending = order(OrderStatus::PendingPayment);
        let created = Action::Provider(ProviderFact::IntentCreated(payment(Open)));
        let recorded = outcome(&pending, &created, &alice(), before());
        assert_eq!(recorded.order.status, OrderStatus::PendingPayment);
        assert_eq!(recorded.order.payment_state(), Some(Open));
        assert_eq!(recorded.event, None, "an intent tells the world nothing");
        // A second intent (a concurrent pay) leaves the first.
        let mut other = payment(Open);
        other.intent_id = "pi_2".into();
        let again = outcome(
            &recorded.order,
            &Action::Provider(ProviderFact::IntentCreated(other)),
            &alice(),
            before(),
        );
        assert!(!again.changed);
        assert_eq!(again.order.payment.as_ref().unwrap().intent_id, "pi_1");
        // Late: expired, not payable; an admin cannot pay for the buyer.
        assert_eq!(
            after_verdict(&pending, created.clone(), &alice(), after()),
            (
                OrderStatus::Expired,
                None,
                Some(OrderEvent::Expired),
                Some(Refusal::NotPayable)
            )
        );
        assert_eq!(
            decide(&pending, &created, &Actor::Admin, before()),
            Verdict::Refuse(Refusal::Forbidden)
        );
        // The simulated provider takes the money at once: paid in the same change.
        let instant = outcome(
            &pending,
            &Action::Provider(ProviderFact::IntentCreated(payment(Succeeded))),
            &alice(),
            before(),
        );
        assert_eq!(instant.order.status, OrderStatus::Paid);
        assert_eq!(instant.event, Some(OrderEvent::Paid));
    }

    #[test]
    fn an_open_intent_is_never_expired_or_cancelled_without_the_provider() {
        use PaymentState::*;
        let open = with(OrderStatus::PendingPayment, Open);
        assert_eq!(
            decide(&open, &Action::Expire, &Actor::Admin, after()),
            Verdict::Unchanged
        );
        assert_eq!(
            decide(&open, &Action::Cancel, &alice(), before()),
            Verdict::Refuse(Refusal::PaymentOpen)
        );
        assert_eq!(
            decide(&open, &Action::Pay, &alice(), after()),
            Verdict::Refuse(Refusal::NotPayable),
            "overdue with an open intent: refused, not expired"
        );
        let grace = SignedDuration::from_secs(600);
        assert_eq!(
            decide(
                &open,
                &Action::ExpireUnconfirmed { grace },
                &Actor::Admin,
                after()
            ),
            Verdict::Unchanged,
            "within the grace"
        );
        let late = after() + grace;
        assert_eq!(
            after_verdict(
                &open,
                Action::ExpireUnconfirmed { grace },
                &Actor::Admin,
                late
            ),
            (
                OrderStatus::Expired,
                Some(Open),
                Some(OrderEvent::Expired),
                None
            )
        );
        // Cancelled at the provider: expired if overdue, else only the payment changes.
        let canceled = Action::Provider(ProviderFact::Canceled {
            intent_id: "pi_1".into(),
        });
        assert_eq!(
            after_verdict(&open, canceled.clone(), &Actor::Admin, after()),
            (
                OrderStatus::Expired,
                Some(Canceled),
                Some(OrderEvent::Expired),
                None
            )
        );
        assert_eq!(
            after_verdict(&open, canceled, &Actor::Admin, before()),
            (OrderStatus::PendingPayment, Some(Canceled), None, None)
        );
        // A pending order whose intent was cancelled cancels, and cannot be paid any more.
        let dead = with(OrderStatus::PendingPayment, Canceled);
        assert_eq!(
            after_verdict(&dead, Action::Cancel, &alice(), before()).0,
            OrderStatus::Cancelled
        );
        assert_eq!(
            decide(
                &dead,
                &Action::Provider(ProviderFact::IntentCreated(payment(Open))),
                &alice(),
                before()
            ),
            Verdict::Refuse(Refusal::NotPayable)
        );
    }

    #[test]
    fn money_taken_pays_a_pending_order_and_is_refunded_for_a_closed_one_once() {
        use OrderStatus::*;
        use PaymentState::*;
        let succeeded = || {
            Action::Provider(ProviderFact::Succeeded {
                intent_id: "pi_1".into(),
            })
        };
        assert_eq!(
            after_verdict(
                &with(PendingPayment, Open),
                succeeded(),
                &Actor::Admin,
                after()
            ),
            (Paid, Some(Succeeded), Some(OrderEvent::Paid), None),
            "even past its deadline: its units are still held"
        );
        for status in [Expired, Cancelled] {
            let late = outcome(&with(status, Open), &succeeded(), &Actor::Admin, after());
            assert_eq!(late.order.status, status, "a closed order stays closed");
            assert_eq!(late.order.payment_state(), Some(RefundPending));
            assert_eq!(late.order.refunded_at, Some(after()));
            assert_eq!(late.event, Some(OrderEvent::Refunded));
            // Told again (a replayed webhook, the sweep): nothing more.
            assert!(!outcome(&late.order, &succeeded(), &Actor::Admin, after()).changed);
        }
        for (status, state) in [
            (Paid, Succeeded),
            (OrderStatus::Refunded, RefundPending),
            (OrderStatus::Refunded, PaymentState::Refunded),
        ] {
            assert_eq!(
                decide(&with(status, state), &succeeded(), &Actor::Admin, after()),
                Verdict::Unchanged
            );
        }
        // Another intent than the order's: not this order's money.
        let stray = Action::Provider(ProviderFact::Succeeded {
            intent_id: "pi_other".into(),
        });
        assert_eq!(
            decide(&with(PendingPayment, Open), &stray, &Actor::Admin, after()),
            Verdict::Unchanged
        );
    }

    #[test]
    fn a_refund_returns_a_paid_orders_units_once_and_is_final() {
        use OrderStatus::*;
        use PaymentState::*;
        let paid = with(Paid, Succeeded);
        let refunded = outcome(&paid, &Action::Refund, &Actor::Admin, after());
        assert_eq!(refunded.order.status, OrderStatus::Refunded);
        assert_eq!(refunded.order.payment_state(), Some(RefundPending));
        assert_eq!(refunded.order.refunded_at, Some(after()));
        assert_eq!(refunded.event, Some(OrderEvent::Refunded));
        assert!(refunded.releases(&paid));
        assert!(!outcome(&refunded.order, &Action::Refund, &Actor::Admin, after()).changed);
        let confirmed = outcome(
            &refunded.order,
            &Action::Provider(ProviderFact::Refunded {
                refund_id: "re_1".into(),
            }),
            &Actor::Admin,
            after(),
        );
        assert_eq!(
            confirmed.order.payment_state(),
            Some(PaymentState::Refunded)
        );
        assert_eq!(
            confirmed
                .order
                .payment
                .as_ref()
                .unwrap()
                .refund_id
                .as_deref(),
            Some("re_1")
        );
        assert_eq!(confirmed.event, None);
        for status in [PendingPayment, Cancelled, Expired] {
            assert_eq!(
                decide(&order(status), &Action::Refund, &Actor::Admin, after()),
                Verdict::Refuse(Refusal::NotRefundable)
            );
        }
        assert_eq!(
            decide(&paid, &Action::Refund, &alice(), after()),
            Verdict::Refuse(Refusal::Forbidden)
        );
        // Paid without a provider (a free order): refunded with nothing to send back.
        let free = outcome(&order(Paid), &Action::Refund, &Actor::Admin, after());
        assert_eq!(free.order.status, OrderStatus::Refunded);
        assert_eq!(free.order.payment, None);
    }

    #[test]
    fn another_buyer_cannot_see_or_touch_the_order() {
        let bob = Actor::Buyer(UserId::parse("bob").unwrap());
        let now = "2026-12-01T12:01:00Z".parse().unwrap();
        for action in [Action::Pay, Action::Cancel] {
            assert_eq!(
                decide(&order(OrderStatus::PendingPayment), &action, &bob, now),
                Verdict::Refuse(Refusal::NotFound)
            );
        }
    }

    #[test]
    fn admin_may_cancel_but_not_pay() {
        let now = "2026-12-01T12:01:00Z".parse().unwrap();
        let pending = order(OrderStatus::PendingPayment);
        assert_eq!(
            outcome(&pending, &Action::Cancel, &Actor::Admin, now)
                .order
                .status,
            OrderStatus::Cancelled
        );
        assert_eq!(
            decide(&pending, &Action::Pay, &Actor::Admin, now),
            Verdict::Refuse(Refusal::Forbidden)
        );
    }

    #[test]
    fn only_terminal_statuses_release_stock() {
        assert!(OrderStatus::PendingPayment.is_active());
        assert!(OrderStatus::Paid.is_active());
        assert!(!OrderStatus::Cancelled.is_active());
        assert!(!OrderStatus::Expired.is_active());
        assert!(!OrderStatus::Refunded.is_active());
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn events_leave_the_client_secret_out() {
        let order = with(OrderStatus::PendingPayment, PaymentState::Open);
        assert_eq!(order.without_secret().payment.unwrap().client_secret, None);
    }
}
