//! A cashier's look-up refresh: within a short budget, and with a breaker so that at the start
//! of an outage (before the probe notices) each look-up does not wait out the whole budget.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::SyncEngine;

/// What a look-up's refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupRefresh {
    /// The cache took a new figure.
    Refreshed,
    /// The upstream answered; the cache kept what it had (a send of ours in flight).
    Unchanged,
    /// Not tried: the breaker is open after a look-up ran out of budget.
    Skipped,
    /// Tried and failed, or ran out of budget: the cache answers.
    Failed,
}

impl SyncEngine {
    pub async fn lookup_refresh(&self, customer_id: &str, budget: Duration) -> LookupRefresh {
        let now = self.now();
        if now < self.lookup_paused_until.load(Ordering::Relaxed) {
            return LookupRefresh::Skipped;
        }
        match tokio::time::timeout(budget, self.refresh_customer(customer_id)).await {
            Ok(Ok(true)) => LookupRefresh::Refreshed,
            Ok(Ok(false)) => LookupRefresh::Unchanged,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, customer_id, "look-up refresh failed; answering from the cache");
                LookupRefresh::Failed
            }
            Err(_) => {
                let pause = (self.opts.probe_interval.as_millis() as i64 * 2).max(2_000);
                self.lookup_paused_until
                    .store(now + pause, Ordering::Relaxed);
                LookupRefresh::Failed
            }
        }
    }
}
