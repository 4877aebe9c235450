//! The background sweeps. The payment-expiry sweep: at its own pace, in batches, it turns
//! overdue pending orders into expired ones and returns their stock. Due orders are found in the
//! store each time, never kept in timers, so the sweep picks up where it left off after a
//! restart. The payments sweep (its own task, so a slow provider never holds up an expiry):
//! every payment the server has not heard the end of is asked about at the provider and settled
//! (an order with an open intent is expired only by it, after the intent was cancelled).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::StoppableTicker;
use crate::metrics::Metrics;
use crate::service::Service;

/// Expires every overdue order, one batch at a time; returns how many.
pub async fn sweep(service: &Service, metrics: &Metrics) -> usize {
    let mut total = 0;
    loop {
        match service.expire_due().await {
            Ok(expired) => {
                total += expired;
                metrics.record_expired(expired);
                if expired < service.expiry_batch_max() {
                    return total;
                }
            }
            // A full disk was said once, by the store; the sweep resumes with the writing.
            Err(error @ crate::service::ServiceError::NoSpace(_)) => {
                tracing::debug!(%error, "payment-expiry sweep waits for disk space");
                return total;
            }
            Err(error) => {
                tracing::warn!(%error, "payment-expiry sweep failed; retrying next round");
                return total;
            }
        }
    }
}

/// Sweeps every `interval` until `stop` turns true.
pub async fn run(
    service: Arc<Service>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: watch::Receiver<bool>,
) {
    let mut ticker = StoppableTicker::new(interval, stop);
    while ticker.tick().await {
        sweep(&service, &metrics).await;
        match service.return_unreturned().await {
            Ok(_) | Err(crate::service::ServiceError::NoSpace(_)) => {}
            Err(error) => {
                tracing::warn!(%error, "returning unfinished releases failed; retrying next round");
            }
        }
        metrics.record_sweep_round();
    }
}

/// Settles payments every `interval` until `stop` turns true.
pub async fn run_payments(service: Arc<Service>, interval: Duration, stop: watch::Receiver<bool>) {
    let mut ticker = StoppableTicker::new(interval, stop);
    while ticker.tick().await {
        match service.sweep_payments().await {
            Ok(report) if report.paid + report.expired + report.refunded > 0 => {
                tracing::info!(
                    paid = report.paid,
                    expired = report.expired,
                    refunded = report.refunded,
                    failed = report.failed,
                    "payments sweep"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "payments sweep failed; retrying next round"),
        }
    }
}
