//! Settings: one typed struct, filled from defaults, then the configuration file
//! (`flashsale.toml` in the working directory if present, or `--config FILE`), then `FLASHSALE_*`
//! environment variables, then command-line flags; each later source wins.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_FILE: &str = "flashsale.toml";
/// Longest connection timeout accepted: a connection held longer than an hour by a silent client
/// is a leak, not a setting.
pub const CONNECTION_TIMEOUT_MS_MAX: u64 = 3_600_000;
pub const ENV_PREFIX: &str = "FLASHSALE_";

/// Every setting. The doc of each field is the one place its meaning and default are written;
/// `flashsale serve --help` repeats them.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub listen: String,
    /// Where the embedded store, the generated admin token and JWT secret live.
    pub data_dir: PathBuf,
    /// Bearer token of the admin; generated and stored in the data directory when unset.
    pub admin_token: Option<String>,
    /// HS256 secret of buyer tokens; generated and stored in the data directory when unset.
    pub jwt_secret: Option<String>,
    /// Redis of a cluster node (with `database_url`).
    pub redis_url: Option<String>,
    /// PostgreSQL of a cluster node (with `redis_url`).
    pub database_url: Option<String>,
    /// Cluster: prefix of every Redis key, so deployments can share one Redis.
    pub redis_key_prefix: String,
    /// Cluster: the PostgreSQL schema holding the tables (created if missing).
    pub database_schema: String,
    /// Cluster: PostgreSQL connections per node.
    pub database_connections_max: usize,
    /// Cluster: refuse to start unless Redis has `appendonly yes` and `appendfsync always`
    /// (without them an acknowledged order can be lost with Redis).
    pub redis_require_durable: bool,
    /// Cluster: most queued orders written to PostgreSQL in one transaction.
    pub queue_batch_max: usize,
    /// Cluster: how long a queued order may stay unacknowledged by its node's persister before
    /// another node takes it over (a node that died).
    pub queue_claim_idle_ms: u64,
    /// Cluster: longest time a local sold-out mark refuses without asking Redis (0: no local
    /// fast path); returned stock normally clears it at once by pub/sub.
    pub sold_out_recheck_ms: u64,
    /// Cluster: replicas that must confirm an order (Redis `WAIT`) before its `201` (0: off).
    /// Without it, failing over to an asynchronously replicated replica can lose acknowledged
    /// orders not yet in PostgreSQL; with it, a purchase the replicas did not confirm in time
    /// answers `503` (the order exists; a retry with the same key returns it).
    pub redis_replicas_ack: u32,
    /// Cluster: longest wait for those replicas, in ms.
    pub redis_replicas_ack_timeout_ms: u64,
    /// Cluster: PEM file of the CA a `rediss://` server's certificate is checked against
    /// (unset: the system's roots).
    pub redis_tls_ca_file: Option<PathBuf>,
    /// Requests handled at once; beyond it `503 overloaded` with `Retry-After`.
    pub max_in_flight: usize,
    /// Longest time a request may take before `503 overloaded`.
    pub request_timeout_ms: u64,
    /// Longest time a request's head may take to arrive, from its first byte (a new
    /// connection's first request: from the connect); then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Longest time a request's body may take to arrive, from when its head was in; then
    /// `408 request_timeout` and the connection is closed.
    pub body_read_timeout_ms: u64,
    /// Longest time a kept-alive connection may wait for its next request; then it is closed.
    pub idle_timeout_ms: u64,
    /// Most client connections open at once (0: the open-file limit less 256). At the cap the
    /// connections idle the longest are closed to make room; with none idle, a new connection
    /// is closed at once.
    pub connections_max: usize,
    /// Requests per second one buyer may make (0: no limit); beyond it `429 rate_limited`.
    pub buyer_requests_per_sec: u32,
    /// Failed admin authentications one client address may make per minute (0: no limit);
    /// beyond it every admin authentication from that address gets `429 rate_limited` until the
    /// minute ends. Buyers' tokens are never counted.
    pub admin_auth_failures_per_min: u32,
    /// The embedded order store: `journal` (orders in memory, an append-only journal on disk)
    /// or `sqlite` (one SQLite file, `sqlite3` can read it; several times slower per order).
    pub embedded_store: EmbeddedStore,
    /// Most writes committed in one transaction (group commit).
    pub commit_batch_max: usize,
    /// Most writes waiting for the writer; beyond it purchases get `503 overloaded`.
    pub write_queue_max: usize,
    /// Read-only connections to the embedded store.
    pub read_connections_max: usize,
    /// How often the payment-expiry sweep looks for overdue orders.
    pub expiry_sweep_interval_ms: u64,
    /// Most orders expired per sweep transaction.
    pub expiry_batch_max: usize,
    /// Runtime worker threads (0: one per core).
    pub worker_threads: usize,
    /// Log filter, in `RUST_LOG` syntax.
    pub log: String,
    /// Demo mode: sign-in by name for anyone (`POST /api/v1/demo/token`), and an example sale a
    /// minute after start-up when there is none. Never in production.
    pub demo: bool,
    /// Days events are kept (the pull feed, and sinks that are behind): 1 to 3650.
    pub events_retention_days: u32,
    /// Names this installation in its events' `source` (`flashsale/<id>`). Unset: embedded,
    /// generated and kept in the data directory; a cluster, made once in PostgreSQL.
    pub installation_id: Option<String>,
    /// The seed (64 hex digits) of the Ed25519 key that signs the waiting lines' admission logs.
    /// Unset: embedded, generated and kept in the data directory; a cluster, derived from
    /// `jwt_secret` (every node signs alike).
    pub queue_log_key: Option<String>,
    /// Cluster: how long a node's hold on a sink lasts unless renewed; another node takes the
    /// sink over this long after its holder died.
    pub events_sink_lease_ms: u64,
    /// Deliveries a second, over all of a node's sinks, while buyers crowd in (over 2,000
    /// purchases and joins a second): the rest wait in the outbox until the crowd is gone.
    /// 0: deliver nothing while busy.
    pub events_busy_deliveries_per_sec: u64,
    /// The sinks events are delivered to (`[[events.sinks]]` in the file only).
    pub events: crate::events::settings::EventsSettings,
    /// Payments: `simulated` (the buyer's word is the payment) or `stripe` (PaymentIntents).
    pub payment_provider: PaymentProviderKind,
    /// Stripe: the API's base URL (tests point it at localstripe).
    pub stripe_api_base: String,
    /// Stripe: the secret key (`sk_…`).
    pub stripe_secret_key: Option<String>,
    /// Stripe: the webhook endpoint's signing secret (`whsec_…`).
    pub stripe_webhook_secret: Option<String>,
    /// Stripe: the publishable key (`pk_…`) Stripe.js is started with on the storefront.
    pub stripe_publishable_key: Option<String>,
    /// Stripe: where the storefront loads Stripe.js from.
    pub stripe_js_url: String,
    /// The currency of prices: an ISO 4217 code, lowercase.
    pub currency: String,
    /// How long past its deadline an order whose intent the provider cannot be asked to cancel
    /// (it is down) stays pending before it is expired all the same; a payment that succeeds
    /// later is refunded. 0 to 86,400.
    pub payment_expiry_grace_secs: u64,
    /// How often the payments sweep asks the provider about an open intent it has heard
    /// nothing of (a lost webhook only delays "Paid" by this much). 1 to 3600.
    pub payment_poll_interval_secs: u64,
}

