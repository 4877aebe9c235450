//! Reconciliation: compares, per sale, the gate in Redis with the orders in PostgreSQL and the
//! queue between them; `repair` rebuilds a sale's gate from PostgreSQL (plus what is still
//! queued) when they disagree, e.g. after Redis lost its data. A holding whose order exists
//! nowhere is dropped by the rebuild, which returns its stock.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::Cluster;
use crate::domain::{Order, Sale};
use crate::gate::{GateRecords, StockGate};
use crate::store::{OrderStore, StoreError};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SaleReconciliation {
    pub sale_id: String,
    pub stock: u64,
    /// `None` when Redis does not know the sale (it lost its data).
    pub redis_remaining: Option<u64>,
    /// Units held by the holdings Redis keeps.
    pub redis_held: u64,
    pub postgres_remaining: u64,
    pub postgres_pending: u64,
    pub postgres_paid: u64,
    /// Units of acknowledged orders still queued for PostgreSQL.
    pub queued: u64,
    /// Active orders (in PostgreSQL or queued) without a holding in Redis.
    pub missing_holdings: Vec<String>,
    /// Holdings in Redis whose order is not active anywhere.
    pub orphan_holdings: Vec<String>,
    /// Acknowledged orders PostgreSQL's constraints refused (see the refused_orders table).
    pub refused_orders: u64,
    /// Ended, settled and archived: Redis keeps nothing of it, PostgreSQL alone answers.
    pub archived: bool,
    pub consistent: bool,
    pub repaired: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gate(#[from] crate::gate::GateError),
    #[error(transparent)]
    Queue(#[from] crate::redis::QueueError),
}

/// The reports as the table `flashsale reconcile` prints: one line per sale and its verdict.
pub fn table(reports: &[SaleReconciliation]) -> String {
    use std::fmt::Write;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} verdict",
        "sale", "stock", "redis", "held", "pg_left", "pg_held", "queued", "missing", "orphan",
    );
    for report in reports {
        let redis = match report.redis_remaining {
            Some(remaining) => remaining.to_string(),
            None if report.archived => "archived".to_owned(),
            None => "lost".to_owned(),
        };
        let verdict = match (report.consistent, report.repaired) {
            (true, true) => "repaired",
            (true, false) => "ok",
            (false, _) => "DISAGREE",
        };
        let _ = writeln!(
            table,
            "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {verdict}",
            report.sale_id,
            report.stock,
            redis,
            report.redis_held,
            report.postgres_remaining,
            report.postgres_pending + report.postgres_paid,
            report.queued,
            report.missing_holdings.len(),
            report.orphan_holdings.len(),
        );
    }
    table
}

/// Compares every sale, repairing those whose gate disagrees when `repair` is set.
pub async fn reconcile(
    cluster: &Cluster,
    repair: bool,
) -> Result<Vec<SaleReconciliation>, ReconcileError> {
    let mut reports = Vec::new();
    for sale in cluster.postgres.sales().await? {
        let mut report = check(cluster, &sale).await?;
        // A purchase or a persist racing with the rebuild can leave a difference: look again.
        let mut attempts = 0;
        // An archived sale has no gate to rebuild.
        while repair && !report.consistent && !report.archived && attempts < 3 {
            attempts += 1;
            rebuild(cluster, &sale, &report.orphan_holdings).await?;
            report = check(cluster, &sale).await?;
            report.repaired = true;
        }
        reports.push(report);
    }
    Ok(reports)
}

async fn check(cluster: &Cluster, sale: &Sale) -> Result<SaleReconciliation, ReconcileError> {
    // Holdings first, then the queue, then PostgreSQL: an order leaves the queue only after its
    // commit, so an order whose holding was seen is found in one of the later reads.
    let remaining = cluster.gate.remaining(&sale.id).await?;
    let holdings = cluster.queue.holdings(&sale.id).await?;
    let queued = cluster.queue.unpersisted(&sale.id).await?;
    let mut active = cluster.postgres.active_orders(&sale.id).await?;
    let stored = cluster
        .postgres
        .stored_ids(&queued.iter().map(|o| o.id.as_str()).collect::<Vec<_>>())
        .await?;
    let not_written: Vec<Order> = queued
        .into_iter()
        .filter(|order| !stored.contains(order.id.as_str()))
        .collect();
    let queued_units: u64 = not_written
        .iter()
        .map(|order| u64::from(order.quantity))
        .sum();
    // Active orders: PostgreSQL's, and the queued ones not written yet.
    active.extend(not_written);
    let tally = cluster.postgres.tally(&sale.id).await?;
    let refused_orders = cluster.postgres.refused_count(&sale.id).await?;
    let active_ids: HashMap<&str, u64> = active
        .iter()
        .map(|order| (order.id.as_str(), u64::from(order.quantity)))
        .collect();
    let missing_holdings: Vec<String> = active_ids
        .keys()
        .filter(|id| !holdings.contains_key(**id))
        .map(|id| (*id).to_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let orphan_holdings: Vec<String> = holdings
        .keys()
        .filter(|id| !active_ids.contains_key(id.as_str()))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let redis_held: u64 = holdings.values().sum();
    let balanced =
        tally.remaining + tally.pending + tally.paid == sale.stock && refused_orders == 0;
    let (consistent, missing_holdings) = if tally.archived {
        // Redis keeps nothing of it: its paid orders have no holdings, rightly.
        let consistent = balanced
            && remaining.is_none()
            && holdings.is_empty()
            && queued_units == 0
            && tally.pending == 0;
        (consistent, Vec::new())
    } else {
        let consistent = balanced
            && remaining.is_some_and(|remaining| remaining + redis_held == sale.stock)
            && missing_holdings.is_empty()
            && orphan_holdings.is_empty();
        (consistent, missing_holdings)
    };
    Ok(SaleReconciliation {
        sale_id: sale.id.to_string(),
        stock: sale.stock,
        redis_remaining: remaining,
        redis_held,
        postgres_remaining: tally.remaining,
        postgres_pending: tally.pending,
        postgres_paid: tally.paid,
        queued: queued_units,
        missing_holdings,
        orphan_holdings,
        refused_orders,
        archived: tally.archived,
        consistent,
        repaired: false,
    })
}

/// Rebuilds a sale's gate from PostgreSQL and the queue. Holdings Redis has beyond those are
/// kept (an order persisted while this ran), except the `orphans` the check found: holdings
/// whose order is active nowhere, whose stock comes back.
async fn rebuild(cluster: &Cluster, sale: &Sale, orphans: &[String]) -> Result<(), ReconcileError> {
    let orders = cluster.store.orders_for_gate(&sale.id).await?;
    let records = GateRecords::of_orders(&orders);
    tracing::warn!(sale_id = %sale.id, holdings = records.holdings.len(), orphans = orphans.len(),
        "rebuilding the sale's gate in Redis from PostgreSQL and the queue");
    cluster.gate.repair_sale(sale, &records, orphans).await?;
    Ok(())
}
