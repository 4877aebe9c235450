//! The embedded order store: one SQLite file in WAL mode with `synchronous = FULL`, so a commit is
//! on disk when it returns and survives `kill -9` and power loss. `sqlite3 DATA_DIR/flashsale.db`
//! inspects it.

mod outbox;
mod readers;
mod rows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use self::readers::ReadPool;
use self::rows::{ORDER_COLUMNS, SALE_COLUMNS};
use self::writer::Writer;
use super::commands::{CommandQueue, WriterThread};
use super::{
    ChangeError, EventHead, InsertError, OrderQuery, OrderStore, RecordedEvent, SaleTally,
    StoreError, Transition, TransitionError,
};
use crate::domain::{
    Action, Actor, EventKind, Order, OrderId, OrderStatus, Sale, SaleId, SaleRevision, UserId,
};
use crate::metrics::Metrics;
use crate::BoxFuture;

pub const DATABASE_FILE: &str = "flashsale.db";
const PAGE_SIZE_BYTES: i64 = 1024;
const WAL_CHECKPOINT_PAGES: i64 = 16_384;

#[derive(Clone, Debug)]
pub struct SqliteStoreOptions {
    /// Most commands committed in one transaction.
    pub commit_batch_max: usize,
    /// Most commands waiting for the writer; beyond it purchases are shed with `overloaded`.
    pub write_queue_max: usize,
    pub read_connections_max: usize,
}

impl Default for SqliteStoreOptions {
    fn default() -> Self {
        Self {
            commit_batch_max: 1024,
            write_queue_max: 65_536,
            read_connections_max: 4,
        }
    }
}

pub struct SqliteStore {
    commands: CommandQueue,
    readers: Arc<ReadPool>,
    writer_thread: WriterThread,
}

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(error.to_string())
}

fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    // Set before the first table exists (later it is a no-op). Each order inserts into one
    // index keyed by buyer, i.e. one random page per order in every commit's WAL frames, so a
    // smaller page means fewer bytes written per order.
    connection.pragma_update(None, "page_size", PAGE_SIZE_BYTES)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // Checkpoint less often: a page that changes in many commits is copied back once.
    connection.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    // FULL: the WAL is synced at every commit, which is what makes an acknowledged order durable.
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    // The bundled SQLite turns foreign keys on by default, and a table rebuilt below is dropped
    // while orders still reference it: off for the migrations, checked and on after them.
    connection.pragma_update(None, "foreign_keys", "OFF")?;
    connection.execute_batch(ORDERS_TABLE)?;
    connection.execute_batch(include_str!("schema.sql"))?;
    add_stock_returned(&connection)?;
    add_waiting_room(&connection)?;
    // Before `add_sale_changes`: its rebuild of an old table copies every sale column.
    add_draw_seed(&connection)?;
    add_sale_changes(&connection)?;
    add_event_sequence(&connection)?;
    add_payments(&connection)?;
    if allow_refunded(&connection)? {
        connection.execute_batch(include_str!("schema.sql"))?;
        add_stock_returned(&connection)?;
        add_payments(&connection)?;
    }
    let dangling = connection.prepare("PRAGMA foreign_key_check")?.exists([])?;
    if dangling {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
            Some("an order names a sale the store does not have".into()),
        ));
    }
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(connection)
}

fn has_column(connection: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    connection
        .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
}

