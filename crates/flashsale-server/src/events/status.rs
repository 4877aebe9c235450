//! What each sink's delivery is doing, for `/metrics` and the admin console: counters and gauges
//! its delivery loop keeps in atomics (nothing here waits on a lock of the loop).

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub struct SinkStatus {
    pub name: String,
    pub kind: &'static str,
    /// Whether this node delivers the sink now (embedded: always, once started).
    pub held: AtomicBool,
    pub delivered: AtomicU64,
    /// Failed attempts (each is retried, or set aside after `retry_hours`).
    pub retries: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Events pruned by the retention before they went out.
    pub pruned_undelivered: AtomicU64,
    /// Events recorded but not yet delivered (while held).
    pub lag_events: AtomicU64,
    /// Age of the oldest undelivered event, in milliseconds (while held).
    pub lag_ms: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl SinkStatus {
    pub fn new(name: &str, kind: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            kind,
            held: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            pruned_undelivered: AtomicU64::new(0),
            lag_events: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One series: name, type, help, and its value for a sink.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SinkStatus) -> String,
);

/// The sinks' metrics in the Prometheus text format (appended to `/metrics`).
pub fn render(out: &mut String, sinks: &[Arc<SinkStatus>]) {
    if sinks.is_empty() {
        return;
    }
    let series: [Series; 7] = [
        ("flashsale_event_sink_delivered_total", "counter", "Events a sink confirmed, by sink.", |s| s.delivered.load(Relaxed).to_string()),
        ("flashsale_event_sink_retries_total", "counter", "Failed delivery attempts (retried with back-off), by sink.", |s| s.retries.load(Relaxed).to_string()),
        ("flashsale_event_sink_dead_letters_total", "counter", "Events set aside after retry_hours of failures, by sink (kept; see the admin console).", |s| s.dead_letters.load(Relaxed).to_string()),
        ("flashsale_event_sink_pruned_undelivered_total", "counter", "Events the retention pruned before a sink had them, by sink.", |s| s.pruned_undelivered.load(Relaxed).to_string()),
        ("flashsale_event_sink_lag_events", "gauge", "Events recorded but not yet delivered, by sink (on the node delivering it).", |s| s.lag_events.load(Relaxed).to_string()),
        ("flashsale_event_sink_lag_seconds", "gauge", "Age of the oldest undelivered event, by sink (on the node delivering it).", |s| format!("{}", s.lag_ms.load(Relaxed) as f64 / 1000.0)),
        ("flashsale_event_sink_held", "gauge", "1 when this node delivers the sink.", |s| u8::from(s.held.load(Relaxed)).to_string()),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for sink in sinks {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\",kind=\"{}\"}} {}",
                sink.name,
                sink.kind,
                value(sink)
            );
        }
    }
}
