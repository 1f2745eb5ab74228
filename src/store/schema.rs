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
    // 4: SQLite runs `x IN (three or more constants)` by building a temporary B-tree, on every
    // execution: each insert, state change and look-up built up to four (the CHECKs and the
    // open-row partial indexes) and the allocator churn of creating and dropping their page
    // caches was a third of the writer's time. CHECKs and partial indexes now use OR chains
    // (the queries name the index: `INDEXED BY` and the same OR chain). Customers become
    // WITHOUT ROWID (one B-tree descent per look-up instead of two), and the open-by-customer
    // index carries state and delta, so the pending sum and the FIFO check never touch the
    // table. A customer's history is indexed in two halves, open and closed: an acknowledged
    // earn then writes one index entry at a customer-keyed (random) place instead of two, and
    // the closed half is written when the upstream confirms, off the register's path. Both
    // tables are rebuilt, as SQLite cannot alter a CHECK; seq's high-water mark is carried
    // over.
    r#"
CREATE TABLE customers_v4 (
    customer_id         TEXT PRIMARY KEY NOT NULL,
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
) STRICT, WITHOUT ROWID;
INSERT INTO customers_v4(customer_id, code, barcode, name, confirmed, expires_at,
                         upstream_updated_at, as_of, applied_rev, local_only)
    SELECT customer_id, code, barcode, name, confirmed, expires_at,
           upstream_updated_at, as_of, applied_rev, local_only FROM customers;
DROP TABLE customers;
ALTER TABLE customers_v4 RENAME TO customers;
CREATE INDEX customers_code ON customers(code) WHERE code IS NOT NULL;
CREATE INDEX customers_barcode ON customers(barcode) WHERE barcode IS NOT NULL;

CREATE TABLE txns_v4 (
    -- The outbox order: per-customer FIFO follows seq, never a timestamp.
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id           TEXT NOT NULL UNIQUE,
    request          TEXT NOT NULL,
    customer_id      TEXT NOT NULL REFERENCES customers(customer_id),
    kind             TEXT NOT NULL CHECK (kind = 'earn' OR kind = 'redeem' OR kind = 'adjust'),
    delta            INTEGER NOT NULL,
    points           INTEGER,
    purchase_amount  INTEGER,
    reason           TEXT,
    register_id      TEXT,
    staff_id         TEXT,
    token_name       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state = 'pending' OR state = 'sending'
                       OR state = 'ambiguous' OR state = 'applied' OR state = 'rejected'
                       OR state = 'needs_review' OR state = 'discarded'),
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
INSERT INTO txns_v4 SELECT seq, txn_id, request, customer_id, kind, delta, points,
    purchase_amount, reason, register_id, staff_id, token_name, created_at, state, attempts,
    next_attempt_at, last_error, before_balance, before_updated_at, upstream_balance,
    upstream_result, updated_at, resolved_by, resolution_note FROM txns;
INSERT INTO sqlite_sequence(name, seq)
    SELECT 'txns_v4', seq FROM sqlite_sequence WHERE name = 'txns'
      AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'txns_v4');
UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'txns'))
    WHERE name = 'txns_v4' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'txns');
DROP TABLE txns;
ALTER TABLE txns_v4 RENAME TO txns;
CREATE INDEX txns_open_by_customer ON txns(customer_id, seq, state, delta)
    WHERE state = 'pending' OR state = 'sending' OR state = 'ambiguous';
CREATE INDEX txns_closed_by_customer ON txns(customer_id, seq)
    WHERE state = 'applied' OR state = 'rejected' OR state = 'needs_review' OR state = 'discarded';
CREATE INDEX txns_state ON txns(state, seq);
CREATE INDEX txns_due ON txns(seq) WHERE state IN ('pending','ambiguous');
CREATE INDEX txns_due_at ON txns(next_attempt_at) WHERE state IN ('pending','ambiguous');
CREATE INDEX txns_open_seq ON txns(seq)
    WHERE state = 'pending' OR state = 'sending' OR state = 'ambiguous';

