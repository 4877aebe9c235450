//! `flashsale bench`: a stampede load generator that also proves correctness. It drives a server
//! over real HTTP/1.1 keep-alive connections, measures latency per outcome without coordinated
//! omission, and checks the server's own records afterwards; any violation makes it exit non-zero.

mod api;
mod bare;
mod chaos;
mod client;
mod compare;
mod driver;
mod fairness;
mod random;
mod receiver;
mod report;
mod scenarios;
mod stats;
mod target;
mod timeline;
mod verify;
mod viewers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use self::api::Api;
pub use self::bare::serve as serve_bare;
pub use self::random::SplitMix64;
pub use self::receiver::serve as serve_webhook_receiver;
use self::report::{PhaseReport, Report};
use self::scenarios::{Outcome, RunOptions};
pub use self::stats::Stats;
use self::target::Target;
use self::verify::Check;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 7000 buyers at once for 100 units.
    Oversell,
    /// One buyer, 20 concurrent purchases (half with one Idempotency-Key): one order.
    Idempotency,
    /// 3 sales x 50 units x 1000 buyers each, at once.
    Multi,
    /// 10,000 units, 20,000 buyers.
    Big,
    /// --buyers [1,000,000] against --stock [10,000], as fast as the server answers.
    Stampede,
    /// --buyers [1,000,000] for as many units (every purchase a durable order), then as many
    /// new buyers against the sold-out sale: winners/s against rejections/s in one run.
    Winners,
    /// Open loop at --rate R for --duration D; latency from each request's scheduled time.
    Sustained,
    /// Buy; pay, cancel or let expire; buy again: every unit comes back exactly once.
    Lifecycle,
    /// GET /healthz with the same client and connections: the plain-HTTP ceiling.
    Baseline,
    /// Page viewers polling on the storefront's schedule (--viewers pages, alone for --duration),
    /// then a purchase stampede without and with them: what the open pages cost.
    Viewers,
    /// Who gets the stock with and without a waiting room: people and --bot-share bots arriving
    /// around the start; plus join and status throughput (--requests) and memory per waiter.
    Fairness,
    /// A crowd that hangs up, retries, double-clicks and races the expiry, under kill -9 and
    /// Redis restarts; checks every promise from the history and the server's records.
    Chaos,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Drive this server (http://HOST:PORT) instead of starting an embedded one (chaos: several,
    /// comma-separated, with no faults).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// The --target server's process id on this machine: its CPU time per request is measured
    /// from /proc, as for a server the bench starts (e.g. one pinned with `taskset`).
    #[arg(long, value_name = "PID", requires = "target")]
    pub target_pid: Option<u32>,
    /// Chaos: start this many cluster nodes (with a private Redis and --database-url) instead of
    /// the embedded server.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cluster_nodes: usize,
    /// Chaos: the PostgreSQL of a cluster run (it takes a schema of its own and drops it).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Chaos: no fault schedule (no kill -9, no Redis restart).
    #[arg(long)]
    pub no_faults: bool,
    /// Chaos: pay through Stripe's API at a private localstripe (installed by the repository's
    /// scripts/localstripe-venv: run from the repository), with webhooks dropped and duplicated,
    /// and check the money against localstripe's records.
    #[arg(long)]
    pub payments: bool,
    /// The target's admin token (else read from --data-dir).
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// The target's JWT secret (else read from --data-dir).
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,
    /// The target's data directory, to read its generated secrets from.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Buyers (stampede default 1,000,000; big 20,000; oversell 7,000; multi 1,000 per sale; lifecycle 300).
    #[arg(long, value_name = "N")]
    pub buyers: Option<u64>,
    /// Units on sale (stampede and sustained default 10,000; big 10,000; oversell 100; multi 50 per sale; lifecycle 100).
    #[arg(long, value_name = "N")]
    pub stock: Option<u64>,
    /// Keep-alive connections [default: 256].
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub connections: usize,
    /// Requests per second of the sustained scenario.
    #[arg(long, value_name = "R", default_value_t = 10_000.0)]
    pub rate: f64,
    /// Seconds the sustained scenario runs (viewers: how long they poll alone).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Fairness: the share of the crowd that are bots.
    #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
    pub bot_share: f64,
    /// Viewers: storefront pages open during the stampede.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub viewers: u64,
    /// Viewers: keep-alive connections the pages share.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub viewer_connections: usize,
    /// Requests of the baseline scenario (with --with-baseline: as many as the purchase phase).
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub requests: u64,
    /// Payment window of the lifecycle scenario's sale.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    pub payment_window_secs: u32,
    /// Longest random pause before each request, in ms (closed loop; seeded).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub think_time_ms: u64,
    /// Seed of the buyer order and think times [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Longest wait for one reply, in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Run the baseline first with the same connections and print purchase req/s / baseline req/s.
    #[arg(long)]
    pub with_baseline: bool,
    /// Run the same purchases first against a responder with no middleware that the bench starts
    /// (`flashsale bare-responder`), and print purchase req/s / bare req/s.
    #[arg(long)]
    pub with_bare_baseline: bool,
    /// Run the scenario again, in this run, against a second fresh embedded server that reads
    /// this settings file (e.g. one with `[[events.sinks]]`), and print each phase's req/s ratio
    /// (with ÷ without); with sinks, also how far delivery was behind when the load ended and how
    /// long it took to catch up.
    #[arg(long, value_name = "FILE")]
    pub compare_config: Option<PathBuf>,
    /// With --compare-config (or alone, in its place): also start the bench's own webhook
    /// receiver (`flashsale webhook-receiver`, checking every signature and each sale's order)
    /// and add it to the compared server's sinks.
    #[arg(long)]
    pub webhook_receiver: bool,
    /// With --compare-config or --webhook-receiver: compare this many times in the run, each
    /// round a fresh plain server beside a fresh compared one, and print the median ratio.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub compare_rounds: usize,
    /// Pin the embedded servers the bench starts to this CPU (run the bench itself under
    /// `taskset` on another).
    #[arg(long, value_name = "CPU")]
    pub server_cpu: Option<usize>,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw latency by percentile per outcome to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error("writing {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Chaos(#[from] chaos::ChaosError),
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Oversell => "oversell",
            Self::Idempotency => "idempotency",
            Self::Multi => "multi",
            Self::Big => "big",
            Self::Stampede => "stampede",
            Self::Winners => "winners",
            Self::Sustained => "sustained",
            Self::Lifecycle => "lifecycle",
            Self::Baseline => "baseline",
            Self::Viewers => "viewers",
            Self::Fairness => "fairness",
            Self::Chaos => "chaos",
        }
    }
}

