//! The expiry sweep's writes: overdue pending orders expired in batches (any node may sweep;
//! each order is expired once), and the stock-return record read and cleared.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::outbox;
use super::rows::{order_from_row, ORDER_COLUMNS};
use super::transitions::{lock_sales, Attempt, ATTEMPTS};
use super::{db_failed, failed, PostgresStore};
use crate::domain::{Order, OrderId};
use crate::store::StoreError;

impl PostgresStore {
    pub(super) async fn expire_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<Order>, StoreError> {
        for _ in 0..ATTEMPTS {
            match self.expire_due_once(now, max).await {
                Ok(expired) => return Ok(expired),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::Retry) => continue,
            }
        }
        Err(failed("PostgreSQL kept aborting the expiry sweep"))
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
                   AND payment_state IS DISTINCT FROM 'open' \
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
                       AND payment_state IS DISTINCT FROM 'open' \
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
        let stock = transaction
            .query(
                "UPDATE sales s SET remaining = s.remaining + t.back \
                 FROM (SELECT sale_id, sum(quantity)::bigint AS back FROM orders \
                       WHERE id = ANY($1) GROUP BY sale_id) t \
                 WHERE s.id = t.sale_id RETURNING s.id, s.remaining, t.back",
                &[&expired_ids],
            )
            .await?;
        // Each order's `expired`, then a sale's `updated` when the batch brought its stock back
        // from nothing.
        let mut events: Vec<outbox::Pending> = expired
            .iter()
            .map(|order| outbox::Pending::of_order(order, now))
            .collect();
        for row in &stock {
            let sale_id: &str = row.get(0);
            let after = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
            let back = u64::try_from(row.get::<_, i64>(2)).unwrap_or(0);
            if let Some(order) = expired
                .iter()
                .find(|order| order.sale_id.as_str() == sale_id)
            {
                events.extend(outbox::Pending::of_stock(
                    &order.sale_id,
                    after.saturating_sub(back),
                    after,
                    now,
                ));
            }
        }
        outbox::record(&transaction, events).await?;
        transaction.commit().await?;
        Ok(expired)
    }

    pub(super) async fn unreturned(&self, max: usize) -> Result<Vec<Order>, StoreError> {
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
    }

    pub(super) async fn stock_returned(&self, order_ids: Vec<OrderId>) -> Result<(), StoreError> {
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
    }
}
