//! What every order store must do.

use std::sync::Arc;

use flashsale_server::domain::{Action, Actor, OrderStatus, Refusal};
use flashsale_server::domain::{SaleAccess, SaleChange, SaleChangeKind, SaleRevision, SaleUpdate};
use flashsale_server::store::{
    ChangeError, InsertError, OrderQuery, OrderStore, SaleTally, StoreError,
};
use flashsale_server::BoxFuture;
use jiff::SignedDuration;

pub use super::outbox::{
    prunes_by_age_without_reusing_a_sequence, records_a_sale_change_with_its_event,
    records_each_change_as_its_events_in_order,
};
pub use super::payment_store::{
    leaves_open_intents_to_the_provider_and_owes_late_money_back,
    records_a_payment_and_its_refund_once,
};
use super::{at, order, sale, user, T0};

/// A place a store's data lives; `open` may be called again to reopen the same data.
pub trait StoreBackend: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Arc<dyn OrderStore>>;
}

/// Instantiates every store case for one implementation; `$make` gives a fresh backend, or
/// `None` when it is not available here (skipped).
#[macro_export]
macro_rules! store_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use $crate::conformance::store as cases;
            $crate::store_suite!(@cases $make;
                keeps_sales, keeps_orders_and_counts_stock, backstops_the_gate,
                pays_once_and_refuses_overdue, cancels_and_releases_once, expires_only_what_is_due,
                lists_newest_first_with_filters, finds_orders_by_key_and_active_ones,
                survives_close_and_reopen, keeps_changes_and_unconfirmed_returns_across_reopen,
                refuses_writes_after_close, records_each_change_as_its_events_in_order,
                records_a_sale_change_with_its_event, prunes_by_age_without_reusing_a_sequence,
                records_each_version_of_a_sale_once,
                a_sale_changed_keeps_its_counts_and_its_version_across_reopen,
                keeps_a_waiting_room_and_its_draw_seed_through_changes_and_reopen,
                lists_by_status_and_keeps_access_codes,
                records_a_payment_and_its_refund_once,
                leaves_open_intents_to_the_provider_and_owes_late_money_back);
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

fn alice() -> Actor {
    Actor::Buyer(user("alice"))
}

pub async fn keeps_sales(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let first = sale(10, 1);
    let second = sale(20, 3);
    store.create_sale(&first).await.unwrap();
    store.create_sale(&second).await.unwrap();
    let sales = store.sales().await.unwrap();
    assert_eq!(
        sales,
        vec![second.clone(), first.clone()],
        "newest first, every field kept"
    );
    assert_eq!(store.tally(&first.id).await.unwrap().remaining, 10);
}

pub async fn keeps_orders_and_counts_stock(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(10, 3);
    store.create_sale(&sale).await.unwrap();
    let placed = order(&sale, "alice", 3, Some("k1"));
    store.insert_order(placed.clone()).await.unwrap();
    assert_eq!(store.order(&placed.id).await.unwrap(), Some(placed.clone()));
    let tally = store.tally(&sale.id).await.unwrap();
    assert_eq!(
        tally,
        SaleTally {
            remaining: 7,
            pending: 3,
            ..SaleTally::default()
        }
    );
}

pub async fn backstops_the_gate(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(3, 2);
    store.create_sale(&sale).await.unwrap();
    let first = order(&sale, "alice", 2, Some("same"));
    store.insert_order(first.clone()).await.unwrap();
    assert!(matches!(
        store.insert_order(order(&sale, "alice", 1, None)).await,
        Err(InsertError::LimitExceeded)
    ));
    match store
        .insert_order(order(&sale, "alice", 1, Some("same")))
        .await
    {
        Err(InsertError::SameKey(existing)) => assert_eq!(existing.id, first.id),
        other => panic!("expected SameKey, got {other:?}"),
    }
    assert!(matches!(
        store.insert_order(order(&sale, "bob", 2, None)).await,
        Err(InsertError::SoldOut)
    ));
    store
        .insert_order(order(&sale, "bob", 1, None))
        .await
        .unwrap();
    let tally = store.tally(&sale.id).await.unwrap();
    assert_eq!(
        (tally.remaining, tally.pending),
        (0, 3),
        "refused orders left no trace"
    );
}

