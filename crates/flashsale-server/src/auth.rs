//! Who is asking. The admin presents the configured admin token; a buyer presents an HS256 JWT
//! whose `sub` is their user id. Only HS256 is accepted: `alg: none`, any other algorithm, a bad
//! signature, a missing or past `exp`, or a `nbf` in the future are all refused.
//!
//! JWTs are verified here over RustCrypto's HMAC (constant-time comparison) rather than through a
//! general JWT crate: one algorithm is all the contract allows, and it keeps RSA and elliptic-curve
//! code out of the build.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::UserId;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Buyer(UserId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization: Bearer credentials")]
    Missing,
    #[error("invalid credentials: expected a Bearer token")]
    NotBearer,
    /// A bearer that is neither the admin token nor a token signed with the JWT secret.
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
    /// A token signed with the JWT secret, refused for its claims (expired, not valid yet, no
    /// usable `sub`): a buyer's stale token, not a guess.
    #[error("invalid credentials: {0}")]
    Refused(&'static str),
}

impl AuthError {
    /// Whether the bearer could have been a guess of the admin token (it was compared with it
    /// and matched nothing we signed).
    pub fn may_guess_the_admin_token(&self) -> bool {
        matches!(self, AuthError::Invalid(_))
    }
}

pub struct Authenticator {
    admin_token: Vec<u8>,
    /// Encoded headers that say HS256, as common token libraries write them: recognizing them
    /// byte for byte saves decoding and parsing the header of almost every token.
    known_headers: [String; 3],
    /// Keyed once; cloning a keyed HMAC is cheaper than keying it per request.
    jwt_key: HmacSha256,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: serde_json::Number,
    nbf: Option<serde_json::Number>,
}

fn seconds(number: &serde_json::Number) -> Option<f64> {
    number.as_f64().filter(|value| value.is_finite())
}

impl Authenticator {
    pub fn new(admin_token: &str, jwt_secret: &str) -> Self {
        Self {
            admin_token: admin_token.as_bytes().to_vec(),
            known_headers: [
                r#"{"alg":"HS256","typ":"JWT"}"#,
                r#"{"typ":"JWT","alg":"HS256"}"#,
                r#"{"alg":"HS256"}"#,
            ]
            .map(|header| URL_SAFE_NO_PAD.encode(header)),
            // HMAC takes keys of any length, so this cannot fail; an empty key is still a key.
            jwt_key: HmacSha256::new_from_slice(jwt_secret.as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
        }
    }

    /// Checks an `Authorization` header value against the clock (`now_secs`, Unix seconds).
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now_secs: i64,
    ) -> Result<Principal, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let token = value.strip_prefix(b"Bearer ").ok_or(AuthError::NotBearer)?;
        if !self.admin_token.is_empty() && bool::from(token.ct_eq(&self.admin_token)) {
            return Ok(Principal::Admin);
        }
        let token = std::str::from_utf8(token).map_err(|_| AuthError::Invalid("not a token"))?;
        self.verify(token, now_secs).map(Principal::Buyer)
    }

    pub fn verify(&self, token: &str, now_secs: i64) -> Result<UserId, AuthError> {
        let mut parts = token.split('.');
        let (Some(header_part), Some(claims_part), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid("not a JWT"));
        };
        if !self.known_headers.iter().any(|known| known == header_part) {
            let header: Header = decode_json(header_part)?;
            if header.alg != "HS256" {
                return Err(AuthError::Invalid("only HS256 tokens are accepted"));
            }
        }
        // An HS256 signature is 32 bytes: anything longer cannot verify. Decoded on the stack
        // (as are the claims): the purchase path allocates nothing for a token.
        let mut signature_bytes = [0u8; 32];
        let signature_length = URL_SAFE_NO_PAD
            .decode_slice(signature, &mut signature_bytes)
            .map_err(|_| AuthError::Invalid("malformed signature"))?;
        let mut mac = self.jwt_key.clone();
        // The signed input is the header and the claims as sent, with the dot between them.
        mac.update(&token.as_bytes()[..header_part.len() + 1 + claims_part.len()]);
        mac.verify_slice(&signature_bytes[..signature_length])
            .map_err(|_| AuthError::Invalid("bad signature"))?;
        let claims: Claims =
            decode_json(claims_part).map_err(|_| AuthError::Refused("malformed claims"))?;
        let now = now_secs as f64;
        let exp = seconds(&claims.exp).ok_or(AuthError::Refused("exp is not a time"))?;
        if exp <= now {
            return Err(AuthError::Refused("token expired"));
        }
        if let Some(nbf) = &claims.nbf {
            if seconds(nbf).is_none_or(|nbf| nbf > now) {
                return Err(AuthError::Refused("token not valid yet"));
            }
        }
        UserId::parse(&claims.sub).ok_or(AuthError::Refused("sub must be 1 to 64 characters"))
    }
}

