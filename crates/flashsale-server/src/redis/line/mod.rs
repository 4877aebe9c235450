//! The cluster's line, in Redis: per sale a sorted set of the pre-start joiners scored by their
//! draw (a place is `ZRANK`: O(log n)), a hash of later joiners' numbers, a hash of pass
//! expiries and a small hash of the admission progress, all under the sale's hash tag; each
//! change is one script (`join.lua`, `pass.lua`, `admission.lua`). With `appendfsync always`
//! a place is durable when the script returns, as an order is.
//!
//! A score is a double: it holds the draw's first 52 bits. Members of equal score sort by their
//! bytes, so a seeded sale's member is the whole draw in hex, ":", the buyer: equal scores order
//! by the whole draw, as the embedded line orders them. A sale made before seeds keeps the buyer
//! id as its member (its 52-bit keyed draw is the score, as it always was).

use jiff::Timestamp;
use redis::aio::ConnectionManager;
use redis::Script;

use super::connection::Redis;
use super::keys::RedisKeys;
use crate::domain::{hex, ARRIVAL_SLACK_MS};
use crate::domain::{Admission, AdmissionChange, LineFacts, Sale, UserId};
use crate::line::{draw_score, initial_admission, Drawer, Joined, LineError, WaitingLine};
use crate::BoxFuture;

pub struct RedisLine {
    connection: ConnectionManager,
    keys: RedisKeys,
    join: Script,
    pass: Script,
    admission: Script,
    /// Whether "now" comes from the caller (tests: one manual clock) instead of Redis's clock.
    time_from_caller: bool,
    drawer: Drawer,
}

fn unavailable(error: redis::RedisError) -> LineError {
    LineError::Unavailable(format!("Redis: {}", crate::error_chain::describe(&error)))
}

fn corrupt(what: &str, reply: &[String]) -> LineError {
    LineError::Corrupt(format!("Redis: the line script gave no {what}: {reply:?}"))
}

/// The admission as the scripts keep it: base, since, paused (sold out), held (paused by the
/// operator), rate; unset fields are the initial admission's.
fn parse_admission(fields: &[String], sale: &Sale) -> Option<Admission> {
    let initial = initial_admission(sale);
    let [base, since, sold_out, held, rate] = fields else {
        return None;
    };
    let mut admission = initial;
    if !base.is_empty() {
        admission.base = base.parse().ok()?;
        admission.since_ms = since.parse().ok()?;
    }
    admission.sold_out = sold_out == "1";
    admission.paused = held == "1";
    if !rate.is_empty() {
        admission.admit_per_sec = rate.parse().ok()?;
    }
    Some(admission)
}

fn facts_of(reply: &[String], sale: &Sale) -> Result<LineFacts, LineError> {
    let now_ms = reply
        .first()
        .and_then(|now| now.parse().ok())
        .ok_or_else(|| corrupt("time", reply))?;
    let place = match reply.get(1).map(String::as_str) {
        Some("") => None,
        Some(place) => Some(place.parse().map_err(|_| corrupt("place", reply))?),
        None => return Err(corrupt("place", reply)),
    };
    let admission = reply
        .get(2..7)
        .and_then(|fields| parse_admission(fields, sale))
        .ok_or_else(|| corrupt("admission", reply))?;
    let pass_expires_ms = match reply.get(7).map(String::as_str) {
        Some("") | None => None,
        Some(ms) => Some(ms.parse().map_err(|_| corrupt("pass expiry", reply))?),
    };
    Ok(LineFacts {
        now_ms,
        place,
        admission,
        pass_expires_ms,
    })
}

fn flag(value: Option<bool>) -> &'static str {
    match value {
        None => "",
        Some(true) => "1",
        Some(false) => "0",
    }
}

impl RedisLine {
    /// A line on the node's Redis connection.
    pub fn new(redis: &Redis, time_from_caller: bool, draw_key: Vec<u8>) -> Self {
        Self {
            connection: redis.manager(),
            keys: redis.keys().clone(),
            join: Script::new(include_str!("join.lua")),
            pass: Script::new(include_str!("pass.lua")),
            admission: Script::new(concat!(
                include_str!("admission_lib.lua"),
                include_str!("admission.lua")
            )),
            time_from_caller,
            drawer: Drawer::new(&draw_key),
        }
    }

