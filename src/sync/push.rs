//! The push worker: outbox → upstream, per-customer order, retries, and the hand-over of a
//! send whose answer was lost to the read-back ([`super::verify`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use serde_json::json;

use super::SyncEngine;
use crate::ledger::State;
use crate::store::{StoreError, TxnRow};
use crate::upstream::FailureClass;
use crate::upstream::budget::{Priority, with_priority};

impl SyncEngine {
    pub(super) async fn push_loop(self: Arc<Self>, shutdown: CancellationToken) {
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
            let unrecorded: Vec<i64> = std::mem::take(
                &mut *self
                    .unrecorded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if !unrecorded.is_empty()
                && let Err(e) = self
                    .store
                    .release_unrecorded(unrecorded.clone(), self.now())
                    .await
            {
                tracing::error!(error = %e, "cannot save sync outcomes yet; retrying in 1 s");
                self.unrecorded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                // Pushes (and their before-reads and read-backs) go first in the budget.
                let h = in_flight.spawn(
                    with_priority(Priority::Push, async move { me.process(txn).await })
                        .instrument(span),
                );
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
            self.unrecorded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(txn.seq);
        }
    }

    async fn send(&self, txn: &TxnRow) -> Result<(), StoreError> {
        let mut txn = std::borrow::Cow::Borrowed(txn);
        // A customer another writer was seen moving (an answer that was not before + delta):
        // the cached figure may be out of date by several foreign changes, and a lost answer's
        // read-back would then count them all. One read first makes the window milliseconds.
        let contended = self.another_writer_seen(&txn.customer_id);
        if txn.before_balance.is_none() || contended {
            // The cache never confirmed this customer's balance (or may be behind): read it
            // first, so a lost answer can still be settled by read-back.
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
                if txn
                    .before_balance
                    .is_some_and(|before| b.point != before + txn.delta)
                {
                    self.note_another_writer(&txn.customer_id);
                }
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
