//! The read-back of a send whose answer was lost: gathers the evidence (the balance, the
//! customer's transactions since the send) and applies [`super::readback::verdict`].

use serde_json::json;

use super::{SyncEngine, readback};
use crate::ledger::State;
use crate::store::{StoreError, TxnRow};

/// What the transaction list said about a lost send (evidence for the read-back).
#[derive(Debug, Default)]
struct FeedEvidence {
    feed: readback::Feed,
    window: Option<(String, String)>,
    unknown_ids: Vec<String>,
    own_left_out: usize,
    before_own_left_out: usize,
    unavailable: Option<String>,
}

/// Smaregi's transaction list takes windows of at most 31 days (DESIGN.md §4).
const FEED_MAX_WINDOW_MS: i64 = 31 * 24 * 3600 * 1000 - 3_600_000;
/// Pages of the list a read-back reads at most (1,000 rows each) before giving up on it.
const FEED_MAX_PAGES: u32 = 10;

impl SyncEngine {
    /// The exactly-once rule for a send whose answer was lost (DESIGN.md §2.2): read the
    /// balance back, and where it alone cannot decide, the customer's transactions since the
    /// send's starting state; [`readback::verdict`] decides. Never a resend on a maybe.
    pub(super) async fn verify(&self, txn: &TxnRow) -> Result<(), StoreError> {
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
        if feed.unknown_ids.len() > 1 || (b.point != before && b.point != before + txn.delta) {
            self.note_another_writer(&txn.customer_id);
        }
        evidence["transactions_since"] = json!({
            "window": feed.window,
            "listed": feed.unknown_ids,
            "own_left_out": feed.own_left_out,
            "older_than_own_left_out": feed.before_own_left_out,
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
                // The figure read back is the resend's starting point (the cache's may predate
                // another store's change): a second lost answer is then judged from it.
                let rev = self.store.apply_counter().await?;
                self.store.upsert_balances(vec![b], rev, now).await?;
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
        // Transaction ids are a sequence (`transactionHeadId`, an integer the list can be
        // filtered by as a range): anything older than this agent's newest own transaction
        // for the customer happened before a state the starting figure includes.
        // (The starting figure is never older than our newest own send for the customer: its
        // answer or read-back set the cache, and sends of one customer go one at a time.)
        let newest_own = own
            .iter()
            .filter_map(|i| i.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
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
                } else if t.id.parse::<u64>().is_ok_and(|n| n < newest_own) {
                    // Older than our own newest transaction, which the starting figure already
                    // includes: in it too (a whole-second window cannot tell this by time).
                    out.before_own_left_out += 1;
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
}
