//! Backups and restores of the database file (DESIGN.md §15): a consistent, verified copy
//! taken while the daemon runs, a restore that puts one back, and the first start of a
//! restored database, which sends every transaction that was open in the copy through the
//! read-back before anything is sent.
//!
//! A copy is made with `VACUUM INTO` on a connection of its own: it reads one snapshot (a
//! WAL read transaction), so it is consistent, and in WAL mode a reader never blocks the
//! writer — a register's earn is not stalled by a backup. (SQLite's online backup API
//! restarts whenever another connection writes the source, so under a steady stream of earns
//! it might never finish.)

use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;

/// The meta key (`sync_state`) a restore leaves in the restored file: the next start sends
/// the transactions that were open in it through the read-back.
pub const RESTORED_META_KEY: &str = "restored_from_backup";

/// What went wrong making, checking or restoring a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the database {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot write the backup {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy the database into {path}: {source}")]
    Copy {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the backup {path} failed its check ({detail}); it is not usable. Take another backup, or use an older one"
    )]
    Check { path: PathBuf, detail: String },
    #[error("{path} already exists; choose another --to, or delete it first")]
    Exists { path: PathBuf },
    #[error("there is no database at {path}: check --data-dir / --config")]
    NoDatabase { path: PathBuf },
}

/// A backup made and verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// When the copy's snapshot was taken (unix ms).
    pub at_ms: i64,
    /// How long it took (ms).
    pub took_ms: u64,
}

/// Copies the database `db` into `to` (which must not exist) and verifies the copy.
/// Safe while the daemon runs: it reads one snapshot and never blocks the writer.
pub fn backup_to(db: &Path, to: &Path, now_ms: i64) -> Result<BackupReport, BackupError> {
    if !db.exists() {
        return Err(BackupError::NoDatabase {
            path: db.to_path_buf(),
        });
    }
    if to.exists() {
        return Err(BackupError::Exists {
            path: to.to_path_buf(),
        });
    }
    let t0 = std::time::Instant::now();
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| BackupError::Write {
            path: to.to_path_buf(),
            source,
        })?;
    }
    // Written under a temporary name and renamed once verified: a file with the final name
    // is always a whole, checked backup (a stop or a full disk mid-copy leaves only `.partial`).
    let partial = with_suffix(to, ".partial");
    let _ = std::fs::remove_file(&partial);
    let src_err = |source| BackupError::Source {
        path: db.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(src_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(src_err)?;
    let target = partial.to_string_lossy().into_owned();
    if let Err(source) = conn.execute("VACUUM INTO ?1", [&target]) {
        let _ = std::fs::remove_file(&partial);
        return Err(BackupError::Copy {
            path: to.to_path_buf(),
            source,
        });
    }
    drop(conn);
    let done = (|| {
        // VACUUM INTO does not fsync its output: a backup must survive a power cut too.
        std::fs::File::open(&partial)?.sync_all()?;
        Ok(())
    })();
    if let Err(source) = done {
        let _ = std::fs::remove_file(&partial);
        return Err(BackupError::Write {
            path: to.to_path_buf(),
            source,
        });
    }
    if let Err(e) = verify(&partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, to).map_err(|source| BackupError::Write {
        path: to.to_path_buf(),
        source,
    })?;
    let (bytes, sha256) = digest(to)?;
    Ok(BackupReport {
        path: to.to_path_buf(),
        bytes,
        sha256,
        at_ms: now_ms,
        took_ms: t0.elapsed().as_millis() as u64,
    })
}

/// Checks that `file` is a whole pointsd database: `PRAGMA quick_check` is `ok` and it has
/// the outbox table. Opens it read-only; nothing is written.
pub fn verify(file: &Path) -> Result<(), BackupError> {
    let check = |detail: String| BackupError::Check {
        path: file.to_path_buf(),
        detail,
    };
    if !file.is_file() {
        return Err(check("no such file".into()));
    }
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| check(e.to_string()))?;
    let r: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| check(e.to_string()))?;
    if r != "ok" {
        return Err(check(format!("quick_check: {r}")));
    }
    let has_outbox: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'txns')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| check(e.to_string()))?;
    if !has_outbox {
        return Err(check("not a pointsd database (no txns table)".into()));
    }
    conn.query_row(
        concat!("SELECT count(*) FROM txns WHERE ", open_rows!()),
        [],
        |r| r.get::<_, i64>(0),
    )
    .map_err(|e| check(format!("not a pointsd database ({e})")))?;
    Ok(())
}

