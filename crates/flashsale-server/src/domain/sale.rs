//! A sale: a stock offered from `starts_at` until `ends_at`, with a per-buyer limit and a
//! payment window for the orders it creates. An operator may change it while it runs (see
//! `change.rs`): each change makes a new version.

use jiff::{SignedDuration, Timestamp};

use super::waiting_room::{WaitingRoom, WaitingRoomDraft};
use super::SaleId;

pub const NAME_LENGTH_MAX: usize = 200;
pub const DESCRIPTION_LENGTH_MAX: usize = 2000;
pub const STOCK_MAX: i64 = 1_000_000_000;
pub const PER_USER_LIMIT_MAX: i64 = 100;
pub const PAYMENT_WINDOW_SECS_MAX: i64 = 86_400;
pub const PAYMENT_WINDOW_SECS_DEFAULT: i64 = 900;

/// Who may buy: anyone, or only a buyer holding one of the sale's access codes (a presale).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaleAccess {
    #[default]
    Public,
    Codes,
}

impl SaleAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Codes => "codes",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Public, Self::Codes]
            .into_iter()
            .find(|access| access.as_str() == text)
    }
}

/// A sale as stored: one version of it. A change (`SaleChange`) makes the next version; only
/// the stock gate's count changes between versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sale {
    pub id: SaleId,
    pub name: String,
    pub description: String,
    pub stock: u64,
    pub per_user_limit: u32,
    pub price_cents: u64,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub payment_window_secs: u32,
    pub created_at: Timestamp,
    /// The line in front of the sale, if it has one.
    pub waiting_room: Option<WaitingRoom>,
    /// 1 when created, one more with each change.
    pub version: u64,
    /// Paused by the operator: nothing sells and the line admits nobody until resumed.
    pub paused: bool,
    pub access: SaleAccess,
}

/// How long an ended sale stays among the current ones (`Sale::is_current`): long enough for a
/// buyer who watched it to read that it ended, short enough that the list a storefront polls
/// carries only what can still change.
pub const RECENTLY_ENDED: SignedDuration = SignedDuration::from_hours(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaleState {
    Scheduled,
    Live,
    SoldOut,
    Paused,
    Ended,
}

impl SaleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::SoldOut => "sold_out",
            Self::Paused => "paused",
            Self::Ended => "ended",
        }
    }
}

impl Sale {
    pub fn state(&self, now: Timestamp, remaining: u64) -> SaleState {
        if self.has_ended(now) {
            SaleState::Ended
        } else if self.paused {
            SaleState::Paused
        } else if now < self.starts_at {
            SaleState::Scheduled
        } else if remaining == 0 {
            SaleState::SoldOut
        } else {
            SaleState::Live
        }
    }

    pub fn has_ended(&self, now: Timestamp) -> bool {
        self.ends_at.is_some_and(|ends_at| now >= ends_at)
    }

    /// Whether a buyer can still act on the sale, or has just seen it end: not ended, or ended
    /// less than `RECENTLY_ENDED` (or its payment window, if longer) ago. What a storefront lists.
    pub fn is_current(&self, now: Timestamp) -> bool {
        let Some(ends_at) = self.ends_at else {
            return true;
        };
        let window = SignedDuration::from_secs(i64::from(self.payment_window_secs));
        let shown = ends_at
            .saturating_add(RECENTLY_ENDED.max(window))
            .unwrap_or(Timestamp::MAX);
        now < shown
    }

    /// When an order placed at `now` stops being payable.
    pub fn payment_deadline(&self, now: Timestamp) -> Timestamp {
        now.saturating_add(SignedDuration::from_secs(i64::from(
            self.payment_window_secs,
        )))
        .unwrap_or(Timestamp::MAX)
    }
}

/// A value the caller sent that the rules refuse, and which field it was in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// What an admin asks for when creating a sale, before the rules have checked it. Numbers are
/// wide and signed so that an out-of-range value is reported by field rather than lost in parsing.
#[derive(Clone, Debug, Default)]
pub struct SaleDraft {
    pub name: String,
    pub description: Option<String>,
    pub stock: i64,
    pub per_user_limit: Option<i64>,
    pub price_cents: Option<i64>,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub payment_window_secs: Option<i64>,
    pub waiting_room: Option<WaitingRoomDraft>,
    pub access: SaleAccess,
}