async fn run_scenario(
    args: &BenchArgs,
    api: &Arc<Api>,
    options: &RunOptions,
) -> Result<Outcome, BenchError> {
    let buyers = |default| args.buyers.unwrap_or(default);
    let stock = |default| args.stock.unwrap_or(default);
    Ok(match args.scenario {
        Scenario::Oversell => {
            scenarios::storm(api, options, &[(stock(100), 1)], buyers(7000)).await?
        }
        Scenario::Idempotency => scenarios::one_buyer(api, options, 20).await?,
        Scenario::Multi => {
            let stock = stock(50);
            scenarios::storm(
                api,
                options,
                &[(stock, 1), (stock, 1), (stock, 1)],
                buyers(1000),
            )
            .await?
        }
        Scenario::Big => {
            scenarios::storm(api, options, &[(stock(10_000), 1)], buyers(20_000)).await?
        }
        Scenario::Stampede => {
            scenarios::storm(api, options, &[(stock(10_000), 1)], buyers(1_000_000)).await?
        }
        Scenario::Winners => {
            scenarios::winners_then_sold_out(api, options, buyers(1_000_000)).await?
        }
        Scenario::Sustained => {
            if args.rate <= 0.0 || args.duration <= 0.0 {
                return Err(BenchError::Usage(
                    "--rate and --duration must be positive".into(),
                ));
            }
            let duration = Duration::from_secs_f64(args.duration);
            scenarios::sustained(api, options, stock(10_000), args.rate, duration).await?
        }
        Scenario::Lifecycle => {
            scenarios::lifecycle(
                api,
                options,
                stock(100),
                buyers(300),
                args.payment_window_secs,
            )
            .await?
        }
        Scenario::Viewers => {
            scenarios::watched_storm(
                api,
                options,
                stock(10_000),
                buyers(200_000),
                args.viewers,
                args.viewer_connections,
                Duration::from_secs_f64(args.duration.max(1.0)),
            )
            .await?
        }
        Scenario::Fairness => {
            if !(0.0..1.0).contains(&args.bot_share) {
                return Err(BenchError::Usage(
                    "--bot-share must be at least 0 and below 1".into(),
                ));
            }
            let (mut phases, mut checks, mut notes) =
                fairness::throughput(api, options, args.requests).await?;
            let join_per_sec = phases.get(1).map_or(0.0, |joins| joins.requests_per_sec());
            let (log_phases, log_checks, log_notes) =
                fairness::admission_log(api, options, args.requests, join_per_sec).await?;
            phases.extend(log_phases);
            checks.extend(log_checks);
            notes.extend(log_notes);
            let (round_checks, round_notes) = fairness::run(
                api,
                &fairness::FairnessOptions {
                    buyers: buyers(10_000),
                    bot_share: args.bot_share,
                    seed: options.seed,
                    timeout: options.timeout,
                },
            )
            .await?;
            checks.extend(round_checks);
            notes.extend(round_notes);
            Outcome {
                phases,
                checks,
                sales: Vec::new(),
                notes,
            }
        }
        Scenario::Chaos => {
            return Err(BenchError::Usage(
                "chaos is not a load scenario (it runs through run_chaos)".into(),
            ))
        }
        Scenario::Baseline => Outcome {
            phases: vec![scenarios::baseline(api, options, args.requests).await],
            checks: Vec::new(),
            sales: Vec::new(),
            notes: Vec::new(),
        },
    })
}

