//! The cluster's stock gate: Redis, shared by every node. One Lua script call decides and queues
//! a group of purchases of one sale atomically (see `reserve.lua`, and `batch.rs` for how the
//! group forms); a second script returns stock once per order.
//! With `appendonly yes` and `appendfsync always`, Redis answers a script only after its writes
//! are in the AOF on disk, so a reserved order is durable when this gate returns.

mod batch;
mod sold_out;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};

use self::batch::{Purchase, Reserver};
use self::sold_out::SoldOutCache;
use super::connection::Redis;
use super::keys::{self, RedisKeys, PERSISTERS};
use super::queue::record;
use crate::domain::{OrderId, Sale, SaleId, SaleRevision, UserId};
use crate::gate::{
    ChangeStep, GateDecision, GateError, GateRecords, Holding, Reservation, StockGate,
};
use crate::metrics::Metrics;
use crate::BoxFuture;

#[derive(Clone, Debug)]
pub struct RedisGateOptions {
    /// How long a local sold-out mark may keep refusing without asking Redis again; zero turns
    /// the local fast path off.
    pub sold_out_recheck: Duration,
    /// Replicas that must confirm a reserved order (`WAIT`) before it counts as reserved (0: off),
    /// and how long to wait for them.
    pub replicas_ack: u32,
    pub replicas_ack_timeout: Duration,
    /// Whether the purchase script takes "now" from the reservation (the node's clock: tests
    /// give their nodes one manual clock) instead of Redis's own clock, one for every node.
    pub time_from_caller: bool,
}

