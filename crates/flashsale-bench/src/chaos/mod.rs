//! `flashsale bench chaos`: a crowd that behaves like a real one (it hangs up, retries,
//! double-clicks, pays and cancels against the expiry, carries tokens that run out) against the
//! embedded server or cluster nodes, while a fault schedule hurts the deployment (kill -9 and
//! restart of the embedded server; of a cluster node; of Redis, back from its AOF; a stall of
//! PostgreSQL). It records
//! every operation and what came back, then checks the contract's promises from that history
//! and the server's own records. Meanwhile an operator pauses and resumes sales and tops their
//! stock up (`operator.rs`). A seed replays the same client schedule, operator's changes and
//! fault times. With `--payments` the nodes pay through Stripe's API at a private localstripe
//! (`payments.rs`): cards confirmed at it (late, declined), webhooks dropped and duplicated, and
//! the checker adds the money (localstripe's own records against the orders) and the event
//! feed's story.

mod checker;
mod crowd;
mod history;
mod operator;
mod payments;
mod processes;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use self::checker::{AuditSeen, Listed, Records};
use self::crowd::{Crowd, SaleSpec};
use self::history::History;
use self::operator::{Operated, Operator};
use self::payments::{LocalStripe, WebhookRelay};
use self::processes::{through_proxy, Node, PausableProxy, PrivateRedis};
use self::wire::{exchange, Answer, HangUp, Request};
use crate::SplitMix64;
use flashsale_server::auth::TokenMinter;

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("starting the deployment: {0}")]
    Start(String),
    #[error("{what}: {answer:?}")]
    Admin { what: String, answer: Answer },
    #[error("{0}")]
    Usage(String),
}

/// What a chaos run is asked for.
pub struct ChaosOptions {
    pub seed: u64,
    pub duration: Duration,
    pub buyers: u64,
    pub stock: u64,
    pub payment_window_secs: u32,
    /// Cluster nodes to start (0: the embedded server).
    pub cluster_nodes: usize,
    /// PostgreSQL of the cluster (the run takes a schema of its own and drops it).
    pub database_url: Option<String>,
    /// Nodes run by someone else: no faults, history and checks only.
    pub targets: Vec<SocketAddr>,
    pub admin_token: Option<String>,
    pub jwt_secret: Option<String>,
    pub faults: bool,
    /// Pay through Stripe's API at a private localstripe (else the simulated provider).
    pub payments: bool,
}

fn random_hex(random: &mut SplitMix64) -> String {
    format!("{:016x}{:016x}", random.next_u64(), random.next_u64())
}

/// The servers of a run, and what it may do to them.
struct Deployment {
    nodes: Vec<Node>,
    redis: Option<PrivateRedis>,
    /// Between the nodes and PostgreSQL, so the run can make PostgreSQL stall.
    postgres_proxy: Option<PausableProxy>,
    /// The PostgreSQL schema to drop at the end: (url, schema).
    schema: Option<(String, String)>,
    addresses: Vec<SocketAddr>,
    admin_token: String,
    jwt_secret: String,
    stripe: Option<Arc<LocalStripe>>,
    relay: Option<WebhookRelay>,
    /// The run's own directory under the system's temp directory, removed at the end.
    base: Option<std::path::PathBuf>,
}

