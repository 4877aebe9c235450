//! `flashsale`: parses the command line and hands over to the library; no logic lives here.

mod cli;

use std::process::ExitCode;

use flashsale_server::app::{self, App};
use flashsale_server::auth::mint_token;
use flashsale_server::config::Settings;

use crate::cli::{Command, ReconcileArgs, ServeArgs, TokenArgs, VerifyArgs};

/// mimalloc instead of glibc's allocator: every request allocates and frees dozens of small
/// buffers, and glibc's malloc was about a tenth of the server's CPU in profiles of the stampede.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's option enum (the same index in its v2 and v3).
const MIMALLOC_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc returns freed pages to the OS 10 ms after they empty; under a stampede the same
/// pages are needed again at once, and faulting them back in (the kernel zeroing each) was about
/// a sixth of a durable order's CPU (measured with `perf`: 31 -> 25 µs per order, sold-out
/// rejections 14 -> 11.5 µs). The process keeps what it used at its peak instead, as a
/// sale's peak comes back with the next sale.
fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's integer options; any value is valid for this one.
    unsafe { libmimalloc_sys::mi_option_set(MIMALLOC_PURGE_DELAY, -1) };
}

/// No transparent huge pages for this process: the first touch of a 2-MB page zeroes it whole
/// while every request on the thread waits, and on a virtual machine whose host backs guest memory
/// only when it is first used that took milliseconds (0.44 GB/s measured on this project's VMs).
/// A store grows by each order's few hundred bytes, so a sale's first winners met such stalls;
/// without huge pages the faults are 4 KB each, spread over the requests, and durable orders
/// cost no more (issue #11's sixth measurement: `git log -p docs/BENCHMARKS.md`).
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours; a kernel
        // that refuses it leaves the process as it was, which is still correct.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    no_transparent_huge_pages();
    match cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => token(args),
        Command::Bench(args) => bench(*args),
        Command::Reconcile(args) => reconcile(*args),
        Command::Verify(args) => verify(args),
        Command::BareResponder(args) => match flashsale_bench::serve_bare(args.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(format!("bare responder: {error}")),
        },
        Command::WebhookReceiver(args) => {
            match flashsale_bench::serve_webhook_receiver(args.listen, &args.secret) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(format!("webhook receiver: {error}")),
            }
        }
    }
}

fn verify(args: VerifyArgs) -> ExitCode {
    use flashsale_server::verify::{verify, VerifyError, VerifyRequest};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("starting the runtime: {error}")),
    };
    let request = VerifyRequest {
        url: args.url,
        sale: args.sale,
        admin_token: args.admin_token,
        buyers: args.buyers,
    };
    match runtime.block_on(verify(&request)) {
        Ok(summary) => {
            println!("sale {}: the line verifies: {summary}", request.sale);
            ExitCode::SUCCESS
        }
        Err(VerifyError::Broken(broken)) => {
            eprintln!("flashsale verify: sale {}: {broken}", request.sale);
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("flashsale verify: sale {}: {error}", request.sale);
            ExitCode::from(2)
        }
    }
}

fn reconcile(args: ReconcileArgs) -> ExitCode {
    let mut settings = match Settings::load(args.node.config.as_deref(), &args.node.settings) {
        Ok(settings) => settings,
        Err(error) => return fail(error),
    };
    if !settings.is_cluster() {
        return fail("reconcile compares Redis with PostgreSQL: set redis_url and database_url");
    }
    // A maintenance tool: it must run against a Redis that lost its data, whatever its settings.
    settings.redis_require_durable = false;
    init_logs(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("starting the runtime: {error}")),
    };
    let outcome = runtime.block_on(async {
        let metrics = std::sync::Arc::new(flashsale_server::metrics::Metrics::default());
        let cluster = flashsale_server::cluster::Cluster::connect(&settings, metrics, false)
            .await
            .map_err(|error| error.to_string())?;
        flashsale_server::cluster::reconcile::reconcile(&cluster, args.repair)
            .await
            .map_err(|error| error.to_string())
    });
    let reports = match outcome {
        Ok(reports) => reports,
        Err(error) => return fail(error),
    };
    if args.json {
        println!("{}", serde_json::json!({ "sales": reports }));
    } else {
        print!("{}", flashsale_server::cluster::reconcile::table(&reports));
    }
    if reports.is_empty() {
        // Nothing compared proves nothing: most likely the wrong database or schema.
        eprintln!(
            "flashsale reconcile: no sales in PostgreSQL schema {:?}: is database_url / \
             database_schema the one the nodes use?",
            settings.database_schema
        );
        return ExitCode::from(2);
    }
    if reports.iter().all(|report| report.consistent) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn bench(args: flashsale_bench::BenchArgs) -> ExitCode {
    // The load generator pinned to one core gains what the server does from one thread (measured,
    // open loop at 42,300/s: requests it sent over 2 ms late 6,940 and 8,431 → 1,790 and 2,127).
    let runtime = match runtime_with_workers(0) {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("starting the runtime: {error}")),
    };
    match runtime.block_on(flashsale_bench::run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("flashsale bench: verification failed (see the checks above)");
            ExitCode::from(3)
        }
        Err(error) => fail(error),
    }
}

