//! What every delivery ledger must do (files embedded, PostgreSQL in a cluster): cursors that
//! only move forward and survive a reopen, dead letters kept with their cursor moved past them,
//! and (where several nodes share it) one holder of a sink at a time, taken over once its lease
//! runs out.

use std::sync::Arc;
use std::time::Duration;

use flashsale_server::domain::SaleId;
use flashsale_server::events::{DeadLetter, DeliveryLedger, LedgerError};
use flashsale_server::BoxFuture;

/// A place a ledger's data lives; `open` may be called again to reopen the same data.
pub trait LedgerBackend: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Arc<dyn DeliveryLedger>>;
    /// Whether several nodes share it (and so its leases mean something).
    fn shared(&self) -> bool;
}

#[macro_export]
macro_rules! ledger_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use $crate::conformance::ledger as cases;
            $crate::ledger_suite!(@cases $make;
                cursors_move_forward_and_survive_a_reopen, dead_letters_are_kept_and_passed,
                one_node_holds_a_sink_at_a_time);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(backend) = $make {
                    cases::$case(&backend).await;
                }
            }
        )*
    };
}

const LEASE: Duration = Duration::from_secs(30);

pub async fn cursors_move_forward_and_survive_a_reopen(backend: &dyn LedgerBackend) {
    let ledger = backend.open().await;
    let (one, two) = (SaleId::generate(), SaleId::generate());
    assert!(ledger.hold("shop", "node-a", LEASE).await.unwrap());
    assert!(ledger.cursors("shop").await.unwrap().is_empty());
    ledger
        .advance("shop", "node-a", vec![(one.clone(), 5), (two.clone(), 2)])
        .await
        .unwrap();
    ledger
        .advance("shop", "node-a", vec![(one.clone(), 3)])
        .await
        .unwrap();
    assert!(ledger.hold("other", "node-a", LEASE).await.unwrap());
    ledger
        .advance("other", "node-a", vec![(one.clone(), 1)])
        .await
        .unwrap();
    let mut cursors = ledger.cursors("shop").await.unwrap();
    cursors.sort();
    let mut expected = vec![(one.clone(), 5), (two.clone(), 2)];
    expected.sort();
    assert_eq!(
        cursors, expected,
        "a cursor never goes back; sinks are apart"
    );
    drop(ledger);
    let reopened = backend.open().await;
    let mut cursors = reopened.cursors("shop").await.unwrap();
    cursors.sort();
    assert_eq!(cursors, expected);
    assert_eq!(reopened.cursors("other").await.unwrap(), vec![(one, 1)]);
}

pub async fn dead_letters_are_kept_and_passed(backend: &dyn LedgerBackend) {
    let ledger = backend.open().await;
    let sale = SaleId::generate();
    assert!(ledger.hold("shop", "node-a", LEASE).await.unwrap());
    let letter = DeadLetter {
        sale_id: sale.clone(),
        sequence: 4,
        event: r#"{"id":"x-4"}"#.into(),
        reason: "the receiver answered 500\tInternal".into(),
        recorded_at: "2026-12-01T12:00:00Z".parse().unwrap(),
    };
    ledger
        .dead_letter("shop", "node-a", letter.clone())
        .await
        .unwrap();
    assert_eq!(
        ledger.cursors("shop").await.unwrap(),
        vec![(sale.clone(), 4)]
    );
    drop(ledger);
    let reopened = backend.open().await;
    let (count, latest) = reopened.dead_letters("shop", 10).await.unwrap();
    assert_eq!(count, 1);
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].sale_id, sale);
    assert_eq!(latest[0].sequence, 4);
    assert_eq!(latest[0].event, letter.event);
    assert!(latest[0].reason.starts_with("the receiver answered 500"));
    assert_eq!(reopened.dead_letters("other", 10).await.unwrap().0, 0);
}

pub async fn one_node_holds_a_sink_at_a_time(backend: &dyn LedgerBackend) {
    if !backend.shared() {
        // One process holds an embedded data directory: it always holds its sinks.
        let ledger = backend.open().await;
        assert!(ledger.hold("shop", "node-a", LEASE).await.unwrap());
        return;
    }
    let (a, b) = (backend.open().await, backend.open().await);
    let short = Duration::from_millis(1500);
    assert!(a.hold("shop", "node-a", short).await.unwrap());
    assert!(!b.hold("shop", "node-b", short).await.unwrap(), "held by a");
    assert!(a.hold("shop", "node-a", short).await.unwrap(), "a renews");
    let sale = SaleId::generate();
    assert!(matches!(
        b.advance("shop", "node-b", vec![(sale.clone(), 1)]).await,
        Err(LedgerError::LeaseLost)
    ));
    // a stops renewing (it died): b takes over once the lease has run out.
    let taken = crate::harness::eventually(Duration::from_secs(10), || async {
        b.hold("shop", "node-b", short).await.unwrap()
    })
    .await;
    assert!(taken, "b takes the sink over");
    assert!(matches!(
        a.advance("shop", "node-a", vec![(sale.clone(), 1)]).await,
        Err(LedgerError::LeaseLost)
    ));
    b.advance("shop", "node-b", vec![(sale.clone(), 2)])
        .await
        .unwrap();
    // Letting go hands it over at once.
    b.let_go("shop", "node-b").await.unwrap();
    assert!(a.hold("shop", "node-a", short).await.unwrap());
    assert_eq!(a.cursors("shop").await.unwrap(), vec![(sale, 2)]);
}
