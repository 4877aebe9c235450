//! The one place that turns errors into HTTP statuses and the contract's error bodies:
//! `{"error": {"code": "…", "message": "…", …extra fields}}`.

use std::borrow::Cow;

use axum::body::Body as ResponseBody;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::domain::{InvalidField, Rejection, QUANTITY_ERROR};
use crate::service::ServiceError;

/// Seconds a shed client is asked to wait before trying again.
const RETRY_AFTER_SECS: &str = "1";
/// A full disk is freed by a person, not in a second.
const NO_SPACE_RETRY_AFTER_SECS: u64 = 5;

/// An error as the contract writes it inside its envelope, in one flat struct: the code, the
/// message, and the fields it carries besides them, typed rather than a JSON map (the sold-out
/// reply is the most frequent response of a flash sale, and writing it should cost no more than
/// a few small writes; `#[serde(flatten)]` would go through a map serializer). The OpenAPI
/// document's error schema is this struct too.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case.
    #[schema(value_type = String)]
    pub code: &'static str,
    /// For a person.
    #[schema(value_type = String)]
    pub message: Cow<'static, str>,
    /// The offending field of a validation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With already_purchased: an active order of the buyer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// With sold_out and insufficient_stock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// With not_started.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// With invalid_quantity: the sale's per-user limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_user_limit: Option<u32>,
    /// With queue_not_open: when the waiting line opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub opens_at: Option<String>,
    /// With /readyz's unavailable: why the node is not ready (which backend, what it says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed: the detail is several words wide, and the box keeps `Result<_, ApiError>` small
    /// on every handler's happy path.
    pub detail: Box<ErrorDetail>,
    /// `Retry-After` of a `429` or `503`, when it is not the usual second.
    retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorDetail,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            detail: Box::new(ErrorDetail {
                code,
                message: message.into(),
                field: None,
                order_id: None,
                remaining: None,
                starts_at: None,
                per_user_limit: None,
                opens_at: None,
                reason: None,
            }),
            retry_after_secs: None,
        }
    }

    /// The contract's error code (`sold_out`, `invalid_request`, …).
    pub fn code(&self) -> &'static str {
        self.detail.code
    }

    pub fn field(mut self, field: &str) -> Self {
        self.detail.field = Some(field.to_owned());
        self
    }

    pub fn invalid(field: &str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message).field(field)
    }

    pub fn invalid_quantity() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_quantity", QUANTITY_ERROR).field("quantity")
    }

    pub fn overloaded(message: &'static str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this buyer; retry after the time in Retry-After",
        )
    }

    /// An admin authentication from an address that failed too often this minute.
    pub fn admin_auth_braked(retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed admin authentications from this address; retry after the time in \
             Retry-After",
        );
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    /// `/readyz` when a backend does not answer, or the store refuses writes: why.
    pub fn not_ready(reason: String) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not ready: see reason",
        );
        error.detail.reason = Some(reason);
        error
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    }

    /// A body axum could not read: too large, too slow, or not readable.
    pub fn unreadable_body(rejection: &axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::payload_too_large()
        } else if super::connection::is_body_timeout(rejection) {
            Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
        } else {
            Self::invalid("body", rejection.body_text())
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request bodies are limited to 64 KiB",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = Envelope {
            error: &self.detail,
        };
        let mut response = JsonReply(self.status, envelope).into_response();
        if matches!(
            self.status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        ) {
            // The body (or the rest of it) is not read: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            let retry_after = match self.retry_after_secs {
                Some(secs) => HeaderValue::from(secs),
                None => HeaderValue::from_static(RETRY_AFTER_SECS),
            };
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            error.to_string(),
        )
    }
}

