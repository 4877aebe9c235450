//! The waiting room's rules: a line in front of a sale. Buyers who join before `starts_at` (by
//! when their request arrived) are ordered by a draw (`draw.rs`: a number unrelated to when they
//! came) at `starts_at`; later joiners queue behind them in arrival order. Admission is computed from time, `floor(admit_per_sec × active
//! seconds)` buyers of the line, where the seconds while the sale is sold out or paused do not
//! count and a new rate counts from the moment it was set; an
//! admitted buyer holds a pass until `pass_expires_at`, and whoever lets it run out is at the end
//! of the line again when joining anew.
//!
//! The line's storage (embedded or Redis) keeps the facts: each buyer's place, the admission
//! progress and when each pass expires. These functions turn the facts into what a buyer sees.

use jiff::{SignedDuration, Timestamp};

use super::{DrawSeed, InvalidField, Sale};

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
    /// The seed of the committed draw (`draw.rs`), chosen at creation; `None` for a sale made
    /// before seeds existed, whose draw stays the server's keyed hash and publishes nothing.
    pub draw_seed: Option<DrawSeed>,
}

/// How far before the line's now a join may say its request arrived. The line places a join by
/// its arrival (a request that reached the server before `starts_at` is in the draw, however long
/// it waited for its turn), but a node may not backdate joins further than this.
pub const ARRIVAL_SLACK_MS: i64 = 2000;

/// The arrival a join is placed by: `arrived_ms`, but never later than `now_ms` nor earlier than
/// `now_ms - ARRIVAL_SLACK_MS`.
pub fn arrival_ms(arrived_ms: i64, now_ms: i64) -> i64 {
    arrived_ms.clamp(now_ms.saturating_sub(ARRIVAL_SLACK_MS), now_ms)
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
            // The service draws the seed (the rules do no IO).
            draw_seed: None,
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

/// How far admission has gone: `base` buyers by `since_ms`, then `admit_per_sec` more per
/// second while the line runs. It stops while the sale is sold out (`sold_out`) or paused by the
/// operator (`paused`); the change that stops or restarts it, or changes the rate, is recorded at
/// the moment it happens (by the stock gate, which sees the last unit go and stock come back), so
/// seconds while the line stood still never count, however rarely buyers look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub base: u64,
    pub since_ms: i64,
    pub admit_per_sec: u32,
    pub paused: bool,
    pub sold_out: bool,
}

/// What changed for a line's admission at one moment; `None`: as it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionChange {
    pub paused: Option<bool>,
    pub sold_out: Option<bool>,
    pub admit_per_sec: Option<u32>,
}