pub async fn pays_once_and_refuses_overdue(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(5, 1);
    store.create_sale(&sale).await.unwrap();
    let placed = order(&sale, "alice", 1, None);
    store.insert_order(placed.clone()).await.unwrap();
    let in_time = at(T0) + SignedDuration::from_secs(30);
    let paid = store
        .transition(&placed.id, Action::Pay, &alice(), in_time)
        .await
        .unwrap();
    assert_eq!(paid.order.status, OrderStatus::Paid);
    assert_eq!(paid.order.paid_at, Some(in_time));
    assert!(!paid.released && paid.refusal.is_none());
    let again = store
        .transition(&placed.id, Action::Pay, &alice(), in_time)
        .await
        .unwrap();
    assert_eq!(
        again.order, paid.order,
        "paying a paid order changes nothing"
    );

    let late = order(&sale, "bob", 1, None);
    store.insert_order(late.clone()).await.unwrap();
    let after = at(T0) + SignedDuration::from_secs(60);
    let bob = Actor::Buyer(user("bob"));
    let refused = store
        .transition(&late.id, Action::Pay, &bob, after)
        .await
        .unwrap();
    assert_eq!(refused.refusal, Some(Refusal::NotPayable));
    assert_eq!(refused.order.status, OrderStatus::Expired);
    assert!(
        refused.released,
        "the overdue order's stock comes back with this call"
    );
    let stranger = store
        .transition(&placed.id, Action::Cancel, &bob, in_time)
        .await
        .unwrap();
    assert_eq!(stranger.refusal, Some(Refusal::NotFound));
    let tally = store.tally(&sale.id).await.unwrap();
    assert_eq!((tally.remaining, tally.paid, tally.expired), (4, 1, 1));
}

pub async fn cancels_and_releases_once(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(5, 1);
    store.create_sale(&sale).await.unwrap();
    let placed = order(&sale, "alice", 1, None);
    store.insert_order(placed.clone()).await.unwrap();
    let now = at(T0) + SignedDuration::from_secs(1);
    let (first, second) = tokio::join!(
        store.transition(&placed.id, Action::Cancel, &alice(), now),
        store.transition(&placed.id, Action::Cancel, &Actor::Admin, now)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.order.status, OrderStatus::Cancelled);
    assert_eq!(second.order.status, OrderStatus::Cancelled);
    assert!(
        first.released ^ second.released,
        "exactly one call releases"
    );
    let expire = store
        .expire_due(at(T0) + SignedDuration::from_secs(3600), 100)
        .await
        .unwrap();
    assert!(expire.is_empty(), "a cancelled order never expires");
    assert_eq!(store.tally(&sale.id).await.unwrap().remaining, 5);
    let missing = flashsale_server::domain::OrderId::generate();
    assert!(store
        .transition(&missing, Action::Cancel, &Actor::Admin, now)
        .await
        .is_err());
}

pub async fn expires_only_what_is_due(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(10, 1);
    store.create_sale(&sale).await.unwrap();
    let mut due = order(&sale, "a", 1, None);
    due.expires_at = at(T0) + SignedDuration::from_secs(10);
    let not_due = order(&sale, "b", 1, None);
    let paid = order(&sale, "c", 1, None);
    for placed in [&due, &not_due, &paid] {
        store.insert_order((*placed).clone()).await.unwrap();
    }
    let in_time = at(T0) + SignedDuration::from_secs(5);
    store
        .transition(&paid.id, Action::Pay, &Actor::Buyer(user("c")), in_time)
        .await
        .unwrap();
    let now = at(T0) + SignedDuration::from_secs(30);
    let expired = store.expire_due(now, 100).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, due.id);
    assert_eq!(expired[0].status, OrderStatus::Expired);
    assert!(
        store.expire_due(now, 100).await.unwrap().is_empty(),
        "expired once"
    );
    let tally = store.tally(&sale.id).await.unwrap();
    assert_eq!(
        (tally.remaining, tally.pending, tally.paid, tally.expired),
        (8, 1, 1, 1)
    );
    let mut batch = Vec::new();
    for i in 0..5 {
        let mut placed = order(&sale, &format!("batch-{i}"), 1, None);
        placed.expires_at = at(T0);
        store.insert_order(placed.clone()).await.unwrap();
        batch.push(placed);
    }
    assert_eq!(
        store.expire_due(now, 3).await.unwrap().len(),
        3,
        "bounded batches"
    );
    assert_eq!(store.expire_due(now, 3).await.unwrap().len(), 2);
}

