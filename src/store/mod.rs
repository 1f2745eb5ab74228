//! SQLite: the customer cache and the transaction outbox.
//!
//! All writes go through one writer thread fed by a channel. It groups whatever is queued
//! (up to [`GROUP_COMMIT_MAX`] jobs) into one `BEGIN IMMEDIATE` transaction, runs each job in its
//! own savepoint (so one failing job does not spoil the others), commits once, and only then
//! answers each caller. That is how an acknowledged write is durable (WAL + `synchronous=FULL`,
//! DESIGN.md §2.1) without paying one fsync per register request. Reads use a small pool of
//! connections on the blocking thread pool, so a slow disk never stalls the async runtime.

mod feed;
mod sales;
pub mod schema;

pub use feed::SeenChange;
pub use sales::{
    NewReturn, NewSale, PriceRefusal, QuoteOutcome, Receipt, ReturnOutcome, ReturnRecord,
    ReturnRow, SaleCtx, SaleOutcome, SaleRecord, SaleRow, SalesStats, return_txn_id, sale_txn_id,
};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{EarnConfig, OfflineConfig};
use crate::ledger::{self, Balance, NewTxn, RedeemRefusal, State};
use crate::upstream::{UpstreamBalance, UpstreamCustomer};

/// Most jobs folded into one commit.
pub const GROUP_COMMIT_MAX: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the database {path}: {source}. Check that the data dir exists and is writable by the pointsd user"
    )]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this pointsd knows ({known}). Install the newer pointsd again, or restore a backup made by this version"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "the database {path} failed its integrity check ({detail}). Stop pointsd, keep the file for support, and restore a backup; it will not be repaired automatically"
    )]
    Corrupt { path: String, detail: String },
    #[error(
        "storage is full: the transaction was not saved. Free disk space in the data dir; writes resume by themselves"
    )]
    Full,
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    #[error("database error: {0}")]
    Batch(String),
    #[error("the database writer has stopped")]
    WriterGone,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(DiskFull) => StoreError::Full,
            Some(DatabaseCorrupt) | Some(NotADatabase) => StoreError::Corrupt {
                path: "(open database)".into(),
                detail: e.to_string(),
            },
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// A copy for each caller of a failed group commit.
    fn for_batch(&self) -> StoreError {
        match self {
            StoreError::Full => StoreError::Full,
            StoreError::WriterGone => StoreError::WriterGone,
            other => StoreError::Batch(other.to_string()),
        }
    }
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full)
    }
}

/// How one job in a group went.
#[derive(PartialEq, Eq)]
enum JobRun {
    Ok,
    Failed,
    /// Failed because the disk is full (or the file cannot grow).
    StorageFull,
}

trait WriteJob: Send {
    /// Runs inside a savepoint; a failure rolls that savepoint back.
    fn run(&mut self, conn: &Connection) -> JobRun;
    /// Called after the group's commit (or its failure); only now does the caller hear back.
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>);
}

struct TypedJob<T, F> {
    f: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> JobRun {
        let f = self.f.take().expect("job runs once");
        let r = f(conn);
        let outcome = match &r {
            Ok(_) => JobRun::Ok,
            Err(e) if e.is_full() => JobRun::StorageFull,
            Err(_) => JobRun::Failed,
        };
        self.result = Some(r);
        outcome
    }
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) {
        let out = match (commit, self.result) {
            (Ok(()), Some(r)) => r,
            (Ok(()), None) => Err(StoreError::Batch("job was not run".into())),
            (Err(e), Some(Err(own))) => Err(if own.is_full() { own } else { e.for_batch() }),
            (Err(e), _) => Err(e.for_batch()),
        };
        let _ = self.reply.send(out);
    }
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    storage: Arc<Mutex<StorageHealth>>,
    readers: Arc<Readers>,
    path: Arc<PathBuf>,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().expect("reader pool").pop() {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        // 1 MiB of page cache per reader (SQLite's default is 2): it still holds the interior
        // pages of a million-customer cache, which is what repeats between look-ups; leaf pages
        // are random and come from the OS cache either way. Keeps RSS within 32 MB.
        conn.pragma_update(None, "cache_size", -1024)?;
        Ok(conn)
    }
    fn give(&self, c: Connection) {
        let mut idle = self.idle.lock().expect("reader pool");
        // Two async workers read inline, plus the blocking pool's scans: four idle readers
        // cover them; more would only hold page caches.
        if idle.len() < 4 {
            idle.push(c);
        }
    }
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
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
    Ok(conn)
}

/// WAL frames after which the background checkpointer is asked to copy them into the database.
const CHECKPOINT_AFTER_FRAMES: i32 = 1000;
/// WAL frames after which the writer checkpoints itself, as SQLite's auto-checkpoint would:
/// under a steady stream of commits the background pass never catches the last frame, and
/// the WAL only restarts after a checkpoint that did. Cheap by then (the background pass has
/// copied most frames).
const CHECKPOINT_INLINE_FRAMES: i32 = 8000;

/// Moves WAL checkpoints off the writer thread. Inline, each copied ~1,000 pages into the
/// database and fsync'd it between two group commits: a tenth of the writer's time and the
/// earn benchmark's worst latencies. A PASSIVE checkpoint on its own connection runs beside
/// the writer and readers without blocking either.
fn start_checkpointer(writer: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "cache_size", -64)?;
    std::thread::Builder::new()
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
    Ok(())
}

fn clean_marker(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".clean");
    PathBuf::from(name)
}

