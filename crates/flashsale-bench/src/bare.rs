//! The bench's bare baseline: an HTTP/1.1 server with no middleware at all that answers every
//! request with a fixed sold-out refusal (the same status and a body of the same shape as the
//! server's). Run as its own process (`flashsale bare-responder`), like the server under test,
//! so "purchase req/s / bare req/s" measures what flashsale adds over a responder that does
//! nothing: auth, limits, metrics, routing, the gate.

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Router;

const BODY: &str =
    r#"{"error":{"code":"sold_out","message":"not enough stock left","remaining":0}}"#;

async fn refuse() -> impl IntoResponse {
    (
        StatusCode::CONFLICT,
        [(header::CONTENT_TYPE, "application/json")],
        BODY,
    )
}

/// Serves until killed; prints `listening on http://ADDR` first, as `serve` does.
pub fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, Router::new().fallback(refuse)).await
    })
}
