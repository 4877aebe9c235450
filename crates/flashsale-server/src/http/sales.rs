//! Sale routes: create, list, show, change (patch, pause, resume, end), codes, purchase, audit.
//! Each handler parses, authorizes, calls one service function and maps its result.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::cache::public_json;
use super::csv;
use super::error::{created, created_as, purchased, ApiError, JsonReply};
use super::extract::{
    page_limit, AccessCode, Admin, IdempotencyKey, JsonBody, PathId, QueuePass, UnreadBody,
};
use super::wire::{
    order_json, whole_number, AuditBody, CodesBody, CodesQuery, CodesRequest, CreateSaleRequest,
    ErrorBody, OrderBody, PurchaseRequest, SaleBody, SaleList, SalesQuery, UpdateSaleRequest,
};
use super::AppState;
use crate::auth::Principal;
use crate::domain::SaleChange;

#[utoipa::path(post, path = "/api/v1/sales", tag = "sales",
    request_body = CreateSaleRequest,
    security(("admin" = [])),
    responses(
        (status = 201, description = "The sale", body = SaleBody),
        (status = 400, description = "invalid_request, naming the field", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not the admin", body = ErrorBody),
        (status = 413, description = "payload_too_large (a Content-Length over 64 KiB is refused before the body is read)", body = ErrorBody),
        (status = 408, description = "request_timeout: the body did not arrive within body_read_timeout_ms of the headers (the connection is closed)", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications from this address (with Retry-After)", body = ErrorBody),
    ))]
pub async fn create_sale(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    JsonBody(request): JsonBody<CreateSaleRequest>,
) -> Result<JsonReply<SaleBody>, ApiError> {
    let view = state.service.create_sale(request.into_draft()?).await?;
    Ok(created(SaleBody::from(&view)))
}

#[utoipa::path(get, path = "/api/v1/sales", tag = "sales",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500,
            description = "1 to 500: one page of sales and a next_cursor; without it, every sale"),
        ("cursor" = Option<String>, Query, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$",
            description = "next_cursor of the previous page"),
        ("current" = Option<bool>, Query,
            description = "true: only sales not ended, or ended within the last hour (or their payment window, if longer); what a storefront lists"),
    ),
    responses(
        (status = 200, description = "Sales, newest first (with ETag; Cache-Control: public, max-age=1)", body = SaleList),
        (status = 304, description = "If-None-Match named the current ETag"),
        (status = 400, description = "invalid_request (limit, cursor or current)", body = ErrorBody),
    ))]
pub async fn list_sales(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<SalesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let limit = query.limit.as_deref().map(page_limit).transpose()?;
    let current = match query.current.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "current",
                "current must be true or false",
            ))
        }
    };
    let page = state
        .service
        .sales(limit, query.cursor.as_deref(), current)
        .await?;
    let list = SaleList {
        sales: page.sales.iter().map(SaleBody::from).collect(),
        next_cursor: limit.map(|_| page.next.map(|id| id.to_string())),
    };
    Ok(public_json(&headers, &list))
}

#[utoipa::path(get, path = "/api/v1/sales/{sale_id}", tag = "sales",
    params(("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    responses(
        (status = 200, description = "The sale (with ETag; Cache-Control: public, max-age=1)", body = SaleBody),
        (status = 304, description = "If-None-Match named the current ETag"),
        (status = 404, description = "sale_not_found", body = ErrorBody),
    ))]
pub async fn show_sale(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    PathId(sale_id): PathId,
) -> Result<Response, ApiError> {
    let view = state.service.sale(&sale_id).await?;
    Ok(public_json(&headers, &SaleBody::from(&view)))
}