/// Claims of the size buyers' tokens have fit here; larger ones are decoded on the heap.
const DECODED_ON_STACK: usize = 512;

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let malformed = |_| AuthError::Invalid("malformed token");
    let mut stack = [0u8; DECODED_ON_STACK];
    match URL_SAFE_NO_PAD.decode_slice(part, &mut stack) {
        Ok(length) => serde_json::from_slice(&stack[..length]).map_err(|_| malformed(())),
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed(()))?;
            serde_json::from_slice(&bytes).map_err(|_| malformed(()))
        }
        Err(base64::DecodeSliceError::DecodeError(_)) => Err(malformed(())),
    }
}

/// Signs buyer tokens with one secret. Keyed once, so minting many (the bench mints one per
/// request) costs one HMAC each.
pub struct TokenMinter {
    key: HmacSha256,
    header: String,
}

impl TokenMinter {
    pub fn new(jwt_secret: &str) -> Self {
        Self {
            key: HmacSha256::new_from_slice(jwt_secret.as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
            header: URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        }
    }

    pub fn mint(&self, user_id: &str, expires_at_secs: i64) -> String {
        // A JSON string of the user id cannot fail to serialize.
        let sub = serde_json::to_string(user_id).unwrap_or_default();
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":{sub},"exp":{expires_at_secs}}}"#));
        let signed = format!("{}.{claims}", self.header);
        let mut mac = self.key.clone();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }
}

/// Signs one buyer token (what `flashsale token` prints).
pub fn mint_token(jwt_secret: &str, user_id: &str, expires_at_secs: i64) -> String {
    TokenMinter::new(jwt_secret).mint(user_id, expires_at_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn authenticator() -> Authenticator {
        Authenticator::new("admin-secret", "jwt-secret")
    }

    fn forge(header: &str, claims: &str, key: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac = HmacSha256::new_from_slice(key.as_bytes()).unwrap();
        mac.update(signed.as_bytes());
        format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn a_minted_token_names_its_buyer() {
        let token = mint_token("jwt-secret", "alice", NOW + 60);
        assert_eq!(
            authenticator().verify(&token, NOW).unwrap(),
            UserId::parse("alice").unwrap()
        );
    }

    #[test]
    fn odd_user_ids_survive_minting() {
        let token = mint_token("jwt-secret", "quote\"and\\slash", NOW + 60);
        assert_eq!(
            authenticator().verify(&token, NOW).unwrap().as_str(),
            "quote\"and\\slash"
        );
    }

    #[test]
    fn the_admin_token_is_recognized() {
        assert_eq!(
            authenticator().authenticate(Some(b"Bearer admin-secret"), NOW),
            Ok(Principal::Admin)
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, NOW + 60);
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        let cases = [
            ("wrong secret", mint_token("other", "alice", NOW + 60)),
            ("expired", mint_token("jwt-secret", "alice", NOW)),
            ("alg none", unsigned),
            ("HS512", forge(r#"{"alg":"HS512"}"#, &claims, "jwt-secret")),
            (
                "HS512 typ",
                forge(r#"{"alg":"HS512","typ":"JWT"}"#, &claims, "jwt-secret"),
            ),
            (
                "empty sub",
                forge(
                    r#"{"alg":"HS256"}"#,
                    &format!(r#"{{"sub":"","exp":{}}}"#, NOW + 60),
                    "jwt-secret",
                ),
            ),
            (
                "no exp",
                forge(r#"{"alg":"HS256"}"#, r#"{"sub":"alice"}"#, "jwt-secret"),
            ),
            (
                "future nbf",
                forge(
                    r#"{"alg":"HS256"}"#,
                    &format!(r#"{{"sub":"a","exp":{},"nbf":{}}}"#, NOW + 60, NOW + 30),
                    "jwt-secret",
                ),
            ),
            ("garbage", "a.b.c".to_string()),
            ("two parts", "a.b".to_string()),
        ];
        for (name, token) in cases {
            assert!(
                authenticator().verify(&token, NOW).is_err(),
                "{name} was accepted"
            );
        }
        assert_eq!(
            authenticator().authenticate(None, NOW),
            Err(AuthError::Missing)
        );
        assert!(authenticator()
            .authenticate(Some(b"Basic YWxpY2U6"), NOW)
            .is_err());
    }

    #[test]
    fn an_unusual_hs256_header_is_accepted() {
        let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, NOW + 60);
        let token = forge(
            r#"{"typ":"JWT", "alg":"HS256", "kid":"1"}"#,
            &claims,
            "jwt-secret",
        );
        assert!(authenticator().verify(&token, NOW).is_ok());
    }

    #[test]
    fn a_tampered_claim_breaks_the_signature() {
        let token = mint_token("jwt-secret", "alice", NOW + 60);
        let parts: Vec<&str> = token.split('.').collect();
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"mallory","exp":{}}}"#, NOW + 60));
        let tampered = format!("{}.{}.{}", parts[0], claims, parts[2]);
        assert_eq!(
            authenticator().verify(&tampered, NOW),
            Err(AuthError::Invalid("bad signature"))
        );
    }

    /// Only a bearer that matched neither the admin token nor our signature may be a guess of
    /// the admin token; a buyer's expired token (our signature) and a missing or non-bearer
    /// header are not.
    #[test]
    fn only_unsigned_bearers_may_be_admin_token_guesses() {
        let auth = authenticator();
        let verdict = |header: Option<&str>| {
            auth.authenticate(header.map(str::as_bytes), NOW)
                .map(|_| ())
                .unwrap_err()
                .may_guess_the_admin_token()
        };
        let expired = format!("Bearer {}", mint_token("jwt-secret", "alice", NOW - 1));
        let forged = format!("Bearer {}", mint_token("other-secret", "alice", NOW + 60));
        assert!(verdict(Some("Bearer admin-secreT")));
        assert!(verdict(Some(&forged)));
        assert!(!verdict(Some(&expired)));
        assert!(!verdict(Some("Basic YWRtaW46")));
        assert!(!verdict(None));
    }

    /// Claims are decoded on the stack up to 512 bytes: larger ones still verify, and a
    /// signature longer than HS256's 32 bytes is refused.
    #[test]
    fn large_claims_verify_and_long_signatures_do_not() {
        let padding = "x".repeat(900);
        let claims = format!(r#"{{"sub":"alice","exp":{},"note":"{padding}"}}"#, NOW + 60);
        let token = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, "jwt-secret");
        assert_eq!(
            authenticator().verify(&token, NOW).unwrap(),
            UserId::parse("alice").unwrap()
        );
        let long = format!("{token}{}", URL_SAFE_NO_PAD.encode([7u8; 8]));
        assert!(authenticator().verify(&long, NOW).is_err());
    }
}
