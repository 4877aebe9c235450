//! Conversions between PostgreSQL rows and domain values.

use tokio_postgres::Row;

use crate::domain::{
    Order, OrderId, OrderStatus, Payment, PaymentState, Sale, SaleAccess, SaleId, UserId,
};
use crate::store::StoreError;

pub const ORDER_COLUMNS: &str = "id, sale_id, user_id, quantity, status, created_at, expires_at, \
     paid_at, idempotency_key, access_code, refunded_at, payment_provider, payment_intent_id, \
     payment_client_secret, payment_state, payment_refund_id";

pub const SALE_COLUMNS: &str = "id, name, description, stock, per_user_limit, price_cents, \
     starts_at, ends_at, payment_window_secs, created_at, waiting_room, version, paused, access, \
     draw_seed";

fn corrupt(what: &str) -> StoreError {
    StoreError::Failed(format!("a stored {what} is not valid"))
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|error| StoreError::Failed(format!("reading column {index}: {error}")))
}

fn number<T: TryFrom<i64>>(value: i64, what: &str) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| corrupt(what))
}

pub fn order_from_row(row: &Row) -> Result<Order, StoreError> {
    Ok(Order {
        id: OrderId::parse(column(row, 0)?).ok_or_else(|| corrupt("order id"))?,
        sale_id: SaleId::parse(column(row, 1)?).ok_or_else(|| corrupt("sale id"))?,
        user_id: UserId::parse(column(row, 2)?).ok_or_else(|| corrupt("user id"))?,
        quantity: number(i64::from(column::<i32>(row, 3)?), "quantity")?,
        status: OrderStatus::parse(column(row, 4)?).ok_or_else(|| corrupt("status"))?,
        created_at: column(row, 5)?,
        expires_at: column(row, 6)?,
        paid_at: column(row, 7)?,
        idempotency_key: column(row, 8)?,
        access_code: column(row, 9)?,
        refunded_at: column(row, 10)?,
        payment: match column::<Option<String>>(row, 11)? {
            None => None,
            Some(provider) => Some(Box::new(Payment {
                provider,
                intent_id: column(row, 12)?,
                client_secret: column(row, 13)?,
                state: PaymentState::parse(column(row, 14)?)
                    .ok_or_else(|| corrupt("payment state"))?,
                refund_id: column(row, 15)?,
            })),
        },
    })
}

pub fn sale_from_row(row: &Row) -> Result<Sale, StoreError> {
    Ok(Sale {
        id: SaleId::parse(column(row, 0)?).ok_or_else(|| corrupt("sale id"))?,
        name: column(row, 1)?,
        description: column(row, 2)?,
        stock: number(column::<i64>(row, 3)?, "stock")?,
        per_user_limit: number(i64::from(column::<i32>(row, 4)?), "per-user limit")?,
        price_cents: number(column::<i64>(row, 5)?, "price")?,
        starts_at: column(row, 6)?,
        ends_at: column(row, 7)?,
        payment_window_secs: number(i64::from(column::<i32>(row, 8)?), "payment window")?,
        created_at: column(row, 9)?,
        waiting_room: column::<Option<String>>(row, 10)?
            .map(|text| {
                crate::store::waiting_room_from_text(&text).ok_or_else(|| corrupt("waiting room"))
            })
            .transpose()?
            .map(|room| {
                crate::store::with_draw_seed(room, column::<Option<&[u8]>>(row, 14)?)
                    .ok_or_else(|| corrupt("draw seed"))
            })
            .transpose()?,
        version: number(column::<i64>(row, 11)?, "version")?,
        paused: column(row, 12)?,
        access: SaleAccess::parse(column(row, 13)?).ok_or_else(|| corrupt("access"))?,
    })
}
