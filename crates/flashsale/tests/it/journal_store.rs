//! The embedded journal store's own promises, beyond the conformance suite: a data directory of
//! the SQLite store moves into the journal, a torn tail is cut, and superseded records are
//! dropped at start without changing what the store answers.

use std::sync::Arc;

use flashsale_server::domain::{Action, Actor, OrderStatus};
use flashsale_server::metrics::Metrics;
use flashsale_server::store::{
    JournalStore, JournalStoreOptions, OrderQuery, OrderStore, SqliteStore, SqliteStoreOptions,
};
use jiff::SignedDuration;

use crate::conformance::{at, order, sale, user, T0};

fn open_journal(dir: &std::path::Path) -> JournalStore {
    JournalStore::open(
        dir,
        JournalStoreOptions::default(),
        Arc::new(Metrics::default()),
    )
    .expect("journal store opens")
}

fn journal_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("orders.journal")
}

/// Where the journal's records end (the file is reserved ahead with zeros).
fn records_end(dir: &std::path::Path) -> usize {
    let bytes = std::fs::read(journal_path(dir)).unwrap();
    bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1)
}

async fn sale_orders(
    store: &JournalStore,
    sale_id: &flashsale_server::domain::SaleId,
) -> Vec<flashsale_server::domain::Order> {
    store
        .orders(OrderQuery {
            user_id: None,
            sale_id: Some(sale_id.clone()),
            before: None,
            status: None,
            limit: 5000,
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_data_directory_moves_into_the_journal_once() {
    let dir = tempfile::tempdir().unwrap();
    let sale = sale(10, 2);
    let kept = order(&sale, "alice", 2, Some("key-a"));
    let cancelled = order(&sale, "bob", 1, None);
    {
        let sqlite = SqliteStore::open(
            dir.path(),
            SqliteStoreOptions::default(),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        sqlite.create_sale(&sale).await.unwrap();
        sqlite.insert_order(kept.clone()).await.unwrap();
        sqlite.insert_order(cancelled.clone()).await.unwrap();
        let now = at(T0) + SignedDuration::from_secs(1);
        sqlite
            .transition(&cancelled.id, Action::Cancel, &Actor::Admin, now)
            .await
            .unwrap();
        sqlite.close().await.unwrap();
    }
    let journal = open_journal(dir.path());
    assert_eq!(journal.sales().await.unwrap(), vec![sale.clone()]);
    assert_eq!(journal.order(&kept.id).await.unwrap(), Some(kept.clone()));
    let tally = journal.tally(&sale.id).await.unwrap();
    assert_eq!((tally.remaining, tally.pending, tally.cancelled), (8, 2, 1));
    let unreturned = journal.unreturned(10).await.unwrap();
    assert_eq!(
        unreturned.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        vec![cancelled.id.clone()],
        "a return the gate had not confirmed is still owed"
    );
    assert!(matches!(
        journal.insert_order(order(&sale, "alice", 1, None)).await,
        Err(flashsale_server::store::InsertError::LimitExceeded)
    ));
    let later = order(&sale, "carol", 1, None);
    journal.insert_order(later.clone()).await.unwrap();
    journal.close().await.unwrap();
    drop(journal);

    // The journal is the record from now on: the SQLite file is not read again.
    let reopened = open_journal(dir.path());
    assert_eq!(reopened.order(&later.id).await.unwrap(), Some(later));
    assert_eq!(reopened.tally(&sale.id).await.unwrap().remaining, 7);
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let sale = sale(10, 1);
    let placed = order(&sale, "alice", 1, None);
    let store = open_journal(dir.path());
    store.create_sale(&sale).await.unwrap();
    store.insert_order(placed.clone()).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    // A crash in the middle of a write leaves part of a record (never acknowledged).
    let path = journal_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(records_end(dir.path()));
    bytes.extend_from_slice(&[2, 200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&path, &bytes).unwrap();

    let store = open_journal(dir.path());
    assert_eq!(store.order(&placed.id).await.unwrap(), Some(placed));
    let second = order(&sale, "bob", 1, None);
    store.insert_order(second.clone()).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = open_journal(dir.path());
    assert_eq!(
        store.order(&second.id).await.unwrap(),
        Some(second),
        "records written after the cut replay"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_records_are_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let sale = sale(5000, 1);
    let store = open_journal(dir.path());
    store.create_sale(&sale).await.unwrap();
    let now = at(T0) + SignedDuration::from_secs(1);
    let mut orders = Vec::new();
    for buyer in 0..1500 {
        let placed = order(&sale, &format!("buyer-{buyer}"), 1, None);
        store.insert_order(placed.clone()).await.unwrap();
        let action = if buyer % 2 == 0 {
            Action::Pay
        } else {
            Action::Cancel
        };
        let actor = Actor::Buyer(user(&format!("buyer-{buyer}")));
        store
            .transition(&placed.id, action, &actor, now)
            .await
            .unwrap();
        orders.push(placed.id);
    }
    let cancelled: Vec<_> = orders.iter().skip(1).step_by(2).cloned().collect();
    store.stock_returned(cancelled).await.unwrap();
    // Events are live records too while retained (each order's created and paid or
    // cancelled): past the retention they go, and the orders' old states with them.
    store
        .prune_events(at(T0) + SignedDuration::from_secs(2))
        .await
        .unwrap();
    let before = sale_orders(&store, &sale.id).await;
    let tally = store.tally(&sale.id).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let grown = records_end(dir.path());

    let store = open_journal(dir.path());
    let compacted = records_end(dir.path());
    assert!(
        compacted * 2 < grown,
        "three records per order become one ({grown} -> {compacted} bytes)"
    );
    assert_eq!(sale_orders(&store, &sale.id).await, before);
    assert_eq!(store.tally(&sale.id).await.unwrap(), tally);
    assert_eq!((tally.paid, tally.cancelled), (750, 750));
    assert!(store.unreturned(10).await.unwrap().is_empty());
    assert!(before
        .iter()
        .all(|o| matches!(o.status, OrderStatus::Paid | OrderStatus::Cancelled)));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open_journal(dir.path());
    let second = JournalStore::open(
        dir.path(),
        JournalStoreOptions::default(),
        Arc::new(Metrics::default()),
    );
    let Err(error) = second else {
        panic!("two stores wrote one journal");
    };
    assert!(
        error.to_string().contains("another process holds"),
        "the refusal says why: {error}"
    );
    first.close().await.unwrap();
    drop(first);
    open_journal(dir.path()).close().await.unwrap();
}

/// A SQLite store made before sales could change (its schema kept in `fixtures/`): opening it
/// adds the new columns (every sale at version 1, running, public; no order with a code) and
/// rebuilds its sales table so that every unit can be taken off sale; its rows stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_made_before_sale_changes_opens_and_changes() {
    use flashsale_server::domain::{SaleChange, SaleUpdate};
    let dir = tempfile::tempdir().unwrap();
    let sale = sale(10, 2);
    {
        let old = rusqlite::Connection::open(dir.path().join("flashsale.db")).unwrap();
        old.execute_batch(include_str!(
            "fixtures/sqlite_schema_before_sale_changes.sql"
        ))
        .unwrap();
        old.execute(
            "INSERT INTO sales (id, name, description, stock, remaining, per_user_limit, \
             price_cents, starts_at_ms, ends_at_ms, payment_window_secs, created_at_ms) \
             VALUES (?1, ?2, '', 10, 10, 2, 0, ?3, NULL, 60, ?4)",
            rusqlite::params![
                sale.id.as_str(),
                sale.name,
                sale.starts_at.as_millisecond(),
                sale.created_at.as_millisecond()
            ],
        )
        .unwrap();
    }
    let store = SqliteStore::open(
        dir.path(),
        SqliteStoreOptions::default(),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    assert_eq!(store.sale(&sale.id).await.unwrap(), Some(sale.clone()));
    let held = order(&sale, "alice", 2, None);
    store.insert_order(held.clone()).await.unwrap();
    let removed = SaleChange::Update(SaleUpdate {
        remove_stock: Some(8),
        ..SaleUpdate::default()
    })
    .apply(&sale, at(T0))
    .unwrap()
    .unwrap();
    store.change_sale(&removed).await.unwrap();
    store
        .transition(&held.id, Action::Cancel, &Actor::Admin, at(T0))
        .await
        .unwrap();
    let emptied = SaleChange::Update(SaleUpdate {
        remove_stock: Some(2),
        ..SaleUpdate::default()
    })
    .apply(&removed.sale, at(T0))
    .unwrap()
    .unwrap();
    store
        .change_sale(&emptied)
        .await
        .expect("a stock of 0 is allowed after the rebuild");
    let kept = store.sale(&sale.id).await.unwrap().unwrap();
    assert_eq!((kept.stock, kept.version), (0, 3));
    assert_eq!(store.tally(&sale.id).await.unwrap().remaining, 0);
    assert_eq!(
        store.order(&held.id).await.unwrap().map(|o| o.status),
        Some(OrderStatus::Cancelled),
        "the orders' table and its triggers are untouched"
    );
    store.close().await.unwrap();
}
