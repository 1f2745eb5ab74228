//! Logging: `tracing` to stderr (the journal, under systemd) and to daily-rotated files in
//! the log dir, keeping `retention` files and at most `log.max_total_mb` in all. The file
//! writer never drops lines (`lossy(false)`): a log line about money is worth a short wait;
//! only past the size cap does file logging pause until the next day.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

/// Keep this alive for the life of the process; dropping it flushes the file writer.
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

/// Starts logging. `RUST_LOG` overrides `level`. If the log dir cannot be used, logging
/// continues on stderr alone and the reason is printed there.
pub fn init(level: &str, log_dir: Option<&Path>, retention: usize, max_total_mb: u64) -> LogGuard {
    // `Targets` ("info", "pointsd=debug,info") rather than EnvFilter: the same directives
    // without a regex engine in the binary.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| level.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let stderr_layer = fmt::layer().with_writer(std::io::stderr).with_target(false);
    let mut problem = None;
    let (file_layer, guard) = match log_dir {
        Some(dir) => match crate::config::private_dir(dir)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                RollingFileAppender::builder()
                    .rotation(Rotation::DAILY)
                    .filename_prefix("pointsd")
                    .filename_suffix("log")
                    .max_log_files(retention.max(1))
                    .build(dir)
                    .map_err(|e| e.to_string())
            }) {
            Ok(appender) => {
                let (nb, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                    .lossy(false)
                    .finish(Capped::new(appender, dir, max_total_mb));
                (
                    Some(fmt::layer().with_writer(nb).with_ansi(false)),
                    Some(guard),
                )
            }
            Err(e) => {
                problem = Some(format!(
                    "cannot write logs to {}: {e}; logging to stderr only",
                    dir.display()
                ));
                (None, None)
            }
        },
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
    LogGuard { _file: guard }
}

/// The file appender with a total size cap over the log dir: checked every `CHECK_EVERY`
/// bytes, the oldest files are deleted first; when today's file alone is over the cap, file
/// lines are dropped until the date changes (stderr still has them).
struct Capped<W> {
    inner: W,
    dir: std::path::PathBuf,
    cap: u64,
    since_check: u64,
    paused_on: Option<time::Date>,
}

const CHECK_EVERY: u64 = 256 * 1024;

impl<W: std::io::Write> Capped<W> {
    fn new(inner: W, dir: &Path, max_total_mb: u64) -> Capped<W> {
        Capped {
            inner,
            dir: dir.to_path_buf(),
            cap: max_total_mb.max(1) * 1024 * 1024,
            since_check: CHECK_EVERY,
            paused_on: None,
        }
    }

    /// The log files, oldest first (their names carry the date), with their sizes.
    fn files(&self) -> Vec<(std::path::PathBuf, u64)> {
        let mut v: Vec<_> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("pointsd") && n.ends_with(".log")
            })
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
            .collect();
        v.sort();
        v
    }

    fn enforce(&mut self) {
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|(_, n)| n).sum();
        while total > self.cap && files.len() > 1 {
            let (p, n) = files.remove(0);
            if std::fs::remove_file(&p).is_ok() {
                total -= n;
            }
        }
        if total > self.cap {
            let _ = self.inner.write_all(
                b"WARN log.max_total_mb reached: file logging paused until tomorrow (stderr keeps every line)\n",
            );
            self.paused_on = Some(time::OffsetDateTime::now_utc().date());
        }
    }
}

impl<W: std::io::Write> std::io::Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(day) = self.paused_on {
            if time::OffsetDateTime::now_utc().date() == day {
                return Ok(buf.len());
            }
            self.paused_on = None;
            self.since_check = CHECK_EVERY;
        }
        if self.since_check >= CHECK_EVERY {
            self.since_check = 0;
            self.enforce();
            if self.paused_on.is_some() {
                return Ok(buf.len());
            }
        }
        let n = self.inner.write(buf)?;
        self.since_check += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Samples a noisy event: the first is logged, then at most one line per `every`, carrying
/// how many were left out in between (a flood of bad sign-ins must not fill the disk).
pub struct Sampler {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    skipped: u64,
}

impl Sampler {
    pub fn new(every: std::time::Duration) -> Sampler {
        Sampler {
            every,
            last: None,
            skipped: 0,
        }
    }

    /// `Some(left out since the last line)` when this event should be logged.
    pub fn hit(&mut self) -> Option<u64> {
        self.hit_at(std::time::Instant::now())
    }

    fn hit_at(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_cap_deletes_the_oldest_files_then_pauses() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mb = vec![b'x'; 1024 * 1024];
        for day in ["2026-11-01", "2026-11-02"] {
            std::fs::write(dir.path().join(format!("pointsd.{day}.log")), &mb).unwrap();
        }
        let today = dir.path().join("pointsd.2026-11-03.log");
        let file = std::fs::File::create(&today).unwrap();
        let mut w = Capped::new(file, dir.path(), 2);
        // 2 MiB already there, then more: the oldest file goes.
        w.write_all(&mb[..512 * 1024]).unwrap();
        w.write_all(&mb[..512 * 1024]).unwrap();
        assert!(!dir.path().join("pointsd.2026-11-01.log").exists());
        assert!(dir.path().join("pointsd.2026-11-02.log").exists());
        // Today's file grows past the cap alone: the other goes, then writing pauses.
        for _ in 0..12 {
            w.write_all(&mb[..256 * 1024]).unwrap();
        }
        w.flush().unwrap();
        assert!(!dir.path().join("pointsd.2026-11-02.log").exists());
        let size = std::fs::metadata(&today).unwrap().len();
        assert!(size <= 2 * 1024 * 1024 + CHECK_EVERY + 200, "{size}");
        assert!(w.paused_on.is_some());
    }

    #[test]
    fn sampler_logs_the_first_then_a_summary() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let mut s = Sampler::new(std::time::Duration::from_secs(60));
        assert_eq!(s.hit_at(at(0)), Some(0));
        assert_eq!(s.hit_at(at(1)), None);
        assert_eq!(s.hit_at(at(59)), None);
        assert_eq!(s.hit_at(at(61)), Some(2));
        assert_eq!(s.hit_at(at(62)), None);
    }
}
