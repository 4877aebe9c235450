//! Random sequences of purchase, pay, cancel, clock moves, expiry sweeps and restarts, across
//! several buyers, must keep `remaining + pending + paid == stock` in the gate and in the store,
//! and never let a buyer hold more than the limit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use flashsale_server::clock::ManualClock;
use flashsale_server::domain::{Actor, OrderStatus, SaleDraft, UserId};
use flashsale_server::gate::{MemoryGate, StockGate};
use flashsale_server::metrics::Metrics;
use flashsale_server::service::{PrivateIntake, Service, ServiceError};
use flashsale_server::store::{OrderStore, SqliteStore, SqliteStoreOptions};
use jiff::SignedDuration;
use proptest::prelude::*;

const STOCK: i64 = 6;
const LIMIT: u32 = 2;
const BUYERS: u8 = 5;

#[derive(Clone, Debug)]
enum Op {
    Buy {
        buyer: u8,
        quantity: u8,
        key: Option<u8>,
    },
    Pay {
        order: prop::sample::Index,
    },
    Cancel {
        order: prop::sample::Index,
        by_admin: bool,
    },
    Advance {
        secs: u16,
    },
    Sweep,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..BUYERS, 0..=3u8, prop::option::of(0..3u8))
            .prop_map(|(buyer, quantity, key)| Op::Buy { buyer, quantity, key }),
        2 => any::<prop::sample::Index>().prop_map(|order| Op::Pay { order }),
        2 => (any::<prop::sample::Index>(), any::<bool>())
            .prop_map(|(order, by_admin)| Op::Cancel { order, by_admin }),
        1 => (1..40u16).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Sweep),
        1 => Just(Op::Restart),
    ]
}

async fn open(data_dir: &Path, clock: Arc<ManualClock>) -> Service {
    let store = SqliteStore::open(
        data_dir,
        SqliteStoreOptions::default(),
        Arc::new(Metrics::default()),
    )
    .expect("store opens");
    let gate: Arc<dyn StockGate> = Arc::new(MemoryGate::new());
    let store: Arc<dyn OrderStore> = Arc::new(store);
    let intake = Arc::new(PrivateIntake::new(Arc::clone(&gate), Arc::clone(&store)));
    Service::start(gate, store, intake, clock, 3)
        .await
        .expect("service starts")
}

fn buyer(index: u8) -> UserId {
    UserId::parse(&format!("buyer-{index}")).unwrap()
}

async fn check_invariants(service: &Service, sale_id: &str) {
    let audit = service.audit(sale_id).await.expect("audit");
    assert!(audit.consistent, "{audit:?}");
    assert_eq!(
        audit.remaining + audit.pending + audit.paid,
        audit.stock,
        "{audit:?}"
    );
    let orders = service
        .orders(&Actor::Admin, Some(sale_id), None, 500)
        .await
        .expect("orders")
        .orders;
    let mut held: HashMap<String, u32> = HashMap::new();
    for order in orders.iter().filter(|order| order.status.is_active()) {
        *held.entry(order.user_id.to_string()).or_default() += order.quantity;
    }
    for (user, quantity) in held {
        assert!(quantity <= LIMIT, "{user} holds {quantity} > {LIMIT}");
    }
}

async fn run(ops: Vec<Op>) {
    let data_dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new("2026-12-01T12:00:00Z".parse().unwrap()));
    let mut service = open(data_dir.path(), Arc::clone(&clock)).await;
    let sale = service
        .create_sale(SaleDraft {
            name: "Property".into(),
            stock: STOCK,
            per_user_limit: Some(i64::from(LIMIT)),
            starts_at: "2026-11-01T00:00:00Z".parse().unwrap(),
            payment_window_secs: Some(60),
            ..SaleDraft::default()
        })
        .await
        .expect("sale");
    let sale_id = sale.sale.id.to_string();
    let mut order_ids: Vec<(String, UserId)> = Vec::new();
    for op in ops {
        match op {
            Op::Buy {
                buyer: index,
                quantity,
                key,
            } => {
                let key = key.map(|key| format!("key-{key}"));
                match service
                    .purchase(buyer(index), &sale_id, i64::from(quantity), key, None, None)
                    .await
                {
                    Ok(purchased) => {
                        assert!(quantity >= 1 && u32::from(quantity) <= LIMIT);
                        if purchased.created {
                            assert_eq!(purchased.order.status, OrderStatus::PendingPayment);
                            order_ids.push((purchased.order.id.to_string(), buyer(index)));
                        }
                    }
                    Err(ServiceError::Rejected(_)) => {}
                    Err(other) => panic!("purchase failed: {other}"),
                }
            }
            Op::Pay { order } if !order_ids.is_empty() => {
                let (order_id, owner) = order.get(&order_ids).clone();
                match service.pay(&Actor::Buyer(owner), &order_id).await {
                    Ok(paid) => assert_eq!(paid.status, OrderStatus::Paid),
                    Err(ServiceError::NotPayable) => {}
                    Err(other) => panic!("pay failed: {other}"),
                }
            }
            Op::Cancel { order, by_admin } if !order_ids.is_empty() => {
                let (order_id, owner) = order.get(&order_ids).clone();
                let actor = if by_admin {
                    Actor::Admin
                } else {
                    Actor::Buyer(owner)
                };
                match service.cancel(&actor, &order_id).await {
                    Ok(cancelled) => assert_eq!(cancelled.status, OrderStatus::Cancelled),
                    Err(ServiceError::NotCancellable) => {}
                    Err(other) => panic!("cancel failed: {other}"),
                }
            }
            Op::Pay { .. } | Op::Cancel { .. } => {}
            Op::Advance { secs } => clock.advance(SignedDuration::from_secs(i64::from(secs))),
            Op::Sweep => while service.expire_due().await.expect("sweep") > 0 {},
            Op::Restart => {
                service.close().await.expect("close");
                drop(service);
                service = open(data_dir.path(), Arc::clone(&clock)).await;
            }
        }
        check_invariants(&service, &sale_id).await;
    }
    service.close().await.expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_life_cycles_keep_the_invariants(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops));
    }
}
