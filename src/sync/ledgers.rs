//! A Smapify merchant's two ledgers (DESIGN.md §12): easyPoints read on a cashier's look-up
//! (its balance and inactivity expiry, cached), and the cross-ledger report — customers whose
//! Smaregi and easyPoints balances differ once this store's in-flight deltas and Smapify's
//! settle time are accounted for. Read only: nothing is written to easyPoints, and nothing is
//! corrected anywhere; the report is what a merchant sends to support.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::SyncEngine;
use crate::clock::SharedClock;
use crate::store::{CustomerRow, EasyPointsRead, Meta, RecentDelta, Store, StoreError};
use crate::upstream::easypoints::{EasyPoints, EasyPointsError};

/// Customers one report compares at most (the most recently active first).
const REPORT_CUSTOMERS: usize = 200;
/// Recent deltas listed per differing customer.
const REPORT_DELTAS: usize = 10;

/// One customer whose two ledgers differ.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerDifference {
    pub customer_id: String,
    pub shopify_customer_id: String,
    pub smaregi: i64,
    pub easypoints: i64,
    /// `smaregi - easypoints`.
    pub difference: i64,
    /// RFC 3339: the first report that saw this difference (it has lasted since).
    pub first_seen_at: String,
    /// This store's transactions for the customer in the report window, newest first.
    pub recent_deltas: Vec<RecentDelta>,
}

/// The cross-ledger report (a contract: `run_at`, `compared`, `differences`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerReport {
    pub run_at: String,
    /// Customers whose two balances were compared.
    pub compared: usize,
    pub differences: Vec<LedgerDifference>,
    /// Customers looked up or written in the window (at most 200 are taken).
    pub candidates: usize,
    /// Skipped: a transaction of this store is still on its way to Smaregi.
    pub in_flight: usize,
    /// Differing for less than `easypoints.settle_s`: Smapify may still be carrying a change.
    pub settling: usize,
    /// Skipped: the member code is no Shopify id, easyPoints has no balance, or a read failed.
    pub not_compared: usize,
    pub settle_s: u64,
    pub window_days: u64,
    /// Whether Smapify carries this store's changes (checked with every report).
    pub smapify: Option<SmapifyCheck>,
}

/// What `status` and `doctor` say when Smapify is not carrying this store's changes.
pub const SMAPIFY_NOT_CARRYING: &str =
    "changes to Smaregi are not reaching easyPoints — is Smapify's point sync on?";

/// How far back the Smapify check looks for this store's applied changes.
const SMAPIFY_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// Whether Smapify carries this store's changes to easyPoints: the latest of this store's
/// deltas applied to Smaregi in the last day and older than the settle time, against the
/// allotments easyPoints lists with `app_reference: "Smapify"` since then (allotments name no
/// customer, so any Smapify allotment counts: Smapify is running).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SmapifyCheck {
    /// `null`: nothing to judge by (no change of this store old enough).
    pub carrying: Option<bool>,
    pub checked_at: String,
    /// This store's changes the check looked for.
    pub deltas: usize,
    /// Smapify allotments easyPoints lists since the latest of them.
    pub smapify_allotments: usize,
    /// Set when `carrying` is false: what to do.
    pub warning: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    EasyPoints(#[from] EasyPointsError),
}

/// The easyPoints side of the agent.
pub struct Ledgers {
    client: EasyPoints,
    store: Store,
    clock: SharedClock,
    sync: Arc<SyncEngine>,
    /// Look-ups skip easyPoints until then (unix ms) after one ran out of budget, so an
    /// easyPoints outage costs one look-up a wait, not every one.
    paused_until: AtomicI64,
    /// One report at a time.
    running: tokio::sync::Mutex<()>,
}

