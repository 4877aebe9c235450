//! The cluster's order store: PostgreSQL, shared by every node. A commit is durable when it
//! returns (the server's `synchronous_commit`). Orders arrive in batches from the Redis order
//! queue (`insert_orders`), one transaction per batch, idempotent on the order id; pay, cancel
//! and expire lock the order's row and apply `domain::decide`, so several nodes can act on the
//! same order and exactly one of them moves it out of an active status.

mod rows;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use jiff::Timestamp;
use tokio_postgres::error::SqlState;

use self::rows::{order_from_row, sale_from_row, ORDER_COLUMNS, SALE_COLUMNS};
use super::{
    InsertError, OrderQuery, OrderStore, SaleTally, StoreError, Transition, TransitionError,
};
use crate::domain::{
    decide, Action, Actor, Order, OrderId, OrderStatus, Sale, SaleId, UserId, Verdict,
};
use crate::BoxFuture;

/// Serializes schema set-up between nodes that start at the same moment.
const SCHEMA_LOCK: i64 = 0x666c_6173_6873_616c;

#[derive(Clone, Debug)]
pub struct PostgresOptions {
    pub url: String,
    /// The schema holding flashsale's tables (created if missing); lets several deployments or
    /// test runs share one database.
    pub schema: String,
    pub connections_max: usize,
    /// How long a request waits for a connection, or for one to be made, before failing.
    pub connect_timeout: Duration,
}

/// Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    closed: Arc<AtomicBool>,
}

use crate::error_chain::describe;

/// A sale (`s`) not archived that ended, with its payment window, before `$1`, and settled: no
/// pending order, every return confirmed.
const SETTLED: &str = "s.archived_at IS NULL AND s.ends_at IS NOT NULL \
     AND s.ends_at + make_interval(secs => s.payment_window_secs) < $1 \
     AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.sale_id = s.id \
         AND (o.status = 'pending_payment' OR NOT o.stock_returned))";

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(error.to_string())
}

fn db_failed(error: tokio_postgres::Error) -> StoreError {
    // The Display of a server error is only "db error"; its detail is in the source.
    match error.as_db_error() {
        Some(db) => StoreError::Failed(format!("PostgreSQL: {}", db.message())),
        None => StoreError::Failed(format!("PostgreSQL: {}", describe(&error))),
    }
}

/// A valid SQL identifier or an error: the schema name is put into statements as is.
fn checked_schema(schema: &str) -> Result<&str, StoreError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(schema)
    } else {
        Err(StoreError::Failed(format!(
            "database schema {schema:?}: use lowercase letters, digits and _"
        )))
    }
}

