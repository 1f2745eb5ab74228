//! Retention (DESIGN.md §15): closed history older than `[retention] keep_days` is deleted in
//! small batches, each its own short write job, so a register's write never waits behind more
//! than one batch. Open rows (`pending`, `sending`, `ambiguous`) and rows waiting for a person
//! (`needs_review`) are never deleted; neither is a transaction with a review decision (the
//! audit trail refers to it). A sale goes with its returns and their transactions, only when
//! the sale and its last return are older than the cut-off and all its transactions are
//! closed: `keep_days` must be longer than the store's return period (a return of a sale that
//! is gone is recorded from its receipt, as for a sale this store never recorded).

use super::*;

/// Rows looked at per batch (one write job). 500 took about 15 ms in a debug build on the
/// shared 2-core machine (1,000,000 rows in 32 s); 200 keeps a register's wait behind one
/// batch to a few milliseconds.
pub const RETENTION_BATCH: usize = 200;

/// What one retention run deleted.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RetentionRun {
    pub txns: u64,
    pub sales: u64,
    pub returns: u64,
    pub batches: u64,
}

/// One batch of plain transactions (not a sale's or a return's): rows after `after_seq` in
/// outbox order, `RETENTION_BATCH` of them looked at. Returns (deleted, last seq looked at,
/// whether the end was reached).
fn txn_batch(
    c: &Connection,
    after_seq: i64,
    cutoff_ms: i64,
) -> Result<(u64, i64, bool), StoreError> {
    let rows: Vec<(i64, String, String, i64, i64)> = c
        .prepare_cached(
            "SELECT seq, txn_id, state, created_at, updated_at FROM txns \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after_seq, RETENTION_BATCH as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let end = rows.len() < RETENTION_BATCH;
    let last = rows.last().map_or(after_seq, |r| r.0);
    let mut deleted = 0;
    for (seq, txn_id, state, created, updated) in rows {
        let closed = matches!(state.as_str(), "applied" | "rejected" | "discarded");
        // A sale's and a return's rows go with their sale (`sale_batch`).
        let plain = !txn_id.starts_with("sale:") && !txn_id.starts_with("return:");
        if !(closed && plain && created < cutoff_ms && updated < cutoff_ms) {
            continue;
        }
        let audited: bool = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM resolutions WHERE txn_id = ?1)")?
            .query_row([&txn_id], |r| r.get(0))?;
        if audited {
            continue;
        }
        deleted += c
            .prepare_cached("DELETE FROM txns WHERE seq = ?1")?
            .execute([seq])? as u64;
    }
    Ok((deleted, last, end))
}

