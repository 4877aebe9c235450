//! Runs one phase of load: `total` planned requests over `connections` keep-alive connections,
//! either closed-loop (each connection sends its next request when the last one is answered,
//! after an optional think time) or open-loop (request `k` is due at `start + k / rate`, and its
//! latency is measured from that time, so a slow server cannot hide its queueing: no coordinated
//! omission).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::client::{process_cpu_time, ClientError, Connection};
use super::random::SplitMix64;
use super::stats::Stats;
use super::timeline::Timeline;

/// One request to send, and what it stands for.
pub struct Planned {
    pub method: Method,
    pub path: Arc<str>,
    /// The `Authorization` header, ready to send.
    pub authorization: Option<hyper::header::HeaderValue>,
    pub idempotency_key: Option<String>,
    pub body: Option<Bytes>,
    /// Which sale (index into the scenario's sales) and which buyer this request is.
    pub sale: usize,
    pub buyer: u64,
}

pub type Planner = Arc<dyn Fn(u64) -> Planned + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// As fast as the server answers; each connection may wait up to `think_max_ms` (seeded)
    /// before each request.
    Closed { think_max_ms: u64, seed: u64 },
    /// Requests due at a fixed rate, whatever the replies.
    Open { requests_per_sec: f64 },
}

/// A successful reply that named an order.
#[derive(Clone, Debug)]
pub struct Won {
    pub sale: usize,
    pub buyer: u64,
    pub order_id: String,
}

pub struct PhaseResult {
    pub name: String,
    pub stats: Stats,
    /// When in the phase the late requests were.
    pub timeline: Timeline,
    pub elapsed: Duration,
    pub client_cpu: Duration,
    /// The server's CPU time during the phase, when the bench started the server.
    pub server_cpu: Option<Duration>,
    pub won: Vec<Won>,
    /// `order_id`s named by `already_purchased` replies (kept up to a bound).
    pub named_by_refusals: Vec<String>,
}

impl PhaseResult {
    pub fn requests_per_sec(&self) -> f64 {
        self.stats.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Client CPU microseconds per request.
    pub fn client_cpu_micros_per_request(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / (self.stats.total().max(1) as f64)
    }

    /// Server CPU microseconds per request, when known.
    pub fn server_cpu_micros_per_request(&self) -> Option<f64> {
        self.server_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / (self.stats.total().max(1) as f64))
    }

    pub fn errors(&self) -> u64 {
        self.stats.count(TRANSPORT_ERROR) + self.stats.count(TIMEOUT)
    }
}

pub const TRANSPORT_ERROR: &str = "transport error";
pub const TIMEOUT: &str = "timeout";
const REFUSAL_IDS_MAX: usize = 100_000;

/// The parts of a reply the bench reads; borrowed, so parsing allocates nothing.
#[derive(Deserialize)]
struct ReplyBody<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(borrow)]
    error: Option<ErrorBody<'a>>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    code: &'a str,
    order_id: Option<&'a str>,
}

/// Outcome names seen so far on one connection, so a name is formatted once, not per request.
#[derive(Default)]
struct OutcomeNames(Vec<(u16, String, String)>);

impl OutcomeNames {
    fn name(&mut self, status: u16, code: &str) -> &str {
        let position = match self
            .0
            .iter()
            .position(|(known, known_code, _)| *known == status && known_code == code)
        {
            Some(position) => position,
            None => {
                let name = if code.is_empty() {
                    status.to_string()
                } else {
                    format!("{status} {code}")
                };
                self.0.push((status, code.to_owned(), name));
                self.0.len() - 1
            }
        };
        &self.0[position].2
    }
}

