//! The scenarios. Each creates its own sales, drives the load, and verifies the result.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::Method;

use super::api::{buyer_name, Api, ApiError};
use super::driver::{Pace, Phase, PhaseResult, Planned, Planner};
use super::random::SplitMix64;
use super::verify::{self, Check, SaleUnderTest};
use super::viewers;

/// What every scenario needs to know about the run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub connections: usize,
    pub seed: u64,
    pub think_max_ms: u64,
    pub timeout: Duration,
    pub progress: bool,
    /// The server's process id, when the bench started it.
    pub server_pid: Option<u32>,
}

/// What a scenario produced: its phases (in order) and its checks.
pub struct Outcome {
    pub phases: Vec<PhaseResult>,
    pub checks: Vec<Check>,
    pub sales: Vec<SaleUnderTest>,
    /// Figures the scenario derives from its phases, one sentence each.
    pub notes: Vec<String>,
}

pub(super) fn phase(
    api: &Api,
    options: &RunOptions,
    name: &str,
    total: u64,
    planner: Planner,
    pace: Pace,
) -> Phase {
    Phase {
        name: name.to_owned(),
        address: api.address(),
        connections: options.connections,
        total,
        planner,
        pace,
        timeout: options.timeout,
        progress: options.progress,
        server_pid: options.server_pid,
    }
}

pub(super) fn closed(options: &RunOptions) -> Pace {
    Pace::Closed {
        think_max_ms: options.think_max_ms,
        seed: options.seed,
    }
}

/// Buyers whose tokens are minted before the load starts (beyond it, each request mints its own).
/// Real buyers hold their tokens before a sale opens, so minting is not part of a purchase; a
/// million tokens take about 200 MB.
pub const PREMINTED_TOKENS_MAX: u64 = 2_000_000;

