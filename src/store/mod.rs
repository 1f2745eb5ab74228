//! SQLite: the customer cache and the transaction outbox.
//!
//! All writes go through one writer thread fed by a channel. It groups whatever is queued
//! (up to [`GROUP_COMMIT_MAX`] jobs) into one `BEGIN IMMEDIATE` transaction, runs each job in its
//! own savepoint (so one failing job does not spoil the others), commits once, and only then
//! answers each caller. That is how an acknowledged write is durable (WAL + `synchronous=FULL`,
//! DESIGN.md §2.1) without paying one fsync per register request. Reads use a small pool of
//! connections on the blocking thread pool, so a slow disk never stalls the async runtime.
//!
//! Files: this one (the handle: open, reads, the write entry point, close); `writer.rs` (group
//! commit, storage health); `file.rs` (opening, reader pool, checkpointer, clean-stop marker);
//! `schema.rs` (migrations); `backup.rs` (backups, restores, the first start of a restored file); `floor.rs` (the disk floor); `retention.rs` (deleting old closed history in small batches); `export.rs` (`pointsd export`); `rows.rs` (row types); `outbox.rs` (accept rule, claims, send
//! transitions); `cache.rs` (customers, pulled balances, discrepancies); `feed.rs` (customers
//! marked changed elsewhere); `queries.rs` (listing, stats, typed meta keys); `easypoints.rs` (a Smapify
//! merchant's second ledger: cached reads, what the cross-ledger report needs); `review.rs` (a
//! person's decisions); `sales.rs` and `returns.rs` (DESIGN.md §10); `inspect.rs` (read-only
//! look for `doctor`); `error.rs`. rusqlite types stay inside this module.

// The open-rows condition is used by several files; defined before them (textual scope).
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

pub mod backup;
mod cache;
mod easypoints;
mod error;
pub mod export;
mod feed;
mod file;
pub mod floor;
pub mod inspect;
mod outbox;
mod queries;
mod register_sales;
#[cfg(test)]
mod reprepare_tests;
mod retention;
mod returns;
mod review;
mod rows;
mod sales;
pub mod schema;
mod stmt_stats;
#[cfg(test)]
mod tests;
mod writer;

pub use cache::*;
pub use easypoints::*;
pub use error::*;
pub use feed::SeenChange;
use file::*;
pub use outbox::*;
pub use queries::*;
pub use register_sales::{PointsdSide, PossibleDouble, RegisterSaleRow, RegisterSide};
pub use retention::{
    RETENTION_BATCH, RetentionRun, RetentionStatus, run_schedule as run_retention_schedule,
};
pub use review::*;
pub use rows::*;
pub use sales::{
    NewReturn, NewSale, PriceRefusal, QuoteOutcome, Receipt, ReturnOutcome, ReturnRecord,
    ReturnRow, SaleCtx, SaleOutcome, SaleRecord, SaleRow, SalesStats, TxnSplit, return_txn_id,
    sale_txn_id,
};
pub use stmt_stats::{LiveStatement, PrepareCounter};
pub use writer::*;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{EarnConfig, OfflineConfig};
use crate::ledger::{self, Balance, NewTxn, RedeemRefusal, State};
use crate::upstream::{UpstreamBalance, UpstreamCustomer};

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    storage: Arc<Mutex<StorageHealth>>,
    readers: Arc<Readers>,
    path: Arc<PathBuf>,
    /// The writer and checkpoint threads, joined by [`Store::close`].
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// Counts statement compilations when opened with [`Store::open_counting_prepares`].
    prepares: Option<Arc<PrepareCounter>>,
    /// Free space against `[storage] min_free_mb` (off until the daemon sets it).
    floor: Arc<floor::DiskFloor>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database, and starts the writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, None)
    }

    /// [`Store::open`], counting every statement any of its connections compiles (first
    /// prepares and re-prepares): the guard that hot statements come from the cache.
    pub fn open_counting_prepares(path: &Path) -> Result<(Store, Arc<PrepareCounter>), StoreError> {
        let counter = Arc::new(PrepareCounter::default());
        Ok((Store::open_with(path, Some(counter.clone()))?, counter))
    }

    fn open_with(path: &Path, prepares: Option<Arc<PrepareCounter>>) -> Result<Store, StoreError> {
        let mut conn = open_writer(path, prepares.as_ref())?;
        let ckpt = start_checkpointer(&mut conn, path)?;
        let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>(4 * GROUP_COMMIT_MAX);
        let storage = Arc::new(Mutex::new(StorageHealth {
            ok: true,
            ..Default::default()
        }));
        let h = storage.clone();
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c2 = closing.clone();
        let writer = std::thread::Builder::new()
            .name("pointsd-db-writer".into())
            .spawn(move || writer_loop(conn, rx, h, c2))
            .map_err(|e| StoreError::Batch(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            writer: tx,
            storage,
            threads: Arc::new(Mutex::new(vec![writer, ckpt])),
            closing,
            readers: Arc::new(Readers {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
                prepares: prepares.clone(),
            }),
            prepares,
            path: Arc::new(path.to_path_buf()),
            floor: Arc::new(floor::DiskFloor::new(0)),
        })
    }

    /// Stops the writer after what is queued has committed, and joins the writer and
    /// checkpoint threads (the writer's connection closes first; the checkpointer ends with
    /// it). Writes after this fail with [`StoreError::WriterGone`]. Other handles may still
    /// exist; they only lose the ability to write.
    pub async fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // An empty job wakes the writer, which sees the flag after committing its group.
        let _ = self.write(|_| Ok(())).await;
        let threads: Vec<_> = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The disk floor new register writes are admitted against.
    pub fn disk_floor(&self) -> &Arc<floor::DiskFloor> {
        &self.floor
    }

    pub fn storage_health(&self) -> StorageHealth {
        self.storage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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

    /// Every statement the writer and the idle readers hold prepared, with SQLite's counters.
    pub async fn live_statements(&self) -> Result<Vec<LiveStatement>, StoreError> {
        let mut out = self.write(|c| Ok(stmt_stats::live_statements(c))).await?;
        let idle = self
            .readers
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in idle.iter() {
            out.extend(stmt_stats::live_statements(c));
        }
        Ok(out)
    }

    /// The prepare counter, when the store was opened with one.
    pub fn prepare_counter(&self) -> Option<&Arc<PrepareCounter>> {
        self.prepares.as_ref()
    }
}