impl Admission {
    /// Before anything happened: admission starts at `starts_at`, at the room's rate.
    pub fn initial(sale: &Sale, room: &WaitingRoom) -> Self {
        Self {
            base: 0,
            since_ms: sale.starts_at.as_millisecond(),
            admit_per_sec: room.admit_per_sec,
            paused: false,
            sold_out: false,
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.paused || self.sold_out
    }

    /// How many buyers of the line are admitted at `now_ms`: `floor(rate × ms / 1000)` more
    /// than `base`, computed in whole seconds and the rest so that a Lua script (doubles) gets
    /// the same number.
    pub fn admitted(&self, now_ms: i64) -> u64 {
        if self.is_stopped() || now_ms <= self.since_ms {
            return self.base;
        }
        let elapsed_ms = u64::try_from(now_ms - self.since_ms).unwrap_or(0);
        let rate = u64::from(self.admit_per_sec);
        let more = rate
            .saturating_mul(elapsed_ms / 1000)
            .saturating_add(rate * (elapsed_ms % 1000) / 1000);
        self.base.saturating_add(more)
    }

    /// The admission after `change` at `at_ms`, or `None` when it changes nothing: whoever was
    /// admitted by then stays admitted, and the count goes on from there by the new state.
    pub fn changed(&self, at_ms: i64, change: AdmissionChange) -> Option<Self> {
        let next = Self {
            base: self.admitted(at_ms),
            since_ms: self.since_ms.max(at_ms),
            admit_per_sec: change.admit_per_sec.unwrap_or(self.admit_per_sec),
            paused: change.paused.unwrap_or(self.paused),
            sold_out: change.sold_out.unwrap_or(self.sold_out),
        };
        let same = next.admit_per_sec == self.admit_per_sec
            && next.paused == self.paused
            && next.sold_out == self.sold_out;
        (!same).then_some(next)
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
    /// The operator paused the sale; admission goes on when it is resumed.
    Paused { position: u64 },
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

pub fn standing(sale: &Sale, facts: &LineFacts) -> Standing {
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
    let admitted = facts.admission.admitted(facts.now_ms);
    if place <= admitted {
        return Standing::Admitted {
            pass_expires_ms: None,
        };
    }
    let position = place - admitted;
    if facts.admission.paused {
        return Standing::Paused { position };
    }
    if facts.admission.sold_out {
        return Standing::SoldOut { position };
    }
    // The buyer is admitted once `position` more are: the time to the next whole admission,
    // rounded up to a second.
    let rate = u64::from(facts.admission.admit_per_sec.max(1));
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
            version: 1,
            paused: false,
            access: crate::domain::SaleAccess::Public,
        }
    }

    fn room() -> WaitingRoom {
        WaitingRoom {
            admit_per_sec: 10,
            pass_ttl_secs: 60,
            opens_before_secs: 900,
            draw_seed: None,
        }
    }

    #[test]
    fn admission_follows_the_rate_and_stops_while_sold_out_or_paused() {
        let start = Admission::initial(&sale(), &room());
        assert_eq!(start.admitted(999_000), 0);
        assert_eq!(start.admitted(1_000_000), 0);
        assert_eq!(start.admitted(1_000_099), 0);
        assert_eq!(start.admitted(1_000_100), 1);
        assert_eq!(start.admitted(1_002_500), 25);
        let sold_out = |value| AdmissionChange {
            sold_out: Some(value),
            ..AdmissionChange::default()
        };
        let paused = |value| AdmissionChange {
            paused: Some(value),
            ..AdmissionChange::default()
        };
        let stopped = start.changed(1_003_000, sold_out(true)).unwrap();
        assert_eq!(stopped.admitted(1_050_000), 30);
        assert_eq!(stopped.changed(1_060_000, sold_out(true)), None);
        // Paused while sold out: stock coming back does not restart it; resuming does.
        let held = stopped.changed(1_055_000, paused(true)).unwrap();
        let back = held.changed(1_058_000, sold_out(false)).unwrap();
        assert_eq!(back.admitted(1_070_000), 30);
        let resumed = back.changed(1_060_000, paused(false)).unwrap();
        assert_eq!(resumed.admitted(1_061_000), 40);
        // A new rate from its moment on; who was admitted stays admitted.
        let faster = resumed
            .changed(
                1_061_000,
                AdmissionChange {
                    admit_per_sec: Some(100),
                    ..AdmissionChange::default()
                },
            )
            .unwrap();
        assert_eq!(faster.admitted(1_061_000), 40);
        assert_eq!(faster.admitted(1_062_500), 190);
        // Before the start, a change moves nothing: admission still starts at `starts_at`.
        let early = start.changed(900_000, paused(true)).unwrap();
        assert_eq!((early.base, early.since_ms), (0, 1_000_000));
    }

    #[test]
    fn the_count_in_seconds_and_rest_is_exact_for_long_lines() {
        let start = Admission {
            admit_per_sec: ADMIT_PER_SEC_MAX as u32,
            ..Admission::initial(&sale(), &room())
        };
        let year_ms = 365 * 86_400_000_i64;
        assert_eq!(
            start.admitted(1_000_000 + year_ms + 999),
            1_000_000 * 365 * 86_400 + 999_000
        );
    }

    #[test]
    fn a_buyer_sees_position_eta_pass_and_expiry() {
        let (sale, room) = (sale(), room());
        let facts = |now_ms, place, pass| LineFacts {
            now_ms,
            place,
            admission: Admission::initial(&sale, &room),
            pass_expires_ms: pass,
        };
        assert_eq!(
            standing(&sale, &facts(990_000, None, None)),
            Standing::Waiting {
                position: None,
                eta_secs: None
            }
        );
        assert_eq!(
            standing(&sale, &facts(1_001_000, Some(35), None)),
            Standing::Waiting {
                position: Some(25),
                eta_secs: Some(3)
            }
        );
        assert_eq!(
            standing(&sale, &facts(1_003_500, Some(35), None)),
            Standing::Admitted {
                pass_expires_ms: None
            }
        );
        assert_eq!(
            standing(&sale, &facts(1_010_000, Some(35), Some(1_070_000))),
            Standing::Admitted {
                pass_expires_ms: Some(1_070_000)
            }
        );
        assert_eq!(
            standing(&sale, &facts(1_070_000, Some(35), Some(1_070_000))),
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
                opens_before_secs: 900,
                draw_seed: None,
            }
        );
    }
}
