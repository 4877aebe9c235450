//! The operator of a chaos run: while the crowd buys, at seeded moments, it pauses a sale for a
//! moment and resumes it, or tops its stock up by a few units, on a node of its choosing (a
//! node that a fault has just killed answers nothing: such a change may or may not have
//! happened, and the checker allows for both). It ends by resuming every sale, so the final
//! phase can buy what remains.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::admin;
use super::crowd::SaleSpec;
use crate::SplitMix64;

/// What the operator did to one sale.
#[derive(Clone, Debug, Default)]
pub struct Operated {
    pub pauses: u64,
    /// Top-ups answered `200`: certainly added.
    pub added_acknowledged: u64,
    /// Every top-up sent (some may have been added without an answer).
    pub added_sent: u64,
    pub top_ups: u64,
}

pub struct Operator {
    pub nodes: Vec<SocketAddr>,
    pub admin_token: String,
    /// The sales it changes (not the one that ends mid-run: its end is the other kind of close).
    pub sales: Vec<SaleSpec>,
    pub deadline: Instant,
}

impl Operator {
    fn node(&self, random: &mut SplitMix64) -> SocketAddr {
        self.nodes[random.below(self.nodes.len() as u64) as usize]
    }

    async fn control(&self, node: SocketAddr, sale: &SaleSpec, action: &str) -> bool {
        let path = format!("/api/v1/sales/{}/{action}", sale.id);
        admin(node, &self.admin_token, "POST", &path, None)
            .await
            .status()
            == Some(200)
    }

    /// Resumes a sale, trying nodes in turn until one answers (faults end well within this).
    async fn resume(&self, random: &mut SplitMix64, sale: &SaleSpec) -> bool {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if self.control(self.node(random), sale, "resume").await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Changes the sales until the deadline; returns what it did per sale, and the sales it
    /// could not resume at the end.
    pub async fn run(self, seed: u64) -> (BTreeMap<String, Operated>, Vec<String>) {
        let mut random = SplitMix64::new(seed ^ 0x6f70_6572_6174_6f72);
        let mut operated: BTreeMap<String, Operated> = BTreeMap::new();
        let last_change = self.deadline - Duration::from_millis(300);
        loop {
            let wait = Duration::from_millis(150 + random.below(450));
            if Instant::now() + wait >= last_change || self.sales.is_empty() {
                break;
            }
            tokio::time::sleep(wait).await;
            let sale = &self.sales[random.below(self.sales.len() as u64) as usize];
            let done = operated.entry(sale.id.clone()).or_default();
            if random.below(2) == 0 {
                if self.control(self.node(&mut random), sale, "pause").await {
                    done.pauses += 1;
                }
                tokio::time::sleep(Duration::from_millis(100 + random.below(300))).await;
                self.resume(&mut random, sale).await;
            } else {
                let units = 1 + random.below(3);
                let path = format!("/api/v1/sales/{}", sale.id);
                let answer = admin(
                    self.node(&mut random),
                    &self.admin_token,
                    "PATCH",
                    &path,
                    Some(json!({ "add_stock": units })),
                )
                .await;
                done.top_ups += 1;
                done.added_sent += units;
                if answer.status() == Some(200) {
                    done.added_acknowledged += units;
                }
            }
        }
        let mut paused = Vec::new();
        for sale in &self.sales {
            if !self.resume(&mut random, sale).await {
                paused.push(sale.id.clone());
            }
        }
        (operated, paused)
    }
}
