//! The outbox's bound: every so often, events older than `events_retention_days` (by the
//! server's clock) are pruned. Every cluster node runs it; pruning twice is harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::{Clock, StoppableTicker};
use crate::store::OrderStore;

const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Prunes once now, then every ten minutes until `stop` turns true.
pub async fn run(
    store: Arc<dyn OrderStore>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    stop: watch::Receiver<bool>,
) {
    let Ok(retention) = jiff::SignedDuration::try_from(retention) else {
        return;
    };
    let mut ticker = StoppableTicker::new(PRUNE_EVERY, stop);
    // The first tick is at once: a restart prunes what expired while it was down.
    while ticker.tick().await {
        if let Ok(before) = clock.now().checked_sub(retention) {
            match store.prune_events(before).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned events past their retention"),
                Err(error) => tracing::warn!(%error, "pruning old events failed; retried later"),
            }
        }
    }
}
