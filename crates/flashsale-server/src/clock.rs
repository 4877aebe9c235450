//! Where "now" comes from. The domain never reads the clock; the service asks this trait, so
//! tests can move time by hand. An embedded server uses the system clock; a cluster node uses
//! Redis's (`redis::RedisClock`), one clock for every node.

use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

pub trait Clock: Send + Sync + 'static {
    /// The current time, to the millisecond (the precision the stores keep).
    fn now(&self) -> Timestamp;

    /// How far `now` may be from the clock that decides a sale's window (the gate's). Checks
    /// made here leave that much at each edge to the gate.
    fn uncertainty(&self) -> SignedDuration {
        SignedDuration::ZERO
    }

    /// The reading the clock had at `instant`, a moment of the recent past: now, less the time
    /// since then (the system's and Redis's clocks move with real time).
    fn at_instant(&self, instant: std::time::Instant) -> Timestamp {
        let now = self.now();
        SignedDuration::try_from(instant.elapsed())
            .ok()
            .and_then(|since| now.checked_sub(since).ok())
            .unwrap_or(now)
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now)
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: AtomicI64::new(start.as_millisecond()),
        }
    }

    pub fn advance(&self, by: SignedDuration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(self.millis.load(Ordering::SeqCst)).unwrap_or(Timestamp::MAX)
    }

    /// The manual clock moves only when told: a moment ago it read what it reads now.
    fn at_instant(&self, _instant: std::time::Instant) -> Timestamp {
        self.now()
    }
}

/// The beat of a background task: ticks every `period` of wall time until `stop` turns true.
pub struct StoppableTicker {
    interval: tokio::time::Interval,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl StoppableTicker {
    pub fn new(period: std::time::Duration, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { interval, stop }
    }

    /// Waits for the next tick; `false` once the task should stop.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => !*self.stop.borrow(),
            _ = self.stop.changed() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_of_a_moment_ago_is_now_less_the_time_since_but_a_manual_clock_stands_still() {
        let ago = std::time::Instant::now()
            .checked_sub(std::time::Duration::from_millis(1500))
            .expect("the machine has been up 1.5 s");
        let system = SystemClock;
        let (before, then, after) = (system.now(), system.at_instant(ago), system.now());
        let millis = |from: Timestamp, to: Timestamp| to.as_millisecond() - from.as_millisecond();
        assert!(
            (1499..=1600).contains(&millis(then, before)),
            "{then} vs {before}"
        );
        assert!(millis(then, after) >= 1499);
        let manual = ManualClock::new("2026-12-01T12:00:00Z".parse().unwrap());
        assert_eq!(manual.at_instant(ago), manual.now());
    }
}
