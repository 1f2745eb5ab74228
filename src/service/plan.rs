//! What an install writes and runs, rendered for `--dry-run`: the systemd unit, the launchd
//! plist, the Windows service arguments and failure actions.

use super::*;

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