#[utoipa::path(post, path = "/api/v1/sales/{sale_id}/purchase", tag = "purchase",
    params(
        ("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$"),
        ("Idempotency-Key" = Option<String>, Header,
            min_length = 1, max_length = 128, pattern = r"^[!-~]([ -~]*[!-~])?$",
            description = "1 to 128 printable ASCII characters; scope (buyer, sale, key)"),
        ("Queue-Pass" = Option<String>, Header,
            description = "Required on a sale with a waiting room: the pass its line gave this buyer"),
        ("Access-Code" = Option<String>, Header,
            description = "Required on a sale with access codes: a code of the sale, bound to the first buyer who buys with it"),
    ),
    request_body(content = Option<PurchaseRequest>, description = "Optional; quantity defaults to 1"),
    security(("buyer" = [])),
    responses(
        (status = 201, description = "Reserved: the order is durable", body = OrderBody),
        (status = 200, description = "A repeated Idempotency-Key: the order it made", body = OrderBody),
        (status = 400, description = "invalid_quantity or invalid_request", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not a buyer token; queue_pass_required: a sale with a waiting room and no valid pass; access_code_required: a code sale and no code, an unknown one or another buyer's", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "sold_out, already_purchased, not_started, sale_ended or sale_paused", body = ErrorBody),
        (status = 408, description = "request_timeout: the body did not arrive within body_read_timeout_ms of the headers (the connection is closed)", body = ErrorBody),
        (status = 413, description = "payload_too_large (a Content-Length over 64 KiB is refused before the body is read)", body = ErrorBody),
        (status = 429, description = "rate_limited (this buyer's rate, or failed admin authentications from this address), with Retry-After", body = ErrorBody),
        (status = 503, description = "overloaded, or unavailable (a backend, or a full disk: Retry-After 5), with Retry-After", body = ErrorBody),
    ))]
pub async fn purchase(
    State(state): State<Arc<AppState>>,
    principal: Result<Principal, ApiError>,
    PathId(sale_id): PathId,
    idempotency_key: Result<IdempotencyKey, ApiError>,
    QueuePass(queue_pass): QueuePass,
    AccessCode(access_code): AccessCode,
    body: UnreadBody,
) -> Response {
    let outcome = async {
        let principal = principal?;
        let user_id = principal.buyer()?.clone();
        let IdempotencyKey(key) = idempotency_key?;
        let request = body.optional_json::<PurchaseRequest>(&state).await?;
        let quantity = match request.and_then(|request| request.quantity) {
            None => 1,
            Some(number) => whole_number(&number).ok_or_else(ApiError::invalid_quantity)?,
        };
        Ok::<_, ApiError>(
            state
                .service
                .purchase(
                    user_id,
                    &sale_id,
                    quantity,
                    key,
                    queue_pass.as_deref(),
                    access_code.as_deref(),
                )
                .await?,
        )
    }
    .await;
    match outcome {
        Ok(purchase) => {
            let label = if purchase.created {
                "created"
            } else {
                "repeated"
            };
            state.metrics.record_purchase(label);
            if purchase.created && queue_pass.is_some() {
                state.metrics.record_pass_used();
            }
            purchased(purchase.created, order_json(&purchase.order))
        }
        Err(error) => {
            state.metrics.record_purchase(error.code());
            error.into_response()
        }
    }
}

