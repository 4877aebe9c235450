//! Payments over HTTP against a private localstripe, once embedded and once on two cluster nodes
//! (requests alternate between the nodes; localstripe's webhooks go to the second, and either
//! node may hold the payments sweep). The server reaches localstripe through a TCP proxy the test
//! can make refuse (the provider down); the test itself talks to localstripe directly, as the
//! buyer's card and the shop's dashboard do. Time moves by the servers' manual clock. Every case
//! ends with the audit, and money taken at localstripe is checked against the orders.

use std::time::Duration;

use hyper::{Method, StatusCode};
use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::brokers::proxy::{Proxy, Reach};
use crate::harness::{eventually, Reply, TestServer};
use crate::localstripe::{use_stripe, LocalStripe, WEBHOOK_SECRET};

const PRICE_CENTS: u64 = 4999;
const WINDOW_SECS: i64 = 60;
const GRACE_SECS: u64 = 60;
const POLL_SECS: i64 = 10;
/// How long another process's work (a webhook localstripe sends a second after a change, a
/// sweep round) may take before a case gives up.
const LIMIT: Duration = Duration::from_secs(20);

pub struct Shop {
    pub server: TestServer,
    pub stripe: LocalStripe,
    pub proxy: Proxy,
    pub sale_id: String,
}

impl Shop {
    /// A server paying through localstripe (behind the proxy) and a live sale of `stock` units
    /// at `PRICE_CENTS`, localstripe's webhooks signed with `webhook_secret` (the server's own,
    /// or a wrong one: every webhook refused, as if none ever arrived).
    async fn open(nodes: usize, stock: u64, webhook_secret: &str) -> Option<Self> {
        let stripe = LocalStripe::start().await;
        let proxy = Proxy::start(stripe.addr).await;
        let (api_base, js_url) = (format!("http://{}", proxy.addr), stripe.js_url());
        let tweak = move |settings: &mut flashsale_server::config::Settings| {
            use_stripe(settings, &api_base, &js_url);
            settings.payment_expiry_grace_secs = GRACE_SECS;
            settings.payment_poll_interval_secs = POLL_SECS as u64;
        };
        let server = if nodes == 1 {
            TestServer::start_with(tweak).await
        } else {
            TestServer::start_cluster_with(nodes, tweak).await?
        };
        let webhook = format!(
            "http://{}/api/v1/payments/stripe/webhook",
            server.addrs[server.addrs.len() - 1]
        );
        stripe.send_webhooks_to(&webhook, webhook_secret).await;
        let sale_id = server
            .create_sale(json!({
                "stock": stock, "price_cents": PRICE_CENTS, "payment_window_secs": WINDOW_SECS
            }))
            .await;
        Some(Self {
            server,
            stripe,
            proxy,
            sale_id,
        })
    }