pub(super) fn check_name(name: &str) -> Result<(), InvalidField> {
    let name_length = name.chars().count();
    if name_length == 0 || name_length > NAME_LENGTH_MAX || name.trim().is_empty() {
        return Err(InvalidField::new(
            "name",
            format!("must be 1 to {NAME_LENGTH_MAX} characters and not blank"),
        ));
    }
    Ok(())
}

pub(super) fn check_description(description: &str) -> Result<(), InvalidField> {
    if description.chars().count() > DESCRIPTION_LENGTH_MAX {
        return Err(InvalidField::new(
            "description",
            format!("must be at most {DESCRIPTION_LENGTH_MAX} characters"),
        ));
    }
    Ok(())
}

pub(super) fn in_range(
    field: &'static str,
    value: i64,
    low: i64,
    high: i64,
) -> Result<i64, InvalidField> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(InvalidField::new(
            field,
            format!("must be between {low} and {high}, got {value}"),
        ))
    }
}

impl SaleDraft {
    /// Checks every rule of the contract and gives the sale to store.
    pub fn validate(self, id: SaleId, now: Timestamp) -> Result<Sale, InvalidField> {
        check_name(&self.name)?;
        let description = self.description.unwrap_or_default();
        check_description(&description)?;
        let stock = in_range("stock", self.stock, 1, STOCK_MAX)?;
        let per_user_limit = in_range(
            "per_user_limit",
            self.per_user_limit.unwrap_or(1),
            1,
            PER_USER_LIMIT_MAX,
        )?;
        let price_cents = in_range("price_cents", self.price_cents.unwrap_or(0), 0, i64::MAX)?;
        let payment_window_secs = in_range(
            "payment_window_secs",
            self.payment_window_secs
                .unwrap_or(PAYMENT_WINDOW_SECS_DEFAULT),
            1,
            PAYMENT_WINDOW_SECS_MAX,
        )?;
        if let Some(ends_at) = self.ends_at {
            if ends_at <= self.starts_at {
                return Err(InvalidField::new("ends_at", "must be after starts_at"));
            }
            if ends_at <= now {
                return Err(InvalidField::new("ends_at", "must be in the future"));
            }
        }
        let waiting_room = self
            .waiting_room
            .map(WaitingRoomDraft::validate)
            .transpose()?;
        // The ranges above were checked, so these conversions cannot fail; `unwrap_or` keeps the
        // code free of panics all the same.
        Ok(Sale {
            id,
            name: self.name,
            description,
            stock: u64::try_from(stock).unwrap_or(0),
            per_user_limit: u32::try_from(per_user_limit).unwrap_or(1),
            price_cents: u64::try_from(price_cents).unwrap_or(0),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            payment_window_secs: u32::try_from(payment_window_secs).unwrap_or(1),
            created_at: now,
            waiting_room,
            version: 1,
            paused: false,
            access: self.access,
        })
    }
}

