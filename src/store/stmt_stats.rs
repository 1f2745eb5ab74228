//! SQLite's own statement counters: how often each prepared statement was re-prepared, and how
//! many statements were compiled at all. They guard the hot paths (issue 22): a re-prepare is a
//! full parse and plan, and one per look-up cost 3.5× of the look-up rate without any test
//! noticing. Counters, unlike timings, cannot be noisy.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// One statement a connection holds prepared (rusqlite's statement cache keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStatement {
    pub sql: String,
    /// Times SQLite threw the plan away and compiled the statement again
    /// (`SQLITE_STMTSTATUS_REPREPARE`).
    pub reprepares: i64,
    /// Times it ran (`SQLITE_STMTSTATUS_RUN`).
    pub runs: i64,
}

/// Every statement `conn` holds prepared now.
pub fn live_statements(conn: &Connection) -> Vec<LiveStatement> {
    use rusqlite::ffi;
    let mut out = Vec::new();
    // SAFETY: `conn` is borrowed for the whole walk, so its handle stays open and no other thread
    // can use it (a `Connection` is not `Sync`); `sqlite3_next_stmt` walks the connection's own
    // list of statements, and we only read from each (its SQL text is copied at once, before
    // anything could finalize it).
    unsafe {
        let db = conn.handle();
        let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            let sql = ffi::sqlite3_sql(stmt);
            let sql = if sql.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(sql).to_string_lossy().into_owned()
            };
            out.push(LiveStatement {
                sql,
                reprepares: ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0)
                    as i64,
                runs: ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_RUN, 0) as i64,
            });
            stmt = ffi::sqlite3_next_stmt(db, stmt);
        }
    }
    out
}

/// Counts statement compilations (first prepares and re-prepares alike) on the connections it
/// is installed on. SQLite calls the authorizer only while it compiles a statement, so a
/// statement served from the cache adds nothing; what it records names the statement's tables.
#[derive(Default)]
pub struct PrepareCounter {
    compiles: AtomicU64,
    seen: Mutex<BTreeMap<String, u64>>,
}

impl PrepareCounter {
    /// Installs the counter on `conn`. Must run before the connection prepares anything it
    /// keeps: setting an authorizer expires every statement the connection holds.
    pub(super) fn install(
        self: &std::sync::Arc<Self>,
        conn: &mut Connection,
    ) -> rusqlite::Result<()> {
        let me = self.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if let Some(what) = statement_kind(&ctx.action) {
                me.compiles.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut seen) = me.seen.lock() {
                    *seen.entry(what).or_default() += 1;
                }
            }
            Authorization::Allow
        }))
    }

    /// Statements compiled so far.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// What was compiled, by statement kind and table, with counts.
    pub fn seen(&self) -> BTreeMap<String, u64> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The authorizer action that opens a statement's compilation, named: exactly one of these
/// comes per top-level statement kind (a SELECT's subqueries add `Select` actions too, which
/// only makes a compile count higher, never hides one).
fn statement_kind(a: &AuthAction<'_>) -> Option<String> {
    Some(match a {
        AuthAction::Select => "SELECT".into(),
        AuthAction::Insert { table_name } => format!("INSERT {table_name}"),
        AuthAction::Update { table_name, .. } => format!("UPDATE {table_name}"),
        AuthAction::Delete { table_name } => format!("DELETE {table_name}"),
        AuthAction::Transaction { operation } => format!("{operation:?}"),
        AuthAction::Savepoint { operation, .. } => format!("SAVEPOINT {operation:?}"),
        AuthAction::Pragma { pragma_name, .. } => format!("PRAGMA {pragma_name}"),
        _ => return None,
    })
}
