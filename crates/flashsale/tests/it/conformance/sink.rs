//! What every event sink must do, whatever it delivers to: an event arrives whole with its id;
//! a redelivery can be told apart by that id; `Ok` means the receiver has it; a receiver that is
//! down or hung is a `Retry` within the sink's timeout, and the same sink delivers again once
//! the receiver is back; and what is delivered one call after another arrives in that order.
//! Each implementation gives a `SinkBackend`: the sink, a way to read what its receiver holds,
//! and a way to take the receiver away (see `brokers/` for RabbitMQ and NATS).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use flashsale_server::events::{DeliveryError, EventSink, OutboundEvent};
use flashsale_server::BoxFuture;
use serde_json::json;

use crate::harness::eventually;

/// What a receiver holds of one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The id the transport carries: AMQP `message-id`, `Nats-Msg-Id`, `webhook-id`.
    pub id: String,
    /// Where it was sent: the routing key, the subject, the path.
    pub address: String,
    pub body: Vec<u8>,
}

/// A sink under test and its receiver, both private to one case.
pub trait SinkBackend: Send + Sync {
    fn sink(&self) -> &dyn EventSink;
    /// The bound the sink was built with.
    fn timeout(&self) -> Duration;
    /// Everything the receiver holds so far, in the receiver's order (read directly, not
    /// through anything the case can cut).
    fn received(&self) -> BoxFuture<'_, Vec<Received>>;
    /// Where the receiver files `event`.
    fn address_of(&self, event: &OutboundEvent) -> String;
    /// Whether the receiver itself drops a redelivery of an id it holds (JetStream's duplicate
    /// window); elsewhere consumers dedupe by the id.
    fn drops_redeliveries(&self) -> bool;
    /// Down: connections cut, new ones closed at once.
    fn refuse(&self);
    /// Hung: connections kept open, nothing answered.
    fn hang(&self);
    /// Reachable again.
    fn restore(&self);
}

/// Instantiates every sink case for one implementation; `$make` is an async expression giving
/// a fresh `Option<impl SinkBackend>` (`None`: its service is not available here, skipped).
#[macro_export]
macro_rules! sink_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use $crate::conformance::sink as cases;
            $crate::sink_suite!(@cases $make;
                delivered_events_arrive_whole_with_their_id,
                ok_means_the_receiver_has_it,
                a_redelivery_is_dedupable_by_its_id,
                a_receiver_down_is_a_retry_in_time_and_the_same_sink_delivers_after,
                a_hung_receiver_is_a_retry_in_time_and_the_same_sink_delivers_after,
                a_receiver_down_from_the_start_is_waited_for,
                deliveries_one_after_another_arrive_in_call_order,
                concurrent_deliveries_all_arrive);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(backend) = $make.await {
                    cases::$case(&backend).await;
                }
            }
        )*
    };
}

/// An event as the outbox would hand it over: a whole CloudEvent with a unique id.
pub fn event(sale_id: &str, sequence: u64, event_type: &str) -> OutboundEvent {
    let id = format!(
        "{}-{sale_id}-{sequence}",
        crate::services::unique_name("event")
    );
    let time_secs = 1_796_126_400 + i64::try_from(sequence).unwrap_or(0);
    let json = serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": id,
        "source": "flashsale/conformance",
        "type": event_type,
        "subject": format!("order-{sequence}"),
        "time": "2026-12-01T12:00:00Z",
        "saleid": sale_id,
        "sequence": sequence,
        "datacontenttype": "application/json",
        "data": {"id": format!("order-{sequence}"), "status": "pending_payment", "quantity": 1},
    }))
    .expect("event JSON");
    OutboundEvent {
        id,
        event_type: event_type.to_owned(),
        sale_id: sale_id.to_owned(),
        sequence,
        time_secs,
        json,
    }
}

