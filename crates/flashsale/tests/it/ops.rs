//! Operations endpoints, load shedding, per-buyer rate limits and graceful shutdown.

use std::collections::BTreeSet;

use flashsale_server::http::routes::Route;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::{tally, users, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_the_page() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/healthz", None).await.status, StatusCode::OK);
    let ready = server.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let page = server.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .body
        .as_str()
        .unwrap_or("")
        .contains("<title>flashsale · sales</title>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_outcomes_and_commits() {
    let server = TestServer::start().await;
    let sale_id = server.create_sale(json!({ "stock": 1 })).await;
    server.purchase_all(&sale_id, users("metered", 3)).await;
    let reply = server.get("/metrics", None).await;
    let text = reply.body.as_str().expect("text").to_owned();
    let route = "/api/v1/sales/{sale_id}/purchase";
    for expected in [
        format!("flashsale_http_responses_total{{route=\"{route}\",status=\"201\"}} 1"),
        format!("flashsale_http_responses_total{{route=\"{route}\",status=\"409\"}} 2"),
        "flashsale_purchases_total{outcome=\"created\"} 1".to_owned(),
        "flashsale_purchases_total{outcome=\"sold_out\"} 2".to_owned(),
        format!("flashsale_http_request_duration_seconds_count{{route=\"{route}\"}} 3"),
        "flashsale_commit_batch_commands_count".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected} in\n{text}");
    }
}