/// One batch of sales older than the cut-off (in sale id order after `after`), each deleted
/// with its returns and their transactions when all of them are old and closed.
fn sale_batch(
    c: &Connection,
    after: &str,
    cutoff_ms: i64,
) -> Result<(u64, u64, u64, String, bool), StoreError> {
    let sales: Vec<(String, i64, Option<String>)> = c
        .prepare_cached(
            "SELECT sale_id, created_at, txn_id FROM sales WHERE sale_id > ?1 \
             ORDER BY sale_id LIMIT ?2",
        )?
        .query_map(params![after, (RETENTION_BATCH / 5) as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let end = sales.len() < RETENTION_BATCH / 5;
    let last = sales.last().map_or(after.to_string(), |s| s.0.clone());
    let (mut n_sales, mut n_returns, mut n_txns) = (0, 0, 0);
    'sale: for (sale_id, created, sale_txn) in sales {
        if created >= cutoff_ms {
            continue;
        }
        let returns: Vec<(String, i64, Option<String>)> = c
            .prepare_cached("SELECT return_id, created_at, txn_id FROM returns WHERE sale_id = ?1")?
            .query_map([&sale_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        if returns.iter().any(|r| r.1 >= cutoff_ms) {
            continue;
        }
        let txn_ids: Vec<String> = sale_txn
            .into_iter()
            .chain(returns.iter().filter_map(|r| r.2.clone()))
            .collect();
        for t in &txn_ids {
            let ok: Option<bool> = c
                .prepare_cached(
                    "SELECT (state = 'applied' OR state = 'rejected' OR state = 'discarded') \
                     AND updated_at < ?2 \
                     AND NOT EXISTS (SELECT 1 FROM resolutions r WHERE r.txn_id = txns.txn_id) \
                     FROM txns WHERE txn_id = ?1",
                )?
                .query_row(params![t, cutoff_ms], |r| r.get(0))
                .optional()?;
            if ok == Some(false) {
                continue 'sale;
            }
        }
        n_returns += c
            .prepare_cached("DELETE FROM returns WHERE sale_id = ?1")?
            .execute([&sale_id])? as u64;
        n_sales += c
            .prepare_cached("DELETE FROM sales WHERE sale_id = ?1")?
            .execute([&sale_id])? as u64;
        for t in &txn_ids {
            n_txns += c
                .prepare_cached("DELETE FROM txns WHERE txn_id = ?1")?
                .execute([t])? as u64;
        }
    }
    Ok((n_sales, n_returns, n_txns, last, end))
}

/// The last retention run, for `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionStatus {
    /// `[retention] keep_days` (0: everything is kept).
    pub keep_days: u32,
    /// When the last run ended (unix ms), and what it deleted.
    pub last_run_at_ms: Option<i64>,
    pub last_run: Option<RetentionRun>,
    pub last_error: Option<String>,
}

/// Runs retention every `every` (the first run `first` after start) for history older than
/// `keep_days`, logging what each run deleted.
pub async fn run_schedule(
    store: Store,
    keep_days: u32,
    first: Duration,
    every: Duration,
    clock: crate::clock::SharedClock,
    status: std::sync::Arc<Mutex<RetentionStatus>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut wait = first;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = every;
        let cutoff = clock.now_ms() - i64::from(keep_days) * 86_400_000;
        let t0 = std::time::Instant::now();
        let r = store
            .run_retention(cutoff, Duration::from_millis(20), &stop)
            .await;
        {
            let mut s = status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.last_run_at_ms = Some(clock.now_ms());
            match &r {
                Ok(run) => {
                    s.last_run = Some(run.clone());
                    s.last_error = None;
                }
                Err(e) => s.last_error = Some(e.to_string()),
            }
        }
        match r {
            Ok(r) if r.txns + r.sales + r.returns > 0 => tracing::info!(
                txns = r.txns,
                sales = r.sales,
                returns = r.returns,
                batches = r.batches,
                ms = t0.elapsed().as_millis() as u64,
                keep_days,
                "retention deleted closed history older than keep_days"
            ),
            Ok(_) => tracing::debug!(keep_days, "retention: nothing old enough to delete"),
            Err(e) => {
                tracing::warn!(error = %e, "retention run failed; it is tried again at the next interval")
            }
        }
    }
}

impl Store {
    /// Deletes closed history created before `cutoff_ms`, batch by batch (each one write job
    /// of at most [`RETENTION_BATCH`] rows looked at), pausing `pause` between batches so
    /// registers' writes go first. Stops early when `stop` is cancelled.
    pub async fn run_retention(
        &self,
        cutoff_ms: i64,
        pause: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<RetentionRun, StoreError> {
        let mut run = RetentionRun::default();
        let mut after_seq = 0i64;
        loop {
            if stop.is_cancelled() {
                return Ok(run);
            }
            let (n, last, end) = self
                .write(move |c| txn_batch(c, after_seq, cutoff_ms))
                .await?;
            run.txns += n;
            run.batches += 1;
            after_seq = last;
            if end {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        let mut after = String::new();
        loop {
            if stop.is_cancelled() {
                return Ok(run);
            }
            let a = after.clone();
            let (s, r, t, last, end) = self.write(move |c| sale_batch(c, &a, cutoff_ms)).await?;
            run.sales += s;
            run.returns += r;
            run.txns += t;
            run.batches += 1;
            after = last;
            if end {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        Ok(run)
    }
}
