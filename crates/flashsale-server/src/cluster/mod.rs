//! Cluster mode: any number of stateless nodes sharing one Redis (the stock gate and the order
//! queue) and one PostgreSQL (the system of record). This module wires them: the Redis gate,
//! the store that reads PostgreSQL and the queue, the persister, and reconciliation.

mod archive;
mod persister;
pub mod reconcile;
mod store;

use std::sync::Arc;
use std::time::Duration;

pub use self::archive::{ArchiveError, Archiver};
pub use self::persister::Persister;
pub use self::store::ClusterStore;
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::OrderId;
use crate::gate::GateError;
use crate::metrics::Metrics;
use crate::redis::{
    OrderQueue, Redis, RedisClock, RedisDurability, RedisGate, RedisGateOptions, RedisOptions,
};
use crate::store::{PostgresOptions, PostgresStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("connecting to Redis: {0}")]
    Redis(#[from] GateError),
    #[error("connecting to PostgreSQL: {0}")]
    Postgres(#[from] StoreError),
    #[error(
        "Redis can lose acknowledged orders: {}; or start with --redis-require-durable false to \
         accept that (tests, demos)",
        .0.risks().join("; ")
    )]
    VolatileRedis(RedisDurability),
    #[error(
        "Redis refused CONFIG GET, so nothing shows it keeps acknowledged orders (appendonly yes, \
         appendfsync always, maxmemory-policy noeviction); allow CONFIG GET to this user, or \
         start with --redis-require-durable false to accept the risk"
    )]
    UnknownRedisDurability,
}

/// The shared backends of one node, connected.
pub struct Cluster {
    pub gate: Arc<RedisGate>,
    pub store: Arc<ClusterStore>,
    pub postgres: PostgresStore,
    pub queue: OrderQueue,
    persister: Persister,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Connects to both, checks Redis keeps what it acknowledges, and sets up the schema. With
    /// `time_from_caller`, the purchase script takes its time from the node (tests, whose nodes
    /// share a manual clock) instead of from Redis's clock.
    pub async fn connect(
        settings: &Settings,
        metrics: Arc<Metrics>,
        time_from_caller: bool,
    ) -> Result<Self, ClusterError> {
        let (Some(redis_url), Some(database_url)) = (&settings.redis_url, &settings.database_url)
        else {
            return Err(ClusterError::Postgres(StoreError::Failed(
                "cluster mode needs both redis_url and database_url".into(),
            )));
        };
        metrics.enable_cluster();
        let redis = Redis::connect(&RedisOptions {
            url: redis_url.clone(),
            key_prefix: settings.redis_key_prefix.clone(),
            response_timeout: REDIS_RESPONSE_TIMEOUT,
            tls_ca_file: settings.redis_tls_ca_file.clone(),
        })
        .await?;
        let durability = redis.durability().await;
        let risks = durability.as_ref().map(RedisDurability::risks);
        match (durability, settings.redis_require_durable) {
            (Some(durability), true) if !durability.risks().is_empty() => {
                return Err(ClusterError::VolatileRedis(durability))
            }
            (None, true) => return Err(ClusterError::UnknownRedisDurability),
            (_, false) if risks.as_ref().is_none_or(|risks| !risks.is_empty()) => {
                tracing::warn!(risks = ?risks,
                    "redis_require_durable is false: acknowledged orders can be lost with Redis")
            }
            _ => {}
        }
        let postgres = PostgresStore::open(PostgresOptions {
            url: database_url.clone(),
            schema: settings.database_schema.clone(),
            connections_max: settings.database_connections_max,
            connect_timeout: CONNECT_TIMEOUT,
        })
        .await?;
        let gate = RedisGate::on(
            &redis,
            &RedisGateOptions {
                sold_out_recheck: Duration::from_millis(settings.sold_out_recheck_ms),
                replicas_ack: settings.redis_replicas_ack,
                replicas_ack_timeout: Duration::from_millis(settings.redis_replicas_ack_timeout_ms),
                time_from_caller,
            },
            Arc::clone(&metrics),
        );
        let queue = OrderQueue::new(&redis);
        let persister = Persister::new(
            queue.clone(),
            postgres.clone(),
            format!("node-{}", OrderId::generate()),
            settings.queue_batch_max,
            Duration::from_millis(settings.queue_claim_idle_ms),
            metrics,
        );
        Ok(Self {
            store: Arc::new(ClusterStore::new(postgres.clone(), queue.clone())),
            gate: Arc::new(gate),
            postgres,
            queue,
            persister,
        })
    }

    /// The cluster's one clock, Redis's, as this node keeps it.
    pub async fn clock(&self) -> Result<Arc<dyn Clock>, ClusterError> {
        Ok(RedisClock::start(self.gate.redis()).await?)
    }

    /// Archives settled sales on `clock` (see `archive`).
    pub fn archiver(&self, clock: Arc<dyn Clock>) -> Archiver {
        Archiver::new(
            Arc::clone(&self.gate),
            self.queue.clone(),
            self.postgres.clone(),
            clock,
        )
    }

    /// The gate and store a node's service uses, and the work it runs beside them.
    pub fn into_node(self, clock: Arc<dyn Clock>) -> (Arc<RedisGate>, Arc<ClusterStore>, NodeWork) {
        let archiver = self.archiver(clock);
        let work = NodeWork {
            persister: self.persister,
            archiver,
        };
        (self.gate, self.store, work)
    }
}

/// What a node does beside answering requests: persist the queue, archive settled sales.
pub struct NodeWork {
    persister: Persister,
    archiver: Archiver,
}

impl NodeWork {
    /// Until `stop` turns true; the persister then drains what it can.
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        tokio::join!(self.persister.run(stop.clone()), self.archiver.run(stop));
    }
}
