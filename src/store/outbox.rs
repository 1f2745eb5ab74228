//! The outbox: the accept rule (one durable write per register request), claiming due rows
//! in per-customer order, and every state transition of a send.

use super::*;

pub(super) fn bump_apply_counter(conn: &Connection) -> rusqlite::Result<i64> {
    // Cached like every statement on a send's completion (the re-prepare guard counts it).
    conn.prepare_cached(
        "UPDATE sync_state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'apply_counter' \
         RETURNING CAST(value AS INTEGER)",
    )?
    .query_row([], |r| r.get(0))
}

/// What the accept rule needs to know besides the request.
#[derive(Debug, Clone)]
pub struct AcceptCtx {
    pub now_ms: i64,
    /// Today's date where the upstream counts expiry (JST), `YYYY-MM-DD`.
    pub today: String,
    pub online: bool,
    pub token_name: String,
    pub earn: EarnConfig,
    pub offline: OfflineConfig,
}

#[derive(Debug)]
pub enum AcceptOutcome {
    /// Committed as a new pending transaction.
    Created {
        txn: TxnRow,
        customer: CustomerRow,
    },
    /// The same key with the same body was seen before.
    Replay {
        txn: TxnRow,
        customer: CustomerRow,
    },
    /// The same key with a different body.
    Conflict {
        existing: TxnRow,
    },
    UnknownCustomer,
    Refused {
        refusal: RedeemRefusal,
        customer: CustomerRow,
    },
}

impl Store {
    /// The accept rule, atomically: idempotency check, customer check, redeem policy, insert.
    pub async fn accept(&self, new: NewTxn, ctx: AcceptCtx) -> Result<AcceptOutcome, StoreError> {
        self.floor.admit()?;
        self.write(move |c| accept_in(c, &new, &ctx)).await
    }

    /// Claims the next due transactions: for each customer only the oldest open one, and
    /// only when it is due. Pending ones become `sending` with the evidence for a read-back
    /// recorded; ambiguous ones are returned as they are, to be verified.
    ///
    /// `max_wait_ms` is the longest wait the schedule ever sets: a row due later than
    /// `now + max_wait_ms` was scheduled before the wall clock was set back, and is due now
    /// (otherwise a clock correction would stall the queue for as long as it moved).
    pub async fn claim_due(
        &self,
        now_ms: i64,
        limit: usize,
        max_wait_ms: i64,
    ) -> Result<Vec<TxnRow>, StoreError> {
        self.claim_due_except(now_ms, limit, max_wait_ms, Vec::new())
            .await
    }

    /// [`Store::claim_due`], leaving out the rows in `busy` (sends still in flight).
    pub async fn claim_due_except(
        &self,
        now_ms: i64,
        limit: usize,
        max_wait_ms: i64,
        busy: Vec<i64>,
    ) -> Result<Vec<TxnRow>, StoreError> {
        self.write(move |c| {
            let mut st = c.prepare_cached(
                // INDEXED BY: without statistics the planner sorts every open row per claim.
                concat!(
                    "SELECT t.seq FROM txns t INDEXED BY txns_due \
                     WHERE t.state IN ('pending','ambiguous') \
                       AND (t.next_attempt_at <= ?1 OR t.next_attempt_at > ?1 + ?3) \
                       AND NOT EXISTS (SELECT 1 FROM txns o INDEXED BY txns_open_by_customer \
                            WHERE o.customer_id = t.customer_id AND o.seq < t.seq AND ",
                    open_rows!("o"),
                    ") ORDER BY t.seq LIMIT ?2"
                ),
            )?;
            let seqs: Vec<i64> = st
                .query_map(
                    params![now_ms, (limit + busy.len()) as i64, max_wait_ms],
                    |r| r.get(0),
                )?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(limit);
            for seq in seqs {
                if busy.contains(&seq) {
                    continue;
                }
                if out.len() == limit {
                    break;
                }
                // A customer marked changed elsewhere has no trustworthy cached figure: the send
                // reads the balance first, so a lost answer's read-back starts from a fresh one
                // (fewer foreign transactions in its window, fewer reviews in a chain).
                c.prepare_cached("UPDATE txns SET state = 'sending', attempts = attempts + 1, updated_at = ?2, \
                       before_balance = (SELECT confirmed FROM customers WHERE customer_id = txns.customer_id \
                           AND as_of IS NOT NULL AND marked_at IS NULL), \
                       before_updated_at = (SELECT upstream_updated_at FROM customers WHERE customer_id = txns.customer_id \
                           AND as_of IS NOT NULL AND marked_at IS NULL) \
                     WHERE seq = ?1 AND state = 'pending'")?.execute(params![seq, now_ms])?;
                out.push(txn_by_seq(c, seq)?);
            }
            Ok(out)
        })
        .await
    }

