//! What an operator may change while a sale runs, and the rules each change must keep: a change
//! turns one version of a sale into the next. Whether enough units remain to take some off sale
//! is the stock gate's to say (it alone knows what is held right now), so that is not checked here.

use jiff::Timestamp;

use super::sale::{check_description, check_name, in_range, PER_USER_LIMIT_MAX, STOCK_MAX};
use super::waiting_room::ADMIT_PER_SEC_MAX;
use super::{InvalidField, Sale, SaleEvent};

/// The most units a sale may ever have on offer, whatever is added: within what a JSON number
/// carries exactly (2^53), far beyond any real stock.
pub const STOCK_TOTAL_MAX: u64 = 1 << 53;

/// What kind of change made a version (each is its own event: `flashsale.sale.paused`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaleChangeKind {
    Updated,
    Paused,
    Resumed,
    Ended,
}

impl SaleChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Updated => "updated",
            Self::Paused => "paused",
            Self::Resumed => "resumed",
            Self::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Updated, Self::Paused, Self::Resumed, Self::Ended]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// The fields of a `PATCH`, each absent unless given; numbers wide and signed so that an
/// out-of-range value is reported by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaleUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `Some(None)`: no end any more.
    pub ends_at: Option<Option<Timestamp>>,
    pub add_stock: Option<i64>,
    pub remove_stock: Option<i64>,
    pub per_user_limit: Option<i64>,
    pub admit_per_sec: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaleChange {
    Update(SaleUpdate),
    Pause,
    Resume,
    /// `ends_at` becomes now.
    End,
}

/// A sale's next version and what made it: what the store records in one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaleRevision {
    pub sale: Sale,
    pub kind: SaleChangeKind,
    /// When the change took effect (its event's time).
    pub at: Timestamp,
}

impl SaleRevision {
    /// The event the change is recorded with.
    pub fn event(&self) -> SaleEvent {
        match self.kind {
            SaleChangeKind::Updated => SaleEvent::Updated,
            SaleChangeKind::Paused => SaleEvent::Paused,
            SaleChangeKind::Resumed => SaleEvent::Resumed,
            SaleChangeKind::Ended => SaleEvent::Ended,
        }
    }
}

impl SaleChange {
    pub fn kind(&self) -> SaleChangeKind {
        match self {
            Self::Update(_) => SaleChangeKind::Updated,
            Self::Pause => SaleChangeKind::Paused,
            Self::Resume => SaleChangeKind::Resumed,
            Self::End => SaleChangeKind::Ended,
        }
    }

    /// Whether the change takes off sale more units than the sale has at all (then certainly
    /// more than remain: the answer is the gate's `remaining`, not a new version).
    pub fn removes_beyond_stock(&self, base: &Sale) -> bool {
        match self {
            Self::Update(update) => update
                .remove_stock
                .is_some_and(|remove| u64::try_from(remove).unwrap_or(0) > base.stock),
            _ => false,
        }
    }

    /// The sale's next version at `now`, or `None` when the change changes nothing (pausing a
    /// paused sale, ending an ended one, an empty update): the sale stays at its version.
    pub fn apply(&self, base: &Sale, now: Timestamp) -> Result<Option<SaleRevision>, InvalidField> {
        let mut next = base.clone();
        match self {
            Self::Pause => next.paused = true,
            Self::Resume => next.paused = false,
            Self::End => {
                if !base.has_ended(now) {
                    next.ends_at = Some(now);
                }
            }
            Self::Update(update) => update.apply_to(&mut next, now)?,
        }
        if next == *base {
            return Ok(None);
        }
        next.version = base.version + 1;
        Ok(Some(SaleRevision {
            sale: next,
            kind: self.kind(),
            at: now,
        }))
    }
}

impl SaleUpdate {
    fn apply_to(&self, sale: &mut Sale, now: Timestamp) -> Result<(), InvalidField> {
        if let Some(name) = &self.name {
            check_name(name)?;
            sale.name.clone_from(name);
        }
        if let Some(description) = &self.description {
            check_description(description)?;
            sale.description.clone_from(description);
        }
        if let Some(ends_at) = self.ends_at {
            if let Some(ends_at) = ends_at {
                if ends_at < now {
                    return Err(InvalidField::new("ends_at", "must not be before now"));
                }
                if ends_at <= sale.starts_at {
                    return Err(InvalidField::new("ends_at", "must be after starts_at"));
                }
            }
            sale.ends_at = ends_at;
        }
        if self.add_stock.is_some() && self.remove_stock.is_some() {
            return Err(InvalidField::new(
                "remove_stock",
                "cannot be combined with add_stock in one change",
            ));
        }
        if let Some(add) = self.add_stock {
            let add = in_range("add_stock", add, 1, STOCK_MAX)?;
            let total = sale
                .stock
                .checked_add(u64::try_from(add).unwrap_or(0))
                .filter(|total| *total <= STOCK_TOTAL_MAX)
                .ok_or_else(|| {
                    InvalidField::new(
                        "add_stock",
                        format!("the stock may not exceed {STOCK_TOTAL_MAX} units"),
                    )
                })?;
            sale.stock = total;
        }
        if let Some(remove) = self.remove_stock {
            let remove = in_range("remove_stock", remove, 1, STOCK_MAX)?;
            // Whether this much remains is the gate's call (more than the stock never does:
            // `removes_beyond_stock`).
            sale.stock = sale
                .stock
                .saturating_sub(u64::try_from(remove).unwrap_or(0));
        }
        if let Some(limit) = self.per_user_limit {
            let limit = in_range("per_user_limit", limit, 1, PER_USER_LIMIT_MAX)?;
            let limit = u32::try_from(limit).unwrap_or(1);
            if limit < sale.per_user_limit {
                return Err(InvalidField::new(
                    "per_user_limit",
                    format!(
                        "can only be raised (it is {}): buyers already hold up to it",
                        sale.per_user_limit
                    ),
                ));
            }
            sale.per_user_limit = limit;
        }
        if let Some(rate) = self.admit_per_sec {
            let field = "waiting_room.admit_per_sec";
            let Some(room) = sale.waiting_room.as_mut() else {
                return Err(InvalidField::new(
                    "waiting_room",
                    "this sale has no waiting room",
                ));
            };
            let rate = in_range(field, rate, 1, ADMIT_PER_SEC_MAX)?;
            room.admit_per_sec = u32::try_from(rate).unwrap_or(1);
        }
        Ok(())
    }

