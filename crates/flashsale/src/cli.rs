//! The command line. `serve` takes a flag for every setting; its help shows each default, read
//! from `Settings::default()` so the two cannot disagree.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;

use flashsale_server::config::{Settings, ENV_PREFIX};

#[derive(Parser, Debug)]
#[command(
    name = "flashsale",
    version,
    about = "A flash-sale server that never oversells and never loses an acknowledged order."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (embedded by default: everything lives in the data directory).
    Serve(Box<ServeArgs>),
    /// Print a buyer token (HS256 JWT) signed with the configured secret.
    Token(TokenArgs),
    /// Load a server with a scenario, measure it, and verify its records afterwards.
    Bench(Box<flashsale_bench::BenchArgs>),
    /// Cluster: compare Redis and PostgreSQL per sale; with --repair rebuild the gate of every
    /// sale that disagrees from PostgreSQL (after Redis lost its data). Exit 0 when all agree,
    /// 2 when some do not.
    Reconcile(Box<ReconcileArgs>),
    /// Check a sale's waiting line from the outside: the draw against its commitment, the
    /// admission log's chain and signatures, admission by the rate, and (with the admin token)
    /// that every order was bought by an admitted buyer. Exit 0 when it holds, 1 naming the first
    /// break, 2 when the server could not be read.
    Verify(VerifyArgs),
    /// The bench's bare baseline: answers every request with a fixed refusal, no middleware.
    #[command(hide = true)]
    BareResponder(BareResponderArgs),
    /// The bench's webhook receiver: checks each signature and each sale's order, counts.
    #[command(hide = true)]
    WebhookReceiver(WebhookReceiverArgs),
}

#[derive(Args, Debug)]
pub struct WebhookReceiverArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// The sink's Standard Webhooks secret (`whsec_…`).
    #[arg(long, env = "FLASHSALE_BENCH_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
}

#[derive(Args, Debug)]
pub struct BareResponderArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The sale to check.
    #[arg(long)]
    pub sale: String,
    /// The server's base URL, e.g. https://shop.example.
    #[arg(long)]
    pub url: String,
    /// Also read the sale's orders and check each against the log.
    #[arg(long, env = "FLASHSALE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A buyer id whose draw to compute again (the public log names buyers by hash only).
    #[arg(long = "buyer", value_name = "ID")]
    pub buyers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// Rebuild each disagreeing sale's gate in Redis from PostgreSQL and the queue.
    #[arg(long)]
    pub repair: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The node settings (the same file, variables and flags as `serve`).
    #[command(flatten)]
    pub node: ServeArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file [default: flashsale.toml, if present] [env: FLASHSALE_CONFIG]
    #[arg(long, env = "FLASHSALE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: SettingsFlags,
}

