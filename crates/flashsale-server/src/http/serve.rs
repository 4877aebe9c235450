//! The accept loop: every connection in a task of its own under the phase deadlines of
//! `connection.rs`, at most `connections_max` of them (reaching the cap closes the connections
//! idle the longest to make room; with none idle, the new one is closed at once), and the drain
//! at shutdown: stop accepting, let every connection answer what it received, close the idle
//! ones at once, return when the last one is gone.
//!
//! The registry of connections is locked once when a connection opens and once when it closes,
//! never per request: the cap reads each connection's phase from its own atomic.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connection::{self, ConnectionConfig, Ended, Phase, Timeouts, Tracked};
use crate::metrics::{ClosedBy, Metrics};

#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    pub timeouts: Timeouts,
    pub connections_max: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains (see the module's doc).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // The deadlines are ours (`connection.rs`); hyper's timer would run while idle too.
    http.header_read_timeout(None);
    let config = Arc::new(ConnectionConfig {
        http,
        router,
        timeouts: options.timeouts,
    });
    metrics.connections.set_max(options.connections_max);
    let registry = Arc::new(Registry::new(options.connections_max, Arc::clone(&metrics)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, client)) => admit(&registry, &config, stream, client),
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                // Out of descriptors or memory: accepting again at once would spin.
                tracing::error!(%error, "accepting a connection failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    drop(listener);
    registry.close_all();
    registry.emptied().await;
}

/// How long accepting pauses after an error that is not about one connection.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Errors that concern only the connection being accepted (it went away meanwhile).
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

fn admit(
    registry: &Arc<Registry>,
    config: &Arc<ConnectionConfig>,
    stream: TcpStream,
    client: SocketAddr,
) {
    let Some(tracked) = registry.open() else {
        registry.metrics.connections.record_refused();
        return;
    };
    let (registry, config) = (Arc::clone(registry), Arc::clone(config));
    tokio::spawn(async move {
        let ended = connection::run(stream, client, Arc::clone(&tracked), config).await;
        let metrics = &registry.metrics.connections;
        match ended {
            Ended::TimedOut(Phase::Idle) => metrics.record_closed(ClosedBy::IdleTimeout),
            Ended::TimedOut(_) => metrics.record_closed(ClosedBy::HeaderTimeout),
            Ended::Closed => {}
        }
        registry.close(&tracked);
    });
}

/// The open connections.
struct Registry {
    max: usize,
    table: Mutex<Table>,
    next_id: AtomicU64,
    epoch: Instant,
    emptied: Notify,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Table {
    connections: HashMap<u64, Arc<Tracked>>,
    /// Connections told to close that have not closed yet.
    closing: usize,
    draining: bool,
}

impl Registry {
    fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            max: max.max(1),
            table: Mutex::new(Table::default()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            emptied: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection, making room by closing the connections idle the longest when
    /// the cap is reached; `None` when there is no room.
    fn open(&self) -> Option<Arc<Tracked>> {
        let mut table = self.lock();
        let live = table.connections.len() - table.closing;
        if live >= self.max {
            // More than needed at once, so a flood of new connections at the cap scans the
            // table once per batch rather than once per connection.
            let wanted = live + 1 - self.max;
            let evicted = self.evict_longest_idle(&mut table, wanted.max(self.max / 64));
            // Connections told to close take a moment to go; past a bound, refuse instead of
            // letting descriptors pile up past the cap.
            if evicted == 0 || table.closing > self.max / 64 + wanted {
                return None;
            }
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let tracked = Arc::new(Tracked::new(id, self.epoch));
        table.connections.insert(id, Arc::clone(&tracked));
        self.metrics.connections.set_open(table.connections.len());
        Some(tracked)
    }

    /// Tells up to `count` waiting connections to close, those waiting the longest first;
    /// returns how many.
    fn evict_longest_idle(&self, table: &mut Table, count: usize) -> usize {
        let mut waiting: Vec<(Instant, &Arc<Tracked>)> = table
            .connections
            .values()
            .filter(|tracked| !tracked.was_asked_to_close())
            .filter_map(|tracked| {
                let (phase, since) = tracked.phase();
                phase.is_waiting().then_some((since, tracked))
            })
            .collect();
        let count = count.min(waiting.len());
        if count == 0 {
            return 0;
        }
        if count < waiting.len() {
            waiting.select_nth_unstable_by_key(count - 1, |(since, _)| *since);
        }
        let mut evicted = 0;
        for (_, tracked) in &waiting[..count] {
            if tracked.ask_to_close() {
                evicted += 1;
                self.metrics.connections.record_closed(ClosedBy::Evicted);
            }
        }
        table.closing += evicted;
        evicted
    }

    fn close(&self, tracked: &Tracked) {
        let mut table = self.lock();
        if table.connections.remove(&tracked.id).is_some() && tracked.was_asked_to_close() {
            table.closing = table.closing.saturating_sub(1);
        }
        self.metrics.connections.set_open(table.connections.len());
        if table.draining && table.connections.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Tells every connection to finish what it received and close.
    fn close_all(&self) {
        let mut table = self.lock();
        table.draining = true;
        let mut told = 0;
        for tracked in table.connections.values() {
            if tracked.ask_to_close() {
                told += 1;
            }
        }
        table.closing += told;
    }

    /// Resolves once no connection is left.
    async fn emptied(&self) {
        loop {
            let emptied = self.emptied.notified();
            let mut emptied = std::pin::pin!(emptied);
            emptied.as_mut().enable();
            if self.lock().connections.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}
