//! The admission log of a waiting line: every place given out, in place order, hash-chained
//! (an entry's hash covers the previous one's, its place, its buyer's hash and its draw), and
//! checkpoints that say, at least every second while admission moves, how far the line was placed
//! and admitted, signed by the installation's key. The places of the draw are final once the draw
//! closes (`ARRIVAL_SLACK_MS` after `starts_at`: no join that arrived before the start can be placed
//! later), so the log lists places from then on; each later place is final when it is given out.
//!
//! An entry's admission time is not in its hash (it is known later): it follows from the
//! checkpoints, each of which carries the admission rule in force (`Admission`), so the time a
//! place was reached is computed, not recorded.

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{hex, Admission, Draw, SaleId, UserId};

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// What a checkpoint's signature covers, before the sale id.
pub const CHECKPOINT_DOMAIN: &str = "flashsale-checkpoint";

/// SHA-256 of the buyer id: how the public log names a buyer.
pub fn buyer_hash(user: &UserId) -> [u8; 32] {
    Sha256::digest(user.as_str().as_bytes()).into()
}

/// SHA-256 of `prev_hash + "\n" + n + "\n" + buyer_hash + "\n" + (draw or "-")`, all in hex.
pub fn entry_hash(prev: &[u8; 32], n: u64, buyer: &[u8; 32], draw: Option<&Draw>) -> [u8; 32] {
    let draw = draw.map_or_else(|| "-".to_owned(), |draw| hex(draw));
    let text = format!("{}\n{n}\n{}\n{draw}", hex(prev), hex(buyer));
    Sha256::digest(text.as_bytes()).into()
}

/// A checkpoint's time as the log shows it and its signature covers it (RFC 3339, UTC).
pub fn time_text(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |at| at.to_string())
}

/// The text a checkpoint's signature covers.
pub fn checkpoint_text(
    sale: &str,
    n: u64,
    hash: &[u8; 32],
    admitted_through: u64,
    time: &str,
) -> String {
    format!(
        "{CHECKPOINT_DOMAIN}\n{sale}\n{n}\n{}\n{admitted_through}\n{time}",
        hex(hash)
    )
}

/// One place given out, as the line keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub user: UserId,
    /// The buyer's draw; `None` for a place at the end (a join after the start).
    pub draw: Option<Draw>,
    /// When the join's request arrived (`None` in records of before the log).
    pub joined_ms: Option<i64>,
}

/// One entry of the public log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub n: u64,
    pub buyer_hash: [u8; 32],
    pub draw: Option<Draw>,
    pub joined_ms: Option<i64>,
    pub admitted_ms: Option<i64>,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl LogEntry {
    /// The entry of place `n` after the entry whose hash is `prev`.
    pub fn of(n: u64, prev: [u8; 32], placed: &Placed) -> Self {
        let buyer = buyer_hash(&placed.user);
        Self {
            n,
            buyer_hash: buyer,
            draw: placed.draw,
            joined_ms: placed.joined_ms,
            admitted_ms: None,
            prev_hash: prev,
            hash: entry_hash(&prev, n, &buyer, placed.draw.as_ref()),
        }
    }
}

/// A checkpoint: at `time_ms`, the line had `n` places (the last one's hash `hash`) and had
/// admitted the first `admitted_through`, under `admission`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub n: u64,
    pub hash: [u8; 32],
    pub admitted_through: u64,
    pub time_ms: i64,
    pub admission: Admission,
    /// Ed25519 over `checkpoint_text`.
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The checkpoint of a line of `n` places, the last one's hash `hash`, at `time_ms` (not
    /// signed yet).
    pub fn at(n: u64, hash: [u8; 32], time_ms: i64, admission: Admission) -> Self {
        Self {
            n,
            hash,
            admitted_through: admission.admitted(time_ms).min(n),
            time_ms,
            admission,
            signature: Vec::new(),
        }
    }

    pub fn text(&self, sale: &SaleId) -> String {
        checkpoint_text(
            sale.as_str(),
            self.n,
            &self.hash,
            self.admitted_through,
            &time_text(self.time_ms),
        )
    }

    /// Whether this checkpoint would say anything `last` did not.
    pub fn tells_more_than(&self, last: &Checkpoint) -> bool {
        self.n != last.n
            || self.admitted_through != last.admitted_through
            || self.admission != last.admission
    }
}

