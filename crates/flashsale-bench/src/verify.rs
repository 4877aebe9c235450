//! What a bench checks after the load, against the server's own records. A check that fails makes
//! the bench exit non-zero with its message.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::api::{buyer_name, Api, ApiError};
use super::driver::{PhaseResult, Won};
use super::random::SplitMix64;

/// Orders read back one by one: all of them up to this many, a random sample beyond.
pub const READ_BACK_ALL_MAX: usize = 100_000;
const READ_BACK_SAMPLE: usize = 10_000;

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed,
            detail: detail.into(),
        }
    }
}

/// A sale a scenario sold, and how many units the rules say must have gone.
#[derive(Clone, Debug, Serialize)]
pub struct SaleUnderTest {
    pub id: String,
    pub stock: u64,
    pub per_user_limit: u32,
    pub buyers: u64,
}

impl SaleUnderTest {
    /// winners == min(stock, buyers × limit), each winner buying one unit per request.
    pub fn expected_winners(&self) -> u64 {
        self.stock.min(self.buyers * u64::from(self.per_user_limit))
    }
}

/// The checks every purchase scenario makes for each of its sales.
pub async fn purchases(
    api: &Api,
    sales: &[SaleUnderTest],
    phase: &PhaseResult,
    seed: u64,
) -> Result<Vec<Check>, ApiError> {
    let mut checks = vec![Check::new(
        "no transport errors or timeouts",
        phase.errors() == 0,
        format!("{} failed exchanges", phase.errors()),
    )];
    for (index, sale) in sales.iter().enumerate() {
        let won: Vec<&Won> = phase.won.iter().filter(|won| won.sale == index).collect();
        checks.extend(sale_checks(api, sale, &won, seed).await?);
    }
    Ok(checks)
}

async fn sale_checks(
    api: &Api,
    sale: &SaleUnderTest,
    won: &[&Won],
    seed: u64,
) -> Result<Vec<Check>, ApiError> {
    let label = |what: &str| format!("sale {}: {what}", sale.id);
    let mut checks = Vec::new();
    let expected = sale.expected_winners();
    let distinct: HashSet<&str> = won.iter().map(|won| won.order_id.as_str()).collect();
    checks.push(Check::new(
        label("winners == min(stock, buyers x limit)"),
        distinct.len() as u64 == expected,
        format!(
            "{} distinct orders acknowledged, {expected} expected",
            distinct.len()
        ),
    ));
    let mut owner: HashMap<&str, u64> = HashMap::new();
    let mut shared = 0;
    for won in won {
        if *owner.entry(won.order_id.as_str()).or_insert(won.buyer) != won.buyer {
            shared += 1;
        }
    }
    checks.push(Check::new(
        label("no order acknowledged to two buyers"),
        shared == 0,
        format!("{shared} order ids given to more than one buyer"),
    ));
    let mut per_buyer: HashMap<u64, HashSet<&str>> = HashMap::new();
    for won in won {
        per_buyer
            .entry(won.buyer)
            .or_default()
            .insert(won.order_id.as_str());
    }
    let over = per_buyer
        .values()
        .filter(|orders| orders.len() as u64 > u64::from(sale.per_user_limit))
        .count();
    checks.push(Check::new(
        label("no buyer above the per-user limit"),
        over == 0,
        format!(
            "{over} buyers hold more than {} orders",
            sale.per_user_limit
        ),
    ));
    let audit = api.audit(&sale.id).await?;
    checks.push(Check::new(
        label("audit consistent"),
        audit.consistent && audit.remaining + audit.pending + audit.paid == audit.stock,
        format!("{audit:?}"),
    ));
    checks.push(Check::new(
        label("the store holds exactly the acknowledged units"),
        audit.pending + audit.paid == distinct.len() as u64,
        format!(
            "store: {} pending + {} paid; client: {} acknowledged",
            audit.pending,
            audit.paid,
            distinct.len()
        ),
    ));
    checks.push(read_back(api, sale, won, seed).await?);
    if won.len() <= READ_BACK_ALL_MAX {
        checks.push(stored_orders(api, sale, &distinct).await?);
    }
    Ok(checks)
}

/// The store's own list of the sale's orders: exactly the acknowledged ones, and no buyer above
/// the limit there either.
async fn stored_orders(
    api: &Api,
    sale: &SaleUnderTest,
    acknowledged: &HashSet<&str>,
) -> Result<Check, ApiError> {
    let stored = api.orders_of_sale(&sale.id).await?;
    let active: Vec<_> = stored
        .iter()
        .filter(|order| order.status == "pending_payment" || order.status == "paid")
        .collect();
    let mut held: HashMap<&str, u64> = HashMap::new();
    for order in &active {
        *held.entry(order.user_id.as_str()).or_default() += u64::from(order.quantity);
    }
    let over = held
        .values()
        .filter(|quantity| **quantity > u64::from(sale.per_user_limit))
        .count();
    let stored_ids: HashSet<&str> = active.iter().map(|order| order.id.as_str()).collect();
    let unknown = stored_ids.difference(acknowledged).count();
    let absent = acknowledged.difference(&stored_ids).count();
    Ok(Check::new(
        format!("sale {}: the store lists exactly the acknowledged orders", sale.id),
        over == 0 && unknown == 0 && absent == 0,
        format!(
            "{} active orders listed; {unknown} never acknowledged, {absent} acknowledged but absent, {over} buyers over the limit",
            active.len()
        ),
    ))
}

/// Reads acknowledged orders back: each must exist, for its buyer and sale.
async fn read_back(
    api: &Api,
    sale: &SaleUnderTest,
    won: &[&Won],
    seed: u64,
) -> Result<Check, ApiError> {
    let mut chosen: Vec<&Won> = won.to_vec();
    if chosen.len() > READ_BACK_ALL_MAX {
        let mut random = SplitMix64::new(seed);
        let order = random.permutation(chosen.len() as u32);
        chosen = order
            .into_iter()
            .take(READ_BACK_SAMPLE)
            .map(|index| won[index as usize])
            .collect();
    }
    let mut missing = Vec::new();
    for won in &chosen {
        let wanted_buyer = buyer_name(won.buyer);
        match api.order(&won.order_id).await? {
            Some(order) if order.sale_id == sale.id && order.user_id == wanted_buyer => {}
            Some(order) => missing.push(format!(
                "{} belongs to {}/{}",
                won.order_id, order.sale_id, order.user_id
            )),
            None => missing.push(format!("{} not found", won.order_id)),
        }
    }
    let scope = if chosen.len() == won.len() {
        "all"
    } else {
        "a random sample of"
    };
    Ok(Check::new(
        format!("sale {}: every acknowledged order is retrievable", sale.id),
        missing.is_empty(),
        format!(
            "read {scope} {} of {} orders; {} wrong{}",
            chosen.len(),
            won.len(),
            missing.len(),
            missing
                .first()
                .map(|first| format!(", e.g. {first}"))
                .unwrap_or_default()
        ),
    ))
}

/// For the single-buyer scenario: every success and every refusal names one and the same order.
pub fn one_order_for_one_buyer(phase: &PhaseResult) -> Check {
    let mut named: HashSet<&str> = phase.won.iter().map(|won| won.order_id.as_str()).collect();
    named.extend(phase.named_by_refusals.iter().map(String::as_str));
    Check::new(
        "one buyer, one order: every reply names the same order",
        named.len() == 1,
        format!(
            "{} distinct order ids named: {:?}",
            named.len(),
            named.iter().take(5).collect::<Vec<_>>()
        ),
    )
}