impl Deployment {
    async fn start(options: &ChaosOptions, random: &mut SplitMix64) -> Result<Self, ChaosError> {
        if !options.targets.is_empty() {
            let (Some(admin_token), Some(jwt_secret)) =
                (options.admin_token.clone(), options.jwt_secret.clone())
            else {
                return Err(ChaosError::Usage(
                    "--target needs --admin-token and --jwt-secret".into(),
                ));
            };
            return Ok(Self {
                nodes: Vec::new(),
                redis: None,
                postgres_proxy: None,
                schema: None,
                addresses: options.targets.clone(),
                admin_token,
                jwt_secret,
                stripe: None,
                relay: None,
                base: None,
            });
        }
        // Names and secrets come from the OS, not the seed: two runs of one seed must not share
        // a schema.
        let mut fresh = SplitMix64::new(crate::random::fresh_seed());
        let run = random_hex(&mut fresh);
        let (admin_token, jwt_secret) = (random_hex(&mut fresh), random_hex(&mut fresh));
        let _ = random;
        let base = std::env::temp_dir().join(format!("flashsale-chaos-{run}"));
        let arguments = vec![
            "--admin-token".to_owned(),
            admin_token.clone(),
            "--jwt-secret".to_owned(),
            jwt_secret.clone(),
            "--buyer-requests-per-sec".to_owned(),
            "0".to_owned(),
            "--expiry-sweep-interval-ms".to_owned(),
            "100".to_owned(),
        ];
        let mut arguments = arguments;
        let stripe = if options.payments {
            let stripe = LocalStripe::start().await?;
            let base = stripe.base_url();
            for (flag, value) in [
                ("--payment-provider", "stripe".to_owned()),
                ("--stripe-api-base", base.clone()),
                ("--stripe-secret-key", payments::SECRET_KEY.to_owned()),
                (
                    "--stripe-publishable-key",
                    payments::PUBLISHABLE_KEY.to_owned(),
                ),
                (
                    "--stripe-webhook-secret",
                    payments::WEBHOOK_SECRET.to_owned(),
                ),
                ("--stripe-js-url", format!("{base}/js.stripe.com/v3/")),
                // Short, for a run of seconds: a lost webhook is made up a second later, and
                // an intent the provider could not cancel waits two seconds past its deadline.
                ("--payment-poll-interval-secs", "1".to_owned()),
                ("--payment-expiry-grace-secs", "2".to_owned()),
            ] {
                arguments.push(flag.to_owned());
                arguments.push(value);
            }
            Some(Arc::new(stripe))
        } else {
            None
        };
        let mut environment = Vec::new();
        let mut redis = None;
        let mut schema = None;
        let mut postgres_proxy = None;
        let count = if options.cluster_nodes == 0 {
            1
        } else {
            let database_url = options
                .database_url
                .clone()
                .ok_or_else(|| ChaosError::Usage("a cluster run needs --database-url".into()))?;
            let private = PrivateRedis::start(base.join("redis")).await?;
            let name = format!("chaos_{}", &run[..16]);
            let port = processes::free_port()?;
            let (proxied, upstream) = through_proxy(&database_url, port)
                .ok_or_else(|| ChaosError::Usage("--database-url must be postgres://…".into()))?;
            let proxy = PausableProxy::start(upstream).await?;
            let proxied = proxied.replace(&format!(":{port}"), &format!(":{}", proxy.port));
            postgres_proxy = Some(proxy);
            environment = vec![
                ("FLASHSALE_REDIS_URL".to_owned(), private.url()),
                ("FLASHSALE_DATABASE_URL".to_owned(), proxied),
                ("FLASHSALE_REDIS_KEY_PREFIX".to_owned(), name.clone()),
                ("FLASHSALE_DATABASE_SCHEMA".to_owned(), name.clone()),
                (
                    "FLASHSALE_QUEUE_CLAIM_IDLE_MS".to_owned(),
                    "1000".to_owned(),
                ),
                ("FLASHSALE_SOLD_OUT_RECHECK_MS".to_owned(), "500".to_owned()),
            ];
            redis = Some(private);
            schema = Some((database_url, name));
            options.cluster_nodes
        };
        let mut nodes = Vec::with_capacity(count);
        for index in 0..count {
            let mut node = Node::new(
                base.join(format!("node-{index}")),
                arguments.clone(),
                environment.clone(),
            )?;
            node.start().await?;
            nodes.push(node);
        }
        let addresses: Vec<SocketAddr> = nodes.iter().map(|node| node.address).collect();
        let relay = match &stripe {
            Some(stripe) => {
                let relay = WebhookRelay::start(addresses.clone(), options.seed).await?;
                stripe.register_webhook(&relay.url()).await?;
                Some(relay)
            }
            None => None,
        };
        Ok(Self {
            nodes,
            redis,
            postgres_proxy,
            schema,
            addresses,
            admin_token,
            jwt_secret,
            stripe,
            relay,
            base: Some(base),
        })
    }

