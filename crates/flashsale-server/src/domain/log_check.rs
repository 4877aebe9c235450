//! Checking a sale's admission log from the outside (`flashsale verify`): the seed against its
//! commitment, the chain, the draw order, the checkpoints' hashes and signatures, admission by the
//! rule each checkpoint states (no place admitted before its turn, no seconds counted while the
//! line stood still), and that every order was bought by a buyer the line had admitted. The
//! first break found is the answer. Signatures are checked by the caller's function (the rules
//! know no key format).

use std::collections::HashMap;
use std::fmt;

use super::{
    admitted_ms, buyer_hash, not_admitted_by, Admission, Checkpoint, DrawSeed, LogEntry, SaleId,
    UserId, GENESIS,
};

/// An order of the sale, as the verifier sees it.
#[derive(Clone, Debug)]
pub struct OrderSeen {
    pub id: String,
    pub user: UserId,
    pub created_ms: i64,
}

/// Everything one check reads.
pub struct LogUnderCheck<'a> {
    pub sale: &'a SaleId,
    pub starts_ms: i64,
    pub commitment: [u8; 32],
    pub seed: Option<DrawSeed>,
    pub entries: &'a [LogEntry],
    /// In the order the log gave them; `signature_of[i]` checks `checkpoints[i]`.
    pub checkpoints: &'a [Checkpoint],
    /// Buyers whose draws can be computed again (the orders' buyers, the buyer who asks).
    pub known_buyers: &'a [UserId],
    /// `None`: the orders were not read (no admin token).
    pub orders: Option<&'a [OrderSeen]>,
}

/// The first thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Break {
    SeedMissing,
    SeedMismatch,
    EntryNumber { expected: u64, found: u64 },
    ChainLink { n: u64 },
    EntryHash { n: u64 },
    DrawAfterPlaced { n: u64 },
    DrawOrder { n: u64 },
    DrawMismatch { n: u64 },
    CheckpointOrder { index: usize },
    CheckpointHash { index: usize },
    Signature { index: usize },
    AheadOfRate { index: usize, detail: String },
    AdmissionTime { n: u64, detail: String },
    OrderWithoutPass { order: String },
}

impl fmt::Display for Break {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SeedMissing => write!(out, "the sale has started but shows no draw_seed"),
            Self::SeedMismatch => write!(
                out,
                "the draw_seed does not match the draw_commitment (SHA-256 of the seed)"
            ),
            Self::EntryNumber { expected, found } => {
                write!(out, "entry {found} where entry {expected} belongs")
            }
            Self::ChainLink { n } => write!(
                out,
                "broken chain link: entry {n}'s prev_hash is not entry {}'s hash",
                n - 1
            ),
            Self::EntryHash { n } => write!(out, "entry {n}'s hash is not the hash of its fields"),
            Self::DrawAfterPlaced { n } => write!(
                out,
                "entry {n} has a draw after a place given by arrival (drawn places come first)"
            ),
            Self::DrawOrder { n } => write!(
                out,
                "entry {n} is out of draw order (its draw is not above the one before)"
            ),
            Self::DrawMismatch { n } => write!(
                out,
                "entry {n}'s draw is not HMAC-SHA256(seed, sale id + \"\\n\" + buyer id)"
            ),
            Self::CheckpointOrder { index } => write!(
                out,
                "checkpoint {index} goes back (time, places or admissions fewer than the one before, or past the last entry)"
            ),
            Self::CheckpointHash { index } => write!(
                out,
                "checkpoint {index}'s hash is not the hash of the entry it names"
            ),
            Self::Signature { index } => write!(out, "checkpoint {index}'s signature is not valid"),
            Self::AheadOfRate { index, detail } => {
                write!(out, "admission ahead of the rate at checkpoint {index}: {detail}")
            }
            Self::AdmissionTime { n, detail } => {
                write!(out, "admission ahead of the rate: entry {n} {detail}")
            }
            Self::OrderWithoutPass { order } => write!(
                out,
                "order {order} was bought by a buyer the line had not admitted"
            ),
        }
    }
}

/// What a passing check covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckSummary {
    pub entries: u64,
    pub drawn: u64,
    pub checkpoints: usize,
    pub admitted: u64,
    pub draws_recomputed: usize,
    pub orders_checked: Option<usize>,
}

