//! Installing pointsd as a system (or per-user) service through the `service-manager` crate:
//! systemd, launchd, and the Windows Service Control Manager. We pass our own unit/plist as
//! the service file's contents (the crate's templates lack the ordering, directories and
//! hardening a store machine needs), and on Windows add the failure actions sc.exe does not
//! set. `--dry-run` prints exactly what would be written and run.
//!
//! Under the Windows SCM the binary must speak the service protocol (or Windows reports
//! error 1053): `pointsd service-run` does that through the `windows-service` crate.
//!
//! Files: this one (platforms, errors, install/uninstall/control/status, purge paths);
//! `plan.rs` (what an install writes: the unit, the plist, the Windows arguments, rendered for
//! `--dry-run`); `windows.rs` (the SCM protocol, Windows only).

mod plan;
#[cfg(test)]
mod tests;
#[cfg(windows)]
pub mod windows;

pub use plan::*;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use service_manager::{
    RestartPolicy, ServiceInstallCtx, ServiceLabel, ServiceLevel, ServiceManager,
    ServiceManagerKind, ServiceStartCtx, ServiceStatus, ServiceStatusCtx, ServiceStopCtx,
    ServiceUninstallCtx,
};

/// The systemd unit shipped with the packages; `ExecStart=` is rewritten per install.
pub const SYSTEMD_UNIT: &str = include_str!("../../installers/linux/pointsd.service");
/// The LaunchDaemon shipped with the macOS package; `ProgramArguments` is rewritten per install.
pub const LAUNCHD_PLIST: &str = include_str!("../../installers/macos/jp.pointsd.plist");
pub const SERVICE_NAME: &str = "pointsd";
pub const LAUNCHD_LABEL: &str = "jp.pointsd";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    Systemd,
    Launchd,
    Windows,
}

impl Platform {
    pub fn native() -> Platform {
        if cfg!(windows) {
            Platform::Windows
        } else if cfg!(target_os = "macos") {
            Platform::Launchd
        } else {
            Platform::Systemd
        }
    }
    fn kind(self) -> ServiceManagerKind {
        match self {
            Platform::Systemd => ServiceManagerKind::Systemd,
            Platform::Launchd => ServiceManagerKind::Launchd,
            Platform::Windows => ServiceManagerKind::Sc,
        }
    }
    fn label(self) -> ServiceLabel {
        let s = match self {
            Platform::Launchd => LAUNCHD_LABEL,
            _ => SERVICE_NAME,
        };
        s.parse().expect("static label parses")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "installing a system service needs administrator rights: run it with sudo (Linux, macOS) or from an elevated prompt (Windows), or use --user"
    )]
    NeedsAdmin,
    #[error("{platform:?} has no per-user services; install at system level (without --user)")]
    NoUserLevel { platform: Platform },
    #[error("the service manager failed: {0}")]
    Manager(#[source] std::io::Error),
}

fn manager_err(e: std::io::Error) -> ServiceError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        ServiceError::NeedsAdmin
    } else {
        ServiceError::Manager(e)
    }
}

fn manager(platform: Platform, user: bool) -> Result<Box<dyn ServiceManager>, ServiceError> {
    let mut m = <dyn ServiceManager>::target(platform.kind());
    if user {
        m.set_level(ServiceLevel::User)
            .map_err(|_| ServiceError::NoUserLevel { platform })?;
    }
    Ok(m)
}

/// The unit runs as the system user `pointsd` and reads its config from a directory that
/// user can read: create both, as the .deb's postinst does.
#[cfg(unix)]
fn prepare_system_user(config: &Path) -> Result<(), ServiceError> {
    use std::os::unix::fs::PermissionsExt;
    let exists = std::process::Command::new("getent")
        .args(["passwd", SERVICE_NAME])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        let status = std::process::Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--home-dir",
                "/var/lib/pointsd",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_NAME,
            ])
            .status()
            .map_err(manager_err)?;
        if !status.success() {
            return Err(ServiceError::Manager(std::io::Error::other(
                "useradd pointsd failed; create the system user pointsd and run install again",
            )));
        }
    }
    let gid = crate::config::group_id(SERVICE_NAME);
    if let Some(dir) = config.parent() {
        std::fs::create_dir_all(dir).map_err(manager_err)?;
        std::os::unix::fs::chown(dir, Some(0), gid).map_err(manager_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .map_err(manager_err)?;
    }
    if config.exists() {
        std::os::unix::fs::chown(config, Some(0), gid).map_err(manager_err)?;
        std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o640))
            .map_err(manager_err)?;
    }
    Ok(())
}

