//! The cluster's order store: PostgreSQL, shared by every node. A commit is durable when it
//! returns (the server's `synchronous_commit`). Orders arrive in batches from the Redis order
//! queue (`insert_orders`), one transaction per batch, idempotent on the order id; pay, cancel
//! and expire lock the order's row and apply `domain::decide`, so several nodes can act on the
//! same order and exactly one of them moves it out of an active status.
//!
//! One file per job: `connection.rs` (pool, schema), `catalog.rs` (sales), `ingest.rs` (the
//! persister's batches, refused orders), `transitions.rs` (pay, cancel, expire one order),
//! `expiry.rs` (the sweep's batches, the stock-return record), `reads.rs` (orders, tallies),
//! `archive.rs` (settled sales), `outbox.rs` (each change's events, numbered under the sale's
//! lock), `ledger.rs` (the sinks' leases, cursors and dead letters), `rows.rs` (rows to domain
//! values); this file maps the
//! `OrderStore` trait onto them.

mod archive;
mod catalog;
mod connection;
mod expiry;
mod ingest;
mod ledger;
mod outbox;
mod reads;
mod rows;
mod transitions;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use jiff::Timestamp;

use super::{
    ChangeError, EventHead, InsertError, OrderQuery, OrderStore, RecordedEvent, SaleTally,
    StoreError, Transition, TransitionError,
};
use crate::domain::{Action, Actor, Order, OrderId, Sale, SaleId, SaleRevision, UserId};
use crate::error_chain::describe;
use crate::BoxFuture;

#[derive(Clone)]
pub struct PostgresOptions {
    pub url: String,
    /// The schema holding flashsale's tables (created if missing); lets several deployments or
    /// test runs share one database.
    pub schema: String,
    pub connections_max: usize,
    /// How long a request waits for a connection, or for one to be made, before failing.
    pub connect_timeout: Duration,
}

/// The URL may carry a password: `Debug` leaves it out, as `Settings` does.
impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresOptions")
            .field("url", &"<redacted>")
            .field("schema", &self.schema)
            .field("connections_max", &self.connections_max)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    closed: Arc<AtomicBool>,
}

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

const ACTIVE: &str = "('pending_payment', 'paid')";

impl OrderStore for PostgresStore {
    fn create_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), StoreError>> {
        let sale = sale.clone();
        Box::pin(async move { self.create_sale(&sale).await })
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>> {
        Box::pin(self.sales())
    }

    fn sale(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<Sale>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move { self.sale(&sale_id).await })
    }

    fn change_sale<'a>(
        &'a self,
        revision: &'a SaleRevision,
    ) -> BoxFuture<'a, Result<(), ChangeError>> {
        Box::pin(self.change_sale(revision))
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
        Box::pin(async move { self.order(&order_id).await })
    }

    fn order_by_key(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<Order>, StoreError>> {
        let (sale_id, user_id, key) =
            (sale_id.clone(), user_id.clone(), idempotency_key.to_owned());
        Box::pin(async move { self.order_by_key(&sale_id, &user_id, &key).await })
    }

    fn orders(&self, query: OrderQuery) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.orders(query))
    }

    fn transition(
        &self,
        order_id: &OrderId,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Transition, TransitionError>> {
        let (order_id, actor) = (order_id.clone(), actor.clone());
        Box::pin(async move { self.transition(&order_id, action, &actor, now).await })
    }

    fn expire_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.expire_due(now, max))
    }

    fn active_orders(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move { self.active_orders(&sale_id).await })
    }

    fn orders_for_gate(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move { self.orders_for_gate(&sale_id).await })
    }

    fn tally(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<SaleTally, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move { self.tally(&sale_id).await })
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
        Box::pin(self.unreturned(max))
    }

    fn stock_returned(&self, order_ids: Vec<OrderId>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.stock_returned(order_ids))
    }

    fn payments_unsettled(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.payments_unsettled(max))
    }

    fn events(
        &self,
        sale_id: &SaleId,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move {
            let client = self.client().await?;
            outbox::events(&client, &sale_id, after, limit).await
        })
    }

    fn event_heads(&self) -> BoxFuture<'_, Result<Vec<EventHead>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            outbox::heads(&client).await
        })
    }

    fn prune_events(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            outbox::prune(&client, before).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_password_out() {
        let options = PostgresOptions {
            url: "postgres://flashsale:hunter2-secret@db.internal/shop".into(),
            schema: "flashsale".into(),
            connections_max: 4,
            connect_timeout: Duration::from_secs(1),
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("flashsale"), "{shown}");
    }
}