/// A run against a fresh server of the bench's own: its phases' figures, and its checks
/// labelled with `label`.
async fn fresh_run(
    args: &BenchArgs,
    options: &RunOptions,
    timeout: Duration,
    config: Option<&std::path::Path>,
    label: &str,
    outcome: &mut Outcome,
) -> Result<(Vec<compare::PhaseFigures>, Target), BenchError> {
    let server = Target::embedded(args.scenario == Scenario::Fairness, config, args.server_cpu)?;
    let api = Arc::new(Api::of(&server, timeout));
    let options = RunOptions {
        server_pid: server.server.as_ref().map(target::EmbeddedServer::pid),
        ..options.clone()
    };
    let run = run_scenario(args, &api, &options).await?;
    outcome.checks.extend(run.checks.into_iter().map(|check| {
        Check::new(
            format!("{label}: {}", check.name),
            check.passed,
            check.detail,
        )
    }));
    Ok((compare::figures(&run.phases), server))
}

/// The same scenario against fresh servers with the compared settings (and the bench's webhook
/// receiver among their sinks, if asked), `--compare-rounds` times, each round beside a plain
/// run (the first round's is the bench's own run; later rounds alternate which goes first, so a
/// machine that drifts weighs on both alike): each phase's ratio per round and their median,
/// every run's checks, and whether the sinks caught up and delivered everything.
async fn compare_rounds(
    args: &BenchArgs,
    options: &RunOptions,
    timeout: Duration,
    outcome: &mut Outcome,
) -> Result<(), BenchError> {
    let base = match &args.compare_config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| BenchError::Usage(format!("reading {}: {error}", path.display())))?,
        None => String::new(),
    };
    let compared_label = match (&args.compare_config, args.webhook_receiver) {
        (Some(path), true) => format!("{} and the bench's webhook receiver", path.display()),
        (Some(path), false) => path.display().to_string(),
        (None, _) => "the bench's webhook receiver".into(),
    };
    let rounds = args.compare_rounds.max(1);
    let mut pairs = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let tag = match rounds {
            1 => String::new(),
            _ => format!(" (round {})", round + 1),
        };
        let plain_label = format!("plain{tag}");
        let mut plain = (round == 0).then(|| compare::figures(&outcome.phases));
        let compared_first = round % 2 == 1;
        if plain.is_none() && !compared_first {
            let run = fresh_run(args, options, timeout, None, &plain_label, outcome).await?;
            plain = Some(run.0);
        }
        // A receiver per round: what it saw is held to one server's sink.
        let receiver = match args.webhook_receiver {
            true => Some(receiver::WebhookReceiver::start()?),
            false => None,
        };
        let settings = match &receiver {
            Some(receiver) => receiver.settings_after(&base),
            None => base.clone(),
        };
        let file =
            std::env::temp_dir().join(format!("flashsale-bench-{}.toml", std::process::id()));
        std::fs::write(&file, settings).map_err(|error| BenchError::Write(file.clone(), error))?;
        let label = format!("with {compared_label}{tag}");
        let compared = fresh_run(args, options, timeout, Some(&file), &label, outcome).await;
        let _ = std::fs::remove_file(&file);
        let (compared, server) = compared?;
        let api = Api::of(&server, timeout);
        let (checks, notes, sinks) = compare::drain_sinks(&api).await;
        outcome.checks.extend(checks);
        outcome
            .notes
            .extend(notes.into_iter().map(|note| format!("{note}{tag}")));
        if let Some(receiver) = &receiver {
            let delivered = sinks
                .iter()
                .find(|sink| sink.name == receiver::SINK_NAME)
                .map(|sink| sink.delivered);
            outcome
                .checks
                .extend(compare::receiver_checks(receiver.seen().await, delivered));
        }
        drop(server);
        let plain = match plain {
            Some(plain) => plain,
            None => {
                fresh_run(args, options, timeout, None, &plain_label, outcome)
                    .await?
                    .0
            }
        };
        outcome.notes.extend(
            compare::rate_ratios(&plain, &compared, &compared_label)
                .into_iter()
                .map(|note| format!("{note}{tag}")),
        );
        pairs.push((plain, compared));
    }
    if rounds > 1 {
        outcome
            .notes
            .extend(compare::median_ratios(&pairs, &compared_label));
    }
    Ok(())
}