/// Installs (or updates in place) and starts the service.
pub fn install(plan: &InstallPlan) -> Result<(), ServiceError> {
    #[cfg(unix)]
    if plan.platform == Platform::Systemd && !plan.user {
        prepare_system_user(&plan.config)?;
    }
    let m = manager(plan.platform, plan.user)?;
    let label = plan.platform.label();
    let installed = !matches!(
        m.status(ServiceStatusCtx {
            label: label.clone()
        }),
        Ok(ServiceStatus::NotInstalled) | Err(_)
    );
    if installed {
        // Update in place: stop, replace, start again. Data and config are untouched.
        let _ = m.stop(ServiceStopCtx {
            label: label.clone(),
        });
        if plan.platform != Platform::Systemd {
            m.uninstall(ServiceUninstallCtx {
                label: label.clone(),
            })
            .map_err(manager_err)?;
        }
    }
    m.install(ServiceInstallCtx {
        label: label.clone(),
        program: plan.binary.clone(),
        args: plan.args().into_iter().map(OsString::from).collect(),
        contents: plan.contents(),
        username: None,
        working_directory: None,
        environment: None,
        autostart: true,
        restart_policy: RestartPolicy::OnFailure {
            delay_secs: Some(5),
            max_retries: Some(3),
            reset_after_secs: Some(86_400),
        },
    })
    .map_err(manager_err)?;
    if plan.platform == Platform::Windows {
        // sc.exe sets no restart policy; without failure actions a crash stays down.
        let cmds = plan.sc_commands();
        // icacls first would need the folder to exist; create it, then run all but `create`
        // (done by service-manager above) and `start` (below).
        if let Some(dir) = plan.config.parent() {
            std::fs::create_dir_all(dir).map_err(manager_err)?;
        }
        for c in cmds.iter().filter(|c| c[1] != "create" && c[1] != "start") {
            let status = std::process::Command::new(&c[0])
                .args(&c[1..])
                .status()
                .map_err(manager_err)?;
            if !status.success() {
                return Err(ServiceError::Manager(std::io::Error::other(format!(
                    "`{}` did not succeed",
                    c.join(" ")
                ))));
            }
        }
    }
    m.start(ServiceStartCtx { label }).map_err(manager_err)
}

pub fn uninstall(platform: Platform, user: bool) -> Result<(), ServiceError> {
    let m = manager(platform, user)?;
    let label = platform.label();
    let _ = m.stop(ServiceStopCtx {
        label: label.clone(),
    });
    m.uninstall(ServiceUninstallCtx { label })
        .map_err(manager_err)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Control {
    Start,
    Stop,
    Restart,
}

pub fn control(platform: Platform, user: bool, what: Control) -> Result<(), ServiceError> {
    let m = manager(platform, user)?;
    let label = platform.label();
    match what {
        Control::Start => m.start(ServiceStartCtx { label }),
        Control::Stop => m.stop(ServiceStopCtx { label }),
        Control::Restart => {
            let _ = m.stop(ServiceStopCtx {
                label: label.clone(),
            });
            m.start(ServiceStartCtx { label })
        }
    }
    .map_err(manager_err)
}

pub fn status(platform: Platform, user: bool) -> Result<String, ServiceError> {
    let m = manager(platform, user)?;
    Ok(
        match m
            .status(ServiceStatusCtx {
                label: platform.label(),
            })
            .map_err(manager_err)?
        {
            ServiceStatus::NotInstalled => "not installed".into(),
            ServiceStatus::Running => "running".into(),
            ServiceStatus::Stopped(Some(why)) => format!("stopped ({why})"),
            ServiceStatus::Stopped(None) => "stopped".into(),
        },
    )
}

/// Data that `uninstall --purge` removes, beside the service itself.
pub fn purge_paths(config: &Path, data_dir: &Path, log_dir: &Path) -> Vec<PathBuf> {
    vec![
        config.to_path_buf(),
        data_dir.to_path_buf(),
        log_dir.to_path_buf(),
    ]
}
