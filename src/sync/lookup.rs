//! A cashier's look-up refresh: within a short budget, never queued behind the rate limit,
//! coalesced per customer, and with a breaker so that at the start of an outage (before the
//! probe notices) each look-up does not wait out the whole budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::SyncEngine;
use crate::upstream::budget::{Budget, Class};

/// What a look-up's refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupRefresh {
    /// The cache took a new figure.
    Refreshed,
    /// The upstream answered; the cache kept what it had (a send of ours in flight).
    Unchanged,
    /// Not tried: the breaker is open after a look-up ran out of budget, the upstream asked
    /// for a pause, or the agent's share of the contract's reads is spoken for this instant.
    Skipped,
    /// Tried and failed, or ran out of budget: the cache answers.
    Failed,
}

/// Refreshes in flight by customer id; each waiter watches for the leader's outcome.
pub(super) type InFlight = Mutex<HashMap<String, watch::Receiver<Option<LookupRefresh>>>>;

/// Removes the leader's entry however its refresh ends (a register that hangs up cancels it).
struct Leader<'a> {
    map: &'a InFlight,
    id: String,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.id);
        }
    }
}

impl SyncEngine {
    pub async fn lookup_refresh(&self, customer_id: &str, budget: Duration) -> LookupRefresh {
        let now = self.now();
        if now < self.lookup_paused_until.load(Ordering::Relaxed)
            || self.health.pause_remaining_ms().is_some()
        {
            return LookupRefresh::Skipped;
        }
        // Join a refresh of the same customer already on its way.
        let joined = {
            let Ok(mut m) = self.lookups_in_flight.lock() else {
                return LookupRefresh::Skipped;
            };
            match m.get(customer_id) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    m.insert(customer_id.to_string(), rx);
                    Ok(tx)
                }
            }
        };
        let tx = match joined {
            Ok(tx) => tx,
            Err(mut rx) => {
                return match tokio::time::timeout(budget, rx.wait_for(Option::is_some)).await {
                    Ok(Ok(v)) => v.unwrap_or(LookupRefresh::Failed),
                    _ => LookupRefresh::Failed,
                };
            }
        };
        let _leader = Leader {
            map: &self.lookups_in_flight,
            id: customer_id.to_string(),
        };
        let out = self.lead_refresh(customer_id, budget, now).await;
        let _ = tx.send(Some(out));
        out
    }

    async fn lead_refresh(&self, customer_id: &str, budget: Duration, now: i64) -> LookupRefresh {
        // Only with a read slot free now: a look-up never queues behind the contract's limit.
        let refresh = async {
            match &self.opts.budget {
                Some(b) if !b.try_acquire(Class::Read).await => None,
                Some(_) => Some(Budget::prepaid(self.refresh_customer(customer_id)).await),
                None => Some(self.refresh_customer(customer_id).await),
            }
        };
        match tokio::time::timeout(budget, refresh).await {
            Ok(None) => LookupRefresh::Skipped,
            Ok(Some(Ok(true))) => LookupRefresh::Refreshed,
            Ok(Some(Ok(false))) => LookupRefresh::Unchanged,
            Ok(Some(Err(e))) => {
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
