//! The OpenAPI document, generated from the handlers' annotations and the wire types, so it
//! cannot drift from the code (a test also checks that every route the router serves is in it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{demo, error, events, ops, orders, pages, queue, sales, wire};

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
        queue::join, queue::status,
        orders::show_order, orders::list_orders, orders::pay, orders::cancel,
        events::list_events, events::list_sinks,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi, ops::time,
        pages::storefront, pages::admin, pages::asset,
    ),
    components(schemas(
        wire::CreateSaleRequest, wire::PurchaseRequest, wire::SaleBody, wire::SaleList,
        wire::OrderBody, wire::OrderPageBody, wire::AuditBody, wire::ErrorBody, error::ErrorDetail,
        wire::Status, wire::ServerTime, wire::WaitingRoomRequest, wire::WaitingRoomBody,
        wire::QueueStatusBody, wire::CloudEventBody, wire::EventPageBody, wire::SinkBody,
        wire::SinkListBody, wire::DeadLetterBody,
    )),
    modifiers(&BearerSchemes),
)]
struct ApiDoc;

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