    async fn cleanup(&mut self) {
        self.relay = None;
        self.nodes.clear();
        self.stripe = None;
        self.redis = None;
        if let Some(base) = self.base.take() {
            let _ = std::fs::remove_dir_all(base);
        }
        self.redis = None;
        self.postgres_proxy = None;
        if let Some((url, schema)) = self.schema.take() {
            let connected = match flashsale_server::tls::postgres_target(&url) {
                Ok(target) => target.config.connect(target.connector).await.ok(),
                Err(_) => None,
            };
            if let Some((client, connection)) = connected {
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            }
        }
    }
}

/// One fault of the schedule: at `at` (since the crowd started), for `down`.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillNode { node: usize },
    KillRedis,
    PausePostgres,
}

fn schedule(
    options: &ChaosOptions,
    random: &mut SplitMix64,
    nodes: usize,
) -> Vec<(Duration, Duration, Fault)> {
    if !options.faults || !options.targets.is_empty() {
        return Vec::new();
    }
    let run = options.duration.as_millis() as u64;
    let at = |random: &mut SplitMix64, from: u64, to: u64| {
        Duration::from_millis(run * from / 100 + random.below(run * (to - from) / 100 + 1))
    };
    let mut faults = vec![
        (
            at(random, 15, 30),
            Duration::from_millis(200 + random.below(500)),
            Fault::KillNode {
                node: random.below(nodes as u64) as usize,
            },
        ),
        (
            at(random, 55, 70),
            Duration::from_millis(200 + random.below(500)),
            Fault::KillNode {
                node: random.below(nodes as u64) as usize,
            },
        ),
    ];
    if options.cluster_nodes > 0 {
        faults.push((
            at(random, 35, 50),
            Duration::from_millis(200 + random.below(400)),
            Fault::KillRedis,
        ));
        faults.push((
            at(random, 75, 85),
            Duration::from_millis(1000 + random.below(1500)),
            Fault::PausePostgres,
        ));
    }
    faults.sort_by_key(|(at, ..)| *at);
    faults
}

