//! What every waiting line must do (the rules on top of it are tested over HTTP in
//! `waiting_room.rs`, on both backends): keep places, passes and admission across a restart, and
//! give the same place to a buyer who joins again.

use std::sync::Arc;

use flashsale_server::domain::{Admission, AdmissionChange, DrawSeed, Sale, SaleId, WaitingRoom};
use flashsale_server::line::WaitingLine;
use flashsale_server::BoxFuture;
use jiff::SignedDuration;

use super::{at, sale, user, T0};

/// A line that can be opened again on the same durable state, as after a restart.
pub trait LineBackend: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Arc<dyn WaitingLine>>;
}

#[macro_export]
macro_rules! line_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use $crate::conformance::line as cases;
            $crate::line_suite!(@cases $make;
                a_restart_keeps_every_place_pass_and_admission,
                joining_again_keeps_the_place_and_a_run_out_pass_goes_to_the_end,
                admission_changes_count_from_their_moment_and_a_paused_line_takes_nobody,
                a_seeded_draw_places_early_joiners_by_the_hmac_of_the_seed,
                a_join_that_arrived_before_the_start_is_drawn_even_when_placed_after,
                the_log_reads_places_in_order_and_keeps_checkpoints_in_turn);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(backend) = $make {
                    cases::$case(&backend).await;
                }
            }
        )*
    };
}

fn starting_at_t0() -> Sale {
    Sale {
        starts_at: at(T0),
        waiting_room: Some(WaitingRoom {
            admit_per_sec: 10,
            pass_ttl_secs: 60,
            opens_before_secs: 900,
            draw_seed: None,
        }),
        ..sale(10, 1)
    }
}

/// A sale with a fixed id and seed: every backend must give each buyer the same place.
fn seeded_at_t0() -> Sale {
    let mut sale = starting_at_t0();
    sale.id = SaleId::parse("draw-conformance").expect("sale id");
    sale.waiting_room = sale.waiting_room.map(|room| WaitingRoom {
        draw_seed: Some(DrawSeed::from_bytes(*b"a seed of thirty-two bytes, here")),
        ..room
    });
    sale
}

