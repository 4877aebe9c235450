//! What a use case can answer instead of its result: one enum every caller maps (the HTTP edge
//! in `http/error.rs`), and how the backends' errors become it.

use crate::domain::{InvalidField, Rejection};
use crate::gate::GateError;
use crate::store::{StoreError, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("sale not found")]
    SaleNotFound,
    #[error("order not found")]
    OrderNotFound,
    #[error("not allowed")]
    Forbidden,
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("purchase refused: {0:?}")]
    Rejected(Rejection),
    #[error("the order can no longer be paid")]
    NotPayable,
    #[error("the order can no longer be cancelled")]
    NotCancellable,
    #[error("only a paid order can be refunded")]
    NotRefundable,
    #[error("the payment was declined: {0}")]
    PaymentDeclined(String),
    #[error("the webhook's signature does not check out: {0}")]
    BadSignature(String),
    #[error("this server does not pay through Stripe")]
    NoStripe,
    #[error("over capacity")]
    Overloaded,
    #[error("a backend is unavailable: {0}")]
    Unavailable(String),
    /// The store refuses writes until disk space is freed (it logged why, once).
    #[error("out of disk space: {0}")]
    NoSpace(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the sale has no waiting room")]
    NoWaitingRoom,
    #[error("the sale was made before draws were committed: it has no admission log")]
    NoVerifiableDraw,
    #[error("the waiting line opens at {opens_at}")]
    QueueNotOpen { opens_at: jiff::Timestamp },
    #[error("not in the waiting line")]
    NotInQueue,
    #[error("a valid queue pass is required")]
    QueuePassRequired,
    #[error("a valid access code of this buyer is required")]
    AccessCodeRequired,
    #[error("only {remaining} units remain")]
    InsufficientStock { remaining: u64 },
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Overloaded => Self::Overloaded,
            StoreError::Closed | StoreError::Failed(_) => Self::Unavailable(error.to_string()),
            StoreError::NoSpace(reason) => Self::NoSpace(reason),
        }
    }
}

impl From<GateError> for ServiceError {
    fn from(error: GateError) -> Self {
        match error {
            GateError::Corrupt(_) => Self::Internal(error.to_string()),
            GateError::UnknownSale(_) | GateError::Unavailable(_) => {
                Self::Unavailable(error.to_string())
            }
        }
    }
}

impl From<TransitionError> for ServiceError {
    fn from(error: TransitionError) -> Self {
        match error {
            TransitionError::NotFound => Self::OrderNotFound,
            TransitionError::Store(error) => error.into(),
        }
    }
}