/// Size and SHA-256 (hex) of a file.
pub fn digest(file: &Path) -> Result<(u64, String), BackupError> {
    let err = |source| BackupError::Write {
        path: file.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(file).map_err(err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        h.update(&buf[..n]);
    }
    Ok((bytes, hex::encode(h.finalize())))
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub from: PathBuf,
    pub to: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// Transactions open in the backup: each is read back before anything is sent.
    pub open_txns: i64,
    /// The file that was in place before, kept beside it (if there was one).
    pub previous: Option<PathBuf>,
}

/// Puts the backup `file` in place as `db` (the daemon must be stopped: the caller holds the
/// data dir's lock) and marks it restored. The file in place before is kept as
/// `pointsd.db.before-restore-<ms>`; its WAL is folded in first so that copy is whole.
pub fn restore(file: &Path, db: &Path, now_ms: i64) -> Result<RestoreReport, BackupError> {
    verify(file)?;
    let (bytes, sha256) = digest(file)?;
    let write_err = |source| BackupError::Write {
        path: db.to_path_buf(),
        source,
    };
    if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write_err)?;
    }
    let staged = with_suffix(db, ".restoring");
    let _ = std::fs::remove_file(&staged);
    let r = stage(file, &staged, db, &sha256, now_ms);
    if r.is_err() {
        // Nothing half-done stays beside the database.
        let _ = std::fs::remove_file(&staged);
    }
    let open_txns = r?;
    let previous = if db.exists() {
        // Fold the old file's WAL in (it belongs to the old file, never to the restored one),
        // then keep the old file aside rather than deleting anything.
        if let Ok(c) = Connection::open(db) {
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        let aside = with_suffix(db, &format!(".before-restore-{now_ms}"));
        std::fs::rename(db, &aside).map_err(write_err)?;
        Some(aside)
    } else {
        None
    };
    for side in ["-wal", "-shm", ".clean"] {
        let _ = std::fs::remove_file(with_suffix(db, side));
    }
    std::fs::rename(&staged, db).map_err(write_err)?;
    Ok(RestoreReport {
        from: file.to_path_buf(),
        to: db.to_path_buf(),
        bytes,
        sha256,
        open_txns,
        previous,
    })
}

/// Copies the backup to `staged`, marks it restored and syncs it; returns how many
/// transactions were open in it.
fn stage(
    file: &Path,
    staged: &Path,
    db: &Path,
    sha256: &str,
    now_ms: i64,
) -> Result<i64, BackupError> {
    let write_err = |source| BackupError::Write {
        path: db.to_path_buf(),
        source,
    };
    std::fs::copy(file, staged).map_err(write_err)?;
    let copy_err = |source| BackupError::Copy {
        path: db.to_path_buf(),
        source,
    };
    // The mark goes into the staged copy before it takes the database's name, so there is no
    // moment when a restored file sits in place unmarked.
    let open_txns = {
        let conn = Connection::open(staged).map_err(copy_err)?;
        // A backup made by VACUUM INTO is in rollback-journal mode; the daemon switches it
        // back to WAL at its start.
        let open: i64 = conn
            .query_row(
                concat!("SELECT count(*) FROM txns WHERE ", open_rows!()),
                [],
                |r| r.get(0),
            )
            .map_err(copy_err)?;
        let mark = serde_json::json!({
            "from": file.display().to_string(),
            "sha256": sha256,
            "restored_at_ms": now_ms,
        })
        .to_string();
        conn.execute(
            "INSERT INTO sync_state(key, value) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![RESTORED_META_KEY, mark],
        )
        .map_err(copy_err)?;
        open
    };
    std::fs::File::open(staged)
        .and_then(|f| f.sync_all())
        .map_err(write_err)?;
    Ok(open_txns)
}