impl Ledgers {
    pub fn new(
        client: EasyPoints,
        store: Store,
        clock: SharedClock,
        sync: Arc<SyncEngine>,
    ) -> Arc<Ledgers> {
        Arc::new(Ledgers {
            client,
            store,
            clock,
            sync,
            paused_until: AtomicI64::new(0),
            running: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settle(&self) -> Duration {
        self.client.settings().settle
    }

    /// Reads the customer's easyPoints balance within `budget` and caches it, unless it was
    /// read less than `fresh_for` ago. True when the cache took a new figure. Whatever
    /// happens, the look-up answers: a failure only leaves the last figure in place.
    pub async fn lookup_refresh(
        &self,
        c: &CustomerRow,
        budget: Duration,
        fresh_for: Duration,
    ) -> bool {
        let now = self.clock.now_ms();
        if c.easypoints
            .as_ref()
            .is_some_and(|e| now - e.read_at < fresh_for.as_millis() as i64)
            || now < self.paused_until.load(Ordering::Relaxed)
        {
            return false;
        }
        let Some(shopify_id) = c
            .code
            .as_deref()
            .and_then(|code| self.client.settings().shopify_id(code))
        else {
            return false;
        };
        match tokio::time::timeout(budget, self.read(&c.customer_id, &shopify_id)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, customer_id = %c.customer_id, "easyPoints read failed; answering with the last figure");
                false
            }
            Err(_) => {
                self.paused_until.store(now + 5_000, Ordering::Relaxed);
                tracing::debug!(customer_id = %c.customer_id, "easyPoints did not answer within the look-up budget");
                false
            }
        }
    }

    /// One easyPoints read, cached (a 404 is cached as "no balance").
    async fn read(&self, customer_id: &str, shopify_id: &str) -> Result<(), ReadError> {
        let read = match self.client.point_balance(shopify_id).await {
            Ok(b) => EasyPointsRead {
                shopify_id: shopify_id.to_string(),
                balance: Some(b.point_balance),
                expires_at: b.expires_at,
                expiration_delay: b.expiration_delay,
            },
            Err(EasyPointsError::NotFound(_)) => EasyPointsRead {
                shopify_id: shopify_id.to_string(),
                balance: None,
                expires_at: None,
                expiration_delay: None,
            },
            Err(e) => return Err(ReadError::EasyPoints(e)),
        };
        self.store
            .put_easypoints(customer_id, read, self.clock.now_ms())
            .await?;
        Ok(())
    }

    /// Runs the cross-ledger report now and keeps it as the last one.
    pub async fn run_report(&self) -> Result<LedgerReport, LedgerError> {
        let _one = self.running.lock().await;
        let s = self.client.settings();
        let now = self.clock.now_ms();
        let settle_ms = s.settle.as_millis() as i64;
        let since = now - s.report_window.as_millis() as i64;
        let ids = self
            .store
            .ledger_candidates(since, REPORT_CUSTOMERS)
            .await?;
        let mut report = LedgerReport {
            run_at: crate::clock::rfc3339(now),
            compared: 0,
            differences: Vec::new(),
            candidates: ids.len(),
            in_flight: 0,
            settling: 0,
            not_compared: 0,
            settle_s: s.settle.as_secs(),
            window_days: s.report_window.as_secs() / 86_400,
            smapify: None,
        };
        for id in ids {
            let Some(c) = self.store.customer(&id).await? else {
                report.not_compared += 1;
                continue;
            };
            let Some(shopify_id) = c.code.as_deref().and_then(|code| s.shopify_id(code)) else {
                report.not_compared += 1;
                continue;
            };
            // Our own deltas on their way: Smaregi may or may not have them yet.
            let activity = self.store.ledger_activity(&id).await?;
            if activity.open > 0 {
                report.in_flight += 1;
                continue;
            }
            let Some(smaregi) = self.sync.upstream().get_balance(&id).await.ok().flatten() else {
                report.not_compared += 1;
                continue;
            };
            let ep = self.client.point_balance(&shopify_id).await;
            // The report takes at most half of easyPoints' budget: a cashier's look-up must
            // still find a slot within its own short budget.
            tokio::time::sleep(Duration::from_secs_f64(
                1.0 / f64::from(s.max_requests_per_second.max(1)),
            ))
            .await;
            let ep = match ep {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, customer_id = %id, "easyPoints read failed; customer not compared");
                    report.not_compared += 1;
                    continue;
                }
            };
            self.store
                .put_easypoints(
                    &id,
                    EasyPointsRead {
                        shopify_id: shopify_id.clone(),
                        balance: Some(ep.point_balance),
                        expires_at: ep.expires_at.clone(),
                        expiration_delay: ep.expiration_delay,
                    },
                    self.clock.now_ms(),
                )
                .await?;
            report.compared += 1;
            let differs = smaregi.point != ep.point_balance;
            let first_seen = self.store.mark_ledger_difference(&id, differs, now).await?;
            // A change on its way through Smapify (ours, or an online order going the other
            // way) is a difference for a while: only one that has lasted the settle time is
            // listed. Which side moved last cannot be told: easyPoints' allotments do not name
            // the customer.
            let Some(first_seen) = first_seen.filter(|_| differs) else {
                continue;
            };
            // IT runs the report once and must get the answer: the settle time also counts
            // from this store's own last delta reaching Smaregi (Smapify has had its time to
            // carry it), not only from the first report that saw the difference.
            let settled_since_ours = activity
                .last_applied_at
                .is_some_and(|t| now - t >= settle_ms);
            if now - first_seen < settle_ms && !settled_since_ours {
                report.settling += 1;
                continue;
            }
            report.differences.push(LedgerDifference {
                recent_deltas: self.store.recent_deltas(&id, since, REPORT_DELTAS).await?,
                customer_id: id,
                shopify_customer_id: shopify_id,
                smaregi: smaregi.point,
                easypoints: ep.point_balance,
                difference: smaregi.point - ep.point_balance,
                first_seen_at: crate::clock::rfc3339(first_seen),
            });
        }
        report.smapify = match self.check_smapify().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "the Smapify check could not run with the report");
                None
            }
        };
        if !report.differences.is_empty() {
            tracing::warn!(
                customers = report.differences.len(),
                "Smaregi and easyPoints balances differ beyond Smapify's settle time; see `pointsd reconcile --ledgers`"
            );
        }
        let json = serde_json::to_string(&report).expect("plain struct serializes");
        self.store.set_meta(Meta::LastLedgerReport, json).await?;
        Ok(report)
    }

    /// The last report kept, if one has run.
    pub async fn last_report(&self) -> Result<Option<LedgerReport>, StoreError> {
        Ok(self
            .store
            .meta(Meta::LastLedgerReport)
            .await?
            .and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Checks that Smapify carries this store's changes (see [`SmapifyCheck`]) and keeps the
    /// verdict for `status` and `doctor`.
    pub async fn check_smapify(&self) -> Result<SmapifyCheck, LedgerError> {
        let now = self.clock.now_ms();
        let settle = self.settle().as_millis() as i64;
        let ours = self
            .store
            .applied_between(now - SMAPIFY_LOOKBACK_MS, now - settle, 1_000)
            .await?;
        let mut check = SmapifyCheck {
            carrying: None,
            checked_at: crate::clock::rfc3339(now),
            deltas: ours.len(),
            smapify_allotments: 0,
            warning: None,
        };
        if let Some(last) = ours.last() {
            // Smapify carries in order: once the latest of our settled changes has arrived,
            // so have the others. A little before it, for the two clocks' skew.
            let after = crate::clock::rfc3339(last - 2_000);
            for page in 1..=4 {
                let items = self.client.allotments(Some(&after), page).await?;
                check.smapify_allotments += items
                    .iter()
                    .filter(|a| a.app_reference.as_deref() == Some("Smapify"))
                    .count();
                if check.smapify_allotments > 0
                    || items.len() < crate::upstream::easypoints::MAX_PER_PAGE as usize
                {
                    break;
                }
            }
            let carrying = check.smapify_allotments > 0;
            check.carrying = Some(carrying);
            if !carrying {
                check.warning = Some(SMAPIFY_NOT_CARRYING.into());
                tracing::warn!(
                    deltas = check.deltas,
                    "{SMAPIFY_NOT_CARRYING} (no Smapify allotment in easyPoints since this store's last settled change)"
                );
            }
        }
        let json = serde_json::to_string(&check).expect("plain struct serializes");
        self.store.set_meta(Meta::SmapifyCheck, json).await?;
        Ok(check)
    }

    /// The last Smapify check kept, if one has run.
    pub async fn last_smapify_check(&self) -> Result<Option<SmapifyCheck>, StoreError> {
        Ok(self
            .store
            .meta(Meta::SmapifyCheck)
            .await?
            .and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// The Smapify check, every `every` until `shutdown` (one easyPoints request a time at
    /// most, and none while this store has written nothing).
    pub async fn smapify_loop(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.check_smapify().await {
                tracing::debug!(error = %e, "the Smapify check could not run; it runs again later");
            }
        }
    }

    /// The periodic report (`easypoints.report_interval_s`), until `shutdown`.
    pub async fn report_loop(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.run_report().await {
                tracing::warn!(error = %e, "the cross-ledger report could not run; it runs again at the next interval");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    EasyPoints(EasyPointsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
