//! Presale access codes: `base64url(nonce ‖ tag)`, 22 characters, where the nonce is 8 random
//! bytes and the tag the first 8 bytes of HMAC-SHA256(key, "sale id" ‖ 0 ‖ nonce). Checking one
//! costs one HMAC and no IO, and nothing has to be stored when codes are made: a code is known
//! because it verifies. Which buyer a code belongs to is the stock gate's to record, atomically
//! with the purchase that first uses it.
//!
//! Two codes collide when two nonces do: among a million codes of one sale the odds are about
//! 3 in 10^8. A guessed code passes with odds 2^-64 per try.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::SaleId;

type HmacSha256 = Hmac<Sha256>;

/// Codes one request may make (the contract's limit).
pub const CODES_PER_REQUEST_MAX: i64 = 1_000_000;

const NONCE_BYTES: usize = 8;
const TAG_BYTES: usize = 8;
/// The length of a code's text.
pub const CODE_LENGTH: usize = 22;

/// Makes and checks codes; every node derives the same key from the shared JWT secret.
#[derive(Clone)]
pub struct AccessCodes {
    key: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("no randomness for access codes: {0}")]
pub struct NoRandomness(String);

impl AccessCodes {
    /// A code maker whose key is derived from `secret` (the JWT secret), for this purpose only.
    pub fn from_secret(secret: &[u8]) -> Self {
        let key = match HmacSha256::new_from_slice(secret) {
            Ok(mut mac) => {
                mac.update(b"flashsale access code v1");
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => secret.to_vec(),
        };
        Self { key }
    }

    fn tag(&self, sale: &SaleId, nonce: &[u8]) -> Option<[u8; TAG_BYTES]> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(sale.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(nonce);
        let digest = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&digest[..TAG_BYTES]);
        Some(tag)
    }

    /// `count` new codes for `sale` (fresh random nonces).
    pub fn make(&self, sale: &SaleId, count: usize) -> Result<Vec<String>, NoRandomness> {
        let mut nonces = vec![0u8; count * NONCE_BYTES];
        getrandom::fill(&mut nonces).map_err(|error| NoRandomness(error.to_string()))?;
        Ok(nonces
            .chunks_exact(NONCE_BYTES)
            .filter_map(|nonce| {
                let tag = self.tag(sale, nonce)?;
                let mut bytes = [0u8; NONCE_BYTES + TAG_BYTES];
                bytes[..NONCE_BYTES].copy_from_slice(nonce);
                bytes[NONCE_BYTES..].copy_from_slice(&tag);
                Some(URL_SAFE_NO_PAD.encode(bytes))
            })
            .collect())
    }

    /// Whether `code` is one of `sale`'s (surrounding spaces ignored, as a person may paste
    /// them); the code's text as made, if it is.
    pub fn verify<'a>(&self, code: &'a str, sale: &SaleId) -> Option<&'a str> {
        let code = code.trim();
        if code.len() != CODE_LENGTH {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(code).ok()?;
        let (nonce, tag) = bytes.split_at_checked(NONCE_BYTES)?;
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(sale.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(nonce);
        mac.verify_truncated_left(tag).ok()?;
        Some(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_opens_only_its_sale_and_only_as_made() {
        let codes = AccessCodes::from_secret(b"0123456789abcdef0123456789abcdef");
        let (sale, other) = (SaleId::generate(), SaleId::generate());
        let made = codes.make(&sale, 1000).unwrap();
        assert_eq!(made.len(), 1000);
        let distinct: std::collections::HashSet<&String> = made.iter().collect();
        assert_eq!(distinct.len(), 1000);
        for code in &made {
            assert_eq!(code.len(), CODE_LENGTH);
            assert_eq!(codes.verify(code, &sale), Some(code.as_str()));
            assert_eq!(codes.verify(code, &other), None);
        }
        assert_eq!(
            codes.verify(&format!(" {} ", made[0]), &sale),
            Some(made[0].as_str())
        );
        let mut forged = made[0].clone().into_bytes();
        forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            codes.verify(std::str::from_utf8(&forged).unwrap(), &sale),
            None
        );
        let elsewhere = AccessCodes::from_secret(b"another secret, just as long, 32+");
        assert_eq!(elsewhere.verify(&made[0], &sale), None);
        for garbage in ["", "short", "🎟🎟🎟🎟🎟", &"A".repeat(22)] {
            assert_eq!(codes.verify(garbage, &sale), None);
        }
    }
}
