//! The pull worker: the link probe, the full refresh (the first fill and the rare safety
//! net; it resumes after a 429 instead of starting over) and the change feed in between.

use crate::store::Meta;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{REPORT_ITEMS, ReconcileReport, SyncEngine, SyncError};
use crate::upstream::budget::{Priority, with_priority};

/// Without the change feed (no `pos.transactions:read`), full pulls run this often.
const LEGACY_FULL_INTERVAL: Duration = Duration::from_secs(300);
/// Transient failures in a row after which a reconcile gives up.
const FULL_MAX_FAILURES: u32 = 8;

/// Where a full pull is: it resumes here after a failure instead of starting over.
#[derive(Debug, Default)]
pub(super) struct FullPull {
    /// 0 = not started.
    page: u32,
    balances_done: bool,
    started_at: i64,
    started_rev: i64,
    checked: usize,
    customers: usize,
    items: Vec<crate::store::Discrepancy>,
    /// The first fill (an empty cache: nobody can be looked up offline) goes at the feed's
    /// priority; the rare safety-net pull at the full pulls' low share.
    priority: Priority,
}

impl SyncEngine {
    pub(super) async fn pull_loop(self: Arc<Self>, shutdown: CancellationToken) {
        use tokio::time::Instant;
        let mut probe = tokio::time::interval(self.opts.probe_interval);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // A full pull in progress: it resumes here after a failure.
        let mut full = FullPull::default();
        let mut full_failures = 0u32;
        // The first fill (no watermark, or none we can use) starts at once; later ones follow
        // the full-refresh interval from the last one, spread per store.
        let mut next_full = match self.last_full_age().await {
            Some(age) if self.has_watermark().await => {
                Instant::now() + self.full_interval().saturating_sub(age)
            }
            _ => Instant::now(),
        };
        let mut next_feed = Instant::now();
        // Set when the link came back: the store's own queue drains before a full pull.
        let mut backlog_first_since: Option<Instant> = None;
        let mut was_online = self.health.is_online();
        loop {
            let now = Instant::now();
            let defer = match backlog_first_since {
                Some(since) if now >= next_full && full.page == 0 => {
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
                let r = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = self.full_pull_step(&mut full) => r,
                };
                match r {
                    Ok(rep) => {
                        full_failures = 0;
                        tracing::info!(
                            customers = rep.customers,
                            balances = rep.checked,
                            discrepancies = rep.discrepancies,
                            "full refresh done"
                        );
                        next_full = Instant::now() + self.full_interval();
                        next_feed = Instant::now();
                    }
                    Err(e) => {
                        full_failures += 1;
                        // Resume from the same page after the pause (or a short backoff);
                        // starting over would livelock a chain on the contract's limit.
                        let wait = e.retry_after().unwrap_or_else(|| {
                            self.opts.probe_interval.max(Duration::from_secs(1))
                                * full_failures.min(5)
                        });
                        tracing::warn!(error = %e, page = full.page, retry_in_ms = wait.as_millis() as u64,
                            "full refresh interrupted; it resumes where it stopped");
                        next_full = Instant::now() + wait;
                    }
                }
                was_online = self.health.is_online();
            } else if now >= next_feed && self.health.is_online() {
                let r = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = self.poll_feed() => r,
                };
                let interval = self.feed_interval();
                next_feed = Instant::now() + interval;
                match r {
                    Ok(Some(p)) => {
                        tracing::debug!(
                            changed = p.changed,
                            marked = p.newly_marked,
                            requests = p.requests,
                            "change feed polled"
                        );
                        {
                            let mut fs = self
                                .feed
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            fs.unavailable = None;
                            fs.interval = interval;
                        }
                        // More marked than a full pull costs: pull in full instead — but no
                        // more often than the background re-reads would have spent as many
                        // requests. Marks pile up by design (a store sees the whole chain's
                        // changes and re-reads a few a second), so without that spacing every
                        // store of a busy chain would pull in full at every poll: 50 stores
                        // × 400 pages for 200,000 members is more than the contract has.
                        if let Ok((marked, _)) = self.store.marked_stats().await
                            && let Ok(n) = self.store.customer_count().await
                            && let cost = 2 * (n / 1000 + 1)
                            && marked > cost
                            && full.page == 0
                            && self.last_full_age().await.is_none_or(|age| {
                                age.as_secs_f64()
                                    >= cost as f64 / self.opts.reread_per_second.max(0.01)
                            })
                        {
                            tracing::info!(
                                marked,
                                "more customers changed than a full pull costs; pulling in full"
                            );
                            next_full = Instant::now();
                        }
                    }
                    Ok(None) => next_full = Instant::now().min(next_full),
                    Err(SyncError::Upstream(
                        e @ crate::upstream::UpstreamError::MissingScope { .. },
                    )) => {
                        let first = self
                            .feed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .unavailable
                            .is_none();
                        if first {
                            tracing::warn!(error = %e, "no change feed: falling back to full pulls every {} s", LEGACY_FULL_INTERVAL.as_secs());
                        }
                        self.feed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .unavailable = Some(e.to_string());
                        next_full = next_full.min(Instant::now() + LEGACY_FULL_INTERVAL);
                        next_feed = Instant::now() + LEGACY_FULL_INTERVAL;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "change feed poll failed");
                        next_feed =
                            Instant::now() + self.opts.probe_interval.max(Duration::from_secs(2));
                    }
                }
            }
            let wake = next_full.min(next_feed);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.refresh_now.notified() => {
                    next_full = Instant::now();
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
                // The feed covers the outage from its watermark; a full pull in progress
                // resumes after the store's own queue has drained.
                next_feed = Instant::now();
                let no_feed = self
                    .feed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .unavailable
                    .is_some();
                if full.page > 0 || no_feed {
                    next_full = Instant::now();
                    if matches!(self.store.meta(Meta::LastFullRefreshAt).await, Ok(Some(_))) {
                        backlog_first_since = Some(next_full);
                    }
                }
            }
            was_online = online;
        }
        tracing::debug!("pull worker stopped");
    }

    async fn last_full_age(&self) -> Option<Duration> {
        let at = self
            .store
            .meta(Meta::LastFullRefreshAt)
            .await
            .ok()
            .flatten()?
            .parse::<i64>()
            .ok()?;
        Some(Duration::from_millis((self.now() - at).max(0) as u64))
    }

    async fn has_watermark(&self) -> bool {
        matches!(self.store.meta(Meta::FeedWatermark).await, Ok(Some(_)))
    }

    /// The full-pull interval: the configured one with the feed, the old pull interval
    /// without it; plus this store's share of a tenth of it, so a chain spreads out.
    fn full_interval(&self) -> Duration {
        let base = if self
            .feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unavailable
            .is_some()
        {
            LEGACY_FULL_INTERVAL.min(self.opts.full_refresh_interval)
        } else {
            self.opts.full_refresh_interval
        };
        let h = self
            .opts
            .jitter_key
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
        base + base.mul_f64((h % 1000) as f64 / 10_000.0)
    }

    /// The feed's interval, stretched while the read budget is cut (it cannot carry more).
    fn feed_interval(&self) -> Duration {
        let stretch = self
            .opts
            .budget
            .as_ref()
            .map(|b| b.stretch(crate::upstream::budget::Class::Read))
            .unwrap_or(1.0);
        self.opts.pull_interval.mul_f64(stretch)
    }

    /// Whether transactions are waiting to go upstream (errors count as "no": the refresh
    /// then runs as it would have).
    async fn backlog(&self) -> bool {
        self.store.has_open().await.unwrap_or(false)
    }

    /// A full refresh that also reconciles: every customer whose upstream balance differs from
    /// the figure the cache last confirmed (with nothing of ours in flight) is reported. The
    /// report is kept as `last_reconcile`; nothing is ever corrected upstream (DESIGN.md §2.5).
    /// A 429 or 5xx on page 57 of 400 waits (the pause the upstream asked for, or a short
    /// backoff) and resumes at page 57; it gives up after [`FULL_MAX_FAILURES`] in a row.
    pub async fn refresh_and_reconcile(&self) -> Result<ReconcileReport, SyncError> {
        let mut st = FullPull::default();
        let mut failures = 0;
        loop {
            match self.full_pull_step(&mut st).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_transient() && failures + 1 < FULL_MAX_FAILURES => {
                    failures += 1;
                    let wait = e
                        .retry_after()
                        .unwrap_or(Duration::from_millis(500 * failures as u64));
                    tracing::info!(error = %e, page = st.page, "full refresh paused; resuming where it stopped");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs (or resumes) a full pull until it finishes or a request fails; `st` keeps the
    /// place, so the next call goes on from the page that failed.
    async fn full_pull_step(&self, st: &mut FullPull) -> Result<ReconcileReport, SyncError> {
        let _one_at_a_time = self.refresh_lock.lock().await;
        if let Some(ms) = self.health.pause_remaining_ms() {
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        }
        if st.page == 0 {
            st.page = 1;
            let filled = self.store.meta(Meta::LastFullRefreshAt).await?.is_some();
            st.priority = if filled {
                Priority::Full
            } else {
                Priority::Feed
            };
            st.started_at = self.now();
            st.started_rev = self.store.apply_counter().await?;
        }
        // Balances first: they are what a register needs; names and codes follow.
        while !st.balances_done {
            let p = with_priority(st.priority, self.upstream.list_balances(st.page)).await?;
            st.checked += p.items.len();
            let (_, diffs) = self
                .store
                .upsert_balances(p.items, st.started_rev, self.now())
                .await?;
            st.items.extend(diffs);
            if p.more {
                st.page += 1;
            } else {
                st.balances_done = true;
                st.page = 1;
            }
        }
        loop {
            let p = with_priority(st.priority, self.upstream.list_customers(st.page)).await?;
            st.customers += p.items.len();
            self.store.upsert_customers(p.items).await?;
            if !p.more {
                break;
            }
            st.page += 1;
        }
        let now = self.now();
        let st = std::mem::take(st);
        let report = ReconcileReport {
            ran_at: crate::clock::rfc3339(now),
            customers: st.customers,
            checked: st.checked,
            discrepancies: st.items.len(),
            items: st.items.into_iter().take(REPORT_ITEMS).collect(),
        };
        if report.discrepancies > 0 {
            tracing::warn!(
                count = report.discrepancies,
                "upstream balances differ from the figures this store last confirmed (changed elsewhere, or lost); see `pointsd reconcile`"
            );
        }
        let json = serde_json::to_string(&report).unwrap_or_default();
        self.store.set_meta(Meta::LastReconcile, json).await?;
        self.store
            .set_meta(Meta::LastFullRefreshAt, now.to_string())
            .await?;
        // The feed goes on from the start of this pull: everything before is in the cache.
        if self
            .store
            .meta(Meta::FeedWatermark)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            self.store
                .set_meta(Meta::FeedWatermark, st.started_at.to_string())
                .await?;
        }
        Ok(report)
    }

    /// Refreshes one customer from upstream (a look-up, a re-read). `Ok(true)` when the cache
    /// took the figure. Errors are the caller's to ignore: the cache answers instead.
    pub async fn refresh_customer(&self, customer_id: &str) -> Result<bool, SyncError> {
        let started_rev = self.store.apply_counter().await?;
        match self.upstream.get_balance(customer_id).await? {
            Some(b) => {
                let (n, _) = self
                    .store
                    .upsert_balances(vec![b], started_rev, self.now())
                    .await?;
                Ok(n > 0)
            }
            None => Ok(false),
        }
    }
}
