//! Payment routes: Stripe's webhook (public: its signature is its credential) and what the
//! storefront needs to take a payment.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;

use super::error::ApiError;
use super::wire::{ErrorBody, PaymentConfigBody, Status};
use super::AppState;

#[utoipa::path(post, path = "/api/v1/payments/stripe/webhook", tag = "payments",
    params(("Stripe-Signature" = String, Header,
        description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\" under the webhook secret>; at most 300 s old")),
    request_body(content = Object, description = "A Stripe event; payment_intent.succeeded makes its order paid (or, for an order already expired or cancelled, refunded)"),
    responses(
        (status = 200, description = "Taken (applied at most once; other event types change nothing)", body = Status),
        (status = 400, description = "invalid_signature: missing, forged or stale (nothing changed); invalid_request: not an event", body = ErrorBody),
        (status = 404, description = "not_found: this server does not pay through Stripe", body = ErrorBody),
        (status = 503, description = "unavailable: a backend did not answer (Stripe sends it again), with Retry-After", body = ErrorBody),
    ))]
pub async fn stripe_webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Status>, ApiError> {
    let body = body.map_err(|rejection| ApiError::unreadable_body(&rejection))?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    state
        .service
        .stripe_webhook(signature, body.to_vec())
        .await?;
    Ok(Json(Status { status: "ok" }))
}

#[utoipa::path(get, path = "/api/v1/payments/config", tag = "payments",
    responses((status = 200, description = "How the storefront takes a payment", body = PaymentConfigBody)))]
pub async fn payment_config(State(state): State<Arc<AppState>>) -> Json<PaymentConfigBody> {
    Json(PaymentConfigBody::from(state.service.payment_page()))
}
