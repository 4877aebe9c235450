//! Makes new sale and order ids (their format is the domain's, `domain::ids`): the creation
//! time in milliseconds, a per-process sequence and a per-process random tag. Making one costs
//! no system call (every purchase makes one before the gate decides), and ids from one process
//! sort by creation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::{generated_id_text, OrderId, SaleId};

struct IdSource {
    sequence: AtomicU64,
    tag: u16,
}

fn id_source() -> &'static IdSource {
    static SOURCE: OnceLock<IdSource> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let mut seed = [0u8; 8];
        // Without OS randomness ids stay unique within the process; only the cross-process
        // tag loses its spread, so falling back to the clock is acceptable.
        if getrandom::fill(&mut seed).is_err() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos());
            seed = (nanos as u64).to_le_bytes();
        }
        let seed = u64::from_le_bytes(seed);
        IdSource {
            // Start low in the range so the sequence never wraps in practice.
            sequence: AtomicU64::new(seed >> 24),
            tag: (seed & 0xffff) as u16,
        }
    })
}

fn generate_id() -> String {
    let source = id_source();
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let sequence = source.sequence.fetch_add(1, Ordering::Relaxed);
    generated_id_text(millis, sequence, source.tag)
}

impl SaleId {
    /// A new id, ordered after every id this process made before.
    pub fn generate() -> Self {
        Self::from_generated(generate_id())
    }
}

impl OrderId {
    /// A new id, ordered after every id this process made before.
    pub fn generate() -> Self {
        Self::from_generated(generate_id())
    }
}
