//! Authentication and authorization failures, each answered with the contract's status and code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_unauthenticated() {
    let server = TestServer::start().await;
    let sale_id = server.create_sale(json!({})).await;
    let path = format!("/api/v1/sales/{sale_id}/purchase");
    let now = jiff::Timestamp::now().as_second();
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"eve","exp":{}}}"#, now + 600));
    let alg_none = format!(
        "{}.{claims}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
    );
    let cases = [
        (
            "wrong secret",
            Some(flashsale_server::auth::mint_token(
                "not-the-secret",
                "eve",
                now + 600,
            )),
        ),
        (
            "expired",
            Some(flashsale_server::auth::mint_token(
                &server.jwt_secret,
                "eve",
                now - 1,
            )),
        ),
        ("alg none", Some(alg_none)),
        ("garbage", Some("garbage".to_owned())),
    ];
    for (name, token) in cases {
        let reply = server
            .send(Method::POST, &path, token.as_deref(), None, &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "unauthenticated", "{name}");
    }
    let missing = server.send(Method::POST, &path, None, None, &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    let basic = server
        .send(
            Method::POST,
            &path,
            None,
            None,
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    let create = server
        .post(
            "/api/v1/sales",
            None,
            json!({"name": "x", "stock": 1, "starts_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(create.status, StatusCode::UNAUTHORIZED);
    server.assert_consistent(&sale_id).await;
    assert_eq!(
        server.audit(&sale_id).await["pending"],
        json!(0),
        "nothing was sold"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_kept_apart() {
    let server = TestServer::start().await;
    let sale_id = server.create_sale(json!({})).await;
    let buyer = server.token("mallory");
    let on_admin_route = server
        .post(
            "/api/v1/sales",
            Some(&buyer),
            json!({"name": "x", "stock": 1, "starts_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(on_admin_route.status, StatusCode::FORBIDDEN);
    assert_eq!(on_admin_route.code(), "forbidden");
    let audit = server
        .get(&format!("/api/v1/sales/{sale_id}/audit"), Some(&buyer))
        .await;
    assert_eq!(audit.status, StatusCode::FORBIDDEN);
    let admin_buying = server
        .send(
            Method::POST,
            &format!("/api/v1/sales/{sale_id}/purchase"),
            Some(&server.admin_token),
            None,
            &[],
        )
        .await;
    assert_eq!(admin_buying.status, StatusCode::FORBIDDEN);
    assert_eq!(admin_buying.code(), "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_cannot_see_or_touch_another_buyers_order() {
    let server = TestServer::start().await;
    let sale_id = server.create_sale(json!({})).await;
    let order = server.purchase(&sale_id, "victim", None).await;
    let order_id = order.body["id"].as_str().unwrap().to_owned();
    let thief = server.token("thief");
    let read = server
        .get(&format!("/api/v1/orders/{order_id}"), Some(&thief))
        .await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    assert_eq!(read.code(), "order_not_found");
    for action in ["pay", "cancel"] {
        let reply = server
            .send(
                Method::POST,
                &format!("/api/v1/orders/{order_id}/{action}"),
                Some(&thief),
                None,
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{action}");
    }
    let listed = server.get("/api/v1/orders", Some(&thief)).await;
    assert_eq!(listed.body["orders"], json!([]));
    let own = server
        .get(
            &format!("/api/v1/orders/{order_id}"),
            Some(&server.token("victim")),
        )
        .await;
    assert_eq!(own.body["status"], json!("pending_payment"), "untouched");
    let admin = server
        .get(
            &format!("/api/v1/orders/{order_id}"),
            Some(&server.admin_token),
        )
        .await;
    assert_eq!(admin.status, StatusCode::OK, "the admin may read any order");
    let admin_pays = server
        .send(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/pay"),
            Some(&server.admin_token),
            None,
            &[],
        )
        .await;
    assert_eq!(
        admin_pays.status,
        StatusCode::FORBIDDEN,
        "only its buyer pays"
    );
}

/// A configured secret shorter than 32 bytes is refused at start-up, naming the setting.
#[tokio::test]
async fn short_configured_secrets_are_refused_at_start() {
    for (admin, jwt, named) in [
        (
            "short-admin",
            "a-jwt-secret-that-is-long-enough-32",
            "admin_token",
        ),
        (
            "an-admin-token-that-is-long-enough-32",
            "short",
            "jwt_secret",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = crate::harness::test_settings(dir.path());
        settings.admin_token = Some(admin.into());
        settings.jwt_secret = Some(jwt.into());
        match flashsale_server::app::App::build(&settings).await {
            Ok(_) => panic!("started with a short {named}"),
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.contains(named) && message.contains("32"),
                    "{message}"
                );
            }
        }
    }
}