-- Queue counts kept as rows change: `status` and `/metrics` read seven rows instead of
-- counting the whole history (70 ms at 720,000 transactions, growing for years).
CREATE TABLE txn_counts (
    state TEXT PRIMARY KEY NOT NULL,
    n     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO txn_counts(state, n) VALUES ('pending', 0), ('sending', 0), ('ambiguous', 0),
    ('applied', 0), ('rejected', 0), ('needs_review', 0), ('discarded', 0);
UPDATE txn_counts SET n = (SELECT COUNT(*) FROM txns WHERE txns.state = txn_counts.state);
CREATE TRIGGER txn_counts_insert AFTER INSERT ON txns BEGIN
    UPDATE txn_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER txn_counts_update AFTER UPDATE OF state ON txns WHEN OLD.state <> NEW.state BEGIN
    UPDATE txn_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE txn_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER txn_counts_delete AFTER DELETE ON txns BEGIN
    UPDATE txn_counts SET n = n - 1 WHERE state = OLD.state;
END;
"#,
    // 5: the upstream's own ids of the point transactions an applied send created (Smaregi
    // `transactionHeadIds`, a JSON array): the read-back leaves them out when it counts the
    // customer's transactions since a lost send.
    r#"
ALTER TABLE txns ADD COLUMN upstream_txn_ids TEXT;
"#,
    // 6: customers the change feed saw move elsewhere (another store, the online shop, an
    // expiry) and that have not been re-read since: the upstream stamp of the change, and when
    // the agent marked them (oldest are re-read first).
    r#"
ALTER TABLE customers ADD COLUMN changed_elsewhere_at TEXT;
ALTER TABLE customers ADD COLUMN changed_elsewhere_ms INTEGER;
ALTER TABLE customers ADD COLUMN marked_at INTEGER;
CREATE INDEX customers_marked ON customers(marked_at) WHERE marked_at IS NOT NULL;
"#,
    // 7: sales and returns (DESIGN.md §10). A sale is one row here and, when its net delta
    // (earned − used) is not zero, one outbox row of kind 'sale' carrying that delta; a return
    // likewise, kind 'return'. The split (points used, earned, taken back, given back, the
    // shortfall) is kept here for returns and reports. The outbox's kind CHECK cannot be
    // altered in place, so txns is rebuilt as in 4 (rows, seq's high-water mark, indexes and
    // the count triggers carried over).
    r#"
CREATE TABLE txns_v7 (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id           TEXT NOT NULL UNIQUE,
    request          TEXT NOT NULL,
    customer_id      TEXT NOT NULL REFERENCES customers(customer_id),
    kind             TEXT NOT NULL CHECK (kind = 'earn' OR kind = 'redeem' OR kind = 'adjust'
                       OR kind = 'sale' OR kind = 'return'),
    delta            INTEGER NOT NULL,
    points           INTEGER,
    purchase_amount  INTEGER,
    reason           TEXT,
    register_id      TEXT,
    staff_id         TEXT,
    token_name       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state = 'pending' OR state = 'sending'
                       OR state = 'ambiguous' OR state = 'applied' OR state = 'rejected'
                       OR state = 'needs_review' OR state = 'discarded'),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    before_balance   INTEGER,
    before_updated_at TEXT,
    upstream_balance INTEGER,
    upstream_result  TEXT,
    updated_at       INTEGER NOT NULL,
    resolved_by      TEXT,
    resolution_note  TEXT,
    upstream_txn_ids TEXT
) STRICT;
INSERT INTO txns_v7 SELECT seq, txn_id, request, customer_id, kind, delta, points,
    purchase_amount, reason, register_id, staff_id, token_name, created_at, state, attempts,
    next_attempt_at, last_error, before_balance, before_updated_at, upstream_balance,
    upstream_result, updated_at, resolved_by, resolution_note, upstream_txn_ids FROM txns;
INSERT INTO sqlite_sequence(name, seq)
    SELECT 'txns_v7', seq FROM sqlite_sequence WHERE name = 'txns'
      AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'txns_v7');
UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'txns'))
    WHERE name = 'txns_v7' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'txns');
DROP TABLE txns;
ALTER TABLE txns_v7 RENAME TO txns;
CREATE INDEX txns_open_by_customer ON txns(customer_id, seq, state, delta)
    WHERE state = 'pending' OR state = 'sending' OR state = 'ambiguous';
CREATE INDEX txns_closed_by_customer ON txns(customer_id, seq)
    WHERE state = 'applied' OR state = 'rejected' OR state = 'needs_review' OR state = 'discarded';
CREATE INDEX txns_state ON txns(state, seq);
CREATE INDEX txns_due ON txns(seq) WHERE state IN ('pending','ambiguous');
CREATE INDEX txns_due_at ON txns(next_attempt_at) WHERE state IN ('pending','ambiguous');
CREATE INDEX txns_open_seq ON txns(seq)
    WHERE state = 'pending' OR state = 'sending' OR state = 'ambiguous';
CREATE TRIGGER txn_counts_insert AFTER INSERT ON txns BEGIN
    UPDATE txn_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER txn_counts_update AFTER UPDATE OF state ON txns WHEN OLD.state <> NEW.state BEGIN
    UPDATE txn_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE txn_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER txn_counts_delete AFTER DELETE ON txns BEGIN
    UPDATE txn_counts SET n = n - 1 WHERE state = OLD.state;
END;

