//! Extractors that turn a request into checked values or a contract error: who is asking, the
//! JSON body, path ids and the idempotency key. Nothing here panics on any input. Who is asking
//! is known from the headers, so a handler that reads a body takes `Principal` (or `Admin`)
//! first, or reads its `UnreadBody` only after checking: a refused request never waits for its
//! body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::caller;
use super::connection::HeadBegan;
use super::error::{forbidden, ApiError};
use super::AppState;
use crate::auth::Principal;
use crate::domain::{Actor, SaleId, UserId, ID_LENGTH_MAX};

/// The longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 128;

impl Principal {
    pub fn admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Buyer(_) => Err(forbidden()),
        }
    }

    pub fn buyer(&self) -> Result<&UserId, ApiError> {
        match self {
            Principal::Buyer(user_id) => Ok(user_id),
            Principal::Admin => Err(forbidden()),
        }
    }

    pub fn actor(&self) -> Actor {
        match self {
            Principal::Admin => Actor::Admin,
            Principal::Buyer(user_id) => Actor::Buyer(user_id.clone()),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    /// Takes the edge's verdict on the credentials (checking them here only if the edge did
    /// not); the verdict is taken, so a handler has one `Principal` (`Admin` is one too).
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let now_secs = state.service.now().as_second();
        let (client, verdict) = caller::take();
        let verdict = verdict.unwrap_or_else(|| {
            state.auth.authenticate(
                parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .map(|value| value.as_bytes()),
                now_secs,
            )
        });
        let principal = brake_admin_guesses(state, client, verdict, now_secs)?;
        if let Principal::Buyer(user_id) = &principal {
            if !state.buyer_limiter.allow(user_id.as_str(), now_secs) {
                return Err(ApiError::rate_limited());
            }
        }
        Ok(principal)
    }
}

/// Applies the brake on admin token guesses (`admin_failures.rs`) to a verdict: a failure that
/// could be a guess is counted, and an address past the limit gets `429` for any admin
/// authentication, right or wrong.
fn brake_admin_guesses(
    state: &AppState,
    client: Option<std::net::IpAddr>,
    verdict: Result<Principal, crate::auth::AuthError>,
    now_secs: i64,
) -> Result<Principal, ApiError> {
    let braked = match &verdict {
        Ok(Principal::Admin) => state.admin_failures.braked(client, now_secs),
        Err(error) if error.may_guess_the_admin_token() => {
            state.admin_failures.record_failure(client, now_secs)
        }
        Ok(Principal::Buyer(_)) | Err(_) => None,
    };
    if let Some(retry_after_secs) = braked {
        state.metrics.connections.record_admin_auth_limited();
        return Err(ApiError::admin_auth_braked(retry_after_secs));
    }
    Ok(verdict?)
}

/// The admin, or the refusal (`401`, `403`) from the headers alone.
pub struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Principal::from_request_parts(parts, state).await?.admin()?;
        Ok(Admin)
    }
}

/// A request's body, not read yet: the handler reads it once the headers passed its checks.
pub struct UnreadBody(Request);

impl<S: Send + Sync> FromRequest<S> for UnreadBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        Ok(UnreadBody(request))
    }
}

impl UnreadBody {
    /// Reads it as an optional JSON body (see `OptionalJsonBody`).
    pub async fn optional_json<T: DeserializeOwned>(
        self,
        state: &Arc<AppState>,
    ) -> Result<Option<T>, ApiError> {
        let OptionalJsonBody(body) = OptionalJsonBody::from_request(self.0, state).await?;
        Ok(body)
    }
}

/// The field a serde error is about: its path, or the name in "missing field `x`".
fn field_of(path: &serde_path_to_error::Path, message: &str) -> String {
    let path = path.to_string();
    if path != "." && !path.is_empty() {
        return path;
    }
    message
        .split('`')
        .nth(1)
        .map_or_else(|| "body".to_owned(), str::to_owned)
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let message = error.inner().to_string();
        let field = field_of(error.path(), &message);
        ApiError::invalid(&field, format!("invalid JSON body: {message}"))
    })?;
    Ok(value)
}

