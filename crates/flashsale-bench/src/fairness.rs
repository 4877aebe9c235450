//! `flashsale bench fairness`: who gets the stock, with and without a waiting room. A seeded
//! crowd of people and bots arrives around the start; people act at a person's pace (a page that
//! looks at the line as the storefront does, or, without a room, a refresh a second until the
//! sale opens), bots with two connections each as fast as the server answers. Two rounds per
//! setting: a crowd that all comes before the start (is the draw fair, do bots win more than their
//! share?), and one that comes after it (are later arrivals served in arrival order?).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::api::{Api, ApiError};
use super::client::Connection;
use super::driver::{PhaseResult, Planned, Planner};
use super::random::SplitMix64;
use super::scenarios::{closed, phase, premint, RunOptions};
use super::verify::Check;

/// Connections each bot keeps busy.
const BOT_CONNECTIONS: usize = 2;
/// How often a person without a waiting room reloads the page before the sale opens.
const PERSON_RELOAD: Duration = Duration::from_secs(1);
/// Decile win rates before the start must stay within this share of their mean (with a room).
const DECILE_TOLERANCE: f64 = 0.2;

#[derive(Clone, Copy, Debug)]
pub struct FairnessOptions {
    pub buyers: u64,
    pub bot_share: f64,
    pub seed: u64,
    pub timeout: Duration,
}

/// One buyer of a round: when they came, what they are, whether they bought.
#[derive(Clone, Copy, Debug)]
struct Buyer {
    id: u64,
    arrives_after: Duration,
    bot: bool,
}

struct Round {
    name: String,
    buyers: Vec<Buyer>,
    won: Vec<bool>,
}

/// What a round's crowd looks like.
struct Plan {
    name: &'static str,
    buyers: u64,
    stock: u64,
    admit_per_sec: u64,
    /// Arrivals spread uniformly over this window, which starts this long before the sale.
    spread: Duration,
    before_start: Duration,
}

#[derive(Deserialize)]
struct QueueStatus {
    state: String,
    position: Option<u64>,
    eta_secs: Option<u64>,
    pass: Option<String>,
}

#[derive(Deserialize)]
struct Refusal {
    error: Option<RefusalCode>,
}

#[derive(Deserialize)]
struct RefusalCode {
    code: String,
}

fn code_of(body: &[u8]) -> String {
    serde_json::from_slice::<Refusal>(body)
        .ok()
        .and_then(|refusal| refusal.error)
        .map_or_else(String::new, |error| error.code)
}

fn jitter(random: &mut SplitMix64, base: Duration) -> Duration {
    base.mul_f64(0.75 + random.below(501) as f64 / 1000.0)
}

/// What the storefront waits before looking at the line again (`store.js`, `nextLook`).
fn next_look(random: &mut SplitMix64, status: &QueueStatus, until_start: Duration) -> Duration {
    let seconds = match status.position {
        None => until_start.as_secs_f64().max(1.0) + random.below(5001) as f64 / 1000.0,
        Some(_) => (status.eta_secs.unwrap_or(1) as f64 / 2.0).clamp(1.0, 30.0),
    };
    jitter(random, Duration::from_secs_f64(seconds))
}

struct Actor {
    api: Arc<Api>,
    sale_id: String,
    room: bool,
    starts: Instant,
    deadline: Instant,
    timeout: Duration,
}

impl Actor {
    async fn send(
        &self,
        connection: &mut Option<Connection>,
        index: usize,
        method: Method,
        path: &str,
        authorization: &Option<HeaderValue>,
        pass: Option<&str>,
    ) -> Option<(StatusCode, hyper::body::Bytes)> {
        if connection.is_none() {
            *connection = Connection::open(self.api.address(), index, self.timeout)
                .await
                .ok();
        }
        let open = connection.as_mut()?;
        let headers: Vec<(&str, &str)> =
            pass.map(|pass| ("queue-pass", pass)).into_iter().collect();
        match open
            .send(method, path, authorization.clone(), &headers, None)
            .await
        {
            Ok(reply) => Some((reply.status, reply.body)),
            Err(_) => {
                *connection = None;
                None
            }
        }
    }