async fn admin(
    address: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Answer {
    let request = Request {
        method,
        path,
        bearer: Some(token),
        idempotency_key: None,
        body: body.map(|body| body.to_string()),
        headers: &[],
    };
    exchange(address, &request, HangUp::Never).await
}

async fn create_sales(
    deployment: &Deployment,
    options: &ChaosOptions,
) -> Result<Vec<SaleSpec>, ChaosError> {
    let now = jiff::Timestamp::now();
    let starts_at = now - jiff::SignedDuration::from_secs(60);
    let ends_mid_run = jiff::SignedDuration::try_from(options.duration * 3 / 5)
        .ok()
        .and_then(|span| now.checked_add(span).ok());
    let price_cents = if options.payments {
        payments::PRICE_CENTS
    } else {
        0
    };
    let mut sales = Vec::new();
    for (stock, per_user_limit, ends_at) in [
        (options.stock, 1, None),
        (options.stock, 3, None),
        ((options.stock / 2).max(1), 2, ends_mid_run),
    ] {
        let answer = admin(
            deployment.addresses[0],
            &deployment.admin_token,
            "POST",
            "/api/v1/sales",
            Some(json!({
                "name": "Chaos",
                "stock": stock,
                "per_user_limit": per_user_limit,
                "starts_at": starts_at.to_string(),
                "ends_at": ends_at.map(|ends_at: jiff::Timestamp| ends_at.to_string()),
                "payment_window_secs": options.payment_window_secs,
                "price_cents": price_cents,
            })),
        )
        .await;
        let Some(id) = answer.body().and_then(|body| body["id"].as_str()) else {
            return Err(ChaosError::Admin {
                what: "creating a sale".into(),
                answer,
            });
        };
        sales.push(SaleSpec {
            id: id.to_owned(),
            stock,
            per_user_limit,
            ends_at,
            price_cents,
        });
    }
    Ok(sales)
}

/// Starts a killed node again, a few times if need be (its port may take a moment to be free).
async fn restart(node: &mut Node) -> Result<(), ChaosError> {
    let mut outcome = node.start().await;
    for _ in 0..10 {
        if outcome.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        outcome = node.start().await;
    }
    outcome
}

/// How a kill went, for the report: "<at> ms: <what> after <down> ms".
fn fault_line(
    at: Duration,
    what: &str,
    down: Duration,
    restarted: Result<(), ChaosError>,
) -> String {
    let failure = restarted
        .err()
        .map(|error| format!(" (FAILED: {error})"))
        .unwrap_or_default();
    format!(
        "{:>6} ms: {what} after {} ms{failure}",
        at.as_millis(),
        down.as_millis()
    )
}

/// Runs the fault schedule against the deployment while the crowd runs.
async fn hurt(
    deployment: &mut Deployment,
    faults: Vec<(Duration, Duration, Fault)>,
    started: Instant,
) -> Vec<String> {
    let mut done = Vec::new();
    for (at, down, fault) in faults {
        tokio::time::sleep_until((started + at).into()).await;
        match fault {
            Fault::KillNode { node } => {
                let node = node % deployment.nodes.len().max(1);
                if let Some(target) = deployment.nodes.get_mut(node) {
                    target.kill();
                    tokio::time::sleep(down).await;
                    let restarted = restart(target).await;
                    done.push(fault_line(
                        at,
                        &format!("kill -9 node {node}, restarted"),
                        down,
                        restarted,
                    ));
                }
            }
            Fault::PausePostgres => {
                if let Some(proxy) = deployment.postgres_proxy.as_ref() {
                    proxy.pause(true);
                    tokio::time::sleep(down).await;
                    proxy.pause(false);
                    done.push(format!(
                        "{:>6} ms: PostgreSQL paused for {} ms",
                        at.as_millis(),
                        down.as_millis()
                    ));
                }
            }
            Fault::KillRedis => {
                if let Some(redis) = deployment.redis.as_mut() {
                    redis.kill();
                    tokio::time::sleep(down).await;
                    let restarted = redis.restart().await;
                    done.push(fault_line(
                        at,
                        "kill -9 Redis, restarted from its AOF",
                        down,
                        restarted,
                    ));
                }
            }
        }
    }
    done
}

async fn audits(deployment: &Deployment, sale_id: &str) -> Vec<Option<AuditSeen>> {
    let mut seen = Vec::new();
    for address in &deployment.addresses {
        let answer = admin(
            *address,
            &deployment.admin_token,
            "GET",
            &format!("/api/v1/sales/{sale_id}/audit"),
            None,
        )
        .await;
        seen.push(
            answer
                .body()
                .and_then(|body| serde_json::from_value(body.clone()).ok()),
        );
    }
    seen
}

/// Waits (bounded) until every order's payment window closed, every node's audit balances
/// with nothing pending, and every payment is settled (no refund owed, no open intent of a
/// closed order).
async fn quiesce(deployment: &Deployment, sales: &[SaleSpec], window: Duration) -> bool {
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(45) {
        let mut settled = true;
        for sale in sales {
            for audit in audits(deployment, &sale.id).await {
                settled &= audit.is_some_and(|audit| audit.consistent && audit.pending == 0);
            }
            if settled && deployment.stripe.is_some() {
                settled &= list_orders(deployment, &sale.id)
                    .await
                    .is_ok_and(|orders| orders.iter().all(Listed::payment_settled));
            }
        }
        if settled {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Every event of the sale in the feed: each order's event types, in order.
async fn feed(
    deployment: &Deployment,
    sale_id: &str,
    told: &mut std::collections::HashMap<String, Vec<String>>,
) -> Result<(), ChaosError> {
    let mut after = 0u64;
    loop {
        let path = format!("/api/v1/events?sale_id={sale_id}&after={after}&limit=1000");
        let answer = admin(
            deployment.addresses[0],
            &deployment.admin_token,
            "GET",
            &path,
            None,
        )
        .await;
        let Some(body) = answer.body().filter(|_| answer.status() == Some(200)) else {
            return Err(ChaosError::Admin {
                what: "reading the event feed".into(),
                answer,
            });
        };
        let events = body["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            if let (Some(kind), Some(subject)) = (event["type"].as_str(), event["subject"].as_str())
            {
                if kind.starts_with("flashsale.order.") {
                    told.entry(subject.to_owned())
                        .or_default()
                        .push(kind.to_owned());
                }
            }
        }
        let next = body["next_after"].as_u64().unwrap_or(after);
        if events.is_empty() || next == after {
            return Ok(());
        }
        after = next;
    }
}

async fn list_orders(deployment: &Deployment, sale_id: &str) -> Result<Vec<Listed>, ChaosError> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/orders?sale_id={sale_id}&limit=500");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let answer = admin(
            deployment.addresses[0],
            &deployment.admin_token,
            "GET",
            &path,
            None,
        )
        .await;
        let Some(body) = answer.body().filter(|_| answer.status() == Some(200)) else {
            return Err(ChaosError::Admin {
                what: "listing orders".into(),
                answer,
            });
        };
        let page: Vec<Listed> = serde_json::from_value(body["orders"].clone()).unwrap_or_default();
        orders.extend(page);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(orders),
        }
    }
}

