//! The one layer around every route: count and time the response (marking it `nosniff`), refuse from the headers what
//! can be refused before anything is read (a declared body over the limit: `413`; an unknown
//! route needs no permit), check the credentials, take an in-flight permit or shed at once
//! (`503 overloaded`, rather than queueing), and bound the request's time. Requests with valid
//! credentials and requests without draw permits from two budgets, so a crowd of anonymous
//! clients (a flood, or the storefront's public reads) never takes a permit a buyer needs. One
//! hand-written tower service instead of a chain of `from_fn` layers, each of which cloned and
//! boxed the next service and boxed its future on every request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::error::ApiError;
use super::routes::Route;
use super::{caller, AppState, BODY_LIMIT_BYTES};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct EdgeLayer {
    state: Arc<AppState>,
}

impl EdgeLayer {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: Arc<AppState>,
}

/// Counts a request in flight until it is answered or abandoned (a client that hangs up drops
/// the future: the gauge must come down all the same).
struct Counted<'a>(&'a Metrics);

impl<'a> Counted<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.request_started();
        Self(metrics)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let state = Arc::clone(&self.state);
        // The service polled ready takes this request; a clone takes its place for the next.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let admission = if declares_body_over_limit(request.headers()) {
            caller::forget();
            Admission::Refused(ApiError::payload_too_large())
        } else if route.is_none() {
            // The fallback answers an unknown route from its path alone.
            caller::forget();
            Admission::Unrouted
        } else {
            let now_secs = state.service.now().as_second();
            let valid = caller::authenticate(&state.auth, request.headers(), now_secs);
            let budget = if valid {
                &state.in_flight
            } else {
                &state.anonymous_in_flight
            };
            match Arc::clone(budget).try_acquire_owned() {
                Ok(permit) => Admission::Permitted(permit),
                Err(_) => Admission::Refused(ApiError::overloaded(
                    "too many requests in flight; retry later",
                )),
            }
        };
        Box::pin(async move {
            let counted = Counted::start(&state.metrics);
            let response = match admission {
                Admission::Refused(error) => error.into_response(),
                Admission::Unrouted => match ready.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Admission::Permitted(_permit) => {
                    match tokio::time::timeout(state.request_timeout, ready.call(request)).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => ApiError::overloaded("the request timed out; retry later")
                            .into_response(),
                    }
                }
            };
            drop(counted);
            let mut response = response;
            // No response is to be read as anything but its declared type.
            response.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            );
            state.metrics.record_response(
                route
                    .as_ref()
                    .map_or(Route::Other, |matched| Route::of_template(matched.as_str())),
                response.status().as_u16(),
                started.elapsed(),
            );
            Ok(response)
        })
    }
}

/// What the edge decided from a request's headers.
enum Admission {
    Refused(ApiError),
    /// No route: the fallback answers at once, without a permit.
    Unrouted,
    Permitted(tokio::sync::OwnedSemaphorePermit),
}

/// A `Content-Length` over the body limit: refused before a byte of the body is read.
fn declares_body_over_limit(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.parse::<u64>().ok())
        .is_some_and(|length| length > BODY_LIMIT_BYTES as u64)
}
