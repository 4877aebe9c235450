//! Where in an open-loop run the slow requests were: requests grouped into 100-ms windows of the
//! run by when each was due, each window keeping its count, how many took longer than `LATE`,
//! and its slowest. A percentile says how long the tail is; the windows say whether it is spread
//! over the run (the server's steady cost) or gathered in a few moments (the start, a burst of
//! other work on the machine). Each window also counts the requests the client itself sent more
//! than `SENT_LATE` late — after they were due and their connection was free (a connection still
//! waiting for a slow reply delays its next request: that is the server's lateness): their
//! latency counts from when they were due, so a client that falls behind would show as a slow
//! server unless it says so.

use std::time::Duration;

use serde::Serialize;

/// The width of a window.
pub const WINDOW: Duration = Duration::from_millis(100);
/// A request slower than this is late (the open-loop p99 target).
pub const LATE: Duration = Duration::from_millis(5);
/// A request the client sent more than this after it was due was late leaving the client: the
/// client's timer wakes a request at the next whole millisecond after it is due (tokio's timer
/// wheel ticks in milliseconds), so up to 1 ms is the timer, not a client falling behind.
pub const SENT_LATE: Duration = Duration::from_millis(2);

#[derive(Clone, Copy, Default)]
struct Window {
    requests: u32,
    late: u32,
    slowest_micros: u32,
    sent_late: u32,
}

#[derive(Clone, Default)]
pub struct Timeline {
    windows: Vec<Window>,
}

/// One window, for the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WindowSummary {
    /// Where the window starts, from the start of the phase.
    pub at_ms: u64,
    pub requests: u32,
    /// Requests slower than `LATE`.
    pub late: u32,
    pub slowest_ms: f64,
    /// Requests the client sent more than `SENT_LATE` after they were due.
    pub sent_late: u32,
}

impl Timeline {
    /// Records a request that was due `offset` into the phase, left the client `sent_after`
    /// it was both due and free to go (its connection's previous reply in), and took `latency`
    /// from its due time.
    pub fn record(&mut self, offset: Duration, sent_after: Duration, latency: Duration) {
        let index = usize::try_from(offset.as_millis() / WINDOW.as_millis()).unwrap_or(usize::MAX);
        // A phase longer than the windows can index is not a run anyone measures; its tail is
        // folded into the last window rather than allocating without bound.
        let index = index.min(1 << 20);
        if self.windows.len() <= index {
            self.windows.resize(index + 1, Window::default());
        }
        let window = &mut self.windows[index];
        window.requests = window.requests.saturating_add(1);
        if latency > LATE {
            window.late = window.late.saturating_add(1);
        }
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        window.slowest_micros = window.slowest_micros.max(micros);
        if sent_after > SENT_LATE {
            window.sent_late = window.sent_late.saturating_add(1);
        }
    }

    pub fn merge(&mut self, other: &Timeline) {
        if self.windows.len() < other.windows.len() {
            self.windows.resize(other.windows.len(), Window::default());
        }
        for (mine, theirs) in self.windows.iter_mut().zip(&other.windows) {
            mine.requests = mine.requests.saturating_add(theirs.requests);
            mine.late = mine.late.saturating_add(theirs.late);
            mine.slowest_micros = mine.slowest_micros.max(theirs.slowest_micros);
            mine.sent_late = mine.sent_late.saturating_add(theirs.sent_late);
        }
    }

    /// Requests the client sent more than `SENT_LATE` after they were due, over the phase.
    pub fn sent_late(&self) -> u64 {
        self.windows
            .iter()
            .map(|window| u64::from(window.sent_late))
            .sum()
    }

    /// How many windows had at least one late request.
    pub fn windows_with_late(&self) -> usize {
        self.windows.iter().filter(|window| window.late > 0).count()
    }

    /// The `count` windows with the most late requests (ties: the slowest), in time order.
    pub fn worst(&self, count: usize) -> Vec<WindowSummary> {
        let mut indexed: Vec<(usize, &Window)> = self
            .windows
            .iter()
            .enumerate()
            .filter(|(_, window)| window.late > 0)
            .collect();
        indexed.sort_by_key(|(_, window)| std::cmp::Reverse((window.late, window.slowest_micros)));
        indexed.truncate(count);
        indexed.sort_by_key(|(index, _)| *index);
        indexed
            .into_iter()
            .map(|(index, window)| WindowSummary {
                at_ms: index as u64 * WINDOW.as_millis() as u64,
                requests: window.requests,
                late: window.late,
                slowest_ms: f64::from(window.slowest_micros) / 1000.0,
                sent_late: window.sent_late,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_requests_are_counted_in_the_window_they_were_due() {
        let mut first = Timeline::default();
        let mut second = Timeline::default();
        for millis in 0..1000 {
            first.record(
                Duration::from_millis(millis),
                Duration::from_micros(300),
                Duration::from_micros(900),
            );
        }
        // The first of these left the client 25 ms late: most of its 30 ms were the client's.
        let (on_time, behind) = (Duration::from_micros(800), Duration::from_millis(25));
        second.record(
            Duration::from_millis(420),
            behind,
            Duration::from_millis(30),
        );
        second.record(
            Duration::from_millis(480),
            on_time,
            Duration::from_millis(6),
        );
        second.record(
            Duration::from_millis(910),
            on_time,
            Duration::from_millis(12),
        );
        first.merge(&second);
        assert_eq!(first.windows_with_late(), 2);
        let worst = first.worst(5);
        assert_eq!(
            worst,
            vec![
                WindowSummary {
                    at_ms: 400,
                    requests: 102,
                    late: 2,
                    slowest_ms: 30.0,
                    sent_late: 1
                },
                WindowSummary {
                    at_ms: 900,
                    requests: 101,
                    late: 1,
                    slowest_ms: 12.0,
                    sent_late: 0
                },
            ]
        );
        assert_eq!(first.worst(1)[0].at_ms, 400);
        assert_eq!(first.sent_late(), 1);
    }

    #[test]
    fn a_run_with_no_late_request_has_no_worst_window() {
        let mut timeline = Timeline::default();
        timeline.record(Duration::from_secs(3), SENT_LATE, LATE);
        assert!(timeline.worst(5).is_empty());
        assert_eq!(timeline.windows_with_late(), 0);
        assert_eq!(timeline.sent_late(), 0);
    }
}
