//! A waiting line's public admission log: its entries (the line's places, hash-chained here as
//! they are read) and its signed checkpoints (made by the keeper below at most once a second per
//! sale while something changes, and kept by the line, durably). The chain is a function of the
//! places, so nothing but the checkpoints is stored: each node keeps, per sale, the hash of
//! every `ANCHOR_EVERY`-th entry (32 bytes per thousand places) to start a page from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use super::error::ServiceError;
use super::Service;
use crate::domain::{
    admitted_ms, Checkpoint, LogEntry, Rejection, Sale, SaleId, ARRIVAL_SLACK_MS, GENESIS,
};
use crate::line::{CheckpointAdded, LogSigner, WaitingLine};

/// Entries between two kept hashes of a chain.
const ANCHOR_EVERY: u64 = 1000;
/// Places read from the line at once.
const READ_BATCH: usize = 1000;
/// Most entries of one page.
pub const LOG_PAGE_MAX: usize = 1000;
/// Checkpoints of one sale are at least this far apart (the contract: at least one a second
/// while admission moves; the keeper looks four times a second).
const CHECKPOINT_SPACING_MS: i64 = 1000;
pub const KEEPER_EVERY: Duration = Duration::from_millis(250);
/// How long after its end a sale's log still gets checkpoints (admission stops at the end).
const KEEP_AFTER_END_MS: i64 = 10_000;

/// One page of a sale's log; the page that reaches the end of the line carries the checkpoints
/// (all of them, as of that moment: a reader who went through the pages in order has every
/// checkpoint the earlier pages' admission times were computed from).
#[derive(Clone, Debug)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    pub checkpoints: Vec<Checkpoint>,
    pub next_after: u64,
    pub kid: String,
}

/// One published key.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub kid: String,
    pub public_key: String,
}

struct Chain {
    /// `anchors[i]`: the hash of entry `i * ANCHOR_EVERY` (`GENESIS` for 0).
    anchors: Vec<[u8; 32]>,
    length: u64,
    last_hash: [u8; 32],
    /// The last checkpoint this node knows of.
    last_checkpoint: Option<Checkpoint>,
    checkpoints_read: bool,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            anchors: vec![GENESIS],
            length: 0,
            last_hash: GENESIS,
            last_checkpoint: None,
            checkpoints_read: false,
        }
    }
}

impl Chain {
    fn push(&mut self, entry: &LogEntry) {
        self.length = entry.n;
        self.last_hash = entry.hash;
        if entry.n.is_multiple_of(ANCHOR_EVERY) {
            self.anchors.push(entry.hash);
        }
    }
}

/// Pages built at once on a node: a crowd of readers waits its turn (or is shed at the edge)
/// instead of taking the line's reads from the purchases.
const PAGES_AT_ONCE: usize = 2;

/// The signer and each sale's chain as far as this node has read it.
pub struct QueueLog {
    signer: LogSigner,
    chains: Mutex<HashMap<SaleId, Chain>>,
    pages: tokio::sync::Semaphore,
}

impl QueueLog {
    pub fn new(signer: LogSigner) -> Self {
        Self {
            signer,
            chains: Mutex::new(HashMap::new()),
            pages: tokio::sync::Semaphore::new(PAGES_AT_ONCE),
        }
    }

    fn chains(&self) -> std::sync::MutexGuard<'_, HashMap<SaleId, Chain>> {
        self.chains.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (length, last hash) of the sale's chain as read so far.
    fn head(&self, sale: &SaleId) -> (u64, [u8; 32]) {
        self.chains()
            .get(sale)
            .map_or((0, GENESIS), |chain| (chain.length, chain.last_hash))
    }

