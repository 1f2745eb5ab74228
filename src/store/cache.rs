//! The customer cache: look-ups, directory and balance upserts from the pulls, and the
//! discrepancies a full pull finds.

use super::*;

#[derive(Debug, Clone, Copy)]
pub enum LookupColumn {
    Code,
    Barcode,
}

/// A customer whose upstream balance is not what the cache last confirmed: changed elsewhere
/// (another store, the online shop, an operator) or lost. Reported, never "fixed" upstream.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Discrepancy {
    pub customer_id: String,
    pub cached_confirmed: i64,
    pub upstream: i64,
    pub difference: i64,
    pub cached_as_of: i64,
}

impl Store {
    pub async fn customer(&self, id: &str) -> Result<Option<CustomerRow>, StoreError> {
        self.read_point(|c| customer_by_id(c, id))
    }

    /// Look-up by member code or barcode (the first match).
    pub async fn customer_by(
        &self,
        column: LookupColumn,
        value: &str,
    ) -> Result<Option<CustomerRow>, StoreError> {
        self.read_point(|c| {
            c.prepare_cached(match column {
                LookupColumn::Code => CUSTOMER_BY_CODE,
                LookupColumn::Barcode => CUSTOMER_BY_BARCODE,
            })?
            .query_row([value], customer_from_row)
            .optional()
        })
    }

    pub async fn customer_count(&self) -> Result<i64, StoreError> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0)))
            .await
    }

    /// The customer directory from upstream: insert new customers, refresh names and codes.
    pub async fn upsert_customers(&self, items: Vec<UpstreamCustomer>) -> Result<(), StoreError> {
        self.write(move |c| {
            let mut st = c.prepare_cached(
                "INSERT INTO customers(customer_id, code, barcode, name) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(customer_id) DO UPDATE SET code = excluded.code, \
                   barcode = excluded.barcode, name = excluded.name",
            )?;
            for it in &items {
                st.execute(params![it.customer_id, it.code, it.barcode, it.name])?;
            }
            Ok(())
        })
        .await
    }

    /// Confirmed balances from upstream. A customer with a send in flight, or whose balance a
    /// push confirmed after this pull started (`started_rev`), keeps what it has: the pulled
    /// figure may predate our own change (pending deltas are overlaid, never double counted).
    ///
    /// Returns how many rows were updated and, for reconciliation, every customer whose
    /// previously confirmed figure differs from the upstream's (nothing is corrected upstream).
    pub async fn upsert_balances(
        &self,
        items: Vec<UpstreamBalance>,
        started_rev: i64,
        now_ms: i64,
    ) -> Result<(usize, Vec<Discrepancy>), StoreError> {
        self.write(move |c| {
            let mut check = c.prepare_cached(
                // In flight = open and not pending; the open-rows condition lets the
                // planner use the index.
                concat!(
                    "SELECT confirmed, as_of, applied_rev <= ?2 AND NOT EXISTS (SELECT 1 FROM txns t \
                       INDEXED BY txns_open_by_customer WHERE t.customer_id = customers.customer_id \
                       AND ",
                    open_rows!("t"),
                    " AND t.state <> 'pending') FROM customers WHERE customer_id = ?1"
                ),
            )?;
            let mut up = c.prepare_cached(
                "INSERT INTO customers(customer_id, confirmed, expires_at, upstream_updated_at, as_of) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(customer_id) DO UPDATE SET confirmed = excluded.confirmed, \
                   expires_at = excluded.expires_at, upstream_updated_at = excluded.upstream_updated_at, \
                   as_of = excluded.as_of, local_only = 0",
            )?;
            let mut n = 0;
            let mut diffs = Vec::new();
            for it in &items {
                let existing: Option<(i64, Option<i64>, bool)> = check
                    .query_row(params![it.customer_id, started_rev], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                match existing {
                    Some((_, _, false)) => continue,
                    Some((cached, Some(as_of), true)) if cached != it.point => {
                        diffs.push(Discrepancy {
                            customer_id: it.customer_id.clone(),
                            cached_confirmed: cached,
                            upstream: it.point,
                            difference: it.point - cached,
                            cached_as_of: as_of,
                        })
                    }
                    _ => {}
                }
                n += up.execute(params![
                    it.customer_id,
                    it.point,
                    it.expires_at,
                    it.updated_at,
                    now_ms
                ])?;
                if let Some(ms) = it.updated_at.as_deref().and_then(crate::clock::parse_stamp) {
                    c.prepare_cached(feed::CLEAR_MARK)?
                        .execute(params![it.customer_id, ms])?;
                }
            }
            Ok((n, diffs))
        })
        .await
    }
}
