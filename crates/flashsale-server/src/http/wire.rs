//! The JSON shapes of the contract, and their conversions from and to domain values. Only these
//! types are serialized; the domain stays free of serde.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail};
use super::rfc3339;
use crate::domain::{
    hex, revealed_seed, Order, Payment, Sale, SaleDraft, SaleState, WaitingRoom, WaitingRoomDraft,
};
use crate::domain::{time_text, SaleAccess, SaleUpdate};
use crate::service::{Audit, LogPage, PaymentPage, QueueView, SaleView};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A JSON number with no fractional part, as JSON Schema's `integer` means it: `15` and `15.0`
/// alike (a client generated from the document may send either).
pub fn whole_number(number: &serde_json::Number) -> Option<i64> {
    number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|value| value.fract() == 0.0 && value.abs() < 9.0e18)
            .map(|value| value as i64)
    })
}

fn whole<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    whole_number(&number).ok_or_else(|| serde::de::Error::custom("must be a whole number"))
}

fn optional_whole<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => whole_number(&number)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("must be a whole number")),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSaleRequest {
    /// 1 to 200 characters, not all blank.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// At most 2000 characters; default "".
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// 1 to 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "whole")]
    pub stock: i64,
    /// 1 to 100; default 1.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub per_user_limit: Option<i64>,
    /// At least 0; default 0.
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub price_cents: Option<i64>,
    /// RFC 3339. In the past: the sale is live at once.
    #[schema(format = DateTime)]
    pub starts_at: String,
    /// RFC 3339, after `starts_at` and in the future; null: no end.
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// 1 to 86,400; default 900.
    #[schema(minimum = 1, maximum = 86_400)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub payment_window_secs: Option<i64>,
    /// A line in front of the sale; null or absent: none.
    #[serde(default)]
    pub waiting_room: Option<WaitingRoomRequest>,
    /// `public` (the default): anyone may buy; `codes`: only a buyer sending a valid
    /// `Access-Code` (a presale; make codes with `POST /api/v1/sales/{sale_id}/codes`).
    #[serde(default)]
    pub access: Option<AccessBody>,
}

/// Who may buy a sale.
#[derive(Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessBody {
    Public,
    Codes,
}

impl From<AccessBody> for SaleAccess {
    fn from(access: AccessBody) -> Self {
        match access {
            AccessBody::Public => Self::Public,
            AccessBody::Codes => Self::Codes,
        }
    }
}

impl From<SaleAccess> for AccessBody {
    fn from(access: SaleAccess) -> Self {
        match access {
            SaleAccess::Public => Self::Public,
            SaleAccess::Codes => Self::Codes,
        }
    }
}

/// A change of a running sale: any of these (absent: unchanged).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSaleRequest {
    /// 1 to 200 characters, not all blank.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// RFC 3339, not before now and after `starts_at` (later or earlier than before); null: no
    /// end.
    #[schema(format = DateTime, value_type = Option<String>)]
    #[serde(default, deserialize_with = "present")]
    pub ends_at: Option<Option<String>>,
    /// Units added to `stock` and `remaining` at once: 1 to 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub add_stock: Option<i64>,
    /// Units taken off sale: 1 to what remains (more: 409 insufficient_stock); not with
    /// `add_stock`.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub remove_stock: Option<i64>,
    /// Raised only (buyers may hold up to the current one): up to 100.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub per_user_limit: Option<i64>,
    /// The waiting room's new rate, from the reply on (a sale with a waiting room only).
    #[serde(default)]
    pub waiting_room: Option<WaitingRoomUpdate>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitingRoomUpdate {
    /// 1 to 1,000,000; admitted so far stay admitted.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "whole")]
    pub admit_per_sec: i64,
}

/// A field that may be null, told apart from an absent one (`Some(None)`: null).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