/// Which payment provider a server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PaymentProviderKind {
    /// The buyer's word is the payment (demo mode, trials).
    Simulated,
    /// Stripe's PaymentIntents API.
    Stripe,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            admin_token: None,
            jwt_secret: None,
            redis_url: None,
            database_url: None,
            redis_key_prefix: "flashsale".into(),
            database_schema: "flashsale".into(),
            database_connections_max: 16,
            redis_require_durable: true,
            queue_batch_max: 1024,
            queue_claim_idle_ms: 10_000,
            sold_out_recheck_ms: 1000,
            redis_replicas_ack: 0,
            redis_replicas_ack_timeout_ms: 1000,
            redis_tls_ca_file: None,
            max_in_flight: 8192,
            request_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            connections_max: 0,
            buyer_requests_per_sec: 50,
            admin_auth_failures_per_min: 10,
            embedded_store: EmbeddedStore::Journal,
            commit_batch_max: 1024,
            write_queue_max: 65_536,
            read_connections_max: 4,
            expiry_sweep_interval_ms: 250,
            expiry_batch_max: 1000,
            worker_threads: 0,
            log: "info".into(),
            demo: false,
            events_retention_days: 30,
            installation_id: None,
            queue_log_key: None,
            events_sink_lease_ms: 15_000,
            events_busy_deliveries_per_sec: crate::events::pace::BUSY_DELIVERIES_PER_SEC_DEFAULT,
            events: crate::events::settings::EventsSettings::default(),
            payment_provider: PaymentProviderKind::Simulated,
            stripe_api_base: "https://api.stripe.com".into(),
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_publishable_key: None,
            stripe_js_url: "https://js.stripe.com/v3/".into(),
            currency: "eur".into(),
            payment_expiry_grace_secs: 600,
            payment_poll_interval_secs: 10,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("admin_token", &redact(&self.admin_token))
            .field("jwt_secret", &redact(&self.jwt_secret))
            .field("redis_url", &redact(&self.redis_url))
            .field("database_url", &redact(&self.database_url))
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("database_schema", &self.database_schema)
            .field("database_connections_max", &self.database_connections_max)
            .field("redis_require_durable", &self.redis_require_durable)
            .field("queue_batch_max", &self.queue_batch_max)
            .field("queue_claim_idle_ms", &self.queue_claim_idle_ms)
            .field("sold_out_recheck_ms", &self.sold_out_recheck_ms)
            .field("redis_replicas_ack", &self.redis_replicas_ack)
            .field(
                "redis_replicas_ack_timeout_ms",
                &self.redis_replicas_ack_timeout_ms,
            )
            .field("redis_tls_ca_file", &self.redis_tls_ca_file)
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("body_read_timeout_ms", &self.body_read_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("connections_max", &self.connections_max)
            .field("buyer_requests_per_sec", &self.buyer_requests_per_sec)
            .field(
                "admin_auth_failures_per_min",
                &self.admin_auth_failures_per_min,
            )
            .field("embedded_store", &self.embedded_store)
            .field("commit_batch_max", &self.commit_batch_max)
            .field("write_queue_max", &self.write_queue_max)
            .field("read_connections_max", &self.read_connections_max)
            .field("expiry_sweep_interval_ms", &self.expiry_sweep_interval_ms)
            .field("expiry_batch_max", &self.expiry_batch_max)
            .field("worker_threads", &self.worker_threads)
            .field("log", &self.log)
            .field("demo", &self.demo)
            .field("events_retention_days", &self.events_retention_days)
            .field("installation_id", &self.installation_id)
            .field("queue_log_key", &redact(&self.queue_log_key))
            .field("events_sink_lease_ms", &self.events_sink_lease_ms)
            .field(
                "events_busy_deliveries_per_sec",
                &self.events_busy_deliveries_per_sec,
            )
            .field("events", &self.events)
            .field("payment_provider", &self.payment_provider)
            .field("stripe_api_base", &self.stripe_api_base)
            .field("stripe_secret_key", &redact(&self.stripe_secret_key))
            .field(
                "stripe_webhook_secret",
                &redact(&self.stripe_webhook_secret),
            )
            .field("stripe_publishable_key", &self.stripe_publishable_key)
            .field("stripe_js_url", &self.stripe_js_url)
            .field("currency", &self.currency)
            .field("payment_expiry_grace_secs", &self.payment_expiry_grace_secs)
            .field(
                "payment_poll_interval_secs",
                &self.payment_poll_interval_secs,
            )
            .finish()
    }
}

