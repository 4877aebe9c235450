//! What every order store must do with events (the outbox): each change recorded as its events
//! in the same commit, numbered per sale with no gap in the order the changes took effect, the
//! same story as the orders, kept across a reopen, pruned by age without reusing a number.

use flashsale_server::domain::{Action, Actor, SaleChangeKind, SaleRevision};
use flashsale_server::store::{EventHead, OrderStore, RecordedEvent};
use jiff::SignedDuration;
use serde_json::Value;

use super::store::StoreBackend;
use super::{at, order, sale, user, T0};

async fn all_events(
    store: &dyn OrderStore,
    sale_id: &flashsale_server::domain::SaleId,
) -> Vec<RecordedEvent> {
    store.events(sale_id, 0, 1000).await.unwrap()
}

fn types(events: &[RecordedEvent]) -> Vec<&'static str> {
    events.iter().map(|event| event.kind.type_name()).collect()
}

fn data(event: &RecordedEvent) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

/// A sale of two units through its whole life: creation, sell-out, a payment, a cancel that
/// brings a unit back, a resale, an expiry; refusals and repeats record nothing.
pub async fn records_each_change_as_its_events_in_order(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(2, 1);
    store.create_sale(&sale).await.unwrap();
    let alice = order(&sale, "alice", 1, None);
    let bob = order(&sale, "bob", 1, None);
    store.insert_order(alice.clone()).await.unwrap();
    store.insert_order(bob.clone()).await.unwrap();
    let now = at(T0) + SignedDuration::from_secs(1);
    let buyer = |name: &str| Actor::Buyer(user(name));
    store
        .transition(&alice.id, Action::Pay, &buyer("alice"), now)
        .await
        .unwrap();
    store
        .transition(&bob.id, Action::Cancel, &buyer("bob"), now)
        .await
        .unwrap();
    // Refused or unchanged: no event.
    let refused = store
        .transition(&bob.id, Action::Pay, &buyer("bob"), now)
        .await
        .unwrap();
    assert!(refused.refusal.is_some());
    store
        .transition(&bob.id, Action::Cancel, &buyer("bob"), now)
        .await
        .unwrap();
    store
        .transition(&alice.id, Action::Pay, &buyer("alice"), now)
        .await
        .unwrap();
    let mut carol = order(&sale, "carol", 1, None);
    carol.expires_at = at(T0) + SignedDuration::from_secs(10);
    store.insert_order(carol.clone()).await.unwrap();
    let expired = store
        .expire_due(at(T0) + SignedDuration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);

    let expected = [
        "flashsale.sale.created",
        "flashsale.order.created",
        "flashsale.order.created",
        "flashsale.sale.sold_out",
        "flashsale.order.paid",
        "flashsale.order.cancelled",
        "flashsale.sale.updated",
        "flashsale.order.created",
        "flashsale.sale.sold_out",
        "flashsale.order.expired",
        "flashsale.sale.updated",
    ];
    let events = all_events(store.as_ref(), &sale.id).await;
    assert_eq!(types(&events), expected);
    let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
    assert_eq!(
        sequences,
        (1..=11).collect::<Vec<_>>(),
        "1, 2, 3 … with no gap"
    );
    let subjects: Vec<&str> = events.iter().map(|event| event.subject.as_str()).collect();
    let (s, a, b, c) = (
        sale.id.as_str(),
        alice.id.as_str(),
        bob.id.as_str(),
        carol.id.as_str(),
    );
    assert_eq!(subjects, [s, a, b, s, a, b, s, c, s, c, s]);
    assert!(events.iter().all(|event| event.sale_id == sale.id));
    // The data is the order or the sale right after the change.
    let statuses: Vec<Value> = [1, 2, 4, 5, 7, 9]
        .iter()
        .map(|at| data(&events[*at])["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            "pending_payment",
            "pending_payment",
            "paid",
            "cancelled",
            "pending_payment",
            "expired"
        ]
    );
    assert!(
        data(&events[1])["paid_at"].is_null(),
        "created: not paid yet"
    );
    assert!(data(&events[4])["paid_at"].is_string());
    let remaining: Vec<Value> = [0, 3, 6, 8, 10]
        .iter()
        .map(|at| data(&events[*at])["remaining"].clone())
        .collect();
    assert_eq!(remaining, [2, 0, 1, 0, 1]);
    assert_eq!(data(&events[3])["state"], "sold_out");
    assert_eq!(data(&events[6])["state"], "live");
    assert_eq!(events[4].at, now, "a change's event has the change's time");
    assert_eq!(events[1].at, alice.created_at);

    // Paging: after a sequence, at most a limit.
    let page = store.events(&sale.id, 5, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|event| event.sequence).collect::<Vec<_>>(),
        [6, 7, 8]
    );
    assert!(store.events(&sale.id, 11, 10).await.unwrap().is_empty());
    let heads = store.event_heads().await.unwrap();
    assert!(heads.contains(&EventHead {
        sale_id: sale.id.clone(),
        sequence: 11
    }));

    // The same story after a reopen.
    store.barrier().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let reopened = backend.open().await;
    assert_eq!(all_events(reopened.as_ref(), &sale.id).await, events);
    // And numbering goes on where it stopped.
    reopened
        .insert_order(order(&sale, "dave", 1, None))
        .await
        .unwrap();
    let after = reopened.events(&sale.id, 11, 10).await.unwrap();
    assert_eq!(
        types(&after),
        ["flashsale.order.created", "flashsale.sale.sold_out"]
    );
    assert_eq!(after[0].sequence, 12);
    reopened.close().await.unwrap();
}

