//! Row types and their mapping from SQL: a cached customer, an outbox row.

use super::*;

/// A cached customer with its balance parts.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerRow {
    pub customer_id: String,
    pub code: Option<String>,
    pub barcode: Option<String>,
    pub name: Option<String>,
    pub confirmed: i64,
    pub pending: i64,
    pub expires_at: Option<String>,
    pub upstream_updated_at: Option<String>,
    pub as_of: Option<i64>,
    pub local_only: bool,
    /// The change feed saw this customer's points move elsewhere at this upstream stamp, and
    /// the balance has not been re-read since: `confirmed` may be out of date.
    pub changed_elsewhere_at: Option<String>,
    /// When the agent marked it (unix ms).
    pub marked_at: Option<i64>,
    /// The easyPoints figures last read for this customer (Smapify merchants only).
    pub easypoints: Option<EasyPointsCached>,
}

/// What the last easyPoints read said about a customer.
#[derive(Debug, Clone, Serialize)]
pub struct EasyPointsCached {
    pub shopify_id: String,
    /// `None`: easyPoints has no balance for this customer.
    pub balance: Option<i64>,
    pub expires_at: Option<String>,
    pub expires_ms: Option<i64>,
    /// Months without activity before the whole balance expires.
    pub expiration_delay: Option<i64>,
    /// When it was read (unix ms).
    pub read_at: i64,
}

impl CustomerRow {
    pub fn balance(&self) -> Balance {
        Balance::new(self.confirmed, self.pending)
    }

    /// Are the confirmed points past their expiry? Smaregi's date (JST `today`), or, for a
    /// Smapify merchant, the instant easyPoints gave (its expiry is the one that counts there:
    /// Smapify keeps Smaregi's empty).
    pub fn expired(&self, today: &str, now_ms: i64) -> bool {
        ledger::is_expired(self.expires_at.as_deref(), today)
            || ledger::is_expired_at(self.easypoints.as_ref().and_then(|e| e.expires_ms), now_ms)
    }

    /// When easyPoints (the ledger that owns expiry for a Smapify merchant) says the points
    /// expired, if they have by `now_ms`: its date as it gave it (else the instant, RFC 3339).
    pub fn owner_expired_at(&self, now_ms: i64) -> Option<String> {
        let e = self.easypoints.as_ref()?;
        let ms = e.expires_ms.filter(|t| now_ms >= *t)?;
        Some(
            e.expires_at
                .clone()
                .unwrap_or_else(|| crate::clock::rfc3339(ms)),
        )
    }
}

/// One outbox row.
#[derive(Debug, Clone, Serialize)]
pub struct TxnRow {
    pub seq: i64,
    pub txn_id: String,
    pub request: String,
    pub customer_id: String,
    pub kind: ledger::OutboxKind,
    pub delta: i64,
    pub points: Option<i64>,
    pub purchase_amount: Option<i64>,
    pub reason: Option<String>,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
    pub token_name: String,
    pub created_at: i64,
    pub state: State,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub before_balance: Option<i64>,
    pub before_updated_at: Option<String>,
    pub upstream_balance: Option<i64>,
    pub upstream_result: Option<String>,
    pub updated_at: i64,
    pub resolved_by: Option<String>,
    pub resolution_note: Option<String>,
    /// JSON array of the upstream's transaction ids this send created, when known.
    pub upstream_txn_ids: Option<String>,
}

pub(super) const TXN_COLS: &str = "seq, txn_id, request, customer_id, kind, delta, points, purchase_amount, reason, \
    register_id, staff_id, token_name, created_at, state, attempts, next_attempt_at, last_error, \
    before_balance, before_updated_at, upstream_balance, upstream_result, updated_at, resolved_by, \
    resolution_note, upstream_txn_ids";

