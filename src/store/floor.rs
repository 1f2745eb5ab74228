//! The disk floor (DESIGN.md §15): free space on the data dir's file system is measured at
//! start and every second; below `[storage] min_free_mb` new register writes (earns, redeems,
//! adjustments, sales, returns) are refused with [`StoreError::BelowFloor`] (HTTP 507) before
//! SQLite can meet a full disk in the middle of a write. Look-ups, and the sync engine's
//! recording of what the upstream answered, go on; writes resume by themselves once space
//! returns.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

use super::StoreError;

const MB: u64 = 1024 * 1024;

/// The floor and the last measurement. `min_free_mb = 0` turns the floor off.
#[derive(Debug, Default)]
pub struct DiskFloor {
    min_bytes: AtomicU64,
    /// Bytes available to pointsd at the last measurement (`u64::MAX`: not measured yet).
    free_bytes: AtomicU64,
    below: AtomicBool,
}

/// For `status`, `/metrics` and `doctor`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FloorStatus {
    /// Free space on the data dir's file system at the last check (null: not measured).
    pub free_mb: Option<u64>,
    pub free_bytes: Option<u64>,
    pub min_free_mb: u64,
    /// True while new writes are refused (507) for lack of space.
    pub below_floor: bool,
}

impl DiskFloor {
    pub fn new(min_free_mb: u64) -> DiskFloor {
        DiskFloor {
            min_bytes: AtomicU64::new(min_free_mb.saturating_mul(MB)),
            free_bytes: AtomicU64::new(u64::MAX),
            below: AtomicBool::new(false),
        }
    }

    pub fn set_min_free_mb(&self, mb: u64) {
        self.min_bytes
            .store(mb.saturating_mul(MB), Ordering::Relaxed);
    }

    /// Measures the free space of `dir`'s file system and updates the verdict, logging a
    /// change of it. An error (the dir vanished) leaves the last verdict as it was.
    pub fn measure(&self, dir: &Path) -> std::io::Result<FloorStatus> {
        let free = fs4::available_space(dir)?;
        self.record(free);
        Ok(self.status())
    }

    /// Takes a measurement (`free` bytes available).
    pub fn record(&self, free: u64) {
        self.free_bytes.store(free, Ordering::Relaxed);
        let min = self.min_bytes.load(Ordering::Relaxed);
        let below = min > 0 && free < min;
        let was = self.below.swap(below, Ordering::SeqCst);
        if below && !was {
            tracing::error!(
                free_mb = free / MB,
                min_free_mb = min / MB,
                "free disk space in the data dir is below [storage] min_free_mb: new writes are refused (507) until space is freed; look-ups and sync go on"
            );
        } else if was && !below {
            tracing::info!(
                free_mb = free / MB,
                min_free_mb = min / MB,
                "free disk space is above the floor again: writes resume"
            );
        }
    }

    /// `Err(BelowFloor)` while below the floor: the write must not start.
    pub fn admit(&self) -> Result<(), StoreError> {
        if self.below.load(Ordering::SeqCst) {
            let s = self.status();
            return Err(StoreError::BelowFloor {
                free_mb: s.free_mb.unwrap_or(0),
                min_mb: s.min_free_mb,
            });
        }
        Ok(())
    }

    pub fn status(&self) -> FloorStatus {
        let free = self.free_bytes.load(Ordering::Relaxed);
        let measured = free != u64::MAX;
        FloorStatus {
            free_mb: measured.then_some(free / MB),
            free_bytes: measured.then_some(free),
            min_free_mb: self.min_bytes.load(Ordering::Relaxed) / MB,
            below_floor: self.below.load(Ordering::SeqCst),
        }
    }
}

/// Measures `dir` every `every` until `stop`; the first measurement is taken by the caller
/// at start.
pub async fn watch(
    floor: std::sync::Arc<DiskFloor>,
    dir: std::path::PathBuf,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (f, d) = (floor.clone(), dir.clone());
        match tokio::task::spawn_blocking(move || f.measure(&d)).await {
            Ok(Ok(_)) => failing = false,
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, dir = %dir.display(), "cannot measure free disk space in the data dir");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_floor_refuses_and_above_it_admits_again() {
        let f = DiskFloor::new(256);
        assert!(f.admit().is_ok(), "not measured yet: admitted");
        f.record(300 * MB);
        assert!(f.admit().is_ok());
        f.record(255 * MB);
        assert!(matches!(
            f.admit(),
            Err(StoreError::BelowFloor {
                free_mb: 255,
                min_mb: 256
            })
        ));
        assert!(f.status().below_floor);
        f.record(256 * MB);
        assert!(f.admit().is_ok());
        // 0 turns the floor off.
        let off = DiskFloor::new(0);
        off.record(0);
        assert!(off.admit().is_ok());
    }
}
