//! An operator's changes of a running sale, and how every node follows them.
//!
//! A change goes in three steps, each of them repeatable, in a task of its own (an operator who
//! hangs up cannot leave it half done):
//!
//! 1. `StockGate::begin_change` from the version the store holds: the gate's compare-and-set on
//!    the version is where concurrent changes (on any node) are put in order, and from its reply
//!    on the gate refuses what the change forbids (a pause, an end, units taken off sale);
//! 2. `OrderStore::change_sale` records the new version (the one store method every change goes
//!    through, where its event is recorded with it);
//! 3. `StockGate::finish_change` puts added units on sale, once the store counts them (the store
//!    may never count fewer units than the gate sells), and the gate's revision of the sales moves
//!    so that every node reloads its catalog.
//!
//! A node that dies between the steps leaves the change pending in the gate: the next change of
//! the sale, or any node's follower (`follow_sales`), finishes it from the gate's record.

use std::sync::Arc;
use std::time::Duration;

use super::catalog::{Catalog, CatalogPolicy};
use super::error::ServiceError;
use super::{SaleView, Service};
use crate::clock::Clock;
use crate::domain::{Sale, SaleChange, SaleId, SaleRevision};
use crate::gate::{ChangeStep, StockGate};
use crate::store::{ChangeError, OrderStore};

/// Changes that may overtake this one before it gives up (each retry reads the sale again).
const CHANGE_ATTEMPTS: usize = 8;
/// How long to let another node's change finish before looking again.
const OVERTAKEN_PAUSE: Duration = Duration::from_millis(20);

/// What a change needs, cheap to move into its task.
#[derive(Clone)]
struct Changer {
    gate: Arc<dyn StockGate>,
    store: Arc<dyn OrderStore>,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
}

impl From<ChangeError> for ServiceError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::NotFound => Self::SaleNotFound,
            ChangeError::Conflict { stored } => Self::Unavailable(format!(
                "the store holds version {stored} of the sale, behind the gate's; \
                 `flashsale reconcile --repair` rebuilds the gate from the store"
            )),
            ChangeError::Store(error) => error.into(),
        }
    }
}

impl Changer {
    async fn change(&self, sale_id: &SaleId, change: &SaleChange) -> Result<Sale, ServiceError> {
        for _ in 0..CHANGE_ATTEMPTS {
            let base = self
                .store
                .sale(sale_id)
                .await?
                .ok_or(ServiceError::SaleNotFound)?;
            let now = self.clock.now();
            let Some(revision) = change.apply(&base, now)? else {
                return Ok(base);
            };
            if change.removes_beyond_stock(&base) {
                let remaining = self.gate.remaining(sale_id).await?.unwrap_or(0);
                return Err(ServiceError::InsufficientStock { remaining });
            }
            match self.gate.begin_change(base.version, &revision, now).await? {
                ChangeStep::Applied => {}
                ChangeStep::InsufficientStock { remaining } => {
                    return Err(ServiceError::InsufficientStock { remaining })
                }
                ChangeStep::Conflict { pending } => {
                    match pending {
                        // Another change began and has not been recorded: finish it first.
                        Some(pending) => self.settle(&pending).await?,
                        None => tokio::time::sleep(OVERTAKEN_PAUSE).await,
                    }
                    continue;
                }
            }
            self.settle(&revision).await?;
            return Ok(revision.sale);
        }
        Err(ServiceError::Unavailable(
            "the sale kept changing under this change; retry".into(),
        ))
    }

    /// Steps 2 and 3 of a change the gate began (see the module's comment).
    async fn settle(&self, revision: &SaleRevision) -> Result<(), ServiceError> {
        self.store.change_sale(revision).await?;
        self.gate
            .finish_change(&revision.sale, self.clock.now())
            .await?;
        self.catalog.remember(revision.sale.clone());
        if let Err(error) = self.gate.announce_sales_change().await {
            tracing::warn!(%error, "could not announce a sale's change to the other nodes");
        }
        Ok(())
    }
}

impl Service {
    fn changer(&self) -> Changer {
        Changer {
            gate: Arc::clone(&self.gate),
            store: Arc::clone(&self.store),
            catalog: Arc::clone(&self.catalog),
            clock: Arc::clone(&self.clock),
        }
    }

    /// Applies an operator's change (`PATCH`, pause, resume, end) and answers with the sale as it
    /// is afterwards (unchanged when the change changes nothing).
    pub async fn change_sale(
        &self,
        sale_id: &str,
        change: SaleChange,
    ) -> Result<SaleView, ServiceError> {
        let sale_id = SaleId::parse(sale_id).ok_or(ServiceError::SaleNotFound)?;
        let changer = self.changer();
        let sale = tokio::spawn(async move { changer.change(&sale_id, &change).await })
            .await
            .map_err(|error| ServiceError::Internal(error.to_string()))??;
        let sale = self.catalog.remember(sale);
        let remaining = self.gate.remaining(&sale.id).await?;
        Ok(self.view(sale, remaining))
    }

    /// One round of following the other nodes (a cluster node runs it a few times a second):
    /// reloads the catalog when the gate's revision of the sales moved since `seen`, and finishes
    /// changes another node began and did not finish. Returns the revision now seen.
    pub async fn follow_sales(&self, seen: Option<u64>) -> Result<Option<u64>, ServiceError> {
        if self.catalog.policy() == CatalogPolicy::Complete {
            return Ok(seen);
        }
        let changer = self.changer();
        for pending in self.gate.pending_changes().await? {
            changer.settle(&pending).await?;
        }
        let revision = self.gate.sales_revision().await?;
        if seen != Some(revision) {
            self.catalog.refresh(self.store.as_ref()).await?;
        }
        Ok(Some(revision))
    }
}
