//! The connections of a node: how many are open, the cap, and why the server closed or refused
//! some (timeouts, the cap), plus the admin token guesses it braked.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the server ended a connection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosedBy {
    /// A request's head (or a new connection's first) did not arrive in time.
    HeaderTimeout,
    /// A kept-alive connection stayed idle past the idle timeout.
    IdleTimeout,
    /// An idle connection closed to make room under the connection cap.
    Evicted,
}

#[derive(Default)]
pub struct ConnectionCounters {
    open: AtomicU64,
    max: AtomicU64,
    refused: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    evicted: AtomicU64,
    admin_auth_limited: AtomicU64,
}

impl ConnectionCounters {
    pub fn set_max(&self, max: usize) {
        self.max
            .store(u64::try_from(max).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn set_open(&self, open: usize) {
        self.open
            .store(u64::try_from(open).unwrap_or(u64::MAX), Relaxed);
    }

    /// A connection closed at once: the cap was reached and no idle connection could make room.
    pub fn record_refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    pub fn record_closed(&self, by: ClosedBy) {
        let counter = match by {
            ClosedBy::HeaderTimeout => &self.header_timeouts,
            ClosedBy::IdleTimeout => &self.idle_timeouts,
            ClosedBy::Evicted => &self.evicted,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// An admin authentication answered `429` because its address failed too often.
    pub fn record_admin_auth_limited(&self) {
        self.admin_auth_limited.fetch_add(1, Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let singles = [
            (
                "flashsale_connections_open",
                "gauge",
                "Client connections open now.",
                &self.open,
            ),
            (
                "flashsale_connections_max",
                "gauge",
                "The connection cap (connections_max, or sized from the open-file limit).",
                &self.max,
            ),
            (
                "flashsale_connections_refused_total",
                "counter",
                "Connections closed at once: the cap was reached and none was idle.",
                &self.refused,
            ),
            (
                "flashsale_admin_auth_limited_total",
                "counter",
                "Admin authentications answered 429: their address failed too often.",
                &self.admin_auth_limited,
            ),
        ];
        for (name, kind, help, value) in singles {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        }
        let name = "flashsale_connections_closed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections the server closed, by reason.\n# TYPE {name} counter"
        );
        for (reason, value) in [
            ("header_timeout", &self.header_timeouts),
            ("idle_timeout", &self.idle_timeouts),
            ("evicted", &self.evicted),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", value.load(Relaxed));
        }
    }
}