#[utoipa::path(patch, path = "/api/v1/sales/{sale_id}", tag = "operator",
    params(("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    request_body = UpdateSaleRequest,
    security(("admin" = [])),
    responses(
        (status = 200, description = "The sale after the change (a change that changes nothing leaves it at its version)", body = SaleBody),
        (status = 400, description = "invalid_request, naming the field", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not the admin", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "insufficient_stock: remove_stock over what remains (with remaining)", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
    ))]
pub async fn update_sale(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    PathId(sale_id): PathId,
    JsonBody(request): JsonBody<UpdateSaleRequest>,
) -> Result<Json<SaleBody>, ApiError> {
    let change = SaleChange::Update(request.into_update()?);
    let view = state.service.change_sale(&sale_id, change).await?;
    Ok(Json(SaleBody::from(&view)))
}

async fn change(
    state: &AppState,
    principal: &Principal,
    sale_id: &str,
    change: SaleChange,
) -> Result<Json<SaleBody>, ApiError> {
    principal.admin()?;
    let view = state.service.change_sale(sale_id, change).await?;
    Ok(Json(SaleBody::from(&view)))
}

#[utoipa::path(post, path = "/api/v1/sales/{sale_id}/pause", tag = "operator",
    params(("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The sale, paused: nothing sells and its line admits nobody until resumed", body = SaleBody),
        (status = 400, description = "invalid_request: not a sale id", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not the admin", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(sale_id): PathId,
) -> Result<Json<SaleBody>, ApiError> {
    change(&state, &principal, &sale_id, SaleChange::Pause).await
}

#[utoipa::path(post, path = "/api/v1/sales/{sale_id}/resume", tag = "operator",
    params(("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The sale, selling again", body = SaleBody),
        (status = 400, description = "invalid_request: not a sale id", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not the admin", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(sale_id): PathId,
) -> Result<Json<SaleBody>, ApiError> {
    change(&state, &principal, &sale_id, SaleChange::Resume).await
}

#[utoipa::path(post, path = "/api/v1/sales/{sale_id}/end", tag = "operator",
    params(("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The sale, ended now (ends_at = now; an ended sale stays as it ended)", body = SaleBody),
        (status = 400, description = "invalid_request: not a sale id", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not the admin", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
    ))]
pub async fn end(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(sale_id): PathId,
) -> Result<Json<SaleBody>, ApiError> {
    change(&state, &principal, &sale_id, SaleChange::End).await
}

#[utoipa::path(post, path = "/api/v1/sales/{sale_id}/codes", tag = "operator",
    params(
        ("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$"),
        ("format" = Option<String>, Query, description = "csv: the codes as text/csv (a `code` header, one per line); else JSON"),
    ),
    request_body = CodesRequest,
    security(("admin" = [])),
    responses(
        (status = 201, description = "New codes, each for one buyer",
            content((CodesBody = "application/json"), (String = "text/csv"))),
        (status = 400, description = "invalid_request, naming the field", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden: not the admin", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
    ))]
pub async fn make_codes(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    PathId(sale_id): PathId,
    query: Result<Query<CodesQuery>, axum::extract::rejection::QueryRejection>,
    JsonBody(request): JsonBody<CodesRequest>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::invalid("query", rejection.body_text()))?;
    let batches = state.service.make_codes(&sale_id, request.count).await?;
    let csv = query.format.as_deref() == Some("csv");
    let stream = futures_util::stream::unfold(
        (batches, true, false),
        move |(mut batches, first, done)| async move {
            if done {
                return None;
            }
            let mut chunk = Vec::new();
            if first {
                if csv {
                    csv::row(&mut chunk, &["code"]);
                } else {
                    chunk.extend_from_slice(br#"{"codes":["#);
                }
            }
            match batches.next_batch().await {
                Some(Ok(codes)) => {
                    for (index, code) in codes.iter().enumerate() {
                        if csv {
                            csv::row(&mut chunk, &[code.as_str()]);
                        } else {
                            if !(first && index == 0) {
                                chunk.push(b',');
                            }
                            // Codes are base64url: nothing to escape.
                            chunk.push(b'"');
                            chunk.extend_from_slice(code.as_bytes());
                            chunk.push(b'"');
                        }
                    }
                    Some((Ok::<_, std::io::Error>(chunk), (batches, false, false)))
                }
                Some(Err(error)) => Some((
                    Err(std::io::Error::other(error.to_string())),
                    (batches, false, true),
                )),
                None => {
                    if !csv {
                        chunk.extend_from_slice(b"]}");
                    }
                    Some((Ok(chunk), (batches, false, true)))
                }
            }
        },
    );
    let content_type = if csv {
        "text/csv; charset=utf-8; header=present"
    } else {
        "application/json"
    };
    Ok(created_as(
        content_type,
        axum::body::Body::from_stream(stream),
    ))
}

#[utoipa::path(get, path = "/api/v1/sales/{sale_id}/audit", tag = "sales",
    params(("sale_id" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_-]+$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "Stock and order quantities, checked against each other", body = AuditBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications from this address (with Retry-After)", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    PathId(sale_id): PathId,
) -> Result<Json<AuditBody>, ApiError> {
    principal.admin()?;
    let audit = state.service.audit(&sale_id).await?;
    Ok(Json(audit.into()))
}
