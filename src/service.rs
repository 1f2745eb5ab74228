//! Installing pointsd as a system (or per-user) service through the `service-manager` crate:
//! systemd, launchd, and the Windows Service Control Manager. We pass our own unit/plist as
//! the service file's contents (the crate's templates lack the ordering, directories and
//! hardening a store machine needs), and on Windows add the failure actions sc.exe does not
//! set. `--dry-run` prints exactly what would be written and run.
//!
//! Under the Windows SCM the binary must speak the service protocol (or Windows reports
//! error 1053): `pointsd service-run` does that through the `windows-service` crate.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use service_manager::{
    RestartPolicy, ServiceInstallCtx, ServiceLabel, ServiceLevel, ServiceManager,
    ServiceManagerKind, ServiceStartCtx, ServiceStatus, ServiceStatusCtx, ServiceStopCtx,
    ServiceUninstallCtx,
};

/// The systemd unit shipped with the packages; `ExecStart=` is rewritten per install.
pub const SYSTEMD_UNIT: &str = include_str!("../installers/linux/pointsd.service");
/// The LaunchDaemon shipped with the macOS package; `ProgramArguments` is rewritten per install.
pub const LAUNCHD_PLIST: &str = include_str!("../installers/macos/jp.pointsd.plist");
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

/// What an install needs to know.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    pub platform: Platform,
    pub user: bool,
    pub binary: PathBuf,
    pub config: PathBuf,
}