/// What identifies the database file as last written: length, modification time and, on
/// Unix, inode and change time (which no tool can set back).
fn file_stamp(db: &Path) -> Option<String> {
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
fn clean_stop_matches(db: &Path) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal_empty = std::fs::metadata(PathBuf::from(wal)).map_or(true, |m| m.len() == 0);
    let Ok(marker) = std::fs::read_to_string(clean_marker(db)) else {
        return false;
    };
    wal_empty && file_stamp(db).is_some_and(|s| s == marker.trim())
}

fn corrupt_or(e: rusqlite::Error, path: &str) -> StoreError {
    match StoreError::from(e) {
        StoreError::Corrupt { detail, .. } => StoreError::Corrupt {
            path: path.to_string(),
            detail,
        },
        other => other,
    }
}

/// Whether the last group commit worked, for `status` and `/metrics`: a full disk must be
/// visible to an operator, not only to the register that got a 503.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageHealth {
    pub ok: bool,
    pub last_error: Option<String>,
    /// Unix ms of the last storage failure.
    pub last_error_at: Option<i64>,
    /// Failed commits and jobs that failed for lack of space, since start.
    pub errors: u64,
    /// Group commits since start, and the write jobs they carried (jobs / commits = how many
    /// registers' writes share one fsync).
    pub commits: u64,
    pub jobs: u64,
}

/// Records a group commit of `jobs` writes and how it went.
fn note_storage(health: &Mutex<StorageHealth>, failure: Option<&StoreError>, jobs: u64) {
    let mut h = health.lock().expect("storage health");
    h.commits += 1;
    h.jobs += jobs;
    match failure {
        None => h.ok = true,
        Some(e) => {
            h.ok = false;
            h.errors += 1;
            h.last_error = Some(e.to_string());
            h.last_error_at = Some(crate::clock::Clock::now_ms(&crate::clock::SystemClock));
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn WriteJob>>,
    health: Arc<Mutex<StorageHealth>>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let (commit, full) = run_batch(&mut conn, &mut batch);
        let jobs = batch.len() as u64;
        match &commit {
            Err(e) => {
                tracing::error!(error = %e, jobs, "database commit failed; nothing in this group was acknowledged");
                note_storage(&health, Some(e), jobs);
            }
            Ok(()) if full => note_storage(&health, Some(&StoreError::Full), jobs),
            Ok(()) => note_storage(&health, None, jobs),
        }
        for job in batch {
            job.finish(commit.as_ref().map(|_| ()));
        }
    }
}

/// Runs a group in one transaction; also says whether any job failed for lack of space.
///
/// The transaction and savepoint statements are prepared once and cached: parsing them anew
/// for every job was a tenth of the writer's time while draining the outbox.
fn run_batch(
    conn: &mut Connection,
    batch: &mut [Box<dyn WriteJob>],
) -> (Result<(), StoreError>, bool) {
    let mut full = false;
    let exec = |sql: &str| -> rusqlite::Result<()> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    let r = (|| -> rusqlite::Result<()> {
        exec("BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            exec("SAVEPOINT job")?;
            match job.run(conn) {
                JobRun::Ok => {}
                // Undo just this job; the others in the group still commit.
                JobRun::StorageFull => {
                    full = true;
                    exec("ROLLBACK TO job")?;
                }
                JobRun::Failed => exec("ROLLBACK TO job")?,
            }
            exec("RELEASE job")?;
        }
        exec("COMMIT")?;
        Ok(())
    })();
    if r.is_err() && !conn.is_autocommit() {
        // Nothing of this group may stay half-applied for the next one.
        let _ = conn.execute_batch("ROLLBACK");
    }
    (r.map_err(StoreError::from), full)
}

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
}

impl CustomerRow {
    pub fn balance(&self) -> Balance {
        Balance::new(self.confirmed, self.pending)
    }
}

