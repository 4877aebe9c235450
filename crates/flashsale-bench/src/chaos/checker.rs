//! The checker: from the history of what the crowd was told and the server's own records after
//! the run, every promise of the contract, checked. Each violation names the order, the sale,
//! what was expected and what was found.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

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
    #[serde(default)]
    pub refunded_at: Option<String>,
    #[serde(default)]
    pub payment: Option<ListedPayment>,
}

/// An order's payment as the server lists it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ListedPayment {
    pub intent_id: String,
    pub status: String,
}

impl Listed {
    /// Whether its payment is settled: no refund owed, no open intent on a closed order.
    pub fn payment_settled(&self) -> bool {
        match &self.payment {
            None => true,
            Some(payment) => {
                let open_on_a_closed_order = payment.status == "open" && !active(&self.status);
                payment.status != "refund_pending" && !open_on_a_closed_order
            }
        }
    }
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
    /// Payments through localstripe: its every intent with its refunds (none: simulated).
    pub payments: Option<Vec<(Value, Vec<Value>)>>,
    /// Each order's event types in the feed, in order.
    pub events: HashMap<String, Vec<String>>,
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
    if let Some(payments) = &records.payments {
        check_money(sales, payments, &by_id, &mut violations);
    }
    check_feed(&records.orders, &records.events, &mut violations);
    violations
}

/// Check 8, the money: what localstripe took less what it refunded is the price of the paid
/// orders; every payment has exactly one outcome (its order paid by it, or the money back once,
/// in full), and no order's payment is left unsettled.
fn check_money(
    sales: &[SaleSpec],
    payments: &[(Value, Vec<Value>)],
    by_id: &HashMap<&str, &Listed>,
    violations: &mut Vec<String>,
) {
    let price: HashMap<&str, u64> = sales
        .iter()
        .map(|sale| (sale.id.as_str(), sale.price_cents))
        .collect();
    let amount_of = |order: &Listed| {
        price.get(order.sale_id.as_str()).copied().unwrap_or(0) * u64::from(order.quantity)
    };
    let mut taken = 0u64;
    let mut refunded = 0u64;
    let mut succeeded: HashMap<&str, u64> = HashMap::new();
    for (intent, refunds) in payments {
        let id = intent["id"].as_str().unwrap_or_default();
        let amount = intent["amount"].as_u64().unwrap_or(0);
        let refunds_amount: u64 = refunds
            .iter()
            .map(|refund| refund["amount"].as_u64().unwrap_or(0))
            .sum();
        refunded += refunds_amount;
        let order_id = intent["metadata"]["order_id"].as_str().unwrap_or_default();
        if refunds.len() > 1 {
            violations.push(format!(
                "intent {id} (order {order_id}) was refunded {} times",
                refunds.len()
            ));
        }
        if intent["status"] != "succeeded" {
            if !refunds.is_empty() {
                violations.push(format!("intent {id} took no money but was refunded"));
            }
            continue;
        }
        taken += amount;
        succeeded.insert(id, amount);
        let Some(order) = by_id.get(order_id) else {
            violations.push(format!(
                "intent {id} took money for order {order_id}, which the server does not list"
            ));
            continue;
        };
        let its_intent = order
            .payment
            .as_ref()
            .is_some_and(|payment| payment.intent_id == id);
        if order.status == "paid" && its_intent {
            if !refunds.is_empty() {
                violations.push(format!(
                    "order {order_id} is paid, yet its money was refunded"
                ));
            }
        } else if refunds_amount != amount || order.refunded_at.is_none() || !its_intent {
            violations.push(format!(
                "intent {id} took {amount} for order {order_id} ({}), and {refunds_amount} went back (refunded_at {:?}, the order's intent: {its_intent})",
                order.status, order.refunded_at
            ));
        }
    }
    let expected: u64 = by_id
        .values()
        .filter(|order| order.status == "paid")
        .map(|order| amount_of(order))
        .sum();
    if taken.checked_sub(refunded) != Some(expected) {
        violations.push(format!(
            "money taken {taken} − refunded {refunded} ≠ {expected}, the price of the paid orders"
        ));
    }
    for order in by_id.values() {
        if order.status == "paid" {
            let intent = order
                .payment
                .as_ref()
                .map(|payment| payment.intent_id.as_str());
            match intent.and_then(|intent| succeeded.get(intent)) {
                Some(amount) if *amount == amount_of(order) => {}
                other => violations.push(format!(
                    "order {} is paid, but its intent {intent:?} took {other:?} (price {})",
                    order.id,
                    amount_of(order)
                )),
            }
        }
        if !order.payment_settled() {
            violations.push(format!(
                "order {} ({}) has an unsettled payment after the run: {:?}",
                order.id, order.status, order.payment
            ));
        }
    }
}