impl InstallPlan {
    /// The program's arguments under the service manager.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            if self.platform == Platform::Windows {
                "service-run".to_string()
            } else {
                "run".to_string()
            },
            "--config".into(),
            self.config.display().to_string(),
        ];
        if self.user {
            a.push("--user".into());
        }
        a
    }

    /// The service file we write (systemd unit or launchd plist); `None` on Windows.
    pub fn contents(&self) -> Option<String> {
        match self.platform {
            Platform::Systemd => Some(if self.user {
                self.user_unit()
            } else {
                self.system_unit()
            }),
            Platform::Launchd => Some(self.plist()),
            Platform::Windows => None,
        }
    }

    fn exec_line(&self) -> String {
        let mut parts = vec![quote_systemd(&self.binary.display().to_string())];
        parts.extend(self.args().iter().map(|a| quote_systemd(a)));
        format!("ExecStart={}", parts.join(" "))
    }

    fn system_unit(&self) -> String {
        SYSTEMD_UNIT
            .lines()
            .map(|l| {
                if l.starts_with("ExecStart=") {
                    self.exec_line()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    /// A user service cannot switch users or use most sandboxing (that needs privileges);
    /// it runs with the user's own rights and folders.
    fn user_unit(&self) -> String {
        format!(
            "[Unit]\nDescription=pointsd loyalty point agent (user service)\nAfter=network-online.target\n\n[Service]\nType=exec\n{}\nRestart=on-failure\nRestartSec=5s\nTimeoutStopSec=30s\nNoNewPrivileges=yes\n\n[Install]\nWantedBy=default.target\n",
            self.exec_line()
        )
    }

    fn plist(&self) -> String {
        let mut args = vec![self.binary.display().to_string()];
        args.extend(self.args());
        let args_xml: String = args
            .iter()
            .map(|a| format!("        <string>{}</string>\n", xml_escape(a)))
            .collect();
        let mut p = LAUNCHD_PLIST.to_string();
        // Swap the shipped ProgramArguments array for this install's.
        if let Some(key) = p.find("<key>ProgramArguments</key>")
            && let Some(open) = p[key..].find("<array>").map(|i| key + i)
            && let Some(close) = p[open..].find("</array>").map(|i| open + i)
        {
            p.replace_range(open..close, &format!("<array>\n{args_xml}    "));
        }
        if self.user {
            // A LaunchAgent runs as the user who loads it, and logs in that user's Library.
            for key in ["UserName", "GroupName"] {
                p = remove_plist_key(&p, key);
            }
            p = p.replace("/Library/Logs/pointsd/", "Library/Logs/pointsd/");
        }
        p
    }

    /// `sc.exe` commands as they would run on Windows (install and failure actions).
    pub fn sc_commands(&self) -> Vec<Vec<String>> {
        let mut bin = format!("\"{}\"", self.binary.display());
        for a in self.args() {
            bin.push(' ');
            if a.contains(' ') {
                bin.push_str(&format!("\"{a}\""));
            } else {
                bin.push_str(&a);
            }
        }
        let s = |x: &str| x.to_string();
        let dir = self
            .config
            .to_string_lossy()
            .rsplit_once('\\')
            .map(|(d, _)| d.to_string())
            .unwrap_or_else(|| ".".into());
        vec![
            // The config holds secrets: SYSTEM and Administrators only, nothing inherited.
            vec![
                s("icacls"),
                dir,
                s("/inheritance:r"),
                s("/grant:r"),
                s("*S-1-5-18:(OI)(CI)F"),
                s("/grant:r"),
                s("*S-1-5-32-544:(OI)(CI)F"),
            ],
            vec![
                s("sc.exe"),
                s("create"),
                s(SERVICE_NAME),
                s("type="),
                s("own"),
                s("start="),
                s("auto"),
                s("error="),
                s("normal"),
                s("binpath="),
                bin,
                s("displayname="),
                s("pointsd loyalty point agent"),
            ],
            // Delayed start: the network is up by then, and boot is not slowed.
            vec![
                s("sc.exe"),
                s("config"),
                s(SERVICE_NAME),
                s("start="),
                s("delayed-auto"),
            ],
            vec![
                s("sc.exe"),
                s("failure"),
                s(SERVICE_NAME),
                s("reset="),
                s("86400"),
                s("actions="),
                s("restart/5000/restart/5000/restart/5000"),
            ],
            // Failure actions also on an error exit, not only on a crash.
            vec![s("sc.exe"), s("failureflag"), s(SERVICE_NAME), s("1")],
            vec![s("sc.exe"), s("start"), s(SERVICE_NAME)],
        ]
    }

    /// Where the service file goes, for the dry-run listing.
    pub fn service_file(&self) -> Option<String> {
        match (self.platform, self.user) {
            (Platform::Systemd, false) => Some("/etc/systemd/system/pointsd.service".into()),
            (Platform::Systemd, true) => Some("~/.config/systemd/user/pointsd.service".into()),
            (Platform::Launchd, false) => {
                Some(format!("/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist"))
            }
            (Platform::Launchd, true) => {
                Some(format!("~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist"))
            }
            (Platform::Windows, _) => None,
        }
    }

    /// A human-readable account of everything `install` would do.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "pointsd service install ({:?}, {} level)\nbinary: {}\nconfig: {}\n",
            self.platform,
            if self.user { "user" } else { "system" },
            self.binary.display(),
            self.config.display()
        );
        match self.platform {
            Platform::Windows => {
                out.push_str("would run:\n");
                for c in self.sc_commands() {
                    let shown: Vec<String> = c
                        .iter()
                        .map(|a| {
                            if a.contains(' ') && !a.starts_with('"') {
                                format!("\"{a}\"")
                            } else {
                                a.clone()
                            }
                        })
                        .collect();
                    out.push_str(&format!("  {}\n", shown.join(" ")));
                }
            }
            _ => {
                let file = self.service_file().unwrap_or_default();
                if self.platform == Platform::Systemd && !self.user {
                    let dir = self
                        .config
                        .parent()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "would create the system user pointsd if missing:\n  useradd --system --user-group --home-dir /var/lib/pointsd --no-create-home --shell /usr/sbin/nologin pointsd\nwould make {dir} root:pointsd 0750 and {} root:pointsd 0640\n",
                        self.config.display()
                    ));
                }
                out.push_str(&format!("would write {file}:\n"));
                for l in self.contents().unwrap_or_default().lines() {
                    out.push_str(&format!("  | {l}\n"));
                }
                out.push_str("would run:\n");
                let cmds: Vec<String> = match (self.platform, self.user) {
                    (Platform::Systemd, false) => vec![
                        "systemctl daemon-reload".into(),
                        "systemctl enable pointsd.service".into(),
                        "systemctl restart pointsd.service".into(),
                    ],
                    (Platform::Systemd, true) => vec![
                        "systemctl --user daemon-reload".into(),
                        "systemctl --user enable pointsd.service".into(),
                        "systemctl --user restart pointsd.service".into(),
                    ],
                    (_, false) => vec![
                        format!("launchctl bootstrap system {file}"),
                        format!("launchctl kickstart -k system/{LAUNCHD_LABEL}"),
                    ],
                    (_, true) => vec![
                        format!("launchctl bootstrap gui/$UID {file}"),
                        format!("launchctl kickstart -k gui/$UID/{LAUNCHD_LABEL}"),
                    ],
                };
                for c in cmds {
                    out.push_str(&format!("  {c}\n"));
                }
            }
        }
        out
    }
}

