//! The single writer: one thread applies queued commands to the book in batches, appends what
//! changed to the journal with one write, and syncs it once (group commit). A command's reply is
//! sent only after that sync, and reads wait for it too (`Shared::read`), so nothing a client
//! hears of can be lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::book::Book;
use super::codec::{self, EventFacts};
use super::space::Journal;
use super::{Shared, WriterBatching};
use crate::domain::OrderId;
use crate::metrics::Metrics;
use crate::store::commands::{Command, Pending};
use crate::store::StoreError;

pub struct Writer {
    pub shared: Arc<Shared>,
    pub journal: Journal,
    pub commands: mpsc::Receiver<Command>,
    pub batch_max: usize,
    pub batching: WriterBatching,
    pub metrics: Arc<Metrics>,
}

/// What one batch wrote and owes.
struct Batch {
    records: Vec<u8>,
    scratch: Vec<u8>,
    pending: Vec<Pending>,
}

/// Where the writer could not be made `SCHED_BATCH` (see `defer_to_the_runtime`), a batch
/// smaller than this waits for company while company keeps coming: a sync costs about the same
/// CPU for one order as for hundreds (measured with the default policy: with no wait, most
/// batches held one to eight orders and the syncs were a fifth of the server's CPU), and on a
/// fast disk the queue refills with only a few orders during one sync. The wait goes in steps and
/// stops at the first step that brings nothing, so a lone order waits one step, not the whole
/// delay. A `SCHED_BATCH` writer does not wait: see `run`.
const BATCH_FILL: usize = 256;
const GATHER_STEP: Duration = Duration::from_micros(250);
const GATHER_MAX: Duration = Duration::from_millis(2);

impl Writer {
    /// Takes what is queued, up to the batch's limit.
    fn drain(&mut self, commands: &mut Vec<Command>) {
        while commands.len() < self.batch_max {
            match self.commands.try_recv() {
                Ok(command) => commands.push(command),
                Err(_) => break,
            }
        }
    }

    /// Waits for more commands while they keep coming (see `BATCH_FILL`).
    fn gather(&mut self, commands: &mut Vec<Command>) {
        let fill = BATCH_FILL.min(self.batch_max);
        let deadline = Instant::now() + GATHER_MAX;
        while commands.len() < fill && Instant::now() < deadline {
            std::thread::sleep(GATHER_STEP);
            let before = commands.len();
            self.drain(commands);
            if commands.len() == before {
                return;
            }
        }
    }

    /// Makes room in the journal for the worst case of what the commands write, before any of
    /// them changes memory: returns how many of them fit (an expiry sweep is cut down to what
    /// fits) and the room left after them. On a full disk the rest are refused unapplied.
    fn make_room(&mut self, commands: &mut [Command]) -> (usize, u64) {
        // An expiry sweep asks for up to `max` orders, most rounds for none: it is cut to the
        // orders due, so its rounds do not grow the file for nothing; a pruning of the outbox
        // that finds nothing to prune writes nothing either.
        let mut prunes = false;
        if commands.iter().any(|command| {
            matches!(
                command,
                Command::ExpireDue { .. } | Command::PruneEvents { .. }
            )
        }) {
            let book = self.shared.book.read().unwrap_or_else(|p| p.into_inner());
            for command in commands.iter_mut() {
                match command {
                    Command::ExpireDue { now, max, .. } => *max = book.due_count(*now, *max),
                    Command::PruneEvents { before, .. } => {
                        prunes |= book.has_events_before(*before);
                    }
                    _ => {}
                }
            }
        }
        let record_bound = |command: &Command| match command {
            Command::PruneEvents { .. } if !prunes => 0,
            command => record_bound(command),
        };
        let total = commands
            .iter()
            .map(record_bound)
            .fold(0, u64::saturating_add);
        let room = self.journal.room_for(total);
        let mut needed = 0;
        for (index, command) in commands.iter_mut().enumerate() {
            let bound = record_bound(command);
            if needed + bound <= room {
                needed += bound;
                continue;
            }
            if let Command::ExpireDue { max, .. } = command {
                let fits = (room - needed) / codec::ORDER_RECORD_MAX;
                if fits > 0 {
                    *max = (*max).min(usize::try_from(fits).unwrap_or(usize::MAX));
                    needed += fits * codec::ORDER_RECORD_MAX;
                    continue;
                }
            }
            return (index, room - needed);
        }
        (commands.len(), room - needed)
    }

