//! The embedded line: per sale, each buyer's ticket in a map keyed by a 64-bit keyed hash of the
//! buyer id (drawn, or a sequence number at the end), the pre-start draws in a vector sorted once
//! after the start (so a place is a binary search: O(log n)) and a short sorted one of the draws
//! of joins that arrived before the start and were placed after the sort, the passes handed out
//! and the admission progress. A drawn buyer's draw is computed again from the sale and the buyer
//! when their place is read. About 70 bytes per waiting buyer; every change is written to the
//! journal before it is made, and replayed at start.
//!
//! The vectors keep a draw's first 128 bits (16 bytes instead of 32: whole draws cost about 45
//! bytes more per waiting buyer, with the vector's spare capacity). Two draws of one line share
//! them with a chance of n²/2^129 (10^-25 for 10^7 buyers): the order is the whole draws' order,
//! Redis's, but for an event that does not happen.
//!
//! Two buyer ids with the same 64-bit hash would share a place: with 10^7 buyers in one line the
//! odds are about 3 in a million, and the pass still names the buyer, so nobody buys for another.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::journal::{self, Journal};
use super::{
    checkpoint_codec, checkpoint_follows, draw_of_keyed, initial_admission, AdmissionLog,
    CheckpointAdded, Drawer, Joined, LineError, Places, WaitingLine,
};
use crate::domain::{
    arrival_ms, Admission, AdmissionChange, Checkpoint, Draw, LineFacts, Placed, Sale, SaleId,
    UserId,
};
use crate::BoxFuture;

const JOURNAL_FILE: &str = "waiting-line.journal";
const SEQUENCE_FLAG: u64 = 1 << 63;
/// The ticket of a drawn buyer (the place comes from the draw, computed again when needed).
const DRAWN_TICKET: u64 = 0;
/// A place at the end (its number with `SEQUENCE_FLAG`), or, in lines written before the
/// 32-byte draws, a drawn place by its 52-bit keyed draw.
const JOINED: u8 = 1;
const PASS: u8 = 2;
const ADMISSION: u8 = 3;
/// A drawn place: its arrival (ms) as the number (0 in lines of before the log), the whole
/// draw, then the buyer.
const DRAWN: u8 = 4;
/// A place at the end: its number with `SEQUENCE_FLAG`, its arrival (ms, 8 bytes), the buyer.
const JOINED_AT: u8 = 5;
/// A checkpoint of the admission log (`checkpoint_codec`).
const CHECKPOINT: u8 = 6;

/// What the line orders drawn buyers by: the draw's first 128 bits (see the module's note).
fn prefix(draw: &Draw) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&draw[..16]);
    u128::from_be_bytes(first)
}

/// The map's keys are already hashes: use them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type ByBuyer<V> = HashMap<u64, V, BuildHasherDefault<Identity>>;

#[derive(Default)]
struct SaleLine {
    tickets: ByBuyer<u64>,
    draws: Vec<u128>,
    sorted: bool,
    /// Draws placed after `draws` was sorted (joins that arrived before the start and were
    /// placed after it): kept sorted by insertion, few (their arrival is at most
    /// `ARRIVAL_SLACK_MS` old), so the big vector is never sorted again.
    late_draws: Vec<u128>,
    last_sequence: u64,
    admission: Option<Admission>,
    passes: ByBuyer<i64>,
    checkpoints: Vec<Checkpoint>,
}

/// Where a sale's places are in the journal, in place order, found by reading the journal once
/// the draw has closed and then only what was written since: 8 bytes a place.
#[derive(Default)]
struct Roll {
    scanned_to: u64,
    /// The drawn places' records in draw order, set at the first read after the draw closed.
    drawn: Option<Vec<u64>>,
    /// Drawn places' (draw, record) seen before the draw was read in order.
    unsorted: Vec<(Draw, u64)>,
    /// The places at the end, in number order.
    ends: Vec<u64>,
}

impl SaleLine {
    fn drawn(&self) -> u64 {
        (self.draws.len() + self.late_draws.len()) as u64
    }

    /// `draw`: the buyer's, needed for a drawn ticket after the start.
    fn place(
        &mut self,
        ticket: u64,
        draw: Option<&Draw>,
        now_ms: i64,
        starts_ms: i64,
    ) -> Option<u64> {
        if ticket & SEQUENCE_FLAG != 0 {
            return Some(self.drawn() + (ticket & !SEQUENCE_FLAG));
        }
        if now_ms < starts_ms {
            return None;
        }
        if !self.sorted {
            self.draws.sort_unstable();
            self.sorted = true;
        }
        let draw = &prefix(draw?);
        let ahead = self.draws.partition_point(|other| other < draw)
            + self.late_draws.partition_point(|other| other < draw);
        Some(ahead as u64 + 1)
    }

