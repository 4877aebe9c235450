//! The composition root: builds the backends, the service and the router from the settings,
//! binds the listener (port 0 works, for tests), and runs until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access_codes::AccessCodes;
use crate::auth::{Authenticator, TokenMinter};
use crate::clock::{Clock, SystemClock};
use crate::cluster::{Cluster, ClusterError, NodeWork};
use crate::config::EmbeddedStore;
use crate::config::Settings;
use crate::domain::{OrderId, SaleDraft};
use crate::events::delivery::Delivery;
use crate::events::pace::Pace;
use crate::events::rendered::RenderedEvents;
use crate::events::{DeliveryLedger, FileLedger, SinkStatus};
use crate::gate::{MemoryGate, StockGate};
use crate::http::{self, AppState, Limits, ServeOptions, Timeouts};
use crate::line::{LineError, LogSigner, MemoryLine, PassSigner, WaitingLine};
use crate::metrics::Metrics;
use crate::payments::{PaymentProvider, StripeProvider, StripeSettings};
use crate::redis::RedisLine;
use crate::secrets::{
    self, ADMIN_TOKEN_FILE, INSTALLATION_ID_FILE, JWT_SECRET_FILE, QUEUE_LOG_KEY_FILE,
};
use crate::service::{
    EventsParts, Intake, PaymentPage, PaymentParts, PrivateIntake, QueueLog, Service, ServiceError,
    SharedIntake, WaitingRoomParts,
};
use crate::store::{
    JournalStore, JournalStoreOptions, OrderStore, SqliteStore, SqliteStoreOptions, StoreError,
    WriterBatching,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cluster nodes must share their secrets: set admin_token and jwt_secret (FLASHSALE_ADMIN_TOKEN, FLASHSALE_JWT_SECRET) to the same values on every node")]
    ClusterSecrets,
    #[error("{setting} is {length} bytes: a configured secret must be at least {SECRET_BYTES_MIN} bytes (e.g. `head -c 32 /dev/urandom | xxd -p -c 64`)")]
    WeakSecret {
        setting: &'static str,
        length: usize,
    },
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    #[error("opening the order store: {0}")]
    Store(#[from] StoreError),
    #[error("opening the waiting line: {0}")]
    Line(#[from] LineError),
    #[error("recovering state from the order store: {0}")]
    Recovery(#[from] ServiceError),
    #[error("listening on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sinks(String),
    #[error("connections_max is {configured}, but the open-file limit ({open_files}) leaves room for {room} connections: raise the limit (`ulimit -n`, LimitNOFILE=) or lower connections_max (0 sizes it from the limit)")]
    ConnectionsMax {
        configured: usize,
        open_files: u64,
        room: usize,
    },
    #[error("payments: {0}")]
    Payments(String),
    #[error("{0}")]
    QueueLogKey(String),
}

/// The key that signs admission logs: configured, or (embedded) kept in the data directory, or
/// (a cluster) derived from the JWT secret every node shares.
fn queue_log_signer(settings: &Settings, jwt_secret: &str) -> Result<LogSigner, StartError> {
    let configured = settings.queue_log_key.as_deref();
    let seed = match configured {
        Some(seed) => seed.to_owned(),
        None if settings.is_cluster() => return Ok(LogSigner::derived_from(jwt_secret.as_bytes())),
        None => {
            secrets::resolve(None, &settings.data_dir, QUEUE_LOG_KEY_FILE)
                .map_err(|source| StartError::DataDir {
                    path: settings.data_dir.display().to_string(),
                    source,
                })?
                .value
        }
    };
    LogSigner::from_hex(&seed).map_err(|error| {
        let from = configured.map_or_else(
            || format!("{QUEUE_LOG_KEY_FILE} in the data directory: "),
            |_| String::new(),
        );
        StartError::QueueLogKey(format!("{from}{error}"))
    })
}

/// The payment provider the settings name, and what goes with it.
fn payment_parts(
    settings: &Settings,
    ledger: Arc<dyn DeliveryLedger>,
    holder: String,
) -> Result<PaymentParts, StartError> {
    let mut parts = PaymentParts::simulated();
    parts.currency = settings.currency.clone();
    parts.expiry_grace =
        jiff::SignedDuration::from_secs(settings.payment_expiry_grace_secs.min(86_400) as i64);
    parts.poll_interval =
        jiff::SignedDuration::from_secs(settings.payment_poll_interval_secs.clamp(1, 3600) as i64);
    parts.ledger = Some(ledger);
    parts.holder = holder;
    if settings.payment_provider == crate::config::PaymentProviderKind::Stripe {
        let api_base = settings
            .stripe_api_base
            .parse()
            .map_err(|error| StartError::Payments(format!("stripe_api_base: {error}")))?;
        let provider = StripeProvider::new(&StripeSettings {
            api_base,
            secret_key: settings.stripe_secret_key.clone().unwrap_or_default(),
        })
        .map_err(|error| StartError::Payments(error.to_string()))?;
        parts.provider = Arc::new(provider) as Arc<dyn PaymentProvider>;
        parts.webhook_secret = settings.stripe_webhook_secret.clone();
        parts.page = PaymentPage {
            provider: "stripe",
            stripe_js_url: Some(settings.stripe_js_url.clone()),
            publishable_key: settings.stripe_publishable_key.clone(),
        };
    }
    Ok(parts)
}

/// The secrets a server uses, and which of them it generated on this start.
pub struct Credentials {
    pub admin_token: String,
    pub jwt_secret: String,
    pub generated: Vec<String>,
}

/// Shortest configured secret accepted: a guessable admin token or JWT secret hands the sale to
/// whoever guesses it (generated ones are 32 random bytes).
pub const SECRET_BYTES_MIN: usize = 32;

pub fn credentials(settings: &Settings) -> Result<Credentials, StartError> {
    for (setting, value) in [
        ("admin_token", &settings.admin_token),
        ("jwt_secret", &settings.jwt_secret),
    ] {
        if let Some(value) = value.as_deref().filter(|value| !value.is_empty()) {
            if value.len() < SECRET_BYTES_MIN {
                return Err(StartError::WeakSecret {
                    setting,
                    length: value.len(),
                });
            }
        }
    }
    let data_dir_error = |source| StartError::DataDir {
        path: settings.data_dir.display().to_string(),
        source,
    };
    let admin = secrets::resolve(
        settings.admin_token.as_deref(),
        &settings.data_dir,
        ADMIN_TOKEN_FILE,
    )
    .map_err(data_dir_error)?;
    let jwt = secrets::resolve(
        settings.jwt_secret.as_deref(),
        &settings.data_dir,
        JWT_SECRET_FILE,
    )
    .map_err(data_dir_error)?;
    let generated = [admin.generated, jwt.generated]
        .into_iter()
        .flatten()
        .map(|path| path.display().to_string())
        .collect();
    Ok(Credentials {
        admin_token: admin.value,
        jwt_secret: jwt.value,
        generated,
    })
}

/// Connections the kernel queues before they are accepted. A flash sale opens with a burst of
/// connects; the common default of 128 or 1024 overflows and the kernel drops SYNs, which costs
/// each such client a one-second retransmit. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 65_535;

fn listen(address: &str) -> std::io::Result<TcpListener> {
    let address: SocketAddr = address
        .parse()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The connection cap: `connections_max`, or what the open-file limit (raised to its hard
/// limit first) leaves room for.
fn connection_cap(settings: &Settings) -> Result<usize, StartError> {
    let open_files = crate::descriptors::raise_open_file_limit().unwrap_or_else(|error| {
        tracing::warn!(%error, "reading the open-file limit");
        1024
    });
    let room = crate::descriptors::connections_for(open_files);
    match settings.connections_max {
        0 => Ok(room),
        configured if configured <= room => Ok(configured),
        configured => Err(StartError::ConnectionsMax {
            configured,
            open_files,
            room,
        }),
    }
}

pub struct App {
    listener: TcpListener,
    serve_options: ServeOptions,
    state: Arc<AppState>,
    expiry_interval: Duration,
    /// A cluster node's queue persister and archiver, started with the server.
    persister: Option<NodeWork>,
    /// One delivery loop per configured sink, and the outbox's pruning, started with the server.
    events: EventWork,
    pub credentials: Credentials,
}

/// What delivers and bounds the events beside the requests.
struct EventWork {
    deliveries: Vec<Delivery>,
    store: Arc<dyn OrderStore>,
    clock: Arc<dyn Clock>,
    retention: Duration,
}

impl EventWork {
    async fn run(self, stop: watch::Receiver<bool>) {
        let mut tasks = Vec::with_capacity(self.deliveries.len() + 1);
        tasks.push(tokio::spawn(crate::events::retention::run(
            self.store,
            self.clock,
            self.retention,
            stop.clone(),
        )));
        for delivery in self.deliveries {
            tasks.push(tokio::spawn(delivery.run(stop.clone())));
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl App {
    pub async fn build(settings: &Settings) -> Result<Self, StartError> {
        Self::build_on(settings, None).await
    }

    /// A server whose time is `clock` (tests: a manual clock). Cluster nodes given the same
    /// clock share it, in place of Redis's.
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        Self::build_on(settings, Some(clock)).await
    }

    async fn build_on(
        settings: &Settings,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<Self, StartError> {
        if settings.is_cluster()
            && (settings.admin_token.is_none() || settings.jwt_secret.is_none())
        {
            return Err(StartError::ClusterSecrets);
        }
        let serve_options = ServeOptions {
            timeouts: Timeouts {
                header_read: Duration::from_millis(settings.header_read_timeout_ms),
                body_read: Duration::from_millis(settings.body_read_timeout_ms),
                idle: Duration::from_millis(settings.idle_timeout_ms),
            },
            connections_max: connection_cap(settings)?,
        };
        secrets::ensure_data_dir(&settings.data_dir).map_err(|source| StartError::DataDir {
            path: settings.data_dir.display().to_string(),
            source,
        })?;
        let credentials = credentials(settings)?;
        let sink_configs = crate::events::settings::check(&settings.events)
            .map_err(|error| StartError::Sinks(error.to_string()))?;
        let sinks = crate::events::sinks_from_settings(&sink_configs)
            .map_err(|error| StartError::Sinks(error.to_string()))?;
        let metrics = Arc::new(Metrics::default());
        let passes = PassSigner::from_secret(credentials.jwt_secret.as_bytes());
        type Backends = (
            Arc<dyn StockGate>,
            Arc<dyn OrderStore>,
            Arc<dyn Intake>,
            Arc<dyn Clock>,
            Option<NodeWork>,
            Arc<dyn WaitingLine>,
            Arc<dyn DeliveryLedger>,
            String,
        );
        let data_dir_error = |source| StartError::DataDir {
            path: settings.data_dir.display().to_string(),
            source,
        };
        let (gate, store, intake, clock, persister, line, ledger, installation): Backends =
            if settings.is_cluster() {
                let time_from_caller = clock.is_some();
                let cluster =
                    Cluster::connect(settings, Arc::clone(&metrics), clock.is_some()).await?;
                let clock = match clock {
                    Some(clock) => clock,
                    None => cluster.clock().await?,
                };
                let installation = match &settings.installation_id {
                    Some(id) => id.clone(),
                    None => cluster.postgres.installation_id().await?,
                };
                let ledger: Arc<dyn DeliveryLedger> = Arc::new(cluster.postgres.clone());
                let (gate, store, persister) = cluster.into_node(Arc::clone(&clock));
                let line = Arc::new(RedisLine::new(
                    gate.redis(),
                    time_from_caller,
                    passes.draw_key(),
                ));
                (
                    gate,
                    store,
                    Arc::new(SharedIntake),
                    clock,
                    Some(persister),
                    line,
                    ledger,
                    installation,
                )
            } else {
                let store: Arc<dyn OrderStore> = match settings.embedded_store {
                    EmbeddedStore::Journal => Arc::new(JournalStore::open(
                        &settings.data_dir,
                        JournalStoreOptions {
                            commit_batch_max: settings.commit_batch_max,
                            write_queue_max: settings.write_queue_max,
                            batching: WriterBatching::ByScheduler,
                            events_retention: settings.events_retention(),
                        },
                        Arc::clone(&metrics),
                    )?),
                    EmbeddedStore::Sqlite => Arc::new(SqliteStore::open(
                        &settings.data_dir,
                        SqliteStoreOptions {
                            commit_batch_max: settings.commit_batch_max,
                            write_queue_max: settings.write_queue_max,
                            read_connections_max: settings.read_connections_max,
                        },
                        Arc::clone(&metrics),
                    )?),
                };
                let line = Arc::new(MemoryLine::open(&settings.data_dir, passes.draw_key())?);
                // The gate records each line's stops and restarts in the line's journal as they
                // happen (the last unit taken, stock back, a pause, a new rate).
                let gate: Arc<dyn StockGate> = Arc::new(MemoryGate::with_admission_log(
                    Arc::clone(&line) as Arc<dyn crate::line::AdmissionLog>,
                ));
                let intake = Arc::new(PrivateIntake::new(Arc::clone(&gate), Arc::clone(&store)));
                let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
                let installation = secrets::resolve(
                    settings.installation_id.as_deref(),
                    &settings.data_dir,
                    INSTALLATION_ID_FILE,
                )
                .map_err(data_dir_error)?
                .value;
                let ledger: Arc<dyn DeliveryLedger> = Arc::new(
                    FileLedger::open(&settings.data_dir)
                        .map_err(|error| StartError::Sinks(error.to_string()))?,
                );
                (gate, store, intake, clock, None, line, ledger, installation)
            };
        let source = crate::events::source(&installation);
        let holder = format!("node-{}", OrderId::generate());
        let lease = Duration::from_millis(settings.events_sink_lease_ms);
        let mut statuses = Vec::with_capacity(sinks.len());
        let mut deliveries = Vec::with_capacity(sinks.len());
        let rendered = Arc::new(RenderedEvents::new(Arc::clone(&store), source.clone()));
        let pace = {
            let metrics = Arc::clone(&metrics);
            Arc::new(Pace::new(
                move || metrics.buyer_requests(),
                settings.events_busy_deliveries_per_sec,
            ))
        };
        for (sink, config) in sinks.into_iter().zip(&sink_configs) {
            let status = SinkStatus::new(&config.name, config.kind.name());
            statuses.push(Arc::clone(&status));
            deliveries.push(Delivery {
                sink,
                status,
                events: Arc::clone(&rendered),
                pace: Arc::clone(&pace),
                ledger: Arc::clone(&ledger),
                clock: Arc::clone(&clock),
                holder: holder.clone(),
                lease,
                retry_hours: config.retry_hours,
                timeout: config.timeout,
            });
        }
        metrics.show_event_sinks(statuses.clone());
        let events = EventWork {
            deliveries,
            store: Arc::clone(&store),
            clock: Arc::clone(&clock),
            retention: settings.events_retention(),
        };
        let payments = payment_parts(settings, Arc::clone(&ledger), holder.clone())?;
        let service = Service::start(gate, store, intake, clock, settings.expiry_batch_max)
            .await?
            .with_access_codes(AccessCodes::from_secret(credentials.jwt_secret.as_bytes()))
            .with_events(EventsParts {
                source,
                sinks: statuses,
                ledger,
            })
            .with_payments(payments)
            .with_waiting_room(WaitingRoomParts {
                line,
                passes,
                log: Arc::new(QueueLog::new(queue_log_signer(
                    settings,
                    &credentials.jwt_secret,
                )?)),
            })
            .await?;
        if settings.demo {
            add_example_sale(&service).await?;
        }
        let state = Arc::new(AppState::new(
            Arc::new(service),
            Authenticator::new(&credentials.admin_token, &credentials.jwt_secret),
            metrics,
            Limits {
                max_in_flight: settings.max_in_flight,
                request_timeout: Duration::from_millis(settings.request_timeout_ms),
                buyer_requests_per_sec: settings.buyer_requests_per_sec,
                admin_auth_failures_per_min: settings.admin_auth_failures_per_min,
            },
            settings
                .demo
                .then(|| TokenMinter::new(&credentials.jwt_secret)),
        ));
        let listener = listen(&settings.listen).map_err(|source| StartError::Listen {
            address: settings.listen.clone(),
            source,
        })?;
        Ok(Self {
            listener,
            serve_options,
            state,
            expiry_interval: Duration::from_millis(settings.expiry_sweep_interval_ms),
            persister,
            events,
            credentials,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn service(&self) -> Arc<Service> {
        Arc::clone(&self.state.service)
    }

    /// Serves until `shutdown` resolves, then drains: stops accepting, answers every request
    /// already received, closes idle connections, commits what is queued, and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let service = Arc::clone(&self.state.service);
        let (stop_expiry, stop) = watch::channel(false);
        let expiry = tokio::spawn(crate::expiry::run(
            Arc::clone(&service),
            Arc::clone(&self.state.metrics),
            self.expiry_interval,
            stop.clone(),
        ));
        let payments = tokio::spawn(crate::expiry::run_payments(
            Arc::clone(&service),
            self.expiry_interval,
            stop.clone(),
        ));
        let events = tokio::spawn(self.events.run(stop.clone()));
        let queue_logs = tokio::spawn(crate::service::run_queue_log_keeper(
            Arc::clone(&service),
            stop.clone(),
        ));
        let follower = tokio::spawn(follow_sales(Arc::clone(&service), stop.clone()));
        let persister = self
            .persister
            .map(|persister| tokio::spawn(persister.run(stop)));
        let metrics = Arc::clone(&self.state.metrics);
        let router = http::router(self.state);
        http::serve(self.listener, router, self.serve_options, metrics, shutdown).await;
        let _ = stop_expiry.send(true);
        let _ = expiry.await;
        let _ = follower.await;
        let _ = payments.await;
        if let Some(persister) = persister {
            let _ = persister.await;
        }
        let _ = events.await;
        let _ = queue_logs.await;
        service.close().await?;
        Ok(())
    }
}

/// How often a cluster node looks whether another node created or changed a sale: well within
/// the second in which every node must follow a change (a look is one Redis `GET`).
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Follows the other nodes' sales until `stop` (nothing to follow on an embedded server).
async fn follow_sales(service: Arc<Service>, stop: watch::Receiver<bool>) {
    let mut ticker = crate::clock::StoppableTicker::new(FOLLOW_EVERY, stop);
    let mut seen = None;
    while ticker.tick().await {
        match service.follow_sales(seen).await {
            Ok(now_seen) => seen = now_seen,
            Err(error) => tracing::warn!(%error, "following the sales failed; retrying"),
        }
    }
}

/// Demo mode: with no sale at all, one to try, starting a minute from now.
async fn add_example_sale(service: &Service) -> Result<(), StartError> {
    let page = service.sales(Some(1), None, false).await?;
    if !page.sales.is_empty() {
        return Ok(());
    }
    let starts_at = service.now() + jiff::SignedDuration::from_secs(60);
    service
        .create_sale(SaleDraft {
            name: "Concert tickets (example)".into(),
            description: Some(
                "An example sale of demo mode: 100 seats, one per buyer, to pay within 15 minutes."
                    .into(),
            ),
            stock: 100,
            per_user_limit: Some(1),
            price_cents: Some(4_900),
            starts_at,
            ends_at: None,
            payment_window_secs: None,
            waiting_room: None,
            access: crate::domain::SaleAccess::Public,
        })
        .await?;
    Ok(())
}
