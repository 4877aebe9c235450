//! The sales table: a new sale, and every sale.

use super::rows::{sale_from_row, SALE_COLUMNS};
use super::{db_failed, failed, PostgresStore};
use crate::domain::Sale;
use crate::store::StoreError;

impl PostgresStore {
    pub(super) async fn create_sale(&self, sale: &Sale) -> Result<(), StoreError> {
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