/// One unit of `sale` for a fresh buyer, on `node`.
async fn buy_one(node: SocketAddr, sale: &SaleSpec, buyer: &str, minter: &TokenMinter) -> Answer {
    let token = minter.mint(buyer, jiff::Timestamp::now().as_second() + 3600);
    let path = format!("/api/v1/sales/{}/purchase", sale.id);
    let request = Request {
        method: "POST",
        path: &path,
        bearer: Some(&token),
        idempotency_key: None,
        body: None,
        headers: &[],
    };
    exchange(node, &request, HangUp::Never).await
}

/// Buys the whole remaining stock with fresh buyers, one unit each, then one more (`sold_out`).
/// A sale that has ended sells nothing: its one purchase must be refused `sale_ended`.
async fn buy_back(
    deployment: &Deployment,
    sale: &SaleSpec,
    remaining: u64,
    minter: &TokenMinter,
) -> (u64, bool) {
    let nodes = &deployment.addresses;
    if sale
        .ends_at
        .is_some_and(|ends_at| ends_at <= jiff::Timestamp::now())
    {
        let answer = buy_one(nodes[0], sale, &format!("final-{}", sale.id), minter).await;
        return (remaining, answer.code() == "sale_ended");
    }
    let mut bought = 0;
    for index in 0..=remaining {
        let node = nodes[index as usize % nodes.len()];
        let buyer = format!("final-{}-{index}", sale.id);
        let answer = buy_one(node, sale, &buyer, minter).await;
        match answer.status() {
            Some(201) => bought += 1,
            Some(409) if answer.code() == "sold_out" => return (bought, index == remaining),
            _ => return (bought, false),
        }
    }
    (bought, false)
}

