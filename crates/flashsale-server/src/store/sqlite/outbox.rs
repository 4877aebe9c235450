//! The SQLite store's outbox: each change's events are rows of `events`, written by the writer
//! in the savepoint of the change itself, numbered from the sale's `last_event_sequence` (one
//! writer, so the numbers follow the commit order). The data is stored as the API's JSON.

use jiff::Timestamp;
use rusqlite::{params, Connection};

use super::rows::{self, millis, SALE_COLUMNS};
use crate::domain::{
    stock_event, Event, EventKind, EventSubject, Order, OrderEvent, Sale, SaleEvent, SaleId,
};

/// SQLite keeps times to the millisecond: an event's time and data are rounded the same way,
/// so they tell what the store reads back.
fn to_millis(at: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(millis(at)).unwrap_or(at)
}

fn as_stored(order: &Order) -> Order {
    let mut order = order.clone();
    order.created_at = to_millis(order.created_at);
    order.expires_at = to_millis(order.expires_at);
    order.paid_at = order.paid_at.map(to_millis);
    order.refunded_at = order.refunded_at.map(to_millis);
    order
}

pub fn remaining(connection: &Connection, sale_id: &SaleId) -> rusqlite::Result<u64> {
    let remaining: i64 = connection
        .prepare_cached("SELECT remaining FROM sales WHERE id = ?1")?
        .query_row([sale_id.as_str()], |row| row.get(0))?;
    Ok(u64::try_from(remaining).unwrap_or(0))
}

fn sale(connection: &Connection, sale_id: &SaleId) -> rusqlite::Result<Sale> {
    connection
        .prepare_cached(&format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = ?1"))?
        .query_row([sale_id.as_str()], rows::sale)
}

/// Numbers an event of `sale_id` and writes it.
fn record(
    connection: &Connection,
    sale_id: &SaleId,
    kind: EventKind,
    at: Timestamp,
    subject: EventSubject,
) -> rusqlite::Result<()> {
    let sequence: i64 = connection
        .prepare_cached(
            "UPDATE sales SET last_event_sequence = last_event_sequence + 1 WHERE id = ?1 \
             RETURNING last_event_sequence",
        )?
        .query_row([sale_id.as_str()], |row| row.get(0))?;
    let event = Event {
        sale_id: sale_id.clone(),
        sequence: u64::try_from(sequence).unwrap_or(0),
        kind,
        at: to_millis(at),
        subject,
    };
    let data = crate::events::data_json(&event);
    connection
        .prepare_cached(
            "INSERT INTO events (sale_id, sequence, type, subject, at_ms, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            sale_id.as_str(),
            sequence,
            kind.type_name(),
            event.subject_id(),
            millis(at),
            data
        ])?;
    Ok(())
}

/// A sale event telling the sale as it is now.
pub fn record_sale_event(
    connection: &Connection,
    sale_id: &SaleId,
    event: SaleEvent,
    at: Timestamp,
) -> rusqlite::Result<()> {
    let sale = sale(connection, sale_id)?;
    let remaining = remaining(connection, sale_id)?;
    record(
        connection,
        sale_id,
        EventKind::Sale(event),
        at,
        EventSubject::Sale { sale, remaining },
    )
}

/// An order's event, then the sale's if its stock ran out or came back (`remaining_before`:
/// the sale's stock before the change).
pub fn record_order_change(
    connection: &Connection,
    order: &Order,
    event: OrderEvent,
    at: Timestamp,
    remaining_before: u64,
) -> rusqlite::Result<()> {
    record(
        connection,
        &order.sale_id,
        EventKind::Order(event),
        at,
        EventSubject::Order(as_stored(order)),
    )?;
    let remaining_after = remaining(connection, &order.sale_id)?;
    if let Some(event) = stock_event(remaining_before, remaining_after) {
        record_sale_event(connection, &order.sale_id, event, at)?;
    }
    Ok(())
}
