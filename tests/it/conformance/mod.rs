//! One conformance suite for every stock gate and every order store. Each backend instantiates
//! the same cases with `gate_suite!` / `store_suite!`; a backend is conformant when all pass.

pub mod gate;
pub mod store;

use flashsale::domain::{Order, OrderId, OrderStatus, Sale, SaleDraft, SaleId, UserId};
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
    }
}

/// The embedded implementations. The cluster backends add their own lines here.
mod embedded {
    use std::sync::Arc;

    use flashsale::gate::{MemoryGate, StockGate};
    use flashsale::metrics::Metrics;
    use flashsale::store::{OrderStore, SqliteStore, SqliteStoreOptions};
    use flashsale::BoxFuture;

    use super::store::StoreBackend;

    async fn memory_gate() -> Arc<dyn StockGate> {
        Arc::new(MemoryGate::new())
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

    crate::gate_suite!(memory_gate, super::memory_gate());
    crate::store_suite!(sqlite_store, super::Sqlite::new());
}
