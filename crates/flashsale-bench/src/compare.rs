//! `--compare-config FILE`: the same scenario, in the same bench run, against a second fresh
//! embedded server that reads a settings file (event sinks, say), so a feature's cost is a ratio
//! of two figures measured minutes apart on one machine. With sinks on, it also reports how far
//! delivery was behind when the load ended and how long it took to catch up.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::driver::PhaseResult;
use crate::verify::Check;

/// How long the bench waits for the sinks to deliver everything after the load.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// One sentence per phase both runs have: the compared run's rate over the plain run's.
pub fn rate_ratios(plain: &[PhaseResult], compared: &[PhaseResult], config: &Path) -> Vec<String> {
    plain
        .iter()
        .zip(compared)
        .map(|(plain, compared)| {
            let ratio = compared.requests_per_sec() / plain.requests_per_sec().max(1e-9);
            // The server's own CPU tells its cost apart from its neighbours' (a receiver or a
            // broker on the same cores takes CPU from both the server and the bench).
            let cpu = match (
                compared.server_cpu_micros_per_request(),
                plain.server_cpu_micros_per_request(),
            ) {
                (Some(with), Some(without)) => {
                    format!("; server CPU {with:.1} µs a request, without {without:.1}")
                }
                _ => String::new(),
            };
            format!(
                "{}: with {} {:.0} req/s, without {:.0}: ratio {ratio:.3}{cpu}",
                plain.name,
                config.display(),
                compared.requests_per_sec(),
                plain.requests_per_sec(),
            )
        })
        .collect()
}

/// Waits until every sink has delivered all it had (or the deadline), and says how far behind
/// each was at the start of the wait and how long catching up took. A sink that does not catch
/// up, or dead-letters, fails the check.
pub async fn drain_sinks(api: &Api) -> (Vec<Check>, Vec<String>) {
    let started = Instant::now();
    let first = match api.sinks().await {
        Ok(sinks) => sinks,
        Err(error) => {
            let check = Check::new("the event sinks answer", false, error.to_string());
            return (vec![check], Vec::new());
        }
    };
    if first.is_empty() {
        return (
            Vec::new(),
            vec!["the compared server has no event sink".into()],
        );
    }
    let mut notes: Vec<String> = first
        .iter()
        .map(|sink| {
            format!(
                "sink {}: {} events ({:.2} s) behind once the run and its checks were done",
                sink.name, sink.lag_events, sink.lag_seconds
            )
        })
        .collect();
    let mut last = first;
    while last.iter().any(|sink| sink.lag_events > 0) && started.elapsed() < DRAIN_DEADLINE {
        tokio::time::sleep(DRAIN_POLL).await;
        if let Ok(sinks) = api.sinks().await {
            last = sinks;
        }
    }
    let caught_up = last.iter().all(|sink| sink.lag_events == 0);
    let dead: u64 = last.iter().map(|sink| sink.dead_letters).sum();
    notes.push(format!(
        "the sinks delivered {} events and caught up {:.2} s later",
        last.iter().map(|sink| sink.delivered).sum::<u64>(),
        started.elapsed().as_secs_f64()
    ));
    let checks = vec![
        Check::new(
            "every sink caught up after the load",
            caught_up,
            format!("within {} s", DRAIN_DEADLINE.as_secs()),
        ),
        Check::new(
            "no event was dead-lettered",
            dead == 0,
            format!("{dead} dead letters"),
        ),
    ];
    (checks, notes)
}