/// Checks the log; `signature_valid(checkpoint index, text, signature)` checks one signature.
pub fn check_log(
    log: &LogUnderCheck<'_>,
    signature_valid: impl Fn(usize, &str, &[u8]) -> bool,
) -> Result<CheckSummary, Break> {
    let seed = log.seed.ok_or(Break::SeedMissing)?;
    if seed.commitment() != log.commitment {
        return Err(Break::SeedMismatch);
    }
    let drawn = check_entries(log.entries)?;
    let draws_recomputed = check_known_draws(log, &seed)?;
    check_checkpoints(log, &signature_valid)?;
    check_admission_times(log)?;
    let orders_checked = match log.orders {
        Some(orders) => Some(check_orders(log, orders)?),
        None => None,
    };
    Ok(CheckSummary {
        entries: log.entries.len() as u64,
        drawn,
        checkpoints: log.checkpoints.len(),
        admitted: log.checkpoints.last().map_or(0, |c| c.admitted_through),
        draws_recomputed,
        orders_checked,
    })
}

/// Numbers, links, hashes and the draw order; returns how many places were drawn.
fn check_entries(entries: &[LogEntry]) -> Result<u64, Break> {
    let mut prev = GENESIS;
    let mut drawn = 0;
    let mut last_draw = None;
    for (index, entry) in entries.iter().enumerate() {
        let expected = index as u64 + 1;
        if entry.n != expected {
            return Err(Break::EntryNumber {
                expected,
                found: entry.n,
            });
        }
        if entry.prev_hash != prev {
            return Err(Break::ChainLink { n: entry.n });
        }
        let hash = super::entry_hash(&prev, entry.n, &entry.buyer_hash, entry.draw.as_ref());
        if hash != entry.hash {
            return Err(Break::EntryHash { n: entry.n });
        }
        if let Some(draw) = entry.draw {
            if drawn != index as u64 {
                return Err(Break::DrawAfterPlaced { n: entry.n });
            }
            if last_draw.is_some_and(|last| last >= draw) {
                return Err(Break::DrawOrder { n: entry.n });
            }
            last_draw = Some(draw);
            drawn += 1;
        }
        prev = entry.hash;
    }
    Ok(drawn)
}

fn check_known_draws(log: &LogUnderCheck<'_>, seed: &DrawSeed) -> Result<usize, Break> {
    let known: HashMap<[u8; 32], &UserId> = log
        .known_buyers
        .iter()
        .map(|user| (buyer_hash(user), user))
        .collect();
    let mut recomputed = 0;
    for entry in log.entries {
        let (Some(draw), Some(user)) = (entry.draw, known.get(&entry.buyer_hash)) else {
            continue;
        };
        if seed.draw(log.sale, user) != draw {
            return Err(Break::DrawMismatch { n: entry.n });
        }
        recomputed += 1;
    }
    Ok(recomputed)
}

fn check_checkpoints(
    log: &LogUnderCheck<'_>,
    signature_valid: &impl Fn(usize, &str, &[u8]) -> bool,
) -> Result<(), Break> {
    let mut before: Option<&Checkpoint> = None;
    for (index, checkpoint) in log.checkpoints.iter().enumerate() {
        let goes_back = before.is_some_and(|before| {
            checkpoint.time_ms <= before.time_ms
                || checkpoint.n < before.n
                || checkpoint.admitted_through < before.admitted_through
        });
        if goes_back
            || checkpoint.n > log.entries.len() as u64
            || checkpoint.admitted_through > checkpoint.n
        {
            return Err(Break::CheckpointOrder { index });
        }
        let named = match checkpoint.n {
            0 => GENESIS,
            n => log.entries[(n - 1) as usize].hash,
        };
        if named != checkpoint.hash {
            return Err(Break::CheckpointHash { index });
        }
        if !signature_valid(index, &checkpoint.text(log.sale), &checkpoint.signature) {
            return Err(Break::Signature { index });
        }
        check_rule(log, before, checkpoint, index)?;
        before = Some(checkpoint);
    }
    Ok(())
}

/// The checkpoint's admissions follow its rule, and its rule follows from the one before (or
/// from the start): nobody admitted beyond what the earlier rule had admitted when it changed.
fn check_rule(
    log: &LogUnderCheck<'_>,
    before: Option<&Checkpoint>,
    checkpoint: &Checkpoint,
    index: usize,
) -> Result<(), Break> {
    let rule = &checkpoint.admission;
    let ahead = |detail: String| Break::AheadOfRate { index, detail };
    let by_rule = rule.admitted(checkpoint.time_ms).min(checkpoint.n);
    if checkpoint.admitted_through > by_rule {
        return Err(ahead(format!(
            "{} admitted where its rule ({} a second from {} after {}) admits {by_rule}",
            checkpoint.admitted_through,
            rule.admit_per_sec,
            rule.base,
            super::time_text(rule.since_ms)
        )));
    }
    let earlier = match before {
        Some(before) => before.admission,
        None => Admission {
            base: 0,
            since_ms: log.starts_ms,
            ..*rule
        },
    };
    if rule.since_ms < earlier.since_ms {
        return Err(ahead("its rule starts before the rule it follows".into()));
    }
    let allowed = if *rule == earlier {
        rule.base
    } else {
        earlier.admitted(rule.since_ms)
    };
    if rule.base > allowed {
        return Err(ahead(format!(
            "its rule starts from {} admitted where the rule before had admitted {allowed}",
            rule.base
        )));
    }
    Ok(())
}

