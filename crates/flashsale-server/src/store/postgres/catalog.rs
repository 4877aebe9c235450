//! The sales table: a new sale, and every sale.

use jiff::Timestamp;

use super::outbox::{self, OutboxError};
use super::rows::{sale_from_row, SALE_COLUMNS};
use super::transitions::lock_sales;
use super::{db_failed, failed, PostgresStore};
use crate::domain::{Sale, SaleEvent};
use crate::store::StoreError;

fn outbox_failed(error: OutboxError) -> StoreError {
    match error {
        OutboxError::Db(error) => db_failed(error),
        OutboxError::Corrupt(error) => error,
    }
}

impl PostgresStore {
    /// Records a new sale and its `created` event in one transaction.
    pub(super) async fn create_sale(&self, sale: &Sale) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(db_failed)?;
        let stock = i64::try_from(sale.stock).map_err(failed)?;
        transaction
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
        let created = outbox::Pending::Sale {
            sale_id: sale.id.clone(),
            event: SaleEvent::Created,
            at: sale.created_at,
            remaining: sale.stock,
        };
        outbox::record(&transaction, vec![created])
            .await
            .map_err(outbox_failed)?;
        transaction.commit().await.map_err(db_failed)
    }

    /// A sale's new definition and its event, in one transaction under the sale's row lock; a
    /// new stock moves `remaining` by the difference (the `stock_left` check refuses a stock
    /// below what orders hold).
    pub(super) async fn update_sale(
        &self,
        sale: &Sale,
        event: SaleEvent,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(db_failed)?;
        lock_sales(&transaction, &[sale.id.as_str()])
            .await
            .map_err(db_failed)?;
        let row = transaction
            .query_opt(
                "UPDATE sales SET name = $2, description = $3, \
                     remaining = remaining + $4 - stock, stock = $4, per_user_limit = $5, \
                     price_cents = $6, starts_at = $7, ends_at = $8, payment_window_secs = $9, \
                     waiting_room = $10 \
                 WHERE id = $1 RETURNING remaining",
                &[
                    &sale.id.as_str(),
                    &sale.name,
                    &sale.description,
                    &i64::try_from(sale.stock).map_err(failed)?,
                    &i32::try_from(sale.per_user_limit).map_err(failed)?,
                    &i64::try_from(sale.price_cents).map_err(failed)?,
                    &sale.starts_at,
                    &sale.ends_at,
                    &i32::try_from(sale.payment_window_secs).map_err(failed)?,
                    &crate::store::waiting_room_text(sale.waiting_room.as_ref()),
                ],
            )
            .await
            .map_err(db_failed)?
            .ok_or_else(|| StoreError::Failed(format!("no sale {}", sale.id)))?;
        let remaining = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let changed = outbox::Pending::Sale {
            sale_id: sale.id.clone(),
            event,
            at,
            remaining,
        };
        outbox::record(&transaction, vec![changed])
            .await
            .map_err(outbox_failed)?;
        transaction.commit().await.map_err(db_failed)
    }

    /// The installation's id (made once by the schema): the `source` of its events.
    pub async fn installation_id(&self) -> Result<String, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT id FROM installation", &[])
            .await
            .map_err(db_failed)?;
        Ok(row.get(0))
    }

    pub(super) async fn sales(&self) -> Result<Vec<Sale>, StoreError> {
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
    }
}
