//! Default paths: config file, data dir and log dir, for the system service or the current
//! user, honouring systemd's `$CONFIGURATION_DIRECTORY`, `$STATE_DIRECTORY`, `$LOGS_DIRECTORY`.
//!
//! Windows, per user: everything under Local AppData (`%LOCALAPPDATA%\pointsd\pointsd.toml`,
//! `...\pointsd\data`), not `directories`' `ProjectDirs` layout (`%APPDATA%\pointsd\pointsd\data`:
//! the name doubled, and in the roaming profile, which domain logons copy to a server and back).
//! A SQLite cache and a config holding register tokens and the Smaregi secret belong to this
//! machine. The service's `%ProgramData%\pointsd` is unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Whether paths follow the system service layout or the current user's folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("jp", "pointsd", "pointsd")
}

/// The per-user folder on Windows: `<Local AppData>\pointsd` (FOLDERID_LocalAppData).
fn windows_user_base() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|d| windows_user_base_in(d.data_local_dir()))
}

fn windows_user_base_in(local_app_data: &Path) -> PathBuf {
    local_app_data.join("pointsd")
}

/// User config file: Windows `<Local AppData>\pointsd\pointsd.toml`, else `ProjectDirs`'
/// config dir (`~/.config/pointsd`, macOS `~/Library/Application Support/jp.pointsd.pointsd`).
fn user_config_file() -> Option<PathBuf> {
    if cfg!(windows) {
        windows_user_base().map(|b| b.join("pointsd.toml"))
    } else {
        project_dirs().map(|d| d.config_dir().join("pointsd.toml"))
    }
}

/// User data dir: Windows `<Local AppData>\pointsd\data`, else `ProjectDirs`' data dir.
fn user_data_dir() -> Option<PathBuf> {
    if cfg!(windows) {
        windows_user_base().map(|b| b.join("data"))
    } else {
        project_dirs().map(|d| d.data_dir().to_path_buf())
    }
}

fn env_dir(env: &BTreeMap<String, String>, name: &str) -> Option<PathBuf> {
    // systemd may pass several colon-separated directories; the first is ours.
    env.get(name)
        .and_then(|v| v.split(':').next())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn system_base() -> PathBuf {
    if cfg!(windows) {
        let pd = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(pd).join("pointsd")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/pointsd")
    } else {
        PathBuf::from("/var/lib/pointsd")
    }
}

/// Default config file: systemd's `$CONFIGURATION_DIRECTORY`, then the OS location.
pub fn default_config_file(scope: Scope, env: &BTreeMap<String, String>) -> PathBuf {
    match scope {
        Scope::User => user_config_file().unwrap_or_else(|| PathBuf::from("pointsd.toml")),
        Scope::System => {
            if let Some(d) = env_dir(env, "CONFIGURATION_DIRECTORY") {
                d.join("pointsd.toml")
            } else if cfg!(windows) || cfg!(target_os = "macos") {
                system_base().join("pointsd.toml")
            } else {
                PathBuf::from("/etc/pointsd/pointsd.toml")
            }
        }
    }
}

/// Default data dir: systemd's `$STATE_DIRECTORY`, then the OS location.
pub fn default_data_dir(scope: Scope, env: &BTreeMap<String, String>) -> PathBuf {
    match scope {
        Scope::User => user_data_dir().unwrap_or_else(|| PathBuf::from("pointsd-data")),
        Scope::System => env_dir(env, "STATE_DIRECTORY").unwrap_or_else(|| {
            if cfg!(windows) || cfg!(target_os = "macos") {
                system_base().join("data")
            } else {
                system_base()
            }
        }),
    }
}

/// Log dir: systemd's `$LOGS_DIRECTORY` in system scope, else `<data_dir>/logs`.
pub fn default_log_dir(scope: Scope, data_dir: &Path, env: &BTreeMap<String, String>) -> PathBuf {
    if scope == Scope::System
        && let Some(d) = env_dir(env, "LOGS_DIRECTORY")
    {
        return d;
    }
    data_dir.join("logs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_user_folders_are_in_local_app_data_without_a_doubled_name() {
        let base = windows_user_base_in(Path::new(r"C:\Users\clerk\AppData\Local"));
        let s = base.to_string_lossy().replace('/', "\\");
        assert_eq!(s, r"C:\Users\clerk\AppData\Local\pointsd");
        assert!(!s.contains("Roaming") && !s.contains(r"pointsd\pointsd"));
        // Off Windows the user folders stay `ProjectDirs`'.
        if !cfg!(windows) {
            assert_eq!(user_data_dir(), project_dirs().map(|d| d.data_dir().into()));
        }
    }

    #[test]
    fn systemd_directories_win_in_system_scope() {
        let mut env = BTreeMap::new();
        env.insert("STATE_DIRECTORY".into(), "/var/lib/x:/other".into());
        env.insert("CONFIGURATION_DIRECTORY".into(), "/etc/x".into());
        env.insert("LOGS_DIRECTORY".into(), "/var/log/x".into());
        assert_eq!(
            default_data_dir(Scope::System, &env),
            PathBuf::from("/var/lib/x")
        );
        assert_eq!(
            default_config_file(Scope::System, &env),
            PathBuf::from("/etc/x/pointsd.toml")
        );
        assert_eq!(
            default_log_dir(Scope::System, Path::new("/d"), &env),
            PathBuf::from("/var/log/x")
        );
        assert_eq!(
            default_log_dir(Scope::User, Path::new("/d"), &env),
            PathBuf::from("/d/logs")
        );
    }
}
