//! The simulated provider (the default): the buyer's word is the payment, as before payments
//! were real. An intent succeeds the moment it is made, cannot be cancelled, and refunds at
//! once. It keeps no state, so every node of a cluster, and every restart, answers the same for
//! the same order.

use super::{Intent, IntentRequest, IntentStatus, PaymentProvider, ProviderError, RefundReceipt};
use crate::domain::OrderId;
use crate::BoxFuture;

const INTENT_PREFIX: &str = "sim_";

pub struct SimulatedProvider;

fn succeeded(id: String) -> Intent {
    Intent {
        id,
        client_secret: None,
        status: IntentStatus::Succeeded,
        // Not known without state; no caller needs it from this provider.
        amount_cents: 0,
    }
}

fn known(intent_id: &str) -> Result<(), ProviderError> {
    if intent_id.starts_with(INTENT_PREFIX) {
        Ok(())
    } else {
        Err(ProviderError::NotFound)
    }
}

impl PaymentProvider for SimulatedProvider {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn create_intent<'a>(
        &'a self,
        request: &'a IntentRequest,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>> {
        let mut intent = succeeded(format!("{INTENT_PREFIX}{}", request.order_id));
        intent.amount_cents = request.amount_cents;
        Box::pin(async move { Ok(intent) })
    }

    fn retrieve_intent<'a>(
        &'a self,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>> {
        Box::pin(async move { known(intent_id).map(|()| succeeded(intent_id.to_owned())) })
    }

    fn cancel_intent<'a>(
        &'a self,
        _order_id: &'a OrderId,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>> {
        self.retrieve_intent(intent_id)
    }

    fn confirm_intent<'a>(
        &'a self,
        _order_id: &'a OrderId,
        intent_id: &'a str,
        _payment_method: &'a str,
    ) -> BoxFuture<'a, Result<Intent, ProviderError>> {
        self.retrieve_intent(intent_id)
    }

    fn refund<'a>(
        &'a self,
        order_id: &'a OrderId,
        intent_id: &'a str,
    ) -> BoxFuture<'a, Result<RefundReceipt, ProviderError>> {
        Box::pin(async move {
            known(intent_id)?;
            Ok(RefundReceipt {
                id: format!("{INTENT_PREFIX}re_{order_id}"),
                amount_cents: 0,
            })
        })
    }
}
