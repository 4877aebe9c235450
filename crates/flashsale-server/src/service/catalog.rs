//! The sales a node knows, each at the newest version it has seen: every purchase reads them from
//! here, not from a store. A private node made and changed every sale itself; a node of a cluster
//! also learns the sales other nodes made or changed, from the store (it reloads when the gate's
//! revision of the sales moves: `Service::follow_sales`). What must hold the instant a change is
//! answered (a pause, an end, the stock) the gate decides, whatever a node's copy says.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::error::ServiceError;
use crate::domain::{Sale, SaleId};
use crate::hashing::FastMap;
use crate::store::OrderStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogPolicy {
    /// Every sale was made by this process: a miss is an unknown sale.
    Complete,
    /// Other nodes make sales too: a miss reloads from the store (one reload at a time), and a
    /// listing reloads at most every `LISTING_FRESHNESS`.
    Shared,
}

/// How stale a cluster node's list of sales may be: a sale another node made shows in this
/// node's listing within this long (a purchase or read of it by id finds it at once).
const LISTING_FRESHNESS: Duration = Duration::from_secs(1);

pub struct Catalog {
    policy: CatalogPolicy,
    sales: RwLock<FastMap<SaleId, Arc<Sale>>>,
    /// When the last reload from the store started.
    loaded: Mutex<Option<Instant>>,
    reload: tokio::sync::Mutex<()>,
}

impl Catalog {
    pub fn new(policy: CatalogPolicy) -> Self {
        Self {
            policy,
            sales: RwLock::new(FastMap::default()),
            loaded: Mutex::new(None),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    /// Keeps `sale` unless a newer version of it is known; returns the version kept.
    pub fn remember(&self, sale: Sale) -> Arc<Sale> {
        let mut sales = self
            .sales
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match sales.get(&sale.id) {
            Some(known) if known.version >= sale.version => Arc::clone(known),
            _ => {
                let sale = Arc::new(sale);
                sales.insert(sale.id.clone(), Arc::clone(&sale));
                sale
            }
        }
    }

    pub fn policy(&self) -> CatalogPolicy {
        self.policy
    }

    fn cached(&self, sale_id: &str) -> Option<Arc<Sale>> {
        self.sales
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(sale_id)
            .cloned()
    }

    fn loaded_at(&self) -> Option<Instant> {
        *self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reloads every sale from the store. Reloads never overlap, and callers that arrive while
    /// one runs share the next: a crowd asking for a sale this node does not know (or for
    /// made-up ids) costs the store one query at a time.
    async fn reload(&self, store: &dyn OrderStore) -> Result<(), ServiceError> {
        let asked_at = Instant::now();
        let _one_at_a_time = self.reload.lock().await;
        if self.loaded_at().is_some_and(|started| started >= asked_at) {
            return Ok(());
        }
        let started = Instant::now();
        for sale in store.sales().await? {
            self.remember(sale);
        }
        *self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(started);
        Ok(())
    }

    /// Reloads every sale because one changed (the follower's reload): it does not count as the
    /// listing's, which keeps its own freshness (`LISTING_FRESHNESS`) as it had before nodes
    /// followed changes.
    pub async fn refresh(&self, store: &dyn OrderStore) -> Result<(), ServiceError> {
        let _one_at_a_time = self.reload.lock().await;
        for sale in store.sales().await? {
            self.remember(sale);
        }
        Ok(())
    }

    /// The sale with this id (from a path: any text).
    pub async fn sale(
        &self,
        store: &dyn OrderStore,
        sale_id: &str,
    ) -> Result<Arc<Sale>, ServiceError> {
        // Looked up by the text it came as: every purchase asks, and a known id needs no copy.
        if let Some(sale) = self.cached(sale_id) {
            return Ok(sale);
        }
        let sale_id = SaleId::parse(sale_id).ok_or(ServiceError::SaleNotFound)?;
        if self.policy == CatalogPolicy::Shared {
            self.reload(store).await?;
            if let Some(sale) = self.cached(sale_id.as_str()) {
                return Ok(sale);
            }
        }
        Err(ServiceError::SaleNotFound)
    }

    /// Every sale, newest first.
    pub async fn all(&self, store: &dyn OrderStore) -> Result<Vec<Arc<Sale>>, ServiceError> {
        let stale = self
            .loaded_at()
            .is_none_or(|loaded| loaded.elapsed() > LISTING_FRESHNESS);
        if self.policy == CatalogPolicy::Shared && stale {
            self.reload(store).await?;
        }
        let mut sales: Vec<Arc<Sale>> = self
            .sales
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect();
        sales.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(sales)
    }
}
