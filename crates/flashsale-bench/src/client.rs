//! The load generator's HTTP/1.1 client: one keep-alive connection per task, no pool, no
//! retries, so every request is one exchange on a connection the bench controls.
//!
//! Many connections to one loopback port need many source ports: each source address has about
//! 28,000 ephemeral ports, so connection `i` binds to `127.0.0.(1 + i % 200)` when the target is
//! on loopback, and the open-file limit is raised to its hard maximum first.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

/// Source addresses used round-robin for loopback targets.
const LOOPBACK_SOURCES: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("timed out")]
    Timeout,
}

/// Raises the open-file limit to at least `wanted` (root may raise the hard limit too, up to the
/// kernel's `fs.nr_open`), else as far as the hard limit allows; returns the limit now in force.
/// An embedded server started afterwards inherits it.
pub fn raise_open_file_limit(wanted: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur >= wanted {
            return limit.rlim_cur;
        }
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(limit.rlim_max);
        let both = wanted.min(nr_open).max(limit.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: both,
            rlim_max: both,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return both;
        }
        let soft = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return limit.rlim_max;
        }
        limit.rlim_cur
    }
}

/// CPU time (user + system) this process used so far.
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct passed by pointer.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        let micros = |time: libc::timeval| {
            Duration::from_secs(time.tv_sec as u64) + Duration::from_micros(time.tv_usec as u64)
        };
        micros(usage.ru_utime) + micros(usage.ru_stime)
    }
}

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    timeout: Duration,
}

/// `Bearer <token>` as a header value; cloning it later costs a reference count.
pub fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(format!("Bearer {token}"))).ok()
}

/// A reply: status, headers and body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Connection {
    /// Opens connection number `index` to `address`.
    pub async fn open(
        address: SocketAddr,
        index: usize,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connect_error = |source| ClientError::Connect { address, source };
        let socket = TcpSocket::new_v4().map_err(connect_error)?;
        if address.ip().is_loopback() {
            let last = 1 + (index as u32 % LOOPBACK_SOURCES);
            let source = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + last);
            socket
                .bind(SocketAddr::new(IpAddr::V4(source), 0))
                .map_err(connect_error)?;
        }
        let stream = tokio::time::timeout(timeout, socket.connect(address))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            host: address.to_string(),
            timeout,
        })
    }

    /// Sends one request and reads the whole reply.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        authorization: Option<HeaderValue>,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Reply, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if let Some(authorization) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization);
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, ClientError>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}
