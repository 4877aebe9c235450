//! Events: the changes of an order or a sale, as told to the world outside. Each store records a
//! change's events with the change itself (the outbox), numbered per sale 1, 2, 3 … with no
//! gap, in the order the changes took effect. This file says which changes make which events;
//! it knows nothing of how they are stored, rendered or delivered.

use jiff::Timestamp;

use super::{Order, OrderStatus, PaymentState, Sale, SaleId};

/// What happened to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    Created,
    Paid,
    Cancelled,
    Expired,
    /// Its money is going back: a paid order refunded, or a payment that came for an order
    /// already expired or cancelled.
    Refunded,
}

/// What happened to a sale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaleEvent {
    Created,
    /// Its definition changed (the live controls), or stock came back to a sold-out sale: it
    /// sells again.
    Updated,
    Paused,
    Resumed,
    Ended,
    /// The last unit went.
    SoldOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Order(OrderEvent),
    Sale(SaleEvent),
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        Self::Order(OrderEvent::Created),
        Self::Order(OrderEvent::Paid),
        Self::Order(OrderEvent::Cancelled),
        Self::Order(OrderEvent::Expired),
        Self::Order(OrderEvent::Refunded),
        Self::Sale(SaleEvent::Created),
        Self::Sale(SaleEvent::Updated),
        Self::Sale(SaleEvent::Paused),
        Self::Sale(SaleEvent::Resumed),
        Self::Sale(SaleEvent::Ended),
        Self::Sale(SaleEvent::SoldOut),
    ];

    /// The CloudEvent `type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Order(OrderEvent::Created) => "flashsale.order.created",
            Self::Order(OrderEvent::Paid) => "flashsale.order.paid",
            Self::Order(OrderEvent::Cancelled) => "flashsale.order.cancelled",
            Self::Order(OrderEvent::Expired) => "flashsale.order.expired",
            Self::Order(OrderEvent::Refunded) => "flashsale.order.refunded",
            Self::Sale(SaleEvent::Created) => "flashsale.sale.created",
            Self::Sale(SaleEvent::Updated) => "flashsale.sale.updated",
            Self::Sale(SaleEvent::Paused) => "flashsale.sale.paused",
            Self::Sale(SaleEvent::Resumed) => "flashsale.sale.resumed",
            Self::Sale(SaleEvent::Ended) => "flashsale.sale.ended",
            Self::Sale(SaleEvent::SoldOut) => "flashsale.sale.sold_out",
        }
    }

    pub fn parse(type_name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.type_name() == type_name)
    }

    /// A small stable number for compact records (the journal's).
    pub fn code(self) -> u8 {
        Self::ALL
            .iter()
            .position(|kind| *kind == self)
            .and_then(|at| u8::try_from(at + 1).ok())
            .unwrap_or(0)
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// The event of an order that has just reached `status`.
pub fn order_event(status: OrderStatus) -> OrderEvent {
    match status {
        OrderStatus::PendingPayment => OrderEvent::Created,
        OrderStatus::Paid => OrderEvent::Paid,
        OrderStatus::Cancelled => OrderEvent::Cancelled,
        OrderStatus::Expired => OrderEvent::Expired,
        OrderStatus::Refunded => OrderEvent::Refunded,
    }
}

/// The sale event a change of its remaining stock makes, if any: the last unit going makes it
/// `sold_out`; stock coming back to a sold-out sale makes it sell again, told as `updated` (the
/// Sale in the event says `remaining` and `state`).
pub fn stock_event(remaining_before: u64, remaining_after: u64) -> Option<SaleEvent> {
    match (remaining_before, remaining_after) {
        (before, 0) if before > 0 => Some(SaleEvent::SoldOut),
        (0, after) if after > 0 => Some(SaleEvent::Updated),
        _ => None,
    }
}

/// An order as it was right after `event`, from its state now: what an order keeps never
/// changes but its status, its times and its payment, and each event sets those in one way
/// only. Lets a store keep an order event as (order id, kind, time) instead of a copy of the
/// order. The payment is told as it stood then: open until paid or closed, succeeded when paid,
/// refund pending when the refund was decided (the provider's confirmation tells nothing new).
pub fn order_as_of(order: &Order, event: OrderEvent) -> Order {
    let mut then = order.clone();
    if event != OrderEvent::Refunded {
        then.refunded_at = None;
    }
    then.status = match event {
        OrderEvent::Created => OrderStatus::PendingPayment,
        OrderEvent::Paid => OrderStatus::Paid,
        OrderEvent::Cancelled => OrderStatus::Cancelled,
        OrderEvent::Expired => OrderStatus::Expired,
        // Refunded from paid, or late money of an order that stays expired or cancelled.
        OrderEvent::Refunded if order.status == OrderStatus::Refunded => OrderStatus::Refunded,
        OrderEvent::Refunded => order.status,
    };
    if !matches!(event, OrderEvent::Paid) && then.status != OrderStatus::Refunded {
        then.paid_at = None;
    }
    if event == OrderEvent::Created {
        then.payment = None;
    }
    if let Some(payment) = then.payment.as_mut() {
        payment.refund_id = None;
        payment.state = match event {
            OrderEvent::Created | OrderEvent::Paid => PaymentState::Succeeded,
            OrderEvent::Refunded => PaymentState::RefundPending,
            OrderEvent::Cancelled | OrderEvent::Expired => match payment.state {
                PaymentState::Canceled => PaymentState::Canceled,
                _ => PaymentState::Open,
            },
        };
    }
    then
}

/// What an event is about, as it was right after the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventSubject {
    Order(Order),
    Sale { sale: Sale, remaining: u64 },
}

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub sale_id: SaleId,
    /// Per sale: 1, 2, 3 … with no gap.
    pub sequence: u64,
    pub kind: EventKind,
    /// When the change took effect.
    pub at: Timestamp,
    pub subject: EventSubject,
}

