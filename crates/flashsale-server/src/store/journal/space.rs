//! The journal file and the space ahead of its records. Space is written with zeros before
//! records land on it (as databases pre-write their log segments): a record then overwrites
//! blocks the file already has, and a group commit's sync writes data, not the file's block map
//! too. A thread keeps `AHEAD` bytes ready so that a growing journal never makes a commit wait
//! for the zeros (the first version did it in the writer: the first commit of a sale stalled
//! ~200 ms on 64 MiB of zeros).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Space kept ready past the last record.
const AHEAD: u64 = 32 << 20;
/// Space is made ready in pieces of this size, when less than `AHEAD - PIECE` is left.
const PIECE: u64 = 4 << 20;
/// Zeros are written and pushed to the disk this much at a time: a group commit's `fdatasync`
/// writes every dirty page of the file, so zeros left dirty would make a commit wait for them.
const STEP: usize = 1 << 20;
/// How often the thread looks.
const LOOK_EVERY: Duration = Duration::from_millis(5);

struct Space {
    file: File,
    /// Where the records end (the writer's).
    end: AtomicU64,
    /// Bytes from the start that are written (records or zeros) and synced.
    ready: AtomicU64,
    /// Held while zeros are written, so the thread and the writer never fill the same range.
    filling: Mutex<()>,
    stop: AtomicBool,
}

impl Space {
    /// Makes the file ready up to at least `wanted`, in whole pieces.
    fn fill_to(&self, wanted: u64) -> std::io::Result<()> {
        let _filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
        let from = self.ready.load(Ordering::Acquire);
        if wanted <= from {
            return Ok(());
        }
        let to = wanted.div_ceil(PIECE) * PIECE;
        let zeros = vec![0u8; STEP];
        let mut at = from;
        while at < to {
            let length = usize::try_from(to - at).map_or(STEP, |left| left.min(STEP));
            self.file.write_all_at(&zeros[..length], at)?;
            write_out(&self.file, at, length)?;
            at += length as u64;
        }
        // The data is on the disk already; this makes the new size and blocks durable.
        self.file.sync_all()?;
        self.ready.store(to, Ordering::Release);
        Ok(())
    }
}

/// Writes the range's dirty pages to the disk and waits for them (not the file's metadata).
fn write_out(file: &File, offset: u64, length: usize) -> std::io::Result<()> {
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
    _lock: DirectoryLock,
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
    /// Takes the journal `file`, whose records end at `end`, makes `AHEAD` bytes ready (before
    /// the store serves anything) and starts the thread that keeps them ready.
    pub fn open(file: File, end: u64, lock: DirectoryLock) -> std::io::Result<Self> {
        let space = Arc::new(Space {
            end: AtomicU64::new(end),
            ready: AtomicU64::new(end),
            file,
            filling: Mutex::new(()),
            stop: AtomicBool::new(false),
        });
        space.fill_to(end + AHEAD)?;
        let keeper = Arc::clone(&space);
        std::thread::Builder::new()
            .name("journal-space".into())
            .spawn(move || {
                while !keeper.stop.load(Ordering::Acquire) {
                    std::thread::sleep(LOOK_EVERY);
                    let end = keeper.end.load(Ordering::Acquire);
                    if keeper.ready.load(Ordering::Acquire) < end + AHEAD - PIECE {
                        let ready = keeper.ready.load(Ordering::Acquire);
                        if let Err(error) = keeper.fill_to(ready + PIECE) {
                            tracing::error!(%error, "preparing space in the order journal");
                        }
                    }
                }
            })?;
        Ok(Self { space, _lock: lock })
    }

    /// Appends `bytes` after the last record and waits until they are on disk.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let start = self.space.end.load(Ordering::Acquire);
        let end = start + bytes.len() as u64;
        if end > self.space.ready.load(Ordering::Acquire) {
            // The thread fell behind (or a batch is larger than the space ahead): fill here.
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
    }
}