pub async fn lists_newest_first_with_filters(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let one = sale(10, 10);
    let two = sale(10, 10);
    store.create_sale(&one).await.unwrap();
    store.create_sale(&two).await.unwrap();
    let mut placed = Vec::new();
    for i in 0..6 {
        let target = if i % 2 == 0 { &one } else { &two };
        let buyer = if i < 4 { "alice" } else { "bob" };
        let made = order(target, buyer, 1, None);
        store.insert_order(made.clone()).await.unwrap();
        placed.push(made);
    }
    let query = |user_id, sale_id, before, limit| OrderQuery {
        user_id,
        sale_id,
        before,
        status: None,
        limit,
    };
    let all = store.orders(query(None, None, None, 100)).await.unwrap();
    let expected: Vec<_> = placed.iter().rev().map(|o| o.id.clone()).collect();
    assert_eq!(
        all.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        expected
    );
    let alices = store
        .orders(query(Some(user("alice")), None, None, 100))
        .await
        .unwrap();
    assert_eq!(alices.len(), 4);
    let alice_two = store
        .orders(query(Some(user("alice")), Some(two.id.clone()), None, 100))
        .await
        .unwrap();
    assert_eq!(alice_two.len(), 2);
    let page = store
        .orders(query(None, None, Some(expected[1].clone()), 2))
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        expected[2..4].to_vec()
    );
}

pub async fn finds_orders_by_key_and_active_ones(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(10, 5);
    store.create_sale(&sale).await.unwrap();
    let keyed = order(&sale, "alice", 1, Some("abc"));
    let other = order(&sale, "alice", 1, None);
    store.insert_order(keyed.clone()).await.unwrap();
    store.insert_order(other.clone()).await.unwrap();
    let found = store
        .order_by_key(&sale.id, &user("alice"), "abc")
        .await
        .unwrap();
    assert_eq!(found.map(|o| o.id), Some(keyed.id.clone()));
    assert!(store
        .order_by_key(&sale.id, &user("bob"), "abc")
        .await
        .unwrap()
        .is_none());
    store
        .transition(&other.id, Action::Cancel, &alice(), at(T0))
        .await
        .unwrap();
    let active = store.active_orders(&sale.id).await.unwrap();
    assert_eq!(
        active.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![keyed.id]
    );
}

pub async fn survives_close_and_reopen(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(10, 1);
    store.create_sale(&sale).await.unwrap();
    let placed = order(&sale, "alice", 1, None);
    store.insert_order(placed.clone()).await.unwrap();
    store.barrier().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let reopened = backend.open().await;
    assert_eq!(reopened.order(&placed.id).await.unwrap(), Some(placed));
    assert_eq!(reopened.sales().await.unwrap(), vec![sale.clone()]);
    assert_eq!(reopened.tally(&sale.id).await.unwrap().remaining, 9);
    reopened.ping().await.unwrap();
}

