//! Register sales the change feed saw (DESIGN.md §14), and the possible double counts they
//! make with this store's own purchase grants and redeems: found and listed, never corrected.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// A register's sale, return or void of a member that moved points, as the feed saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterSaleRow {
    pub transaction_head_id: String,
    pub customer_id: String,
    pub store_id: Option<String>,
    /// `sale`, `return` or `void`.
    pub kind: &'static str,
    pub new_point: i64,
    pub spend_point: i64,
    /// `transactionDateTime` as Smaregi sent it, and in unix ms (the register's own time).
    pub sold_at: Option<String>,
    pub sold_ms: i64,
    /// `updDateTime` in unix ms: when it reached Smaregi.
    pub upd_ms: i64,
}

/// The register's side of a possible double count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterSide {
    pub transaction_head_id: String,
    pub store_id: Option<String>,
    /// `newPoint` (kind earn) or `spendPoint` (kind use).
    pub points: i64,
    /// When the register rang it up (RFC 3339).
    pub at: String,
}

/// pointsd's side: a transaction (`txn_id`) or a sale (`sale_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PointsdSide {
    pub id: String,
    /// Points granted (kind earn) or used (kind use).
    pub points: i64,
    /// When pointsd accepted it (RFC 3339).
    pub at: String,
}

/// A register sale and a pointsd operation for the same customer, close in time, that may
/// have counted the same purchase twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PossibleDouble {
    pub customer_id: String,
    /// `earn`: both granted points for a purchase; `use`: both took points used.
    pub kind: String,
    pub register: RegisterSide,
    pub pointsd: PointsdSide,
}

/// Most doubles listed at once (the newest first).
const MAX_DOUBLES: usize = 1000;

/// How far back register sales are compared (older doubles are a matter for the ledger's
/// history, not for today's manager).
pub const DOUBLES_LOOKBACK_MS: i64 = 31 * 24 * 3600 * 1000;

/// Register sales (not returns or voids) that earned or used points, sold since ?1.
const RECENT_REGISTER_SALES: &str = "SELECT customer_id, transaction_head_id, store_id, \
    new_point, spend_point, sold_ms FROM register_sales INDEXED BY register_sales_sold \
    WHERE sold_ms >= ?1 AND kind = 'sale' ORDER BY sold_ms DESC";

/// One customer's earns and redeems accepted between ?2 and ?3, open and closed (the two
/// partial indexes by customer; a rejected or discarded send moved nothing and is left out).
const TXNS_NEAR_OPEN: &str = "SELECT txn_id, kind, delta, purchase_amount, created_at FROM txns \
    INDEXED BY txns_open_by_customer WHERE customer_id = ?1 \
      AND (state = 'pending' OR state = 'sending' OR state = 'ambiguous') \
      AND created_at BETWEEN ?2 AND ?3 AND (kind = 'earn' OR kind = 'redeem')";
const TXNS_NEAR_CLOSED: &str = "SELECT txn_id, kind, delta, purchase_amount, created_at FROM txns \
    INDEXED BY txns_closed_by_customer WHERE customer_id = ?1 \
      AND (state = 'applied' OR state = 'rejected' OR state = 'needs_review' OR state = 'discarded') \
      AND state <> 'rejected' AND state <> 'discarded' \
      AND created_at BETWEEN ?2 AND ?3 AND (kind = 'earn' OR kind = 'redeem')";
/// One customer's sales (recorded here, not from a receipt) between ?2 and ?3.
const SALES_NEAR: &str = "SELECT sale_id, points_earned, points_used, created_at FROM sales \
    WHERE customer_id = ?1 AND created_at BETWEEN ?2 AND ?3 AND external = 0";

/// Register sales sold before ?1 with no operation of this store for the same customer within
/// ?2 ms of them can no longer make a double (every operation that could pair with them has
/// been accepted by then): they are dropped, so the table holds the recent ones and the
/// pairs, not every member sale of the whole chain. Each `txns` probe names the states of one
/// of its two partial indexes by customer.
const PRUNE_REGISTER_SALES: &str = "\
DELETE FROM register_sales WHERE sold_ms < ?1
  AND NOT EXISTS (SELECT 1 FROM sales s WHERE s.customer_id = register_sales.customer_id
        AND s.created_at BETWEEN register_sales.sold_ms - ?2 AND register_sales.sold_ms + ?2)
  AND NOT EXISTS (SELECT 1 FROM txns t INDEXED BY txns_open_by_customer
        WHERE t.customer_id = register_sales.customer_id
          AND (t.state = 'pending' OR t.state = 'sending' OR t.state = 'ambiguous')
          AND t.created_at BETWEEN register_sales.sold_ms - ?2 AND register_sales.sold_ms + ?2)
  AND NOT EXISTS (SELECT 1 FROM txns t INDEXED BY txns_closed_by_customer
        WHERE t.customer_id = register_sales.customer_id
          AND (t.state = 'applied' OR t.state = 'rejected' OR t.state = 'needs_review' OR t.state = 'discarded')
          AND t.created_at BETWEEN register_sales.sold_ms - ?2 AND register_sales.sold_ms + ?2)";

