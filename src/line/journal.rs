//! The embedded line's durable record: an append-only file of small records, written by one
//! thread that commits whatever is waiting in one write and one `fdatasync` (group commit), so a
//! crowd of joins costs one sync per batch. Each record is `[kind][length u32][payload][FNV-1a
//! u32 of kind and payload]`; reading stops at the first torn or damaged record (a crash in the
//! middle of a write, never acknowledged) and the file is cut there.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use super::LineError;
use crate::BoxFuture;

const RECORD_LENGTH_MAX: u32 = 1 << 16;

pub struct Journal {
    sender: mpsc::Sender<Write_>,
    /// Records handed to the writer, and records synced: a reader that saw a record that is
    /// not synced yet waits for the writer before answering.
    handed: Arc<AtomicU64>,
    synced: Arc<AtomicU64>,
}

struct Write_ {
    bytes: Vec<u8>,
    done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

fn checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in std::iter::once(&kind).chain(payload) {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 9);
    bytes.push(kind);
    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&checksum(kind, payload).to_le_bytes());
    bytes
}

fn failed(error: impl std::fmt::Display) -> LineError {
    LineError::Unavailable(error.to_string())
}

/// Reads every whole record of the file at `path` (created if missing), cuts a torn tail off,
/// and calls `apply` with each (kind, payload) in order.
pub fn replay(path: &Path, mut apply: impl FnMut(u8, &[u8])) -> Result<File, LineError> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(failed)?;
    let mut reader = BufReader::new(&mut file);
    let mut good: u64 = 0;
    let mut header = [0u8; 5];
    let mut payload = Vec::new();
    loop {
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let kind = header[0];
        let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        if kind == 0 || length > RECORD_LENGTH_MAX {
            break;
        }
        payload.resize(length as usize, 0);
        let mut sum = [0u8; 4];
        if reader.read_exact(&mut payload).is_err() || reader.read_exact(&mut sum).is_err() {
            break;
        }
        if u32::from_le_bytes(sum) != checksum(kind, &payload) {
            break;
        }
        apply(kind, &payload);
        good += 9 + u64::from(length);
    }
    drop(reader);
    if file.metadata().map_err(failed)?.len() != good {
        file.set_len(good).map_err(failed)?;
        file.sync_data().map_err(failed)?;
    }
    file.seek(SeekFrom::End(0)).map_err(failed)?;
    Ok(file)
}

impl Journal {
    /// Starts the writer thread on `file` (positioned at its end).
    pub fn start(file: File) -> Result<Self, LineError> {
        let (sender, receiver) = mpsc::channel::<Write_>();
        let (handed, synced) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let synced_by_writer = Arc::clone(&synced);
        std::thread::Builder::new()
            .name("line-journal".into())
            .spawn(move || write_loop(file, &receiver, &synced_by_writer))
            .map_err(failed)?;
        Ok(Self {
            sender,
            handed,
            synced,
        })
    }

    /// Appends a record; the future resolves once it is on disk. Call under the lock that
    /// ordered the change, so records land in the order the changes were made.
    pub fn append(&self, bytes: Vec<u8>) -> BoxFuture<'static, Result<(), LineError>> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.handed.fetch_add(1, Ordering::SeqCst);
        let sent = self.sender.send(Write_ {
            bytes,
            done: Some(done),
        });
        Box::pin(async move {
            sent.map_err(|_| LineError::Unavailable("the journal writer stopped".into()))?;
            wait.await
                .map_err(|_| LineError::Unavailable("the journal writer stopped".into()))?
                .map_err(LineError::Unavailable)
        })
    }

    /// Resolves once every record handed over so far is on disk (at once when all are).
    pub fn synced(&self) -> BoxFuture<'static, Result<(), LineError>> {
        if self.handed.load(Ordering::SeqCst) > self.synced.load(Ordering::SeqCst) {
            self.append(Vec::new())
        } else {
            Box::pin(std::future::ready(Ok(())))
        }
    }
}

fn write_loop(mut file: File, receiver: &mpsc::Receiver<Write_>, synced: &AtomicU64) {
    let mut batch: Vec<Write_> = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
            if batch.len() >= 65_536 {
                break;
            }
        }
        buffer.clear();
        for write in &batch {
            buffer.extend_from_slice(&write.bytes);
        }
        let outcome = if buffer.is_empty() {
            Ok(())
        } else {
            file.write_all(&buffer)
                .and_then(|()| file.sync_data())
                .map_err(|error| format!("writing the waiting-line journal: {error}"))
        };
        synced.fetch_add(batch.len() as u64, Ordering::SeqCst);
        for write in batch.drain(..) {
            if let Some(done) = write.done {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_and_whole_records_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut whole = encode(1, b"first");
        whole.extend(encode(2, b"second"));
        let mut torn = whole.clone();
        torn.extend(&encode(3, b"third, torn")[..7]);
        std::fs::write(&path, &torn).unwrap();
        let mut seen = Vec::new();
        replay(&path, |kind, payload| seen.push((kind, payload.to_vec()))).unwrap();
        assert_eq!(seen, vec![(1, b"first".to_vec()), (2, b"second".to_vec())]);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            whole,
            "the torn record is cut off"
        );
        let mut damaged = whole.clone();
        let last = damaged.len() - 6;
        damaged[last] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let mut count = 0;
        replay(&path, |_, _| count += 1).unwrap();
        assert_eq!(
            count, 1,
            "a damaged record and what follows it are not replayed"
        );
    }
}
