//! What the scripts store as JSON: an order as the queue carries it (the stream entry and the
//! unpersisted hash), and a holding (`{u, q, k}`, written by the Lua scripts).

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

/// The units a holding (as the scripts store it) holds; `None` when it is not a holding.
pub fn holding_quantity(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|holding| holding["q"].as_u64())
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

    #[test]
    fn a_holding_tells_its_quantity() {
        assert_eq!(holding_quantity(r#"{"u":"a b","q":3,"k":""}"#), Some(3));
        assert_eq!(holding_quantity("not json"), None);
    }
}