/// Check 9, the event feed tells the same story: a paid order's `paid` once, a refund's
/// `refunded` once, nothing of either for an order that never had them.
fn check_feed(
    orders: &[Listed],
    events: &HashMap<String, Vec<String>>,
    violations: &mut Vec<String>,
) {
    let empty = Vec::new();
    for order in orders {
        let told = events.get(&order.id).unwrap_or(&empty);
        let count = |kind: &str| told.iter().filter(|event| event.ends_with(kind)).count();
        let was_paid = order.status == "paid" || order.status == "refunded";
        let expected = [
            ("order.created", 1),
            ("order.paid", usize::from(was_paid)),
            ("order.refunded", usize::from(order.refunded_at.is_some())),
        ];
        for (kind, times) in expected {
            if count(kind) != times {
                violations.push(format!(
                    "order {} ({}): the feed tells {kind} {} times, not {times}: {told:?}",
                    order.id,
                    order.status,
                    count(kind)
                ));
            }
        }
    }
}

/// 3. Every acknowledged order is there, with the status its last acknowledged change gave it.
fn check_acknowledged(
    history: &[Operation],
    by_id: &HashMap<&str, &Listed>,
    violations: &mut Vec<String>,
) {
    let mut paid: HashSet<&str> = HashSet::new();
    let mut cancelled: HashSet<&str> = HashSet::new();
    let mut refunded: HashSet<&str> = HashSet::new();
    // Refunds asked for, whatever came back (one whose answer was lost may have happened).
    let mut refund_asked: HashSet<&str> = HashSet::new();
    for operation in history {
        if let Action::Refund { order_id } = &operation.action {
            refund_asked.insert(order_id.as_str());
        }
        let Some(order_id) = operation.order_id() else {
            continue;
        };
        match by_id.get(order_id) {
            None => violations.push(format!(
                "order {order_id} was acknowledged to {} but the server does not list it",
                operation.buyer
            )),
            Some(order)
                if order.user_id != operation.buyer
                    && !matches!(operation.action, Action::Refund { .. }) =>
            {
                violations.push(format!(
                    "order {order_id} was acknowledged to {} but belongs to {}",
                    operation.buyer, order.user_id
                ))
            }
            Some(_) => {}
        }
        // A `pay` acknowledges the payment only when it answers `paid` (with a provider that
        // waits for the card, it answers the pending order and its intent).
        let answered_paid = operation
            .answer
            .body()
            .is_some_and(|body| body["status"] == "paid");
        match &operation.action {
            Action::Pay { .. } | Action::PayWith { .. } if answered_paid => {
                paid.insert(order_id);
            }
            Action::Cancel { .. } => {
                cancelled.insert(order_id);
            }
            Action::Refund { .. } => {
                refunded.insert(order_id);
            }
            _ => {}
        }
    }
    for order_id in &paid {
        if cancelled.contains(order_id) {
            violations.push(format!(
                "order {order_id} was acknowledged both paid and cancelled"
            ));
        }
        if let Some(order) = by_id.get(order_id) {
            let refund = order.status == "refunded" && refund_asked.contains(order_id);
            if order.status != "paid" && !refund {
                violations.push(format!(
                    "order {order_id}: its payment was acknowledged, the server says {}",
                    order.status
                ));
            }
        }
    }
    for order_id in &refunded {
        if let Some(order) = by_id.get(order_id) {
            if order.status != "refunded" {
                violations.push(format!(
                    "order {order_id}: its refund was acknowledged, the server says {}",
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
