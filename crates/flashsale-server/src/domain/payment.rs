//! An order's payment as the server knows it: the provider's intent (its id, and the secret the
//! buyer's page confirms it with) and where the money stands. The provider is the truth about the
//! money; this record is what the server last heard, and what it still owes (a refund).

/// Where the money of an order's intent stands, as far as the server has heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentState {
    /// The intent exists and has taken no money the server has heard of. It may still succeed,
    /// so an order with an open payment is never expired or cancelled without asking the
    /// provider first.
    Open,
    /// The provider took the money.
    Succeeded,
    /// The intent was cancelled at the provider: it can take no money any more.
    Canceled,
    /// The money must go back (a refund, or a payment that came for an order already expired
    /// or cancelled); the provider has not confirmed the refund yet.
    RefundPending,
    /// The provider confirmed the refund.
    Refunded,
}

impl PaymentState {
    pub const ALL: [PaymentState; 5] = [
        Self::Open,
        Self::Succeeded,
        Self::Canceled,
        Self::RefundPending,
        Self::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Succeeded => "succeeded",
            Self::Canceled => "canceled",
            Self::RefundPending => "refund_pending",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Whether the server still has work with the provider for this payment: an intent whose
    /// outcome it has not heard, or a refund not confirmed.
    pub fn is_unsettled(self) -> bool {
        matches!(self, Self::Open | Self::RefundPending)
    }
}

/// An order's payment. `Debug` leaves the client secret out (it lets its holder pay).
#[derive(Clone, PartialEq, Eq)]
pub struct Payment {
    /// `stripe` or `simulated`.
    pub provider: String,
    pub intent_id: String,
    /// What the buyer's page confirms the intent with (none for a simulated payment).
    pub client_secret: Option<String>,
    pub state: PaymentState,
    /// The provider's refund, once it confirmed one.
    pub refund_id: Option<String>,
}

impl std::fmt::Debug for Payment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Payment")
            .field("provider", &self.provider)
            .field("intent_id", &self.intent_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("state", &self.state)
            .field("refund_id", &self.refund_id)
            .finish()
    }
}

/// What a payment provider said about an order's payment: the facts that move it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderFact {
    /// `pay` made the order's intent (its state `Open`, or `Succeeded` when the provider took
    /// the money at once, as the simulated one does).
    IntentCreated(Box<Payment>),
    /// The intent took the money.
    Succeeded { intent_id: String },
    /// The intent was cancelled at the provider.
    Canceled { intent_id: String },
    /// The provider refunded the order's money.
    Refunded { refund_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_and_only_open_work_is_unsettled() {
        for state in PaymentState::ALL {
            assert_eq!(PaymentState::parse(state.as_str()), Some(state));
        }
        let unsettled: Vec<_> = PaymentState::ALL
            .into_iter()
            .filter(|state| state.is_unsettled())
            .collect();
        assert_eq!(unsettled, [PaymentState::Open, PaymentState::RefundPending]);
    }

    #[test]
    fn debug_leaves_the_client_secret_out() {
        let payment = Payment {
            provider: "stripe".into(),
            intent_id: "pi_1".into(),
            client_secret: Some("pi_1_secret_hunter2".into()),
            state: PaymentState::Open,
            refund_id: None,
        };
        let shown = format!("{payment:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("pi_1"), "{shown}");
    }
}
