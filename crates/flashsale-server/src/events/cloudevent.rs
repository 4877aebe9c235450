//! An event as it goes out: CloudEvents 1.0 in JSON. The data is the API's own JSON of the Order
//! or the Sale right after the change (`http::wire`); the envelope around it is written by hand
//! (every field but `source` and `data` is ASCII made here, and those two are escaped by serde),
//! so that the data, stored as text, is never parsed again. A test holds the envelope to what a
//! JSON parser reads.

use jiff::Timestamp;

use super::sink::OutboundEvent;
use crate::domain::{Event, EventSubject};
use crate::http::{rfc3339, wire};
use crate::store::RecordedEvent;

/// The `source` of every event of one installation: `flashsale/<installation>`.
pub fn source(installation: &str) -> String {
    format!("flashsale/{installation}")
}

/// The event's `id`: unique (a sale's id and a sequence name one event for good, sequences
/// never being reused) and the same on every redelivery.
pub fn event_id(sale_id: &str, sequence: u64) -> String {
    format!("{sale_id}-{sequence}")
}

/// The data of an event: the API's JSON of its order or sale as it was right after the change.
pub fn data_json(event: &Event) -> String {
    let bytes = match &event.subject {
        // A payment's client secret lets its holder pay: it stays between the buyer and the
        // server.
        EventSubject::Order(order) if order.payment.is_some() => {
            wire::order_json(&order.without_secret())
        }
        EventSubject::Order(order) => wire::order_json(order),
        EventSubject::Sale { sale, remaining } => serde_json::to_vec(&wire::SaleBody::of(
            sale,
            *remaining,
            sale.state(event.at, *remaining),
            event.at,
        )),
    };
    // Both writers only fail on a map with non-text keys, which these bodies do not have.
    bytes
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| "null".into())
}

/// An event with its data rendered, as the stores that keep the data as text record it.
pub fn recorded(event: &Event) -> RecordedEvent {
    RecordedEvent {
        sale_id: event.sale_id.clone(),
        sequence: event.sequence,
        kind: event.kind,
        subject: event.subject_id().to_owned(),
        at: event.at,
        data: data_json(event),
    }
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The whole CloudEvent as JSON.
pub fn envelope_json(source: &str, event: &RecordedEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.data.len() + 320);
    out.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    push_text(&mut out, &event_id(event.sale_id.as_str(), event.sequence));
    out.extend_from_slice(br#","source":"#);
    push_text(&mut out, source);
    out.extend_from_slice(br#","type":""#);
    out.extend_from_slice(event.kind.type_name().as_bytes());
    out.extend_from_slice(br#"","subject":"#);
    push_text(&mut out, &event.subject);
    out.extend_from_slice(br#","time":""#);
    rfc3339::push(&mut out, event.at);
    out.extend_from_slice(br#"","saleid":"#);
    push_text(&mut out, event.sale_id.as_str());
    out.extend_from_slice(br#","sequence":"#);
    out.extend_from_slice(event.sequence.to_string().as_bytes());
    out.extend_from_slice(br#","datacontenttype":"application/json","data":"#);
    out.extend_from_slice(event.data.as_bytes());
    out.push(b'}');
    out
}

fn unix_secs(at: Timestamp) -> i64 {
    at.as_second()
}

/// The event as sinks take it.
pub fn outbound(source: &str, event: &RecordedEvent) -> OutboundEvent {
    OutboundEvent {
        id: event_id(event.sale_id.as_str(), event.sequence),
        event_type: event.kind.type_name().to_owned(),
        sale_id: event.sale_id.to_string(),
        sequence: event.sequence,
        time_secs: unix_secs(event.at),
        json: envelope_json(source, event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        EventKind, Order, OrderEvent, OrderId, OrderStatus, Sale, SaleEvent, UserId,
    };

    #[test]
    fn an_order_event_is_a_cloudevent_whose_data_is_the_order() {
        let sale = Sale::of_stock_for_test(5);
        let at: Timestamp = "2026-12-01T12:00:01.5Z".parse().unwrap();
        let order = Order {
            id: OrderId::generate(),
            sale_id: sale.id.clone(),
            user_id: UserId::parse("say \"hi\" 李").unwrap(),
            quantity: 2,
            status: OrderStatus::Paid,
            created_at: at,
            expires_at: at,
            paid_at: Some(at),
            idempotency_key: None,
            access_code: None,
            refunded_at: None,
            payment: None,
        };
        let event = Event {
            sale_id: sale.id.clone(),
            sequence: 7,
            kind: EventKind::Order(OrderEvent::Paid),
            at,
            subject: EventSubject::Order(order.clone()),
        };
        let outbound = outbound(&source("shop-1"), &recorded(&event));
        let json: serde_json::Value = serde_json::from_slice(&outbound.json).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], format!("{}-7", sale.id));
        assert_eq!(outbound.id, format!("{}-7", sale.id));
        assert_eq!(json["source"], "flashsale/shop-1");
        assert_eq!(json["type"], "flashsale.order.paid");
        assert_eq!(json["subject"], order.id.as_str());
        assert_eq!(json["time"], "2026-12-01T12:00:01.5Z");
        assert_eq!(json["saleid"], sale.id.as_str());
        assert_eq!(json["sequence"], 7);
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(
            json["data"],
            serde_json::to_value(wire::OrderBody::from(&order)).unwrap()
        );
        assert_eq!(json.as_object().unwrap().len(), 10);
        assert_eq!(outbound.time_secs, at.as_second());
    }

    #[test]
    fn a_sale_event_carries_the_sale_with_its_figures_then() {
        let sale = Sale::of_stock_for_test(5);
        let at: Timestamp = "2026-12-01T12:30:00Z".parse().unwrap();
        let event = Event {
            sale_id: sale.id.clone(),
            sequence: 3,
            kind: EventKind::Sale(SaleEvent::SoldOut),
            at,
            subject: EventSubject::Sale {
                sale: sale.clone(),
                remaining: 0,
            },
        };
        let json: serde_json::Value =
            serde_json::from_slice(&envelope_json("flashsale/x", &recorded(&event))).unwrap();
        assert_eq!(json["type"], "flashsale.sale.sold_out");
        assert_eq!(json["subject"], sale.id.as_str());
        assert_eq!(json["data"]["remaining"], 0);
        assert_eq!(json["data"]["state"], "sold_out");
        assert_eq!(json["data"]["stock"], 5);
    }
}
