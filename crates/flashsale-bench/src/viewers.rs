//! Page viewers: people with the storefront open, polling on the page's own schedule (the sale
//! list every 2 s and their orders every 60 s, each ±25% jitter, the next poll timed from the end
//! of the last one, the sale list revalidated with `If-None-Match` as a browser does with the
//! `ETag` it holds). They run beside a purchase stampede to show what the open pages cost.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{HeaderValue, ETAG};
use hyper::Method;

use super::api::Api;

/// What the storefront polls: the sales a buyer can still act on (one page while there are
/// fewer than a hundred).
const CURRENT_SALES: &str = "/api/v1/sales?current=true&limit=100";
use super::client::{process_cpu_time, Connection};
use super::driver::{PhaseResult, TIMEOUT, TRANSPORT_ERROR};
use super::random::SplitMix64;
use super::stats::Stats;

/// The storefront's schedule (`src/http/ui/store.js`: `poll(refreshSales, 2000, …)` and
/// `poll(refreshOrders, 60000, …)`; `common.js` spreads each delay over ±25%). The page also
/// fetches its orders once after a pending order's deadline, which a stampede run never reaches.
pub const SALES_EVERY: Duration = Duration::from_secs(2);
pub const ORDERS_EVERY: Duration = Duration::from_secs(60);

/// Viewers are buyers numbered from here, apart from the stampede's buyers.
const FIRST_VIEWER_BUYER: u64 = 1 << 40;

/// Requests per second that `viewers` open pages send on the page's schedule.
pub fn expected_requests_per_sec(viewers: u64) -> f64 {
    viewers as f64 * (1.0 / SALES_EVERY.as_secs_f64() + 1.0 / ORDERS_EVERY.as_secs_f64())
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Poll {
    Sales,
    Orders,
}

impl Poll {
    fn every(self) -> Duration {
        match self {
            Self::Sales => SALES_EVERY,
            Self::Orders => ORDERS_EVERY,
        }
    }
}

/// One viewer's page.
struct Page {
    buyer: u64,
    authorization: Option<HeaderValue>,
    etag: Option<HeaderValue>,
}

/// Viewers polling until stopped.
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Stats>>,
    started: Instant,
    cpu_before: Duration,
    server_pid: Option<u32>,
    server_cpu_before: Option<f64>,
}

/// Opens `viewers` pages spread over `connections` keep-alive connections (a page's polls wait
/// for the connection like a browser's share one); each page first polls at a random moment
/// within its period, as pages opened over time would.
pub fn start(
    api: &Arc<Api>,
    viewers: u64,
    connections: usize,
    seed: u64,
    timeout: Duration,
    server_pid: Option<u32>,
) -> Running {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let connections = connections.clamp(1, viewers.max(1) as usize);
    let started = Instant::now();
    let tasks = (0..connections)
        .map(|index| {
            let pages: Vec<Page> = (index as u64..viewers)
                .step_by(connections)
                .map(|viewer| Page {
                    buyer: FIRST_VIEWER_BUYER + viewer,
                    authorization: None,
                    etag: None,
                })
                .collect();
            let random = SplitMix64::new(seed ^ 0x5669_6577 ^ (index as u64).wrapping_mul(0x9e37));
            tokio::spawn(view(
                Arc::clone(api),
                api.address(),
                index,
                timeout,
                pages,
                random,
                stopped.clone(),
            ))
        })
        .collect();
    Running {
        stop,
        tasks,
        started,
        cpu_before: process_cpu_time(),
        server_pid,
        server_cpu_before: server_pid.and_then(super::target::process_cpu_seconds),
    }
}

