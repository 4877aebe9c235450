//! The AMQP sink's side of the tests: a consumer of the test's own (a durable queue bound to
//! the test's exchange before anything is sent, read with `basic.get`), and the sink held to
//! the conformance suite through a proxy in front of the machine's RabbitMQ.

use std::time::Duration;

use flashsale_server::events::amqp::routing_key;
use flashsale_server::events::{AmqpSink, AmqpSinkSettings, EventSink, OutboundEvent};
use flashsale_server::BoxFuture;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use super::proxy::{Proxy, Reach};
use super::{address, with_address, SINK_TIMEOUT};
use crate::conformance::sink::{Received, SinkBackend};
use crate::services::{amqp_url, blocking_cleanup, unique_name};

/// A queue of the test's own, bound (`#`) to its exchange, which it declares as the sink does
/// (durable, `topic`). Everything read is kept, so that reads add up.
pub struct AmqpConsumer {
    pub url: String,
    pub exchange: String,
    pub queue: String,
    connection: Connection,
    channel: Channel,
    got: tokio::sync::Mutex<Vec<Received>>,
}

/// The bound on each of the consumer's own calls: a test fails, it never hangs.
const CALL_LIMIT: Duration = Duration::from_secs(10);

async fn bounded<T>(call: impl std::future::Future<Output = lapin::Result<T>>) -> lapin::Result<T> {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .unwrap_or_else(|_| panic!("a RabbitMQ call of the test took over {CALL_LIMIT:?}"))
}

async fn open(url: &str) -> (Connection, Channel) {
    let connection = bounded(Connection::connect(url, ConnectionProperties::default()))
        .await
        .expect("the test's consumer connects to RabbitMQ");
    let channel = bounded(connection.create_channel()).await.expect("channel");
    (connection, channel)
}

impl AmqpConsumer {
    pub async fn bind(url: &str) -> Self {
        let exchange = unique_name("exchange");
        let queue = unique_name("queue");
        let (connection, channel) = open(url).await;
        bounded(channel.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ))
        .await
        .expect("exchange");
        bounded(channel.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ))
        .await
        .expect("queue");
        bounded(channel.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect("binding");
        Self {
            url: url.to_owned(),
            exchange,
            queue,
            connection,
            channel,
            got: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Names of its own, nothing declared yet (deleted all the same when it drops).
    pub async fn unbound(url: &str) -> Self {
        let (connection, channel) = open(url).await;
        Self {
            url: url.to_owned(),
            exchange: unique_name("exchange"),
            queue: unique_name("queue"),
            connection,
            channel,
            got: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    pub async fn declare_fanout(&self, exchange: &str) {
        bounded(self.channel.exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ))
        .await
        .expect("fanout exchange");
    }

    /// Everything the queue has held since the binding, in queue order.
    pub async fn received(&self) -> Vec<Received> {
        let mut got = self.got.lock().await;
        while let Some(message) = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let delivery = message.delivery;
            let properties = &delivery.properties;
            assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
            assert_eq!(
                properties.content_type().as_ref().map(|t| t.as_str()),
                Some("application/cloudevents+json")
            );
            got.push(Received {
                id: properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default(),
                address: delivery.routing_key.as_str().to_owned(),
                body: delivery.data,
            });
        }
        got.clone()
    }

    /// After a restart of the broker this consumer's connection is gone: a new one.
    pub async fn reconnect(&mut self) {
        let (connection, channel) = open(&self.url).await;
        self.connection = connection;
        self.channel = channel;
    }

    /// Whether the exchange exists (a passive declare on a channel of its own).
    pub async fn exchange_exists(&self, exchange: &str) -> bool {
        let channel = bounded(self.connection.create_channel())
            .await
            .expect("channel");
        bounded(channel.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ))
        .await
        .is_ok()
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        let (url, exchange, queue) = (self.url.clone(), self.exchange.clone(), self.queue.clone());
        blocking_cleanup(async move {
            let cleanup = async {
                let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
                connection.close(200, "done".into()).await
            };
            let _ = tokio::time::timeout(CALL_LIMIT, cleanup).await;
        });
    }
}

/// The sink against the machine's RabbitMQ, reached through a proxy the case controls.
pub struct SharedAmqp {
    sink: AmqpSink,
    proxy: Proxy,
    consumer: AmqpConsumer,
}

impl SharedAmqp {
    pub async fn new() -> Option<Self> {
        let url = amqp_url()?;
        let consumer = AmqpConsumer::bind(&url).await;
        let proxy = Proxy::start(address(&url)).await;
        let sink = AmqpSink::new(
            "amqp-conformance",
            AmqpSinkSettings {
                url: with_address(&url, proxy.addr),
                exchange: consumer.exchange.clone(),
            },
        )
        .expect("valid settings")
        .with_timeout(SINK_TIMEOUT);
        Some(Self {
            sink,
            proxy,
            consumer,
        })
    }
}

impl SinkBackend for SharedAmqp {
    fn sink(&self) -> &dyn EventSink {
        &self.sink
    }
    fn timeout(&self) -> Duration {
        SINK_TIMEOUT
    }
    fn received(&self) -> BoxFuture<'_, Vec<Received>> {
        Box::pin(self.consumer.received())
    }
    fn address_of(&self, event: &OutboundEvent) -> String {
        routing_key(event)
    }
    fn drops_redeliveries(&self) -> bool {
        false
    }
    fn refuse(&self) {
        self.proxy.set(Reach::Refusing);
    }
    fn hang(&self) {
        self.proxy.set(Reach::Hanging);
    }
    fn restore(&self) {
        self.proxy.set(Reach::Up);
    }
}