/// At the first start of a restored database (run by the writer's connection before the
/// writer takes jobs, so before anything can be sent): every transaction open in the backup
/// may have been sent after the backup was taken, and the upstream has no idempotency key. Each
/// becomes `ambiguous`, due now, so the read-back (`sync::verify`) decides: proven applied,
/// proven not applied (sent), or review. A `pending` row gets the evidence a claim would
/// have recorded: the balance it would have started from (the cache's confirmed balance plus
/// the deltas of the customer's open rows before it) and the cache's upstream stamp, from
/// which the read-back lists the customer's transactions. Returns how many rows were moved.
pub(super) fn settle_restored(conn: &Connection, now_ms: i64) -> Result<usize, StoreError> {
    let mark: Option<String> = conn
        .query_row(
            "SELECT value FROM sync_state WHERE key = ?1",
            [RESTORED_META_KEY],
            |r| r.get(0),
        )
        .optional()?;
    let Some(mark) = mark else {
        return Ok(0);
    };
    let tx = conn.unchecked_transaction()?;
    let rows: Vec<(i64, String, String, i64, Option<i64>)> = {
        let mut st = tx.prepare(concat!(
            "SELECT seq, customer_id, state, delta, before_balance FROM txns WHERE ",
            open_rows!(),
            " ORDER BY seq"
        ))?;
        st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?
    };
    // Per customer: the balance the next open row starts from, and the stamp it dates from.
    let mut running: std::collections::HashMap<String, (Option<i64>, Option<String>)> =
        std::collections::HashMap::new();
    let note = "restored from a backup: this transaction may have been sent after the backup \
                was taken; read back before anything is sent";
    for (seq, customer, state, delta, before) in &rows {
        let entry = match running.get(customer) {
            Some(e) => e.clone(),
            None => tx
                .query_row(
                    "SELECT confirmed, upstream_updated_at FROM customers \
                     WHERE customer_id = ?1 AND as_of IS NOT NULL AND marked_at IS NULL",
                    [customer],
                    |r| Ok((Some(r.get::<_, i64>(0)?), r.get::<_, Option<String>>(1)?)),
                )
                .optional()?
                .unwrap_or((None, None)),
        };
        let (start, stamp) = if state == "pending" {
            // What a claim would have recorded, had this row been sent from the backup's state.
            tx.execute(
                "UPDATE txns SET before_balance = ?2, before_updated_at = ?3 WHERE seq = ?1",
                params![seq, entry.0, entry.1],
            )?;
            (entry.0, entry.1.clone())
        } else {
            // `sending` / `ambiguous` already carry the evidence of their send.
            let stamp: Option<String> = tx.query_row(
                "SELECT before_updated_at FROM txns WHERE seq = ?1",
                [seq],
                |r| r.get(0),
            )?;
            (*before, stamp)
        };
        running.insert(customer.clone(), (start.map(|b| b + delta), stamp));
        tx.execute(
            "UPDATE txns SET state = 'ambiguous', next_attempt_at = ?2, updated_at = ?2, \
             last_error = ?3 WHERE seq = ?1",
            params![seq, now_ms, note],
        )?;
    }
    tx.execute("DELETE FROM sync_state WHERE key = ?1", [RESTORED_META_KEY])?;
    tx.commit()?;
    tracing::warn!(
        open = rows.len(),
        restore = %mark,
        "first start of a restored database: every transaction open in the backup is read back before anything is sent"
    );
    Ok(rows.len())
}

/// The meta key holding this database's identity as of its last start (`{generation, host,
/// path}`), and the file beside the database holding the same generation.
pub const IDENTITY_META_KEY: &str = "db_identity";

fn generation_file(db: &Path) -> PathBuf {
    with_suffix(db, ".generation")
}

