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
    pub queue: Result<(Option<i64>, i64), InspectError>,
}

/// Why a database file could not be inspected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InspectError {
    #[error("cannot open: {0}")]
    Open(String),
    #[error("{0}")]
    NotReadable(String),
}

/// Opens `db` read-only and inspects it.
pub fn inspect_readonly(db: &Path) -> Result<Inspection, InspectError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| InspectError::Open(e.to_string()))?;
    let unreadable = |e: rusqlite::Error| InspectError::NotReadable(e.to_string());
    let schema_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unreadable)?;
    let quick_check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(unreadable)?;
    let queue = conn
        .query_row(
            "SELECT (SELECT MIN(created_at) FROM txns WHERE state IN ('pending','sending','ambiguous')), \
                    (SELECT COUNT(*) FROM txns WHERE state = 'needs_review')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(unreadable);
    Ok(Inspection {
        schema_version,
        quick_check,
        queue,
    })
}

/// One value of the `sync_state` table of a database the daemon may own, read-only (`doctor`
/// shows what the running daemon last found). `None` when absent or unreadable.
pub fn meta_readonly(db: &Path, key: super::Meta) -> Option<String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row(
        "SELECT value FROM sync_state WHERE key = ?1",
        [key.as_str()],
        |r| r.get(0),
    )
    .ok()
}
