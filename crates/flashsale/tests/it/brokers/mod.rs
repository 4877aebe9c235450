//! The message-broker sinks (RabbitMQ, NATS JetStream): their backends for the sink conformance
//! suite (`amqp.rs`, `nats.rs`, instantiated in `conformance/mod.rs`), what only one of them
//! promises (below), and broker restarts on private brokers (`restarts.rs`). The shared brokers
//! come from `FLASHSALE_TEST_AMQP_URL` / `FLASHSALE_TEST_NATS_URL` (`services.rs`); every test
//! has its own exchange, queue, subject prefix and stream, deleted when it ends.

pub mod amqp;
pub mod nats;
pub mod private;
pub mod proxy;
mod restarts;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use flashsale_server::events::{
    AmqpSink, AmqpSinkSettings, DeliveryError, EventSink, NatsSink, NatsSinkSettings,
};

use crate::conformance::sink::event;
use crate::services::{amqp_url, nats_url, unique_name};

/// Short, so that the outage cases are quick; a broker on this machine answers in milliseconds.
pub const SINK_TIMEOUT: Duration = Duration::from_secs(2);

/// The host and port a broker URL names.
pub fn address(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).expect("broker URL");
    let host = parsed.host_str().expect("host");
    let port = parsed.port().unwrap_or(match parsed.scheme() {
        "amqp" => 5672,
        _ => 4222,
    });
    (host, port)
        .to_socket_addrs()
        .expect("resolvable")
        .next()
        .expect("an address")
}

/// `url` pointing at `addr` instead, credentials and path kept.
pub fn with_address(url: &str, addr: SocketAddr) -> String {
    let mut parsed = url::Url::parse(url).expect("broker URL");
    parsed.set_host(Some(&addr.ip().to_string())).expect("host");
    parsed.set_port(Some(addr.port())).expect("port");
    parsed.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amqp_sink_declares_its_exchange_when_missing() {
    let Some(url) = amqp_url() else {
        return;
    };
    let consumer = amqp::AmqpConsumer::unbound(&url).await;
    assert!(!consumer.exchange_exists(&consumer.exchange).await);
    let sink = AmqpSink::new(
        "amqp-declares",
        AmqpSinkSettings {
            url: url.clone(),
            exchange: consumer.exchange.clone(),
        },
    )
    .unwrap()
    .with_timeout(SINK_TIMEOUT);
    // Nothing is bound yet: the broker confirms an unroutable message (mandatory is off).
    sink.deliver(&event("sale-declared", 1, "flashsale.sale.created"))
        .await
        .expect("delivered");
    assert!(consumer.exchange_exists(&consumer.exchange).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_of_another_kind_is_a_retry_that_says_so() {
    let Some(url) = amqp_url() else {
        return;
    };
    let consumer = amqp::AmqpConsumer::unbound(&url).await;
    consumer.declare_fanout(&consumer.exchange).await;
    let sink = AmqpSink::new(
        "amqp-mismatch",
        AmqpSinkSettings {
            url,
            exchange: consumer.exchange.clone(),
        },
    )
    .unwrap()
    .with_timeout(SINK_TIMEOUT);
    let outcome = sink
        .deliver(&event("sale-mismatch", 1, "flashsale.sale.created"))
        .await;
    let Err(DeliveryError::Retry(reason)) = outcome else {
        panic!("an exchange of another type cannot take the events: {outcome:?}");
    };
    assert!(reason.contains("exchange"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_sink_makes_a_file_stream_with_a_duplicate_window() {
    let Some(url) = nats_url() else {
        return;
    };
    let reader = nats::NatsReader::new(&url).await;
    let sink = NatsSink::new("nats-stream", reader.settings.clone())
        .unwrap()
        .with_timeout(SINK_TIMEOUT);
    let sent = event("sale-stream", 1, "flashsale.sale.created");
    sink.deliver(&sent).await.expect("delivered");
    let mut stream = reader
        .jetstream()
        .get_stream(reader.settings.stream_name())
        .await
        .expect("the sink made its stream");
    let config = stream.info().await.expect("info").config.clone();
    assert_eq!(
        config.subjects,
        [format!("{}.>", reader.settings.subject_prefix)]
    );
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(
        config.duplicate_window,
        flashsale_server::events::nats::DUPLICATE_WINDOW
    );
    assert_eq!(reader.received().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_sink_publishes_to_a_stream_the_operator_made() {
    let Some(url) = nats_url() else {
        return;
    };
    let reader = nats::NatsReader::new(&url).await;
    let operators = unique_name("operators");
    reader
        .create_stream_of_its_own(&operators, &format!("{}.>", reader.settings.subject_prefix))
        .await;
    let sink = NatsSink::new(
        "nats-operator",
        NatsSinkSettings {
            url,
            subject_prefix: reader.settings.subject_prefix.clone(),
        },
    )
    .unwrap()
    .with_timeout(SINK_TIMEOUT);
    let sent = event("sale-operator", 1, "flashsale.order.created");
    sink.deliver(&sent).await.expect("delivered");
    let received = reader.received().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].id, sent.id);
    assert!(
        reader
            .jetstream()
            .get_stream(reader.settings.stream_name())
            .await
            .is_err(),
        "no second stream over the same subjects"
    );
}

/// lapin runs each connection on a thread of its own that ends only when the socket closes; a
/// hung broker never closes it. Attempts on a hung broker must not pile those threads up (the
/// sink cuts the socket of an attempt that ran out of time). The threads are counted in this
/// process, which is the test's own under nextest (elsewhere other tests' would be counted too,
/// so only the Retry is checked there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_on_a_hung_broker_leave_no_thread_behind() {
    use crate::conformance::sink::SinkBackend;
    let Some(backend) = amqp::SharedAmqp::new().await else {
        return;
    };
    let connection_threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .filter(|task| {
                        std::fs::read_to_string(task.path().join("comm"))
                            .is_ok_and(|name| name.starts_with("lapin-io-loop"))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let own_process = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    backend
        .sink()
        .deliver(&event("sale-hung", 1, "flashsale.sale.created"))
        .await
        .expect("delivered");
    let connected = connection_threads();
    backend.hang();
    for _ in 0..5 {
        let outcome = backend
            .sink()
            .deliver(&event("sale-hung", 2, "flashsale.order.created"))
            .await;
        assert!(
            matches!(outcome, Err(DeliveryError::Retry(_))),
            "{outcome:?}"
        );
    }
    let settled = crate::harness::eventually_holds(Duration::from_secs(10), || {
        connection_threads() <= connected
    })
    .await;
    if own_process {
        assert!(
            settled,
            "{} connection threads after five hung attempts, {connected} before",
            connection_threads()
        );
    }
}