/// `count` events of one sale, sequences 1, 2, 3 …, types cycling through a few changes.
pub fn events_of(sale_id: &str, count: u64) -> Vec<OutboundEvent> {
    const TYPES: [&str; 4] = [
        "flashsale.order.created",
        "flashsale.order.paid",
        "flashsale.order.cancelled",
        "flashsale.sale.paused",
    ];
    (1..=count)
        .map(|sequence| event(sale_id, sequence, TYPES[(sequence as usize) % TYPES.len()]))
        .collect()
}

/// The receiver's deliveries with repeats of an id left out, first copy kept.
pub fn deduplicated(received: &[Received]) -> Vec<Received> {
    let mut seen = HashSet::new();
    received
        .iter()
        .filter(|one| seen.insert(one.id.clone()))
        .cloned()
        .collect()
}

async fn deliver_ok(backend: &dyn SinkBackend, event: &OutboundEvent) {
    if let Err(error) = backend.sink().deliver(event).await {
        panic!(
            "{} did not deliver {}: {error}",
            backend.sink().name(),
            event.id
        );
    }
}

/// Each copy the receiver holds of `event` is the event whole, filed where it belongs.
fn assert_whole(backend: &dyn SinkBackend, received: &[Received], event: &OutboundEvent) {
    let copies: Vec<_> = received.iter().filter(|one| one.id == event.id).collect();
    assert!(!copies.is_empty(), "{} is not at the receiver", event.id);
    for copy in copies {
        assert_eq!(copy.body, event.json, "{} arrived changed", event.id);
        assert_eq!(copy.address, backend.address_of(event));
    }
}

pub async fn delivered_events_arrive_whole_with_their_id(backend: &dyn SinkBackend) {
    let sent = [
        event("sale-a", 1, "flashsale.sale.created"),
        event("sale-a", 2, "flashsale.order.created"),
        event("sale-b", 1, "flashsale.order.paid"),
    ];
    for event in &sent {
        deliver_ok(backend, event).await;
    }
    let received = backend.received().await;
    assert_eq!(received.len(), sent.len(), "nothing more, nothing less");
    for event in &sent {
        assert_whole(backend, &received, event);
    }
}

pub async fn ok_means_the_receiver_has_it(backend: &dyn SinkBackend) {
    // Read right after each `Ok`, without waiting: the receiver must already hold the event.
    for event in events_of("sale-ok", 5) {
        deliver_ok(backend, &event).await;
        let received = backend.received().await;
        assert!(
            received.iter().any(|one| one.id == event.id),
            "{} confirmed but not at the receiver",
            event.id
        );
    }
}

pub async fn a_redelivery_is_dedupable_by_its_id(backend: &dyn SinkBackend) {
    let first = event("sale-again", 1, "flashsale.order.created");
    let second = event("sale-again", 2, "flashsale.order.paid");
    deliver_ok(backend, &first).await;
    deliver_ok(backend, &first).await; // as after a confirm lost on the way back
    deliver_ok(backend, &second).await;
    deliver_ok(backend, &first).await;
    let received = backend.received().await;
    assert_whole(backend, &received, &first);
    let ids: Vec<_> = deduplicated(&received)
        .into_iter()
        .map(|one| one.id)
        .collect();
    assert_eq!(ids, [first.id.clone(), second.id.clone()]);
    let copies = received.iter().filter(|one| one.id == first.id).count();
    if backend.drops_redeliveries() {
        assert_eq!(copies, 1, "the receiver keeps one copy per id");
    } else {
        assert_eq!(
            copies, 3,
            "each delivery arrives; the id tells the copies apart"
        );
    }
}

