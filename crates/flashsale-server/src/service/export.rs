//! The orders export: pages of orders, newest first, with what each cost, read from the store
//! one page at a time so that a caller streaming them holds one page, whatever the total.

use std::collections::HashMap;

use super::error::ServiceError;
use super::Service;
use crate::domain::{InvalidField, Order, OrderId, OrderStatus, SaleId};
use crate::store::OrderQuery;

/// Orders read from the store per page of an export.
pub const EXPORT_PAGE_ORDERS: usize = 1000;

/// Which orders to export.
#[derive(Clone, Debug, Default)]
pub struct ExportFilter {
    pub sale_id: Option<SaleId>,
    pub status: Option<OrderStatus>,
    /// A filter naming a sale that does not exist: nothing to export.
    pub nothing: bool,
}

impl ExportFilter {
    /// The filter of `?sale_id=` and `?status=`, as sent.
    pub fn parse(sale_id: Option<&str>, status: Option<&str>) -> Result<Self, InvalidField> {
        let status = status
            .map(|text| {
                OrderStatus::parse(text).ok_or_else(|| {
                    InvalidField::new(
                        "status",
                        "must be pending_payment, paid, cancelled or expired",
                    )
                })
            })
            .transpose()?;
        let sale_id = sale_id.map(SaleId::parse);
        Ok(Self {
            nothing: matches!(sale_id, Some(None)),
            sale_id: sale_id.flatten(),
            status,
        })
    }
}

/// One order of an export and what it cost (`price_cents × quantity`).
#[derive(Clone, Debug)]
pub struct ExportRow {
    pub order: Order,
    pub amount_cents: u64,
}

impl Service {
    /// The page of orders older than `before` (the previous page's last order; `None`: the
    /// newest); an empty page is the end.
    pub async fn export_page(
        &self,
        filter: &ExportFilter,
        before: Option<OrderId>,
    ) -> Result<Vec<ExportRow>, ServiceError> {
        if filter.nothing {
            return Ok(Vec::new());
        }
        let orders = self
            .store
            .orders(OrderQuery {
                user_id: None,
                sale_id: filter.sale_id.clone(),
                before,
                status: filter.status,
                limit: EXPORT_PAGE_ORDERS,
            })
            .await?;
        let mut prices: HashMap<SaleId, u64> = HashMap::new();
        let mut rows = Vec::with_capacity(orders.len());
        for order in orders {
            let price = match prices.get(&order.sale_id) {
                Some(price) => *price,
                None => {
                    let price = self.known_sale(order.sale_id.as_str()).await?.price_cents;
                    prices.insert(order.sale_id.clone(), price);
                    price
                }
            };
            rows.push(ExportRow {
                amount_cents: price.saturating_mul(u64::from(order.quantity)),
                order,
            });
        }
        Ok(rows)
    }
}
