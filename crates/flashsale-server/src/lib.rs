//! flashsale: a flash-sale server that never oversells, never sells twice to a buyer beyond the
//! sale's limit, never loses an acknowledged order, and sheds load instead of falling over.
//! ARCHITECTURE.md draws the whole; each module's own documentation says more.
//!
//! # Layout
//! - `domain`: sales, orders, their life cycle and the purchase rules; no IO, no async, no clock.
//! - `service`: the use cases; the code that calls both gate and store, and in which order (with
//!   its intake, the one seam where embedded and cluster differ).
//! - `gate`: the stock gate trait (atomic purchase decisions) and the embedded gate in memory.
//! - `store`: the order store trait (system of record) and its stores: the embedded journal (the
//!   default) and SQLite, and PostgreSQL for a cluster.
//! - `line`: the waiting line trait in front of a sale, the embedded line and its journal, passes,
//!   the admission logs' checkpoints and their signing key.
//! - `redis`: everything kept in Redis: connection, key layout, clock, and the Redis gate, line
//!   and order queue.
//! - `cluster`: what a cluster node runs: its wiring, the cluster store (PostgreSQL plus the order
//!   queue), the persister, the archiver, reconcile.
//! - `events`: order and sale events going out: CloudEvents, sink settings, the sinks (webhook,
//!   RabbitMQ, NATS JetStream), the delivery loop and its ledger, retention (the outbox itself
//!   is in each store).
//! - `payments`: the payment provider seam (simulated, Stripe's PaymentIntents) and Stripe's
//!   webhook signatures; the payment use cases are in `service`.
//! - `expiry`: the background sweeps: unpaid orders expired and their stock returned, and
//!   payments settled with the provider.
//! - `http`: the accept loop and connection deadlines, router, extractors, handlers, limits, and
//!   the one error-to-status mapping.
//! - `auth`: admin token and HS256 buyer tokens; `secrets`: the ones generated on first start.
//! - `access_codes`: presale codes, made and checked with one HMAC and no IO.
//! - `ids`: makes new sale and order ids.
//! - `clock`: where "now" comes from (the system's, Redis's in a cluster, a manual one in tests).
//! - `hashing`: the hash maps keyed by ids on the purchase path.
//! - `record_file`: append-only files of checksummed records (the journal's and the line's).
//! - `metrics`: lock-free counters rendered for Prometheus.
//! - `config`: settings from defaults, file, environment and flags, checked at start.
//! - `descriptors`: the open-file limit (raised at start) and the connection cap it allows.
//! - `tls`: rustls (ring) for PostgreSQL (`sslmode`) and Redis (`rediss://`) connections.
//! - `error_chain`: an error with its causes, for messages at the edges.
//! - `verify`: `flashsale verify`, an outsider's check of a sale's admission log over HTTP.
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
pub mod verify;

/// The future a backend trait returns: boxed, so the traits can be used as `dyn` objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
