//! The HTTP edge: the router, the state handlers share, and the layers around them. Only this
//! module knows status codes (all of them in `error.rs`).

mod cache;
mod demo;
mod edge;
mod error;
mod events;
mod extract;
mod limits;
mod openapi;
mod ops;
mod orders;
mod pages;
mod payments;
mod queue;
pub(crate) mod rfc3339;
mod sales;
pub(crate) mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;

pub use self::limits::BuyerLimiter;
use crate::auth::{Authenticator, TokenMinter};
use crate::metrics::Metrics;
use crate::service::Service;

/// The contract's limit on request bodies.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

pub struct AppState {
    pub service: Arc<Service>,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub buyer_limiter: BuyerLimiter,
    pub in_flight: Arc<Semaphore>,
    pub request_timeout: Duration,
    pub openapi_json: String,
    pub readiness: ops::Readiness,
    /// Signs demo sign-ins; `None` unless demo mode is on (the route is then absent).
    pub demo: Option<TokenMinter>,
}

pub struct Limits {
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub buyer_requests_per_sec: u32,
}

impl AppState {
    pub fn new(
        service: Arc<Service>,
        auth: Authenticator,
        metrics: Arc<Metrics>,
        limits: Limits,
        demo: Option<TokenMinter>,
    ) -> Self {
        Self {
            service,
            auth,
            metrics,
            buyer_limiter: BuyerLimiter::new(limits.buyer_requests_per_sec),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            request_timeout: limits.request_timeout,
            openapi_json: openapi::document_json(demo.is_some()),
            readiness: ops::Readiness::default(),
            demo,
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    // Every route sheds load and times out (an operations route answered under overload would
    // be a way around the limit); `/readyz` answers from a cached probe.
    let mut api = Router::new()
        .route(
            "/api/v1/sales",
            post(sales::create_sale).get(sales::list_sales),
        )
        .route("/api/v1/sales/{sale_id}", get(sales::show_sale))
        .route("/api/v1/sales/{sale_id}/purchase", post(sales::purchase))
        .route(
            "/api/v1/sales/{sale_id}/queue",
            post(queue::join).get(queue::status),
        )
        .route("/api/v1/sales/{sale_id}/audit", get(sales::audit))
        .route("/api/v1/orders", get(orders::list_orders))
        .route("/api/v1/orders/{order_id}", get(orders::show_order))
        .route("/api/v1/orders/{order_id}/pay", post(orders::pay))
        .route("/api/v1/orders/{order_id}/cancel", post(orders::cancel))
        .route("/api/v1/orders/{order_id}/refund", post(orders::refund))
        .route(
            "/api/v1/payments/stripe/webhook",
            post(payments::stripe_webhook),
        )
        .route("/api/v1/payments/config", get(payments::payment_config))
        .route("/api/v1/time", get(ops::time))
        .route("/api/v1/events", get(events::list_events))
        .route("/api/v1/events/sinks", get(events::list_sinks));
    if state.demo.is_some() {
        api = api.route("/api/v1/demo/token", post(demo::demo_token));
    }
    let operations = Router::new()
        .route("/", get(pages::storefront))
        .route("/admin", get(pages::admin))
        .route("/assets/{file}", get(pages::asset))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(ops::openapi));
    // The edge and the body limit go on as one stack: `Router::layer` boxes each route once per
    // layer, and a request clones every box around its route (the operations routes take no
    // body, so the API's limit costs them nothing).
    let around_every_route = ServiceBuilder::new()
        .layer(edge::EdgeLayer::new(Arc::clone(&state)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    Router::new()
        .merge(api)
        .merge(operations)
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(around_every_route)
        .with_state(state)
}