    fn facts(
        &mut self,
        sale: &Sale,
        buyer: u64,
        draw: Option<&Draw>,
        now_ms: i64,
    ) -> Option<LineFacts> {
        let ticket = *self.tickets.get(&buyer)?;
        Some(LineFacts {
            now_ms,
            place: self.place(ticket, draw, now_ms, sale.starts_at.as_millisecond()),
            admission: self.admission_or(initial_admission(sale)),
            pass_expires_ms: self.passes.get(&buyer).copied(),
        })
    }

    /// The recorded admission, or `initial` when none was; a record of an earlier version has
    /// no rate (0) and runs at the room's.
    fn admission_or(&self, initial: Admission) -> Admission {
        match self.admission {
            Some(admission) if admission.admit_per_sec == 0 => Admission {
                admit_per_sec: initial.admit_per_sec,
                ..admission
            },
            Some(admission) => admission,
            None => initial,
        }
    }

    /// A place at the end (`ticket` with `SEQUENCE_FLAG`), or a drawn one (`draw`).
    fn apply_ticket(&mut self, buyer: u64, ticket: u64, draw: Option<Draw>) {
        match draw {
            Some(draw) if ticket & SEQUENCE_FLAG == 0 => {
                let draw = prefix(&draw);
                if self.sorted {
                    let at = self.late_draws.partition_point(|other| *other < draw);
                    self.late_draws.insert(at, draw);
                } else {
                    self.draws.push(draw);
                }
            }
            _ => {
                self.last_sequence = self.last_sequence.max(ticket & !SEQUENCE_FLAG);
                self.passes.remove(&buyer);
            }
        }
        self.tickets.insert(buyer, ticket);
    }
}

pub struct MemoryLine {
    lines: Mutex<HashMap<SaleId, SaleLine>>,
    journal: Journal,
    rolls: Arc<Rolls>,
    hasher: RandomState,
    drawer: Drawer,
}