/// Stores made before sales could change lack their columns (every sale of theirs is at its
/// first version, running, public; no order used a code), and their sales table refuses a
/// stock of 0: it is rebuilt under the new definition (SQLite cannot change a CHECK in place).
fn add_sale_changes(connection: &Connection) -> rusqlite::Result<()> {
    for (table, column, definition) in [
        ("sales", "version", "INTEGER NOT NULL DEFAULT 1"),
        ("sales", "paused", "INTEGER NOT NULL DEFAULT 0"),
        (
            "sales",
            "access",
            "TEXT NOT NULL DEFAULT 'public' CHECK (access IN ('public', 'codes'))",
        ),
        ("orders", "access_code", "TEXT"),
    ] {
        if !has_column(connection, table, column)? {
            connection.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    let definition: String = connection.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'sales'",
        [],
        |row| row.get(0),
    )?;
    if definition.contains("CHECK (stock >= 1)") {
        let schema = include_str!("schema.sql");
        let start = schema.find("CREATE TABLE IF NOT EXISTS sales").unwrap_or(0);
        let end = schema[start..]
            .find(") STRICT;")
            .map_or(schema.len(), |end| start + end + ") STRICT;".len());
        let create = schema[start..end].replacen(
            "CREATE TABLE IF NOT EXISTS sales",
            "CREATE TABLE sales_rebuilt",
            1,
        );
        // The orders' triggers name `sales`: the legacy rename leaves them as they are, to find
        // the rebuilt table by that name (the new rename would check them against a table
        // dropped a moment before, and refuse).
        connection.execute_batch(&format!(
            "PRAGMA legacy_alter_table = ON; BEGIN; {create} \
             INSERT INTO sales_rebuilt ({SALE_COLUMNS}, remaining) \
             SELECT {SALE_COLUMNS}, remaining FROM sales; DROP TABLE sales; \
             ALTER TABLE sales_rebuilt RENAME TO sales; COMMIT; \
             PRAGMA legacy_alter_table = OFF;"
        ))?;
    }
    Ok(())
}

const ORDERS_TABLE: &str = include_str!("orders.sql");

/// The payment columns (stores made before payments lack them: their orders have none), and
/// the index of the payments the sweep settles.
fn add_payments(connection: &Connection) -> rusqlite::Result<()> {
    for (column, kind) in [
        ("refunded_at_ms", "INTEGER"),
        ("payment_provider", "TEXT"),
        ("payment_intent_id", "TEXT"),
        ("payment_client_secret", "TEXT"),
        ("payment_state", "TEXT"),
        ("payment_refund_id", "TEXT"),
    ] {
        if !has_column(connection, "orders", column)? {
            connection.execute_batch(&format!("ALTER TABLE orders ADD COLUMN {column} {kind}"))?;
        }
    }
    connection.execute_batch(
        "CREATE INDEX IF NOT EXISTS orders_payments_unsettled ON orders (expires_at_ms) \
         WHERE payment_state IN ('open', 'refund_pending')",
    )
}

/// A store made before refunds has a status CHECK without `refunded`, and SQLite cannot alter a
/// CHECK: the table is rebuilt once from `orders.sql` in one transaction (its indexes and
/// triggers go with the old table; the caller makes them again). Says whether it rebuilt.
fn allow_refunded(connection: &Connection) -> rusqlite::Result<bool> {
    let definition: String = connection.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'orders'",
        [],
        |row| row.get(0),
    )?;
    if definition.contains("'refunded'") {
        return Ok(false);
    }
    let columns = "id, sale_id, user_id, quantity, status, created_at_ms, expires_at_ms, \
         paid_at_ms, idempotency_key, stock_returned, access_code, refunded_at_ms, \
         payment_provider, payment_intent_id, payment_client_secret, payment_state, \
         payment_refund_id";
    connection.execute_batch(&format!(
        "BEGIN IMMEDIATE; \
         ALTER TABLE orders RENAME TO orders_before_refunds; \
         {ORDERS_TABLE} \
         INSERT INTO orders ({columns}) SELECT {columns} FROM orders_before_refunds; \
         DROP TABLE orders_before_refunds; \
         COMMIT;"
    ))?;
    tracing::info!("the SQLite order table now allows the refunded status (rebuilt once)");
    Ok(true)
}