/// Logs go to stderr: stdout carries what scripts read (the start-up announcement, reports).
fn init_logs(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("flashsale: {message}");
    ExitCode::FAILURE
}

fn serve(args: ServeArgs) -> ExitCode {
    let settings = match Settings::load(args.config.as_deref(), &args.settings) {
        Ok(settings) => settings,
        Err(error) => return fail(error),
    };
    init_logs(&settings.log);
    let runtime = match runtime_with_workers(settings.worker_threads) {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("starting the runtime: {error}")),
    };
    let outcome = runtime.block_on(async {
        let app = App::build(&settings).await?;
        announce(&app, &settings);
        app.run_until(shutdown_signal()).await
    });
    match outcome {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => fail(error),
    }
}

/// A runtime of `worker_threads` workers (0: one per CPU this process may use). With one, the
/// whole runtime runs on one thread (tokio's current-thread scheduler): a single worker of the
/// work-stealing scheduler pays for stealing, its global queue and waking a parked worker
/// without having anyone to share with (measured, server pinned to one core, six alternating
/// runs of 300,000 winners: 44,519 durable orders/s at 21.3 µs each on average, against 42,192/s
/// at 22.4 µs; sold-out rejections 13.0 µs against 14.1).
fn runtime_with_workers(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        chosen => chosen,
    };
    let mut runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.worker_threads(workers);
        runtime
    };
    runtime.enable_all().build()
}

/// Tells the user where the server is and how to start. Written with errors ignored: a closed
/// stdout (a supervisor that stopped reading) must not bring the server down.
fn announce(app: &App, settings: &Settings) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mode = if settings.is_cluster() {
        format!(
            "cluster node: Redis prefix {}, PostgreSQL schema {}",
            settings.redis_key_prefix, settings.database_schema
        )
    } else {
        format!("embedded, data in {}", settings.data_dir.display())
    };
    let _ = writeln!(
        out,
        "flashsale listening on http://{} ({mode})",
        app.local_addr()
    );
    if !app.credentials.generated.is_empty() {
        let token = mint_token(
            &app.credentials.jwt_secret,
            "alice",
            jiff::Timestamp::now().as_second() + 86_400,
        );
        let _ = writeln!(
            out,
            "generated and stored: {}",
            app.credentials.generated.join(", ")
        );
        let _ = writeln!(out, "admin token: {}", app.credentials.admin_token);
        let _ = writeln!(out, "buyer token for 'alice': {token}");
    }
    let _ = writeln!(out, "more buyer tokens: flashsale token --user ID");
    if settings.demo {
        let warning = "DEMO MODE: anyone can sign in as anyone (POST /api/v1/demo/token). \
                       Never run --demo where real buyers or real money are involved.";
        tracing::warn!("{warning}");
        let _ = writeln!(out, "\n!!! {warning}");
        let _ = writeln!(
            out,
            "!!! storefront: http://{0}/   admin console: http://{0}/admin (admin token above or \
             in the data directory)\n",
            app.local_addr()
        );
    }
    let _ = out.flush();
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down: draining requests and flushing the store");
}

fn token(args: TokenArgs) -> ExitCode {
    #[derive(serde::Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        data_dir: Option<std::path::PathBuf>,
        #[serde(skip_serializing_if = "Option::is_none")]
        jwt_secret: Option<String>,
    }
    let flags = Flags {
        data_dir: args.data_dir,
        jwt_secret: args.jwt_secret,
    };
    let settings = match Settings::load(args.config.as_deref(), flags) {
        Ok(settings) => settings,
        Err(error) => return fail(error),
    };
    if flashsale_server::domain::UserId::parse(&args.user).is_none() {
        return fail("--user must be 1 to 64 characters");
    }
    if args.ttl_secs < 1 {
        return fail("--ttl-secs must be at least 1");
    }
    let credentials = match app::credentials(&settings) {
        Ok(credentials) => credentials,
        Err(error) => return fail(error),
    };
    let expires = jiff::Timestamp::now()
        .as_second()
        .saturating_add(args.ttl_secs);
    println!(
        "{}",
        mint_token(&credentials.jwt_secret, &args.user, expires)
    );
    ExitCode::SUCCESS
}
