//! A checkpoint as both lines keep it (a record of the embedded journal, an element of a Redis
//! list): `n (8), hash (32), admitted through (8), time ms (8), the rule: base (8), since ms (8),
//! rate (4), paused (1), sold out (1), then the signature`, little-endian.

use crate::domain::{Admission, Checkpoint};

const FIXED: usize = 8 + 32 + 8 + 8 + 8 + 8 + 4 + 1 + 1;

pub fn encode(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FIXED + checkpoint.signature.len());
    bytes.extend_from_slice(&checkpoint.n.to_le_bytes());
    bytes.extend_from_slice(&checkpoint.hash);
    bytes.extend_from_slice(&checkpoint.admitted_through.to_le_bytes());
    bytes.extend_from_slice(&checkpoint.time_ms.to_le_bytes());
    let rule = &checkpoint.admission;
    bytes.extend_from_slice(&rule.base.to_le_bytes());
    bytes.extend_from_slice(&rule.since_ms.to_le_bytes());
    bytes.extend_from_slice(&rule.admit_per_sec.to_le_bytes());
    bytes.push(u8::from(rule.paused));
    bytes.push(u8::from(rule.sold_out));
    bytes.extend_from_slice(&checkpoint.signature);
    bytes
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }

    fn flag(&mut self) -> Option<bool> {
        self.take::<1>().map(|[byte]| byte != 0)
    }
}

pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
    let mut reader = Reader(bytes);
    let n = reader.u64()?;
    let hash = reader.take::<32>()?;
    let admitted_through = reader.u64()?;
    let time_ms = reader.i64()?;
    let admission = Admission {
        base: reader.u64()?,
        since_ms: reader.i64()?,
        admit_per_sec: reader.take().map(u32::from_le_bytes)?,
        paused: reader.flag()?,
        sold_out: reader.flag()?,
    };
    Some(Checkpoint {
        n,
        hash,
        admitted_through,
        time_ms,
        admission,
        signature: reader.0.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_and_a_short_one_does_not() {
        let checkpoint = Checkpoint {
            n: 12,
            hash: [3; 32],
            admitted_through: 7,
            time_ms: 1_700_000_000_123,
            admission: Admission {
                base: 4,
                since_ms: 1_700_000_000_000,
                admit_per_sec: 250,
                paused: true,
                sold_out: false,
            },
            signature: vec![9; 64],
        };
        let bytes = encode(&checkpoint);
        assert_eq!(decode(&bytes), Some(checkpoint));
        assert_eq!(decode(&bytes[..FIXED - 1]), None);
    }
}
