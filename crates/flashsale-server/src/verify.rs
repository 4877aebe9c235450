//! `flashsale verify --sale ID --url URL`: reads a sale, the installation's keys, the sale's whole
//! admission log (and, with the admin token, its orders) over HTTP or HTTPS, like any outsider
//! would, and checks them (`domain::check_log`). Nothing here trusts the server: every hash,
//! draw and signature is computed again.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::domain::{
    check_log, Admission, Break, CheckSummary, Checkpoint, DrawSeed, LogEntry, LogUnderCheck,
    OrderSeen, SaleId, UserId,
};
use crate::line::signature_valid;

/// Biggest reply read (a page of 1,000 entries with every checkpoint of a long sale).
const REPLY_BYTES_MAX: usize = 64 << 20;
const LOG_PAGE: usize = 1000;
const ORDERS_PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Fetch(String),
    #[error("the server's answer is not what the contract says: {0}")]
    Malformed(String),
    #[error("{0}")]
    Broken(Break),
}

/// What to verify.
#[derive(Clone, Debug)]
pub struct VerifyRequest {
    pub url: String,
    pub sale: String,
    /// With it, the sale's orders are read and each checked against the log.
    pub admin_token: Option<String>,
    /// Buyers whose draws to compute again (their ids are not in the public log).
    pub buyers: Vec<String>,
}

fn malformed(what: impl std::fmt::Display) -> VerifyError {
    VerifyError::Malformed(what.to_string())
}

/// A GET-only HTTP/1.1 client for one server.
struct Fetcher {
    base: url::Url,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    authority: String,
    sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
}

impl Fetcher {
    fn new(base: &str) -> Result<Self, VerifyError> {
        let base = url::Url::parse(base)
            .map_err(|error| VerifyError::Fetch(format!("--url {base}: {error}")))?;
        let host = base
            .host_str()
            .ok_or_else(|| VerifyError::Fetch("--url has no host".into()))?
            .to_owned();
        let tls = match base.scheme() {
            "http" => None,
            "https" => {
                let config = crate::tls::https_client_config()
                    .map_err(|error| VerifyError::Fetch(format!("TLS: {error}")))?;
                let name = rustls::pki_types::ServerName::try_from(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                )
                .map_err(|error| VerifyError::Fetch(format!("--url host: {error}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            other => {
                return Err(VerifyError::Fetch(format!(
                    "--url must be http or https, not {other}"
                )))
            }
        };
        let authority = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Ok(Self {
            base,
            tls,
            authority,
            sender: None,
        })
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, VerifyError> {
        let fetch = |what: &str, error: &dyn std::fmt::Display| {
            VerifyError::Fetch(format!("{what} {}: {error}", self.base))
        };
        let host = self.base.host_str().unwrap_or_default();
        let port = self.base.port_or_known_default().unwrap_or(80);
        let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|error| fetch("connecting to", &error))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|error| fetch("TLS with", &error))?;
                handshake(TokioIo::new(tls)).await
            }
        }
    }

