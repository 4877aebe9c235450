//! Append-only files of small records, shared by the embedded store's order journal and the
//! embedded waiting line's journal. Each record is `[kind u8][length u32][payload][FNV-1a u32 of
//! kind and payload]`. Space past the last record is zero (reserved ahead, so appending does not
//! grow the file on every write); reading stops at the first zero, torn or damaged record (a
//! crash in the middle of a write, never acknowledged) and the file is cut there.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Longest payload a record may have.
pub const RECORD_LENGTH_MAX: u32 = 1 << 16;

/// Bytes a record takes besides its payload.
pub const RECORD_OVERHEAD: usize = 9;

fn checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in std::iter::once(&kind).chain(payload) {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Appends one framed record to `out`. `kind` must not be 0 (the reserved space).
pub fn encode_into(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    // Replay refuses a record longer than this (it would read as damage and cut the file
    // there, with every acknowledged record after it): writing one is a bug.
    assert!(
        payload.len() <= RECORD_LENGTH_MAX as usize,
        "a record of {} bytes",
        payload.len()
    );
    assert_ne!(kind, 0, "kind 0 is the reserved space");
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&checksum(kind, payload).to_le_bytes());
}

pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + RECORD_OVERHEAD);
    encode_into(&mut bytes, kind, payload);
    bytes
}

/// Reads every whole record of the file at `path` (created if missing), cuts a torn tail and
/// the reserved space off, and calls `apply` with each (kind, payload) in order; stops at the
/// first error `apply` returns. Returns the file and where its records end.
pub fn replay<E: From<std::io::Error>>(
    path: &Path,
    mut apply: impl FnMut(u8, &[u8]) -> Result<(), E>,
) -> Result<(File, u64), E> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    let mut reader = BufReader::with_capacity(1 << 20, &mut file);
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
        apply(kind, &payload)?;
        good += RECORD_OVERHEAD as u64 + u64::from(length);
    }
    drop(reader);
    if file.metadata()?.len() != good {
        file.set_len(good)?;
        file.sync_all()?;
    }
    Ok((file, good))
}

/// Makes sure the blocks of `file` up to `length` bytes are allocated on disk (so a full disk is
/// an error here, not when writing).
pub fn reserve(file: &File, length: u64) -> std::io::Result<()> {
    let size = libc::off_t::try_from(length)
        .map_err(|_| std::io::Error::other("journal length out of range"))?;
    // SAFETY: posix_fallocate only reads the descriptor and the two numbers.
    let reserved = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size) };
    if reserved == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(reserved))
    }
}

/// Free space the journals' reserves ahead never take: whatever a nearly full disk has left
/// stays for the operator, the logs and the orders themselves (only records written for a
/// client use it).
pub const SPACE_FLOOR_BYTES: u64 = 4 << 20;

/// Bytes free for this process on the volume holding `file`.
pub fn free_bytes(file: &File) -> std::io::Result<u64> {
    // SAFETY: an all-zero statvfs is a valid value of the plain C struct fstatvfs fills.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs reads the descriptor, which `file` keeps open, and writes `stats`.
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Whether `error` says the volume (or the user's quota) is full.
pub fn is_out_of_space(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(path: &Path) -> Vec<(u8, Vec<u8>)> {
        let mut seen = Vec::new();
        replay::<std::io::Error>(path, |kind, payload| {
            seen.push((kind, payload.to_vec()));
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_torn_tail_is_cut_and_whole_records_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut whole = encode(1, b"first");
        whole.extend(encode(2, b"second"));
        let mut torn = whole.clone();
        torn.extend(&encode(3, b"third, torn")[..7]);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(
            replayed(&path),
            vec![(1, b"first".to_vec()), (2, b"second".to_vec())]
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            whole,
            "the torn record is cut off"
        );
        let mut damaged = whole.clone();
        let last = damaged.len() - 6;
        damaged[last] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(
            replayed(&path).len(),
            1,
            "a damaged record and what follows it are not replayed"
        );
    }

    #[test]
    fn reserved_zero_space_ends_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut bytes = encode(1, b"only");
        let records = bytes.len();
        bytes.extend(std::iter::repeat_n(0u8, 4096));
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(replayed(&path), vec![(1, b"only".to_vec())]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), records as u64);
    }
}