/// Live counters for the progress bar.
#[derive(Default)]
struct Live {
    done: AtomicU64,
    succeeded: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

struct Collected {
    stats: Stats,
    timeline: Timeline,
    won: Vec<Won>,
    named_by_refusals: Vec<String>,
}

/// One connection's place in a phase: its index among the phase's connections, and when the
/// phase's clock started.
struct Seat {
    index: usize,
    connections: usize,
    started: Instant,
}

impl Collected {
    /// What one connection records into, made before the clock starts: room for the outcomes a
    /// purchase phase usually meets (created, and one refusal).
    fn before_the_clock() -> Self {
        Self {
            stats: Stats::with_room(2),
            timeline: Timeline::default(),
            won: Vec::new(),
            named_by_refusals: Vec::new(),
        }
    }
}

pub struct Phase {
    pub name: String,
    pub address: SocketAddr,
    pub connections: usize,
    pub total: u64,
    pub planner: Planner,
    pub pace: Pace,
    pub timeout: Duration,
    pub progress: bool,
    /// The server's process, to measure its CPU during the phase.
    pub server_pid: Option<u32>,
}

fn server_cpu_now(pid: Option<u32>) -> Option<f64> {
    pid.and_then(super::target::process_cpu_seconds)
}

fn progress_bar(phase: &Phase) -> ProgressBar {
    if !phase.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(phase.total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(phase.name.clone());
    bar
}

/// One exchange on a new connection before the clock starts. A storefront's connection has
/// loaded the page and polled the countdown before the sale opens; without this, the first
/// request of every connection (its buffers, on both sides) fell in the first 100 ms of each
/// open-loop run, all late together. A connection that fails here is opened again per request.
async fn warm_up(connection: Option<Connection>) -> Option<Connection> {
    let mut connection = connection?;
    connection
        .send(Method::GET, "/healthz", None, &[], None)
        .await
        .ok()
        .map(|_| connection)
}

impl Phase {
    pub async fn run(self) -> PhaseResult {
        let live = Arc::new(Live::default());
        let connections = self.connections.max(1).min(self.total.max(1) as usize);
        // Requests below `connections` are each connection's first; the shared counter hands
        // out the rest.
        let next = Arc::new(AtomicU64::new(connections as u64));
        let collected = Arc::new(Mutex::new(Collected {
            stats: Stats::new(),
            timeline: Timeline::default(),
            won: Vec::new(),
            named_by_refusals: Vec::new(),
        }));
        let bar = progress_bar(&self);
        // Every connection is open (and has made one exchange) before the clock starts, so the
        // figures measure the server, not the connect storm (a connection that fails to open is
        // retried per request later).
        let ready = Arc::new(tokio::sync::Barrier::new(connections + 1));
        let start_at = Arc::new(tokio::sync::OnceCell::<Instant>::new());
        let ticker = {
            let (live, bar) = (Arc::clone(&live), bar.clone());
            tokio::spawn(async move {
                let mut last = (Instant::now(), 0u64);
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let done = live.done.load(Relaxed);
                    let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
                    last = (Instant::now(), done);
                    bar.set_position(done);
                    bar.set_message(format!(
                        "{rate:>9.0} req/s  ok {}  refused {}  failed {}",
                        live.succeeded.load(Relaxed),
                        live.refused.load(Relaxed),
                        live.failed.load(Relaxed)
                    ));
                }
            })
        };
        let mut tasks = Vec::with_capacity(connections);
        let shared = Arc::new(self);
        for index in 0..connections {
            let (phase, next, live, collected) = (
                Arc::clone(&shared),
                Arc::clone(&next),
                Arc::clone(&live),
                Arc::clone(&collected),
            );
            let (ready, start_at) = (Arc::clone(&ready), Arc::clone(&start_at));
            tasks.push(tokio::spawn(async move {
                let connection = Connection::open(phase.address, index, phase.timeout)
                    .await
                    .ok();
                let mut connection = warm_up(connection).await;
                let room = Collected::before_the_clock();
                ready.wait().await;
                let started = *start_at.get_or_init(|| async { Instant::now() }).await;
                let seat = Seat {
                    index,
                    connections,
                    started,
                };
                let mine = phase.drive(seat, &mut connection, &next, &live, room).await;
                let mut all = collected
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                all.stats.merge(&mine.stats);
                all.timeline.merge(&mine.timeline);
                all.won.extend(mine.won);
                let room = REFUSAL_IDS_MAX.saturating_sub(all.named_by_refusals.len());
                all.named_by_refusals
                    .extend(mine.named_by_refusals.into_iter().take(room));
            }));
        }
        ready.wait().await;
        let cpu_before = process_cpu_time();
        let server_cpu_before = server_cpu_now(shared.server_pid);
        let started = *start_at.get_or_init(|| async { Instant::now() }).await;
        for task in tasks {
            let _ = task.await;
        }
        let elapsed = started.elapsed();
        ticker.abort();
        bar.set_position(live.done.load(Relaxed));
        bar.finish_and_clear();
        let client_cpu = process_cpu_time().saturating_sub(cpu_before);
        let server_cpu = server_cpu_before
            .zip(server_cpu_now(shared.server_pid))
            .map(|(before, after)| Duration::from_secs_f64((after - before).max(0.0)));
        let collected = std::mem::replace(
            &mut *collected
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Collected {
                stats: Stats::new(),
                timeline: Timeline::default(),
                won: Vec::new(),
                named_by_refusals: Vec::new(),
            },
        );
        PhaseResult {
            name: shared.name.clone(),
            stats: collected.stats,
            timeline: collected.timeline,
            elapsed,
            client_cpu,
            server_cpu,
            won: collected.won,
            named_by_refusals: collected.named_by_refusals,
        }
    }

    /// One connection's loop, recording into `mine`.
    async fn drive(
        &self,
        seat: Seat,
        connection: &mut Option<Connection>,
        next: &AtomicU64,
        live: &Live,
        mut mine: Collected,
    ) -> Collected {
        let Seat {
            index,
            connections,
            started,
        } = seat;
        let mut think = match self.pace {
            Pace::Closed { seed, .. } => {
                SplitMix64::new(seed ^ (index as u64).wrapping_mul(0x9e37))
            }
            Pace::Open { .. } => SplitMix64::new(0),
        };
        let mut own_sequence = index as u64;
        let mut first_request = true;
        // When this connection's previous exchange ended: a request due while the connection
        // still waited for a reply leaves late because of that reply, not because of the client.
        let mut free_since = started;
        let mut names = OutcomeNames::default();
        loop {
            // Closed loop: take the next request from the shared counter. Open loop: this
            // connection owns every `connections`-th request, each due at its scheduled time.
            let (request_index, measured_from) = match self.pace {
                Pace::Closed { think_max_ms, .. } => {
                    // Each connection's first request is its own, so every connection sends at
                    // least one; the rest go to whichever connection is free.
                    let request_index = if first_request {
                        first_request = false;
                        index as u64
                    } else {
                        next.fetch_add(1, Relaxed)
                    };
                    if request_index >= self.total {
                        break;
                    }
                    if think_max_ms > 0 {
                        let pause = think.below(think_max_ms + 1);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                    (request_index, None)
                }
                Pace::Open { requests_per_sec } => {
                    let request_index = own_sequence;
                    if request_index >= self.total {
                        break;
                    }
                    own_sequence += connections as u64;
                    let due = started
                        + Duration::from_secs_f64(
                            request_index as f64 / requests_per_sec.max(1e-9),
                        );
                    tokio::time::sleep_until(due.into()).await;
                    (request_index, Some(due))
                }
            };
            let planned = (self.planner)(request_index);
            let sent_at = Instant::now();
            let reply = self.exchange(connection, index, &planned).await;
            let measured_from = measured_from.unwrap_or(sent_at);
            let latency = measured_from.elapsed();
            let outcome: &str = match reply {
                Ok(reply) => {
                    let status = reply.status.as_u16();
                    let body: Option<ReplyBody> = serde_json::from_slice(&reply.body).ok();
                    let (id, error) = body.map_or((None, None), |body| (body.id, body.error));
                    match error {
                        Some(error) => {
                            if let Some(order_id) = error.order_id {
                                if mine.named_by_refusals.len() < REFUSAL_IDS_MAX {
                                    mine.named_by_refusals.push(order_id.to_owned());
                                }
                            }
                            live.refused.fetch_add(1, Relaxed);
                            names.name(status, error.code)
                        }
                        None => {
                            if let Some(order_id) = id {
                                mine.won.push(Won {
                                    sale: planned.sale,
                                    buyer: planned.buyer,
                                    order_id: order_id.to_owned(),
                                });
                            }
                            live.succeeded.fetch_add(1, Relaxed);
                            names.name(status, "")
                        }
                    }
                }
                Err(error) => {
                    *connection = None;
                    live.failed.fetch_add(1, Relaxed);
                    match error {
                        ClientError::Timeout => TIMEOUT,
                        _ => TRANSPORT_ERROR,
                    }
                }
            };
            mine.stats.record(outcome, latency);
            // Lateness means something against a schedule; a closed loop's latency is its
            // concurrency over its throughput.
            if matches!(self.pace, Pace::Open { .. }) {
                mine.timeline.record(
                    measured_from.saturating_duration_since(started),
                    sent_at.saturating_duration_since(measured_from.max(free_since)),
                    latency,
                );
            }
            free_since = Instant::now();
            live.done.fetch_add(1, Relaxed);
        }
        mine
    }

    async fn exchange(
        &self,
        connection: &mut Option<Connection>,
        index: usize,
        planned: &Planned,
    ) -> Result<super::client::Reply, ClientError> {
        if connection.is_none() {
            *connection = Some(Connection::open(self.address, index, self.timeout).await?);
        }
        let Some(open) = connection.as_mut() else {
            return Err(ClientError::Timeout);
        };
        let key_header;
        let headers: &[(&str, &str)] = match &planned.idempotency_key {
            Some(key) => {
                key_header = [("idempotency-key", key.as_str())];
                &key_header
            }
            None => &[],
        };
        open.send(
            planned.method.clone(),
            &planned.path,
            planned.authorization.clone(),
            headers,
            planned.body.clone(),
        )
        .await
    }
}
