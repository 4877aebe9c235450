//! Pay, cancel and expire one order: its sale's row locked, then its own, `domain::decide`
//! applied, and the stock-return record written in the same transaction.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::error::SqlState;

use super::outbox::{self, OutboxError};
use super::rows::{order_from_row, ORDER_COLUMNS};
use super::{db_failed, failed, PostgresStore};
use crate::domain::{outcome, Action, Actor, Order, OrderId, Outcome};
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

/// Records an order as a change left it, and the change's events (the caller holds the sale's
/// lock). Leaving an active status gives the stock back to the sale's count and owes the gate a
/// return, recorded in the same transaction.
pub(super) async fn write_change(
    client: &impl GenericClient,
    before: &Order,
    outcome: &Outcome,
    now: Timestamp,
) -> Result<(), OutboxError> {
    let order = &outcome.order;
    let leaves_active = outcome.releases(before);
    let payment = order.payment.as_deref();
    client
        .execute(
            "UPDATE orders SET status = $2, paid_at = $3, \
                 stock_returned = stock_returned AND NOT $4, refunded_at = $5, \
                 payment_provider = $6, payment_intent_id = $7, payment_client_secret = $8, \
                 payment_state = $9, payment_refund_id = $10 \
             WHERE id = $1",
            &[
                &order.id.as_str(),
                &order.status.as_str(),
                &order.paid_at,
                &leaves_active,
                &order.refunded_at,
                &payment.map(|payment| payment.provider.as_str()),
                &payment.map(|payment| payment.intent_id.as_str()),
                &payment.and_then(|payment| payment.client_secret.as_deref()),
                &payment.map(|payment| payment.state.as_str()),
                &payment.and_then(|payment| payment.refund_id.as_deref()),
            ],
        )
        .await?;
    let mut events: Vec<outbox::Pending> = outcome
        .event
        .map(|event| outbox::Pending::of_order_event(order, event, now))
        .into_iter()
        .collect();
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
            match self.transition_once(order_id, &action, actor, now).await {
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
        action: &Action,
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
        let before = match row.as_ref().map(order_from_row) {
            Some(Ok(order)) => order,
            Some(Err(error)) => return Err(Attempt::Failed(error.into())),
            None => return Err(Attempt::Failed(TransitionError::NotFound)),
        };
        let outcome = outcome(&before, action, actor, now);
        if outcome.changed {
            write_change(&transaction, &before, &outcome, now).await?;
        }
        transaction.commit().await?;
        Ok(Transition {
            released: outcome.releases(&before),
            changed: outcome.changed,
            order: outcome.order,
            refusal: outcome.refusal,
        })
    }
}
