//! Loading: the TOML file, then `POINTSD_SECTION__KEY` environment overrides, and secret
//! files. Parsing collects *every* problem (unknown keys, type errors, rule violations), so
//! that `pointsd config check` prints them all at once, each with its key path and a fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::sections::Config;
use crate::secret::Secret;

/// Prefix of environment variables that override config keys: `POINTSD_SYNC__CONCURRENCY=8`
/// sets `sync.concurrency`. A double underscore separates levels, so single-underscore variables
/// used by the CLI (`POINTSD_CONFIG`, `POINTSD_DATA_DIR`) are never mistaken for keys.
pub const ENV_PREFIX: &str = "POINTSD_";

/// One thing wrong with a config, tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}. Check the path, or pass --config FILE")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Parses TOML text with environment overrides applied, collecting every problem.
    pub fn parse(
        text: &str,
        env: &BTreeMap<String, String>,
        origin: &str,
    ) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        };
        let mut value: toml::Table = toml::from_str(text).map_err(|e| {
            invalid(vec![
                Problem {
                    key: "(file)".into(),
                    message: format!("not valid TOML: {}", e.message().trim()),
                }
                .with_span(text, e.span()),
            ])
        })?;
        apply_env_overrides(&mut value, env);

        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let parsed: Result<Config, _> = serde_ignored::deserialize(
            serde_path_to_error::Deserializer::new(toml::Value::Table(value), &mut track),
            // An optional section shows as `?` in the path: leave it out of the key.
            |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace(".?", "")),
        );
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|key| Problem {
                message: "unknown key; check its spelling against config/pointsd.example.toml"
                    .into(),
                key,
            })
            .collect();
        match parsed {
            Ok(cfg) if problems.is_empty() => Ok(cfg),
            Ok(cfg) => {
                // Report the rule problems too, so one `config check` shows everything.
                if let Err(more) = cfg.validate() {
                    problems.extend(more);
                }
                Err(invalid(problems))
            }
            Err(e) => {
                let key = track.path().to_string();
                let message = if key.contains("secret")
                    || key.contains("token")
                    || key.contains("password")
                {
                    // serde quotes the offending value, which here is a secret.
                    "invalid value (not shown: it is a secret); expected a string".to_string()
                } else {
                    format!(
                        "{}; see config/pointsd.example.toml for the expected type",
                        e.message().trim()
                    )
                };
                problems.push(Problem { key, message });
                Err(invalid(problems))
            }
        }
    }

    /// Reads and parses a file; `env` is usually `std::env::vars()`.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse(&text, env, &path.display().to_string())?;
        cfg.read_secret_files()
            .map_err(|problems| ConfigError::Invalid {
                origin: path.display().to_string(),
                problems,
            })?;
        Ok(cfg)
    }

    /// Fills each secret from its `*_file` key when that is set (`client_secret`, the
    /// easyPoints `secret_key`, the telemetry's bearer token and password); every problem
    /// names its key.
    pub fn read_secret_files(&mut self) -> Result<(), Vec<Problem>> {
        let mut problems: Vec<Problem> = self
            .telemetry
            .read_secret_files()
            .into_iter()
            .map(|(key, message)| Problem { key, message })
            .collect();
        if let Some(sm) = self.upstream.smaregi.as_mut()
            && let Some(file) = sm.client_secret_file.clone()
            && let Err(p) = read_secret_file(
                "upstream.smaregi.client_secret_file",
                "client_secret",
                &file,
                &mut sm.client_secret,
            )
        {
            problems.push(p);
        }
        if let Some(ep) = self.easypoints.as_mut()
            && let Some(file) = ep.secret_key_file.clone()
            && let Err(p) = read_secret_file(
                "easypoints.secret_key_file",
                "secret_key",
                &file,
                &mut ep.secret_key,
            )
        {
            problems.push(p);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Reads one secret from `file` into `secret`, which must not be set as well.
fn read_secret_file(
    key: &str,
    what: &str,
    file: &Path,
    secret: &mut Secret,
) -> Result<(), Problem> {
    let problem = |message: String| Problem {
        key: key.to_string(),
        message,
    };
    if !secret.is_empty() {
        return Err(problem(format!("set {what} or {what}_file, not both")));
    }
    match std::fs::read_to_string(file) {
        Ok(t) if !t.trim().is_empty() => {
            *secret = Secret::new(t.trim().to_string());
            Ok(())
        }
        Ok(_) => Err(problem(format!(
            "{} is empty; put the {} in it",
            file.display(),
            what.replace('_', " ")
        ))),
        Err(e) => Err(problem(format!(
            "cannot read {}: {e}; check the path and that the pointsd user may read it",
            file.display()
        ))),
    }
}

impl Problem {
    fn with_span(mut self, text: &str, span: Option<std::ops::Range<usize>>) -> Problem {
        if let Some(span) = span {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            self.message = format!("{} (line {line})", self.message);
        }
        self
    }
}

/// `POINTSD_A__B=v` sets `a.b = v`. The value is typed by the key's default: a key whose
/// default is a number or boolean reads the value as TOML, every other key takes it as a plain
/// string (so a digits-only store id or secret stays a string, and needs no quoting).
fn apply_env_overrides(table: &mut toml::Table, env: &BTreeMap<String, String>) {
    // Optional sections are typed by their own defaults too (`POINTSD_EASYPOINTS__SETTLE_S=60`).
    let defaults = toml::Value::try_from(Config {
        easypoints: Some(Default::default()),
        ..Config::default()
    })
    .ok();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let mut default = defaults.as_ref();
        for part in &path {
            default = default.and_then(|d| d.get(part));
        }
        let scalar = matches!(
            default,
            Some(toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))
        );
        let value = scalar
            .then(|| {
                toml::from_str::<toml::Table>(&format!("v = {raw}"))
                    .ok()
                    .and_then(|mut t| t.remove("v"))
            })
            .flatten()
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let mut cur = &mut *table;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur.insert(part.clone(), value.clone());
            } else {
                let entry = cur
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(t) => cur = t,
                    _ => break,
                }
            }
        }
    }
}

pub fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Reads, parses and validates the config file at `path` into `Settings`, with warnings about
/// its permissions. Every problem found is in the error.
pub fn load_settings(
    path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<super::Settings, ConfigError> {
    let cfg = Config::load(path, env)?;
    let warnings = super::file_mode_warnings(path, &cfg);
    let mut settings = cfg.validate().map_err(|problems| ConfigError::Invalid {
        origin: path.display().to_string(),
        problems,
    })?;
    settings.warnings.extend(warnings);
    Ok(settings)
}
