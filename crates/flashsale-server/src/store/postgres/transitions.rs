//! Pay, cancel and expire one order: its sale's row locked, then its own, `domain::decide`
//! applied, and the stock-return record written in the same transaction.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::error::SqlState;

use super::outbox::{self, OutboxError};
use super::rows::{order_from_row, ORDER_COLUMNS};
use super::{db_failed, failed, PostgresStore};
use crate::domain::{decide, Action, Actor, Order, OrderId, OrderStatus, Verdict};
use crate::store::{StoreError, Transition, TransitionError};

/// A transaction that failed in a way worth repeating (PostgreSQL chose it as a deadlock victim
/// or a serialization failure), or for good.
pub(super) enum Attempt<E> {
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

impl<E: From<StoreError>> From<OutboxError> for Attempt<E> {
    fn from(error: OutboxError) -> Self {
        match error {
            OutboxError::Db(error) => error.into(),
            OutboxError::Corrupt(error) => Self::Failed(error.into()),
        }
    }
}

/// How often a transaction PostgreSQL aborted as a deadlock victim is tried again.
pub(super) const ATTEMPTS: usize = 5;

/// Sets an order's status and records the change's events (the caller holds the sale's lock).
async fn set_status(
    client: &impl GenericClient,
    order: &mut Order,
    status: OrderStatus,
    now: Timestamp,
) -> Result<(), OutboxError> {
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
    let mut events = vec![outbox::Pending::of_order(order, now)];
    if leaves_active {
        let remaining: i64 = client
            .query_one(
                "UPDATE sales SET remaining = remaining + $2 WHERE id = $1 RETURNING remaining",
                &[&order.sale_id.as_str(), &i64::from(order.quantity)],
            )
            .await?
            .get(0);
        let after = u64::try_from(remaining).unwrap_or(0);
        let before = after.saturating_sub(u64::from(order.quantity));
        events.extend(outbox::Pending::of_stock(
            &order.sale_id,
            before,
            after,
            now,
        ));
    }
    outbox::record(client, events).await
}

/// Every transaction that changes stock locks its sales' rows first (in id order), then orders:
/// with one lock order, nodes paying, expiring and persisting the same sale cannot deadlock.
pub(super) async fn lock_sales(
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
    pub(super) async fn transition(
        &self,
        order_id: &OrderId,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Transition, TransitionError> {
        for _ in 0..ATTEMPTS {
            match self.transition_once(order_id, action, actor, now).await {
                Ok(transition) => return Ok(transition),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::Retry) => continue,
            }
        }
        Err(failed("PostgreSQL kept aborting the transition").into())
    }

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
}