/// One outbox row.
#[derive(Debug, Clone, Serialize)]
pub struct TxnRow {
    pub seq: i64,
    pub txn_id: String,
    pub request: String,
    pub customer_id: String,
    pub kind: String,
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

const TXN_COLS: &str = "seq, txn_id, request, customer_id, kind, delta, points, purchase_amount, reason, \
    register_id, staff_id, token_name, created_at, state, attempts, next_attempt_at, last_error, \
    before_balance, before_updated_at, upstream_balance, upstream_result, updated_at, resolved_by, \
    resolution_note, upstream_txn_ids";

fn txn_from_row(r: &Row<'_>) -> rusqlite::Result<TxnRow> {
    let state: String = r.get(13)?;
    Ok(TxnRow {
        seq: r.get(0)?,
        txn_id: r.get(1)?,
        request: r.get(2)?,
        customer_id: r.get(3)?,
        kind: r.get(4)?,
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

/// The states of a transaction still on its way upstream, written exactly as the partial
/// indexes `txns_open_by_customer` and `txns_open_seq` are (schema 4): SQLite uses a partial
/// index only for a query that repeats its condition, and an `IN` list of three would build a
/// temporary B-tree on every execution. `open_rows!("t")` qualifies the column.
macro_rules! open_rows {
    () => {
        "(state = 'pending' OR state = 'sending' OR state = 'ambiguous')"
    };
    ($alias:literal) => {
        concat!(
            "(",
            $alias,
            ".state = 'pending' OR ",
            $alias,
            ".state = 'sending' OR ",
            $alias,
            ".state = 'ambiguous')"
        )
    };
}

const CUSTOMER_SELECT: &str = concat!(
    "SELECT c.customer_id, c.code, c.barcode, c.name, c.confirmed, \
    (SELECT COALESCE(SUM(t.delta), 0) FROM txns t INDEXED BY txns_open_by_customer \
       WHERE t.customer_id = c.customer_id AND ",
    open_rows!("t"),
    "), c.expires_at, c.upstream_updated_at, c.as_of, c.local_only, c.changed_elsewhere_at, \
    c.marked_at FROM customers c"
);

fn customer_from_row(r: &Row<'_>) -> rusqlite::Result<CustomerRow> {
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
    })
}

pub fn customer_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<CustomerRow>> {
    conn.prepare_cached(&format!("{CUSTOMER_SELECT} WHERE c.customer_id = ?1"))?
        .query_row([id], customer_from_row)
        .optional()
}

pub fn txn_by_id(conn: &Connection, txn_id: &str) -> rusqlite::Result<Option<TxnRow>> {
    conn.prepare_cached(&format!("SELECT {TXN_COLS} FROM txns WHERE txn_id = ?1"))?
        .query_row([txn_id], txn_from_row)
        .optional()
}

fn txn_by_seq(conn: &Connection, seq: i64) -> rusqlite::Result<TxnRow> {
    conn.prepare_cached(&format!("SELECT {TXN_COLS} FROM txns WHERE seq = ?1"))?
        .query_row([seq], txn_from_row)
}

fn bump_apply_counter(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "UPDATE sync_state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'apply_counter' \
         RETURNING CAST(value AS INTEGER)",
        [],
        |r| r.get(0),
    )
}

/// What the accept rule needs to know besides the request.
#[derive(Debug, Clone)]
pub struct AcceptCtx {
    pub now_ms: i64,
    /// Today's date where the upstream counts expiry (JST), `YYYY-MM-DD`.
    pub today: String,
    pub online: bool,
    pub token_name: String,
    pub earn: EarnConfig,
    pub offline: OfflineConfig,
}

#[derive(Debug)]
pub enum AcceptOutcome {
    /// Committed as a new pending transaction.
    Created {
        txn: TxnRow,
        customer: CustomerRow,
    },
    /// The same key with the same body was seen before.
    Replay {
        txn: TxnRow,
        customer: CustomerRow,
    },
    /// The same key with a different body.
    Conflict {
        existing: TxnRow,
    },
    UnknownCustomer,
    Refused {
        refusal: RedeemRefusal,
        customer: CustomerRow,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    pub pending: i64,
    pub sending: i64,
    pub ambiguous: i64,
    pub applied: i64,
    pub needs_review: i64,
    pub rejected: i64,
    pub discarded: i64,
    pub oldest_pending_created_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct TxnFilter {
    pub state: Option<State>,
    pub customer_id: Option<String>,
    pub register_id: Option<String>,
    pub limit: u32,
}

/// How a send that got no answer turned out on read-back.
#[derive(Debug, Clone)]
pub enum Verified {
    Applied {
        balance: i64,
        updated_at: Option<String>,
    },
    Resend,
    NeedsReview {
        evidence: String,
    },
}

impl Store {
    /// Opens (creating if needed) and migrates the database, and starts the writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = open_writer(path)?;
        start_checkpointer(&mut conn, path)?;
        let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>(4 * GROUP_COMMIT_MAX);
        let storage = Arc::new(Mutex::new(StorageHealth {
            ok: true,
            ..Default::default()
        }));
        let h = storage.clone();
        std::thread::Builder::new()
            .name("pointsd-db-writer".into())
            .spawn(move || writer_loop(conn, rx, h))
            .map_err(|e| StoreError::Batch(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            writer: tx,
            storage,
            readers: Arc::new(Readers {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
            path: Arc::new(path.to_path_buf()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn storage_health(&self) -> StorageHealth {
        self.storage.lock().expect("storage health").clone()
    }

    /// Runs `f` in the writer's next group commit and returns once that commit is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(TypedJob {
            f: Some(f),
            result: None,
            reply,
        });
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let r = f(&conn);
            readers.give(conn);
            r.map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Batch(format!("reader task failed: {e}")))?
    }

    /// Runs a point look-up (one row by a unique key) on the calling thread. Such a read takes
    /// microseconds from the page cache; handing it to the blocking pool cost more than the
    /// query itself (two thread wake-ups per request, the look-up benchmark's top cost). Scans
    /// and reports go through [`Store::read`].
    pub fn read_point<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.take()?;
        let r = f(&conn);
        self.readers.give(conn);
        r.map_err(StoreError::from)
    }

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
            let col = match column {
                LookupColumn::Code => "code",
                LookupColumn::Barcode => "barcode",
            };
            c.prepare_cached(&format!(
                "{CUSTOMER_SELECT} WHERE c.{col} = ?1 ORDER BY c.customer_id LIMIT 1"
            ))?
            .query_row([value], customer_from_row)
            .optional()
        })
    }

    pub async fn txn(&self, txn_id: &str) -> Result<Option<TxnRow>, StoreError> {
        self.read_point(|c| txn_by_id(c, txn_id))
    }

