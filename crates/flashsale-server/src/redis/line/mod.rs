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
use crate::domain::{
    Admission, AdmissionChange, Checkpoint, DrawSeed, LineFacts, Placed, Sale, UserId,
};
use crate::line::{
    decode_checkpoint, draw_score, encode_checkpoint, initial_admission, CheckpointAdded, Drawer,
    Joined, LineError, Places, WaitingLine,
};
use crate::BoxFuture;

pub struct RedisLine {
    connection: ConnectionManager,
    keys: RedisKeys,
    join: Script,
    pass: Script,
    admission: Script,
    places: Script,
    checkpoint: Script,
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
            places: Script::new(include_str!("places.lua")),
            checkpoint: Script::new(include_str!("checkpoint.lua")),
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
            .key(self.keys.line_arrivals(&sale.id))
            .key(self.keys.line_ends(&sale.id))
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

/// A drawn place from its member: the whole draw in hex, ":", the buyer (a sale made before
/// seeds keeps the buyer alone: its keyed draw is computed again).
fn drawn_place(drawer: &Drawer, sale: &Sale, member: &str, arrival: &str) -> Option<Placed> {
    let seeded = member
        .split_once(':')
        .filter(|(draw, _)| draw.len() == 64)
        .and_then(|(draw, user)| Some((DrawSeed::from_hex(draw)?, user)));
    let (draw, user) = match seeded {
        Some((draw, user)) => {
            let user = UserId::parse(user)?;
            (*draw.as_bytes(), user)
        }
        None => {
            let user = UserId::parse(member)?;
            (drawer.draw(sale, &user), user)
        }
    };
    Some(Placed {
        user,
        draw: Some(draw),
        joined_ms: arrival.parse().ok(),
    })
}

/// A place at the end from its list entry, `arrival ms:buyer`.
fn end_place(entry: &str) -> Option<Placed> {
    let (arrival, user) = entry.split_once(':')?;
    Some(Placed {
        user: UserId::parse(user)?,
        draw: None,
        joined_ms: arrival.parse().ok(),
    })
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
    fn places<'a>(
        &'a self,
        sale: &'a Sale,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Places, LineError>> {
        let mut invocation = self.places.prepare_invoke();
        invocation
            .key(self.keys.line_draws(&sale.id))
            .key(self.keys.line_meta(&sale.id))
            .key(self.keys.line_arrivals(&sale.id))
            .key(self.keys.line_ends(&sale.id))
            .arg(after)
            .arg(limit);
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let reply: Vec<String> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let count = |at: usize| reply.get(at).and_then(|text| text.parse::<u64>().ok());
            let (Some(drawn), Some(numbers)) = (count(0), count(1)) else {
                return Err(corrupt("count of places", &reply));
            };
            let mut places = Vec::with_capacity(reply.len().saturating_sub(2) / 3);
            for place in reply.get(2..).unwrap_or_default().chunks(3) {
                let placed = match place {
                    [kind, member, arrival] if kind == "d" => {
                        drawn_place(&self.drawer, sale, member, arrival)
                    }
                    [_, entry, _] => end_place(entry),
                    _ => None,
                };
                places.push(placed.ok_or_else(|| corrupt("place", place))?);
            }
            let total = drawn + numbers;
            let expected = total.saturating_sub(after).min(limit as u64);
            if (places.len() as u64) < expected {
                return Err(LineError::Corrupt(format!(
                    "Redis: the line has {total} places but keeps {} of them from place {} on (joined before the admission log?)",
                    places.len(),
                    after + 1
                )));
            }
            Ok(Places { total, places })
        })
    }

    fn add_checkpoint<'a>(
        &'a self,
        sale: &'a Sale,
        checkpoint: &'a Checkpoint,
        spacing_ms: i64,
    ) -> BoxFuture<'a, Result<CheckpointAdded, LineError>> {
        let mut invocation = self.checkpoint.prepare_invoke();
        invocation
            .key(self.keys.line_checkpoints(&sale.id))
            .key(self.keys.line_meta(&sale.id))
            .arg(checkpoint.time_ms)
            .arg(checkpoint.n)
            .arg(checkpoint.admitted_through)
            .arg(spacing_ms)
            .arg(encode_checkpoint(checkpoint));
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let reply: String = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            match reply.as_str() {
                "added" => Ok(CheckpointAdded::Added),
                "soon" => Ok(CheckpointAdded::TooSoon),
                "behind" => Ok(CheckpointAdded::Behind),
                _ => Err(corrupt("checkpoint answer", &[reply])),
            }
        })
    }

    fn checkpoints<'a>(
        &'a self,
        sale: &'a Sale,
    ) -> BoxFuture<'a, Result<Vec<Checkpoint>, LineError>> {
        let key = self.keys.line_checkpoints(&sale.id);
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let stored: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            stored
                .iter()
                .map(|bytes| {
                    decode_checkpoint(bytes).ok_or_else(|| {
                        LineError::Corrupt("Redis: a checkpoint does not parse".into())
                    })
                })
                .collect()
        })
    }
}
