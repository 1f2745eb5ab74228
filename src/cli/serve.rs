//! The commands that run a server in this process: `run`, `demo`, `service-run` (the
//! Windows SCM runner) and `sim`, with the signal handling that stops them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Scope, Secret, Settings};
use crate::{clock, daemon, logging, sim};

use super::args::ConfigArgs;
use super::paths::Paths;

/// The config at the command's path, loaded and validated, with the paths it implies.
pub(super) fn load(c: &ConfigArgs, data_flag: Option<&Path>) -> Result<(Paths, Settings)> {
    let env = config::env_map();
    let path = c.config_file(&env);
    let settings = config::load_settings(&path, &env)?;
    let paths = Paths::for_command(
        c,
        data_flag,
        settings.config.agent.data_dir.as_deref(),
        &env,
    );
    Ok((paths, settings))
}

/// `pointsd run`: the daemon with a config file, until SIGTERM or Ctrl-C.
pub(super) async fn run(c: ConfigArgs, data_dir: Option<PathBuf>) -> Result<ExitCode> {
    let (paths, settings) = load(&c, data_dir.as_deref())?;
    let _log = logging::init(
        &settings.config.log.level,
        Some(&paths.logs),
        settings.config.log.retention_files,
        settings.config.log.max_total_mb,
    );
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(config = %paths.config.display(), "config loaded");
    serve(Arc::new(settings), paths.data).await?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: Arc<Settings>, data_dir: PathBuf) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another pointsd running? change api.listen or stop it)",
                settings.listen
            )
        })?;
    let shutdown = CancellationToken::new();
    let sd = shutdown.clone();
    let grace = settings.api.shutdown_grace;
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: finishing in-flight requests"
        );
        sd.cancel();
    });
    daemon::run(daemon::RunConfig {
        settings,
        data_dir,
        listener,
        shutdown,
        clock: clock::system(),
    })
    .await?;
    Ok(())
}