    pub async fn list_txns(&self, f: TxnFilter) -> Result<Vec<TxnRow>, StoreError> {
        self.read(move |c| {
            let mut args: Vec<String> = Vec::new();
            // A customer's history lives in two partial indexes (open and closed rows); the
            // merge of both keeps seq order without sorting.
            let from = match &f.customer_id {
                Some(cid) => {
                    args.push(cid.clone());
                    format!(concat!(
                        "(SELECT {TXN_COLS} FROM txns INDEXED BY txns_open_by_customer \
                               WHERE customer_id = ?1 AND ",
                        open_rows!(),
                        " UNION ALL SELECT {TXN_COLS} FROM txns INDEXED BY txns_closed_by_customer \
                           WHERE customer_id = ?1 AND (state = 'applied' OR state = 'rejected' \
                           OR state = 'needs_review' OR state = 'discarded'))"
                        ),
                        TXN_COLS = TXN_COLS
                    )
                }
                None => "txns".into(),
            };
            let mut sql = format!("SELECT {TXN_COLS} FROM {from} WHERE 1=1");
            if let Some(s) = f.state {
                args.push(s.as_str().into());
                sql.push_str(&format!(" AND state = ?{}", args.len()));
            }
            if let Some(r) = &f.register_id {
                args.push(r.clone());
                sql.push_str(&format!(" AND register_id = ?{}", args.len()));
            }
            sql.push_str(&format!(
                " ORDER BY seq DESC LIMIT {}",
                f.limit.clamp(1, 1000)
            ));
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args.iter()), txn_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.read(|c| {
            let mut q = QueueStats::default();
            let mut st = c.prepare_cached("SELECT state, n FROM txn_counts")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let s: String = r.get(0)?;
                let n: i64 = r.get(1)?;
                match State::parse(&s) {
                    Some(State::Pending) => q.pending = n,
                    Some(State::Sending) => q.sending = n,
                    Some(State::Ambiguous) => q.ambiguous = n,
                    Some(State::Applied) => q.applied = n,
                    Some(State::NeedsReview) => q.needs_review = n,
                    Some(State::Rejected) => q.rejected = n,
                    Some(State::Discarded) => q.discarded = n,
                    None => {}
                }
            }
            // The oldest open row by sequence is the oldest by acceptance (one index step).
            q.oldest_pending_created_at = c
                .query_row(
                    concat!(
                        "SELECT created_at FROM txns INDEXED BY txns_open_seq WHERE ",
                        open_rows!(),
                        " ORDER BY seq LIMIT 1"
                    ),
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(q)
        })
        .await
    }

    /// Whether any transaction is waiting to go upstream (one step of the open-rows index).
    pub async fn has_open(&self) -> Result<bool, StoreError> {
        self.read(|c| {
            c.query_row(
                concat!(
                    "SELECT EXISTS (SELECT 1 FROM txns INDEXED BY txns_open_seq WHERE ",
                    open_rows!(),
                    ")"
                ),
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    pub async fn customer_count(&self) -> Result<i64, StoreError> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM customers", [], |r| r.get(0)))
            .await
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.read(move |c| {
            c.query_row("SELECT value FROM sync_state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
        })
        .await
    }

    pub async fn set_meta(&self, key: &str, value: String) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO sync_state(key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
            Ok(())
        })
        .await
    }

    /// The accept rule, atomically: idempotency check, customer check, redeem policy, insert.
    pub async fn accept(&self, new: NewTxn, ctx: AcceptCtx) -> Result<AcceptOutcome, StoreError> {
        self.write(move |c| accept_in(c, &new, &ctx)).await
    }

    /// Claims the next due transactions: for each customer only the oldest open one, and
    /// only when it is due. Pending ones become `sending` with the evidence for a read-back
    /// recorded; ambiguous ones are returned as they are, to be verified.
    ///
    /// `max_wait_ms` is the longest wait the schedule ever sets: a row due later than
    /// `now + max_wait_ms` was scheduled before the wall clock was set back, and is due now
    /// (otherwise a clock correction would stall the queue for as long as it moved).
    pub async fn claim_due(
        &self,
        now_ms: i64,
        limit: usize,
        max_wait_ms: i64,
    ) -> Result<Vec<TxnRow>, StoreError> {
        self.claim_due_except(now_ms, limit, max_wait_ms, Vec::new())
            .await
    }

    /// [`Store::claim_due`], leaving out the rows in `busy` (sends still in flight).
    pub async fn claim_due_except(
        &self,
        now_ms: i64,
        limit: usize,
        max_wait_ms: i64,
        busy: Vec<i64>,
    ) -> Result<Vec<TxnRow>, StoreError> {
        self.write(move |c| {
            let mut st = c.prepare_cached(
                // INDEXED BY: without statistics the planner sorts every open row per claim.
                concat!(
                    "SELECT t.seq FROM txns t INDEXED BY txns_due \
                     WHERE t.state IN ('pending','ambiguous') \
                       AND (t.next_attempt_at <= ?1 OR t.next_attempt_at > ?1 + ?3) \
                       AND NOT EXISTS (SELECT 1 FROM txns o INDEXED BY txns_open_by_customer \
                            WHERE o.customer_id = t.customer_id AND o.seq < t.seq AND ",
                    open_rows!("o"),
                    ") ORDER BY t.seq LIMIT ?2"
                ),
            )?;
            let seqs: Vec<i64> = st
                .query_map(
                    params![now_ms, (limit + busy.len()) as i64, max_wait_ms],
                    |r| r.get(0),
                )?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(limit);
            for seq in seqs {
                if busy.contains(&seq) {
                    continue;
                }
                if out.len() == limit {
                    break;
                }
                c.prepare_cached("UPDATE txns SET state = 'sending', attempts = attempts + 1, updated_at = ?2, \
                       before_balance = (SELECT confirmed FROM customers WHERE customer_id = txns.customer_id \
                           AND as_of IS NOT NULL), \
                       before_updated_at = (SELECT upstream_updated_at FROM customers WHERE customer_id = txns.customer_id \
                           AND as_of IS NOT NULL) \
                     WHERE seq = ?1 AND state = 'pending'")?.execute(params![seq, now_ms])?;
                out.push(txn_by_seq(c, seq)?);
            }
            Ok(out)
        })
        .await
    }

    /// Records the read-back evidence for a send when the cache had never confirmed the
    /// customer's balance (the figure was read from the upstream just now).
    pub async fn set_before(
        &self,
        seq: i64,
        balance: i64,
        upstream_updated_at: Option<String>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE txns SET before_balance = ?2, before_updated_at = ?3 WHERE seq = ?1",
            )?
            .execute(params![seq, balance, upstream_updated_at])?;
            Ok(())
        })
        .await
    }