/// Stores made before events lack the sales' counter: their sales have no event yet.
fn add_event_sequence(connection: &Connection) -> rusqlite::Result<()> {
    if !has_column(connection, "sales", "last_event_sequence")? {
        connection.execute_batch(
            "ALTER TABLE sales ADD COLUMN last_event_sequence INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    Ok(())
}

/// Stores made before stock returns were recorded lack the column: add it (every order of
/// theirs counts as returned, which a restart's rebuild of the gate made true), then its index.
fn add_stock_returned(connection: &Connection) -> rusqlite::Result<()> {
    let has_column = connection
        .prepare("SELECT 1 FROM pragma_table_info('orders') WHERE name = 'stock_returned'")?
        .exists([])?;
    if !has_column {
        connection.execute_batch(
            "ALTER TABLE orders ADD COLUMN stock_returned INTEGER NOT NULL DEFAULT 1",
        )?;
    }
    connection.execute_batch(
        "CREATE INDEX IF NOT EXISTS orders_returning ON orders (id) WHERE stock_returned = 0",
    )
}

/// Stores made before waiting rooms lack the column: their sales have none.
fn add_waiting_room(connection: &Connection) -> rusqlite::Result<()> {
    let has_column = connection
        .prepare("SELECT 1 FROM pragma_table_info('sales') WHERE name = 'waiting_room'")?
        .exists([])?;
    if !has_column {
        connection.execute_batch("ALTER TABLE sales ADD COLUMN waiting_room TEXT")?;
    }
    Ok(())
}

/// Stores made before draw seeds lack the column: their sales keep the keyed draw.
fn add_draw_seed(connection: &Connection) -> rusqlite::Result<()> {
    if !has_column(connection, "sales", "draw_seed")? {
        connection.execute_batch(
            "ALTER TABLE sales ADD COLUMN draw_seed BLOB \
             CHECK (draw_seed IS NULL OR length(draw_seed) = 32)",
        )?;
    }
    Ok(())
}

/// Every sale and every order (with its stock-returned mark) of the store file at `path`: what
/// moves into the order journal when a data directory made by an earlier version is opened.
pub fn export(path: &Path) -> Result<Exported, StoreError> {
    let connection = open_writer(path).map_err(failed)?;
    let sales = connection
        .prepare(&format!("SELECT {SALE_COLUMNS} FROM sales ORDER BY id"))
        .and_then(|mut statement| statement.query_map([], rows::sale)?.collect())
        .map_err(failed)?;
    let orders = connection
        .prepare(&format!(
            "SELECT {ORDER_COLUMNS}, stock_returned FROM orders ORDER BY id"
        ))
        .and_then(|mut statement| {
            statement
                .query_map([], |row| {
                    Ok((
                        rows::order(row)?,
                        row.get::<_, bool>(rows::ORDER_COLUMN_COUNT)?,
                    ))
                })?
                .collect()
        })
        .map_err(failed)?;
    Ok(Exported { sales, orders })
}

/// What `export` reads from a SQLite store.
pub struct Exported {
    pub sales: Vec<Sale>,
    /// Each order with its stock-returned mark.
    pub orders: Vec<(Order, bool)>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        options: SqliteStoreOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let path: PathBuf = data_dir.join(DATABASE_FILE);
        let connection = open_writer(&path)
            .map_err(|error| StoreError::Failed(format!("opening {}: {error}", path.display())))?;
        let (commands, receiver) = CommandQueue::new(options.write_queue_max);
        let writer = Writer {
            connection,
            commands: receiver,
            batch_max: options.commit_batch_max.max(1),
            metrics,
        };
        let writer_thread = std::thread::Builder::new()
            .name("flashsale-writer".into())
            .spawn(move || writer.run())
            .map_err(failed)?;
        Ok(Self {
            commands,
            readers: Arc::new(ReadPool::new(path, options.read_connections_max)),
            writer_thread: WriterThread::new(writer_thread),
        })
    }
}

impl OrderStore for SqliteStore {
    fn create_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), StoreError>> {
        self.commands.create_sale(sale)
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<Sale>, StoreError>> {
        Box::pin(self.readers.read(|connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {SALE_COLUMNS} FROM sales ORDER BY id DESC"
                ))?
                .query_map([], rows::sale)?
                .collect()
        }))
    }

    fn sale(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Option<Sale>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(self.readers.read(move |connection| {
            connection
                .prepare_cached(&format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = ?1"))?
                .query_row([sale_id.as_str()], rows::sale)
                .optional()
        }))
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
        Box::pin(self.readers.read(move |connection| {
            connection
                .prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))?
                .query_row([order_id.as_str()], rows::order)
                .optional()
        }))
    }

    fn order_by_key(
        &self,
        sale_id: &SaleId,
        user_id: &UserId,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<Order>, StoreError>> {
        let (sale_id, user_id, key) =
            (sale_id.clone(), user_id.clone(), idempotency_key.to_owned());
        Box::pin(self.readers.read(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders \
                     WHERE sale_id = ?1 AND user_id = ?2 AND idempotency_key = ?3"
                ))?
                .query_row(
                    params![sale_id.as_str(), user_id.as_str(), key],
                    rows::order,
                )
                .optional()
        }))
    }

    fn orders(&self, query: OrderQuery) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.readers.read(move |connection| {
            // Only the filters in use appear in the SQL, so SQLite can pick the matching index.
            let mut conditions = Vec::new();
            let mut values: Vec<String> = Vec::new();
            if let Some(user_id) = &query.user_id {
                values.push(user_id.as_str().to_owned());
                conditions.push(format!("user_id = ?{}", values.len()));
            }
            if let Some(sale_id) = &query.sale_id {
                values.push(sale_id.as_str().to_owned());
                conditions.push(format!("sale_id = ?{}", values.len()));
            }
            if let Some(before) = &query.before {
                values.push(before.as_str().to_owned());
                conditions.push(format!("id < ?{}", values.len()));
            }
            if let Some(status) = query.status {
                values.push(status.as_str().to_owned());
                conditions.push(format!("status = ?{}", values.len()));
            }
            let filter = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders {filter} ORDER BY id DESC LIMIT {}",
                query.limit
            );
            connection
                .prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(values.iter()), rows::order)?
                .collect()
        }))
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
        Box::pin(self.readers.read(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders \
                     WHERE sale_id = ?1 AND status IN ('pending_payment', 'paid')"
                ))?
                .query_map([sale_id.as_str()], rows::order)?
                .collect()
        }))
    }

    fn orders_for_gate(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(self.readers.read(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE sale_id = ?1 \
                     AND (status IN ('pending_payment', 'paid') OR idempotency_key IS NOT NULL \
                          OR access_code IS NOT NULL)"
                ))?
                .query_map([sale_id.as_str()], rows::order)?
                .collect()
        }))
    }

    fn unreturned(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.readers.read(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE stock_returned = 0 \
                     ORDER BY id LIMIT ?1"
                ))?
                .query_map([i64::try_from(max).unwrap_or(i64::MAX)], rows::order)?
                .collect()
        }))
    }

    fn stock_returned(&self, order_ids: Vec<OrderId>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.commands.stock_returned(order_ids)
    }

    fn payments_unsettled(&self, max: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(self.readers.read(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders \
                     WHERE payment_state IN ('open', 'refund_pending') \
                     ORDER BY expires_at_ms LIMIT ?1"
                ))?
                .query_map([i64::try_from(max).unwrap_or(i64::MAX)], rows::order)?
                .collect()
        }))
    }

    fn tally(&self, sale_id: &SaleId) -> BoxFuture<'_, Result<SaleTally, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(self.readers.read(move |connection| {
            let remaining: i64 = connection
                .prepare_cached("SELECT remaining FROM sales WHERE id = ?1")?
                .query_row([sale_id.as_str()], |row| row.get(0))?;
            let mut tally = SaleTally {
                remaining: u64::try_from(remaining).unwrap_or(0),
                ..SaleTally::default()
            };
            let mut statement = connection.prepare_cached(
                "SELECT status, SUM(quantity) FROM orders WHERE sale_id = ?1 GROUP BY status",
            )?;
            let mut rows = statement.query([sale_id.as_str()])?;
            while let Some(row) = rows.next()? {
                let status: String = row.get(0)?;
                let quantity = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
                match OrderStatus::parse(&status) {
                    Some(OrderStatus::PendingPayment) => tally.pending = quantity,
                    Some(OrderStatus::Paid) => tally.paid = quantity,
                    Some(OrderStatus::Cancelled) => tally.cancelled = quantity,
                    Some(OrderStatus::Expired) => tally.expired = quantity,
                    Some(OrderStatus::Refunded) => tally.refunded = quantity,
                    None => {}
                }
            }
            Ok(tally)
        }))
    }

    fn barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.commands.barrier()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.commands.is_closed() {
                return Err(StoreError::Closed);
            }
            self.readers
                .read(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))
                .await
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.writer_thread.close(&self.commands))
    }

    fn events(
        &self,
        sale_id: &SaleId,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<RecordedEvent>, StoreError>> {
        let sale_id = sale_id.clone();
        Box::pin(self.readers.read(move |connection| {
            connection
                .prepare_cached(
                    "SELECT sequence, type, subject, at_ms, data FROM events                      WHERE sale_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3",
                )?
                .query_map(
                    params![
                        sale_id.as_str(),
                        i64::try_from(after).unwrap_or(i64::MAX),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |row| {
                        let type_name: String = row.get(1)?;
                        let at_ms: i64 = row.get(3)?;
                        let corrupt = |column, what: &str| {
                            rusqlite::Error::FromSqlConversionFailure(
                                column,
                                rusqlite::types::Type::Text,
                                format!("stored event {what} is not valid").into(),
                            )
                        };
                        Ok(RecordedEvent {
                            sale_id: sale_id.clone(),
                            sequence: u64::try_from(row.get::<_, i64>(0)?)
                                .map_err(|_| corrupt(0, "sequence"))?,
                            kind: EventKind::parse(&type_name).ok_or_else(|| corrupt(1, "type"))?,
                            subject: row.get(2)?,
                            at: Timestamp::from_millisecond(at_ms)
                                .map_err(|_| corrupt(3, "time"))?,
                            data: row.get(4)?,
                        })
                    },
                )?
                .collect()
        }))
    }

    fn event_heads(&self) -> BoxFuture<'_, Result<Vec<EventHead>, StoreError>> {
        Box::pin(self.readers.read(|connection| {
            connection
                .prepare_cached(
                    "SELECT id, last_event_sequence FROM sales WHERE last_event_sequence > 0",
                )?
                .query_map([], |row| {
                    let id: String = row.get(0)?;
                    Ok((id, row.get::<_, i64>(1)?))
                })?
                .map(|row| {
                    row.map(|(id, sequence)| {
                        SaleId::parse(&id).map(|sale_id| EventHead {
                            sale_id,
                            sequence: u64::try_from(sequence).unwrap_or(0),
                        })
                    })
                })
                .filter_map(|row| row.transpose())
                .collect()
        }))
    }

    fn prune_events(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.commands.prune_events(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, PaymentState};

    /// A store made before payments: its status CHECK has no `refunded`, and SQLite cannot alter
    /// a CHECK. Opened now, its orders table is rebuilt once (orders kept, triggers made again)
    /// and a paid order refunds, its unit back.
    #[tokio::test]
    async fn a_store_made_before_payments_is_rebuilt_once_and_refunds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        let sale = Sale::of_stock_for_test(2);
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let mut paid = Order::pending_for_test(&sale.id, "alice", at);
        paid.status = OrderStatus::Paid;
        paid.paid_at = Some(at);
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(include_str!("testdata/schema_before_payments.sql"))
                .unwrap();
            old.execute(
                "INSERT INTO sales (id, name, description, stock, remaining, per_user_limit, \
                 price_cents, starts_at_ms, payment_window_secs, created_at_ms) \
                 VALUES (?1, 'Old', '', 2, 2, 1, 500, ?2, 900, ?2)",
                params![sale.id.as_str(), rows::millis(at)],
            )
            .unwrap();
            old.execute(
                "INSERT INTO orders (id, sale_id, user_id, quantity, status, created_at_ms, \
                 expires_at_ms, paid_at_ms) VALUES (?1, ?2, 'alice', 1, 'paid', ?3, ?3, ?3)",
                params![paid.id.as_str(), sale.id.as_str(), rows::millis(at)],
            )
            .unwrap();
            let refused = old.execute("UPDATE orders SET status = 'refunded'", []);
            assert!(refused.is_err(), "the old CHECK refuses the new status");
        }
        let store = SqliteStore::open(
            dir.path(),
            SqliteStoreOptions::default(),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        assert_eq!(
            store.order(&paid.id).await.unwrap().unwrap().status,
            OrderStatus::Paid
        );
        assert_eq!(store.tally(&sale.id).await.unwrap().remaining, 1);
        let refunded = store
            .transition(&paid.id, Action::Refund, &Actor::Admin, at)
            .await
            .unwrap();
        assert!(refunded.released);
        assert_eq!(refunded.order.status, OrderStatus::Refunded);
        let tally = store.tally(&sale.id).await.unwrap();
        assert_eq!(
            (tally.remaining, tally.paid, tally.refunded),
            (2, 0, 1),
            "the trigger gave the unit back"
        );
        // Final: the rebuilt table's trigger keeps it so.
        let again = store
            .transition(&paid.id, Action::Cancel, &Actor::Admin, at)
            .await
            .unwrap();
        assert!(!again.changed);
        assert_eq!(store.payments_unsettled(10).await.unwrap().len(), 0);
        assert_eq!(refunded.order.payment_state(), None::<PaymentState>);
        store.close().await.unwrap();
        let definition: String = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'orders'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(definition.contains("'refunded'"), "{definition}");
    }
}