/// Every change, not only new orders, survives a reopen, and so does the record of a return the
/// gate has not confirmed.
pub async fn keeps_changes_and_unconfirmed_returns_across_reopen(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(10, 2);
    store.create_sale(&sale).await.unwrap();
    let paid = order(&sale, "alice", 2, None);
    let cancelled = order(&sale, "bob", 1, Some("k"));
    for placed in [&paid, &cancelled] {
        store.insert_order((*placed).clone()).await.unwrap();
    }
    let now = at(T0) + SignedDuration::from_secs(1);
    store
        .transition(&paid.id, Action::Pay, &alice(), now)
        .await
        .unwrap();
    let cancel = store
        .transition(&cancelled.id, Action::Cancel, &Actor::Admin, now)
        .await
        .unwrap();
    assert!(cancel.released);
    store.barrier().await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let reopened = backend.open().await;
    let unreturned = reopened.unreturned(100).await.unwrap();
    assert_eq!(
        unreturned.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![cancelled.id.clone()],
        "the cancelled order still owes the gate its stock"
    );
    let tally = reopened.tally(&sale.id).await.unwrap();
    assert_eq!(
        (tally.remaining, tally.pending, tally.paid, tally.cancelled),
        (8, 0, 2, 1)
    );
    let read = reopened.order(&paid.id).await.unwrap().unwrap();
    assert_eq!(read.status, OrderStatus::Paid);
    assert!(read.paid_at.is_some());
    assert_eq!(
        reopened
            .order_by_key(&sale.id, &user("bob"), "k")
            .await
            .unwrap()
            .map(|o| o.status),
        Some(OrderStatus::Cancelled),
        "the key still names its order"
    );
    reopened
        .stock_returned(vec![cancelled.id.clone()])
        .await
        .unwrap();
    reopened.barrier().await.unwrap();
    reopened.close().await.unwrap();
    drop(reopened);

    let again = backend.open().await;
    assert!(again.unreturned(100).await.unwrap().is_empty());
    again.close().await.unwrap();
}

pub async fn refuses_writes_after_close(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(10, 1);
    store.create_sale(&sale).await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store.insert_order(order(&sale, "late", 1, None)).await,
        Err(InsertError::Store(StoreError::Closed))
    ));
    store.close().await.unwrap();
}

fn changed(base: &flashsale_server::domain::Sale, update: SaleUpdate) -> SaleRevision {
    SaleChange::Update(update)
        .apply(base, at(T0))
        .expect("valid")
        .expect("a change")
}

pub async fn records_each_version_of_a_sale_once(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(10, 1);
    store.create_sale(&sale).await.unwrap();
    assert_eq!(store.sale(&sale.id).await.unwrap(), Some(sale.clone()));
    let renamed = changed(
        &sale,
        SaleUpdate {
            name: Some("Renamed".into()),
            per_user_limit: Some(2),
            ..SaleUpdate::default()
        },
    );
    store.change_sale(&renamed).await.unwrap();
    store
        .change_sale(&renamed)
        .await
        .expect("a repeat of the same version is recorded once");
    assert_eq!(
        store.sale(&sale.id).await.unwrap(),
        Some(renamed.sale.clone())
    );
    let skipping = SaleRevision {
        sale: flashsale_server::domain::Sale {
            version: 4,
            ..renamed.sale.clone()
        },
        kind: SaleChangeKind::Updated,
        at: renamed.at,
    };
    assert!(
        matches!(
            store.change_sale(&skipping).await,
            Err(ChangeError::Conflict { stored: 2 })
        ),
        "a version is recorded only after the one before it"
    );
    let unknown = SaleRevision {
        sale: flashsale_server::domain::Sale {
            id: flashsale_server::domain::SaleId::generate(),
            version: 2,
            ..sale.clone()
        },
        kind: SaleChangeKind::Paused,
        at: renamed.at,
    };
    assert!(matches!(
        store.change_sale(&unknown).await,
        Err(ChangeError::NotFound)
    ));
    assert_eq!(
        store.sales().await.unwrap(),
        vec![renamed.sale],
        "the listing shows the latest version"
    );
}

pub async fn a_sale_changed_keeps_its_counts_and_its_version_across_reopen(
    backend: &dyn StoreBackend,
) {
    let store = backend.open().await;
    let sale = sale(10, 3);
    store.create_sale(&sale).await.unwrap();
    store
        .insert_order(order(&sale, "alice", 3, None))
        .await
        .unwrap();
    let grown = changed(
        &sale,
        SaleUpdate {
            add_stock: Some(5),
            ..SaleUpdate::default()
        },
    );
    store.change_sale(&grown).await.unwrap();
    assert_eq!(
        store.tally(&sale.id).await.unwrap().remaining,
        12,
        "15 units, 3 held"
    );
    let shrunk = changed(
        &grown.sale,
        SaleUpdate {
            remove_stock: Some(12),
            ..SaleUpdate::default()
        },
    );
    store.change_sale(&shrunk).await.unwrap();
    let paused = SaleChange::Pause
        .apply(&shrunk.sale, at(T0))
        .unwrap()
        .unwrap();
    store.change_sale(&paused).await.unwrap();
    let tally = store.tally(&sale.id).await.unwrap();
    assert_eq!((tally.remaining, tally.pending), (0, 3));
    // Every unit is held: nothing more sells, however the store is asked.
    assert!(matches!(
        store.insert_order(order(&sale, "bob", 1, None)).await,
        Err(InsertError::SoldOut)
    ));
    store.close().await.unwrap();
    drop(store);
    let reopened = backend.open().await;
    let kept = reopened.sale(&sale.id).await.unwrap().expect("kept");
    assert_eq!(kept, paused.sale);
    assert_eq!((kept.version, kept.stock, kept.paused), (4, 3, true));
    let tally = reopened.tally(&sale.id).await.unwrap();
    assert_eq!((tally.remaining, tally.pending), (0, 3));
}

