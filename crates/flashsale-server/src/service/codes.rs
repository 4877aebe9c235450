//! Presale codes: made for a sale on request (nothing stored: a code is known because it
//! verifies), checked with one HMAC before the gate is asked, and bound to the first buyer who
//! takes stock with one by the gate itself.

use super::error::ServiceError;
use super::Service;
use crate::access_codes::{AccessCodes, CODES_PER_REQUEST_MAX};
use crate::domain::{InvalidField, Sale, SaleAccess, SaleId, UserId};

/// Codes made per batch: a few milliseconds of HMACs.
const CODES_PER_BATCH: usize = 10_000;

/// New codes of one sale still to be made.
pub struct CodeBatches {
    codes: AccessCodes,
    sale_id: SaleId,
    left: usize,
}

impl CodeBatches {
    /// The next batch, `None` once every code was made (off the runtime's threads: HMACs).
    pub async fn next_batch(&mut self) -> Option<Result<Vec<String>, ServiceError>> {
        if self.left == 0 {
            return None;
        }
        let count = self.left.min(CODES_PER_BATCH);
        self.left -= count;
        let (codes, sale_id) = (self.codes.clone(), self.sale_id.clone());
        let made = tokio::task::spawn_blocking(move || codes.make(&sale_id, count))
            .await
            .map_err(|error| ServiceError::Internal(error.to_string()))
            .and_then(|made| made.map_err(|error| ServiceError::Internal(error.to_string())));
        Some(made)
    }
}

impl Service {
    /// `count` new codes for the sale (1 to 1,000,000), made batch by batch as the caller takes
    /// them (a reply can stream a million codes without holding them, or waiting for all).
    pub async fn make_codes(&self, sale_id: &str, count: i64) -> Result<CodeBatches, ServiceError> {
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
        Ok(CodeBatches {
            codes,
            sale_id: sale.id.clone(),
            left: usize::try_from(count).unwrap_or(0),
        })
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
