//! The journal's two records, a sale's version and an order's whole state (the last record of a
//! sale or an order is its state), in a compact binary form: numbers little-endian, times as
//! nanoseconds, text with a u16 length. Fields added later come last, so a record written
//! before them still reads (with their defaults: version 1, not paused, public, no code).

use jiff::Timestamp;

use super::book::Stored;
use crate::domain::{Order, OrderId, OrderStatus, Sale, SaleAccess, SaleId, UserId};
use crate::record_file;
use crate::store::{waiting_room_from_text, waiting_room_text};

pub const SALE: u8 = 1;
pub const ORDER: u8 = 2;

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
        let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&length.to_le_bytes());
        self.0
            .extend_from_slice(&text.as_bytes()[..usize::from(length)]);
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
    }
}

/// Appends a framed sale record to `out`; `scratch` is reused for the payload.
pub fn put_sale(out: &mut Vec<u8>, scratch: &mut Vec<u8>, sale: &Sale) {
    scratch.clear();
    let mut writer = Writer(scratch);
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
    record_file::encode_into(out, SALE, scratch);
}

/// Appends a framed record of an order's state to `out`; `scratch` is reused for the payload.
pub fn put_order(out: &mut Vec<u8>, scratch: &mut Vec<u8>, stored: &Stored) {
    scratch.clear();
    let order = &stored.order;
    let mut writer = Writer(scratch);
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
    record_file::encode_into(out, ORDER, scratch);
}

fn read_sale(payload: &[u8]) -> Option<Sale> {
    let mut reader = Reader(payload);
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
    if !reader.is_done() {
        sale.version = reader.u64()?;
        sale.paused = reader.flag()?;
        sale.access = SaleAccess::parse(&reader.text()?)?;
    }
    reader.done()?;
    Some(sale)
}

fn read_order(payload: &[u8]) -> Option<Stored> {
    let mut reader = Reader(payload);
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
    };
    let stock_returned = reader.flag()?;
    if !reader.is_done() {
        order.access_code = reader.optional_text()?;
    }
    reader.done()?;
    Some(Stored {
        order,
        stock_returned,
    })
}

/// One record read back.
pub enum Record {
    Sale(Box<Sale>),
    Order(Box<Stored>),
}

pub fn read(kind: u8, payload: &[u8]) -> Result<Record, Unreadable> {
    match kind {
        SALE => read_sale(payload)
            .map(|sale| Record::Sale(Box::new(sale)))
            .ok_or(Unreadable { what: "sale" }),
        ORDER => read_order(payload)
            .map(|stored| Record::Order(Box::new(stored)))
            .ok_or(Unreadable { what: "order" }),
        _ => Err(Unreadable { what: "unknown" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            },
            stock_returned: false,
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        put_sale(&mut out, &mut scratch, &sale);
        put_order(&mut out, &mut scratch, &stored);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::write(&path, &out).unwrap();
        let mut records = Vec::new();
        record_file::replay::<std::io::Error>(&path, |kind, payload| {
            records.push(read(kind, payload).map_err(std::io::Error::other)?);
            Ok(())
        })
        .unwrap();
        let [Record::Sale(read_sale), Record::Order(read_order)] = &records[..] else {
            panic!("a sale and an order");
        };
        assert_eq!(**read_sale, sale);
        assert_eq!(**read_order, stored);
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
        let sale = read_sale(&old_sale).expect("an old sale reads");
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
        let stored = read_order(&old_order).expect("an old order reads");
        assert_eq!(stored.order.access_code, None);
        assert!(stored.stock_returned);
    }
}