fn quote_systemd(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// Removes `<key>K</key>` and the value element after it (one line each in our plist).
fn remove_plist_key(p: &str, key: &str) -> String {
    let marker = format!("<key>{key}</key>");
    let mut out = Vec::new();
    let mut skip_next = false;
    for line in p.lines() {
        if skip_next {
            skip_next = false;
            continue;
        }
        if line.trim() == marker {
            skip_next = true;
            continue;
        }
        out.push(line);
    }
    out.join("\n") + "\n"
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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

#[cfg(windows)]
pub mod windows {
    //! The Windows service protocol: report Running, turn Stop/Shutdown into the daemon's
    //! graceful shutdown, report Stopped when every task has finished.

    use std::ffi::OsString;
    use std::sync::OnceLock;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use windows_service::service::{
        ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus,
        ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::{define_windows_service, service_dispatcher};

    type Runner = Box<dyn FnOnce(CancellationToken) -> Result<(), String> + Send>;
    static RUNNER: OnceLock<std::sync::Mutex<Option<Runner>>> = OnceLock::new();

    define_windows_service!(ffi_service_main, service_main);

    /// Hands control to the SCM; `run` is called with a token that fires on Stop/Shutdown.
    pub fn run_as_service(
        run: impl FnOnce(CancellationToken) -> Result<(), String> + Send + 'static,
    ) -> Result<(), windows_service::Error> {
        RUNNER
            .get_or_init(|| std::sync::Mutex::new(None))
            .lock()
            .expect("runner")
            .replace(Box::new(run));
        service_dispatcher::start(super::SERVICE_NAME, ffi_service_main)
    }

    /// How long the SCM should wait for a graceful stop (the daemon's own bound is the larger of
    /// `api.shutdown_grace_s`, default 10 s, and the sync workers' 15 s deadline).
    const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

    fn status(state: ServiceState, code: u32, checkpoint: u32, hint: Duration) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code: ServiceExitCode::Win32(code),
            checkpoint,
            wait_hint: hint,
            process_id: None,
        }
    }

    fn service_main(_args: Vec<OsString>) {
        let token = CancellationToken::new();
        let handle_slot: std::sync::Arc<OnceLock<service_control_handler::ServiceStatusHandle>> =
            std::sync::Arc::new(OnceLock::new());
        let (t2, slot2) = (token.clone(), handle_slot.clone());
        let handler = move |event| match event {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                // Tell the SCM a graceful stop is under way and how long it may take, so it
                // does not give up on us while in-flight requests finish.
                if let Some(h) = slot2.get() {
                    let _ = h.set_service_status(status(
                        ServiceState::StopPending,
                        0,
                        1,
                        STOP_WAIT_HINT,
                    ));
                }
                t2.cancel();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(handle) = service_control_handler::register(super::SERVICE_NAME, handler) else {
            return;
        };
        let _ = handle_slot.set(handle);
        let _ = handle.set_service_status(status(ServiceState::Running, 0, 0, Duration::default()));
        let runner = RUNNER.get().and_then(|m| m.lock().expect("runner").take());
        let code = match runner.map(|r| r(token)) {
            Some(Ok(())) => 0,
            _ => 1,
        };
        let _ =
            handle.set_service_status(status(ServiceState::Stopped, code, 0, Duration::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(platform: Platform, user: bool) -> InstallPlan {
        InstallPlan {
            platform,
            user,
            binary: PathBuf::from("/opt/point sd/pointsd"),
            config: PathBuf::from("/etc/pointsd/pointsd.toml"),
        }
    }

    #[test]
    fn system_unit_keeps_hardening_and_rewrites_exec_start() {
        let u = plan(Platform::Systemd, false).contents().unwrap();
        assert!(u.contains(
            "ExecStart=\"/opt/point sd/pointsd\" run --config /etc/pointsd/pointsd.toml\n"
        ));
        for d in [
            "After=network-online.target",
            "User=pointsd",
            "StateDirectory=pointsd",
            "ProtectSystem=strict",
            "SystemCallFilter=@system-service",
        ] {
            assert!(u.contains(d), "{d} missing");
        }
        assert_eq!(u.matches("ExecStart=").count(), 1);
    }

    #[test]
    fn user_unit_has_no_user_switch() {
        let u = plan(Platform::Systemd, true).contents().unwrap();
        assert!(!u.contains("User=pointsd"));
        assert!(u.contains("--user"));
        assert!(u.contains("WantedBy=default.target"));
    }

    #[test]
    fn windows_uses_service_run_and_failure_actions() {
        let p = plan(Platform::Windows, false);
        let cmds = p.sc_commands();
        assert_eq!(cmds[0][0], "icacls");
        assert!(cmds[0].contains(&"*S-1-5-18:(OI)(CI)F".to_string()));
        assert!(cmds[1].iter().any(|a| a.contains("service-run --config")));
        assert_eq!(
            cmds[2][1..],
            ["config", "pointsd", "start=", "delayed-auto"]
        );
        assert_eq!(cmds[3][1], "failure");
        assert!(cmds[3].contains(&"restart/5000/restart/5000/restart/5000".to_string()));
        assert_eq!(cmds[4][1..], ["failureflag", "pointsd", "1"]);
        assert!(p.describe().contains("sc.exe failure pointsd"));
    }

    #[test]
    fn plist_is_escaped_and_keeps_alive_on_failure() {
        let p = plan(Platform::Launchd, false).contents().unwrap();
        assert!(p.contains("<string>/opt/point sd/pointsd</string>"));
        assert_eq!(p.matches("<string>run</string>").count(), 1);
        assert!(p.contains("<key>UserName</key>"));
        let u = plan(Platform::Launchd, true).contents().unwrap();
        assert!(!u.contains("<key>UserName</key>") && u.contains("--user"));
        assert!(p.contains("<string>jp.pointsd</string>"));
        assert!(p.contains("<key>SuccessfulExit</key>"));
        assert!(p.contains("/Library/Logs/pointsd/pointsd.err.log"));
    }
}
