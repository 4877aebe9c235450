//! The waiting room's use cases: join the line, read one's place, and check a purchase's pass.
//! The line keeps the facts (its admission changed by the gate at the moment the sale sells out,
//! gets stock back, is paused or gets a new rate); `domain::standing` says what they mean; this
//! file hands out passes.

use std::sync::Arc;

use jiff::Timestamp;

use super::error::ServiceError;
use super::queue_log::QueueLog;
use super::Service;
use crate::domain::{
    buyer_hash, standing, LineFacts, Rejection, Sale, SaleId, Standing, UserId, WaitingRoom,
    ARRIVAL_SLACK_MS,
};
use crate::line::{LineError, PassSigner, WaitingLine};

impl From<LineError> for ServiceError {
    fn from(error: LineError) -> Self {
        match error {
            LineError::Unavailable(message) => Self::Unavailable(message),
            LineError::Corrupt(message) => Self::Internal(message),
        }
    }
}

/// The line and the pass signer of a service whose sales may have a waiting room.
#[derive(Clone)]
pub struct WaitingRoomParts {
    pub line: Arc<dyn WaitingLine>,
    pub passes: PassSigner,
    /// The admission logs' signer and chains (`queue_log.rs`).
    pub log: Arc<QueueLog>,
}

/// A buyer's place, as the contract shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueView {
    pub sale_id: SaleId,
    pub state: &'static str,
    pub position: Option<u64>,
    pub eta_secs: Option<u64>,
    pub pass: Option<String>,
    pub pass_expires_at: Option<Timestamp>,
    /// Where the buyer finds their entry in the sale's admission log: its `n` (once the draw
    /// has closed) and `buyer_hash`.
    pub log_entry: Option<u64>,
    pub buyer_hash: [u8; 32],
    /// What this call changed, for the metrics: a new place, a pass handed out, a pass that had
    /// run out (the buyer went to the end).
    pub placed: bool,
    pub pass_issued: bool,
    pub pass_expired: bool,
}

fn room_of(sale: &Sale) -> Result<WaitingRoom, ServiceError> {
    sale.waiting_room.ok_or(ServiceError::NoWaitingRoom)
}

impl Service {
    fn waiting_room_parts(&self) -> Result<&WaitingRoomParts, ServiceError> {
        self.waiting_room.as_ref().ok_or_else(|| {
            ServiceError::Unavailable("this server has no waiting line configured".into())
        })
    }

    /// Joins the sale's line (again: the same place, or the end after a pass ran out). A code
    /// sale's line takes only a buyer with a valid code not bound to another buyer. `arrived`:
    /// the clock's reading when the request reached the server (the edge's), by which the line
    /// places the join (in the draw if before the start, however long the request waited).
    pub async fn join_line(
        &self,
        user: &UserId,
        sale_id: &str,
        access_code: Option<&str>,
        arrived: Option<Timestamp>,
    ) -> Result<QueueView, ServiceError> {
        let sale = self.known_sale(sale_id).await?;
        let room = room_of(&sale)?;
        let parts = self.waiting_room_parts()?;
        let now = self.clock.now();
        if sale.has_ended(now) {
            return Err(ServiceError::Rejected(Rejection::SaleEnded));
        }
        let opens_at = room.opens_at(&sale);
        if now < opens_at {
            return Err(ServiceError::QueueNotOpen { opens_at });
        }
        self.code_admits(&sale, user, access_code).await?;
        let joined = parts
            .line
            .join(&sale, user, now, arrived.unwrap_or(now))
            .await?
            .ok_or(ServiceError::Rejected(Rejection::SalePaused))?;
        let mut view = self
            .place_of(parts, &sale, &room, user, joined.facts)
            .await?;
        view.placed = joined.placed;
        view.pass_expired = joined.pass_expired;
        Ok(view)
    }

    /// The buyer's place; `NotInQueue` for a buyer who never joined or whose pass ran out.
    pub async fn line_status(
        &self,
        user: &UserId,
        sale_id: &str,
    ) -> Result<QueueView, ServiceError> {
        let sale = self.known_sale(sale_id).await?;
        let room = room_of(&sale)?;
        let parts = self.waiting_room_parts()?;
        let facts = parts
            .line
            .look(&sale, user, self.clock.now())
            .await?
            .ok_or(ServiceError::NotInQueue)?;
        self.place_of(parts, &sale, &room, user, facts).await
    }

    async fn place_of(
        &self,
        parts: &WaitingRoomParts,
        sale: &Sale,
        room: &WaitingRoom,
        user: &UserId,
        mut facts: LineFacts,
    ) -> Result<QueueView, ServiceError> {
        // Admission's stops and restarts were recorded when they happened (by the gate): what
        // the line says is how far it has gone.
        let mut view = QueueView {
            sale_id: sale.id.clone(),
            state: "waiting",
            position: None,
            eta_secs: None,
            pass: None,
            pass_expires_at: None,
            log_entry: facts
                .place
                .filter(|_| facts.now_ms >= sale.starts_at.as_millisecond() + ARRIVAL_SLACK_MS),
            buyer_hash: buyer_hash(user),
            placed: false,
            pass_issued: false,
            pass_expired: false,
        };
        let mut now_standing = standing(sale, &facts);
        if now_standing
            == (Standing::Admitted {
                pass_expires_ms: None,
            })
        {
            let wanted = room.pass_expiry_ms(facts.now_ms);
            let recorded = parts.line.record_pass(sale, user, wanted).await?;
            view.pass_issued = recorded == wanted;
            facts.pass_expires_ms = Some(recorded);
            now_standing = standing(sale, &facts);
        }
        match now_standing {
            Standing::Waiting { position, eta_secs } => {
                view.position = position;
                view.eta_secs = eta_secs;
            }
            Standing::SoldOut { position } => {
                view.state = "sold_out";
                view.position = Some(position);
            }
            Standing::Paused { position } => {
                view.state = "paused";
                view.position = Some(position);
            }
            Standing::Admitted { pass_expires_ms } => {
                let expires_ms = pass_expires_ms.unwrap_or(facts.now_ms);
                view.state = "admitted";
                view.position = Some(0);
                view.eta_secs = Some(0);
                view.pass = Some(parts.passes.sign(&sale.id, user, expires_ms));
                view.pass_expires_at = Timestamp::from_millisecond(expires_ms).ok();
            }
            Standing::PassExpired => return Err(ServiceError::NotInQueue),
            Standing::Ended => view.state = "ended",
        }
        Ok(view)
    }

    /// Whether a purchase of `sale` may go on: always without a waiting room, else only with a
    /// valid pass for this buyer and sale (one HMAC, no IO).
    pub(super) fn pass_admits(&self, sale: &Sale, user: &UserId, pass: Option<&str>) -> bool {
        if sale.waiting_room.is_none() {
            return true;
        }
        let (Some(parts), Some(pass)) = (self.waiting_room.as_ref(), pass) else {
            return false;
        };
        parts
            .passes
            .verify(pass, &sale.id, user, self.clock.now().as_millisecond())
            .is_some()
    }
}
