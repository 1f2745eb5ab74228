//! The database file's lifecycle: opening the writer and the reader pool, the background
//! checkpointer, the clean-stop marker that lets a start skip the integrity check.

use super::*;

pub(super) struct Readers {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    /// Counts statement compilations on every reader (the re-prepare guard's tests only).
    pub(super) prepares: Option<Arc<PrepareCounter>>,
}

/// Plans must never depend on a bound value, so that a cached statement stays prepared.
///
/// Without the query-planner stability guarantee, SQLite looks at bound values while it plans
/// (`exprCompareVariable`, reached from `whereUsablePartialIndex` as it checks whether a term
/// such as `code = ?1` implies a partial index's `code IS NOT NULL`) and marks the statement as
/// depending on that parameter: the next execution with a different value expires it and
/// compiles it again. Every look-up (customers_code, customers_barcode, customers_marked) and
/// every accept (the txns partial indexes) paid a full parse and plan, and `prepare_cached`
/// bought nothing (issue 22: 3.5× fewer look-ups). QPSG rather than rewriting the indexes: our
/// partial indexes state their conditions as literals that the queries repeat, so no plan of
/// ours needs a bound value, and the guarantee also covers whatever index or query comes next.
/// `store::tests::hot_statements_are_never_reprepared` holds it.
pub(super) fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

impl Readers {
    pub(super) fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
        {
            return Ok(c);
        }
        let mut conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        if let Some(p) = &self.prepares {
            p.install(&mut conn)?;
        }
        stable_plans(&conn)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Every statement a reader runs stays prepared (the default keeps 16, fewer than the
        // look-ups, reports and sync reads together; an evicted one is compiled again).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "query_only", true)?;
        // 1 MiB of page cache per reader (SQLite's default is 2): it still holds the interior
        // pages of a million-customer cache, which is what repeats between look-ups; leaf pages
        // are random and come from the OS cache either way. Keeps RSS within 32 MB.
        conn.pragma_update(None, "cache_size", -1024)?;
        Ok(conn)
    }
    pub(super) fn give(&self, c: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Two async workers read inline, plus the blocking pool's scans: four idle readers
        // cover them; more would only hold page caches.
        if idle.len() < 4 {
            idle.push(c);
        }
    }
}

pub(super) fn open_writer(
    path: &Path,
    prepares: Option<&Arc<PrepareCounter>>,
) -> Result<Connection, StoreError> {
    let p = path.display().to_string();
    let open_err = |source| StoreError::Open {
        path: p.clone(),
        source,
    };
    // Decided before SQLite opens the file (opening creates the WAL); the marker goes at once,
    // so a crash later in this run always leads to a full check at the next start.
    let untouched = clean_stop_matches(path);
    let _ = std::fs::remove_file(clean_marker(path));
    let mut conn = Connection::open(path).map_err(open_err)?;
    if let Some(p) = prepares {
        p.install(&mut conn)?;
    }
    stable_plans(&conn)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Every statement the writer runs stays prepared (the default keeps 16).
    conn.set_prepared_statement_cache_capacity(64);
    // A corrupt or foreign file fails here, before anything writes to it.
    let journal: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| corrupt_or(e, &p))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Batch(format!(
            "could not switch {p} to WAL (got {journal}); is the data dir on a network share?"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // O(size): half a second for a million customers, so it is skipped when the file is
    // exactly as this program left it at a clean stop. Any crash, any other writer, a restore
    // or a copy changes that, and the check runs.
    let check: String = if untouched {
        tracing::info!(path = %p, "database unchanged since the last clean stop; integrity check skipped");
        "ok".into()
    } else {
        let t0 = std::time::Instant::now();
        let r: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| corrupt_or(e, &p))?;
        tracing::info!(path = %p, ms = t0.elapsed().as_millis() as u64, result = %r, "database integrity check");
        r
    };
    if check != "ok" {
        return Err(StoreError::Corrupt {
            path: p,
            detail: check,
        });
    }
    schema::migrate(&mut conn, &p).map_err(|e| match e {
        StoreError::Corrupt { detail, .. } => StoreError::Corrupt {
            path: p.clone(),
            detail,
        },
        other => other,
    })?;
    // Before the writer takes any job, so before anything can be sent (DESIGN.md §15).
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    backup::check_identity(&conn, path, now)?;
    backup::settle_restored(&conn, now)?;
    Ok(conn)
}

