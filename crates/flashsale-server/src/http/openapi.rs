//! The OpenAPI document, generated from the handlers' annotations and the wire types, so it
//! cannot drift from the code (a test also checks that every route the router serves is in it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{demo, error, events, ops, orders, pages, payments, queue, sales, wire};

#[derive(OpenApi)]
#[openapi(
    info(title = "flashsale", description = "Flash-sale API (contract v1)"),
    paths(
        sales::create_sale, sales::list_sales, sales::show_sale, sales::purchase, sales::audit,
        queue::join, queue::status,
        orders::show_order, orders::list_orders, orders::pay, orders::cancel, orders::refund,
        payments::stripe_webhook, payments::payment_config,
        events::list_events, events::list_sinks,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi, ops::time,
        pages::storefront, pages::admin, pages::asset,
    ),
    components(schemas(
        wire::CreateSaleRequest, wire::PurchaseRequest, wire::SaleBody, wire::SaleList,
        wire::OrderBody, wire::OrderPageBody, wire::AuditBody, wire::ErrorBody, error::ErrorDetail,
        wire::Status, wire::ServerTime, wire::WaitingRoomRequest, wire::WaitingRoomBody,
        wire::QueueStatusBody, wire::CloudEventBody, wire::EventPageBody, wire::SinkBody,
        wire::SinkListBody, wire::DeadLetterBody, wire::PaymentBody, wire::PayRequest,
        wire::PaymentConfigBody,
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
