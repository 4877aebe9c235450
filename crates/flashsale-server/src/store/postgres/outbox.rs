//! The cluster's outbox: each change's events are rows of `events`, written in the transaction
//! that makes the change (the persister's batch insert, a transition, an expiry batch, a sale's
//! creation or new definition). Their sequences are taken from `sales.last_event_sequence`
//! under the sale's row lock, which every stock-changing transaction holds already, so the
//! numbers follow the commit order with no gap. The data is stored as the API's JSON.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::GenericClient;
use jiff::Timestamp;

use super::rows::{sale_from_row, SALE_COLUMNS};
use crate::domain::{
    order_event, stock_event, Event, EventKind, EventSubject, Order, OrderEvent, Sale, SaleEvent,
    SaleId,
};
use crate::store::{EventHead, RecordedEvent, StoreError};

/// An event of the transaction, before it has its number.
pub(super) enum Pending {
    Order {
        order: Order,
        event: OrderEvent,
        at: Timestamp,
    },
    Sale {
        sale_id: SaleId,
        event: SaleEvent,
        at: Timestamp,
        remaining: u64,
    },
}

impl Pending {
    fn sale_id(&self) -> &SaleId {
        match self {
            Self::Order { order, .. } => &order.sale_id,
            Self::Sale { sale_id, .. } => sale_id,
        }
    }

    /// The event of an order that has just reached its status.
    pub(super) fn of_order(order: &Order, at: Timestamp) -> Self {
        Self::of_order_event(order, order_event(order.status), at)
    }

    /// An order's event (a change that is not a status's own, such as late money's refund).
    pub(super) fn of_order_event(order: &Order, event: OrderEvent, at: Timestamp) -> Self {
        Self::Order {
            order: as_stored(order),
            event,
            at,
        }
    }

    /// The sale's event when its stock ran out or came back, if it did.
    pub(super) fn of_stock(
        sale_id: &SaleId,
        remaining_before: u64,
        remaining_after: u64,
        at: Timestamp,
    ) -> Option<Self> {
        stock_event(remaining_before, remaining_after).map(|event| Self::Sale {
            sale_id: sale_id.clone(),
            event,
            at,
            remaining: remaining_after,
        })
    }
}

/// PostgreSQL keeps times to the microsecond: the data is rounded the same way, so it tells
/// what the store reads back.
fn to_micros(at: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(at.as_microsecond()).unwrap_or(at)
}

fn as_stored(order: &Order) -> Order {
    let mut order = order.clone();
    order.created_at = to_micros(order.created_at);
    order.expires_at = to_micros(order.expires_at);
    order.paid_at = order.paid_at.map(to_micros);
    order.refunded_at = order.refunded_at.map(to_micros);
    order
}

/// Why an outbox write failed.
pub(super) enum OutboxError {
    Db(tokio_postgres::Error),
    Corrupt(StoreError),
}

impl From<tokio_postgres::Error> for OutboxError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error)
    }
}

