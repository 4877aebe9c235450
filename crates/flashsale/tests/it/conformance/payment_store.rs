//! What every order store must do with payments: an order's intent, what the provider said and
//! refunds recorded through the transition path (one atomic call per change, its event in the
//! same commit), the stock of a refunded order back once, open intents left to the payments
//! sweep (never expired by the batch), and all of it kept across a reopen.

use flashsale_server::domain::{
    Action, Actor, OrderStatus, Payment, PaymentState, ProviderFact, Refusal,
};
use jiff::SignedDuration;
use serde_json::Value;

use super::store::StoreBackend;
use super::{at, order, sale, user, T0};

fn intent(id: &str) -> Box<Payment> {
    Box::new(Payment {
        provider: "stripe".into(),
        intent_id: id.into(),
        client_secret: Some(format!("{id}_secret_s3cr3t")),
        state: PaymentState::Open,
        refund_id: None,
    })
}

fn fact(fact: ProviderFact) -> Action {
    Action::Provider(fact)
}

/// A paid order's life through a provider: its intent, the money taken, a refund decided and
/// confirmed; each step once (repeats change nothing), the units back once, the story in the
/// outbox (`paid`, `refunded`, the sale selling again), and the secret never in an event.
pub async fn records_a_payment_and_its_refund_once(backend: &dyn StoreBackend) {
    let store = backend.open().await;
    let sale = sale(1, 1);
    store.create_sale(&sale).await.unwrap();
    let alice = order(&sale, "alice", 1, None);
    store.insert_order(alice.clone()).await.unwrap();
    let now = at(T0) + SignedDuration::from_secs(1);
    let buyer = Actor::Buyer(user("alice"));

    let recorded = store
        .transition(
            &alice.id,
            fact(ProviderFact::IntentCreated(intent("pi_a"))),
            &buyer,
            now,
        )
        .await
        .unwrap();
    assert!(recorded.changed && recorded.refusal.is_none());
    assert_eq!(recorded.order.status, OrderStatus::PendingPayment);
    assert_eq!(recorded.order.payment_state(), Some(PaymentState::Open));
    // A second intent (a concurrent pay) leaves the first.
    let second = store
        .transition(
            &alice.id,
            fact(ProviderFact::IntentCreated(intent("pi_b"))),
            &buyer,
            now,
        )
        .await
        .unwrap();
    assert!(!second.changed);
    assert_eq!(second.order.payment.as_ref().unwrap().intent_id, "pi_a");
    let unsettled = store.payments_unsettled(10).await.unwrap();
    assert_eq!(unsettled.len(), 1, "an open intent is the sweep's");

    let succeeded = || {
        fact(ProviderFact::Succeeded {
            intent_id: "pi_a".into(),
        })
    };
    let paid = store
        .transition(&alice.id, succeeded(), &Actor::Admin, now)
        .await
        .unwrap();
    assert_eq!(paid.order.status, OrderStatus::Paid);
    assert_eq!(paid.order.paid_at, Some(now));
    assert!(
        !store
            .transition(&alice.id, succeeded(), &Actor::Admin, now)
            .await
            .unwrap()
            .changed
    );
    assert!(store.payments_unsettled(10).await.unwrap().is_empty());

    let later = now + SignedDuration::from_secs(5);
    let refunded = store
        .transition(&alice.id, Action::Refund, &Actor::Admin, later)
        .await
        .unwrap();
    assert!(refunded.released, "a refund gives the units back");
    assert_eq!(refunded.order.status, OrderStatus::Refunded);
    assert_eq!(refunded.order.refunded_at, Some(later));
    assert_eq!(
        refunded.order.payment_state(),
        Some(PaymentState::RefundPending)
    );
    let again = store
        .transition(&alice.id, Action::Refund, &Actor::Admin, later)
        .await
        .unwrap();
    assert!(!again.changed && !again.released && again.refusal.is_none());
    assert_eq!(
        store.payments_unsettled(10).await.unwrap().len(),
        1,
        "the refund is owed"
    );
    let confirmed = store
        .transition(
            &alice.id,
            fact(ProviderFact::Refunded {
                refund_id: "re_a".into(),
            }),
            &Actor::Admin,
            later,
        )
        .await
        .unwrap();
    assert_eq!(
        confirmed.order.payment_state(),
        Some(PaymentState::Refunded)
    );
    assert!(store.payments_unsettled(10).await.unwrap().is_empty());
    let tally = store.tally(&sale.id).await.unwrap();
    assert_eq!((tally.remaining, tally.paid, tally.refunded), (1, 0, 1));
    // Final: nothing moves a refunded order.
    for action in [Action::Cancel, Action::Pay, Action::Refund] {
        let transition = store
            .transition(&alice.id, action, &Actor::Admin, later)
            .await
            .unwrap();
        assert!(!transition.changed);
    }

    let events = store.events(&sale.id, 0, 100).await.unwrap();
    let types: Vec<&str> = events.iter().map(|event| event.kind.type_name()).collect();
    assert_eq!(
        types,
        [
            "flashsale.sale.created",
            "flashsale.order.created",
            "flashsale.sale.sold_out",
            "flashsale.order.paid",
            "flashsale.order.refunded",
            "flashsale.sale.updated",
        ],
        "an intent and a confirmation tell nothing new; a refund is told once"
    );
    let data: Vec<Value> = events
        .iter()
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    assert_eq!(data[3]["status"], "paid");
    assert_eq!(data[3]["payment"]["status"], "succeeded");
    assert_eq!(data[4]["status"], "refunded");
    assert_eq!(data[4]["payment"]["status"], "refund_pending");
    assert!(data[4]["refunded_at"].is_string());
    assert!(
        events.iter().all(|event| !event.data.contains("s3cr3t")),
        "the client secret stays out of events"
    );

    store.barrier().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let reopened = backend.open().await;
    let read = reopened.order(&alice.id).await.unwrap().unwrap();
    assert_eq!(read, confirmed.order, "every payment field kept");
    assert_eq!(reopened.tally(&sale.id).await.unwrap().refunded, 1);
}