pub struct RedisGate {
    redis: Redis,
    connection: ConnectionManager,
    keys: RedisKeys,
    reserver: Arc<Reserver>,
    release: Script,
    restore: Script,
    archive: Script,
    change: Script,
    time_from_caller: bool,
    sold_out: Arc<SoldOutCache>,
    metrics: Arc<Metrics>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for RedisGate {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

pub(super) fn unavailable(error: redis::RedisError) -> GateError {
    GateError::Unavailable(format!("Redis: {}", crate::error_chain::describe(&error)))
}

impl RedisGate {
    /// The gate on the node's connection.
    pub fn on(redis: &Redis, options: &RedisGateOptions, metrics: Arc<Metrics>) -> Self {
        let connection = redis.manager();
        let client = redis.client();
        let keys = redis.keys().clone();
        let sold_out = Arc::new(SoldOutCache::new(options.sold_out_recheck));
        let listener = tokio::spawn(listen_for_stock(
            client,
            keys.stock_back(),
            Arc::clone(&sold_out),
        ));
        let reserver = Arc::new(Reserver::new(
            connection.clone(),
            keys.clone(),
            options.replicas_ack,
            options.replicas_ack_timeout,
            Arc::clone(&metrics),
        ));
        Self {
            redis: redis.clone(),
            connection,
            keys,
            reserver,
            release: Script::new(concat!(
                include_str!("../line/admission_lib.lua"),
                include_str!("release.lua")
            )),
            restore: Script::new(include_str!("restore.lua")),
            archive: Script::new(include_str!("archive.lua")),
            change: Script::new(concat!(
                include_str!("../line/admission_lib.lua"),
                include_str!("change.lua")
            )),
            time_from_caller: options.time_from_caller,
            sold_out,
            metrics,
            listener,
        }
    }

    /// Drops an ended, settled sale's keys, unless an order of it is still queued for
    /// PostgreSQL; says whether they are gone.
    pub async fn archive(&self, sale_id: &SaleId) -> Result<bool, GateError> {
        let mut invocation = self.archive.prepare_invoke();
        invocation
            .key(self.keys.sale(sale_id))
            .key(self.keys.buyers(sale_id))
            .key(self.keys.holds(sale_id))
            .key(self.keys.idempotency(sale_id))
            .key(self.keys.queue(sale_id))
            .key(self.keys.old_order_copies(sale_id))
            .key(self.keys.queued_sales())
            .key(self.keys.line_draws(sale_id))
            .key(self.keys.line_numbers(sale_id))
            .key(self.keys.line_meta(sale_id))
            .key(self.keys.line_passes(sale_id))
            .key(self.keys.codes(sale_id))
            .key(self.keys.line_checkpoints(sale_id))
            .key(self.keys.line_arrivals(sale_id))
            .key(self.keys.line_ends(sale_id))
            .arg(sale_id.as_str());
        let gone: i64 = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(gone == 1)
    }

    /// The connection the gate runs on (the waiting line, the order queue and the clock share
    /// it).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// A handle on the gate's multiplexed connection (cheap: clones share it).
    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Rebuilds a sale from the system of record (repair after Redis lost data, or a holding
    /// went missing): its active orders and keys, plus every order still queued and every holding
    /// Redis has, except `orphans` (holdings whose order is active nowhere), whose stock comes
    /// back. An order persisted while the repair ran keeps its holding.
    pub async fn repair_sale(
        &self,
        sale: &Sale,
        records: &GateRecords,
        orphans: &[String],
    ) -> Result<(), GateError> {
        self.put_sale(sale, records, orphans, Put::Repair).await?;
        self.sold_out.clear(sale.id.as_str());
        Ok(())
    }

    /// Runs `restore.lua`: the sale, its queue and the persisters' group in one step.
    async fn put_sale(
        &self,
        sale: &Sale,
        records: &GateRecords,
        orphans: &[String],
        put: Put,
    ) -> Result<(), GateError> {
        let mut connection = self.connection();
        let mut invocation = self.restore.prepare_invoke();
        invocation
            .key(self.keys.sale(&sale.id))
            .key(self.keys.buyers(&sale.id))
            .key(self.keys.holds(&sale.id))
            .key(self.keys.idempotency(&sale.id))
            .key(self.keys.old_order_copies(&sale.id))
            .key(self.keys.queue(&sale.id))
            .key(self.keys.codes(&sale.id))
            .key(self.keys.sale_changes())
            .arg(sale.stock)
            .arg(sale.starts_at.as_millisecond())
            .arg(end_ms(sale))
            .arg(put.mode())
            .arg(PERSISTERS)
            .arg(records.holdings.len())
            .arg(records.keys.len())
            .arg(sale.version)
            .arg(if sale.paused { "1" } else { "0" })
            .arg(room_rate(sale))
            .arg(records.codes.len())
            .arg(sale.id.as_str());
        for holding in &records.holdings {
            invocation
                .arg(holding.order_id.as_str())
                .arg(holding.user_id.as_str())
                .arg(holding.quantity)
                .arg(holding.idempotency_key.as_deref().unwrap_or(""))
                .arg(holding.access_code.as_deref().unwrap_or(""));
        }
        for key in &records.keys {
            invocation
                .arg(key.user_id.as_str())
                .arg(&key.key)
                .arg(key.order_id.as_str());
        }
        for binding in &records.codes {
            invocation
                .arg(&binding.code)
                .arg(binding.user_id.as_str())
                .arg(binding.order_id.as_str());
        }
        for orphan in orphans {
            invocation.arg(orphan);
        }
        let _: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// "now" for a script: the caller's time (tests' manual clock), or empty for Redis's own.
    fn script_now(&self, now: jiff::Timestamp) -> String {
        if self.time_from_caller {
            now.as_millisecond().to_string()
        } else {
            String::new()
        }
    }

    async fn release_order(
        &self,
        holding: &Holding,
        forget_key: bool,
        now: jiff::Timestamp,
    ) -> Result<bool, GateError> {
        let sale_id = &holding.sale_id;
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(self.keys.sale(sale_id))
            .key(self.keys.buyers(sale_id))
            .key(self.keys.holds(sale_id))
            .key(self.keys.idempotency(sale_id))
            .key(self.keys.line_meta(sale_id))
            .key(self.keys.codes(sale_id))
            .arg(holding.order_id.as_str())
            .arg(self.keys.stock_back())
            .arg(sale_id.as_str())
            .arg(if forget_key { "1" } else { "0" })
            .arg(self.script_now(now));
        let released: i64 = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        if released == 1 {
            self.sold_out.clear(sale_id.as_str());
        }
        Ok(released == 1)
    }

    /// Runs one step of `change.lua`; returns its reply.
    async fn change_step(
        &self,
        step: &str,
        base_version: u64,
        target: &Sale,
        pending: Option<&SaleRevision>,
        at: jiff::Timestamp,
    ) -> Result<Vec<String>, GateError> {
        let mut invocation = self.change.prepare_invoke();
        invocation
            .key(self.keys.sale(&target.id))
            .key(self.keys.line_meta(&target.id))
            .key(self.keys.sale_changes())
            .arg(step)
            .arg(base_version)
            .arg(target.version)
            .arg(target.stock)
            .arg(end_ms(target))
            .arg(if target.paused { "1" } else { "0" })
            .arg(room_rate(target))
            .arg(self.script_now(at))
            .arg(pending.map(record::encode_revision).unwrap_or_default())
            .arg(self.keys.stock_back())
            .arg(target.id.as_str());
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        if reply.first().is_some_and(|outcome| outcome == "unknown") {
            return Err(GateError::UnknownSale(target.id.clone()));
        }
        Ok(reply)
    }

    async fn key_owner_of(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        key: &str,
    ) -> Result<Option<OrderId>, GateError> {
        keys::key_owner(&mut self.connection(), &self.keys, sale_id, user_id, key)
            .await
            .map_err(unavailable)
    }

    /// Refused from memory: this node saw the sale sold out a moment ago. A retry of a key that
    /// won is still answered with its order (one lookup, far cheaper than the script).
    async fn sold_out_here(&self, order: &crate::domain::Order) -> Result<GateDecision, GateError> {
        if let Some(key) = &order.idempotency_key {
            if let Some(order_id) = self
                .key_owner_of(&order.sale_id, &order.user_id, key)
                .await?
            {
                return Ok(GateDecision::SameKey { order_id });
            }
        }
        Ok(GateDecision::SoldOut { remaining: 0 })
    }
}

fn end_ms(sale: &Sale) -> i64 {
    sale.ends_at.map_or(-1, |ends_at| ends_at.as_millisecond())
}

/// The waiting line's rate as the scripts keep it: 0 for a sale without a line.
fn room_rate(sale: &Sale) -> u32 {
    sale.waiting_room.map_or(0, |room| room.admit_per_sec)
}

fn code_owner_of(bound: &str) -> Option<UserId> {
    bound
        .split_once(' ')
        .and_then(|(_, user)| UserId::parse(user))
}

#[derive(Clone, Copy)]
enum Put {
    /// Only if the sale is not on the gate yet.
    Open,
    /// Exactly the given holdings.
    Restore,
    /// The given holdings and those of orders still queued.
    Repair,
}

impl Put {
    fn mode(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Restore => "restore",
            Self::Repair => "repair",
        }
    }
}

/// Clears sold-out marks when Redis announces returned stock; reconnects for ever.
async fn listen_for_stock(client: Client, channel: String, sold_out: Arc<SoldOutCache>) {
    use futures_util::StreamExt;
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            if pubsub.subscribe(&channel).await.is_ok() {
                // Announcements may have been missed while unsubscribed.
                sold_out.clear_all();
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(sale_id) = message.get_payload::<String>() {
                        sold_out.clear(&sale_id);
                    }
                }
            }
        }
        sold_out.clear_all();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `replicas_ack` replicas have every write this connection made, so that a
/// failover to one of them keeps the order. Fewer in time: unavailable (the order exists and is
/// persisted; a retry with its key returns it).
async fn replicated(
    connection: &mut ConnectionManager,
    replicas_ack: u32,
    timeout: Duration,
) -> Result<(), GateError> {
    if replicas_ack == 0 {
        return Ok(());
    }
    let confirmed: u32 = redis::cmd("WAIT")
        .arg(replicas_ack)
        .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
        .query_async(connection)
        .await
        .map_err(unavailable)?;
    if confirmed < replicas_ack {
        return Err(GateError::Unavailable(format!(
            "Redis: {confirmed} of {replicas_ack} replicas confirmed the order in time"
        )));
    }
    Ok(())
}

fn order_id(text: &str) -> Result<OrderId, GateError> {
    OrderId::parse(text)
        .ok_or_else(|| GateError::Unavailable("Redis: a stored order id is not valid".into()))
}

impl StockGate for RedisGate {
    fn open_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), GateError>> {
        let sale = sale.clone();
        Box::pin(async move {
            self.put_sale(&sale, &GateRecords::default(), &[], Put::Open)
                .await
        })
    }

    fn restore_sale(
        &self,
        sale: &Sale,
        records: GateRecords,
    ) -> BoxFuture<'_, Result<(), GateError>> {
        let sale = sale.clone();
        Box::pin(async move {
            self.put_sale(&sale, &records, &[], Put::Restore).await?;
            self.sold_out.clear(sale.id.as_str());
            Ok(())
        })
    }

