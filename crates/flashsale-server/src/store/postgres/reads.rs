//! Reads: an order by id or by idempotency key, listings, a sale's orders for the gate, and the
//! tally of a sale (also counting orders still queued in Redis).

use deadpool_postgres::GenericClient;

use super::ingest::stored_among;
use super::rows::{order_from_row, ORDER_COLUMNS};
use super::{db_failed, failed, PostgresStore, ACTIVE};
use crate::domain::{Order, OrderId, OrderStatus, SaleId, UserId};
use crate::store::{OrderQuery, SaleTally, StoreError};

impl PostgresStore {
    pub(super) async fn order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError> {
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
    }

    pub(super) async fn order_by_key(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        key: &str,
    ) -> Result<Option<Order>, StoreError> {
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
    }

    pub(super) async fn orders(&self, query: OrderQuery) -> Result<Vec<Order>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        client
            .query(
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM orders \
                     WHERE ($1::text IS NULL OR user_id = $1) \
                       AND ($2::text IS NULL OR sale_id = $2) \
                       AND ($3::text IS NULL OR id < $3) \
                       AND ($5::text IS NULL OR status = $5) \
                     ORDER BY id DESC LIMIT $4"
                ),
                &[
                    &query.user_id.as_ref().map(UserId::as_str),
                    &query.sale_id.as_ref().map(SaleId::as_str),
                    &query.before.as_ref().map(OrderId::as_str),
                    &limit,
                    &query.status.map(|status| status.as_str()),
                ],
            )
            .await
            .map_err(db_failed)?
            .iter()
            .map(order_from_row)
            .collect()
    }

    pub(super) async fn active_orders(&self, sale_id: &SaleId) -> Result<Vec<Order>, StoreError> {
        self.orders_of_sale(sale_id, &format!("status IN {ACTIVE}"))
            .await
    }

    pub(super) async fn orders_for_gate(&self, sale_id: &SaleId) -> Result<Vec<Order>, StoreError> {
        self.orders_of_sale(
            sale_id,
            &format!(
                "(status IN {ACTIVE} OR idempotency_key IS NOT NULL OR access_code IS NOT NULL)"
            ),
        )
        .await
    }

    /// Orders whose payment the server still has work on with the provider, earliest deadline
    /// first.
    pub(super) async fn payments_unsettled(&self, max: usize) -> Result<Vec<Order>, StoreError> {
        let client = self.client().await?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        client
            .query(
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM orders \
                     WHERE payment_state IN ('open', 'refund_pending') \
                     ORDER BY expires_at LIMIT $1"
                ),
                &[&max],
            )
            .await
            .map_err(db_failed)?
            .iter()
            .map(order_from_row)
            .collect()
    }

    pub(super) async fn tally(&self, sale_id: &SaleId) -> Result<SaleTally, StoreError> {
        let client = self.client().await?;
        tally(&client, sale_id).await
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
            Some(OrderStatus::Refunded) => tally.refunded = units,
            None => return Err(failed("an order has an unknown status")),
        }
    }
    Ok(tally)
}
