//! The change feed (DESIGN.md §9): after the first fill, the agent asks only for what changed
//! since its watermark — directory changes (`GET /pos/customers?upd_date_time-…`) and the
//! transaction list (`GET /pos/transactions?upd_date_time-…`: every transaction naming a
//! customer may have moved their points). A moved customer is only *marked*; re-reading every
//! one would cost N stores × R changes a second, so re-reads are budgeted: at once when a
//! cashier looks the customer up online, otherwise in the background, oldest mark first.

use crate::store::Meta;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{SyncEngine, SyncError};
use crate::store::{RegisterSaleRow, SeenChange};
use crate::upstream::budget::{Priority, with_priority};
use crate::upstream::{ChangedQuery, TxnQuery};

/// Windows overlap by this much: clock skew between agent and upstream, and changes committed
/// late within a second. Results are de-duplicated by transaction id.
pub const FEED_OVERLAP_MS: i64 = 120_000;
/// Smaregi's window limit is 31 days; older watermarks mean a full pull.
const FEED_MAX_SPAN_MS: i64 = 31 * 24 * 3600 * 1000 - 3_600_000;
/// Pages per list per poll before the poll stops (the rest comes in the next one).
const FEED_MAX_PAGES: u32 = 50;
/// A customer whose re-read did not clear the mark (a send of ours in flight) waits this long.
const REREAD_RETRY: Duration = Duration::from_secs(30);

/// What one poll found.
#[derive(Debug, Clone, Default)]
pub(super) struct FeedPoll {
    pub changed: usize,
    pub newly_marked: usize,
    pub requests: usize,
    /// Register sales seen for the first time.
    pub register_sales: usize,
}

/// The change feed's state, for `status`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct FeedStatus {
    /// Whether the feed can be used (the app has `pos.transactions:read`).
    pub available: bool,
    /// Why not, and what to do, when it cannot.
    pub unavailable_reason: Option<String>,
    /// Every change up to this time (RFC 3339) is in the cache or marked.
    pub watermark: Option<String>,
    pub last_poll_at: Option<String>,
    /// Customers marked changed elsewhere and not re-read yet.
    pub marked: i64,
    /// Age of the oldest such mark, seconds.
    pub oldest_mark_age_s: Option<f64>,
    /// The current polling interval (stretched when the read budget is cut).
    pub interval_s: f64,
}

#[derive(Default)]
pub(super) struct FeedState {
    pub unavailable: Option<String>,
    pub last_poll_at: Option<i64>,
    pub interval: Duration,
    /// Transaction ids already handled, with when: windows overlap.
    seen: HashMap<String, i64>,
    /// Customers whose last re-read did not clear their mark, and when it ran.
    reread_at: HashMap<String, tokio::time::Instant>,
}