async fn body_bytes(request: Request, state: &Arc<AppState>) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| ApiError::unreadable_body(&rejection))
}

/// An HTTP/1.1 request without `Content-Length` or `Transfer-Encoding`, or with a length of 0,
/// has no body: nothing to read (most purchases send none).
fn declares_no_body(request: &Request) -> bool {
    let headers = request.headers();
    match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => !headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// A required JSON body. The `Content-Type` is not insisted on: a body that parses is accepted.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid("body", "a JSON body is required"));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// An optional JSON body: empty means `None`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        if declares_no_body(&request) {
            return Ok(OptionalJsonBody(None));
        }
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        // The JSON `null` is no body either (the document says the body may be null).
        parse_json::<Option<T>>(&bytes).map(OptionalJsonBody)
    }
}

/// The one id in a route's path (`sale_id`, `order_id`), held to the limits the document states
/// (1 to 64 of `A-Z a-z 0-9 _ -`: anything else is `400` naming the parameter); the service
/// decides whether it exists.
pub struct PathId(pub String);

impl FromRequestParts<Arc<AppState>> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Path(mut parameters) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))?;
        let Some((name, id)) = parameters.pop() else {
            return Err(ApiError::invalid("path", "the route names no id"));
        };
        if SaleId::parse(&id).is_none() {
            return Err(ApiError::invalid(
                &name,
                format!("{name} must be 1 to {ID_LENGTH_MAX} characters of A-Z, a-z, 0-9, _ and -"),
            ));
        }
        Ok(PathId(id))
    }
}

/// An id given in a query (`?sale_id=`), held to the same limits as a path's.
pub fn query_id(field: &str, id: Option<&str>) -> Result<(), ApiError> {
    match id {
        Some(id) if SaleId::parse(id).is_none() => Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to {ID_LENGTH_MAX} characters of A-Z, a-z, 0-9, _ and -"),
        )),
        _ => Ok(()),
    }
}

/// The optional `Access-Code` header of a purchase or a join (checked by the service).
pub struct AccessCode(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for AccessCode {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AccessCode(parts.headers.get("access-code").map(|value| {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        })))
    }
}

/// When the request began to reach the server, by the service's clock: the connection's record
/// (`connection::HeadBegan`), read only by the routes that need it (a join is placed by it, in
/// the draw when it came before the start, however long it then waited for the server); `None`
/// for a request the connection did not record.
#[derive(Clone, Copy, Debug)]
pub struct Arrived(pub Option<jiff::Timestamp>);

impl FromRequestParts<Arc<AppState>> for Arrived {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let began = match parts.extensions.get::<HeadBegan>() {
            Some(HeadBegan(Some(began))) => Some(*began),
            _ => None,
        };
        Ok(Arrived(
            began.map(|began| state.service.clock_at(began.into_std())),
        ))
    }
}

/// The optional `Idempotency-Key` header: 1 to 128 printable ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let bytes = value.as_bytes();
        let printable = bytes.iter().all(|byte| (0x20..=0x7e).contains(byte));
        if bytes.is_empty() || bytes.len() > IDEMPOTENCY_KEY_LENGTH_MAX || !printable {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 128 printable ASCII characters",
            ));
        }
        Ok(IdempotencyKey(Some(
            String::from_utf8_lossy(bytes).into_owned(),
        )))
    }
}

/// The `Queue-Pass` header of a purchase, if any (checked by the service: a pass that is not
/// even text simply does not verify).
pub struct QueuePass(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for QueuePass {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(QueuePass(parts.headers.get("queue-pass").map(|value| {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        })))
    }
}

/// Most items one page of a listing may ask for (`?limit=`).
pub const PAGE_LIMIT_MAX: usize = 500;

/// A listing's `?limit=`: a whole number from 1 to 500.
pub fn page_limit(text: &str) -> Result<usize, ApiError> {
    text.parse::<usize>()
        .ok()
        .filter(|limit| (1..=PAGE_LIMIT_MAX).contains(limit))
        .ok_or_else(|| ApiError::invalid("limit", "limit must be a whole number from 1 to 500"))
}