/// Runs one chaos run; returns whether every check passed.
pub async fn run(options: ChaosOptions) -> Result<bool, ChaosError> {
    if options.buyers == 0 || options.stock == 0 || options.duration.is_zero() {
        return Err(ChaosError::Usage(
            "--buyers, --stock and --duration must be positive".into(),
        ));
    }
    let mut random = SplitMix64::new(options.seed);
    let mut deployment = Deployment::start(&options, &mut random).await?;
    let outcome = run_on(&options, &mut random, &mut deployment).await;
    deployment.cleanup().await;
    outcome
}

async fn run_on(
    options: &ChaosOptions,
    random: &mut SplitMix64,
    deployment: &mut Deployment,
) -> Result<bool, ChaosError> {
    let sales = create_sales(deployment, options).await?;
    let faults = schedule(options, random, deployment.addresses.len());
    let window = Duration::from_secs(u64::from(options.payment_window_secs));
    let started = Instant::now();
    let crowd = Arc::new(Crowd {
        nodes: deployment.addresses.clone(),
        sales: sales.clone(),
        minter: TokenMinter::new(&deployment.jwt_secret),
        history: History::default(),
        started,
        deadline: started + options.duration,
        payment_window: window,
        admin_token: deployment.admin_token.clone(),
        stripe: deployment.stripe.clone(),
    });
    let buyers: Vec<_> = (0..options.buyers)
        .map(|index| tokio::spawn(Arc::clone(&crowd).buyer(index, options.seed)))
        .collect();
    let operator = Operator {
        nodes: deployment.addresses.clone(),
        admin_token: deployment.admin_token.clone(),
        sales: sales
            .iter()
            .filter(|sale| sale.ends_at.is_none())
            .cloned()
            .collect(),
        deadline: started + options.duration,
    };
    let ((operated, left_paused), events) = tokio::join!(
        operator.run(options.seed),
        hurt(deployment, faults, started)
    );
    for buyer in buyers {
        let _ = buyer.await;
    }
    let settled = quiesce(deployment, &sales, window).await;
    let history = crowd.history.operations();
    let mut records = Records {
        audits: BTreeMap::new(),
        orders: Vec::new(),
        bought_back: BTreeMap::new(),
        payments: None,
        events: std::collections::HashMap::new(),
    };
    let mut violations: Vec<String> = left_paused
        .iter()
        .map(|sale| format!("sale {sale}: no node would resume it at the end"))
        .collect();
    if !settled {
        violations.push(
            "the deployment did not settle (audits consistent, nothing pending) within 30 s"
                .to_owned(),
        );
    }
    for sale in &sales {
        let seen = audits(deployment, &sale.id).await;
        if seen.iter().any(Option::is_none) {
            violations.push(format!("sale {}: a node gave no audit", sale.id));
        }
        records
            .audits
            .insert(sale.id.clone(), seen.into_iter().flatten().collect());
        records
            .orders
            .extend(list_orders(deployment, &sale.id).await?);
        feed(deployment, &sale.id, &mut records.events).await?;
    }
    if let Some(stripe) = &deployment.stripe {
        records.payments = Some(stripe.records().await?);
    }
    // The stock the checks hold the records to: what the sale has now, which must be its first
    // stock plus every acknowledged top-up, and at most every top-up sent.
    let mut sales = sales;
    for sale in &mut sales {
        let done = operated.get(&sale.id).cloned().unwrap_or_default();
        let (least, most) = (
            sale.stock + done.added_acknowledged,
            sale.stock + done.added_sent,
        );
        let now = records
            .audits
            .get(&sale.id)
            .and_then(|audits| audits.first())
            .map_or(sale.stock, |audit| audit.stock);
        if !(least..=most).contains(&now) {
            violations.push(format!(
                "sale {}: its stock is {now}, not between {least} (every acknowledged top-up) \
                 and {most} (every one sent)",
                sale.id
            ));
        }
        sale.stock = now;
    }
    let minter = TokenMinter::new(&deployment.jwt_secret);
    for sale in &sales {
        let remaining = records
            .audits
            .get(&sale.id)
            .and_then(|audits| audits.first())
            .map_or(0, |audit| audit.remaining);
        let bought = buy_back(deployment, sale, remaining, &minter).await;
        records.bought_back.insert(sale.id.clone(), bought);
    }
    violations.extend(checker::check(&sales, &history, &records));
    report(options, &history, &events, &operated, &records, &violations);
    if let Some(relay) = &deployment.relay {
        use std::sync::atomic::Ordering::Relaxed;
        let counts = &relay.counts;
        println!(
            "webhooks from localstripe: {} received, {} dropped, {} sent twice, {} sends lost (a node down or refusing)",
            counts.received.load(Relaxed),
            counts.dropped.load(Relaxed),
            counts.duplicated.load(Relaxed),
            counts.lost.load(Relaxed)
        );
    }
    Ok(violations.is_empty())
}