    fn reserve(&self, reservation: &Reservation) -> BoxFuture<'_, Result<GateDecision, GateError>> {
        let order = reservation.order.clone();
        let sale_id = order.sale_id.clone();
        if self.sold_out.is_sold_out(&sale_id) {
            self.metrics.record_gate_call(false);
            return Box::pin(async move { self.sold_out_here(&order).await });
        }
        self.metrics.record_gate_call(true);
        let now_ms = if self.time_from_caller {
            order.created_at.as_millisecond().to_string()
        } else {
            String::new()
        };
        let purchase = Purchase {
            order_id: order.id.as_str().to_owned(),
            user_id: order.user_id.as_str().to_owned(),
            quantity: order.quantity,
            idempotency_key: order.idempotency_key.clone().unwrap_or_default(),
            now_ms,
            per_user_limit: reservation.per_user_limit,
            record_untimed: record::encode_untimed(&order),
            payment_window_ms: u64::from(reservation.payment_window_secs) * 1000,
            holding_open: record::encode_holding_open(&order),
            access_code: order.access_code.clone().unwrap_or_default(),
        };
        Box::pin(async move {
            let (outcome, detail) = self.reserver.reserve(&sale_id, purchase).await?;
            match outcome.as_str() {
                "reserved" => {
                    let created_at = detail
                        .parse()
                        .ok()
                        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                        .ok_or_else(|| {
                            GateError::Unavailable(format!(
                                "Redis: the purchase script gave no time: {detail:?}"
                            ))
                        })?;
                    Ok(GateDecision::Reserved { created_at })
                }
                "sold_out" => {
                    let remaining = detail.parse().unwrap_or(0);
                    if remaining == 0 {
                        self.sold_out.mark(&sale_id);
                    }
                    Ok(GateDecision::SoldOut { remaining })
                }
                "already_purchased" => Ok(GateDecision::AlreadyPurchased {
                    order_id: order_id(&detail)?,
                }),
                "same_key" => Ok(GateDecision::SameKey {
                    order_id: order_id(&detail)?,
                }),
                "not_started" => Ok(GateDecision::NotStarted),
                "ended" => Ok(GateDecision::Ended),
                "paused" => Ok(GateDecision::Paused),
                "code_taken" => Ok(GateDecision::CodeTaken),
                "unknown" => Err(GateError::UnknownSale(sale_id)),
                _ => Err(GateError::Unavailable(format!(
                    "Redis: unexpected verdict {outcome:?} from the purchase script"
                ))),
            }
        })
    }

    fn release(
        &self,
        holding: &Holding,
        now: jiff::Timestamp,
    ) -> BoxFuture<'_, Result<bool, GateError>> {
        let holding = holding.clone();
        Box::pin(async move { self.release_order(&holding, false, now).await })
    }

    fn abandon(
        &self,
        holding: &Holding,
        now: jiff::Timestamp,
    ) -> BoxFuture<'_, Result<bool, GateError>> {
        let holding = holding.clone();
        Box::pin(async move { self.release_order(&holding, true, now).await })
    }

    fn code_owner(
        &self,
        sale_id: &SaleId,
        code: &str,
    ) -> BoxFuture<'_, Result<Option<UserId>, GateError>> {
        let (key, code) = (self.keys.codes(sale_id), code.to_owned());
        let mut connection = self.connection();
        Box::pin(async move {
            let bound: Option<String> = connection.hget(key, code).await.map_err(unavailable)?;
            Ok(bound.as_deref().and_then(code_owner_of))
        })
    }

    fn begin_change<'a>(
        &'a self,
        base_version: u64,
        target: &'a SaleRevision,
        at: jiff::Timestamp,
    ) -> BoxFuture<'a, Result<ChangeStep, GateError>> {
        Box::pin(async move {
            let reply = self
                .change_step("begin", base_version, &target.sale, Some(target), at)
                .await?;
            match reply.first().map(String::as_str) {
                Some("applied") => Ok(ChangeStep::Applied),
                Some("conflict") => Ok(ChangeStep::Conflict {
                    pending: reply
                        .get(1)
                        .and_then(|text| record::decode_revision(text))
                        .map(Box::new),
                }),
                Some("insufficient") => Ok(ChangeStep::InsufficientStock {
                    remaining: reply.get(1).and_then(|n| n.parse().ok()).unwrap_or(0),
                }),
                _ => Err(GateError::Unavailable(format!(
                    "Redis: unexpected reply {reply:?} from the change script"
                ))),
            }
        })
    }

    fn finish_change<'a>(
        &'a self,
        target: &'a Sale,
        at: jiff::Timestamp,
    ) -> BoxFuture<'a, Result<(), GateError>> {
        Box::pin(async move {
            let reply = self.change_step("finish", 0, target, None, at).await?;
            if reply.first().is_some_and(|outcome| outcome == "finished") {
                // Added units: this node's sold-out mark goes at once (the others' with the
                // announcement).
                self.sold_out.clear(target.id.as_str());
            }
            Ok(())
        })
    }

    fn pending_changes(&self) -> BoxFuture<'_, Result<Vec<SaleRevision>, GateError>> {
        let mut connection = self.connection();
        Box::pin(async move {
            let members: Vec<String> = connection
                .smembers(self.keys.sale_changes())
                .await
                .map_err(unavailable)?;
            let mut pending = Vec::new();
            for sale_id in members.iter().filter_map(|text| SaleId::parse(text)) {
                let text: Option<String> = connection
                    .hget(self.keys.sale(&sale_id), "pending")
                    .await
                    .map_err(unavailable)?;
                pending.extend(text.as_deref().and_then(record::decode_revision));
            }
            Ok(pending)
        })
    }

    fn sales_revision(&self) -> BoxFuture<'_, Result<u64, GateError>> {
        let mut connection = self.connection();
        Box::pin(async move {
            let revision: Option<u64> = connection
                .get(self.keys.sales_revision())
                .await
                .map_err(unavailable)?;
            Ok(revision.unwrap_or(0))
        })
    }

    fn announce_sales_change(&self) -> BoxFuture<'_, Result<(), GateError>> {
        let mut connection = self.connection();
        Box::pin(async move {
            let _: u64 = connection
                .incr(self.keys.sales_revision(), 1)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn key_owner(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        key: &str,
    ) -> BoxFuture<'_, Result<Option<OrderId>, GateError>> {
        let (sale_id, user_id, key) = (sale_id.clone(), user_id.clone(), key.to_owned());
        Box::pin(async move { self.key_owner_of(&sale_id, &user_id, &key).await })
    }

    fn remaining(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
        let key = self.keys.sale(sale_id);
        let mut connection = self.connection();
        Box::pin(async move { connection.hget(key, "remaining").await.map_err(unavailable) })
    }

    fn remaining_of<'a>(
        &'a self,
        sale_ids: &'a [SaleId],
    ) -> BoxFuture<'a, Result<Vec<Option<u64>>, GateError>> {
        let mut pipeline = redis::pipe();
        for sale_id in sale_ids {
            pipeline.hget(self.keys.sale(sale_id), "remaining");
        }
        let mut connection = self.connection();
        Box::pin(async move {
            if sale_ids.is_empty() {
                return Ok(Vec::new());
            }
            pipeline
                .query_async(&mut connection)
                .await
                .map_err(unavailable)
        })
    }

    fn held(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
        let (sale, holds) = (self.keys.sale(sale_id), self.keys.holds(sale_id));
        let mut connection = self.connection();
        Box::pin(async move {
            let (exists, holdings): (bool, Vec<String>) = redis::pipe()
                .exists(sale)
                .hvals(holds)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if !exists {
                return Ok(None);
            }
            let mut held = 0;
            for holding in holdings {
                held += record::holding_quantity(&holding).ok_or_else(|| {
                    GateError::Unavailable("Redis: a stored holding is not valid".into())
                })?;
            }
            Ok(Some(held))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), GateError>> {
        let mut connection = self.connection();
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }
}
