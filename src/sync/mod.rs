//! The sync engine: the push worker (outbox → upstream, per-customer order, retry, read-back
//! of ambiguous sends) and the pull worker (upstream → cache, periodic, plus a link probe).
//!
//! Every state change is one SQLite write through the store, so a restart resumes exactly
//! where the last run stopped (DESIGN.md §3).
//!
//! Files: this one (engine, options, waiters, `SyncError`); `push.rs` (the push worker);
//! `verify.rs` (the read-back of a lost answer) and `readback.rs` (its pure verdict, table
//! tested); `pull.rs` (probe, resumable full pull, reconcile); `feed.rs` (change feed, marks,
//! background re-reads); `lookup.rs` (a cashier's look-up refresh and its breaker);
//! `schedule.rs` (retry delays); `ledgers.rs` (a Smapify merchant's easyPoints: read on
//! look-ups, and the cross-ledger report).

pub mod feed;
pub mod granting;
mod ledgers;
pub use ledgers::{
    LedgerDifference, LedgerError, LedgerReport, Ledgers, SMAPIFY_NOT_CARRYING, SmapifyCheck,
};
mod lookup;
pub use lookup::LookupRefresh;
mod pull;
mod push;
pub mod readback;
pub mod schedule;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::ledger::State;
use crate::store::{Discrepancy, Store, StoreError};
use crate::upstream::Upstream;
use crate::upstream::health::Health;
use schedule::Schedule;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub concurrency: usize,
    pub pull_interval: Duration,
    pub probe_interval: Duration,
    pub schedule: Schedule,
    /// How long after a send whose answer was lost before reading back: a request the
    /// upstream is still working on must land first, or the read-back would see "nothing
    /// moved" and the resend would apply twice. The request timeout is a fair bound.
    pub settle: Duration,
    /// How often the full pull runs once the change feed works (the safety net; spread by
    /// [`SyncOptions::jitter_key`] so a chain's stores do not pull in the same minute).
    pub full_refresh_interval: Duration,
    /// Spreads the full pulls of a chain's stores (the store id).
    pub jitter_key: String,
    /// Background re-reads per second at most (the rest waits, marked, oldest first).
    pub reread_per_second: f64,
    /// The request budget, when one is set (for the feed's interval and `status`).
    pub budget: Option<Arc<crate::upstream::budget::Budget>>,
    /// `[earn] double_window_s`: a register sale this close to a pointsd grant or redeem of
    /// the same customer is a possible double count.
    pub double_window: Duration,
}

/// What a sync operation the API asks for (a reconcile, a customer's refresh) can fail on.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
}

impl SyncError {
    /// Worth trying again after a pause (a 429, a 5xx, a dropped link).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Upstream(e) => e.class() == crate::upstream::FailureClass::Transient,
            SyncError::Store(_) => false,
        }
    }

    /// The pause the upstream asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::Upstream(e) => e.retry_after(),
            SyncError::Store(_) => None,
        }
    }
}

/// Shared by the workers and the API (which waits on write-through results and wakes the
/// push worker).
pub struct SyncEngine {
    store: Store,
    upstream: Arc<dyn Upstream>,
    health: Arc<Health>,
    clock: SharedClock,
    opts: SyncOptions,
    wake: Notify,
    refresh_now: Notify,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<State>>>>,
    refresh_lock: tokio::sync::Mutex<()>,
    unrecorded: Mutex<Vec<i64>>,
    feed: Mutex<feed::FeedState>,
    reread_wake: Notify,
    /// Look-ups answer from the cache alone until then (unix ms): set when a look-up's
    /// refresh ran out of its budget (the start of an outage, before the probe notices).
    lookup_paused_until: std::sync::atomic::AtomicI64,
    /// Look-up refreshes in flight, by customer: a second look-up of the same customer waits
    /// for the first one's answer instead of asking the upstream again.
    lookups_in_flight: lookup::InFlight,
    /// Customers another writer was seen moving, and when (unix ms): their sends read a
    /// fresh balance first for [`CONTENDED_FOR_MS`].
    contended: Mutex<HashMap<String, i64>>,
    /// Possible double counts found by the last feed poll (status, metrics).
    doubles: std::sync::atomic::AtomicI64,
}

/// How long a customer counts as written by others after it was last seen so.
const CONTENDED_FOR_MS: i64 = 10 * 60_000;

