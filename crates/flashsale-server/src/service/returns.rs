//! Giving stock back: pay, cancel and expire change the store first (one atomic decision
//! there), and only the call that moved an order out of an active status returns its units to
//! the gate. The store records, in the same transaction, that the gate has yet to confirm the
//! return (`stock_returned = false`, on both backends); the return is then made and recorded, and
//! any node's sweep finishes returns that a crash or a gate outage interrupted. Every step runs
//! in a task of its own, never in the caller's: a client that hangs up mid-cancel cannot strand
//! the units.

use std::sync::Arc;

use jiff::Timestamp;

use super::error::ServiceError;
use crate::domain::{Action, Actor, Order, OrderId};
use crate::gate::{Holding, StockGate};
use crate::store::{OrderStore, Transition};

pub struct StockReturns {
    pub gate: Arc<dyn StockGate>,
    pub store: Arc<dyn OrderStore>,
}

impl StockReturns {
    /// Applies a transition and, if it moved the order out of an active status, returns the
    /// stock; in a task of its own, so it finishes whether or not the caller still waits.
    pub async fn transition(
        self: &Arc<Self>,
        order_id: OrderId,
        action: Action,
        actor: Actor,
        now: Timestamp,
    ) -> Result<Transition, ServiceError> {
        let returns = Arc::clone(self);
        tokio::spawn(async move {
            let transition = returns
                .store
                .transition(&order_id, action, &actor, now)
                .await?;
            if transition.released {
                returns
                    .return_stock(std::slice::from_ref(&transition.order), now)
                    .await;
            }
            Ok(transition)
        })
        .await
        .map_err(|error| ServiceError::Internal(error.to_string()))?
    }

    /// Gives orders' stock back to the gate, then records which returns the gate confirmed.
    /// A failure here is finished by the next sweep (`return_unreturned`).
    pub async fn return_stock(&self, orders: &[Order], now: Timestamp) {
        let mut returned = Vec::with_capacity(orders.len());
        for order in orders {
            match self.gate.release(&Holding::from(order), now).await {
                Ok(_) => returned.push(order.id.clone()),
                Err(error) => tracing::error!(%error, order_id = %order.id,
                    "could not return stock to the gate; retried by the next sweep"),
            }
        }
        if returned.is_empty() {
            return;
        }
        if let Err(error) = self.store.stock_returned(returned).await {
            tracing::warn!(%error, "could not record returns; they will be repeated, harmlessly");
        }
    }

    /// Finishes returns that were recorded as owed but not confirmed (a crash between the
    /// two steps, a gate outage); a release is idempotent, so repeating
    /// one is harmless. Returns how many orders it settled.
    pub async fn return_unreturned(
        &self,
        max: usize,
        now: Timestamp,
    ) -> Result<usize, ServiceError> {
        let orders = self.store.unreturned(max).await?;
        let mut settled = Vec::with_capacity(orders.len());
        for order in orders {
            // Stops at the first gate error: one warning per sweep while the gate is away.
            self.gate.release(&Holding::from(&order), now).await?;
            settled.push(order.id);
        }
        let count = settled.len();
        self.store.stock_returned(settled).await?;
        Ok(count)
    }

    /// Expires one batch of overdue orders and returns their stock (in its own task, like a
    /// transition: a shutdown that stops the sweep cannot stop a batch half-way).
    pub async fn expire_due(
        self: &Arc<Self>,
        now: Timestamp,
        max: usize,
    ) -> Result<usize, ServiceError> {
        let returns = Arc::clone(self);
        tokio::spawn(async move {
            let expired = returns.store.expire_due(now, max).await?;
            returns.return_stock(&expired, now).await;
            Ok(expired.len())
        })
        .await
        .map_err(|error| ServiceError::Internal(error.to_string()))?
    }
}