fn check_admission_times(log: &LogUnderCheck<'_>) -> Result<(), Break> {
    for entry in log.entries {
        let expected = admitted_ms(entry.n, entry.joined_ms, log.checkpoints);
        if entry.admitted_ms != expected {
            let shown = |ms: Option<i64>| ms.map_or_else(|| "null".to_owned(), super::time_text);
            return Err(Break::AdmissionTime {
                n: entry.n,
                detail: format!(
                    "says admitted_at {}, the checkpoints say {}",
                    shown(entry.admitted_ms),
                    shown(expected)
                ),
            });
        }
    }
    Ok(())
}

/// Each order's buyer holds a place the line had admitted by then: not one that a checkpoint
/// after the order still showed waiting, nor a buyer the log never placed.
fn check_orders(log: &LogUnderCheck<'_>, orders: &[OrderSeen]) -> Result<usize, Break> {
    let mut places: HashMap<[u8; 32], Vec<u64>> = HashMap::new();
    for entry in log.entries {
        places.entry(entry.buyer_hash).or_default().push(entry.n);
    }
    for order in orders {
        let admitted_before = places.get(&buyer_hash(&order.user)).is_some_and(|places| {
            places.iter().any(|n| {
                not_admitted_by(*n, log.checkpoints)
                    .is_none_or(|waiting| waiting < order.created_ms)
            })
        });
        if !admitted_before {
            return Err(Break::OrderWithoutPass {
                order: order.id.clone(),
            });
        }
    }
    Ok(orders.len())
}