    /// Runs until a `Close` command is handled or every sender is gone.
    ///
    /// A `SCHED_BATCH` writer takes what is queued when it gets the core and does not sleep for
    /// more: woken by the first command, it runs once the runtime thread blocks or its turn
    /// comes, and the orders that arrived meanwhile are its batch. Sleeping in steps on top of
    /// that put a wait for the core behind every step (up to a 4-ms scheduler tick each while the
    /// runtime was busy): measured, pinned, three alternating runs of 300,000 winners, without the
    /// steps 44,633–47,137 durable orders/s at 20.2–21.2 µs of server CPU each, with them
    /// 36,592–44,803/s at 21.1–25.8 µs (batches of ~113 orders instead of ~190).
    pub fn run(mut self) {
        let deferring = match self.batching {
            WriterBatching::ByScheduler => defer_to_the_runtime(),
            WriterBatching::ByWaiting => false,
        };
        let mut commands = Vec::with_capacity(self.batch_max);
        let mut batch = Batch {
            records: Vec::with_capacity(1 << 20),
            scratch: Vec::with_capacity(512),
            pending: Vec::with_capacity(self.batch_max),
        };
        // After a failed sync the book may hold changes the disk does not: the store stops
        // writing (a restart replays the journal), as databases do after an fsync error.
        let mut failure: Option<String> = None;
        loop {
            let Some(first) = self.commands.blocking_recv() else {
                return;
            };
            commands.push(first);
            self.drain(&mut commands);
            if !deferring {
                self.gather(&mut commands);
            }
            self.metrics.record_commit_batch(commands.len());
            let mut close = None;
            if let Some(message) = &failure {
                for command in commands.drain(..) {
                    match command {
                        Command::Close { reply } => close = Some(reply),
                        command => command.fail(message),
                    }
                }
            } else if let Some(reason) = self.journal.starved() {
                // Nothing is applied, so memory stays what the disk holds; reads go on.
                for command in commands.drain(..) {
                    match command {
                        Command::Close { reply } => close = Some(reply),
                        Command::Barrier { reply } => drop(reply.send(Ok(()))),
                        command => command.refuse(|| StoreError::NoSpace(reason.clone())),
                    }
                }
            } else {
                let (fitting, room_left) = self.make_room(&mut commands);
                let refused = fitting < commands.len();
                let sequence = {
                    let mut book = self.shared.book.write().unwrap_or_else(|p| p.into_inner());
                    for (index, command) in commands.drain(..).enumerate() {
                        match command {
                            Command::Close { reply } => close = Some(reply),
                            command @ Command::Barrier { .. } => {
                                apply(&mut book, command, &mut batch);
                            }
                            command if index >= fitting => command.refuse(|| {
                                StoreError::NoSpace("the data directory's disk is full".into())
                            }),
                            command => apply(&mut book, command, &mut batch),
                        }
                    }
                    self.shared.applied.fetch_add(1, Ordering::AcqRel) + 1
                };
                let written = if batch.records.is_empty() {
                    Ok(())
                } else {
                    self.journal.append(&batch.records)
                };
                batch.records.clear();
                match written {
                    Ok(()) => {
                        self.shared.durable_through(sequence);
                        batch.pending.drain(..).for_each(Pending::send_committed);
                        if refused && room_left < codec::ORDER_RECORD_MAX {
                            self.journal.starve();
                        }
                    }
                    Err(error) => {
                        let message = format!("writing the order journal: {error}");
                        tracing::error!(error = %message, "the order store stops writing");
                        self.shared.fail(&message);
                        for reply in batch.pending.drain(..) {
                            reply.send_failed(&message);
                        }
                        failure = Some(message);
                    }
                }
            }
            if let Some(reply) = close {
                drop(reply.send(match &failure {
                    None => Ok(()),
                    Some(message) => Err(StoreError::Failed(message.clone())),
                }));
                return;
            }
        }
    }
}

/// Marks this thread `SCHED_BATCH`: woken (a command, a finished sync), it waits for the runtime
/// thread to block or for its turn instead of preempting it. Preempting cost a runtime in the
/// middle of its requests two switches per wake and, on a core both share, made the crowd's
/// orders queue behind each other (measured, pinned, six alternating runs of 300,000 winners:
/// winners ÷ sold-out 0.51 → 0.57 on average, 6 of 6 runs at 0.5 or more instead of 3; open loop at
/// 34,000/s with 10,000 units: winners' p99 18.8 and 73.2 ms → 6.0 and 6.1 ms). Fairness is kept:
/// the thread still gets its share of the core. A refusal (not Linux, or a policy forbidding it)
/// only costs that gain, and the writer gathers its batches by waiting instead. Says whether the
/// policy took.
fn defer_to_the_runtime() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: changes the calling thread's own policy; `param` is a valid struct that lives
        // through the call.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
            return true;
        }
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "the order journal's writer keeps the default scheduling policy"
        );
    }
    false
}