impl SyncEngine {
    /// One poll of the feed from the watermark to now. `Ok(None)`: no watermark yet, or one
    /// older than the list's 31-day window — a full pull is due instead.
    pub(super) async fn poll_feed(&self) -> Result<Option<FeedPoll>, SyncError> {
        let Some(wm) = self
            .store
            .meta(Meta::FeedWatermark)
            .await?
            .and_then(|v| v.parse::<i64>().ok())
        else {
            return Ok(None);
        };
        let now = self.now();
        let from_ms = wm - FEED_OVERLAP_MS;
        if now - from_ms > FEED_MAX_SPAN_MS {
            return Ok(None);
        }
        let (from, to) = (
            crate::clock::smaregi_stamp(from_ms),
            crate::clock::smaregi_stamp(now),
        );
        let mut out = FeedPoll::default();
        let mut changes: Vec<SeenChange> = Vec::new();
        let mut registers: Vec<RegisterSaleRow> = Vec::new();
        // The directory: new customers and edits (a point change may move the stamp too).
        let mut page = 1;
        loop {
            let q = ChangedQuery {
                from: from.clone(),
                to: to.clone(),
                page,
            };
            let p = with_priority(Priority::Feed, self.upstream.list_changed_customers(&q)).await?;
            out.requests += 1;
            for c in &p.items {
                if let Some(stamp) = c.updated_at.clone()
                    && let Some(ms) = crate::clock::parse_stamp(&stamp)
                {
                    // A directory stamp cannot tell our own change from another's: only one
                    // strictly newer than the cache's figure marks (a transaction below does
                    // the same-second case, where its id tells whose it is).
                    changes.push(SeenChange {
                        customer_id: c.customer_id.clone(),
                        stamp,
                        stamp_ms: ms,
                        strictly_newer: true,
                    });
                }
            }
            self.store.upsert_customers(p.items).await?;
            if !p.more || page >= FEED_MAX_PAGES {
                break;
            }
            page += 1;
        }
        // The transaction list: a change of points by anyone.
        let mut page = 1;
        loop {
            let q = TxnQuery {
                from: from.clone(),
                to: to.clone(),
                customer_code: None,
                page,
            };
            let p = with_priority(Priority::Feed, self.upstream.list_transactions(&q)).await?;
            out.requests += 1;
            for t in &p.items {
                let (Some(cid), Some(stamp)) = (&t.customer_id, &t.updated_at) else {
                    continue;
                };
                if !t.moves_points() {
                    continue;
                }
                let Some(ms) = crate::clock::parse_stamp(stamp) else {
                    continue;
                };
                if self
                    .feed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .seen
                    .contains_key(&t.id)
                {
                    continue;
                }
                // A send of ours for this customer is unsettled: the transaction may be its own
                // (its id is learnt when the send settles). Left for the next poll, whose
                // window overlaps this one, rather than marked as another store's change.
                if self.store.has_unsettled(cid).await.unwrap_or(true) {
                    continue;
                }
                self.feed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .seen
                    .insert(t.id.clone(), now);
                // Read after the settled check: a send that settled meanwhile has its ids here.
                let own = self
                    .store
                    .own_upstream_txn_ids(cid, 200)
                    .await
                    .unwrap_or_default();
                if own.contains(&t.id) {
                    continue;
                }
                // A register's sale, return or void that moved points: kept to find possible
                // double counts with this store's own grants and redeems (DESIGN.md §14).
                if t.is_register_points() {
                    let sold_at = t.transaction_at.clone();
                    registers.push(RegisterSaleRow {
                        transaction_head_id: t.id.clone(),
                        customer_id: cid.clone(),
                        store_id: t.store_id.clone(),
                        kind: if t.cancelled {
                            "void"
                        } else if t.is_return {
                            "return"
                        } else {
                            "sale"
                        },
                        new_point: t.new_point,
                        spend_point: t.spend_point,
                        sold_ms: sold_at
                            .as_deref()
                            .and_then(crate::clock::parse_stamp)
                            .unwrap_or(ms),
                        sold_at,
                        upd_ms: ms,
                    });
                }
                changes.push(SeenChange {
                    customer_id: cid.clone(),
                    stamp: stamp.clone(),
                    stamp_ms: ms,
                    strictly_newer: false,
                });
            }
            if !p.more || page >= FEED_MAX_PAGES {
                break;
            }
            page += 1;
        }
        out.changed = changes.len();
        out.register_sales = self.store.record_register_sales(registers, now).await?;
        out.newly_marked = self.store.mark_changed(changes, now).await?;
        // Possible double counts: a pointsd grant may come after the register sale, so they
        // are counted on every poll, not only when a register sale arrives. Register sales
        // that can no longer pair with anything are dropped first.
        let window_ms = self.opts.double_window.as_millis() as i64;
        if let Err(e) = self.store.prune_register_sales(window_ms, now).await {
            tracing::warn!(error = %e, "could not drop register sales that cannot make a double");
        }
        match self
            .store
            .possible_doubles(self.opts.double_window.as_millis() as i64, now)
            .await
        {
            Ok(d) => {
                let n = d.len() as i64;
                let before = self.doubles.swap(n, std::sync::atomic::Ordering::Relaxed);
                if n > before {
                    tracing::warn!(
                        possible_double_counts = n,
                        "a register sale and a pointsd operation may have counted the same purchase twice; see GET /v1/reconcile/doubles"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not count possible double counts"),
        }
        // Advanced only now that the window's changes are stored.
        self.store
            .set_meta(Meta::FeedWatermark, now.to_string())
            .await?;
        {
            let mut fs = self
                .feed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            fs.last_poll_at = Some(now);
            let keep_after = now - 4 * FEED_OVERLAP_MS;
            fs.seen.retain(|_, at| *at >= keep_after);
        }
        if out.newly_marked > 0 {
            self.reread_wake.notify_one();
        }
        Ok(Some(out))
    }

    /// Re-reads marked customers in the background, oldest mark first, at the re-read
    /// priority (after pushes, look-ups and the feed itself).
    pub(super) async fn reread_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let idle = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.reread_some() => r,
            };
            if idle {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.reread_wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        tracing::debug!("re-read worker stopped");
    }

    /// Re-reads up to a batch; true when there was nothing (or nothing possible) to do.
    async fn reread_some(&self) -> bool {
        if !self.health.is_online() || self.health.pause_remaining_ms().is_some() {
            return true;
        }
        let Ok(ids) = self.store.marked_customers(50).await else {
            return true;
        };
        let due: Vec<String> = {
            let mut fs = self
                .feed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            fs.reread_at
                .retain(|_, at| now.duration_since(*at) < REREAD_RETRY);
            ids.into_iter()
                .filter(|id| !fs.reread_at.contains_key(id))
                .take(10)
                .collect()
        };
        if due.is_empty() {
            return true;
        }
        let spacing = Duration::from_secs_f64(1.0 / self.opts.reread_per_second.max(0.01));
        for id in due {
            let started = tokio::time::Instant::now();
            let r = with_priority(Priority::Reread, self.refresh_customer(&id)).await;
            let still_marked = matches!(
                self.store.customer(&id).await,
                Ok(Some(c)) if c.marked_at.is_some()
            );
            if still_marked {
                self.feed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .reread_at
                    .insert(id.clone(), tokio::time::Instant::now());
            }
            if let Err(e) = r {
                tracing::debug!(error = %e, customer_id = %id, "background re-read failed");
                return true;
            }
            // Re-reads are what a chain's size multiplies (every store re-reads every other
            // store's changes): they keep to their own small rate, whatever the budget has.
            tokio::time::sleep_until(started + spacing).await;
        }
        false
    }

    /// The feed's state for `status`.
    pub async fn feed_status(&self) -> FeedStatus {
        let (marked, oldest) = self.store.marked_stats().await.unwrap_or((0, None));
        let wm = self
            .store
            .meta(Meta::FeedWatermark)
            .await
            .ok()
            .flatten()
            .and_then(|v| v.parse::<i64>().ok());
        let now = self.now();
        let fs = self
            .feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        FeedStatus {
            available: fs.unavailable.is_none(),
            unavailable_reason: fs.unavailable.clone(),
            watermark: wm.map(crate::clock::rfc3339),
            last_poll_at: fs.last_poll_at.map(crate::clock::rfc3339),
            marked,
            oldest_mark_age_s: oldest.map(|t| ((now - t).max(0) as f64) / 1000.0),
            interval_s: fs.interval.as_secs_f64(),
        }
    }
}
