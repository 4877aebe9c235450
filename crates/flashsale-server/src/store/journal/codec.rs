//! The journal's records: a sale, an order's whole state (the last record of an order is its
//! state), and the same two carrying the events the change made (so a change and its events are
//! one checksummed record: a torn tail can cut both, never one without the other), plus, written
//! only by compaction, past events and each sale's event counter. A compact binary form: numbers
//! little-endian, times as nanoseconds, text with a u16 length. Fields added to a sale or an
//! order later come last, so a `SALE` or `ORDER` record written before them still reads (with
//! their defaults: version 1, not paused, public, no code, no draw seed).

use jiff::Timestamp;

use super::book::Stored;
use crate::domain::{
    DrawSeed, EventKind, Order, OrderId, OrderStatus, Payment, PaymentState, Sale, SaleAccess,
    SaleId, UserId, SEED_BYTES,
};
use crate::record_file;
use crate::store::{waiting_room_from_text, waiting_room_text};

pub const SALE: u8 = 1;
pub const ORDER: u8 = 2;
/// An order's state and the events its change made.
pub const ORDER_CHANGE: u8 = 3;
/// A sale (new or changed) and its event.
pub const SALE_CHANGE: u8 = 4;
/// Compaction's copy of a past order event (its data is the order's, as of the event).
pub const PAST_ORDER_EVENT: u8 = 5;
/// Compaction's copy of a past sale event, with the sale as it was.
pub const PAST_SALE_EVENT: u8 = 6;
/// Compaction's record of a sale's last event sequence (its events may all be pruned).
pub const EVENT_COUNTER: u8 = 7;
/// The events that took effect before a time were pruned (the retention).
pub const EVENTS_PRUNED: u8 = 8;

/// An event as a record carries it: enough, with the record's order or sale, to tell it whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventFacts {
    pub sequence: u64,
    pub kind: EventKind,
    pub at: Timestamp,
    /// The sale's remaining stock after the change (told by sale events only).
    pub remaining: u64,
}

/// The most bytes one order's record takes, framing included (ids of 64 characters, a buyer id
/// of 64 four-byte characters, a 128-byte key, a presale code, a payment whose provider texts
/// are each at most 255 bytes: under 1,700; a test holds the bound). The writer makes room for
/// its worst case before it changes anything.
pub const ORDER_RECORD_MAX: u64 = 2048;
/// The same for a sale (a name of 200 and a description of 2,000 four-byte characters).
pub const SALE_RECORD_MAX: u64 = 16 << 10;
/// The same for the record of a pruning (a time).
pub const PRUNE_RECORD_MAX: u64 = 64;

