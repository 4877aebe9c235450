//! The checker: from the history of what the crowd was told and the server's own records after
//! the run, every promise of the contract, checked. Each violation names the order, the sale,
//! what was expected and what was found.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::crowd::SaleSpec;
use super::history::{Action, Operation};
use super::wire::Answer;

/// An order as the server lists it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Listed {
    pub id: String,
    pub sale_id: String,
    pub user_id: String,
    pub quantity: u32,
    pub status: String,
}

/// A sale's audit as one node reports it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AuditSeen {
    pub stock: u64,
    pub remaining: u64,
    pub pending: u64,
    pub paid: u64,
    pub consistent: bool,
}

/// What the server says after the run, per sale.
pub struct Records {
    pub audits: BTreeMap<String, Vec<AuditSeen>>,
    pub orders: Vec<Listed>,
    /// Units the final phase bought back per sale, and whether one more was refused `sold_out`.
    pub bought_back: BTreeMap<String, (u64, bool)>,
}

fn active(status: &str) -> bool {
    status == "pending_payment" || status == "paid"
}

pub fn check(sales: &[SaleSpec], history: &[Operation], records: &Records) -> Vec<String> {
    let mut violations = Vec::new();
    let by_id: HashMap<&str, &Listed> = records
        .orders
        .iter()
        .map(|order| (order.id.as_str(), order))
        .collect();
    if by_id.len() != records.orders.len() {
        violations.push("the listing names an order twice".to_owned());
    }
    // 7. No server error but 503 (a node or a backend was away).
    for operation in history {
        if let Some(status) = operation.answer.status() {
            if status >= 500 && status != 503 {
                violations.push(format!(
                    "{} {:?} on node {} answered {status}: {:?}",
                    operation.buyer,
                    operation.action,
                    operation.node,
                    operation.answer.body()
                ));
            }
        }
    }
    for sale in sales {
        let held: u64 = records
            .orders
            .iter()
            .filter(|order| order.sale_id == sale.id && active(&order.status))
            .map(|order| u64::from(order.quantity))
            .sum();
        // 1. Stock conserved, in every node's view (the gate and the store).
        for (node, audit) in records
            .audits
            .get(&sale.id)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if !audit.consistent
                || audit.stock != sale.stock
                || audit.remaining + audit.pending + audit.paid != sale.stock
            {
                violations.push(format!(
                    "sale {}: node {node}'s audit does not balance: {audit:?}",
                    sale.id
                ));
            }
            // 2. No unit sold twice: the orders hold exactly what the audit says is taken.
            if audit.pending + audit.paid != held {
                violations.push(format!(
                    "sale {}: node {node}'s audit holds {} units, its active orders {held}",
                    sale.id,
                    audit.pending + audit.paid
                ));
            }
        }
        if held > sale.stock {
            violations.push(format!(
                "sale {}: {held} units held of a stock of {}",
                sale.id, sale.stock
            ));
        }
        // 4. Every cancelled or expired unit came back once: all of it can be bought again.
        if let (Some((bought, refused_after)), Some(audit)) = (
            records.bought_back.get(&sale.id),
            records
                .audits
                .get(&sale.id)
                .and_then(|audits| audits.first()),
        ) {
            if *bought != audit.remaining || !refused_after {
                violations.push(format!(
                    "sale {}: {} units were free but {bought} sold again (then sold out: {refused_after})",
                    sale.id, audit.remaining
                ));
            }
        }
        // 6. No buyer over the limit.
        let mut per_buyer: HashMap<&str, u64> = HashMap::new();
        for order in records
            .orders
            .iter()
            .filter(|order| order.sale_id == sale.id && active(&order.status))
        {
            *per_buyer.entry(order.user_id.as_str()).or_default() += u64::from(order.quantity);
        }
        for (buyer, units) in per_buyer {
            if units > u64::from(sale.per_user_limit) {
                violations.push(format!(
                    "sale {}: {buyer} holds {units} units, over the limit of {}",
                    sale.id, sale.per_user_limit
                ));
            }
        }
    }
    check_acknowledged(history, &by_id, &mut violations);
    check_keys(history, &mut violations);
    violations
}

