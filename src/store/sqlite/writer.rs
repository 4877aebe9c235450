//! The single writer: one thread owns the write connection and commits many queued commands per
//! transaction (group commit). A command's reply is sent only after the transaction holding it
//! is committed, so a client hears "done" only for what is on disk.

use jiff::Timestamp;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction as SqlTransaction};
use tokio::sync::{mpsc, oneshot};

use super::rows::{self, millis, ORDER_COLUMNS};
use crate::domain::{decide, Action, Actor, Order, OrderId, OrderStatus, Sale, Verdict};
use crate::metrics::Metrics;
use crate::store::{InsertError, StoreError, Transition, TransitionError};

type Reply<T> = oneshot::Sender<T>;

pub enum Command {
    CreateSale {
        sale: Box<Sale>,
        reply: Reply<Result<(), StoreError>>,
    },
    InsertOrder {
        order: Box<Order>,
        reply: Reply<Result<(), InsertError>>,
    },
    Transition {
        order_id: OrderId,
        action: Action,
        actor: Actor,
        now: Timestamp,
        reply: Reply<Result<Transition, TransitionError>>,
    },
    ExpireDue {
        now: Timestamp,
        max: usize,
        reply: Reply<Result<Vec<Order>, StoreError>>,
    },
    Barrier {
        reply: Reply<Result<(), StoreError>>,
    },
    Close {
        reply: Reply<Result<(), StoreError>>,
    },
}

/// A reply held back until its transaction commits.
enum Pending {
    Unit(Reply<Result<(), StoreError>>),
    Insert(Reply<Result<(), InsertError>>, Result<(), InsertError>),
    Transition(
        Reply<Result<Transition, TransitionError>>,
        Result<Transition, TransitionError>,
    ),
    Expired(Reply<Result<Vec<Order>, StoreError>>, Vec<Order>),
}

impl Pending {
    fn send_committed(self) {
        // A receiver that went away (a client that disconnected) needs no answer; what it asked
        // for is committed all the same.
        match self {
            Self::Unit(reply) => drop(reply.send(Ok(()))),
            Self::Insert(reply, result) => drop(reply.send(result)),
            Self::Transition(reply, result) => drop(reply.send(result)),
            Self::Expired(reply, orders) => drop(reply.send(Ok(orders))),
        }
    }

    fn send_failed(self, message: &str) {
        let error = || StoreError::Failed(message.to_owned());
        match self {
            Self::Unit(reply) => drop(reply.send(Err(error()))),
            Self::Insert(reply, _) => drop(reply.send(Err(InsertError::Store(error())))),
            Self::Transition(reply, _) => drop(reply.send(Err(TransitionError::Store(error())))),
            Self::Expired(reply, _) => drop(reply.send(Err(error()))),
        }
    }
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

