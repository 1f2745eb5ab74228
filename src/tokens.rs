//! Tokens issued and revoked live: `pointsd token add|list|revoke` keep `tokens.json` in the
//! data dir (only each token's SHA-256, never the token), and the running daemon watches
//! that file and swaps its token set without a restart. A name revoked there switches off a
//! token from the config file as well.
//!
//! Every change is one locked read-modify-write (`modify`): an exclusive lock on
//! `tokens.json.lock`, shared by the API and the CLI, a uniquely named temporary file,
//! fsync, rename, fsync of the directory. The daemon applies the file by its content (a
//! SHA-256 of the bytes), never by its time stamp and length, and reloads are serialized so
//! an older read can never be applied after a newer one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{ApiToken, Role, sha256};

pub const FILE_NAME: &str = "tokens.json";
/// The lock every change holds (the API's and `pointsd token`'s alike).
pub const LOCK_NAME: &str = "tokens.json.lock";
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
    #[error("cannot lock {path}: {source}. Run this as the user pointsd runs as (or with sudo)")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a token named {0:?} exists already; pick another name, or revoke it first")]
    Exists(String),
    #[error(
        "the config file names a token {0:?}; a name the config uses cannot be issued again (even revoked): pick another name"
    )]
    ConfigName(String),
    #[error(
        "token {0:?} is the one making this request; revoke it from another manager token, or with `pointsd token revoke` on the store PC"
    )]
    OwnToken(String),
    #[error(
        "token {0:?} is the last manager token that signs in; issue another manager token first"
    )]
    LastManager(String),
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

/// One change to the data dir's token file: under the exclusive lock shared by the API and
/// the CLI, the file is read, `f` changes it, and it is saved (when `f` succeeds). Returns
/// `f`'s value. Blocking: call it from a blocking thread in async code.
pub fn modify<T, E: From<TokenError>>(
    data_dir: &Path,
    f: impl FnOnce(&mut TokenFile) -> Result<T, E>,
) -> Result<T, E> {
    let lock_path = data_dir.join(LOCK_NAME);
    let lock_err = |source| TokenError::Lock {
        path: lock_path.clone(),
        source,
    };
    let lock = open_lock(&lock_path).map_err(lock_err)?;
    lock.lock().map_err(lock_err)?;
    let file_path = path(data_dir);
    let r = (|| {
        let mut file = TokenFile::load(&file_path)?;
        let v = f(&mut file)?;
        file.save(&file_path)?;
        Ok(v)
    })();
    // Closing the file releases the lock as well; unlocking first says so.
    let _ = lock.unlock();
    r
}

/// The lock file, created empty (it holds nothing secret) or opened as it is; read-only when
/// it belongs to another user (a lock needs no write access).
fn open_lock(p: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(p) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::OpenOptions::new().read(true).open(p)
        }
        r => r,
    }
}