pub async fn lists_by_status_and_keeps_access_codes(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = flashsale_server::domain::Sale {
        access: SaleAccess::Codes,
        ..sale(10, 1)
    };
    store.create_sale(&sale).await.unwrap();
    let mut coded = order(&sale, "alice", 1, None);
    coded.access_code = Some("AAAAAAAAAAAAAAAAAAAAAA".into());
    store.insert_order(coded.clone()).await.unwrap();
    let other = order(&sale, "bob", 1, None);
    store.insert_order(other.clone()).await.unwrap();
    store
        .transition(&other.id, Action::Cancel, &Actor::Admin, at(T0))
        .await
        .unwrap();
    let listed = |status| OrderQuery {
        user_id: None,
        sale_id: Some(sale.id.clone()),
        before: None,
        status,
        limit: 10,
    };
    let pending = store
        .orders(listed(Some(OrderStatus::PendingPayment)))
        .await
        .unwrap();
    assert_eq!(
        pending,
        vec![coded.clone()],
        "the code is kept with its order"
    );
    let cancelled = store
        .orders(listed(Some(OrderStatus::Cancelled)))
        .await
        .unwrap();
    assert_eq!(
        cancelled.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![other.id.clone()]
    );
    assert!(store
        .orders(listed(Some(OrderStatus::Paid)))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.sale(&sale.id).await.unwrap().unwrap().access,
        SaleAccess::Codes
    );
    let for_gate = store.orders_for_gate(&sale.id).await.unwrap();
    assert!(for_gate
        .iter()
        .any(|order| order.access_code == coded.access_code));
}

/// A room's draw seed is kept with the sale (a change of the room's rate keeps it); a sale made
/// before seeds reads back without one.
pub async fn keeps_a_waiting_room_and_its_draw_seed_through_changes_and_reopen(
    backend: &dyn StoreBackend,
) {
    use flashsale_server::domain::{DrawSeed, WaitingRoom};
    let store = backend.open().await;
    let room = WaitingRoom {
        admit_per_sec: 10,
        pass_ttl_secs: 60,
        opens_before_secs: 900,
        draw_seed: Some(DrawSeed::from_bytes([0x5a; 32])),
    };
    let mut seeded = sale(10, 1);
    seeded.waiting_room = Some(room);
    let mut unseeded = sale(10, 1);
    unseeded.waiting_room = Some(WaitingRoom {
        draw_seed: None,
        ..room
    });
    store.create_sale(&seeded).await.unwrap();
    store.create_sale(&unseeded).await.unwrap();
    let faster = changed(
        &seeded,
        SaleUpdate {
            admit_per_sec: Some(50),
            ..SaleUpdate::default()
        },
    );
    store.change_sale(&faster).await.unwrap();
    assert_eq!(
        store.sale(&seeded.id).await.unwrap().as_ref(),
        Some(&faster.sale)
    );
    store.close().await.unwrap();
    drop(store);
    let reopened = backend.open().await;
    let kept = reopened.sale(&seeded.id).await.unwrap().expect("kept");
    assert_eq!(kept, faster.sale);
    let kept_room = kept.waiting_room.expect("a room");
    assert_eq!(
        (kept_room.admit_per_sec, kept_room.draw_seed),
        (50, room.draw_seed)
    );
    assert_eq!(
        reopened.sale(&unseeded.id).await.unwrap().as_ref(),
        Some(&unseeded),
        "no seed: none read back"
    );
}
