//! The cluster's one clock: Redis's. Every node reads the time from Redis (`TIME`) once a second
//! and runs its own monotonic clock from that reading in between, so node clocks may be off by
//! any amount without moving a sale's window, an order's payment deadline or its expiry: the
//! purchase script decides the window and the order's times with `TIME` itself, and a node's
//! expiry sweep and payment check use this clock. What skew remains is the reading's error (half
//! a round trip to Redis, sub-millisecond on a LAN) plus the node's clock drift over one second.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use redis::aio::ConnectionManager;

use crate::clock::Clock;
use crate::gate::GateError;

const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// A reading whose round trip took longer than this is kept only when nothing better came for
/// `STALE_AFTER`: a slow reply says little about when Redis read its clock.
const ROUND_TRIP_TRUSTED: Duration = Duration::from_millis(20);
const STALE_AFTER: Duration = Duration::from_secs(10);
/// What a node leaves to Redis at each edge of a sale's window (see `Clock::uncertainty`).
const UNCERTAINTY: SignedDuration = SignedDuration::from_secs(1);

#[derive(Clone, Copy)]
struct Reading {
    redis_ms: i64,
    at: Instant,
    round_trip: Duration,
}

pub struct RedisClock {
    reading: Mutex<Reading>,
}

async fn read(connection: &mut ConnectionManager) -> Result<Reading, GateError> {
    let sent = Instant::now();
    let (seconds, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(connection)
        .await
        .map_err(|error| GateError::Unavailable(format!("Redis TIME: {error}")))?;
    let round_trip = sent.elapsed();
    Ok(Reading {
        redis_ms: seconds * 1000 + micros / 1000,
        // Redis read its clock about half-way through the round trip.
        at: sent + round_trip / 2,
        round_trip,
    })
}

impl RedisClock {
    /// Reads Redis's clock once, then keeps reading it in the background for as long as the
    /// returned clock lives.
    pub async fn start(redis: &super::Redis) -> Result<Arc<Self>, GateError> {
        let mut connection = redis.manager();
        let clock = Arc::new(Self {
            reading: Mutex::new(read(&mut connection).await?),
        });
        tokio::spawn(resync(Arc::downgrade(&clock), connection));
        Ok(clock)
    }

    fn keep(&self, fresh: Reading) {
        let mut reading = self
            .reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if fresh.round_trip <= ROUND_TRIP_TRUSTED.max(reading.round_trip)
            || reading.at.elapsed() > STALE_AFTER
        {
            *reading = fresh;
        }
    }
}

async fn resync(clock: Weak<RedisClock>, mut connection: ConnectionManager) {
    loop {
        tokio::time::sleep(RESYNC_EVERY).await;
        let Some(clock) = clock.upgrade() else {
            return;
        };
        match read(&mut connection).await {
            Ok(reading) => clock.keep(reading),
            Err(error) => {
                tracing::warn!(%error, "could not read Redis's clock; keeping the last reading")
            }
        }
    }
}

impl Clock for RedisClock {
    fn now(&self) -> Timestamp {
        let reading = *self
            .reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let since = i64::try_from(reading.at.elapsed().as_millis()).unwrap_or(i64::MAX);
        Timestamp::from_millisecond(reading.redis_ms.saturating_add(since))
            .unwrap_or(Timestamp::MAX)
    }

    fn uncertainty(&self) -> SignedDuration {
        UNCERTAINTY
    }
}
