//! The event feed's routes (admin): a sale's events from a sequence on, and the sinks' state.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Json;

use super::error::{ok_json, ApiError};
use super::wire::{ErrorBody, EventPageBody, EventsQuery, SinkBody, SinkListBody};
use super::AppState;
use crate::auth::Principal;

pub const EVENTS_LIMIT_DEFAULT: usize = 100;
pub const EVENTS_LIMIT_MAX: usize = 1000;
/// The largest `after` the document allows (JSON's safe integers).
pub const AFTER_MAX: u64 = 9_007_199_254_740_991;

pub(super) fn whole(field: &str, text: &str, low: u64, high: u64) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .ok()
        .or_else(|| {
            text.parse::<f64>()
                .ok()
                .filter(|value| value.fract() == 0.0 && *value >= 0.0 && *value < 9.0e15)
                .map(|value| value as u64)
        })
        .filter(|value| (low..=high).contains(value))
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("{field} must be a whole number from {low} to {high}"),
            )
        })
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(
        ("sale_id" = String, Query, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$",
            description = "The sale whose events to read"),
        ("after" = Option<u64>, Query, minimum = 0, maximum = 9_007_199_254_740_991_f64,
            description = "Only events with a greater sequence; default 0 (from the first retained)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000; default 100"),
    ),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The sale's events in sequence order, each a CloudEvent 1.0; every event is readable for at least events_retention_days", body = EventPageBody),
        (status = 400, description = "invalid_request (sale_id, after or limit)", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
    ))]
pub async fn list_events(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    principal.admin()?;
    let Query(query) =
        query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let sale_id = query
        .sale_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::invalid("sale_id", "sale_id is required"))?;
    let after = match query.after.as_deref() {
        None => 0,
        Some(text) => whole("after", text, 0, AFTER_MAX)?,
    };
    let limit = match query.limit.as_deref() {
        None => EVENTS_LIMIT_DEFAULT,
        Some(text) => whole("limit", text, 1, EVENTS_LIMIT_MAX as u64)? as usize,
    };
    let page = state.service.events(&sale_id, after, limit).await?;
    let size: usize = page.events.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(size + page.events.len() + 48);
    out.extend_from_slice(br#"{"events":["#);
    for (at, event) in page.events.iter().enumerate() {
        if at > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event);
    }
    out.extend_from_slice(br#"],"next_after":"#);
    out.extend_from_slice(page.next_after.to_string().as_bytes());
    out.push(b'}');
    Ok(ok_json(out))
}

#[utoipa::path(get, path = "/api/v1/events/sinks", tag = "events",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Each configured sink: delivery on this node, lag, retries, dead letters", body = SinkListBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
    ))]
pub async fn list_sinks(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<SinkListBody>, ApiError> {
    principal.admin()?;
    let sinks = state.service.sinks().await?;
    Ok(Json(SinkListBody {
        sinks: sinks.iter().map(SinkBody::from).collect(),
    }))
}
