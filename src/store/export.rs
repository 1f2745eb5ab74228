//! `pointsd export`: the history (transactions, sales, returns) created in a date range, as
//! JSON lines or CSV, for audit before retention deletes it. Reads a read-only connection of
//! its own: safe while the daemon runs.

use std::io::Write;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use serde_json::{Value, json};

/// The two output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the database {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// The CSV columns, in order; a JSON line has the same keys (null where a record has none).
const COLUMNS: &[&str] = &[
    "record",
    "id",
    "customer_id",
    "kind",
    "state",
    "delta",
    "points",
    "amount",
    "sale_id",
    "register_id",
    "staff_id",
    "token_name",
    "reason",
    "created_at",
    "updated_at",
    "resolved_by",
    "resolution_note",
];

/// Writes every transaction, sale and return created in `[from_ms, to_ms)` to `out`;
/// returns how many records were written.
pub fn export_history(
    db: &Path,
    from_ms: i64,
    to_ms: i64,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    let path = db.display().to_string();
    let dberr = |source| ExportError::Db {
        path: path.clone(),
        source,
    };
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(dberr)?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(dberr)?;
    if format == ExportFormat::Csv {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    let mut n = 0u64;
    let t = crate::clock::rfc3339;
    let mut emit = |v: Value, out: &mut dyn Write| -> Result<(), ExportError> {
        match format {
            ExportFormat::Jsonl => writeln!(out, "{v}")?,
            ExportFormat::Csv => {
                let cells: Vec<String> = COLUMNS
                    .iter()
                    .map(|k| match &v[*k] {
                        Value::Null => String::new(),
                        Value::String(s) => csv_cell(s),
                        other => csv_cell(&other.to_string()),
                    })
                    .collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        n += 1;
        Ok(())
    };
    // One read transaction: the three tables are read from the same snapshot.
    c.execute_batch("BEGIN").map_err(dberr)?;
    {
        let mut st = c
            .prepare(
                "SELECT txn_id, customer_id, kind, state, delta, points, purchase_amount, \
                 register_id, staff_id, token_name, reason, created_at, updated_at, resolved_by, \
                 resolution_note FROM txns WHERE created_at >= ?1 AND created_at < ?2 ORDER BY seq",
            )
            .map_err(dberr)?;
        let mut rows = st.query(params![from_ms, to_ms]).map_err(dberr)?;
        while let Some(r) = rows.next().map_err(dberr)? {
            let id: String = r.get(0).map_err(dberr)?;
            let sale_id = id.strip_prefix("sale:").map(str::to_string);
            let v = json!({
                "record": "txn",
                "id": id,
                "customer_id": r.get::<_, String>(1).map_err(dberr)?,
                "kind": r.get::<_, String>(2).map_err(dberr)?,
                "state": r.get::<_, String>(3).map_err(dberr)?,
                "delta": r.get::<_, i64>(4).map_err(dberr)?,
                "points": r.get::<_, Option<i64>>(5).map_err(dberr)?,
                "amount": r.get::<_, Option<i64>>(6).map_err(dberr)?,
                "sale_id": sale_id,
                "register_id": r.get::<_, Option<String>>(7).map_err(dberr)?,
                "staff_id": r.get::<_, Option<String>>(8).map_err(dberr)?,
                "token_name": r.get::<_, Option<String>>(9).map_err(dberr)?,
                "reason": r.get::<_, Option<String>>(10).map_err(dberr)?,
                "created_at": t(r.get::<_, i64>(11).map_err(dberr)?),
                "updated_at": t(r.get::<_, i64>(12).map_err(dberr)?),
                "resolved_by": r.get::<_, Option<String>>(13).map_err(dberr)?,
                "resolution_note": r.get::<_, Option<String>>(14).map_err(dberr)?,
            });
            emit(v, out)?;
        }
    }
    {
        let mut st = c
            .prepare(
                "SELECT sale_id, customer_id, amount, net_delta, register_id, staff_id, token_name, \
                 created_at FROM sales WHERE created_at >= ?1 AND created_at < ?2 \
                 ORDER BY created_at, sale_id",
            )
            .map_err(dberr)?;
        let mut rows = st.query(params![from_ms, to_ms]).map_err(dberr)?;
        while let Some(r) = rows.next().map_err(dberr)? {
            let id: String = r.get(0).map_err(dberr)?;
            let v = json!({
                "record": "sale",
                "id": id.clone(),
                "customer_id": r.get::<_, String>(1).map_err(dberr)?,
                "amount": r.get::<_, i64>(2).map_err(dberr)?,
                "delta": r.get::<_, i64>(3).map_err(dberr)?,
                "sale_id": id,
                "register_id": r.get::<_, Option<String>>(4).map_err(dberr)?,
                "staff_id": r.get::<_, Option<String>>(5).map_err(dberr)?,
                "token_name": r.get::<_, String>(6).map_err(dberr)?,
                "created_at": t(r.get::<_, i64>(7).map_err(dberr)?),
            });
            emit(v, out)?;
        }
    }
    {
        let mut st = c
            .prepare(
                "SELECT r.return_id, s.customer_id, r.amount, r.net_delta, r.sale_id, r.register_id, \
                 r.staff_id, r.token_name, r.created_at FROM returns r JOIN sales s USING (sale_id) \
                 WHERE r.created_at >= ?1 AND r.created_at < ?2 ORDER BY r.created_at, r.return_id",
            )
            .map_err(dberr)?;
        let mut rows = st.query(params![from_ms, to_ms]).map_err(dberr)?;
        while let Some(r) = rows.next().map_err(dberr)? {
            let v = json!({
                "record": "return",
                "id": r.get::<_, String>(0).map_err(dberr)?,
                "customer_id": r.get::<_, String>(1).map_err(dberr)?,
                "amount": r.get::<_, i64>(2).map_err(dberr)?,
                "delta": r.get::<_, i64>(3).map_err(dberr)?,
                "sale_id": r.get::<_, String>(4).map_err(dberr)?,
                "register_id": r.get::<_, Option<String>>(5).map_err(dberr)?,
                "staff_id": r.get::<_, Option<String>>(6).map_err(dberr)?,
                "token_name": r.get::<_, String>(7).map_err(dberr)?,
                "created_at": t(r.get::<_, i64>(8).map_err(dberr)?),
            });
            emit(v, out)?;
        }
    }
    c.execute_batch("COMMIT").map_err(dberr)?;
    out.flush()?;
    Ok(n)
}

/// A CSV cell (RFC 4180): quoted when it holds a comma, quote or line break. A cell that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`, except a
/// plain number.
fn csv_cell(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err();
    let s = if formula {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_cell("-12"), "-12");
    }
}
