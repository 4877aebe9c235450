//! The cluster's delivery ledger: a lease per sink (`event_sink_leases`, by PostgreSQL's clock,
//! so nodes' clocks do not matter), a cursor per sink and sale (`event_cursors`) and the dead
//! letters (`event_dead_letters`). Any node may take a sink whose lease ran out.

use std::time::Duration;

use super::{db_failed, PostgresStore};
use crate::domain::SaleId;
use crate::events::ledger::{DeadLetter, DeliveryLedger, LedgerError};
use crate::BoxFuture;

fn failed(error: tokio_postgres::Error) -> LedgerError {
    LedgerError::Failed(db_failed(error).to_string())
}

fn store_failed(error: crate::store::StoreError) -> LedgerError {
    LedgerError::Failed(error.to_string())
}

/// Locks the sink's lease row for the transaction, if `holder` holds it still.
const HELD: &str = "SELECT 1 FROM event_sink_leases \
     WHERE sink = $1 AND holder = $2 AND expires_at > clock_timestamp() FOR UPDATE";

const UPSERT_CURSORS: &str = "INSERT INTO event_cursors (sink, sale_id, delivered) \
     SELECT $1, t.sale_id, t.delivered FROM UNNEST($2::text[], $3::bigint[]) AS t (sale_id, delivered) \
     ON CONFLICT (sink, sale_id) DO UPDATE \
     SET delivered = GREATEST(event_cursors.delivered, EXCLUDED.delivered)";

impl DeliveryLedger for PostgresStore {
    fn hold<'a>(
        &'a self,
        sink: &'a str,
        holder: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, LedgerError>> {
        Box::pin(async move {
            let client = self.client().await.map_err(store_failed)?;
            let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
            let row = client
                .query_opt(
                    "INSERT INTO event_sink_leases (sink, holder, expires_at) \
                     VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond') \
                     ON CONFLICT (sink) DO UPDATE \
                     SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                     WHERE event_sink_leases.holder = EXCLUDED.holder \
                        OR event_sink_leases.expires_at <= clock_timestamp() \
                     RETURNING holder",
                    &[&sink, &holder, &(lease_ms as f64)],
                )
                .await
                .map_err(failed)?;
            Ok(row.is_some())
        })
    }

    fn let_go<'a>(
        &'a self,
        sink: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let client = self.client().await.map_err(store_failed)?;
            client
                .execute(
                    "UPDATE event_sink_leases SET expires_at = clock_timestamp() \
                     WHERE sink = $1 AND holder = $2",
                    &[&sink, &holder],
                )
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn cursors<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(SaleId, u64)>, LedgerError>> {
        Box::pin(async move {
            let client = self.client().await.map_err(store_failed)?;
            let rows = client
                .query(
                    "SELECT sale_id, delivered FROM event_cursors WHERE sink = $1",
                    &[&sink],
                )
                .await
                .map_err(failed)?;
            Ok(rows
                .iter()
                .filter_map(|row| {
                    Some((
                        SaleId::parse(row.get(0))?,
                        u64::try_from(row.get::<_, i64>(1)).ok()?,
                    ))
                })
                .collect())
        })
    }

    fn advance<'a>(
        &'a self,
        sink: &'a str,
        holder: &'a str,
        cursors: Vec<(SaleId, u64)>,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let mut client = self.client().await.map_err(store_failed)?;
            let transaction = client.transaction().await.map_err(failed)?;
            if transaction
                .query_opt(HELD, &[&sink, &holder])
                .await
                .map_err(failed)?
                .is_none()
            {
                return Err(LedgerError::LeaseLost);
            }
            let sale_ids: Vec<&str> = cursors
                .iter()
                .map(|(sale_id, _)| sale_id.as_str())
                .collect();
            let delivered: Vec<i64> = cursors
                .iter()
                .map(|(_, sequence)| i64::try_from(*sequence).unwrap_or(i64::MAX))
                .collect();
            transaction
                .execute(UPSERT_CURSORS, &[&sink, &sale_ids, &delivered])
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)
        })
    }

    fn dead_letter<'a>(
        &'a self,
        sink: &'a str,
        holder: &'a str,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let mut client = self.client().await.map_err(store_failed)?;
            let transaction = client.transaction().await.map_err(failed)?;
            if transaction
                .query_opt(HELD, &[&sink, &holder])
                .await
                .map_err(failed)?
                .is_none()
            {
                return Err(LedgerError::LeaseLost);
            }
            let sequence = i64::try_from(letter.sequence).unwrap_or(i64::MAX);
            transaction
                .execute(
                    "INSERT INTO event_dead_letters (sink, sale_id, sequence, event, reason, \
                         recorded_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[
                        &sink,
                        &letter.sale_id.as_str(),
                        &sequence,
                        &letter.event,
                        &letter.reason,
                        &letter.recorded_at,
                    ],
                )
                .await
                .map_err(failed)?;
            transaction
                .execute(
                    UPSERT_CURSORS,
                    &[&sink, &vec![letter.sale_id.as_str()], &vec![sequence]],
                )
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)
        })
    }

    fn dead_letters<'a>(
        &'a self,
        sink: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<(u64, Vec<DeadLetter>), LedgerError>> {
        Box::pin(async move {
            let client = self.client().await.map_err(store_failed)?;
            let total: i64 = client
                .query_one(
                    "SELECT count(*) FROM event_dead_letters WHERE sink = $1",
                    &[&sink],
                )
                .await
                .map_err(failed)?
                .get(0);
            let rows = client
                .query(
                    "SELECT sale_id, sequence, event, reason, recorded_at FROM event_dead_letters \
                     WHERE sink = $1 ORDER BY recorded_at DESC, sequence DESC LIMIT $2",
                    &[&sink, &i64::try_from(limit).unwrap_or(i64::MAX)],
                )
                .await
                .map_err(failed)?;
            let letters = rows
                .iter()
                .filter_map(|row| {
                    Some(DeadLetter {
                        sale_id: SaleId::parse(row.get(0))?,
                        sequence: u64::try_from(row.get::<_, i64>(1)).ok()?,
                        event: row.get(2),
                        reason: row.get(3),
                        recorded_at: row.get(4),
                    })
                })
                .collect();
            Ok((u64::try_from(total).unwrap_or(0), letters))
        })
    }
}