    /// Records the read-back evidence for a send when the cache had never confirmed the
    /// customer's balance (the figure was read from the upstream just now).
    pub async fn set_before(
        &self,
        seq: i64,
        balance: i64,
        upstream_updated_at: Option<String>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE txns SET before_balance = ?2, before_updated_at = ?3 WHERE seq = ?1",
            )?
            .execute(params![seq, balance, upstream_updated_at])?;
            Ok(())
        })
        .await
    }

    /// The upstream applied the delta and answered with the new balance. `upstream_txn_ids`:
    /// the upstream's ids of the transactions it created, when it said (or the read-back found).
    pub async fn mark_applied(
        &self,
        seq: i64,
        balance: i64,
        upstream_updated_at: Option<String>,
        now_ms: i64,
        note: Option<String>,
        upstream_txn_ids: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        let ids = upstream_txn_ids
            .filter(|v| !v.is_empty())
            .map(|v| serde_json::Value::from(v).to_string());
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'applied', upstream_balance = ?2, updated_at = ?3, \
                   last_error = NULL, upstream_result = COALESCE(?4, upstream_result), \
                   upstream_txn_ids = COALESCE(?5, upstream_txn_ids) WHERE seq = ?1")?.execute(params![seq, balance, now_ms, note, ids])?;
            let rev = bump_apply_counter(c)?;
            c.prepare_cached("UPDATE customers SET confirmed = ?2, as_of = ?3, applied_rev = ?4, local_only = 0, \
                   upstream_updated_at = COALESCE(?5, upstream_updated_at) \
                 WHERE customer_id = (SELECT customer_id FROM txns WHERE seq = ?1)")?.execute(params![seq, balance, now_ms, rev, upstream_updated_at])?;
            // The answer shows every change up to now: a mark from before it is answered.
            if let Some(ms) = upstream_updated_at.as_deref().and_then(crate::clock::parse_stamp) {
                c.prepare_cached(feed::CLEAR_MARK_OF_SEQ)?.execute(params![seq, ms])?;
            }
            Ok(())
        })
        .await
    }

    /// The upstream transaction ids this agent's applied sends for `customer_id` created (the
    /// most recent `limit` sends that recorded any): the read-back leaves these out.
    pub async fn own_upstream_txn_ids(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let id = customer_id.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                // The closed half's own condition, so the partial index serves the query.
                "SELECT upstream_txn_ids FROM txns INDEXED BY txns_closed_by_customer \
                 WHERE customer_id = ?1 \
                   AND (state = 'applied' OR state = 'rejected' OR state = 'needs_review' OR state = 'discarded') \
                   AND state = 'applied' AND upstream_txn_ids IS NOT NULL \
                 ORDER BY seq DESC LIMIT ?2",
            )?;
            let mut out = Vec::new();
            for j in st.query_map(params![id, limit as i64], |r| r.get::<_, String>(0))? {
                if let Ok(v) = serde_json::from_str::<Vec<String>>(&j?) {
                    out.extend(v);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Back to `pending` to be tried again at `next_attempt_at`.
    pub async fn mark_retry(
        &self,
        seq: i64,
        error: String,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'pending', last_error = ?2, next_attempt_at = ?3, updated_at = ?4 \
                 WHERE seq = ?1")?.execute(params![seq, error, next_attempt_at, now_ms])?;
            Ok(())
        })
        .await
    }

    /// No answer after the request left: verify by read-back before anything else.
    pub async fn mark_ambiguous(
        &self,
        seq: i64,
        error: String,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'ambiguous', last_error = ?2, next_attempt_at = ?3, updated_at = ?4 \
                 WHERE seq = ?1")?.execute(params![seq, error, next_attempt_at, now_ms])?;
            Ok(())
        })
        .await
    }

    /// Verification of an ambiguous send failed for now; try the read-back again later.
    pub async fn defer_ambiguous(
        &self,
        seq: i64,
        error: String,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.mark_ambiguous(seq, error, next_attempt_at, now_ms)
            .await
    }

    pub async fn mark_rejected(
        &self,
        seq: i64,
        error: String,
        upstream_result: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'rejected', last_error = ?2, upstream_result = ?3, updated_at = ?4 \
                 WHERE seq = ?1")?.execute(params![seq, error, upstream_result, now_ms])?;
            // A return's refused take-back is followed by a smaller one, never dropped.
            returns::after_rejected(c, seq, now_ms)
        })
        .await
    }

    pub async fn mark_needs_review(
        &self,
        seq: i64,
        error: String,
        evidence: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'needs_review', last_error = ?2, upstream_result = ?3, updated_at = ?4 \
                 WHERE seq = ?1")?.execute(params![seq, error, evidence, now_ms])?;
            Ok(())
        })
        .await
    }

    /// At start-up: a row still `sending` was in flight when the process died. Whether the
    /// upstream got it is unknown, so it must be verified, never blindly resent.
    /// `verify_at`: not before the orphaned request could have landed upstream.
    pub async fn recover_in_flight(
        &self,
        now_ms: i64,
        verify_at: i64,
    ) -> Result<usize, StoreError> {
        self.write(move |c| {
            Ok(c.prepare_cached("UPDATE txns SET state = 'ambiguous', next_attempt_at = ?2, updated_at = ?1, \
                   last_error = 'pointsd stopped while this was being sent; verifying by read-back' \
                 WHERE state = 'sending'")?.execute([now_ms, verify_at])?)
        })
        .await
    }

    /// Rows whose send finished but whose outcome could not be written (e.g. disk full): they
    /// are not in flight any more, so they become ambiguous and are settled by read-back.
    pub async fn release_unrecorded(&self, seqs: Vec<i64>, now_ms: i64) -> Result<(), StoreError> {
        self.write(move |c| {
            for seq in &seqs {
                c.prepare_cached("UPDATE txns SET state = 'ambiguous', next_attempt_at = ?2, updated_at = ?2, \
                       last_error = 'the outcome could not be saved (storage); verifying by read-back' \
                     WHERE seq = ?1 AND state = 'sending'")?.execute(params![seq, now_ms])?;
            }
            Ok(())
        })
        .await
    }

    pub async fn apply_counter(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT CAST(value AS INTEGER) FROM sync_state WHERE key = 'apply_counter'",
            )?
            .query_row([], |r| r.get(0))
        })
        .await
    }

    /// The earliest time an open transaction becomes due, to sleep until then.
    pub async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        // (A row scheduled before a clock change may lie far ahead; claim_due handles it.)
        self.read(|c| {
            c.prepare_cached(
                "SELECT MIN(next_attempt_at) FROM txns INDEXED BY txns_due_at \
                 WHERE state IN ('pending','ambiguous')",
            )?
            .query_row([], |r| r.get(0))
        })
        .await
    }
}