    /// GETs `path_and_query` and parses the JSON reply.
    async fn get<T: serde::de::DeserializeOwned>(
        &mut self,
        path_and_query: &str,
        bearer: Option<&str>,
    ) -> Result<T, VerifyError> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        let mut request = hyper::Request::get(path_and_query)
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::USER_AGENT, "flashsale-verify");
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(|error| VerifyError::Fetch(error.to_string()))?;
        let fetch = |error: &dyn std::fmt::Display| {
            VerifyError::Fetch(format!("GET {path_and_query}: {error}"))
        };
        sender.ready().await.map_err(|error| fetch(&error))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| fetch(&error))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), REPLY_BYTES_MAX)
            .collect()
            .await
            .map_err(|error| fetch(&error))?
            .to_bytes();
        self.sender = Some(sender);
        if !status.is_success() {
            return Err(fetch(&format!(
                "the server answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|error| malformed(format!("GET {path_and_query}: {error}")))
    }
}

async fn handshake<T>(
    io: TokioIo<T>,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, VerifyError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| VerifyError::Fetch(format!("HTTP handshake: {error}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[derive(Deserialize)]
struct SaleReply {
    starts_at: String,
    waiting_room: Option<RoomReply>,
}

#[derive(Deserialize)]
struct RoomReply {
    draw_commitment: Option<String>,
    draw_seed: Option<String>,
}

#[derive(Deserialize)]
struct KeysReply {
    keys: Vec<KeyReply>,
}

#[derive(Deserialize)]
struct KeyReply {
    kid: String,
    public_key: String,
}

#[derive(Deserialize)]
struct LogReply {
    entries: Vec<EntryReply>,
    checkpoints: Vec<CheckpointReply>,
}

#[derive(Deserialize)]
struct EntryReply {
    n: u64,
    buyer_hash: String,
    draw: Option<String>,
    joined: Option<String>,
    admitted_at: Option<String>,
    prev_hash: String,
    hash: String,
}

#[derive(Deserialize)]
struct CheckpointReply {
    n: u64,
    hash: String,
    admitted_through: u64,
    time: String,
    signature: String,
    kid: String,
    admission: RuleReply,
}

#[derive(Deserialize)]
struct RuleReply {
    base: u64,
    since: String,
    admit_per_sec: u32,
    paused: bool,
    sold_out: bool,
}

#[derive(Deserialize)]
struct OrdersReply {
    orders: Vec<OrderReply>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct OrderReply {
    id: String,
    user_id: String,
    created_at: String,
}

fn digest(what: &str, text: &str) -> Result<[u8; 32], VerifyError> {
    DrawSeed::from_hex(text)
        .map(|seed| *seed.as_bytes())
        .ok_or_else(|| malformed(format!("{what} is not 64 hex digits: {text:?}")))
}

fn millis(what: &str, text: &str) -> Result<i64, VerifyError> {
    text.parse::<jiff::Timestamp>()
        .map(|at| at.as_millisecond())
        .map_err(|_| malformed(format!("{what} is not an RFC 3339 time: {text:?}")))
}

fn entry_of(reply: EntryReply) -> Result<LogEntry, VerifyError> {
    let at = |what: &str| format!("entry {}'s {what}", reply.n);
    Ok(LogEntry {
        n: reply.n,
        buyer_hash: digest(&at("buyer_hash"), &reply.buyer_hash)?,
        draw: reply
            .draw
            .as_deref()
            .map(|draw| digest(&at("draw"), draw))
            .transpose()?,
        joined_ms: reply
            .joined
            .as_deref()
            .map(|text| millis(&at("joined"), text))
            .transpose()?,
        admitted_ms: reply
            .admitted_at
            .as_deref()
            .map(|text| millis(&at("admitted_at"), text))
            .transpose()?,
        prev_hash: digest(&at("prev_hash"), &reply.prev_hash)?,
        hash: digest(&at("hash"), &reply.hash)?,
    })
}

fn checkpoint_of(index: usize, reply: &CheckpointReply) -> Result<Checkpoint, VerifyError> {
    let at = |what: &str| format!("checkpoint {index}'s {what}");
    Ok(Checkpoint {
        n: reply.n,
        hash: digest(&at("hash"), &reply.hash)?,
        admitted_through: reply.admitted_through,
        time_ms: millis(&at("time"), &reply.time)?,
        admission: Admission {
            base: reply.admission.base,
            since_ms: millis(&at("admission.since"), &reply.admission.since)?,
            admit_per_sec: reply.admission.admit_per_sec,
            paused: reply.admission.paused,
            sold_out: reply.admission.sold_out,
        },
        signature: STANDARD
            .decode(&reply.signature)
            .map_err(|_| malformed(format!("{} is not base64", at("signature"))))?,
    })
}

/// Reads everything and checks it.
pub async fn verify(request: &VerifyRequest) -> Result<CheckSummary, VerifyError> {
    let sale = SaleId::parse(&request.sale)
        .ok_or_else(|| VerifyError::Fetch(format!("--sale {:?} is not a sale id", request.sale)))?;
    let mut fetcher = Fetcher::new(&request.url)?;
    let reply: SaleReply = fetcher.get(&format!("/api/v1/sales/{sale}"), None).await?;
    let room = reply.waiting_room.ok_or_else(|| {
        VerifyError::Fetch("the sale has no waiting room: nothing to verify".into())
    })?;
    let commitment = room.draw_commitment.ok_or_else(|| {
        VerifyError::Fetch("the sale has no draw_commitment (made before committed draws)".into())
    })?;
    let commitment = digest("draw_commitment", &commitment)?;
    let seed = room
        .draw_seed
        .as_deref()
        .map(|text| {
            DrawSeed::from_hex(text)
                .ok_or_else(|| malformed(format!("draw_seed is not 64 hex digits: {text:?}")))
        })
        .transpose()?;
    let starts_ms = millis("starts_at", &reply.starts_at)?;

    let keys: KeysReply = fetcher.get("/api/v1/keys", None).await?;
    let mut public_keys = HashMap::new();
    for key in keys.keys {
        let bytes = STANDARD
            .decode(&key.public_key)
            .map_err(|_| malformed(format!("key {}'s public_key is not base64", key.kid)))?;
        public_keys.insert(key.kid, bytes);
    }

    let mut entries = Vec::new();
    let checkpoint_replies = loop {
        let path = format!(
            "/api/v1/sales/{sale}/queue/log?after={}&limit={LOG_PAGE}",
            entries.len()
        );
        let page: LogReply = fetcher.get(&path, None).await?;
        let read = page.entries.len();
        for entry in page.entries {
            entries.push(entry_of(entry)?);
        }
        if read < LOG_PAGE {
            break page.checkpoints;
        }
    };
    let checkpoints = checkpoint_replies
        .iter()
        .enumerate()
        .map(|(index, reply)| checkpoint_of(index, reply))
        .collect::<Result<Vec<_>, _>>()?;

    let orders = match &request.admin_token {
        Some(token) => Some(read_orders(&mut fetcher, &sale, token).await?),
        None => None,
    };
    let mut known_buyers: Vec<UserId> = request
        .buyers
        .iter()
        .filter_map(|buyer| UserId::parse(buyer))
        .collect();
    if let Some(orders) = &orders {
        known_buyers.extend(orders.iter().map(|order| order.user.clone()));
    }
    let log = LogUnderCheck {
        sale: &sale,
        starts_ms,
        commitment,
        seed,
        entries: &entries,
        checkpoints: &checkpoints,
        known_buyers: &known_buyers,
        orders: orders.as_deref(),
    };
    check_log(&log, |index, text, signature| {
        checkpoint_replies
            .get(index)
            .and_then(|reply| public_keys.get(&reply.kid))
            .is_some_and(|key| signature_valid(key, text, signature))
    })
    .map_err(VerifyError::Broken)
}

async fn read_orders(
    fetcher: &mut Fetcher,
    sale: &SaleId,
    token: &str,
) -> Result<Vec<OrderSeen>, VerifyError> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/orders?sale_id={sale}&limit={ORDERS_PAGE}");
        if let Some(cursor) = &cursor {
            path.push_str("&cursor=");
            path.push_str(
                &url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>(),
            );
        }
        let page: OrdersReply = fetcher.get(&path, Some(token)).await?;
        for order in page.orders {
            let user = UserId::parse(&order.user_id)
                .ok_or_else(|| malformed(format!("order {}'s user_id", order.id)))?;
            orders.push(OrderSeen {
                created_ms: millis(
                    &format!("order {}'s created_at", order.id),
                    &order.created_at,
                )?,
                id: order.id,
                user,
            });
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(orders),
        }
    }
}
