//! Counters and histograms kept in fixed arrays of atomics, rendered in the Prometheus text
//! format. Recording is a couple of relaxed atomic adds at an index (the route's, the
//! outcome's) with no lock, because it sits on every request of the hot path.

mod connections;
mod storage;

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::http::routes::Route;

pub use self::connections::{ClosedBy, ConnectionCounters};
pub use self::storage::StorageGauges;

/// Purchase outcomes, by the code the client sees (`created` and `repeated` for successes).
pub const PURCHASE_OUTCOMES: [&str; 16] = [
    "created",
    "repeated",
    "sold_out",
    "already_purchased",
    "not_started",
    "sale_ended",
    "invalid_quantity",
    "queue_pass_required",
    "sale_paused",
    "access_code_required",
    "sale_not_found",
    "rate_limited",
    "overloaded",
    "invalid_request",
    "unauthenticated",
    "other",
];

const STATUS_CODES: usize = 600;
/// Upper bounds of the latency buckets, in microseconds.
const LATENCY_BOUNDS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];
const BATCH_BOUNDS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

struct Histogram<const N: usize> {
    bounds: [u64; N],
    /// One per bound, plus the overflow bucket.
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: [u64; N]) -> Self {
        Self {
            bounds,
            counts: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, scale: f64) {
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let le = *bound as f64 / scale;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[N].load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum.load(Relaxed) as f64 / scale;
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {cumulative}");
    }

    fn is_empty(&self) -> bool {
        self.counts.iter().all(|count| count.load(Relaxed) == 0)
    }
}

pub struct Metrics {
    responses: Vec<Vec<AtomicU64>>,
    latency: Vec<Histogram<16>>,
    purchases: Vec<AtomicU64>,
    commit_batch: Histogram<13>,
    expired_orders: AtomicU64,
    sweep_rounds: AtomicU64,
    in_flight: AtomicU64,
    cluster: ClusterCounters,
    line: LineCounters,
    /// The event sinks' delivery, set once at start (`events::status`).
    event_sinks: std::sync::OnceLock<Vec<std::sync::Arc<crate::events::SinkStatus>>>,
    /// Open connections, the cap, timeouts and evictions, braked admin guesses.
    pub connections: ConnectionCounters,
    /// The order journal's disk: free space, the reserve ahead, out of space.
    pub storage: StorageGauges,
}

/// The waiting rooms, as this node saw them.
#[derive(Default)]
struct LineCounters {
    places: AtomicU64,
    passes_issued: AtomicU64,
    passes_used: AtomicU64,
    passes_expired: AtomicU64,
}

/// What only a cluster node reports (all zero on an embedded server, and then not rendered).
#[derive(Default)]
struct ClusterCounters {
    enabled: std::sync::atomic::AtomicBool,
    gate_calls: AtomicU64,
    gate_scripts: AtomicU64,
    local_sold_out: AtomicU64,
    persisted_orders: AtomicU64,
    refused_orders: AtomicU64,
    queue_lag_ms: AtomicU64,
    queue_unpersisted: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            responses: Route::ALL
                .iter()
                .map(|_| (0..STATUS_CODES).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            latency: Route::ALL
                .iter()
                .map(|_| Histogram::new(LATENCY_BOUNDS_MICROS))
                .collect(),
            purchases: PURCHASE_OUTCOMES
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            commit_batch: Histogram::new(BATCH_BOUNDS),
            expired_orders: AtomicU64::new(0),
            sweep_rounds: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            line: LineCounters::default(),
            cluster: ClusterCounters::default(),
            event_sinks: std::sync::OnceLock::new(),
            connections: ConnectionCounters::default(),
            storage: StorageGauges::default(),
        }
    }
}

impl Metrics {
    /// Makes `/metrics` show these sinks (once, at start).
    pub fn show_event_sinks(&self, sinks: Vec<std::sync::Arc<crate::events::SinkStatus>>) {
        let _ = self.event_sinks.set(sinks);
    }

