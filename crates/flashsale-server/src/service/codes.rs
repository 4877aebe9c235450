//! Presale codes: made for a sale on request (nothing stored: a code is known because it
//! verifies), checked with one HMAC before the gate is asked, and bound to the first buyer who
//! takes stock with one by the gate itself.

use super::{Service, ServiceError};
use crate::access_codes::CODES_PER_REQUEST_MAX;
use crate::domain::{InvalidField, Sale, SaleAccess, UserId};

impl Service {
    /// `count` new codes for the sale (1 to 1,000,000).
    pub async fn make_codes(&self, sale_id: &str, count: i64) -> Result<Vec<String>, ServiceError> {
        if !(1..=CODES_PER_REQUEST_MAX).contains(&count) {
            return Err(InvalidField::new(
                "count",
                format!("must be between 1 and {CODES_PER_REQUEST_MAX}, got {count}"),
            )
            .into());
        }
        let sale = self.known_sale(sale_id).await?;
        let codes = self.codes.clone().ok_or_else(|| {
            ServiceError::Unavailable("this server has no access codes configured".into())
        })?;
        let count = usize::try_from(count).unwrap_or(0);
        // A million HMACs take a moment: off the runtime's threads.
        tokio::task::spawn_blocking(move || codes.make(&sale.id, count))
            .await
            .map_err(|error| ServiceError::Internal(error.to_string()))?
            .map_err(|error| ServiceError::Internal(error.to_string()))
    }

    /// The buyer's code if it is one of the sale's (only a code sale reads it).
    pub(super) fn verified_code(&self, sale: &Sale, code: Option<&str>) -> Option<String> {
        if sale.access != SaleAccess::Codes {
            return None;
        }
        let codes = self.codes.as_ref()?;
        codes.verify(code?, &sale.id).map(str::to_owned)
    }

    /// Whether the buyer may join a code sale's line: a valid code not bound to another buyer.
    pub(super) async fn code_admits(
        &self,
        sale: &Sale,
        user: &UserId,
        code: Option<&str>,
    ) -> Result<(), ServiceError> {
        if sale.access != SaleAccess::Codes {
            return Ok(());
        }
        let code = self
            .verified_code(sale, code)
            .ok_or(ServiceError::AccessCodeRequired)?;
        match self.gate.code_owner(&sale.id, &code).await? {
            Some(owner) if owner != *user => Err(ServiceError::AccessCodeRequired),
            _ => Ok(()),
        }
    }
}