pub(super) fn txn_from_row(r: &Row<'_>) -> rusqlite::Result<TxnRow> {
    let state: String = r.get(13)?;
    Ok(TxnRow {
        seq: r.get(0)?,
        txn_id: r.get(1)?,
        request: r.get(2)?,
        customer_id: r.get(3)?,
        kind: {
            let k: String = r.get(4)?;
            ledger::OutboxKind::parse(&k).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    rusqlite::types::Type::Text,
                    format!("unknown transaction kind {k:?}").into(),
                )
            })?
        },
        delta: r.get(5)?,
        points: r.get(6)?,
        purchase_amount: r.get(7)?,
        reason: r.get(8)?,
        register_id: r.get(9)?,
        staff_id: r.get(10)?,
        token_name: r.get(11)?,
        created_at: r.get(12)?,
        state: State::parse(&state).unwrap_or(State::NeedsReview),
        attempts: r.get(14)?,
        next_attempt_at: r.get(15)?,
        last_error: r.get(16)?,
        before_balance: r.get(17)?,
        before_updated_at: r.get(18)?,
        upstream_balance: r.get(19)?,
        upstream_result: r.get(20)?,
        updated_at: r.get(21)?,
        resolved_by: r.get(22)?,
        resolution_note: r.get(23)?,
        upstream_txn_ids: r.get(24)?,
    })
}

/// The customer columns with the pending sum and the easyPoints figures, as a literal so each
/// look-up's SQL is a constant (no string built per request to find the cached statement).
macro_rules! customer_select {
    () => {
        concat!(
    "SELECT c.customer_id, c.code, c.barcode, c.name, c.confirmed, \
    (SELECT COALESCE(SUM(t.delta), 0) FROM txns t INDEXED BY txns_open_by_customer \
       WHERE t.customer_id = c.customer_id AND ",
    open_rows!("t"),
    "), c.expires_at, c.upstream_updated_at, c.as_of, c.local_only, c.changed_elsewhere_at, \
    c.marked_at, e.ep_shopify_id, e.ep_balance, e.ep_expires_at, e.ep_expires_ms, \
    e.ep_delay_months, e.ep_read_at FROM customers c \
    LEFT JOIN easypoints_balances e ON e.ep_customer = c.customer_id"
)
    };
}

/// Look-up by id; [`CUSTOMER_BY_CODE`] and [`CUSTOMER_BY_BARCODE`] by the other keys.
pub(super) const CUSTOMER_BY_ID: &str = concat!(customer_select!(), " WHERE c.customer_id = ?1");
pub(super) const CUSTOMER_BY_CODE: &str = concat!(
    customer_select!(),
    " WHERE c.code = ?1 ORDER BY c.customer_id LIMIT 1"
);
pub(super) const CUSTOMER_BY_BARCODE: &str = concat!(
    customer_select!(),
    " WHERE c.barcode = ?1 ORDER BY c.customer_id LIMIT 1"
);

pub(super) fn customer_from_row(r: &Row<'_>) -> rusqlite::Result<CustomerRow> {
    Ok(CustomerRow {
        customer_id: r.get(0)?,
        code: r.get(1)?,
        barcode: r.get(2)?,
        name: r.get(3)?,
        confirmed: r.get(4)?,
        pending: r.get(5)?,
        expires_at: r.get(6)?,
        upstream_updated_at: r.get(7)?,
        as_of: r.get(8)?,
        local_only: r.get::<_, i64>(9)? != 0,
        changed_elsewhere_at: r.get(10)?,
        marked_at: r.get(11)?,
        easypoints: match r.get::<_, Option<i64>>(17)? {
            Some(read_at) => Some(EasyPointsCached {
                shopify_id: r.get(12)?,
                balance: r.get(13)?,
                expires_at: r.get(14)?,
                expires_ms: r.get(15)?,
                expiration_delay: r.get(16)?,
                read_at,
            }),
            None => None,
        },
    })
}

pub fn customer_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<CustomerRow>> {
    conn.prepare_cached(CUSTOMER_BY_ID)?
        .query_row([id], customer_from_row)
        .optional()
}

pub fn txn_by_id(conn: &Connection, txn_id: &str) -> rusqlite::Result<Option<TxnRow>> {
    conn.prepare_cached(&format!("SELECT {TXN_COLS} FROM txns WHERE txn_id = ?1"))?
        .query_row([txn_id], txn_from_row)
        .optional()
}

pub(super) fn txn_by_seq(conn: &Connection, seq: i64) -> rusqlite::Result<TxnRow> {
    conn.prepare_cached(&format!("SELECT {TXN_COLS} FROM txns WHERE seq = ?1"))?
        .query_row([seq], txn_from_row)
}
