//! The easyPoints cache (a Smapify merchant's second ledger, DESIGN.md §12): what a look-up
//! read there, and what the cross-ledger report needs from this store's own history.

use super::*;

/// What one easyPoints read found, as cached.
#[derive(Debug, Clone)]
pub struct EasyPointsRead {
    pub shopify_id: String,
    /// `None`: easyPoints has no balance for this customer (404).
    pub balance: Option<i64>,
    pub expires_at: Option<String>,
    pub expiration_delay: Option<i64>,
}

/// One of this store's transactions for a customer, as the cross-ledger report lists it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RecentDelta {
    pub txn_id: String,
    pub kind: String,
    pub delta: i64,
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: when the row last changed (for an applied row, when Smaregi took it).
    pub updated_at: String,
}

/// What decides whether a customer's two ledgers can be compared now.
#[derive(Debug, Clone, Default)]
pub struct LedgerActivity {
    /// Transactions of this store still on their way to Smaregi.
    pub open: i64,
    /// When this store's last applied transaction for the customer reached Smaregi (unix ms).
    pub last_applied_at: Option<i64>,
}

impl Store {
    /// Caches an easyPoints read (replacing the last one; the difference mark stays).
    pub async fn put_easypoints(
        &self,
        customer_id: &str,
        read: EasyPointsRead,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let id = customer_id.to_string();
        self.write(move |c| {
            let expires_ms = read
                .expires_at
                .as_deref()
                .and_then(crate::clock::parse_stamp);
            c.prepare_cached(
                "INSERT INTO easypoints_balances(ep_customer, ep_shopify_id, ep_balance, \
                   ep_expires_at, ep_expires_ms, ep_delay_months, ep_read_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT(ep_customer) DO UPDATE SET ep_shopify_id = excluded.ep_shopify_id, \
                   ep_balance = excluded.ep_balance, ep_expires_at = excluded.ep_expires_at, \
                   ep_expires_ms = excluded.ep_expires_ms, \
                   ep_delay_months = excluded.ep_delay_months, ep_read_at = excluded.ep_read_at",
            )?
            .execute(params![
                id,
                read.shopify_id,
                read.balance,
                read.expires_at,
                expires_ms,
                read.expiration_delay,
                now_ms
            ])?;
            Ok(())
        })
        .await
    }

    /// Customers this store looked up in easyPoints or wrote a transaction for since
    /// `since_ms`, at most `limit`, most recent first.
    pub async fn ledger_candidates(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM ( \
                   SELECT ep_customer AS id, ep_read_at AS at FROM easypoints_balances \
                     WHERE ep_read_at >= ?1 \
                   UNION ALL SELECT customer_id, created_at FROM txns WHERE created_at >= ?1) \
                 GROUP BY id ORDER BY MAX(at) DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![since_ms, limit as i64], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// This store's transactions for a customer since `since_ms`, newest first.
    pub async fn recent_deltas(
        &self,
        customer_id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<RecentDelta>, StoreError> {
        let id = customer_id.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT txn_id, kind, delta, state, created_at, updated_at FROM txns \
                 WHERE customer_id = ?1 AND created_at >= ?2 ORDER BY seq DESC LIMIT ?3",
            )?;
            let rows = st.query_map(params![id, since_ms, limit as i64], |r| {
                Ok(RecentDelta {
                    txn_id: r.get(0)?,
                    kind: r.get(1)?,
                    delta: r.get(2)?,
                    state: r.get(3)?,
                    created_at: crate::clock::rfc3339(r.get(4)?),
                    updated_at: crate::clock::rfc3339(r.get(5)?),
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// When this store's transactions applied between `from_ms` and `to_ms` reached Smaregi
    /// (unix ms, oldest first; at most `limit`).
    pub async fn applied_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT updated_at FROM txns INDEXED BY txns_state WHERE state = 'applied' \
                 AND updated_at >= ?1 AND updated_at <= ?2 AND delta <> 0 \
                 ORDER BY updated_at LIMIT ?3",
            )?;
            let rows = st.query_map(params![from_ms, to_ms, limit as i64], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub async fn ledger_activity(&self, customer_id: &str) -> Result<LedgerActivity, StoreError> {
        let id = customer_id.to_string();
        self.read(move |c| {
            let open: i64 = c
                .prepare_cached(concat!(
                    "SELECT COUNT(*) FROM txns INDEXED BY txns_open_by_customer \
                     WHERE customer_id = ?1 AND ",
                    open_rows!()
                ))?
                .query_row([&id], |r| r.get(0))?;
            let last_applied_at: Option<i64> = c
                .prepare_cached(
                    "SELECT MAX(updated_at) FROM txns WHERE customer_id = ?1 AND state = 'applied'",
                )?
                .query_row([&id], |r| r.get(0))?;
            Ok(LedgerActivity {
                open,
                last_applied_at,
            })
        })
        .await
    }

    /// Notes whether a report saw the customer's ledgers differ; returns since when (unix ms)
    /// they have been seen differing, kept from the first report that saw it.
    pub async fn mark_ledger_difference(
        &self,
        customer_id: &str,
        differs: bool,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let id = customer_id.to_string();
        self.write(move |c| {
            let since: Option<i64> = if differs {
                c.prepare_cached(
                    "UPDATE easypoints_balances SET ep_diff_since = COALESCE(ep_diff_since, ?2) \
                     WHERE ep_customer = ?1 RETURNING ep_diff_since",
                )?
                .query_row(params![id, now_ms], |r| r.get(0))
                .optional()?
            } else {
                c.prepare_cached(
                    "UPDATE easypoints_balances SET ep_diff_since = NULL WHERE ep_customer = ?1",
                )?
                .execute([&id])?;
                None
            };
            Ok(since)
        })
        .await
    }
}