const ACTIVE: &str = "('pending_payment', 'paid')";

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
    /// Connects, creates the schema and tables if missing, and checks the connection works.
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        let schema = checked_schema(&options.schema)?;
        let crate::tls::PostgresTarget {
            mut config,
            connector,
            ..
        } = crate::tls::postgres_target(&options.url).map_err(failed)?;
        config.connect_timeout(options.connect_timeout);
        config.options(format!("-c search_path={schema}"));
        config.application_name("flashsale");
        let manager = Manager::from_config(
            config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.connections_max.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(failed)?;
        let store = Self {
            pool,
            closed: Arc::new(AtomicBool::new(false)),
        };
        let mut client = store.client().await?;
        let transaction = client.transaction().await.map_err(db_failed)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(db_failed)?;
        transaction
            .batch_execute(&format!(
                "SET LOCAL client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS {schema}"
            ))
            .await
            .map_err(db_failed)?;
        transaction
            .batch_execute(include_str!("schema.sql"))
            .await
            .map_err(db_failed)?;
        transaction.commit().await.map_err(db_failed)?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.pool
            .get()
            .await
            .map_err(|error| failed(format!("PostgreSQL connection: {}", describe(&error))))
    }

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
async fn stored_among(
    client: &impl GenericClient,
    ids: &[&str],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT id FROM orders WHERE id = ANY($1)", &[&ids])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

fn quantity(quantity: u32) -> i32 {
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
    let inserted: HashSet<String> = transaction
        .query(
            "INSERT INTO orders (id, sale_id, user_id, quantity, status, created_at, expires_at, \
                                 paid_at, idempotency_key) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], \
                                  $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], \
                                  $9::text[]) \
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
            ],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !inserted.is_empty() {
        let inserted: Vec<&str> = inserted.iter().map(String::as_str).collect();
        // The CHECK (remaining >= 0) refuses an oversell here.
        transaction
            .execute(
                &format!(
                    "UPDATE sales s SET remaining = s.remaining - t.taken \
                     FROM (SELECT sale_id, sum(quantity)::bigint AS taken FROM orders \
                           WHERE id = ANY($1) AND status IN {ACTIVE} GROUP BY sale_id) t \
                     WHERE s.id = t.sale_id"
                ),
                &[&inserted],
            )
            .await?;
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

/// A transaction that failed in a way worth repeating (PostgreSQL chose it as a deadlock victim
/// or a serialization failure), or for good.
enum Attempt<E> {
    Retry,
    Failed(E),
}

impl<E: From<StoreError>> From<tokio_postgres::Error> for Attempt<E> {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.code() {
            Some(code)
                if *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                Self::Retry
            }
            _ => Self::Failed(db_failed(error).into()),
        }
    }
}

/// How often a transaction PostgreSQL aborted as a deadlock victim is tried again.
const ATTEMPTS: usize = 5;

async fn set_status(
    client: &impl GenericClient,
    order: &mut Order,
    status: OrderStatus,
    now: Timestamp,
) -> Result<(), tokio_postgres::Error> {
    let was_active = order.status.is_active();
    if status == OrderStatus::Paid {
        order.paid_at = Some(now);
    }
    order.status = status;
    let leaves_active = was_active && !status.is_active();
    client
        .execute(
            "UPDATE orders SET status = $2, paid_at = $3, \
                 stock_returned = stock_returned AND NOT $4 \
             WHERE id = $1",
            &[
                &order.id.as_str(),
                &status.as_str(),
                &order.paid_at,
                &leaves_active,
            ],
        )
        .await?;
    if leaves_active {
        client
            .execute(
                "UPDATE sales SET remaining = remaining + $2 WHERE id = $1",
                &[&order.sale_id.as_str(), &i64::from(order.quantity)],
            )
            .await?;
    }
    Ok(())
}

/// Every transaction that changes stock locks its sales' rows first (in id order), then orders:
/// with one lock order, nodes paying, expiring and persisting the same sale cannot deadlock.
async fn lock_sales(
    client: &impl GenericClient,
    sale_ids: &[&str],
) -> Result<(), tokio_postgres::Error> {
    client
        .query(
            "SELECT id FROM sales WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&sale_ids],
        )
        .await?;
    Ok(())
}

impl PostgresStore {
    async fn transition_once(
        &self,
        order_id: &OrderId,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Transition, Attempt<TransitionError>> {
        let mut client = self.client().await.map_err(|e| Attempt::Failed(e.into()))?;
        let transaction = client.transaction().await?;
        let sale_id: Option<String> = transaction
            .query_opt(
                "SELECT sale_id FROM orders WHERE id = $1",
                &[&order_id.as_str()],
            )
            .await?
            .map(|row| row.get(0));
        let Some(sale_id) = sale_id else {
            return Err(Attempt::Failed(TransitionError::NotFound));
        };
        lock_sales(&transaction, &[sale_id.as_str()]).await?;
        let row = transaction
            .query_opt(
                &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"),
                &[&order_id.as_str()],
            )
            .await?;
        let mut order = match row.as_ref().map(order_from_row) {
            Some(Ok(order)) => order,
            Some(Err(error)) => return Err(Attempt::Failed(error.into())),
            None => return Err(Attempt::Failed(TransitionError::NotFound)),
        };
        let was_active = order.status.is_active();
        let refusal = match decide(&order, action, actor, now) {
            Verdict::Apply(status) => {
                set_status(&transaction, &mut order, status, now).await?;
                None
            }
            Verdict::Unchanged => None,
            Verdict::ExpireThenRefuse(refusal) => {
                set_status(&transaction, &mut order, OrderStatus::Expired, now).await?;
                Some(refusal)
            }
            Verdict::Refuse(refusal) => Some(refusal),
        };
        transaction.commit().await?;
        Ok(Transition {
            released: was_active && !order.status.is_active(),
            order,
            refusal,
        })
    }

    async fn expire_due_once(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<Order>, Attempt<StoreError>> {
        let mut client = self.client().await.map_err(Attempt::Failed)?;
        let transaction = client.transaction().await?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let due = transaction
            .query(
                "SELECT id, sale_id FROM orders \
                 WHERE status = 'pending_payment' AND expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2",
                &[&now, &max],
            )
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = due.iter().map(|row| row.get(0)).collect();
        let sale_ids: BTreeSet<String> = due.iter().map(|row| row.get(1)).collect();
        let sale_ids: Vec<&str> = sale_ids.iter().map(String::as_str).collect();
        lock_sales(&transaction, &sale_ids).await?;
        // Nodes sweeping together may pick the same orders: the status condition lets exactly
        // one of them expire each.
        let expired: Vec<Order> = transaction
            .query(
                &format!(
                    "UPDATE orders SET status = 'expired', stock_returned = false \
                     WHERE id = ANY($1) AND status = 'pending_payment' AND expires_at <= $2 \
                     RETURNING {ORDER_COLUMNS}"
                ),
                &[&ids, &now],
            )
            .await?
            .iter()
            .map(order_from_row)
            .collect::<Result<_, _>>()
            .map_err(Attempt::Failed)?;
        let expired_ids: Vec<&str> = expired.iter().map(|order| order.id.as_str()).collect();
        transaction
            .execute(
                "UPDATE sales s SET remaining = s.remaining + t.back \
                 FROM (SELECT sale_id, sum(quantity)::bigint AS back FROM orders \
                       WHERE id = ANY($1) GROUP BY sale_id) t \
                 WHERE s.id = t.sale_id",
                &[&expired_ids],
            )
            .await?;
        transaction.commit().await?;
        Ok(expired)
    }
}

async fn tally(client: &impl GenericClient, sale_id: &SaleId) -> Result<SaleTally, StoreError> {
    let (remaining, archived): (i64, bool) = client
        .query_opt(
            "SELECT remaining, archived_at IS NOT NULL FROM sales WHERE id = $1",
            &[&sale_id.as_str()],
        )
        .await
        .map_err(db_failed)?
        .map(|row| (row.get(0), row.get(1)))
        .unwrap_or((0, false));
    let mut tally = SaleTally {
        archived,
        remaining: u64::try_from(remaining).unwrap_or(0),
        ..SaleTally::default()
    };
    for row in client
        .query(
            "SELECT status, sum(quantity)::bigint FROM orders \
             WHERE sale_id = $1 GROUP BY status",
            &[&sale_id.as_str()],
        )
        .await
        .map_err(db_failed)?
    {
        let units = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        match OrderStatus::parse(row.get(0)) {
            Some(OrderStatus::PendingPayment) => tally.pending = units,
            Some(OrderStatus::Paid) => tally.paid = units,
            Some(OrderStatus::Cancelled) => tally.cancelled = units,
            Some(OrderStatus::Expired) => tally.expired = units,
            None => return Err(failed("an order has an unknown status")),
        }
    }
    Ok(tally)
}

impl PostgresStore {
    /// Sales that ended before `ended_before` and have settled (see `SETTLED`); not archived
    /// yet. At most `max`, oldest end first.
    pub async fn archivable_sales(
        &self,
        ended_before: Timestamp,
        max: i64,
    ) -> Result<Vec<SaleId>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                &format!("SELECT s.id FROM sales s WHERE {SETTLED} ORDER BY s.ends_at LIMIT $2"),
                &[&ended_before, &max],
            )
            .await
            .map_err(db_failed)?
            .iter()
            .map(|row| SaleId::parse(row.get(0)).ok_or_else(|| failed("a sale id is not an id")))
            .collect()
    }

    /// Whether this sale is still archivable (it was, and its queue has since been seen empty).
    pub async fn is_archivable(
        &self,
        sale_id: &SaleId,
        ended_before: Timestamp,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT 1 FROM sales s WHERE {SETTLED} AND s.id = $2"),
                &[&ended_before, &sale_id.as_str()],
            )
            .await
            .map_err(db_failed)?;
        Ok(row.is_some())
    }

    pub async fn mark_archived(&self, sale_id: &SaleId, at: Timestamp) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sales SET archived_at = $2 WHERE id = $1 AND archived_at IS NULL",
                &[&sale_id.as_str(), &at],
            )
            .await
            .map_err(db_failed)?;
        Ok(())
    }

    /// A sale's orders that meet `condition` (SQL over the orders' columns, from this module
    /// only), oldest first.
    async fn orders_of_sale(
        &self,
        sale_id: &SaleId,
        condition: &str,
    ) -> Result<Vec<Order>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE sale_id = $1 AND {condition} \
                     ORDER BY id"
                ),
                &[&sale_id.as_str()],
            )
            .await
            .map_err(db_failed)?
            .iter()
            .map(order_from_row)
            .collect()
    }

    /// The tally of a sale counting also `queued` orders (acknowledged, maybe not written yet),
    /// each once: the stored ones are found in the same snapshot as the tally.
    pub async fn tally_including(
        &self,
        sale_id: &SaleId,
        queued: &[Order],
    ) -> Result<SaleTally, StoreError> {
        let mut client = self.client().await?;
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_failed)?;
        let mut counted = tally(&transaction, sale_id).await?;
        let ids: Vec<&str> = queued.iter().map(|order| order.id.as_str()).collect();
        let stored = stored_among(&transaction, &ids).await.map_err(db_failed)?;
        transaction.commit().await.map_err(db_failed)?;
        for order in queued
            .iter()
            .filter(|order| !stored.contains(order.id.as_str()))
        {
            let units = u64::from(order.quantity);
            counted.pending += units;
            counted.remaining = counted.remaining.saturating_sub(units);
        }
        Ok(counted)
    }
}