/// The names environment variables may set, as `FLASHSALE_<NAME>`.
const KEYS: [&str; 47] = [
    "listen",
    "data_dir",
    "admin_token",
    "jwt_secret",
    "redis_url",
    "database_url",
    "redis_key_prefix",
    "database_schema",
    "database_connections_max",
    "redis_require_durable",
    "queue_batch_max",
    "queue_claim_idle_ms",
    "sold_out_recheck_ms",
    "redis_replicas_ack",
    "redis_replicas_ack_timeout_ms",
    "redis_tls_ca_file",
    "max_in_flight",
    "request_timeout_ms",
    "header_read_timeout_ms",
    "body_read_timeout_ms",
    "idle_timeout_ms",
    "connections_max",
    "buyer_requests_per_sec",
    "admin_auth_failures_per_min",
    "embedded_store",
    "commit_batch_max",
    "write_queue_max",
    "read_connections_max",
    "expiry_sweep_interval_ms",
    "expiry_batch_max",
    "worker_threads",
    "log",
    "demo",
    "events_retention_days",
    "installation_id",
    "queue_log_key",
    "events_sink_lease_ms",
    "events_busy_deliveries_per_sec",
    "payment_provider",
    "stripe_api_base",
    "stripe_secret_key",
    "stripe_webhook_secret",
    "stripe_publishable_key",
    "stripe_js_url",
    "currency",
    "payment_expiry_grace_secs",
    "payment_poll_interval_secs",
];

