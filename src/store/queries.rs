//! Listing and counting: the transaction history, queue stats, and the meta table.

use super::*;

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    pub pending: i64,
    pub sending: i64,
    pub ambiguous: i64,
    pub applied: i64,
    pub needs_review: i64,
    pub rejected: i64,
    pub discarded: i64,
    pub oldest_pending_created_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct TxnFilter {
    pub state: Option<State>,
    pub customer_id: Option<String>,
    pub register_id: Option<String>,
    pub limit: u32,
}

/// The keys of the `sync_state` table: nothing outside the store names them as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    /// When the last full pull finished (unix ms).
    LastFullRefreshAt,
    /// The last reconcile report (JSON).
    LastReconcile,
    /// The change feed has stored every change up to this time (unix ms).
    FeedWatermark,
    /// The last cross-ledger (Smaregi / easyPoints) report (JSON).
    LastLedgerReport,
    /// The last check that Smapify carries this store's changes to easyPoints (JSON).
    SmapifyCheck,
    /// The store's point conditions as Smaregi last gave them (JSON): who grants.
    StorePoints,
}

impl Meta {
    pub fn as_str(self) -> &'static str {
        match self {
            Meta::LastFullRefreshAt => "last_full_refresh_at",
            Meta::LastReconcile => "last_reconcile",
            Meta::FeedWatermark => "feed_watermark_ms",
            Meta::LastLedgerReport => "last_ledger_report",
            Meta::SmapifyCheck => "smapify_check",
            Meta::StorePoints => "store_point_condition",
        }
    }
}

impl Store {
    pub async fn txn(&self, txn_id: &str) -> Result<Option<TxnRow>, StoreError> {
        self.read_point(|c| txn_by_id(c, txn_id))
    }

    pub async fn list_txns(&self, f: TxnFilter) -> Result<Vec<TxnRow>, StoreError> {
        self.read(move |c| {
            let mut args: Vec<String> = Vec::new();
            // A customer's history lives in two partial indexes (open and closed rows); the
            // merge of both keeps seq order without sorting.
            let from = match &f.customer_id {
                Some(cid) => {
                    args.push(cid.clone());
                    format!(concat!(
                        "(SELECT {TXN_COLS} FROM txns INDEXED BY txns_open_by_customer \
                               WHERE customer_id = ?1 AND ",
                        open_rows!(),
                        " UNION ALL SELECT {TXN_COLS} FROM txns INDEXED BY txns_closed_by_customer \
                           WHERE customer_id = ?1 AND (state = 'applied' OR state = 'rejected' \
                           OR state = 'needs_review' OR state = 'discarded'))"
                        ),
                        TXN_COLS = TXN_COLS
                    )
                }
                None => "txns".into(),
            };
            let mut sql = format!("SELECT {TXN_COLS} FROM {from} WHERE 1=1");
            if let Some(s) = f.state {
                args.push(s.as_str().into());
                sql.push_str(&format!(" AND state = ?{}", args.len()));
            }
            if let Some(r) = &f.register_id {
                args.push(r.clone());
                sql.push_str(&format!(" AND register_id = ?{}", args.len()));
            }
            sql.push_str(&format!(
                " ORDER BY seq DESC LIMIT {}",
                f.limit.clamp(1, 1000)
            ));
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args.iter()), txn_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.read(|c| {
            let mut q = QueueStats::default();
            let mut st = c.prepare_cached("SELECT state, n FROM txn_counts")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let s: String = r.get(0)?;
                let n: i64 = r.get(1)?;
                match State::parse(&s) {
                    Some(State::Pending) => q.pending = n,
                    Some(State::Sending) => q.sending = n,
                    Some(State::Ambiguous) => q.ambiguous = n,
                    Some(State::Applied) => q.applied = n,
                    Some(State::NeedsReview) => q.needs_review = n,
                    Some(State::Rejected) => q.rejected = n,
                    Some(State::Discarded) => q.discarded = n,
                    None => {}
                }
            }
            // The oldest open row by sequence is the oldest by acceptance (one index step).
            q.oldest_pending_created_at = c
                .prepare_cached(concat!(
                    "SELECT created_at FROM txns INDEXED BY txns_open_seq WHERE ",
                    open_rows!(),
                    " ORDER BY seq LIMIT 1"
                ))?
                .query_row([], |r| r.get(0))
                .optional()?;
            Ok(q)
        })
        .await
    }

    /// Whether any transaction is waiting to go upstream (one step of the open-rows index).
    pub async fn has_open(&self) -> Result<bool, StoreError> {
        self.read(|c| {
            c.prepare_cached(concat!(
                "SELECT EXISTS (SELECT 1 FROM txns INDEXED BY txns_open_seq WHERE ",
                open_rows!(),
                ")"
            ))?
            .query_row([], |r| r.get(0))
        })
        .await
    }

    pub async fn meta(&self, key: Meta) -> Result<Option<String>, StoreError> {
        let key = key.as_str();
        self.read(move |c| {
            c.prepare_cached("SELECT value FROM sync_state WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()
        })
        .await
    }

    pub async fn set_meta(&self, key: Meta, value: String) -> Result<(), StoreError> {
        let key = key.as_str();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO sync_state(key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
            Ok(())
        })
        .await
    }
}
