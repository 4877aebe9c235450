//! The waiting line of a sale: join it, and read one's place (and, once admitted, the pass).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;

use super::error::ApiError;
use super::events::{whole, AFTER_MAX};
use super::extract::{AccessCode, Arrived, PathId};
use super::wire::{ErrorBody, KeyBody, KeysBody, QueueLogBody, QueueLogQuery, QueueStatusBody};
use super::AppState;
use crate::auth::Principal;
use crate::service::{QueueView, LOG_PAGE_MAX};

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

#[utoipa::path(get, path = "/api/v1/sales/{sale_id}/queue/log", tag = "waiting room",
    params(
        ("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$"),
        ("after" = Option<u64>, Query, minimum = 0, maximum = 9_007_199_254_740_991_f64,
            description = "Only entries with a greater n; default 0"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000; default 1000"),
    ),
    responses(
        (status = 200, description = "Entries in place order (none until the draw has closed, 2 s after starts_at); the page that reaches the end of the line carries every checkpoint", body = QueueLogBody),
        (status = 400, description = "invalid_request (after or limit)", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "no_waiting_room; not_started (with starts_at): the log is public from starts_at on; no_verifiable_draw: a sale made before draws were committed", body = ErrorBody),
        (status = 503, description = "overloaded, with Retry-After", body = ErrorBody),
    ))]
pub async fn log(
    State(state): State<Arc<AppState>>,
    PathId(sale_id): PathId,
    query: Result<Query<QueueLogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<QueueLogBody>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let after = match query.after.as_deref() {
        None => 0,
        Some(text) => whole("after", text, 0, AFTER_MAX)?,
    };
    let limit = match query.limit.as_deref() {
        None => LOG_PAGE_MAX,
        Some(text) => whole("limit", text, 1, LOG_PAGE_MAX as u64)? as usize,
    };
    let page = state.service.queue_log(&sale_id, after, limit).await?;
    Ok(Json(QueueLogBody::of(&page)))
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "waiting room",
    responses(
        (status = 200, description = "The keys that sign the admission logs' checkpoints", body = KeysBody),
        (status = 503, description = "overloaded, with Retry-After", body = ErrorBody),
    ))]
pub async fn keys(State(state): State<Arc<AppState>>) -> Result<Json<KeysBody>, ApiError> {
    let keys = state.service.log_keys()?;
    Ok(Json(KeysBody {
        keys: keys
            .into_iter()
            .map(|key| KeyBody {
                kid: key.kid,
                alg: "Ed25519",
                public_key: key.public_key,
            })
            .collect(),
    }))
}
