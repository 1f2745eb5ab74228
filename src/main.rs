//! The `pointsd` command: parses the CLI, loads config, starts logging, calls the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use pointsd::client::{self, Client};
use pointsd::config::{self, Config, ConfigError, Scope, Secret, Settings};
use pointsd::{clock, daemon, doctor, logging, service, sim};

#[derive(Parser)]
#[command(
    name = "pointsd",
    version,
    about = "Offline-first loyalty point agent for Smaregi stores"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon with the built-in upstream simulator and sample customers.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8765")]
        listen: SocketAddr,
        /// Where the demo keeps its database (default: your user data folder).
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Sample customers in the simulator.
        #[arg(long, default_value_t = 1000)]
        customers: u32,
    },
    /// Run the daemon with a config file (what the system service runs).
    Run {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Check a config file.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Run the upstream simulator on its own (for tests and trials).
    Sim {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:0")]
        admin_listen: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        customers: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value = "sim-contract")]
        contract_id: String,
        #[arg(long, default_value = "sim-client")]
        client_id: String,
        #[arg(long, default_value = "sim-secret", env = "POINTSD_SIM_CLIENT_SECRET")]
        client_secret: String,
        /// Answer 429 beyond this many requests per second.
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Keep the simulator's state in this JSON file.
        #[arg(long)]
        state_file: Option<PathBuf>,
    },
    /// Show the daemon's status: online, queue, cache.
    Status(ClientArgs),
    /// Show a customer's balance (by id, member code or barcode).
    Balance {
        customer: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Grant points.
    Earn {
        customer: String,
        points: i64,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Use points.
    Redeem {
        customer: String,
        points: i64,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// The review queue: transactions whose exactly-once delivery could not be proven.
    Review {
        #[command(subcommand)]
        cmd: ReviewCmd,
    },
    /// Compare upstream balances with what this store last confirmed, and report differences
    /// (nothing is corrected upstream).
    Reconcile {
        /// Show the last report instead of running a new one.
        #[arg(long)]
        last: bool,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Install, remove and control the system service.
    Service {
        #[command(subcommand)]
        cmd: ServiceCmd,
    },
    /// Check this installation: config, files, database, port, upstream, clock.
    Doctor {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run under the Windows Service Control Manager (what the installed service runs).
    #[command(hide = true)]
    ServiceRun {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List transactions in the outbox.
    Queue {
        /// pending, sending, ambiguous, applied, rejected, needs_review, discarded
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Install (or update in place) and start the service. Needs admin rights unless --user.
    Install {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Print exactly what would be written and run, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Show the plan for another platform (with --dry-run).
        #[arg(long, value_enum)]
        platform: Option<service::Platform>,
    },
    /// Stop and remove the service. Data and config stay unless --purge.
    Uninstall {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Also delete the config, the database and the logs.
        #[arg(long)]
        purge: bool,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    Start {
        #[arg(long)]
        user: bool,
    },
    Stop {
        #[arg(long)]
        user: bool,
    },
    Restart {
        #[arg(long)]
        user: bool,
    },
    Status {
        #[arg(long)]
        user: bool,
    },
}

#[derive(Subcommand)]
enum ReviewCmd {
    /// List transactions waiting for a person's decision.
    List {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Decide a review item (needs a manager token): the audit keeps who and why.
    Resolve {
        txn_id: String,
        /// applied: the upstream has it; resend: it does not, send again; discard: drop it.
        #[arg(long = "as", value_parser = ["applied", "resend", "discard"])]
        action: String,
        #[arg(long)]
        note: String,
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a config and print every problem found.
    Check {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Config file (default: the system location, or the user one with --user).
    #[arg(long, env = "POINTSD_CONFIG")]
    config: Option<PathBuf>,
    /// Use the current user's folders instead of the system service's.
    #[arg(long)]
    user: bool,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// The daemon's URL (default: from the config's api.listen).
    #[arg(long, env = "POINTSD_URL")]
    url: Option<String>,
    /// A register token (default: the first token in the config).
    #[arg(long, env = "POINTSD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct WriteArgs {
    /// Idempotency key (default: a new random one).
    #[arg(long)]
    txn_id: Option<String>,
    #[arg(long)]
    reason: Option<String>,
    #[arg(long)]
    register_id: Option<String>,
    #[arg(long)]
    staff_id: Option<String>,
    #[command(flatten)]
    c: ClientArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause whose text the message already carries.
fn render_error(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Demo {
            listen,
            data_dir,
            customers,
        } => demo(listen, data_dir, customers).await,
        Cmd::Run { cfg, data_dir } => run(cfg, data_dir).await,
        Cmd::Config {
            cmd: ConfigCmd::Check { cfg },
        } => Ok(config_check(&cfg)),
        Cmd::Sim {
            listen,
            admin_listen,
            customers,
            seed,
            contract_id,
            client_id,
            client_secret,
            rate_limit,
            state_file,
        } => {
            let opts = sim::SimOptions {
                customers,
                seed,
                contract_id,
                client_id,
                client_secret,
                rate_limit_per_s: rate_limit,
                state_file,
                ..Default::default()
            };
            let _log = logging::init("info", None, 1);
            let h = sim::SimHandle::start(listen, admin_listen, opts).await?;
            // Machine-readable first lines: tests read them to find the ports.
            println!("sim listening on {}", h.url());
            println!("sim admin on {}", h.admin_url());
            shutdown_signal().await;
            h.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status(c) => {
            let v = client_for(&c)?.get("/v1/status").await?;
            print_out(&c, &v, client::render_status);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Balance { customer, c } => {
            let cl = client_for(&c)?;
            let path = format!("/v1/customers?q={}", url_component(&customer));
            let v = cl.get(&path).await?;
            print_out(&c, &v, client::render_customer);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Earn {
            customer,
            points,
            w,
        } => write_cmd("earn", customer, points, w).await,
        Cmd::Redeem {
            customer,
            points,
            w,
        } => write_cmd("redeem", customer, points, w).await,
        Cmd::Review {
            cmd: ReviewCmd::List { c },
        } => {
            let v = client_for(&c)?
                .get("/v1/transactions?state=needs_review&limit=1000")
                .await?;
            print_out(&c, &v, client::render_review);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Review {
            cmd:
                ReviewCmd::Resolve {
                    txn_id,
                    action,
                    note,
                    c,
                },
        } => {
            let cl = manager_client_for(&c)?;
            let path = format!("/v1/transactions/{}/resolve", url_component(&txn_id));
            let v = cl
                .post(&path, &json!({"as": action, "note": note}), None)
                .await?;
            print_out(&c, &v, |v| {
                format!(
                    "{} is now {} (resolved by {})\n",
                    v["txn_id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?"),
                    v["resolved_by"].as_str().unwrap_or("?")
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reconcile { last, c } => {
            let v = if last {
                client_for(&c)?.get("/v1/reconcile").await?
            } else {
                manager_client_for(&c)?
                    .post("/v1/reconcile", &json!({}), None)
                    .await?
            };
            print_out(&c, &v, client::render_reconcile);
            let diffs = v["discrepancies"].as_u64().unwrap_or(0);
            Ok(if diffs > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Service { cmd } => service_cmd(cmd),
        Cmd::Doctor {
            cfg,
            data_dir,
            json,
        } => doctor(cfg, data_dir, json).await,
        Cmd::ServiceRun { cfg, data_dir } => service_run(cfg, data_dir).await,
        Cmd::Queue { state, limit, c } => {
            let mut path = format!("/v1/transactions?limit={limit}");
            if let Some(s) = state {
                path.push_str(&format!("&state={}", url_component(&s)));
            }
            let v = client_for(&c)?.get(&path).await?;
            print_out(&c, &v, client::render_queue);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn url_component(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)])
        .map(|u| u.query().unwrap_or("").trim_start_matches("v=").to_string())
        .unwrap_or_default()
}

fn print_out(c: &ClientArgs, v: &Value, human: fn(&Value) -> String) {
    if c.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", human(v));
    }
}

async fn write_cmd(kind: &str, customer: String, points: i64, w: WriteArgs) -> Result<ExitCode> {
    let cl = client_for(&w.c)?;
    let txn_id = w.txn_id.clone().unwrap_or_else(|| {
        use rand::Rng;
        format!("cli-{:016x}", rand::rng().random::<u64>())
    });
    let body = json!({
        "txn_id": txn_id,
        "customer_id": customer,
        "kind": kind,
        "points": points,
        "reason": w.reason,
        "register_id": w.register_id,
        "staff_id": w.staff_id,
    });
    let v = cl.post("/v1/transactions", &body, None).await?;
    print_out(&w.c, &v, client::render_write);
    Ok(ExitCode::SUCCESS)
}

fn client_for(c: &ClientArgs) -> Result<Client> {
    client_with_role(c, false)
}

/// Like `client_for`, but picks the config's manager token when no --token is given.
fn manager_client_for(c: &ClientArgs) -> Result<Client> {
    client_with_role(c, true)
}

fn client_with_role(c: &ClientArgs, manager: bool) -> Result<Client> {
    // The config is optional for client commands: --url and --token are enough.
    let cfg = resolve_config_path(&c.cfg)
        .filter(|p| p.exists())
        .and_then(|p| Config::load(&p, &config::env_map()).ok());
    let url = match (&c.url, &cfg) {
        (Some(u), _) => u.clone(),
        (None, Some(cfg)) => {
            let listen: SocketAddr = cfg
                .api
                .listen
                .parse()
                .context("api.listen in the config is not an address")?;
            let host = if listen.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                listen.ip().to_string()
            };
            format!("http://{}", SocketAddr::new(host.parse()?, listen.port()))
        }
        (None, None) => "http://127.0.0.1:8765".to_string(),
    };
    let token = match (&c.token, &cfg) {
        (Some(t), _) => t.clone(),
        (None, Some(cfg)) => cfg
            .api
            .tokens
            .iter()
            .filter(|t| !manager || t.role == config::Role::Manager)
            .chain(cfg.api.tokens.iter())
            .find_map(|t| t.token.as_ref().map(|s| s.expose().to_string()))
            .context("the config has no plain token to use; pass --token or set POINTSD_TOKEN")?,
        (None, None) => {
            bail!("no token: pass --token (the demo prints one) or --config with [[api.tokens]]")
        }
    };
    Ok(Client::new(&url, &token))
}

fn scope(c: &ConfigArgs) -> Scope {
    if c.user { Scope::User } else { Scope::System }
}

fn resolve_config_path(c: &ConfigArgs) -> Option<PathBuf> {
    Some(
        c.config
            .clone()
            .unwrap_or_else(|| config::default_config_file(scope(c), &config::env_map())),
    )
}

fn load_settings(c: &ConfigArgs) -> std::result::Result<(PathBuf, Settings), String> {
    let path = resolve_config_path(c).expect("always some");
    let env = config::env_map();
    let cfg = Config::load(&path, &env).map_err(|e| e.to_string())?;
    let warnings = config::file_mode_warnings(&path, &cfg);
    match cfg.validate() {
        Ok(mut s) => {
            s.warnings.extend(warnings);
            Ok((path, s))
        }
        Err(problems) => Err(ConfigError::Invalid {
            origin: path.display().to_string(),
            problems,
        }
        .to_string()),
    }
}

fn config_check(c: &ConfigArgs) -> ExitCode {
    match load_settings(c) {
        Ok((path, s)) => {
            for w in &s.warnings {
                println!("WARN {w}");
            }
            println!(
                "OK {}: store {}, upstream {:?}, {} token(s), listening on {}",
                path.display(),
                s.config.agent.store_id,
                s.config.upstream.kind,
                s.tokens.len(),
                s.listen
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(c: ConfigArgs, data_dir: Option<PathBuf>) -> Result<ExitCode> {
    let (path, settings) = load_settings(&c).map_err(anyhow::Error::msg)?;
    let env = config::env_map();
    let data_dir = data_dir
        .or_else(|| settings.config.agent.data_dir.clone())
        .unwrap_or_else(|| config::default_data_dir(scope(&c), &env));
    let log_dir = config::default_log_dir(scope(&c), &data_dir, &env);
    let _log = logging::init(
        &settings.config.log.level,
        Some(&log_dir),
        settings.config.log.retention_files,
    );
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(config = %path.display(), "config loaded");
    serve(Arc::new(settings), data_dir).await?;
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
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
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

async fn shutdown_signal() {
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

async fn demo(listen: SocketAddr, data_dir: Option<PathBuf>, customers: u32) -> Result<ExitCode> {
    let env = config::env_map();
    let data_dir =
        data_dir.unwrap_or_else(|| config::default_data_dir(Scope::User, &env).join("demo"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let register = demo_token(&data_dir, "demo-register.token")?;
    let manager = demo_token(&data_dir, "demo-manager.token")?;
    let mut cfg = Config::default();
    cfg.agent.store_id = "demo-store".into();
    cfg.api.listen = listen.to_string();
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
    cfg.tiers = vec![
        config::TierConfig {
            name: "Silver".into(),
            min_points: 1000,
        },
        config::TierConfig {
            name: "Gold".into(),
            min_points: 5000,
        },
    ];
    let settings = cfg
        .validate()
        .map_err(|p| anyhow::anyhow!("demo config invalid: {p:?}"))?;
    let _log = logging::init(
        &settings.config.log.level,
        Some(&data_dir.join("logs")),
        settings.config.log.retention_files,
    );
    let samples = sim::sample_customers(customers.min(5), settings.config.upstream.sim.seed);
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
    println!("  try:  pointsd balance 1 --url {url} --token {register}");
    println!("        curl -H 'Authorization: Bearer {register}' {url}/v1/customers/1");
    println!("  Ctrl-C stops it; the queue is kept.");
    serve(Arc::new(settings), data_dir).await?;
    Ok(ExitCode::SUCCESS)
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn service_cmd(cmd: ServiceCmd) -> Result<ExitCode> {
    let native = service::Platform::native();
    match cmd {
        ServiceCmd::Install {
            cfg,
            dry_run,
            platform,
        } => {
            let platform = platform.unwrap_or(native);
            if platform != native && !dry_run {
                bail!("--platform only works with --dry-run; this machine uses {native:?}");
            }
            let config = resolve_config_path(&cfg).expect("always some");
            // Another platform's paths (e.g. C:\ProgramData) mean nothing here: keep them as given.
            let config = if platform == native {
                absolute(config)
            } else {
                config
            };
            let plan = service::InstallPlan {
                platform,
                user: cfg.user,
                binary: absolute(
                    std::env::current_exe().context("cannot find this program's own path")?,
                ),
                config: config.clone(),
            };
            print!("{}", plan.describe());
            if dry_run {
                return Ok(ExitCode::SUCCESS);
            }
            if !config.exists() {
                println!(
                    "note: {} does not exist yet; the service will fail until it does (start from config/pointsd.example.toml)",
                    config.display()
                );
            }
            service::install(&plan)?;
            println!("installed and started; check it with `pointsd doctor` and `pointsd status`");
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::Uninstall {
            cfg,
            purge,
            data_dir,
        } => {
            service::uninstall(native, cfg.user)?;
            println!("service removed");
            if purge {
                let env = config::env_map();
                let config_path = resolve_config_path(&cfg).expect("always some");
                let data = data_dir
                    .or_else(|| {
                        Config::load(&config_path, &env)
                            .ok()
                            .and_then(|c| c.agent.data_dir)
                    })
                    .unwrap_or_else(|| config::default_data_dir(scope(&cfg), &env));
                let logs = config::default_log_dir(scope(&cfg), &data, &env);
                for p in service::purge_paths(&config_path, &data, &logs) {
                    let r = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    match r {
                        Ok(()) => println!("deleted {}", p.display()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => println!("could not delete {}: {e}", p.display()),
                    }
                }
            } else {
                println!("config and data kept (use --purge to delete them)");
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::Start { user } => {
            service::control(native, user, service::Control::Start)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::Stop { user } => {
            service::control(native, user, service::Control::Stop)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::Restart { user } => {
            service::control(native, user, service::Control::Restart)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::Status { user } => {
            println!("pointsd service: {}", service::status(native, user)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn doctor(c: ConfigArgs, data_dir: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let env = config::env_map();
    let loaded = load_settings(&c);
    let config_path = resolve_config_path(&c).expect("always some");
    let data_dir = data_dir
        .or_else(|| {
            loaded
                .as_ref()
                .ok()
                .and_then(|(_, s)| s.config.agent.data_dir.clone())
        })
        .unwrap_or_else(|| config::default_data_dir(scope(&c), &env));
    let log_dir = config::default_log_dir(scope(&c), &data_dir, &env);
    let checks = doctor::run(doctor::DoctorInput {
        config_path,
        settings: loaded.map(|(_, s)| s),
        data_dir,
        log_dir,
    })
    .await;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for ch in &checks {
            println!("{}", ch.line());
        }
    }
    let failed = checks.iter().any(|c| c.level == doctor::Level::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Under the Windows SCM, speak the service protocol; elsewhere this is `run`.
async fn service_run(c: ConfigArgs, data_dir: Option<PathBuf>) -> Result<ExitCode> {
    #[cfg(windows)]
    {
        let (path, settings) = load_settings(&c).map_err(anyhow::Error::msg)?;
        let env = config::env_map();
        let data_dir = data_dir
            .or_else(|| settings.config.agent.data_dir.clone())
            .unwrap_or_else(|| config::default_data_dir(scope(&c), &env));
        let settings = Arc::new(settings);
        let handle = tokio::runtime::Handle::current();
        // The SCM dispatcher blocks its thread; the daemon runs on this runtime.
        tokio::task::spawn_blocking(move || {
            service::windows::run_as_service(move |token| {
                let log_dir = config::default_log_dir(scope(&c), &data_dir, &config::env_map());
                let _log = logging::init(
                    &settings.config.log.level,
                    Some(&log_dir),
                    settings.config.log.retention_files,
                );
                tracing::info!(config = %path.display(), "starting under the Windows service manager");
                handle.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(settings.listen)
                        .await
                        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
                    daemon::run(daemon::RunConfig {
                        settings,
                        data_dir,
                        listener,
                        shutdown: token,
                        clock: clock::system(),
                    })
                    .await
                    .map_err(|e| e.to_string())
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