    /// The upstream applied the delta and answered with the new balance. `upstream_txn_ids`:
    /// the upstream's ids of the transactions it created, when it said (or the read-back found).
    pub async fn mark_applied(
        &self,
        seq: i64,
        balance: i64,
        upstream_updated_at: Option<String>,
        now_ms: i64,
        note: Option<String>,
        upstream_txn_ids: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        let ids = upstream_txn_ids
            .filter(|v| !v.is_empty())
            .map(|v| serde_json::Value::from(v).to_string());
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'applied', upstream_balance = ?2, updated_at = ?3, \
                   last_error = NULL, upstream_result = COALESCE(?4, upstream_result), \
                   upstream_txn_ids = COALESCE(?5, upstream_txn_ids) WHERE seq = ?1")?.execute(params![seq, balance, now_ms, note, ids])?;
            let rev = bump_apply_counter(c)?;
            c.prepare_cached("UPDATE customers SET confirmed = ?2, as_of = ?3, applied_rev = ?4, local_only = 0, \
                   upstream_updated_at = COALESCE(?5, upstream_updated_at) \
                 WHERE customer_id = (SELECT customer_id FROM txns WHERE seq = ?1)")?.execute(params![seq, balance, now_ms, rev, upstream_updated_at])?;
            // The answer shows every change up to now: a mark from before it is answered.
            if let Some(ms) = upstream_updated_at.as_deref().and_then(crate::clock::parse_stamp) {
                c.prepare_cached(feed::CLEAR_MARK_OF_SEQ)?.execute(params![seq, ms])?;
            }
            Ok(())
        })
        .await
    }

    /// The upstream transaction ids this agent's applied sends for `customer_id` created (the
    /// most recent `limit` sends that recorded any): the read-back leaves these out.
    pub async fn own_upstream_txn_ids(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let id = customer_id.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                // The closed half's own condition, so the partial index serves the query.
                "SELECT upstream_txn_ids FROM txns INDEXED BY txns_closed_by_customer \
                 WHERE customer_id = ?1 \
                   AND (state = 'applied' OR state = 'rejected' OR state = 'needs_review' OR state = 'discarded') \
                   AND state = 'applied' AND upstream_txn_ids IS NOT NULL \
                 ORDER BY seq DESC LIMIT ?2",
            )?;
            let mut out = Vec::new();
            for j in st.query_map(params![id, limit as i64], |r| r.get::<_, String>(0))? {
                if let Ok(v) = serde_json::from_str::<Vec<String>>(&j?) {
                    out.extend(v);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Back to `pending` to be tried again at `next_attempt_at`.
    pub async fn mark_retry(
        &self,
        seq: i64,
        error: String,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'pending', last_error = ?2, next_attempt_at = ?3, updated_at = ?4 \
                 WHERE seq = ?1")?.execute(params![seq, error, next_attempt_at, now_ms])?;
            Ok(())
        })
        .await
    }

    /// No answer after the request left: verify by read-back before anything else.
    pub async fn mark_ambiguous(
        &self,
        seq: i64,
        error: String,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'ambiguous', last_error = ?2, next_attempt_at = ?3, updated_at = ?4 \
                 WHERE seq = ?1")?.execute(params![seq, error, next_attempt_at, now_ms])?;
            Ok(())
        })
        .await
    }

    /// Verification of an ambiguous send failed for now; try the read-back again later.
    pub async fn defer_ambiguous(
        &self,
        seq: i64,
        error: String,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.mark_ambiguous(seq, error, next_attempt_at, now_ms)
            .await
    }

    pub async fn mark_rejected(
        &self,
        seq: i64,
        error: String,
        upstream_result: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'rejected', last_error = ?2, upstream_result = ?3, updated_at = ?4 \
                 WHERE seq = ?1")?.execute(params![seq, error, upstream_result, now_ms])?;
            // A return's refused take-back is followed by a smaller one, never dropped.
            sales::after_rejected(c, seq, now_ms)
        })
        .await
    }

    pub async fn mark_needs_review(
        &self,
        seq: i64,
        error: String,
        evidence: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached("UPDATE txns SET state = 'needs_review', last_error = ?2, upstream_result = ?3, updated_at = ?4 \
                 WHERE seq = ?1")?.execute(params![seq, error, evidence, now_ms])?;
            Ok(())
        })
        .await
    }

    /// At start-up: a row still `sending` was in flight when the process died. Whether the
    /// upstream got it is unknown, so it must be verified, never blindly resent.
    /// `verify_at`: not before the orphaned request could have landed upstream.
    pub async fn recover_in_flight(
        &self,
        now_ms: i64,
        verify_at: i64,
    ) -> Result<usize, StoreError> {
        self.write(move |c| {
            Ok(c.prepare_cached("UPDATE txns SET state = 'ambiguous', next_attempt_at = ?2, updated_at = ?1, \
                   last_error = 'pointsd stopped while this was being sent; verifying by read-back' \
                 WHERE state = 'sending'")?.execute([now_ms, verify_at])?)
        })
        .await
    }

    /// Rows whose send finished but whose outcome could not be written (e.g. disk full): they
    /// are not in flight any more, so they become ambiguous and are settled by read-back.
    pub async fn release_unrecorded(&self, seqs: Vec<i64>, now_ms: i64) -> Result<(), StoreError> {
        self.write(move |c| {
            for seq in &seqs {
                c.prepare_cached("UPDATE txns SET state = 'ambiguous', next_attempt_at = ?2, updated_at = ?2, \
                       last_error = 'the outcome could not be saved (storage); verifying by read-back' \
                     WHERE seq = ?1 AND state = 'sending'")?.execute(params![seq, now_ms])?;
            }
            Ok(())
        })
        .await
    }

    /// Folds the WAL into the database file, so that the file alone holds everything (a
    /// backup of `pointsd.db` is then complete). Called at a clean stop, after the last write:
    /// it leaves `pointsd.db.clean`, which lets the next start skip the integrity check while
    /// the file stays exactly as left.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let path = self.path.to_path_buf();
        self.readers.idle.lock().expect("reader pool").clear();
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

    pub async fn apply_counter(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT CAST(value AS INTEGER) FROM sync_state WHERE key = 'apply_counter'",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    /// The earliest time an open transaction becomes due, to sleep until then.
    pub async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        // (A row scheduled before a clock change may lie far ahead; claim_due handles it.)
        self.read(|c| {
            c.query_row(
                "SELECT MIN(next_attempt_at) FROM txns INDEXED BY txns_due_at \
                 WHERE state IN ('pending','ambiguous')",
                [],
                |r| r.get(0),
            )
        })
        .await
    }
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

