//! The HTTP edge: the router, the state handlers share, and the layers around them. Only this
//! module knows status codes (all of them in `error.rs`).

mod admin_failures;
mod cache;
mod caller;
mod connection;
mod csv;
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
pub mod routes;
mod sales;
mod serve;
pub(crate) mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;

pub use self::connection::Timeouts;
pub use self::limits::BuyerLimiter;
pub use self::serve::{serve, ServeOptions};
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
    /// Failed admin authentications per client address.
    pub admin_failures: admin_failures::AdminFailures,
    /// Permits of requests with valid credentials.
    pub in_flight: Arc<Semaphore>,
    /// Permits of the rest (public routes, missing or invalid credentials): a budget of the
    /// same size, so that they never take one a signed-in buyer needs.
    pub anonymous_in_flight: Arc<Semaphore>,
    pub request_timeout: Duration,
    pub openapi_json: String,
    /// The pages' Content-Security-Policy (made once: it names the card form's origin, if any).
    pub content_security_policy: axum::http::HeaderValue,
    pub readiness: ops::Readiness,
    /// Signs demo sign-ins; `None` unless demo mode is on (the route is then absent).
    pub demo: Option<TokenMinter>,
}

pub struct Limits {
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub buyer_requests_per_sec: u32,
    pub admin_auth_failures_per_min: u32,
}

impl AppState {
    pub fn new(
        service: Arc<Service>,
        auth: Authenticator,
        metrics: Arc<Metrics>,
        limits: Limits,
        demo: Option<TokenMinter>,
    ) -> Self {
        let content_security_policy =
            pages::content_security_policy(pages::payment_origin_of(&service).as_deref());
        Self {
            service,
            auth,
            metrics,
            buyer_limiter: BuyerLimiter::new(limits.buyer_requests_per_sec),
            admin_failures: admin_failures::AdminFailures::new(limits.admin_auth_failures_per_min),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            anonymous_in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            request_timeout: limits.request_timeout,
            openapi_json: openapi::document_json(demo.is_some()),
            content_security_policy,
            readiness: ops::Readiness::default(),
            demo,
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    // Every route sheds load and times out (an operations route answered under overload would
    // be a way around the limit); `/readyz` answers from a cached probe.
    use self::routes::Route;
    let route = |route: Route| route.template();
    let mut api = Router::new()
        .route(
            route(Route::Sales),
            post(sales::create_sale).get(sales::list_sales),
        )
        .route(
            route(Route::Sale),
            get(sales::show_sale).patch(sales::update_sale),
        )
        .route(route(Route::SalePause), post(sales::pause))
        .route(route(Route::SaleResume), post(sales::resume))
        .route(route(Route::SaleEnd), post(sales::end))
        .route(route(Route::SaleCodes), post(sales::make_codes))
        .route(route(Route::Purchase), post(sales::purchase))
        .route(route(Route::Line), post(queue::join).get(queue::status))
        .route(route(Route::QueueLog), get(queue::log))
        .route(route(Route::Keys), get(queue::keys))
        .route(route(Route::Audit), get(sales::audit))
        .route(route(Route::Orders), get(orders::list_orders))
        .route(route(Route::OrdersCsv), get(orders::export_orders))
        .route(route(Route::Order), get(orders::show_order))
        .route(route(Route::Pay), post(orders::pay))
        .route(route(Route::Cancel), post(orders::cancel))
        .route(route(Route::Refund), post(orders::refund))
        .route(route(Route::StripeWebhook), post(payments::stripe_webhook))
        .route(route(Route::PaymentConfig), get(payments::payment_config))
        .route(route(Route::Time), get(ops::time))
        .route(route(Route::Events), get(events::list_events))
        .route(route(Route::EventSinks), get(events::list_sinks));
    if state.demo.is_some() {
        api = api.route(route(Route::DemoToken), post(demo::demo_token));
    }
    let operations = Router::new()
        .route(route(Route::Storefront), get(pages::storefront))
        .route(route(Route::AdminConsole), get(pages::admin))
        .route(route(Route::Asset), get(pages::asset))
        .route(route(Route::Healthz), get(ops::healthz))
        .route(route(Route::Readyz), get(ops::readyz))
        .route(route(Route::Metrics), get(ops::metrics))
        .route(route(Route::OpenApi), get(ops::openapi));
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
