//! The sales a node knows, each at the newest version it has seen: every purchase reads them from
//! here, not from a store. A private node made and changed every sale itself; a node of a cluster
//! also learns the sales other nodes made or changed, from the store (it reloads when the gate's
//! revision of the sales moves: `Service::follow_sales`). What must hold the instant a change is
//! answered (a pause, an end, the stock) the gate decides, whatever a node's copy says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::error::ServiceError;
use crate::domain::{Sale, SaleId};
use crate::hashing::FastMap;
use crate::store::{OrderStore, StoreError};
use crate::BoxFuture;

/// What the catalog reads of a store: one sale, or every sale. Every order store is one.
pub trait SaleSource: Send + Sync {
    fn load_sale<'a>(
        &'a self,
        sale_id: &'a SaleId,
    ) -> BoxFuture<'a, Result<Option<Sale>, StoreError>>;
    fn load_sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>>;
}

impl<T: OrderStore + ?Sized> SaleSource for T {
    fn load_sale<'a>(
        &'a self,
        sale_id: &'a SaleId,
    ) -> BoxFuture<'a, Result<Option<Sale>, StoreError>> {
        self.sale(sale_id)
    }

    fn load_sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>> {
        self.sales()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogPolicy {
    /// Every sale was made by this process: a miss is an unknown sale.
    Complete,
    /// Other nodes make sales too: a miss reads that one sale from the store (at most
    /// `MISS_LOOKUPS` at a time), and a listing reloads every sale at most every
    /// `LISTING_FRESHNESS`.
    Shared,
}

/// How many sales a node looks up at once for ids it does not know: a crowd asking for made-up
/// ids holds at most this many of the store's connections.
const MISS_LOOKUPS: usize = 4;

/// How stale a cluster node's list of sales may be: a sale another node made shows in this
/// node's listing within this long (a purchase or read of it by id finds it at once).
const LISTING_FRESHNESS: Duration = Duration::from_secs(1);

pub struct Catalog {
    policy: CatalogPolicy,
    sales: RwLock<FastMap<SaleId, Arc<Sale>>>,
    /// The same sales by id (so by creation), for listings: a page walks its own sales only.
    listed: RwLock<BTreeMap<SaleId, Arc<Sale>>>,
    /// The sales not yet seen past their listing (`Sale::is_current`): the storefront's listing
    /// walks these and drops those it finds past, so its cost follows the sales a buyer can
    /// still act on, not every sale ever made. A change puts a sale back.
    current: RwLock<BTreeSet<SaleId>>,
    /// When the last reload from the store started.
    loaded: Mutex<Option<Instant>>,
    reload: tokio::sync::Mutex<()>,
    lookups: tokio::sync::Semaphore,
}

impl Catalog {
    pub fn new(policy: CatalogPolicy) -> Self {
        Self {
            policy,
            sales: RwLock::new(FastMap::default()),
            listed: RwLock::new(BTreeMap::new()),
            current: RwLock::new(BTreeSet::new()),
            loaded: Mutex::new(None),
            reload: tokio::sync::Mutex::new(()),
            lookups: tokio::sync::Semaphore::new(MISS_LOOKUPS),
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
                write(&self.listed).insert(sale.id.clone(), Arc::clone(&sale));
                write(&self.current).insert(sale.id.clone());
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
    async fn reload<S: SaleSource + ?Sized>(&self, store: &S) -> Result<(), ServiceError> {
        let asked_at = Instant::now();
        let _one_at_a_time = self.reload.lock().await;
        if self.loaded_at().is_some_and(|started| started >= asked_at) {
            return Ok(());
        }
        let started = Instant::now();
        for sale in store.load_sales().await? {
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
    pub async fn refresh<S: SaleSource + ?Sized>(&self, store: &S) -> Result<(), ServiceError> {
        let _one_at_a_time = self.reload.lock().await;
        for sale in store.load_sales().await? {
            self.remember(sale);
        }
        Ok(())
    }

    /// The sale with this id (from a path: any text). A cluster node that does not know it reads
    /// that one sale from the store: what a miss costs does not grow with the sales there are.
    pub async fn sale<S: SaleSource + ?Sized>(
        &self,
        store: &S,
        sale_id: &str,
    ) -> Result<Arc<Sale>, ServiceError> {
        // Looked up by the text it came as: every purchase asks, and a known id needs no copy.
        if let Some(sale) = self.cached(sale_id) {
            return Ok(sale);
        }
        let sale_id = SaleId::parse(sale_id).ok_or(ServiceError::SaleNotFound)?;
        if self.policy == CatalogPolicy::Complete {
            return Err(ServiceError::SaleNotFound);
        }
        let _lookup = self
            .lookups
            .acquire()
            .await
            .map_err(|_| ServiceError::Internal("the catalog's lookups closed".into()))?;
        // Another caller may have found it while this one waited.
        if let Some(sale) = self.cached(sale_id.as_str()) {
            return Ok(sale);
        }
        match store.load_sale(&sale_id).await? {
            Some(sale) => Ok(self.remember(sale)),
            None => Err(ServiceError::SaleNotFound),
        }
    }

    /// The sales this node holds now, as they are: no reload (background work must not change
    /// how fresh a listing is).
    pub fn known(&self) -> Vec<Arc<Sale>> {
        self.sales
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// A listing's page: up to `limit` sales, newest first, made before `before` (a cursor) and,
    /// with `current_at`, only those still current then; and whether more follow.
    pub async fn page<S: SaleSource + ?Sized>(
        &self,
        store: &S,
        before: Option<&SaleId>,
        limit: usize,
        current_at: Option<Timestamp>,
    ) -> Result<(Vec<Arc<Sale>>, bool), ServiceError> {
        self.reload_if_stale(store).await?;
        let upper = before.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let range = (std::ops::Bound::Unbounded, upper);
        let mut page = Vec::new();
        let mut past = Vec::new();
        {
            let listed = read(&self.listed);
            match current_at {
                None => page.extend(
                    listed
                        .range::<SaleId, _>(range)
                        .rev()
                        .take(limit + 1)
                        .map(|(_, sale)| Arc::clone(sale)),
                ),
                Some(now) => {
                    for sale_id in read(&self.current).range::<SaleId, _>(range).rev() {
                        match listed.get(sale_id) {
                            Some(sale) if sale.is_current(now) => page.push(Arc::clone(sale)),
                            _ => past.push(sale_id.clone()),
                        }
                        if page.len() > limit {
                            break;
                        }
                    }
                }
            }
        }
        if let Some(now) = current_at.filter(|_| !past.is_empty()) {
            let listed = read(&self.listed);
            let mut current = write(&self.current);
            for sale_id in past {
                // Looked at again under the lock: a change may have put it back meanwhile.
                if listed
                    .get(&sale_id)
                    .is_none_or(|sale| !sale.is_current(now))
                {
                    current.remove(&sale_id);
                }
            }
        }
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    async fn reload_if_stale<S: SaleSource + ?Sized>(&self, store: &S) -> Result<(), ServiceError> {
        let stale = self
            .loaded_at()
            .is_none_or(|loaded| loaded.elapsed() > LISTING_FRESHNESS);
        if self.policy == CatalogPolicy::Shared && stale {
            self.reload(store).await?;
        }
        Ok(())
    }

    /// Every sale, newest first.
    pub async fn all<S: SaleSource + ?Sized>(
        &self,
        store: &S,
    ) -> Result<Vec<Arc<Sale>>, ServiceError> {
        self.reload_if_stale(store).await?;
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

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A store of many sales that counts what the catalog asks of it.
    struct CountingSource {
        sales: Vec<Sale>,
        one: AtomicUsize,
        every: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl CountingSource {
        fn of(count: usize) -> Self {
            Self {
                sales: (0..count).map(|_| Sale::of_stock_for_test(1)).collect(),
                one: AtomicUsize::new(0),
                every: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                most_in_flight: AtomicUsize::new(0),
            }
        }
    }

    impl SaleSource for CountingSource {
        fn load_sale<'a>(
            &'a self,
            sale_id: &'a SaleId,
        ) -> BoxFuture<'a, Result<Option<Sale>, StoreError>> {
            Box::pin(async move {
                self.one.fetch_add(1, Ordering::SeqCst);
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_in_flight.fetch_max(now, Ordering::SeqCst);
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(self.sales.iter().find(|sale| sale.id == *sale_id).cloned())
            })
        }

        fn load_sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>> {
            self.every.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(self.sales.clone()) })
        }
    }

    #[tokio::test]
    async fn a_miss_reads_the_one_sale_and_a_known_sale_reads_nothing() {
        let source = CountingSource::of(1000);
        let catalog = Catalog::new(CatalogPolicy::Shared);
        let wanted = source.sales[617].id.clone();
        let found = catalog.sale(&source, wanted.as_str()).await.unwrap();
        assert_eq!(found.id, wanted);
        assert_eq!(source.one.load(Ordering::SeqCst), 1);
        assert_eq!(source.every.load(Ordering::SeqCst), 0, "not every sale");
        catalog.sale(&source, wanted.as_str()).await.unwrap();
        assert_eq!(source.one.load(Ordering::SeqCst), 1, "known now: no read");
    }

    #[tokio::test]
    async fn an_unknown_id_is_not_found_after_one_read_and_a_private_node_reads_none() {
        let source = CountingSource::of(10);
        let made_up = SaleId::generate();
        let shared = Catalog::new(CatalogPolicy::Shared);
        let missed = shared.sale(&source, made_up.as_str()).await;
        assert!(
            matches!(missed, Err(ServiceError::SaleNotFound)),
            "{missed:?}"
        );
        assert_eq!(source.one.load(Ordering::SeqCst), 1);
        let not_an_id = shared.sale(&source, "not an id!").await;
        assert!(matches!(not_an_id, Err(ServiceError::SaleNotFound)));
        assert_eq!(
            source.one.load(Ordering::SeqCst),
            1,
            "a malformed id reads nothing"
        );
        let private = Catalog::new(CatalogPolicy::Complete);
        let missed = private.sale(&source, source.sales[3].id.as_str()).await;
        assert!(matches!(missed, Err(ServiceError::SaleNotFound)));
        assert_eq!(
            source.one.load(Ordering::SeqCst),
            1,
            "it made every sale it has"
        );
        assert_eq!(source.every.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crowd_of_made_up_ids_holds_a_few_lookups_at_a_time() {
        let source = Arc::new(CountingSource::of(10));
        let catalog = Arc::new(Catalog::new(CatalogPolicy::Shared));
        let asks: Vec<_> = (0..64)
            .map(|_| {
                let (source, catalog) = (Arc::clone(&source), Arc::clone(&catalog));
                tokio::spawn(async move {
                    let made_up = SaleId::generate();
                    catalog
                        .sale(source.as_ref(), made_up.as_str())
                        .await
                        .is_err()
                })
            })
            .collect();
        for ask in asks {
            assert!(ask.await.unwrap(), "a made-up id is not found");
        }
        assert_eq!(source.one.load(Ordering::SeqCst), 64);
        let most = source.most_in_flight.load(Ordering::SeqCst);
        assert!((1..=MISS_LOOKUPS).contains(&most), "{most} lookups at once");
    }

    fn ended_long_ago(sale: &Sale, now: Timestamp) -> Sale {
        let mut ended = sale.clone();
        ended.ends_at = Some(now - jiff::SignedDuration::from_hours(48));
        ended.version += 1;
        ended
    }

    #[tokio::test]
    async fn the_current_listing_walks_the_current_sales_only_and_pages_by_cursor() {
        let source = CountingSource::of(0);
        let catalog = Catalog::new(CatalogPolicy::Complete);
        let now = Timestamp::now();
        let mut live = Vec::new();
        for made in 0..1_000 {
            let sale = Sale::of_stock_for_test(1);
            if made % 250 == 0 {
                live.push(catalog.remember(sale).id.clone());
            } else {
                catalog.remember(ended_long_ago(&sale, now));
            }
        }
        live.sort();
        live.reverse();
        let (page, more) = catalog.page(&source, None, 100, Some(now)).await.unwrap();
        let ids: Vec<SaleId> = page.iter().map(|sale| sale.id.clone()).collect();
        assert_eq!(ids, live, "the live sales, newest first");
        assert!(!more);
        assert_eq!(
            read(&catalog.current).len(),
            4,
            "the past ones were dropped"
        );
        let (first, more) = catalog.page(&source, None, 2, Some(now)).await.unwrap();
        assert!(more);
        let (second, more) = catalog
            .page(&source, Some(&first[1].id), 2, Some(now))
            .await
            .unwrap();
        assert!(!more);
        let paged: Vec<SaleId> = first.iter().chain(&second).map(|s| s.id.clone()).collect();
        assert_eq!(paged, live);
        // Every sale is still listed, and a change that reopens one puts it back.
        let (every, more) = catalog.page(&source, None, 2_000, None).await.unwrap();
        assert_eq!((every.len(), more), (1_000, false));
        let mut reopened = Sale::clone(&every[1]);
        reopened.ends_at = None;
        reopened.version += 1;
        let reopened = catalog.remember(reopened).id.clone();
        let (page, _) = catalog.page(&source, None, 100, Some(now)).await.unwrap();
        assert!(page.iter().any(|sale| sale.id == reopened));
        assert_eq!(source.every.load(Ordering::SeqCst), 0);
    }
}
