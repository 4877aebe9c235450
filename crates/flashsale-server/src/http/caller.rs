//! Who sent a request, as far as its headers tell: the client's address (from its connection)
//! and the verdict on the credentials it presented. The edge checks credentials once, before the
//! request takes an in-flight permit (so that requests without valid credentials draw from a
//! budget of their own), and the `Principal` extractor takes the verdict from here.
//!
//! Both live in a slot of the connection's task (a task-local value around the connection, set
//! by `connection.rs`), not in the request's extensions: a connection's requests are handled one
//! at a time inside its own task (hyper polls the service's future in the connection's), the
//! edge writes the slot for every request before anything else runs, and so a request can only
//! ever read its own verdict; and the purchase path pays no allocation for it. A router driven
//! outside the accept loop (no slot) still works: the extractor then checks the credentials
//! itself, without a client address.

use std::cell::RefCell;
use std::future::Future;
use std::net::IpAddr;

use axum::http::{header, HeaderMap};

use crate::auth::{AuthError, Authenticator, Principal};

type Verdict = Result<Principal, AuthError>;

struct Caller {
    client: IpAddr,
    /// The current request's verdict, once the edge has checked it; taken by the extractor.
    verdict: RefCell<Option<Verdict>>,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs a connection's `serving` with the caller slot of its `client`.
pub fn serve_for<F: Future>(client: IpAddr, serving: F) -> impl Future<Output = F::Output> {
    CALLER.scope(
        Caller {
            client,
            verdict: RefCell::new(None),
        },
        serving,
    )
}

/// Checks the request's credentials, if it has any, and records the verdict (or that there is
/// none) as the current request's. Returns whether they are valid.
pub fn authenticate(auth: &Authenticator, headers: &HeaderMap, now_secs: i64) -> bool {
    let verdict = headers
        .get(header::AUTHORIZATION)
        .map(|authorization| auth.authenticate(Some(authorization.as_bytes()), now_secs));
    let valid = matches!(verdict, Some(Ok(_)));
    record(verdict);
    valid
}

/// Records that the current request's credentials were not checked.
pub fn forget() {
    record(None);
}

fn record(verdict: Option<Verdict>) {
    // Outside the accept loop there is no slot: the extractor checks for itself.
    let _ = CALLER.try_with(|caller| *caller.verdict.borrow_mut() = verdict);
}

/// The client's address, and the edge's verdict on the current request's credentials (`None`
/// when it has not checked them); the verdict is taken, so it is read once.
pub fn take() -> (Option<IpAddr>, Option<Verdict>) {
    CALLER
        .try_with(|caller| (Some(caller.client), caller.verdict.borrow_mut().take()))
        .unwrap_or((None, None))
}