/// WAL frames after which the background checkpointer is asked to copy them into the database.
pub(super) const CHECKPOINT_AFTER_FRAMES: i32 = 1000;
/// WAL frames after which the writer checkpoints itself, as SQLite's auto-checkpoint would:
/// under a steady stream of commits the background pass never catches the last frame, and
/// the WAL only restarts after a checkpoint that did. Cheap by then (the background pass has
/// copied most frames).
pub(super) const CHECKPOINT_INLINE_FRAMES: i32 = 8000;

/// Moves WAL checkpoints off the writer thread. Inline, each copied ~1,000 pages into the
/// database and fsync'd it between two group commits: a tenth of the writer's time and the
/// earn benchmark's worst latencies. A PASSIVE checkpoint on its own connection runs beside
/// the writer and readers without blocking either.
pub(super) fn start_checkpointer(
    writer: &mut Connection,
    path: &Path,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let conn = Connection::open(path)?;
    stable_plans(&conn)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "cache_size", -64)?;
    let handle = std::thread::Builder::new()
        .name("pointsd-db-ckpt".into())
        .spawn(move || {
            // Ends when the writer's connection (and its hook holding `tx`) is gone.
            let mut failing = false;
            while rx.recv().is_ok() {
                // Logged once per failure spell (a full disk fails every pass).
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "background WAL checkpoint failed; the WAL grows until one succeeds");
                    }
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("background WAL checkpoint works again");
                    }
                    _ => {}
                }
            }
        })
        .map_err(|e| StoreError::Batch(format!("cannot start the checkpoint thread: {e}")))?;
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames: i32| {
        if frames >= CHECKPOINT_INLINE_FRAMES {
            // Failure here only leaves the WAL longer; the commit itself already succeeded.
            let _ = wal.checkpoint();
        } else if frames >= CHECKPOINT_AFTER_FRAMES {
            let _ = tx.try_send(());
        }
        Ok(())
    }))?;
    Ok(handle)
}

pub(super) fn clean_marker(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".clean");
    PathBuf::from(name)
}

/// What identifies the database file as last written: length, modification time and, on
/// Unix, inode and change time (which no tool can set back).
pub(super) fn file_stamp(db: &Path) -> Option<String> {
    let m = std::fs::metadata(db).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    #[cfg(unix)]
    let extra = {
        use std::os::unix::fs::MetadataExt;
        format!(" {} {}.{}", m.ino(), m.ctime(), m.ctime_nsec())
    };
    #[cfg(not(unix))]
    let extra = String::new();
    Some(format!("{} {mtime}{extra}", m.len()))
}

/// True when the last stop was clean and nothing has touched the database since.
pub(super) fn clean_stop_matches(db: &Path) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal_empty = std::fs::metadata(PathBuf::from(wal)).map_or(true, |m| m.len() == 0);
    let Ok(marker) = std::fs::read_to_string(clean_marker(db)) else {
        return false;
    };
    wal_empty && file_stamp(db).is_some_and(|s| s == marker.trim())
}

pub(super) fn corrupt_or(e: rusqlite::Error, path: &str) -> StoreError {
    match StoreError::from(e) {
        StoreError::Corrupt { detail, .. } => StoreError::Corrupt {
            path: path.to_string(),
            detail,
        },
        other => other,
    }
}

impl Store {
    /// Folds the WAL into the database file, so that the file alone holds everything (a
    /// backup of `pointsd.db` is then complete). Called at a clean stop, after the last write:
    /// it leaves `pointsd.db.clean`, which lets the next start skip the integrity check while
    /// the file stays exactly as left.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let path = self.path.to_path_buf();
        self.readers
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let c = Connection::open(&path)?;
            c.busy_timeout(Duration::from_secs(5))?;
            // (busy, log frames, checkpointed frames): busy = 1 means a reader kept part of
            // the WAL, so the file alone is not yet the whole database.
            let (busy, log, done): (i64, i64, i64) =
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            drop(c);
            // Best effort: without the marker the next start runs the full check.
            if busy == 0
                && log <= done
                && let Some(stamp) = file_stamp(&path)
            {
                let _ = std::fs::write(clean_marker(&path), stamp);
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Batch(format!("checkpoint task failed: {e}")))?
    }
}