    /// Applies and commits one batch; returns whether the writer was asked to close.
    fn commit(&mut self, batch: &mut Vec<Command>) -> bool {
        let mut pending = Vec::with_capacity(batch.len());
        let mut close = None;
        let outcome = (|| -> rusqlite::Result<()> {
            let transaction = self.connection.transaction()?;
            for command in batch.drain(..) {
                match command {
                    Command::Close { reply } => close = Some(reply),
                    command => pending.push(apply(&transaction, command)?),
                }
            }
            transaction.commit()
        })();
        match outcome {
            Ok(()) => pending.into_iter().for_each(Pending::send_committed),
            Err(error) => {
                tracing::error!(%error, "order store commit failed");
                let message = error.to_string();
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

/// Applies one command inside the batch's transaction. An error here aborts the whole batch;
/// refusals by constraints are ordinary results.
fn apply(transaction: &SqlTransaction<'_>, command: Command) -> rusqlite::Result<Pending> {
    Ok(match command {
        Command::CreateSale { sale, reply } => {
            create_sale(transaction, &sale)?;
            Pending::Unit(reply)
        }
        Command::InsertOrder { order, reply } => {
            let result = insert_order(transaction, &order)?;
            Pending::Insert(reply, result)
        }
        Command::Transition {
            order_id,
            action,
            actor,
            now,
            reply,
        } => {
            let result = transition(transaction, &order_id, action, &actor, now)?;
            Pending::Transition(reply, result)
        }
        Command::ExpireDue { now, max, reply } => {
            Pending::Expired(reply, expire_due(transaction, now, max)?)
        }
        Command::Barrier { reply } | Command::Close { reply } => Pending::Unit(reply),
    })
}

fn create_sale(transaction: &SqlTransaction<'_>, sale: &Sale) -> rusqlite::Result<()> {
    let stock = i64::try_from(sale.stock).unwrap_or(i64::MAX);
    transaction
        .prepare_cached(
            "INSERT INTO sales (id, name, description, stock, remaining, per_user_limit, \
             price_cents, starts_at_ms, ends_at_ms, payment_window_secs, created_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
        ])?;
    Ok(())
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
    transaction: &SqlTransaction<'_>,
    order: &Order,
) -> rusqlite::Result<Result<(), InsertError>> {
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO orders (id, sale_id, user_id, quantity, status, created_at_ms, \
             expires_at_ms, paid_at_ms, idempotency_key) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
        ]);
    let error = match inserted {
        Ok(_) => return Ok(Ok(())),
        Err(error) => error,
    };
    // A failed statement is undone by SQLite on its own; the batch's transaction goes on.
    let Some(message) = constraint_message(&error) else {
        return Err(error);
    };
    // A repeated idempotency key answers with its order whichever constraint fired first (the
    // per-user trigger runs before the unique index is checked).
    if order.idempotency_key.is_some() {
        if let Some(existing) = order_by_key(transaction, order)? {
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

fn order_by_key(
    transaction: &SqlTransaction<'_>,
    order: &Order,
) -> rusqlite::Result<Option<Order>> {
    transaction
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

fn load_order(
    transaction: &SqlTransaction<'_>,
    order_id: &OrderId,
) -> rusqlite::Result<Option<Order>> {
    transaction
        .prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))?
        .query_row([order_id.as_str()], rows::order)
        .optional()
}

fn set_status(
    transaction: &SqlTransaction<'_>,
    order: &mut Order,
    status: OrderStatus,
    now: Timestamp,
) -> rusqlite::Result<()> {
    if status == OrderStatus::Paid {
        order.paid_at = Some(now);
    }
    order.status = status;
    transaction
        .prepare_cached("UPDATE orders SET status = ?2, paid_at_ms = ?3 WHERE id = ?1")?
        .execute(params![
            order.id.as_str(),
            status.as_str(),
            order.paid_at.map(millis)
        ])?;
    Ok(())
}

fn transition(
    transaction: &SqlTransaction<'_>,
    order_id: &OrderId,
    action: Action,
    actor: &Actor,
    now: Timestamp,
) -> rusqlite::Result<Result<Transition, TransitionError>> {
    let Some(mut order) = load_order(transaction, order_id)? else {
        return Ok(Err(TransitionError::NotFound));
    };
    let was_active = order.status.is_active();
    let refusal = match decide(&order, action, actor, now) {
        Verdict::Apply(status) => {
            set_status(transaction, &mut order, status, now)?;
            None
        }
        Verdict::Unchanged => None,
        Verdict::ExpireThenRefuse(refusal) => {
            set_status(transaction, &mut order, OrderStatus::Expired, now)?;
            Some(refusal)
        }
        Verdict::Refuse(refusal) => Some(refusal),
    };
    let released = was_active && !order.status.is_active();
    Ok(Ok(Transition {
        order,
        released,
        refusal,
    }))
}

fn expire_due(
    transaction: &SqlTransaction<'_>,
    now: Timestamp,
    max: usize,
) -> rusqlite::Result<Vec<Order>> {
    let mut due: Vec<Order> = transaction
        .prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders \
             WHERE status = 'pending_payment' AND expires_at_ms <= ?1 \
             ORDER BY expires_at_ms LIMIT ?2"
        ))?
        .query_map(
            params![millis(now), i64::try_from(max).unwrap_or(i64::MAX)],
            rows::order,
        )?
        .collect::<rusqlite::Result<_>>()?;
    for order in &mut due {
        if decide(order, Action::Expire, &Actor::Admin, now) == Verdict::Apply(OrderStatus::Expired)
        {
            set_status(transaction, order, OrderStatus::Expired, now)?;
        }
    }
    due.retain(|order| order.status == OrderStatus::Expired);
    Ok(due)
}
