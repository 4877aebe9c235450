//! Conversions between rows and domain values.

use jiff::Timestamp;
use rusqlite::Row;

use crate::domain::{
    Order, OrderId, OrderStatus, Payment, PaymentState, Sale, SaleAccess, SaleId, UserId,
};

pub const ORDER_COLUMNS: &str = "id, sale_id, user_id, quantity, status, created_at_ms, \
     expires_at_ms, paid_at_ms, idempotency_key, access_code, refunded_at_ms, payment_provider, \
     payment_intent_id, payment_client_secret, payment_state, payment_refund_id";

/// How many columns `ORDER_COLUMNS` names (a query's next column is at this index).
pub const ORDER_COLUMN_COUNT: usize = 16;

pub const SALE_COLUMNS: &str = "id, name, description, stock, per_user_limit, price_cents, \
     starts_at_ms, ends_at_ms, payment_window_secs, created_at_ms, waiting_room, version, paused, \
     access, draw_seed";

pub fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn corrupt(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("stored {what} is not valid").into(),
    )
}

fn timestamp(row: &Row<'_>, column: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::from_millisecond(row.get(column)?).map_err(|_| corrupt(column, "time"))
}

fn optional_timestamp(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    row.get::<_, Option<i64>>(column)?
        .map(|ms| Timestamp::from_millisecond(ms).map_err(|_| corrupt(column, "time")))
        .transpose()
}

fn number<T: TryFrom<i64>>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    T::try_from(row.get::<_, i64>(column)?).map_err(|_| corrupt(column, "number"))
}

pub fn order(row: &Row<'_>) -> rusqlite::Result<Order> {
    let id: String = row.get(0)?;
    let sale_id: String = row.get(1)?;
    let user_id: String = row.get(2)?;
    let status: String = row.get(4)?;
    Ok(Order {
        id: OrderId::parse(&id).ok_or_else(|| corrupt(0, "order id"))?,
        sale_id: SaleId::parse(&sale_id).ok_or_else(|| corrupt(1, "sale id"))?,
        user_id: UserId::parse(&user_id).ok_or_else(|| corrupt(2, "user id"))?,
        quantity: number(row, 3)?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt(4, "status"))?,
        created_at: timestamp(row, 5)?,
        expires_at: timestamp(row, 6)?,
        paid_at: optional_timestamp(row, 7)?,
        idempotency_key: row.get(8)?,
        access_code: row.get(9)?,
        refunded_at: optional_timestamp(row, 10)?,
        payment: payment(row, 11)?,
    })
}

/// The payment columns from `first` on: provider, intent, secret, state, refund.
fn payment(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<Box<Payment>>> {
    let Some(provider) = row.get::<_, Option<String>>(first)? else {
        return Ok(None);
    };
    let state: String = row.get(first + 3)?;
    Ok(Some(Box::new(Payment {
        provider,
        intent_id: row.get(first + 1)?,
        client_secret: row.get(first + 2)?,
        state: PaymentState::parse(&state).ok_or_else(|| corrupt(first + 3, "payment state"))?,
        refund_id: row.get(first + 4)?,
    })))
}

pub fn sale(row: &Row<'_>) -> rusqlite::Result<Sale> {
    let id: String = row.get(0)?;
    Ok(Sale {
        id: SaleId::parse(&id).ok_or_else(|| corrupt(0, "sale id"))?,
        name: row.get(1)?,
        description: row.get(2)?,
        stock: number(row, 3)?,
        per_user_limit: number(row, 4)?,
        price_cents: number(row, 5)?,
        starts_at: timestamp(row, 6)?,
        ends_at: optional_timestamp(row, 7)?,
        payment_window_secs: number(row, 8)?,
        created_at: timestamp(row, 9)?,
        waiting_room: row
            .get::<_, Option<String>>(10)?
            .map(|text| {
                crate::store::waiting_room_from_text(&text)
                    .ok_or_else(|| corrupt(10, "waiting room"))
            })
            .transpose()?
            .map(|room| {
                crate::store::with_draw_seed(room, row.get::<_, Option<Vec<u8>>>(14)?.as_deref())
                    .ok_or_else(|| corrupt(14, "draw seed"))
            })
            .transpose()?,
        version: number(row, 11)?,
        paused: row.get(12)?,
        access: SaleAccess::parse(&row.get::<_, String>(13)?)
            .ok_or_else(|| corrupt(13, "access"))?,
    })
}
