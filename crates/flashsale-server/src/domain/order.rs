//! An order and its life cycle: `pending_payment → paid | cancelled | expired`. An order holds
//! stock while it is active (pending or paid); leaving that state returns the stock, and because
//! the terminal states never change again, that happens at most once per order.

use jiff::Timestamp;

use super::{OrderId, SaleId, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 4] = [
        Self::PendingPayment,
        Self::Paid,
        Self::Cancelled,
        Self::Expired,
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
}

impl Order {
    /// A pending order whose payment window has closed: it is expired in all but the record.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.status == OrderStatus::PendingPayment && now >= self.expires_at
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
        }
    }
}

/// Who asks for a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Buyer(UserId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pay,
    Cancel,
    /// The payment-expiry sweep.
    Expire,
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
}

/// What to do with an order, decided by the rules and carried out by a store atomically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Move the order to this status.
    Apply(OrderStatus),
    /// Nothing to change; answer with the order as it is (paying a paid order, say).
    Unchanged,
    /// The order is overdue: record it as expired (returning its stock), then refuse.
    ExpireThenRefuse(Refusal),
    Refuse(Refusal),
}

/// The one place that says which transitions are allowed.
pub fn decide(order: &Order, action: Action, actor: &Actor, now: Timestamp) -> Verdict {
    let owns = match actor {
        Actor::Admin => true,
        Actor::Buyer(user) => *user == order.user_id,
    };
    if !owns {
        return Verdict::Refuse(Refusal::NotFound);
    }
    match action {
        Action::Pay => {
            if *actor == Actor::Admin {
                return Verdict::Refuse(Refusal::Forbidden);
            }
            match order.status {
                OrderStatus::Paid => Verdict::Unchanged,
                OrderStatus::PendingPayment if order.is_overdue(now) => {
                    Verdict::ExpireThenRefuse(Refusal::NotPayable)
                }
                OrderStatus::PendingPayment => Verdict::Apply(OrderStatus::Paid),
                OrderStatus::Cancelled | OrderStatus::Expired => {
                    Verdict::Refuse(Refusal::NotPayable)
                }
            }
        }
        Action::Cancel => match order.status {
            OrderStatus::Cancelled => Verdict::Unchanged,
            OrderStatus::PendingPayment if order.is_overdue(now) => {
                Verdict::ExpireThenRefuse(Refusal::NotCancellable)
            }
            OrderStatus::PendingPayment => Verdict::Apply(OrderStatus::Cancelled),
            OrderStatus::Paid | OrderStatus::Expired => Verdict::Refuse(Refusal::NotCancellable),
        },
        Action::Expire => {
            if order.is_overdue(now) {
                Verdict::Apply(OrderStatus::Expired)
            } else {
                Verdict::Unchanged
            }
        }
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
        }
    }

    fn alice() -> Actor {
        Actor::Buyer(UserId::parse("alice").unwrap())
    }

    #[test]
    fn the_transition_table() {
        use Action::*;
        use OrderStatus::*;
        use Verdict::*;
        let before: Timestamp = "2026-12-01T12:10:00Z".parse().unwrap();
        let after: Timestamp = "2026-12-01T12:15:00Z".parse().unwrap();
        let table = [
            (PendingPayment, Pay, before, Apply(Paid)),
            (
                PendingPayment,
                Pay,
                after,
                ExpireThenRefuse(Refusal::NotPayable),
            ),
            (Paid, Pay, after, Unchanged),
            (Cancelled, Pay, before, Refuse(Refusal::NotPayable)),
            (Expired, Pay, before, Refuse(Refusal::NotPayable)),
            (PendingPayment, Cancel, before, Apply(Cancelled)),
            (
                PendingPayment,
                Cancel,
                after,
                ExpireThenRefuse(Refusal::NotCancellable),
            ),
            (Cancelled, Cancel, before, Unchanged),
            (Paid, Cancel, before, Refuse(Refusal::NotCancellable)),
            (Expired, Cancel, before, Refuse(Refusal::NotCancellable)),
            (PendingPayment, Expire, before, Unchanged),
            (PendingPayment, Expire, after, Apply(Expired)),
            (Paid, Expire, after, Unchanged),
            (Cancelled, Expire, after, Unchanged),
        ];
        for (status, action, now, expected) in table {
            assert_eq!(
                decide(&order(status), action, &alice(), now),
                expected,
                "{status:?} {action:?} at {now}"
            );
        }
    }

    #[test]
    fn another_buyer_cannot_see_or_touch_the_order() {
        let bob = Actor::Buyer(UserId::parse("bob").unwrap());
        let now = "2026-12-01T12:01:00Z".parse().unwrap();
        for action in [Action::Pay, Action::Cancel] {
            assert_eq!(
                decide(&order(OrderStatus::PendingPayment), action, &bob, now),
                Verdict::Refuse(Refusal::NotFound)
            );
        }
    }

    #[test]
    fn admin_may_cancel_but_not_pay() {
        let now = "2026-12-01T12:01:00Z".parse().unwrap();
        let pending = order(OrderStatus::PendingPayment);
        assert_eq!(
            decide(&pending, Action::Cancel, &Actor::Admin, now),
            Verdict::Apply(OrderStatus::Cancelled)
        );
        assert_eq!(
            decide(&pending, Action::Pay, &Actor::Admin, now),
            Verdict::Refuse(Refusal::Forbidden)
        );
    }

    #[test]
    fn only_terminal_statuses_release_stock() {
        assert!(OrderStatus::PendingPayment.is_active());
        assert!(OrderStatus::Paid.is_active());
        assert!(!OrderStatus::Cancelled.is_active());
        assert!(!OrderStatus::Expired.is_active());
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
    }
}