    pub fn record_response(&self, route: Route, status: u16, elapsed: Duration) {
        let route = route.index();
        let status = usize::from(status).min(STATUS_CODES - 1);
        self.responses[route][status].fetch_add(1, Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency[route].record(micros);
    }

    pub fn record_purchase(&self, outcome: &str) {
        let index = PURCHASE_OUTCOMES
            .iter()
            .position(|known| *known == outcome)
            .unwrap_or(PURCHASE_OUTCOMES.len() - 1);
        self.purchases[index].fetch_add(1, Relaxed);
    }

    /// Buyer requests answered so far: purchases of every outcome and joins of waiting lines
    /// (deliveries yield while these come fast, `events::pace`).
    pub fn buyer_requests(&self) -> u64 {
        let purchases: u64 = self.purchases.iter().map(|count| count.load(Relaxed)).sum();
        purchases + self.line.places.load(Relaxed)
    }

    pub fn record_commit_batch(&self, commands: usize) {
        self.commit_batch
            .record(u64::try_from(commands).unwrap_or(u64::MAX));
    }

    pub fn record_expired(&self, orders: usize) {
        self.expired_orders
            .fetch_add(u64::try_from(orders).unwrap_or(u64::MAX), Relaxed);
    }

    /// A round of the background sweep finished: overdue orders expired, unfinished returns
    /// retried. An operator sees the sweep is alive; a test knows a whole round has passed.
    pub fn record_sweep_round(&self) {
        self.sweep_rounds.fetch_add(1, Relaxed);
    }

    /// What a join or a look at a waiting line did: a new place, a pass handed out, a pass
    /// that had run out.
    pub fn record_line(&self, placed: bool, pass_issued: bool, pass_expired: bool) {
        let line = &self.line;
        for (happened, counter) in [
            (placed, &line.places),
            (pass_issued, &line.passes_issued),
            (pass_expired, &line.passes_expired),
        ] {
            if happened {
                counter.fetch_add(1, Relaxed);
            }
        }
    }

    /// A purchase made with a waiting room's pass.
    pub fn record_pass_used(&self) {
        self.line.passes_used.fetch_add(1, Relaxed);
    }

    fn render_line(&self, out: &mut String) {
        let line = &self.line;
        let (places, issued) = (line.places.load(Relaxed), line.passes_issued.load(Relaxed));
        let rows = [
            ("flashsale_waiting_room_places_total", "counter", "Places handed out in waiting lines (joins, and re-joins after a pass ran out).", places),
            ("flashsale_waiting_room_admitted_total", "counter", "Buyers admitted: passes handed out.", issued),
            ("flashsale_waiting_room_passes_used_total", "counter", "Purchases made with a pass.", line.passes_used.load(Relaxed)),
            ("flashsale_waiting_room_passes_expired_total", "counter", "Passes that ran out before their buyer joined again.", line.passes_expired.load(Relaxed)),
            ("flashsale_waiting_room_waiting", "gauge", "Buyers in waiting lines not admitted yet (places minus admitted, as this node counted them).", places.saturating_sub(issued)),
        ];
        render_singles(out, rows);
    }

    /// Turns on the cluster's section of the report.
    pub fn enable_cluster(&self) {
        self.cluster.enabled.store(true, Relaxed);
    }

    /// A purchase the gate decided: by a Redis call, or locally from a sold-out mark.
    pub fn record_gate_call(&self, remote: bool) {
        let counter = if remote {
            &self.cluster.gate_calls
        } else {
            &self.cluster.local_sold_out
        };
        counter.fetch_add(1, Relaxed);
    }

    /// One purchase script call, deciding one or more purchases of one sale.
    pub fn record_gate_script(&self) {
        self.cluster.gate_scripts.fetch_add(1, Relaxed);
    }

    pub fn record_persisted(&self, persisted: usize, refused: usize) {
        self.cluster
            .persisted_orders
            .fetch_add(u64::try_from(persisted).unwrap_or(u64::MAX), Relaxed);
        self.cluster
            .refused_orders
            .fetch_add(u64::try_from(refused).unwrap_or(u64::MAX), Relaxed);
    }

    /// The age of the oldest order not yet in PostgreSQL, and how many there are.
    pub fn record_queue(&self, lag: Duration, unpersisted: u64) {
        self.cluster
            .queue_lag_ms
            .store(u64::try_from(lag.as_millis()).unwrap_or(u64::MAX), Relaxed);
        self.cluster.queue_unpersisted.store(unpersisted, Relaxed);
    }

    fn render_cluster(&self, out: &mut String) {
        let counters = &self.cluster;
        if !counters.enabled.load(Relaxed) {
            return;
        }
        let rows: [(&str, &str, &str, &AtomicU64, f64); 7] = [
            (
                "flashsale_gate_redis_calls_total",
                "counter",
                "Purchases decided by a Redis script call.",
                &counters.gate_calls,
                1.0,
            ),
            (
                "flashsale_gate_redis_scripts_total",
                "counter",
                "Purchase script calls to Redis; each decides the purchases of one sale that \
                 gathered while the previous call was in flight.",
                &counters.gate_scripts,
                1.0,
            ),
            (
                "flashsale_gate_local_sold_out_total",
                "counter",
                "Purchases refused from this node's sold-out mark, without Redis.",
                &counters.local_sold_out,
                1.0,
            ),
            (
                "flashsale_queue_persisted_orders_total",
                "counter",
                "Queued orders this node wrote to PostgreSQL.",
                &counters.persisted_orders,
                1.0,
            ),
            (
                "flashsale_queue_refused_orders_total",
                "counter",
                "Queued orders PostgreSQL's constraints refused (kept in refused_orders).",
                &counters.refused_orders,
                1.0,
            ),
            (
                "flashsale_queue_lag_seconds",
                "gauge",
                "Age of the oldest acknowledged order not yet in PostgreSQL.",
                &counters.queue_lag_ms,
                1000.0,
            ),
            (
                "flashsale_queue_unpersisted_orders",
                "gauge",
                "Acknowledged orders not yet in PostgreSQL.",
                &counters.queue_unpersisted,
                1.0,
            ),
        ];
        for (name, kind, help, value, scale) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let value = value.load(Relaxed);
            if scale == 1.0 {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name} {}", value as f64 / scale);
            }
        }
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP flashsale_http_responses_total HTTP responses by route and status.\n");
        out.push_str("# TYPE flashsale_http_responses_total counter\n");
        for (route, statuses) in Route::ALL.iter().zip(&self.responses) {
            let route = route.template();
            for (status, count) in statuses.iter().enumerate() {
                let count = count.load(Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "flashsale_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                    );
                }
            }
        }
        out.push_str(
            "# HELP flashsale_http_request_duration_seconds Time from request to response.\n",
        );
        out.push_str("# TYPE flashsale_http_request_duration_seconds histogram\n");
        for (route, histogram) in Route::ALL.iter().zip(&self.latency) {
            let route = route.template();
            if !histogram.is_empty() {
                histogram.render(
                    &mut out,
                    "flashsale_http_request_duration_seconds",
                    &format!("route=\"{route}\""),
                    1_000_000.0,
                );
            }
        }
        out.push_str("# HELP flashsale_purchases_total Purchase requests by outcome.\n");
        out.push_str("# TYPE flashsale_purchases_total counter\n");
        for (outcome, count) in PURCHASE_OUTCOMES.iter().zip(&self.purchases) {
            let _ = writeln!(
                out,
                "flashsale_purchases_total{{outcome=\"{outcome}\"}} {}",
                count.load(Relaxed)
            );
        }
        out.push_str(
            "# HELP flashsale_commit_batch_commands Commands committed per transaction.\n",
        );
        out.push_str("# TYPE flashsale_commit_batch_commands histogram\n");
        self.commit_batch
            .render(&mut out, "flashsale_commit_batch_commands", "", 1.0);
        let singles = [
            ("flashsale_expired_orders_total", "counter", "Orders expired by the payment sweep.", self.expired_orders.load(Relaxed)),
            ("flashsale_sweep_rounds_total", "counter", "Rounds of the background sweep finished (payment expiry, unfinished stock returns).", self.sweep_rounds.load(Relaxed)),
            ("flashsale_http_requests_in_flight", "gauge", "Requests being handled now.", self.in_flight.load(Relaxed)),
        ];
        render_singles(&mut out, singles);
        self.render_line(&mut out);
        self.connections.render(&mut out);
        self.storage.render(&mut out);
        self.render_cluster(&mut out);
        if let Some(sinks) = self.event_sinks.get() {
            crate::events::status::render(&mut out, sinks);
        }
        out
    }
}