/// Discrepancies kept in a report (the count covers all).
const REPORT_ITEMS: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReconcileReport {
    pub ran_at: String,
    pub customers: usize,
    pub checked: usize,
    pub discrepancies: usize,
    pub items: Vec<Discrepancy>,
}

impl SyncEngine {
    pub fn new(
        store: Store,
        upstream: Arc<dyn Upstream>,
        health: Arc<Health>,
        clock: SharedClock,
        opts: SyncOptions,
    ) -> Arc<SyncEngine> {
        Arc::new(SyncEngine {
            store,
            upstream,
            health,
            clock,
            opts,
            wake: Notify::new(),
            refresh_now: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            refresh_lock: tokio::sync::Mutex::new(()),
            unrecorded: Mutex::new(Vec::new()),
            feed: Mutex::new(feed::FeedState::default()),
            reread_wake: Notify::new(),
            lookup_paused_until: std::sync::atomic::AtomicI64::new(0),
            lookups_in_flight: Default::default(),
            contended: Mutex::new(HashMap::new()),
            doubles: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// The request budget's rates and 429 counts, when one is set.
    pub fn budget_snapshot(&self) -> Option<crate::upstream::budget::BudgetSnapshot> {
        self.opts.budget.as_ref().map(|b| b.snapshot())
    }

    /// Possible double counts as the last feed poll found them.
    pub fn possible_double_counts(&self) -> i64 {
        self.doubles.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every possible double count now (DESIGN.md §14), and the window used.
    pub async fn possible_doubles(
        &self,
    ) -> Result<(Vec<crate::store::PossibleDouble>, Duration), StoreError> {
        let d = self
            .store
            .possible_doubles(self.opts.double_window.as_millis() as i64, self.now())
            .await?;
        self.doubles
            .store(d.len() as i64, std::sync::atomic::Ordering::Relaxed);
        Ok((d, self.opts.double_window))
    }

    pub fn upstream(&self) -> &Arc<dyn Upstream> {
        &self.upstream
    }

    fn note_another_writer(&self, customer_id: &str) {
        let now = self.now();
        let mut c = self
            .contended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.len() > 10_000 {
            c.retain(|_, at| now - *at < CONTENDED_FOR_MS);
        }
        c.insert(customer_id.to_string(), now);
    }

    fn another_writer_seen(&self, customer_id: &str) -> bool {
        let now = self.now();
        self.contended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(customer_id)
            .is_some_and(|at| now - at < CONTENDED_FOR_MS)
    }

    /// Wakes the push worker: something new is in the outbox.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Registers interest in a transaction's next final outcome (applied, rejected,
    /// needs_review). Register before kicking, so the outcome cannot be missed.
    pub fn watch(&self, txn_id: &str) -> oneshot::Receiver<State> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(txn_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    pub fn unwatch(&self, txn_id: &str) {
        let mut w = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = w.get_mut(txn_id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                w.remove(txn_id);
            }
        }
    }

    fn settle(&self, txn_id: &str, state: State) {
        if let Some(list) = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(txn_id)
        {
            for s in list {
                let _ = s.send(state);
            }
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn retry_at(&self, attempts: i64, min_wait: Option<Duration>) -> i64 {
        let d = self.opts.schedule.delay(attempts.max(1) as u32);
        let d = min_wait.map_or(d, |w| d.max(w));
        self.now() + d.as_millis() as i64
    }

    /// Starts both workers; they stop when `shutdown` is cancelled, each finishing the request
    /// it has in flight (a send cut short would only become an ambiguous row to verify).
    pub async fn start(
        self: &Arc<Self>,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let recovered = self
            .store
            .recover_in_flight(now, now + self.opts.settle.as_millis() as i64)
            .await?;
        if recovered > 0 {
            tracing::warn!(
                count = recovered,
                "transactions were in flight when pointsd stopped; verifying them by read-back before any resend"
            );
        }
        let me = self.clone();
        let sd = shutdown.clone();
        tracker
            .spawn(async move { me.push_loop(sd).await }.instrument(tracing::info_span!("push")));
        let me = self.clone();
        let sd = shutdown.clone();
        tracker.spawn(
            async move { me.reread_loop(sd).await }.instrument(tracing::info_span!("reread")),
        );
        let me = self.clone();
        tracker.spawn(
            async move { me.pull_loop(shutdown).await }.instrument(tracing::info_span!("pull")),
        );
        Ok(())
    }
}
