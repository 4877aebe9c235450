//! The journal file and the space ahead of its records. Space is written with zeros before
//! records land on it (as databases pre-write their log segments): a record then overwrites
//! blocks the file already has, and a group commit's sync writes data, not the file's block map
//! too. A thread of its own keeps up to `AHEAD` bytes ready so that a growing journal never
//! makes a commit wait for the zeros (the first version did it in the writer: the first commit
//! of a sale stalled ~200 ms on 64 MiB of zeros).
//!
//! On a disk running full: the reserve ahead only grows while `SPACE_FLOOR_BYTES` would stay
//! free (at start too: a nearly full disk starts with whatever fits, and says so), so it never
//! takes the last space; a batch that needs more than the reserve extends it itself, as long as
//! the disk has room. When the disk has none left for a single order, the journal is *starved*:
//! the writer refuses writes at once (reads go on from memory), the reserve left is given back
//! (the file is cut at its last record), and the thread only watches the free space until a
//! piece can be reserved above the floor again, then writing resumes by itself. Because the
//! writer checks each batch's room before applying it, a full disk never leaves memory ahead of
//! the file. The file is also cut at its last record when the journal closes (a failed start
//! included), so nothing of the reserve is left behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::record_file::{free_bytes, is_out_of_space, SPACE_FLOOR_BYTES};

/// Space kept ready past the last record, when the disk allows.
const AHEAD: u64 = 32 << 20;
/// Space is made ready in pieces of this size, when less than `AHEAD - PIECE` is left.
const PIECE: u64 = 4 << 20;
/// Zeros are written this much at a time (so a nearly full disk yields all it has, to within a
/// chunk) ...
const CHUNK: usize = 64 << 10;
/// ... and pushed to the disk this much at a time: a group commit's `fdatasync` writes every
/// dirty page of the file, so zeros left dirty would make a commit wait for them.
const WRITE_OUT: u64 = 1 << 20;
/// What a batch that outgrew the reserve asks for at least.
const WRITER_STEP: u64 = 1 << 20;
/// A starved journal resumes once this much can be reserved above the floor.
const RESUME_BYTES: u64 = 1 << 20;
/// How often the thread looks.
const LOOK_EVERY: Duration = Duration::from_millis(5);
/// How often it measures the free space (for `/metrics`, and while starved).
const MEASURE_EVERY: u32 = 20;

