//! Who sent a request, as far as its headers tell: the client's address (from its connection)
//! and the verdict on the credentials it presented. The edge checks credentials once, before the
//! request takes an in-flight permit (so that requests without valid credentials draw from a
//! budget of their own), and the `Principal` extractor takes the verdict from here.

use std::net::IpAddr;

use axum::http::{header, HeaderMap};

use crate::auth::{AuthError, Authenticator, Principal};

/// Carried in a request's extensions when it has an `Authorization` header.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The connection's peer, when the request came through the server's accept loop.
    pub client: Option<IpAddr>,
    /// The credentials' verdict, once the edge has checked them.
    pub verdict: Option<Result<Principal, AuthError>>,
}

impl Caller {
    pub fn from_client(client: IpAddr) -> Self {
        Self {
            client: Some(client),
            verdict: None,
        }
    }
}

/// Checks the request's credentials, if it has any, and records the verdict in its `Caller`.
/// Returns whether they are valid.
pub fn authenticate(
    auth: &Authenticator,
    headers: &HeaderMap,
    extensions: &mut axum::http::Extensions,
    now_secs: i64,
) -> bool {
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let verdict = auth.authenticate(Some(authorization.as_bytes()), now_secs);
    let valid = verdict.is_ok();
    match extensions.get_mut::<Caller>() {
        Some(caller) => caller.verdict = Some(verdict),
        None => {
            extensions.insert(Caller {
                client: None,
                verdict: Some(verdict),
            });
        }
    }
    valid
}
