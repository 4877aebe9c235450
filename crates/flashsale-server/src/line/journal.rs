//! The embedded line's durable record: an append-only file of small records, mapped into memory.
//! A change is copied into the mapping (under the line's lock, so records keep the order of the
//! changes) before it is acknowledged, and a thread syncs the file every 5 ms when something was
//! written: a killed or crashed process loses nothing (the mapping is the kernel's page cache); a
//! power cut can lose the last 5 ms of joins, whose buyers then join again. A place is worth less
//! than an order (orders wait for the disk); waiting for the disk would cap joins at one batch per
//! sync, and a `write` per join cost more than the rest of the join (measured). The records and
//! their framing are `crate::record_file`'s.

use std::fs::File;
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
    map: MmapMut,
    end: usize,
}

/// How often the syncer flushes what was written to the disk.
const SYNC_EVERY: Duration = Duration::from_millis(5);
/// The file grows by at least this much at a time (reserved on disk, so a full disk is an error
/// when growing, not a fault when writing).
const GROW_BYTES: u64 = 16 << 20;

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

/// Maps `file` with room for at least `wanted` bytes, reserving the blocks on disk first.
fn map(file: &File, wanted: u64) -> Result<MmapMut, LineError> {
    let length = file.metadata().map_err(failed)?.len();
    if length < wanted {
        let grown = wanted.max(length.saturating_mul(2)).max(GROW_BYTES);
        record_file::reserve(file, grown).map_err(failed)?;
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
