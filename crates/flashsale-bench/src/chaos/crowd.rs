//! The chaotic crowd: buyers that behave like a real one. Each runs a script drawn from its own
//! seeded generator (the same seed replays the same scripts): buy with or without an
//! Idempotency-Key, hang up at random points, retry with the key (on another node, after the
//! sell-out), double-click, pay or cancel at random moments of the payment window (racing the
//! expiry), and carry tokens that expire mid-run. With payments through localstripe, a buyer's
//! `pay` makes the intent (twice, on a double click), then the card confirms it at Stripe (or
//! through the server), sometimes late, sometimes declined; the admin refunds a share of the
//! orders it was told are paid.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::history::{Action, History, Operation};
use super::payments::LocalStripe;
use super::wire::{exchange, Answer, HangUp, Request};
use crate::SplitMix64;
use flashsale_server::auth::TokenMinter;

#[derive(Clone, Debug)]
pub struct SaleSpec {
    pub id: String,
    pub stock: u64,
    pub per_user_limit: u32,
    /// One sale ends mid-run, so that late retries of winning keys come after its end.
    pub ends_at: Option<jiff::Timestamp>,
    pub price_cents: u64,
}

pub struct Crowd {
    pub nodes: Vec<SocketAddr>,
    pub sales: Vec<SaleSpec>,
    pub minter: TokenMinter,
    pub history: History,
    pub started: Instant,
    pub deadline: Instant,
    pub payment_window: Duration,
    pub admin_token: String,
    /// Payments through Stripe's API at this localstripe (else the simulated provider).
    pub stripe: Option<Arc<LocalStripe>>,
}

fn chance(random: &mut SplitMix64, percent: u64) -> bool {
    random.below(100) < percent
}

fn hang_up(random: &mut SplitMix64) -> HangUp {
    match random.below(100) {
        0..=69 => HangUp::Never,
        70..=79 => HangUp::BeforeBody,
        80..=89 => HangUp::AfterSend,
        _ => HangUp::MidReply,
    }
}

struct Buyer {
    name: String,
    token: String,
    random: SplitMix64,
}

impl Crowd {
    fn now_secs(&self) -> i64 {
        jiff::Timestamp::now().as_second()
    }

    fn fresh_token(&self, name: &str) -> String {
        self.minter.mint(name, self.now_secs() + 86_400)
    }

    /// Sends one operation to a node and records it. A 401 (the token ran out) gets a fresh
    /// token and one more try, recorded too.
    async fn send(
        &self,
        buyer: &mut Buyer,
        action: Action,
        hang_up: HangUp,
        node: usize,
    ) -> Answer {
        for _ in 0..2 {
            let (method, path, key, body) = match &action {
                Action::Purchase {
                    sale_id,
                    key,
                    quantity,
                } => (
                    "POST",
                    format!("/api/v1/sales/{sale_id}/purchase"),
                    key.clone(),
                    Some(json!({ "quantity": quantity }).to_string()),
                ),
                Action::Pay { order_id } => {
                    ("POST", format!("/api/v1/orders/{order_id}/pay"), None, None)
                }
                Action::PayWith {
                    order_id,
                    payment_method,
                } => (
                    "POST",
                    format!("/api/v1/orders/{order_id}/pay"),
                    None,
                    Some(json!({ "payment_method": payment_method }).to_string()),
                ),
                Action::Cancel { order_id } => (
                    "POST",
                    format!("/api/v1/orders/{order_id}/cancel"),
                    None,
                    None,
                ),
                Action::Refund { order_id } => (
                    "POST",
                    format!("/api/v1/orders/{order_id}/refund"),
                    None,
                    None,
                ),
            };
            let bearer = match &action {
                Action::Refund { .. } => self.admin_token.as_str(),
                _ => buyer.token.as_str(),
            };
            let request = Request {
                method,
                path: &path,
                bearer: Some(bearer),
                idempotency_key: key.as_deref(),
                body,
                headers: &[],
            };
            let sent_ms = self.started.elapsed().as_millis() as u64;
            let answer = exchange(self.nodes[node], &request, hang_up).await;
            self.history.record(Operation {
                buyer: buyer.name.clone(),
                action: action.clone(),
                node,
                hang_up,
                sent_ms,
                answered_ms: self.started.elapsed().as_millis() as u64,
                answer: answer.clone(),
            });
            if answer.status() == Some(401) {
                buyer.token = self.fresh_token(&buyer.name);
                continue;
            }
            return answer;
        }
        Answer::None("unauthenticated twice".into())
    }

    /// Sends with a random hang-up, and once more (without) when no answer or a 503 came.
    async fn send_retried(&self, buyer: &mut Buyer, action: Action) -> Answer {
        let (node, cut) = (self.node(&mut buyer.random), hang_up(&mut buyer.random));
        let answer = self.send(buyer, action.clone(), cut, node).await;
        if answer.status().is_some_and(|status| status != 503) {
            return answer;
        }
        let node = self.node(&mut buyer.random);
        self.send(buyer, action, HangUp::Never, node).await
    }

