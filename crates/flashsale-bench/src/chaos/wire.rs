//! One HTTP/1.1 exchange over a fresh TCP connection, written by hand so that a chaotic client
//! can hang up wherever a real one does: before its body is sent, right after sending, or while
//! the reply is on its way.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where a client gives up on an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HangUp {
    /// Waits for the whole reply.
    Never,
    /// Sends the headers and part of the body, then closes.
    BeforeBody,
    /// Sends the whole request, then closes without reading.
    AfterSend,
    /// Reads the first bytes of the reply, then closes.
    MidReply,
}

/// What came back.
#[derive(Clone, Debug, serde::Serialize)]
pub enum Answer {
    Reply {
        status: u16,
        body: serde_json::Value,
    },
    /// No (whole) reply: the client hung up, or the connection failed or timed out.
    None(String),
}

impl Answer {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Reply { status, .. } => Some(*status),
            Self::None(_) => None,
        }
    }

    pub fn body(&self) -> Option<&serde_json::Value> {
        match self {
            Self::Reply { body, .. } => Some(body),
            Self::None(_) => None,
        }
    }

    pub fn code(&self) -> &str {
        self.body()
            .and_then(|body| body["error"]["code"].as_str())
            .unwrap_or("")
    }
}

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub bearer: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub body: Option<String>,
    /// Other headers (a webhook's signature).
    pub headers: &'a [(&'a str, &'a str)],
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn exchange(address: SocketAddr, request: &Request<'_>, hang_up: HangUp) -> Answer {
    match tokio::time::timeout(REPLY_TIMEOUT, attempt(address, request, hang_up)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => Answer::None(error.to_string()),
        Err(_) => Answer::None("no reply in time".into()),
    }
}

async fn attempt(
    address: SocketAddr,
    request: &Request<'_>,
    hang_up: HangUp,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(address).await?;
    let body = request.body.clone().unwrap_or_default();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method,
        request.path,
        body.len()
    );
    if let Some(bearer) = request.bearer {
        head.push_str(&format!("Authorization: Bearer {bearer}\r\n"));
    }
    if let Some(key) = request.idempotency_key {
        head.push_str(&format!("Idempotency-Key: {key}\r\n"));
    }
    for (name, value) in request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if hang_up == HangUp::BeforeBody {
        stream.write_all(&body.as_bytes()[..body.len() / 2]).await?;
        return Ok(Answer::None("hung up before the body".into()));
    }
    stream.write_all(body.as_bytes()).await?;
    if hang_up == HangUp::AfterSend {
        return Ok(Answer::None("hung up after sending".into()));
    }
    if hang_up == HangUp::MidReply {
        let mut first = [0u8; 12];
        let _ = stream.read(&mut first).await?;
        return Ok(Answer::None("hung up while the reply arrived".into()));
    }
    let mut reply = Vec::with_capacity(1024);
    stream.read_to_end(&mut reply).await?;
    parse(&reply)
}

fn parse(reply: &[u8]) -> std::io::Result<Answer> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("a reply without a header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| invalid("a reply without a status"))?;
    let body = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_owned()))
    };
    Ok(Answer::Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_read_with_its_status_and_json_body() {
        let reply = b"HTTP/1.1 409 Conflict\r\ncontent-length: 9\r\n\r\n{\"a\":[1]}";
        match parse(reply).unwrap() {
            Answer::Reply { status, body } => {
                assert_eq!(status, 409);
                assert_eq!(body["a"][0], 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(b"garbage").is_err());
    }
}
