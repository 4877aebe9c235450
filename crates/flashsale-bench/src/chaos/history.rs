//! Every operation the chaotic crowd sent, and what came back (or that nothing did).

use std::sync::Mutex;

use serde::Serialize;

use super::wire::{Answer, HangUp};

#[derive(Clone, Debug, Serialize)]
pub enum Action {
    Purchase {
        sale_id: String,
        key: Option<String>,
        quantity: u32,
    },
    Pay {
        order_id: String,
    },
    /// `pay` with a payment method the buyer's page made: the server confirms the intent.
    PayWith {
        order_id: String,
        payment_method: String,
    },
    Cancel {
        order_id: String,
    },
    /// The admin's refund.
    Refund {
        order_id: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct Operation {
    pub buyer: String,
    pub action: Action,
    pub node: usize,
    pub hang_up: HangUp,
    /// Milliseconds since the crowd started, when it was sent and when its answer (or the lack
    /// of one) was known.
    pub sent_ms: u64,
    pub answered_ms: u64,
    pub answer: Answer,
}

impl Operation {
    /// The order an acknowledged purchase, pay or cancel answered with.
    pub fn order_id(&self) -> Option<&str> {
        match &self.answer {
            Answer::Reply {
                status: 200 | 201,
                body,
            } => body["id"].as_str(),
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct History {
    operations: Mutex<Vec<Operation>>,
}

impl History {
    pub fn record(&self, operation: Operation) {
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(operation);
    }

    pub fn operations(&self) -> Vec<Operation> {
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
