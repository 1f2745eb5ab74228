//! The commands about this installation rather than a running daemon: `config check`,
//! `doctor`, and `service install|uninstall|start|stop|restart|status` (with the purge of
//! config, data and logs on `uninstall --purge`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::config::{self, Config};
use crate::{doctor, service};

use super::args::{ConfigArgs, ServiceCmd};
use super::paths::Paths;

/// `pointsd config check`: every problem, or a one-line summary. Exit 1 when invalid.
pub(super) fn config_check(c: &ConfigArgs) -> ExitCode {
    let env = config::env_map();
    let path = c.config_file(&env);
    match config::load_settings(&path, &env) {
        Ok(s) => {
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

/// `pointsd doctor`: every check, as lines or JSON. Exit 1 when one fails.
pub(super) async fn doctor(
    c: ConfigArgs,
    data_dir: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let env = config::env_map();
    let path = c.config_file(&env);
    let loaded = config::load_settings(&path, &env);
    let agent_data_dir = loaded
        .as_ref()
        .ok()
        .and_then(|s| s.config.agent.data_dir.clone());
    let paths = Paths::for_command(&c, data_dir.as_deref(), agent_data_dir.as_deref(), &env);
    let checks = doctor::run(doctor::DoctorInput {
        config_path: paths.config,
        settings: loaded,
        data_dir: paths.data,
        log_dir: paths.logs,
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

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

pub(super) fn service_cmd(cmd: ServiceCmd) -> Result<ExitCode> {
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
            let config = cfg.config_file(&config::env_map());
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
                purge_files(&cfg, data_dir);
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

/// `uninstall --purge`: deletes the config, data and logs, reporting each.
fn purge_files(cfg: &ConfigArgs, data_dir: Option<PathBuf>) {
    let env = config::env_map();
    let config_path = cfg.config_file(&env);
    // An invalid config still names its data dir; only a missing or unparsable one does not.
    let agent_data_dir = Config::load(&config_path, &env)
        .ok()
        .and_then(|c| c.agent.data_dir);
    let paths = Paths::for_command(cfg, data_dir.as_deref(), agent_data_dir.as_deref(), &env);
    for p in service::purge_paths(&paths.config, &paths.data, &paths.logs) {
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
}
