//! Public reads a proxy or CDN may share: the body carries a strong `ETag` (a hash of the
//! bytes), `Cache-Control` lets caches keep it for a second, and a request that names the
//! current tag in `If-None-Match` gets `304` without a body. A crowd watching a countdown then
//! costs the origin one read per second per cache, and a conditional poll costs no body.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{not_modified, ApiError};
use crate::domain::hex;
use crate::service::ServiceError;

/// Short enough that a sale's `remaining` and `state` stay current to the second.
const PUBLIC_CACHE: &str = "public, max-age=1";

pub fn public_json<T: Serialize>(request_headers: &HeaderMap, body: &T) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(error) => {
            return ApiError::from(ServiceError::Internal(error.to_string())).into_response()
        }
    };
    let digest = Sha256::digest(&bytes);
    let tag = format!("\"{}\"", hex(&digest[..12]));
    let headers = [
        (
            header::ETAG,
            HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(PUBLIC_CACHE),
        ),
    ];
    if matches_tag(request_headers, &tag) {
        return not_modified(headers);
    }
    (
        headers,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// Whether `If-None-Match` names `tag` (or `*`); weak tags (`W/"…"`) match too, as RFC 9110
/// asks for this header.
fn matches_tag(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|candidate| candidate.trim().trim_start_matches("W/"))
        .any(|candidate| candidate == tag || candidate == "*")
}
