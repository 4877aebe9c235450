//! Latency per outcome, in HDR histograms (microseconds, 2 significant digits: within 1%). Each
//! connection task records into its own `Stats`; they are merged at the end, so recording takes
//! no lock. Why not 3 digits: such a histogram is 280 KB, and 256 connections each allocating and
//! zeroing one at their first reply stalled the client ~100 ms at the start of every run
//! (measured: open-loop p99 at 5,000 req/s was 47 ms, all of it requests sent late). Even at
//! 2 digits, the first touch of 256 connections' histograms (~20 KB each, one per outcome) took
//! the client's core ~25 ms at the first replies, so a connection makes its histograms before
//! the clock starts (`with_room`).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency a histogram can hold (longer values are clamped to it).
const LATENCY_MAX_MICROS: u64 = 120_000_000;

/// Latency (ms) at each percentile, for one outcome.
pub type Curve = (String, Vec<(f64, f64)>);

#[derive(Clone)]
pub struct Stats {
    by_outcome: BTreeMap<String, Histogram<u64>>,
    /// Histograms made and touched ahead, for the next new outcomes.
    spare: Vec<Histogram<u64>>,
}

/// Percentiles of one outcome, in milliseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OutcomeSummary {
    pub outcome: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn new_histogram() -> Histogram<u64> {
    // Bounds and precision are constants within hdrhistogram's limits, so this cannot fail.
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 2)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            by_outcome: BTreeMap::new(),
            spare: Vec::new(),
        }
    }

    /// Stats whose first `outcomes` outcomes record into histograms made now, their memory
    /// written once, so that the first replies of a run do not pay for it.
    pub fn with_room(outcomes: usize) -> Self {
        let spare = (0..outcomes)
            .map(|_| {
                let mut histogram = new_histogram();
                // `reset` writes every counter: the pages are the process's before the clock.
                histogram.reset();
                histogram
            })
            .collect();
        Self {
            by_outcome: BTreeMap::new(),
            spare,
        }
    }

    pub fn record(&mut self, outcome: &str, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, LATENCY_MAX_MICROS);
        let histogram = match self.by_outcome.get_mut(outcome) {
            Some(histogram) => histogram,
            None => self
                .by_outcome
                .entry(outcome.to_owned())
                .or_insert_with(|| self.spare.pop().unwrap_or_else(new_histogram)),
        };
        histogram.saturating_record(micros);
    }

    pub fn merge(&mut self, other: &Stats) {
        for (outcome, histogram) in &other.by_outcome {
            let mine = self
                .by_outcome
                .entry(outcome.clone())
                .or_insert_with(new_histogram);
            // Both histograms share bounds, so adding cannot fail.
            let _ = mine.add(histogram);
        }
    }

    pub fn total(&self) -> u64 {
        self.by_outcome.values().map(Histogram::len).sum()
    }

    pub fn count(&self, outcome: &str) -> u64 {
        self.by_outcome.get(outcome).map_or(0, Histogram::len)
    }

    /// Every outcome, plus `all` for every request together.
    pub fn summaries(&self) -> Vec<OutcomeSummary> {
        let mut all = new_histogram();
        let mut rows = Vec::new();
        for (outcome, histogram) in &self.by_outcome {
            let _ = all.add(histogram);
            rows.push(summarize(outcome, histogram));
        }
        if !self.by_outcome.is_empty() {
            rows.push(summarize("all", &all));
        }
        rows
    }

    /// (percentile, latency in ms) points per outcome, for plots.
    pub fn percentile_curves(&self) -> Vec<Curve> {
        const PERCENTILES: [f64; 13] = [
            0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
        ];
        self.by_outcome
            .iter()
            .map(|(outcome, histogram)| {
                let points = PERCENTILES
                    .iter()
                    .map(|p| (*p, millis(histogram.value_at_quantile(p / 100.0))))
                    .collect();
                (outcome.clone(), points)
            })
            .collect()
    }
}

fn summarize(outcome: &str, histogram: &Histogram<u64>) -> OutcomeSummary {
    OutcomeSummary {
        outcome: outcome.to_owned(),
        count: histogram.len(),
        p50_ms: millis(histogram.value_at_quantile(0.50)),
        p90_ms: millis(histogram.value_at_quantile(0.90)),
        p99_ms: millis(histogram.value_at_quantile(0.99)),
        p999_ms: millis(histogram.value_at_quantile(0.999)),
        max_ms: millis(histogram.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_keeps_percentiles() {
        let mut first = Stats::new();
        let mut second = Stats::new();
        for micros in 1..=900 {
            first.record("201", Duration::from_micros(micros));
        }
        for micros in 901..=1000 {
            second.record("201", Duration::from_micros(micros));
        }
        second.record("409 sold_out", Duration::from_millis(5));
        first.merge(&second);
        assert_eq!(first.count("201"), 1000);
        assert_eq!(first.count("409 sold_out"), 1);
        assert_eq!(first.total(), 1001);
        let rows = first.summaries();
        let created = rows.iter().find(|row| row.outcome == "201").unwrap();
        assert!((created.p50_ms - 0.5).abs() < 0.01, "{created:?}");
        assert!((created.p99_ms - 0.99).abs() < 0.01, "{created:?}");
        assert!((created.max_ms - 1.0).abs() < 0.01, "{created:?}");
        let all = rows.iter().find(|row| row.outcome == "all").unwrap();
        assert_eq!(all.count, 1001);
    }

    #[test]
    fn histograms_made_ahead_record_as_new_ones() {
        let mut ahead = Stats::with_room(2);
        let mut plain = Stats::new();
        // Three outcomes: two take the histograms made ahead, the third makes its own.
        for (outcome, micros) in [("201", 700), ("409 sold_out", 90), ("429", 5)] {
            for step in 0..100 {
                let latency = Duration::from_micros(micros + step);
                ahead.record(outcome, latency);
                plain.record(outcome, latency);
            }
        }
        assert_eq!(ahead.summaries(), plain.summaries());
        assert_eq!(ahead.total(), 300);
        assert!(ahead.spare.is_empty());
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut stats = Stats::new();
        stats.record("timeout", Duration::from_secs(3600));
        stats.record("201", Duration::ZERO);
        assert_eq!(stats.total(), 2);
    }
}
