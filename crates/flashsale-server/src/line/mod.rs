//! The waiting line in front of a sale (its rules are in `domain::waiting_room`): where each
//! buyer stands, how far admission has gone, and when each pass runs out. Embedded: in memory,
//! with an append-only journal in the data directory (`memory.rs`, `journal.rs`); cluster: in
//! Redis, one hash tag per sale, each change made by one script (`redis.rs`). One conformance
//! suite holds both to the same behaviour.

mod journal;
mod memory;
mod pass;

pub use self::memory::MemoryLine;
pub use self::pass::{PassSigner, VerifiedPass};

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

use crate::domain::{Admission, AdmissionChange, LineFacts, Sale, SaleId, UserId};
use crate::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("the waiting line is unavailable: {0}")]
    Unavailable(String),
    #[error("the waiting line's records are not valid: {0}")]
    Corrupt(String),
}

/// What a join did, with the buyer's facts afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Joined {
    pub facts: LineFacts,
    /// A new place was handed out (first join, or a re-join after the pass ran out).
    pub placed: bool,
    /// The buyer's pass had run out: the new place is at the end.
    pub pass_expired: bool,
}

pub trait WaitingLine: Send + Sync + 'static {
    /// Puts the buyer in the sale's line, or finds their place. Before `starts_at` (by the
    /// line's time) the place is drawn; later it is the next at the end; a buyer whose pass ran
    /// out goes to the end. A new place is durable when this returns. `None`: the operator has
    /// paused the sale, and nobody joins (atomically with the pause: the line's own record).
    fn join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Joined>, LineError>>;

    /// The buyer's facts, or `None` for a buyer not in the line.
    fn look<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<LineFacts>, LineError>>;

    /// Records that the buyer's pass runs out at `expires_ms`, unless an expiry was recorded
    /// first; returns the one recorded.
    fn record_pass<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        expires_ms: i64,
    ) -> BoxFuture<'a, Result<i64, LineError>>;

    /// The sale's admission as recorded.
    fn admission<'a>(&'a self, sale: &'a Sale) -> BoxFuture<'a, Result<Admission, LineError>>;

    /// Records `change` at `at_ms` (normally the stock gate does, in the step that makes the
    /// change: see `AdmissionLog`); returns the admission in force afterwards.
    fn change_admission<'a>(
        &'a self,
        sale: &'a Sale,
        at_ms: i64,
        change: AdmissionChange,
    ) -> BoxFuture<'a, Result<Admission, LineError>>;
}

/// Where a stock gate in this process records a waiting line's admission changes at the moment
/// they happen, in the order they happen (the last unit taken, stock back, a pause, a new rate).
/// The embedded line is one; a shared gate (Redis) changes its line in the same script instead.
pub trait AdmissionLog: Send + Sync + 'static {
    /// `initial` is the admission to change when none was recorded yet. A failure to record is
    /// the log's to report: the gate's decision stands.
    fn record(&self, sale_id: &SaleId, initial: Admission, at_ms: i64, change: AdmissionChange);
}

/// A sale's admission before anything was recorded (a sale without a room admits nobody).
pub fn initial_admission(sale: &Sale) -> Admission {
    match &sale.waiting_room {
        Some(room) => Admission::initial(sale, room),
        None => Admission {
            base: 0,
            since_ms: sale.starts_at.as_millisecond(),
            admit_per_sec: 0,
            paused: false,
            sold_out: false,
        },
    }
}

/// Bits of a draw: it must fit a double exactly (Redis sorted-set scores).
const DRAW_BITS: u32 = 52;

/// The draw that orders the buyers who joined before the start: a keyed hash of (sale, buyer),
/// so it is unrelated to arrival, the same on every node and at every join, and unknowable to
/// a buyer without the key.
#[derive(Clone)]
pub struct Drawer {
    /// Keyed once: each draw clones the keyed state instead of hashing the key again.
    keyed: Hmac<Sha256>,
}

impl Drawer {
    pub fn new(key: &[u8]) -> Self {
        let keyed = Hmac::<Sha256>::new_from_slice(key)
            .unwrap_or_else(|_| Hmac::<Sha256>::new(&Default::default()));
        Self { keyed }
    }

    pub fn draw(&self, sale: &Sale, user: &UserId) -> u64 {
        let mut mac = self.keyed.clone();
        mac.update(sale.id.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(user.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first) >> (64 - DRAW_BITS)
    }
}
