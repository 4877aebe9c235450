//! The installation's Ed25519 key, which signs the admission logs' checkpoints. Its 32-byte seed
//! comes from `queue_log_key` (64 hex digits); unset, an embedded server generates one and keeps
//! it in the data directory, and a cluster derives it from the shared JWT secret, so every node
//! signs with the same key. `GET /api/v1/keys` publishes the public half.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

use crate::domain::{hex, Checkpoint, SaleId};

#[derive(Debug, thiserror::Error)]
#[error("queue_log_key must be 64 hex digits (a 32-byte Ed25519 seed, e.g. `head -c 32 /dev/urandom | xxd -p -c 64`)")]
pub struct InvalidLogKey;

pub struct LogSigner {
    key: Ed25519KeyPair,
    kid: String,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(out, "LogSigner(kid {})", self.kid)
    }
}

impl LogSigner {
    /// The signer of a 64-hex-digit seed.
    pub fn from_hex(seed: &str) -> Result<Self, InvalidLogKey> {
        let seed = crate::domain::DrawSeed::from_hex(seed.trim()).ok_or(InvalidLogKey)?;
        Self::from_seed(seed.as_bytes())
    }

    /// The signer every node of a cluster derives from the shared JWT secret.
    pub fn derived_from(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret)
            .unwrap_or_else(|_| Hmac::<Sha256>::new(&Default::default()));
        mac.update(b"flashsale queue log key v1");
        let seed: [u8; 32] = mac.finalize().into_bytes().into();
        // Any 32 bytes are an Ed25519 seed.
        Self::from_seed(&seed).unwrap_or_else(|InvalidLogKey| unreachable!("a 32-byte seed"))
    }

    fn from_seed(seed: &[u8; 32]) -> Result<Self, InvalidLogKey> {
        let key = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| InvalidLogKey)?;
        let digest = Sha256::digest(key.public_key().as_ref());
        let kid = hex(&digest[..8]);
        Ok(Self { key, kid })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, base64 of its 32 bytes.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.key.public_key().as_ref())
    }

    pub fn sign(&self, sale: &SaleId, checkpoint: &mut Checkpoint) {
        checkpoint.signature = self
            .key
            .sign(checkpoint.text(sale).as_bytes())
            .as_ref()
            .to_vec();
    }
}

/// Whether `signature` is `public_key`'s Ed25519 signature of `text`.
pub fn signature_valid(public_key: &[u8], text: &str, signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(text.as_bytes(), signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Admission, GENESIS};

    #[test]
    fn a_signed_checkpoint_verifies_and_a_changed_one_does_not() {
        let signer = LogSigner::from_hex(&"11".repeat(32)).unwrap();
        let sale = SaleId::parse("sale-1").unwrap();
        let admission = Admission {
            base: 0,
            since_ms: 0,
            admit_per_sec: 5,
            paused: false,
            sold_out: false,
        };
        let mut checkpoint = Checkpoint::at(3, GENESIS, 1_000, admission);
        signer.sign(&sale, &mut checkpoint);
        let public = STANDARD.decode(signer.public_key()).unwrap();
        assert_eq!(public.len(), 32);
        let text = checkpoint.text(&sale);
        assert!(signature_valid(&public, &text, &checkpoint.signature));
        checkpoint.admitted_through += 1;
        assert!(!signature_valid(
            &public,
            &checkpoint.text(&sale),
            &checkpoint.signature
        ));
        assert!(LogSigner::from_hex("beef").is_err());
        assert_eq!(
            LogSigner::derived_from(b"secret").kid(),
            LogSigner::derived_from(b"secret").kid()
        );
    }
}
