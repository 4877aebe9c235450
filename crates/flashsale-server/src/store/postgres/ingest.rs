//! The persister's ingest: batches of queued orders, one transaction each, idempotent on the
//! order id; orders the constraints refuse for good are kept aside in `refused_orders`.

use std::collections::{BTreeSet, HashSet};

use deadpool_postgres::{GenericClient, Object};
use jiff::Timestamp;
use tokio_postgres::error::SqlState;

use super::outbox::{self, OutboxError};
use super::rows::{order_from_row, ORDER_COLUMNS};
use super::transitions::lock_sales;
use super::{db_failed, PostgresStore, ACTIVE};
use crate::domain::{Order, SaleId};
use crate::store::{InsertError, StoreError};

/// Why a batch of orders was not recorded.
enum BatchFailure {
    SoldOut,
    LimitExceeded,
    /// PostgreSQL refused an order's data for good (an integrity or data error other than the
    /// stock check): retrying it would fail the same way.
    Refused(String),
    /// Worth retrying (a connection lost, a server going away).
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for BatchFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.code() {
            Some(code) if *code == SqlState::CHECK_VIOLATION => Self::SoldOut,
            // Class 22 (data exception) and 23 (integrity constraint violation).
            Some(code) if code.code().starts_with("22") || code.code().starts_with("23") => {
                Self::Refused(db_failed(error).to_string())
            }
            _ => Self::Db(error),
        }
    }
}

impl From<OutboxError> for BatchFailure {
    fn from(error: OutboxError) -> Self {
        match error {
            OutboxError::Db(error) => error.into(),
            OutboxError::Corrupt(error) => Self::Refused(error.to_string()),
        }
    }
}

impl BatchFailure {
    fn into_insert_error(self) -> Result<InsertError, StoreError> {
        match self {
            Self::SoldOut => Ok(InsertError::SoldOut),
            Self::LimitExceeded => Ok(InsertError::LimitExceeded),
            Self::Refused(reason) => Ok(InsertError::Store(StoreError::Failed(reason))),
            Self::Db(error) => Err(db_failed(error)),
        }
    }
}

impl PostgresStore {
    /// Records a batch of new orders in one transaction. An order whose id is already stored
    /// counts as recorded, so a batch can be retried. When the constraints or the data refuse a
    /// batch, its orders are tried one by one so that only the offending ones are refused (one
    /// poisoned order never holds up the others); a failure worth retrying fails the call.
    pub async fn insert_orders(
        &self,
        orders: &[Order],
    ) -> Result<Vec<Result<(), InsertError>>, StoreError> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        match insert_batch(&mut client, orders).await {
            Ok(outcomes) => Ok(outcomes),
            Err(BatchFailure::Db(error)) => Err(db_failed(error)),
            Err(failure) if orders.len() == 1 => Ok(vec![Err(failure.into_insert_error()?)]),
            Err(_) => {
                let mut outcomes = Vec::with_capacity(orders.len());
                for order in orders {
                    outcomes.push(
                        match insert_batch(&mut client, std::slice::from_ref(order)).await {
                            Ok(mut one) => one.pop().unwrap_or(Ok(())),
                            Err(failure) => Err(failure.into_insert_error()?),
                        },
                    );
                }
                Ok(outcomes)
            }
        }
    }

    /// Keeps an acknowledged order the constraints refused, so that it is never silently lost.
    pub async fn record_refused(&self, order: &Order, reason: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO refused_orders (id, sale_id, user_id, quantity, reason) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                &[
                    &order.id.as_str(),
                    &order.sale_id.as_str(),
                    &order.user_id.as_str(),
                    &quantity(order.quantity),
                    &reason,
                ],
            )
            .await
            .map_err(db_failed)?;
        Ok(())
    }

    /// Orders the gate acknowledged that the constraints refused, per sale.
    pub async fn refused_count(&self, sale_id: &SaleId) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM refused_orders WHERE sale_id = $1",
                &[&sale_id.as_str()],
            )
            .await
            .map_err(db_failed)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Which of these orders are stored.
    pub async fn stored_ids(&self, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
        let client = self.client().await?;
        stored_among(&client, ids).await.map_err(db_failed)
    }
}

