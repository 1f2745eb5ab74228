//! The commands that work on the database file itself: `backup` and `export` (safe while the
//! daemon runs) and `restore` (the daemon stopped). Both find the database like every command does
//! (`--data-dir`, else the config's `agent.data_dir`, else the default).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::store::backup::{self, LastBackup};

use super::args::ConfigArgs;
use super::paths::Paths;

/// The data dir, and the config (if it loads: it is not needed to find a database given
/// `--data-dir`, and a restore onto a new PC may come before its config is complete).
fn locate(cfg: &ConfigArgs, data_dir: Option<PathBuf>) -> (Paths, Option<Config>) {
    let env = config::env_map();
    let loaded = Config::load(&cfg.config_file(&env), &env).ok();
    let agent = loaded.as_ref().and_then(|c| c.agent.data_dir.clone());
    let paths = Paths::for_command(cfg, data_dir.as_deref(), agent.as_deref(), &env);
    (paths, loaded)
}

fn now_ms() -> i64 {
    crate::clock::SystemClock.now_ms()
}

/// `pointsd backup [--to FILE]`: a consistent, verified copy; prints where, how large and
/// its SHA-256. Without `--to`, into `[backup] dir` (else `<data dir>/backups`).
pub(super) fn backup(
    cfg: ConfigArgs,
    data_dir: Option<PathBuf>,
    to: Option<PathBuf>,
) -> Result<ExitCode> {
    let (paths, config) = locate(&cfg, data_dir);
    let db = paths.data.join("pointsd.db");
    let to = match to {
        Some(t) => t,
        None => config
            .and_then(|c| c.backup.dir)
            .unwrap_or_else(|| paths.data.join("backups"))
            .join(backup::scheduled_name(now_ms())),
    };
    let at = now_ms();
    let r = backup::backup_to(&db, &to, at);
    // Recorded for `status`, `doctor` and `/metrics` (best effort: the backup stands anyway).
    if paths.data.is_dir() {
        let _ = LastBackup::record(&paths.data, now_ms(), &r);
    }
    let rep = r.with_context(|| format!("backup of {} failed", db.display()))?;
    println!("backup {}", rep.path.display());
    println!("bytes {}", rep.bytes);
    println!("sha256 {}", rep.sha256);
    println!("quick_check ok ({} ms)", rep.took_ms);
    Ok(ExitCode::SUCCESS)
}

/// `pointsd restore FILE`: refuses while a daemon holds the data dir; puts the verified
/// backup in place, marked restored, so the next start reads back every transaction that was
/// open in it before anything is sent.
pub(super) fn restore(
    file: PathBuf,
    cfg: ConfigArgs,
    data_dir: Option<PathBuf>,
) -> Result<ExitCode> {
    let (paths, _) = locate(&cfg, data_dir);
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    // The daemon holds this lock while it runs: a restore under its feet would lose every
    // write since and confuse its connections.
    let lock = crate::daemon::lock_data_dir(&paths.data).map_err(|e| match e {
        crate::daemon::DaemonError::Locked { path, .. } => anyhow::anyhow!(
            "pointsd is running with the data dir {}: stop it first (`pointsd service stop`, or Stop-Service pointsd on Windows), then restore",
            path.display()
        ),
        other => anyhow::Error::new(other),
    })?;
    let db = paths.data.join("pointsd.db");
    refuse_if_db_locked(&db)?;
    let rep = backup::restore(&file, &db, now_ms())
        .with_context(|| format!("restore of {} failed", file.display()))?;
    drop(lock);
    println!("restored {} -> {}", rep.from.display(), rep.to.display());
    println!("bytes {}", rep.bytes);
    println!("sha256 {}", rep.sha256);
    if let Some(p) = &rep.previous {
        println!("previous database kept as {}", p.display());
    }
    println!(
        "{} transaction(s) were open in the backup: at the next start each is read back from the upstream before anything is sent (proven applied, proven not applied and sent, or review)",
        rep.open_txns
    );
    println!(
        "next: start pointsd (`pointsd service start`), then check `pointsd status` and `pointsd review list`"
    );
    Ok(ExitCode::SUCCESS)
}

/// On Unix the daemon also locks the database file itself (a deleted lock file cannot hide it).
fn refuse_if_db_locked(db: &Path) -> Result<()> {
    #[cfg(unix)]
    if db.exists() {
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .open(db)
            .with_context(|| format!("cannot open {}", db.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "pointsd is running with {}: stop it first, then restore",
                db.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", db.display()));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// `pointsd export`'s flags.
pub(super) struct ExportArgs {
    pub from: String,
    pub to: String,
    pub format: String,
    pub out: Option<PathBuf>,
    pub cfg: ConfigArgs,
    pub data_dir: Option<PathBuf>,
}

/// Midnight starting `date` (`YYYY-MM-DD`) in a zone `offset_s` east of UTC, as unix ms.
fn day_start_ms(date: &str, offset_s: i32) -> Result<i64> {
    let d = time::Date::parse(
        date,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .with_context(|| format!("{date:?} is not a date (YYYY-MM-DD)"))?;
    let utc = d.midnight().assume_utc().unix_timestamp() - i64::from(offset_s);
    Ok(utc * 1000)
}

/// `pointsd export --from DATE --to DATE [--format jsonl|csv] [--out FILE]`.
pub(super) fn export(a: ExportArgs) -> Result<ExitCode> {
    let (paths, config) = locate(&a.cfg, a.data_dir);
    let tz = config
        .as_ref()
        .map(|c| c.agent.timezone.clone())
        .unwrap_or_else(|| "Asia/Tokyo".into());
    let offset = crate::ledger::parse_timezone(&tz)
        .with_context(|| format!("agent.timezone {tz:?} is not a known zone"))?;
    let from = day_start_ms(&a.from, offset)?;
    let to = day_start_ms(&a.to, offset)? + 86_400_000;
    if to <= from {
        bail!("--to {} is before --from {}", a.to, a.from);
    }
    let db = paths.data.join("pointsd.db");
    if !db.exists() {
        bail!(
            "there is no database at {}: check --data-dir / --config",
            db.display()
        );
    }
    let format = if a.format == "csv" {
        crate::store::export::ExportFormat::Csv
    } else {
        crate::store::export::ExportFormat::Jsonl
    };
    match &a.out {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            let mut w = std::io::BufWriter::new(f);
            let n = crate::store::export::export_history(&db, from, to, format, &mut w)?;
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("{n} record(s) written to {}", p.display());
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            crate::store::export::export_history(&db, from, to, format, &mut w)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