impl Running {
    /// Closes every page; returns what the viewers sent. `alone` says whether nothing else ran
    /// meanwhile, so that the client's and the server's CPU time belong to the viewers.
    pub async fn stop(self, name: &str, alone: bool) -> PhaseResult {
        let _ = self.stop.send(true);
        let mut stats = Stats::new();
        for task in self.tasks {
            if let Ok(mine) = task.await {
                stats.merge(&mine);
            }
        }
        let elapsed = self.started.elapsed();
        let server_cpu = self
            .server_cpu_before
            .zip(self.server_pid.and_then(super::target::process_cpu_seconds))
            .map(|(before, after)| Duration::from_secs_f64((after - before).max(0.0)));
        PhaseResult {
            name: name.to_owned(),
            stats,
            // Pages poll on their own schedule, not at a planned rate: no timeline of lateness.
            timeline: super::timeline::Timeline::default(),
            elapsed,
            client_cpu: if alone {
                process_cpu_time().saturating_sub(self.cpu_before)
            } else {
                Duration::ZERO
            },
            server_cpu: server_cpu.filter(|_| alone),
            won: Vec::new(),
            named_by_refusals: Vec::new(),
        }
    }
}

/// One connection's pages: always poll the page whose turn comes first.
async fn view(
    api: Arc<Api>,
    address: SocketAddr,
    index: usize,
    timeout: Duration,
    mut pages: Vec<Page>,
    mut random: SplitMix64,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Stats {
    let mut stats = Stats::new();
    let mut connection: Option<Connection> = None;
    let now = Instant::now();
    let mut due = BinaryHeap::with_capacity(pages.len() * 2);
    for page in 0..pages.len() {
        for poll in [Poll::Sales, Poll::Orders] {
            let first = poll.every().mul_f64(random.below(1000) as f64 / 1000.0);
            due.push(Reverse((now + first, page, poll)));
        }
    }
    while let Some(Reverse((at, page_index, poll))) = due.pop() {
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = stopped.changed() => break,
        }
        if *stopped.borrow() {
            break;
        }
        let page = &mut pages[page_index];
        let outcome = poll_once(&api, address, index, timeout, &mut connection, page, poll).await;
        // Latency from the moment the poll was due: a slow server cannot hide its queue.
        stats.record(&outcome, at.elapsed());
        let jitter = 0.75 + random.below(501) as f64 / 1000.0;
        due.push(Reverse((
            Instant::now() + poll.every().mul_f64(jitter),
            page_index,
            poll,
        )));
    }
    stats
}

async fn poll_once(
    api: &Api,
    address: SocketAddr,
    index: usize,
    timeout: Duration,
    connection: &mut Option<Connection>,
    page: &mut Page,
    poll: Poll,
) -> String {
    if connection.is_none() {
        match Connection::open(address, index, timeout).await {
            Ok(open) => *connection = Some(open),
            Err(_) => return TRANSPORT_ERROR.to_owned(),
        }
    }
    let Some(open) = connection.as_mut() else {
        return TRANSPORT_ERROR.to_owned();
    };
    let reply = match poll {
        Poll::Sales => {
            let etag = page
                .etag
                .as_ref()
                .and_then(|etag| etag.to_str().ok())
                .map(str::to_owned);
            let headers: Vec<(&str, &str)> = etag
                .as_deref()
                .map(|etag| ("if-none-match", etag))
                .into_iter()
                .collect();
            open.send(Method::GET, CURRENT_SALES, None, &headers, None)
                .await
        }
        Poll::Orders => {
            if page.authorization.is_none() {
                page.authorization = api.buyer_authorization(page.buyer);
            }
            open.send(
                Method::GET,
                "/api/v1/orders?limit=50",
                page.authorization.clone(),
                &[],
                None,
            )
            .await
        }
    };
    let what = match poll {
        Poll::Sales => "sales",
        Poll::Orders => "orders",
    };
    match reply {
        Ok(reply) => {
            if poll == Poll::Sales && reply.status.is_success() {
                page.etag = reply.headers.get(ETAG).cloned();
            }
            format!("{what} {}", reply.status.as_u16())
        }
        Err(error) => {
            *connection = None;
            match error {
                super::client::ClientError::Timeout => TIMEOUT.to_owned(),
                _ => TRANSPORT_ERROR.to_owned(),
            }
        }
    }
}
