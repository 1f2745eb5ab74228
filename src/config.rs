//! Configuration: the TOML file, `POINTSD_SECTION__KEY` environment overrides, default paths,
//! and validation into typed values before anything is built.
//!
//! Parsing collects *every* problem (unknown keys, type errors, rule violations) so that
//! `pointsd config check` can print them all at once, each with its key path and a fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rule sections are the ledger's own types; `config` embeds them.
pub use crate::ledger::{EarnConfig, OfflineConfig, Rounding, TierConfig};

/// Prefix of environment variables that override config keys: `POINTSD_SYNC__CONCURRENCY=8`
/// sets `sync.concurrency`. A double underscore separates levels, so single-underscore variables
/// used by the CLI (`POINTSD_CONFIG`, `POINTSD_DATA_DIR`) are never mistaken for keys.
pub const ENV_PREFIX: &str = "POINTSD_";

/// Tokens starting with this (as in config/pointsd.example.toml) are never accepted.
pub const PLACEHOLDER: &str = "change-me";

/// A string that must never reach a log line or an API answer (DESIGN.md §2.9).
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub agent: AgentConfig,
    pub api: ApiConfig,
    pub upstream: UpstreamConfig,
    pub sync: SyncConfig,
    pub offline: OfflineConfig,
    pub earn: EarnConfig,
    pub tiers: Vec<TierConfig>,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Identifies this store; goes with every transaction upstream. Required.
    pub store_id: String,
    /// Where the database and logs live. Default: the OS data directory.
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ApiConfig {
    pub listen: String,
    pub tokens: Vec<TokenConfig>,
    /// How long a look-up waits for a one-customer refresh from upstream before answering
    /// from the cache.
    pub lookup_refresh_budget_ms: u64,
    /// A look-up refreshes the customer from upstream (online only) when the cached figure is
    /// older than this; 0 refreshes on every look-up.
    pub lookup_refresh_after_s: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8765".into(),
            tokens: Vec::new(),
            lookup_refresh_budget_ms: 300,
            lookup_refresh_after_s: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TokenConfig {
    pub name: String,
    pub token: Option<Secret>,
    /// Hex SHA-256 of the token, so the config need not hold the token itself.
    pub token_sha256: Option<String>,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Register,
    /// May also resolve review-queue items.
    Manager,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// The built-in simulator, started in-process and spoken to over loopback HTTP through
    /// the Smaregi adapter.
    #[default]
    Sim,
    Smaregi,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// Explicit proxy URL; the standard `HTTPS_PROXY`/`NO_PROXY` variables are honoured too.
    pub proxy: Option<String>,
    pub smaregi: Option<SmaregiConfig>,
    pub sim: SimConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            kind: UpstreamKind::Sim,
            connect_timeout_ms: 3_000,
            request_timeout_ms: 10_000,
            proxy: None,
            smaregi: None,
            sim: SimConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SmaregiConfig {
    pub contract_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Read the client secret from this file instead (for fleet tools and secret stores).
    pub client_secret_file: Option<PathBuf>,
    /// Production `https://id.smaregi.jp`, sandbox `https://id.smaregi.dev`.
    pub id_base: String,
    /// Production `https://api.smaregi.jp`, sandbox `https://api.smaregi.dev`.
    pub api_base: String,
}

impl Default for SmaregiConfig {
    fn default() -> Self {
        SmaregiConfig {
            contract_id: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            client_secret_file: None,
            id_base: "https://id.smaregi.jp".into(),
            api_base: "https://api.smaregi.jp".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SimConfig {
    /// Number of sample customers the simulator starts with.
    pub customers: u32,
    /// Seed for the sample data, so two runs show the same customers.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            customers: 1_000,
            seed: 42,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SyncConfig {
    /// Full refresh of balances and the customer directory.
    pub pull_interval_s: u64,
    /// How often the link is checked when nothing else talked to the upstream.
    pub probe_interval_s: u64,
    /// A balance older than this is reported `stale` even when online.
    pub stale_after_s: u64,
    /// Write-through budget: within it the register hears "confirmed", else "queued".
    pub online_budget_ms: u64,
    /// Customers synced in parallel.
    pub concurrency: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_multiplier: f64,
    /// Requests per second to the upstream, shared by push, pull and look-up refreshes.
    pub max_requests_per_second: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            pull_interval_s: 300,
            probe_interval_s: 5,
            stale_after_s: 900,
            online_budget_ms: 1_500,
            concurrency: 4,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            backoff_multiplier: 2.0,
            max_requests_per_second: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `pointsd=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
    /// Daily log files kept in the data dir's `logs/`.
    pub retention_files: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            retention_files: 14,
        }
    }
}

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

/// A config that passed validation, with its text fields parsed into typed values.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
    /// Problems that do not stop the daemon but an operator should fix (e.g. file modes).
    pub warnings: Vec<Problem>,
}

impl Settings {
    pub fn sync_durations(&self) -> SyncDurations {
        let s = &self.config.sync;
        SyncDurations {
            pull_interval: Duration::from_secs(s.pull_interval_s),
            probe_interval: Duration::from_secs(s.probe_interval_s),
            stale_after: Duration::from_secs(s.stale_after_s),
            online_budget: Duration::from_millis(s.online_budget_ms),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SyncDurations {
    pub pull_interval: Duration,
    pub probe_interval: Duration,
    pub stale_after: Duration,
    pub online_budget: Duration,
}

/// A register token as the API checks it: only its SHA-256 is kept in memory.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub role: Role,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
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
            |path: serde_ignored::Path<'_>| unknown.push(path.to_string()),
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
                let message = if key.contains("secret") || key.contains("token") {
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

    /// Fills `client_secret` from `client_secret_file` when that is set.
    pub fn read_secret_files(&mut self) -> Result<(), Vec<Problem>> {
        let Some(sm) = self.upstream.smaregi.as_mut() else {
            return Ok(());
        };
        let Some(file) = sm.client_secret_file.clone() else {
            return Ok(());
        };
        let key = "upstream.smaregi.client_secret_file".to_string();
        if !sm.client_secret.is_empty() {
            return Err(vec![Problem {
                key,
                message: "set client_secret or client_secret_file, not both".into(),
            }]);
        }
        match std::fs::read_to_string(&file) {
            Ok(t) if !t.trim().is_empty() => {
                sm.client_secret = Secret::new(t.trim().to_string());
                Ok(())
            }
            Ok(_) => Err(vec![Problem {
                key,
                message: format!("{} is empty; put the client secret in it", file.display()),
            }]),
            Err(e) => Err(vec![Problem {
                key,
                message: format!(
                    "cannot read {}: {e}; check the path and that the pointsd user may read it",
                    file.display()
                ),
            }]),
        }
    }

    /// Checks every rule and returns typed settings, or every problem found.
    pub fn validate(self) -> Result<Settings, Vec<Problem>> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(Problem {
                key: key.to_string(),
                message,
            })
        };

        if self.agent.store_id.trim().is_empty() {
            bad(
                "agent.store_id",
                "required; set it to this store's id, e.g. store_id = \"store-001\"".into(),
            );
        } else if !crate::ledger::is_valid_id(&self.agent.store_id) {
            bad(
                "agent.store_id",
                "must be 1-64 printable ASCII characters without spaces".into(),
            );
        }

        let listen = match self.api.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                bad(
                    "api.listen",
                    format!(
                        "{:?} is not an address:port; use e.g. \"127.0.0.1:8765\" (or \"0.0.0.0:8765\" for the store LAN)",
                        self.api.listen
                    ),
                );
                None
            }
        };

        let mut tokens = Vec::new();
        let mut placeholders = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.api.tokens.iter().enumerate() {
            let key = format!("api.tokens[{i}]");
            if t.name.trim().is_empty() {
                bad(
                    &format!("{key}.name"),
                    "required; name the register, e.g. \"register-1\"".into(),
                );
            } else if !names.insert(t.name.clone()) {
                bad(
                    &format!("{key}.name"),
                    format!("duplicate token name {:?}; names must be unique", t.name),
                );
            }
            match (&t.token, &t.token_sha256) {
                (Some(_), Some(_)) => {
                    bad(&key, "set either token or token_sha256, not both".into())
                }
                (None, None) => bad(
                    &key,
                    "set token = \"...\" or token_sha256 = \"<hex>\"".into(),
                ),
                (Some(tok), None) => {
                    if tok.expose().len() < 16 {
                        bad(&format!("{key}.token"), "too short; use at least 16 random characters (e.g. `openssl rand -hex 16`)".into());
                    } else if tok.expose().starts_with(PLACEHOLDER) {
                        // The example's placeholder would otherwise be a working, published
                        // token on every fresh install: keep it switched off.
                        placeholders.push(Problem {
                            key: format!("{key}.token"),
                            message: format!(
                                "is the example placeholder and is switched off; set a random token (e.g. `openssl rand -hex 16`) for {:?}",
                                t.name
                            ),
                        });
                    } else {
                        tokens.push(ApiToken {
                            name: t.name.clone(),
                            sha256: sha256(tok.expose().as_bytes()),
                            role: t.role,
                        });
                    }
                }
                (None, Some(hexed)) => match hex::decode(hexed.trim()) {
                    Ok(b) if b.len() == 32 => {
                        let mut h = [0u8; 32];
                        h.copy_from_slice(&b);
                        tokens.push(ApiToken {
                            name: t.name.clone(),
                            sha256: h,
                            role: t.role,
                        });
                    }
                    _ => bad(
                        &format!("{key}.token_sha256"),
                        "must be 64 hex characters (sha256sum of the token)".into(),
                    ),
                },
            }
        }
        if self.api.tokens.is_empty() {
            bad(
                "api.tokens",
                "no register token configured; add [[api.tokens]] with name and token".into(),
            );
        }

        let u = &self.upstream;
        if u.connect_timeout_ms == 0 || u.connect_timeout_ms > 60_000 {
            bad("upstream.connect_timeout_ms", "must be 1..=60000".into());
        }
        if u.request_timeout_ms == 0 || u.request_timeout_ms > 300_000 {
            bad("upstream.request_timeout_ms", "must be 1..=300000".into());
        }
        if let Some(proxy) = &u.proxy
            && reqwest::Url::parse(proxy).is_err()
        {
            bad(
                "upstream.proxy",
                format!("{proxy:?} is not a URL; use e.g. \"http://proxy.local:3128\""),
            );
        }
        match (u.kind, &u.smaregi) {
            (UpstreamKind::Smaregi, None) => bad(
                "upstream.smaregi",
                "required when upstream.kind = \"smaregi\"; add contract_id, client_id, client_secret".into(),
            ),
            (_, Some(s)) => {
                for (k, v) in [("contract_id", &s.contract_id), ("client_id", &s.client_id)] {
                    if v.trim().is_empty() && u.kind == UpstreamKind::Smaregi {
                        bad(&format!("upstream.smaregi.{k}"), "required; find it in the Smaregi developers console".into());
                    }
                }
                if s.client_secret.is_empty() && u.kind == UpstreamKind::Smaregi {
                    bad("upstream.smaregi.client_secret", "required; or set POINTSD_UPSTREAM__SMAREGI__CLIENT_SECRET".into());
                }
                for (k, v) in [("id_base", &s.id_base), ("api_base", &s.api_base)] {
                    match reqwest::Url::parse(v) {
                        Ok(url) if url.scheme() == "https" || url.scheme() == "http" => {}
                        _ => bad(&format!("upstream.smaregi.{k}"), format!("{v:?} is not an http(s) URL")),
                    }
                }
            }
            (UpstreamKind::Sim, None) => {}
        }
        if u.sim.customers > 1_000_000 {
            bad("upstream.sim.customers", "must be at most 1000000".into());
        }

        let s = &self.sync;
        if s.pull_interval_s < 10 {
            bad("sync.pull_interval_s", "must be at least 10 seconds".into());
        }
        if s.probe_interval_s == 0 || s.probe_interval_s > 3600 {
            bad("sync.probe_interval_s", "must be 1..=3600".into());
        }
        if s.online_budget_ms > 30_000 {
            bad(
                "sync.online_budget_ms",
                "must be at most 30000 (registers should not wait longer)".into(),
            );
        }
        if s.concurrency == 0 || s.concurrency > 64 {
            bad("sync.concurrency", "must be 1..=64".into());
        }
        if s.backoff_initial_ms == 0 {
            bad("sync.backoff_initial_ms", "must be positive".into());
        }
        if s.backoff_max_ms < s.backoff_initial_ms {
            bad(
                "sync.backoff_max_ms",
                "must be at least sync.backoff_initial_ms".into(),
            );
        }
        if !(s.backoff_multiplier >= 1.0 && s.backoff_multiplier <= 10.0) {
            bad(
                "sync.backoff_multiplier",
                "must be between 1.0 and 10.0".into(),
            );
        }

        if s.max_requests_per_second == 0 || s.max_requests_per_second > 10_000 {
            bad("sync.max_requests_per_second", "must be 1..=10000".into());
        }
        if self.api.lookup_refresh_budget_ms > 5_000 {
            bad(
                "api.lookup_refresh_budget_ms",
                "must be at most 5000 (a cashier is waiting)".into(),
            );
        }

        if self.offline.max_redeem_points < 0 {
            bad("offline.max_redeem_points", "must not be negative".into());
        }
        if self.earn.yen_per_point <= 0 {
            bad(
                "earn.yen_per_point",
                "must be a positive number of yen".into(),
            );
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if t.name.trim().is_empty() {
                bad(&format!("tiers[{i}].name"), "required".into());
            }
            if t.min_points < 0 {
                bad(
                    &format!("tiers[{i}].min_points"),
                    "must not be negative".into(),
                );
            }
        }
        if self.log.retention_files == 0 {
            bad("log.retention_files", "must be at least 1".into());
        }
        // A bare word is a target, not a level, to the filter: "inof" would switch every log
        // line off. Bare words must be levels here.
        let levels = ["off", "error", "warn", "info", "debug", "trace"];
        let bare_non_level =
            self.log.level.split(',').any(|d| {
                !d.contains('=') && !levels.contains(&d.trim().to_ascii_lowercase().as_str())
            });
        if bare_non_level
            || self
                .log
                .level
                .parse::<tracing_subscriber::filter::Targets>()
                .is_err()
        {
            bad(
                "log.level",
                format!(
                    "{:?} is not a log filter; use e.g. \"info\" or \"pointsd=debug,info\"",
                    self.log.level
                ),
            );
        }

        if p.is_empty() {
            Ok(Settings {
                listen: listen.expect("checked above"),
                tokens,
                config: self,
                warnings: placeholders,
            })
        } else {
            Err(p)
        }
    }

    /// True when the file holds something that must stay owner-readable.
    pub fn holds_secret(&self) -> bool {
        self.api.tokens.iter().any(|t| t.token.is_some())
            || self
                .upstream
                .smaregi
                .as_ref()
                .is_some_and(|s| !s.client_secret.is_empty())
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
    let defaults = toml::Value::try_from(Config::default()).ok();
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

/// Permission problems of a config file that holds secrets (Unix only).
pub fn file_mode_warnings(path: &Path, cfg: &Config) -> Vec<Problem> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if cfg.holds_secret()
            && let Ok(meta) = std::fs::metadata(path)
        {
            let mode = meta.permissions().mode() & 0o777;
            // Group access is fine only for the service's own group (the packages install
            // the file as root:pointsd 0640); any other group is too wide for secrets.
            let own_group = group_id("pointsd").is_some_and(|gid| gid == meta.gid());
            let who = if mode & 0o007 != 0 {
                Some("others")
            } else if mode & 0o070 != 0 && !own_group {
                Some("its group")
            } else {
                None
            };
            if let Some(who) = who {
                return vec![Problem {
                    key: "(file)".into(),
                    message: format!(
                        "{} holds secrets and is readable by {who} (mode {mode:03o}); run `chmod 600 {}` (or 640 with group pointsd)",
                        path.display(),
                        path.display()
                    ),
                }];
            }
        }
    }
    let _ = (path, cfg);
    Vec::new()
}

/// A group's id from `/etc/group`, without calling into libc.
#[cfg(unix)]
pub(crate) fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Whether paths follow the system service layout or the current user's folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("jp", "pointsd", "pointsd")
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
        Scope::User => project_dirs()
            .map(|d| d.config_dir().join("pointsd.toml"))
            .unwrap_or_else(|| PathBuf::from("pointsd.toml")),
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
        Scope::User => project_dirs()
            .map(|d| d.data_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("pointsd-data")),
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

pub fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
store_id = "store-001"
[api]
listen = "127.0.0.1:9000"
[[api.tokens]]
name = "register-1"
token = "0123456789abcdef0123"
"#;

    fn parse(text: &str) -> Result<Settings, Vec<Problem>> {
        match Config::parse(text, &BTreeMap::new(), "test") {
            Ok(c) => c.validate(),
            Err(ConfigError::Invalid { problems, .. }) => Err(problems),
            Err(e) => panic!("{e}"),
        }
    }

    fn keys(r: Result<Settings, Vec<Problem>>) -> Vec<String> {
        r.expect_err("should be invalid")
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.config.offline.max_redeem_points, 5000);
        assert_eq!(s.config.earn.yen_per_point, 100);
        assert_eq!(s.config.log.retention_files, 14);
        assert_eq!(s.tokens.len(), 1);
    }

    #[test]
    fn table_of_invalid_configs_names_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[agent]\nstore_id = \"\"", "agent.store_id"),
            ("[api]\nlisten = \"nowhere\"", "api.listen"),
            ("[sync]\nconcurrency = 0", "sync.concurrency"),
            ("[earn]\nyen_per_point = 0", "earn.yen_per_point"),
            (
                "[offline]\nmax_redeem_points = -1",
                "offline.max_redeem_points",
            ),
            ("[upstream]\nkind = \"smaregi\"", "upstream.smaregi"),
            ("[[tiers]]\nname = \"\"\nmin_points = 5", "tiers[0].name"),
            ("[log]\nretention_files = 0", "log.retention_files"),
            ("[log]\nlevel = \"inof\"", "log.level"),
            ("[log]\nlevel = \"pointsd=loud\"", "log.level"),
        ];
        for (extra, key) in cases {
            let text = if extra.starts_with("[agent]") || extra.starts_with("[api]") {
                format!("{extra}\n[[api.tokens]]\nname=\"r\"\ntoken=\"0123456789abcdef0\"\n")
            } else {
                format!("{GOOD}\n{extra}\n")
            };
            let ks = keys(parse(&text));
            assert!(
                ks.iter().any(|k| k == key),
                "{extra:?}: expected {key} in {ks:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_all_reported() {
        let text = format!("{GOOD}\n[offline]\nallow_redeam = true\n[sync]\nconcurency = 2\n");
        let ks = keys(parse(&text));
        assert!(ks.contains(&"offline.allow_redeam".to_string()), "{ks:?}");
        assert!(ks.contains(&"sync.concurency".to_string()), "{ks:?}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let ks = keys(parse(&format!("{GOOD}\n[sync]\nconcurrency = \"four\"\n")));
        assert_eq!(ks, vec!["sync.concurrency".to_string()]);
    }

    #[test]
    fn several_rule_problems_at_once() {
        let text = "[api]\nlisten = \"x\"\n[sync]\nconcurrency = 0\n";
        let ks = keys(parse(text));
        for k in [
            "agent.store_id",
            "api.listen",
            "api.tokens",
            "sync.concurrency",
        ] {
            assert!(ks.contains(&k.to_string()), "{k} missing from {ks:?}");
        }
    }

    #[test]
    fn env_overrides_set_nested_keys() {
        let mut env = BTreeMap::new();
        env.insert("POINTSD_SYNC__CONCURRENCY".into(), "9".into());
        env.insert("POINTSD_AGENT__STORE_ID".into(), "store-env".into());
        env.insert("POINTSD_DATA_DIR".into(), "/ignored".into());
        let c = Config::parse(GOOD, &env, "t").unwrap();
        assert_eq!(c.sync.concurrency, 9);
        assert_eq!(c.agent.store_id, "store-env");
        assert!(c.agent.data_dir.is_none());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = parse(GOOD).unwrap();
        let dbg = format!("{:?}", s);
        assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
    }

    #[test]
    fn token_sha256_is_accepted() {
        let h = hex::encode(sha256(b"some-long-register-token"));
        let text =
            format!("[agent]\nstore_id=\"s\"\n[[api.tokens]]\nname=\"r\"\ntoken_sha256=\"{h}\"\n");
        let s = parse(&text).unwrap();
        assert_eq!(s.tokens[0].sha256, sha256(b"some-long-register-token"));
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
