//! The single writer: one thread owns the write connection and commits many queued commands per
//! transaction (group commit). A command's reply is sent only after the transaction holding it
//! is committed, so a client hears "done" only for what is on disk.

use jiff::Timestamp;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tokio::sync::mpsc;

use super::outbox;
use super::rows::{self, millis, ORDER_COLUMNS};
use crate::domain::{
    order_event, outcome, Action, Actor, Order, OrderId, Outcome, Sale, SaleEvent, SaleRevision,
};
use crate::metrics::Metrics;
use crate::store::commands::{Command, Pending};
use crate::store::{ChangeError, InsertError, StoreError, Transition, TransitionError};

fn statement_failed(error: &rusqlite::Error) -> StoreError {
    StoreError::Failed(error.to_string())
}

pub struct Writer {
    pub connection: Connection,
    pub commands: mpsc::Receiver<Command>,
    pub batch_max: usize,
    pub metrics: std::sync::Arc<Metrics>,
}

impl Writer {
    /// Runs until a `Close` command is handled or every sender is gone.
    pub fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_max);
        loop {
            let Some(first) = self.commands.blocking_recv() else {
                return;
            };
            batch.push(first);
            while batch.len() < self.batch_max {
                match self.commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.metrics.record_commit_batch(batch.len());
            if self.commit(&mut batch) {
                return;
            }
        }
    }

    /// Applies and commits one batch; returns whether the writer was asked to close. Each
    /// command runs in a savepoint of its own: one that fails is undone and answered alone, and
    /// the rest of the batch commits (a `Close` in it is always honoured).
    fn commit(&mut self, batch: &mut Vec<Command>) -> bool {
        let mut pending = Vec::with_capacity(batch.len());
        let mut close = None;
        let mut failure: Option<String> = None;
        let mut transaction = match self.connection.transaction() {
            Ok(transaction) => Some(transaction),
            Err(error) => {
                failure = Some(error.to_string());
                None
            }
        };
        for command in batch.drain(..) {
            let command = match command {
                Command::Close { reply } => {
                    close = Some(reply);
                    continue;
                }
                command => command,
            };
            let Some(transaction) = transaction.as_mut().filter(|_| failure.is_none()) else {
                command.fail(failure.as_deref().unwrap_or("the batch failed"));
                continue;
            };
            match transaction.savepoint() {
                Ok(savepoint) => {
                    let (answer, applied) = apply(&savepoint, command);
                    let ended = if applied {
                        savepoint.commit()
                    } else {
                        savepoint.finish()
                    };
                    if let Err(error) = ended {
                        failure = Some(error.to_string());
                    }
                    pending.push(answer);
                }
                Err(error) => {
                    failure = Some(error.to_string());
                    command.fail(&error.to_string());
                }
            }
        }
        let committed = match (transaction, &failure) {
            (Some(transaction), None) => transaction.commit().map_err(|error| error.to_string()),
            (_, Some(message)) => Err(message.clone()),
            (None, None) => Err("the batch failed".to_owned()),
        };
        match committed {
            Ok(()) => pending.into_iter().for_each(Pending::send_committed),
            Err(message) => {
                tracing::error!(error = %message, "order store commit failed");
                pending
                    .into_iter()
                    .for_each(|reply| reply.send_failed(&message));
            }
        }
        match close {
            Some(reply) => {
                drop(reply.send(Ok(())));
                true
            }
            None => false,
        }
    }
}

/// Applies one command; returns its pending answer and whether every statement succeeded
/// (refusals by constraints are ordinary results and count as applied).
fn apply(connection: &Connection, command: Command) -> (Pending, bool) {
    match command {
        Command::CreateSale { sale, reply } => {
            let result = create_sale(connection, &sale).map_err(|e| statement_failed(&e));
            let applied = result.is_ok();
            (Pending::Unit(reply, result), applied)
        }
        Command::ChangeSale { revision, reply } => match change_sale(connection, &revision) {
            Ok(result) => (Pending::Change(reply, result), true),
            Err(error) => (
                Pending::Change(reply, Err(ChangeError::Store(statement_failed(&error)))),
                false,
            ),
        },
        Command::PruneEvents { before, reply } => {
            let result = connection
                .prepare_cached("DELETE FROM events WHERE at_ms < ?1")
                .and_then(|mut statement| statement.execute([millis(before)]))
                .map(|deleted| deleted as u64)
                .map_err(|e| statement_failed(&e));
            let applied = result.is_ok();
            (Pending::Count(reply, result), applied)
        }
        Command::InsertOrder { order, reply } => match insert_order(connection, &order) {
            Ok(result) => (Pending::Insert(reply, result), true),
            Err(error) => (
                Pending::Insert(reply, Err(InsertError::Store(statement_failed(&error)))),
                false,
            ),
        },
        Command::Transition {
            order_id,
            action,
            actor,
            now,
            reply,
        } => match transition(connection, &order_id, &action, &actor, now) {
            Ok(result) => (Pending::Transition(reply, result), true),
            Err(error) => (
                Pending::Transition(reply, Err(TransitionError::Store(statement_failed(&error)))),
                false,
            ),
        },
        Command::ExpireDue { now, max, reply } => {
            let result = expire_due(connection, now, max).map_err(|e| statement_failed(&e));
            let applied = result.is_ok();
            (Pending::Expired(reply, result), applied)
        }
        Command::StockReturned { order_ids, reply } => {
            let result = stock_returned(connection, &order_ids).map_err(|e| statement_failed(&e));
            let applied = result.is_ok();
            (Pending::Unit(reply, result), applied)
        }
        Command::Barrier { reply } | Command::Close { reply } => {
            (Pending::Unit(reply, Ok(())), true)
        }
    }
}

