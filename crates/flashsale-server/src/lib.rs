//! flashsale: a flash-sale server that never oversells, never sells twice to a buyer beyond the
//! sale's limit, never loses an acknowledged order, and sheds load instead of falling over.
//!
//! # Layout
//! - `domain`: sales, orders, their life cycle and the purchase rules; no IO, no async, no clock.
//! - `error_chain`: an error with its causes, for messages at the edges.
//! - `ids`: makes new sale and order ids.
//! - `gate`: the stock gate trait (atomic purchase decisions): in memory, and Redis.
//! - `store`: the order store trait (system of record): SQLite, and PostgreSQL.
//! - `line`: the waiting line in front of a sale (trait): in memory with a journal, and Redis.
//! - `cluster`: a cluster node's Redis gate, PostgreSQL store, order persister, clock, reconcile.
//! - `service`: the use cases; with its intake (the one place embedded and cluster differ), the
//!   only code that touches both gate and store.
//! - `events`: order and sale events going out: CloudEvents, sink settings, the sinks (webhook,
//!   RabbitMQ, NATS JetStream), the delivery loop and its ledger, retention (the outbox itself
//!   is in each store).
//! - `payments`: the payment provider seam (simulated, Stripe's PaymentIntents) and Stripe's
//!   webhook signatures; the payment use cases are in `service`.
//! - `expiry`: the background sweeps: unpaid orders expired and their stock returned, and
//!   payments settled with the provider.
//! - `http`: the accept loop and connection deadlines, router, extractors, handlers, limits, and
//!   the one error-to-status mapping.
//! - `auth`: admin token and HS256 buyer tokens.
//! - `access_codes`: presale codes, made and checked with one HMAC and no IO.
//! - `metrics`: lock-free counters rendered for Prometheus.
//! - `config`, `cli`, `secrets`: settings from defaults, file, environment and flags.
//! - `descriptors`: the open-file limit (raised at start) and the connection cap it allows.
//! - `tls`: rustls (ring) for PostgreSQL (`sslmode`) and Redis (`rediss://`) connections.
//! - `clock`: where "now" comes from (the system's, Redis's in a cluster, a manual one in tests).
//! - `app`: the composition root: builds everything from settings and runs until shutdown.

pub mod access_codes;
pub mod app;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod descriptors;
pub mod domain;
pub mod error_chain;
pub mod events;
pub mod expiry;
pub mod gate;
pub mod hashing;
pub mod http;
pub mod ids;
pub mod line;
pub mod metrics;
pub mod payments;
pub mod record_file;
pub mod redis;
pub mod secrets;
pub mod service;
pub mod store;
pub mod tls;

/// The future a backend trait returns: boxed, so the traits can be used as `dyn` objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
