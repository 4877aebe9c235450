//! The admin side of a bench: creating sales, reading orders and audits, minting buyer tokens.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::client::{ClientError, Connection};
use flashsale_server::auth::TokenMinter;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{what}: the server answered {status}: {body}")]
    Status {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("{what}: unexpected reply: {error}")]
    Decode {
        what: &'static str,
        error: serde_json::Error,
    },
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Audit {
    pub stock: u64,
    pub remaining: u64,
    pub pending: u64,
    pub paid: u64,
    pub cancelled: u64,
    pub expired: u64,
    pub consistent: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct OrderSeen {
    pub id: String,
    pub sale_id: String,
    pub user_id: String,
    pub quantity: u32,
    pub status: String,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Page {
    orders: Vec<OrderSeen>,
    next_cursor: Option<String>,
}

/// One event sink as the server reports it (`GET /api/v1/events/sinks`).
#[derive(Clone, Debug, Deserialize)]
pub struct SinkSeen {
    pub name: String,
    pub delivered: u64,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub dead_letters: u64,
}

#[derive(Deserialize)]
struct Sinks {
    sinks: Vec<SinkSeen>,
}

pub struct Api {
    address: SocketAddr,
    admin_token: String,
    minter: TokenMinter,
    /// Tokens expire a day after the bench started.
    token_expires_at_secs: i64,
    /// Admin calls are few and sequential; one connection serves them.
    connection: Mutex<Option<Connection>>,
    timeout: Duration,
}

pub fn buyer_name(buyer: u64) -> String {
    format!("buyer-{buyer}")
}

impl Api {
    pub fn new(
        address: SocketAddr,
        admin_token: String,
        jwt_secret: String,
        timeout: Duration,
    ) -> Self {
        Self {
            address,
            admin_token,
            minter: TokenMinter::new(&jwt_secret),
            token_expires_at_secs: jiff::Timestamp::now().as_second() + 86_400,
            connection: Mutex::new(None),
            timeout,
        }
    }

    /// The admin side of the server `target` names.
    pub fn of(target: &super::target::Target, timeout: Duration) -> Self {
        Self::new(
            target.address,
            target.admin_token.clone(),
            target.jwt_secret.clone(),
            timeout,
        )
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A buyer token valid for a day.
    pub fn token(&self, user: &str) -> String {
        self.minter.mint(user, self.token_expires_at_secs)
    }

    /// The `Authorization` header of buyer `buyer`.
    pub fn buyer_authorization(&self, buyer: u64) -> Option<hyper::header::HeaderValue> {
        super::client::bearer(&self.token(&buyer_name(buyer)))
    }

    async fn call(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            *slot = Some(Connection::open(self.address, 0, self.timeout).await?);
        }
        let Some(connection) = slot.as_mut() else {
            return Err(ClientError::Timeout.into());
        };
        let authorization = super::client::bearer(bearer.unwrap_or(&self.admin_token));
        match connection
            .send(method, path, authorization, &[], body.map(Bytes::from))
            .await
        {
            Ok(reply) => Ok((reply.status, reply.body)),
            Err(error) => {
                *slot = None;
                let _ = what;
                Err(error.into())
            }
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(
        what: &'static str,
        expected: StatusCode,
        (status, body): (StatusCode, Bytes),
    ) -> Result<T, ApiError> {
        if status != expected {
            return Err(ApiError::Status {
                what,
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|error| ApiError::Decode { what, error })
    }

    /// Creates a sale that is live now; returns its id.
    pub async fn create_sale(
        &self,
        name: &str,
        stock: u64,
        per_user_limit: u32,
        payment_window_secs: u32,
    ) -> Result<String, ApiError> {
        self.create_sale_with(json!({
            "name": name,
            "stock": stock,
            "per_user_limit": per_user_limit,
            "payment_window_secs": payment_window_secs,
            "starts_at": "2020-01-01T00:00:00Z",
        }))
        .await
    }

    /// Creates a sale from a whole create body; returns its id.
    pub async fn create_sale_with(&self, body: serde_json::Value) -> Result<String, ApiError> {
        let reply = self
            .call(
                "create sale",
                Method::POST,
                "/api/v1/sales",
                None,
                Some(body.to_string()),
            )
            .await?;
        Self::decode::<Created>("create sale", StatusCode::CREATED, reply).map(|sale| sale.id)
    }

    pub async fn audit(&self, sale_id: &str) -> Result<Audit, ApiError> {
        let path = format!("/api/v1/sales/{sale_id}/audit");
        let reply = self.call("audit", Method::GET, &path, None, None).await?;
        Self::decode("audit", StatusCode::OK, reply)
    }

    /// One order as the admin sees it, or `None` when the server says it does not exist.
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderSeen>, ApiError> {
        let path = format!("/api/v1/orders/{order_id}");
        let reply = self
            .call("read order", Method::GET, &path, None, None)
            .await?;
        if reply.0 == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Self::decode("read order", StatusCode::OK, reply).map(Some)
    }

    /// Every order of a sale, paging through the listing.
    pub async fn orders_of_sale(&self, sale_id: &str) -> Result<Vec<OrderSeen>, ApiError> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => format!("/api/v1/orders?sale_id={sale_id}&limit=500"),
                Some(cursor) => {
                    format!("/api/v1/orders?sale_id={sale_id}&limit=500&cursor={cursor}")
                }
            };
            let reply = self
                .call("list orders", Method::GET, &path, None, None)
                .await?;
            let page: Page = Self::decode("list orders", StatusCode::OK, reply)?;
            orders.extend(page.orders);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(orders),
            }
        }
    }

    /// The server's event sinks and how far behind each is.
    pub async fn sinks(&self) -> Result<Vec<SinkSeen>, ApiError> {
        let reply = self
            .call(
                "event sinks",
                Method::GET,
                "/api/v1/events/sinks",
                None,
                None,
            )
            .await?;
        Self::decode::<Sinks>("event sinks", StatusCode::OK, reply).map(|sinks| sinks.sinks)
    }

    /// Pays or cancels an order as its buyer; returns the status the server answered.
    pub async fn act(
        &self,
        order_id: &str,
        buyer: &str,
        action: &str,
    ) -> Result<StatusCode, ApiError> {
        let token = self.token(buyer);
        let path = format!("/api/v1/orders/{order_id}/{action}");
        let (status, _) = self
            .call("pay or cancel", Method::POST, &path, Some(&token), None)
            .await?;
        Ok(status)
    }
}
