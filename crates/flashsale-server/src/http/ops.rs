//! Operations routes: liveness, readiness, metrics, the OpenAPI document and the server's time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use std::time::{Duration, Instant};

use super::error::ApiError;
use super::wire::{ServerTime, Status};
use super::AppState;
use crate::service::Service;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every backend answers", body = Status),
        (status = 503, description = "unavailable: a backend does not answer, or the disk is full; error.reason says which and why", body = super::wire::ErrorBody),
    ))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Status>, ApiError> {
    match state.readiness.check(&state.service).await {
        Ok(()) => Ok(Json(Status { status: "ready" })),
        Err(reason) => Err(ApiError::not_ready(reason)),
    }
}

/// How long a readiness probe's answer is reused: a load balancer (or a crowd) polling
/// `/readyz` costs the backends one probe per period, whatever its rate.
const READINESS_REUSED_FOR: Duration = Duration::from_secs(1);

/// The last readiness probe's answer, and the lock that lets one probe run at a time.
#[derive(Default)]
pub struct Readiness {
    last: std::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    probing: tokio::sync::Mutex<()>,
}

impl Readiness {
    fn fresh(&self) -> Option<Result<(), String>> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < READINESS_REUSED_FOR)
            .map(|(_, answer)| answer.clone())
    }

    async fn check(&self, service: &Service) -> Result<(), String> {
        if let Some(answer) = self.fresh() {
            return answer;
        }
        let _one_probe = self.probing.lock().await;
        if let Some(answer) = self.fresh() {
            return answer;
        }
        let answer = service.ready().await.map_err(|error| error.to_string());
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((Instant::now(), answer.clone()));
        answer
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.clone(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/time", tag = "operations",
    responses((status = 200, description = "The server's clock (the sale windows' clock), so a \
        page can count down by it whatever the client's clock says", body = ServerTime)))]
pub async fn time(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(ServerTime {
            now: jiff::Timestamp::from_millisecond(state.service.now().as_millisecond())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                .to_string(),
        }),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
