//! One conformance suite for every stock gate, order store, waiting line and event sink. Each
//! backend instantiates the same cases with `gate_suite!` / `store_suite!` / `line_suite!` /
//! `sink_suite!`; a backend is conformant when all pass.

pub mod gate;
pub mod ledger;
pub mod line;
pub mod outbox;
pub mod payment_store;
pub mod payments;
pub mod sink;
pub mod store;

use flashsale_server::domain::{Order, OrderId, OrderStatus, Sale, SaleDraft, SaleId, UserId};
use jiff::{SignedDuration, Timestamp};

pub fn at(text: &str) -> Timestamp {
    text.parse().expect("time")
}

pub const T0: &str = "2026-12-01T12:00:00Z";

pub fn sale(stock: i64, per_user_limit: i64) -> Sale {
    SaleDraft {
        name: "Conformance".into(),
        stock,
        per_user_limit: Some(per_user_limit),
        starts_at: at("2026-11-01T00:00:00Z"),
        payment_window_secs: Some(60),
        ..SaleDraft::default()
    }
    .validate(SaleId::generate(), at(T0))
    .expect("valid sale")
}

pub fn user(name: &str) -> UserId {
    UserId::parse(name).expect("user id")
}

pub fn order(sale: &Sale, buyer: &str, quantity: u32, key: Option<&str>) -> Order {
    let created_at = at(T0);
    Order {
        id: OrderId::generate(),
        sale_id: sale.id.clone(),
        user_id: user(buyer),
        quantity,
        status: OrderStatus::PendingPayment,
        created_at,
        expires_at: created_at + SignedDuration::from_secs(60),
        paid_at: None,
        idempotency_key: key.map(str::to_owned),
        access_code: None,
        refunded_at: None,
        payment: None,
    }
}

/// The embedded implementations. The cluster backends add their own lines here.
mod embedded {
    use std::sync::Arc;

    use flashsale_server::gate::{MemoryGate, StockGate};
    use flashsale_server::metrics::Metrics;
    use flashsale_server::store::{
        JournalStore, JournalStoreOptions, OrderStore, SqliteStore, SqliteStoreOptions,
        WriterBatching,
    };
    use flashsale_server::BoxFuture;

    use super::store::StoreBackend;

    async fn memory_gate() -> Option<Arc<dyn StockGate>> {
        Some(Arc::new(MemoryGate::new()))
    }

    pub struct Sqlite(tempfile::TempDir);

    impl Sqlite {
        pub fn new() -> Self {
            Self(tempfile::tempdir().expect("temp dir"))
        }
    }

    impl StoreBackend for Sqlite {
        fn open(&self) -> BoxFuture<'_, Arc<dyn OrderStore>> {
            Box::pin(async move {
                let store = SqliteStore::open(
                    self.0.path(),
                    SqliteStoreOptions::default(),
                    Arc::new(Metrics::default()),
                )
                .expect("store opens");
                Arc::new(store) as Arc<dyn OrderStore>
            })
        }
    }

    /// The journal store in a data directory of its own, its writer gathering batches one way.
    pub struct Journal(tempfile::TempDir, WriterBatching);

    impl Journal {
        pub fn new(batching: WriterBatching) -> Self {
            Self(tempfile::tempdir().expect("temp dir"), batching)
        }
    }

    impl StoreBackend for Journal {
        fn open(&self) -> BoxFuture<'_, Arc<dyn OrderStore>> {
            Box::pin(async move {
                let store = JournalStore::open(
                    self.0.path(),
                    JournalStoreOptions {
                        batching: self.1,
                        ..JournalStoreOptions::default()
                    },
                    Arc::new(Metrics::default()),
                )
                .expect("store opens");
                Arc::new(store) as Arc<dyn OrderStore>
            })
        }
    }

    crate::gate_suite!(memory_gate, super::memory_gate());
    crate::store_suite!(
        journal_store,
        Some(super::Journal::new(super::WriterBatching::ByScheduler))
    );
    // Where `SCHED_BATCH` is refused the writer waits for company instead: the same promises.
    crate::store_suite!(
        journal_store_waiting_for_company,
        Some(super::Journal::new(super::WriterBatching::ByWaiting))
    );
    crate::store_suite!(sqlite_store, Some(super::Sqlite::new()));
    crate::line_suite!(memory_line, Some(super::MemoryLineDir::new()));
    crate::ledger_suite!(file_ledger, Some(super::LedgerDir::new()));

    /// The embedded delivery ledger in a data directory of its own.
    pub struct LedgerDir(tempfile::TempDir);

    impl LedgerDir {
        pub fn new() -> Self {
            Self(tempfile::tempdir().expect("temp dir"))
        }
    }

    impl super::ledger::LedgerBackend for LedgerDir {
        fn open(&self) -> BoxFuture<'_, Arc<dyn flashsale_server::events::DeliveryLedger>> {
            Box::pin(async move {
                let ledger = flashsale_server::events::FileLedger::open(self.0.path())
                    .expect("ledger opens");
                Arc::new(ledger) as Arc<dyn flashsale_server::events::DeliveryLedger>
            })
        }
        fn shared(&self) -> bool {
            false
        }
    }

    /// The embedded line in a data directory of its own, reopened from its journal.
    pub struct MemoryLineDir(tempfile::TempDir);

    impl MemoryLineDir {
        pub fn new() -> Self {
            Self(tempfile::tempdir().expect("temp dir"))
        }
    }

    impl super::line::LineBackend for MemoryLineDir {
        fn open(&self) -> BoxFuture<'_, Arc<dyn flashsale_server::line::WaitingLine>> {
            Box::pin(async move {
                let line =
                    flashsale_server::line::MemoryLine::open(self.0.path(), b"draw key".to_vec())
                        .expect("line opens");
                Arc::new(line) as Arc<dyn flashsale_server::line::WaitingLine>
            })
        }
    }
}

