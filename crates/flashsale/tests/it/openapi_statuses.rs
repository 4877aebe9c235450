//! The OpenAPI document against what the routes answer, route by route: each operation the
//! document lists is sent a set of requests (no credentials, a buyer's, the admin's; a real id,
//! an unknown one, one over the 64-character limit; no body, a malformed one, an empty object),
//! then every route on a server that has no room for a request in flight (`503`) and every
//! route that reads credentials by a buyer over the rate limit (`429`). Every status a route
//! answers must be among those the document lists for it: a client generated from the document
//! knows every answer it can get.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{send, TestServer};

/// Every operation of the document: (method, path template, documented statuses, has a body,
/// reads credentials).
fn operations(document: &Value) -> Vec<(Method, String, Vec<String>, bool, bool)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let method: Method = method.to_uppercase().parse().expect("a method");
            let statuses = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .cloned()
                .collect();
            let has_body = operation.get("requestBody").is_some();
            let secured = operation["security"]
                .as_array()
                .is_some_and(|list| !list.is_empty());
            operations.push((method, path.clone(), statuses, has_body, secured));
        }
    }
    operations
}

fn concrete(path: &str, sale_id: &str, order_id: &str) -> String {
    path.replace("{sale_id}", sale_id)
        .replace("{order_id}", order_id)
        .replace("{file}", "common.js")
}

async fn document(server: &TestServer) -> Value {
    let document = server.get("/api/openapi.json", None).await;
    assert_eq!(document.status, StatusCode::OK);
    document.body
}

fn assert_documented(answered: StatusCode, statuses: &[String], what: &str, body: &Value) {
    assert!(
        statuses.iter().any(|status| status == answered.as_str()),
        "{what} answered {answered} ({body}), which the document does not list: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_a_route_answers_is_in_the_document() {
    let server = TestServer::start().await;
    let document = document(&server).await;
    let sale_id = server
        .create_sale(json!({ "stock": 1000, "per_user_limit": 100 }))
        .await;
    let order = server.purchase(&sale_id, "documented", None).await;
    let order_id = order.body["id"].as_str().expect("order id").to_owned();
    let (admin, buyer) = (server.admin_token.clone(), server.token("documented"));
    let long_id = "i".repeat(65);
    let ids = [
        (sale_id.as_str(), order_id.as_str()),
        ("unknown-id", "unknown-id"),
        (long_id.as_str(), long_id.as_str()),
    ];
    let bodies: [Option<&str>; 3] = [None, Some("{"), Some("{}")];
    let mut answered = 0;
    for (method, template, statuses, has_body, _) in operations(&document) {
        for (sale, order) in ids {
            let path = concrete(&template, sale, order);
            for token in [None, Some(buyer.as_str()), Some(admin.as_str())] {
                let bodies: &[Option<&str>] = if has_body { &bodies } else { &[None] };
                for body in bodies {
                    let reply = send(
                        &server.client,
                        server.next_addr(),
                        method.clone(),
                        &path,
                        token,
                        body.map(str::to_owned),
                        &[],
                    )
                    .await;
                    let what = format!("{method} {path} ({:?}, body {body:?})", token.is_some());
                    assert_documented(reply.status, &statuses, &what, &reply.body);
                    answered += 1;
                }
            }
        }
    }
    assert!(answered > 200, "{answered} requests");
    // The sales query names the limit it states.
    let long_query = server
        .get(&format!("/api/v1/orders?sale_id={long_id}"), Some(&buyer))
        .await;
    assert_eq!(long_query.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_documents_the_503_of_a_full_server() {
    // No room for a single request in flight: every route sheds.
    let server = TestServer::start_with(|settings| settings.max_in_flight = 0).await;
    let ids = ("some-sale", "some-order");
    let document_server = TestServer::start().await;
    let document = document(&document_server).await;
    for (method, template, statuses, _, _) in operations(&document) {
        let path = concrete(&template, ids.0, ids.1);
        let reply = send(
            &server.client,
            server.next_addr(),
            method.clone(),
            &path,
            Some(&server.admin_token),
            None,
            &[],
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}"
        );
        assert!(reply.headers.contains_key("retry-after"), "{method} {path}");
        assert_documented(
            reply.status,
            &statuses,
            &format!("{method} {path}"),
            &reply.body,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_that_reads_credentials_documents_the_429_of_the_rate_limit() {
    let server = TestServer::start_with(|settings| settings.buyer_requests_per_sec = 1).await;
    let document = document(&server).await;
    let mut limited = 0;
    for (index, (method, template, statuses, _, secured)) in
        operations(&document).into_iter().enumerate()
    {
        if !secured {
            continue;
        }
        // A buyer of its own per route, over the limit with the second request.
        let token = server.token(&format!("hasty-{index}"));
        let path = concrete(&template, "some-sale", "some-order");
        let mut last = None;
        for _ in 0..2 {
            last = Some(
                send(
                    &server.client,
                    server.next_addr(),
                    method.clone(),
                    &path,
                    Some(&token),
                    None,
                    &[],
                )
                .await,
            );
        }
        let reply = last.expect("a reply");
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{method} {path}"
        );
        assert_documented(
            reply.status,
            &statuses,
            &format!("{method} {path}"),
            &reply.body,
        );
        limited += 1;
    }
    assert!(limited >= 14, "{limited} routes read credentials");
}