    /// A buyer pays: `pay` (twice at once, on a double click); with a provider that waits for
    /// the card, the card then confirms the intent at Stripe or through the server, sometimes
    /// late, sometimes declined. The admin refunds a share of the orders it was told are paid.
    async fn pay(&self, buyer: &mut Buyer, order_id: &str) {
        let pay = Action::Pay {
            order_id: order_id.to_owned(),
        };
        let answer = if chance(&mut buyer.random, 10) {
            let (node, other) = (self.node(&mut buyer.random), self.node(&mut buyer.random));
            let mut twin = Buyer {
                name: buyer.name.clone(),
                token: buyer.token.clone(),
                random: SplitMix64::new(buyer.random.next_u64()),
            };
            let (first, _) = tokio::join!(
                self.send(buyer, pay.clone(), HangUp::Never, node),
                self.send(&mut twin, pay.clone(), HangUp::Never, other)
            );
            first
        } else {
            self.send_retried(buyer, pay).await
        };
        let Some(body) = answer
            .body()
            .filter(|_| answer.status() == Some(200))
            .cloned()
        else {
            return;
        };
        let mut paid = body["status"] == "paid";
        if let (Some(stripe), false) = (&self.stripe, paid) {
            let Some(intent_id) = body["payment"]["intent_id"].as_str() else {
                return;
            };
            let method = if chance(&mut buyer.random, 15) {
                "pm_card_chargeCustomerFail"
            } else {
                "pm_card_visa"
            };
            if chance(&mut buyer.random, 40) {
                let confirmed = self
                    .send_retried(
                        buyer,
                        Action::PayWith {
                            order_id: order_id.to_owned(),
                            payment_method: method.to_owned(),
                        },
                    )
                    .await;
                paid = confirmed.status() == Some(200)
                    && confirmed
                        .body()
                        .is_some_and(|body| body["status"] == "paid");
            } else {
                // Some cards go through late: around the deadline, racing the expiry.
                if chance(&mut buyer.random, 30) {
                    let window_ms = self.payment_window.as_millis() as u64;
                    let late = buyer.random.below(window_ms + window_ms / 3 + 1);
                    tokio::time::sleep(Duration::from_millis(late)).await;
                }
                stripe.pay(intent_id, method).await;
            }
        }
        if paid && chance(&mut buyer.random, 15) {
            self.send_retried(
                buyer,
                Action::Refund {
                    order_id: order_id.to_owned(),
                },
            )
            .await;
        }
    }

    fn node(&self, random: &mut SplitMix64) -> usize {
        random.below(self.nodes.len() as u64) as usize
    }

    /// One buyer's script, until the deadline.
    pub async fn buyer(self: Arc<Self>, index: u64, seed: u64) {
        let mut random = SplitMix64::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let name = format!("chaos-{index}");
        // One buyer in eight holds a token that runs out during the run.
        let token = if chance(&mut random, 12) {
            let run_secs = self.deadline.duration_since(self.started).as_secs().max(2);
            self.minter
                .mint(&name, self.now_secs() + 1 + random.below(run_secs) as i64)
        } else {
            self.fresh_token(&name)
        };
        let mut buyer = Buyer {
            name,
            token,
            random,
        };
        let mut attempt = 0u64;
        while Instant::now() < self.deadline {
            attempt += 1;
            self.one_purchase(&mut buyer, attempt).await;
            let think = buyer.random.below(40);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    async fn one_purchase(&self, buyer: &mut Buyer, attempt: u64) {
        let random = &mut buyer.random;
        let sale = self.sales[random.below(self.sales.len() as u64) as usize].clone();
        let quantity = 1 + random.below(u64::from(sale.per_user_limit.min(2))) as u32;
        let key = chance(random, 80).then(|| format!("{}-{attempt}", buyer.name));
        let purchase = Action::Purchase {
            sale_id: sale.id.clone(),
            key: key.clone(),
            quantity,
        };
        let (node, cut) = (self.node(random), hang_up(random));
        let double_click = key.is_some() && chance(random, 10);
        let mut answer = if double_click {
            let other = self.node(&mut buyer.random);
            let mut twin = Buyer {
                name: buyer.name.clone(),
                token: buyer.token.clone(),
                random: SplitMix64::new(attempt),
            };
            let (first, _) = tokio::join!(
                self.send(buyer, purchase.clone(), cut, node),
                self.send(&mut twin, purchase.clone(), HangUp::Never, other)
            );
            first
        } else {
            self.send(buyer, purchase.clone(), cut, node).await
        };
        // No reply: a keyed buyer retries with its key (on any node), a keyless one presses Buy
        // again at most once.
        let retries = if key.is_some() { 3 } else { 1 };
        for _ in 0..retries {
            if answer.status().is_some_and(|status| status != 503) {
                break;
            }
            let node = self.node(&mut buyer.random);
            answer = self
                .send(buyer, purchase.clone(), HangUp::Never, node)
                .await;
        }
        let Some(order_id) = (match &answer {
            Answer::Reply {
                status: 200 | 201,
                body,
            } => body["id"].as_str().map(str::to_owned),
            _ => None,
        }) else {
            return;
        };
        let random = &mut buyer.random;
        // Some winners' retries arrive late: after the sell-out, on another node.
        let late_retry = key.is_some() && chance(random, 25);
        let choice = random.below(100);
        let window_ms = self.payment_window.as_millis() as u64;
        let wait = Duration::from_millis(random.below(window_ms + window_ms / 5 + 1));
        tokio::time::sleep(wait).await;
        let action = match choice {
            0..=39 => Some(Action::Pay {
                order_id: order_id.clone(),
            }),
            40..=69 => Some(Action::Cancel {
                order_id: order_id.clone(),
            }),
            _ => None,
        };
        match action {
            Some(Action::Pay { .. }) => self.pay(buyer, &order_id).await,
            Some(action) => {
                self.send_retried(buyer, action).await;
            }
            None => {}
        }
        if late_retry {
            let node = self.node(&mut buyer.random);
            self.send(buyer, purchase, HangUp::Never, node).await;
        }
    }
}