fn payload(sale: &SaleId, number: u64, user: Option<&UserId>, extra: &[u8]) -> Vec<u8> {
    let sale = sale.as_str().as_bytes();
    let mut bytes = Vec::with_capacity(1 + sale.len() + 8 + extra.len() + 64);
    bytes.push(u8::try_from(sale.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(sale);
    bytes.extend_from_slice(&number.to_le_bytes());
    bytes.extend_from_slice(extra);
    if let Some(user) = user {
        bytes.extend_from_slice(user.as_str().as_bytes());
    }
    bytes
}

/// An admission record's rest: `since (8), sold out (1)` as earlier versions wrote it (their
/// only stop was a sell-out, and the rate was the room's), then `paused (1), rate (4)`.
fn parse_admission(base: u64, rest: &[u8]) -> Option<Admission> {
    let since_ms = i64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let sold_out = *rest.get(8)? != 0;
    let (paused, admit_per_sec) = match rest.len() {
        9 => (false, 0),
        14 => (
            rest[9] != 0,
            u32::from_le_bytes(rest.get(10..14)?.try_into().ok()?),
        ),
        _ => return None,
    };
    Some(Admission {
        base,
        since_ms,
        admit_per_sec,
        paused,
        sold_out,
    })
}

fn admission_bytes(sale: &SaleId, admission: &Admission) -> Vec<u8> {
    let mut extra = admission.since_ms.to_le_bytes().to_vec();
    extra.push(u8::from(admission.sold_out));
    extra.push(u8::from(admission.paused));
    extra.extend_from_slice(&admission.admit_per_sec.to_le_bytes());
    payload(sale, admission.base, None, &extra)
}

/// A time as a record's number (times before 1970 are not recorded: 0 is "unknown").
fn as_number(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// The place a record of the journal gives out, or `None` for a record of another kind.
fn placed_of(kind: u8, bytes: &[u8]) -> Option<Placed> {
    let (_, number, rest) = parse(bytes)?;
    let user = |bytes: &[u8]| UserId::parse(std::str::from_utf8(bytes).ok()?);
    let known = |ms: u64| (ms != 0).then(|| i64::try_from(ms).ok()).flatten();
    match kind {
        DRAWN => {
            let draw: Draw = rest.get(..32)?.try_into().ok()?;
            Some(Placed {
                user: user(rest.get(32..)?)?,
                draw: Some(draw),
                joined_ms: known(number),
            })
        }
        JOINED_AT => {
            let joined: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            Some(Placed {
                user: user(rest.get(8..)?)?,
                draw: None,
                joined_ms: Some(i64::from_le_bytes(joined)),
            })
        }
        JOINED if number & SEQUENCE_FLAG != 0 => Some(Placed {
            user: user(rest)?,
            draw: None,
            joined_ms: None,
        }),
        JOINED => Some(Placed {
            user: user(rest)?,
            draw: Some(draw_of_keyed(number)),
            joined_ms: None,
        }),
        _ => None,
    }
}

impl Roll {
    /// Takes in the sale's records written since the last read.
    fn read_new(&mut self, sale: &SaleId, path: &Path, end: u64) -> Result<(), LineError> {
        if self.scanned_to >= end {
            return Ok(());
        }
        let (drawn, unsorted, ends) = (&self.drawn, &mut self.unsorted, &mut self.ends);
        journal::scan(path, self.scanned_to, end, |offset, kind, bytes| {
            if !matches!(kind, DRAWN | JOINED | JOINED_AT) {
                return;
            }
            let Some((of, number, rest)) = parse(bytes) else {
                return;
            };
            if of != *sale {
                return;
            }
            let draw = match kind {
                DRAWN => rest.get(..32).and_then(|draw| Draw::try_from(draw).ok()),
                JOINED if number & SEQUENCE_FLAG == 0 => Some(draw_of_keyed(number)),
                _ => None,
            };
            match draw {
                Some(_) if drawn.is_some() => {
                    tracing::warn!(%sale, "a drawn join after the draw closed is left out of the log");
                }
                Some(draw) => unsorted.push((draw, offset)),
                None => ends.push(offset),
            }
        })?;
        self.scanned_to = end;
        if self.drawn.is_none() {
            let mut unsorted = std::mem::take(&mut self.unsorted);
            unsorted.sort_unstable();
            self.drawn = Some(unsorted.into_iter().map(|(_, offset)| offset).collect());
        }
        Ok(())
    }

    fn record_of(&self, place: u64) -> Option<u64> {
        let drawn = self.drawn.as_deref().unwrap_or_default();
        let index = usize::try_from(place).ok()?;
        match index.checked_sub(drawn.len()) {
            None => drawn.get(index).copied(),
            Some(end) => self.ends.get(end).copied(),
        }
    }

    fn total(&self) -> u64 {
        (self.drawn.as_ref().map_or(0, Vec::len) + self.ends.len()) as u64
    }
}

/// Splits a payload into (sale id, number, rest).
fn parse(bytes: &[u8]) -> Option<(SaleId, u64, &[u8])> {
    let length = usize::from(*bytes.first()?);
    let sale = SaleId::parse(std::str::from_utf8(bytes.get(1..1 + length)?).ok()?)?;
    let number = u64::from_le_bytes(bytes.get(1 + length..9 + length)?.try_into().ok()?);
    Some((sale, number, bytes.get(9 + length..)?))
}

impl MemoryLine {
    /// Opens the line kept in `data_dir`, replaying its journal.
    pub fn open(data_dir: &Path, draw_key: Vec<u8>) -> Result<Self, LineError> {
        let hasher = RandomState::new();
        let mut lines: HashMap<SaleId, SaleLine> = HashMap::new();
        let mut damaged = None;
        let journal_path = data_dir.join(JOURNAL_FILE);
        let (file, end) = journal::replay(&journal_path, |kind, bytes| {
            let Some((sale, number, rest)) = parse(bytes) else {
                damaged = Some(kind);
                return;
            };
            let line = lines.entry(sale).or_default();
            match kind {
                JOINED => {
                    let user = String::from_utf8_lossy(rest);
                    let buyer = hasher.hash_one(user.as_ref());
                    if number & SEQUENCE_FLAG != 0 {
                        line.apply_ticket(buyer, number, None);
                    } else {
                        line.apply_ticket(buyer, DRAWN_TICKET, Some(draw_of_keyed(number)));
                    }
                }
                DRAWN => {
                    let (Some(draw), Some(user)) = (rest.get(..32), rest.get(32..)) else {
                        damaged = Some(kind);
                        return;
                    };
                    let mut whole = [0u8; 32];
                    whole.copy_from_slice(draw);
                    let user = String::from_utf8_lossy(user);
                    line.apply_ticket(hasher.hash_one(user.as_ref()), DRAWN_TICKET, Some(whole));
                }
                JOINED_AT => {
                    let Some(user) = rest.get(8..) else {
                        damaged = Some(kind);
                        return;
                    };
                    let user = String::from_utf8_lossy(user);
                    line.apply_ticket(hasher.hash_one(user.as_ref()), number, None);
                }
                CHECKPOINT => match checkpoint_codec::decode(rest) {
                    Some(checkpoint) => line.checkpoints.push(checkpoint),
                    None => damaged = Some(kind),
                },
                PASS => {
                    let (Some(expires), Some(user)) = (rest.get(..8), rest.get(8..)) else {
                        damaged = Some(kind);
                        return;
                    };
                    let expires = i64::from_le_bytes(expires.try_into().unwrap_or([0; 8]));
                    let user = String::from_utf8_lossy(user);
                    line.passes.insert(hasher.hash_one(user.as_ref()), expires);
                }
                ADMISSION => match parse_admission(number, rest) {
                    Some(admission) => line.admission = Some(admission),
                    None => damaged = Some(kind),
                },
                _ => damaged = Some(kind),
            }
        })?;
        if let Some(kind) = damaged {
            return Err(LineError::Corrupt(format!(
                "a record of kind {kind} in {JOURNAL_FILE} does not parse"
            )));
        }
        let reader = File::open(&journal_path).map_err(|error| {
            LineError::Unavailable(format!("opening {JOURNAL_FILE} to read: {error}"))
        })?;
        Ok(Self {
            lines: Mutex::new(lines),
            journal: Journal::start(file, end)?,
            rolls: Arc::new(Rolls {
                journal_path,
                reader,
                by_sale: Mutex::new(HashMap::new()),
            }),
            hasher,
            drawer: Drawer::new(&draw_key),
        })
    }

    fn buyer(&self, user: &UserId) -> u64 {
        self.hasher.hash_one(user.as_str())
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<SaleId, SaleLine>> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The sale's line, made on first use (the id is cloned only then, not on every call).
fn sale_line<'a>(
    lines: &'a mut HashMap<SaleId, SaleLine>,
    sale: &SaleId,
) -> Result<&'a mut SaleLine, LineError> {
    if !lines.contains_key(sale) {
        lines.insert(sale.clone(), SaleLine::default());
    }
    lines
        .get_mut(sale)
        .ok_or_else(|| LineError::Corrupt("a sale's line vanished under its lock".into()))
}

impl MemoryLine {
    fn join_now(
        &self,
        sale: &Sale,
        user: &UserId,
        now: Timestamp,
        arrived: Timestamp,
    ) -> Result<Option<Joined>, LineError> {
        let now_ms = now.as_millisecond();
        let buyer = self.buyer(user);
        let starts_ms = sale.starts_at.as_millisecond();
        // A request that reached the server before the start is drawn, whenever it is placed.
        let arrival = arrival_ms(arrived.as_millisecond(), now_ms);
        let early = arrival < starts_ms;
        // Drawn outside the lock (a repeated join before the start draws for nothing); needed
        // also to read a drawn buyer's place after the start.
        let drawn = (early || now_ms >= starts_ms).then(|| self.drawer.draw(sale, user));
        let mut lines = self.lines();
        let line = sale_line(&mut lines, &sale.id)?;
        if line.admission_or(initial_admission(sale)).paused {
            return Ok(None);
        }
        let known = line.tickets.contains_key(&buyer);
        let expired = known
            && line
                .passes
                .get(&buyer)
                .is_some_and(|expires| *expires <= now_ms);
        if expired || !known {
            // Written before the change is made: a failed write changes nothing.
            match drawn {
                Some(draw) if early && !expired => {
                    self.journal.append(&journal::encode(
                        DRAWN,
                        &payload(&sale.id, as_number(arrival), Some(user), &draw),
                    ))?;
                    line.apply_ticket(buyer, DRAWN_TICKET, Some(draw));
                }
                _ => {
                    let ticket = (line.last_sequence + 1) | SEQUENCE_FLAG;
                    self.journal.append(&journal::encode(
                        JOINED_AT,
                        &payload(&sale.id, ticket, Some(user), &arrival.to_le_bytes()),
                    ))?;
                    line.apply_ticket(buyer, ticket, None);
                }
            }
        }
        let facts = line
            .facts(sale, buyer, drawn.as_ref(), now_ms)
            .ok_or_else(|| LineError::Corrupt("a joined buyer has no ticket".into()))?;
        Ok(Some(Joined {
            facts,
            placed: expired || !known,
            pass_expired: expired,
        }))
    }

    fn look_now(&self, sale: &Sale, user: &UserId, now: Timestamp) -> Option<LineFacts> {
        let buyer = self.buyer(user);
        let now_ms = now.as_millisecond();
        // Computed outside the lock, and only once places are shown.
        let draw =
            (now_ms >= sale.starts_at.as_millisecond()).then(|| self.drawer.draw(sale, user));
        self.lines()
            .get_mut(&sale.id)
            .and_then(|line| line.facts(sale, buyer, draw.as_ref(), now_ms))
    }

    fn record_pass_now(
        &self,
        sale: &Sale,
        user: &UserId,
        expires_ms: i64,
    ) -> Result<i64, LineError> {
        let buyer = self.buyer(user);
        let mut lines = self.lines();
        let line = sale_line(&mut lines, &sale.id)?;
        if let Some(recorded) = line.passes.get(&buyer) {
            return Ok(*recorded);
        }
        let bytes = payload(&sale.id, 0, Some(user), &expires_ms.to_le_bytes());
        self.journal.append(&journal::encode(PASS, &bytes))?;
        line.passes.insert(buyer, expires_ms);
        Ok(expires_ms)
    }

    fn change_admission_now(
        &self,
        sale_id: &SaleId,
        initial: Admission,
        at_ms: i64,
        change: AdmissionChange,
    ) -> Result<Admission, LineError> {
        let mut lines = self.lines();
        let line = sale_line(&mut lines, sale_id)?;
        let current = line.admission_or(initial);
        let Some(next) = current.changed(at_ms, change) else {
            return Ok(current);
        };
        // Written before the change is made: a failed write changes nothing.
        self.journal.append(&journal::encode(
            ADMISSION,
            &admission_bytes(sale_id, &next),
        ))?;
        line.admission = Some(next);
        Ok(next)
    }
}

/// Every sale's roll, and what reads places from the journal: file reads, run on a blocking
/// thread (never on the runtime's, where purchases run).
struct Rolls {
    journal_path: PathBuf,
    /// A read handle on the journal, for the records of places.
    reader: File,
    by_sale: Mutex<HashMap<SaleId, Roll>>,
}

impl Rolls {
    /// The places after `after` of the journal up to `end`.
    fn places(
        &self,
        sale: &SaleId,
        after: u64,
        limit: usize,
        end: u64,
    ) -> Result<Places, LineError> {
        let mut rolls = self
            .by_sale
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !rolls.contains_key(sale) {
            rolls.insert(sale.clone(), Roll::default());
        }
        let Some(roll) = rolls.get_mut(sale) else {
            return Ok(Places::default());
        };
        roll.read_new(sale, &self.journal_path, end)?;
        let total = roll.total();
        let last = total.min(after.saturating_add(limit as u64));
        let mut places = Vec::with_capacity(last.saturating_sub(after) as usize);
        for place in after..last {
            let offset = roll
                .record_of(place)
                .ok_or_else(|| LineError::Corrupt(format!("place {} has no record", place + 1)))?;
            let (kind, bytes) = journal::read_at(&self.reader, offset)?;
            places.push(placed_of(kind, &bytes).ok_or_else(|| {
                LineError::Corrupt(format!("the record of place {} does not parse", place + 1))
            })?);
        }
        Ok(Places { total, places })
    }
}

impl MemoryLine {
    fn add_checkpoint_now(
        &self,
        sale: &Sale,
        checkpoint: &Checkpoint,
        spacing_ms: i64,
    ) -> Result<CheckpointAdded, LineError> {
        let mut lines = self.lines();
        let line = sale_line(&mut lines, &sale.id)?;
        let follows = checkpoint_follows(line.checkpoints.last(), checkpoint, spacing_ms);
        if follows == CheckpointAdded::Added {
            let bytes = payload(&sale.id, 0, None, &checkpoint_codec::encode(checkpoint));
            self.journal.append(&journal::encode(CHECKPOINT, &bytes))?;
            line.checkpoints.push(checkpoint.clone());
        }
        Ok(follows)
    }
}

impl AdmissionLog for MemoryLine {
    fn record(&self, sale_id: &SaleId, initial: Admission, at_ms: i64, change: AdmissionChange) {
        if let Err(error) = self.change_admission_now(sale_id, initial, at_ms, change) {
            tracing::error!(%error, %sale_id, "could not record a change of the line's admission");
        }
    }
}

impl WaitingLine for MemoryLine {
    fn join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Timestamp,
        arrived: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Joined>, LineError>> {
        let joined = self.join_now(sale, user, now, arrived);
        Box::pin(async move { joined })
    }

    fn look<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<LineFacts>, LineError>> {
        let facts = self.look_now(sale, user, now);
        Box::pin(async move { Ok(facts) })
    }

    fn record_pass<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        expires_ms: i64,
    ) -> BoxFuture<'a, Result<i64, LineError>> {
        let recorded = self.record_pass_now(sale, user, expires_ms);
        Box::pin(async move { recorded })
    }

    fn admission<'a>(&'a self, sale: &'a Sale) -> BoxFuture<'a, Result<Admission, LineError>> {
        let initial = initial_admission(sale);
        let admission = self
            .lines()
            .get(&sale.id)
            .map_or(initial, |line| line.admission_or(initial));
        Box::pin(async move { Ok(admission) })
    }

    fn change_admission<'a>(
        &'a self,
        sale: &'a Sale,
        at_ms: i64,
        change: AdmissionChange,
    ) -> BoxFuture<'a, Result<Admission, LineError>> {
        let current = self.change_admission_now(&sale.id, initial_admission(sale), at_ms, change);
        Box::pin(async move { current })
    }

    fn places<'a>(
        &'a self,
        sale: &'a Sale,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Places, LineError>> {
        let (rolls, sale, end) = (Arc::clone(&self.rolls), sale.id.clone(), self.journal.end());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || rolls.places(&sale, after, limit, end))
                .await
                .map_err(|error| {
                    LineError::Unavailable(format!("reading the line's places: {error}"))
                })?
        })
    }

    fn add_checkpoint<'a>(
        &'a self,
        sale: &'a Sale,
        checkpoint: &'a Checkpoint,
        spacing_ms: i64,
    ) -> BoxFuture<'a, Result<CheckpointAdded, LineError>> {
        let added = self.add_checkpoint_now(sale, checkpoint, spacing_ms);
        Box::pin(async move { added })
    }

    fn checkpoints<'a>(
        &'a self,
        sale: &'a Sale,
    ) -> BoxFuture<'a, Result<Vec<Checkpoint>, LineError>> {
        let checkpoints = self
            .lines()
            .get(&sale.id)
            .map_or_else(Vec::new, |line| line.checkpoints.clone());
        Box::pin(async move { Ok(checkpoints) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WaitingRoom;

    /// A line journal written before whole draws (a drawn place was a `JOINED` record of its
    /// 52-bit keyed draw) replays into the same places, and new joins go on from it.
    #[test]
    fn a_line_journal_of_before_whole_draws_replays_its_places() {
        let dir = tempfile::tempdir().unwrap();
        let mut sale = Sale::of_stock_for_test(10);
        sale.waiting_room = Some(WaitingRoom {
            admit_per_sec: 1,
            pass_ttl_secs: 60,
            opens_before_secs: 900,
            draw_seed: None,
        });
        let drawer = Drawer::new(b"draw key");
        let users: Vec<UserId> = (0..30)
            .map(|i| UserId::parse(&format!("old-{i}")).unwrap())
            .collect();
        {
            let (file, end) = journal::replay(&dir.path().join(JOURNAL_FILE), |_, _| {}).unwrap();
            let old = Journal::start(file, end).unwrap();
            for user in &users {
                let keyed = drawer.keyed_draw(&sale, user);
                old.append(&journal::encode(
                    JOINED,
                    &payload(&sale.id, keyed, Some(user), &[]),
                ))
                .unwrap();
            }
        }
        let line = MemoryLine::open(dir.path(), b"draw key".to_vec()).unwrap();
        let after = sale.starts_at + jiff::SignedDuration::from_secs(1);
        let keyed: Vec<u64> = users
            .iter()
            .map(|user| drawer.keyed_draw(&sale, user))
            .collect();
        for (user, draw) in users.iter().zip(&keyed) {
            let expected = keyed.iter().filter(|other| *other < draw).count() as u64 + 1;
            let facts = line.look_now(&sale, user, after).expect("in line");
            assert_eq!(facts.place, Some(expected), "{user}");
        }
        let late = line
            .join_now(&sale, &UserId::parse("new").unwrap(), after, after)
            .unwrap()
            .expect("joined");
        assert_eq!(late.facts.place, Some(31));
    }
}
