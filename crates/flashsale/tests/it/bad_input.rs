//! A table of bad requests: each gets a 4xx with its error code, and afterwards the server is
//! healthy and the audit consistent.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::TestServer;

/// (what, method, path, token, body, headers, status, code, field)
type Case<'a> = (
    &'a str,
    Method,
    String,
    &'a str,
    Option<String>,
    Vec<(&'a str, &'a str)>,
    u16,
    &'a str,
    Option<&'a str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let server = TestServer::start().await;
    let sale_id = server
        .create_sale(json!({ "stock": 5, "per_user_limit": 2 }))
        .await;
    let admin = server.admin_token.clone();
    let buyer = server.token("tester");
    let purchase = format!("/api/v1/sales/{sale_id}/purchase");
    let sale = |fields: &str| {
        format!(r#"{{"name":"x","stock":1,"starts_at":"2020-01-01T00:00:00Z"{fields}}}"#)
    };
    let huge = format!(
        r#"{{"name":"{}","stock":1,"starts_at":"2020-01-01T00:00:00Z"}}"#,
        "x".repeat(70_000)
    );
    let long_id = "a".repeat(65);
    let key_129 = "k".repeat(129);

    let cases: Vec<Case> = vec![
        ("malformed JSON", Method::POST, "/api/v1/sales".into(), &admin, Some("{\"name\":".into()), vec![], 400, "invalid_request", None),
        ("not an object", Method::POST, "/api/v1/sales".into(), &admin, Some("[1,2]".into()), vec![], 400, "invalid_request", None),
        ("empty body", Method::POST, "/api/v1/sales".into(), &admin, Some(String::new()), vec![], 400, "invalid_request", None),
        ("missing name", Method::POST, "/api/v1/sales".into(), &admin, Some(r#"{"stock":1,"starts_at":"2020-01-01T00:00:00Z"}"#.into()), vec![], 400, "invalid_request", Some("name")),
        ("stock as string", Method::POST, "/api/v1/sales".into(), &admin, Some(r#"{"name":"x","stock":"1","starts_at":"2020-01-01T00:00:00Z"}"#.into()), vec![], 400, "invalid_request", Some("stock")),
        ("stock as float", Method::POST, "/api/v1/sales".into(), &admin, Some(r#"{"name":"x","stock":1.5,"starts_at":"2020-01-01T00:00:00Z"}"#.into()), vec![], 400, "invalid_request", Some("stock")),
        ("stock zero", Method::POST, "/api/v1/sales".into(), &admin, Some(sale(r#","stock":0"#).replace(r#""stock":1,"#, "")), vec![], 400, "invalid_request", Some("stock")),
        ("stock too big", Method::POST, "/api/v1/sales".into(), &admin, Some(r#"{"name":"x","stock":1000000001,"starts_at":"2020-01-01T00:00:00Z"}"#.into()), vec![], 400, "invalid_request", Some("stock")),
        ("stock beyond i64", Method::POST, "/api/v1/sales".into(), &admin, Some(r#"{"name":"x","stock":99999999999999999999999,"starts_at":"2020-01-01T00:00:00Z"}"#.into()), vec![], 400, "invalid_request", Some("stock")),
        ("negative price", Method::POST, "/api/v1/sales".into(), &admin, Some(sale(r#","price_cents":-1"#)), vec![], 400, "invalid_request", Some("price_cents")),
        ("limit 101", Method::POST, "/api/v1/sales".into(), &admin, Some(sale(r#","per_user_limit":101"#)), vec![], 400, "invalid_request", Some("per_user_limit")),
        ("window 0", Method::POST, "/api/v1/sales".into(), &admin, Some(sale(r#","payment_window_secs":0"#)), vec![], 400, "invalid_request", Some("payment_window_secs")),
        ("bad time", Method::POST, "/api/v1/sales".into(), &admin, Some(r#"{"name":"x","stock":1,"starts_at":"tomorrow"}"#.into()), vec![], 400, "invalid_request", Some("starts_at")),
        ("ends before start", Method::POST, "/api/v1/sales".into(), &admin, Some(sale(r#","ends_at":"2019-01-01T00:00:00Z""#)), vec![], 400, "invalid_request", Some("ends_at")),
        ("unknown field", Method::POST, "/api/v1/sales".into(), &admin, Some(sale(r#","stok":5"#)), vec![], 400, "invalid_request", Some("stok")),
        ("name too long", Method::POST, "/api/v1/sales".into(), &admin, Some(format!(r#"{{"name":"{}","stock":1,"starts_at":"2020-01-01T00:00:00Z"}}"#, "x".repeat(201))), vec![], 400, "invalid_request", Some("name")),
        ("oversized body", Method::POST, "/api/v1/sales".into(), &admin, Some(huge), vec![], 413, "payload_too_large", None),
        ("quantity as string", Method::POST, purchase.clone(), &buyer, Some(r#"{"quantity":"1"}"#.into()), vec![], 400, "invalid_request", Some("quantity")),
        ("quantity zero", Method::POST, purchase.clone(), &buyer, Some(r#"{"quantity":0}"#.into()), vec![], 400, "invalid_quantity", None),
        ("quantity negative", Method::POST, purchase.clone(), &buyer, Some(r#"{"quantity":-3}"#.into()), vec![], 400, "invalid_quantity", None),
        ("quantity above limit", Method::POST, purchase.clone(), &buyer, Some(r#"{"quantity":3}"#.into()), vec![], 400, "invalid_quantity", None),
        ("quantity fractional", Method::POST, purchase.clone(), &buyer, Some(r#"{"quantity":1.5}"#.into()), vec![], 400, "invalid_quantity", None),
        ("quantity huge", Method::POST, purchase.clone(), &buyer, Some(r#"{"quantity":1e300}"#.into()), vec![], 400, "invalid_quantity", None),
        ("purchase unknown field", Method::POST, purchase.clone(), &buyer, Some(r#"{"qty":1}"#.into()), vec![], 400, "invalid_request", Some("qty")),
        ("purchase malformed", Method::POST, purchase.clone(), &buyer, Some("{".into()), vec![], 400, "invalid_request", None),
        ("empty idempotency key", Method::POST, purchase.clone(), &buyer, None, vec![("idempotency-key", "")], 400, "invalid_request", Some("Idempotency-Key")),
        ("long idempotency key", Method::POST, purchase.clone(), &buyer, None, vec![("idempotency-key", &key_129)], 400, "invalid_request", Some("Idempotency-Key")),
        ("unknown sale", Method::POST, "/api/v1/sales/nope/purchase".into(), &buyer, None, vec![], 404, "sale_not_found", None),
        ("odd sale id", Method::GET, "/api/v1/sales/..%2F..%2Fetc".into(), &buyer, None, vec![], 400, "invalid_request", Some("sale_id")),
        ("long sale id", Method::GET, format!("/api/v1/sales/{long_id}"), &buyer, None, vec![], 400, "invalid_request", Some("sale_id")),
        ("bad utf-8 in path", Method::GET, "/api/v1/sales/%FF%FE".into(), &buyer, None, vec![], 400, "invalid_request", None),
        ("unknown order", Method::GET, "/api/v1/orders/nope".into(), &buyer, None, vec![], 404, "order_not_found", None),
        ("odd order id", Method::POST, "/api/v1/orders/%20/pay".into(), &buyer, None, vec![], 400, "invalid_request", Some("order_id")),
        ("long sale_id query", Method::GET, format!("/api/v1/orders?sale_id={long_id}"), &buyer, None, vec![], 400, "invalid_request", Some("sale_id")),
        ("patch unknown field", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &admin, Some(r#"{"stok":1}"#.into()), vec![], 400, "invalid_request", Some("stok")),
        ("patch add nothing", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &admin, Some(r#"{"add_stock":0}"#.into()), vec![], 400, "invalid_request", Some("add_stock")),
        ("patch add too much", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &admin, Some(r#"{"add_stock":1000000001}"#.into()), vec![], 400, "invalid_request", Some("add_stock")),
        ("patch add and remove", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &admin, Some(r#"{"add_stock":1,"remove_stock":1}"#.into()), vec![], 400, "invalid_request", Some("remove_stock")),
        ("patch remove over what remains", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &admin, Some(r#"{"remove_stock":6}"#.into()), vec![], 409, "insufficient_stock", None),
        ("patch lower limit", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &admin, Some(r#"{"per_user_limit":1}"#.into()), vec![], 400, "invalid_request", Some("per_user_limit")),
        ("patch end in the past", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &admin, Some(r#"{"ends_at":"2021-01-01T00:00:00Z"}"#.into()), vec![], 400, "invalid_request", Some("ends_at")),
        ("patch rate of no room", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &admin, Some(r#"{"waiting_room":{"admit_per_sec":5}}"#.into()), vec![], 400, "invalid_request", Some("waiting_room")),
        ("patch as a buyer", Method::PATCH, format!("/api/v1/sales/{sale_id}"), &buyer, Some(r#"{"name":"mine"}"#.into()), vec![], 403, "forbidden", None),
        ("pause as a buyer", Method::POST, format!("/api/v1/sales/{sale_id}/pause"), &buyer, None, vec![], 403, "forbidden", None),
        ("end an unknown sale", Method::POST, "/api/v1/sales/nope/end".into(), &admin, None, vec![], 404, "sale_not_found", None),
        ("no codes", Method::POST, format!("/api/v1/sales/{sale_id}/codes"), &admin, Some(r#"{"count":0}"#.into()), vec![], 400, "invalid_request", Some("count")),
        ("too many codes", Method::POST, format!("/api/v1/sales/{sale_id}/codes"), &admin, Some(r#"{"count":1000001}"#.into()), vec![], 400, "invalid_request", Some("count")),
        ("export an unknown status", Method::GET, "/api/v1/orders.csv?status=lost".into(), &admin, None, vec![], 400, "invalid_request", Some("status")),
        ("export as a buyer", Method::GET, "/api/v1/orders.csv".into(), &buyer, None, vec![], 403, "forbidden", None),
        ("limit zero", Method::GET, "/api/v1/orders?limit=0".into(), &buyer, None, vec![], 400, "invalid_request", Some("limit")),
        ("limit 501", Method::GET, "/api/v1/orders?limit=501".into(), &buyer, None, vec![], 400, "invalid_request", Some("limit")),
        ("limit word", Method::GET, "/api/v1/orders?limit=ten".into(), &buyer, None, vec![], 400, "invalid_request", Some("limit")),
        ("bad cursor", Method::GET, "/api/v1/orders?cursor=%2F%2F".into(), &buyer, None, vec![], 400, "invalid_request", Some("cursor")),
        ("unknown route", Method::GET, "/api/v2/sales".into(), &buyer, None, vec![], 404, "not_found", None),
        ("wrong method", Method::DELETE, format!("/api/v1/sales/{sale_id}"), &admin, None, vec![], 405, "method_not_allowed", None),
    ];
    for (what, method, path, token, body, headers, status, code, field) in cases {
        let reply = server
            .send(method, &path, Some(token), body, &headers)
            .await;
        assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.body);
        assert_eq!(reply.code(), code, "{what}: {}", reply.body);
        assert!(
            reply.body["error"]["message"].is_string(),
            "{what}: has a message"
        );
        if let Some(field) = field {
            assert_eq!(
                reply.body["error"]["field"],
                json!(field),
                "{what}: {}",
                reply.body
            );
        }
    }

    let health = server.get("/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(audit["pending"], json!(0), "no bad request bought anything");
    let listed = server.get("/api/v1/sales", None).await;
    assert_eq!(
        listed.body["sales"].as_array().unwrap().len(),
        1,
        "no bad request made a sale"
    );
    let good = server.purchase(&sale_id, "tester", Some(2)).await;
    assert_eq!(
        good.status,
        StatusCode::CREATED,
        "still sells: {}",
        good.body
    );
}
