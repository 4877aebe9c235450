//! JSON replies written straight into one buffer. axum's `Json` serializes through an
//! `io::Write` adapter over a 128-byte `BytesMut`, one checked `put_slice` per fragment and a
//! regrowth or two for an order; a purchase's reply, ok or refused, is the response a flash sale
//! sends most, so its bytes go into a `Vec` sized for it and become the body without a copy.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Room for the largest hot reply (an order is ~330 bytes with a 64-character buyer id).
const REPLY_CAPACITY: usize = 512;

/// `status` with `body` as JSON.
pub struct JsonReply<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for JsonReply<T> {
    fn into_response(self) -> Response {
        let Self(status, body) = self;
        let mut bytes = Vec::with_capacity(REPLY_CAPACITY);
        if let Err(error) = serde_json::to_writer(&mut bytes, &body) {
            // The contract's shapes hold only strings, numbers and structs: this cannot fail
            // short of a bug, which still gets the contract's error shape.
            tracing::error!(%error, "a reply could not be written as JSON");
            return with_json_type(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec(),
            );
        }
        with_json_type(status, bytes)
    }
}

fn with_json_type(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_carries_its_status_type_and_exact_body() {
        #[derive(Serialize)]
        struct Shape<'a> {
            code: &'a str,
            count: u64,
        }
        let response = JsonReply(
            StatusCode::CONFLICT,
            Shape {
                code: "say \"hi\"",
                count: 3,
            },
        )
        .into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], br#"{"code":"say \"hi\"","count":3}"#);
    }
}
