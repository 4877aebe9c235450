//! Order routes: show, list, pay, cancel.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;

use super::error::ApiError;
use super::extract::{page_limit, PathId};
use super::wire::{ErrorBody, OrderBody, OrderPageBody, OrdersQuery};
use super::AppState;
use crate::auth::Principal;

const PAGE_LIMIT_DEFAULT: usize = 50;

#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("buyer" = []), ("admin" = [])),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "order_not_found (also for another buyer's order)", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications from this address (with Retry-After)", body = ErrorBody),
    ))]
pub async fn show_order(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(order_id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state.service.order(&principal.actor(), &order_id).await?;
    Ok(Json(OrderBody::from(&order)))
}

#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    params(
        ("sale_id" = Option<String>, Query, max_length = 64, description = "Only this sale's orders"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "1 to 500; default 50"),
        ("cursor" = Option<String>, Query, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$",
            description = "next_cursor of the previous page"),
    ),
    security(("buyer" = []), ("admin" = [])),
    responses(
        (status = 200, description = "Newest first: a buyer's own orders, or all for the admin", body = OrderPageBody),
        (status = 400, description = "invalid_request (limit or cursor)", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications from this address (with Retry-After)", body = ErrorBody),
    ))]
pub async fn list_orders(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<OrdersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OrderPageBody>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let limit = match query.limit.as_deref() {
        None => PAGE_LIMIT_DEFAULT,
        Some(text) => page_limit(text)?,
    };
    let page = state
        .service
        .orders(
            &principal.actor(),
            query.sale_id.as_deref(),
            query.cursor.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(OrderPageBody {
        orders: page.orders.iter().map(OrderBody::from).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

#[utoipa::path(post, path = "/api/v1/orders/{order_id}/pay", tag = "orders",
    params(("order_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("buyer" = [])),
    responses(
        (status = 200, description = "Paid (paying again returns it unchanged)", body = OrderBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: only its buyer pays", body = ErrorBody),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "order_not_payable: expired, cancelled or past expires_at", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications from this address (with Retry-After)", body = ErrorBody),
    ))]
pub async fn pay(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(order_id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state.service.pay(&principal.actor(), &order_id).await?;
    Ok(Json(OrderBody::from(&order)))
}

#[utoipa::path(post, path = "/api/v1/orders/{order_id}/cancel", tag = "orders",
    params(("order_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("buyer" = []), ("admin" = [])),
    responses(
        (status = 200, description = "Cancelled, its stock back on sale (cancelling again returns it unchanged)", body = OrderBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "order_not_cancellable: paid or expired", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications from this address (with Retry-After)", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(order_id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state.service.cancel(&principal.actor(), &order_id).await?;
    Ok(Json(OrderBody::from(&order)))
}
