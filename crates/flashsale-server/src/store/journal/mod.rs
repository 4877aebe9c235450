//! The embedded order store: every sale and order in memory, and an append-only journal in the
//! data directory (`orders.journal`) as the durable record. One writer thread applies queued
//! writes in batches, appends each batch's changed records with one sequential write, and syncs
//! it once before any reply (group commit): a `201` means the order is on disk, through
//! `kill -9` and power loss. Reads are answered from memory, after the batch they saw is synced.
//! At start the journal is replayed (a torn tail cut off) and rewritten without superseded
//! records when they outnumber the live ones; a data directory of an earlier version, holding
//! `flashsale.db`, is moved into a new journal once.
//!
//! Why not SQLite's B-tree: buyers arrive in random order, so each order dirtied a random index
//! page and a commit of 1,000 orders wrote about 1,000 pages; here it writes ~150 KB in one go.

mod book;
mod codec;
mod events;
mod space;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use tokio::sync::watch;

use self::book::{Book, Stored};
use self::codec::Record;
use self::space::{DirectoryLock, Journal, SpaceStatus};
use self::writer::Writer;
use super::commands::{CommandQueue, WriterThread};
use super::{
    ChangeError, EventHead, InsertError, OrderQuery, OrderStore, RecordedEvent, SaleTally,
    StoreError, Transition, TransitionError,
};
use crate::domain::{Action, Actor, Order, OrderId, Sale, SaleId, SaleRevision, UserId};
use crate::metrics::Metrics;
use crate::record_file;
use crate::BoxFuture;

pub const JOURNAL_FILE: &str = "orders.journal";
/// Held (`flock`) by the process that has the journal open.
const LOCK_FILE: &str = "orders.lock";

#[derive(Clone, Debug)]
pub struct JournalStoreOptions {
    /// Most commands applied and synced in one batch.
    pub commit_batch_max: usize,
    /// Most commands waiting for the writer; beyond it purchases are shed with `overloaded`.
    pub write_queue_max: usize,
    /// How the writer gathers a batch.
    pub batching: WriterBatching,
    /// How long events are kept: compaction at start leaves older ones out.
    pub events_retention: std::time::Duration,
}

impl Default for JournalStoreOptions {
    fn default() -> Self {
        Self {
            commit_batch_max: 1024,
            write_queue_max: 65_536,
            batching: WriterBatching::ByScheduler,
            events_retention: std::time::Duration::from_secs(30 * 86_400),
        }
    }
}

/// How the journal's writer gathers the commands of one batch (see `writer.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterBatching {
    /// A `SCHED_BATCH` writer takes what arrived while it waited for the core; where the policy
    /// is refused, it waits for company instead (`ByWaiting`).
    ByScheduler,
    /// The writer keeps the default policy and waits for company in short steps while commands
    /// keep coming.
    ByWaiting,
}

/// How far the journal is synced: batches up to `through` are on disk, or writing failed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Durable {
    Through(u64),
    Failed(String),
}

/// What the writer and the readers share.
pub struct Shared {
    book: RwLock<Book>,
    /// Batches applied to the book (changed under the book's write lock).
    applied: AtomicU64,
    durable: watch::Sender<Durable>,
}

impl Shared {
    fn durable_through(&self, sequence: u64) {
        self.durable.send_replace(Durable::Through(sequence));
    }

    fn fail(&self, message: &str) {
        self.durable
            .send_replace(Durable::Failed(message.to_owned()));
    }

    /// Answers from the book, once the batches the answer saw are on disk.
    async fn read<T>(&self, query: impl FnOnce(&Book) -> T) -> Result<T, StoreError> {
        let (answer, seen) = {
            let book = self.book.read().unwrap_or_else(|p| p.into_inner());
            (query(&book), self.applied.load(Ordering::Acquire))
        };
        let mut durable = self.durable.subscribe();
        let synced = durable
            .wait_for(|durable| match durable {
                Durable::Through(through) => *through >= seen,
                Durable::Failed(_) => true,
            })
            .await
            .map_err(|_| StoreError::Closed)?
            .clone();
        match synced {
            Durable::Through(_) => Ok(answer),
            Durable::Failed(message) => Err(StoreError::Failed(message)),
        }
    }
}