#[cfg(test)]
impl Sale {
    /// A sale of `stock` units with the contract's defaults (one per buyer), starting
    /// 2026-12-01T12:00:00Z: for tests of what sells it.
    pub(crate) fn of_stock_for_test(stock: i64) -> Self {
        SaleDraft {
            name: "Test sale".into(),
            stock,
            starts_at: "2026-12-01T12:00:00Z".parse().unwrap(),
            ..SaleDraft::default()
        }
        .validate(SaleId::generate(), "2026-11-01T00:00:00Z".parse().unwrap())
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn draft() -> SaleDraft {
        SaleDraft {
            name: "Concert".into(),
            stock: 100,
            starts_at: at("2026-12-01T12:00:00Z"),
            ..SaleDraft::default()
        }
    }

    #[test]
    fn an_ended_sale_stays_current_for_an_hour_or_its_payment_window() {
        let now = at("2026-11-01T00:00:00Z");
        let ends_at = at("2026-12-01T13:00:00Z");
        let ending = |payment_window_secs| {
            SaleDraft {
                ends_at: Some(ends_at),
                payment_window_secs: Some(payment_window_secs),
                ..draft()
            }
            .validate(SaleId::generate(), now)
            .unwrap()
        };
        let short = ending(60);
        assert!(short.is_current(now), "scheduled");
        assert!(
            short.is_current(at("2026-12-01T13:59:59Z")),
            "ended 59 min ago"
        );
        assert!(
            !short.is_current(at("2026-12-01T14:00:00Z")),
            "ended an hour ago"
        );
        let long = ending(7200);
        assert!(
            long.is_current(at("2026-12-01T14:59:59Z")),
            "its orders still payable"
        );
        assert!(!long.is_current(at("2026-12-01T15:00:00Z")));
        let endless = draft().validate(SaleId::generate(), now).unwrap();
        assert!(
            endless.is_current(at("2100-01-01T00:00:00Z")),
            "a sale without an end"
        );
    }

    #[test]
    fn defaults_follow_the_contract() {
        let sale = draft()
            .validate(SaleId::generate(), at("2026-11-01T00:00:00Z"))
            .unwrap();
        assert_eq!(sale.per_user_limit, 1);
        assert_eq!(sale.price_cents, 0);
        assert_eq!(sale.payment_window_secs, 900);
        assert_eq!(sale.description, "");
        assert_eq!(sale.ends_at, None);
    }

    #[test]
    fn each_out_of_range_value_names_its_field() {
        let now = at("2026-11-01T00:00:00Z");
        let cases: Vec<(&str, SaleDraft)> = vec![
            (
                "name",
                SaleDraft {
                    name: String::new(),
                    ..draft()
                },
            ),
            (
                "name",
                SaleDraft {
                    name: "x".repeat(201),
                    ..draft()
                },
            ),
            (
                "description",
                SaleDraft {
                    description: Some("x".repeat(2001)),
                    ..draft()
                },
            ),
            (
                "stock",
                SaleDraft {
                    stock: 0,
                    ..draft()
                },
            ),
            (
                "stock",
                SaleDraft {
                    stock: 1_000_000_001,
                    ..draft()
                },
            ),
            (
                "per_user_limit",
                SaleDraft {
                    per_user_limit: Some(101),
                    ..draft()
                },
            ),
            (
                "price_cents",
                SaleDraft {
                    price_cents: Some(-1),
                    ..draft()
                },
            ),
            (
                "payment_window_secs",
                SaleDraft {
                    payment_window_secs: Some(0),
                    ..draft()
                },
            ),
            (
                "payment_window_secs",
                SaleDraft {
                    payment_window_secs: Some(86_401),
                    ..draft()
                },
            ),
            (
                "ends_at",
                SaleDraft {
                    ends_at: Some(at("2026-12-01T11:00:00Z")),
                    ..draft()
                },
            ),
            (
                "ends_at",
                SaleDraft {
                    starts_at: at("2026-10-01T00:00:00Z"),
                    ends_at: Some(at("2026-10-02T00:00:00Z")),
                    ..draft()
                },
            ),
        ];
        for (field, bad) in cases {
            let error = bad.validate(SaleId::generate(), now).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn state_follows_clock_and_stock() {
        let sale = SaleDraft {
            ends_at: Some(at("2026-12-01T13:00:00Z")),
            ..draft()
        }
        .validate(SaleId::generate(), at("2026-11-01T00:00:00Z"))
        .unwrap();
        assert_eq!(
            sale.state(at("2026-12-01T11:59:59Z"), 5),
            SaleState::Scheduled
        );
        assert_eq!(sale.state(at("2026-12-01T12:00:00Z"), 5), SaleState::Live);
        assert_eq!(
            sale.state(at("2026-12-01T12:30:00Z"), 0),
            SaleState::SoldOut
        );
        assert_eq!(sale.state(at("2026-12-01T13:00:00Z"), 5), SaleState::Ended);
        let paused = Sale {
            paused: true,
            ..sale
        };
        assert_eq!(
            paused.state(at("2026-12-01T11:00:00Z"), 5),
            SaleState::Paused
        );
        assert_eq!(
            paused.state(at("2026-12-01T12:30:00Z"), 0),
            SaleState::Paused
        );
        assert_eq!(
            paused.state(at("2026-12-01T13:00:00Z"), 5),
            SaleState::Ended
        );
    }
}