CREATE TABLE sales (
    sale_id       TEXT PRIMARY KEY NOT NULL,
    -- Canonical request, for idempotent replays.
    request       TEXT NOT NULL,
    customer_id   TEXT NOT NULL REFERENCES customers(customer_id),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    points_used   INTEGER NOT NULL CHECK (points_used >= 0),
    points_earned INTEGER NOT NULL CHECK (points_earned >= 0),
    net_delta     INTEGER NOT NULL,
    -- JSON array of {rule, detail}.
    applied_rules TEXT NOT NULL,
    -- The outbox row; NULL when the net delta is zero (nothing to send).
    txn_id        TEXT,
    -- Recorded from a receipt for a return of a sale this store never recorded.
    external      INTEGER NOT NULL DEFAULT 0,
    register_id   TEXT,
    staff_id      TEXT,
    token_name    TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX sales_customer ON sales(customer_id, created_at);

CREATE TABLE returns (
    return_id         TEXT PRIMARY KEY NOT NULL,
    request           TEXT NOT NULL,
    sale_id           TEXT NOT NULL REFERENCES sales(sale_id),
    amount            INTEGER NOT NULL CHECK (amount > 0),
    -- Earned points actually taken back, and used points given back.
    points_taken_back INTEGER NOT NULL CHECK (points_taken_back >= 0),
    points_given_back INTEGER NOT NULL CHECK (points_given_back >= 0),
    -- Earned points due back but not taken (the customer no longer had them, here or
    -- upstream). taken + shortfall is what the cumulative rule says is due.
    shortfall         INTEGER NOT NULL DEFAULT 0 CHECK (shortfall >= 0),
    net_delta         INTEGER NOT NULL,
    -- The current outbox row (a refused take-back is followed by a smaller one).
    txn_id            TEXT,
    register_id       TEXT,
    staff_id          TEXT,
    token_name        TEXT NOT NULL,
    created_at        INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX returns_sale ON returns(sale_id, created_at);
CREATE INDEX returns_txn ON returns(txn_id) WHERE txn_id IS NOT NULL;
"#,
    // easyPoints, a Smapify merchant's second ledger (DESIGN.md §12), read on look-ups: its
    // balance and inactivity expiry per customer, and since when a cross-ledger report has
    // seen the two ledgers differ. Column names carry `ep_` so a join with `customers` never
    // makes a name ambiguous. A NULL balance: easyPoints knows no such customer.
    r#"
CREATE TABLE easypoints_balances (
    ep_customer      TEXT PRIMARY KEY NOT NULL REFERENCES customers(customer_id),
    ep_shopify_id    TEXT NOT NULL,
    ep_balance       INTEGER,
    ep_expires_at    TEXT,
    ep_expires_ms    INTEGER,
    ep_delay_months  INTEGER,
    ep_read_at       INTEGER NOT NULL,
    ep_diff_since    INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX easypoints_read ON easypoints_balances(ep_read_at);
"#,
    // Register sales the change feed saw (DESIGN.md §14): a Smaregi register's sale, return or
    // void of a member that earned or used points, kept to find possible double counts with
    // this store's own grants and redeems. Never our own `point/add` (division 6/7, and their
    // transactionHeadIds are in txns.upstream_txn_ids). `sold_ms` is the register's own time
    // (transactionDateTime), `upd_ms` when it reached Smaregi (updDateTime).
    r#"
CREATE TABLE register_sales (
    transaction_head_id TEXT PRIMARY KEY NOT NULL,
    customer_id         TEXT NOT NULL,
    store_id            TEXT,
    kind                TEXT NOT NULL CHECK (kind = 'sale' OR kind = 'return' OR kind = 'void'),
    new_point           INTEGER NOT NULL,
    spend_point         INTEGER NOT NULL,
    sold_at             TEXT,
    sold_ms             INTEGER NOT NULL,
    upd_ms              INTEGER NOT NULL,
    seen_at             INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX register_sales_customer ON register_sales(customer_id, sold_ms);
CREATE INDEX register_sales_sold ON register_sales(sold_ms);
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
    // A table rebuild drops a table others refer to; enforcement is off while the schema
    // moves (the pragma has no effect inside a transaction) and each step is checked instead.
    conn.pragma_update(None, "foreign_keys", false)?;
    let started = std::time::Instant::now();
    if version > 0 && version < known_version() {
        tracing::info!(
            path = path_for_errors,
            from = version,
            to = known_version(),
            "upgrading the database schema (once; a store with millions of rows takes a minute)"
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let dangling: i64 =
            tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if dangling > 0 {
            return Err(StoreError::Corrupt {
                path: path_for_errors.to_string(),
                detail: format!(
                    "schema migration {} found {dangling} row(s) referring to missing rows; \
                     nothing was changed",
                    i + 1
                ),
            });
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    conn.pragma_update(None, "foreign_keys", true)?;
    if version > 0 && version < known_version() {
        // A rebuild passes the whole database through the WAL; give that space back now
        // rather than at the next clean stop.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        tracing::info!(
            path = path_for_errors,
            ms = started.elapsed().as_millis() as u64,
            "database schema upgraded"
        );
    }
    Ok(())
}
