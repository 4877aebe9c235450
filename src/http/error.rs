//! The one place that turns errors into HTTP statuses and the contract's error bodies:
//! `{"error": {"code": "…", "message": "…", …extra fields}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::auth::AuthError;
use crate::domain::{InvalidField, Rejection, QUANTITY_ERROR};
use crate::service::ServiceError;

/// Seconds a shed client is asked to wait before trying again.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message).with("field", field)
    }

    pub fn invalid_quantity() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_quantity", QUANTITY_ERROR)
            .with("field", "quantity")
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this buyer; retry after the time in Retry-After",
        )
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
        let mut error = Map::with_capacity(self.extra.len() + 2);
        error.insert("code".into(), Value::from(self.code));
        error.insert("message".into(), Value::from(self.message));
        error.extend(self.extra);
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
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
        let conflict = |code, message: &str| Self::new(StatusCode::CONFLICT, code, message);
        match rejection {
            Rejection::SoldOut { remaining } => {
                conflict("sold_out", "not enough stock left").with("remaining", remaining)
            }
            Rejection::AlreadyPurchased { order_id } => conflict(
                "already_purchased",
                "this purchase would exceed the per-user limit",
            )
            .with("order_id", order_id.as_str()),
            Rejection::NotStarted { starts_at } => {
                conflict("not_started", "the sale has not started")
                    .with("starts_at", starts_at.to_string())
            }
            Rejection::SaleEnded => conflict("sale_ended", "the sale has ended"),
            Rejection::InvalidQuantity { per_user_limit } => {
                Self::invalid_quantity().with("per_user_limit", per_user_limit)
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
                "a paid or expired order cannot be cancelled",
            ),
            ServiceError::Overloaded => Self::overloaded("the server is over capacity"),
            ServiceError::Unavailable(message) => {
                tracing::warn!(%message, "backend unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a backend is unavailable; retry later",
                )
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