/// How long after its sale time a register sale waits for a pointsd operation to pair with,
/// beyond the window itself (the feed sees sales tens of seconds after they reach Smaregi).
const PAIRING_GRACE_MS: i64 = 5 * 60_000;

impl Store {
    /// Drops register sales that can no longer make a double (see `PRUNE_REGISTER_SALES`);
    /// returns how many.
    pub async fn prune_register_sales(
        &self,
        window_ms: i64,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        self.write(move |c| {
            Ok(c.prepare_cached(PRUNE_REGISTER_SALES)?
                .execute(params![now_ms - window_ms - PAIRING_GRACE_MS, window_ms])?)
        })
        .await
    }

    /// Keeps the register sales the feed saw (once each); returns how many were new.
    pub async fn record_register_sales(
        &self,
        rows: Vec<RegisterSaleRow>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.write(move |c| {
            let mut ins = c.prepare_cached(
                "INSERT OR IGNORE INTO register_sales(transaction_head_id, customer_id, store_id, \
                   kind, new_point, spend_point, sold_at, sold_ms, upd_ms, seen_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut n = 0;
            for r in &rows {
                n += ins.execute(params![
                    r.transaction_head_id,
                    r.customer_id,
                    r.store_id,
                    r.kind,
                    r.new_point,
                    r.spend_point,
                    r.sold_at,
                    r.sold_ms,
                    r.upd_ms,
                    now_ms
                ])?;
            }
            Ok(n)
        })
        .await
    }

    /// Every possible double count within `window_ms` among the register sales of the last
    /// 31 days (to `now_ms`), newest first: a register sale that earned near a purchase-based
    /// grant here (an earn with a purchase amount, a sale that earned), or one that used
    /// points near a redeem or a sale with points used here.
    pub async fn possible_doubles(
        &self,
        window_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<PossibleDouble>, StoreError> {
        self.read(move |c| {
            let mut out = Vec::new();
            let mut recent = c.prepare_cached(RECENT_REGISTER_SALES)?;
            let regs = recent
                .query_map([now_ms - DOUBLES_LOOKBACK_MS], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut open = c.prepare_cached(TXNS_NEAR_OPEN)?;
            let mut closed = c.prepare_cached(TXNS_NEAR_CLOSED)?;
            let mut sales = c.prepare_cached(SALES_NEAR)?;
            for (customer, head_id, store, new_point, spend_point, sold_ms) in regs {
                let (from, to) = (sold_ms - window_ms, sold_ms + window_ms);
                // (id, earned for a purchase, used, at)
                let mut ours: Vec<(String, i64, i64, i64)> = Vec::new();
                for st in [&mut open, &mut closed] {
                    let rows = st.query_map(params![customer, from, to], |r| {
                        let kind: String = r.get(1)?;
                        let delta: i64 = r.get(2)?;
                        let purchase: Option<i64> = r.get(3)?;
                        let (earned, used) = match kind.as_str() {
                            "earn" if purchase.is_some() => (delta, 0),
                            "redeem" => (0, -delta),
                            _ => (0, 0),
                        };
                        Ok((r.get::<_, String>(0)?, earned, used, r.get::<_, i64>(4)?))
                    })?;
                    for x in rows {
                        ours.push(x?);
                    }
                }
                for x in sales.query_map(params![customer, from, to], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })? {
                    ours.push(x?);
                }
                for (id, earned, used, at) in ours {
                    for (kind, reg_points, our_points) in
                        [("earn", new_point, earned), ("use", spend_point, used)]
                    {
                        if reg_points > 0 && our_points > 0 {
                            out.push(PossibleDouble {
                                customer_id: customer.clone(),
                                kind: kind.into(),
                                register: RegisterSide {
                                    transaction_head_id: head_id.clone(),
                                    store_id: store.clone(),
                                    points: reg_points,
                                    at: crate::clock::rfc3339(sold_ms),
                                },
                                pointsd: PointsdSide {
                                    id: id.clone(),
                                    points: our_points,
                                    at: crate::clock::rfc3339(at),
                                },
                            });
                        }
                    }
                }
                if out.len() >= MAX_DOUBLES {
                    break;
                }
            }
            out.truncate(MAX_DOUBLES);
            Ok(out)
        })
        .await
    }
}
