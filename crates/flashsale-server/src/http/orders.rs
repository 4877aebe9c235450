//! Order routes: show, list, pay, cancel, refund.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;

use super::error::ApiError;
use super::extract::{page_limit, OptionalJsonBody, PathId};
use super::wire::{ErrorBody, OrderBody, OrderPageBody, OrdersQuery, PayRequest};
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
    request_body(content = Option<PayRequest>,
        description = "Optional: a payment method from Stripe.js to confirm the order's intent with"),
    security(("buyer" = [])),
    responses(
        (status = 200, description = "The order with its payment: simulated, paid; stripe, its PaymentIntent (made once), the order pending until the provider says the money was taken. Paying a paid order returns it unchanged.", body = OrderBody),
        (status = 400, description = "invalid_request (the body)", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: only its buyer pays", body = ErrorBody),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "order_not_payable: expired, cancelled, refunded or past expires_at; payment_declined: the payment method was refused (the order waits for another)", body = ErrorBody),
        (status = 503, description = "unavailable: the payment provider did not answer, with Retry-After", body = ErrorBody),
    ))]
pub async fn pay(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(order_id): PathId,
    OptionalJsonBody(request): OptionalJsonBody<PayRequest>,
) -> Result<Json<OrderBody>, ApiError> {
    let payment_method = request.and_then(|request| request.payment_method);
    if let Some(method) = &payment_method {
        let valid = (1..=255).contains(&method.len())
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ApiError::invalid(
                "payment_method",
                "payment_method must be 1 to 255 letters, digits or _",
            ));
        }
    }
    let order = state
        .service
        .pay_order(&principal.actor(), &order_id, payment_method)
        .await?;
    Ok(Json(OrderBody::from(&order)))
}

#[utoipa::path(post, path = "/api/v1/orders/{order_id}/refund", tag = "orders",
    params(("order_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "Refunded: its units back on sale, the money back at the provider exactly once (payment.status refund_pending until the provider confirms); refunding again returns it unchanged", body = OrderBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: admin only", body = ErrorBody),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "order_not_refundable: not paid", body = ErrorBody),
    ))]
pub async fn refund(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(order_id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    principal.admin()?;
    let order = state.service.refund(&principal.actor(), &order_id).await?;
    Ok(Json(OrderBody::from(&order)))
}

#[utoipa::path(post, path = "/api/v1/orders/{order_id}/cancel", tag = "orders",
    params(("order_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("buyer" = []), ("admin" = [])),
    responses(
        (status = 200, description = "Cancelled, its stock back on sale (cancelling again returns it unchanged)", body = OrderBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "order_not_cancellable: paid, refunded or expired (also when its intent turns out to have taken the money: the order is then paid)", body = ErrorBody),
        (status = 503, description = "unavailable: the payment provider could not cancel the order's intent, with Retry-After", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(order_id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state.service.cancel(&principal.actor(), &order_id).await?;
    Ok(Json(OrderBody::from(&order)))
}
