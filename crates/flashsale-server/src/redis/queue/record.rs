//! What the scripts store as JSON: an order as the queue carries it (the stream entry), and a
//! holding (`{u, q, k, e}`: buyer, units, idempotency key, and the queue entry of an order not
//! yet in PostgreSQL).

use std::borrow::Cow;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::{Order, OrderId, OrderStatus, SaleId, UserId};

#[derive(Deserialize)]
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
    #[serde(borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// The order as the purchase script completes it: every field but the times, without the
/// closing brace (the script appends the times it took from Redis's clock).
pub fn encode_untimed(order: &Order) -> String {
    #[derive(Serialize)]
    struct Untimed<'a> {
        id: &'a str,
        sale_id: &'a str,
        user_id: &'a str,
        quantity: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<&'a str>,
    }
    let mut text = serde_json::to_string(&Untimed {
        id: order.id.as_str(),
        sale_id: order.sale_id.as_str(),
        user_id: order.user_id.as_str(),
        quantity: order.quantity,
        idempotency_key: order.idempotency_key.as_deref(),
    })
    // Serializing plain strings and numbers cannot fail.
    .unwrap_or_default();
    text.pop();
    text
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
        refunded_at: None,
        payment: None,
    })
}

/// A new order's holding without its closing brace: the purchase script appends the queue entry.
pub fn encode_holding_open(order: &Order) -> String {
    #[derive(Serialize)]
    struct Open<'a> {
        u: &'a str,
        q: u32,
        k: &'a str,
    }
    let mut text = serde_json::to_string(&Open {
        u: order.user_id.as_str(),
        q: order.quantity,
        k: order.idempotency_key.as_deref().unwrap_or(""),
    })
    // Serializing plain strings and numbers cannot fail.
    .unwrap_or_default();
    text.pop();
    text
}

/// The queue entry a holding names, when its order was queued by this version.
pub fn holding_entry(text: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|holding| holding["e"].as_str().map(str::to_owned))
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
            refunded_at: None,
            payment: None,
        };
        assert_eq!(decode(&as_queued(&order)), Some(order.clone()));
        let keyless = Order {
            idempotency_key: None,
            ..order
        };
        assert_eq!(decode(&as_queued(&keyless)), Some(keyless));
        assert_eq!(decode("{\"id\":\"nope\"}"), None);
    }

    /// The record as reserve.lua completes it: the untimed order plus the times.
    fn as_queued(order: &Order) -> String {
        format!(
            "{},\"created_at_ms\":{},\"expires_at_ms\":{}}}",
            encode_untimed(order),
            order.created_at.as_millisecond(),
            order.expires_at.as_millisecond()
        )
    }

    #[test]
    fn an_untimed_order_completed_by_the_script_decodes() {
        let created_at = Timestamp::from_millisecond(1_800_000_000_123).unwrap();
        let order = Order {
            id: OrderId::generate(),
            sale_id: SaleId::generate(),
            user_id: UserId::parse("b\"}{").unwrap(),
            quantity: 2,
            status: OrderStatus::PendingPayment,
            created_at,
            expires_at: created_at + jiff::SignedDuration::from_secs(60),
            paid_at: None,
            idempotency_key: Some("k".into()),
            refunded_at: None,
            payment: None,
        };
        assert_eq!(decode(&as_queued(&order)), Some(order));
    }

    #[test]
    fn a_holding_tells_its_quantity() {
        assert_eq!(holding_quantity(r#"{"u":"a b","q":3,"k":""}"#), Some(3));
        assert_eq!(holding_quantity("not json"), None);
        let order = Order {
            id: OrderId::parse("o1").unwrap(),
            sale_id: SaleId::parse("s1").unwrap(),
            user_id: UserId::parse("a \"quoted\" buyer").unwrap(),
            quantity: 2,
            status: OrderStatus::PendingPayment,
            created_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
            paid_at: None,
            idempotency_key: Some("k".into()),
            refunded_at: None,
            payment: None,
        };
        let holding = format!("{},\"e\":\"1-0\"}}", encode_holding_open(&order));
        assert_eq!(holding_quantity(&holding), Some(2));
        assert_eq!(holding_entry(&holding).as_deref(), Some("1-0"));
        assert_eq!(holding_entry(r#"{"u":"a","q":1,"k":""}"#), None);
    }
}