/// The most bytes of records a command can write.
fn record_bound(command: &Command) -> u64 {
    let orders = |count: usize| u64::try_from(count).unwrap_or(u64::MAX);
    match command {
        Command::CreateSale { .. } | Command::ChangeSale { .. } => codec::SALE_RECORD_MAX,
        Command::PruneEvents { .. } => codec::PRUNE_RECORD_MAX,
        Command::InsertOrder { .. } | Command::Transition { .. } => codec::ORDER_RECORD_MAX,
        Command::ExpireDue { max, .. } => orders(*max).saturating_mul(codec::ORDER_RECORD_MAX),
        Command::StockReturned { order_ids, .. } => {
            orders(order_ids.len()).saturating_mul(codec::ORDER_RECORD_MAX)
        }
        Command::Barrier { .. } | Command::Close { .. } => 0,
    }
}

fn record_order(book: &Book, batch: &mut Batch, order_id: &OrderId) {
    if let Some(stored) = book.order(order_id) {
        codec::put_order(&mut batch.records, &mut batch.scratch, stored);
    }
}

/// An order's new state with the events its change made, as one record.
fn record_order_change(book: &Book, batch: &mut Batch, order_id: &OrderId, facts: &[EventFacts]) {
    if let Some(stored) = book.order(order_id) {
        codec::put_order_change(&mut batch.records, &mut batch.scratch, stored, facts);
    }
}

/// Applies one command to the book and records what changed.
fn apply(book: &mut Book, command: Command, batch: &mut Batch) {
    let pending = match command {
        Command::CreateSale { sale, reply } => {
            let result = book.create_sale(&sale).map(|facts| {
                codec::put_sale_event(
                    &mut batch.records,
                    &mut batch.scratch,
                    codec::SALE_CHANGE,
                    &sale,
                    &facts,
                );
            });
            Pending::Unit(reply, result)
        }
        Command::ChangeSale { revision, reply } => {
            let result = book.change_sale(&revision).map(|facts| {
                if let Some(facts) = facts {
                    codec::put_sale_event(
                        &mut batch.records,
                        &mut batch.scratch,
                        codec::SALE_CHANGE,
                        &revision.sale,
                        &facts,
                    );
                }
            });
            Pending::Change(reply, result)
        }
        Command::PruneEvents { before, reply } => {
            // Recorded, so a replay prunes at the same point; the bytes go at the next
            // compaction.
            let pruned = book.prune_events(before);
            if pruned > 0 {
                codec::put_events_pruned(&mut batch.records, &mut batch.scratch, before);
            }
            Pending::Count(reply, Ok(pruned))
        }
        Command::InsertOrder { order, reply } => {
            let result = book
                .insert_order(&order)
                .map(|facts| record_order_change(book, batch, &order.id, &facts));
            Pending::Insert(reply, result)
        }
        Command::Transition {
            order_id,
            action,
            actor,
            now,
            reply,
        } => {
            let result = book.transition(&order_id, &action, &actor, now);
            if let Ok((transition, facts)) = &result {
                if !facts.is_empty() {
                    record_order_change(book, batch, &order_id, facts);
                } else if transition.changed {
                    record_order(book, batch, &order_id);
                }
            }
            Pending::Transition(reply, result.map(|(transition, _)| transition))
        }
        Command::ExpireDue { now, max, reply } => {
            let expired = book.expire_due(now, max);
            for (order, facts) in &expired {
                record_order_change(book, batch, &order.id, facts);
            }
            let expired = expired.into_iter().map(|(order, _)| order).collect();
            Pending::Expired(reply, Ok(expired))
        }
        Command::StockReturned { order_ids, reply } => {
            for order_id in book.stock_returned(&order_ids) {
                record_order(book, batch, &order_id);
            }
            Pending::Unit(reply, Ok(()))
        }
        Command::Barrier { reply } | Command::Close { reply } => Pending::Unit(reply, Ok(())),
    };
    batch.pending.push(pending);
}