impl fmt::Display for CheckSummary {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            out,
            "{} entries ({} drawn), {} checkpoints, {} admitted, {} draws computed again",
            self.entries, self.drawn, self.checkpoints, self.admitted, self.draws_recomputed
        )?;
        match self.orders_checked {
            Some(orders) => write!(out, ", {orders} orders each bought with a pass"),
            None => write!(out, "; orders not checked (they need the admin token)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{entry_hash, Placed};

    struct Fixture {
        sale: SaleId,
        seed: DrawSeed,
        users: Vec<UserId>,
        entries: Vec<LogEntry>,
        checkpoints: Vec<Checkpoint>,
        orders: Vec<OrderSeen>,
    }

    const START: i64 = 1_000_000;

    /// A line of 6 drawn buyers and 2 at the end, admitted 2 a second, checkpointed every second
    /// for 5 seconds; every admitted buyer bought.
    fn fixture() -> Fixture {
        let sale = SaleId::parse("sale-1").unwrap();
        let seed = DrawSeed::from_bytes([7; 32]);
        let users: Vec<UserId> = (0..8)
            .map(|i| UserId::parse(&format!("buyer-{i}")).unwrap())
            .collect();
        let mut drawn: Vec<_> = users[..6]
            .iter()
            .map(|user| (seed.draw(&sale, user), user.clone()))
            .collect();
        drawn.sort();
        let mut placed: Vec<Placed> = drawn
            .into_iter()
            .map(|(draw, user)| Placed {
                user,
                draw: Some(draw),
                joined_ms: Some(START - 500),
            })
            .collect();
        for user in &users[6..] {
            placed.push(Placed {
                user: user.clone(),
                draw: None,
                joined_ms: Some(START + 100),
            });
        }
        let mut entries = Vec::new();
        let mut prev = GENESIS;
        for (index, one) in placed.iter().enumerate() {
            let entry = LogEntry::of(index as u64 + 1, prev, one);
            prev = entry.hash;
            entries.push(entry);
        }
        let rule = Admission {
            base: 0,
            since_ms: START,
            admit_per_sec: 2,
            paused: false,
            sold_out: false,
        };
        let checkpoints: Vec<Checkpoint> = (0..5)
            .map(|second| {
                let mut checkpoint =
                    Checkpoint::at(8, entries[7].hash, START + 2000 + second * 1000, rule);
                checkpoint.signature = b"good".to_vec();
                checkpoint
            })
            .collect();
        for entry in &mut entries {
            entry.admitted_ms = admitted_ms(entry.n, entry.joined_ms, &checkpoints);
        }
        let orders = placed
            .iter()
            .enumerate()
            .map(|(index, one)| OrderSeen {
                id: format!("order-{index}"),
                user: one.user.clone(),
                created_ms: entries[index].admitted_ms.unwrap() + 10,
            })
            .collect();
        Fixture {
            sale,
            seed,
            users,
            entries,
            checkpoints,
            orders,
        }
    }

    fn check(fixture: &Fixture) -> Result<CheckSummary, Break> {
        let log = LogUnderCheck {
            sale: &fixture.sale,
            starts_ms: START,
            commitment: fixture.seed.commitment(),
            seed: Some(fixture.seed),
            entries: &fixture.entries,
            checkpoints: &fixture.checkpoints,
            known_buyers: &fixture.users,
            orders: Some(&fixture.orders),
        };
        check_log(&log, |_, _, signature| signature == b"good")
    }

    /// Fixes the chain after an entry was changed, as a forger would.
    fn rechain(fixture: &mut Fixture) {
        let mut prev = GENESIS;
        for entry in &mut fixture.entries {
            entry.prev_hash = prev;
            entry.hash = entry_hash(&prev, entry.n, &entry.buyer_hash, entry.draw.as_ref());
            prev = entry.hash;
        }
        let last = prev;
        for checkpoint in &mut fixture.checkpoints {
            checkpoint.hash = last;
        }
    }

    #[test]
    fn a_true_log_passes() {
        let summary = check(&fixture()).expect("a true log");
        assert_eq!(summary.entries, 8);
        assert_eq!(summary.drawn, 6);
        assert_eq!(summary.admitted, 8);
        assert_eq!(summary.draws_recomputed, 6);
        assert_eq!(summary.orders_checked, Some(8));
    }

    #[test]
    fn each_planted_break_is_named() {
        let mut wrong_seed = fixture();
        wrong_seed.seed = DrawSeed::from_bytes([8; 32]);
        let log = LogUnderCheck {
            sale: &wrong_seed.sale,
            starts_ms: START,
            commitment: fixture().seed.commitment(),
            seed: Some(wrong_seed.seed),
            entries: &wrong_seed.entries,
            checkpoints: &wrong_seed.checkpoints,
            known_buyers: &[],
            orders: None,
        };
        assert_eq!(check_log(&log, |_, _, _| true), Err(Break::SeedMismatch));

        let mut swapped = fixture();
        swapped.entries.swap(1, 2);
        swapped.entries[1].n = 2;
        swapped.entries[2].n = 3;
        rechain(&mut swapped);
        assert_eq!(check(&swapped), Err(Break::DrawOrder { n: 3 }));

        let mut link = fixture();
        link.entries[4].prev_hash[0] ^= 1;
        assert_eq!(check(&link), Err(Break::ChainLink { n: 5 }));

        let mut signature = fixture();
        signature.checkpoints[2].signature = b"forged".to_vec();
        assert_eq!(check(&signature), Err(Break::Signature { index: 2 }));

        let mut early = fixture();
        early.entries[5].admitted_ms = early.entries[5].admitted_ms.map(|ms| ms - 1500);
        assert!(matches!(
            check(&early),
            Err(Break::AdmissionTime { n: 6, .. })
        ));

        let mut fast = fixture();
        fast.checkpoints[0].admitted_through = 8;
        assert!(matches!(
            check(&fast),
            Err(Break::AheadOfRate { index: 0, .. })
        ));

        let mut jumped = fixture();
        for checkpoint in &mut jumped.checkpoints[2..] {
            checkpoint.admission.base = 7;
            checkpoint.admission.since_ms = START + 2500;
            checkpoint.admitted_through = checkpoint.admission.admitted(checkpoint.time_ms).min(8);
        }
        assert!(matches!(
            check(&jumped),
            Err(Break::AheadOfRate { index: 2, .. })
        ));

        let mut unpassed = fixture();
        unpassed.orders[7].created_ms = START + 1000;
        assert_eq!(
            check(&unpassed),
            Err(Break::OrderWithoutPass {
                order: "order-7".into()
            })
        );
        let mut stranger = fixture();
        stranger.orders[0].user = UserId::parse("never-in-line").unwrap();
        assert_eq!(
            check(&stranger),
            Err(Break::OrderWithoutPass {
                order: "order-0".into()
            })
        );

        let mut drawn_wrong = fixture();
        drawn_wrong.entries[0].draw = Some([0; 32]);
        rechain(&mut drawn_wrong);
        assert_eq!(check(&drawn_wrong), Err(Break::DrawMismatch { n: 1 }));
    }
}
