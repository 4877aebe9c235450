//! The rules a purchase must pass before it may take stock. The stock itself and each buyer's
//! holding are decided by the stock gate, atomically; this module checks what does not need it.

use jiff::{SignedDuration, Timestamp};

use super::{Order, OrderId, OrderStatus, Sale, UserId};

/// Why a purchase is refused. Each is an ordinary outcome of a sale, not a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    SoldOut {
        remaining: u64,
    },
    AlreadyPurchased {
        order_id: OrderId,
    },
    NotStarted {
        starts_at: Timestamp,
    },
    SaleEnded,
    /// The operator paused the sale.
    SalePaused,
    InvalidQuantity {
        per_user_limit: u32,
    },
}

/// The message for an invalid quantity, shared with the HTTP layer's parser.
pub const QUANTITY_ERROR: &str = "quantity must be a whole number from 1 to the per-user limit";

/// Checks the quantity; `quantity` is whatever number the buyer sent.
pub fn check_quantity(sale: &Sale, quantity: i64) -> Result<u32, Rejection> {
    u32::try_from(quantity)
        .ok()
        .filter(|quantity| (1..=sale.per_user_limit).contains(quantity))
        .ok_or(Rejection::InvalidQuantity {
            per_user_limit: sale.per_user_limit,
        })
}

/// Refuses a purchase that is outside the sale's window by more than `tolerance`: how far the
/// caller's clock may be from the clock that decides (a cluster's gate keeps its own). Within the
/// tolerance the gate decides, so this check only ever saves it work and never sells early.
pub fn check_window(
    sale: &Sale,
    now: Timestamp,
    tolerance: SignedDuration,
) -> Result<(), Rejection> {
    if now.saturating_add(tolerance).unwrap_or(Timestamp::MAX) < sale.starts_at {
        return Err(Rejection::NotStarted {
            starts_at: sale.starts_at,
        });
    }
    let ended = sale
        .ends_at
        .is_some_and(|ends_at| now >= ends_at.saturating_add(tolerance).unwrap_or(Timestamp::MAX));
    if ended {
        return Err(Rejection::SaleEnded);
    }
    Ok(())
}

/// The order a successful purchase creates.
pub fn new_order(
    id: OrderId,
    sale: &Sale,
    user_id: UserId,
    quantity: u32,
    idempotency_key: Option<String>,
    access_code: Option<String>,
    now: Timestamp,
) -> Order {
    Order {
        id,
        sale_id: sale.id.clone(),
        user_id,
        quantity,
        status: OrderStatus::PendingPayment,
        created_at: now,
        expires_at: sale.payment_deadline(now),
        paid_at: None,
        idempotency_key,
        access_code,
        refunded_at: None,
        payment: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SaleDraft, SaleId};

    fn sale() -> Sale {
        SaleDraft {
            name: "GPU".into(),
            stock: 10,
            per_user_limit: Some(3),
            starts_at: "2026-12-01T12:00:00Z".parse().unwrap(),
            ends_at: Some("2026-12-01T13:00:00Z".parse().unwrap()),
            payment_window_secs: Some(60),
            ..SaleDraft::default()
        }
        .validate(SaleId::generate(), "2026-11-01T00:00:00Z".parse().unwrap())
        .unwrap()
    }

    #[test]
    fn quantity_must_be_within_the_limit() {
        for bad in [0, -1, 4, i64::MAX] {
            assert_eq!(
                check_quantity(&sale(), bad),
                Err(Rejection::InvalidQuantity { per_user_limit: 3 })
            );
        }
        assert_eq!(check_quantity(&sale(), 3), Ok(3));
    }

    #[test]
    fn window_is_checked_with_the_time_given() {
        let sale = sale();
        let exact = SignedDuration::ZERO;
        assert_eq!(
            check_window(&sale, "2026-12-01T11:59:59Z".parse().unwrap(), exact),
            Err(Rejection::NotStarted {
                starts_at: sale.starts_at
            })
        );
        assert_eq!(
            check_window(&sale, "2026-12-01T12:00:00Z".parse().unwrap(), exact),
            Ok(())
        );
        assert_eq!(
            check_window(&sale, "2026-12-01T13:00:00Z".parse().unwrap(), exact),
            Err(Rejection::SaleEnded)
        );
    }

    #[test]
    fn a_tolerance_leaves_the_edges_of_the_window_to_the_gate() {
        let sale = sale();
        let second = SignedDuration::from_secs(1);
        for near_an_edge in ["2026-12-01T11:59:59.500Z", "2026-12-01T13:00:00.500Z"] {
            assert_eq!(
                check_window(&sale, near_an_edge.parse().unwrap(), second),
                Ok(())
            );
        }
        assert!(check_window(&sale, "2026-12-01T11:59:58Z".parse().unwrap(), second).is_err());
        assert!(check_window(&sale, "2026-12-01T13:00:01Z".parse().unwrap(), second).is_err());
    }

    #[test]
    fn new_orders_expire_after_the_payment_window() {
        let now: Timestamp = "2026-12-01T12:30:00Z".parse().unwrap();
        let order = new_order(
            OrderId::generate(),
            &sale(),
            UserId::parse("u").unwrap(),
            2,
            None,
            None,
            now,
        );
        assert_eq!(order.status, OrderStatus::PendingPayment);
        assert_eq!(order.expires_at, "2026-12-01T12:31:00Z".parse().unwrap());
    }
}
