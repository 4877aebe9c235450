//! The write commands of the embedded stores, as their single writer thread receives them, and
//! the replies it holds back until the batch holding them is durable.

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{Action, Actor, Order, OrderId, Sale, SaleRevision};
use crate::store::{ChangeError, InsertError, StoreError, Transition, TransitionError};
use crate::BoxFuture;

type Reply<T> = oneshot::Sender<T>;

pub enum Command {
    CreateSale {
        sale: Box<Sale>,
        reply: Reply<Result<(), StoreError>>,
    },
    /// Drops the events that took effect before `before` (the retention).
    PruneEvents {
        before: Timestamp,
        reply: Reply<Result<u64, StoreError>>,
    },
    InsertOrder {
        order: Box<Order>,
        reply: Reply<Result<(), InsertError>>,
    },
    /// A sale's next version, recorded with its event.
    ChangeSale {
        revision: Box<SaleRevision>,
        reply: Reply<Result<(), ChangeError>>,
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
    /// The gate has these orders' stock back.
    StockReturned {
        order_ids: Vec<OrderId>,
        reply: Reply<Result<(), StoreError>>,
    },
    Barrier {
        reply: Reply<Result<(), StoreError>>,
    },
    Close {
        reply: Reply<Result<(), StoreError>>,
    },
}

/// A reply held back until its transaction commits, with what the command did (or the error
/// that undid it alone).
pub enum Pending {
    Unit(Reply<Result<(), StoreError>>, Result<(), StoreError>),
    Insert(Reply<Result<(), InsertError>>, Result<(), InsertError>),
    Change(Reply<Result<(), ChangeError>>, Result<(), ChangeError>),
    Transition(
        Reply<Result<Transition, TransitionError>>,
        Result<Transition, TransitionError>,
    ),
    Expired(
        Reply<Result<Vec<Order>, StoreError>>,
        Result<Vec<Order>, StoreError>,
    ),
    Count(Reply<Result<u64, StoreError>>, Result<u64, StoreError>),
}

impl Pending {
    pub fn send_committed(self) {
        // A receiver that went away (a client that disconnected) needs no answer; what it asked
        // for is committed all the same.
        match self {
            Self::Unit(reply, result) => drop(reply.send(result)),
            Self::Insert(reply, result) => drop(reply.send(result)),
            Self::Change(reply, result) => drop(reply.send(result)),
            Self::Transition(reply, result) => drop(reply.send(result)),
            Self::Expired(reply, result) => drop(reply.send(result)),
            Self::Count(reply, result) => drop(reply.send(result)),
        }
    }

    pub fn send_failed(self, message: &str) {
        let error = || StoreError::Failed(message.to_owned());
        match self {
            Self::Unit(reply, _) => drop(reply.send(Err(error()))),
            Self::Insert(reply, _) => drop(reply.send(Err(InsertError::Store(error())))),
            Self::Change(reply, _) => drop(reply.send(Err(ChangeError::Store(error())))),
            Self::Transition(reply, _) => drop(reply.send(Err(TransitionError::Store(error())))),
            Self::Expired(reply, _) => drop(reply.send(Err(error()))),
            Self::Count(reply, _) => drop(reply.send(Err(error()))),
        }
    }
}

impl Command {
    /// Answers a command that never reached a transaction.
    pub fn fail(self, message: &str) {
        self.refuse(|| StoreError::Failed(message.to_owned()));
    }

    /// Answers a command that never reached a transaction with the error `error` makes.
    pub fn refuse(self, error: impl Fn() -> StoreError) {
        match self {
            Self::CreateSale { reply, .. }
            | Self::StockReturned { reply, .. }
            | Self::Barrier { reply }
            | Self::Close { reply } => drop(reply.send(Err(error()))),
            Self::InsertOrder { reply, .. } => drop(reply.send(Err(InsertError::Store(error())))),
            Self::ChangeSale { reply, .. } => drop(reply.send(Err(ChangeError::Store(error())))),
            Self::Transition { reply, .. } => {
                drop(reply.send(Err(TransitionError::Store(error()))))
            }
            Self::ExpireDue { reply, .. } => drop(reply.send(Err(error()))),
            Self::PruneEvents { reply, .. } => drop(reply.send(Err(error()))),
        }
    }
}

/// The sending side of a writer's command queue.
pub struct CommandQueue {
    sender: mpsc::Sender<Command>,
}

impl CommandQueue {
    /// A queue of at most `capacity` waiting commands, and its receiving end for the writer.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Command>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Self { sender }, receiver)
    }

    /// Sends a command that waits for room in the queue (admin and life-cycle writes).
    pub async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)
    }

    /// Queues an order at once (a full queue sheds it as `overloaded`), so that dropping the
    /// returned future does not lose it; the future resolves once it is durable or refused.
    pub fn insert_order(&self, order: Order) -> BoxFuture<'static, Result<(), InsertError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .sender
            .try_send(Command::InsertOrder {
                order: Box::new(order),
                reply,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            });
        Box::pin(async move {
            queued?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub fn create_sale(&self, sale: &Sale) -> BoxFuture<'_, Result<(), StoreError>> {
        let sale = Box::new(sale.clone());
        Box::pin(async move {
            self.call(|reply| Command::CreateSale { sale, reply })
                .await?
        })
    }

    pub fn change_sale(&self, revision: &SaleRevision) -> BoxFuture<'_, Result<(), ChangeError>> {
        let revision = Box::new(revision.clone());
        Box::pin(async move {
            self.call(|reply| Command::ChangeSale { revision, reply })
                .await?
        })
    }

    pub fn prune_events(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.call(|reply| Command::PruneEvents { before, reply })
                .await?
        })
    }

    pub fn transition(
        &self,
        order_id: &OrderId,
        action: Action,
        actor: &Actor,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Transition, TransitionError>> {
        let (order_id, actor) = (order_id.clone(), actor.clone());
        Box::pin(async move {
            self.call(|reply| Command::Transition {
                order_id,
                action,
                actor,
                now,
                reply,
            })
            .await?
        })
    }

    pub fn expire_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(async move {
            self.call(|reply| Command::ExpireDue { now, max, reply })
                .await?
        })
    }

    pub fn barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.call(|reply| Command::Barrier { reply }).await? })
    }

    pub fn stock_returned(&self, order_ids: Vec<OrderId>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if order_ids.is_empty() {
                return Ok(());
            }
            self.call(|reply| Command::StockReturned { order_ids, reply })
                .await?
        })
    }
}

/// The writer's thread, joined when the store closes, or when it is dropped without closing
/// (its queue, dropped first, ends it): what the writer does as it stops (give back reserved
/// space) is then done before the process goes on, a failed start included.
pub struct WriterThread(std::sync::Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        let thread = self.0.get_mut().ok().and_then(|thread| thread.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl WriterThread {
    pub fn new(thread: std::thread::JoinHandle<()>) -> Self {
        Self(std::sync::Mutex::new(Some(thread)))
    }

    /// Has the writer commit what is queued and stop, and waits for its thread.
    pub async fn close(&self, queue: &CommandQueue) -> Result<(), StoreError> {
        let closed = queue.call(|reply| Command::Close { reply }).await;
        let thread = self.0.lock().ok().and_then(|mut thread| thread.take());
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|error| StoreError::Failed(error.to_string()))?
                .map_err(|_| StoreError::Failed("the writer thread panicked".into()))?;
        }
        match closed {
            Ok(result) => result,
            // Already closed by an earlier call: nothing left to flush.
            Err(StoreError::Closed) => Ok(()),
            Err(error) => Err(error),
        }
    }
}
