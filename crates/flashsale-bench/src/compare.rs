//! `--compare-config FILE`: the same scenario, in the same bench run, against a second fresh
//! embedded server that reads a settings file (event sinks, say), so a feature's cost is a ratio
//! of two figures measured minutes apart on one machine. With sinks on, it also reports how far
//! delivery was behind when the load ended and how long it took to catch up.

use std::time::{Duration, Instant};

use crate::api::{Api, SinkSeen};
use crate::driver::PhaseResult;
use crate::receiver::Seen;
use crate::verify::Check;

/// How long the bench waits for the sinks to deliver everything after the load.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// What a comparison needs of one phase.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseFigures {
    pub name: String,
    pub requests_per_sec: f64,
    pub server_cpu_micros_per_request: Option<f64>,
}

pub fn figures(phases: &[PhaseResult]) -> Vec<PhaseFigures> {
    phases
        .iter()
        .map(|phase| PhaseFigures {
            name: phase.name.clone(),
            requests_per_sec: phase.requests_per_sec(),
            server_cpu_micros_per_request: phase.server_cpu_micros_per_request(),
        })
        .collect()
}

fn ratio(plain: &PhaseFigures, compared: &PhaseFigures) -> f64 {
    compared.requests_per_sec / plain.requests_per_sec.max(1e-9)
}

/// One sentence per phase both runs have: the compared run's rate over the plain run's.
pub fn rate_ratios(plain: &[PhaseFigures], compared: &[PhaseFigures], label: &str) -> Vec<String> {
    plain
        .iter()
        .zip(compared)
        .map(|(plain, compared)| {
            // The server's own CPU tells its cost apart from its neighbours' (a receiver or a
            // broker on the same cores takes CPU from both the server and the bench).
            let cpu = match (
                compared.server_cpu_micros_per_request,
                plain.server_cpu_micros_per_request,
            ) {
                (Some(with), Some(without)) => {
                    format!("; server CPU {with:.1} µs a request, without {without:.1}")
                }
                _ => String::new(),
            };
            format!(
                "{}: with {label} {:.0} req/s, without {:.0}: ratio {:.3}{cpu}",
                plain.name,
                compared.requests_per_sec,
                plain.requests_per_sec,
                ratio(plain, compared),
            )
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One round: the plain run's phases, then the compared run's.
pub type Round = (Vec<PhaseFigures>, Vec<PhaseFigures>);

/// One sentence per phase: the median of the rounds' ratios, with the lowest and highest.
pub fn median_ratios(rounds: &[Round], label: &str) -> Vec<String> {
    let Some((first, _)) = rounds.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|index| {
            let ratios: Vec<f64> = rounds
                .iter()
                .filter_map(|(plain, compared)| {
                    Some(ratio(plain.get(index)?, compared.get(index)?))
                })
                .collect();
            let cpu = |pick: fn(&Round) -> &Vec<PhaseFigures>| {
                median(
                    rounds
                        .iter()
                        .filter_map(|round| pick(round).get(index)?.server_cpu_micros_per_request)
                        .collect(),
                )
            };
            let (low, high) = ratios
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), ratio| {
                    (low.min(*ratio), high.max(*ratio))
                });
            format!(
                "{}: with {label} ÷ without, median of {} rounds {:.3} (lowest {low:.3}, \
                 highest {high:.3}); median server CPU {:.1} µs a request, without {:.1}",
                first[index].name,
                ratios.len(),
                median(ratios.clone()),
                cpu(|round| &round.1),
                cpu(|round| &round.0),
            )
        })
        .collect()
}

/// Waits until every sink has delivered all it had (or the deadline), and says how far behind
/// each was at the start of the wait and how long catching up took. A sink that does not catch
/// up, or dead-letters, fails the check. Also returns the sinks as last seen.
pub async fn drain_sinks(api: &Api) -> (Vec<Check>, Vec<String>, Vec<SinkSeen>) {
    let started = Instant::now();
    let first = match api.sinks().await {
        Ok(sinks) => sinks,
        Err(error) => {
            let check = Check::new("the event sinks answer", false, error.to_string());
            return (vec![check], Vec::new(), Vec::new());
        }
    };
    if first.is_empty() {
        return (
            Vec::new(),
            vec!["the compared server has no event sink".into()],
            Vec::new(),
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
    (checks, notes, last)
}

/// What the bench's webhook receiver must have seen once its sink caught up: every event the
/// sink says it delivered, each signature right, each sale's events in order.
pub fn receiver_checks(seen: Result<Seen, String>, delivered: Option<u64>) -> Vec<Check> {
    let seen = match seen {
        Ok(seen) => seen,
        Err(error) => return vec![Check::new("the webhook receiver answers", false, error)],
    };
    let delivered = delivered.unwrap_or(0);
    let lag = format!(
        "; lag from change to receiver p50 {} ms, p99 {} ms, max {} ms",
        seen.lag_p50_ms, seen.lag_p99_ms, seen.lag_max_ms
    );
    vec![
        Check::new(
            "the webhook receiver has every event its sink delivered",
            delivered > 0 && seen.distinct == delivered,
            format!(
                "{} distinct events ({} redelivered), the sink delivered {delivered}{lag}",
                seen.distinct, seen.redelivered
            ),
        ),
        Check::new(
            "every webhook was signed right",
            seen.bad_signatures == 0,
            format!("{} refused", seen.bad_signatures),
        ),
        Check::new(
            "each sale's webhooks came in sequence order",
            seen.out_of_order == 0,
            format!("{} out of order", seen.out_of_order),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(rate: f64, cpu: f64) -> Vec<PhaseFigures> {
        vec![PhaseFigures {
            name: "winners".into(),
            requests_per_sec: rate,
            server_cpu_micros_per_request: Some(cpu),
        }]
    }

    #[test]
    fn the_median_ratio_of_rounds_discounts_one_noisy_round() {
        let rounds = vec![
            (phase(100.0, 20.0), phase(95.0, 21.0)),
            (phase(100.0, 20.0), phase(50.0, 40.0)),
            (phase(80.0, 25.0), phase(76.0, 26.0)),
        ];
        let notes = median_ratios(&rounds, "sinks");
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("median of 3 rounds 0.950 (lowest 0.500, highest 0.950)"),
            "{}",
            notes[0]
        );
        assert!(notes[0].contains("median server CPU 26.0 µs a request, without 20.0"));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