fn report(
    options: &ChaosOptions,
    history: &[history::Operation],
    events: &[String],
    operated: &BTreeMap<String, Operated>,
    records: &Records,
    violations: &[String],
) {
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for operation in history {
        let kind = match operation.action {
            history::Action::Purchase { .. } => "purchase",
            history::Action::Pay { .. } => "pay",
            history::Action::PayWith { .. } => "pay+card",
            history::Action::Cancel { .. } => "cancel",
            history::Action::Refund { .. } => "refund",
        };
        let outcome = match &operation.answer {
            Answer::Reply { status, .. } => format!("{status} {}", operation.answer.code()),
            Answer::None(_) => "no reply".to_owned(),
        };
        *outcomes
            .entry(format!("{kind:<8} {}", outcome.trim()))
            .or_default() += 1;
    }
    let backend = if !options.targets.is_empty() {
        format!("{} given node(s)", options.targets.len())
    } else if options.cluster_nodes > 0 {
        format!("{} cluster nodes", options.cluster_nodes)
    } else {
        "embedded".to_owned()
    };
    println!(
        "flashsale bench chaos: seed {} on {backend}, {} buyers for {:.1} s",
        options.seed,
        options.buyers,
        options.duration.as_secs_f64()
    );
    println!("operations: {}", history.len());
    for (outcome, count) in &outcomes {
        println!("  {outcome:<40} {count:>7}");
    }
    println!("faults:");
    for event in events {
        println!("  {event}");
    }
    println!("operator:");
    for (sale, done) in operated {
        println!(
            "  sale {sale}: paused {} times, topped up {} times (+{} units acknowledged of {} sent)",
            done.pauses, done.top_ups, done.added_acknowledged, done.added_sent
        );
    }
    let by_status: BTreeMap<&str, usize> =
        records
            .orders
            .iter()
            .fold(BTreeMap::new(), |mut counts, order| {
                *counts.entry(order.status.as_str()).or_default() += 1;
                counts
            });
    println!("orders on the server: {by_status:?}");
    if let Some(payments) = &records.payments {
        let taken: u64 = payments
            .iter()
            .filter(|(intent, _)| intent["status"] == "succeeded")
            .map(|(intent, _)| intent["amount"].as_u64().unwrap_or(0))
            .sum();
        let refunds: usize = payments.iter().map(|(_, refunds)| refunds.len()).sum();
        let refunded: u64 = payments
            .iter()
            .flat_map(|(_, refunds)| refunds)
            .map(|refund| refund["amount"].as_u64().unwrap_or(0))
            .sum();
        println!(
            "money at localstripe: {} intents, {taken} taken, {refunds} refunds of {refunded}",
            payments.len()
        );
    }
    for (sale, (bought, refused)) in &records.bought_back {
        println!("  sale {sale}: bought back {bought}, then sold out: {refused}");
    }
    if violations.is_empty() {
        println!("PASSED: 0 invariant violations (seed {})", options.seed);
    } else {
        println!(
            "FAILED: {} invariant violations (seed {}):",
            violations.len(),
            options.seed
        );
        for violation in violations {
            println!("  - {violation}");
        }
    }
}