/// Metrics of one value each, without labels: (name, type, help, value).
fn render_singles<const N: usize>(out: &mut String, rows: [(&str, &str, &str, u64); N]) {
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.record_commit_batch(1);
        metrics.record_commit_batch(3);
        metrics.record_commit_batch(5000);
        let text = metrics.render();
        assert!(
            text.contains("flashsale_commit_batch_commands_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("flashsale_commit_batch_commands_bucket{le=\"4\"} 2\n"));
        assert!(text.contains("flashsale_commit_batch_commands_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("flashsale_commit_batch_commands_count 3\n"));
    }

    #[test]
    fn responses_are_counted_by_route_and_status() {
        let metrics = Metrics::default();
        metrics.record_response(Route::Purchase, 409, Duration::from_micros(70));
        metrics.record_response(Route::Purchase, 409, Duration::from_micros(70));
        metrics.record_response(Route::Other, 404, Duration::from_micros(70));
        let route = Route::Purchase.template();
        let text = metrics.render();
        assert!(text.contains(&format!(
            "flashsale_http_responses_total{{route=\"{route}\",status=\"409\"}} 2"
        )));
        assert!(text.contains("route=\"other\",status=\"404\"} 1"));
        assert!(text.contains(&format!(
            "flashsale_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"0.0001\"}} 2"
        )));
    }

    #[test]
    fn single_value_metrics_carry_help_type_and_value() {
        let metrics = Metrics::default();
        metrics.record_expired(3);
        metrics.record_sweep_round();
        metrics.record_sweep_round();
        let text = metrics.render();
        assert!(text.contains(concat!(
            "# TYPE flashsale_expired_orders_total counter\n",
            "flashsale_expired_orders_total 3\n"
        )));
        assert!(text.contains(concat!(
            "# HELP flashsale_sweep_rounds_total Rounds of the background sweep finished",
            " (payment expiry, unfinished stock returns).\n",
            "# TYPE flashsale_sweep_rounds_total counter\n",
            "flashsale_sweep_rounds_total 2\n"
        )));
        assert!(text.contains("flashsale_http_requests_in_flight 0\n"));
        assert!(text.contains("flashsale_waiting_room_waiting 0\n"));
    }
}
