//! What the change feed writes (DESIGN.md §9): customers marked "changed elsewhere" until a
//! re-read answers the mark, and the feed's own watermark.
//!
//! A mark holds the upstream stamp of the change seen. A later balance whose stamp is in the
//! same second or after clears it: the feed saw the change before the re-read was asked for,
//! so the re-read includes it even when whole-second stamps tie.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// Clears customer ?1's mark if a balance stamped ?2 (unix ms) answers it.
pub(super) const CLEAR_MARK: &str = "UPDATE customers SET changed_elsewhere_at = NULL, \
    changed_elsewhere_ms = NULL, marked_at = NULL \
    WHERE customer_id = ?1 AND marked_at IS NOT NULL AND changed_elsewhere_ms / 1000 <= ?2 / 1000";

/// The same for the customer of outbox row ?1.
pub(super) const CLEAR_MARK_OF_SEQ: &str = "UPDATE customers SET changed_elsewhere_at = NULL, \
    changed_elsewhere_ms = NULL, marked_at = NULL \
    WHERE customer_id = (SELECT customer_id FROM txns WHERE seq = ?1) \
      AND marked_at IS NOT NULL AND changed_elsewhere_ms / 1000 <= ?2 / 1000";

/// A change the feed saw for one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenChange {
    pub customer_id: String,
    /// The upstream's stamp of the change, as it sent it.
    pub stamp: String,
    pub stamp_ms: i64,
    /// Mark only if strictly newer (by whole seconds) than the cached figure — for a
    /// directory stamp, which cannot tell our own change from another's in the same second.
    pub strictly_newer: bool,
}

impl Store {
    /// Marks customers whose points may have moved elsewhere. A change older (by whole
    /// seconds) than the balance the cache holds is already in it and marks nothing; a customer
    /// the cache does not know is left to the directory. Returns how many were newly marked.
    pub async fn mark_changed(
        &self,
        changes: Vec<SeenChange>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        self.write(move |c| {
            let mut get = c.prepare_cached(
                "SELECT upstream_updated_at, changed_elsewhere_ms, marked_at FROM customers \
                 WHERE customer_id = ?1",
            )?;
            let mut set = c.prepare_cached(
                "UPDATE customers SET changed_elsewhere_at = ?2, changed_elsewhere_ms = ?3, \
                   marked_at = COALESCE(marked_at, ?4) WHERE customer_id = ?1",
            )?;
            let mut newly = 0;
            for ch in &changes {
                let row: Option<(Option<String>, Option<i64>, Option<i64>)> = get
                    .query_row([&ch.customer_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let Some((cached, marked_ms, marked_at)) = row else {
                    continue;
                };
                let cached_ms = cached.as_deref().and_then(crate::clock::parse_stamp);
                let older = |m: i64| {
                    if ch.strictly_newer {
                        ch.stamp_ms / 1000 <= m / 1000
                    } else {
                        ch.stamp_ms / 1000 < m / 1000
                    }
                };
                if cached_ms.is_some_and(older) {
                    continue;
                }
                if marked_ms.is_some_and(|m| m >= ch.stamp_ms) {
                    continue;
                }
                set.execute(params![ch.customer_id, ch.stamp, ch.stamp_ms, now_ms])?;
                if marked_at.is_none() {
                    newly += 1;
                }
            }
            Ok(newly)
        })
        .await
    }

    /// Whether one of this agent's sends for the customer is on the wire or unverified: a
    /// transaction the feed lists for them may then be that send's, not another store's.
    pub async fn has_unsettled(&self, customer_id: &str) -> Result<bool, StoreError> {
        let id = customer_id.to_string();
        self.read(move |c| {
            c.prepare_cached(concat!(
                "SELECT EXISTS (SELECT 1 FROM txns t INDEXED BY txns_open_by_customer \
                 WHERE t.customer_id = ?1 AND ",
                open_rows!("t"),
                " AND t.state <> 'pending')"
            ))?
            .query_row([id], |r| r.get(0))
        })
        .await
    }

    /// Marked customers, oldest mark first (the background re-read's queue).
    pub async fn marked_customers(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT customer_id FROM customers INDEXED BY customers_marked \
                 WHERE marked_at IS NOT NULL ORDER BY marked_at LIMIT ?1",
            )?;
            st.query_map([limit as i64], |r| r.get(0))?.collect()
        })
        .await
    }

    /// How many customers are marked, and when the oldest mark was set (unix ms).
    pub async fn marked_stats(&self) -> Result<(i64, Option<i64>), StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*), MIN(marked_at) FROM customers INDEXED BY customers_marked \
                 WHERE marked_at IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamBalance;

    fn bal(id: &str, point: i64, stamp: &str) -> UpstreamBalance {
        UpstreamBalance {
            customer_id: id.into(),
            point,
            expires_at: None,
            updated_at: Some(stamp.into()),
        }
    }

    fn change(id: &str, stamp: &str) -> SeenChange {
        SeenChange {
            customer_id: id.into(),
            stamp: stamp.into(),
            stamp_ms: crate::clock::parse_stamp(stamp).unwrap(),
            strictly_newer: false,
        }
    }

    #[tokio::test]
    async fn a_mark_stays_until_a_balance_of_the_same_second_or_later_answers_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        s.upsert_balances(vec![bal("1", 100, "2026-12-01T10:00:05+09:00")], 0, 1)
            .await
            .unwrap();
        // Older than the cached figure: already in it.
        let n = s
            .mark_changed(vec![change("1", "2026-12-01T10:00:04+09:00")], 2)
            .await
            .unwrap();
        assert_eq!(n, 0);
        // Same second: cannot tell, so marked. Unknown customers are not.
        let n = s
            .mark_changed(
                vec![
                    change("1", "2026-12-01T10:00:05+09:00"),
                    change("9", "2026-12-01T10:00:05+09:00"),
                ],
                3,
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let c = s.customer("1").await.unwrap().unwrap();
        assert_eq!(
            c.changed_elsewhere_at.as_deref(),
            Some("2026-12-01T10:00:05+09:00")
        );
        assert_eq!(c.marked_at, Some(3));
        assert_eq!(s.marked_customers(10).await.unwrap(), vec!["1".to_string()]);
        // A later change moves the stamp, keeps the time of the first mark.
        s.mark_changed(vec![change("1", "2026-12-01T10:00:09+09:00")], 4)
            .await
            .unwrap();
        assert_eq!(s.marked_stats().await.unwrap(), (1, Some(3)));
        // A re-read stamped before the change does not answer it; one of its second does.
        s.upsert_balances(vec![bal("1", 120, "2026-12-01T10:00:08+09:00")], 0, 5)
            .await
            .unwrap();
        assert_eq!(s.marked_stats().await.unwrap().0, 1);
        s.upsert_balances(vec![bal("1", 130, "2026-12-01T10:00:09+09:00")], 0, 6)
            .await
            .unwrap();
        assert_eq!(s.marked_stats().await.unwrap(), (0, None));
        let c = s.customer("1").await.unwrap().unwrap();
        assert_eq!((c.confirmed, c.changed_elsewhere_at), (130, None));
    }
}
