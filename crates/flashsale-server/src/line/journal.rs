//! The embedded line's durable record: an append-only file of small records, mapped into memory.
//! A change is copied into the mapping (under the line's lock, so records keep the order of the
//! changes) before it is acknowledged, and a thread syncs the file every 5 ms when something was
//! written: a killed or crashed process loses nothing (the mapping is the kernel's page cache); a
//! power cut can lose the last 5 ms of joins, whose buyers then join again. A place is worth less
//! than an order (orders wait for the disk); waiting for the disk would cap joins at one batch per
//! sync, and a `write` per join cost more than the rest of the join (measured). The records and
//! their framing are `crate::record_file`'s.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memmap2::MmapMut;

use super::LineError;
use crate::record_file;
pub use crate::record_file::encode;

pub struct Journal {
    mapped: Mutex<Mapped>,
    dirty: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// The file mapped into memory: records are copied into the mapping (the kernel's page cache,
/// so a killed process loses nothing written), up to `end`; the rest is reserved, zero space.
struct Mapped {
    file: File,
    /// `None` until the file has room for a first record.
    map: Option<MmapMut>,
    end: usize,
}

/// How often the syncer flushes what was written to the disk.
const SYNC_EVERY: Duration = Duration::from_millis(5);
/// The file grows by at least this much at a time (reserved on disk, so a full disk is an error
/// when growing, not a fault when writing) ...
const GROW_BYTES: u64 = 16 << 20;
/// ... or, on a nearly full disk, by what it needs in steps of this.
const GROW_MIN: u64 = 64 << 10;

fn failed(error: impl std::fmt::Display) -> LineError {
    LineError::Unavailable(error.to_string())
}

/// Reads every whole record of the file at `path` (created if missing), cuts a torn tail off,
/// and calls `apply` with each (kind, payload) in order.
pub fn replay(path: &Path, mut apply: impl FnMut(u8, &[u8])) -> Result<(File, u64), LineError> {
    record_file::replay::<std::io::Error>(path, |kind, payload| {
        apply(kind, payload);
        Ok(())
    })
    .map_err(failed)
}

/// Reserves room in `file` for at least `wanted` bytes and maps it. The file grows by doubling
/// (at least `GROW_BYTES`), but never into the last `SPACE_FLOOR_BYTES` of free space unless
/// `wanted` itself needs them: on a nearly full disk it grows by what it needs, in `GROW_MIN`
/// steps, and on a full one it fails (a join is refused; nothing written is touched).
fn map(file: &File, wanted: u64) -> Result<MmapMut, LineError> {
    let length = file.metadata().map_err(failed)?.len();
    if length < wanted {
        let needed = wanted.div_ceil(GROW_MIN) * GROW_MIN;
        let spare = record_file::free_bytes(file)
            .unwrap_or(0)
            .saturating_sub(record_file::SPACE_FLOOR_BYTES);
        let hoped = wanted.max(length.saturating_mul(2)).max(GROW_BYTES);
        let affordable = (length + spare) / GROW_MIN * GROW_MIN;
        let grown = hoped.min(affordable).max(needed);
        record_file::reserve(file, grown).map_err(failed)?;
    }
    // SAFETY: the journal is this process's own file in its data directory, opened once; nothing
    // else truncates it while it is mapped (growing maps it again first; closing unmaps first).
    unsafe { MmapMut::map_mut(file) }.map_err(failed)
}

/// Calls `each(offset, kind, payload)` for every record that starts in `[from, to)` of the
/// journal at `path` (records there are written and never change: `to` is an end once seen).
pub fn scan(
    path: &Path,
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, u8, &[u8]),
) -> Result<(), LineError> {
    let mut file = File::open(path).map_err(failed)?;
    file.seek(SeekFrom::Start(from)).map_err(failed)?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(to.saturating_sub(from)));
    let mut offset = from;
    let mut header = [0u8; 5];
    let mut payload = Vec::new();
    while offset < to {
        reader.read_exact(&mut header).map_err(failed)?;
        let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        payload.resize(length as usize, 0);
        reader.read_exact(&mut payload).map_err(failed)?;
        let mut sum = [0u8; 4];
        reader.read_exact(&mut sum).map_err(failed)?;
        each(offset, header[0], &payload);
        offset += (payload.len() + record_file::RECORD_OVERHEAD) as u64;
    }
    Ok(())
}

/// The record that starts at `offset` of `file`: (kind, payload).
pub fn read_at(file: &File, offset: u64) -> Result<(u8, Vec<u8>), LineError> {
    let mut header = [0u8; 5];
    file.read_exact_at(&mut header, offset).map_err(failed)?;
    let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if length > record_file::RECORD_LENGTH_MAX {
        return Err(LineError::Corrupt(format!(
            "no record starts at {offset} of the line's journal"
        )));
    }
    let mut payload = vec![0u8; length as usize];
    file.read_exact_at(&mut payload, offset + 5)
        .map_err(failed)?;
    Ok((header[0], payload))
}

impl Journal {
    /// Where the records end: what was appended so far.
    pub fn end(&self) -> u64 {
        let mapped = self
            .mapped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        mapped.end as u64
    }

    /// Takes `file`, whose records end at `end`, and starts the thread that syncs it.
    pub fn start(file: File, end: u64) -> Result<Self, LineError> {
        // A full disk does not stop the start: the line maps what it has and grows on the
        // first join that needs room (refused until the disk has some).
        let map = match map(&file, end + 1) {
            Ok(map) => Some(map),
            Err(error) if end == 0 => {
                tracing::warn!(%error, "the waiting line's journal has no room yet");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "the waiting line's journal has no room ahead yet");
                Some(map(&file, end)?)
            }
        };
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
        let mapped_length = mapped.map.as_ref().map_or(0, |map| map.len());
        if end >= mapped_length {
            let wanted = u64::try_from(end + 1).map_err(failed)?;
            mapped.map = Some(map(&mapped.file, wanted)?);
        }
        let start = mapped.end;
        let Some(map) = mapped.map.as_mut() else {
            return Err(failed("the waiting line's journal is not mapped"));
        };
        map[start..end].copy_from_slice(bytes);
        mapped.end = end;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Ok(mapped) = self.mapped.get_mut() {
            if let Some(map) = mapped.map.take() {
                let _ = map.flush();
            }
            // The room reserved ahead goes back to the volume (a failed start leaves nothing
            // behind); the next start replays up to `end` and reserves afresh.
            if let Ok(end) = u64::try_from(mapped.end) {
                if let Err(error) = mapped.file.set_len(end) {
                    tracing::warn!(%error, "cutting the waiting line's journal at its last record");
                }
            }
        }
    }
}