struct Space {
    file: File,
    /// Where the records end (the writer's).
    end: AtomicU64,
    /// Bytes from the start that are written (records or zeros) and synced.
    ready: AtomicU64,
    /// Held while zeros are written or the file is cut, so the thread and the writer never
    /// change the same range.
    filling: Mutex<()>,
    stop: AtomicBool,
    /// Writes are refused for lack of space (see the module's doc).
    starved: AtomicBool,
    /// Free bytes on the volume, as last measured.
    free: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Space {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.filling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the file ready up to `wanted` (rounded up to a chunk); on a failure, what was
    /// written stays ready and the rest is cut off again. Returns where the file is ready now.
    fn fill_to(&self, wanted: u64) -> std::io::Result<u64> {
        let _filling = self.lock();
        let from = self.ready.load(Ordering::Acquire);
        if wanted <= from {
            return Ok(from);
        }
        let to = wanted.div_ceil(CHUNK as u64) * CHUNK as u64;
        let zeros = vec![0u8; CHUNK];
        let mut at = from;
        let mut written_out = from;
        let mut failure = None;
        while at < to {
            if let Err(error) = self.file.write_all_at(&zeros, at) {
                failure = Some(error);
                break;
            }
            at += CHUNK as u64;
            if at - written_out >= WRITE_OUT || at >= to {
                if let Err(error) = write_out(&self.file, written_out, at - written_out) {
                    failure = Some(error);
                    break;
                }
                written_out = at;
            }
        }
        if let Some(error) = failure {
            // A chunk cut short (or not written out) is not ready: cut the file there.
            let kept = written_out;
            let cut = self.file.set_len(kept).and_then(|()| self.file.sync_all());
            if cut.is_ok() {
                self.ready.store(kept, Ordering::Release);
            }
            self.publish();
            return Err(error);
        }
        // The data is on the disk already; this makes the new size and blocks durable.
        self.file.sync_all()?;
        self.ready.store(to, Ordering::Release);
        self.publish();
        Ok(to)
    }

    /// What the reserve may grow by without taking the floor: `wanted` at most, in chunks.
    fn affordable(&self, wanted: u64) -> u64 {
        let free = self.measure();
        let spare = free.saturating_sub(SPACE_FLOOR_BYTES).min(wanted);
        spare / CHUNK as u64 * CHUNK as u64
    }

    fn measure(&self) -> u64 {
        match free_bytes(&self.file) {
            Ok(free) => {
                self.free.store(free, Ordering::Relaxed);
                self.publish();
                free
            }
            // Unknown: assume none to spare, so the reserve waits rather than fills the disk.
            Err(_) => 0,
        }
    }

    fn publish(&self) {
        let ready = self.ready.load(Ordering::Acquire);
        let end = self.end.load(Ordering::Acquire);
        self.metrics.storage.set(
            self.free.load(Ordering::Relaxed),
            ready.saturating_sub(end),
            self.starved.load(Ordering::Acquire),
        );
    }

    /// Cuts the file at its last record: the reserve is given back to the volume.
    fn give_back(&self) -> std::io::Result<()> {
        let _filling = self.lock();
        let end = self.end.load(Ordering::Acquire);
        self.file.set_len(end)?;
        self.file.sync_all()?;
        self.ready.store(end, Ordering::Release);
        self.publish();
        Ok(())
    }

    /// One look of the thread: resume a starved journal once there is room again, else keep
    /// the reserve ahead as far as the floor allows.
    fn keep(&self, look: u32) {
        if look.is_multiple_of(MEASURE_EVERY) {
            self.measure();
        }
        let end = self.end.load(Ordering::Acquire);
        let ready = self.ready.load(Ordering::Acquire);
        if self.starved.load(Ordering::Acquire) {
            if !look.is_multiple_of(MEASURE_EVERY) {
                return;
            }
            let grant = self.affordable(PIECE);
            if grant < RESUME_BYTES {
                return;
            }
            if self.fill_to(end + grant).is_ok() {
                self.starved.store(false, Ordering::Release);
                self.publish();
                tracing::warn!(
                    reserved_bytes = grant,
                    "the order journal has disk space again: writing resumes"
                );
            }
            return;
        }
        if ready >= end + AHEAD - PIECE {
            return;
        }
        let grant = self.affordable(PIECE);
        if grant == 0 {
            return;
        }
        if let Err(error) = self.fill_to(ready + grant) {
            if !is_out_of_space(&error) {
                tracing::error!(%error, "preparing space in the order journal");
            }
        }
    }
}

/// Writes the range's dirty pages to the disk and waits for them (not the file's metadata).
fn write_out(file: &File, offset: u64, length: u64) -> std::io::Result<()> {
    let (Ok(offset), Ok(length)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(length),
    ) else {
        return file.sync_data();
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), offset, length, flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The journal as the writer appends to it.
pub struct Journal {
    space: Arc<Space>,
    keeper: Option<std::thread::JoinHandle<()>>,
    _lock: DirectoryLock,
}

/// What the rest of the store may ask about the journal's space.
#[derive(Clone)]
pub struct SpaceStatus(Arc<Space>);

impl SpaceStatus {
    /// Why writes are refused, if they are.
    pub fn starved(&self) -> Option<String> {
        self.0
            .starved
            .load(Ordering::Acquire)
            .then(|| starved_message(self.0.free.load(Ordering::Relaxed)))
    }
}

fn starved_message(free: u64) -> String {
    format!(
        "the data directory's disk is full ({} KiB free): orders are refused until {} KiB are \
         free",
        free >> 10,
        (SPACE_FLOOR_BYTES + RESUME_BYTES) >> 10
    )
}

/// The data directory's journal, held by one process: a second server on the same directory would
/// interleave its records with ours (or compact the file under us), so it is refused at start.
pub struct DirectoryLock(File);

impl DirectoryLock {
    pub fn take(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(std::io::Error::other(format!(
                "another process holds {} (is a server already running on this data directory?)",
                path.display()
            )));
        }
        Ok(Self(file))
    }
}

impl Drop for DirectoryLock {
    fn drop(&mut self) {
        // SAFETY: as in `take`.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Journal {
    /// Takes the journal `file`, whose records end at `end`, makes up to `AHEAD` bytes ready
    /// (before the store serves anything; less on a nearly full disk) and starts the thread that
    /// keeps them ready.
    pub fn open(
        file: File,
        end: u64,
        lock: DirectoryLock,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        metrics.storage.enable();
        let space = Arc::new(Space {
            end: AtomicU64::new(end),
            ready: AtomicU64::new(end),
            file,
            filling: Mutex::new(()),
            stop: AtomicBool::new(false),
            starved: AtomicBool::new(false),
            free: AtomicU64::new(0),
            metrics,
        });
        let grant = space.affordable(AHEAD);
        if grant < AHEAD {
            tracing::warn!(
                reserved_bytes = grant,
                wanted_bytes = AHEAD,
                free_bytes = space.free.load(Ordering::Relaxed),
                "the disk is nearly full: the order journal starts with a smaller reserve ahead"
            );
        }
        if let Err(error) = space.fill_to(end + grant) {
            tracing::warn!(%error, "the order journal could not reserve space ahead");
        }
        let keeper = Arc::clone(&space);
        let keeper = std::thread::Builder::new()
            .name("journal-space".into())
            .spawn(move || {
                let mut look: u32 = 0;
                while !keeper.stop.load(Ordering::Acquire) {
                    std::thread::sleep(LOOK_EVERY);
                    keeper.keep(look);
                    look = look.wrapping_add(1);
                }
            })?;
        Ok(Self {
            space,
            keeper: Some(keeper),
            _lock: lock,
        })
    }

    pub fn status(&self) -> SpaceStatus {
        SpaceStatus(Arc::clone(&self.space))
    }

    /// Why writes are refused, if they are (see the module's doc).
    pub fn starved(&self) -> Option<String> {
        self.status().starved()
    }

    /// Bytes that can be appended without waiting for the disk, after trying to make `needed`
    /// of them (beyond the reserve, whatever the floor: these are records a client waits for).
    pub fn room_for(&mut self, needed: u64) -> u64 {
        let space = &self.space;
        let end = space.end.load(Ordering::Acquire);
        let ready = space.ready.load(Ordering::Acquire);
        if end + needed <= ready {
            return ready - end;
        }
        let ready = match space.fill_to(end + needed.max(WRITER_STEP)) {
            Ok(ready) => ready,
            Err(error) => {
                if !is_out_of_space(&error) {
                    tracing::error!(%error, "extending the order journal");
                }
                space.ready.load(Ordering::Acquire)
            }
        };
        ready.saturating_sub(end)
    }

    /// The disk has no room for another order: writes are refused from now on and the reserve
    /// left is given back, until the thread finds space again.
    pub fn starve(&mut self) {
        if self.space.starved.swap(true, Ordering::AcqRel) {
            return;
        }
        let free = self.space.measure();
        tracing::error!(free_bytes = free, "{}; reads go on", starved_message(free));
        if let Err(error) = self.space.give_back() {
            tracing::error!(%error, "giving back the order journal's reserve");
        }
    }

    /// Appends `bytes` after the last record and waits until they are on disk. The caller made
    /// room for them (`room_for`).
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let start = self.space.end.load(Ordering::Acquire);
        let end = start + bytes.len() as u64;
        if end > self.space.ready.load(Ordering::Acquire) {
            self.space.fill_to(end)?;
        }
        self.space.file.write_all_at(bytes, start)?;
        self.space.file.sync_data()?;
        self.space.end.store(end, Ordering::Release);
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.space.stop.store(true, Ordering::Release);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        // Nothing of the reserve stays behind: the next start replays up to the last record and
        // reserves afresh (a failed start leaves the disk as it found it).
        if let Err(error) = self.space.give_back() {
            tracing::warn!(%error, "cutting the order journal at its last record");
        }
    }
}