impl Event {
    /// The order or sale id the event is about (the CloudEvent `subject`).
    pub fn subject_id(&self) -> &str {
        match &self.subject {
            EventSubject::Order(order) => order.id.as_str(),
            EventSubject::Sale { sale, .. } => sale.id.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_type_and_a_code_that_read_back() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.type_name()), Some(kind));
            assert_eq!(EventKind::from_code(kind.code()), Some(kind));
            assert_ne!(kind.code(), 0);
        }
        assert_eq!(EventKind::from_code(0), None);
        assert_eq!(EventKind::parse("flashsale.order.lost"), None);
    }

    #[test]
    fn the_last_unit_sells_out_and_a_return_sells_again() {
        assert_eq!(stock_event(1, 0), Some(SaleEvent::SoldOut));
        assert_eq!(stock_event(5, 0), Some(SaleEvent::SoldOut));
        assert_eq!(stock_event(0, 1), Some(SaleEvent::Updated));
        assert_eq!(stock_event(5, 4), None);
        assert_eq!(stock_event(4, 5), None);
        assert_eq!(stock_event(0, 0), None);
    }

    #[test]
    fn an_order_as_of_each_event_has_that_events_status() {
        let sale = Sale::of_stock_for_test(3);
        let at: Timestamp = "2026-12-01T12:00:01Z".parse().unwrap();
        let mut paid = Order::pending_for_test(&sale.id, "alice", at);
        paid.status = OrderStatus::Paid;
        paid.paid_at = Some(at);
        let created = order_as_of(&paid, OrderEvent::Created);
        assert_eq!(created.status, OrderStatus::PendingPayment);
        assert_eq!(created.paid_at, None);
        assert_eq!(order_as_of(&paid, OrderEvent::Paid), paid);
        let mut cancelled = paid.clone();
        cancelled.status = OrderStatus::Cancelled;
        cancelled.paid_at = None;
        assert_eq!(order_as_of(&cancelled, OrderEvent::Cancelled), cancelled);
        for status in OrderStatus::ALL {
            let event = order_event(status);
            let mut now = paid.clone();
            if status == OrderStatus::Refunded {
                now.status = OrderStatus::Refunded;
            }
            assert_eq!(order_as_of(&now, event).status, status);
        }
    }

    #[test]
    fn a_late_payments_refund_leaves_the_order_closed_and_each_event_its_payment_as_it_stood() {
        use crate::domain::{Payment, PaymentState};
        let sale = Sale::of_stock_for_test(3);
        let at: Timestamp = "2026-12-01T12:00:01Z".parse().unwrap();
        let mut late = Order::pending_for_test(&sale.id, "alice", at);
        late.status = OrderStatus::Expired;
        late.refunded_at = Some(at);
        late.payment = Some(Box::new(Payment {
            provider: "stripe".into(),
            intent_id: "pi_1".into(),
            client_secret: None,
            state: PaymentState::Refunded,
            refund_id: Some("re_1".into()),
        }));
        let expired = order_as_of(&late, OrderEvent::Expired);
        assert_eq!(expired.status, OrderStatus::Expired);
        assert_eq!(expired.refunded_at, None);
        assert_eq!(expired.payment_state(), Some(PaymentState::Open));
        let refunded = order_as_of(&late, OrderEvent::Refunded);
        assert_eq!(refunded.status, OrderStatus::Expired);
        assert_eq!(refunded.refunded_at, Some(at));
        assert_eq!(refunded.payment_state(), Some(PaymentState::RefundPending));
        assert_eq!(refunded.payment.unwrap().refund_id, None);
        assert_eq!(order_as_of(&late, OrderEvent::Created).payment, None);
    }
}
