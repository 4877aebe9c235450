//! An order as the queue carries it: JSON in the stream entry and in the unpersisted hash.

use std::borrow::Cow;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::{Order, OrderId, OrderStatus, SaleId, UserId};

#[derive(Serialize, Deserialize)]
struct QueuedOrder<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    sale_id: Cow<'a, str>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    quantity: u32,
    created_at_ms: i64,
    expires_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

pub fn encode(order: &Order) -> String {
    let queued = QueuedOrder {
        id: Cow::Borrowed(order.id.as_str()),
        sale_id: Cow::Borrowed(order.sale_id.as_str()),
        user_id: Cow::Borrowed(order.user_id.as_str()),
        quantity: order.quantity,
        created_at_ms: order.created_at.as_millisecond(),
        expires_at_ms: order.expires_at.as_millisecond(),
        idempotency_key: order.idempotency_key.as_deref().map(Cow::Borrowed),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&queued).unwrap_or_default()
}

/// The order a queue entry describes, as a new (pending) order; `None` when it is not one.
pub fn decode(text: &str) -> Option<Order> {
    let queued: QueuedOrder<'_> = serde_json::from_str(text).ok()?;
    Some(Order {
        id: OrderId::parse(&queued.id)?,
        sale_id: SaleId::parse(&queued.sale_id)?,
        user_id: UserId::parse(&queued.user_id)?,
        quantity: queued.quantity,
        status: OrderStatus::PendingPayment,
        created_at: Timestamp::from_millisecond(queued.created_at_ms).ok()?,
        expires_at: Timestamp::from_millisecond(queued.expires_at_ms).ok()?,
        paid_at: None,
        idempotency_key: queued.idempotency_key.map(Cow::into_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_survives_the_queue_whatever_its_buyer_and_key() {
        let created_at = Timestamp::from_millisecond(1_800_000_000_123).unwrap();
        let order = Order {
            id: OrderId::generate(),
            sale_id: SaleId::generate(),
            user_id: UserId::parse("名前 \"with\" quotes\nand:colons").unwrap(),
            quantity: 3,
            status: OrderStatus::PendingPayment,
            created_at,
            expires_at: created_at + jiff::SignedDuration::from_secs(900),
            paid_at: None,
            idempotency_key: Some("k\\ey é".into()),
        };
        assert_eq!(decode(&encode(&order)), Some(order.clone()));
        let keyless = Order {
            idempotency_key: None,
            ..order
        };
        assert_eq!(decode(&encode(&keyless)), Some(keyless));
        assert_eq!(decode("{\"id\":\"nope\"}"), None);
    }
}
