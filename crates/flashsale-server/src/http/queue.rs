//! The waiting line of a sale: join it, and read one's place (and, once admitted, the pass).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::extract::{AccessCode, Arrived, PathId};
use super::wire::{ErrorBody, QueueStatusBody};
use super::AppState;
use crate::auth::Principal;
use crate::service::QueueView;

fn reply(state: &AppState, view: &QueueView) -> Json<QueueStatusBody> {
    state
        .metrics
        .record_line(view.placed, view.pass_issued, view.pass_expired);
    Json(QueueStatusBody::from(view))
}

#[utoipa::path(post, path = "/api/v1/sales/{sale_id}/queue", tag = "waiting room",
    params(
        ("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$"),
        ("Access-Code" = Option<String>, Header,
            description = "Required on a sale with access codes: a code of the sale not bound to another buyer"),
    ),
    security(("buyer" = [])),
    responses(
        (status = 200, description = "The buyer's place (joining again keeps it; after a pass ran out, a new place at the end)", body = QueueStatusBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not a buyer token; access_code_required: a code sale and no code, an unknown one or another buyer's", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "no_waiting_room, queue_not_open (with opens_at), sale_ended or sale_paused", body = ErrorBody),
        (status = 429, description = "rate_limited, with Retry-After", body = ErrorBody),
        (status = 503, description = "overloaded, with Retry-After", body = ErrorBody),
    ))]
pub async fn join(
    State(state): State<Arc<AppState>>,
    principal: Result<Principal, ApiError>,
    PathId(sale_id): PathId,
    AccessCode(access_code): AccessCode,
    Arrived(arrived): Arrived,
) -> Result<Json<QueueStatusBody>, ApiError> {
    let principal = principal?;
    let view = state
        .service
        .join_line(
            principal.buyer()?,
            &sale_id,
            access_code.as_deref(),
            arrived,
        )
        .await?;
    Ok(reply(&state, &view))
}

#[utoipa::path(get, path = "/api/v1/sales/{sale_id}/queue", tag = "waiting room",
    params(("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("buyer" = [])),
    responses(
        (status = 200, description = "The buyer's place, and the pass once admitted", body = QueueStatusBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not a buyer token", body = ErrorBody),
        (status = 404, description = "sale_not_found, or not_in_queue (never joined, or the pass ran out: join again)", body = ErrorBody),
        (status = 409, description = "no_waiting_room", body = ErrorBody),
        (status = 429, description = "rate_limited, with Retry-After", body = ErrorBody),
        (status = 503, description = "overloaded, with Retry-After", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<Arc<AppState>>,
    principal: Result<Principal, ApiError>,
    PathId(sale_id): PathId,
) -> Result<Json<QueueStatusBody>, ApiError> {
    let principal = principal?;
    let view = state
        .service
        .line_status(principal.buyer()?, &sale_id)
        .await?;
    Ok(reply(&state, &view))
}