/// The live controls' way to change a sale: its next version and its event, in one commit; a
/// repeat of a version records no second event.
pub async fn records_a_sale_change_with_its_event(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let mut sale = sale(5, 2);
    store.create_sale(&sale).await.unwrap();
    store
        .insert_order(order(&sale, "alice", 2, None))
        .await
        .unwrap();
    let now = at(T0) + SignedDuration::from_secs(5);
    sale.name = "Renamed".into();
    sale.stock = 8;
    sale.version = 2;
    let renamed = SaleRevision {
        sale: sale.clone(),
        kind: SaleChangeKind::Updated,
        at: now,
    };
    store.change_sale(&renamed).await.unwrap();
    sale.paused = true;
    sale.version = 3;
    let paused = SaleRevision {
        sale: sale.clone(),
        kind: SaleChangeKind::Paused,
        at: now,
    };
    store.change_sale(&paused).await.unwrap();
    store
        .change_sale(&paused)
        .await
        .expect("a repeat of a version is no error");
    let events = all_events(store.as_ref(), &sale.id).await;
    assert_eq!(
        types(&events),
        [
            "flashsale.sale.created",
            "flashsale.order.created",
            "flashsale.sale.updated",
            "flashsale.sale.paused"
        ]
    );
    let updated = data(&events[2]);
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["stock"], 8);
    assert_eq!(updated["remaining"], 6);
    assert_eq!(store.tally(&sale.id).await.unwrap().remaining, 6);
    assert_eq!(store.sales().await.unwrap()[0].name, "Renamed");
    store.barrier().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let reopened = backend.open().await;
    assert_eq!(all_events(reopened.as_ref(), &sale.id).await, events);
    assert_eq!(reopened.tally(&sale.id).await.unwrap().remaining, 6);
    reopened.close().await.unwrap();
}

/// Events past the retention are dropped; a sequence is never given twice.
pub async fn prunes_by_age_without_reusing_a_sequence(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(10, 1);
    store.create_sale(&sale).await.unwrap();
    store
        .insert_order(order(&sale, "alice", 1, None))
        .await
        .unwrap();
    let pruned = store
        .prune_events(at(T0) + SignedDuration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    assert!(all_events(store.as_ref(), &sale.id).await.is_empty());
    let mut later = order(&sale, "bob", 1, None);
    later.created_at = at(T0) + SignedDuration::from_secs(60);
    store.insert_order(later).await.unwrap();
    let events = all_events(store.as_ref(), &sale.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].sequence, 3,
        "numbering goes on past the pruned ones"
    );
    store.barrier().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let reopened = backend.open().await;
    let mut next = order(&sale, "carol", 1, None);
    next.created_at = at(T0) + SignedDuration::from_secs(61);
    reopened.insert_order(next).await.unwrap();
    let after = all_events(reopened.as_ref(), &sale.id).await;
    assert_eq!(
        after.iter().map(|event| event.sequence).collect::<Vec<_>>(),
        [3, 4]
    );
    reopened.close().await.unwrap();
}