/// An overdue order with an open intent is not the expiry batch's: it stays pending (its units
/// held) until the provider settles it; cancelled there it expires, and money that comes for an
/// order already closed is owed back (the order stays closed, `refunded` told once).
pub async fn leaves_open_intents_to_the_provider_and_owes_late_money_back(
    backend: &dyn StoreBackend,
) {
    let store = backend.open().await;
    let sale = sale(3, 1);
    store.create_sale(&sale).await.unwrap();
    let (open, plain, late) = (
        order(&sale, "alice", 1, None),
        order(&sale, "bob", 1, None),
        order(&sale, "carol", 1, None),
    );
    for placed in [&open, &plain, &late] {
        store.insert_order((*placed).clone()).await.unwrap();
    }
    let now = at(T0) + SignedDuration::from_secs(1);
    for (placed, id, buyer) in [(&open, "pi_open", "alice"), (&late, "pi_late", "carol")] {
        store
            .transition(
                &placed.id,
                fact(ProviderFact::IntentCreated(intent(id))),
                &Actor::Buyer(user(buyer)),
                now,
            )
            .await
            .unwrap();
    }
    let overdue = at(T0) + SignedDuration::from_secs(120);
    let expired = store.expire_due(overdue, 10).await.unwrap();
    assert_eq!(
        expired
            .iter()
            .map(|order| order.id.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&plain.id),
        "only the order without an open intent"
    );
    let cancel = store
        .transition(&open.id, Action::Cancel, &Actor::Admin, now)
        .await
        .unwrap();
    assert_eq!(cancel.refusal, Some(Refusal::PaymentOpen));
    assert!(!cancel.changed);
    assert_eq!(store.tally(&sale.id).await.unwrap().pending, 2);

    // Cancelled at the provider: expired (overdue), its unit back.
    let canceled = store
        .transition(
            &open.id,
            fact(ProviderFact::Canceled {
                intent_id: "pi_open".into(),
            }),
            &Actor::Admin,
            overdue,
        )
        .await
        .unwrap();
    assert!(canceled.released);
    assert_eq!(canceled.order.status, OrderStatus::Expired);
    assert_eq!(canceled.order.payment_state(), Some(PaymentState::Canceled));

    // The provider could not be asked: expired after the grace, the intent still open.
    let grace = SignedDuration::from_secs(600);
    let unconfirmed = store
        .transition(
            &late.id,
            Action::ExpireUnconfirmed { grace },
            &Actor::Admin,
            overdue,
        )
        .await
        .unwrap();
    assert!(!unconfirmed.changed, "within the grace");
    let after_grace = overdue + grace;
    let unconfirmed = store
        .transition(
            &late.id,
            Action::ExpireUnconfirmed { grace },
            &Actor::Admin,
            after_grace,
        )
        .await
        .unwrap();
    assert!(unconfirmed.released);
    assert_eq!(unconfirmed.order.payment_state(), Some(PaymentState::Open));
    // Its money came after all: owed back once, the order stays expired.
    let succeeded = || {
        fact(ProviderFact::Succeeded {
            intent_id: "pi_late".into(),
        })
    };
    let owed = store
        .transition(&late.id, succeeded(), &Actor::Admin, after_grace)
        .await
        .unwrap();
    assert!(owed.changed && !owed.released);
    assert_eq!(owed.order.status, OrderStatus::Expired);
    assert_eq!(
        owed.order.payment_state(),
        Some(PaymentState::RefundPending)
    );
    assert!(
        !store
            .transition(&late.id, succeeded(), &Actor::Admin, after_grace)
            .await
            .unwrap()
            .changed
    );
    let unsettled = store.payments_unsettled(10).await.unwrap();
    assert_eq!(
        unsettled
            .iter()
            .map(|order| order.id.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&late.id)
    );
    let tally = store.tally(&sale.id).await.unwrap();
    assert_eq!((tally.remaining, tally.pending, tally.expired), (3, 0, 3));
    let events = store.events(&sale.id, 0, 100).await.unwrap();
    let late_events: Vec<&str> = events
        .iter()
        .filter(|event| event.subject == late.id.as_str())
        .map(|event| event.kind.type_name())
        .collect();
    assert_eq!(
        late_events,
        [
            "flashsale.order.created",
            "flashsale.order.expired",
            "flashsale.order.refunded"
        ]
    );
}
