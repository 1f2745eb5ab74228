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

/// Saves the file; when run as root for a daemon that runs as another user, gives the file
/// to the data dir's owner so the daemon can read it.
fn save(f: &TokenFile, data: &std::path::Path, file: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(data)?;
    f.save(file)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(data)
            && std::fs::metadata(file).is_ok_and(|fm| fm.uid() != m.uid())
        {
            let _ = std::os::unix::fs::chown(file, Some(m.uid()), Some(m.gid()));
        }
    }
    Ok(())
}

pub(super) fn add(
    name: String,
    role: Role,
    c: ConfigArgs,
    data_dir: Option<PathBuf>,
) -> Result<ExitCode> {
    let i = Install::open(&c, data_dir)?;
    let mut f = TokenFile::load(&i.file)?;
    let token = f.issue(&name, role, &i.names())?;
    save(&f, &i.data, &i.file)?;
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
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<24} {:<9} {:<7} CREATED", "NAME", "ROLE", "SOURCE");
        for r in &rows {
            let state = if r["revoked"] == true {
                " (revoked)"
            } else {
                ""
            };
            println!(
                "{:<24} {:<9} {:<7} {}{state}",
                r["name"].as_str().unwrap_or(""),
                r["role"].as_str().unwrap_or(""),
                r["source"].as_str().unwrap_or(""),
                r["created_at"].as_str().unwrap_or("-"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn revoke(name: String, c: ConfigArgs, data_dir: Option<PathBuf>) -> Result<ExitCode> {
    let i = Install::open(&c, data_dir)?;
    let mut f = TokenFile::load(&i.file)?;
    f.revoke(&name, &i.names())?;
    save(&f, &i.data, &i.file)?;
    eprintln!(
        "revoked token {name:?}; a running daemon refuses it within {} s.",
        tokens::POLL.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Register => "register",
        Role::Manager => "manager",
    }
}
