//! Logging: `tracing` to stderr (the journal, under systemd) and to daily-rotated files in
//! the log dir, keeping `retention` files. The file writer never drops lines
//! (`lossy(false)`): a log line about money is worth a short wait.

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
pub fn init(level: &str, log_dir: Option<&Path>, retention: usize) -> LogGuard {
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
        Some(dir) => match std::fs::create_dir_all(dir)
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
                    .finish(appender);
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