fn create_sale(connection: &Connection, sale: &Sale) -> rusqlite::Result<()> {
    let stock = i64::try_from(sale.stock).unwrap_or(i64::MAX);
    connection
        .prepare_cached(
            "INSERT INTO sales (id, name, description, stock, remaining, per_user_limit, \
             price_cents, starts_at_ms, ends_at_ms, payment_window_secs, created_at_ms, \
             waiting_room, version, paused, access, draw_seed) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?
        .execute(params![
            sale.id.as_str(),
            sale.name,
            sale.description,
            stock,
            sale.per_user_limit,
            i64::try_from(sale.price_cents).unwrap_or(i64::MAX),
            millis(sale.starts_at),
            sale.ends_at.map(millis),
            sale.payment_window_secs,
            millis(sale.created_at),
            crate::store::waiting_room_text(sale.waiting_room.as_ref()),
            i64::try_from(sale.version).unwrap_or(i64::MAX),
            sale.paused,
            sale.access.as_str(),
            crate::store::draw_seed_bytes(sale.waiting_room.as_ref()),
        ])?;
    outbox::record_sale_event(connection, &sale.id, SaleEvent::Created, sale.created_at)
}

/// A sale's new definition and its event; a new stock moves `remaining` by the difference (the
/// `stock_left` check refuses a stock below what orders hold).
/// Writes the sale's next version, with its event, if the row holds the one before; `remaining`
/// moves with the stock (the gate took units off sale before, or adds them after: never fewer here than there).
fn change_sale(
    connection: &Connection,
    revision: &SaleRevision,
) -> rusqlite::Result<Result<(), ChangeError>> {
    let sale = &revision.sale;
    let version = i64::try_from(sale.version).unwrap_or(i64::MAX);
    let changed = connection
        .prepare_cached(
            "UPDATE sales SET name = ?2, description = ?3, \
                 remaining = remaining + (?4 - stock), stock = ?4, per_user_limit = ?5, \
                 ends_at_ms = ?6, waiting_room = ?7, version = ?8, paused = ?9 \
             WHERE id = ?1 AND version = ?8 - 1",
        )?
        .execute(params![
            sale.id.as_str(),
            sale.name,
            sale.description,
            i64::try_from(sale.stock).unwrap_or(i64::MAX),
            sale.per_user_limit,
            sale.ends_at.map(millis),
            crate::store::waiting_room_text(sale.waiting_room.as_ref()),
            version,
            sale.paused,
        ])?;
    if changed == 1 {
        outbox::record_sale_event(connection, &sale.id, revision.event(), revision.at)?;
        return Ok(Ok(()));
    }
    let stored: Option<i64> = connection
        .prepare_cached("SELECT version FROM sales WHERE id = ?1")?
        .query_row([sale.id.as_str()], |row| row.get(0))
        .optional()?;
    Ok(match stored {
        None => Err(ChangeError::NotFound),
        Some(stored) if stored >= version => Ok(()),
        Some(stored) => Err(ChangeError::Conflict {
            stored: u64::try_from(stored).unwrap_or(0),
        }),
    })
}

fn constraint_message(error: &rusqlite::Error) -> Option<&str> {
    match error {
        rusqlite::Error::SqliteFailure(failure, message)
            if failure.code == ErrorCode::ConstraintViolation =>
        {
            Some(message.as_deref().unwrap_or(""))
        }
        _ => None,
    }
}

fn insert_order(
    connection: &Connection,
    order: &Order,
) -> rusqlite::Result<Result<(), InsertError>> {
    let inserted = connection
        .prepare_cached(
            "INSERT INTO orders (id, sale_id, user_id, quantity, status, created_at_ms, \
             expires_at_ms, paid_at_ms, idempotency_key, access_code) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            order.id.as_str(),
            order.sale_id.as_str(),
            order.user_id.as_str(),
            order.quantity,
            order.status.as_str(),
            millis(order.created_at),
            millis(order.expires_at),
            order.paid_at.map(millis),
            order.idempotency_key,
            order.access_code,
        ]);
    // A new order has no payment yet (it is made by `pay`, a transition).
    debug_assert!(order.payment.is_none() && order.refunded_at.is_none());
    let error = match inserted {
        Ok(_) => {
            let remaining_before = outbox::remaining(connection, &order.sale_id)?
                + if order.status.is_active() {
                    u64::from(order.quantity)
                } else {
                    0
                };
            outbox::record_order_change(
                connection,
                order,
                order_event(order.status),
                order.created_at,
                remaining_before,
            )?;
            return Ok(Ok(()));
        }
        Err(error) => error,
    };
    // A failed statement is undone by SQLite on its own; the batch's transaction goes on.
    let Some(message) = constraint_message(&error) else {
        return Err(error);
    };
    // A repeated idempotency key answers with its order whichever constraint fired first (the
    // per-user trigger runs before the unique index is checked).
    if order.idempotency_key.is_some() {
        if let Some(existing) = order_by_key(connection, order)? {
            return Ok(Err(InsertError::SameKey(Box::new(existing))));
        }
    }
    Ok(Err(if message.contains("per_user_limit") {
        InsertError::LimitExceeded
    } else if message.contains("stock_left") {
        InsertError::SoldOut
    } else {
        InsertError::Store(StoreError::Failed(message.to_owned()))
    }))
}