/// The cluster implementations, against the Redis and PostgreSQL named by the environment.
mod cluster {
    use std::sync::Arc;
    use std::time::Duration;

    use flashsale_server::cluster::ClusterStore;
    use flashsale_server::domain::{OrderId, Sale, SaleId, SaleRevision, UserId};
    use flashsale_server::gate::{
        ChangeStep, GateDecision, GateError, GateRecords, Holding, Reservation, StockGate,
    };
    use flashsale_server::metrics::Metrics;
    use flashsale_server::redis::OrderQueue;
    use flashsale_server::redis::{RedisGate, RedisGateOptions};
    use flashsale_server::store::{OrderStore, PostgresOptions, PostgresStore};
    use flashsale_server::BoxFuture;
    use jiff::Timestamp;

    use super::store::StoreBackend;
    use crate::services::{KeyPrefix, Schema};

    /// A Redis gate on a private key prefix, whose keys are deleted when the case drops it.
    struct PrivateRedisGate {
        gate: RedisGate,
        _prefix: KeyPrefix,
    }

    impl StockGate for PrivateRedisGate {
        fn open_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), GateError>> {
            self.gate.open_sale(sale)
        }
        fn restore_sale(
            &self,
            sale: &Sale,
            records: GateRecords,
        ) -> BoxFuture<'_, Result<(), GateError>> {
            self.gate.restore_sale(sale, records)
        }
        fn reserve(
            &self,
            reservation: &Reservation,
        ) -> BoxFuture<'_, Result<GateDecision, GateError>> {
            self.gate.reserve(reservation)
        }
        fn release(
            &self,
            holding: &Holding,
            now: Timestamp,
        ) -> BoxFuture<'_, Result<bool, GateError>> {
            self.gate.release(holding, now)
        }
        fn abandon(
            &self,
            holding: &Holding,
            now: Timestamp,
        ) -> BoxFuture<'_, Result<bool, GateError>> {
            self.gate.abandon(holding, now)
        }
        fn code_owner(
            &self,
            sale_id: &SaleId,
            code: &str,
        ) -> BoxFuture<'_, Result<Option<UserId>, GateError>> {
            self.gate.code_owner(sale_id, code)
        }
        fn begin_change<'a>(
            &'a self,
            base_version: u64,
            target: &'a SaleRevision,
            at: Timestamp,
        ) -> BoxFuture<'a, Result<ChangeStep, GateError>> {
            self.gate.begin_change(base_version, target, at)
        }
        fn finish_change<'a>(
            &'a self,
            target: &'a Sale,
            at: Timestamp,
        ) -> BoxFuture<'a, Result<(), GateError>> {
            self.gate.finish_change(target, at)
        }
        fn pending_changes(&self) -> BoxFuture<'_, Result<Vec<SaleRevision>, GateError>> {
            self.gate.pending_changes()
        }
        fn sales_revision(&self) -> BoxFuture<'_, Result<u64, GateError>> {
            self.gate.sales_revision()
        }
        fn announce_sales_change(&self) -> BoxFuture<'_, Result<(), GateError>> {
            self.gate.announce_sales_change()
        }
        fn key_owner(
            &self,
            sale_id: &SaleId,
            user_id: &UserId,
            key: &str,
        ) -> BoxFuture<'_, Result<Option<OrderId>, GateError>> {
            self.gate.key_owner(sale_id, user_id, key)
        }
        fn remaining(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
            self.gate.remaining(sale_id)
        }
        fn held(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<u64>, GateError>> {
            self.gate.held(sale_id)
        }
        fn ping(&self) -> BoxFuture<'_, Result<(), GateError>> {
            self.gate.ping()
        }
    }

    async fn redis_gate() -> Option<Arc<dyn StockGate>> {
        let prefix = KeyPrefix::new()?;
        let gate = connect_gate(&prefix).await;
        Some(Arc::new(PrivateRedisGate {
            gate,
            _prefix: prefix,
        }))
    }

    async fn connect_gate(prefix: &KeyPrefix) -> RedisGate {
        RedisGate::on(
            &prefix.connect().await,
            &RedisGateOptions {
                sold_out_recheck: Duration::from_millis(1000),
                replicas_ack: 0,
                replicas_ack_timeout: Duration::from_secs(1),
                // The cases give every gate its time in the reservation, as a manual clock would.
                time_from_caller: true,
            },
            Arc::new(Metrics::default()),
        )
    }

    async fn open_postgres(schema: &Schema) -> PostgresStore {
        PostgresStore::open(PostgresOptions {
            url: schema.url.clone(),
            schema: schema.name.clone(),
            connections_max: 4,
            connect_timeout: Duration::from_secs(3),
        })
        .await
        .expect("PostgreSQL store opens")
    }

    pub struct Postgres(Schema);

    impl Postgres {
        pub fn new() -> Option<Self> {
            Schema::new().map(Self)
        }
    }

    impl StoreBackend for Postgres {
        fn open(&self) -> BoxFuture<'_, Arc<dyn OrderStore>> {
            Box::pin(async move { Arc::new(open_postgres(&self.0).await) as Arc<dyn OrderStore> })
        }
    }

    impl super::ledger::LedgerBackend for Postgres {
        fn open(&self) -> BoxFuture<'_, Arc<dyn flashsale_server::events::DeliveryLedger>> {
            Box::pin(async move {
                Arc::new(open_postgres(&self.0).await)
                    as Arc<dyn flashsale_server::events::DeliveryLedger>
            })
        }
        fn shared(&self) -> bool {
            true
        }
    }

    crate::ledger_suite!(postgres_ledger, super::Postgres::new());

    /// PostgreSQL seen through the cluster's store, which also reads the Redis queue.
    pub struct Cluster(Schema, KeyPrefix);

    impl Cluster {
        pub fn new() -> Option<Self> {
            let schema = Schema::new();
            let prefix = KeyPrefix::new();
            Some(Self(schema?, prefix?))
        }
    }

    impl StoreBackend for Cluster {
        fn open(&self) -> BoxFuture<'_, Arc<dyn OrderStore>> {
            Box::pin(async move {
                let gate = connect_gate(&self.1).await;
                let queue = OrderQueue::new(gate.redis());
                Arc::new(ClusterStore::new(open_postgres(&self.0).await, queue))
                    as Arc<dyn OrderStore>
            })
        }
    }

    crate::gate_suite!(redis_gate, super::redis_gate());
    crate::line_suite!(
        redis_line,
        super::KeyPrefix::new().map(super::RedisLineKeys)
    );

    /// The cluster's line on a private key prefix; "reopening" connects again.
    pub struct RedisLineKeys(KeyPrefix);

    impl super::line::LineBackend for RedisLineKeys {
        fn open(&self) -> BoxFuture<'_, Arc<dyn flashsale_server::line::WaitingLine>> {
            Box::pin(async move {
                let gate = connect_gate(&self.0).await;
                Arc::new(flashsale_server::redis::RedisLine::new(
                    gate.redis(),
                    true,
                    b"draw key".to_vec(),
                )) as Arc<dyn flashsale_server::line::WaitingLine>
            })
        }
    }
    crate::store_suite!(postgres_store, super::Postgres::new());
    crate::store_suite!(cluster_store, super::Cluster::new());
}

/// The event sinks on message brokers, against the RabbitMQ and NATS named by the environment
/// (each through a proxy the case can cut; see `brokers/`). The webhook sink adds its line here.
mod sinks {
    crate::sink_suite!(amqp_sink, crate::brokers::amqp::SharedAmqp::new());
    crate::sink_suite!(nats_sink, crate::brokers::nats::SharedNats::new());
}
