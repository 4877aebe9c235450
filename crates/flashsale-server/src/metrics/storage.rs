//! The embedded order journal's disk: the free space on its volume and the reserve kept ahead of
//! its records, and whether writes are refused for lack of space. Rendered only by a server with
//! the journal store.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct StorageGauges {
    enabled: AtomicBool,
    free_bytes: AtomicU64,
    reserve_bytes: AtomicU64,
    out_of_space: AtomicBool,
}

impl StorageGauges {
    pub fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    pub fn set(&self, free_bytes: u64, reserve_bytes: u64, out_of_space: bool) {
        self.free_bytes.store(free_bytes, Relaxed);
        self.reserve_bytes.store(reserve_bytes, Relaxed);
        self.out_of_space.store(out_of_space, Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let rows = [
            (
                "flashsale_disk_free_bytes",
                "Free bytes on the data directory's volume (measured every 100 ms).",
                self.free_bytes.load(Relaxed),
            ),
            (
                "flashsale_journal_reserve_bytes",
                "Bytes written ahead of the order journal's records, ready for the next commits.",
                self.reserve_bytes.load(Relaxed),
            ),
            (
                "flashsale_journal_out_of_space",
                "1 while the disk is full and writes are refused (reads go on).",
                u64::from(self.out_of_space.load(Relaxed)),
            ),
        ];
        for (name, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }
}
