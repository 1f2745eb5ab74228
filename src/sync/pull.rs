//! The pull worker: the link probe, the full refresh (the first fill and the rare safety
//! net; it resumes after a 429 instead of starting over) and the change feed in between.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{REPORT_ITEMS, ReconcileReport, SyncEngine};

impl SyncEngine {
    pub(super) async fn pull_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next_full = tokio::time::Instant::now();
        let mut probe = tokio::time::interval(self.opts.probe_interval);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Set when the link came back while the cache already held a full directory.
        let mut backlog_first_since: Option<tokio::time::Instant> = None;
        // The return of the link is seen as a change of this flag, not only through the
        // `back_online` wake-up: that one is missed when this loop's own probe notices it.
        let mut was_online = self.health.is_online();
        loop {
            // After an outage the store's own queued transactions go upstream first: a full
            // refresh (2,000 requests for a million customers) would share their rate limit,
            // while a look-up still refreshes the one customer at the till. The refresh follows
            // once the queue is empty, or after `pull_interval` at most. Waiting goes through
            // the select below, so the link keeps being probed meanwhile.
            let now = tokio::time::Instant::now();
            let defer = match backlog_first_since {
                Some(since) if now >= next_full => {
                    since.elapsed() < self.opts.pull_interval
                        && self.health.is_online()
                        && self.backlog().await
                }
                _ => false,
            };
            if defer {
                next_full = now + Duration::from_secs(1);
            } else if now >= next_full {
                backlog_first_since = None;
                let ok = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = self.full_refresh() => r,
                };
                was_online = self.health.is_online();
                next_full = tokio::time::Instant::now()
                    + if ok {
                        self.opts.pull_interval
                    } else {
                        // Try again soon; the probe will tell when the link is back.
                        self.opts.probe_interval.max(Duration::from_secs(5))
                    };
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next_full) => {}
                _ = self.refresh_now.notified() => {
                    next_full = tokio::time::Instant::now();
                    backlog_first_since = None;
                }
                _ = self.health.back_online.notified() => {}
                _ = probe.tick() => {
                    let quiet_for = self.health.snapshot().last_ok_at.map(|t| self.now() - t);
                    let due = quiet_for.is_none_or(|q| q >= self.opts.probe_interval.as_millis() as i64);
                    if due && self.health.pause_remaining_ms().is_none() {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            r = self.upstream.probe() => {
                                if let Err(e) = r { tracing::debug!(error = %e, "probe failed"); }
                            }
                        }
                    }
                }
            }
            let online = self.health.is_online();
            if online && !was_online {
                next_full = tokio::time::Instant::now();
                if matches!(self.store.meta("last_full_refresh_at").await, Ok(Some(_))) {
                    backlog_first_since = Some(next_full);
                }
            }
            was_online = online;
        }
        tracing::debug!("pull worker stopped");
    }

    /// Whether transactions are waiting to go upstream (errors count as "no": the refresh
    /// then runs as it would have).
    async fn backlog(&self) -> bool {
        self.store.has_open().await.unwrap_or(false)
    }

    /// Refreshes the customer directory and every balance. Returns false if it did not finish.
    pub async fn full_refresh(&self) -> bool {
        match self.refresh_and_reconcile().await {
            Ok(r) => {
                tracing::info!(
                    customers = r.customers,
                    balances = r.checked,
                    discrepancies = r.discrepancies,
                    "full refresh done"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "full refresh failed; the cache keeps its last figures");
                false
            }
        }
    }

    /// A full refresh that also reconciles: every customer whose upstream balance differs from
    /// the figure the cache last confirmed (with nothing of ours in flight) is reported. The
    /// report is kept as `last_reconcile`; nothing is ever corrected upstream (DESIGN.md §2.5).
    pub async fn refresh_and_reconcile(&self) -> Result<ReconcileReport, String> {
        let _one_at_a_time = self.refresh_lock.lock().await;
        // Honour a Retry-After pause the upstream asked for, rather than earn another 429.
        if let Some(ms) = self.health.pause_remaining_ms() {
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        }
        let started_rev = self
            .store
            .apply_counter()
            .await
            .map_err(|e| e.to_string())?;
        // Balances first: they are what a register needs; names and codes follow.
        let mut checked = 0;
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let p = self
                .upstream
                .list_balances(page)
                .await
                .map_err(|e| e.to_string())?;
            checked += p.items.len();
            let (_, diffs) = self
                .store
                .upsert_balances(p.items, started_rev, self.now())
                .await
                .map_err(|e| e.to_string())?;
            items.extend(diffs);
            if !p.more {
                break;
            }
            page += 1;
        }
        let mut customers = 0;
        page = 1;
        loop {
            let p = self
                .upstream
                .list_customers(page)
                .await
                .map_err(|e| e.to_string())?;
            customers += p.items.len();
            self.store
                .upsert_customers(p.items)
                .await
                .map_err(|e| e.to_string())?;
            if !p.more {
                break;
            }
            page += 1;
        }
        let now = self.now();
        let report = ReconcileReport {
            ran_at: crate::clock::rfc3339(now),
            customers,
            checked,
            discrepancies: items.len(),
            items: items.into_iter().take(REPORT_ITEMS).collect(),
        };
        if report.discrepancies > 0 {
            tracing::warn!(
                count = report.discrepancies,
                "upstream balances differ from the figures this store last confirmed (changed elsewhere, or lost); see `pointsd reconcile`"
            );
        }
        let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        self.store
            .set_meta("last_reconcile", json)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .set_meta("last_full_refresh_at", now.to_string())
            .await
            .map_err(|e| e.to_string())?;
        Ok(report)
    }

    /// Refreshes one customer from upstream (look-up while online). Errors are the caller's
    /// to ignore: the cache answers instead.
    pub async fn refresh_customer(&self, customer_id: &str) -> Result<bool, String> {
        let started_rev = self
            .store
            .apply_counter()
            .await
            .map_err(|e| e.to_string())?;
        match self.upstream.get_balance(customer_id).await {
            Ok(Some(b)) => self
                .store
                .upsert_balances(vec![b], started_rev, self.now())
                .await
                .map(|(n, _)| n > 0)
                .map_err(|e| e.to_string()),
            Ok(None) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}