impl From<InvalidField> for ApiError {
    fn from(error: InvalidField) -> Self {
        Self::invalid(error.field, error.to_string())
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let conflict = |code, message| Self::new(StatusCode::CONFLICT, code, message);
        match rejection {
            Rejection::SoldOut { remaining } => {
                let mut error = conflict("sold_out", "not enough stock left");
                error.detail.remaining = Some(remaining);
                error
            }
            Rejection::AlreadyPurchased { order_id } => {
                let mut error = conflict(
                    "already_purchased",
                    "this purchase would exceed the per-user limit",
                );
                error.detail.order_id = Some(order_id.to_string());
                error
            }
            Rejection::NotStarted { starts_at } => {
                let mut error = conflict("not_started", "the sale has not started");
                error.detail.starts_at = Some(starts_at.to_string());
                error
            }
            Rejection::SaleEnded => conflict("sale_ended", "the sale has ended"),
            Rejection::SalePaused => conflict(
                "sale_paused",
                "the sale is paused; it may be resumed, try again later",
            ),
            Rejection::InvalidQuantity { per_user_limit } => {
                let mut error = Self::invalid_quantity();
                error.detail.per_user_limit = Some(per_user_limit);
                error
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::SaleNotFound => {
                Self::new(StatusCode::NOT_FOUND, "sale_not_found", "no such sale")
            }
            ServiceError::OrderNotFound => {
                Self::new(StatusCode::NOT_FOUND, "order_not_found", "no such order")
            }
            ServiceError::Forbidden => forbidden(),
            ServiceError::Invalid(invalid) => invalid.into(),
            ServiceError::Rejected(rejection) => rejection.into(),
            ServiceError::NotPayable => Self::new(
                StatusCode::CONFLICT,
                "order_not_payable",
                "the order is expired or cancelled, or its payment window has closed",
            ),
            ServiceError::NotCancellable => Self::new(
                StatusCode::CONFLICT,
                "order_not_cancellable",
                "a paid, refunded or expired order cannot be cancelled",
            ),
            ServiceError::NotRefundable => Self::new(
                StatusCode::CONFLICT,
                "order_not_refundable",
                "only a paid order can be refunded",
            ),
            ServiceError::PaymentDeclined(message) => Self::new(
                StatusCode::CONFLICT,
                "payment_declined",
                format!("the payment was declined ({message}); the order waits for another"),
            ),
            ServiceError::BadSignature(message) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_signature",
                message,
            ),
            ServiceError::NoStripe => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "this server does not pay through Stripe (payment_provider is not stripe)",
            ),
            ServiceError::NoWaitingRoom => Self::new(
                StatusCode::CONFLICT,
                "no_waiting_room",
                "this sale has no waiting room",
            ),
            ServiceError::NoVerifiableDraw => Self::new(
                StatusCode::CONFLICT,
                "no_verifiable_draw",
                "this sale was made before draws were committed: it has no admission log",
            ),
            ServiceError::QueueNotOpen { opens_at } => {
                let mut error = Self::new(
                    StatusCode::CONFLICT,
                    "queue_not_open",
                    "the waiting line is not open yet",
                );
                error.detail.opens_at = Some(opens_at.to_string());
                error
            }
            ServiceError::NotInQueue => Self::new(
                StatusCode::NOT_FOUND,
                "not_in_queue",
                "not in this sale's waiting line (join it; a pass that ran out means joining again)",
            ),
            ServiceError::QueuePassRequired => Self::new(
                StatusCode::FORBIDDEN,
                "queue_pass_required",
                "this sale has a waiting room: purchase with the Queue-Pass its line gave you",
            ),
            ServiceError::AccessCodeRequired => Self::new(
                StatusCode::FORBIDDEN,
                "access_code_required",
                "this sale sells by access code: send your code as Access-Code (a code is bound \
                 to the first buyer who buys with it)",
            ),
            ServiceError::InsufficientStock { remaining } => {
                let mut error = Self::new(
                    StatusCode::CONFLICT,
                    "insufficient_stock",
                    "fewer units remain than the change takes off sale",
                );
                error.detail.remaining = Some(remaining);
                error
            }
            ServiceError::Overloaded => Self::overloaded("the server is over capacity"),
            ServiceError::Unavailable(message) => {
                tracing::warn!(%message, "backend unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a backend is unavailable; retry later",
                )
            }
            ServiceError::NoSpace(_) => {
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "orders cannot be recorded right now: the server's disk is full; what was \
                     bought is kept and readable; retry later",
                );
                error.retry_after_secs = Some(NO_SPACE_RETRY_AFTER_SECS);
                error
            }
            ServiceError::Internal(message) => {
                tracing::error!(%message, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

pub fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "these credentials may not do this",
    )
}

/// Room for an error envelope with every field (~300 bytes) and for a sale's reply with a short
/// name; a longer reply grows the buffer.
const REPLY_CAPACITY: usize = 512;

/// `status` with `body` as JSON, written straight into one buffer. axum's `Json` serializes
/// through an `io::Write` adapter over a 128-byte `BytesMut`, one checked `put_slice` per
/// fragment; a refused purchase is the response a flash sale sends most, so its bytes go into a
/// `Vec` sized for it that becomes the body as is. (A made purchase's order is written by hand:
/// `purchased`.)
pub struct JsonReply<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for JsonReply<T> {
    fn into_response(self) -> Response {
        let Self(status, body) = self;
        let mut bytes = Vec::with_capacity(REPLY_CAPACITY);
        if let Err(error) = serde_json::to_writer(&mut bytes, &body) {
            return unwritable(&error);
        }
        with_json_type(status, bytes)
    }
}

/// The contract's shapes hold only strings, numbers and structs: writing one cannot fail short
/// of a bug, which still gets the contract's error shape.
fn unwritable(error: &serde_json::Error) -> Response {
    tracing::error!(%error, "a reply could not be written as JSON");
    with_json_type(
        StatusCode::INTERNAL_SERVER_ERROR,
        br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec(),
    )
}

fn with_json_type(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = Response::new(ResponseBody::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A created resource's reply (`201`). The success statuses live here too, so this file is the
/// one place that knows status codes.
pub fn created<T>(body: T) -> JsonReply<T> {
    JsonReply(StatusCode::CREATED, body)
}

/// `200` with JSON already written (the event feed's page).
pub fn ok_json(bytes: Vec<u8>) -> Response {
    with_json_type(StatusCode::OK, bytes)
}

/// `201` with a body written as it goes (the codes, as JSON or CSV).
pub fn created_as(content_type: &'static str, body: ResponseBody) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::CREATED;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `200` with a CSV body streamed as it is read (the orders export), offered as a download.
pub fn csv_download(body: ResponseBody, filename: &'static str) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

/// `304`: the cached copy the request named is current.
pub fn not_modified(headers: [(axum::http::HeaderName, axum::http::HeaderValue); 2]) -> Response {
    (StatusCode::NOT_MODIFIED, headers).into_response()
}

/// A purchase's reply: `201` for a new order, `200` for the order a repeated key made; the
/// order's JSON comes already written (`wire::order_json`).
pub fn purchased(created: bool, order_json: Result<Vec<u8>, serde_json::Error>) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    match order_json {
        Ok(bytes) => with_json_type(status, bytes),
        Err(error) => unwritable(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply's status, `Content-Type` and body.
    async fn written(reply: impl IntoResponse) -> (StatusCode, String, String) {
        let response = reply.into_response();
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_json_reply_carries_its_status_type_and_exact_body() {
        #[derive(Serialize)]
        struct Shape<'a> {
            code: &'a str,
            count: u64,
        }
        let shape = Shape {
            code: "say \"hi\"",
            count: 3,
        };
        assert_eq!(
            written(JsonReply(StatusCode::ACCEPTED, shape)).await,
            (
                StatusCode::ACCEPTED,
                "application/json".to_owned(),
                r#"{"code":"say \"hi\"","count":3}"#.to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_purchase_reply_is_201_for_a_new_order_200_for_a_repeat_and_500_if_unwritable() {
        let order = || Ok(br#"{"id":"o-1"}"#.to_vec());
        let json = "application/json".to_owned();
        let body = r#"{"id":"o-1"}"#.to_owned();
        assert_eq!(
            written(purchased(true, order())).await,
            (StatusCode::CREATED, json.clone(), body.clone())
        );
        assert_eq!(
            written(purchased(false, order())).await,
            (StatusCode::OK, json.clone(), body)
        );
        let unwritable = serde_json::from_str::<u8>("not json").unwrap_err();
        assert_eq!(
            written(purchased(true, Err(unwritable))).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json,
                r#"{"error":{"code":"internal","message":"internal error"}}"#.to_owned()
            )
        );
    }

    /// `error` carrying every optional field (a validation error already names its `field`).
    fn with_every_field(mut error: ApiError) -> ApiError {
        error.detail.order_id = Some("o-1".into());
        error.detail.remaining = Some(7);
        error.detail.starts_at = Some("2026-12-01T12:00:00Z".into());
        error.detail.per_user_limit = Some(2);
        error.detail.opens_at = Some("2026-12-01T11:50:00Z".into());
        error.detail.reason = Some("the disk is full".into());
        error
    }

    #[test]
    fn the_documented_error_schema_names_every_field_an_error_writes() {
        let every_field = with_every_field(ApiError::invalid("quantity", "bad"));
        let written = serde_json::to_value(&*every_field.detail).unwrap();
        let schema =
            serde_json::to_value(<ErrorDetail as utoipa::PartialSchema>::schema()).unwrap();
        let keys = |value: &serde_json::Value| -> Vec<String> {
            value.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(keys(&schema["properties"]), keys(&written));
        assert_eq!(schema["required"], serde_json::json!(["code", "message"]));
    }

    #[tokio::test]
    async fn an_error_reply_writes_the_code_the_message_and_only_the_fields_it_has() {
        assert_eq!(
            written(ApiError::from(Rejection::SoldOut { remaining: 0 })).await,
            (
                StatusCode::CONFLICT,
                "application/json".to_owned(),
                r#"{"error":{"code":"sold_out","message":"not enough stock left","remaining":0}}"#
                    .to_owned()
            )
        );
        let every_field = with_every_field(ApiError::invalid("quantity", "a \"bad\" one"));
        assert_eq!(
            written(every_field).await.2,
            concat!(
                r#"{"error":{"code":"invalid_request","message":"a \"bad\" one","field":"quantity","#,
                r#""order_id":"o-1","remaining":7,"starts_at":"2026-12-01T12:00:00Z","#,
                r#""per_user_limit":2,"opens_at":"2026-12-01T11:50:00Z","reason":"the disk is full"}}"#
            )
        );
    }
}
