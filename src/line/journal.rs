//! The embedded line's durable record: an append-only file of small records, mapped into memory.
//! A change is copied into the mapping (under the line's lock, so records keep the order of the
//! changes) before it is acknowledged, and a thread syncs the file every 5 ms when something was
//! written: a killed or crashed process loses nothing (the mapping is the kernel's page cache); a
//! power cut can lose the last 5 ms of joins, whose buyers then join again. A place is worth less
//! than an order (orders wait for the disk); waiting for the disk would cap joins at one batch per
//! sync, and a `write` per join cost more than the rest of the join (measured). Each record is `[kind][length u32][payload][FNV-1a
//! u32 of kind and payload]`; reading stops at the first torn or damaged record (a crash in the
//! middle of a write, never acknowledged) and the file is cut there.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memmap2::MmapMut;

use super::LineError;

const RECORD_LENGTH_MAX: u32 = 1 << 16;

pub struct Journal {
    mapped: Mutex<Mapped>,
    dirty: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// The file mapped into memory: records are copied into the mapping (the kernel's page cache,
/// so a killed process loses nothing written), up to `end`; the rest is reserved, zero space.
struct Mapped {
    file: File,
    map: MmapMut,
    end: usize,
}

/// How often the syncer flushes what was written to the disk.
const SYNC_EVERY: Duration = Duration::from_millis(5);
/// The file grows by at least this much at a time (reserved on disk, so a full disk is an error
/// when growing, not a fault when writing).
const GROW_BYTES: u64 = 16 << 20;

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
pub fn replay(path: &Path, mut apply: impl FnMut(u8, &[u8])) -> Result<(File, u64), LineError> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
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
        // Kind 0 is the zeroed room after the last record.
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
    Ok((file, good))
}

/// Maps `file` with room for at least `wanted` bytes, reserving the blocks on disk first.
fn map(file: &File, wanted: u64) -> Result<MmapMut, LineError> {
    let length = file.metadata().map_err(failed)?.len();
    if length < wanted {
        let grown = wanted.max(length.saturating_mul(2)).max(GROW_BYTES);
        let size = libc::off_t::try_from(grown).map_err(failed)?;
        // SAFETY: posix_fallocate only reads the descriptor and the two numbers.
        let reserved = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size) };
        if reserved != 0 {
            return Err(failed(std::io::Error::from_raw_os_error(reserved)));
        }
    }
    // SAFETY: the journal is this process's own file in its data directory, opened once; nothing
    // else truncates it while it is mapped (growing maps it again first).
    unsafe { MmapMut::map_mut(file) }.map_err(failed)
}

impl Journal {
    /// Takes `file`, whose records end at `end`, and starts the thread that syncs it.
    pub fn start(file: File, end: u64) -> Result<Self, LineError> {
        let map = map(&file, end + 1)?;
        let syncing = file.try_clone().map_err(failed)?;
        let (dirty, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (dirty_seen, stop_seen) = (Arc::clone(&dirty), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("line-journal-sync".into())
            .spawn(move || {
                while !stop_seen.load(Ordering::Acquire) {
                    std::thread::sleep(SYNC_EVERY);
                    // fdatasync writes back the page cache's dirty pages, the mapping's included.
                    if dirty_seen.swap(false, Ordering::AcqRel) {
                        if let Err(error) = syncing.sync_data() {
                            tracing::error!(%error, "syncing the waiting-line journal");
                        }
                    }
                }
            })
            .map_err(failed)?;
        Ok(Self {
            mapped: Mutex::new(Mapped {
                file,
                map,
                end: usize::try_from(end).map_err(failed)?,
            }),
            dirty,
            stop,
        })
    }

    /// Appends a record. Call under the lock that ordered the change, so records land in the
    /// order the changes were made.
    pub fn append(&self, bytes: &[u8]) -> Result<(), LineError> {
        let mut mapped = self
            .mapped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let end = mapped.end + bytes.len();
        if end >= mapped.map.len() {
            let wanted = u64::try_from(end + 1).map_err(failed)?;
            mapped.map = map(&mapped.file, wanted)?;
        }
        let start = mapped.end;
        mapped.map[start..end].copy_from_slice(bytes);
        mapped.end = end;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Ok(mapped) = self.mapped.get_mut() {
            let _ = mapped.map.flush();
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