/// Runs a bench; returns whether every check passed.
pub async fn run(args: BenchArgs) -> Result<bool, BenchError> {
    if args
        .buyers
        .is_some_and(|buyers| buyers == 0 || buyers > u64::from(u32::MAX))
    {
        return Err(BenchError::Usage(
            "--buyers must be 1 to 4,294,967,295".into(),
        ));
    }
    if args.connections == 0 {
        return Err(BenchError::Usage("--connections must be at least 1".into()));
    }
    // Each connection takes a descriptor here and one in the server; the limit is per process
    // (an embedded server inherits it), so each side needs the connections plus some room.
    let wanted = args.connections as u64 + 1024;
    let open_files = client::raise_open_file_limit(wanted);
    if open_files < wanted {
        eprintln!(
            "warning: the open-file limit is {open_files}; {} connections may fail",
            args.connections
        );
    }
    let seed = args.seed.unwrap_or_else(random::fresh_seed);
    eprintln!("flashsale bench {}: seed {seed}", args.scenario.name());
    if args.scenario == Scenario::Chaos {
        return run_chaos(&args, seed).await;
    }
    let compares = args.compare_config.is_some() || args.webhook_receiver;
    if args.target.is_some() && (compares || args.server_cpu.is_some()) {
        return Err(BenchError::Usage(
            "--compare-config, --webhook-receiver and --server-cpu concern servers the bench \
             starts: they cannot go with --target"
                .into(),
        ));
    }
    let target = match &args.target {
        Some(url) => {
            Target::existing(
                url,
                args.admin_token.clone(),
                args.jwt_secret.clone(),
                args.data_dir.as_deref(),
            )
            .await?
        }
        None => Target::embedded(args.scenario == Scenario::Fairness, None, args.server_cpu)?,
    };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let api = Arc::new(Api::of(&target, timeout));
    let options = RunOptions {
        connections: args.connections,
        seed,
        think_max_ms: args.think_time_ms,
        timeout,
        progress: !args.quiet,
        server_pid: target
            .server
            .as_ref()
            .map(target::EmbeddedServer::pid)
            .or(args.target_pid),
    };
    let baseline_requests = match args.scenario {
        Scenario::Stampede | Scenario::Winners | Scenario::Big | Scenario::Oversell => {
            args.buyers.unwrap_or(match args.scenario {
                Scenario::Stampede | Scenario::Winners => 1_000_000,
                Scenario::Big => 20_000,
                _ => 7000,
            })
        }
        _ => args.requests,
    };
    let baseline = if args.with_baseline && args.scenario != Scenario::Baseline {
        Some(scenarios::baseline(&api, &options, baseline_requests).await)
    } else {
        None
    };
    let bare = if args.with_bare_baseline {
        let responder = target::BareResponder::start()?;
        Some(
            scenarios::bare_baseline(
                &api,
                &options,
                responder.address,
                responder.pid(),
                baseline_requests,
            )
            .await,
        )
    } else {
        None
    };
    let mut outcome = run_scenario(&args, &api, &options).await?;
    if let (Some(bare), Some(first)) = (&bare, outcome.phases.first()) {
        outcome.notes.push(format!(
            "purchase req/s / bare responder req/s = {:.3} ({:.0} / {:.0})",
            first.requests_per_sec() / bare.requests_per_sec().max(1e-9),
            first.requests_per_sec(),
            bare.requests_per_sec()
        ));
    }
    if compares {
        compare_rounds(&args, &options, timeout, &mut outcome).await?;
    }
    let ratio = baseline.as_ref().and_then(|baseline| {
        outcome
            .phases
            .first()
            .map(|phase| phase.requests_per_sec() / baseline.requests_per_sec().max(1e-9))
    });
    let phases: Vec<&driver::PhaseResult> = bare
        .iter()
        .chain(baseline.iter())
        .chain(outcome.phases.iter())
        .collect();
    let server = target.server.as_ref();
    let report = Report {
        scenario: args.scenario.name().to_owned(),
        seed,
        target: match &args.target {
            Some(url) => url.clone(),
            None => format!("http://{} (embedded)", target.address),
        },
        connections: args.connections,
        phases: phases
            .iter()
            .map(|phase| PhaseReport::from(*phase))
            .collect(),
        phase_curves: phases
            .iter()
            .map(|phase| phase.stats.percentile_curves())
            .collect(),
        ratio_to_baseline: ratio,
        server_peak_rss_bytes: server.and_then(target::EmbeddedServer::peak_rss_bytes),
        server_cpu_seconds: server.and_then(target::EmbeddedServer::cpu_seconds),
        passed: outcome.checks.iter().all(|check| check.passed),
        notes: outcome.notes,
        sales: outcome.sales,
        checks: outcome.checks,
    };
    print!("{}", report::render(&report));
    if let Some(path) = &args.json {
        report::write_json(&report, path)
            .map_err(|error| BenchError::Write(path.clone(), error))?;
    }
    if let Some(path) = &args.plot {
        report::write_plot(&report, path)
            .map_err(|error| BenchError::Write(path.clone(), error))?;
    }
    Ok(report.passed)
}

async fn run_chaos(args: &BenchArgs, seed: u64) -> Result<bool, BenchError> {
    let mut targets = Vec::new();
    for url in args.target.iter().flat_map(|urls| urls.split(',')) {
        let target = Target::existing(
            url.trim(),
            args.admin_token.clone(),
            args.jwt_secret.clone(),
            args.data_dir.as_deref(),
        )
        .await?;
        targets.push(target.address);
    }
    Ok(chaos::run(chaos::ChaosOptions {
        seed,
        duration: Duration::from_secs_f64(args.duration.max(0.0)),
        buyers: args.buyers.unwrap_or(150),
        stock: args.stock.unwrap_or(20),
        payment_window_secs: args.payment_window_secs,
        cluster_nodes: args.cluster_nodes,
        database_url: args.database_url.clone(),
        targets,
        admin_token: args.admin_token.clone(),
        jwt_secret: args.jwt_secret.clone(),
        faults: !args.no_faults,
        payments: args.payments,
    })
    .await?)
}
