//! A read-only look at a database file that is not open as a [`Store`] (for `doctor`, which
//! must never change or lock a database a running daemon owns).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// What `doctor` needs to know about a database file.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// `PRAGMA user_version`: the schema version that wrote it.
    pub schema_version: i64,
    /// `PRAGMA quick_check`'s answer: `"ok"` when sound.
    pub quick_check: String,
    /// The queue, when the schema is one this binary knows: the oldest open transaction's
    /// creation time (unix ms) and how many need review.
    pub queue: Result<(Option<i64>, i64), String>,
}

/// Opens `db` read-only and inspects it. `Err` is a message: the file cannot be opened or is
/// not an SQLite database.
pub fn inspect_readonly(db: &Path) -> Result<Inspection, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open: {e}"))?;
    let schema_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let quick_check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let queue = conn
        .query_row(
            "SELECT (SELECT MIN(created_at) FROM txns WHERE state IN ('pending','sending','ambiguous')), \
                    (SELECT COUNT(*) FROM txns WHERE state = 'needs_review')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| e.to_string());
    Ok(Inspection {
        schema_version,
        quick_check,
        queue,
    })
}
