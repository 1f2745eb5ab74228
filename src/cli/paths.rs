//! Where a command's files are: the config file (`--config`, `POINTSD_CONFIG`, else the
//! default location), and the data and log dirs, looked up once in one order:
//! `--data-dir` flag → `agent.data_dir` in the config → the default for the scope.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{self, Scope};

use super::args::ConfigArgs;

/// The config file, data dir and log dir of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub scope: Scope,
    pub config: PathBuf,
    pub data: PathBuf,
    pub logs: PathBuf,
}

impl ConfigArgs {
    pub fn scope(&self) -> Scope {
        if self.user {
            Scope::User
        } else {
            Scope::System
        }
    }

    /// `--config` (or `POINTSD_CONFIG`), else the scope's default config file.
    pub fn config_file(&self, env: &BTreeMap<String, String>) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| config::default_config_file(self.scope(), env))
    }
}

impl Paths {
    /// The one lookup: `data_flag` (`--data-dir`, `POINTSD_DATA_DIR`) → `agent_data_dir` (the
    /// config's `agent.data_dir`) → the scope's default; logs follow the data dir unless
    /// systemd names a logs directory.
    pub fn resolve(
        scope: Scope,
        config: PathBuf,
        data_flag: Option<&Path>,
        agent_data_dir: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Paths {
        let data = data_flag
            .or(agent_data_dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| config::default_data_dir(scope, env));
        let logs = config::default_log_dir(scope, &data, env);
        Paths {
            scope,
            config,
            data,
            logs,
        }
    }

    /// `resolve` for a command's flags; `agent_data_dir` comes from the config if it loaded.
    pub fn for_command(
        args: &ConfigArgs,
        data_flag: Option<&Path>,
        agent_data_dir: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Paths {
        Paths::resolve(
            args.scope(),
            args.config_file(env),
            data_flag,
            agent_data_dir,
            env,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (scope, --data-dir, agent.data_dir, env) → (data, logs)
    type Case<'a> = (
        Scope,
        Option<&'a Path>,
        Option<&'a Path>,
        &'a BTreeMap<String, String>,
        &'a str,
        &'a str,
    );

    #[test]
    fn data_dir_comes_from_the_flag_then_the_config_then_the_default() {
        let systemd: BTreeMap<String, String> = [
            ("STATE_DIRECTORY", "/var/lib/sd"),
            ("LOGS_DIRECTORY", "/var/log/sd"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let none = BTreeMap::new();
        let (flag, agent) = (Some(Path::new("/flag")), Some(Path::new("/agent")));
        let cases: &[Case] = &[
            (Scope::System, flag, agent, &none, "/flag", "/flag/logs"),
            (Scope::System, None, agent, &none, "/agent", "/agent/logs"),
            (Scope::System, flag, None, &systemd, "/flag", "/var/log/sd"),
            (
                Scope::System,
                None,
                agent,
                &systemd,
                "/agent",
                "/var/log/sd",
            ),
            (
                Scope::System,
                None,
                None,
                &systemd,
                "/var/lib/sd",
                "/var/log/sd",
            ),
            (Scope::User, flag, agent, &systemd, "/flag", "/flag/logs"),
            (Scope::User, None, agent, &systemd, "/agent", "/agent/logs"),
        ];
        for (i, (scope, data_flag, agent_dir, env, data, logs)) in cases.iter().enumerate() {
            let p = Paths::resolve(
                *scope,
                PathBuf::from("/c.toml"),
                *data_flag,
                *agent_dir,
                env,
            );
            assert_eq!(p.data, PathBuf::from(data), "case {i}");
            assert_eq!(p.logs, PathBuf::from(logs), "case {i}");
            assert_eq!(p.config, PathBuf::from("/c.toml"), "case {i}");
        }
        // No flag, no config value, no systemd: the scope's default, logs beside it.
        let p = Paths::resolve(Scope::User, PathBuf::from("/c"), None, None, &none);
        assert_eq!(p.data, config::default_data_dir(Scope::User, &none));
        assert_eq!(p.logs, p.data.join("logs"));
    }

    #[test]
    fn config_file_is_the_flag_else_the_default() {
        let env = BTreeMap::new();
        let given = ConfigArgs {
            config: Some(PathBuf::from("/x.toml")),
            user: false,
        };
        assert_eq!(given.config_file(&env), PathBuf::from("/x.toml"));
        let user = ConfigArgs {
            config: None,
            user: true,
        };
        assert_eq!(
            user.config_file(&env),
            config::default_config_file(Scope::User, &env)
        );
    }
}