pub(super) fn accept_in(
    c: &Connection,
    new: &NewTxn,
    ctx: &AcceptCtx,
) -> Result<AcceptOutcome, StoreError> {
    let canonical = new.canonical();
    if let Some(existing) = txn_by_id(c, &new.txn_id)? {
        if existing.request == canonical {
            let customer = customer_by_id(c, &existing.customer_id)?
                .ok_or_else(|| StoreError::Batch("transaction without customer".into()))?;
            return Ok(AcceptOutcome::Replay {
                txn: existing,
                customer,
            });
        }
        return Ok(AcceptOutcome::Conflict { existing });
    }
    let customer = match customer_by_id(c, &new.customer_id)? {
        Some(cu) => cu,
        None => {
            // An earn for a customer the cache has not seen may be kept offline when the store
            // allows it; the upstream decides when the link is back.
            if !ctx.online && ctx.offline.allow_unknown_customers && new.kind == ledger::Kind::Earn
            {
                c.prepare_cached("INSERT INTO customers(customer_id, local_only) VALUES (?1, 1)")?
                    .execute([&new.customer_id])?;
                customer_by_id(c, &new.customer_id)?.ok_or(StoreError::RowMissing("customer"))?
            } else {
                return Ok(AcceptOutcome::UnknownCustomer);
            }
        }
    };
    let delta = new.delta(&ctx.earn);
    if new.kind == ledger::Kind::Redeem || delta < 0 {
        let expired = customer.expired(&ctx.today, ctx.now_ms);
        let res = if new.kind == ledger::Kind::Redeem {
            ledger::check_owner_expiry(
                -delta,
                customer.balance(),
                customer.owner_expired_at(ctx.now_ms).as_deref(),
            )
            .and_then(|()| {
                ledger::check_changed_elsewhere(
                    customer.changed_elsewhere_at.as_deref(),
                    ctx.online,
                    &ctx.offline,
                )
            })
            .and_then(|()| {
                ledger::check_redeem(
                    -delta,
                    customer.balance(),
                    expired,
                    ctx.online,
                    &ctx.offline,
                )
            })
        } else {
            // A negative adjustment is a correction by staff: it may not overdraw either.
            ledger::check_redeem(-delta, customer.balance(), false, true, &ctx.offline)
        };
        if let Err(refusal) = res {
            return Ok(AcceptOutcome::Refused { refusal, customer });
        }
    }
    c.prepare_cached(
        "INSERT INTO txns(txn_id, request, customer_id, kind, delta, points, purchase_amount, reason, \
           register_id, staff_id, token_name, created_at, state, next_attempt_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'pending', ?12, ?12)",
    )?
    .execute(params![
        new.txn_id,
        canonical,
        new.customer_id,
        new.kind.as_str(),
        delta,
        new.points,
        new.purchase_amount,
        new.reason,
        new.register_id,
        new.staff_id,
        ctx.token_name,
        ctx.now_ms,
    ])?;
    let txn = txn_by_seq(c, c.last_insert_rowid())?;
    let customer =
        customer_by_id(c, &new.customer_id)?.ok_or(StoreError::RowMissing("customer"))?;
    Ok(AcceptOutcome::Created { txn, customer })
}