/// A delivery that must fail: a `Retry`, within the timeout and a margin for the machine.
async fn assert_retry_in_time(backend: &dyn SinkBackend, event: &OutboundEvent) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(backend.timeout() * 3, backend.sink().deliver(event))
        .await
        .expect("the sink bounds its own time");
    let elapsed = started.elapsed();
    assert!(
        matches!(outcome, Err(DeliveryError::Retry(_))),
        "an unreachable receiver is a Retry: {outcome:?}"
    );
    assert!(
        elapsed <= backend.timeout() + Duration::from_secs(1),
        "a Retry after {elapsed:?}, over the timeout {:?}",
        backend.timeout()
    );
}

/// Delivers `event` with the same sink, retrying as the delivery loop would, until it is `Ok`.
async fn delivered_eventually(backend: &dyn SinkBackend, event: &OutboundEvent) -> bool {
    eventually(Duration::from_secs(60), || async {
        backend.sink().deliver(event).await.is_ok()
    })
    .await
}

async fn outage_then_recovery(backend: &dyn SinkBackend, go_away: fn(&dyn SinkBackend)) {
    let [before, during, after] = [
        event("sale-outage", 1, "flashsale.order.created"),
        event("sale-outage", 2, "flashsale.order.paid"),
        event("sale-outage", 3, "flashsale.order.cancelled"),
    ];
    deliver_ok(backend, &before).await;
    go_away(backend);
    assert_retry_in_time(backend, &during).await;
    assert_retry_in_time(backend, &during).await; // and again: the sink is not wedged
    backend.restore();
    assert!(
        delivered_eventually(backend, &during).await,
        "the same sink delivers once the receiver is back"
    );
    deliver_ok(backend, &after).await;
    let received = backend.received().await;
    for event in [&before, &during, &after] {
        assert_whole(backend, &received, event);
    }
    let ids: Vec<_> = deduplicated(&received)
        .into_iter()
        .map(|one| one.id)
        .collect();
    assert_eq!(ids, [before.id, during.id, after.id]);
}

pub async fn a_receiver_down_is_a_retry_in_time_and_the_same_sink_delivers_after(
    backend: &dyn SinkBackend,
) {
    outage_then_recovery(backend, |backend| backend.refuse()).await;
}

pub async fn a_hung_receiver_is_a_retry_in_time_and_the_same_sink_delivers_after(
    backend: &dyn SinkBackend,
) {
    outage_then_recovery(backend, |backend| backend.hang()).await;
}

pub async fn a_receiver_down_from_the_start_is_waited_for(backend: &dyn SinkBackend) {
    // The sink has never reached its receiver (as when the server starts during an outage).
    backend.refuse();
    let first = event("sale-late", 1, "flashsale.sale.created");
    assert_retry_in_time(backend, &first).await;
    backend.restore();
    assert!(delivered_eventually(backend, &first).await);
    let received = backend.received().await;
    assert_whole(backend, &received, &first);
}

pub async fn deliveries_one_after_another_arrive_in_call_order(backend: &dyn SinkBackend) {
    // Three sales interleaved, as the delivery loop sends them; each call awaited.
    let sales = [
        events_of("sale-x", 12),
        events_of("sale-y", 12),
        events_of("sale-z", 12),
    ];
    let mut sent = Vec::new();
    for index in 0..12 {
        for events in &sales {
            deliver_ok(backend, &events[index]).await;
            sent.push(events[index].id.clone());
        }
    }
    let received: Vec<_> = backend
        .received()
        .await
        .into_iter()
        .map(|one| one.id)
        .collect();
    assert_eq!(received, sent);
}

pub async fn concurrent_deliveries_all_arrive(backend: &dyn SinkBackend) {
    let events = events_of("sale-many", 64);
    let outcomes =
        futures_util::future::join_all(events.iter().map(|event| backend.sink().deliver(event)))
            .await;
    for (event, outcome) in events.iter().zip(&outcomes) {
        assert!(outcome.is_ok(), "{}: {outcome:?}", event.id);
    }
    let received = backend.received().await;
    assert_eq!(deduplicated(&received).len(), events.len());
    for event in &events {
        assert_whole(backend, &received, event);
    }
}
