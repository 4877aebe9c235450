//! The embedded delivery ledger: the data directory's `event_cursors` (one line per sink and
//! sale, rewritten whole and renamed into place, so it is never half written) and
//! `event_dead_letters` (appended, one line per event set aside, synced). One process holds a
//! data directory, so it always holds every sink.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{DeadLetter, DeliveryLedger, LedgerError};
use crate::domain::SaleId;
use crate::BoxFuture;

pub const CURSORS_FILE: &str = "event_cursors";
pub const DEAD_LETTERS_FILE: &str = "event_dead_letters";

struct State {
    /// (sink, sale) → delivered through.
    cursors: BTreeMap<(String, SaleId), u64>,
    dead_letters: Vec<(String, DeadLetter)>,
}

pub struct FileLedger {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    /// Serializes writers of the files (the state lock is not held across IO).
    writing: Arc<tokio::sync::Mutex<()>>,
}

fn failed(error: impl std::fmt::Display) -> LedgerError {
    LedgerError::Failed(error.to_string())
}

/// Tabs and line ends would break a line of the file.
fn one_line(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

fn read_cursors(path: &Path) -> std::io::Result<BTreeMap<(String, SaleId), u64>> {
    let mut cursors = BTreeMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(cursors),
        Err(error) => return Err(error),
    };
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(sink), Some(sale), Some(delivered)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if let (Some(sale_id), Ok(delivered)) = (SaleId::parse(sale), delivered.parse::<u64>()) {
            cursors.insert((sink.to_owned(), sale_id), delivered);
        }
    }
    Ok(cursors)
}

fn read_dead_letters(path: &Path) -> std::io::Result<Vec<(String, DeadLetter)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    // A line cut by a crash mid-append is left out.
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, '\t');
            let sink = fields.next()?.to_owned();
            let sale_id = SaleId::parse(fields.next()?)?;
            let sequence = fields.next()?.parse().ok()?;
            let recorded_at = fields.next()?.parse().ok()?;
            let reason = fields.next()?.to_owned();
            let event = fields.next()?.to_owned();
            Some((
                sink,
                DeadLetter {
                    sale_id,
                    sequence,
                    event,
                    reason,
                    recorded_at,
                },
            ))
        })
        .collect())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl FileLedger {
    pub fn open(data_dir: &Path) -> Result<Self, LedgerError> {
        let cursors = read_cursors(&data_dir.join(CURSORS_FILE)).map_err(failed)?;
        let dead_letters = read_dead_letters(&data_dir.join(DEAD_LETTERS_FILE)).map_err(failed)?;
        Ok(Self {
            dir: data_dir.to_owned(),
            state: Arc::new(Mutex::new(State {
                cursors,
                dead_letters,
            })),
            writing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the cursors file anew (a temporary file renamed over it, then synced).
    async fn write_cursors(&self) -> Result<(), LedgerError> {
        let _writing = self.writing.lock().await;
        let mut text = String::new();
        for ((sink, sale_id), delivered) in &self.lock().cursors {
            text.push_str(&format!("{sink}\t{sale_id}\t{delivered}\n"));
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let path = dir.join(CURSORS_FILE);
            let fresh = dir.join(format!("{CURSORS_FILE}.new"));
            let mut file = std::fs::File::create(&fresh)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&fresh, &path)?;
            sync_dir(&dir)
        })
        .await
        .map_err(failed)?
        .map_err(failed)
    }

    fn move_cursor(state: &mut State, sink: &str, sale_id: SaleId, delivered: u64) -> bool {
        let cursor = state.cursors.entry((sink.to_owned(), sale_id)).or_default();
        let moved = delivered > *cursor;
        *cursor = (*cursor).max(delivered);
        moved
    }
}

impl DeliveryLedger for FileLedger {
    fn hold<'a>(
        &'a self,
        _sink: &'a str,
        _holder: &'a str,
        _lease: Duration,
    ) -> BoxFuture<'a, Result<bool, LedgerError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn let_go<'a>(
        &'a self,
        _sink: &'a str,
        _holder: &'a str,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn cursors<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(SaleId, u64)>, LedgerError>> {
        let cursors = self
            .lock()
            .cursors
            .iter()
            .filter(|((name, _), _)| name == sink)
            .map(|((_, sale_id), delivered)| (sale_id.clone(), *delivered))
            .collect();
        Box::pin(std::future::ready(Ok(cursors)))
    }

    fn advance<'a>(
        &'a self,
        sink: &'a str,
        _holder: &'a str,
        cursors: Vec<(SaleId, u64)>,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let moved = {
                let mut state = self.lock();
                let mut moved = false;
                for (sale_id, delivered) in cursors {
                    moved |= Self::move_cursor(&mut state, sink, sale_id, delivered);
                }
                moved
            };
            if moved {
                self.write_cursors().await?;
            }
            Ok(())
        })
    }

    fn dead_letter<'a>(
        &'a self,
        sink: &'a str,
        _holder: &'a str,
        letter: DeadLetter,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let line = format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                one_line(sink),
                letter.sale_id,
                letter.sequence,
                letter.recorded_at,
                one_line(&letter.reason),
                one_line(&letter.event)
            );
            {
                let _writing = self.writing.lock().await;
                let path = self.dir.join(DEAD_LETTERS_FILE);
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?;
                    file.write_all(line.as_bytes())?;
                    file.sync_data()
                })
                .await
                .map_err(failed)?
                .map_err(failed)?;
            }
            {
                let mut state = self.lock();
                Self::move_cursor(&mut state, sink, letter.sale_id.clone(), letter.sequence);
                state.dead_letters.push((sink.to_owned(), letter));
            }
            self.write_cursors().await
        })
    }

    fn dead_letters<'a>(
        &'a self,
        sink: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<(u64, Vec<DeadLetter>), LedgerError>> {
        let state = self.lock();
        let mine: Vec<&DeadLetter> = state
            .dead_letters
            .iter()
            .filter(|(name, _)| name == sink)
            .map(|(_, letter)| letter)
            .collect();
        let total = mine.len() as u64;
        let latest = mine.into_iter().rev().take(limit).cloned().collect();
        Box::pin(std::future::ready(Ok((total, latest))))
    }
}
