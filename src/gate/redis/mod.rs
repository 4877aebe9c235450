//! The cluster's stock gate: Redis, shared by every node. One Lua script per purchase decides
//! and queues the order atomically (see `reserve.lua`); a second returns stock once per order.
//! With `appendonly yes` and `appendfsync always`, Redis answers a script only after its writes
//! are in the AOF on disk, so a reserved order is durable when this gate returns.

mod keys;
pub mod record;
mod sold_out;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};

pub use self::keys::{RedisKeys, PERSISTERS};
use self::sold_out::SoldOutCache;
use super::{GateDecision, GateError, Holding, Reservation, StockGate};
use crate::domain::{OrderId, Sale, SaleId};
use crate::metrics::Metrics;
use crate::BoxFuture;

#[derive(Clone, Debug)]
pub struct RedisGateOptions {
    pub url: String,
    pub key_prefix: String,
    /// How long a local sold-out mark may keep refusing without asking Redis again; zero turns
    /// the local fast path off.
    pub sold_out_recheck: Duration,
    pub response_timeout: Duration,
}

pub struct RedisGate {
    connection: ConnectionManager,
    keys: RedisKeys,
    reserve: Script,
    release: Script,
    restore: Script,
    sold_out: Arc<SoldOutCache>,
    metrics: Arc<Metrics>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for RedisGate {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn unavailable(error: redis::RedisError) -> GateError {
    GateError::Unavailable(format!("Redis: {error}"))
}

/// How Redis keeps its data, as far as acknowledged orders depend on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisDurability {
    pub appendonly: String,
    pub appendfsync: String,
}

impl RedisDurability {
    /// Whether a reply to a write means the write is on disk.
    pub fn is_durable(&self) -> bool {
        self.appendonly == "yes" && self.appendfsync == "always"
    }
}

impl RedisGate {
    pub async fn connect(
        options: RedisGateOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, GateError> {
        let client = Client::open(options.url.as_str())
            .map_err(|error| GateError::Unavailable(format!("Redis URL: {error}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.response_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unavailable)?;
        let keys = RedisKeys::new(&options.key_prefix);
        let sold_out = Arc::new(SoldOutCache::new(options.sold_out_recheck));
        let listener = tokio::spawn(listen_for_stock(
            client,
            keys.stock_back(),
            Arc::clone(&sold_out),
        ));
        Ok(Self {
            connection,
            keys,
            reserve: Script::new(include_str!("reserve.lua")),
            release: Script::new(include_str!("release.lua")),
            restore: Script::new(include_str!("restore.lua")),
            sold_out,
            metrics,
            listener,
        })
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// A handle on the gate's multiplexed connection (cheap: clones share it).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// The server's persistence settings; `None` when the server refuses `CONFIG GET` (some
    /// managed services rename it).
    pub async fn durability(&self) -> Option<RedisDurability> {
        let mut connection = self.connection();
        let get = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).clone();
        let appendonly: Vec<String> = get("appendonly").query_async(&mut connection).await.ok()?;
        let appendfsync: Vec<String> =
            get("appendfsync").query_async(&mut connection).await.ok()?;
        Some(RedisDurability {
            appendonly: appendonly.get(1)?.clone(),
            appendfsync: appendfsync.get(1)?.clone(),
        })
    }

    /// Rebuilds a sale from the system of record's active orders (repair after Redis lost
    /// data). Unlike `restore_sale`, orders still queued in Redis keep their holdings, so a
    /// purchase made while the repair runs is not dropped.
    pub async fn repair_sale(&self, sale: &Sale, holdings: &[Holding]) -> Result<(), GateError> {
        self.put_sale(sale, holdings, Put::Repair).await?;
        self.sold_out.clear(sale.id.as_str());
        Ok(())
    }

    async fn put_sale(&self, sale: &Sale, holdings: &[Holding], put: Put) -> Result<(), GateError> {
        let mut connection = self.connection();
        let mut invocation = self.restore.prepare_invoke();
        invocation
            .key(self.keys.sale(&sale.id))
            .key(self.keys.buyers(&sale.id))
            .key(self.keys.holds(&sale.id))
            .key(self.keys.idempotency(&sale.id))
            .key(self.keys.unpersisted(&sale.id))
            .arg(sale.stock)
            .arg(sale.starts_at.as_millisecond())
            .arg(sale.ends_at.map_or(-1, |ends_at| ends_at.as_millisecond()))
            .arg(put.mode());
        for holding in holdings {
            invocation
                .arg(holding.order_id.as_str())
                .arg(holding.user_id.as_str())
                .arg(holding.quantity)
                .arg(holding.idempotency_key.as_deref().unwrap_or(""));
        }
        let _: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        // The persisters' group starts at the stream's beginning, so no order queued before it
        // existed is missed. It exists already on every call but the first.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.queue(&sale.id))
            .arg(PERSISTERS)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut connection)
            .await;
        if let Err(error) = created {
            if error.code() != Some("BUSYGROUP") {
                return Err(unavailable(error));
            }
        }
        // Listed for the persisters only once its queue and group exist.
        let _: i64 = connection
            .sadd(self.keys.sales(), sale.id.as_str())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
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

fn order_id(text: Option<&String>) -> Result<OrderId, GateError> {
    text.and_then(|text| OrderId::parse(text))
        .ok_or_else(|| GateError::Unavailable("Redis: a stored order id is not valid".into()))
}

impl StockGate for RedisGate {
    fn open_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), GateError>> {
        let sale = sale.clone();
        Box::pin(async move { self.put_sale(&sale, &[], Put::Open).await })
    }

    fn restore_sale(
        &self,
        sale: &Sale,
        holdings: Vec<Holding>,
    ) -> BoxFuture<'_, Result<(), GateError>> {
        let sale = sale.clone();
        Box::pin(async move {
            self.put_sale(&sale, &holdings, Put::Restore).await?;
            self.sold_out.clear(sale.id.as_str());
            Ok(())
        })
    }

    fn reserve(&self, reservation: &Reservation) -> BoxFuture<'_, Result<GateDecision, GateError>> {
        let order = &reservation.order;
        let sale_id = order.sale_id.clone();
        if self.sold_out.is_sold_out(&sale_id) {
            self.metrics.record_gate_call(false);
            return Box::pin(async { Ok(GateDecision::SoldOut { remaining: 0 }) });
        }
        self.metrics.record_gate_call(true);
        let mut invocation = self.reserve.prepare_invoke();
        invocation
            .key(self.keys.sale(&sale_id))
            .key(self.keys.buyers(&sale_id))
            .key(self.keys.holds(&sale_id))
            .key(self.keys.idempotency(&sale_id))
            .key(self.keys.queue(&sale_id))
            .key(self.keys.unpersisted(&sale_id))
            .arg(order.id.as_str())
            .arg(order.user_id.as_str())
            .arg(order.quantity)
            .arg(order.idempotency_key.as_deref().unwrap_or(""))
            .arg(order.created_at.as_millisecond())
            .arg(reservation.per_user_limit)
            .arg(record::encode(order));
        let mut connection = self.connection();
        Box::pin(async move {
            let reply: Vec<String> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            match reply.first().map(String::as_str) {
                Some("reserved") => Ok(GateDecision::Reserved),
                Some("sold_out") => {
                    let remaining = reply.get(1).and_then(|text| text.parse().ok()).unwrap_or(0);
                    if remaining == 0 {
                        self.sold_out.mark(&sale_id);
                    }
                    Ok(GateDecision::SoldOut { remaining })
                }
                Some("already_purchased") => Ok(GateDecision::AlreadyPurchased {
                    order_id: order_id(reply.get(1))?,
                }),
                Some("same_key") => Ok(GateDecision::SameKey {
                    order_id: order_id(reply.get(1))?,
                }),
                Some("closed") => Ok(GateDecision::Closed),
                Some("unknown") => Err(GateError::UnknownSale(sale_id)),
                _ => Err(GateError::Unavailable(format!(
                    "Redis: unexpected reply {reply:?} from the purchase script"
                ))),
            }
        })
    }

    fn release(&self, holding: &Holding) -> BoxFuture<'_, Result<bool, GateError>> {
        let sale_id = holding.sale_id.clone();
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(self.keys.sale(&sale_id))
            .key(self.keys.buyers(&sale_id))
            .key(self.keys.holds(&sale_id))
            .arg(holding.order_id.as_str())
            .arg(self.keys.stock_back())
            .arg(sale_id.as_str());
        let mut connection = self.connection();
        Box::pin(async move {
            let released: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if released == 1 {
                self.sold_out.clear(sale_id.as_str());
            }
            Ok(released == 1)
        })
    }

    fn remaining(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
        let key = self.keys.sale(sale_id);
        let mut connection = self.connection();
        Box::pin(async move { connection.hget(key, "remaining").await.map_err(unavailable) })
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

    fn queues_orders(&self) -> bool {
        true
    }
}