/// Makes a rename in `file`'s directory durable (a no-op where directories cannot be opened).
fn sync_dir(file: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = file.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
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

    /// Written whole to a uniquely named temporary file (owner-only from its creation),
    /// fsynced and renamed over, then the directory fsynced: the daemon never reads half a
    /// file, and a rename that was answered survives a power cut. Call it under the lock
    /// (`modify`), so two writers cannot lose each other's change.
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let err = |source| TokenError::Write {
            path: path.into(),
            source,
        };
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "json.{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let written = (|| {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)?;
            sync_dir(path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(err)
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
        // A config name stays the config's, revoked or not: one name, one device in the audit.
        if config_names.iter().any(|n| n == name) {
            return Err(TokenError::ConfigName(name.into()));
        }
        if self.tokens.iter().any(|t| t.name == name) {
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

    /// A revoke asked by the token `caller` (a manager, through the API): it may not revoke
    /// itself, nor leave no manager token that signs in (two managers revoking each other at
    /// once: the second, checked under the lock, is refused). Nothing changes when refused.
    pub fn revoke_as(
        &mut self,
        name: &str,
        caller: &str,
        config: &[ApiToken],
    ) -> Result<(), TokenError> {
        if name == caller {
            return Err(TokenError::OwnToken(name.into()));
        }
        let names: Vec<String> = config.iter().map(|t| t.name.clone()).collect();
        let mut next = self.clone();
        next.revoke(name, &names)?;
        if !next
            .effective(config)
            .iter()
            .any(|t| t.role == Role::Manager)
        {
            return Err(TokenError::LastManager(name.into()));
        }
        *self = next;
        Ok(())
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

/// The daemon's current tokens, swapped whole when the file's content changes.
pub struct TokenSet {
    config: Vec<ApiToken>,
    current: RwLock<Arc<Vec<ApiToken>>>,
    /// The SHA-256 of the file's bytes last applied (`None`: no file). Held across a reload's
    /// read and apply, so reloads are serialized: each reads the file as it is at its turn,
    /// and an older read cannot overwrite a newer one.
    applied: Mutex<Option<Option<[u8; 32]>>>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The file's content is the one applied last.
    Unchanged,
    /// A new content was applied: this many tokens sign in now.
    Applied {
        tokens: usize,
        issued: usize,
        revoked: usize,
    },
}

impl TokenSet {
    pub fn new(config: Vec<ApiToken>) -> TokenSet {
        TokenSet {
            current: RwLock::new(Arc::new(config.clone())),
            config,
            applied: Mutex::new(None),
        }
    }

    pub fn current(&self) -> Arc<Vec<ApiToken>> {
        // A poisoned lock still holds a whole Arc (it is only ever swapped).
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the data dir's token file and applies it when its content changed since the
    /// last reload. A broken or unreadable file leaves the tokens as they were (error).
    /// Blocking (a small file read); the API calls it after its own change, before answering,
    /// so a 201 token signs in and a 204 token is refused on the very next request.
    pub fn reload(&self, data_dir: &Path) -> Result<Reload, TokenError> {
        let path = path(data_dir);
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(TokenError::Read { path, source }),
        };
        let digest = bytes.as_deref().map(sha256);
        if *applied == Some(digest) {
            return Ok(Reload::Unchanged);
        }
        let file = match &bytes {
            Some(b) => serde_json::from_slice(b).map_err(|source| TokenError::Parse {
                path: path.clone(),
                source,
            })?,
            None => TokenFile::default(),
        };
        let next = Arc::new(file.effective(&self.config));
        let tokens = next.len();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        *applied = Some(digest);
        Ok(Reload::Applied {
            tokens,
            issued: file.tokens.len(),
            revoked: file.revoked.len(),
        })
    }

    /// Applies the file now (before the API serves a request), then watches its content
    /// until `stop`.
    pub async fn watch(self: Arc<Self>, data_dir: PathBuf, stop: CancellationToken) {
        let file = path(&data_dir);
        let mut first = true;
        let mut failing = false;
        loop {
            let set = self.clone();
            let dir = data_dir.clone();
            match tokio::task::spawn_blocking(move || set.reload(&dir)).await {
                Ok(Ok(Reload::Applied {
                    tokens,
                    issued,
                    revoked,
                })) => {
                    failing = false;
                    if !first {
                        tracing::info!(tokens, issued, revoked, file = %file.display(), "tokens reloaded from the token file; no restart needed");
                    }
                }
                Ok(Ok(Reload::Unchanged)) => failing = false,
                // A broken file leaves the tokens as they were; said once, not every poll.
                Ok(Err(e)) => {
                    if !failing {
                        tracing::error!(error = %e, "the token file could not be read; tokens unchanged");
                    }
                    failing = true;
                }
                Err(e) => tracing::error!(error = %e, "the token reload task failed"),
            }
            first = false;
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
            Err(TokenError::ConfigName(_))
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
        // A revoked config name stays the config's: it cannot be issued again.
        assert!(matches!(
            f.issue("register-1", Role::Register, &names),
            Err(TokenError::ConfigName(_))
        ));
    }

    #[test]
    fn a_manager_cannot_revoke_itself_nor_the_last_manager() {
        let cfg = vec![ApiToken {
            name: "boss".into(),
            sha256: sha256(b"boss"),
            role: Role::Manager,
        }];
        let names = vec!["boss".to_string()];
        let mut f = TokenFile::default();
        f.issue("mgr-2", Role::Manager, &names).unwrap();
        f.issue("till", Role::Register, &names).unwrap();
        assert!(matches!(
            f.revoke_as("boss", "boss", &cfg),
            Err(TokenError::OwnToken(_))
        ));
        f.revoke_as("mgr-2", "boss", &cfg).unwrap();
        // Another manager's request, checked after its own token was revoked: refused, as it
        // would leave the store with no manager token.
        let before = serde_json::to_string(&f).unwrap();
        assert!(matches!(
            f.revoke_as("boss", "mgr-2", &cfg),
            Err(TokenError::LastManager(_))
        ));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            before,
            "nothing changed"
        );
        f.revoke_as("till", "boss", &cfg).unwrap();
        assert_eq!(f.effective(&cfg).len(), 1);
    }

    #[test]
    fn changes_are_locked_saved_whole_and_reloaded_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let set = TokenSet::new(Vec::new());
        assert_eq!(
            set.reload(dir.path()).unwrap(),
            Reload::Applied {
                tokens: 0,
                issued: 0,
                revoked: 0
            }
        );
        assert_eq!(set.reload(dir.path()).unwrap(), Reload::Unchanged);
        // Threads issuing at once through the lock: none is lost.
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    modify(&d, |f| f.issue(&format!("t-{i}"), Role::Register, &[])).unwrap()
                })
            })
            .collect();
        let issued: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(matches!(
            set.reload(dir.path()).unwrap(),
            Reload::Applied { tokens: 8, .. }
        ));
        for t in &issued {
            assert!(
                set.current()
                    .iter()
                    .any(|c| c.sha256 == sha256(t.as_bytes()))
            );
        }
        // Two contents of the same length written within one second are both seen.
        modify(dir.path(), |f| f.revoke("t-1", &[])).unwrap();
        assert!(matches!(
            set.reload(dir.path()).unwrap(),
            Reload::Applied { tokens: 7, .. }
        ));
        modify(dir.path(), |f| {
            f.tokens[0].name = "t-x".into();
            Ok::<_, TokenError>(())
        })
        .unwrap();
        assert!(matches!(
            set.reload(dir.path()).unwrap(),
            Reload::Applied { tokens: 7, .. }
        ));
        assert!(set.current().iter().any(|c| c.name == "t-x"));
        // No temporary file is left behind; the file is owner-only.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(path(dir.path())).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }
    }
}
