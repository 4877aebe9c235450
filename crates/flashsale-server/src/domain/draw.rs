//! A waiting room's committed draw. At creation a sale with a room gets a secret 32-byte seed and
//! publishes its SHA-256 (the commitment) at once; the seed itself is shown from `starts_at` on,
//! when the pre-start line is closed to the draw. A buyer's draw is HMAC-SHA256(key = seed,
//! message = sale id + "\n" + buyer id), and buyers who joined before the start are ordered by it,
//! ascending: anyone can recompute the order, and neither the operator (committed before anyone
//! joined) nor a buyer (the seed is secret while it could help) could steer it.

use std::fmt;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{Sale, SaleId, UserId};

pub const SEED_BYTES: usize = 32;

/// A buyer's draw: 32 bytes, compared as bytes (big-endian), smallest first.
pub type Draw = [u8; 32];

/// A sale's draw seed. Its `Debug` shows the commitment only: a seed in a log before the start
/// would let its reader pick a winning buyer id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DrawSeed([u8; SEED_BYTES]);

impl fmt::Debug for DrawSeed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "DrawSeed(commitment {})",
            hex(&self.commitment())
        )
    }
}

impl DrawSeed {
    pub fn from_bytes(bytes: [u8; SEED_BYTES]) -> Self {
        Self(bytes)
    }

    /// The seed a slice holds, when it is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The seed from its lowercase or uppercase hex (64 digits).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = unhex(text)?;
        Self::from_slice(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8; SEED_BYTES] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// SHA-256 of the seed: what the sale publishes before the start.
    pub fn commitment(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// The buyer's draw in this sale.
    pub fn draw(&self, sale: &SaleId, user: &UserId) -> Draw {
        // Any key length is valid for HMAC: the fallback is never taken.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| Hmac::<Sha256>::new(&Default::default()));
        mac.update(sale.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(user.as_str().as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The seed of the sale's draw as the public may see it at `now`: only from `starts_at` on (before
/// it, knowing the seed would let a buyer choose an id that draws well).
pub fn revealed_seed(sale: &Sale, now: Timestamp) -> Option<DrawSeed> {
    let seed = sale.waiting_room?.draw_seed?;
    (now >= sale.starts_at).then_some(seed)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would take a sign ("+f").
    if !text.len().is_multiple_of(2) || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> DrawSeed {
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = i as u8;
        }
        DrawSeed::from_bytes(bytes)
    }

    // The vectors below were computed with Python's standard library, independently of this code:
    // python3 -c 'import hmac,hashlib; seed=bytes(range(32));
    //   print(hashlib.sha256(seed).hexdigest());
    //   print(hmac.new(seed, b"sale-1\nalice", hashlib.sha256).hexdigest())'
    #[test]
    fn the_commitment_and_a_draw_match_a_fixed_vector() {
        assert_eq!(
            hex(&seed().commitment()),
            "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
        );
        let sale = SaleId::parse("sale-1").unwrap();
        assert_eq!(
            hex(&seed().draw(&sale, &UserId::parse("alice").unwrap())),
            "03454c7eaaacfc1956e18bf5e7faf3d41f5f621686346745391cc19bcf8d1a23"
        );
        let sale = SaleId::parse("01JF0000000000000000000000").unwrap();
        assert_eq!(
            hex(&seed().draw(&sale, &UserId::parse("bob").unwrap())),
            "51f193f869580a10cdf6fd1f5c79d5afbb9dca2f3c62dbe8f8cc9c4a66ad09c3"
        );
    }

    #[test]
    fn a_seed_reads_back_from_its_hex_and_hides_itself_in_debug() {
        let text = seed().to_hex();
        assert_eq!(DrawSeed::from_hex(&text), Some(seed()));
        assert_eq!(DrawSeed::from_hex(&text.to_uppercase()), Some(seed()));
        assert_eq!(DrawSeed::from_hex(&text[..62]), None);
        assert_eq!(DrawSeed::from_hex(&format!("{}zz", &text[..62])), None);
        assert!(!format!("{:?}", seed()).contains(&text));
    }

    #[test]
    fn the_seed_shows_from_the_start_on() {
        let mut sale = Sale::of_stock_for_test(1);
        sale.waiting_room = Some(crate::domain::WaitingRoom {
            admit_per_sec: 1,
            pass_ttl_secs: 60,
            opens_before_secs: 0,
            draw_seed: Some(seed()),
        });
        let start = sale.starts_at;
        let before = start - jiff::SignedDuration::from_millis(1);
        assert_eq!(revealed_seed(&sale, before), None);
        assert_eq!(revealed_seed(&sale, start), Some(seed()));
        sale.waiting_room = sale.waiting_room.map(|room| crate::domain::WaitingRoom {
            draw_seed: None,
            ..room
        });
        assert_eq!(
            revealed_seed(&sale, start),
            None,
            "a sale made before seeds"
        );
    }
}
