//! Group reservation: the purchases of one sale that arrive while its script call is in flight
//! go together in the next call, as a group commit gathers a log's writes. Redis pays most of a
//! call per call, not per purchase (reading and parsing the command, running the script, and
//! with `appendfsync always` the write and `fsync` of the AOF at each turn of its event loop), so
//! a sale under a crowd costs Redis a fraction of a call per purchase, and a lone purchase goes
//! at once, in a call of its own.
//!
//! A call runs in a task of its own: a purchase whose client hangs up while it waits never stops
//! the call that decides the purchases gathered with it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::oneshot;

use super::unavailable;
use super::GateError;
use crate::domain::SaleId;
use crate::metrics::Metrics;
use crate::redis::keys::RedisKeys;

/// Purchases decided by one script call at most: the call holds Redis for its whole run
/// (~12 µs a purchase), so a large group would delay every other client.
pub const GROUP_MAX: usize = 64;

/// One purchase's part of the script's arguments (see `reserve.lua`).
pub struct Purchase {
    pub order_id: String,
    pub user_id: String,
    pub quantity: u32,
    /// Empty for none.
    pub idempotency_key: String,
    /// Empty to take Redis's clock.
    pub now_ms: String,
    pub per_user_limit: u32,
    pub record_untimed: String,
    pub payment_window_ms: u64,
    pub holding_open: String,
    /// Empty for none.
    pub access_code: String,
}

/// The script's word on one purchase: what happened and its detail (a time, an order id, the
/// remaining stock), as `reserve.lua` returns them.
pub type Verdict = (String, String);

struct Waiting {
    purchase: Purchase,
    answer: oneshot::Sender<Result<Verdict, GateError>>,
}

/// What the call tasks share with the gate.
pub struct Reserver {
    connection: ConnectionManager,
    keys: RedisKeys,
    script: Script,
    replicas_ack: u32,
    replicas_ack_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The purchases waiting for each sale's next call. A sale is here exactly while its call
    /// task runs: the task takes the next group when a call returns, and removes the sale when
    /// it finds nobody waiting.
    groups: Mutex<HashMap<SaleId, Vec<Waiting>>>,
}

impl Reserver {
    pub fn new(
        connection: ConnectionManager,
        keys: RedisKeys,
        replicas_ack: u32,
        replicas_ack_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            connection,
            keys,
            script: Script::new(concat!(
                include_str!("../line/admission_lib.lua"),
                include_str!("reserve.lua")
            )),
            replicas_ack,
            replicas_ack_timeout,
            metrics,
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<SaleId, Vec<Waiting>>> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a purchase to its sale's next call, starting the call's task if none is in flight,
    /// and waits for the script's verdict on it.
    pub async fn reserve(
        self: &Arc<Self>,
        sale_id: &SaleId,
        purchase: Purchase,
    ) -> Result<Verdict, GateError> {
        let (answer, verdict) = oneshot::channel();
        let waiting = Waiting { purchase, answer };
        let start = match self.groups().entry(sale_id.clone()) {
            Entry::Occupied(mut group) => {
                group.get_mut().push(waiting);
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(vec![waiting]);
                true
            }
        };
        if start {
            tokio::spawn(Arc::clone(self).fly(sale_id.clone()));
        }
        verdict.await.map_err(|_| {
            GateError::Unavailable("Redis: the purchase call ended without a verdict".into())
        })?
    }

    /// Calls the script for the sale's waiting purchases until none is left.
    async fn fly(self: Arc<Self>, sale_id: SaleId) {
        let mut landing = Landing {
            reserver: &self,
            sale_id: &sale_id,
            landed: false,
        };
        while let Some(group) = self.next_group(&sale_id) {
            let (purchases, answers): (Vec<Purchase>, Vec<_>) = group
                .into_iter()
                .map(|waiting| (waiting.purchase, waiting.answer))
                .unzip();
            match self.call(&sale_id, &purchases).await {
                Ok(verdicts) => {
                    for (answer, verdict) in answers.into_iter().zip(verdicts) {
                        let _ = answer.send(verdict);
                    }
                }
                Err(error) => {
                    for answer in answers {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
            }
        }
        landing.landed = true;
    }

    /// The sale's next purchases to call for; none (and the sale's group gone, so the next
    /// purchase starts a new task) when nobody waits.
    fn next_group(&self, sale_id: &SaleId) -> Option<Vec<Waiting>> {
        let mut groups = self.groups();
        let waiting = groups.get_mut(sale_id)?;
        if waiting.is_empty() {
            groups.remove(sale_id);
            return None;
        }
        let take = waiting.len().min(GROUP_MAX);
        Some(waiting.drain(..take).collect())
    }

    /// One script call for `purchases` (one sale), then the replicas' confirmation when a
    /// purchase took stock: without it, those purchases are unavailable (their orders exist and
    /// persist; a retry with the key finds them), the others keep their verdict.
    async fn call(
        &self,
        sale_id: &SaleId,
        purchases: &[Purchase],
    ) -> Result<Vec<Result<Verdict, GateError>>, GateError> {
        self.metrics.record_gate_script();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.sale(sale_id))
            .key(self.keys.buyers(sale_id))
            .key(self.keys.holds(sale_id))
            .key(self.keys.idempotency(sale_id))
            .key(self.keys.queue(sale_id))
            .key(self.keys.queued_sales())
            .key(self.keys.line_meta(sale_id))
            .key(self.keys.codes(sale_id))
            .arg(sale_id.as_str());
        for purchase in purchases {
            invocation
                .arg(&purchase.order_id)
                .arg(&purchase.user_id)
                .arg(purchase.quantity)
                .arg(&purchase.idempotency_key)
                .arg(&purchase.now_ms)
                .arg(purchase.per_user_limit)
                .arg(&purchase.record_untimed)
                .arg(purchase.payment_window_ms)
                .arg(&purchase.holding_open)
                .arg(&purchase.access_code);
        }
        let mut connection = self.connection.clone();
        let reply: Vec<String> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if reply.len() != purchases.len() * 2 {
            return Err(GateError::Unavailable(format!(
                "Redis: the purchase script answered {} values for {} purchases",
                reply.len(),
                purchases.len()
            )));
        }
        let mut values = reply.into_iter();
        let verdicts: Vec<Verdict> =
            std::iter::from_fn(|| Some((values.next()?, values.next()?))).collect();
        let replicated = if verdicts.iter().any(|(outcome, _)| outcome == "reserved") {
            super::replicated(
                &mut connection,
                self.replicas_ack,
                self.replicas_ack_timeout,
            )
            .await
        } else {
            Ok(())
        };
        Ok(verdicts
            .into_iter()
            .map(|verdict| match &replicated {
                Err(error) if verdict.0 == "reserved" => Err(error.clone()),
                _ => Ok(verdict),
            })
            .collect())
    }
}

/// Forgets a sale's group when its call task ends any other way than by finding it empty (a
/// panic, the runtime shutting down): the purchases waiting in it are answered unavailable (their
/// senders dropped), and the next purchase starts a new task instead of waiting for a gone one.
struct Landing<'a> {
    reserver: &'a Reserver,
    sale_id: &'a SaleId,
    /// Set when the task found nobody waiting (and removed the group itself).
    landed: bool,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.reserver.groups().remove(self.sale_id);
        }
    }
}
