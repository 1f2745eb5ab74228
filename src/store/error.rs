//! The store's error type: what went wrong with the database, and what to do about it.

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
    /// A write job panicked (a bug): it alone failed and was rolled back; the writer goes on.
    #[error("a write job ({kind}) panicked: {message}")]
    JobPanicked { kind: &'static str, message: String },
    /// A job was handed to the writer a second time (a bug; reported, never a crash).
    #[error("a write job was run twice")]
    JobRanTwice,
    /// A group committed without running one of its jobs (a bug; reported, never a crash).
    #[error("a write job was not run")]
    JobNotRun,
    /// A row a job had just written could not be read back in the same transaction.
    #[error("the {0} row just written could not be read back")]
    RowMissing(&'static str),
    #[error("cannot encode a row as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// The data dir's file system has less free space than `[storage] min_free_mb`.
    #[error(
        "the data dir has {free_mb} MB free, below the floor of {min_mb} MB ([storage] min_free_mb): the transaction was not saved. Free disk space; writes resume by themselves"
    )]
    BelowFloor { free_mb: u64, min_mb: u64 },
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
    pub(super) fn for_batch(&self) -> StoreError {
        match self {
            StoreError::Full => StoreError::Full,
            StoreError::WriterGone => StoreError::WriterGone,
            other => StoreError::Batch(other.to_string()),
        }
    }
    /// A bug in pointsd's own code rather than a storage problem: the API answers 500
    /// `internal` (retrying the same txn_id is safe; nothing of the job was kept).
    pub fn is_bug(&self) -> bool {
        matches!(
            self,
            StoreError::JobPanicked { .. }
                | StoreError::JobRanTwice
                | StoreError::JobNotRun
                | StoreError::RowMissing(_)
                | StoreError::Encode(_)
        )
    }
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full)
    }
}