/// The earliest time at which `admission` had admitted `place`; `None` when it never does
/// (stopped, or no rate). `admitted(t) = base + floor(rate × (t - since) / 1000)`, so the time is
/// `since + ceil((place - base) × 1000 / rate)`.
pub fn reached_ms(admission: &Admission, place: u64) -> Option<i64> {
    if place <= admission.base {
        return Some(admission.since_ms);
    }
    if admission.is_stopped() || admission.admit_per_sec == 0 {
        return None;
    }
    let more = u128::from(place - admission.base) * 1000;
    let elapsed = more.div_ceil(u128::from(admission.admit_per_sec));
    i64::try_from(elapsed)
        .ok()
        .map(|elapsed| admission.since_ms.saturating_add(elapsed))
}

/// When place `n` (joined at `joined_ms`) was admitted, by the checkpoints (in time order):
/// after the last checkpoint that had not admitted it, no later than the first that had, at the
/// moment the rule in force reached it (or it joined, when it came after its turn). `None` until
/// a checkpoint admitted it.
pub fn admitted_ms(n: u64, joined_ms: Option<i64>, checkpoints: &[Checkpoint]) -> Option<i64> {
    let first = checkpoints.partition_point(|c| c.admitted_through < n);
    let admitting = checkpoints.get(first)?;
    let before = first.checked_sub(1).map(|at| &checkpoints[at]);
    // A place the rule in force had already passed at its change was reached by the one before.
    let rule = match before {
        Some(before) if n <= admitting.admission.base => &before.admission,
        _ => &admitting.admission,
    };
    let reached = reached_ms(rule, n).unwrap_or(admitting.time_ms);
    let at = reached.max(joined_ms.unwrap_or(reached));
    let floor = before.map_or(i64::MIN, |before| before.time_ms.saturating_add(1));
    Some(at.max(floor).min(admitting.time_ms))
}

/// The latest time at which place `n` was surely not admitted yet: the time of the last
/// checkpoint that had not admitted it (`None` when the first one had).
pub fn not_admitted_by(n: u64, checkpoints: &[Checkpoint]) -> Option<i64> {
    let first = checkpoints.partition_point(|c| c.admitted_through < n);
    first
        .checked_sub(1)
        .map(|before| checkpoints[before].time_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(base: u64, since_ms: i64, rate: u32) -> Admission {
        Admission {
            base,
            since_ms,
            admit_per_sec: rate,
            paused: false,
            sold_out: false,
        }
    }

    // python3 -c 'import hashlib; b=hashlib.sha256(b"alice").hexdigest();
    //   print(b); print(hashlib.sha256(("0"*64+"\n1\n"+b+"\n-").encode()).hexdigest())'
    #[test]
    fn an_entry_hash_matches_a_fixed_vector() {
        let alice = UserId::parse("alice").unwrap();
        let buyer = buyer_hash(&alice);
        assert_eq!(
            hex(&buyer),
            "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"
        );
        assert_eq!(
            hex(&entry_hash(&GENESIS, 1, &buyer, None)),
            "165435d7822cfea67b5399a05cf55c9ee83257964b3b680de2f003091904cdaa"
        );
    }

    #[test]
    fn a_place_is_reached_when_the_rate_gets_to_it() {
        let rule = admission(10, 1_000, 4);
        assert_eq!(reached_ms(&rule, 10), Some(1_000));
        assert_eq!(reached_ms(&rule, 11), Some(1_250));
        assert_eq!(reached_ms(&rule, 14), Some(2_000));
        for place in 11..40 {
            let at = reached_ms(&rule, place).unwrap();
            assert!(rule.admitted(at) >= place, "{place}");
            assert!(rule.admitted(at - 1) < place, "{place}");
        }
        let stopped = Admission {
            paused: true,
            ..rule
        };
        assert_eq!(reached_ms(&stopped, 11), None);
    }

    #[test]
    fn an_admission_time_lies_between_the_checkpoints_around_it() {
        let rule = admission(0, 10_000, 2);
        let mut checkpoints = Vec::new();
        for time in [10_000, 11_000, 12_000, 13_000] {
            checkpoints.push(Checkpoint::at(5, GENESIS, time, rule));
        }
        assert_eq!(checkpoints[3].admitted_through, 5);
        assert_eq!(admitted_ms(1, Some(1), &checkpoints), Some(10_500));
        assert_eq!(admitted_ms(2, Some(1), &checkpoints), Some(11_000));
        assert_eq!(admitted_ms(5, Some(1), &checkpoints), Some(12_500));
        assert_eq!(admitted_ms(6, Some(1), &checkpoints), None);
        assert_eq!(not_admitted_by(5, &checkpoints), Some(12_000));
        // A buyer who joined after their turn is admitted when they joined.
        assert_eq!(admitted_ms(5, Some(12_900), &checkpoints), Some(12_900));
    }
}