fn order_by_key(connection: &Connection, order: &Order) -> rusqlite::Result<Option<Order>> {
    connection
        .prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders \
             WHERE sale_id = ?1 AND user_id = ?2 AND idempotency_key = ?3"
        ))?
        .query_row(
            params![
                order.sale_id.as_str(),
                order.user_id.as_str(),
                order.idempotency_key
            ],
            rows::order,
        )
        .optional()
}

fn load_order(connection: &Connection, order_id: &OrderId) -> rusqlite::Result<Option<Order>> {
    connection
        .prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))?
        .query_row([order_id.as_str()], rows::order)
        .optional()
}

/// Records an order as a change left it, and the change's events. Leaving an active status
/// owes the gate a return, recorded with the change itself (the stock itself comes back by the
/// `orders_return_stock` trigger).
fn write_change(
    connection: &Connection,
    before: &Order,
    outcome: &Outcome,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let remaining_before = outbox::remaining(connection, &before.sale_id)?;
    let order = &outcome.order;
    let payment = order.payment.as_deref();
    connection
        .prepare_cached(
            "UPDATE orders SET status = ?2, paid_at_ms = ?3, \
             stock_returned = stock_returned AND NOT ?4, refunded_at_ms = ?5, \
             payment_provider = ?6, payment_intent_id = ?7, payment_client_secret = ?8, \
             payment_state = ?9, payment_refund_id = ?10 WHERE id = ?1",
        )?
        .execute(params![
            order.id.as_str(),
            order.status.as_str(),
            order.paid_at.map(millis),
            outcome.releases(before),
            order.refunded_at.map(millis),
            payment.map(|payment| payment.provider.as_str()),
            payment.map(|payment| payment.intent_id.as_str()),
            payment.and_then(|payment| payment.client_secret.as_deref()),
            payment.map(|payment| payment.state.as_str()),
            payment.and_then(|payment| payment.refund_id.as_deref()),
        ])?;
    match outcome.event {
        Some(event) => outbox::record_order_change(connection, order, event, now, remaining_before),
        None => Ok(()),
    }
}

fn stock_returned(connection: &Connection, order_ids: &[OrderId]) -> rusqlite::Result<()> {
    let mut statement =
        connection.prepare_cached("UPDATE orders SET stock_returned = 1 WHERE id = ?1")?;
    for order_id in order_ids {
        statement.execute([order_id.as_str()])?;
    }
    Ok(())
}

fn transition(
    connection: &Connection,
    order_id: &OrderId,
    action: &Action,
    actor: &Actor,
    now: Timestamp,
) -> rusqlite::Result<Result<Transition, TransitionError>> {
    let Some(before) = load_order(connection, order_id)? else {
        return Ok(Err(TransitionError::NotFound));
    };
    let outcome = outcome(&before, action, actor, now);
    if outcome.changed {
        write_change(connection, &before, &outcome, now)?;
    }
    Ok(Ok(Transition {
        released: outcome.releases(&before),
        changed: outcome.changed,
        order: outcome.order,
        refusal: outcome.refusal,
    }))
}

fn expire_due(connection: &Connection, now: Timestamp, max: usize) -> rusqlite::Result<Vec<Order>> {
    // Orders with an open intent are the payments sweep's: it asks the provider first.
    let due: Vec<Order> = connection
        .prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders \
             WHERE status = 'pending_payment' AND expires_at_ms <= ?1 \
               AND payment_state IS NOT 'open' \
             ORDER BY expires_at_ms LIMIT ?2"
        ))?
        .query_map(
            params![millis(now), i64::try_from(max).unwrap_or(i64::MAX)],
            rows::order,
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut expired = Vec::with_capacity(due.len());
    for before in due {
        let outcome = outcome(&before, &Action::Expire, &Actor::Admin, now);
        if outcome.changed {
            write_change(connection, &before, &outcome, now)?;
            expired.push(outcome.order);
        }
    }
    Ok(expired)
}
