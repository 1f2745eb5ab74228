//! `[telemetry]`: where and how the agent pushes its metrics (Prometheus remote write), the
//! rules its keys must keep, and the typed settings the pusher runs on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The `[telemetry]` section. Without `remote_write_url` nothing is pushed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// The receiver's remote-write endpoint, e.g. `https://hq.example/api/v1/write`.
    pub remote_write_url: Option<String>,
    /// Seconds between two snapshots of the metrics (each is one sample per series).
    pub interval_s: u64,
    /// While the receiver cannot be reached, this many minutes of snapshots are kept in memory
    /// and sent oldest first when it returns; older ones are dropped (and counted).
    pub buffer_minutes: u64,
    /// Connect and total timeout of one push.
    pub timeout_ms: u64,
    /// Label `chain` on every series (the store's chain or region), when set.
    pub chain: Option<String>,
    /// `Authorization: Bearer …`; or `bearer_token_file`, or POINTSD_TELEMETRY__BEARER_TOKEN.
    pub bearer_token: Secret,
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic auth (not together with a bearer token).
    pub basic_username: Option<String>,
    pub basic_password: Secret,
    pub basic_password_file: Option<PathBuf>,
    /// Extra labels on every series, e.g. `labels = { region = "kanto" }`.
    pub labels: BTreeMap<String, String>,
    /// Accept an `http://` `remote_write_url` beyond loopback (its credentials would cross
    /// the network in clear text); `config check` refuses it otherwise.
    pub allow_insecure_http: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            remote_write_url: None,
            interval_s: 30,
            buffer_minutes: 30,
            timeout_ms: 10_000,
            chain: None,
            bearer_token: Secret::default(),
            bearer_token_file: None,
            basic_username: None,
            basic_password: Secret::default(),
            basic_password_file: None,
            labels: BTreeMap::new(),
            allow_insecure_http: false,
        }
    }
}

/// How a push authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// A `[telemetry]` that passed its checks, typed.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub url: reqwest::Url,
    pub interval: Duration,
    pub buffer: Duration,
    pub timeout: Duration,
    pub auth: Auth,
    /// `store_id`, `chain` and the extra labels, put on every series.
    pub labels: Vec<(String, String)>,
}

/// Labels pointsd sets itself (or the receiver reserves).
const RESERVED_LABELS: [&str; 3] = ["store_id", "chain", "__name__"];

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !s.starts_with("__")
}

impl TelemetryConfig {
    fn bearer_set(&self) -> bool {
        !self.bearer_token.is_empty() || self.bearer_token_file.is_some()
    }

    fn basic_password_set(&self) -> bool {
        !self.basic_password.is_empty() || self.basic_password_file.is_some()
    }

