//! The sync engine: the push worker (outbox → upstream, per-customer order, retry, read-back
//! of ambiguous sends) and the pull worker (upstream → cache, periodic, plus a link probe).
//!
//! Every state change is one SQLite write through the store, so a restart resumes exactly
//! where the last run stopped (DESIGN.md §3).

pub mod readback;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::ledger::State;
use crate::store::{Discrepancy, Store, StoreError, TxnRow};
use crate::upstream::health::Health;
use crate::upstream::{FailureClass, Upstream};
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
}

/// What the transaction list said about a lost send (evidence for the read-back).
#[derive(Debug, Default)]
struct FeedEvidence {
    feed: readback::Feed,
    window: Option<(String, String)>,
    unknown_ids: Vec<String>,
    own_left_out: usize,
    unavailable: Option<String>,
}

/// Smaregi's transaction list takes windows of at most 31 days (DESIGN.md §4).
const FEED_MAX_WINDOW_MS: i64 = 31 * 24 * 3600 * 1000 - 3_600_000;
/// Pages of the list a read-back reads at most (1,000 rows each) before giving up on it.
const FEED_MAX_PAGES: u32 = 10;

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
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn upstream(&self) -> &Arc<dyn Upstream> {
        &self.upstream
    }

    /// Wakes the push worker: something new is in the outbox.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Asks the pull worker for a full refresh now.
    pub fn request_refresh(&self) {
        self.refresh_now.notify_one();
    }

    /// Registers interest in a transaction's next final outcome (applied, rejected,
    /// needs_review). Register before kicking, so the outcome cannot be missed.
    pub fn watch(&self, txn_id: &str) -> oneshot::Receiver<State> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters")
            .entry(txn_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    pub fn unwatch(&self, txn_id: &str) {
        let mut w = self.waiters.lock().expect("waiters");
        if let Some(list) = w.get_mut(txn_id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                w.remove(txn_id);
            }
        }
    }

    fn settle(&self, txn_id: &str, state: State) {
        if let Some(list) = self.waiters.lock().expect("waiters").remove(txn_id) {
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
        tracker.spawn(
            async move { me.pull_loop(shutdown).await }.instrument(tracing::info_span!("pull")),
        );
        Ok(())
    }

    async fn push_loop(self: Arc<Self>, shutdown: CancellationToken) {
        // Sends in flight. New rows are claimed as slots free up (once at least half are free,
        // so one claim commit serves several sends) rather than in waves that wait for the
        // slowest send: waves left the drain at 0.65x of the upstream's rate limit.
        let mut in_flight = tokio::task::JoinSet::new();
        // Which row each send works on. An ambiguous row stays claimable while its read-back
        // runs (claiming does not change it), so rows in flight are kept out of the next claim:
        // otherwise two read-backs of one row could both resend it.
        let mut busy: HashMap<tokio::task::Id, i64> = HashMap::new();
        let cap = self.opts.concurrency.max(1);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if in_flight.len() > cap / 2 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = in_flight.join_next_with_id() => reap(r, &mut busy),
                }
                continue;
            }
            // A 429 with Retry-After pauses the whole upstream; bad credentials pause it until
            // the probe sees them accepted (no retries burnt meanwhile).
            // While the link is down nothing is sent (and no attempts are burnt): the pull
            // worker's probe notices the link coming back and wakes this loop at once.
            let paused = self
                .health
                .pause_remaining_ms()
                .map(|ms| ms as u64)
                .or_else(|| {
                    (!self.health.is_online())
                        .then_some(self.opts.probe_interval.as_millis() as u64)
                });
            if let Some(ms) = paused {
                // Let the sends in flight finish (their outcomes are recorded) before pausing.
                while let Some(r) = in_flight.join_next_with_id().await {
                    reap(Some(r), &mut busy);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(ms.max(10))) => {}
                    _ = self.health.back_online.notified() => {}
                }
                continue;
            }
            // Outcomes that could not be saved (disk full): settle them by read-back now that
            // a write may work again, rather than leave the customer blocked until a restart.
            let unrecorded: Vec<i64> =
                std::mem::take(&mut *self.unrecorded.lock().expect("unrecorded"));
            if !unrecorded.is_empty()
                && let Err(e) = self
                    .store
                    .release_unrecorded(unrecorded.clone(), self.now())
                    .await
            {
                tracing::error!(error = %e, "cannot save sync outcomes yet; retrying in 1 s");
                self.unrecorded
                    .lock()
                    .expect("unrecorded")
                    .extend(unrecorded);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let max_wait = (self.opts.schedule.max + self.opts.settle).as_millis() as i64 + 60_000;
            let claimed = match self
                .store
                .claim_due_except(
                    self.now(),
                    cap - in_flight.len(),
                    max_wait,
                    busy.values().copied().collect(),
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox; retrying in 1 s");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            if claimed.is_empty() && !in_flight.is_empty() {
                // A finished send may unblock its customer's next row; a new one may come.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = in_flight.join_next_with_id() => reap(r, &mut busy),
                    _ = self.wake.notified() => {}
                }
                continue;
            }
            if claimed.is_empty() {
                let wait = match self.store.next_due_at().await {
                    Ok(Some(at)) => (at - self.now()).clamp(10, 5_000) as u64,
                    _ => 5_000,
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = self.health.back_online.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                }
                continue;
            }
            for txn in claimed {
                let me = self.clone();
                let span = tracing::info_span!("txn", txn_id = %txn.txn_id, customer_id = %txn.customer_id, attempt = txn.attempts);
                let seq = txn.seq;
                let h = in_flight.spawn(async move { me.process(txn).await }.instrument(span));
                busy.insert(h.id(), seq);
            }
        }
        // Sends already on the wire finish and record their outcome (bounded by the request
        // timeout); nothing new starts.
        while let Some(r) = in_flight.join_next_with_id().await {
            reap(Some(r), &mut busy);
        }
        tracing::debug!("push worker stopped");
    }

    async fn process(&self, txn: TxnRow) {
        let r = if txn.state == State::Ambiguous {
            self.verify(&txn).await
        } else {
            self.send(&txn).await
        };
        if let Err(e) = r {
            // The outcome could not be saved. The row must not stay `sending` (which would
            // block the customer): once writes work again it becomes ambiguous and the
            // read-back settles it, never a blind resend.
            tracing::error!(error = %e, "could not record a sync outcome; will verify by read-back");
            self.unrecorded.lock().expect("unrecorded").push(txn.seq);
        }
    }

    async fn send(&self, txn: &TxnRow) -> Result<(), StoreError> {
        let mut txn = std::borrow::Cow::Borrowed(txn);
        if txn.before_balance.is_none() {
            // The cache never confirmed this customer's balance: read it first, so a lost
            // answer can still be settled by read-back.
            match self.upstream.get_balance(&txn.customer_id).await {
                Ok(Some(b)) => {
                    self.store
                        .set_before(txn.seq, b.point, b.updated_at.clone())
                        .await?;
                    let t = txn.to_mut();
                    t.before_balance = Some(b.point);
                    t.before_updated_at = b.updated_at;
                }
                // Unknown upstream: the add will be refused (404) and the row rejected.
                Ok(None) => {}
                Err(e) => {
                    let now = self.now();
                    let at = self.retry_at(txn.attempts, e.retry_after());
                    tracing::warn!(error = %e, "could not read the balance before sending; will retry");
                    return self.store.mark_retry(txn.seq, e.to_string(), at, now).await;
                }
            }
        }
        let txn = txn.as_ref();
        let r = self.upstream.add_points(&txn.customer_id, txn.delta).await;
        let now = self.now();
        match r {
            Ok(a) => {
                let b = a.balance;
                self.store
                    .mark_applied(txn.seq, b.point, b.updated_at, now, None, a.transaction_ids)
                    .await?;
                tracing::info!(delta = txn.delta, balance = b.point, "applied upstream");
                self.settle(&txn.txn_id, State::Applied);
            }
            Err(e) => match e.class() {
                FailureClass::Transient | FailureClass::Auth => {
                    let at = self.retry_at(txn.attempts, e.retry_after());
                    tracing::warn!(error = %e, retry_in_ms = at - now, "send failed; will retry");
                    self.store
                        .mark_retry(txn.seq, e.to_string(), at, now)
                        .await?;
                }
                FailureClass::Ambiguous => {
                    tracing::warn!(error = %e, "no answer to a send; verifying by read-back before any resend");
                    let verify_at = now + self.opts.settle.as_millis() as i64;
                    self.store
                        .mark_ambiguous(txn.seq, e.to_string(), verify_at, now)
                        .await?;
                }
                FailureClass::Permanent => {
                    let result = match &e {
                        crate::upstream::UpstreamError::Status {
                            status,
                            title,
                            detail,
                            ..
                        } => json!({"status": status, "title": title, "detail": detail}),
                        other => json!({"detail": other.to_string()}),
                    };
                    tracing::error!(error = %e, "upstream rejected the transaction; it no longer counts toward the balance");
                    self.store
                        .mark_rejected(txn.seq, e.to_string(), result.to_string(), now)
                        .await?;
                    self.settle(&txn.txn_id, State::Rejected);
                }
            },
        }
        Ok(())
    }

    /// The exactly-once rule for a send whose answer was lost (DESIGN.md §2.2): read the
    /// balance back, and where it alone cannot decide, the customer's transactions since the
    /// send's starting state; [`readback::verdict`] decides. Never a resend on a maybe.
    async fn verify(&self, txn: &TxnRow) -> Result<(), StoreError> {
        let r = self.upstream.get_balance(&txn.customer_id).await;
        let now = self.now();
        let b = match r {
            Err(e) => {
                let at = self.retry_at(txn.attempts, e.retry_after());
                tracing::warn!(error = %e, "read-back failed; the transaction stays ambiguous");
                return self
                    .store
                    .defer_ambiguous(txn.seq, format!("read-back failed: {e}"), at, now)
                    .await;
            }
            Ok(b) => b,
        };
        let before = txn.before_balance;
        let mut evidence = json!({
            "before_balance": before,
            "before_updated_at": txn.before_updated_at,
            "delta": txn.delta,
            "expected_if_applied": before.map(|b| b + txn.delta),
            "read_back_balance": b.as_ref().map(|b| b.point),
            "read_back_updated_at": b.as_ref().and_then(|b| b.updated_at.clone()),
        });
        let (Some(b), Some(before)) = (b, before) else {
            let why = "the upstream does not know the customer, or the balance before the send is unknown";
            return self.needs_review(txn, why, evidence, now).await;
        };
        let feed = match self.feed_since(txn).await {
            Ok(f) => f,
            Err(e) => {
                let at = self.retry_at(txn.attempts, e.retry_after());
                tracing::warn!(error = %e, "could not list the customer's transactions; the transaction stays ambiguous");
                return self
                    .store
                    .defer_ambiguous(txn.seq, format!("read-back failed: {e}"), at, now)
                    .await;
            }
        };
        let stamp = if b.updated_at == txn.before_updated_at {
            readback::StampMove::Same
        } else {
            readback::StampMove::Moved
        };
        let v = readback::verdict(before, txn.delta, b.point, stamp, feed.feed);
        evidence["transactions_since"] = json!({
            "window": feed.window,
            "listed": feed.unknown_ids,
            "own_left_out": feed.own_left_out,
            "unavailable": feed.unavailable,
        });
        evidence["stamp"] = json!(stamp);
        evidence["rule"] = json!(v);
        match v {
            readback::Verdict::Applied { .. } => {
                tracing::info!(balance = b.point, %evidence, "read-back shows the send was applied");
                // The one transaction listed is then ours: remembered, so the next read-back
                // of this customer leaves it out.
                let ours = (feed.unknown_ids.len() == 1).then(|| feed.unknown_ids.clone());
                self.store
                    .mark_applied(
                        txn.seq,
                        b.point,
                        b.updated_at,
                        now,
                        Some(json!({"verified_by": "read-back", "evidence": evidence}).to_string()),
                        ours,
                    )
                    .await?;
                self.settle(&txn.txn_id, State::Applied);
            }
            readback::Verdict::NotApplied { why } => {
                tracing::info!(%evidence, "read-back shows the send did not land; resending");
                self.store
                    .mark_retry(
                        txn.seq,
                        format!("not applied upstream (verified by read-back: {why}); resending"),
                        now,
                        now,
                    )
                    .await?;
            }
            readback::Verdict::NeedsReview { why } => {
                self.needs_review(txn, why, evidence, now).await?;
            }
        }
        Ok(())
    }

    async fn needs_review(
        &self,
        txn: &TxnRow,
        why: &str,
        evidence: serde_json::Value,
        now: i64,
    ) -> Result<(), StoreError> {
        tracing::error!(%evidence, why, "cannot prove whether the send was applied; needs review");
        self.store
            .mark_needs_review(
                txn.seq,
                format!(
                    "exactly-once could not be proven by read-back ({why}); a person must decide"
                ),
                evidence.to_string(),
                now,
            )
            .await?;
        self.settle(&txn.txn_id, State::NeedsReview);
        Ok(())
    }

    /// The customer's point-moving transactions since the state the send started from (its
    /// `before_updated_at`, inclusive: whole seconds), without the ones this agent's earlier
    /// sends created. `Err` only for a failure worth retrying; a feed that cannot answer this
    /// question gives [`readback::Feed::Unavailable`].
    async fn feed_since(
        &self,
        txn: &TxnRow,
    ) -> Result<FeedEvidence, crate::upstream::UpstreamError> {
        use crate::upstream::{FailureClass, TxnQuery, UpstreamError};
        let unavailable = |why: &str| FeedEvidence {
            feed: readback::Feed::Unavailable,
            unavailable: Some(why.to_string()),
            ..FeedEvidence::default()
        };
        let Some(from_ms) = txn
            .before_updated_at
            .as_deref()
            .and_then(crate::clock::parse_stamp)
        else {
            return Ok(unavailable(
                "no upstream stamp for the balance before the send",
            ));
        };
        let now = self.now();
        // The list takes windows of at most 31 days; the end leaves room for clock skew.
        let to_ms = now + 60_000;
        if to_ms - from_ms > FEED_MAX_WINDOW_MS {
            return Ok(unavailable(
                "the balance before the send is older than the list's 31-day window",
            ));
        }
        let code = match self.store.customer(&txn.customer_id).await {
            Ok(c) => c.and_then(|c| c.code),
            Err(_) => None,
        };
        let own: std::collections::HashSet<String> = self
            .store
            .own_upstream_txn_ids(&txn.customer_id, 500)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut q = TxnQuery {
            from: crate::clock::smaregi_stamp(from_ms),
            to: crate::clock::smaregi_stamp(to_ms),
            customer_code: code,
            page: 1,
        };
        let mut out = FeedEvidence {
            window: Some((q.from.clone(), q.to.clone())),
            ..FeedEvidence::default()
        };
        let mut seen = std::collections::HashSet::new();
        loop {
            let page = match self.upstream.list_transactions(&q).await {
                Ok(p) => p,
                Err(e @ UpstreamError::MissingScope { .. }) => {
                    tracing::warn!(error = %e, "read-back without the transaction list");
                    return Ok(unavailable(&e.to_string()));
                }
                Err(e) if e.class() == FailureClass::Permanent => {
                    return Ok(unavailable(&format!(
                        "the transaction list refused the query: {e}"
                    )));
                }
                Err(e) => return Err(e),
            };
            for t in page.items {
                let mine = t.customer_id.as_deref() == Some(txn.customer_id.as_str());
                if !mine || !t.moves_points() || !seen.insert(t.id.clone()) {
                    continue;
                }
                if own.contains(&t.id) {
                    out.own_left_out += 1;
                } else {
                    out.unknown_ids.push(t.id);
                }
            }
            if !page.more {
                break;
            }
            if q.page >= FEED_MAX_PAGES {
                return Ok(unavailable("too many transactions in the window to read"));
            }
            q.page += 1;
        }
        out.feed = readback::Feed::Unknown(out.unknown_ids.len());
        Ok(out)
    }

    async fn pull_loop(self: Arc<Self>, shutdown: CancellationToken) {
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

/// Forgets a finished (or panicked) send's row, so it can be claimed again.
fn reap(
    r: Option<Result<(tokio::task::Id, ()), tokio::task::JoinError>>,
    busy: &mut HashMap<tokio::task::Id, i64>,
) {
    match r {
        Some(Ok((id, ()))) => {
            busy.remove(&id);
        }
        Some(Err(e)) => {
            busy.remove(&e.id());
        }
        None => {}
    }
}
