//! The sales table: a new sale, a sale's next version, one sale and every sale.

use super::outbox::{self, OutboxError};
use super::rows::{sale_from_row, SALE_COLUMNS};
use super::transitions::{lock_sales, Attempt, ATTEMPTS};
use super::{db_failed, failed, PostgresStore};
use crate::domain::{Sale, SaleEvent, SaleId, SaleRevision};
use crate::store::{ChangeError, StoreError};

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
                     waiting_room, version, paused, access, draw_seed) \
                 VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
                    &i64::try_from(sale.version).map_err(failed)?,
                    &sale.paused,
                    &sale.access.as_str(),
                    &crate::store::draw_seed_bytes(sale.waiting_room.as_ref()),
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

    pub(super) async fn sale(&self, sale_id: &SaleId) -> Result<Option<Sale>, StoreError> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = $1"),
                &[&sale_id.as_str()],
            )
            .await
            .map_err(db_failed)?
            .as_ref()
            .map(sale_from_row)
            .transpose()
    }

    /// Writes the sale's next version if the row holds the one before, under the sale's row
    /// lock like every write that counts its stock; `remaining` moves with the stock.
    pub(super) async fn change_sale(&self, revision: &SaleRevision) -> Result<(), ChangeError> {
        for _ in 0..ATTEMPTS {
            match self.change_sale_once(revision).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::Retry) => continue,
            }
        }
        Err(failed("PostgreSQL kept aborting the sale's change").into())
    }

    async fn change_sale_once(&self, revision: &SaleRevision) -> Result<(), Attempt<ChangeError>> {
        let sale = &revision.sale;
        let version = i64::try_from(sale.version).map_err(|e| Attempt::Failed(failed(e).into()))?;
        let stock = i64::try_from(sale.stock).map_err(|e| Attempt::Failed(failed(e).into()))?;
        let mut client = self.client().await.map_err(|e| Attempt::Failed(e.into()))?;
        let transaction = client.transaction().await?;
        lock_sales(&transaction, &[sale.id.as_str()]).await?;
        let changed = transaction
            .query_opt(
                "UPDATE sales SET name = $2, description = $3, \
                     remaining = remaining + ($4::bigint - stock), stock = $4::bigint, \
                     per_user_limit = $5, \
                     ends_at = $6, waiting_room = $7, version = $8::bigint, paused = $9 \
                 WHERE id = $1 AND version = $8::bigint - 1 RETURNING remaining",
                &[
                    &sale.id.as_str(),
                    &sale.name,
                    &sale.description,
                    &stock,
                    &i32::try_from(sale.per_user_limit).unwrap_or(i32::MAX),
                    &sale.ends_at,
                    &crate::store::waiting_room_text(sale.waiting_room.as_ref()),
                    &version,
                    &sale.paused,
                ],
            )
            .await?;
        let outcome = if let Some(row) = changed {
            // The change's event, numbered under the sale's lock taken above.
            let remaining = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            let event = outbox::Pending::Sale {
                sale_id: sale.id.clone(),
                event: revision.event(),
                at: revision.at,
                remaining,
            };
            outbox::record(&transaction, vec![event])
                .await
                .map_err(|error| Attempt::Failed(outbox_failed(error).into()))?;
            Ok(())
        } else {
            let stored: Option<i64> = transaction
                .query_opt(
                    "SELECT version FROM sales WHERE id = $1",
                    &[&sale.id.as_str()],
                )
                .await?
                .map(|row| row.get(0));
            match stored {
                None => Err(ChangeError::NotFound),
                Some(stored) if stored >= version => Ok(()),
                Some(stored) => Err(ChangeError::Conflict {
                    stored: u64::try_from(stored).unwrap_or(0),
                }),
            }
        };
        transaction.commit().await?;
        outcome.map_err(Attempt::Failed)
    }
}