/// 3. Every acknowledged order is there, with the status its last acknowledged change gave it.
fn check_acknowledged(
    history: &[Operation],
    by_id: &HashMap<&str, &Listed>,
    violations: &mut Vec<String>,
) {
    let mut paid: HashSet<&str> = HashSet::new();
    let mut cancelled: HashSet<&str> = HashSet::new();
    for operation in history {
        let Some(order_id) = operation.order_id() else {
            continue;
        };
        match by_id.get(order_id) {
            None => violations.push(format!(
                "order {order_id} was acknowledged to {} but the server does not list it",
                operation.buyer
            )),
            Some(order) if order.user_id != operation.buyer => violations.push(format!(
                "order {order_id} was acknowledged to {} but belongs to {}",
                operation.buyer, order.user_id
            )),
            Some(_) => {}
        }
        match &operation.action {
            Action::Pay { .. } => {
                paid.insert(order_id);
            }
            Action::Cancel { .. } => {
                cancelled.insert(order_id);
            }
            Action::Purchase { .. } => {}
        }
    }
    for order_id in &paid {
        if cancelled.contains(order_id) {
            violations.push(format!(
                "order {order_id} was acknowledged both paid and cancelled"
            ));
        }
        if let Some(order) = by_id.get(order_id) {
            if order.status != "paid" {
                violations.push(format!(
                    "order {order_id}: its payment was acknowledged, the server says {}",
                    order.status
                ));
            }
        }
    }
    for order_id in &cancelled {
        if let Some(order) = by_id.get(order_id) {
            if order.status != "cancelled" {
                violations.push(format!(
                    "order {order_id}: its cancel was acknowledged, the server says {}",
                    order.status
                ));
            }
        }
    }
    for (order_id, order) in by_id {
        if order.status == "pending_payment" {
            violations.push(format!(
                "order {order_id} is still pending after its payment window closed"
            ));
        }
    }
}

/// 5. Every reply to a winning key carries that key's first order.
fn check_keys(history: &[Operation], violations: &mut Vec<String>) {
    let mut orders_by_key: BTreeMap<(&str, &str, &str), HashSet<&str>> = BTreeMap::new();
    for operation in history {
        let Action::Purchase {
            sale_id,
            key: Some(key),
            ..
        } = &operation.action
        else {
            continue;
        };
        if let Answer::Reply {
            status: 200 | 201,
            body,
        } = &operation.answer
        {
            if let Some(order_id) = body["id"].as_str() {
                orders_by_key
                    .entry((operation.buyer.as_str(), sale_id.as_str(), key.as_str()))
                    .or_default()
                    .insert(order_id);
            }
        }
    }
    for ((buyer, sale_id, key), orders) in orders_by_key {
        if orders.len() > 1 {
            violations.push(format!(
                "sale {sale_id}: {buyer}'s key {key} was answered with {} different orders: {orders:?}",
                orders.len()
            ));
        }
    }
    // A winning key retried after its win was known must not be refused as if it had never won.
    // (A double-click decided before its twin won may be refused: the server saw it first.)
    let mut won_at: HashMap<(&str, &str, &str), u64> = HashMap::new();
    for operation in history {
        if let (
            Action::Purchase {
                key: Some(key),
                sale_id,
                ..
            },
            Some(200 | 201),
        ) = (&operation.action, operation.answer.status())
        {
            let at = won_at
                .entry((operation.buyer.as_str(), sale_id.as_str(), key.as_str()))
                .or_insert(operation.answered_ms);
            *at = (*at).min(operation.answered_ms);
        }
    }
    for operation in history {
        let Action::Purchase {
            key: Some(key),
            sale_id,
            ..
        } = &operation.action
        else {
            continue;
        };
        let won = won_at.get(&(operation.buyer.as_str(), sale_id.as_str(), key.as_str()));
        if operation.answer.status() == Some(409) && won.is_some_and(|at| operation.sent_ms > *at) {
            violations.push(format!(
                "sale {sale_id}: {}'s key {key} won, then a retry sent {} ms later was refused: {}",
                operation.buyer,
                operation.sent_ms - won.copied().unwrap_or(0),
                operation.answer.code()
            ));
        }
    }
}
