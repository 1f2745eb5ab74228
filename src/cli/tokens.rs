//! `pointsd token add|list|revoke`: tokens issued and revoked without editing the config,
//! kept in the data dir's `tokens.json`; a running daemon picks a change up within seconds.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::config::Role;
use crate::tokens::{self, TokenFile};

use super::args::ConfigArgs;
use super::serve::load;

/// This installation's token file and the tokens its config names.
struct Install {
    data: PathBuf,
    file: PathBuf,
    config: Vec<(String, Role)>,
}

impl Install {
    fn open(c: &ConfigArgs, data_dir: Option<PathBuf>) -> Result<Install> {
        let (paths, settings) = load(c, data_dir.as_deref())?;
        Ok(Install {
            file: tokens::path(&paths.data),
            data: paths.data,
            config: settings
                .tokens
                .iter()
                .map(|t| (t.name.clone(), t.role))
                .collect(),
        })
    }

    fn names(&self) -> Vec<String> {
        self.config.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// Changes the token file under the lock the daemon's API takes too; when run as root for a
/// daemon that runs as another user, gives the file (and the lock) to the data dir's owner so
/// the daemon can read it.
fn change<T>(
    i: &Install,
    f: impl FnOnce(&mut TokenFile) -> Result<T, tokens::TokenError>,
) -> Result<T> {
    crate::config::private_dir(&i.data)?;
    let v = tokens::modify(&i.data, f)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(&i.data) {
            for p in [i.file.clone(), i.data.join(tokens::LOCK_NAME)] {
                if std::fs::metadata(&p).is_ok_and(|fm| fm.uid() != m.uid()) {
                    let _ = std::os::unix::fs::chown(&p, Some(m.uid()), Some(m.gid()));
                }
            }
        }
    }
    Ok(v)
}

pub(super) fn add(
    name: String,
    role: Role,
    c: ConfigArgs,
    data_dir: Option<PathBuf>,
) -> Result<ExitCode> {
    let i = Install::open(&c, data_dir)?;
    let names = i.names();
    let token = change(&i, |f| f.issue(&name, role, &names))?;
    // The token on stdout alone (for scripts); the rest on stderr.
    println!("{token}");
    eprintln!(
        "issued token {name:?} ({}); it is shown only now, pointsd keeps only its SHA-256. A running daemon accepts it within {} s.",
        role_name(role),
        tokens::POLL.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn list(c: ConfigArgs, data_dir: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let i = Install::open(&c, data_dir)?;
    let f = TokenFile::load(&i.file)?;
    let mut rows = Vec::new();
    for (name, role) in &i.config {
        let revoked = f.revoked.contains(name);
        rows.push(serde_json::json!({"name": name, "role": role, "source": "config", "revoked": revoked, "created_at": null}));
    }
    for t in &f.tokens {
        rows.push(serde_json::json!({"name": t.name, "role": t.role, "source": "issued", "revoked": false, "created_at": t.created_at}));
    }
    use std::fmt::Write as _;
    let mut out = String::new();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        writeln!(out, "{:<24} {:<9} {:<7} CREATED", "NAME", "ROLE", "SOURCE")?;
        for r in &rows {
            let state = if r["revoked"] == true {
                " (revoked)"
            } else {
                ""
            };
            writeln!(
                out,
                "{:<24} {:<9} {:<7} {}{state}",
                r["name"].as_str().unwrap_or(""),
                r["role"].as_str().unwrap_or(""),
                r["source"].as_str().unwrap_or(""),
                r["created_at"].as_str().unwrap_or("-"),
            )?;
        }
    }
    print_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn revoke(name: String, c: ConfigArgs, data_dir: Option<PathBuf>) -> Result<ExitCode> {
    let i = Install::open(&c, data_dir)?;
    let names = i.names();
    change(&i, |f| f.revoke(&name, &names))?;
    eprintln!(
        "revoked token {name:?}; a running daemon refuses it within {} s.",
        tokens::POLL.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to stdout; a reader that stopped early (`pointsd token list | head -1`) is
/// not an error (`println!` would panic on the closed pipe).
fn print_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Register => "register",
        Role::Manager => "manager",
    }
}