/// Where an embedded server keeps its sales and orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddedStore {
    /// Orders in memory, an append-only journal (`orders.journal`) as the durable record.
    Journal,
    /// One SQLite file (`flashsale.db`).
    Sqlite,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Rule(String),
}

impl Settings {
    /// Loads the layers in order. `flags` holds only what was given on the command line.
    pub fn load(config_file: Option<&Path>, flags: impl Serialize) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match config_file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
            }
            None => {}
        }
        let settings: Settings = figment
            .merge(Env::prefixed(ENV_PREFIX).only(&KEYS))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|error| ConfigError::Invalid(Box::new(error)))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let rule = |message: &str| Err(ConfigError::Rule(message.into()));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return rule("listen must be an address such as 127.0.0.1:8080");
        }
        if self.max_in_flight == 0 || self.commit_batch_max == 0 || self.write_queue_max == 0 {
            return rule("max_in_flight, commit_batch_max and write_queue_max must be at least 1");
        }
        if self.request_timeout_ms == 0 || self.expiry_sweep_interval_ms == 0 {
            return rule("request_timeout_ms and expiry_sweep_interval_ms must be at least 1");
        }
        for (name, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if !(1..=CONNECTION_TIMEOUT_MS_MAX).contains(&value) {
                return Err(ConfigError::Rule(format!(
                    "{name} must be from 1 to {CONNECTION_TIMEOUT_MS_MAX} (an hour), not {value}"
                )));
            }
        }
        if self.queue_batch_max == 0 || self.database_connections_max == 0 {
            return rule("queue_batch_max and database_connections_max must be at least 1");
        }
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.contains(['{', '}']) {
            return rule("redis_key_prefix must be non-empty and free of { and }");
        }
        if self.redis_url.is_some() != self.database_url.is_some() {
            return rule(
                "a cluster node needs both FLASHSALE_REDIS_URL and FLASHSALE_DATABASE_URL",
            );
        }
        if !(1..=3650).contains(&self.events_retention_days) {
            return rule("events_retention_days must be 1 to 3650");
        }
        if let Some(id) = &self.installation_id {
            let valid = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !valid {
                return rule("installation_id must be 1 to 64 letters, digits, '-', '_' or '.'");
            }
        }
        if let Some(key) = &self.queue_log_key {
            if let Err(error) = crate::line::LogSigner::from_hex(key) {
                return rule(&error.to_string());
            }
        }
        self.check_payments()?;
        let sinks = crate::events::settings::check(&self.events)
            .map_err(|error| ConfigError::Rule(error.to_string()))?;
        // A node starts a delivery only while its hold on the sink outlasts the delivery's
        // timeout, so a node that lost its hold has finished its last delivery before another
        // can take the sink over: the hold must leave room for that.
        let longest = sinks
            .iter()
            .map(|sink| sink.timeout)
            .max()
            .unwrap_or_default();
        let lease = std::time::Duration::from_millis(self.events_sink_lease_ms);
        if self.events_sink_lease_ms < 1000 || lease < 2 * longest {
            return rule(
                "events_sink_lease_ms must be at least 1000 and twice the longest sink timeout_ms",
            );
        }
        Ok(())
    }

    fn check_payments(&self) -> Result<(), ConfigError> {
        let rule = |message: &str| Err(ConfigError::Rule(message.into()));
        let valid_currency =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_lowercase());
        if !valid_currency {
            return rule("currency must be an ISO 4217 code in lowercase, such as eur");
        }
        if self.payment_expiry_grace_secs > 86_400 {
            return rule("payment_expiry_grace_secs must be 0 to 86400");
        }
        if !(1..=3600).contains(&self.payment_poll_interval_secs) {
            return rule("payment_poll_interval_secs must be 1 to 3600");
        }
        if self.payment_provider != PaymentProviderKind::Stripe {
            return Ok(());
        }
        for (name, url) in [
            ("stripe_api_base", &self.stripe_api_base),
            ("stripe_js_url", &self.stripe_js_url),
        ] {
            let parsed = url::Url::parse(url).ok();
            if !parsed.is_some_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            {
                return Err(ConfigError::Rule(format!(
                    "{name} must be an http:// or https:// URL"
                )));
            }
        }
        let keyed = |key: &Option<String>, prefix: &str| {
            key.as_deref()
                .is_some_and(|key| key.len() > prefix.len() && key.starts_with(prefix))
        };
        if !keyed(&self.stripe_secret_key, "sk_") {
            return rule("payment_provider = \"stripe\" needs stripe_secret_key (sk_…)");
        }
        if !keyed(&self.stripe_publishable_key, "pk_") {
            return rule("payment_provider = \"stripe\" needs stripe_publishable_key (pk_…)");
        }
        if self
            .stripe_webhook_secret
            .as_deref()
            .is_none_or(str::is_empty)
        {
            return rule("payment_provider = \"stripe\" needs stripe_webhook_secret (whsec_…)");
        }
        Ok(())
    }

    /// How long events are kept.
    pub fn events_retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.events_retention_days) * 86_400)
    }

    pub fn is_cluster(&self) -> bool {
        self.redis_url.is_some() && self.database_url.is_some()
    }
}

