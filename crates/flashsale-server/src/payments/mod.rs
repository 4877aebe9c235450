//! Payment providers: the `PaymentProvider` seam (create an order's intent, read it, cancel it,
//! confirm it with the buyer's payment method, refund it), its two implementations — the
//! simulated provider (`simulated.rs`, the default: the buyer's word is the payment) and Stripe's
//! PaymentIntents API (`stripe.rs`, over HTTPS with rustls, every call bounded in time and
//! retried only where Stripe says a retry is safe) — and the check of Stripe's webhook
//! signatures (`signature.rs`). Both implementations are held to one conformance suite.
//!
//! Nothing here runs on a purchase's path, and nothing here changes an order: the service
//! records what a provider said through the store's transitions (`service/payments.rs`).

mod signature;
mod simulated;
mod stripe;

pub use self::signature::{stripe_signature_header, verify_stripe_signature, SignatureError};
pub use self::simulated::SimulatedProvider;
pub use self::stripe::{StripeProvider, StripeSettings};

use crate::domain::{OrderId, SaleId};
use crate::BoxFuture;

/// What an order's intent is made of.
#[derive(Clone, Debug)]
pub struct IntentRequest {
    pub order_id: OrderId,
    pub sale_id: SaleId,
    /// `price_cents × quantity`, in the currency's smallest unit.
    pub amount_cents: u64,
    pub currency: String,
}

/// Where an intent stands at the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentStatus {
    /// Waiting for the buyer (a payment method, a confirmation, an authentication): it may still
    /// take money, and it can be cancelled.
    AwaitingBuyer,
    /// The provider is taking the money (some methods take days): it cannot be cancelled now.
    Processing,
    Succeeded,
    Canceled,
}

/// An intent as the provider tells it. `Debug` leaves the client secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct Intent {
    pub id: String,
    /// What the buyer's page confirms it with (none where the provider needs no page).
    pub client_secret: Option<String>,
    pub status: IntentStatus,
    pub amount_cents: u64,
}

impl std::fmt::Debug for Intent {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Intent")
            .field("id", &self.id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("status", &self.status)
            .field("amount_cents", &self.amount_cents)
            .finish()
    }
}

/// A refund the provider made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundReceipt {
    pub id: String,
    pub amount_cents: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Not reached, not in time, or failing on its side (5xx, 429): worth asking again later.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the payment provider has no such intent")]
    NotFound,
    /// The buyer's payment method was refused.
    #[error("the payment was declined: {0}")]
    Declined(String),
    /// The provider refused the request for good (a 4xx other than a decline).
    #[error("the payment provider refused the request: {0}")]
    Refused(String),
}

/// A payment provider. Every call is bounded in time; a call that changes something at the
/// provider is idempotent per order (the same order's intent, cancel, refund).
pub trait PaymentProvider: Send + Sync + 'static {
    /// `stripe` or `simulated`: the `payment.provider` of the orders it pays.
    fn name(&self) -> &'static str;

    /// Makes the order's intent (Stripe: `Idempotency-Key` = the order id).
    fn create_intent<'a>(
        &'a self,
        request: &'a IntentRequest,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>>;

    fn retrieve_intent<'a>(
        &'a self,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>>;

    /// Cancels the intent so it can take no money; an intent that already took it (or is taking
    /// it) is not cancelled, and comes back as it is.
    fn cancel_intent<'a>(
        &'a self,
        order_id: &'a OrderId,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>>;

    /// Confirms the intent with a payment method the buyer's page made.
    fn confirm_intent<'a>(
        &'a self,
        order_id: &'a OrderId,
        intent_id: &'a str,
        payment_method: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>>;

    /// Refunds the intent in full, exactly once per order: a refund already made for the intent
    /// is returned instead of a new one (Stripe: `Idempotency-Key` = `refund-<order id>`).
    fn refund<'a>(
        &'a self,
        order_id: &'a OrderId,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<RefundReceipt, ProviderError>>;
}