pub struct JournalStore {
    commands: CommandQueue,
    shared: Arc<Shared>,
    /// Whether writes are refused for lack of disk space (readiness says so, and why).
    space: SpaceStatus,
    /// Last: dropping the store drops `commands` first, so the writer ends, and then waits for
    /// it (it gives back the journal's reserve as it goes).
    writer_thread: WriterThread,
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Unreadable(#[from] codec::Unreadable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the journal at `path` into a book; returns the book, the file, where its records end
/// and how many records it holds.
fn replay(path: &Path) -> Result<(Book, std::fs::File, u64, usize), OpenError> {
    let mut book = Book::default();
    let mut records = 0;
    let (file, end) = record_file::replay::<OpenError>(path, |kind, payload| {
        records += 1;
        match codec::read(kind, payload)? {
            Record::Sale(sale) => book.put_sale(*sale),
            Record::Order(stored) => book.put_order(*stored),
            Record::OrderChange(stored, facts) => {
                let (sale_id, order_id) = (stored.order.sale_id.clone(), stored.order.id.clone());
                book.put_order(*stored);
                for facts in &facts {
                    match facts.kind {
                        crate::domain::EventKind::Order(_) => {
                            book.restore_order_event(&sale_id, &order_id, facts)
                        }
                        crate::domain::EventKind::Sale(_) => {
                            book.restore_sale_event(&sale_id, facts, None)
                        }
                    }
                }
            }
            Record::SaleChange(sale, facts) => book.restore_sale_change(*sale, &facts),
            Record::PastOrderEvent(sale_id, order_id, facts) => {
                book.restore_order_event(&sale_id, &order_id, &facts)
            }
            Record::PastSaleEvent(sale, facts) => {
                let sale_id = sale.id.clone();
                book.restore_sale_event(&sale_id, &facts, Some(*sale));
            }
            Record::EventCounter(sale_id, last) => book.restore_event_counter(&sale_id, last),
            Record::EventsPruned(before) => {
                book.prune_events(before);
            }
        }
        Ok(())
    })?;
    Ok((book, file, end, records))
}

/// Every sale, event and order of `book` as journal records: each sale's event counter first,
/// then its retained events in order (past events, not applied again), then the orders' states.
fn snapshot(book: &Book) -> Vec<u8> {
    let (mut records, mut scratch) = (Vec::new(), Vec::new());
    for sale in book.sales().iter().rev() {
        codec::put_sale(&mut records, &mut scratch, sale);
    }
    book.each_event(|sale_id, last, kept| {
        codec::put_event_counter(&mut records, &mut scratch, sale_id, last);
        for (sequence, kept) in kept {
            let facts = kept.facts(sequence);
            match &kept.about {
                events::About::Order(order_id) => codec::put_past_order_event(
                    &mut records,
                    &mut scratch,
                    sale_id,
                    order_id,
                    &facts,
                ),
                events::About::Sale(sale) => codec::put_sale_event(
                    &mut records,
                    &mut scratch,
                    codec::PAST_SALE_EVENT,
                    sale,
                    &facts,
                ),
            }
        }
    });
    book.each_order(|stored| codec::put_order(&mut records, &mut scratch, stored));
    records
}

/// Writes `records` as the whole journal at `path`, atomically (a new file renamed over it).
fn rewrite(path: &Path, records: &[u8]) -> Result<(), OpenError> {
    let fresh = path.with_extension("journal.new");
    std::fs::write(&fresh, records)?;
    std::fs::File::open(&fresh)?.sync_all()?;
    std::fs::rename(&fresh, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Moves the sales and orders of an earlier version's SQLite store into a new journal.
fn import_sqlite(data_dir: &Path, path: &Path) -> Result<bool, OpenError> {
    let database = data_dir.join(super::sqlite::DATABASE_FILE);
    if path.exists() || !database.exists() {
        return Ok(false);
    }
    let super::sqlite::Exported { sales, orders } = super::sqlite::export(&database)?;
    let mut book = Book::default();
    for sale in sales {
        book.put_sale(sale);
    }
    let count = orders.len();
    for (order, stock_returned) in orders {
        book.put_order(Stored {
            order,
            stock_returned,
        });
    }
    rewrite(path, &snapshot(&book))?;
    tracing::info!(
        orders = count,
        from = %database.display(),
        to = %path.display(),
        "moved the SQLite store into the order journal (the old file is left as it was)"
    );
    Ok(true)
}

fn open_book(
    data_dir: &Path,
    path: &Path,
    events_retention: std::time::Duration,
    metrics: Arc<Metrics>,
) -> Result<(Book, Journal), OpenError> {
    let lock = DirectoryLock::take(&data_dir.join(LOCK_FILE))?;
    import_sqlite(data_dir, path)?;
    let (mut book, mut file, mut end, records) = replay(path)?;
    // Compaction leaves out the events past their retention (by this machine's clock: the
    // store's own housekeeping, not a sale's rule).
    let cutoff = jiff::SignedDuration::try_from(events_retention)
        .ok()
        .and_then(|retention| Timestamp::now().checked_sub(retention).ok());
    let expired_events = cutoff.map_or(0, |cutoff| book.prune_events(cutoff));
    let live = book.sale_count() + book.order_count() + book.event_count();
    if records > 2 * live + 256 || (expired_events > 0 && records > live + 256) {
        rewrite(path, &snapshot(&book))?;
        (book, file, end, _) = replay(path)?;
    }
    Ok((book, Journal::open(file, end, lock, metrics)?))
}

impl JournalStore {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        options: JournalStoreOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let path: PathBuf = data_dir.join(JOURNAL_FILE);
        let (book, journal) = open_book(
            data_dir,
            &path,
            options.events_retention,
            Arc::clone(&metrics),
        )
        .map_err(|error| StoreError::Failed(format!("opening {}: {error}", path.display())))?;
        let space = journal.status();
        let shared = Arc::new(Shared {
            book: RwLock::new(book),
            applied: AtomicU64::new(0),
            durable: watch::Sender::new(Durable::Through(0)),
        });
        let (commands, receiver) = CommandQueue::new(options.write_queue_max);
        let writer = Writer {
            shared: Arc::clone(&shared),
            journal,
            commands: receiver,
            batch_max: options.commit_batch_max.max(1),
            batching: options.batching,
            metrics,
        };
        let writer_thread = std::thread::Builder::new()
            .name("flashsale-writer".into())
            .spawn(move || writer.run())
            .map_err(|error| StoreError::Failed(error.to_string()))?;
        Ok(Self {
            commands,
            shared,
            space,
            writer_thread: WriterThread::new(writer_thread),
        })
    }
}

impl OrderStore for JournalStore {
    fn create_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), StoreError>> {
        self.commands.create_sale(sale)
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>> {
        Box::pin(self.shared.read(Book::sales))
    }

    fn sale(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<Sale>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(self.shared.read(move |book| book.sale(&sale_id)))
    }

    fn change_sale<'a>(
        &'a self,
        revision: &'a SaleRevision,
    ) -> BoxFuture<'a, Result<(), ChangeError>> {
        self.commands.change_sale(revision)
    }

    fn insert_order(&self, order: Order) -> BoxFuture<'static, Result<(), InsertError>> {
        self.commands.insert_order(order)
    }

