//! Tokens issued and revoked live: `pointsd token add|list|revoke` keep `tokens.json` in the
//! data dir (only each token's SHA-256, never the token), and the running daemon watches
//! that file and swaps its token set without a restart. A name revoked there switches off a
//! token from the config file as well.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{ApiToken, Role, sha256};

pub const FILE_NAME: &str = "tokens.json";
/// How often the daemon looks at the file (a stat; it is read only when it changed).
pub const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a token file ({source}); restore it from a backup or delete it and issue the tokens again"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}. Run this as the user pointsd runs as (or with sudo)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a token named {0:?} exists already; pick another name, or revoke it first")]
    Exists(String),
    #[error("no token named {0:?}; `pointsd token list` shows the names")]
    Unknown(String),
    #[error("{0:?} is not a token name: use 1-64 letters, digits, '-', '_' or '.'")]
    BadName(String),
}

/// One issued token, as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
}

/// `tokens.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    #[serde(default)]
    pub tokens: Vec<Issued>,
    /// Names of config-file tokens switched off.
    #[serde(default)]
    pub revoked: Vec<String>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

impl TokenFile {
    /// The file, or an empty one when there is none yet.
    pub fn load(path: &Path) -> Result<TokenFile, TokenError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| TokenError::Parse {
                path: path.into(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(source) => Err(TokenError::Read {
                path: path.into(),
                source,
            }),
        }
    }

    /// Written whole to a temporary file and renamed over, owner-only: the daemon never
    /// reads half a file.
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let err = |source| TokenError::Write {
            path: path.into(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("plain struct serializes");
        std::fs::write(&tmp, text).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Issues a new random token (256 bits, base64url) named `name`; returns it. Only its
    /// digest is kept. `config_names` are the names the config file already uses.
    pub fn issue(
        &mut self,
        name: &str,
        role: Role,
        config_names: &[String],
    ) -> Result<String, TokenError> {
        if !crate::ledger::is_valid_id(name)
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(TokenError::BadName(name.into()));
        }
        let in_config =
            config_names.iter().any(|n| n == name) && !self.revoked.iter().any(|n| n == name);
        if in_config || self.tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::Exists(name.into()));
        }
        use base64::Engine;
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.tokens.push(Issued {
            name: name.into(),
            sha256: hex::encode(sha256(token.as_bytes())),
            role,
            created_at: now,
        });
        Ok(token)
    }

    /// Revokes the token `name`: an issued one is deleted, a config one is switched off.
    pub fn revoke(&mut self, name: &str, config_names: &[String]) -> Result<(), TokenError> {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        if self.tokens.len() < before {
            return Ok(());
        }
        if config_names.iter().any(|n| n == name) && !self.revoked.iter().any(|n| n == name) {
            self.revoked.push(name.into());
            return Ok(());
        }
        Err(TokenError::Unknown(name.into()))
    }

    /// The tokens that sign in: the config's, less the revoked names, and the issued ones.
    pub fn effective(&self, config: &[ApiToken]) -> Vec<ApiToken> {
        let mut out: Vec<ApiToken> = config
            .iter()
            .filter(|t| !self.revoked.contains(&t.name))
            .cloned()
            .collect();
        for t in &self.tokens {
            let mut h = [0u8; 32];
            match hex::decode(&t.sha256) {
                Ok(b) if b.len() == 32 => h.copy_from_slice(&b),
                _ => {
                    tracing::warn!(name = %t.name, "tokens.json: a token's sha256 is not 64 hex characters; it is ignored");
                    continue;
                }
            }
            out.push(ApiToken {
                name: t.name.clone(),
                sha256: h,
                role: t.role,
            });
        }
        out
    }
}

/// The daemon's current tokens, swapped whole when the file changes.
pub struct TokenSet {
    config: Vec<ApiToken>,
    current: RwLock<Arc<Vec<ApiToken>>>,
}

impl TokenSet {
    pub fn new(config: Vec<ApiToken>) -> TokenSet {
        TokenSet {
            current: RwLock::new(Arc::new(config.clone())),
            config,
        }
    }

    pub fn current(&self) -> Arc<Vec<ApiToken>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn apply(&self, file: &TokenFile) -> usize {
        let next = Arc::new(file.effective(&self.config));
        let n = next.len();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        n
    }

    /// Applies the data dir's token file now (before the API serves a request); a broken
    /// file leaves the config's tokens.
    pub fn load_now(&self, data_dir: &Path) -> Result<usize, TokenError> {
        let f = TokenFile::load(&path(data_dir))?;
        Ok(self.apply(&f))
    }

    /// Loads the file once now, then watches it until `stop`.
    pub async fn watch(self: Arc<Self>, data_dir: PathBuf, stop: CancellationToken) {
        let path = path(&data_dir);
        let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        let mut seen = None;
        let mut first = true;
        loop {
            let now = stamp(&path);
            if first || now != seen {
                match TokenFile::load(&path) {
                    Ok(f) => {
                        let n = self.apply(&f);
                        if !first || now.is_some() {
                            tracing::info!(tokens = n, issued = f.tokens.len(), revoked = f.revoked.len(), file = %path.display(), "tokens reloaded from the token file; no restart needed");
                        }
                    }
                    // A broken file leaves the tokens as they were.
                    Err(e) => {
                        tracing::error!(error = %e, "the token file could not be read; tokens unchanged")
                    }
                }
                seen = now;
                first = false;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_list_revoke() {
        let cfg = vec![ApiToken {
            name: "register-1".into(),
            sha256: sha256(b"cfg"),
            role: Role::Register,
        }];
        let names = vec!["register-1".to_string()];
        let mut f = TokenFile::default();
        let t = f.issue("ipad-2", Role::Manager, &names).unwrap();
        assert!(t.len() >= 43, "256 bits in base64url");
        assert!(crate::config::token_weakness(&t).is_none());
        assert!(matches!(
            f.issue("ipad-2", Role::Register, &names),
            Err(TokenError::Exists(_))
        ));
        assert!(matches!(
            f.issue("register-1", Role::Register, &names),
            Err(TokenError::Exists(_))
        ));
        assert!(matches!(
            f.issue("bad name", Role::Register, &names),
            Err(TokenError::BadName(_))
        ));
        let eff = f.effective(&cfg);
        assert_eq!(eff.len(), 2);
        assert!(eff.iter().any(|e| e.name == "ipad-2"
            && e.sha256 == sha256(t.as_bytes())
            && e.role == Role::Manager));
        assert!(
            !serde_json::to_string(&f).unwrap().contains(&t),
            "only the digest is kept"
        );

        f.revoke("ipad-2", &names).unwrap();
        f.revoke("register-1", &names).unwrap();
        assert!(f.effective(&cfg).is_empty());
        assert!(matches!(
            f.revoke("register-1", &names),
            Err(TokenError::Unknown(_))
        ));
        assert!(matches!(
            f.revoke("nobody", &names),
            Err(TokenError::Unknown(_))
        ));
    }
}
