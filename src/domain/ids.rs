//! Identifiers. Sale and order ids are opaque, URL-safe and at most 64 characters; they are
//! UUIDv7 in simple form, so sorting by id sorts by creation time (newest-first listings and
//! pagination cursors rely on that).

use std::fmt;

/// Longest sale or order id the API accepts (the contract's limit).
pub const ID_LENGTH_MAX: usize = 64;
/// Longest buyer id (`sub` claim) the API accepts.
pub const USER_ID_LENGTH_MAX: usize = 64;

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
        pub struct $name(String);

        impl $name {
            /// A new id, ordered after every id this process made before.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().simple().to_string())
            }

            /// Accepts an id that came from outside (a path, a cursor, a store row).
            pub fn parse(text: &str) -> Option<Self> {
                is_url_safe_id(text).then(|| Self(text.to_owned()))
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

/// A buyer, as named by the `sub` claim of their token: 1 to 64 characters, any text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: &str) -> Option<Self> {
        let length = text.chars().count();
        (1..=USER_ID_LENGTH_MAX)
            .contains(&length)
            .then(|| Self(text.to_owned()))
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
    fn generated_ids_are_url_safe_and_increasing() {
        let first = OrderId::generate();
        let second = OrderId::generate();
        assert!(OrderId::parse(first.as_str()).is_some());
        assert!(second > first, "{second} should sort after {first}");
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
