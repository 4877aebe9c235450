//! What every waiting line must do (the rules on top of it are tested over HTTP in
//! `waiting_room.rs`, on both backends): keep places, passes and admission across a restart, and
//! give the same place to a buyer who joins again.

use std::sync::Arc;

use flashsale_server::domain::{Admission, AdmissionChange, Sale, WaitingRoom};
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
                admission_changes_count_from_their_moment_and_a_paused_line_takes_nobody);
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
        }),
        ..sale(10, 1)
    }
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
            .join(&sale, buyer, when)
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
        .join(&sale, &user("new"), after)
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
        line.join(&sale, &user(&format!("b{i}")), after)
            .await
            .unwrap();
    }
    let again = line.join(&sale, &user("b0"), after).await.unwrap().unwrap();
    assert!(!again.placed);
    assert_eq!(again.facts.place, Some(1));
    let expires = after.as_millisecond() + 10_000;
    line.record_pass(&sale, &user("b0"), expires).await.unwrap();
    let before_expiry = jiff::Timestamp::from_millisecond(expires - 1).unwrap();
    let kept = line
        .join(&sale, &user("b0"), before_expiry)
        .await
        .unwrap()
        .unwrap();
    assert!(!kept.placed && !kept.pass_expired);
    assert_eq!(kept.facts.pass_expires_ms, Some(expires));
    let at_expiry = jiff::Timestamp::from_millisecond(expires).unwrap();
    let rejoined = line
        .join(&sale, &user("b0"), at_expiry)
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
        line.join(&sale, &user("late"), after).await.unwrap(),
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
    let joined = line.join(&sale, &user("late"), after).await.unwrap();
    assert!(joined.is_some_and(|joined| joined.placed));
    drop(line);
    let reopened = backend.open().await;
    assert_eq!(reopened.admission(&sale).await.unwrap(), faster);
}