/// This machine's name, as well as it can be told without a dependency.
fn host_name() -> String {
    std::env::var("COMPUTERNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// Tells a database that was copied or moved here without `pointsd restore` (DESIGN.md
/// §15): each start writes a fresh generation into the database and into the file beside it,
/// with the machine's name and the database's path. At the next start they must agree; if the
/// file beside it is missing or names another generation (an older copy put over this one, or
/// a database brought from elsewhere), or the machine or path differ (a whole data dir copied
/// to a new PC, maybe while the old one still ran), the database is treated as restored: its
/// open transactions are read back before anything is sent. A false alarm costs some reads.
/// Must run before [`settle_restored`].
pub(super) fn check_identity(conn: &Connection, db: &Path, now_ms: i64) -> Result<(), StoreError> {
    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM sync_state WHERE key = ?1",
            [IDENTITY_META_KEY],
            |r| r.get(0),
        )
        .optional()?;
    let beside = std::fs::read_to_string(generation_file(db))
        .ok()
        .map(|s| s.trim().to_string());
    let host = host_name();
    let path = std::path::absolute(db)
        .unwrap_or_else(|_| db.to_path_buf())
        .display()
        .to_string();
    let moved = match stored
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        // A database from before identities, or a new one: nothing to compare.
        None => None,
        Some(Err(_)) => Some("its identity record is unreadable".to_string()),
        Some(Ok(id)) => {
            if beside.as_deref() != id["generation"].as_str() {
                Some(
                    "the file beside it names another start (a copy or an older file put here)"
                        .into(),
                )
            } else if id["host"].as_str() != Some(host.as_str()) {
                Some(format!("it last ran on {} (this is {host})", id["host"]))
            } else if id["path"].as_str() != Some(path.as_str()) {
                Some(format!("it last ran at {} (this is {path})", id["path"]))
            } else {
                None
            }
        }
    };
    let tx = conn.unchecked_transaction()?;
    if let Some(why) = &moved {
        tracing::warn!(reason = %why, "this database was copied or moved here without `pointsd restore`: it is treated as restored");
        let mark = serde_json::json!({"detected": why, "at_ms": now_ms}).to_string();
        tx.execute(
            "INSERT INTO sync_state(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
            params![RESTORED_META_KEY, mark],
        )?;
    }
    let generation = format!("{now_ms:x}-{:016x}", rand::random::<u64>());
    let id = serde_json::json!({"generation": generation, "host": host, "path": path}).to_string();
    tx.execute(
        "INSERT INTO sync_state(key, value) VALUES (?1, ?2) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![IDENTITY_META_KEY, id],
    )?;
    tx.commit()?;
    // After the commit: a crash in between leaves the two disagreeing, which only causes a
    // (safe) read-back at the next start.
    let file = generation_file(db);
    let tmp = with_suffix(&file, ".tmp");
    let written = std::fs::write(&tmp, &generation).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        tracing::warn!(error = %e, file = %file.display(), "cannot record the database's generation; the next start reads open transactions back");
    }
    Ok(())
}

/// The name a scheduled backup gets: sorts by time.
pub fn scheduled_name(now_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second][subsecond digits:3]Z"
    );
    format!("pointsd-{}.db", t.format(&f).unwrap_or_default())
}

/// The scheduled backups in `dir`, oldest first.
pub fn scheduled_backups(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pointsd-") && n.ends_with("Z.db"))
        })
        .collect();
    v.sort();
    v
}

/// Deletes the oldest scheduled backups in `dir` beyond the newest `keep`; returns them.
pub fn rotate(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let all = scheduled_backups(dir);
    let extra = all.len().saturating_sub(keep.max(1));
    let mut gone = Vec::new();
    for p in all.into_iter().take(extra) {
        if std::fs::remove_file(&p).is_ok() {
            gone.push(p);
        }
    }
    gone
}

/// The record of the last backup, kept in the data dir (`last-backup.json`) by the daemon
/// and by `pointsd backup`, for `status`, `doctor` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastBackup {
    /// When the last attempt ended (unix ms), and whether it worked.
    pub last_at_ms: Option<i64>,
    pub last_ok: Option<bool>,
    pub last_error: Option<String>,
    /// The last good backup.
    pub success_at_ms: Option<i64>,
    pub path: Option<PathBuf>,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
}

pub const LAST_BACKUP_FILE: &str = "last-backup.json";

