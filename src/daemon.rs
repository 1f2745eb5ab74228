//! Wiring: opens the data dir and database, builds the upstream (starting the in-process
//! simulator for `kind = "sim"`), starts the sync workers and serves the API until the
//! shutdown token fires; then stops accepting, lets in-flight requests and the current sync
//! step finish, and waits for every task under a deadline.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::clock::SharedClock;
use crate::config::{Secret, Settings, SimEndpoint, UpstreamKind};
use crate::metrics::Metrics;
use crate::sim::{SimHandle, SimOptions, SmapifyOptions};
use crate::store::{Store, StoreError};
use crate::sync::schedule::Schedule;
use crate::sync::{SyncEngine, SyncOptions};
use crate::telemetry::TelemetryState;
use crate::upstream::Upstream;
use crate::upstream::health::{Health, Observed};
use crate::upstream::smaregi::Smaregi;

/// How long a stop waits for the sync workers (counted from the stop, while the HTTP server
/// drains alongside) before going on without them; their rows resume at the next start.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "cannot create or use the data dir {path}: {source}. Create it and make it writable by the user pointsd runs as"
    )]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another pointsd is already running with the data dir {path} (lock file {lock} is held). Stop it first, or give this one its own --data-dir"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot start the upstream: [upstream.smaregi] is missing (upstream.kind = \"smaregi\" needs it)"
    )]
    MissingSmaregi,
    #[error("cannot start the upstream: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("cannot start the easyPoints client: {0}")]
    EasyPoints(#[from] crate::upstream::easypoints::EasyPointsError),
    #[error("cannot start the built-in simulator: {0}")]
    Simulator(#[source] std::io::Error),
    #[error("cannot start the metrics push ([telemetry]): {0}")]
    Telemetry(#[source] reqwest::Error),
    #[error("cannot set up HTTPS ([api.tls]): {0}")]
    Tls(#[from] crate::api::tls::TlsError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Everything `run` needs. Tests build one with a port-0 listener and their own token.
pub struct RunConfig {
    pub settings: Arc<Settings>,
    pub data_dir: PathBuf,
    pub listener: TcpListener,
    pub shutdown: CancellationToken,
    pub clock: SharedClock,
}

/// Holds the data dir's lock file for the daemon's lifetime.
pub struct DataDirLock {
    _file: File,
}

pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, DaemonError> {
    // Private whatever the umask: the database, the logs and the token file are no one
    // else's business (0700, or 0750 with the packages' group pointsd).
    crate::config::private_dir(dir).map_err(|source| DaemonError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let lock = dir.join("pointsd.lock");
    crate::config::private_file(&lock).map_err(|source| DaemonError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| DaemonError::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::Locked {
            path: dir.to_path_buf(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::DataDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn build_upstream(settings: &Settings, sim: Option<&SimHandle>) -> Result<Smaregi, DaemonError> {
    let sim = sim.map(|sim| {
        let o = sim.options();
        SimEndpoint {
            url: sim.url(),
            contract_id: o.contract_id,
            client_id: o.client_id,
            client_secret: Secret::new(o.client_secret),
        }
    });
    let s = settings
        .smaregi_settings(sim)
        .ok_or(DaemonError::MissingSmaregi)?;
    Ok(Smaregi::new(s)?)
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(rc: RunConfig) -> Result<(), DaemonError> {
    let RunConfig {
        settings,
        data_dir,
        listener,
        shutdown,
        clock,
    } = rc;
    let _lock = lock_data_dir(&data_dir)?;
    let db_path = data_dir.join("pointsd.db");
    // The database owner-only from its creation; SQLite gives its -wal and -shm files the
    // database file's mode.
    for p in [
        db_path.clone(),
        data_dir.join("pointsd.db-wal"),
        data_dir.join("pointsd.db-shm"),
    ] {
        if p == db_path || p.exists() {
            crate::config::private_file(&p).map_err(|source| DaemonError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
        }
    }
    // The lock file can be deleted by hand; a lock on the database file itself cannot be
    // side-stepped that way. (Unix only: on Windows such a lock would block SQLite's own I/O.
    // flock and SQLite's fcntl locks do not interact on Unix.)
    #[cfg(unix)]
    let _db_lock = {
        let f = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&db_path)
            .map_err(|source| DaemonError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
        match f.try_lock() {
            Ok(()) => f,
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DaemonError::Locked {
                    path: data_dir.clone(),
                    lock: db_path.clone(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(DaemonError::DataDir {
                    path: data_dir.clone(),
                    source,
                });
            }
        }
    };
    let store = Store::open(&db_path)?;
    // The disk floor: measured now (so a start on a full disk refuses writes at once) and
    // every second after.
    let floor = store.disk_floor().clone();
    floor.set_min_free_mb(settings.config.storage.min_free_mb);
    match floor.measure(&data_dir) {
        Ok(s) => {
            tracing::info!(free_mb = ?s.free_mb, min_free_mb = s.min_free_mb, "free disk space in the data dir")
        }
        Err(e) => tracing::warn!(error = %e, "cannot measure free disk space in the data dir"),
    }

    let sim = if settings.config.upstream.kind == UpstreamKind::Sim {
        let sc = &settings.config.upstream.sim;
        let local: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let h = SimHandle::start(
            local,
            local,
            SimOptions {
                customers: sc.customers,
                seed: sc.seed,
                state_file: Some(data_dir.join("sim-state.json")),
                smapify: settings.easypoints.as_ref().map(|e| SmapifyOptions {
                    code_offset: e.code_offset,
                    check_digit: e.code_check_digit == crate::config::CheckDigit::Trailing,
                    ..SmapifyOptions::default()
                }),
                ..SimOptions::default()
            },
        )
        .await
        .map_err(DaemonError::Simulator)?;
        tracing::info!(url = %h.url(), admin = %h.admin_url(), "built-in upstream simulator started");
        Some(h)
    } else {
        None
    };

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(clock.clone()));
    let adapter = build_upstream(&settings, sim.as_ref())?;
    let sc = &settings.config.sync;
    let budget = Arc::new(crate::upstream::budget::Budget::new(
        sc.max_reads_per_second
            .unwrap_or(sc.max_requests_per_second),
        sc.max_writes_per_second
            .unwrap_or(sc.max_requests_per_second),
    ));
    let upstream: Arc<dyn Upstream> = Arc::new(Observed::with_budget(
        adapter,
        health.clone(),
        metrics.clone(),
        Some(budget.clone()),
    ));
    let sc = &settings.config.sync;
    let durations = settings.sync;
    let engine = SyncEngine::new(
        store.clone(),
        upstream,
        health.clone(),
        clock.clone(),
        SyncOptions {
            concurrency: sc.concurrency as usize,
            pull_interval: durations.pull_interval,
            probe_interval: durations.probe_interval,
            settle: settings
                .request_timeout
                .clamp(Duration::from_secs(1), Duration::from_secs(30)),
            schedule: Schedule {
                initial: Duration::from_millis(sc.backoff_initial_ms),
                max: Duration::from_millis(sc.backoff_max_ms),
                multiplier: sc.backoff_multiplier,
            },
            full_refresh_interval: Duration::from_secs(sc.full_refresh_interval_s),
            jitter_key: settings.config.agent.store_id.clone(),
            reread_per_second: sc.reread_per_second,
            budget: Some(budget),
            double_window: Duration::from_secs(settings.config.earn.double_window_s),
        },
    );
    let tracker = TaskTracker::new();
    engine.start(&tracker, shutdown.child_token()).await?;
    let granting = crate::sync::granting::Granting::load(
        settings.config.earn.granted_by,
        settings.config.agent.smaregi_store_id.clone(),
        &store,
        clock.clone(),
    )
    .await?;
    tracker.spawn(granting.clone().read_loop(
        engine.upstream().clone(),
        store.clone(),
        shutdown.child_token(),
    ));

    let tls = match &settings.config.api.tls {
        Some(cfg) => {
            let t = api::tls::load(cfg, &data_dir)?;
            tracing::info!(
                fingerprint_sha256 = %t.info.fingerprint_sha256,
                not_after = %t.info.not_after,
                cert = %t.info.cert_file.display(),
                "serving HTTPS; devices can pin this certificate fingerprint"
            );
            // HQ's expiry alert reads this (installers/prometheus/pointsd-alerts.yml).
            metrics
                .tls_cert_expiry
                .get_or_create(&crate::metrics::CertLabels { certificate: "api" })
                .set(t.info.not_after_unix);
            Some(t)
        }
        None => None,
    };
    let tokens = Arc::new(crate::tokens::TokenSet::new(settings.tokens.clone()));
    if let Err(e) = tokens.reload(&data_dir) {
        tracing::error!(error = %e, "the token file could not be read; only the config's tokens work");
    }
    tracker.spawn(
        tokens
            .clone()
            .watch(data_dir.clone(), shutdown.child_token()),
    );
    let ledgers = match settings.easypoints.clone() {
        Some(mut ep) => {
            if let Some(sim) = &sim {
                // The built-in simulator serves easyPoints too (with Smapify between the two).
                let o = sim.options();
                ep.api_base = sim.easypoints_url();
                ep.public_key = o.easypoints.public_key;
                ep.secret_key = Secret::new(o.easypoints.secret_key);
            }
            let client = crate::upstream::easypoints::EasyPoints::new(ep)?;
            let l = crate::sync::Ledgers::new(client, store.clone(), clock.clone(), engine.clone());
            if let Some(every) = settings.easypoints.as_ref().and_then(|e| e.report_interval) {
                tracker.spawn(l.clone().report_loop(every, shutdown.child_token()));
            }
            // As often as the settle time allows a verdict, within 10 s .. 5 min.
            let every = l
                .settle()
                .clamp(Duration::from_secs(10), Duration::from_secs(300));
            tracker.spawn(l.clone().smapify_loop(every, shutdown.child_token()));
            Some(l)
        }
        None => None,
    };
    tracker.spawn(crate::store::floor::watch(
        floor,
        data_dir.clone(),
        Duration::from_secs(1),
        shutdown.child_token(),
    ));
    let keep_days = settings.config.retention.keep_days;
    let retention = Arc::new(std::sync::Mutex::new(crate::store::RetentionStatus {
        keep_days,
        ..Default::default()
    }));
    if keep_days > 0 {
        // Off the hot path: a minute after start and hourly after, in batches of a few ms.
        tracker.spawn(crate::store::run_retention_schedule(
            store.clone(),
            keep_days,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            clock.clone(),
            retention.clone(),
            shutdown.child_token(),
        ));
    }
    let backup = Arc::new(crate::store::backup::BackupSchedule::default());
    if let Some(dir) = settings.config.backup.dir.clone() {
        let b = &settings.config.backup;
        tracker.spawn(crate::store::backup::run_schedule(
            crate::store::backup::ScheduleConfig {
                db: db_path.clone(),
                data_dir: data_dir.clone(),
                dir,
                interval: Duration::from_secs(b.interval_s),
                keep: b.keep as usize,
            },
            backup.clone(),
            clock.clone(),
            shutdown.child_token(),
        ));
    }
    let store_for_close = store.clone();
    let telemetry = settings
        .config
        .telemetry
        .settings(&settings.config.agent.store_id);
    let telemetry_state = Arc::new(match &telemetry {
        Some(t) => TelemetryState::new(&t.url, t.interval.as_secs()),
        None => TelemetryState::disabled(),
    });
    let state = Arc::new(AppState {
        settings: settings.clone(),
        store,
        sync: engine,
        health,
        metrics,
        clock,
        tasks: tracker.clone(),
        telemetry: telemetry_state,
        tokens: tokens.clone(),
        throttle: crate::api::Throttle::new(
            settings
                .config
                .api
                .signin_throttle_exempt
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
        ),
        token_requests: Default::default(),
        signin_log: std::sync::Mutex::new(crate::logging::Sampler::new(Duration::from_secs(60))),
        tls: tls.as_ref().map(|t| t.info.clone()),
        data_dir: data_dir.clone(),
        ledgers,
        granting,
        backup,
        retention,
    });
    if let Some(t) = telemetry {
        crate::telemetry::start(state.clone(), t, &tracker, shutdown.child_token())
            .map_err(DaemonError::Telemetry)?;
    }
    let addr = listener.local_addr().map_err(DaemonError::Serve)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, store_id = %settings.config.agent.store_id, data_dir = %data_dir.display(), "pointsd listening");
    let a = &settings.config.api;
    let opts = api::server::ServeOptions {
        header_timeout: settings.api.header_timeout,
        idle_timeout: settings.api.idle_timeout,
        max_connections: a.max_connections as usize,
        max_buf_size: (a.max_header_bytes as usize * 4).max(64 * 1024),
        grace: settings.api.shutdown_grace,
        tls: tls.map(|t| t.acceptor),
        body_deadline: settings.api.body_timeout,
        max_requests_per_address: a.max_requests_per_address as usize,
    };
    raise_file_limit(a.max_connections);
    let stop_started =
        api::server::serve(listener, api::router(state), opts, shutdown.clone()).await;
    shutdown.cancel();
    tracker.close();
    let left = SHUTDOWN_DEADLINE.saturating_sub(stop_started.elapsed());
    if tokio::time::timeout(left, tracker.wait()).await.is_err() {
        tracing::warn!(
            "sync workers did not stop within the deadline; their rows resume at next start"
        );
    }
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    let checkpointed = store_for_close.checkpoint().await;
    store_for_close.close().await;
    if let Err(e) = checkpointed {
        tracing::warn!(error = %e, "could not fold the WAL into the database at stop; it is applied at the next start");
    }
    tracing::info!("pointsd stopped; queue kept on disk");
    Ok(())
}

/// Each connection is a file: raise the soft open-file limit to what `api.max_connections`
/// needs (plus the database, logs and upstream), so the cap, not `EMFILE`, is what a flood
/// of connections meets.
fn raise_file_limit(max_connections: u32) {
    #[cfg(unix)]
    {
        let want = u64::from(max_connections) + 256;
        match rlimit::increase_nofile_limit(want) {
            Ok(got) if got >= want => {
                tracing::debug!(open_files = got, "open-file limit");
            }
            Ok(got) => tracing::warn!(
                open_files = got,
                needed = want,
                "the open-file limit is below what api.max_connections needs; raise it (LimitNOFILE= in the systemd unit) or lower api.max_connections"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}
