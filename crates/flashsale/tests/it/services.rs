//! The external services cluster and event-sink tests need, read from the environment:
//! `FLASHSALE_TEST_REDIS_URL`, `FLASHSALE_TEST_DATABASE_URL`, `FLASHSALE_TEST_AMQP_URL` (RabbitMQ)
//! and `FLASHSALE_TEST_NATS_URL` (NATS with JetStream); `.ci/run` sets them all. Without
//! them such a test says it is skipped and does nothing, except under CI (`CI` set), where a
//! missing service is a failure. Each use gets its own Redis key prefix and PostgreSQL schema,
//! removed afterwards, so runs never collide and nothing another run owns is touched.

use std::sync::atomic::{AtomicUsize, Ordering};

use flashsale_server::config::Settings;

pub const REDIS_VARIABLE: &str = "FLASHSALE_TEST_REDIS_URL";
pub const DATABASE_VARIABLE: &str = "FLASHSALE_TEST_DATABASE_URL";
pub const AMQP_VARIABLE: &str = "FLASHSALE_TEST_AMQP_URL";
pub const NATS_VARIABLE: &str = "FLASHSALE_TEST_NATS_URL";

fn variable(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{name} is not set: CI must run the cluster tests"
            );
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            eprintln!("SKIPPED: {name} is not set, so {test} does not run");
            record_skip(&test, name);
            None
        }
    }
}

/// Appends "test<TAB>variable" to the file `FLASHSALE_TEST_SKIP_LOG` names, so that
/// `scripts/test` can say at the end how many tests were skipped and why (a skipped test passes).
fn record_skip(test: &str, variable: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("FLASHSALE_TEST_SKIP_LOG") else {
        return;
    };
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(log, "{test}\t{variable}");
    }
}

/// Whether this process runs as root (tests that mount a small tmpfs need it). Otherwise the
/// test says it is skipped, as a test without its service does; under CI it fails instead (CI
/// runs as root).
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root: the disk-full tests must run"
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("SKIPPED: not root, so {test} cannot mount a tmpfs and does not run");
    record_skip(&test, "root (to mount a tmpfs)");
    false
}

pub fn redis_url() -> Option<String> {
    variable(REDIS_VARIABLE)
}

pub fn database_url() -> Option<String> {
    variable(DATABASE_VARIABLE)
}

/// The machine's RabbitMQ (its presence also means `rabbitmq-server` is installed).
pub fn amqp_url() -> Option<String> {
    variable(AMQP_VARIABLE)
}

/// The machine's NATS server with JetStream (its presence also means `nats-server` is installed).
pub fn nats_url() -> Option<String> {
    variable(NATS_VARIABLE)
}

/// A name no other test or run uses: process id, a counter, and the time.
pub fn unique_name(kind: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!(
        "fs_{kind}_{}_{}_{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `work` on a thread of its own with its own runtime: usable from `Drop` inside tests.
pub fn blocking_cleanup(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(work);
        }
    })
    .join();
}

pub async fn drop_schema(database_url: String, schema: String) {
    let Ok((client, connection)) =
        tokio_postgres::connect(&database_url, tokio_postgres::NoTls).await
    else {
        return;
    };
    tokio::spawn(connection);
    let _ = client
        .batch_execute(&format!(
            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
        ))
        .await;
}

pub async fn delete_keys(redis_url: String, prefix: String) {
    let Ok(client) = redis::Client::open(redis_url.as_str()) else {
        return;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut connection)
                .await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A private PostgreSQL schema, dropped with this value.
pub struct Schema {
    pub url: String,
    pub name: String,
}

impl Schema {
    pub fn new() -> Option<Self> {
        Some(Self {
            url: database_url()?,
            name: unique_name("schema"),
        })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        blocking_cleanup(drop_schema(self.url.clone(), self.name.clone()));
    }
}

/// A private Redis key prefix, its keys deleted with this value.
pub struct KeyPrefix {
    pub url: String,
    pub prefix: String,
}

impl KeyPrefix {
    pub fn new() -> Option<Self> {
        Some(Self {
            url: redis_url()?,
            prefix: unique_name("keys"),
        })
    }
}

/// A node's connection to the Redis at `url`, its keys under `key_prefix`.
pub async fn connect_redis(url: &str, key_prefix: &str) -> flashsale_server::redis::Redis {
    flashsale_server::redis::Redis::connect(&flashsale_server::redis::RedisOptions {
        url: url.to_owned(),
        key_prefix: key_prefix.to_owned(),
        response_timeout: std::time::Duration::from_secs(5),
        tls_ca_file: None,
    })
    .await
    .expect("Redis connects")
}

impl KeyPrefix {
    /// A connection to this test's Redis, on this test's keys.
    pub async fn connect(&self) -> flashsale_server::redis::Redis {
        connect_redis(&self.url, &self.prefix).await
    }
}

impl Drop for KeyPrefix {
    fn drop(&mut self) {
        blocking_cleanup(delete_keys(self.url.clone(), self.prefix.clone()));
    }
}

/// The Redis and PostgreSQL a test cluster uses, each private to it.
pub struct ClusterBackends {
    pub redis: KeyPrefix,
    pub postgres: Schema,
}

impl ClusterBackends {
    pub fn new() -> Option<Self> {
        let redis = KeyPrefix::new();
        let postgres = Schema::new();
        Some(Self {
            redis: redis?,
            postgres: postgres?,
        })
    }

    /// Points node settings at these backends. The machine's Redis keeps nothing on disk, so
    /// durability is not required here; the tests that need it start their own Redis.
    pub fn configure(&self, settings: &mut Settings) {
        settings.redis_url = Some(self.redis.url.clone());
        settings.database_url = Some(self.postgres.url.clone());
        settings.redis_key_prefix = self.redis.prefix.clone();
        settings.database_schema = self.postgres.name.clone();
        settings.redis_require_durable = false;
        settings.queue_claim_idle_ms = 2000;
    }
}