    /// Every rule broken, as (key, what to do).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut bad = |k: &str, m: String| p.push((format!("telemetry.{k}"), m));
        if let Some(url) = &self.remote_write_url {
            match reqwest::Url::parse(url) {
                Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host().is_none() => bad(
                    "remote_write_url",
                    format!("{url:?} is not an http(s) URL; use e.g. \"https://hq.example/api/v1/write\""),
                ),
                Ok(u) if crate::config::cleartext_beyond_loopback(&u) && !self.allow_insecure_http => bad(
                    "remote_write_url",
                    format!("{url:?} is plain http to a host beyond this PC: the push's credentials would cross the network in clear text; use https, or set telemetry.allow_insecure_http = true to accept the risk"),
                ),
                Ok(u) if !u.username().is_empty() || u.password().is_some() => bad(
                    "remote_write_url",
                    "must not hold credentials; set basic_username and basic_password (or a bearer token) instead".into(),
                ),
                Ok(_) => {}
                Err(_) => bad(
                    "remote_write_url",
                    format!("{url:?} is not a URL; use e.g. \"https://hq.example/api/v1/write\""),
                ),
            }
        }
        if !(1..=3600).contains(&self.interval_s) {
            bad("interval_s", "must be 1..=3600 seconds (default 30)".into());
        }
        if !(1..=1440).contains(&self.buffer_minutes) {
            bad(
                "buffer_minutes",
                "must be 1..=1440 minutes (default 30)".into(),
            );
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            bad("timeout_ms", "must be 1..=60000".into());
        }
        if let Some(chain) = &self.chain
            && !crate::ledger::is_valid_id(chain)
        {
            bad(
                "chain",
                "must be 1-64 printable ASCII characters without spaces".into(),
            );
        }
        let basic = self.basic_username.is_some() || self.basic_password_set();
        if self.bearer_set() && basic {
            bad(
                "bearer_token",
                "set a bearer token or basic auth (basic_username, basic_password), not both"
                    .into(),
            );
        }
        match &self.basic_username {
            Some(u) if u.is_empty() || u.contains(':') => bad(
                "basic_username",
                "must be non-empty and without ':'".into(),
            ),
            Some(_) if !self.basic_password_set() => bad(
                "basic_password",
                "required with basic_username; or set basic_password_file or POINTSD_TELEMETRY__BASIC_PASSWORD".into(),
            ),
            None if self.basic_password_set() => bad(
                "basic_username",
                "required with basic_password".into(),
            ),
            _ => {}
        }
        for (name, value) in &self.labels {
            if !is_label_name(name) {
                bad(
                    &format!("labels.{name}"),
                    "is not a label name: letters, digits and _, not starting with a digit or __"
                        .into(),
                );
            } else if RESERVED_LABELS.contains(&name.as_str()) {
                bad(
                    &format!("labels.{name}"),
                    "is set by pointsd itself (store_id from agent.store_id, chain from telemetry.chain)".into(),
                );
            }
            if value.is_empty() {
                bad(&format!("labels.{name}"), "must not be empty".into());
            }
        }
        p
    }

    /// Reads the secret files named by `*_file` keys into their secrets (before validation,
    /// which then sees the secret as set); each problem names its key.
    pub fn read_secret_files(&mut self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        for (key, file, secret, what) in [
            (
                "telemetry.bearer_token_file",
                &self.bearer_token_file,
                &mut self.bearer_token,
                "bearer token",
            ),
            (
                "telemetry.basic_password_file",
                &self.basic_password_file,
                &mut self.basic_password,
                "password",
            ),
        ] {
            let Some(file) = file else { continue };
            if !secret.is_empty() {
                let file_key = key.trim_start_matches("telemetry.");
                p.push((
                    key.to_string(),
                    format!(
                        "set {} or {file_key}, not both",
                        file_key.trim_end_matches("_file")
                    ),
                ));
                continue;
            }
            match std::fs::read_to_string(file) {
                Ok(t) if !t.trim().is_empty() => *secret = Secret::new(t.trim().to_string()),
                Ok(_) => p.push((
                    key.to_string(),
                    format!("{} is empty; put the {what} in it", file.display()),
                )),
                Err(e) => p.push((
                    key.to_string(),
                    format!(
                        "cannot read {}: {e}; check the path and that the pointsd user may read it",
                        file.display()
                    ),
                )),
            }
        }
        p
    }

    /// True when the section holds a secret inline (the config file must stay private).
    pub fn holds_secret(&self) -> bool {
        (!self.bearer_token.is_empty() && self.bearer_token_file.is_none())
            || (!self.basic_password.is_empty() && self.basic_password_file.is_none())
    }

    /// Typed settings, `None` when no receiver is configured. Call on a checked config.
    pub fn settings(&self, store_id: &str) -> Option<TelemetrySettings> {
        let url = reqwest::Url::parse(self.remote_write_url.as_deref()?).ok()?;
        let auth = if !self.bearer_token.is_empty() {
            Auth::Bearer(self.bearer_token.clone())
        } else if let Some(username) = &self.basic_username {
            Auth::Basic {
                username: username.clone(),
                password: self.basic_password.clone(),
            }
        } else {
            Auth::None
        };
        let mut labels = vec![("store_id".to_string(), store_id.to_string())];
        if let Some(chain) = &self.chain {
            labels.push(("chain".into(), chain.clone()));
        }
        labels.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        Some(TelemetrySettings {
            url,
            interval: Duration::from_secs(self.interval_s),
            buffer: Duration::from_secs(self.buffer_minutes * 60),
            timeout: Duration::from_millis(self.timeout_ms),
            auth,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut TelemetryConfig)) -> Vec<String> {
        let mut c = TelemetryConfig {
            remote_write_url: Some("https://hq.example/api/v1/write".into()),
            ..TelemetryConfig::default()
        };
        f(&mut c);
        c.problems().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn table_of_rules_names_the_key() {
        type Case = (&'static str, fn(&mut TelemetryConfig), &'static str);
        let cases: &[Case] = &[
            ("good", |_| {}, ""),
            (
                "ftp url",
                |c| c.remote_write_url = Some("ftp://hq/x".into()),
                "telemetry.remote_write_url",
            ),
            (
                "not a url",
                |c| c.remote_write_url = Some("hq.example".into()),
                "telemetry.remote_write_url",
            ),
            (
                "credentials in url",
                |c| c.remote_write_url = Some("https://u:p@hq.example/w".into()),
                "telemetry.remote_write_url",
            ),
            ("interval 0", |c| c.interval_s = 0, "telemetry.interval_s"),
            (
                "buffer 0",
                |c| c.buffer_minutes = 0,
                "telemetry.buffer_minutes",
            ),
            (
                "both auth kinds",
                |c| {
                    c.bearer_token = Secret::new("t");
                    c.basic_username = Some("u".into());
                    c.basic_password = Secret::new("p");
                },
                "telemetry.bearer_token",
            ),
            (
                "username without password",
                |c| c.basic_username = Some("u".into()),
                "telemetry.basic_password",
            ),
            (
                "password without username",
                |c| c.basic_password = Secret::new("p"),
                "telemetry.basic_username",
            ),
            (
                "bad label name",
                |c| {
                    c.labels.insert("1x".into(), "v".into());
                },
                "telemetry.labels.1x",
            ),
            (
                "reserved label",
                |c| {
                    c.labels.insert("store_id".into(), "v".into());
                },
                "telemetry.labels.store_id",
            ),
            (
                "chain with a space",
                |c| c.chain = Some("a b".into()),
                "telemetry.chain",
            ),
        ];
        for (name, f, key) in cases {
            let keys = with(f);
            if key.is_empty() {
                assert!(keys.is_empty(), "{name}: {keys:?}");
            } else {
                assert_eq!(keys, vec![key.to_string()], "{name}");
            }
        }
    }

    #[test]
    fn a_secret_and_its_file_together_name_the_file_key() {
        let mut c = TelemetryConfig {
            basic_password: Secret::new("p"),
            basic_password_file: Some("/x".into()),
            ..TelemetryConfig::default()
        };
        let p = c.read_secret_files();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "telemetry.basic_password_file");
        assert_eq!(
            p[0].1,
            "set basic_password or basic_password_file, not both"
        );
    }

    #[test]
    fn a_secret_read_from_its_file_passes_the_rules() {
        let dir = std::env::temp_dir().join(format!("pointsd-telemetry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "tok\n").unwrap();
        let mut c = TelemetryConfig {
            remote_write_url: Some("https://hq.example/api/v1/write".into()),
            bearer_token_file: Some(file),
            ..TelemetryConfig::default()
        };
        assert!(c.read_secret_files().is_empty());
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(matches!(c.settings("s").unwrap().auth, Auth::Bearer(t) if t.expose() == "tok"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_secret_file_names_its_key() {
        let mut c = TelemetryConfig {
            bearer_token_file: Some("/nonexistent/pointsd-token".into()),
            ..TelemetryConfig::default()
        };
        let p = c.read_secret_files();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "telemetry.bearer_token_file");
    }

    #[test]
    fn settings_carry_store_chain_and_extra_labels() {
        let mut c = TelemetryConfig {
            remote_write_url: Some("https://hq.example/api/v1/write".into()),
            chain: Some("kanto".into()),
            basic_username: Some("store".into()),
            basic_password: Secret::new("pw"),
            ..TelemetryConfig::default()
        };
        c.labels.insert("region".into(), "east".into());
        let s = c.settings("store-7").unwrap();
        assert_eq!(
            s.labels,
            vec![
                ("store_id".into(), "store-7".into()),
                ("chain".into(), "kanto".into()),
                ("region".into(), "east".into())
            ]
        );
        assert!(matches!(s.auth, Auth::Basic { .. }));
        assert_eq!(s.interval, Duration::from_secs(30));
        assert_eq!(s.buffer, Duration::from_secs(1800));
        assert!(TelemetryConfig::default().settings("s").is_none());
    }
}
