//! What every payment provider must do (the simulated one, and Stripe's API, here against a
//! real localstripe): an intent made for an order reads back; money taken is never cancelled
//! away; an intent nobody paid cancels and takes nothing after; a refund is made once however
//! often it is asked for; a declined method leaves the intent waiting; an unknown intent is
//! `NotFound`; a provider that cannot be reached is `Unavailable` in bounded time. Where a
//! provider has no such state (the simulated one takes the money the moment an intent is made)
//! the case checks that instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsale_server::domain::{OrderId, SaleId};
use flashsale_server::payments::{
    IntentRequest, IntentStatus, PaymentProvider, ProviderError, SimulatedProvider, StripeProvider,
    StripeSettings,
};
use flashsale_server::BoxFuture;

use crate::localstripe::{LocalStripe, SECRET_KEY};

/// A provider and the other side of it: the buyer who pays an intent, the shop's records.
pub trait ProviderBackend: Send + Sync {
    fn provider(&self) -> Arc<dyn PaymentProvider>;
    /// Whether an intent waits for the buyer after it is made (else it took the money at once).
    fn intents_wait_for_the_buyer(&self) -> bool;
    /// The buyer pays the intent with a card that works (or, `declined`, one that is refused);
    /// whether the money was taken.
    fn buyer_pays<'a>(&'a self, intent_id: &'a str, declined: bool) -> BoxFuture<'a, bool>;
    /// How many refunds the provider's own records hold for the intent (`None`: it keeps none).
    fn refunds_of<'a>(&'a self, intent_id: &'a str) -> BoxFuture<'a, Option<usize>>;
    /// The same provider, pointed where nothing answers (`None`: it needs nothing to answer).
    fn unreachable(&self) -> Option<Arc<dyn PaymentProvider>>;
}

#[macro_export]
macro_rules! provider_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use $crate::conformance::payments as cases;
            $crate::provider_suite!(@cases $make;
                an_intent_is_made_for_the_order_and_reads_back,
                money_taken_is_not_cancelled_away,
                an_unpaid_intent_cancels_and_takes_nothing_after,
                a_refund_is_made_once_however_often_it_is_asked_for,
                a_declined_method_leaves_the_intent_waiting,
                a_method_from_the_page_confirms_the_intent,
                an_unknown_intent_is_not_found,
                an_unreachable_provider_is_unavailable_in_bounded_time);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $make.await;
                cases::$case(&backend).await;
            }
        )*
    };
}

fn request(amount_cents: u64) -> IntentRequest {
    IntentRequest {
        order_id: OrderId::generate(),
        sale_id: SaleId::generate(),
        amount_cents,
        currency: "eur".into(),
    }
}

pub async fn an_intent_is_made_for_the_order_and_reads_back(backend: &dyn ProviderBackend) {
    let provider = backend.provider();
    let request = request(4999);
    let intent = provider.create_intent(&request).await.unwrap();
    assert!(!intent.id.is_empty());
    let read = provider.retrieve_intent(&intent.id).await.unwrap();
    assert_eq!(read.id, intent.id);
    assert_eq!(read.status, intent.status);
    if backend.intents_wait_for_the_buyer() {
        assert_eq!(intent.status, IntentStatus::AwaitingBuyer);
        assert_eq!(intent.amount_cents, 4999);
        assert!(intent.client_secret.is_some(), "the buyer's page needs it");
    } else {
        assert_eq!(intent.status, IntentStatus::Succeeded);
        assert_eq!(intent.client_secret, None);
    }
    // Another order, another intent.
    let other = provider
        .create_intent(&super::payments::request(100))
        .await
        .unwrap();
    assert_ne!(other.id, intent.id);
}

pub async fn money_taken_is_not_cancelled_away(backend: &dyn ProviderBackend) {
    let provider = backend.provider();
    let request = request(2500);
    let intent = provider.create_intent(&request).await.unwrap();
    assert!(backend.buyer_pays(&intent.id, false).await);
    let cancelled = provider
        .cancel_intent(&request.order_id, &intent.id)
        .await
        .unwrap();
    assert_eq!(
        cancelled.status,
        IntentStatus::Succeeded,
        "it says it took the money"
    );
    let read = provider.retrieve_intent(&intent.id).await.unwrap();
    assert_eq!(read.status, IntentStatus::Succeeded);
}

