//! Embedded, numbered migrations. `PRAGMA user_version` records how far a database got; a
//! database newer than this binary is refused at start-up rather than touched.

use rusqlite::Connection;

use super::StoreError;

/// Each entry moves the schema from version `i` to `i + 1`. Append only; never edit one that
/// has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: cache, outbox, sync cursors.
    r#"
CREATE TABLE customers (
    customer_id         TEXT PRIMARY KEY,
    code                TEXT,
    barcode             TEXT,
    name                TEXT,
    confirmed           INTEGER NOT NULL DEFAULT 0,
    expires_at          TEXT,
    upstream_updated_at TEXT,
    -- When `confirmed` was last confirmed by the upstream (unix ms); NULL = never.
    as_of               INTEGER,
    -- Bumped from sync_state.apply_counter whenever a push confirms a new balance, so a pull
    -- that started earlier cannot overwrite it with an older figure.
    applied_rev         INTEGER NOT NULL DEFAULT 0,
    -- Created offline for a customer the cache did not know (offline.allow_unknown_customers).
    local_only          INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX customers_code ON customers(code) WHERE code IS NOT NULL;
CREATE INDEX customers_barcode ON customers(barcode) WHERE barcode IS NOT NULL;

CREATE TABLE txns (
    -- The outbox order: per-customer FIFO follows seq, never a timestamp.
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id           TEXT NOT NULL UNIQUE,
    request          TEXT NOT NULL,
    customer_id      TEXT NOT NULL REFERENCES customers(customer_id),
    kind             TEXT NOT NULL CHECK (kind IN ('earn','redeem','adjust')),
    delta            INTEGER NOT NULL,
    points           INTEGER,
    purchase_amount  INTEGER,
    reason           TEXT,
    register_id      TEXT,
    staff_id         TEXT,
    token_name       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN
                       ('pending','sending','ambiguous','applied','rejected','needs_review','discarded')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    -- Evidence recorded before each send, for the ambiguous read-back.
    before_balance   INTEGER,
    before_updated_at TEXT,
    upstream_balance INTEGER,
    upstream_result  TEXT,
    updated_at       INTEGER NOT NULL,
    resolved_by      TEXT,
    resolution_note  TEXT
) STRICT;
CREATE INDEX txns_open_by_customer ON txns(customer_id, seq)
    WHERE state IN ('pending','sending','ambiguous');
CREATE INDEX txns_state ON txns(state, seq);
CREATE INDEX txns_customer ON txns(customer_id, seq);

CREATE TABLE sync_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
INSERT INTO sync_state(key, value) VALUES ('apply_counter', '0');
"#,
    // 2: audit trail of review-queue decisions.
    r#"
CREATE TABLE resolutions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id      TEXT NOT NULL REFERENCES txns(txn_id),
    from_state  TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('applied','resend','discard')),
    resolved_by TEXT NOT NULL,
    note        TEXT NOT NULL,
    at          INTEGER NOT NULL
) STRICT;
"#,
    // 3: keep the push worker's queries independent of the history size. Without these, every
    // claim scans past all applied rows (11 ms per claim at 90k applied rows, 0.02 ms with).
    r#"
CREATE INDEX txns_due ON txns(seq) WHERE state IN ('pending','ambiguous');
CREATE INDEX txns_due_at ON txns(next_attempt_at) WHERE state IN ('pending','ambiguous');
CREATE INDEX txns_open_seq ON txns(seq) WHERE state IN ('pending','sending','ambiguous');
"#,
];

pub fn known_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub fn migrate(conn: &mut Connection, path_for_errors: &str) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > known_version() {
        return Err(StoreError::SchemaTooNew {
            path: path_for_errors.to_string(),
            found: version,
            known: known_version(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
