//! The web pages: the storefront (`/`) and the admin console (`/admin`), with their scripts and
//! style. Compiled into the binary (no CDN, no build step, works offline); they use only the
//! public API, as any client would. Every page and asset carries the browser's defences: a
//! content security policy that runs only this binary's scripts and styles (the pages have no
//! inline script or style), no framing by another page (the console must not be clickjacked),
//! and no referrer sent with their links (an order id in a URL stays here).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use axum::extract::Path;

use super::error::ApiError;
use super::AppState;

/// Pages and assets change only with the binary; `no-cache` makes browsers revalidate, so a new
/// release is picked up at once.
const PAGE_CACHE: &str = "no-cache";

/// Scripts, styles and requests from this origin only; no plugin, frame or foreign form target;
/// framed by nobody.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// The headers of every page and asset (`nosniff` is the edge's, on every response).
fn defended(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(PAGE_CACHE)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        // For browsers that predate `frame-ancestors`.
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

#[utoipa::path(get, path = "/", tag = "pages",
    responses((status = 200, description = "The storefront", content_type = "text/html")))]
pub async fn storefront(State(state): State<Arc<AppState>>) -> Response {
    const STOREFRONT: &str = include_str!("ui/index.html");
    if state.demo.is_some() {
        // The page offers sign-in by name only where the server accepts it.
        page(STOREFRONT.replacen(r#"data-demo="false""#, r#"data-demo="true""#, 1))
    } else {
        page(STOREFRONT)
    }
}

#[utoipa::path(get, path = "/admin", tag = "pages",
    responses((status = 200, description = "The admin console", content_type = "text/html")))]
pub async fn admin() -> Response {
    page(include_str!("ui/admin.html"))
}

fn page(html: impl Into<String>) -> Response {
    (defended("text/html; charset=utf-8"), html.into()).into_response()
}

#[utoipa::path(get, path = "/assets/{file}", tag = "pages",
    params(("file" = String, Path, description = "common.js, store.js, admin.js or style.css")),
    responses(
        (status = 200, description = "The pages' scripts and style"),
        (status = 404, description = "not_found", body = super::wire::ErrorBody),
    ))]
pub async fn asset(
    file: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(file)) = file else {
        return Err(ApiError::not_found());
    };
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
    Ok((defended(content_type), body).into_response())
}