/// A person's decision on a transaction in the review queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// The upstream has it (checked by a person): count it as applied.
    Applied,
    /// The upstream does not have it: send it again.
    Resend,
    /// It must not count: drop it.
    Discard,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Applied => "applied",
            Resolution::Resend => "resend",
            Resolution::Discard => "discard",
        }
    }
}

#[derive(Debug)]
pub enum ResolveOutcome {
    Done { customer_id: String },
    NotFound,
    NotResolvable(State),
}

/// One audited review decision.
#[derive(Debug, Clone, Serialize)]
pub struct ResolutionRow {
    pub txn_id: String,
    pub from_state: String,
    pub action: String,
    pub resolved_by: String,
    pub note: String,
    pub at: i64,
}

impl Store {
    /// Applies a person's decision, with an audit row, in one transaction. Only
    /// `needs_review` rows take any decision; `rejected` rows may be resent or discarded.
    pub async fn resolve(
        &self,
        txn_id: &str,
        res: Resolution,
        by: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<ResolveOutcome, StoreError> {
        let (txn_id, by, note) = (txn_id.to_string(), by.to_string(), note.to_string());
        self.write(move |c| {
            let Some(t) = txn_by_id(c, &txn_id)? else {
                return Ok(ResolveOutcome::NotFound);
            };
            let allowed = matches!(
                (t.state, res),
                (State::NeedsReview, _)
                    | (State::Rejected, Resolution::Resend | Resolution::Discard)
            );
            if !allowed {
                return Ok(ResolveOutcome::NotResolvable(t.state));
            }
            let new_state = match res {
                Resolution::Applied => State::Applied,
                Resolution::Resend => State::Pending,
                Resolution::Discard => State::Discarded,
            };
            c.prepare_cached("UPDATE txns SET state = ?2, resolved_by = ?3, resolution_note = ?4, updated_at = ?5, \
                   next_attempt_at = ?5 WHERE seq = ?1")?.execute(params![t.seq, new_state.as_str(), by, note, now_ms])?;
            c.prepare_cached("INSERT INTO resolutions(txn_id, from_state, action, resolved_by, note, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![txn_id, t.state.as_str(), res.as_str(), by, note, now_ms])?;
            Ok(ResolveOutcome::Done {
                customer_id: t.customer_id,
            })
        })
        .await
    }

    pub async fn resolutions(&self, txn_id: &str) -> Result<Vec<ResolutionRow>, StoreError> {
        let id = txn_id.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT txn_id, from_state, action, resolved_by, note, at FROM resolutions \
                 WHERE txn_id = ?1 ORDER BY id",
            )?;
            st.query_map([id], |r| {
                Ok(ResolutionRow {
                    txn_id: r.get(0)?,
                    from_state: r.get(1)?,
                    action: r.get(2)?,
                    resolved_by: r.get(3)?,
                    note: r.get(4)?,
                    at: r.get(5)?,
                })
            })?
            .collect()
        })
        .await
    }
}

#[derive(Debug, Clone, Copy)]
pub enum LookupColumn {
    Code,
    Barcode,
}

