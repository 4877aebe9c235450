//! The OpenAPI document, generated from the handlers' annotations and the wire types, so it
//! cannot drift from the code (a test also checks that every route the router serves is in it,
//! and, route by route, that what a route answers is among the statuses listed for it). The
//! statuses every route shares (the in-flight limit's `503`, the rate limit's `429` on every
//! route that reads credentials, the id checks' `400` …) are added to each operation here, from
//! what the operation is, so that none is forgotten.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{demo, error, events, ops, orders, pages, payments, queue, sales, wire};

#[derive(OpenApi)]
#[openapi(
    info(title = "flashsale", description = "Flash-sale API (contract v1). Request bodies are \
        limited to 64 KiB: a Content-Length over it is refused (413) before the body is read. A \
        request's head must arrive within header_read_timeout_ms of its first byte (10 s by \
        default; else the connection is closed), its body within body_read_timeout_ms of the \
        head (5 s; else 408 request_timeout), and a kept-alive connection is closed after \
        idle_timeout_ms (60 s) without a request. Failed admin authentications are limited per \
        client address (429 with Retry-After)."),
    paths(
        sales::create_sale, sales::list_sales, sales::show_sale, sales::purchase, sales::audit,
        sales::update_sale, sales::pause, sales::resume, sales::end, sales::make_codes,
        queue::join, queue::status, queue::log, queue::keys,
        orders::show_order, orders::list_orders, orders::export_orders, orders::pay,
        orders::cancel, orders::refund, payments::stripe_webhook, payments::payment_config,
        events::list_events, events::list_sinks,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi, ops::time,
        pages::storefront, pages::admin, pages::asset,
    ),
    components(schemas(
        wire::CreateSaleRequest, wire::PurchaseRequest, wire::SaleBody, wire::SaleList,
        wire::OrderBody, wire::OrderPageBody, wire::AuditBody, wire::ErrorBody, error::ErrorDetail,
        wire::Status, wire::ServerTime, wire::WaitingRoomRequest, wire::WaitingRoomBody,
        wire::QueueStatusBody, wire::CloudEventBody, wire::EventPageBody, wire::SinkBody,
        wire::SinkListBody, wire::DeadLetterBody, wire::UpdateSaleRequest, wire::WaitingRoomUpdate,
        wire::CodesRequest, wire::CodesBody, wire::AccessBody, wire::PaymentBody, wire::PayRequest,
        wire::PaymentConfigBody, wire::QueueLogBody, wire::LogEntryBody, wire::CheckpointBody,
        wire::AdmissionRuleBody, wire::KeysBody, wire::KeyBody,
    )),
    modifiers(&BearerSchemes, &SharedResponses),
)]
struct ApiDoc;

/// Adds to every operation the statuses that follow from what it is (see the module's comment).
struct SharedResponses;

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .into()
}

fn add(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| error_response(description));
}

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                // Every route is under the in-flight limit and the request timeout.
                add(
                    operation,
                    "503",
                    "overloaded (in flight or timed out) or unavailable (a backend), with Retry-After",
                );
                if operation
                    .security
                    .as_ref()
                    .is_some_and(|list| !list.is_empty())
                {
                    add(operation, "401", "unauthenticated");
                    // Reading a buyer's credentials charges the buyer's rate slot.
                    add(operation, "429", "rate_limited, with Retry-After");
                }
                if operation.request_body.is_some() {
                    add(operation, "400", "invalid_request, naming the field");
                    add(operation, "413", "payload_too_large");
                }
                if path.contains("{sale_id}") || path.contains("{order_id}") {
                    add(
                        operation,
                        "400",
                        "invalid_request: not an id (1 to 64 of A-Z a-z 0-9 _ -)",
                    );
                }
                if path.starts_with("/api/v1/sales") || path.starts_with("/api/v1/orders") {
                    add(
                        operation,
                        "500",
                        "internal: a fault of the server's own (logged)",
                    );
                }
            }
        }
    }
}

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "buyer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An HS256 JWT with sub (user id) and exp"))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once at start-up.
/// The demo route, documented only where it is served (`--demo`).
#[derive(OpenApi)]
#[openapi(
    paths(demo::demo_token),
    components(schemas(demo::DemoTokenRequest, demo::DemoToken))
)]
struct DemoDoc;

pub fn document_json(demo: bool) -> String {
    let mut document = ApiDoc::openapi();
    if demo {
        document.merge(DemoDoc::openapi());
    }
    document
        .to_json()
        .unwrap_or_else(|error| format!(r#"{{"error":"{error}"}}"#))
}