/// HMAC-SHA256(key = seed, message = sale id + "\n" + buyer), computed here with the crates
/// themselves, apart from the server's code.
fn expected_draw(seed: &[u8], sale: &str, buyer: &str) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(seed).expect("any key length");
    mac.update(format!("{sale}\n{buyer}").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The places `buyers` must have when drawn together: their rank by draw, from 1.
/// The line opened again (a restart) gives each buyer the place `expected` says.
async fn places_survive_a_reopen(
    backend: &dyn LineBackend,
    sale: &Sale,
    buyers: &[String],
    expected: &[u64],
    at: jiff::Timestamp,
) {
    let reopened = backend.open().await;
    for (buyer, place) in buyers.iter().zip(expected) {
        let facts = reopened.look(sale, &user(buyer), at).await.unwrap();
        assert_eq!(
            facts.and_then(|facts| facts.place),
            Some(*place),
            "{buyer} after a restart"
        );
    }
}

fn places_by_draw(sale: &Sale, buyers: &[String]) -> Vec<u64> {
    let seed = sale
        .waiting_room
        .and_then(|room| room.draw_seed)
        .expect("seeded");
    let draws: Vec<Vec<u8>> = buyers
        .iter()
        .map(|buyer| expected_draw(seed.as_bytes(), sale.id.as_str(), buyer))
        .collect();
    draws
        .iter()
        .map(|draw| draws.iter().filter(|other| *other < draw).count() as u64 + 1)
        .collect()
}

fn sold_out(value: bool) -> AdmissionChange {
    AdmissionChange {
        sold_out: Some(value),
        ..AdmissionChange::default()
    }
}

pub async fn a_restart_keeps_every_place_pass_and_admission(backend: &dyn LineBackend) {
    let sale = starting_at_t0();
    let line = backend.open().await;
    let before = at(T0) - SignedDuration::from_secs(60);
    let after = at(T0) + SignedDuration::from_secs(5);
    let buyers: Vec<_> = (0..40).map(|i| user(&format!("b{i}"))).collect();
    for (i, buyer) in buyers.iter().enumerate() {
        let when = if i < 30 { before } else { after };
        let joined = line
            .join(&sale, buyer, when, when)
            .await
            .unwrap()
            .expect("joined");
        assert!(joined.placed);
    }
    let pass = line.record_pass(&sale, &buyers[3], 99).await.unwrap();
    assert_eq!(pass, 99);
    assert_eq!(
        line.record_pass(&sale, &buyers[3], 123).await.unwrap(),
        99,
        "the first stays"
    );
    // Sold out 400 ms after the start: 4 admitted at 10/s.
    let sold_at = at(T0).as_millisecond() + 400;
    let paused = line
        .change_admission(&sale, sold_at, sold_out(true))
        .await
        .unwrap();
    assert_eq!(
        paused,
        Admission {
            base: 4,
            since_ms: sold_at,
            admit_per_sec: 10,
            paused: false,
            sold_out: true,
        }
    );
    assert_eq!(
        line.change_admission(&sale, sold_at + 1000, sold_out(true))
            .await
            .unwrap(),
        paused,
        "a change that changes nothing records nothing"
    );
    let mut seen = Vec::new();
    for buyer in &buyers {
        seen.push(
            line.look(&sale, buyer, after)
                .await
                .unwrap()
                .expect("in line"),
        );
    }
    let mut places: Vec<u64> = seen
        .iter()
        .map(|facts| facts.place.expect("drawn"))
        .collect();
    places.sort_unstable();
    assert_eq!(places, (1..=40).collect::<Vec<u64>>());
    drop(line);
    let reopened = backend.open().await;
    for (buyer, facts) in buyers.iter().zip(&seen) {
        let again = reopened.look(&sale, buyer, after).await.unwrap();
        assert_eq!(again.as_ref(), Some(facts), "{buyer} after a restart");
    }
    assert_eq!(seen[3].pass_expires_ms, Some(99));
    assert_eq!(seen[0].admission, paused);
    assert_eq!(reopened.admission(&sale).await.unwrap(), paused);
    let newcomer = reopened
        .join(&sale, &user("new"), after, after)
        .await
        .unwrap()
        .expect("joined");
    assert_eq!(
        newcomer.facts.place,
        Some(41),
        "numbers go on after a restart"
    );
}

pub async fn joining_again_keeps_the_place_and_a_run_out_pass_goes_to_the_end(
    backend: &dyn LineBackend,
) {
    let sale = starting_at_t0();
    let line = backend.open().await;
    let after = at(T0) + SignedDuration::from_secs(1);
    for i in 0..3 {
        line.join(&sale, &user(&format!("b{i}")), after, after)
            .await
            .unwrap();
    }
    let again = line
        .join(&sale, &user("b0"), after, after)
        .await
        .unwrap()
        .unwrap();
    assert!(!again.placed);
    assert_eq!(again.facts.place, Some(1));
    let expires = after.as_millisecond() + 10_000;
    line.record_pass(&sale, &user("b0"), expires).await.unwrap();
    let before_expiry = jiff::Timestamp::from_millisecond(expires - 1).unwrap();
    let kept = line
        .join(&sale, &user("b0"), before_expiry, before_expiry)
        .await
        .unwrap()
        .unwrap();
    assert!(!kept.placed && !kept.pass_expired);
    assert_eq!(kept.facts.pass_expires_ms, Some(expires));
    let at_expiry = jiff::Timestamp::from_millisecond(expires).unwrap();
    let rejoined = line
        .join(&sale, &user("b0"), at_expiry, at_expiry)
        .await
        .unwrap()
        .unwrap();
    assert!(rejoined.placed && rejoined.pass_expired);
    assert_eq!(rejoined.facts.place, Some(4), "at the end");
    assert_eq!(rejoined.facts.pass_expires_ms, None);
    assert!(line
        .look(&sale, &user("stranger"), after)
        .await
        .unwrap()
        .is_none());
}

pub async fn admission_changes_count_from_their_moment_and_a_paused_line_takes_nobody(
    backend: &dyn LineBackend,
) {
    let sale = starting_at_t0();
    let line = backend.open().await;
    let start = at(T0).as_millisecond();
    assert_eq!(
        line.admission(&sale).await.unwrap(),
        Admission::initial(&sale, &sale.waiting_room.unwrap()),
        "nothing recorded: from the start at the room's rate"
    );
    let pause = |value| AdmissionChange {
        paused: Some(value),
        ..AdmissionChange::default()
    };
    // 2 s at 10/s, paused for 30 s, 1 s more, then 100/s.
    let held = line
        .change_admission(&sale, start + 2000, pause(true))
        .await
        .unwrap();
    assert_eq!((held.base, held.paused), (20, true));
    assert_eq!(
        held.admitted(start + 30_000),
        20,
        "paused seconds never count"
    );
    let after = at(T0) + SignedDuration::from_secs(10);
    assert_eq!(
        line.join(&sale, &user("late"), after, after).await.unwrap(),
        None,
        "nobody joins a paused line"
    );
    assert!(line
        .look(&sale, &user("late"), after)
        .await
        .unwrap()
        .is_none());
    let resumed = line
        .change_admission(&sale, start + 32_000, pause(false))
        .await
        .unwrap();
    assert_eq!(resumed.admitted(start + 33_000), 30);
    let faster = line
        .change_admission(
            &sale,
            start + 33_000,
            AdmissionChange {
                admit_per_sec: Some(100),
                ..AdmissionChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        faster.admitted(start + 33_000),
        30,
        "admitted stay admitted"
    );
    assert_eq!(faster.admitted(start + 34_000), 130);
    let joined = line.join(&sale, &user("late"), after, after).await.unwrap();
    assert!(joined.is_some_and(|joined| joined.placed));
    drop(line);
    let reopened = backend.open().await;
    assert_eq!(reopened.admission(&sale).await.unwrap(), faster);
}

pub async fn a_seeded_draw_places_early_joiners_by_the_hmac_of_the_seed(backend: &dyn LineBackend) {
    let sale = seeded_at_t0();
    let line = backend.open().await;
    let before = at(T0) - SignedDuration::from_secs(30);
    let after = at(T0) + SignedDuration::from_secs(1);
    let buyers: Vec<String> = (0..50).map(|i| format!("buyer-{i}")).collect();
    for buyer in &buyers {
        let joined = line
            .join(&sale, &user(buyer), before, before)
            .await
            .unwrap()
            .expect("joined");
        assert_eq!(joined.facts.place, None, "no place before the start");
    }
    let expected = places_by_draw(&sale, &buyers);
    let mut seen = Vec::new();
    for buyer in &buyers {
        let facts = line.look(&sale, &user(buyer), after).await.unwrap();
        seen.push(facts.and_then(|facts| facts.place).expect("drawn"));
    }
    assert_eq!(
        seen, expected,
        "places follow HMAC(seed, sale + \"\\n\" + buyer)"
    );
    let late = line
        .join(&sale, &user("late"), after, after)
        .await
        .unwrap()
        .expect("joined");
    assert_eq!(late.facts.place, Some(51), "after the drawn crowd");
    drop(line);
    places_survive_a_reopen(backend, &sale, &buyers, &expected, after).await;
}

pub async fn a_join_that_arrived_before_the_start_is_drawn_even_when_placed_after(
    backend: &dyn LineBackend,
) {
    let sale = seeded_at_t0();
    let line = backend.open().await;
    let start = at(T0);
    let ms = SignedDuration::from_millis;
    let early: Vec<String> = (0..20).map(|i| format!("early-{i}")).collect();
    for buyer in &early {
        let before = start - ms(10_000);
        line.join(&sale, &user(buyer), before, before)
            .await
            .unwrap();
    }
    // Places are read (and the draw sorted) before the late-placed joins come.
    let first = line
        .look(&sale, &user(&early[0]), start + ms(100))
        .await
        .unwrap()
        .and_then(|facts| facts.place);
    assert_eq!(first, Some(places_by_draw(&sale, &early)[0]));
    // Arrived 100 ms before the start, placed 500 ms after it: in the draw.
    let slow = line
        .join(&sale, &user("slow"), start + ms(500), start - ms(100))
        .await
        .unwrap()
        .expect("joined");
    assert!(slow.placed);
    // A stamp more than the slack before now counts as now minus the slack: still before the
    // start here (now 1.5 s after it, stamp 10 s before: taken as 0.5 s before)...
    line.join(
        &sale,
        &user("stamped-early"),
        start + ms(1500),
        start - ms(10_000),
    )
    .await
    .unwrap();
    // ... but not here (now 3 s after the start: the stamp counts as 1 s after it).
    let backdated = line
        .join(
            &sale,
            &user("backdated"),
            start + ms(3000),
            start - ms(10_000),
        )
        .await
        .unwrap()
        .expect("joined");
    assert_eq!(
        backdated.facts.place,
        Some(23),
        "at the end, not in the draw"
    );
    // A stamp later than now counts as now.
    let later = line
        .join(&sale, &user("after"), start + ms(3000), start + ms(60_000))
        .await
        .unwrap()
        .expect("joined");
    assert_eq!(later.facts.place, Some(24));
    let mut drawn = early.clone();
    drawn.extend(["slow".to_owned(), "stamped-early".to_owned()]);
    let expected = places_by_draw(&sale, &drawn);
    let now = start + ms(4000);
    for (buyer, place) in drawn.iter().zip(&expected) {
        let facts = line.look(&sale, &user(buyer), now).await.unwrap();
        assert_eq!(facts.and_then(|facts| facts.place), Some(*place), "{buyer}");
    }
    drop(line);
    places_survive_a_reopen(backend, &sale, &drawn, &expected, now).await;
}

/// The admission log's source: the places in draw order, then the later joins by number (a
/// re-join after a run-out pass is a new place), each with its arrival; checkpoints kept in
/// order, at most one per spacing, never one that says less than the last; all of it kept
/// across a restart.
pub async fn the_log_reads_places_in_order_and_keeps_checkpoints_in_turn(
    backend: &dyn LineBackend,
) {
    use flashsale_server::domain::{Checkpoint, GENESIS};
    use flashsale_server::line::CheckpointAdded;
    let sale = seeded_at_t0();
    let line = backend.open().await;
    let start = at(T0);
    let ms = SignedDuration::from_millis;
    let early: Vec<String> = (0..30).map(|i| format!("log-early-{i}")).collect();
    for (i, buyer) in early.iter().enumerate() {
        let when = start - ms(20_000 - i as i64);
        line.join(&sale, &user(buyer), when, when).await.unwrap();
    }
    let closed = start + ms(2_500);
    for buyer in ["log-late-a", "log-late-b"] {
        line.join(&sale, &user(buyer), closed, closed)
            .await
            .unwrap();
    }
    let read = line.places(&sale, 0, 1000).await.unwrap();
    assert_eq!(read.total, 32);
    assert_eq!(read.places.len(), 32);
    let drawn: Vec<String> = read.places[..30]
        .iter()
        .map(|placed| placed.user.as_str().to_owned())
        .collect();
    let mut by_draw = early.clone();
    let places = places_by_draw(&sale, &early);
    by_draw.sort_by_key(|buyer| places[early.iter().position(|b| b == buyer).unwrap()]);
    assert_eq!(drawn, by_draw, "the drawn places in draw order");
    for placed in &read.places[..30] {
        let seed = sale.waiting_room.and_then(|room| room.draw_seed).unwrap();
        let expected = expected_draw(seed.as_bytes(), sale.id.as_str(), placed.user.as_str());
        assert_eq!(placed.draw.map(|draw| draw.to_vec()), Some(expected));
        let index = early
            .iter()
            .position(|b| b == placed.user.as_str())
            .unwrap();
        assert_eq!(
            placed.joined_ms,
            Some((start - ms(20_000 - index as i64)).as_millisecond())
        );
    }
    assert_eq!(read.places[30].user.as_str(), "log-late-a");
    assert_eq!(read.places[31].draw, None);
    assert_eq!(read.places[31].joined_ms, Some(closed.as_millisecond()));
    let page = line.places(&sale, 28, 3).await.unwrap();
    let users: Vec<&str> = page
        .places
        .iter()
        .map(|placed| placed.user.as_str())
        .collect();
    assert_eq!(
        users,
        [by_draw[28].as_str(), by_draw[29].as_str(), "log-late-a"]
    );

    let rule = Admission::initial(&sale, &sale.waiting_room.unwrap());
    let at_ms = |offset: i64| (start + ms(offset)).as_millisecond();
    let first = Checkpoint::at(32, GENESIS, at_ms(3_000), rule);
    assert_eq!(line.checkpoints(&sale).await.unwrap(), Vec::new());
    assert_eq!(
        line.add_checkpoint(&sale, &first, 1000).await.unwrap(),
        CheckpointAdded::Added
    );
    let soon = Checkpoint::at(32, GENESIS, at_ms(3_500), rule);
    assert_eq!(
        line.add_checkpoint(&sale, &soon, 1000).await.unwrap(),
        CheckpointAdded::TooSoon
    );
    let mut second = Checkpoint::at(32, GENESIS, at_ms(4_000), rule);
    second.signature = vec![7; 64];
    assert_eq!(
        line.add_checkpoint(&sale, &second, 1000).await.unwrap(),
        CheckpointAdded::Added
    );
    let mut behind = Checkpoint::at(31, GENESIS, at_ms(6_000), rule);
    behind.admitted_through = 0;
    assert_eq!(
        line.add_checkpoint(&sale, &behind, 1000).await.unwrap(),
        CheckpointAdded::Behind
    );
    assert_eq!(
        line.checkpoints(&sale).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    drop(line);
    let reopened = backend.open().await;
    assert_eq!(
        reopened.checkpoints(&sale).await.unwrap(),
        vec![first, second]
    );
    assert_eq!(reopened.places(&sale, 0, 1000).await.unwrap(), read);
}
