//! Stripe's webhook signatures: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "t.body" under the endpoint's secret>` (more than one `v1` while a secret is rolled). A
//! signature is good when one `v1` matches, compared in constant time, and `t` is within the
//! tolerance of the server's clock.

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::hex;

/// How old (or how far ahead of the server's clock) a signed event may be.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header does not read as t=…,v1=…")]
    Malformed,
    #[error("no signature of the Stripe-Signature header matches the body")]
    Mismatch,
    #[error("the signed time is more than 300 s from the server's clock")]
    Stale,
}

fn digest(secret: &[u8], timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The header Stripe would send for `body` signed at `timestamp` (tests sign their own events).
pub fn stripe_signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex(&digest(secret.as_bytes(), timestamp, body))
    )
}

/// Checks a webhook's `Stripe-Signature` against its raw body.
pub fn verify_stripe_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => {
                let seconds = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed)?;
                if timestamp.replace(seconds).is_some() {
                    return Err(SignatureError::Malformed);
                }
            }
            "v1" => signatures.push(value),
            // Other schemes (`v0`, Stripe's test scheme) are not ours to trust.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = hex(&digest(secret.as_bytes(), timestamp, body));
    // Every candidate is compared whole, in constant time.
    let matched = signatures.iter().fold(false, |matched, candidate| {
        let equal: bool = candidate.as_bytes().ct_eq(expected.as_bytes()).into();
        matched | equal
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if (now.as_second() - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn the_signature_is_stripes_hmac_of_the_time_and_the_body() {
        // Computed independently: printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256
        // -hmac whsec_test_secret
        let header = stripe_signature_header(SECRET, 1_700_000_000, br#"{"id":"evt_1"}"#);
        assert_eq!(
            header,
            "t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a"
        );
    }

    #[test]
    fn a_good_signature_passes_and_anything_else_is_refused() {
        let body = br#"{"type":"payment_intent.succeeded"}"#;
        let header = stripe_signature_header(SECRET, 1_700_000_000, body);
        let now = at(1_700_000_100);
        assert_eq!(
            verify_stripe_signature(SECRET, Some(&header), body, now),
            Ok(())
        );
        // A second v1 (a rolled secret) alongside a good one still passes.
        let rolled = format!("{header},v1={}", "0".repeat(64));
        assert_eq!(
            verify_stripe_signature(SECRET, Some(&rolled), body, now),
            Ok(())
        );
        assert_eq!(
            verify_stripe_signature("whsec_other", Some(&header), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_stripe_signature(SECRET, Some(&header), b"{}", now),
            Err(SignatureError::Mismatch),
            "another body"
        );
        assert_eq!(
            verify_stripe_signature(SECRET, Some(&header), body, at(1_700_000_301)),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_stripe_signature(SECRET, Some(&header), body, at(1_699_999_699)),
            Err(SignatureError::Stale),
            "from the future"
        );
        assert_eq!(
            verify_stripe_signature(SECRET, None, body, now),
            Err(SignatureError::Missing)
        );
        for malformed in [
            "",
            "t=abc,v1=00",
            "v1=00",
            "t=1700000000",
            "t=1,t=2,v1=00",
            "nonsense",
        ] {
            assert_eq!(
                verify_stripe_signature(SECRET, Some(malformed), body, now),
                Err(SignatureError::Malformed),
                "{malformed:?}"
            );
        }
    }
}