/// A record that passed its checksum but does not read as a sale or an order: written by
/// another version, or a bug. The store refuses to start rather than guess.
#[derive(Debug, thiserror::Error)]
#[error("a {what} record of the order journal does not read")]
pub struct Unreadable {
    what: &'static str,
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn text(&mut self, text: &str) {
        // Every text the journal keeps is bounded by validation far below this (names,
        // descriptions, buyer ids, keys): a longer one is a bug, and cutting it would change it
        // (or split a character).
        assert!(
            text.len() <= usize::from(u16::MAX),
            "a journal text of {} bytes",
            text.len()
        );
        self.0.extend_from_slice(&(text.len() as u16).to_le_bytes());
        self.0.extend_from_slice(text.as_bytes());
    }
    fn optional_text(&mut self, text: Option<&str>) {
        self.flag(text.is_some());
        if let Some(text) = text {
            self.text(text);
        }
    }
    fn flag(&mut self, value: bool) {
        self.0.push(u8::from(value));
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn time(&mut self, at: Timestamp) {
        self.0.extend_from_slice(&at.as_nanosecond().to_le_bytes());
    }
    fn optional_time(&mut self, at: Option<Timestamp>) {
        self.flag(at.is_some());
        if let Some(at) = at {
            self.time(at);
        }
    }
}

impl Writer<'_> {
    fn facts(&mut self, facts: &EventFacts) {
        self.u64(facts.sequence);
        self.0.push(facts.kind.code());
        self.time(facts.at);
        if matches!(facts.kind, EventKind::Sale(_)) {
            self.u64(facts.remaining);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self, count: usize) -> Option<&[u8]> {
        if self.0.len() < count {
            return None;
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(taken)
    }
    fn text(&mut self) -> Option<String> {
        let length = u16::from_le_bytes(self.bytes(2)?.try_into().ok()?);
        String::from_utf8(self.bytes(usize::from(length))?.to_vec()).ok()
    }
    fn flag(&mut self) -> Option<bool> {
        match self.bytes(1)?[0] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn optional_text(&mut self) -> Option<Option<String>> {
        Some(if self.flag()? {
            Some(self.text()?)
        } else {
            None
        })
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn time(&mut self) -> Option<Timestamp> {
        Timestamp::from_nanosecond(i128::from_le_bytes(self.bytes(16)?.try_into().ok()?)).ok()
    }
    fn optional_time(&mut self) -> Option<Option<Timestamp>> {
        Some(if self.flag()? {
            Some(self.time()?)
        } else {
            None
        })
    }
    fn done(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
    fn facts(&mut self) -> Option<EventFacts> {
        let sequence = self.u64()?;
        let kind = EventKind::from_code(self.bytes(1)?[0])?;
        let at = self.time()?;
        let remaining = match kind {
            EventKind::Sale(_) => self.u64()?,
            EventKind::Order(_) => 0,
        };
        Some(EventFacts {
            sequence,
            kind,
            at,
            remaining,
        })
    }
    fn is_done(&self) -> bool {
        self.0.is_empty()
    }
}

fn status_code(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::PendingPayment => 0,
        OrderStatus::Paid => 1,
        OrderStatus::Cancelled => 2,
        OrderStatus::Expired => 3,
        OrderStatus::Refunded => 4,
    }
}

fn payment_state_code(state: PaymentState) -> u8 {
    match state {
        PaymentState::Open => 0,
        PaymentState::Succeeded => 1,
        PaymentState::Canceled => 2,
        PaymentState::RefundPending => 3,
        PaymentState::Refunded => 4,
    }
}

/// Appends a framed sale record to `out`; `scratch` is reused for the payload.
pub fn put_sale(out: &mut Vec<u8>, scratch: &mut Vec<u8>, sale: &Sale) {
    scratch.clear();
    let mut writer = Writer(scratch);
    write_sale(&mut writer, sale);
    write_draw_seed(&mut writer, sale);
    record_file::encode_into(out, SALE, scratch);
}

/// Appends a sale with the event its change made (`SALE_CHANGE`), or a past sale event
/// (`PAST_SALE_EVENT`).
pub fn put_sale_event(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    kind: u8,
    sale: &Sale,
    facts: &EventFacts,
) {
    assert!(kind == SALE_CHANGE || kind == PAST_SALE_EVENT);
    scratch.clear();
    let mut writer = Writer(scratch);
    write_sale(&mut writer, sale);
    writer.facts(facts);
    write_draw_seed(&mut writer, sale);
    record_file::encode_into(out, kind, scratch);
}

/// Appends an order's state with the events its change made.
pub fn put_order_change(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    stored: &Stored,
    facts: &[EventFacts],
) {
    scratch.clear();
    let mut writer = Writer(scratch);
    write_order(&mut writer, stored);
    writer.0.push(u8::try_from(facts.len()).unwrap_or(u8::MAX));
    for facts in facts.iter().take(usize::from(u8::MAX)) {
        writer.facts(facts);
    }
    write_payment(&mut writer, &stored.order);
    record_file::encode_into(out, ORDER_CHANGE, scratch);
}

/// Appends compaction's copy of a past order event.
pub fn put_past_order_event(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    sale_id: &SaleId,
    order_id: &OrderId,
    facts: &EventFacts,
) {
    scratch.clear();
    let mut writer = Writer(scratch);
    writer.text(sale_id.as_str());
    writer.text(order_id.as_str());
    writer.facts(facts);
    record_file::encode_into(out, PAST_ORDER_EVENT, scratch);
}

/// Appends compaction's record of a sale's last event sequence.
pub fn put_event_counter(out: &mut Vec<u8>, scratch: &mut Vec<u8>, sale_id: &SaleId, last: u64) {
    scratch.clear();
    let mut writer = Writer(scratch);
    writer.text(sale_id.as_str());
    writer.u64(last);
    record_file::encode_into(out, EVENT_COUNTER, scratch);
}

/// Appends the record that events before `before` were pruned.
pub fn put_events_pruned(out: &mut Vec<u8>, scratch: &mut Vec<u8>, before: Timestamp) {
    scratch.clear();
    Writer(scratch).time(before);
    record_file::encode_into(out, EVENTS_PRUNED, scratch);
}

fn write_sale(writer: &mut Writer<'_>, sale: &Sale) {
    writer.text(sale.id.as_str());
    writer.text(&sale.name);
    writer.text(&sale.description);
    writer.u64(sale.stock);
    writer.u32(sale.per_user_limit);
    writer.u64(sale.price_cents);
    writer.time(sale.starts_at);
    writer.optional_time(sale.ends_at);
    writer.u32(sale.payment_window_secs);
    writer.time(sale.created_at);
    writer.optional_text(waiting_room_text(sale.waiting_room.as_ref()).as_deref());
    writer.u64(sale.version);
    writer.flag(sale.paused);
    writer.text(sale.access.as_str());
}

/// The seed of a sale's draw, at the record's very end and only for a sale that has one: records
/// written before seeds existed end without it and still read (their sale has none).
fn write_draw_seed(writer: &mut Writer<'_>, sale: &Sale) {
    if let Some(seed) = sale.waiting_room.and_then(|room| room.draw_seed) {
        writer.0.extend_from_slice(seed.as_bytes());
    }
}

/// Reads what `write_draw_seed` wrote, if the record goes on (a seed without a room: unreadable).
fn read_draw_seed(reader: &mut Reader<'_>, sale: &mut Sale) -> Option<()> {
    if reader.is_done() {
        return Some(());
    }
    let seed = DrawSeed::from_slice(reader.bytes(SEED_BYTES)?)?;
    sale.waiting_room.as_mut()?.draw_seed = Some(seed);
    Some(())
}

/// Appends a framed record of an order's state to `out`; `scratch` is reused for the payload.
pub fn put_order(out: &mut Vec<u8>, scratch: &mut Vec<u8>, stored: &Stored) {
    scratch.clear();
    let mut writer = Writer(scratch);
    write_order(&mut writer, stored);
    write_payment(&mut writer, &stored.order);
    record_file::encode_into(out, ORDER, scratch);
}

/// The payment part of an order's record, at the record's very end and only for an order that
/// has one (or a refund): records written before payments existed end without it and still read,
/// and an order that never met a provider costs no byte more.
fn write_payment(writer: &mut Writer<'_>, order: &Order) {
    if order.payment.is_none() && order.refunded_at.is_none() {
        return;
    }
    writer.optional_time(order.refunded_at);
    writer.flag(order.payment.is_some());
    if let Some(payment) = &order.payment {
        writer.text(&payment.provider);
        writer.text(&payment.intent_id);
        writer.optional_text(payment.client_secret.as_deref());
        writer.0.push(payment_state_code(payment.state));
        writer.optional_text(payment.refund_id.as_deref());
    }
}

/// Reads what `write_payment` wrote, if the record goes on.
fn read_payment(reader: &mut Reader<'_>, order: &mut Order) -> Option<()> {
    if reader.done().is_some() {
        return Some(());
    }
    order.refunded_at = reader.optional_time()?;
    if reader.flag()? {
        order.payment = Some(Box::new(Payment {
            provider: reader.text()?,
            intent_id: reader.text()?,
            client_secret: reader.optional_text()?,
            state: *PaymentState::ALL.get(usize::from(reader.bytes(1)?[0]))?,
            refund_id: reader.optional_text()?,
        }));
    }
    Some(())
}

fn write_order(writer: &mut Writer<'_>, stored: &Stored) {
    let order = &stored.order;
    writer.text(order.id.as_str());
    writer.text(order.sale_id.as_str());
    writer.text(order.user_id.as_str());
    writer.u32(order.quantity);
    writer.0.push(status_code(order.status));
    writer.time(order.created_at);
    writer.time(order.expires_at);
    writer.optional_time(order.paid_at);
    writer.optional_text(order.idempotency_key.as_deref());
    writer.flag(stored.stock_returned);
    writer.optional_text(order.access_code.as_deref());
}

/// Reads a sale; `legacy` for a record that may predate the fields added last (a `SALE`
/// record is the sale alone, so whether they are there shows).
fn read_sale(reader: &mut Reader<'_>, legacy: bool) -> Option<Sale> {
    let mut sale = Sale {
        id: SaleId::parse(&reader.text()?)?,
        name: reader.text()?,
        description: reader.text()?,
        stock: reader.u64()?,
        per_user_limit: reader.u32()?,
        price_cents: reader.u64()?,
        starts_at: reader.time()?,
        ends_at: reader.optional_time()?,
        payment_window_secs: reader.u32()?,
        created_at: reader.time()?,
        waiting_room: match reader.optional_text()? {
            Some(text) => Some(waiting_room_from_text(&text)?),
            None => None,
        },
        version: 1,
        paused: false,
        access: SaleAccess::Public,
    };
    if !legacy || !reader.is_done() {
        sale.version = reader.u64()?;
        sale.paused = reader.flag()?;
        sale.access = SaleAccess::parse(&reader.text()?)?;
    }
    Some(sale)
}

/// Reads an order's state; `legacy` as for `read_sale`.
fn read_order(reader: &mut Reader<'_>, legacy: bool) -> Option<Stored> {
    let mut order = Order {
        id: OrderId::parse(&reader.text()?)?,
        sale_id: SaleId::parse(&reader.text()?)?,
        user_id: UserId::parse(&reader.text()?)?,
        quantity: reader.u32()?,
        status: *OrderStatus::ALL.get(usize::from(reader.bytes(1)?[0]))?,
        created_at: reader.time()?,
        expires_at: reader.time()?,
        paid_at: reader.optional_time()?,
        idempotency_key: reader.optional_text()?,
        access_code: None,
        refunded_at: None,
        payment: None,
    };
    let stock_returned = reader.flag()?;
    if !legacy || !reader.is_done() {
        order.access_code = reader.optional_text()?;
    }
    Some(Stored {
        order,
        stock_returned,
    })
}

/// One record read back.
pub enum Record {
    Sale(Box<Sale>),
    Order(Box<Stored>),
    OrderChange(Box<Stored>, Vec<EventFacts>),
    SaleChange(Box<Sale>, EventFacts),
    PastOrderEvent(SaleId, OrderId, EventFacts),
    PastSaleEvent(Box<Sale>, EventFacts),
    EventCounter(SaleId, u64),
    EventsPruned(Timestamp),
}

/// Reads a whole payload with `read`: every byte must belong to the record.
fn whole<T>(payload: &[u8], read: impl FnOnce(&mut Reader<'_>) -> Option<T>) -> Option<T> {
    let mut reader = Reader(payload);
    let value = read(&mut reader)?;
    reader.done()?;
    Some(value)
}

pub fn read(kind: u8, payload: &[u8]) -> Result<Record, Unreadable> {
    let unreadable = |what| move || Unreadable { what };
    match kind {
        SALE => whole(payload, |reader| {
            let mut sale = read_sale(reader, true)?;
            read_draw_seed(reader, &mut sale)?;
            Some(sale)
        })
        .map(|sale| Record::Sale(Box::new(sale)))
        .ok_or_else(unreadable("sale")),
        ORDER => whole(payload, |reader| {
            let mut stored = read_order(reader, true)?;
            read_payment(reader, &mut stored.order)?;
            Some(stored)
        })
        .map(|stored| Record::Order(Box::new(stored)))
        .ok_or_else(unreadable("order")),
        ORDER_CHANGE => whole(payload, |reader| {
            let mut stored = read_order(reader, false)?;
            let count = reader.bytes(1)?[0];
            let facts = (0..count)
                .map(|_| reader.facts())
                .collect::<Option<Vec<_>>>()?;
            read_payment(reader, &mut stored.order)?;
            Some(Record::OrderChange(Box::new(stored), facts))
        })
        .ok_or_else(unreadable("order change")),
        SALE_CHANGE | PAST_SALE_EVENT => whole(payload, |reader| {
            let mut sale = Box::new(read_sale(reader, false)?);
            let facts = reader.facts()?;
            read_draw_seed(reader, &mut sale)?;
            Some(if kind == SALE_CHANGE {
                Record::SaleChange(sale, facts)
            } else {
                Record::PastSaleEvent(sale, facts)
            })
        })
        .ok_or_else(unreadable("sale event")),
        PAST_ORDER_EVENT => whole(payload, |reader| {
            let sale_id = SaleId::parse(&reader.text()?)?;
            let order_id = OrderId::parse(&reader.text()?)?;
            Some(Record::PastOrderEvent(sale_id, order_id, reader.facts()?))
        })
        .ok_or_else(unreadable("past order event")),
        EVENT_COUNTER => whole(payload, |reader| {
            let sale_id = SaleId::parse(&reader.text()?)?;
            Some(Record::EventCounter(sale_id, reader.u64()?))
        })
        .ok_or_else(unreadable("event counter")),
        EVENTS_PRUNED => whole(payload, |reader| Some(Record::EventsPruned(reader.time()?)))
            .ok_or_else(unreadable("events pruned")),
        _ => Err(Unreadable { what: "unknown" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records `out` holds, read back through a journal file as a start reads them.
    fn replayed(out: &[u8]) -> Vec<Record> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::write(&path, out).unwrap();
        let mut records = Vec::new();
        record_file::replay::<std::io::Error>(&path, |kind, payload| {
            records.push(read(kind, payload).map_err(std::io::Error::other)?);
            Ok(())
        })
        .unwrap();
        records
    }
    use crate::domain::{SaleDraft, WaitingRoom};

    #[test]
    fn sales_and_orders_read_back_as_written() {
        let at: Timestamp = "2026-12-01T12:00:00.123456789Z".parse().unwrap();
        let mut sale = SaleDraft {
            name: "Seats".into(),
            description: Some("Row 1 — ünïcode".into()),
            stock: 100,
            per_user_limit: Some(2),
            starts_at: at,
            ..SaleDraft::default()
        }
        .validate(SaleId::generate(), at)
        .unwrap();
        sale.waiting_room = Some(WaitingRoom {
            admit_per_sec: 5,
            pass_ttl_secs: 60,
            opens_before_secs: 300,
            draw_seed: Some(crate::domain::DrawSeed::from_bytes([7; 32])),
        });
        sale.version = 4;
        sale.paused = true;
        sale.access = SaleAccess::Codes;
        let stored = Stored {
            order: Order {
                id: OrderId::generate(),
                sale_id: sale.id.clone(),
                user_id: UserId::parse("böb").unwrap(),
                quantity: 2,
                status: OrderStatus::Paid,
                created_at: at,
                expires_at: at,
                paid_at: Some(at),
                idempotency_key: Some("key-1".into()),
                access_code: Some("code-1".into()),
                refunded_at: None,
                payment: None,
            },
            stock_returned: false,
        };
        let mut refunded = stored.clone();
        refunded.order.id = OrderId::generate();
        refunded.order.status = OrderStatus::Refunded;
        refunded.order.refunded_at = Some(at);
        refunded.order.payment = Some(Box::new(Payment {
            provider: "stripe".into(),
            intent_id: "pi_1".into(),
            client_secret: Some("pi_1_secret_x".into()),
            state: PaymentState::RefundPending,
            refund_id: None,
        }));
        let facts = [EventFacts {
            sequence: 7,
            kind: EventKind::Order(crate::domain::OrderEvent::Refunded),
            at,
            remaining: 0,
        }];
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        put_sale(&mut out, &mut scratch, &sale);
        put_order(&mut out, &mut scratch, &stored);
        put_order(&mut out, &mut scratch, &refunded);
        put_order_change(&mut out, &mut scratch, &refunded, &facts);
        let records = replayed(&out);
        let [Record::Sale(read_sale), Record::Order(read_order), Record::Order(read_refunded), Record::OrderChange(changed, read_facts)] =
            &records[..]
        else {
            panic!("a sale, two orders and an order change");
        };
        assert_eq!(**read_sale, sale);
        assert_eq!(**read_order, stored);
        assert_eq!(**read_refunded, refunded);
        assert_eq!(**changed, refunded);
        assert_eq!(read_facts[..], facts);
    }

    /// The outbox's cost in the journal: an event is its facts inside the record of the change
    /// that made it (the order or sale is the record's own), so it weighs what its facts do.
    #[test]
    fn an_event_weighs_25_bytes_in_an_orders_record_and_33_in_a_sales() {
        let sale = Sale::of_stock_for_test(5);
        let stored = Stored {
            order: Order::pending_for_test(&sale.id, "alice", Timestamp::UNIX_EPOCH),
            stock_returned: true,
        };
        let facts = |kind, sequence| EventFacts {
            sequence,
            kind,
            at: Timestamp::UNIX_EPOCH,
            remaining: 4,
        };
        let created = facts(EventKind::Order(crate::domain::OrderEvent::Created), 2);
        let sold_out = facts(EventKind::Sale(crate::domain::SaleEvent::SoldOut), 3);
        let order_record = |events: &[EventFacts]| {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            put_order_change(&mut out, &mut scratch, &stored, events);
            out.len()
        };
        let (none, one) = (order_record(&[]), order_record(&[created]));
        assert_eq!(one - none, 25);
        let mut without = Vec::new();
        write_order(&mut Writer(&mut without), &stored);
        write_payment(&mut Writer(&mut without), &stored.order);
        let mut framed = Vec::new();
        record_file::encode_into(&mut framed, ORDER, &without);
        assert_eq!(
            one - framed.len(),
            25 + 1,
            "and one byte for the record's count of events"
        );
        let sale_record = |with_event: bool| {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            if with_event {
                put_sale_event(&mut out, &mut scratch, SALE_CHANGE, &sale, &sold_out);
            } else {
                put_sale(&mut out, &mut scratch, &sale);
            }
            out.len()
        };
        assert_eq!(sale_record(true) - sale_record(false), 33);
    }

    #[test]
    fn an_order_written_before_payments_existed_still_reads() {
        // The bytes of a pending order's record as the previous version wrote them.
        let order = Order::pending_for_test(&SaleId::generate(), "alice", Timestamp::UNIX_EPOCH);
        let stored = Stored {
            order,
            stock_returned: true,
        };
        let mut old = Vec::new();
        write_order(&mut Writer(&mut old), &stored);
        let mut new = Vec::new();
        let mut writer = Writer(&mut new);
        write_order(&mut writer, &stored);
        write_payment(&mut writer, &stored.order);
        assert_eq!(old, new, "an order without a payment is written as before");
        let Ok(Record::Order(read)) = read(ORDER, &old) else {
            panic!("the old record reads");
        };
        assert_eq!(*read, stored);
    }

    #[test]
    fn the_largest_sale_and_order_fit_their_bounds() {
        let at: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let wide = |count: usize| "𝄞".repeat(count);
        let mut sale = SaleDraft {
            name: wide(200),
            description: Some(wide(2000)),
            stock: 100,
            starts_at: at,
            ends_at: Some(at + jiff::SignedDuration::from_hours(1)),
            ..SaleDraft::default()
        }
        .validate(SaleId::parse(&"s".repeat(64)).unwrap(), at)
        .unwrap();
        sale.waiting_room = Some(WaitingRoom {
            admit_per_sec: 1_000_000,
            pass_ttl_secs: 3600,
            opens_before_secs: 86_400,
            draw_seed: Some(crate::domain::DrawSeed::from_bytes([0xff; 32])),
        });
        let stored = Stored {
            order: Order {
                id: OrderId::parse(&"o".repeat(64)).unwrap(),
                sale_id: sale.id.clone(),
                user_id: UserId::parse(&wide(64)).unwrap(),
                quantity: u32::MAX,
                status: OrderStatus::Paid,
                created_at: at,
                expires_at: at,
                paid_at: Some(at),
                idempotency_key: Some("k".repeat(128)),
                access_code: Some("c".repeat(64)),
                refunded_at: Some(at),
                payment: Some(Box::new(Payment {
                    provider: "simulated".into(),
                    intent_id: "i".repeat(255),
                    client_secret: Some("s".repeat(255)),
                    state: PaymentState::RefundPending,
                    refund_id: Some("r".repeat(255)),
                })),
            },
            stock_returned: false,
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        put_sale(&mut out, &mut scratch, &sale);
        assert!(
            out.len() as u64 <= SALE_RECORD_MAX,
            "a sale of {} bytes",
            out.len()
        );
        out.clear();
        put_order(&mut out, &mut scratch, &stored);
        assert!(
            out.len() as u64 <= ORDER_RECORD_MAX,
            "an order of {} bytes",
            out.len()
        );
        // A change records at most an order event and a sale event with it.
        let facts = |kind| EventFacts {
            sequence: u64::MAX,
            kind,
            at,
            remaining: u64::MAX,
        };
        let change = [
            facts(EventKind::ALL[1]),
            facts(EventKind::ALL[EventKind::ALL.len() - 1]),
        ];
        out.clear();
        put_order_change(&mut out, &mut scratch, &stored, &change);
        assert!(
            out.len() as u64 <= ORDER_RECORD_MAX,
            "an order's change of {} bytes",
            out.len()
        );
        out.clear();
        put_sale_event(&mut out, &mut scratch, SALE_CHANGE, &sale, &change[1]);
        assert!(
            out.len() as u64 <= SALE_RECORD_MAX,
            "a sale's change of {} bytes",
            out.len()
        );
        out.clear();
        put_events_pruned(&mut out, &mut scratch, at);
        assert!(out.len() as u64 <= PRUNE_RECORD_MAX);
    }

    #[test]
    fn a_sale_change_keeps_its_draw_seed_and_one_written_before_seeds_reads_without() {
        let mut sale = crate::domain::Sale::of_stock_for_test(3);
        let room = WaitingRoom {
            admit_per_sec: 5,
            pass_ttl_secs: 60,
            opens_before_secs: 300,
            draw_seed: Some(crate::domain::DrawSeed::from_bytes([9; 32])),
        };
        sale.waiting_room = Some(room);
        let facts = EventFacts {
            sequence: 1,
            kind: EventKind::Sale(crate::domain::SaleEvent::Created),
            at: sale.created_at,
            remaining: 3,
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        put_sale_event(&mut out, &mut scratch, SALE_CHANGE, &sale, &facts);
        let mut without = sale.clone();
        without.waiting_room = Some(WaitingRoom {
            draw_seed: None,
            ..room
        });
        put_sale_event(&mut out, &mut scratch, SALE_CHANGE, &without, &facts);
        let records = replayed(&out);
        let [Record::SaleChange(seeded, _), Record::SaleChange(unseeded, _)] = &records[..] else {
            panic!("two sale changes, {} records", records.len());
        };
        assert_eq!(**seeded, sale);
        assert_eq!(
            **unseeded, without,
            "a record of before seeds: its bytes end at the facts"
        );
        // A seed of the wrong length does not read.
        let mut short = Vec::new();
        let mut writer = Writer(&mut short);
        write_sale(&mut writer, &without);
        writer.facts(&facts);
        writer.0.extend_from_slice(&[1; 31]);
        assert!(read(SALE_CHANGE, &short).is_err());
    }

    #[test]
    fn records_written_before_versions_and_codes_still_read() {
        // A sale and an order as the version before sale changes wrote them (bytes frozen here).
        let at: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let mut old_sale = Vec::new();
        let mut writer = Writer(&mut old_sale);
        writer.text("s-1");
        writer.text("Old");
        writer.text("");
        writer.u64(10);
        writer.u32(1);
        writer.u64(0);
        writer.time(at);
        writer.optional_time(None);
        writer.u32(900);
        writer.time(at);
        writer.optional_text(None);
        let sale = whole(&old_sale, |reader| read_sale(reader, true)).expect("an old sale reads");
        assert_eq!(
            (sale.version, sale.paused, sale.access),
            (1, false, SaleAccess::Public)
        );
        let mut old_order = Vec::new();
        let mut writer = Writer(&mut old_order);
        writer.text("o-1");
        writer.text("s-1");
        writer.text("ann");
        writer.u32(1);
        writer.0.push(0);
        writer.time(at);
        writer.time(at);
        writer.optional_time(None);
        writer.optional_text(None);
        writer.flag(true);
        let stored =
            whole(&old_order, |reader| read_order(reader, true)).expect("an old order reads");
        assert_eq!(stored.order.access_code, None);
        assert!(stored.stock_returned);
    }
}