/// Every buyer's `Authorization` header, minted on all cores.
pub(super) fn premint(api: &Arc<Api>, buyers: u64) -> Arc<Vec<Option<HeaderValue>>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let chunk = buyers.div_ceil(threads).max(1);
    let parts: Vec<Vec<Option<HeaderValue>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|part| {
                let api = Arc::clone(api);
                scope.spawn(move || {
                    let range = (part * chunk).min(buyers)..((part + 1) * chunk).min(buyers);
                    range
                        .map(|buyer| api.buyer_authorization(buyer))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    Arc::new(parts.into_iter().flatten().collect())
}

/// Plans `buyers` purchases per sale: request `i` goes to sale `i % sales` for the `i / sales`-th
/// buyer of a seeded order, so every buyer asks once per sale, in a reproducible order.
fn purchase_planner(api: &Arc<Api>, sale_ids: &[String], buyers: u64, seed: u64) -> Planner {
    purchase_planner_from(api, sale_ids, 0, buyers, seed)
}

/// `purchase_planner` for the buyers numbered `first..first + buyers`.
fn purchase_planner_from(
    api: &Arc<Api>,
    sale_ids: &[String],
    first: u64,
    buyers: u64,
    seed: u64,
) -> Planner {
    let paths: Vec<Arc<str>> = sale_ids
        .iter()
        .map(|id| Arc::from(format!("/api/v1/sales/{id}/purchase")))
        .collect();
    let order = SplitMix64::new(seed).permutation(u32::try_from(buyers).unwrap_or(u32::MAX));
    let tokens = (first + buyers <= PREMINTED_TOKENS_MAX).then(|| premint(api, first + buyers));
    let api = Arc::clone(api);
    Arc::new(move |index| {
        let sale = (index % paths.len() as u64) as usize;
        let buyer = first + u64::from(order[(index / paths.len() as u64) as usize]);
        let authorization = match &tokens {
            Some(tokens) => tokens.get(buyer as usize).cloned().flatten(),
            None => api.buyer_authorization(buyer),
        };
        Planned {
            method: Method::POST,
            path: Arc::clone(&paths[sale]),
            authorization,
            idempotency_key: None,
            body: None,
            sale,
            buyer,
        }
    })
}

/// Sells `sales` (stock, limit) to `buyers` distinct buyers each, closed-loop.
pub async fn storm(
    api: &Arc<Api>,
    options: &RunOptions,
    sales: &[(u64, u32)],
    buyers: u64,
) -> Result<Outcome, ApiError> {
    let mut under_test = Vec::new();
    for (index, (stock, limit)) in sales.iter().enumerate() {
        let id = api
            .create_sale(&format!("bench sale {}", index + 1), *stock, *limit, 900)
            .await?;
        under_test.push(SaleUnderTest {
            id,
            stock: *stock,
            per_user_limit: *limit,
            buyers,
        });
    }
    let ids: Vec<String> = under_test.iter().map(|sale| sale.id.clone()).collect();
    let planner = purchase_planner(api, &ids, buyers, options.seed);
    let total = buyers * ids.len() as u64;
    let result = phase(api, options, "purchase", total, planner, closed(options))
        .run()
        .await;
    let checks = verify::purchases(api, &under_test, &result, options.seed).await?;
    Ok(Outcome {
        phases: vec![result],
        checks,
        sales: under_test,
        notes: Vec::new(),
    })
}

/// `buyers` buyers for as many units, so every purchase is a durable order; then as many other
/// buyers against the sold-out sale, on the same connections: what a winner costs against a
/// rejection, in one run.
pub async fn winners_then_sold_out(
    api: &Arc<Api>,
    options: &RunOptions,
    buyers: u64,
) -> Result<Outcome, ApiError> {
    let id = api.create_sale("bench winners", buyers, 1, 900).await?;
    let under_test = vec![SaleUnderTest {
        id: id.clone(),
        stock: buyers,
        per_user_limit: 1,
        buyers,
    }];
    let ids = [id];
    let planner = purchase_planner(api, &ids, buyers, options.seed);
    let winners = phase(api, options, "winners", buyers, planner, closed(options))
        .run()
        .await;
    let planner = purchase_planner_from(api, &ids, buyers, buyers, options.seed);
    let sold_out = phase(api, options, "sold out", buyers, planner, closed(options))
        .run()
        .await;
    let mut checks = verify::purchases(api, &under_test, &winners, options.seed).await?;
    let refused = sold_out.stats.count("409 sold_out");
    checks.push(Check::new(
        "every purchase after the last unit is refused sold_out",
        refused == buyers,
        format!("{refused} of {buyers} answered 409 sold_out"),
    ));
    let notes = vec![format!(
        "durable orders/s / sold-out rejections/s = {:.3} ({:.0} / {:.0})",
        winners.requests_per_sec() / sold_out.requests_per_sec().max(1e-9),
        winners.requests_per_sec(),
        sold_out.requests_per_sec()
    )];
    Ok(Outcome {
        phases: vec![winners, sold_out],
        checks,
        sales: under_test,
        notes,
    })
}

/// One buyer sends `requests` purchases at once, half of them with one idempotency key.
pub async fn one_buyer(
    api: &Arc<Api>,
    options: &RunOptions,
    requests: u64,
) -> Result<Outcome, ApiError> {
    let sale_id = api.create_sale("bench idempotency", 100, 1, 900).await?;
    let path: Arc<str> = Arc::from(format!("/api/v1/sales/{sale_id}/purchase"));
    let authorization = api.buyer_authorization(0);
    let planner: Planner = Arc::new(move |index| Planned {
        method: Method::POST,
        path: Arc::clone(&path),
        authorization: authorization.clone(),
        idempotency_key: (index % 2 == 1).then(|| "bench-idempotency-key".to_owned()),
        body: None,
        sale: 0,
        buyer: 0,
    });
    let options = RunOptions {
        connections: requests as usize,
        ..options.clone()
    };
    let result = phase(
        api,
        &options,
        "purchase",
        requests,
        planner,
        closed(&options),
    )
    .run()
    .await;
    let sale = SaleUnderTest {
        id: sale_id,
        stock: 100,
        per_user_limit: 1,
        buyers: 1,
    };
    let mut checks = vec![verify::one_order_for_one_buyer(&result)];
    checks
        .extend(verify::purchases(api, std::slice::from_ref(&sale), &result, options.seed).await?);
    Ok(Outcome {
        phases: vec![result],
        checks,
        sales: vec![sale],
        notes: Vec::new(),
    })
}

/// Open loop: purchases due at `rate` per second for `duration`, each from a new buyer.
pub async fn sustained(
    api: &Arc<Api>,
    options: &RunOptions,
    stock: u64,
    rate: f64,
    duration: Duration,
) -> Result<Outcome, ApiError> {
    let sale_id = api.create_sale("bench sustained", stock, 1, 900).await?;
    let total = (rate * duration.as_secs_f64()).ceil().max(1.0) as u64;
    let sale = SaleUnderTest {
        id: sale_id.clone(),
        stock,
        per_user_limit: 1,
        buyers: total,
    };
    let planner = purchase_planner(api, &[sale_id], total, options.seed);
    let pace = Pace::Open {
        requests_per_sec: rate,
    };
    let result = phase(api, options, "sustained", total, planner, pace)
        .run()
        .await;
    let checks = verify::purchases(api, std::slice::from_ref(&sale), &result, options.seed).await?;
    Ok(Outcome {
        phases: vec![result],
        checks,
        sales: vec![sale],
        notes: Vec::new(),
    })
}

/// `GET /healthz` with the same client and connections: the plain-HTTP ceiling.
pub async fn baseline(api: &Arc<Api>, options: &RunOptions, requests: u64) -> PhaseResult {
    let path: Arc<str> = Arc::from("/healthz");
    let planner: Planner = Arc::new(move |_| Planned {
        method: Method::GET,
        path: Arc::clone(&path),
        authorization: None,
        idempotency_key: None,
        body: None,
        sale: 0,
        buyer: 0,
    });
    phase(api, options, "baseline", requests, planner, closed(options))
        .run()
        .await
}

/// The same purchase requests (paths, tokens, connections) against a responder with no
/// middleware at `address`: the ceiling of what an HTTP server answers on this machine.
pub async fn bare_baseline(
    api: &Arc<Api>,
    options: &RunOptions,
    address: std::net::SocketAddr,
    pid: u32,
    requests: u64,
) -> PhaseResult {
    let planner = purchase_planner(api, &["bare".to_owned()], requests, options.seed);
    let mut bare = phase(api, options, "bare", requests, planner, closed(options));
    bare.address = address;
    bare.server_pid = Some(pid);
    bare.run().await
}

/// The longest a cluster node's sold-out mark refuses without asking Redis, by default.
const SOLD_OUT_MARK_LIMIT: Duration = Duration::from_millis(1100);

/// Buy; then pay a third, cancel a third and let a third expire; then buy again. Every unit
/// that was cancelled or expired must sell again exactly once, and paid units never.
pub async fn lifecycle(
    api: &Arc<Api>,
    options: &RunOptions,
    stock: u64,
    buyers: u64,
    payment_window_secs: u32,
) -> Result<Outcome, ApiError> {
    let sale_id = api
        .create_sale("bench lifecycle", stock, 1, payment_window_secs)
        .await?;
    let sale = SaleUnderTest {
        id: sale_id.clone(),
        stock,
        per_user_limit: 1,
        buyers,
    };
    let planner = purchase_planner(api, std::slice::from_ref(&sale_id), buyers, options.seed);
    let first = phase(api, options, "buy", buyers, planner, closed(options))
        .run()
        .await;
    let mut checks =
        verify::purchases(api, std::slice::from_ref(&sale), &first, options.seed).await?;

    let (mut paid, mut cancelled, mut left) = (Vec::new(), Vec::new(), Vec::new());
    let mut unexpected = Vec::new();
    for (index, won) in first.won.iter().enumerate() {
        let buyer = buyer_name(won.buyer);
        let (action, bucket) = match index % 3 {
            0 => ("pay", &mut paid),
            1 => ("cancel", &mut cancelled),
            _ => {
                left.push(won.buyer);
                continue;
            }
        };
        let status = api.act(&won.order_id, &buyer, action).await?;
        if status.is_success() {
            bucket.push(won.buyer);
        } else {
            unexpected.push(format!("{action} {}: {status}", won.order_id));
        }
    }
    checks.push(Check::new(
        "every pay and cancel within the window succeeds",
        unexpected.is_empty(),
        format!(
            "{} paid, {} cancelled, {} refused {:?}",
            paid.len(),
            cancelled.len(),
            unexpected.len(),
            unexpected.first()
        ),
    ));

    // Wait for the payment window, the sweep, and the returns it starts (they run after the
    // store's change, in tasks of their own): a quiescent point, where the gate and the store
    // agree again.
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(u64::from(payment_window_secs) + 30);
    let mut audit = api.audit(&sale_id).await?;
    while (audit.expired < left.len() as u64 || !audit.consistent)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        audit = api.audit(&sale_id).await?;
    }
    // A cluster node may go on refusing from its local sold-out mark for up to
    // `sold_out_recheck_ms` (1 s by default) if the return's announcement reaches it late:
    // buying again before that would measure the mark, not the returns.
    tokio::time::sleep(SOLD_OUT_MARK_LIMIT).await;
    checks.push(Check::new(
        "unpaid orders expire after the payment window",
        audit.expired == left.len() as u64 && audit.pending == 0,
        format!("{} expected to expire; audit {audit:?}", left.len()),
    ));

    // Everyone but the payers tries again: exactly the returned units sell.
    let returned = (cancelled.len() + left.len()) as u64;
    let paid_buyers: std::collections::HashSet<u64> = paid.iter().copied().collect();
    let again: Vec<u64> = (0..buyers)
        .filter(|buyer| !paid_buyers.contains(buyer))
        .collect();
    let again = Arc::new(again);
    let path: Arc<str> = Arc::from(format!("/api/v1/sales/{sale_id}/purchase"));
    let planner: Planner = {
        let (api, again) = (Arc::clone(api), Arc::clone(&again));
        Arc::new(move |index| {
            let buyer = again[index as usize];
            Planned {
                method: Method::POST,
                path: Arc::clone(&path),
                authorization: api.buyer_authorization(buyer),
                idempotency_key: None,
                body: None,
                sale: 0,
                buyer,
            }
        })
    };
    let second = phase(
        api,
        options,
        "buy again",
        again.len() as u64,
        planner,
        closed(options),
    )
    .run()
    .await;
    let resold = second.won.len() as u64;
    let expected_resold = returned.min(again.len() as u64);
    let audit = api.audit(&sale_id).await?;
    checks.push(Check::new(
        "every returned unit sells again exactly once",
        resold == expected_resold && audit.pending == resold,
        format!("{returned} units returned, {resold} sold again; audit {audit:?}"),
    ));
    checks.push(Check::new(
        "the books balance: paid, cancelled and expired as done",
        audit.consistent
            && audit.paid == paid.len() as u64
            && audit.cancelled == cancelled.len() as u64
            && audit.expired == left.len() as u64
            && audit.remaining + audit.pending + audit.paid == stock,
        format!("{audit:?}"),
    ));
    checks.push(Check::new(
        "no transport errors or timeouts in the second round",
        second.errors() == 0,
        format!("{} failed exchanges", second.errors()),
    ));
    Ok(Outcome {
        phases: vec![first, second],
        checks,
        sales: vec![sale],
        notes: Vec::new(),
    })
}

/// People with the storefront open, polling on its schedule: first alone for `duration` (what a
/// viewer's request costs the server), then beside a purchase stampede, which also runs without
/// them, so the run shows what the open pages cost the buyers.
pub async fn watched_storm(
    api: &Arc<Api>,
    options: &RunOptions,
    stock: u64,
    buyers: u64,
    watchers: u64,
    viewer_connections: usize,
    duration: Duration,
) -> Result<Outcome, ApiError> {
    api.create_sale("bench viewers: on the page", stock, 1, 900)
        .await?;
    let watching = |options: &RunOptions| {
        viewers::start(
            api,
            watchers,
            viewer_connections,
            options.seed,
            options.timeout,
            options.server_pid,
        )
    };
    let running = watching(options);
    tokio::time::sleep(duration).await;
    let alone = running.stop("viewers", true).await;

    let mut unwatched = storm(api, options, &[(stock, 1)], buyers).await?;
    let running = watching(options);
    let mut watched = storm(api, options, &[(stock, 1)], buyers).await?;
    let during = running.stop("viewers+buy", false).await;

    let mut checks = Vec::new();
    let expected = viewers::expected_requests_per_sec(watchers);
    let pace = alone.requests_per_sec() / expected.max(1e-9);
    checks.push(Check::new(
        "viewers poll at the page's pace",
        (0.7..=1.15).contains(&pace),
        format!(
            "{:.0} req/s from {watchers} pages, {expected:.0} expected",
            alone.requests_per_sec()
        ),
    ));
    let failed = |phase: &PhaseResult| {
        phase
            .stats
            .summaries()
            .into_iter()
            .filter(|row| {
                row.outcome != "all"
                    && !(row.outcome.ends_with(" 200") || row.outcome.ends_with(" 304"))
            })
            .map(|row| format!("{} x{}", row.outcome, row.count))
            .collect::<Vec<_>>()
    };
    let refused: Vec<String> = failed(&alone).into_iter().chain(failed(&during)).collect();
    checks.push(Check::new(
        "every viewer poll is answered 200 or 304",
        refused.is_empty(),
        if refused.is_empty() {
            "no errors".to_owned()
        } else {
            refused.join(", ")
        },
    ));
    for check in &mut unwatched.checks {
        check.name = format!("without viewers: {}", check.name);
    }
    for check in &mut watched.checks {
        check.name = format!("with viewers: {}", check.name);
    }
    checks.append(&mut unwatched.checks);
    checks.append(&mut watched.checks);

    let not_modified_share = |phase: &PhaseResult| {
        phase.stats.count("sales 304") as f64
            / (phase.stats.count("sales 304") + phase.stats.count("sales 200")).max(1) as f64
    };
    let mut notes = vec![format!(
        "viewers alone: {:.0} req/s from {watchers} pages ({:.2} per page), {:.0}% of sale-list polls answered 304, server CPU {} us per viewer request",
        alone.requests_per_sec(),
        alone.requests_per_sec() / watchers.max(1) as f64,
        not_modified_share(&alone) * 100.0,
        alone
            .server_cpu_micros_per_request()
            .map_or_else(|| "-".to_owned(), |micros| format!("{micros:.1}")),
    )];
    let mut phases = vec![alone];
    if let (Some(without), Some(mut with)) = (unwatched.phases.pop(), watched.phases.pop()) {
        with.name = "purchase+v".to_owned();
        notes.push(format!(
            "purchase req/s with viewers / without = {:.3} ({:.0} / {:.0}); viewers meanwhile {:.0} req/s, {:.0}% of sale-list polls answered 304",
            with.requests_per_sec() / without.requests_per_sec().max(1e-9),
            with.requests_per_sec(),
            without.requests_per_sec(),
            during.requests_per_sec(),
            not_modified_share(&during) * 100.0,
        ));
        phases.extend([without, with]);
    }
    phases.push(during);
    let mut sales = unwatched.sales;
    sales.append(&mut watched.sales);
    Ok(Outcome {
        phases,
        checks,
        sales,
        notes,
    })
}