    /// `arrived`: when the join's request reached this node, by the node's clock. With Redis's
    /// clock that clock is Redis's (`redis/clock.rs` keeps the node's in step with `TIME`), so
    /// the node's reading at arrival is on the script's scale; the script still bounds it by its
    /// own now (`ARRIVAL_SLACK_MS`), so no node can backdate a join further.
    fn run_join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Timestamp,
        arrived: Timestamp,
        join: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, LineError>> {
        let draw = self.drawer.draw(sale, user);
        let member = if sale
            .waiting_room
            .is_some_and(|room| room.draw_seed.is_some())
        {
            format!("{}:{}", hex(&draw), user.as_str())
        } else {
            user.as_str().to_owned()
        };
        let mut invocation = self.join.prepare_invoke();
        invocation
            .key(self.keys.line_draws(&sale.id))
            .key(self.keys.line_numbers(&sale.id))
            .key(self.keys.line_meta(&sale.id))
            .key(self.keys.line_passes(&sale.id))
            .arg(user.as_str())
            .arg(draw_score(&draw))
            .arg(sale.starts_at.as_millisecond())
            .arg(if self.time_from_caller {
                now.as_millisecond().to_string()
            } else {
                String::new()
            })
            .arg(if join { "1" } else { "0" })
            .arg(member)
            .arg(arrived.as_millisecond())
            .arg(ARRIVAL_SLACK_MS);
        let mut connection = self.connection.clone();
        Box::pin(async move {
            invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)
        })
    }
}

impl WaitingLine for RedisLine {
    fn join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Timestamp,
        arrived: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Joined>, LineError>> {
        Box::pin(async move {
            let reply = self.run_join(sale, user, now, arrived, true).await?;
            if reply.get(1).is_some_and(|held| held == "held") {
                return Ok(None);
            }
            Ok(Some(Joined {
                facts: facts_of(&reply, sale)?,
                placed: reply.get(8).is_some_and(|flag| flag == "1"),
                pass_expired: reply.get(9).is_some_and(|flag| flag == "1"),
            }))
        })
    }

    fn look<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<LineFacts>, LineError>> {
        Box::pin(async move {
            let reply = self.run_join(sale, user, now, now, false).await?;
            if reply.len() == 1 {
                return Ok(None);
            }
            facts_of(&reply, sale).map(Some)
        })
    }

    fn record_pass<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        expires_ms: i64,
    ) -> BoxFuture<'a, Result<i64, LineError>> {
        let mut invocation = self.pass.prepare_invoke();
        invocation
            .key(self.keys.line_passes(&sale.id))
            .arg(user.as_str())
            .arg(expires_ms);
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let recorded: String = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            recorded
                .parse()
                .map_err(|_| corrupt("pass expiry", &[recorded]))
        })
    }

    fn admission<'a>(&'a self, sale: &'a Sale) -> BoxFuture<'a, Result<Admission, LineError>> {
        self.change_admission(sale, 0, AdmissionChange::default())
    }

    fn change_admission<'a>(
        &'a self,
        sale: &'a Sale,
        at_ms: i64,
        change: AdmissionChange,
    ) -> BoxFuture<'a, Result<Admission, LineError>> {
        let initial = initial_admission(sale);
        let mut invocation = self.admission.prepare_invoke();
        invocation
            .key(self.keys.line_meta(&sale.id))
            .arg(at_ms)
            .arg(initial.since_ms)
            .arg(initial.admit_per_sec)
            .arg(flag(change.sold_out))
            .arg(flag(change.paused))
            .arg(
                change
                    .admit_per_sec
                    .map_or(String::new(), |rate| rate.to_string()),
            );
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let reply: Vec<String> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            parse_admission(&reply, sale).ok_or_else(|| corrupt("admission", &reply))
        })
    }
}
