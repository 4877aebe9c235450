//! The sale rules. This module knows nothing of HTTP, SQL, Redis or the clock: every function that
//! depends on time takes `now` as an argument, and nothing here does IO or awaits.

mod change;
mod draw;
mod event;
mod ids;
mod log_check;
mod order;
mod payment;
mod purchase;
mod queue_log;
mod sale;
mod waiting_room;

pub use change::{SaleChange, SaleChangeKind, SaleRevision, SaleUpdate, STOCK_TOTAL_MAX};
pub use draw::{hex, revealed_seed, Draw, DrawSeed, SEED_BYTES};
pub use event::{
    order_as_of, order_event, stock_event, Event, EventKind, EventSubject, OrderEvent, SaleEvent,
};
pub use ids::{generated_id_text, OrderId, SaleId, UserId, ID_LENGTH_MAX, USER_ID_LENGTH_MAX};
pub use log_check::{check_log, Break, CheckSummary, LogUnderCheck, OrderSeen};
pub use order::{
    decide, outcome, Action, Actor, Change, Order, OrderStatus, Outcome, Refusal, Verdict,
};
pub use payment::{Payment, PaymentState, ProviderFact};
pub use purchase::{check_quantity, check_window, new_order, Rejection, QUANTITY_ERROR};
pub use queue_log::{
    admitted_ms, buyer_hash, checkpoint_text, entry_hash, not_admitted_by, reached_ms, time_text,
    Checkpoint, LogEntry, Placed, CHECKPOINT_DOMAIN, GENESIS,
};
pub use sale::{InvalidField, Sale, SaleAccess, SaleDraft, SaleState};
pub use waiting_room::{
    arrival_ms, standing, Admission, AdmissionChange, LineFacts, Standing, WaitingRoom,
    WaitingRoomDraft, ARRIVAL_SLACK_MS,
};