impl LastBackup {
    pub fn load(data_dir: &Path) -> LastBackup {
        std::fs::read(data_dir.join(LAST_BACKUP_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records an attempt (written to a temporary file and renamed: never half a record).
    pub fn record(
        data_dir: &Path,
        at_ms: i64,
        r: &Result<BackupReport, BackupError>,
    ) -> std::io::Result<LastBackup> {
        let mut last = LastBackup::load(data_dir);
        last.last_at_ms = Some(at_ms);
        match r {
            Ok(rep) => {
                last.last_ok = Some(true);
                last.last_error = None;
                last.success_at_ms = Some(rep.at_ms);
                last.path = Some(rep.path.clone());
                last.bytes = Some(rep.bytes);
                last.sha256 = Some(rep.sha256.clone());
            }
            Err(e) => {
                last.last_ok = Some(false);
                last.last_error = Some(e.to_string());
            }
        }
        let tmp = data_dir.join(format!("{LAST_BACKUP_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&last)?)?;
        std::fs::rename(&tmp, data_dir.join(LAST_BACKUP_FILE))?;
        Ok(last)
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_names_sort_by_time_and_rotation_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let a = scheduled_name(1_700_000_000_000);
        let b = scheduled_name(1_700_000_000_001);
        let c = scheduled_name(1_800_000_000_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        for n in [&a, &b, &c, &"other.db".to_string()] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        assert_eq!(rotate(dir.path(), 2).len(), 1);
        let left: Vec<_> = scheduled_backups(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![b, c]);
        assert!(dir.path().join("other.db").exists());
    }
}

/// The daemon's backup schedule: when the next one is due (unix ms; 0 = no schedule), for
/// `status`.
#[derive(Debug, Default)]
pub struct BackupSchedule {
    next_at_ms: std::sync::atomic::AtomicI64,
}

impl BackupSchedule {
    pub fn next_at_ms(&self) -> Option<i64> {
        let v = self.next_at_ms.load(std::sync::atomic::Ordering::Relaxed);
        (v > 0).then_some(v)
    }
    fn set_next(&self, at: i64) {
        self.next_at_ms
            .store(at, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the scheduled backups need.
pub struct ScheduleConfig {
    pub db: PathBuf,
    pub data_dir: PathBuf,
    pub dir: PathBuf,
    pub interval: std::time::Duration,
    pub keep: usize,
}

/// Backs the database up into `dir` every `interval` (the first one when the last success is
/// older than that, else when it comes due), keeping the newest `keep`. Each copy runs on the
/// blocking pool and reads one snapshot: registers' writes go on meanwhile.
pub async fn run_schedule(
    cfg: ScheduleConfig,
    schedule: std::sync::Arc<BackupSchedule>,
    clock: crate::clock::SharedClock,
    stop: tokio_util::sync::CancellationToken,
) {
    let interval_ms = cfg.interval.as_millis() as i64;
    let last = LastBackup::load(&cfg.data_dir);
    let now = clock.now_ms();
    let mut next = last
        .success_at_ms
        .map_or(now, |t| (t + interval_ms).clamp(now, now + interval_ms));
    loop {
        schedule.set_next(next);
        let wait = std::time::Duration::from_millis((next - clock.now_ms()).max(0) as u64);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let at = clock.now_ms();
        let to = cfg.dir.join(scheduled_name(at));
        let (db, dir, keep) = (cfg.db.clone(), cfg.dir.clone(), cfg.keep);
        let r = tokio::task::spawn_blocking(move || {
            let r = backup_to(&db, &to, at);
            let gone = if r.is_ok() {
                rotate(&dir, keep)
            } else {
                Vec::new()
            };
            (r, gone)
        })
        .await;
        let (r, gone) = match r {
            Ok(x) => x,
            Err(e) => (
                Err(BackupError::Write {
                    path: cfg.dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                }),
                Vec::new(),
            ),
        };
        match &r {
            Ok(rep) => tracing::info!(
                path = %rep.path.display(),
                bytes = rep.bytes,
                sha256 = %rep.sha256,
                ms = rep.took_ms,
                deleted = gone.len(),
                "scheduled backup made and verified"
            ),
            Err(e) => tracing::error!(
                error = %e,
                dir = %cfg.dir.display(),
                "scheduled backup failed; the database has no fresh copy"
            ),
        }
        if let Err(e) = LastBackup::record(&cfg.data_dir, clock.now_ms(), &r) {
            tracing::warn!(error = %e, "cannot record the last backup in the data dir");
        }
        next = clock.now_ms() + interval_ms;
    }
}