/// One flag per setting; only the flags given are serialized, so they override the other
/// sources and nothing else.
#[derive(Args, Debug, Default, Serialize)]
pub struct SettingsFlags {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Data directory: the embedded store and generated secrets.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Admin bearer token (generated and stored in the data directory when unset).
    #[arg(long, value_name = "TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// HS256 secret of buyer tokens (generated and stored in the data directory when unset).
    #[arg(long, value_name = "SECRET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    /// Redis URL of a cluster node (with --database-url).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// PostgreSQL URL of a cluster node (with --redis-url).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Cluster: prefix of every Redis key.
    #[arg(long, value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_key_prefix: Option<String>,
    /// Cluster: PostgreSQL schema of the tables.
    #[arg(long, value_name = "SCHEMA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_schema: Option<String>,
    /// Cluster: PostgreSQL connections per node.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_connections_max: Option<usize>,
    /// Cluster: refuse to start unless Redis fsyncs every write (appendonly yes, appendfsync always).
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_require_durable: Option<bool>,
    /// Cluster: most queued orders written to PostgreSQL per transaction.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_batch_max: Option<usize>,
    /// Cluster: idle time after which another node takes over a node's queued orders, in ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_claim_idle_ms: Option<u64>,
    /// Cluster: longest a local sold-out mark refuses without asking Redis, in ms (0: off).
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sold_out_recheck_ms: Option<u64>,
    /// Cluster: replicas that must confirm an order (Redis WAIT) before its 201 (0: off).
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_replicas_ack: Option<u32>,
    /// Cluster: longest wait for those replicas, in ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_replicas_ack_timeout_ms: Option<u64>,
    /// Cluster: PEM file of the CA a rediss:// server's certificate is checked against.
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// Requests handled at once; beyond it 503 overloaded.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Longest time a request may take, in milliseconds.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// Longest time a request's head may take, from its first byte (a new connection: from the connect), in ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_ms: Option<u64>,
    /// Longest time a request's body may take, from when its head was in, in ms; then 408.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_read_timeout_ms: Option<u64>,
    /// Longest time a kept-alive connection may wait for its next request, in ms.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Most client connections open at once (0: the open-file limit less 256); at the cap the longest-idle ones are closed.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_max: Option<usize>,
    /// Requests per second one buyer may make (0: no limit); beyond it 429 rate_limited.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_requests_per_sec: Option<u32>,
    /// Failed admin authentications per client address and minute (0: no limit); beyond it 429 for every admin authentication from it.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_auth_failures_per_min: Option<u32>,
    /// Most writes committed in one transaction (group commit).
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_batch_max: Option<usize>,
    /// Embedded order store: journal (orders in memory, an append-only journal) or sqlite
    #[arg(long, value_name = "STORE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_store: Option<flashsale_server::config::EmbeddedStore>,
    /// Most writes waiting for the writer; beyond it purchases get 503 overloaded.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_queue_max: Option<usize>,
    /// Read-only connections to the embedded store.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_connections_max: Option<usize>,
    /// How often the payment-expiry sweep runs, in milliseconds.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_sweep_interval_ms: Option<u64>,
    /// Most orders expired per sweep transaction.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_batch_max: Option<usize>,
    /// Runtime worker threads (0: one per core).
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// Log filter, RUST_LOG syntax.
    #[arg(long, value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Demo mode: anyone may sign in as anyone by name (POST /api/v1/demo/token), and an example
    /// sale starting a minute after start-up is created when there is none. Never in production.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub demo: bool,
    /// Days events are kept (the pull feed, and sinks that are behind).
    #[arg(long, value_name = "DAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_retention_days: Option<u32>,
    /// This installation's id in its events' source, flashsale/<id> (unset: embedded, generated
    /// in the data directory; a cluster, made once in PostgreSQL).
    #[arg(long, value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,
    /// The seed (64 hex digits) of the Ed25519 key that signs the waiting lines' admission logs
    /// (unset: embedded, generated in the data directory; a cluster, derived from the JWT secret).
    #[arg(long, value_name = "HEX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_log_key: Option<String>,
    /// Cluster: how long a node's hold on an event sink lasts unless renewed, in milliseconds.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_sink_lease_ms: Option<u64>,
    /// Deliveries a second, over all event sinks, while buyers crowd in (the rest wait until the
    /// crowd is gone; 0: none while busy).
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_busy_deliveries_per_sec: Option<u64>,
    /// Payments: simulated (the buyer's word is the payment; the default) or stripe.
    #[arg(long, value_name = "PROVIDER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_provider: Option<flashsale_server::config::PaymentProviderKind>,
    /// Stripe's API base URL (default https://api.stripe.com; tests: localstripe's).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_api_base: Option<String>,
    /// Stripe's secret key (sk_…).
    #[arg(long, value_name = "KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_secret_key: Option<String>,
    /// Stripe's webhook signing secret (whsec_…).
    #[arg(long, value_name = "SECRET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_webhook_secret: Option<String>,
    /// Stripe's publishable key (pk_…), for Stripe.js on the storefront.
    #[arg(long, value_name = "KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_publishable_key: Option<String>,
    /// Where the storefront loads Stripe.js from (default https://js.stripe.com/v3/).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_js_url: Option<String>,
    /// The currency of prices (ISO 4217, lowercase; default eur).
    #[arg(long, value_name = "CODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// How long past its deadline an order whose intent the provider cannot cancel stays
    /// pending before it is expired all the same, in seconds.
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_expiry_grace_secs: Option<u64>,
    /// How often the payments sweep asks the provider about an open intent, in seconds.
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_poll_interval_secs: Option<u64>,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The buyer's user id (the `sub` claim), 1 to 64 characters.
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// Lifetime of the token in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    pub ttl_secs: i64,
    /// Configuration file [default: flashsale.toml, if present] [env: FLASHSALE_CONFIG]
    #[arg(long, env = "FLASHSALE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory holding the generated JWT secret.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The HS256 secret (else configuration, else the data directory's).
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,
}

fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "none".into(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The clap command, with every `serve` flag's help ending in its default and variable.
pub fn command() -> clap::Command {
    let defaults = match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(defaults)) => defaults,
        _ => serde_json::Map::new(),
    };
    Cli::command().mut_subcommand("serve", |mut serve| {
        for (key, value) in &defaults {
            let exists = serve
                .get_arguments()
                .any(|arg| arg.get_id() == key.as_str());
            if !exists {
                continue;
            }
            let variable = format!("{ENV_PREFIX}{}", key.to_uppercase());
            serve = serve.mut_arg(key.as_str(), |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!(
                    "{help} [default: {}] [env: {variable}]",
                    shown(value)
                ))
            });
        }
        serve
    })
}

pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings only the configuration file can give (tables, not values): `[[events.sinks]]`.
    const FILE_ONLY_SETTINGS: [&str; 1] = ["events"];

    #[test]
    fn the_command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn serve_help_names_every_setting_with_its_default() {
        let mut serve = command()
            .find_subcommand("serve")
            .cloned()
            .expect("serve exists");
        let help = serve.render_help().to_string();
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        for key in defaults.as_object().unwrap().keys() {
            if FILE_ONLY_SETTINGS.contains(&key.as_str()) {
                continue;
            }
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(help.contains(&flag), "{flag} missing from serve --help");
            let variable = format!("FLASHSALE_{}", key.to_uppercase());
            assert!(
                help.contains(&variable),
                "{variable} missing from serve --help"
            );
        }
        assert!(help.contains("[default: 127.0.0.1:8080]"), "{help}");
    }
}