/// Which of these order ids the orders table holds.
pub(super) async fn stored_among(
    client: &impl GenericClient,
    ids: &[&str],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT id FROM orders WHERE id = ANY($1)", &[&ids])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The events of a batch: each new order's `created`, in the batch's order, then a sale's
/// `sold_out` when the batch took its last unit (at the time of the sale's last order in it).
fn creation_events(
    orders: &[Order],
    inserted: &HashSet<String>,
    stock: &[(String, i64, i64)],
) -> Vec<outbox::Pending> {
    let new: Vec<&Order> = orders
        .iter()
        .filter(|order| inserted.contains(order.id.as_str()))
        .collect();
    let mut events: Vec<outbox::Pending> = new
        .iter()
        .map(|order| outbox::Pending::of_order(order, order.created_at))
        .collect();
    for (sale_id, remaining, taken) in stock {
        let Some(last) = new
            .iter()
            .rev()
            .find(|order| order.sale_id.as_str() == sale_id)
        else {
            continue;
        };
        let after = u64::try_from(*remaining).unwrap_or(0);
        let before = after.saturating_add(u64::try_from(*taken).unwrap_or(0));
        events.extend(outbox::Pending::of_stock(
            &last.sale_id,
            before,
            after,
            last.created_at,
        ));
    }
    events
}

pub(super) fn quantity(quantity: u32) -> i32 {
    i32::try_from(quantity).unwrap_or(i32::MAX)
}

async fn insert_batch(
    client: &mut Object,
    orders: &[Order],
) -> Result<Vec<Result<(), InsertError>>, BatchFailure> {
    let transaction = client.transaction().await?;
    let sale_ids: Vec<&str> = orders
        .iter()
        .map(|order| order.sale_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Every write that counts stock locks its sale's row first, in id order: the per-buyer
    // check below then sees every committed order of that buyer.
    lock_sales(&transaction, &sale_ids).await?;
    let ids: Vec<&str> = orders.iter().map(|order| order.id.as_str()).collect();
    let sales: Vec<&str> = orders.iter().map(|order| order.sale_id.as_str()).collect();
    let users: Vec<&str> = orders.iter().map(|order| order.user_id.as_str()).collect();
    let quantities: Vec<i32> = orders
        .iter()
        .map(|order| quantity(order.quantity))
        .collect();
    let statuses: Vec<&str> = orders.iter().map(|order| order.status.as_str()).collect();
    let created: Vec<Timestamp> = orders.iter().map(|order| order.created_at).collect();
    let expires: Vec<Timestamp> = orders.iter().map(|order| order.expires_at).collect();
    let paid: Vec<Option<Timestamp>> = orders.iter().map(|order| order.paid_at).collect();
    let keys: Vec<Option<&str>> = orders
        .iter()
        .map(|order| order.idempotency_key.as_deref())
        .collect();
    let codes: Vec<Option<&str>> = orders
        .iter()
        .map(|order| order.access_code.as_deref())
        .collect();
    let inserted: HashSet<String> = transaction
        .query(
            "INSERT INTO orders (id, sale_id, user_id, quantity, status, created_at, expires_at, \
                                 paid_at, idempotency_key, access_code) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], \
                                  $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], \
                                  $9::text[], $10::text[]) \
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &ids,
                &sales,
                &users,
                &quantities,
                &statuses,
                &created,
                &expires,
                &paid,
                &keys,
                &codes,
            ],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !inserted.is_empty() {
        let inserted_ids: Vec<&str> = inserted.iter().map(String::as_str).collect();
        // The CHECK (remaining >= 0) refuses an oversell here.
        let stock: Vec<(String, i64, i64)> = transaction
            .query(
                &format!(
                    "UPDATE sales s SET remaining = s.remaining - t.taken \
                     FROM (SELECT sale_id, sum(quantity)::bigint AS taken FROM orders \
                           WHERE id = ANY($1) AND status IN {ACTIVE} GROUP BY sale_id) t \
                     WHERE s.id = t.sale_id RETURNING s.id, s.remaining, t.taken"
                ),
                &[&inserted_ids],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        // One index probe per buyer of the batch (orders_by_buyer), whatever the table's size.
        let over_limit = transaction
            .query_opt(
                &format!(
                    "SELECT 1 FROM (SELECT DISTINCT user_id, sale_id \
                                    FROM UNNEST($1::text[], $2::text[]) AS b (user_id, sale_id)) b \
                     JOIN sales s ON s.id = b.sale_id \
                     CROSS JOIN LATERAL (SELECT sum(o.quantity) AS held FROM orders o \
                                         WHERE o.user_id = b.user_id AND o.sale_id = b.sale_id \
                                           AND o.status IN {ACTIVE}) h \
                     WHERE h.held > s.per_user_limit LIMIT 1"
                ),
                &[&users, &sales],
            )
            .await?;
        if over_limit.is_some() {
            return Err(BatchFailure::LimitExceeded);
        }
        outbox::record(&transaction, creation_events(orders, &inserted, &stock)).await?;
    }
    let mut outcomes = Vec::with_capacity(orders.len());
    let skipped: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !inserted.contains(*id))
        .collect();
    let already: HashSet<String> = if skipped.is_empty() {
        HashSet::new()
    } else {
        stored_among(&transaction, &skipped).await?
    };
    for order in orders {
        let id = order.id.as_str();
        if inserted.contains(id) || already.contains(id) {
            outcomes.push(Ok(()));
            continue;
        }
        // Not inserted and not there under its id: another order holds its idempotency key.
        let existing = transaction
            .query_opt(
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM orders \
                     WHERE sale_id = $1 AND user_id = $2 AND idempotency_key = $3"
                ),
                &[
                    &order.sale_id.as_str(),
                    &order.user_id.as_str(),
                    &order.idempotency_key,
                ],
            )
            .await?;
        outcomes.push(match existing.as_ref().map(order_from_row) {
            Some(Ok(existing)) => Err(InsertError::SameKey(Box::new(existing))),
            Some(Err(error)) => Err(InsertError::Store(error)),
            None => Err(InsertError::Store(StoreError::Failed(format!(
                "order {id} was neither inserted nor found"
            )))),
        });
    }
    transaction.commit().await?;
    Ok(outcomes)
}