    /// One buyer's (or one bot connection's) whole visit; says whether it bought.
    async fn visit(&self, buyer: Buyer, index: usize, seed: u64) -> bool {
        let mut random = SplitMix64::new(seed ^ buyer.id.wrapping_mul(0x9e37_79b9) ^ index as u64);
        let authorization = self.api.buyer_authorization(buyer.id);
        let purchase = format!("/api/v1/sales/{}/purchase", self.sale_id);
        let queue = format!("/api/v1/sales/{}/queue", self.sale_id);
        let mut connection = None;
        let mut pass: Option<String> = None;
        let mut joined = false;
        while Instant::now() < self.deadline {
            if self.room && pass.is_none() {
                let method = if joined { Method::GET } else { Method::POST };
                let Some((status, body)) = self
                    .send(&mut connection, index, method, &queue, &authorization, None)
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if status == StatusCode::NOT_FOUND {
                    joined = false;
                    continue;
                }
                let Ok(line) = serde_json::from_slice::<QueueStatus>(&body) else {
                    // Shed (429/503) or refused: a person waits, a bot does not.
                    if !buyer.bot {
                        tokio::time::sleep(jitter(&mut random, Duration::from_secs(1))).await;
                    }
                    continue;
                };
                joined = true;
                match line.state.as_str() {
                    "admitted" => pass = line.pass,
                    // Nobody cancels in this bench: sold out stays sold out.
                    "ended" | "sold_out" => return false,
                    _ => {
                        let pause = if buyer.bot {
                            Duration::from_millis(20)
                        } else {
                            next_look(
                                &mut random,
                                &line,
                                self.starts.saturating_duration_since(Instant::now()),
                            )
                        };
                        tokio::time::sleep(pause.min(self.deadline - Instant::now())).await;
                    }
                }
                continue;
            }
            let Some((status, body)) = self
                .send(
                    &mut connection,
                    index,
                    Method::POST,
                    &purchase,
                    &authorization,
                    pass.as_deref(),
                )
                .await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if status == StatusCode::CREATED || status == StatusCode::OK {
                return true;
            }
            match code_of(&body).as_str() {
                "already_purchased" => return true,
                "sold_out" | "sale_ended" => return false,
                "queue_pass_required" => pass = None,
                _ if buyer.bot => {}
                "not_started" => tokio::time::sleep(jitter(&mut random, PERSON_RELOAD)).await,
                _ => tokio::time::sleep(jitter(&mut random, Duration::from_secs(1))).await,
            }
        }
        false
    }
}

async fn run_round(
    api: &Arc<Api>,
    options: &FairnessOptions,
    plan: &Plan,
    room: bool,
    first_id: u64,
) -> Result<Round, ApiError> {
    let mut random = SplitMix64::new(options.seed ^ first_id);
    let bots = (plan.buyers as f64 * options.bot_share).round() as u64;
    let order = random.permutation(u32::try_from(plan.buyers).unwrap_or(u32::MAX));
    let mut buyers: Vec<Buyer> = (0..plan.buyers)
        .map(|index| Buyer {
            id: first_id + index,
            arrives_after: plan
                .spread
                .mul_f64(random.below(1_000_000) as f64 / 1_000_000.0),
            bot: u64::from(order[index as usize]) < bots,
        })
        .collect();
    buyers.sort_by_key(|buyer| buyer.arrives_after);
    let lead = Duration::from_secs(1);
    let starts_in = lead + plan.before_start;
    let starts_at = jiff::Timestamp::now()
        + jiff::SignedDuration::try_from(starts_in).unwrap_or(jiff::SignedDuration::ZERO);
    let mut body = json!({
        "name": format!("bench fairness: {} ({})", plan.name, if room { "waiting room" } else { "no room" }),
        "stock": plan.stock,
        "starts_at": starts_at.to_string(),
        "payment_window_secs": 3600,
    });
    if room {
        body["waiting_room"] = json!({ "admit_per_sec": plan.admit_per_sec });
    }
    let sale_id = api.create_sale_with(body).await?;
    let began = Instant::now();
    let admission = Duration::from_secs_f64(plan.stock as f64 / plan.admit_per_sec as f64);
    let actor = Arc::new(Actor {
        api: Arc::clone(api),
        sale_id,
        room,
        starts: began + starts_in,
        deadline: began + lead + plan.spread + admission + Duration::from_secs(15),
        timeout: options.timeout,
    });
    let mut tasks = Vec::new();
    let mut connection_index = 0usize;
    for (rank, buyer) in buyers.iter().enumerate() {
        let copies = if buyer.bot { BOT_CONNECTIONS } else { 1 };
        for _ in 0..copies {
            let (actor, buyer, seed) = (Arc::clone(&actor), *buyer, options.seed);
            let index = connection_index;
            connection_index += 1;
            let arrives = began + lead + buyer.arrives_after;
            tasks.push((
                rank,
                tokio::spawn(async move {
                    tokio::time::sleep_until(arrives.into()).await;
                    actor.visit(buyer, index, seed).await
                }),
            ));
        }
    }
    let mut won = vec![false; buyers.len()];
    for (rank, task) in tasks {
        if task.await.unwrap_or(false) {
            won[rank] = true;
        }
    }
    Ok(Round {
        name: format!(
            "{} {}",
            plan.name,
            if room { "with room" } else { "without room" }
        ),
        buyers,
        won,
    })
}

