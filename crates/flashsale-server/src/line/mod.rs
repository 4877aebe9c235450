//! The waiting line in front of a sale (its rules are in `domain::waiting_room`): where each
//! buyer stands, how far admission has gone, and when each pass runs out. Embedded: in memory,
//! with an append-only journal in the data directory (`memory.rs`, `journal.rs`); cluster: in
//! Redis, one hash tag per sale, each change made by one script (`redis.rs`). One conformance
//! suite holds both to the same behaviour.

mod checkpoint_codec;
mod journal;
mod log_signer;
mod memory;
mod pass;

pub(crate) use self::checkpoint_codec::{decode as decode_checkpoint, encode as encode_checkpoint};
pub use self::log_signer::{signature_valid, InvalidLogKey, LogSigner};
pub use self::memory::MemoryLine;
pub use self::pass::{PassSigner, VerifiedPass};

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

use crate::domain::{
    Admission, AdmissionChange, Checkpoint, Draw, LineFacts, Placed, Sale, SaleId, UserId,
};
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
    /// Puts the buyer in the sale's line, or finds their place. A join whose request arrived
    /// before `starts_at` is drawn, even when the line gets to it after the start (`arrived`:
    /// the clock's reading when the request reached the server, taken no later than the line's
    /// now nor more than `domain::ARRIVAL_SLACK_MS` before it); a later one gets the next place
    /// at the end; a buyer whose pass ran out goes to the end. A new place is durable when this
    /// returns. `None`: the operator has paused the sale, and nobody joins (atomically with the
    /// pause: the line's own record).
    fn join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Timestamp,
        arrived: Timestamp,
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

    /// The places after the first `after`, at most `limit`, in place order (the draw's first,
    /// then the others by number). Call once the draw has closed (`ARRIVAL_SLACK_MS` after the
    /// start): before, a late drawn join could still take a place among them.
    fn places<'a>(
        &'a self,
        sale: &'a Sale,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Places, LineError>>;

    /// Appends a signed checkpoint to the sale's admission log, durably, unless the last one is
    /// less than `spacing_ms` older or says more (`checkpoint_follows`), atomically with that
    /// check (every node of a cluster offers checkpoints).
    fn add_checkpoint<'a>(
        &'a self,
        sale: &'a Sale,
        checkpoint: &'a Checkpoint,
        spacing_ms: i64,
    ) -> BoxFuture<'a, Result<CheckpointAdded, LineError>>;

    /// The sale's checkpoints, oldest first.
    fn checkpoints<'a>(
        &'a self,
        sale: &'a Sale,
    ) -> BoxFuture<'a, Result<Vec<Checkpoint>, LineError>>;
}

/// A stretch of a line's places, in place order, and how many places it has given out in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Places {
    pub total: u64,
    pub places: Vec<Placed>,
}

/// Why a checkpoint was not added: the last one is too recent, or it says more than this one (a
/// node that read the line a moment earlier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointAdded {
    Added,
    TooSoon,
    Behind,
}

/// Whether `next` may follow `last` in a line's checkpoints, `spacing_ms` at least apart.
pub fn checkpoint_follows(
    last: Option<&Checkpoint>,
    next: &Checkpoint,
    spacing_ms: i64,
) -> CheckpointAdded {
    match last {
        Some(last) if next.n < last.n || next.admitted_through < last.admitted_through => {
            CheckpointAdded::Behind
        }
        Some(last) if next.time_ms < last.time_ms.saturating_add(spacing_ms) => {
            CheckpointAdded::TooSoon
        }
        _ => CheckpointAdded::Added,
    }
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

/// Bits of a draw's score: it must fit a double exactly (Redis sorted-set scores).
const SCORE_BITS: u32 = 52;

/// The draw's first 52 bits: a Redis sorted-set score (a double holds them exactly). Ties are
/// broken by the whole draw (see `redis/line/`).
pub fn draw_score(draw: &Draw) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&draw[..8]);
    u64::from_be_bytes(first) >> (64 - SCORE_BITS)
}

/// The draw of a sale made before seeds, as its 52-bit number (what its records and Redis
/// scores hold) placed in a `Draw` so that both kinds order alike: its first 52 bits.
pub fn draw_of_keyed(keyed: u64) -> Draw {
    let mut draw = [0u8; 32];
    draw[..8].copy_from_slice(&(keyed << (64 - SCORE_BITS)).to_be_bytes());
    draw
}

/// The draw that orders the buyers who joined before the start: the sale's committed draw
/// (`domain::DrawSeed::draw`), or, for a sale made before seeds, a keyed hash of (sale, buyer)
/// under the server's key. Either is unrelated to arrival, the same on every node and at every
/// join, and unknowable to a buyer before the start.
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

    pub fn draw(&self, sale: &Sale, user: &UserId) -> Draw {
        match sale.waiting_room.and_then(|room| room.draw_seed) {
            Some(seed) => seed.draw(&sale.id, user),
            None => draw_of_keyed(self.keyed_draw(sale, user)),
        }
    }

    /// The draw of a sale made before seeds (52 bits), as it always was.
    fn keyed_draw(&self, sale: &Sale, user: &UserId) -> u64 {
        let mut mac = self.keyed.clone();
        mac.update(sale.id.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(user.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first) >> (64 - SCORE_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DrawSeed, WaitingRoom};

    fn room_sale(seed: Option<DrawSeed>) -> Sale {
        let mut sale = Sale::of_stock_for_test(1);
        sale.id = SaleId::parse("sale-1").unwrap();
        sale.waiting_room = Some(WaitingRoom {
            admit_per_sec: 1,
            pass_ttl_secs: 60,
            opens_before_secs: 0,
            draw_seed: seed,
        });
        sale
    }

    #[test]
    fn a_seeded_sale_draws_by_its_seed_and_scores_by_the_first_52_bits() {
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = i as u8;
        }
        let sale = room_sale(Some(DrawSeed::from_bytes(bytes)));
        let alice = UserId::parse("alice").unwrap();
        let draw = Drawer::new(b"key").draw(&sale, &alice);
        // HMAC-SHA256(bytes 0..32, "sale-1\nalice"), computed with Python (see `domain::draw`).
        assert_eq!(
            crate::domain::hex(&draw),
            "03454c7eaaacfc1956e18bf5e7faf3d41f5f621686346745391cc19bcf8d1a23"
        );
        assert_eq!(draw_score(&draw), 0x03454c7eaaacf);
        assert_eq!(
            Drawer::new(b"another key").draw(&sale, &alice),
            draw,
            "the server's key plays no part"
        );
    }

    #[test]
    fn a_sale_of_before_seeds_keeps_its_keyed_draw_and_score() {
        let sale = room_sale(None);
        let drawer = Drawer::new(b"key");
        let alice = UserId::parse("alice").unwrap();
        let keyed = drawer.keyed_draw(&sale, &alice);
        assert!(keyed < 1 << SCORE_BITS);
        assert_eq!(draw_score(&drawer.draw(&sale, &alice)), keyed);
        // Ordered alike: the keyed numbers' order is the draws' order.
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(
            keyed.cmp(&drawer.keyed_draw(&sale, &bob)),
            drawer.draw(&sale, &alice).cmp(&drawer.draw(&sale, &bob))
        );
    }
}
