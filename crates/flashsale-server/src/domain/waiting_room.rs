//! The waiting room's rules: a line in front of a sale. Buyers who join before `starts_at` are
//! ordered by a draw (a number unrelated to when they came) at `starts_at`; later joiners queue
//! behind them in arrival order. Admission is computed from time, `floor(admit_per_sec × active
//! seconds)` buyers of the line, where the seconds while the sale is sold out do not count; an
//! admitted buyer holds a pass until `pass_expires_at`, and whoever lets it run out is at the end
//! of the line again when joining anew.
//!
//! The line's storage (embedded or Redis) keeps the facts: each buyer's place, the admission
//! progress and when each pass expires. These functions turn the facts into what a buyer sees.

use jiff::{SignedDuration, Timestamp};

use super::{InvalidField, Sale};

pub const ADMIT_PER_SEC_MAX: i64 = 1_000_000;
pub const PASS_TTL_SECS_MIN: i64 = 10;
pub const PASS_TTL_SECS_MAX: i64 = 3600;
pub const PASS_TTL_SECS_DEFAULT: i64 = 300;
pub const OPENS_BEFORE_SECS_MAX: i64 = 86_400;
pub const OPENS_BEFORE_SECS_DEFAULT: i64 = 900;

/// A sale's waiting room, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitingRoom {
    pub admit_per_sec: u32,
    pub pass_ttl_secs: u32,
    pub opens_before_secs: u32,
}

/// The `waiting_room` object of a create request, before the rules checked it.
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitingRoomDraft {
    pub admit_per_sec: Option<i64>,
    pub pass_ttl_secs: Option<i64>,
    pub opens_before_secs: Option<i64>,
}

fn in_range(field: &'static str, value: i64, low: i64, high: i64) -> Result<u32, InvalidField> {
    if (low..=high).contains(&value) {
        Ok(u32::try_from(value).unwrap_or(u32::MAX))
    } else {
        Err(InvalidField::new(
            field,
            format!("must be between {low} and {high}, got {value}"),
        ))
    }
}

impl WaitingRoomDraft {
    pub fn validate(self) -> Result<WaitingRoom, InvalidField> {
        let admit_per_sec = self.admit_per_sec.ok_or_else(|| {
            InvalidField::new(
                "waiting_room.admit_per_sec",
                "is required in a waiting room",
            )
        })?;
        Ok(WaitingRoom {
            admit_per_sec: in_range(
                "waiting_room.admit_per_sec",
                admit_per_sec,
                1,
                ADMIT_PER_SEC_MAX,
            )?,
            pass_ttl_secs: in_range(
                "waiting_room.pass_ttl_secs",
                self.pass_ttl_secs.unwrap_or(PASS_TTL_SECS_DEFAULT),
                PASS_TTL_SECS_MIN,
                PASS_TTL_SECS_MAX,
            )?,
            opens_before_secs: in_range(
                "waiting_room.opens_before_secs",
                self.opens_before_secs.unwrap_or(OPENS_BEFORE_SECS_DEFAULT),
                0,
                OPENS_BEFORE_SECS_MAX,
            )?,
        })
    }
}

impl WaitingRoom {
    /// When buyers may start joining.
    pub fn opens_at(&self, sale: &Sale) -> Timestamp {
        sale.starts_at
            .saturating_sub(SignedDuration::from_secs(i64::from(self.opens_before_secs)))
            .unwrap_or(Timestamp::MIN)
    }

    /// The pass of a buyer admitted (first told so) at `now_ms` runs out at this time.
    pub fn pass_expiry_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(i64::from(self.pass_ttl_secs) * 1000)
    }
}

/// How far admission has gone: `base` buyers before `since_ms`, then `admit_per_sec` more per
/// second unless `paused` (the sale is sold out). Changing it is the only write admission needs,
/// and only when the sale runs out of stock or gets some back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub base: u64,
    pub since_ms: i64,
    pub paused: bool,
}

impl Admission {
    /// Before anything happened: admission starts at `starts_at`.
    pub fn initial(sale: &Sale) -> Self {
        Self {
            base: 0,
            since_ms: sale.starts_at.as_millisecond(),
            paused: false,
        }
    }

    /// How many buyers of the line are admitted at `now_ms`.
    pub fn admitted(&self, admit_per_sec: u32, now_ms: i64) -> u64 {
        if self.paused || now_ms <= self.since_ms {
            return self.base;
        }
        let elapsed_ms = u64::try_from(now_ms - self.since_ms).unwrap_or(0);
        let more = u128::from(elapsed_ms) * u128::from(admit_per_sec) / 1000;
        self.base
            .saturating_add(u64::try_from(more).unwrap_or(u64::MAX))
    }

    /// The admission after seeing at `now_ms` whether the sale is sold out, if that changes it:
    /// a sold-out sale freezes the count, stock coming back restarts the count from there.
    pub fn observe(&self, admit_per_sec: u32, now_ms: i64, sold_out: bool) -> Option<Self> {
        if sold_out == self.paused || now_ms < self.since_ms {
            return None;
        }
        Some(Self {
            base: self.admitted(admit_per_sec, now_ms),
            since_ms: now_ms,
            paused: sold_out,
        })
    }
}

/// Where a buyer is, from the line's facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// In line: `position` is the number of buyers ahead plus one, `None` until the draw at
    /// `starts_at`; `eta_secs` the estimated wait.
    Waiting {
        position: Option<u64>,
        eta_secs: Option<u64>,
    },
    /// The sale is sold out while this buyer waits; admission goes on if stock comes back.
    SoldOut { position: u64 },
    /// Admitted: may buy with a pass until `pass_expires_ms` (`None`: not handed out yet).
    Admitted { pass_expires_ms: Option<i64> },
    /// The pass ran out: the buyer is out of the line and must join again (at its end).
    PassExpired,
    /// The sale ended.
    Ended,
}