    /// Reads the places added since the chain was last read; returns the line's length.
    async fn extend(&self, line: &dyn WaitingLine, sale: &Sale) -> Result<u64, ServiceError> {
        loop {
            let (length, last_hash) = self.head(&sale.id);
            let read = line.places(sale, length, READ_BATCH).await?;
            let mut entries = Vec::with_capacity(read.places.len());
            let mut prev = last_hash;
            for (offset, placed) in read.places.iter().enumerate() {
                let entry = LogEntry::of(length + offset as u64 + 1, prev, placed);
                prev = entry.hash;
                entries.push(entry);
            }
            {
                let mut chains = self.chains();
                let chain = chains.entry(sale.id.clone()).or_default();
                // Another task read the same stretch first: its entries are these.
                if chain.length == length {
                    for entry in &entries {
                        chain.push(entry);
                    }
                }
            }
            if read.places.len() < READ_BATCH {
                return Ok(read.total);
            }
        }
    }

    /// The hash of entry `n` (a multiple of `ANCHOR_EVERY`, or 0).
    fn anchor(&self, sale: &SaleId, n: u64) -> Option<[u8; 32]> {
        let index = usize::try_from(n / ANCHOR_EVERY).ok()?;
        self.chains().get(sale)?.anchors.get(index).copied()
    }
}

/// The sale's room's log may be read: it has a committed draw and the draw has closed.
fn draw_closed_at(sale: &Sale) -> Result<Timestamp, ServiceError> {
    let room = sale.waiting_room.ok_or(ServiceError::NoWaitingRoom)?;
    if room.draw_seed.is_none() {
        return Err(ServiceError::NoVerifiableDraw);
    }
    Ok(sale
        .starts_at
        .saturating_add(jiff::SignedDuration::from_millis(ARRIVAL_SLACK_MS))
        .unwrap_or(sale.starts_at))
}

impl Service {
    fn queue_log_parts(&self) -> Result<(&dyn WaitingLine, &QueueLog), ServiceError> {
        let parts = self.waiting_room.as_ref().ok_or_else(|| {
            ServiceError::Unavailable("this server has no waiting line configured".into())
        })?;
        Ok((parts.line.as_ref(), parts.log.as_ref()))
    }

    /// The keys that sign admission logs.
    pub fn log_keys(&self) -> Result<Vec<PublicKey>, ServiceError> {
        let (_, log) = self.queue_log_parts()?;
        Ok(vec![PublicKey {
            kid: log.signer.kid().to_owned(),
            public_key: log.signer.public_key(),
        }])
    }