/// Numbers the events (in the order given, per sale) and writes them. The caller holds the
/// row locks of their sales.
pub(super) async fn record(
    client: &impl GenericClient,
    events: Vec<Pending>,
) -> Result<(), OutboxError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for event in &events {
        *counts.entry(event.sale_id().as_str()).or_default() += 1;
    }
    let (sale_ids, taken): (Vec<&str>, Vec<i64>) = counts.into_iter().unzip();
    let mut next: HashMap<String, u64> = client
        .query(
            "UPDATE sales s SET last_event_sequence = s.last_event_sequence + t.n \
             FROM UNNEST($1::text[], $2::bigint[]) AS t (id, n) WHERE s.id = t.id \
             RETURNING s.id, s.last_event_sequence - t.n + 1",
            &[&sale_ids, &taken],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), u64::try_from(row.get::<_, i64>(1)).unwrap_or(0)))
        .collect();
    let sale_events: Vec<&str> = events
        .iter()
        .filter(|event| matches!(event, Pending::Sale { .. }))
        .map(|event| event.sale_id().as_str())
        .collect();
    let sales: HashMap<String, Sale> = if sale_events.is_empty() {
        HashMap::new()
    } else {
        client
            .query(
                &format!("SELECT {SALE_COLUMNS} FROM sales WHERE id = ANY($1)"),
                &[&sale_events],
            )
            .await?
            .iter()
            .map(|row| sale_from_row(row).map(|sale| (sale.id.to_string(), sale)))
            .collect::<Result<_, _>>()
            .map_err(OutboxError::Corrupt)?
    };
    let mut rows = Rows::default();
    for pending in events {
        let Some(sequence) = next.get_mut(pending.sale_id().as_str()) else {
            return Err(OutboxError::Corrupt(StoreError::Failed(format!(
                "an event of sale {} that PostgreSQL does not have",
                pending.sale_id()
            ))));
        };
        let event = match pending {
            Pending::Order { order, event, at } => Event {
                sale_id: order.sale_id.clone(),
                sequence: *sequence,
                kind: EventKind::Order(event),
                at: to_micros(at),
                subject: EventSubject::Order(order),
            },
            Pending::Sale {
                sale_id,
                event,
                at,
                remaining,
            } => {
                let Some(sale) = sales.get(sale_id.as_str()) else {
                    return Err(OutboxError::Corrupt(StoreError::Failed(format!(
                        "sale {sale_id} vanished from its own transaction"
                    ))));
                };
                Event {
                    sale_id,
                    sequence: *sequence,
                    kind: EventKind::Sale(event),
                    at: to_micros(at),
                    subject: EventSubject::Sale {
                        sale: sale.clone(),
                        remaining,
                    },
                }
            }
        };
        *sequence += 1;
        rows.push(&event);
    }
    client
        .execute(
            "INSERT INTO events (sale_id, sequence, type, subject, time, data) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], \
                                  $5::timestamptz[], $6::text[])",
            &[
                &rows.sale_ids,
                &rows.sequences,
                &rows.types,
                &rows.subjects,
                &rows.times,
                &rows.data,
            ],
        )
        .await?;
    Ok(())
}

#[derive(Default)]
struct Rows {
    sale_ids: Vec<String>,
    sequences: Vec<i64>,
    types: Vec<&'static str>,
    subjects: Vec<String>,
    times: Vec<Timestamp>,
    data: Vec<String>,
}

impl Rows {
    fn push(&mut self, event: &Event) {
        self.sale_ids.push(event.sale_id.to_string());
        self.sequences
            .push(i64::try_from(event.sequence).unwrap_or(i64::MAX));
        self.types.push(event.kind.type_name());
        self.subjects.push(event.subject_id().to_owned());
        self.times.push(event.at);
        self.data.push(crate::events::data_json(event));
    }
}

pub(super) async fn events(
    client: &impl GenericClient,
    sale_id: &SaleId,
    after: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = client
        .query(
            "SELECT sequence, type, subject, time, data FROM events \
             WHERE sale_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
            &[
                &sale_id.as_str(),
                &i64::try_from(after).unwrap_or(i64::MAX),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map_err(super::db_failed)?;
    rows.iter()
        .map(|row| {
            let type_name: &str = row.get(1);
            Ok(RecordedEvent {
                sale_id: sale_id.clone(),
                sequence: u64::try_from(row.get::<_, i64>(0))
                    .map_err(|_| StoreError::Failed("a stored event sequence".into()))?,
                kind: EventKind::parse(type_name)
                    .ok_or_else(|| StoreError::Failed(format!("stored event type {type_name}")))?,
                subject: row.get(2),
                at: row.get(3),
                data: row.get(4),
            })
        })
        .collect()
}

pub(super) async fn heads(client: &impl GenericClient) -> Result<Vec<EventHead>, StoreError> {
    let rows = client
        .query(
            "SELECT id, last_event_sequence FROM sales WHERE last_event_sequence > 0",
            &[],
        )
        .await
        .map_err(super::db_failed)?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            Some(EventHead {
                sale_id: SaleId::parse(row.get(0))?,
                sequence: u64::try_from(row.get::<_, i64>(1)).ok()?,
            })
        })
        .collect())
}

/// Deletes events older than `before`, a bounded batch per statement.
pub(super) async fn prune(
    client: &impl GenericClient,
    before: Timestamp,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = client
            .execute(
                "DELETE FROM events WHERE (sale_id, sequence) IN \
                 (SELECT sale_id, sequence FROM events WHERE time < $1 LIMIT 10000)",
                &[&before],
            )
            .await
            .map_err(super::db_failed)?;
        total += deleted;
        if deleted < 10_000 {
            return Ok(total);
        }
    }
}