    fn order(&self, order_id: &OrderId) -> BoxFuture<'_, Result<Option<Order>, StoreError>> {
        let order_id = order_id.clone();
        Box::pin(
            self.shared
                .read(move |book| book.order(&order_id).map(|stored| stored.order.clone())),
        )
    }

    fn order_by_key(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<Order>, StoreError>> {
        let (sale_id, user_id, key) =
            (sale_id.clone(), user_id.clone(), idempotency_key.to_owned());
        Box::pin(
            self.shared
                .read(move |book| book.order_by_key(&sale_id, &user_id, &key).cloned()),
        )
    }

    fn orders(&self, query: OrderQuery) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.shared.read(move |book| book.orders(&query)))
    }

    fn transition(
        &self,
        order_id: &OrderId,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Transition, TransitionError>> {
        self.commands.transition(order_id, action, actor, now)
    }

    fn expire_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        self.commands.expire_due(now, max)
    }

    fn active_orders(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(
            self.shared
                .read(move |book| book.orders_of_sale(&sale_id, |order| order.status.is_active())),
        )
    }

    fn orders_for_gate(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(self.shared.read(move |book| {
            book.orders_of_sale(&sale_id, |order| {
                order.status.is_active()
                    || order.idempotency_key.is_some()
                    || order.access_code.is_some()
            })
        }))
    }

    fn tally(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<SaleTally, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move { self.shared.read(move |book| book.tally(&sale_id)).await? })
    }

    fn barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.commands.barrier()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.commands.is_closed() {
                return Err(StoreError::Closed);
            }
            if let Some(reason) = self.space.starved() {
                return Err(StoreError::NoSpace(reason));
            }
            self.shared.read(|_| ()).await
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.writer_thread.close(&self.commands))
    }

    fn unreturned(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.shared.read(move |book| book.unreturned(max)))
    }

    fn payments_unsettled(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.shared.read(move |book| book.payments_unsettled(max)))
    }

    fn stock_returned(&self, order_ids: Vec<OrderId>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.commands.stock_returned(order_ids)
    }

    fn events(
        &self,
        sale_id: &SaleId,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(async move {
            // Copied under the lock, rendered outside it: the writer waits for no JSON.
            let events = self
                .shared
                .read(move |book| book.events(&sale_id, after, limit))
                .await?;
            Ok(events.iter().map(crate::events::recorded).collect())
        })
    }

    fn event_heads(&self) -> BoxFuture<'_, Result<Vec<EventHead>, StoreError>> {
        Box::pin(self.shared.read(|book| {
            book.event_heads()
                .into_iter()
                .map(|(sale_id, sequence)| EventHead { sale_id, sequence })
                .collect()
        }))
    }

    fn prune_events(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.commands.prune_events(before)
    }
}