    /// Units this update takes off sale: a change the gate must decide before the store
    /// records it (the store may never count fewer units than the gate).
    pub fn removes_stock(&self) -> bool {
        self.remove_stock.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SaleDraft, SaleId, WaitingRoomDraft};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn sale() -> Sale {
        SaleDraft {
            name: "Drop".into(),
            stock: 100,
            per_user_limit: Some(2),
            starts_at: at("2026-12-01T12:00:00Z"),
            ends_at: Some(at("2026-12-01T13:00:00Z")),
            waiting_room: Some(WaitingRoomDraft {
                admit_per_sec: Some(10),
                ..WaitingRoomDraft::default()
            }),
            ..SaleDraft::default()
        }
        .validate(SaleId::generate(), at("2026-11-01T00:00:00Z"))
        .unwrap()
    }

    const NOW: &str = "2026-12-01T12:10:00Z";

    fn update(update: SaleUpdate) -> Result<Option<SaleRevision>, InvalidField> {
        SaleChange::Update(update).apply(&sale(), at(NOW))
    }

    #[test]
    fn each_change_makes_the_next_version_with_its_kind() {
        let base = sale();
        let paused = SaleChange::Pause.apply(&base, at(NOW)).unwrap().unwrap();
        assert_eq!((paused.sale.version, paused.sale.paused), (2, true));
        assert_eq!(paused.kind, SaleChangeKind::Paused);
        let resumed = SaleChange::Resume
            .apply(&paused.sale, at(NOW))
            .unwrap()
            .unwrap();
        assert_eq!((resumed.sale.version, resumed.sale.paused), (3, false));
        let ended = SaleChange::End.apply(&base, at(NOW)).unwrap().unwrap();
        assert_eq!(ended.sale.ends_at, Some(at(NOW)));
        assert_eq!(ended.kind, SaleChangeKind::Ended);
        let grown = update(SaleUpdate {
            name: Some("Drop II".into()),
            add_stock: Some(50),
            per_user_limit: Some(3),
            admit_per_sec: Some(20),
            ends_at: Some(None),
            ..SaleUpdate::default()
        })
        .unwrap()
        .unwrap();
        let sale = grown.sale;
        assert_eq!(
            (
                sale.name.as_str(),
                sale.stock,
                sale.per_user_limit,
                sale.ends_at
            ),
            ("Drop II", 150, 3, None)
        );
        assert_eq!(sale.waiting_room.unwrap().admit_per_sec, 20);
        let shrunk = update(SaleUpdate {
            remove_stock: Some(30),
            ..SaleUpdate::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(shrunk.sale.stock, 70);
    }

    #[test]
    fn a_change_that_changes_nothing_keeps_the_version() {
        let base = sale();
        assert_eq!(SaleChange::Resume.apply(&base, at(NOW)), Ok(None));
        assert_eq!(update(SaleUpdate::default()), Ok(None));
        let ended = SaleChange::End.apply(&base, at("2026-12-01T14:00:00Z"));
        assert_eq!(ended, Ok(None), "an ended sale stays as it ended");
    }

    #[test]
    fn each_refused_value_names_its_field() {
        for (field, wrong) in [
            (
                "name",
                SaleUpdate {
                    name: Some(" ".into()),
                    ..SaleUpdate::default()
                },
            ),
            (
                "description",
                SaleUpdate {
                    description: Some("x".repeat(2001)),
                    ..SaleUpdate::default()
                },
            ),
            (
                "ends_at",
                SaleUpdate {
                    ends_at: Some(Some(at("2026-12-01T12:09:59Z"))),
                    ..SaleUpdate::default()
                },
            ),
            (
                "add_stock",
                SaleUpdate {
                    add_stock: Some(0),
                    ..SaleUpdate::default()
                },
            ),
            (
                "remove_stock",
                SaleUpdate {
                    remove_stock: Some(1_000_000_001),
                    ..SaleUpdate::default()
                },
            ),
            (
                "remove_stock",
                SaleUpdate {
                    add_stock: Some(1),
                    remove_stock: Some(1),
                    ..SaleUpdate::default()
                },
            ),
            (
                "per_user_limit",
                SaleUpdate {
                    per_user_limit: Some(1),
                    ..SaleUpdate::default()
                },
            ),
            (
                "waiting_room.admit_per_sec",
                SaleUpdate {
                    admit_per_sec: Some(0),
                    ..SaleUpdate::default()
                },
            ),
        ] {
            assert_eq!(update(wrong).unwrap_err().field, field);
        }
        let no_room = Sale {
            waiting_room: None,
            ..sale()
        };
        let change = SaleChange::Update(SaleUpdate {
            admit_per_sec: Some(5),
            ..SaleUpdate::default()
        });
        assert_eq!(
            change.apply(&no_room, at(NOW)).unwrap_err().field,
            "waiting_room"
        );
    }
}