impl UpdateSaleRequest {
    pub fn into_update(self) -> Result<SaleUpdate, ApiError> {
        Ok(SaleUpdate {
            ends_at: self
                .ends_at
                .map(|ends_at| {
                    ends_at
                        .as_deref()
                        .map(|text| parse_time("ends_at", text))
                        .transpose()
                })
                .transpose()?,
            name: self.name,
            description: self.description,
            add_stock: self.add_stock,
            remove_stock: self.remove_stock,
            per_user_limit: self.per_user_limit,
            admit_per_sec: self.waiting_room.map(|room| room.admit_per_sec),
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodesRequest {
    /// How many codes to make: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "whole")]
    pub count: i64,
}

/// New access codes of a sale, each good for one buyer (the first who buys with it).
#[derive(Serialize, ToSchema)]
pub struct CodesBody {
    #[schema(min_length = 22, max_length = 22)]
    pub codes: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct CodesQuery {
    /// `csv`: the codes as `text/csv`, one per line under a `code` header; else JSON.
    pub format: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitingRoomRequest {
    /// Buyers of the line admitted per second from `starts_at`: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "whole")]
    pub admit_per_sec: i64,
    /// How long an admitted buyer's pass is valid: 10 to 3600; default 300.
    #[schema(minimum = 10, maximum = 3600)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub pass_ttl_secs: Option<i64>,
    /// How long before `starts_at` the line opens: 0 to 86,400; default 900.
    #[schema(minimum = 0, maximum = 86_400)]
    #[serde(default, deserialize_with = "optional_whole")]
    pub opens_before_secs: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct WaitingRoomBody {
    pub admit_per_sec: u32,
    pub pass_ttl_secs: u32,
    pub opens_before_secs: u32,
    /// Hex SHA-256 of the draw's 32-byte seed, chosen at creation; null for a sale made before
    /// seeds (its draw is not verifiable).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub draw_commitment: Option<String>,
    /// The draw's seed in hex, from `starts_at` on (null before): a buyer's draw is
    /// HMAC-SHA256(key = seed, message = sale id + "\n" + buyer id), and buyers who joined before
    /// the start are placed by it, ascending.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub draw_seed: Option<String>,
}

impl WaitingRoomBody {
    /// The room of `sale` as the public sees it at `at`.
    fn of(room: &WaitingRoom, sale: &Sale, at: Timestamp) -> Self {
        Self {
            admit_per_sec: room.admit_per_sec,
            pass_ttl_secs: room.pass_ttl_secs,
            opens_before_secs: room.opens_before_secs,
            draw_commitment: room.draw_seed.map(|seed| hex(&seed.commitment())),
            draw_seed: revealed_seed(sale, at).map(|seed| seed.to_hex()),
        }
    }
}

/// A buyer's place in a sale's waiting line.
#[derive(Serialize, ToSchema)]
pub struct QueueStatusBody {
    pub sale_id: String,
    /// waiting, admitted, sold_out, paused or ended.
    pub state: &'static str,
    /// Buyers ahead of this one plus one; null until the draw at `starts_at`; 0 once admitted.
    pub position: Option<u64>,
    /// Whole seconds to admission, estimated; null before the draw and while sold out.
    pub eta_secs: Option<u64>,
    /// Send as the `Queue-Pass` header of a purchase; set once admitted.
    pub pass: Option<String>,
    #[schema(format = DateTime)]
    pub pass_expires_at: Option<String>,
    /// The buyer's entry in the sale's admission log (`GET …/queue/log`): its `n`, null until
    /// the draw has closed (2 s after `starts_at`).
    pub log_entry: Option<u64>,
    /// Hex SHA-256 of the buyer id: how the admission log names this buyer.
    pub buyer_hash: String,
}

impl From<&QueueView> for QueueStatusBody {
    fn from(view: &QueueView) -> Self {
        Self {
            sale_id: view.sale_id.to_string(),
            state: view.state,
            position: view.position,
            eta_secs: view.eta_secs,
            pass: view.pass.clone(),
            pass_expires_at: view.pass_expires_at.map(|at| at.to_string()),
            log_entry: view.log_entry,
            buyer_hash: hex(&view.buyer_hash),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct QueueLogQuery {
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// One page of a sale's admission log.
#[derive(Serialize, ToSchema)]
pub struct QueueLogBody {
    /// In place order: `n` = 1, 2, … (the place in the line).
    pub entries: Vec<LogEntryBody>,
    /// Carried by the page that reaches the end of the line: every checkpoint so far, oldest
    /// first.
    pub checkpoints: Vec<CheckpointBody>,
    /// The `after` of the next page (the last entry's `n`).
    pub next_after: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LogEntryBody {
    pub n: u64,
    /// Hex SHA-256 of the buyer id.
    pub buyer_hash: String,
    /// The buyer's draw in hex; null for a buyer placed by arrival (joined after `starts_at`).
    pub draw: Option<String>,
    #[schema(format = DateTime)]
    pub joined: Option<String>,
    /// When the line's admission reached this place (from the checkpoints); null until a
    /// checkpoint shows it admitted.
    #[schema(format = DateTime)]
    pub admitted_at: Option<String>,
    pub prev_hash: String,
    /// Hex SHA-256 of `prev_hash + "\n" + n + "\n" + buyer_hash + "\n" + (draw or "-")`.
    pub hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointBody {
    /// The last entry placed.
    pub n: u64,
    pub hash: String,
    /// The last admitted place.
    pub admitted_through: u64,
    #[schema(format = DateTime)]
    pub time: String,
    /// Base64 Ed25519 over `"flashsale-checkpoint\n" + sale id + "\n" + n + "\n" + hash + "\n"
    /// + admitted_through + "\n" + time`.
    pub signature: String,
    /// The key that signed (`GET /api/v1/keys`).
    pub kid: String,
    /// The admission rule in force (not signed: it must give `admitted_through`).
    pub admission: AdmissionRuleBody,
}

/// `base` places admitted by `since`, then `admit_per_sec` more a second unless stopped.
#[derive(Serialize, ToSchema)]
pub struct AdmissionRuleBody {
    pub base: u64,
    #[schema(format = DateTime)]
    pub since: String,
    pub admit_per_sec: u32,
    pub paused: bool,
    pub sold_out: bool,
}

#[derive(Serialize, ToSchema)]
pub struct KeysBody {
    pub keys: Vec<KeyBody>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyBody {
    pub kid: String,
    /// Ed25519.
    pub alg: &'static str,
    /// Base64 of the 32-byte public key.
    pub public_key: String,
}

impl QueueLogBody {
    pub fn of(page: &LogPage) -> Self {
        let time = |ms: i64| time_text(ms);
        Self {
            entries: page
                .entries
                .iter()
                .map(|entry| LogEntryBody {
                    n: entry.n,
                    buyer_hash: hex(&entry.buyer_hash),
                    draw: entry.draw.map(|draw| hex(&draw)),
                    joined: entry.joined_ms.map(time),
                    admitted_at: entry.admitted_ms.map(time),
                    prev_hash: hex(&entry.prev_hash),
                    hash: hex(&entry.hash),
                })
                .collect(),
            checkpoints: page
                .checkpoints
                .iter()
                .map(|checkpoint| CheckpointBody {
                    n: checkpoint.n,
                    hash: hex(&checkpoint.hash),
                    admitted_through: checkpoint.admitted_through,
                    time: time(checkpoint.time_ms),
                    signature: STANDARD.encode(&checkpoint.signature),
                    kid: page.kid.clone(),
                    admission: AdmissionRuleBody {
                        base: checkpoint.admission.base,
                        since: time(checkpoint.admission.since_ms),
                        admit_per_sec: checkpoint.admission.admit_per_sec,
                        paused: checkpoint.admission.paused,
                        sold_out: checkpoint.admission.sold_out,
                    },
                })
                .collect(),
            next_after: page.next_after,
        }
    }
}

fn parse_time(field: &'static str, text: &str) -> Result<jiff::Timestamp, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(field, format!("{field} must be an RFC 3339 time")))
}

impl CreateSaleRequest {
    pub fn into_draft(self) -> Result<SaleDraft, ApiError> {
        Ok(SaleDraft {
            starts_at: parse_time("starts_at", &self.starts_at)?,
            ends_at: self
                .ends_at
                .as_deref()
                .map(|text| parse_time("ends_at", text))
                .transpose()?,
            name: self.name,
            description: self.description,
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            price_cents: self.price_cents,
            payment_window_secs: self.payment_window_secs,
            waiting_room: self.waiting_room.map(|room| WaitingRoomDraft {
                admit_per_sec: Some(room.admit_per_sec),
                pass_ttl_secs: room.pass_ttl_secs,
                opens_before_secs: room.opens_before_secs,
            }),
            access: self.access.map_or(SaleAccess::Public, SaleAccess::from),
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// Units to buy, all or nothing: 1 to the sale's per-user limit (at most 100); default 1.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub quantity: Option<serde_json::Number>,
}

#[derive(Serialize, ToSchema)]
pub struct SaleBody {
    pub id: String,
    pub name: String,
    pub description: String,
    pub stock: u64,
    /// Stock not held by a pending or paid order.
    pub remaining: u64,
    pub per_user_limit: u32,
    pub price_cents: u64,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    pub payment_window_secs: u32,
    /// scheduled, live, sold_out, paused or ended.
    pub state: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The line in front of the sale; null: none.
    pub waiting_room: Option<WaitingRoomBody>,
    /// 1 when created, one more with each change (the `ETag` of the sale's reads follows it).
    pub version: u64,
    /// Who may buy: public, or codes (a buyer with a valid `Access-Code`).
    pub access: AccessBody,
}

impl From<&SaleView> for SaleBody {
    fn from(view: &SaleView) -> Self {
        Self::of(&view.sale, view.remaining, view.state, view.at)
    }
}

impl SaleBody {
    /// A sale with its figures at some moment `at` (a view now, or an event's).
    pub fn of(sale: &Sale, remaining: u64, state: SaleState, at: Timestamp) -> Self {
        Self {
            id: sale.id.to_string(),
            name: sale.name.clone(),
            description: sale.description.clone(),
            stock: sale.stock,
            remaining,
            per_user_limit: sale.per_user_limit,
            price_cents: sale.price_cents,
            starts_at: sale.starts_at.to_string(),
            ends_at: sale.ends_at.map(|at| at.to_string()),
            payment_window_secs: sale.payment_window_secs,
            state: state.as_str(),
            created_at: sale.created_at.to_string(),
            waiting_room: sale
                .waiting_room
                .as_ref()
                .map(|room| WaitingRoomBody::of(room, sale, at)),
            version: sale.version,
            access: sale.access.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SaleList {
    pub sales: Vec<SaleBody>,
    /// Only when `limit` was given: pass as `cursor` for the next page; null on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub next_cursor: Option<Option<String>>,
}

#[derive(Deserialize, ToSchema)]
pub struct SalesQuery {
    /// 1 to 500; without it, every sale.
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// `true`: only the sales a buyer can still act on or has just seen end.
    pub current: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OrderBody {
    pub id: String,
    pub sale_id: String,
    pub user_id: String,
    pub quantity: u32,
    /// pending_payment, paid, cancelled, expired or refunded.
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = DateTime)]
    pub paid_at: Option<String>,
    /// When its money was decided to go back: a refund, or a payment that came for an order
    /// already expired or cancelled (which stays so).
    #[schema(format = DateTime)]
    pub refunded_at: Option<String>,
    /// The provider's intent, once `pay` made one.
    pub payment: Option<PaymentBody>,
}

/// An order's payment.
#[derive(Serialize, ToSchema)]
pub struct PaymentBody {
    /// stripe or simulated.
    pub provider: String,
    /// The provider's PaymentIntent (`pi_…` at Stripe).
    pub intent_id: String,
    /// What the buyer's page confirms the intent with (Stripe.js); null for a simulated payment
    /// and in events.
    pub client_secret: Option<String>,
    /// open (waiting for the money), succeeded, canceled, refund_pending or refunded.
    pub status: &'static str,
    /// The provider's refund, once it confirmed one.
    pub refund_id: Option<String>,
}

impl From<&Payment> for PaymentBody {
    fn from(payment: &Payment) -> Self {
        Self {
            provider: payment.provider.clone(),
            intent_id: payment.intent_id.clone(),
            client_secret: payment.client_secret.clone(),
            status: payment.state.as_str(),
            refund_id: payment.refund_id.clone(),
        }
    }
}

impl From<&Order> for OrderBody {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id.to_string(),
            sale_id: order.sale_id.to_string(),
            user_id: order.user_id.to_string(),
            quantity: order.quantity,
            status: order.status.as_str(),
            created_at: order.created_at.to_string(),
            expires_at: order.expires_at.to_string(),
            paid_at: order.paid_at.map(|at| at.to_string()),
            refunded_at: order.refunded_at.map(|at| at.to_string()),
            payment: order.payment.as_deref().map(PaymentBody::from),
        }
    }
}

/// An order's JSON as `OrderBody` describes it, written by hand into one buffer: the purchase's
/// reply (the response a flash sale sends most after the refusals) without serde's walk over
/// its fields and its escaping scan of each key and id. Only the buyer id can need escaping;
/// order and sale ids are URL-safe by construction (`domain::ids`), the status and the
/// timestamps are ASCII; a payment (never on a new order) goes through serde. A test holds it to
/// `OrderBody`'s bytes.
pub fn order_json(order: &Order) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(ORDER_JSON_CAPACITY);
    out.extend_from_slice(br#"{"id":""#);
    out.extend_from_slice(order.id.as_str().as_bytes());
    out.extend_from_slice(br#"","sale_id":""#);
    out.extend_from_slice(order.sale_id.as_str().as_bytes());
    out.extend_from_slice(br#"","user_id":"#);
    serde_json::to_writer(&mut out, order.user_id.as_str())?;
    out.extend_from_slice(br#","quantity":"#);
    serde_json::to_writer(&mut out, &order.quantity)?;
    out.extend_from_slice(br#","status":""#);
    out.extend_from_slice(order.status.as_str().as_bytes());
    out.extend_from_slice(br#"","created_at":""#);
    rfc3339::push(&mut out, order.created_at);
    out.extend_from_slice(br#"","expires_at":""#);
    rfc3339::push(&mut out, order.expires_at);
    out.push(b'"');
    for (name, at) in [
        (&br#","paid_at":"#[..], order.paid_at),
        (&br#","refunded_at":"#[..], order.refunded_at),
    ] {
        out.extend_from_slice(name);
        match at {
            Some(at) => {
                out.push(b'"');
                rfc3339::push(&mut out, at);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(br#","payment":"#);
    match order.payment.as_deref() {
        Some(payment) => serde_json::to_writer(&mut out, &PaymentBody::from(payment))?,
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(out)
}

/// The optional body of `pay`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// A payment method the buyer's page made with Stripe.js (`pm_…`, or a card's `card_…`):
    /// the server confirms the intent with it.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9_]+$")]
    pub payment_method: Option<String>,
}

/// What the storefront needs to take a payment.
#[derive(Serialize, ToSchema)]
pub struct PaymentConfigBody {
    /// stripe or simulated.
    pub provider: &'static str,
    /// Where Stripe.js is loaded from (stripe only).
    pub stripe_js_url: Option<String>,
    /// Stripe's publishable key for Stripe.js (stripe only).
    pub publishable_key: Option<String>,
}

impl From<PaymentPage> for PaymentConfigBody {
    fn from(page: PaymentPage) -> Self {
        Self {
            provider: page.provider,
            stripe_js_url: page.stripe_js_url,
            publishable_key: page.publishable_key,
        }
    }
}

/// Room for an order's JSON (about 310 bytes with generated ids and three timestamps): it grows
/// only for ids near the 64-character limit with a heavily escaped buyer id, or a payment.
const ORDER_JSON_CAPACITY: usize = 512;

#[derive(Serialize, ToSchema)]
pub struct OrderPageBody {
    pub orders: Vec<OrderBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct OrdersQuery {
    pub sale_id: Option<String>,
    /// The admin only: this buyer's orders.
    pub user_id: Option<String>,
    /// 1 to 500; default 50.
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ExportQuery {
    pub sale_id: Option<String>,
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditBody {
    pub sale_id: String,
    pub stock: u64,
    pub remaining: u64,
    pub pending: u64,
    pub paid: u64,
    pub cancelled: u64,
    pub expired: u64,
    /// Quantities of refunded orders (their units are back on sale: they count in remaining).
    pub refunded: u64,
    /// remaining + pending + paid == stock in every store the server uses.
    pub consistent: bool,
}

impl From<Audit> for AuditBody {
    fn from(audit: Audit) -> Self {
        Self {
            sale_id: audit.sale_id.to_string(),
            stock: audit.stock,
            remaining: audit.remaining,
            pending: audit.pending,
            paid: audit.paid,
            cancelled: audit.cancelled,
            expired: audit.expired,
            refunded: audit.refunded,
            consistent: audit.consistent,
        }
    }
}

/// One event: a CloudEvent 1.0 (the feed's items, a webhook's body, a broker's message).
#[derive(Serialize, ToSchema)]
pub struct CloudEventBody {
    /// "1.0".
    pub specversion: String,
    /// Unique, the same on every redelivery: dedupe by it.
    pub id: String,
    /// `flashsale/<installation>`.
    pub source: String,
    /// `flashsale.order.created|paid|cancelled|expired|refunded`,
    /// `flashsale.sale.created|updated|paused|resumed|ended|sold_out`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The order or sale id.
    pub subject: String,
    #[schema(format = DateTime)]
    pub time: String,
    pub saleid: String,
    /// Per sale: 1, 2, 3 … with no gap, in the order the changes took effect.
    #[schema(minimum = 1)]
    pub sequence: u64,
    /// "application/json".
    pub datacontenttype: String,
    /// The Order or the Sale right after the change.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A page of a sale's events (written by hand from the stored events; this is its schema).
#[derive(Serialize, ToSchema)]
pub struct EventPageBody {
    pub events: Vec<CloudEventBody>,
    /// Pass as `after` for the next page (the last sequence returned, or `after` when none).
    pub next_after: u64,
}

#[derive(Deserialize, ToSchema)]
pub struct EventsQuery {
    pub sale_id: Option<String>,
    pub after: Option<String>,
    pub limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterBody {
    pub sale_id: String,
    pub sequence: u64,
    /// The last failure.
    pub reason: String,
    #[schema(format = DateTime)]
    pub recorded_at: String,
    /// The CloudEvent as it was sent.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// A sink as this node sees it.
#[derive(Serialize, ToSchema)]
pub struct SinkBody {
    pub name: String,
    /// webhook, amqp or nats.
    pub kind: &'static str,
    /// Whether this node delivers the sink now (in a cluster one node does at a time).
    pub held_here: bool,
    /// Events delivered by this node since it started.
    pub delivered: u64,
    /// Failed attempts by this node since it started (each retried with back-off).
    pub retries: u64,
    /// Events not yet delivered (on the node that delivers the sink).
    pub lag_events: u64,
    /// Age of the oldest undelivered event (on the node that delivers the sink).
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    /// Events set aside after `retry_hours` of failures, in all.
    pub dead_letters: u64,
    /// The latest of them, newest first (at most 20).
    pub recent_dead_letters: Vec<DeadLetterBody>,
}

#[derive(Serialize, ToSchema)]
pub struct SinkListBody {
    pub sinks: Vec<SinkBody>,
}

impl From<&crate::service::SinkView> for SinkBody {
    fn from(view: &crate::service::SinkView) -> Self {
        Self {
            name: view.name.clone(),
            kind: view.kind,
            held_here: view.held_here,
            delivered: view.delivered,
            retries: view.retries,
            lag_events: view.lag_events,
            lag_seconds: view.lag_seconds,
            last_error: view.last_error.clone(),
            dead_letters: view.dead_letters,
            recent_dead_letters: view
                .recent_dead_letters
                .iter()
                .map(|letter| DeadLetterBody {
                    sale_id: letter.sale_id.to_string(),
                    sequence: letter.sequence,
                    reason: letter.reason.clone(),
                    recorded_at: letter.recorded_at.to_string(),
                    event: serde_json::from_str(&letter.event).unwrap_or(serde_json::Value::Null),
                })
                .collect(),
        }
    }
}

/// Every error reply (its schema; `error.rs` writes it).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The server's clock.
#[derive(Serialize, ToSchema)]
pub struct ServerTime {
    /// RFC 3339, UTC, to the millisecond.
    pub now: String,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderId, OrderStatus, SaleId, UserId};

    #[test]
    fn an_order_is_written_by_hand_as_serde_writes_its_body() {
        let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
        let cases = [
            (
                "alice",
                OrderStatus::PendingPayment,
                None,
                at("2026-12-01T12:00:00.123456789Z"),
            ),
            (
                "say \"hi\"\\ \u{1}\n 李",
                OrderStatus::Paid,
                Some(at("2026-12-01T12:07:30.5Z")),
                at("2026-12-01T12:00:00Z"),
            ),
            (
                "bob",
                OrderStatus::Cancelled,
                None,
                at("1969-07-20T20:17:40.000001Z"),
            ),
            (
                "carol",
                OrderStatus::Expired,
                None,
                at("9999-12-30T21:59:59.999999999Z"),
            ),
        ];
        for (user, status, paid_at, created_at) in cases {
            let order = Order {
                id: OrderId::generate(),
                sale_id: SaleId::generate(),
                user_id: UserId::parse(user).unwrap(),
                quantity: 3,
                status,
                created_at,
                expires_at: created_at,
                paid_at,
                idempotency_key: Some("key-1".into()),
                access_code: None,
                refunded_at: None,
                payment: None,
            };
            let mut refunded = order.clone();
            refunded.status = OrderStatus::Refunded;
            refunded.refunded_at = Some(created_at);
            refunded.payment = Some(Box::new(crate::domain::Payment {
                provider: "stripe".into(),
                intent_id: "pi_1".into(),
                client_secret: Some("pi_1_secret_\"x\"".into()),
                state: crate::domain::PaymentState::RefundPending,
                refund_id: None,
            }));
            assert_eq!(
                String::from_utf8(order_json(&refunded).unwrap()).unwrap(),
                serde_json::to_string(&OrderBody::from(&refunded)).unwrap(),
            );
            assert_eq!(
                String::from_utf8(order_json(&order).unwrap()).unwrap(),
                serde_json::to_string(&OrderBody::from(&order)).unwrap(),
            );
        }
    }
}