/// SIGTERM or Ctrl-C (Ctrl-C only off Unix).
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A token kept in the demo's data dir, so a restarted demo keeps the same one.
fn demo_token(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&p) {
        let t = t.trim().to_string();
        if t.len() >= 16 {
            return Ok(t);
        }
    }
    use rand::Rng;
    let t: String = (0..16)
        .map(|_| format!("{:02x}", rand::rng().random::<u8>()))
        .collect();
    std::fs::write(&p, &t).with_context(|| format!("cannot write {}", p.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
    Ok(t)
}

/// `pointsd demo`: the built-in simulator, sample customers, tokens kept in the data dir.
pub(super) async fn demo(
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    customers: u32,
    smapify: bool,
    pointsd_grants: bool,
) -> Result<ExitCode> {
    let env = config::env_map();
    let data_dir =
        data_dir.unwrap_or_else(|| config::default_data_dir(Scope::User, &env).join("demo"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let register = demo_token(&data_dir, "demo-register.token")?;
    let manager = demo_token(&data_dir, "demo-manager.token")?;
    let mut cfg = Config::default();
    cfg.agent.store_id = "demo-store".into();
    // The simulated contract's store 1 uses points (its register grants them), store 4 does
    // not: `granted_by = "auto"` reads which (README "The register and who grants").
    cfg.agent.smaregi_store_id = Some(if pointsd_grants { "4" } else { "1" }.into());
    cfg.api.listen = listen.to_string();
    if !listen.ip().is_loopback() {
        // A trial on the LAN: plain HTTP, said out loud (a real install uses [api.tls]).
        cfg.api.allow_plain_http = true;
        eprintln!(
            "note: the demo serves plain HTTP on {listen}; tokens cross the network in clear text"
        );
    }
    cfg.api.tokens = vec![
        config::TokenConfig {
            name: "demo-register".into(),
            token: Some(Secret::new(register.clone())),
            token_sha256: None,
            role: config::Role::Register,
        },
        config::TokenConfig {
            name: "demo-manager".into(),
            token: Some(Secret::new(manager.clone())),
            token_sha256: None,
            role: config::Role::Manager,
        },
    ];
    cfg.upstream.sim.customers = customers;
    if smapify {
        // The built-in simulator's easyPoints: the daemon points the client at it and uses
        // its keys; these only satisfy validation.
        cfg.easypoints = Some(config::EasyPointsConfig {
            public_key: "built-in-simulator".into(),
            secret_key: Secret::new("built-in-simulator"),
            settle_s: 30,
            report_interval_s: 300,
            ..Default::default()
        });
    }
    cfg.tiers = vec![
        config::TierConfig {
            name: "Silver".into(),
            min_points: 1000,
            ..Default::default()
        },
        config::TierConfig {
            name: "Gold".into(),
            min_points: 5000,
            ..Default::default()
        },
    ];
    let settings = cfg
        .validate()
        .map_err(|p| anyhow::anyhow!("demo config invalid: {p:?}"))?;
    let _log = logging::init(
        &settings.config.log.level,
        Some(&data_dir.join("logs")),
        settings.config.log.retention_files,
        settings.config.log.max_total_mb,
    );
    let mut samples = sim::sample_customers(customers.min(5), settings.config.upstream.sim.seed);
    if smapify {
        // Smapify's customer sync numbers members by their Shopify id.
        for c in &mut samples {
            if let Ok(key) = c.customer_id.parse() {
                c.code = sim::sample_member_code(key, &sim::SmapifyOptions::default());
            }
        }
    }
    let url = format!("http://{listen}");
    println!("pointsd demo: {customers} sample customers on a built-in simulated Smaregi");
    println!("  cashier page:    {url}/   (sign in with the register token)");
    println!("  local API:       {url}/v1/");
    println!("  register token:  {register}");
    println!("  manager token:   {manager}");
    println!("  data dir:        {}", data_dir.display());
    println!("  sample customers (id / member code / barcode / name):");
    for c in &samples {
        println!(
            "    {:>4}  {}  {}  {} {}",
            c.customer_id, c.code, c.barcode, c.last_name, c.first_name
        );
    }
    if smapify {
        println!(
            "  Smapify merchant: easyPoints runs beside Smaregi; member codes are Shopify ids"
        );
        println!(
            "  cross-ledger report: pointsd reconcile --ledgers --url {url} --token {manager}"
        );
    }
    if pointsd_grants {
        println!(
            "  granting: the store's points are off in Smaregi (store 4): pointsd grants points for purchases"
        );
    } else {
        println!(
            "  granting: the store's register grants points (Smaregi store 1, points on): pointsd earns none for a purchase"
        );
        println!("            (pointsd demo --pointsd-grants shows the other mode)");
    }
    println!("  try:  pointsd balance 1 --url {url} --token {register}");
    println!("        curl -H 'Authorization: Bearer {register}' {url}/v1/customers/1");
    println!("  Ctrl-C stops it; the queue is kept.");
    serve(Arc::new(settings), data_dir).await?;
    Ok(ExitCode::SUCCESS)
}

/// `pointsd sim`: the simulator on its own, until SIGTERM or Ctrl-C.
pub(super) async fn sim(
    listen: SocketAddr,
    admin_listen: SocketAddr,
    opts: sim::SimOptions,
) -> Result<ExitCode> {
    let _log = logging::init("info", None, 1, 1);
    let h = sim::SimHandle::start(listen, admin_listen, opts).await?;
    // Machine-readable first lines: tests read them to find the ports.
    println!("sim listening on {}", h.url());
    println!("sim admin on {}", h.admin_url());
    shutdown_signal().await;
    h.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Under the Windows SCM, speak the service protocol; elsewhere this is `run`.
pub(super) async fn service_run(c: ConfigArgs, data_dir: Option<PathBuf>) -> Result<ExitCode> {
    #[cfg(windows)]
    {
        let (paths, settings) = load(&c, data_dir.as_deref())?;
        let settings = Arc::new(settings);
        let handle = tokio::runtime::Handle::current();
        // The SCM dispatcher blocks its thread; the daemon runs on this runtime.
        tokio::task::spawn_blocking(move || {
            crate::service::windows::run_as_service(move |token| {
                let _log = logging::init(
                    &settings.config.log.level,
                    Some(&paths.logs),
                    settings.config.log.retention_files,
                    settings.config.log.max_total_mb,
                );
                tracing::info!(config = %paths.config.display(), "starting under the Windows service manager");
                handle.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(settings.listen)
                        .await
                        .map_err(daemon::DaemonError::Serve)?;
                    daemon::run(daemon::RunConfig {
                        settings,
                        data_dir: paths.data,
                        listener,
                        shutdown: token,
                        clock: clock::system(),
                    })
                    .await
                })
            })
        })
        .await?
        .context("could not talk to the Windows service manager (run `pointsd run` from a console instead)")?;
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(windows))]
    {
        run(c, data_dir).await
    }
}