pub async fn an_unpaid_intent_cancels_and_takes_nothing_after(backend: &dyn ProviderBackend) {
    let provider = backend.provider();
    let request = request(2500);
    let intent = provider.create_intent(&request).await.unwrap();
    if !backend.intents_wait_for_the_buyer() {
        // Nothing is ever unpaid here: an intent took the money when it was made.
        assert_eq!(intent.status, IntentStatus::Succeeded);
        return;
    }
    let cancelled = provider
        .cancel_intent(&request.order_id, &intent.id)
        .await
        .unwrap();
    assert_eq!(cancelled.status, IntentStatus::Canceled);
    // Cancelling again answers the same.
    let again = provider
        .cancel_intent(&request.order_id, &intent.id)
        .await
        .unwrap();
    assert_eq!(again.status, IntentStatus::Canceled);
    assert!(
        !backend.buyer_pays(&intent.id, false).await,
        "no money after a cancel"
    );
    assert_eq!(
        provider.retrieve_intent(&intent.id).await.unwrap().status,
        IntentStatus::Canceled
    );
}

pub async fn a_refund_is_made_once_however_often_it_is_asked_for(backend: &dyn ProviderBackend) {
    let provider = backend.provider();
    let request = request(4200);
    let intent = provider.create_intent(&request).await.unwrap();
    assert!(backend.buyer_pays(&intent.id, false).await);
    let first = provider
        .refund(&request.order_id, &intent.id)
        .await
        .unwrap();
    let second = provider
        .refund(&request.order_id, &intent.id)
        .await
        .unwrap();
    assert_eq!(first.id, second.id, "the same refund");
    if let Some(refunds) = backend.refunds_of(&intent.id).await {
        assert_eq!(refunds, 1, "one refund in the provider's own records");
        assert_eq!(first.amount_cents, 4200, "in full");
    }
    // Concurrent asks (a webhook and the sweep) still make one.
    let request = super::payments::request(700);
    let intent = provider.create_intent(&request).await.unwrap();
    assert!(backend.buyer_pays(&intent.id, false).await);
    let first = provider
        .refund(&request.order_id, &intent.id)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        provider.refund(&request.order_id, &intent.id),
        provider.refund(&request.order_id, &intent.id)
    );
    assert_eq!(a.unwrap().id, first.id);
    assert_eq!(b.unwrap().id, first.id);
    if let Some(refunds) = backend.refunds_of(&intent.id).await {
        assert_eq!(refunds, 1);
    }
}

pub async fn a_declined_method_leaves_the_intent_waiting(backend: &dyn ProviderBackend) {
    let provider = backend.provider();
    let request = request(1500);
    let intent = provider.create_intent(&request).await.unwrap();
    if !backend.intents_wait_for_the_buyer() {
        assert_eq!(intent.status, IntentStatus::Succeeded);
        return;
    }
    let refused = provider
        .confirm_intent(&request.order_id, &intent.id, "pm_card_chargeCustomerFail")
        .await;
    assert!(
        matches!(refused, Err(ProviderError::Declined(_))),
        "{refused:?}"
    );
    assert_eq!(
        provider.retrieve_intent(&intent.id).await.unwrap().status,
        IntentStatus::AwaitingBuyer,
        "still waiting for a method that works"
    );
    // A refund of money never taken is refused, and makes nothing. (Another card on the same
    // intent is Stripe's way on; localstripe cannot confirm an intent again after a declined
    // charge, so the suite stops here.)
    assert!(provider
        .refund(&request.order_id, &intent.id)
        .await
        .is_err());
    assert_eq!(backend.refunds_of(&intent.id).await, Some(0));
}

