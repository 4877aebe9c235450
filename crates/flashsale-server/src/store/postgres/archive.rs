//! Archiving: which sales have ended and settled, and the record that one was archived (its
//! Redis keys dropped; PostgreSQL answers for it from then on).

use jiff::Timestamp;

use super::{db_failed, failed, PostgresStore};
use crate::domain::SaleId;
use crate::store::StoreError;

/// A sale (`s`) not archived that ended, with its payment window, before `$1`, and settled: no
/// pending order, every return confirmed.
const SETTLED: &str = "s.archived_at IS NULL AND s.ends_at IS NOT NULL \
     AND s.ends_at + make_interval(secs => s.payment_window_secs) < $1 \
     AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.sale_id = s.id \
         AND (o.status = 'pending_payment' OR NOT o.stock_returned))";

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
}
