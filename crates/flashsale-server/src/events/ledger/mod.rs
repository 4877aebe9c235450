//! Where delivery keeps its place: per sink, which node delivers it (a lease, so that exactly
//! one does at a time and another takes over when it dies), how far each sale's events went out
//! (a cursor per sink and sale), and the events set aside after their retries ran out (dead
//! letters, kept and shown). Embedded: files in the data directory (`file.rs`); a cluster:
//! PostgreSQL (`store/postgres/ledger.rs`). Both are held to one conformance suite.

mod file;

use std::time::Duration;

use jiff::Timestamp;

pub use self::file::FileLedger;
use crate::domain::SaleId;
use crate::BoxFuture;

/// An event set aside after `retry_hours` of failed deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub sale_id: SaleId,
    pub sequence: u64,
    /// The whole CloudEvent, as it was sent.
    pub event: String,
    /// The last failure.
    pub reason: String,
    pub recorded_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another node holds the sink now (this one was too slow to renew, or was cut off).
    #[error("the sink is held by another node")]
    LeaseLost,
    #[error("the delivery ledger failed: {0}")]
    Failed(String),
}

pub trait DeliveryLedger: Send + Sync + 'static {
    /// Takes the sink for `holder`, or renews its hold, for `lease`; false while another holder's
    /// lease runs.
    fn hold<'a>(
        &'a self,
        sink: &'a str,
        holder: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, LedgerError>>;

    /// Gives the sink up at once (a node that stops), so another can take it without waiting.
    fn let_go<'a>(
        &'a self,
        sink: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// How far each sale's events went out to the sink.
    fn cursors<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(SaleId, u64)>, LedgerError>>;

    /// Records that the sink has these sales' events through these sequences (a cursor never
    /// goes back); refused with `LeaseLost` unless `holder` holds the sink.
    fn advance<'a>(
        &'a self,
        sink: &'a str,
        holder: &'a str,
        cursors: Vec<(SaleId, u64)>,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// Sets an event aside and moves its sale's cursor past it, in one step.
    fn dead_letter<'a>(
        &'a self,
        sink: &'a str,
        holder: &'a str,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// How many events the sink set aside, and the latest `limit` of them, newest first.
    fn dead_letters<'a>(
        &'a self,
        sink: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<(u64, Vec<DeadLetter>), LedgerError>>;
}
