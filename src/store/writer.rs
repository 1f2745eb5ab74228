//! The single writer thread: group commit (many callers, one transaction, each in its own
//! savepoint), the storage health it reports, and the typed jobs callers send it.

use super::*;

/// Most jobs folded into one commit.
pub const GROUP_COMMIT_MAX: usize = 128;

/// How one job in a group went.
#[derive(PartialEq, Eq)]
pub(super) enum JobRun {
    Ok,
    Failed,
    /// Failed because the disk is full (or the file cannot grow).
    StorageFull,
}

pub(super) trait WriteJob: Send {
    /// Runs inside a savepoint; a failure rolls that savepoint back.
    fn run(&mut self, conn: &Connection) -> JobRun;
    /// Called after the group's commit (or its failure); only now does the caller hear back.
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>);
}

pub(super) struct TypedJob<T, F> {
    pub(super) f: Option<F>,
    pub(super) result: Option<Result<T, StoreError>>,
    pub(super) reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> JobRun {
        let Some(f) = self.f.take() else {
            // Never happens (a job runs once); if it did, the caller hears of it instead of the
            // writer ending.
            self.result = Some(Err(StoreError::JobRanTwice));
            return JobRun::Failed;
        };
        // A panic in one job (a bug in its code) must fail that job alone: unwound here, its
        // savepoint rolled back, its caller answered 500, the writer and the rest of the group
        // going on. `AssertUnwindSafe`: the only shared state the job touches is the connection,
        // and the savepoint rollback puts that back as it was.
        let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))) {
            Ok(r) => r,
            Err(payload) => {
                let kind = job_kind::<F>();
                let message = panic_message(payload.as_ref());
                tracing::error!(
                    job = kind,
                    panic = %message,
                    "a write job panicked; it alone fails (its caller gets 500), the writer goes on"
                );
                Err(StoreError::JobPanicked { kind, message })
            }
        };
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
            (Ok(()), None) => Err(StoreError::JobNotRun),
            (Err(e), Some(Err(own))) => Err(if own.is_full() { own } else { e.for_batch() }),
            (Err(e), _) => Err(e.for_batch()),
        };
        let _ = self.reply.send(out);
    }
}

/// What kind of job this is, for the log: the closure's type name names the store function
/// that queued it (e.g. `pointsd::store::outbox::<impl pointsd::store::Store>::accept::{{closure}}`).
fn job_kind<F>() -> &'static str {
    std::any::type_name::<F>()
}

/// The text a panic carried (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
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
pub(super) fn note_storage(health: &Mutex<StorageHealth>, failure: Option<&StoreError>, jobs: u64) {
    // A poisoned lock only means another thread panicked while holding it; the counters are
    // still whole numbers, so go on with them.
    let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
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

pub(super) fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn WriteJob>>,
    health: Arc<Mutex<StorageHealth>>,
    closing: Arc<std::sync::atomic::AtomicBool>,
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
        if closing.load(std::sync::atomic::Ordering::SeqCst) {
            // Jobs still queued are refused (their callers see WriterGone), not dropped silently.
            rx.close();
            while let Ok(job) = rx.try_recv() {
                job.finish(Err(&StoreError::WriterGone));
            }
            break;
        }
    }
}

/// Runs a group in one transaction; also says whether any job failed for lack of space.
///
/// The transaction and savepoint statements are prepared once and cached: parsing them anew
/// for every job was a tenth of the writer's time while draining the outbox.
pub(super) fn run_batch(
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
