//! Identifiers. Sale and order ids are opaque, URL-safe and at most 64 characters. A generated id
//! is 32 hex digits: the creation time in milliseconds, a per-process sequence, and a per-process
//! random tag. Sorting by id therefore sorts by creation time (newest-first listings and
//! pagination cursors rely on that), ids from one process never repeat, and ids from different
//! processes collide only if they share the millisecond, the sequence value and the 16-bit tag.
//! The domain only formats and parses them; `crate::ids` makes them (it reads the clock). Each
//! holds its text in an `Arc<str>`: an id is copied into every index and reply that names it,
//! and a copy is then a count, not an allocation.

use std::fmt;
use std::sync::Arc;

/// Longest sale or order id the API accepts (the contract's limit).
pub const ID_LENGTH_MAX: usize = 64;
/// Longest buyer id (`sub` claim) the API accepts.
pub const USER_ID_LENGTH_MAX: usize = 64;

/// The text of a generated id: `millis` (the creation time), then a per-process `sequence` and
/// `tag`, as fixed-width hex.
pub fn generated_id_text(millis: u64, sequence: u64, tag: u16) -> String {
    let mut text = String::with_capacity(32);
    push_hex(&mut text, millis & 0xffff_ffff_ffff, 12);
    push_hex(&mut text, sequence, 16);
    push_hex(&mut text, u64::from(tag), 4);
    text
}

/// Appends the low `digits` hex digits of `value`, most significant first.
fn push_hex(text: &mut String, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..digits).rev() {
        text.push(char::from(HEX[((value >> (shift * 4)) & 0xf) as usize]));
    }
}

fn is_url_safe_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= ID_LENGTH_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

macro_rules! opaque_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// An id made by this process (see `crate::ids`): trusted, not parsed.
            pub(crate) fn from_generated(text: String) -> Self {
                Self(text.into())
            }

            /// Accepts an id that came from outside (a path, a cursor, a store row).
            pub fn parse(text: &str) -> Option<Self> {
                is_url_safe_id(text).then(|| Self(text.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(SaleId, "Identifies a sale.");
opaque_id!(OrderId, "Identifies an order.");

/// A map keyed by sale ids answers for an id's text without a copy of it (the catalog, asked by
/// every purchase); the derived `Hash` and `Eq` are the text's own.
impl std::borrow::Borrow<str> for SaleId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A buyer, as named by the `sub` claim of their token: 1 to 64 characters, any text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    pub fn parse(text: &str) -> Option<Self> {
        let length = text.chars().count();
        (1..=USER_ID_LENGTH_MAX)
            .contains(&length)
            .then(|| Self(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_of_sale_ids_answers_for_their_text() {
        let id = SaleId::generate();
        let mut map = crate::hashing::FastMap::default();
        map.insert(id.clone(), 7);
        assert_eq!(map.get(id.as_str()), Some(&7));
        assert_eq!(map.get(format!("{id}x").as_str()), None);
        assert_eq!(map.get(SaleId::generate().as_str()), None);
    }

    #[test]
    fn generated_ids_are_url_safe_and_increasing() {
        let first = OrderId::generate();
        let second = OrderId::generate();
        assert!(OrderId::parse(first.as_str()).is_some());
        assert!(second > first, "{second} should sort after {first}");
    }

    #[test]
    fn generated_ids_have_a_fixed_width() {
        let id = SaleId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn odd_ids_are_refused() {
        for bad in ["", "a/b", "..", "a b", "é", &"x".repeat(65)] {
            assert!(SaleId::parse(bad).is_none(), "{bad:?} was accepted");
        }
        assert!(SaleId::parse(&"x".repeat(64)).is_some());
    }

    #[test]
    fn user_ids_count_characters_not_bytes() {
        assert!(UserId::parse(&"é".repeat(64)).is_some());
        assert!(UserId::parse(&"é".repeat(65)).is_none());
        assert!(UserId::parse("").is_none());
    }
}