pub async fn a_method_from_the_page_confirms_the_intent(backend: &dyn ProviderBackend) {
    let provider = backend.provider();
    let request = request(990);
    let intent = provider.create_intent(&request).await.unwrap();
    let confirmed = provider
        .confirm_intent(&request.order_id, &intent.id, "pm_card_visa")
        .await
        .unwrap();
    assert_eq!(confirmed.status, IntentStatus::Succeeded);
    assert_eq!(
        provider.retrieve_intent(&intent.id).await.unwrap().status,
        IntentStatus::Succeeded
    );
}

pub async fn an_unknown_intent_is_not_found(backend: &dyn ProviderBackend) {
    let provider = backend.provider();
    assert_eq!(
        provider.retrieve_intent("pi_nobodymadethis").await,
        Err(ProviderError::NotFound)
    );
}

pub async fn an_unreachable_provider_is_unavailable_in_bounded_time(backend: &dyn ProviderBackend) {
    let Some(provider) = backend.unreachable() else {
        // It needs nothing to answer: it always does.
        assert!(backend.provider().create_intent(&request(1)).await.is_ok());
        return;
    };
    let started = Instant::now();
    let made = provider.create_intent(&request(100)).await;
    assert!(
        matches!(made, Err(ProviderError::Unavailable(_))),
        "{made:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered within a request's time: {:?}",
        started.elapsed()
    );
}

pub struct Simulated;

impl ProviderBackend for Simulated {
    fn provider(&self) -> Arc<dyn PaymentProvider> {
        Arc::new(SimulatedProvider)
    }
    fn intents_wait_for_the_buyer(&self) -> bool {
        false
    }
    fn buyer_pays<'a>(&'a self, _: &'a str, _: bool) -> BoxFuture<'a, bool> {
        // The buyer's word paid it when it was made.
        Box::pin(async { true })
    }
    fn refunds_of<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Option<usize>> {
        Box::pin(async { None })
    }
    fn unreachable(&self) -> Option<Arc<dyn PaymentProvider>> {
        None
    }
}

pub struct Stripe {
    localstripe: LocalStripe,
    provider: Arc<dyn PaymentProvider>,
}

impl Stripe {
    pub async fn start() -> Self {
        let localstripe = LocalStripe::start().await;
        let provider = Arc::new(
            StripeProvider::new(&StripeSettings {
                api_base: localstripe.base_url().parse().unwrap(),
                secret_key: SECRET_KEY.into(),
            })
            .unwrap(),
        );
        Self {
            localstripe,
            provider,
        }
    }
}

impl ProviderBackend for Stripe {
    fn provider(&self) -> Arc<dyn PaymentProvider> {
        Arc::clone(&self.provider)
    }
    fn intents_wait_for_the_buyer(&self) -> bool {
        true
    }
    fn buyer_pays<'a>(&'a self, intent_id: &'a str, declined: bool) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let method = if declined {
                "pm_card_chargeCustomerFail"
            } else {
                "pm_card_visa"
            };
            let (status, _) = self
                .localstripe
                .call(
                    hyper::Method::POST,
                    &format!("/v1/payment_intents/{intent_id}"),
                    &[("payment_method", method)],
                )
                .await;
            if !status.is_success() {
                return false;
            }
            self.localstripe.pay(intent_id, method).await.is_success()
                && self.localstripe.intent(intent_id).await["status"] == "succeeded"
        })
    }
    fn refunds_of<'a>(&'a self, intent_id: &'a str) -> BoxFuture<'a, Option<usize>> {
        Box::pin(async move { Some(self.localstripe.refunds_of(intent_id).await.len()) })
    }
    fn unreachable(&self) -> Option<Arc<dyn PaymentProvider>> {
        // A port just bound and released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or(9);
        Some(Arc::new(
            StripeProvider::new(&StripeSettings {
                api_base: format!("http://127.0.0.1:{port}").parse().unwrap(),
                secret_key: SECRET_KEY.into(),
            })
            .unwrap(),
        ))
    }
}

crate::provider_suite!(simulated_provider, async {
    crate::conformance::payments::Simulated
});
crate::provider_suite!(
    stripe_provider,
    crate::conformance::payments::Stripe::start()
);
