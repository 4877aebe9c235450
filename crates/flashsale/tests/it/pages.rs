//! The web pages' server side: demo mode (sign-in by name, the example sale), the server's time,
//! cacheable public sale reads (ETag, 304), and the pages and assets served from the binary.
//! The pages themselves are driven in Chromium by `scripts/browser-test`.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn demo_sign_in_exists_only_in_demo_mode() {
    let server = TestServer::start().await;
    let reply = server
        .post("/api/v1/demo/token", None, json!({ "user": "ann" }))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let page = server.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    server.stop().await;

    let server = TestServer::start_with(|settings| settings.demo = true).await;
    let reply = server
        .post("/api/v1/demo/token", None, json!({ "user": "ann" }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let token = reply.body["token"].as_str().expect("a token");
    let document = server.get("/api/openapi.json", None).await.body;
    assert!(
        document["paths"]["/api/v1/demo/token"]["post"].is_object(),
        "demo mode documents its route"
    );
    let orders = server.get("/api/v1/orders", Some(token)).await;
    assert_eq!(
        orders.status,
        StatusCode::OK,
        "the demo token is a buyer token"
    );
    for bad in [
        json!({ "user": "" }),
        json!({ "user": "x".repeat(65) }),
        json!({ "name": "ann" }),
    ] {
        let reply = server.post("/api/v1/demo/token", None, bad.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn demo_mode_offers_an_example_sale_a_minute_after_start_up() {
    let server = TestServer::start_with(|settings| settings.demo = true).await;
    let sales = server.get("/api/v1/sales", None).await;
    let sale = &sales.body["sales"][0];
    assert_eq!(sale["state"], json!("scheduled"), "{}", sales.body);
    let starts_at: jiff::Timestamp = sale["starts_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(starts_at.duration_since(server.now()).as_secs(), 60);
    server.advance(jiff::SignedDuration::from_secs(61));
    let sale_id = sale["id"].as_str().unwrap();
    assert_eq!(
        server.purchase(sale_id, "ann", None).await.status,
        StatusCode::CREATED
    );
    server.stop().await;
}

#[tokio::test]
async fn public_sale_reads_can_be_cached_and_revalidated() {
    let server = TestServer::start().await;
    let sale_id = server.create_sale(json!({ "stock": 5 })).await;
    for path in [
        "/api/v1/sales".to_owned(),
        format!("/api/v1/sales/{sale_id}"),
    ] {
        let first = server.get(&path, None).await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.headers["cache-control"], "public, max-age=1");
        let tag = first.headers["etag"].to_str().unwrap().to_owned();
        let again = server
            .send(Method::GET, &path, None, None, &[("if-none-match", &tag)])
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers["etag"].to_str().unwrap(), tag);
        // A purchase changes the count, so the tag no longer matches.
        let sold = server
            .purchase(&sale_id, &format!("buyer{path}"), None)
            .await;
        assert_eq!(sold.status, StatusCode::CREATED);
        let changed = server
            .send(Method::GET, &path, None, None, &[("if-none-match", &tag)])
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{path}");
        assert_ne!(changed.headers["etag"].to_str().unwrap(), tag);
    }
    server.stop().await;
}

#[tokio::test]
async fn the_server_tells_its_time() {
    let server = TestServer::start().await;
    let reply = server.get("/api/v1/time", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let now: jiff::Timestamp = reply.body["now"].as_str().unwrap().parse().unwrap();
    assert_eq!(now.as_millisecond(), server.now().as_millisecond());
    assert_eq!(reply.headers["cache-control"], "no-store");
    server.stop().await;
}

#[tokio::test]
async fn pages_and_assets_come_from_the_binary() {
    let server = TestServer::start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/admin", "text/html"),
        ("/assets/common.js", "text/javascript"),
        ("/assets/store.js", "text/javascript"),
        ("/assets/admin.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let reply = server.send(Method::GET, path, None, None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let content_type = reply.headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
    }
    let missing = server.get("/assets/nothing.js", None).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    server.stop().await;
}

/// Every page and asset carries the browser's defences (issue #24: a foreign page could frame
/// `/admin`): a policy allowing only this origin's scripts and styles and no framing, the old
/// header for the same, no sniffing, no referrer; the API's replies are not sniffed either. The
/// pages hold no inline script or style the policy would block (the browser test checks the
/// policy holds while every feature is used).
#[tokio::test]
async fn pages_and_assets_carry_the_browser_defences_and_the_api_nosniff() {
    let server = TestServer::start_with(|settings| settings.demo = true).await;
    for path in [
        "/",
        "/admin",
        "/assets/common.js",
        "/assets/store.js",
        "/assets/admin.js",
        "/assets/style.css",
    ] {
        let reply = server.get(path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_else(|| panic!("{path} has no {name}"))
                .to_owned()
        };
        let policy = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(
                policy.contains(directive),
                "{path}: {directive} in {policy}"
            );
        }
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        if path == "/" || path == "/admin" {
            let html = reply.body.as_str().unwrap();
            assert!(!html.contains("<script>"), "{path} has an inline script");
            assert!(!html.contains("<style"), "{path} has an inline style sheet");
            assert!(!html.contains(" style="), "{path} has an inline style");
            let inline_handler = html.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!inline_handler, "{path} has an inline event handler");
        }
    }
    let sale_id = server.create_sale(json!({ "stock": 1 })).await;
    for (method, path, bearer) in [
        (Method::GET, "/api/v1/sales".to_owned(), None),
        (Method::GET, "/api/openapi.json".to_owned(), None),
        (Method::GET, "/no/such/route".to_owned(), None),
        (Method::GET, "/assets/missing.js".to_owned(), None),
        (
            Method::POST,
            format!("/api/v1/sales/{sale_id}/purchase"),
            Some(server.token("sniffed")),
        ),
    ] {
        let reply = server
            .send(method, &path, bearer.as_deref(), None, &[])
            .await;
        assert_eq!(
            reply
                .headers
                .get("x-content-type-options")
                .map(|value| value.to_str().unwrap()),
            Some("nosniff"),
            "{path}: {}",
            reply.status
        );
    }
    server.assert_consistent(&sale_id).await;
}
