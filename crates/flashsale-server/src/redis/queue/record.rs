//! What the scripts store as JSON: an order as the queue carries it (the stream entry), a
//! holding (`{u, q, k, c, e}`: buyer, units, idempotency key, access code, and the queue entry of
//! an order not yet in PostgreSQL), and a sale whose change the gate began (`pending`).

use std::borrow::Cow;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::{
    DrawSeed, Order, OrderId, OrderStatus, Sale, SaleAccess, SaleChangeKind, SaleId, SaleRevision,
    UserId,
};
use crate::store::{waiting_room_from_text, waiting_room_text};

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
    #[serde(borrow, default)]
    access_code: Option<Cow<'a, str>>,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        access_code: Option<&'a str>,
    }
    let mut text = serde_json::to_string(&Untimed {
        id: order.id.as_str(),
        sale_id: order.sale_id.as_str(),
        user_id: order.user_id.as_str(),
        quantity: order.quantity,
        idempotency_key: order.idempotency_key.as_deref(),
        access_code: order.access_code.as_deref(),
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
        access_code: queued.access_code.map(Cow::into_owned),
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
        c: &'a str,
    }
    let mut text = serde_json::to_string(&Open {
        u: order.user_id.as_str(),
        q: order.quantity,
        k: order.idempotency_key.as_deref().unwrap_or(""),
        c: order.access_code.as_deref().unwrap_or(""),
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

/// A sale as the gate keeps a change it began (times as RFC 3339, exact to the nanosecond), with
/// the kind of change.
#[derive(Serialize, Deserialize)]
struct SaleRecord {
    kind: String,
    id: String,
    name: String,
    description: String,
    stock: u64,
    per_user_limit: u32,
    price_cents: u64,
    starts_at: String,
    ends_at: Option<String>,
    payment_window_secs: u32,
    created_at: String,
    waiting_room: Option<String>,
    /// The room's draw seed in hex; absent for a sale without one (and in records of before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    draw_seed: Option<String>,
    version: u64,
    paused: bool,
    access: String,
    at: String,
}

pub fn encode_revision(revision: &SaleRevision) -> String {
    let sale = &revision.sale;
    serde_json::to_string(&SaleRecord {
        kind: revision.kind.as_str().to_owned(),
        id: sale.id.to_string(),
        name: sale.name.clone(),
        description: sale.description.clone(),
        stock: sale.stock,
        per_user_limit: sale.per_user_limit,
        price_cents: sale.price_cents,
        starts_at: sale.starts_at.to_string(),
        ends_at: sale.ends_at.map(|at| at.to_string()),
        payment_window_secs: sale.payment_window_secs,
        created_at: sale.created_at.to_string(),
        waiting_room: waiting_room_text(sale.waiting_room.as_ref()),
        draw_seed: sale
            .waiting_room
            .and_then(|room| room.draw_seed)
            .map(|seed| seed.to_hex()),
        version: sale.version,
        paused: sale.paused,
        access: sale.access.as_str().to_owned(),
        at: revision.at.to_string(),
    })
    // Serializing plain strings and numbers cannot fail.
    .unwrap_or_default()
}

/// The revision `encode_revision` wrote; `None` when the text is not one.
pub fn decode_revision(text: &str) -> Option<SaleRevision> {
    let record: SaleRecord = serde_json::from_str(text).ok()?;
    let kind = SaleChangeKind::parse(&record.kind)?;
    let sale = Sale {
        id: SaleId::parse(&record.id)?,
        name: record.name,
        description: record.description,
        stock: record.stock,
        per_user_limit: record.per_user_limit,
        price_cents: record.price_cents,
        starts_at: record.starts_at.parse().ok()?,
        ends_at: match record.ends_at {
            Some(text) => Some(text.parse().ok()?),
            None => None,
        },
        payment_window_secs: record.payment_window_secs,
        created_at: record.created_at.parse().ok()?,
        waiting_room: match record.waiting_room {
            Some(text) => Some(waiting_room_from_text(&text)?),
            None => None,
        },
        version: record.version,
        paused: record.paused,
        access: SaleAccess::parse(&record.access)?,
    };
    let mut sale = sale;
    if let Some(hex) = record.draw_seed {
        sale.waiting_room.as_mut()?.draw_seed = Some(DrawSeed::from_hex(&hex)?);
    }
    let at = record.at.parse().ok()?;
    Some(SaleRevision { sale, kind, at })
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
            access_code: Some("AbC-_0123456789abcdefg".into()),
            refunded_at: None,
            payment: None,
        };
        assert_eq!(decode(&as_queued(&order)), Some(order.clone()));
        let keyless = Order {
            idempotency_key: None,
            access_code: None,
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
            access_code: None,
            refunded_at: None,
            payment: None,
        };
        assert_eq!(decode(&as_queued(&order)), Some(order));
    }

    #[test]
    fn a_pending_sale_reads_back_as_written() {
        let mut sale = crate::domain::Sale::of_stock_for_test(10);
        sale.ends_at = Some("2026-12-01T13:00:00.123456789Z".parse().unwrap());
        sale.waiting_room = Some(crate::domain::WaitingRoom {
            admit_per_sec: 5,
            pass_ttl_secs: 60,
            opens_before_secs: 0,
            draw_seed: Some(crate::domain::DrawSeed::from_bytes([3; 32])),
        });
        sale.version = 7;
        sale.paused = true;
        sale.access = SaleAccess::Codes;
        sale.name = "\"quoted\" ✓".into();
        let revision = SaleRevision {
            sale,
            kind: SaleChangeKind::Paused,
            at: "2026-12-01T12:00:00.5Z".parse().unwrap(),
        };
        assert_eq!(decode_revision(&encode_revision(&revision)), Some(revision));
        assert_eq!(decode_revision("{}"), None);
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
            access_code: None,
            refunded_at: None,
            payment: None,
        };
        let holding = format!("{},\"e\":\"1-0\"}}", encode_holding_open(&order));
        assert_eq!(holding_quantity(&holding), Some(2));
        assert_eq!(holding_entry(&holding).as_deref(), Some("1-0"));
        assert_eq!(holding_entry(r#"{"u":"a","q":1,"k":""}"#), None);
    }
}