#[cfg(test)]
// figment's `Jail` fixes the closures' error type; its size does not matter in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        listen: Option<String>,
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "listen = \"127.0.0.1:1\"\nmax_in_flight = 7\nlog = \"debug\"\n",
            )?;
            jail.set_env("FLASHSALE_MAX_IN_FLIGHT", "9");
            jail.set_env("FLASHSALE_LISTEN", "127.0.0.1:2");
            let settings = Settings::load(
                Some(Path::new("custom.toml")),
                Flags {
                    listen: Some("127.0.0.1:3".into()),
                },
            )
            .map_err(|error| error.to_string())?;
            assert_eq!(settings.listen, "127.0.0.1:3");
            assert_eq!(settings.max_in_flight, 9);
            assert_eq!(settings.log, "debug");
            assert_eq!(settings.commit_batch_max, 1024);
            Ok(())
        });
    }

    #[test]
    fn a_typo_in_the_file_is_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("flashsale.toml", "max_in_flite = 7\n")?;
            assert!(Settings::load(None, Flags::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn a_half_configured_cluster_is_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FLASHSALE_REDIS_URL", "redis://127.0.0.1/");
            let error = Settings::load(None, Flags::default()).unwrap_err();
            assert!(error.to_string().contains("both"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let settings = Settings {
            admin_token: Some("hunter2".into()),
            stripe_secret_key: Some("sk_test_hunter3".into()),
            stripe_webhook_secret: Some("whsec_hunter4".into()),
            ..Settings::default()
        };
        let shown = format!("{settings:?}");
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn stripe_without_its_keys_stops_the_start_with_the_reason() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FLASHSALE_PAYMENT_PROVIDER", "stripe");
            let error = Settings::load(None, Flags::default()).unwrap_err();
            assert!(error.to_string().contains("stripe_secret_key"), "{error}");
            jail.set_env("FLASHSALE_STRIPE_SECRET_KEY", "sk_test_1");
            jail.set_env("FLASHSALE_STRIPE_PUBLISHABLE_KEY", "pk_test_1");
            let error = Settings::load(None, Flags::default()).unwrap_err();
            assert!(
                error.to_string().contains("stripe_webhook_secret"),
                "{error}"
            );
            jail.set_env("FLASHSALE_STRIPE_WEBHOOK_SECRET", "whsec_1");
            jail.set_env("FLASHSALE_STRIPE_API_BASE", "ftp://stripe");
            let error = Settings::load(None, Flags::default()).unwrap_err();
            assert!(error.to_string().contains("stripe_api_base"), "{error}");
            jail.set_env("FLASHSALE_STRIPE_API_BASE", "http://127.0.0.1:8420");
            jail.set_env("FLASHSALE_CURRENCY", "EUR");
            let error = Settings::load(None, Flags::default()).unwrap_err();
            assert!(error.to_string().contains("currency"), "{error}");
            jail.set_env("FLASHSALE_CURRENCY", "usd");
            let settings = Settings::load(None, Flags::default()).map_err(|e| e.to_string())?;
            assert_eq!(settings.payment_provider, PaymentProviderKind::Stripe);
            Ok(())
        });
    }
}
