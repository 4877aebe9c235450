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

/// The pages' Content-Security-Policy: scripts, styles and requests from this origin only; no
/// plugin or foreign form target; framed by nobody. With a card form (`payment_origin`), Stripe.js
/// from its origin may run, talk to it and show its frames there; Stripe's own Stripe.js also
/// talks to its API and frames its 3-D Secure pages (the hosts Stripe's guide names).
pub fn content_security_policy(payment_origin: Option<&str>) -> HeaderValue {
    let (script, connect, frame) = match payment_origin {
        None => (String::new(), String::new(), "'none'".to_owned()),
        Some(origin @ "https://js.stripe.com") => (
            format!(" {origin}"),
            " https://api.stripe.com".to_owned(),
            format!("{origin} https://hooks.stripe.com"),
        ),
        Some(origin) => (
            format!(" {origin}"),
            format!(" {origin}"),
            origin.to_owned(),
        ),
    };
    let policy = format!(
        "default-src 'none'; script-src 'self'{script}; style-src 'self'; \
         connect-src 'self'{connect}; img-src 'self'; frame-src {frame}; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"))
}

/// The headers of every page and asset (`nosniff` is the edge's, on every response).
fn defended(
    state: &AppState,
    content_type: &'static str,
) -> [(header::HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(PAGE_CACHE)),
        (
            header::CONTENT_SECURITY_POLICY,
            state.content_security_policy.clone(),
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
    let mut response = if state.demo.is_some() {
        // The page offers sign-in by name only where the server accepts it.
        page(
            &state,
            STOREFRONT.replacen(r#"data-demo="false""#, r#"data-demo="true""#, 1),
        )
    } else {
        page(&state, STOREFRONT)
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
pub async fn admin(State(state): State<Arc<AppState>>) -> Response {
    page(&state, include_str!("ui/admin.html"))
}

/// The origin Stripe.js is loaded from (and talks to), when the storefront takes cards through
/// it: what the pages' Content-Security-Policy must allow besides the server itself
/// (`script-src`, `connect-src`, `frame-src`). None with the simulated provider.
pub fn payment_origin(state: &AppState) -> Option<String> {
    payment_origin_of(&state.service)
}

pub fn payment_origin_of(service: &crate::service::Service) -> Option<String> {
    let url = service.payment_page().stripe_js_url?;
    let url = url::Url::parse(&url).ok()?;
    Some(url.origin().ascii_serialization())
}

fn page(state: &AppState, html: impl Into<String>) -> Response {
    (defended(state, "text/html; charset=utf-8"), html.into()).into_response()
}

#[utoipa::path(get, path = "/assets/{file}", tag = "pages",
    params(("file" = String, Path, description = "common.js, store.js, admin.js or style.css")),
    responses(
        (status = 200, description = "The pages' scripts and style"),
        (status = 404, description = "not_found", body = super::wire::ErrorBody),
    ))]
pub async fn asset(
    State(state): State<Arc<AppState>>,
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
    Ok((defended(&state, content_type), body).into_response())
}

#[cfg(test)]
mod tests {
    use super::content_security_policy;

    #[test]
    fn the_policy_allows_the_card_forms_origin_only_when_there_is_one() {
        let own = content_security_policy(None);
        let own = own.to_str().unwrap();
        assert!(own.contains("script-src 'self';"), "{own}");
        assert!(own.contains("frame-src 'none'"), "{own}");
        assert!(own.contains("frame-ancestors 'none'"), "{own}");
        let fake = content_security_policy(Some("http://127.0.0.1:8420"));
        let fake = fake.to_str().unwrap();
        assert!(
            fake.contains("script-src 'self' http://127.0.0.1:8420;"),
            "{fake}"
        );
        assert!(
            fake.contains("connect-src 'self' http://127.0.0.1:8420;"),
            "{fake}"
        );
        assert!(fake.contains("frame-src http://127.0.0.1:8420;"), "{fake}");
        let stripe = content_security_policy(Some("https://js.stripe.com"));
        let stripe = stripe.to_str().unwrap();
        assert!(
            stripe.contains("connect-src 'self' https://api.stripe.com;"),
            "{stripe}"
        );
        assert!(
            stripe.contains("frame-src https://js.stripe.com https://hooks.stripe.com;"),
            "{stripe}"
        );
        assert!(stripe.contains("frame-ancestors 'none'"), "{stripe}");
    }
}