/// What the line knows of one buyer, at the line's `now_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineFacts {
    pub now_ms: i64,
    /// The buyer's place from the front of the whole line (1-based), `None` before the draw.
    pub place: Option<u64>,
    pub admission: Admission,
    pub pass_expires_ms: Option<i64>,
}

pub fn standing(sale: &Sale, room: &WaitingRoom, facts: &LineFacts) -> Standing {
    let now = Timestamp::from_millisecond(facts.now_ms).unwrap_or(Timestamp::MAX);
    if sale.has_ended(now) {
        return Standing::Ended;
    }
    if let Some(expires_ms) = facts.pass_expires_ms {
        return if facts.now_ms < expires_ms {
            Standing::Admitted {
                pass_expires_ms: Some(expires_ms),
            }
        } else {
            Standing::PassExpired
        };
    }
    let Some(place) = facts.place else {
        return Standing::Waiting {
            position: None,
            eta_secs: None,
        };
    };
    let admitted = facts.admission.admitted(room.admit_per_sec, facts.now_ms);
    if place <= admitted {
        return Standing::Admitted {
            pass_expires_ms: None,
        };
    }
    let position = place - admitted;
    if facts.admission.paused {
        return Standing::SoldOut { position };
    }
    // The buyer is admitted once `position` more are: the time to the next whole admission,
    // rounded up to a second.
    let rate = u64::from(room.admit_per_sec.max(1));
    let eta_secs = position.div_ceil(rate);
    Standing::Waiting {
        position: Some(position),
        eta_secs: Some(eta_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SaleId;

    fn sale() -> Sale {
        Sale {
            id: SaleId::generate(),
            name: "Line".into(),
            description: String::new(),
            stock: 10,
            per_user_limit: 1,
            price_cents: 0,
            starts_at: Timestamp::from_second(1_000).unwrap(),
            ends_at: None,
            payment_window_secs: 900,
            created_at: Timestamp::from_second(0).unwrap(),
            waiting_room: Some(room()),
        }
    }

    fn room() -> WaitingRoom {
        WaitingRoom {
            admit_per_sec: 10,
            pass_ttl_secs: 60,
            opens_before_secs: 900,
        }
    }

    #[test]
    fn admission_follows_the_rate_and_pauses_while_sold_out() {
        let start = Admission::initial(&sale());
        assert_eq!(start.admitted(10, 999_000), 0);
        assert_eq!(start.admitted(10, 1_000_000), 0);
        assert_eq!(start.admitted(10, 1_000_099), 0);
        assert_eq!(start.admitted(10, 1_000_100), 1);
        assert_eq!(start.admitted(10, 1_002_500), 25);
        let paused = start.observe(10, 1_003_000, true).unwrap();
        assert_eq!(paused.admitted(10, 1_050_000), 30);
        assert_eq!(paused.observe(10, 1_060_000, true), None);
        let resumed = paused.observe(10, 1_060_000, false).unwrap();
        assert_eq!(resumed.admitted(10, 1_061_000), 40);
    }

    #[test]
    fn a_buyer_sees_position_eta_pass_and_expiry() {
        let (sale, room) = (sale(), room());
        let facts = |now_ms, place, pass| LineFacts {
            now_ms,
            place,
            admission: Admission::initial(&sale),
            pass_expires_ms: pass,
        };
        assert_eq!(
            standing(&sale, &room, &facts(990_000, None, None)),
            Standing::Waiting {
                position: None,
                eta_secs: None
            }
        );
        assert_eq!(
            standing(&sale, &room, &facts(1_001_000, Some(35), None)),
            Standing::Waiting {
                position: Some(25),
                eta_secs: Some(3)
            }
        );
        assert_eq!(
            standing(&sale, &room, &facts(1_003_500, Some(35), None)),
            Standing::Admitted {
                pass_expires_ms: None
            }
        );
        assert_eq!(
            standing(&sale, &room, &facts(1_010_000, Some(35), Some(1_070_000))),
            Standing::Admitted {
                pass_expires_ms: Some(1_070_000)
            }
        );
        assert_eq!(
            standing(&sale, &room, &facts(1_070_000, Some(35), Some(1_070_000))),
            Standing::PassExpired
        );
    }

    #[test]
    fn each_out_of_range_setting_names_its_field() {
        let draft = |admit, ttl, opens| WaitingRoomDraft {
            admit_per_sec: admit,
            pass_ttl_secs: ttl,
            opens_before_secs: opens,
        };
        for (field, wrong) in [
            ("waiting_room.admit_per_sec", draft(None, None, None)),
            ("waiting_room.admit_per_sec", draft(Some(0), None, None)),
            (
                "waiting_room.admit_per_sec",
                draft(Some(1_000_001), None, None),
            ),
            ("waiting_room.pass_ttl_secs", draft(Some(5), Some(9), None)),
            (
                "waiting_room.pass_ttl_secs",
                draft(Some(5), Some(3601), None),
            ),
            (
                "waiting_room.opens_before_secs",
                draft(Some(5), None, Some(-1)),
            ),
        ] {
            assert_eq!(wrong.validate().unwrap_err().field, field);
        }
        assert_eq!(
            draft(Some(200), None, None).validate().unwrap(),
            WaitingRoom {
                admit_per_sec: 200,
                pass_ttl_secs: 300,
                opens_before_secs: 900
            }
        );
    }
}
