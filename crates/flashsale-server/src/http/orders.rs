//! Order routes: show, list, export, pay, cancel, refund.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;

use super::error::{csv_download, ApiError};
use super::extract::{page_limit, query_id, OptionalJsonBody, PathId};
use super::wire::{ErrorBody, ExportQuery, OrderBody, OrderPageBody, OrdersQuery, PayRequest};
use super::AppState;
use crate::auth::Principal;
use crate::domain::{OrderId, UserId};
use crate::service::{ExportFilter, ExportRow, Service};

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
        ("sale_id" = Option<String>, Query, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$",
            description = "Only this sale's orders"),
        ("user_id" = Option<String>, Query, min_length = 1, max_length = 64,
            description = "The admin only: this buyer's orders (a buyer sees their own whatever it says)"),
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
    query_id("sale_id", query.sale_id.as_deref())?;
    let buyer = query
        .user_id
        .as_deref()
        .map(|user| {
            UserId::parse(user)
                .ok_or_else(|| ApiError::invalid("user_id", "user_id must be 1 to 64 characters"))
        })
        .transpose()?;
    let limit = match query.limit.as_deref() {
        None => PAGE_LIMIT_DEFAULT,
        Some(text) => page_limit(text)?,
    };
    // The admin may look at one buyer's orders as that buyer sees them.
    let actor = match (principal.actor(), buyer) {
        (crate::domain::Actor::Admin, Some(buyer)) => crate::domain::Actor::Buyer(buyer),
        (actor, _) => actor,
    };
    let page = state
        .service
        .orders(
            &actor,
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

#[utoipa::path(get, path = "/api/v1/orders.csv", tag = "orders",
    params(
        ("sale_id" = Option<String>, Query, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$",
            description = "Only this sale's orders"),
        ("status" = Option<String>, Query, pattern = r"^(pending_payment|paid|cancelled|expired)$",
            description = "Only orders in this status"),
    ),
    security(("admin" = [])),
    responses(
        (status = 200, description = "RFC 4180 CSV, newest first, streamed: a header row `id,sale_id,user_id,quantity,status,amount_cents,created_at,expires_at,paid_at,refunded_at`, then one row per order (amount_cents = price_cents × quantity; empty paid_at and refunded_at when unset)",
            content_type = "text/csv"),
        (status = 400, description = "invalid_request (sale_id or status)", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not the admin", body = ErrorBody),
    ))]
pub async fn export_orders(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    principal.admin()?;
    let Query(query) =
        query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    query_id("sale_id", query.sale_id.as_deref())?;
    let filter = ExportFilter::parse(query.sale_id.as_deref(), query.status.as_deref())?;
    // The first page before the reply: a store that fails now is a status, not a cut download.
    let first = state.service.export_page(&filter, None).await?;
    let export = Export {
        service: Arc::clone(&state.service),
        filter,
        page: Some(first),
        header: true,
    };
    let stream = futures_util::stream::unfold(export, Export::next_chunk);
    Ok(csv_download(
        axum::body::Body::from_stream(stream),
        "orders.csv",
    ))
}

const EXPORT_HEADER: [&str; 10] = [
    "id",
    "sale_id",
    "user_id",
    "quantity",
    "status",
    "amount_cents",
    "created_at",
    "expires_at",
    "paid_at",
    "refunded_at",
];

/// An export on its way: the page to write next (read from the store one page at a time, so the
/// reply holds one page however many orders there are).
struct Export {
    service: Arc<Service>,
    filter: ExportFilter,
    /// The page to write; `None` once the last one is written.
    page: Option<Vec<ExportRow>>,
    header: bool,
}

impl Export {
    async fn next_chunk(mut self) -> Option<(Result<Vec<u8>, std::io::Error>, Self)> {
        let page = self.page.take()?;
        let mut chunk = Vec::with_capacity(page.len() * 200 + 128);
        if std::mem::take(&mut self.header) {
            super::csv::row(&mut chunk, &EXPORT_HEADER);
        }
        for row in &page {
            write_row(&mut chunk, row);
        }
        let last: Option<OrderId> = page.last().map(|row| row.order.id.clone());
        if let Some(last) = last {
            match self.service.export_page(&self.filter, Some(last)).await {
                Ok(next) if next.is_empty() => {}
                Ok(next) => self.page = Some(next),
                Err(error) => {
                    // The reply is under way: all that is left is to cut it (the client sees a
                    // download that did not finish).
                    tracing::warn!(%error, "the orders export stopped mid-way");
                    return Some((Err(std::io::Error::other(error.to_string())), self));
                }
            }
        }
        Some((Ok(chunk), self))
    }
}

fn write_row(out: &mut Vec<u8>, row: &ExportRow) {
    let order = &row.order;
    let (quantity, amount) = (order.quantity.to_string(), row.amount_cents.to_string());
    let (created_at, expires_at) = (order.created_at.to_string(), order.expires_at.to_string());
    let paid_at = order.paid_at.map(|at| at.to_string()).unwrap_or_default();
    super::csv::row(
        out,
        &[
            order.id.as_str(),
            order.sale_id.as_str(),
            order.user_id.as_str(),
            &quantity,
            order.status.as_str(),
            &amount,
            &created_at,
            &expires_at,
            &paid_at,
            "",
        ],
    );
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
        (status = 429, description = "rate_limited: too many failed admin authentications from this address (with Retry-After)", body = ErrorBody),
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
        (status = 429, description = "rate_limited: too many failed admin authentications from this address (with Retry-After)", body = ErrorBody),
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