/// Win rate per arrival decile (of the round's arrival order).
fn decile_rates(round: &Round) -> Vec<f64> {
    let n = round.buyers.len();
    (0..10)
        .map(|decile| {
            let range = decile * n / 10..(decile + 1) * n / 10;
            let wins = round.won[range.clone()].iter().filter(|won| **won).count();
            wins as f64 / range.len().max(1) as f64
        })
        .collect()
}

/// Bots' share of the winners, and of the crowd.
fn bot_shares(round: &Round) -> (f64, f64) {
    let winners = round.won.iter().filter(|won| **won).count();
    let bot_winners = round
        .buyers
        .iter()
        .zip(&round.won)
        .filter(|(buyer, won)| buyer.bot && **won)
        .count();
    let bots = round.buyers.iter().filter(|buyer| buyer.bot).count();
    (
        bot_winners as f64 / winners.max(1) as f64,
        bots as f64 / round.buyers.len().max(1) as f64,
    )
}

/// Of all (winner, loser) pairs, the share where the winner came first.
fn order_kept(round: &Round) -> f64 {
    let mut losers_after = 0u64;
    let mut kept = 0u64;
    for won in round.won.iter().rev() {
        if *won {
            kept += losers_after;
        } else {
            losers_after += 1;
        }
    }
    let winners = round.won.iter().filter(|won| **won).count() as u64;
    let pairs = winners * (round.won.len() as u64 - winners);
    kept as f64 / pairs.max(1) as f64
}