fn accept_in(c: &Connection, new: &NewTxn, ctx: &AcceptCtx) -> Result<AcceptOutcome, StoreError> {
    let canonical = new.canonical();
    if let Some(existing) = txn_by_id(c, &new.txn_id)? {
        if existing.request == canonical {
            let customer = customer_by_id(c, &existing.customer_id)?
                .ok_or_else(|| StoreError::Batch("transaction without customer".into()))?;
            return Ok(AcceptOutcome::Replay {
                txn: existing,
                customer,
            });
        }
        return Ok(AcceptOutcome::Conflict { existing });
    }
    let customer = match customer_by_id(c, &new.customer_id)? {
        Some(cu) => cu,
        None => {
            // An earn for a customer the cache has not seen may be kept offline when the store
            // allows it; the upstream decides when the link is back.
            if !ctx.online && ctx.offline.allow_unknown_customers && new.kind == ledger::Kind::Earn
            {
                c.prepare_cached("INSERT INTO customers(customer_id, local_only) VALUES (?1, 1)")?
                    .execute([&new.customer_id])?;
                customer_by_id(c, &new.customer_id)?.expect("just inserted")
            } else {
                return Ok(AcceptOutcome::UnknownCustomer);
            }
        }
    };
    let delta = new.delta(&ctx.earn);
    if new.kind == ledger::Kind::Redeem || delta < 0 {
        let expired = ledger::is_expired(customer.expires_at.as_deref(), &ctx.today);
        let res = if new.kind == ledger::Kind::Redeem {
            ledger::check_changed_elsewhere(
                customer.changed_elsewhere_at.as_deref(),
                ctx.online,
                &ctx.offline,
            )
            .and_then(|()| {
                ledger::check_redeem(
                    -delta,
                    customer.balance(),
                    expired,
                    ctx.online,
                    &ctx.offline,
                )
            })
        } else {
            // A negative adjustment is a correction by staff: it may not overdraw either.
            ledger::check_redeem(-delta, customer.balance(), false, true, &ctx.offline)
        };
        if let Err(refusal) = res {
            return Ok(AcceptOutcome::Refused { refusal, customer });
        }
    }
    c.prepare_cached(
        "INSERT INTO txns(txn_id, request, customer_id, kind, delta, points, purchase_amount, reason, \
           register_id, staff_id, token_name, created_at, state, next_attempt_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'pending', ?12, ?12)",
    )?
    .execute(params![
        new.txn_id,
        canonical,
        new.customer_id,
        new.kind.as_str(),
        delta,
        new.points,
        new.purchase_amount,
        new.reason,
        new.register_id,
        new.staff_id,
        ctx.token_name,
        ctx.now_ms,
    ])?;
    let txn = txn_by_seq(c, c.last_insert_rowid())?;
    let customer = customer_by_id(c, &new.customer_id)?.expect("exists");
    Ok(AcceptOutcome::Created { txn, customer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Kind;

    fn ctx(online: bool) -> AcceptCtx {
        AcceptCtx {
            now_ms: 1_000,
            today: "2026-11-23".into(),
            online,
            token_name: "t".into(),
            earn: EarnConfig::default(),
            offline: OfflineConfig::default(),
        }
    }

    fn txn(id: &str, kind: Kind, points: i64) -> NewTxn {
        NewTxn {
            txn_id: id.into(),
            customer_id: "c1".into(),
            kind,
            points: Some(points),
            purchase_amount: None,
            reason: None,
            register_id: None,
            staff_id: None,
        }
    }

    async fn store_with_customer(dir: &Path, confirmed: i64) -> Store {
        let s = Store::open(&dir.join("t.db")).unwrap();
        s.upsert_balances(
            vec![UpstreamBalance {
                customer_id: "c1".into(),
                point: confirmed,
                expires_at: None,
                updated_at: Some("u0".into()),
            }],
            0,
            1,
        )
        .await
        .unwrap();
        s
    }

    #[tokio::test]
    async fn accept_replay_conflict_and_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with_customer(dir.path(), 100).await;
        let r = s.accept(txn("a", Kind::Earn, 10), ctx(true)).await.unwrap();
        let AcceptOutcome::Created { customer, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!(customer.balance(), Balance::new(100, 10));
        assert!(matches!(
            s.accept(txn("a", Kind::Earn, 10), ctx(true)).await.unwrap(),
            AcceptOutcome::Replay { .. }
        ));
        assert!(matches!(
            s.accept(txn("a", Kind::Earn, 11), ctx(true)).await.unwrap(),
            AcceptOutcome::Conflict { .. }
        ));
        assert!(matches!(
            s.accept(txn("b", Kind::Redeem, 111), ctx(true))
                .await
                .unwrap(),
            AcceptOutcome::Refused { .. }
        ));
        let mut unknown = txn("c", Kind::Earn, 1);
        unknown.customer_id = "nobody".into();
        assert!(matches!(
            s.accept(unknown, ctx(true)).await.unwrap(),
            AcceptOutcome::UnknownCustomer
        ));
        assert_eq!(s.queue_stats().await.unwrap().pending, 1);
    }

    #[tokio::test]
    async fn a_clean_stop_lets_the_next_start_skip_the_check_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with_customer(dir.path(), 100).await;
        s.accept(txn("a", Kind::Earn, 10), ctx(false))
            .await
            .unwrap();
        let db = s.path().to_path_buf();
        assert!(!clean_stop_matches(&db), "no clean stop yet");
        s.checkpoint().await.unwrap();
        assert!(clean_marker(&db).exists());
        assert!(clean_stop_matches(&db));
        // Any change to the file afterwards (here: one more byte) means the check runs.
        std::thread::sleep(Duration::from_millis(20));
        let len = std::fs::metadata(&db).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.set_len(len + 1).unwrap();
        drop(f);
        assert!(!clean_stop_matches(&db));
        // Opening consumes the marker, so a crash during this run is never mistaken for clean.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(len)
            .unwrap();
        drop(s);
        let _again = Store::open(&db).unwrap();
        assert!(!clean_marker(&db).exists());
    }

    #[tokio::test]
    async fn claim_is_per_customer_fifo_and_pull_respects_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with_customer(dir.path(), 100).await;
        s.accept(txn("a", Kind::Earn, 10), ctx(true)).await.unwrap();
        s.accept(txn("b", Kind::Earn, 20), ctx(true)).await.unwrap();
        let claimed = s.claim_due(2_000, 10, 1_000_000).await.unwrap();
        assert_eq!(claimed.len(), 1, "only the head of the customer's queue");
        assert_eq!(claimed[0].txn_id, "a");
        assert_eq!(claimed[0].before_balance, Some(100));
        // A pull while "a" is in flight must not overwrite the cached balance.
        let stale = vec![UpstreamBalance {
            customer_id: "c1".into(),
            point: 5,
            expires_at: None,
            updated_at: None,
        }];
        let rev = s.apply_counter().await.unwrap();
        assert_eq!(s.upsert_balances(stale.clone(), rev, 3).await.unwrap().0, 0);
        s.mark_applied(claimed[0].seq, 110, None, 3, None, None)
            .await
            .unwrap();
        // A pull that started before the apply must not overwrite it either.
        assert_eq!(s.upsert_balances(stale, rev, 4).await.unwrap().0, 0);
        let c = s.customer("c1").await.unwrap().unwrap();
        assert_eq!(c.balance(), Balance::new(110, 20));
        let next = s.claim_due(5_000, 10, 1_000_000).await.unwrap();
        assert_eq!(next[0].txn_id, "b");
        let q = s.queue_stats().await.unwrap();
        assert_eq!((q.pending, q.sending, q.applied), (0, 1, 1));
        assert_counts_match_history(&s).await;
    }

    /// The kept queue counts agree with counting the rows themselves.
    async fn assert_counts_match_history(s: &Store) {
        let (kept, counted) = s
            .read(|c| {
                let q = |sql: &str| -> rusqlite::Result<Vec<(String, i64)>> {
                    c.prepare(sql)?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                };
                Ok((
                    q("SELECT state, n FROM txn_counts WHERE n <> 0 ORDER BY state")?,
                    q("SELECT state, COUNT(*) FROM txns GROUP BY state ORDER BY state")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(kept, counted);
    }

    #[tokio::test]
    async fn in_flight_rows_become_ambiguous_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = store_with_customer(dir.path(), 100).await;
            s.accept(txn("a", Kind::Earn, 10), ctx(true)).await.unwrap();
            s.claim_due(2_000, 10, 1_000_000).await.unwrap();
        }
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(s.recover_in_flight(3_000, 3_000).await.unwrap(), 1);
        let t = s.txn("a").await.unwrap().unwrap();
        assert_eq!(t.state, State::Ambiguous);
        assert_eq!(t.before_balance, Some(100));
    }

    /// A store written by the previous schema (v3) keeps every row, its balances, its review
    /// history and its sequence's high-water mark through the table rebuild of v4.
    #[tokio::test]
    async fn a_version_3_database_is_rebuilt_without_losing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        {
            let mut c = Connection::open(&db).unwrap();
            c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
                .unwrap();
            let tx = c.transaction().unwrap();
            for sql in &schema::MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute_batch(
                "INSERT INTO customers(customer_id, code, barcode, name, confirmed, as_of) \
                   VALUES ('c1', 'M1', 'B1', 'Ann', 100, 5), ('c2', NULL, NULL, NULL, 7, NULL); \
                 INSERT INTO txns(seq, txn_id, request, customer_id, kind, delta, token_name, \
                   created_at, state, next_attempt_at, updated_at) VALUES \
                   (1, 'a', '{}', 'c1', 'earn', 10, 't', 1, 'applied', 1, 1), \
                   (2, 'b', '{}', 'c1', 'redeem', -30, 't', 2, 'pending', 2, 2), \
                   (3, 'c', '{}', 'c2', 'adjust', 5, 't', 3, 'needs_review', 3, 3), \
                   (41, 'd', '{}', 'c1', 'earn', 4, 't', 4, 'ambiguous', 4, 4); \
                 INSERT INTO resolutions(txn_id, from_state, action, resolved_by, note, at) \
                   VALUES ('c', 'ambiguous', 'resend', 'mgr', 'checked', 5); \
                 UPDATE sqlite_sequence SET seq = 50 WHERE name = 'txns';",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = Store::open(&db).unwrap();
        let c1 = s.customer("c1").await.unwrap().unwrap();
        assert_eq!(
            (c1.confirmed, c1.pending, c1.name.as_deref()),
            (100, -26, Some("Ann"))
        );
        assert_eq!(
            s.customer_by(LookupColumn::Barcode, "B1")
                .await
                .unwrap()
                .unwrap()
                .customer_id,
            "c1"
        );
        assert_eq!(s.customer("c2").await.unwrap().unwrap().pending, 0);
        let q = s.queue_stats().await.unwrap();
        assert_eq!(
            (q.applied, q.pending, q.ambiguous, q.needs_review),
            (1, 1, 1, 1)
        );
        assert_eq!(q.oldest_pending_created_at, Some(2));
        assert_eq!(s.resolutions("c").await.unwrap().len(), 1);
        // Numbering goes on after the old high-water mark, never reusing a seq.
        let r = s.accept(txn("e", Kind::Earn, 1), ctx(false)).await.unwrap();
        let AcceptOutcome::Created { txn, customer } = r else {
            panic!("{r:?}")
        };
        assert_eq!(txn.seq, 51);
        assert_eq!(customer.pending, -25);
        assert_eq!(s.queue_stats().await.unwrap().pending, 2);
        assert_counts_match_history(&s).await;
        // The rebuilt CHECKs still refuse what they refused.
        let bad = s
            .write(|c| {
                c.execute("UPDATE txns SET state = 'lost' WHERE txn_id = 'e'", [])
                    .map_err(StoreError::from)
            })
            .await;
        assert!(bad.is_err(), "{bad:?}");
        let v: i64 = s
            .read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(v, schema::known_version());
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        drop(Store::open(&p).unwrap());
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = Store::open(&p).err().expect("must refuse");
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_file_is_reported_not_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
        let err = Store::open(&p).err().expect("must refuse");
        assert!(err.to_string().contains("t.db"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), vec![0x42u8; 8192]);
    }
}