/// The router is built from `Route`'s templates and the metrics count by them: every route
/// answers under its own label (a request no route matches counts as `other`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_routed_and_counted_under_its_own_label() {
    let server = TestServer::start_with(|settings| settings.demo = true).await;
    for route in Route::ALL.iter().filter(|route| **route != Route::Other) {
        let path = route
            .template()
            .replace("{sale_id}", "s")
            .replace("{order_id}", "o")
            .replace("{file}", "style.css");
        let _ = server.get(&path, None).await;
    }
    let _ = server.get("/nowhere", None).await;
    let reply = server.get("/metrics", None).await;
    let text = reply.body.as_str().expect("text").to_owned();
    for route in Route::ALL {
        let label = format!(
            "flashsale_http_responses_total{{route=\"{}\"",
            route.template()
        );
        assert!(
            text.contains(&label),
            "no response counted as {label} in\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route_of_the_contract() {
    let server = TestServer::start().await;
    let document = server.get("/api/openapi.json", None).await.body;
    assert_eq!(document["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let paths: BTreeSet<&str> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The demo route is served, and documented, only in demo mode.
    let demo_route = "/api/v1/demo/token";
    let routes: BTreeSet<&str> = Route::ALL
        .iter()
        .map(|route| route.template())
        .filter(|r| *r != "other" && *r != demo_route)
        .collect();
    assert_eq!(
        paths, routes,
        "the document and the router name the same routes"
    );
    let purchase = &document["paths"]["/api/v1/sales/{sale_id}/purchase"]["post"]["responses"];
    for status in [
        "200", "201", "400", "401", "403", "404", "408", "409", "413", "429", "503",
    ] {
        assert!(
            purchase.get(status).is_some(),
            "purchase documents {status}"
        );
    }
    assert!(document["components"]["securitySchemes"]["buyer"].is_object());
    let admin_only = &document["paths"]["/api/v1/sales/{sale_id}/audit"]["get"]["responses"];
    assert!(admin_only.get("429").is_some(), "a braked admin guess");
    let readyz = &document["paths"]["/readyz"]["get"]["responses"]["503"];
    assert!(
        readyz["content"].is_object(),
        "/readyz's 503 has the error body with its reason"
    );
    let detail = &document["components"]["schemas"]["ErrorDetail"]["properties"];
    assert!(detail["reason"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_capacity_sheds_with_503_and_retry_after() {
    let server = TestServer::start_with(|settings| settings.max_in_flight = 1).await;
    let sale_id = server.create_sale(json!({ "stock": 1000 })).await;
    let replies = server.purchase_all(&sale_id, users("crowd", 300)).await;
    let counts = tally(&replies);
    let created = counts.get(&(201, String::new())).copied().unwrap_or(0);
    let shed = counts
        .get(&(503, "overloaded".into()))
        .copied()
        .unwrap_or(0);
    assert_eq!(
        created + shed,
        300,
        "only successes and shed requests: {counts:?}"
    );
    assert!(
        shed > 0,
        "one request in flight at a time must shed some of 300: {counts:?}"
    );
    for reply in replies
        .iter()
        .filter(|reply| reply.status == StatusCode::SERVICE_UNAVAILABLE)
    {
        assert_eq!(
            reply
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            Some("1")
        );
    }
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(
        audit["pending"],
        json!(created),
        "every 201 and nothing else holds stock"
    );
    // The operations routes are under the same limit: a storm of them is shed too.
    let storm: Vec<_> = (0..300)
        .map(|turn| {
            let (client, addr) = (server.client.clone(), server.next_addr());
            let path = ["/healthz", "/readyz", "/metrics"][turn % 3];
            tokio::spawn(async move {
                crate::harness::send(&client, addr, hyper::Method::GET, path, None, None, &[])
                    .await
                    .status
            })
        })
        .collect();
    let mut ops_shed = 0;
    for reply in storm {
        let status = reply.await.unwrap();
        assert!(status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE);
        ops_shed += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        ops_shed > 0,
        "operations routes shed under overload as well"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_over_the_rate_limit_gets_429_with_retry_after() {
    let server = TestServer::start_with(|settings| settings.buyer_requests_per_sec = 2).await;
    let sale_id = server.create_sale(json!({})).await;
    let token = server.token("hammer");
    let mut limited = 0;
    for _ in 0..10 {
        let reply = server
            .send(
                Method::GET,
                &format!("/api/v1/orders?sale_id={sale_id}"),
                Some(&token),
                None,
                &[],
            )
            .await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert_eq!(reply.code(), "rate_limited");
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    // Ten requests span at most two one-second windows of two requests each.
    assert!(limited >= 6, "{limited} of 10 were limited");
    let other = server
        .get("/api/v1/orders", Some(&server.token("calm")))
        .await;
    assert_eq!(other.status, StatusCode::OK, "another buyer is not limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_what_was_received_and_keeps_it() {
    let data_dir = tempfile::tempdir().unwrap();
    let settings = crate::harness::test_settings(data_dir.path());
    let server = TestServer::start_on(settings.clone(), None).await;
    let sale_id = server.create_sale(json!({ "stock": 50 })).await;
    let replies = server
        .purchase_all(&sale_id, users("before-stop", 20))
        .await;
    assert!(replies
        .iter()
        .all(|reply| reply.status == StatusCode::CREATED));
    server.stop().await;

    let restarted = TestServer::start_on(settings, None).await;
    let audit = restarted.assert_consistent(&sale_id).await;
    assert_eq!(
        audit["pending"],
        json!(20),
        "every acknowledged order survived the restart"
    );
    let again = restarted.purchase(&sale_id, "before-stop-0", None).await;
    assert_eq!(
        again.code(),
        "already_purchased",
        "holdings were rebuilt: {}",
        again.body
    );
}

/// The served OpenAPI document states each field's limits, so that a client generated from it
/// sends only requests the server accepts.
#[tokio::test]
async fn the_openapi_document_states_the_limits_of_every_field() {
    let server = TestServer::start().await;
    let document = server.get("/api/openapi.json", None).await.body;
    let create = &document["components"]["schemas"]["CreateSaleRequest"];
    assert_eq!(create["additionalProperties"], json!(false));
    let field = |name: &str| &create["properties"][name];
    assert_eq!(field("name")["minLength"], json!(1));
    assert_eq!(field("name")["maxLength"], json!(200));
    assert_eq!(field("description")["maxLength"], json!(2000));
    assert_eq!(field("stock")["minimum"], json!(1));
    assert_eq!(field("stock")["maximum"], json!(1_000_000_000));
    assert_eq!(field("per_user_limit")["maximum"], json!(100));
    assert_eq!(field("price_cents")["minimum"], json!(0));
    assert_eq!(field("payment_window_secs")["maximum"], json!(86_400));
    let purchase = &document["paths"]["/api/v1/sales/{sale_id}/purchase"]["post"];
    let parameter = |name: &str| {
        purchase["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == json!(name))
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(parameter("sale_id")["maxLength"], json!(64));
    assert_eq!(parameter("Idempotency-Key")["maxLength"], json!(128));
    let listing = &document["paths"]["/api/v1/orders"]["get"]["parameters"];
    let limit = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == json!("limit"))
        .unwrap();
    assert_eq!(limit["schema"]["minimum"], json!(1));
    assert_eq!(limit["schema"]["maximum"], json!(500));
}
