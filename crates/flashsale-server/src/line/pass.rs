//! The pass an admitted buyer shows to buy: `<expires_ms>.<sale id>.<base64url buyer>.<base64url
//! HMAC-SHA256 tag>`, bound to (buyer, sale, expiry). Checking one costs one HMAC and no IO, so
//! a purchase pays nothing else for the waiting room.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{SaleId, UserId};

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks passes; every node of a cluster derives the same key from the shared
/// JWT secret.
#[derive(Clone)]
pub struct PassSigner {
    key: Vec<u8>,
}

/// A pass that checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedPass {
    pub expires_ms: i64,
}

impl PassSigner {
    /// A signer whose key is derived from `secret` (the JWT secret), for this purpose only.
    pub fn from_secret(secret: &[u8]) -> Self {
        let key = match HmacSha256::new_from_slice(secret) {
            Ok(mut mac) => {
                mac.update(b"flashsale queue pass v1");
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => secret.to_vec(),
        };
        Self { key }
    }

    /// The key the line's draw is keyed with (derived apart from the pass key).
    pub fn draw_key(&self) -> Vec<u8> {
        let mut key = self.key.clone();
        key.extend_from_slice(b"/draw");
        key
    }

    fn mac(&self, signed: &str) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(signed.as_bytes());
        Some(mac)
    }

    pub fn sign(&self, sale: &SaleId, user: &UserId, expires_ms: i64) -> String {
        let signed = format!(
            "{expires_ms}.{sale}.{}",
            URL_SAFE_NO_PAD.encode(user.as_str())
        );
        let tag = self
            .mac(&signed)
            .map(|mac| URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
            .unwrap_or_default();
        format!("{signed}.{tag}")
    }

    /// The pass, if it is well formed, signed here, for this buyer and sale, and not run out
    /// at `now_ms`.
    pub fn verify(
        &self,
        pass: &str,
        sale: &SaleId,
        user: &UserId,
        now_ms: i64,
    ) -> Option<VerifiedPass> {
        let (signed, tag) = pass.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(signed)?.verify_slice(&tag).ok()?;
        let mut parts = signed.splitn(3, '.');
        let expires_ms: i64 = parts.next()?.parse().ok()?;
        let pass_sale = parts.next()?;
        let pass_user = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        (pass_sale == sale.as_str() && pass_user == user.as_str().as_bytes() && now_ms < expires_ms)
            .then_some(VerifiedPass { expires_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_good_only_for_its_buyer_sale_and_time() {
        let signer = PassSigner::from_secret(b"0123456789abcdef0123456789abcdef");
        let (sale, other_sale) = (SaleId::generate(), SaleId::generate());
        let (ann, bob) = (UserId::parse("ann").unwrap(), UserId::parse("bob").unwrap());
        let pass = signer.sign(&sale, &ann, 10_000);
        assert_eq!(
            signer.verify(&pass, &sale, &ann, 9_999),
            Some(VerifiedPass { expires_ms: 10_000 })
        );
        assert_eq!(signer.verify(&pass, &sale, &ann, 10_000), None);
        assert_eq!(signer.verify(&pass, &sale, &bob, 0), None);
        assert_eq!(signer.verify(&pass, &other_sale, &ann, 0), None);
        let forged = pass.replacen("10000", "99999", 1);
        assert_eq!(signer.verify(&forged, &sale, &ann, 0), None);
        let other_key = PassSigner::from_secret(b"another secret, just as long, 32+");
        assert_eq!(other_key.verify(&pass, &sale, &ann, 0), None);
        for garbage in ["", ".", "a.b.c.d", "1.2.3", "🎟"] {
            assert_eq!(signer.verify(garbage, &sale, &ann, 0), None);
        }
    }
}