    async fn buy(&self, user: &str) -> String {
        let reply = self.server.purchase(&self.sale_id, user, None).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    async fn pay(&self, order_id: &str, user: &str, body: Option<Value>) -> Reply {
        self.server
            .send(
                Method::POST,
                &format!("/api/v1/orders/{order_id}/pay"),
                Some(&self.server.token(user)),
                body.map(|body| body.to_string()),
                &[],
            )
            .await
    }

    async fn order(&self, order_id: &str) -> Value {
        let reply = self
            .server
            .get(
                &format!("/api/v1/orders/{order_id}"),
                Some(&self.server.admin_token),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// Waits for the sale's remaining stock to be `units`: the sweep expires an order first and
    /// returns its unit right after, so an expired order may show a moment before its unit does.
    async fn remaining_becomes(&self, units: u64) {
        let back = eventually(LIMIT, || async {
            self.server.audit(&self.sale_id).await["remaining"].as_u64() == Some(units)
        })
        .await;
        let audit = self.server.audit(&self.sale_id).await;
        assert!(back, "remaining never became {units}: {audit}");
    }

    async fn until(&self, order_id: &str, holds: impl Fn(&Value) -> bool) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let held = eventually(LIMIT, || async {
            let order = self.order(order_id).await;
            let held = holds(&order);
            *last.lock().unwrap() = order;
            held
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(held, "the order never got there: {last}");
        last
    }

    async fn refund(&self, order_id: &str) -> Reply {
        self.server
            .post(
                &format!("/api/v1/orders/{order_id}/refund"),
                Some(&self.server.admin_token),
                json!(null),
            )
            .await
    }

    async fn webhook(&self, body: &str, signature: Option<&str>) -> Reply {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(signature) = signature {
            headers.push(("stripe-signature", signature));
        }
        self.server
            .send(
                Method::POST,
                "/api/v1/payments/stripe/webhook",
                None,
                Some(body.to_owned()),
                &headers,
            )
            .await
    }

    async fn event_types_of(&self, order_id: &str) -> Vec<String> {
        let reply = self
            .server
            .get(
                &format!("/api/v1/events?sale_id={}&limit=1000", self.sale_id),
                Some(&self.server.admin_token),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["subject"] == order_id)
            .map(|event| event["type"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The money check and the audit: money taken at localstripe less money refunded there is
    /// the price of the paid orders; every order's payment is its own intent.
    async fn settle_up(&self) {
        let audit = self.server.assert_consistent(&self.sale_id).await;
        let mut taken = 0;
        let mut refunded = 0;
        for intent in self.stripe.intents().await {
            if intent["status"] == "succeeded" {
                taken += intent["amount"].as_u64().unwrap();
            }
            // localstripe lists refunds only of an intent that was charged.
            if intent["latest_charge"].is_null() {
                continue;
            }
            for refund in self.stripe.refunds_of(intent["id"].as_str().unwrap()).await {
                refunded += refund["amount"].as_u64().unwrap();
            }
        }
        let paid = audit["paid"].as_u64().unwrap();
        assert_eq!(
            taken - refunded,
            paid * PRICE_CENTS,
            "money vs paid orders: {audit}"
        );
    }
}

fn intent_of(order: &Value) -> String {
    order["payment"]["intent_id"]
        .as_str()
        .unwrap_or_else(|| panic!("an intent: {order}"))
        .to_owned()
}

/// A Stripe event as localstripe sends one, for the order's intent.
fn succeeded_event(order_id: &str, intent_id: &str) -> String {
    json!({
        "id": "evt_test", "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": intent_id, "object": "payment_intent", "status": "succeeded",
            "amount": PRICE_CENTS, "metadata": {"order_id": order_id}
        }}
    })
    .to_string()
}

fn signed(body: &str, secret: &str, at: jiff::Timestamp) -> String {
    flashsale_server::payments::stripe_signature_header(secret, at.as_second(), body.as_bytes())
}

/// Pay makes one intent (a repeat answers with it); the card confirmed at localstripe, its
/// webhook makes the order paid.
pub async fn paid_once_the_card_is_confirmed(shop: Shop) {
    let order_id = shop.buy("alice").await;
    let reply = shop.pay(&order_id, "alice", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "pending_payment");
    let payment = &reply.body["payment"];
    assert_eq!(payment["provider"], "stripe");
    assert_eq!(payment["status"], "open");
    assert!(payment["client_secret"]
        .as_str()
        .unwrap()
        .starts_with("pi_"));
    let intent_id = intent_of(&reply.body);
    let again = shop.pay(&order_id, "alice", None).await;
    assert_eq!(intent_of(&again.body), intent_id, "one intent per order");
    let intent = shop.stripe.intent(&intent_id).await;
    assert_eq!(intent["amount"], PRICE_CENTS);
    assert_eq!(intent["metadata"]["order_id"], order_id.as_str());
    assert_eq!(intent["metadata"]["sale_id"], shop.sale_id.as_str());

    assert_eq!(
        shop.stripe.pay(&intent_id, "pm_card_visa").await,
        StatusCode::OK
    );
    let paid = shop
        .until(&order_id, |order| order["status"] == "paid")
        .await;
    assert!(paid["paid_at"].is_string());
    assert_eq!(paid["payment"]["status"], "succeeded");
    assert_eq!(
        shop.event_types_of(&order_id).await,
        ["flashsale.order.created", "flashsale.order.paid"]
    );
    // Paying a paid order returns it unchanged.
    let repeat = shop.pay(&order_id, "alice", None).await;
    assert_eq!(repeat.status, StatusCode::OK);
    assert_eq!(repeat.body["paid_at"], paid["paid_at"]);
    shop.settle_up().await;
}

/// A declined card leaves the order pending, waiting for another.
pub async fn a_declined_card_leaves_the_order_pending(shop: Shop) {
    let order_id = shop.buy("alice").await;
    let reply = shop
        .pay(
            &order_id,
            "alice",
            Some(json!({"payment_method": "pm_card_chargeCustomerFail"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.code(), "payment_declined");
    let order = shop.order(&order_id).await;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["payment"]["status"], "open");
    let intent_id = intent_of(&order);
    assert_eq!(
        shop.stripe.intent(&intent_id).await["status"],
        "requires_payment_method"
    );
    // The sweep asks localstripe again a poll later: still nothing taken, still pending.
    shop.server.advance(SignedDuration::from_secs(POLL_SECS));
    let still = shop.order(&order_id).await;
    assert_eq!(still["status"], "pending_payment");
    shop.settle_up().await;
}

/// A forged, tampered, stale or missing signature is `400` and changes nothing.
pub async fn forged_or_stale_signatures_change_nothing(shop: Shop) {
    let order_id = shop.buy("alice").await;
    let reply = shop.pay(&order_id, "alice", None).await;
    let intent_id = intent_of(&reply.body);
    let body = succeeded_event(&order_id, &intent_id);
    let now = shop.server.now();
    let forged = signed(&body, "whsec_not_the_secret", now);
    let stale = signed(&body, WEBHOOK_SECRET, now - SignedDuration::from_secs(301));
    let tampered = signed(&succeeded_event(&order_id, "pi_other"), WEBHOOK_SECRET, now);
    for signature in [
        Some(forged.as_str()),
        Some(stale.as_str()),
        Some(tampered.as_str()),
        Some("t=1,v1=00"),
        None,
    ] {
        let reply = shop.webhook(&body, signature).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{signature:?}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_signature");
    }
    let order = shop.order(&order_id).await;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["payment"]["status"], "open");
    // A good signature on an event that takes no money: taken, and nothing changes.
    let failed = body.replace("payment_intent.succeeded", "payment_intent.payment_failed");
    let reply = shop
        .webhook(&failed, Some(&signed(&failed, WEBHOOK_SECRET, now)))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(shop.order(&order_id).await["status"], "pending_payment");
    shop.settle_up().await;
}

/// A replayed (or duplicated) success changes nothing: paid once, told once.
pub async fn a_replayed_event_changes_nothing(shop: Shop) {
    let order_id = shop.buy("alice").await;
    let intent_id = intent_of(&shop.pay(&order_id, "alice", None).await.body);
    assert_eq!(
        shop.stripe.pay(&intent_id, "pm_card_visa").await,
        StatusCode::OK
    );
    let paid = shop
        .until(&order_id, |order| order["status"] == "paid")
        .await;
    shop.server.advance(SignedDuration::from_secs(5));
    let body = succeeded_event(&order_id, &intent_id);
    for _ in 0..3 {
        let signature = signed(&body, WEBHOOK_SECRET, shop.server.now());
        let reply = shop.webhook(&body, Some(&signature)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let after = shop.order(&order_id).await;
    assert_eq!(after["paid_at"], paid["paid_at"], "paid once");
    assert_eq!(
        shop.event_types_of(&order_id).await,
        ["flashsale.order.created", "flashsale.order.paid"]
    );
    shop.settle_up().await;
}

/// No webhook ever arrives (localstripe signs them with the wrong secret): the sweep asks
/// localstripe and the order is paid before its deadline.
pub async fn a_lost_webhook_is_made_up_by_the_sweep(shop: Shop) {
    let order_id = shop.buy("alice").await;
    let intent_id = intent_of(&shop.pay(&order_id, "alice", None).await.body);
    assert_eq!(
        shop.stripe.pay(&intent_id, "pm_card_visa").await,
        StatusCode::OK
    );
    shop.server.advance(SignedDuration::from_secs(POLL_SECS));
    let paid = shop
        .until(&order_id, |order| order["status"] == "paid")
        .await;
    let paid_at: jiff::Timestamp = paid["paid_at"].as_str().unwrap().parse().unwrap();
    let expires_at: jiff::Timestamp = paid["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(paid_at < expires_at, "before the deadline: {paid}");
    shop.settle_up().await;
}

/// An order nobody paid expires: its intent cancelled at localstripe first, its unit back on
/// sale and sold again.
pub async fn an_unpaid_order_expires_with_its_intent_cancelled(shop: Shop) {
    let order_id = shop.buy("alice").await;
    let intent_id = intent_of(&shop.pay(&order_id, "alice", None).await.body);
    assert_eq!(shop.server.audit(&shop.sale_id).await["remaining"], 0);
    shop.server
        .advance(SignedDuration::from_secs(WINDOW_SECS + 1));
    let expired = shop
        .until(&order_id, |order| order["status"] == "expired")
        .await;
    assert_eq!(expired["payment"]["status"], "canceled");
    assert_eq!(shop.stripe.intent(&intent_id).await["status"], "canceled");
    shop.remaining_becomes(1).await;
    let reply = shop.server.purchase(&shop.sale_id, "bob", None).await;
    assert_eq!(reply.status, StatusCode::CREATED, "the unit sells again");
    shop.settle_up().await;
}

/// Money that comes for an order already expired (the provider was down, so its intent could
/// not be cancelled, and the grace ran out) is refunded in full, once, and the buyer sees it.
pub async fn late_money_is_refunded_once(shop: Shop) {
    let order_id = shop.buy("alice").await;
    let intent_id = intent_of(&shop.pay(&order_id, "alice", None).await.body);
    shop.proxy.set(Reach::Refusing);
    // The buyer's card goes through at Stripe, which the server cannot reach.
    assert_eq!(
        shop.stripe.pay(&intent_id, "pm_card_visa").await,
        StatusCode::OK
    );
    shop.server
        .advance(SignedDuration::from_secs(WINDOW_SECS + 1));
    // Past the deadline and the provider unreachable: pending (its unit held) within the grace.
    assert_eq!(shop.order(&order_id).await["status"], "pending_payment");
    shop.server
        .advance(SignedDuration::from_secs(GRACE_SECS as i64));
    let expired = shop
        .until(&order_id, |order| order["status"] == "expired")
        .await;
    assert_eq!(expired["payment"]["status"], "open", "its outcome unknown");
    shop.remaining_becomes(1).await;

    shop.proxy.set(Reach::Up);
    shop.server.advance(SignedDuration::from_secs(POLL_SECS));
    let refunded = shop
        .until(&order_id, |order| order["payment"]["status"] == "refunded")
        .await;
    assert_eq!(refunded["status"], "expired", "it stays expired");
    assert!(
        refunded["refunded_at"].is_string(),
        "the buyer sees the refund"
    );
    let refunds = shop.stripe.refunds_of(&intent_id).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"], PRICE_CENTS, "in full");
    assert_eq!(refunded["payment"]["refund_id"], refunds[0]["id"]);
    // The success told again (a replay): the refund is settled, so nothing more (the sweep
    // no longer looks at a settled payment).
    let body = succeeded_event(&order_id, &intent_id);
    let reply = shop
        .webhook(
            &body,
            Some(&signed(&body, WEBHOOK_SECRET, shop.server.now())),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(shop.order(&order_id).await, refunded, "unchanged");
    assert_eq!(shop.stripe.refunds_of(&intent_id).await.len(), 1);
    assert_eq!(
        shop.event_types_of(&order_id).await,
        [
            "flashsale.order.created",
            "flashsale.order.expired",
            "flashsale.order.refunded"
        ]
    );
    shop.settle_up().await;
}

/// The admin refunds a paid order: one refund at localstripe, the unit back on sale, and a
/// second refund changes nothing.
pub async fn an_admin_refund_returns_the_money_and_the_unit_once(shop: Shop) {
    let order_id = shop.buy("alice").await;
    // Paid through the page's flow: the server confirms with the method Stripe.js made.
    let reply = shop
        .pay(
            &order_id,
            "alice",
            Some(json!({"payment_method": "pm_card_visa"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "paid");
    let intent_id = intent_of(&reply.body);
    let pending = shop.buy("bob").await;
    let refused = shop.refund(&pending).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.code(), "order_not_refundable");
    let buyer = shop
        .server
        .post(
            &format!("/api/v1/orders/{order_id}/refund"),
            Some(&shop.server.token("alice")),
            json!(null),
        )
        .await;
    assert_eq!(buyer.status, StatusCode::FORBIDDEN);

    let before = shop.server.audit(&shop.sale_id).await["remaining"]
        .as_u64()
        .unwrap();
    let reply = shop.refund(&order_id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "refunded");
    assert!(reply.body["refunded_at"].is_string());
    let refunded = shop
        .until(&order_id, |order| order["payment"]["status"] == "refunded")
        .await;
    assert_eq!(shop.stripe.refunds_of(&intent_id).await.len(), 1);
    let audit = shop.server.assert_consistent(&shop.sale_id).await;
    assert_eq!(
        audit["remaining"].as_u64().unwrap(),
        before + 1,
        "the unit is back"
    );
    assert_eq!(audit["refunded"], 1);
    let again = shop.refund(&order_id).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, refunded, "unchanged");
    assert_eq!(
        shop.stripe.refunds_of(&intent_id).await.len(),
        1,
        "one refund"
    );
    shop.settle_up().await;
}

/// A cancel cancels the intent at localstripe first; a cancel of an order whose card already
/// went through makes it paid and answers `409`.
pub async fn a_cancel_cancels_the_intent_first(shop: Shop) {
    let order_id = shop.buy("alice").await;
    let intent_id = intent_of(&shop.pay(&order_id, "alice", None).await.body);
    let reply = shop
        .server
        .post(
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&shop.server.token("alice")),
            json!(null),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "cancelled");
    assert_eq!(reply.body["payment"]["status"], "canceled");
    assert_eq!(shop.stripe.intent(&intent_id).await["status"], "canceled");

    let order_id = shop.buy("bob").await;
    let intent_id = intent_of(&shop.pay(&order_id, "bob", None).await.body);
    assert_eq!(
        shop.stripe.pay(&intent_id, "pm_card_visa").await,
        StatusCode::OK
    );
    let reply = shop
        .server
        .post(
            &format!("/api/v1/orders/{order_id}/cancel"),
            Some(&shop.server.token("bob")),
            json!(null),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.code(), "order_not_cancellable");
    assert_eq!(shop.order(&order_id).await["status"], "paid");
    shop.settle_up().await;
}

/// The provider down: `pay` answers `503 unavailable` with `Retry-After` and nothing changes;
/// once it is back, the same `pay` goes through.
pub async fn the_provider_down_makes_pay_unavailable(shop: Shop) {
    let order_id = shop.buy("alice").await;
    shop.proxy.set(Reach::Refusing);
    let reply = shop.pay(&order_id, "alice", None).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    let order = shop.order(&order_id).await;
    assert_eq!(order["status"], "pending_payment");
    assert!(order["payment"].is_null());
    shop.proxy.set(Reach::Up);
    let reply = shop.pay(&order_id, "alice", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["payment"]["status"], "open");
    shop.settle_up().await;
}

macro_rules! payment_cases {
    ($nodes:expr; $($case:ident: $stock:expr, $secret:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(shop) = super::Shop::open($nodes, $stock, $secret).await {
                    super::$case(shop).await;
                }
            }
        )*
    };
}

macro_rules! every_case {
    ($nodes:expr) => {
        payment_cases!($nodes;
            paid_once_the_card_is_confirmed: 1, super::WEBHOOK_SECRET;
            a_declined_card_leaves_the_order_pending: 1, super::WEBHOOK_SECRET;
            forged_or_stale_signatures_change_nothing: 1, super::WEBHOOK_SECRET;
            a_replayed_event_changes_nothing: 1, super::WEBHOOK_SECRET;
            a_lost_webhook_is_made_up_by_the_sweep: 1, "whsec_wrong";
            an_unpaid_order_expires_with_its_intent_cancelled: 1, super::WEBHOOK_SECRET;
            late_money_is_refunded_once: 1, "whsec_wrong";
            an_admin_refund_returns_the_money_and_the_unit_once: 2, super::WEBHOOK_SECRET;
            a_cancel_cancels_the_intent_first: 2, "whsec_wrong";
            the_provider_down_makes_pay_unavailable: 1, super::WEBHOOK_SECRET;
        );
    };
}

mod embedded {
    every_case!(1);
}

mod two_nodes {
    every_case!(2);
}

/// The simulated provider (the default): the buyer's word is the payment, a refund only changes
/// the order, and the server takes no Stripe webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_provider_pays_at_once_and_refunds_only_the_order() {
    let server = TestServer::start().await;
    let sale_id = server
        .create_sale(json!({"stock": 1, "price_cents": PRICE_CENTS}))
        .await;
    let reply = server.purchase(&sale_id, "alice", None).await;
    let order_id = reply.body["id"].as_str().unwrap().to_owned();
    let paid = server
        .post(
            &format!("/api/v1/orders/{order_id}/pay"),
            Some(&server.token("alice")),
            json!(null),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.body["status"], "paid");
    assert_eq!(paid.body["payment"]["provider"], "simulated");
    assert_eq!(paid.body["payment"]["status"], "succeeded");
    assert!(paid.body["payment"]["client_secret"].is_null());
    let refunded = server
        .post(
            &format!("/api/v1/orders/{order_id}/refund"),
            Some(&server.admin_token),
            json!(null),
        )
        .await;
    assert_eq!(refunded.status, StatusCode::OK, "{}", refunded.body);
    assert_eq!(refunded.body["status"], "refunded");
    assert_eq!(refunded.body["payment"]["status"], "refunded");
    let audit = server.assert_consistent(&sale_id).await;
    assert_eq!(
        (audit["remaining"].as_u64(), audit["refunded"].as_u64()),
        (Some(1), Some(1))
    );
    let webhook = server
        .send(
            Method::POST,
            "/api/v1/payments/stripe/webhook",
            None,
            Some("{}".into()),
            &[("stripe-signature", "t=1,v1=00")],
        )
        .await;
    assert_eq!(webhook.status, StatusCode::NOT_FOUND, "{}", webhook.body);
    let config = server.get("/api/v1/payments/config", None).await;
    assert_eq!(config.body["provider"], "simulated");
    // A free order is paid at once, without a payment.
    let free = server.create_sale(json!({"stock": 1})).await;
    let order = server.purchase(&free, "bob", None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = server
        .post(
            &format!("/api/v1/orders/{order}/pay"),
            Some(&server.token("bob")),
            json!(null),
        )
        .await;
    assert_eq!(paid.body["status"], "paid");
    assert!(paid.body["payment"].is_null());
    server.stop().await;
}

/// A bad `payment_method` in `pay`'s body is `400` naming the field, before the provider is
/// asked; the storefront's config names Stripe.js and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payment_method_is_refused_and_the_page_learns_where_stripe_js_is() {
    let Some(shop) = Shop::open(1, 1, WEBHOOK_SECRET).await else {
        return;
    };
    let order_id = shop.buy("alice").await;
    for body in [
        json!({"payment_method": "pm/../x"}),
        json!({"payment_method": ""}),
        json!({"card": 1}),
    ] {
        let reply = shop.pay(&order_id, "alice", Some(body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
    }
    assert!(
        shop.order(&order_id).await["payment"].is_null(),
        "nothing asked"
    );
    let config = shop.server.get("/api/v1/payments/config", None).await;
    assert_eq!(config.body["provider"], "stripe");
    assert_eq!(config.body["stripe_js_url"], shop.stripe.js_url().as_str());
    assert_eq!(
        config.body["publishable_key"],
        crate::localstripe::PUBLISHABLE_KEY
    );
    let page = shop.server.get("/", None).await;
    let link = page
        .headers
        .get("link")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    assert!(
        link.contains(&format!("<http://{}>; rel=preconnect", shop.stripe.addr)),
        "{link}"
    );
    shop.settle_up().await;
}
