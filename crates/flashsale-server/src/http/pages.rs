//! The web pages: the storefront (`/`) and the admin console (`/admin`), with their scripts and
//! style. Compiled into the binary (no CDN, no build step, works offline); they use only the
//! public API, as any client would.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};

use super::error::ApiError;
use super::extract::PathId;
use super::AppState;

/// Pages and assets change only with the binary; `no-cache` makes browsers revalidate, so a new
/// release is picked up at once.
const PAGE_CACHE: &str = "no-cache";

#[utoipa::path(get, path = "/", tag = "pages",
    responses((status = 200, description = "The storefront", content_type = "text/html")))]
pub async fn storefront(State(state): State<Arc<AppState>>) -> Response {
    const STOREFRONT: &str = include_str!("ui/index.html");
    let mut response = if state.demo.is_some() {
        // The page offers sign-in by name only where the server accepts it.
        page(STOREFRONT.replacen(r#"data-demo="false""#, r#"data-demo="true""#, 1))
    } else {
        page(STOREFRONT)
    };
    // The card form loads Stripe.js: the browser may open that connection early.
    if let Some(origin) = payment_origin(&state) {
        if let Ok(link) = HeaderValue::from_str(&format!("<{origin}>; rel=preconnect")) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    response
}

#[utoipa::path(get, path = "/admin", tag = "pages",
    responses((status = 200, description = "The admin console", content_type = "text/html")))]
pub async fn admin() -> Response {
    page(include_str!("ui/admin.html"))
}

/// The origin Stripe.js is loaded from (and talks to), when the storefront takes cards through
/// it: what the pages' Content-Security-Policy must allow besides the server itself
/// (`script-src`, `connect-src`, `frame-src`). None with the simulated provider.
pub fn payment_origin(state: &AppState) -> Option<String> {
    let url = state.service.payment_page().stripe_js_url?;
    let url = url::Url::parse(&url).ok()?;
    Some(url.origin().ascii_serialization())
}

fn page(html: impl Into<String>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static(PAGE_CACHE))],
        Html(html.into()),
    )
        .into_response()
}

#[utoipa::path(get, path = "/assets/{file}", tag = "pages",
    params(("file" = String, Path, description = "common.js, store.js, admin.js or style.css")),
    responses(
        (status = 200, description = "The pages' scripts and style"),
        (status = 404, description = "not_found", body = super::wire::ErrorBody),
    ))]
pub async fn asset(PathId(file): PathId) -> Result<Response, ApiError> {
    let (body, content_type) = match file.as_str() {
        "common.js" => (
            include_str!("ui/common.js"),
            "text/javascript; charset=utf-8",
        ),
        "store.js" => (
            include_str!("ui/store.js"),
            "text/javascript; charset=utf-8",
        ),
        "admin.js" => (
            include_str!("ui/admin.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (include_str!("ui/style.css"), "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(PAGE_CACHE)),
        ],
        body,
    )
        .into_response())
}