    /// A page of the sale's admission log: the entries after the first `after`, at most
    /// `limit`. Public from `starts_at` on; empty until the draw has closed.
    pub async fn queue_log(
        &self,
        sale_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<LogPage, ServiceError> {
        let sale = self.known_sale(sale_id).await?;
        let closes_at = draw_closed_at(&sale)?;
        let (line, log) = self.queue_log_parts()?;
        let now = self.clock.now();
        if now < sale.starts_at {
            return Err(ServiceError::Rejected(Rejection::NotStarted {
                starts_at: sale.starts_at,
            }));
        }
        let kid = log.signer.kid().to_owned();
        if now < closes_at {
            return Ok(LogPage {
                entries: Vec::new(),
                checkpoints: Vec::new(),
                next_after: after,
                kid,
            });
        }
        let _turn = log
            .pages
            .acquire()
            .await
            .map_err(|_| ServiceError::Unavailable("the admission log is closing".into()))?;
        let total = log.extend(line, &sale).await?;
        let limit = limit.clamp(1, LOG_PAGE_MAX);
        let start = after - after % ANCHOR_EVERY;
        let mut prev = log
            .anchor(&sale.id, start)
            .ok_or_else(|| ServiceError::Internal("the log's chain was not read".into()))?;
        let wanted = usize::try_from(after - start).unwrap_or(0) + limit;
        let read = line.places(&sale, start, wanted).await?;
        let checkpoints = line.checkpoints(&sale).await?;
        let mut entries = Vec::with_capacity(limit);
        for (offset, placed) in read.places.iter().enumerate() {
            let n = start + offset as u64 + 1;
            let mut entry = LogEntry::of(n, prev, placed);
            prev = entry.hash;
            if n > after {
                entry.admitted_ms = admitted_ms(n, entry.joined_ms, &checkpoints);
                entries.push(entry);
            }
        }
        let next_after = entries.last().map_or(after, |entry| entry.n);
        let reaches_end = next_after >= total.max(read.total);
        Ok(LogPage {
            entries,
            checkpoints: if reaches_end { checkpoints } else { Vec::new() },
            next_after,
            kid,
        })
    }

    /// Offers each live sale's next checkpoint (the keeper's one step).
    pub async fn keep_queue_logs(&self) -> Result<(), ServiceError> {
        let (line, log) = self.queue_log_parts()?;
        let now = self.clock.now();
        // The sales this node holds (it follows the others' within a second); a reload here
        // would keep every listing's cache young and hide a sale made a moment ago elsewhere.
        for sale in self.catalog.known() {
            let Ok(closes_at) = draw_closed_at(&sale) else {
                continue;
            };
            let ended_long_ago = sale.ends_at.is_some_and(|ends| {
                now.as_millisecond() > ends.as_millisecond() + KEEP_AFTER_END_MS
            });
            if now < closes_at || ended_long_ago {
                continue;
            }
            if let Err(error) = self.checkpoint(line, log, &sale, now).await {
                tracing::warn!(%error, sale_id = %sale.id, "could not make the log's checkpoint");
            }
        }
        Ok(())
    }

    async fn checkpoint(
        &self,
        line: &dyn WaitingLine,
        log: &QueueLog,
        sale: &Sale,
        now: Timestamp,
    ) -> Result<(), ServiceError> {
        let needs_read = log
            .chains()
            .get(&sale.id)
            .is_none_or(|chain| !chain.checkpoints_read);
        if needs_read {
            let last = line.checkpoints(sale).await?.pop();
            let mut chains = log.chains();
            let chain = chains.entry(sale.id.clone()).or_default();
            chain.last_checkpoint = last;
            chain.checkpoints_read = true;
        }
        let total = log.extend(line, sale).await?;
        let (length, hash) = log.head(&sale.id);
        if length == 0 || length < total {
            return Ok(());
        }
        let spaced = |last: &Checkpoint| {
            now.as_millisecond() >= last.time_ms.saturating_add(CHECKPOINT_SPACING_MS)
        };
        if log
            .chains()
            .get(&sale.id)
            .and_then(|chain| chain.last_checkpoint.as_ref())
            .is_some_and(|last| !spaced(last))
        {
            return Ok(());
        }
        let admission = line.admission(sale).await?;
        let mut checkpoint = Checkpoint::at(length, hash, now.as_millisecond(), admission);
        let last = log
            .chains()
            .get(&sale.id)
            .and_then(|chain| chain.last_checkpoint.clone());
        if last
            .as_ref()
            .is_some_and(|last| !checkpoint.tells_more_than(last))
        {
            return Ok(());
        }
        log.signer.sign(&sale.id, &mut checkpoint);
        let added = line
            .add_checkpoint(sale, &checkpoint, CHECKPOINT_SPACING_MS)
            .await?;
        let mut chains = log.chains();
        let chain = chains.entry(sale.id.clone()).or_default();
        match added {
            CheckpointAdded::Added => chain.last_checkpoint = Some(checkpoint),
            // Another node's checkpoint came first: read it next time.
            CheckpointAdded::TooSoon | CheckpointAdded::Behind => chain.checkpoints_read = false,
        }
        Ok(())
    }
}

/// Makes the checkpoints until `stop`.
pub async fn run_keeper(service: Arc<Service>, stop: tokio::sync::watch::Receiver<bool>) {
    if service.queue_log_parts().is_err() {
        return;
    }
    let mut ticker = crate::clock::StoppableTicker::new(KEEPER_EVERY, stop);
    while ticker.tick().await {
        if let Err(error) = service.keep_queue_logs().await {
            tracing::warn!(%error, "keeping the admission logs failed; retrying");
        }
    }
}