fn percent(values: &[f64]) -> String {
    values
        .iter()
        .map(|value| format!("{:.0}%", value * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs both rounds with and without a waiting room; returns the checks and one line per round.
pub async fn run(
    api: &Arc<Api>,
    options: &FairnessOptions,
) -> Result<(Vec<Check>, Vec<String>), ApiError> {
    let crowd = Plan {
        name: "crowd before the start",
        buyers: options.buyers,
        stock: (options.buyers / 4).max(1),
        admit_per_sec: (options.buyers / 20).max(1),
        spread: Duration::from_secs(5),
        before_start: Duration::from_secs(5),
    };
    let late = Plan {
        name: "arrivals after the start",
        buyers: (options.buyers / 5).max(10),
        stock: (options.buyers / 10).max(5),
        admit_per_sec: (options.buyers / 50).max(2),
        spread: Duration::from_secs(4),
        before_start: Duration::ZERO,
    };
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    for room in [true, false] {
        for (index, plan) in [&crowd, &late].into_iter().enumerate() {
            let first_id = (u64::from(room) * 2 + index as u64 + 1) * 100_000_000;
            let round = run_round(api, options, plan, room, first_id).await?;
            let rates = decile_rates(&round);
            let (bots_won, bots_were) = bot_shares(&round);
            let winners = round.won.iter().filter(|won| **won).count();
            notes.push(format!(
                "{}: {winners} of {} bought; win rate by arrival decile {}; bots {:.1}% of the winners, {:.1}% of the crowd; order kept in {:.1}% of (winner, loser) pairs",
                round.name,
                round.buyers.len(),
                percent(&rates),
                bots_won * 100.0,
                bots_were * 100.0,
                order_kept(&round) * 100.0,
            ));
            checks.push(Check::new(
                format!("{}: the whole stock sells", round.name),
                winners as u64 == plan.stock,
                format!("{winners} winners, stock {}", plan.stock),
            ));
            if !room {
                continue;
            }
            if index == 0 {
                let mean = rates.iter().sum::<f64>() / rates.len() as f64;
                let worst = rates
                    .iter()
                    .map(|rate| (rate - mean).abs() / mean.max(1e-9))
                    .fold(0.0, f64::max);
                checks.push(Check::new(
                    format!(
                        "{}: every arrival decile wins within ±20% of the mean",
                        round.name
                    ),
                    worst <= DECILE_TOLERANCE,
                    format!("{}; mean {:.1}%", percent(&rates), mean * 100.0),
                ));
                checks.push(Check::new(
                    format!(
                        "{}: bots win within ±20% of their share of the crowd",
                        round.name
                    ),
                    (bots_won - bots_were).abs() <= DECILE_TOLERANCE * bots_were,
                    format!(
                        "{:.1}% of winners, {:.1}% of the crowd",
                        bots_won * 100.0,
                        bots_were * 100.0
                    ),
                ));
            } else {
                let kept = order_kept(&round);
                checks.push(Check::new(
                    format!("{}: later arrivals are served in arrival order", round.name),
                    kept >= 0.95,
                    format!(
                        "{:.1}% of (winner, loser) pairs in arrival order",
                        kept * 100.0
                    ),
                ));
            }
        }
    }
    Ok((checks, notes))
}

/// The waiting room's own costs, closed loop with the bench's connections: `requests` purchases
/// on a sold-out sale (the yardstick), as many buyers joining a line (before its start, so each
/// join draws a place) and looking at their place; and the server's memory per waiting buyer.
pub async fn throughput(
    api: &Arc<Api>,
    options: &RunOptions,
    requests: u64,
) -> Result<(Vec<PhaseResult>, Vec<Check>, Vec<String>), ApiError> {
    let sold_out = api
        .create_sale("bench fairness: sold out", 1, 1, 900)
        .await?;
    let starts_at = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let line = api
        .create_sale_with(json!({
            "name": "bench fairness: the line",
            "stock": 1,
            "starts_at": starts_at.to_string(),
            "waiting_room": { "admit_per_sec": 1000, "opens_before_secs": 86_400 },
        }))
        .await?;
    let tokens = premint(api, requests);
    let planner = |method: Method, path: String| -> Planner {
        let (tokens, path) = (Arc::clone(&tokens), Arc::<str>::from(path));
        Arc::new(move |index| Planned {
            method: method.clone(),
            path: Arc::clone(&path),
            authorization: tokens.get(index as usize).cloned().flatten(),
            idempotency_key: None,
            body: None,
            sale: 0,
            buyer: index,
        })
    };
    let run = |name: &str, planner: Planner| {
        phase(api, options, name, requests, planner, closed(options)).run()
    };
    let yardstick = run(
        "sold out",
        planner(Method::POST, format!("/api/v1/sales/{sold_out}/purchase")),
    )
    .await;
    let rss_before = options.server_pid.and_then(anonymous_bytes);
    let joins = run(
        "join",
        planner(Method::POST, format!("/api/v1/sales/{line}/queue")),
    )
    .await;
    let rss_after = options.server_pid.and_then(anonymous_bytes);
    let looks = run(
        "status",
        planner(Method::GET, format!("/api/v1/sales/{line}/queue")),
    )
    .await;
    let joined = joins.stats.count("200");
    let ratio = joins.requests_per_sec() / yardstick.requests_per_sec().max(1e-9);
    let mut notes = vec![format!(
        "join req/s / sold-out purchase req/s = {ratio:.3} ({:.0} / {:.0}); status req/s {:.0}",
        joins.requests_per_sec(),
        yardstick.requests_per_sec(),
        looks.requests_per_sec()
    )];
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        notes.push(format!(
            "server anonymous memory grew {:.1} MB for {joined} waiting buyers: {:.0} bytes each (the mapped journal's pages are page cache, not counted)",
            after.saturating_sub(before) as f64 / 1_048_576.0,
            after.saturating_sub(before) as f64 / joined.max(1) as f64
        ));
    }
    let checks = vec![
        Check::new(
            "every join is answered 200",
            joined == requests,
            format!("{joined} of {requests}"),
        ),
        Check::new(
            "every look at the line is answered 200",
            looks.stats.count("200") == requests,
            format!("{} of {requests}", looks.stats.count("200")),
        ),
    ];
    Ok((vec![yardstick, joins, looks], checks, notes))
}

/// The admission log's costs: a second line of `requests` buyers, all joined before its start
/// and admitted in its first second, then its whole log read and checked as `flashsale verify`
/// does (public data only), timed; and the server memory the log's reading kept.
pub async fn admission_log(
    api: &Arc<Api>,
    options: &RunOptions,
    requests: u64,
    join_per_sec: f64,
) -> Result<(Vec<PhaseResult>, Vec<Check>, Vec<String>), ApiError> {
    // Room for the joins (at the rate just measured, with a margin) before the start.
    let joining = Duration::from_secs_f64(requests as f64 / join_per_sec.max(1000.0) * 1.5 + 5.0);
    let starts_at = jiff::Timestamp::now()
        + jiff::SignedDuration::try_from(joining).unwrap_or(jiff::SignedDuration::from_secs(60));
    let line = api
        .create_sale_with(json!({
            "name": "bench fairness: the logged line",
            "stock": 1,
            "starts_at": starts_at.to_string(),
            "waiting_room": { "admit_per_sec": 1_000_000, "opens_before_secs": 86_400 },
        }))
        .await?;
    let tokens = premint(api, requests);
    let path = Arc::<str>::from(format!("/api/v1/sales/{line}/queue"));
    let planner: Planner = Arc::new(move |index| Planned {
        method: Method::POST,
        path: Arc::clone(&path),
        authorization: tokens.get(index as usize).cloned().flatten(),
        idempotency_key: None,
        body: None,
        sale: 0,
        buyer: index,
    });
    let joins = phase(
        api,
        options,
        "join (logged line)",
        requests,
        planner,
        closed(options),
    )
    .run()
    .await;
    let joined = joins.stats.count("200");
    // The draw closes 2 s after the start; the first checkpoint admits everyone.
    let closes = starts_at + jiff::SignedDuration::from_secs(3);
    if let Ok(wait) = Duration::try_from(closes.duration_since(jiff::Timestamp::now())) {
        tokio::time::sleep(wait).await;
    }
    let request = flashsale_server::verify::VerifyRequest {
        url: format!("http://{}", api.address()),
        sale: line.clone(),
        admin_token: None,
        buyers: Vec::new(),
    };
    let memory_before = options.server_pid.and_then(anonymous_bytes);
    let mut result = None;
    let mut took = Duration::ZERO;
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let verified = flashsale_server::verify::verify(&request).await;
        took = started.elapsed();
        let done = matches!(&verified, Ok(summary) if summary.admitted == joined);
        result = Some(verified);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let memory_after = options.server_pid.and_then(anonymous_bytes);
    let mut notes = Vec::new();
    let check = match result {
        Some(Ok(summary)) => {
            notes.push(format!(
                "admission log of {joined} buyers read and verified in {:.2} s: {summary}",
                took.as_secs_f64()
            ));
            Check::new(
                "the logged line verifies, everyone admitted",
                summary.admitted == joined && summary.entries == joined,
                summary.to_string(),
            )
        }
        Some(Err(error)) => Check::new("the logged line verifies", false, error.to_string()),
        None => Check::new("the logged line verifies", false, "not run".to_owned()),
    };
    if let (Some(before), Some(after)) = (memory_before, memory_after) {
        notes.push(format!(
            "server anonymous memory after reading the log: +{:.1} MB, {:.1} bytes per entry (the places' index, with what the allocator kept of the read)",
            after.saturating_sub(before) as f64 / 1_048_576.0,
            after.saturating_sub(before) as f64 / joined.max(1) as f64
        ));
    }
    Ok((vec![joins], vec![check], notes))
}

/// Anonymous resident memory of process `pid` now, in bytes (Linux `RssAnon`: the heap, not
/// file pages the kernel can drop once written back).
fn anonymous_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
