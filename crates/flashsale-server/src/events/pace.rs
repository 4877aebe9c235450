//! Deliveries yield to buyers. While buyers come at a flash sale's rate, a node's sinks share a
//! small budget of deliveries a second, so the CPU goes to purchases and the events wait in the
//! outbox (bounded by the retention); once the crowd is gone, delivery runs at full speed and
//! catches up. The events' lag grows during a stampede; purchases do not slow for the sinks.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buyer requests a second (purchases and joins) above which the node counts as busy.
pub const BUSY_BUYERS_PER_SEC: u64 = 2_000;
/// Deliveries a second, over all of a node's sinks, while it is busy (the setting
/// `events_busy_deliveries_per_sec`).
pub const BUSY_DELIVERIES_PER_SEC_DEFAULT: u64 = 100;
/// How far back the buyers' rate is measured.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Deliveries that may go at once after a quiet moment.
const BURST: f64 = 50.0;

/// The pacing rule, fed with times and the count of buyer requests so far.
#[derive(Debug)]
pub struct Pacer {
    /// Deliveries a second while busy.
    busy_per_sec: u64,
    sampled_at: Instant,
    sampled: u64,
    busy: bool,
    tokens: f64,
    refilled_at: Instant,
}

impl Pacer {
    pub fn new(now: Instant, buyers: u64, busy_per_sec: u64) -> Self {
        Self {
            busy_per_sec,
            sampled_at: now,
            sampled: buyers,
            busy: false,
            tokens: BURST,
            refilled_at: now,
        }
    }

    /// Takes one delivery's turn: `None` to go now, or how long to wait before asking again.
    pub fn turn(&mut self, now: Instant, buyers: u64) -> Option<Duration> {
        let since = now.saturating_duration_since(self.sampled_at);
        if since >= SAMPLE_EVERY {
            let rate = buyers.saturating_sub(self.sampled) as f64 / since.as_secs_f64();
            self.busy = rate >= BUSY_BUYERS_PER_SEC as f64;
            self.sampled_at = now;
            self.sampled = buyers;
        }
        let per_sec = self.busy_per_sec as f64;
        let refill = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64()
            * per_sec;
        self.tokens = (self.tokens + refill).min(BURST);
        self.refilled_at = now;
        if !self.busy {
            return None;
        }
        if self.busy_per_sec == 0 {
            return Some(SAMPLE_EVERY);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return None;
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / per_sec);
        Some(wait.min(SAMPLE_EVERY))
    }
}

/// A node's pacing, shared by all its sinks' lanes.
pub struct Pace {
    /// Buyer requests so far (the metrics' counters).
    buyers: Box<dyn Fn() -> u64 + Send + Sync>,
    pacer: Mutex<Pacer>,
}

impl Pace {
    pub fn new(buyers: impl Fn() -> u64 + Send + Sync + 'static, busy_per_sec: u64) -> Self {
        let pacer = Pacer::new(Instant::now(), buyers(), busy_per_sec);
        Self {
            buyers: Box::new(buyers),
            pacer: Mutex::new(pacer),
        }
    }

    /// Resolves when one delivery may go.
    pub async fn turn(&self) {
        loop {
            let wait = {
                let mut pacer = self.pacer.lock().unwrap_or_else(|p| p.into_inner());
                pacer.turn(Instant::now(), (self.buyers)())
            };
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(1);

    /// Most deliveries a lane would make in a millisecond.
    const EAGER: u64 = 1_000;

    /// Deliveries let through in one second of `buyers_per_sec`, with lanes asking up to
    /// `EAGER` times each millisecond.
    fn deliveries_in_a_second(buyers_per_sec: u64, busy_per_sec: u64) -> u64 {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 0, busy_per_sec);
        let mut delivered = 0;
        // A second of warming up measures the rate; the next second is counted.
        for ms in 1..=2_000u64 {
            let now = start + TICK * ms as u32;
            let buyers = buyers_per_sec * ms / 1_000;
            for _ in 0..EAGER {
                if pacer.turn(now, buyers).is_some() {
                    break;
                }
                if ms > 1_000 {
                    delivered += 1;
                }
            }
        }
        delivered
    }

    #[test]
    fn a_quiet_node_delivers_without_waiting() {
        assert_eq!(
            deliveries_in_a_second(BUSY_BUYERS_PER_SEC / 2, 0),
            EAGER * 1_000
        );
    }

    #[test]
    fn a_busy_node_holds_deliveries_to_the_paced_rate() {
        for paced in [BUSY_DELIVERIES_PER_SEC_DEFAULT, 2_000] {
            let delivered = deliveries_in_a_second(50_000, paced);
            assert!(
                (paced - paced / 20..=paced + BURST as u64).contains(&delivered),
                "{delivered} deliveries in a busy second, {paced} allowed"
            );
        }
        assert_eq!(deliveries_in_a_second(50_000, 0), 0);
    }

    #[test]
    fn delivery_speeds_up_again_once_the_crowd_is_gone() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 0, BUSY_DELIVERIES_PER_SEC_DEFAULT);
        let busy = start + SAMPLE_EVERY;
        while pacer.turn(busy, 10_000).is_none() {}
        assert!(pacer.turn(busy, 10_000).is_some());
        let calm = busy + SAMPLE_EVERY;
        for _ in 0..10_000 {
            assert_eq!(pacer.turn(calm, 10_010), None);
        }
    }
}