impl OrderStore for PostgresStore {
    fn create_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), StoreError>> {
        let sale = sale.clone();
        Box::pin(async move {
            let client = self.client().await?;
            let stock = i64::try_from(sale.stock).map_err(failed)?;
            client
                .execute(
                    "INSERT INTO sales (id, name, description, stock, remaining, per_user_limit, \
                         price_cents, starts_at, ends_at, payment_window_secs, created_at, \
                         waiting_room) \
                     VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[
                        &sale.id.as_str(),
                        &sale.name,
                        &sale.description,
                        &stock,
                        &i32::try_from(sale.per_user_limit).map_err(failed)?,
                        &i64::try_from(sale.price_cents).map_err(failed)?,
                        &sale.starts_at,
                        &sale.ends_at,
                        &i32::try_from(sale.payment_window_secs).map_err(failed)?,
                        &sale.created_at,
                        &crate::store::waiting_room_text(sale.waiting_room.as_ref()),
                    ],
                )
                .await
                .map_err(db_failed)?;
            Ok(())
        })
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .query(
                    &format!("SELECT {SALE_COLUMNS} FROM sales ORDER BY id DESC"),
                    &[],
                )
                .await
                .map_err(db_failed)?
                .iter()
                .map(sale_from_row)
                .collect()
        })
    }

    fn insert_order(&self, order: Order) -> BoxFuture<'static, Result<(), InsertError>> {
        // The future owns a clone of the store: it borrows nothing across the await.
        let store = self.clone();
        Box::pin(async move {
            store
                .insert_orders(std::slice::from_ref(&order))
                .await?
                .pop()
                .unwrap_or(Ok(()))
        })
    }

    fn order(&self, order_id: &OrderId) -> BoxFuture<'_, Result<Option<Order>, StoreError>> {
        let order_id = order_id.clone();
        Box::pin(async move {
            let client = self.client().await?;
            client
                .query_opt(
                    &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"),
                    &[&order_id.as_str()],
                )
                .await
                .map_err(db_failed)?
                .as_ref()
                .map(order_from_row)
                .transpose()
        })
    }

    fn order_by_key(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<Order>, StoreError>> {
        let (sale_id, user_id, key) =
            (sale_id.clone(), user_id.clone(), idempotency_key.to_owned());
        Box::pin(async move {
            let client = self.client().await?;
            client
                .query_opt(
                    &format!(
                        "SELECT {ORDER_COLUMNS} FROM orders \
                         WHERE sale_id = $1 AND user_id = $2 AND idempotency_key = $3"
                    ),
                    &[&sale_id.as_str(), &user_id.as_str(), &key],
                )
                .await
                .map_err(db_failed)?
                .as_ref()
                .map(order_from_row)
                .transpose()
        })
    }

    fn orders(&self, query: OrderQuery) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            client
                .query(
                    &format!(
                        "SELECT {ORDER_COLUMNS} FROM orders \
                         WHERE ($1::text IS NULL OR user_id = $1) \
                           AND ($2::text IS NULL OR sale_id = $2) \
                           AND ($3::text IS NULL OR id < $3) \
                         ORDER BY id DESC LIMIT $4"
                    ),
                    &[
                        &query.user_id.as_ref().map(UserId::as_str),
                        &query.sale_id.as_ref().map(SaleId::as_str),
                        &query.before.as_ref().map(OrderId::as_str),
                        &limit,
                    ],
                )
                .await
                .map_err(db_failed)?
                .iter()
                .map(order_from_row)
                .collect()
        })
    }

    fn transition(
        &self,
        order_id: &OrderId,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Transition, TransitionError>> {
        let (order_id, actor) = (order_id.clone(), actor.clone());
        Box::pin(async move {
            for _ in 0..ATTEMPTS {
                match self.transition_once(&order_id, action, &actor, now).await {
                    Ok(transition) => return Ok(transition),
                    Err(Attempt::Failed(error)) => return Err(error),
                    Err(Attempt::Retry) => continue,
                }
            }
            Err(failed("PostgreSQL kept aborting the transition").into())
        })
    }

    fn expire_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(async move {
            for _ in 0..ATTEMPTS {
                match self.expire_due_once(now, max).await {
                    Ok(expired) => return Ok(expired),
                    Err(Attempt::Failed(error)) => return Err(error),
                    Err(Attempt::Retry) => continue,
                }
            }
            Err(failed("PostgreSQL kept aborting the expiry sweep"))
        })
    }

    fn active_orders(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move {
            self.orders_of_sale(&sale_id, &format!("status IN {ACTIVE}"))
                .await
        })
    }

    fn orders_for_gate(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move {
            self.orders_of_sale(
                &sale_id,
                &format!("(status IN {ACTIVE} OR idempotency_key IS NOT NULL)"),
            )
            .await
        })
    }

    fn tally(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<SaleTally, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move {
            let client = self.client().await?;
            tally(&client, &sale_id).await
        })
    }

    fn barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // Every write is committed before its call returns: nothing is queued here.
        Box::pin(async { Ok(()) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client.execute("SELECT 1", &[]).await.map_err(db_failed)?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            self.pool.close();
            Ok(())
        })
    }

    fn unreturned(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            client
                .query(
                    &format!(
                        "SELECT {ORDER_COLUMNS} FROM orders WHERE NOT stock_returned \
                         ORDER BY id LIMIT $1"
                    ),
                    &[&max],
                )
                .await
                .map_err(db_failed)?
                .iter()
                .map(order_from_row)
                .collect()
        })
    }

    fn stock_returned(&self, order_ids: Vec<OrderId>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if order_ids.is_empty() {
                return Ok(());
            }
            let client = self.client().await?;
            let ids: Vec<&str> = order_ids.iter().map(OrderId::as_str).collect();
            client
                .execute(
                    "UPDATE orders SET stock_returned = true WHERE id IN \
                     (SELECT id FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE)",
                    &[&ids],
                )
                .await
                .map_err(db_failed)?;
            Ok(())
        })
    }
}
