//! `pointsd doctor`: one run that checks an installation and says, line by line, what is OK,
//! what to watch (WARN) and what is broken (FAIL), each with the fix. Read-only: it opens the
//! database read-only and never starts the daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{ConfigError, Settings, UpstreamKind};
use crate::upstream::smaregi::Smaregi;
use crate::upstream::{FailureClass, StorePoints, TxnQuery, Upstream, UpstreamError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub level: Level,
    pub name: &'static str,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            level: Level::Ok,
            name,
            message: message.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            level: Level::Warn,
            name,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            level: Level::Fail,
            name,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn line(&self) -> String {
        let tag = match self.level {
            Level::Ok => "OK  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        match &self.fix {
            Some(fix) => format!("{tag} {:<12} {} — fix: {fix}", self.name, self.message),
            None => format!("{tag} {:<12} {}", self.name, self.message),
        }
    }
}

pub struct DoctorInput {
    pub config_path: PathBuf,
    /// The validated settings, or every problem found.
    pub settings: Result<Settings, ConfigError>,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
}

/// Runs every check. The caller exits non-zero if any is `Fail`.
pub async fn run(input: DoctorInput) -> Vec<Check> {
    let mut out = Vec::new();
    let settings = match input.settings {
        Ok(s) => {
            out.push(Check::ok(
                "config",
                format!(
                    "{} is valid (store {})",
                    input.config_path.display(),
                    s.config.agent.store_id
                ),
            ));
            s
        }
        Err(e) => {
            out.push(Check::fail(
                "config",
                e.to_string().replace('\n', " "),
                format!(
                    "correct the keys named above, then run `pointsd config check --config {}`",
                    input.config_path.display()
                ),
            ));
            // Without a valid config the remaining checks would guess; the directories can
            // still be checked.
            out.push(dir_check("data dir", &input.data_dir));
            out.push(dir_check("log dir", &input.log_dir));
            return out;
        }
    };
    if !settings.warnings.iter().any(|w| w.key == "(file)") {
        out.push(Check::ok(
            "permissions",
            "config file is not readable by others",
        ));
    }
    for w in &settings.warnings {
        let name = if w.key == "(file)" {
            "permissions"
        } else {
            "config"
        };
        out.push(Check {
            level: Level::Warn,
            name,
            message: w.to_string(),
            fix: None,
        });
    }
    let data_ok = dir_check("data dir", &input.data_dir);
    let data_writable = data_ok.level == Level::Ok;
    out.push(data_ok);
    if data_writable {
        out.extend(database_checks(&input.data_dir.join("pointsd.db")));
    }
    if data_writable {
        out.push(disk_check(
            settings.config.storage.min_free_mb,
            &input.data_dir,
        ));
    }
    out.push(backup_check(
        &settings.config.backup,
        &input.data_dir,
        time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
    ));
    out.push(listen_check(settings.listen, settings.config.api.tls.is_some()).await);
    if let Some(tls) = &settings.config.api.tls {
        out.push(tls_check(
            tls,
            &input.data_dir,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        ));
    }
    let (upstream, live) = upstream_checks(&settings).await;
    out.extend(upstream);
    out.push(granting_check(
        &settings,
        live,
        &input.data_dir.join("pointsd.db"),
    ));
    out.extend(easypoints_checks(&settings, &input.data_dir.join("pointsd.db")).await);
    out.push(dir_check("log dir", &input.log_dir));
    out
}

/// Free space on the data dir's file system against `[storage] min_free_mb`.
fn disk_check(min_free_mb: u64, data_dir: &Path) -> Check {
    let floor = crate::store::floor::DiskFloor::new(min_free_mb);
    match floor.measure(data_dir) {
        Ok(s) if s.below_floor => Check::warn(
            "disk",
            format!(
                "{} MB free in {}, below [storage] min_free_mb = {min_free_mb}: registers' writes are refused (507)",
                s.free_mb.unwrap_or(0),
                data_dir.display()
            ),
            "free space on that disk (writes resume by themselves), or move the data dir to a larger disk",
        ),
        Ok(s) => Check::ok(
            "disk",
            format!(
                "{} MB free in the data dir (floor {min_free_mb} MB)",
                s.free_mb.unwrap_or(0)
            ),
        ),
        Err(e) => Check::warn(
            "disk",
            format!("cannot measure free space in {}: {e}", data_dir.display()),
            "check that the data dir exists and is readable",
        ),
    }
}

/// The last backup (`last-backup.json` in the data dir): none while a database exists, or
/// one older than two `[backup] interval_s`, is a WARN with the fix.
fn backup_check(cfg: &crate::config::BackupConfig, data_dir: &Path, now_ms: i64) -> Check {
    use crate::store::backup::LastBackup;
    if !data_dir.join("pointsd.db").exists() {
        return Check::ok("backup", "no database yet: nothing to back up");
    }
    let fix_schedule = match &cfg.dir {
        Some(d) => format!(
            "check that {} exists and is writable by the pointsd user (GET /v1/status shows backup.last_error), or run `pointsd backup`",
            d.display()
        ),
        None => "set [backup] dir to another disk, a USB stick or a share (the daemon then backs up every interval_s), or run `pointsd backup --to FILE`".to_string(),
    };
    let last = LastBackup::load(data_dir);
    let Some(at) = last.success_at_ms else {
        return Check::warn(
            "backup",
            "the database has never been backed up: a dead disk would take every queued transaction with it",
            fix_schedule,
        );
    };
    let age_s = (now_ms - at).max(0) / 1000;
    let limit_s = 2 * cfg.interval_s as i64;
    let path = last
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if age_s > limit_s {
        return Check::warn(
            "backup",
            format!(
                "the last good backup ({path}) is {} h old, more than two intervals ({} s each)",
                age_s / 3600,
                cfg.interval_s
            ),
            fix_schedule,
        );
    }
    let failing = if last.last_ok == Some(false) {
        format!(
            "; the last attempt failed: {}",
            last.last_error.unwrap_or_default()
        )
    } else {
        String::new()
    };
    if !failing.is_empty() {
        return Check::warn(
            "backup",
            format!("last good backup {path}, {age_s} s ago{failing}"),
            fix_schedule,
        );
    }
    Check::ok(
        "backup",
        format!(
            "last good backup {path} ({} bytes), {age_s} s ago",
            last.bytes.unwrap_or(0)
        ),
    )
}

/// Warn this long before a certificate expires: time to renew it or put the new one on the
/// devices.
const CERT_WARN_DAYS: i64 = 30;

/// The served certificate: its fingerprint (to compare with a device's pin) and expiry.
fn tls_check(tls: &crate::config::TlsConfig, data_dir: &Path, now_unix: i64) -> Check {
    match crate::api::tls::inspect(tls, data_dir) {
        Ok(info) => cert_expiry_check(&info, now_unix),
        Err(_) if tls.generate => Check::ok(
            "tls",
            "a self-signed certificate is made at the first start (api.tls.generate = true)",
        ),
        Err(e) => Check::fail(
            "tls",
            e.to_string(),
            "point api.tls.cert_file and key_file at readable PEM files, or set generate = true with names",
        ),
    }
}

fn cert_expiry_check(info: &crate::api::tls::CertInfo, now_unix: i64) -> Check {
    let days_left = (info.not_after_unix - now_unix).div_euclid(86_400);
    let what = format!(
        "certificate {} (SHA-256 fingerprint {}) valid until {}",
        info.cert_file.display(),
        info.fingerprint_sha256,
        info.not_after
    );
    let renew = if info.generated {
        "delete the data dir's tls/ folder and restart: a new certificate is made; then put it on every device again"
    } else {
        "renew the certificate at api.tls.cert_file and restart pointsd"
    };
    if days_left < 0 {
        Check::fail("tls", format!("{what}: EXPIRED"), renew)
    } else if days_left < CERT_WARN_DAYS {
        Check::warn("tls", format!("{what}: expires in {days_left} days"), renew)
    } else {
        Check::ok("tls", what)
    }
}

/// A Smapify merchant's easyPoints: the credentials (one read), and what the running daemon
/// last found about Smapify carrying this store's changes.
async fn easypoints_checks(settings: &Settings, db: &Path) -> Vec<Check> {
    use crate::upstream::easypoints::{EasyPoints, EasyPointsError};
    let Some(ep) = settings.easypoints.clone() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if settings.config.upstream.kind == UpstreamKind::Sim {
        out.push(Check::ok(
            "easypoints",
            "built-in simulator (upstream.kind = \"sim\"); nothing to reach",
        ));
    } else {
        let base = ep.api_base.clone();
        let read = match EasyPoints::new(ep) {
            Ok(c) => c.allotments(None, 1).await.map(|_| ()),
            Err(e) => Err(e),
        };
        out.push(match read {
            Ok(()) => Check::ok(
                "easypoints",
                format!("{base} accepts the credentials (pointsd only reads there)"),
            ),
            Err(e @ EasyPointsError::Auth(_)) => Check::fail(
                "easypoints",
                e.to_string(),
                "copy public_key and secret_key again from the easyPoints app's settings (API credentials)",
            ),
            Err(e) => Check::warn(
                "easypoints",
                e.to_string(),
                "check the network path to easyPoints (proxy, firewall) and easypoints.api_base",
            ),
        });
    }
    let verdict = crate::store::inspect::meta_readonly(db, crate::store::Meta::SmapifyCheck)
        .and_then(|j| serde_json::from_str::<crate::sync::SmapifyCheck>(&j).ok());
    match verdict {
        Some(c) if c.carrying == Some(false) => out.push(Check::warn(
            "smapify",
            format!(
                "{} (checked {}: none of {} recent change(s) of this store arrived)",
                crate::sync::SMAPIFY_NOT_CARRYING,
                c.checked_at,
                c.deltas
            ),
            "in the Smapify app, check that point sync is switched on; then `pointsd reconcile --ledgers`",
        )),
        Some(c) if c.carrying == Some(true) => out.push(Check::ok(
            "smapify",
            format!("Smapify carries this store's changes to easyPoints (checked {})", c.checked_at),
        )),
        _ => {}
    }
    out
}

fn dir_check(name: &'static str, dir: &Path) -> Check {
    let probe = dir.join(".pointsd-doctor-probe");
    let r = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"probe"))
        .and_then(|_| std::fs::remove_file(&probe));
    match r {
        Ok(()) => Check::ok(name, format!("{} is writable", dir.display())),
        Err(e) => Check::fail(
            name,
            format!("{} is not writable: {e}", dir.display()),
            "create it and give the user pointsd runs as write access (the service units do this), or point --data-dir elsewhere",
        ),
    }
}

fn database_checks(db: &Path) -> Vec<Check> {
    if !db.exists() {
        return vec![Check::ok(
            "database",
            format!(
                "{} does not exist yet; it is created at first start",
                db.display()
            ),
        )];
    }
    use crate::store::inspect::InspectError;
    let ins = match crate::store::inspect::inspect_readonly(db) {
        Ok(i) => i,
        Err(InspectError::Open(e)) => {
            return vec![Check::fail(
                "database",
                format!("cannot open {}: {e}", db.display()),
                "check the file's owner and mode (the service user must own it)",
            )];
        }
        Err(e) => {
            return vec![Check::fail(
                "database",
                format!("{} is not a readable pointsd database: {e}", db.display()),
                "stop pointsd, keep the file for support, restore a backup",
            )];
        }
    };
    let mut out = Vec::new();
    let check: Result<(i64, String), InspectError> =
        Ok((ins.schema_version, ins.quick_check.clone()));
    match check {
        Ok((v, _)) if v > crate::store::schema::known_version() => out.push(Check::fail(
            "database",
            format!(
                "{} has schema version {v}, newer than this pointsd knows",
                db.display()
            ),
            "install the pointsd version that wrote it (nothing was changed)",
        )),
        Ok((_, c)) if c == "ok" => out.push(Check::ok(
            "database",
            format!("{} passes PRAGMA quick_check", db.display()),
        )),
        Ok((_, c)) => out.push(Check::fail(
            "database",
            format!("{} failed its integrity check: {c}", db.display()),
            "stop pointsd, keep the file for support, restore a backup",
        )),
        Err(e) => out.push(Check::fail(
            "database",
            format!("{} is not a readable pointsd database: {e}", db.display()),
            "stop pointsd, keep the file for support, restore a backup",
        )),
    }
    if out[0].level != Level::Ok {
        return out;
    }
    let now = crate::clock::SystemClock;
    let now = crate::clock::Clock::now_ms(&now);
    let q = ins.queue;
    match q {
        Ok((oldest, review)) => {
            let age = oldest.map(|t| (now - t) / 1000);
            match age {
                Some(a) if a > 3600 => out.push(Check::warn(
                    "queue",
                    format!("the oldest unsynced transaction is {} min old", a / 60),
                    "check the upstream checks below and `pointsd status`; the queue drains by itself once the upstream accepts it",
                )),
                Some(a) => out.push(Check::ok("queue", format!("oldest unsynced transaction {a} s old"))),
                None => out.push(Check::ok("queue", "nothing waiting to sync")),
            }
            if review > 0 {
                out.push(Check::warn(
                    "review",
                    format!("{review} transaction(s) need a person's decision"),
                    "`pointsd review list`, then `pointsd review resolve`",
                ));
            }
        }
        Err(e) => out.push(Check::warn(
            "queue",
            format!("cannot read the queue: {e}"),
            "see the database check",
        )),
    }
    out
}

async fn listen_check(addr: SocketAddr, tls: bool) -> Check {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            drop(l);
            Check::ok("listen", format!("{addr} is free"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let host = if addr.ip().is_unspecified() {
                SocketAddr::new([127, 0, 0, 1].into(), addr.port())
            } else {
                addr
            };
            // Over HTTPS any certificate will do: this only asks whether the port answers
            // like pointsd, and sends no token.
            let scheme = if tls { "https" } else { "http" };
            let ours = crate::http_client_builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .danger_accept_invalid_certs(tls)
                .build()
                .ok()
                .map(|c| c.get(format!("{scheme}://{host}/v1/health")).send());
            let is_pointsd = match ours {
                Some(fut) => match fut.await {
                    Ok(r) => r
                        .text()
                        .await
                        .is_ok_and(|t| t.contains("\"status\":\"ok\"")),
                    Err(_) => false,
                },
                None => false,
            };
            if is_pointsd {
                Check::ok("listen", format!("{addr} is in use by a running pointsd"))
            } else {
                Check::fail(
                    "listen",
                    format!("{addr} is taken by another program"),
                    "stop that program or change api.listen",
                )
            }
        }
        Err(e) => Check::fail(
            "listen",
            format!("cannot listen on {addr}: {e}"),
            "use an address of this machine in api.listen (127.0.0.1 or 0.0.0.0)",
        ),
    }
}

fn proxy_in_use(settings: &Settings) -> Option<String> {
    let from_env = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    settings
        .config
        .upstream
        .proxy
        .clone()
        .or(from_env)
        .map(|p| match reqwest::Url::parse(&p) {
            // Proxy URLs may carry a password: show host and port only.
            Ok(u) => format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                u.port_or_known_default().unwrap_or(0)
            ),
            Err(_) => "(unparsable proxy setting)".into(),
        })
}

/// The store's point conditions as doctor read them now (None: not read).
type LiveStorePoints = Option<Result<Option<StorePoints>, UpstreamError>>;

/// Who grants points for a purchase (DESIGN.md §14): the store's point conditions read now
/// (else as the daemon last kept them) against `[earn] granted_by`.
fn granting_check(settings: &Settings, live: LiveStorePoints, db: &Path) -> Check {
    use crate::sync::granting::{BOTH_GRANT, GrantSource, Granter, StoreReading, decide};
    let cfg = &settings.config;
    let store_id = cfg.agent.smaregi_store_id.clone();
    let mut read_now = false;
    let reading = match (&store_id, live) {
        (Some(id), Some(Ok(Some(sp)))) => {
            read_now = true;
            Some(StoreReading {
                store_id: id.clone(),
                point_use_division: sp.point_use_division,
                read_at_ms: 0,
            })
        }
        (Some(id), Some(Ok(None))) => {
            return Check::fail(
                "granting",
                format!("Smaregi knows no store {id} (agent.smaregi_store_id)"),
                "set agent.smaregi_store_id to this store's id in Smaregi (店舗ID, shown in the back office's store list)",
            );
        }
        (Some(_), Some(Err(e @ UpstreamError::MissingScope { .. }))) => {
            return Check::warn(
                "granting",
                format!("cannot read the store's point conditions: {e}"),
                "grant the app pos.stores:read in the Smaregi developer console, or set [earn] granted_by to \"register\" or \"pointsd\"",
            );
        }
        _ => crate::store::inspect::meta_readonly(db, crate::store::Meta::StorePoints)
            .and_then(|j| serde_json::from_str::<StoreReading>(&j).ok()),
    };
    let (granter, source, warning, both) =
        decide(cfg.earn.granted_by, store_id.as_deref(), reading.as_ref());
    if both {
        return Check::fail(
            "granting",
            warning.unwrap_or_else(|| BOTH_GRANT.into()),
            "set [earn] granted_by = \"auto\" (pointsd then leaves granting to the register), or turn the store's points off in Smaregi's point conditions (使用しない) if pointsd is to grant",
        );
    }
    if let Some(w) = warning {
        let fix = if store_id.is_none() {
            "set agent.smaregi_store_id = \"<店舗ID>\" (the store's id in Smaregi) so pointsd can read whether the register grants"
        } else {
            "let the daemon reach Smaregi (it reads the store at start and hourly), or set [earn] granted_by"
        };
        return Check::warn("granting", w, fix);
    }
    let from = match source {
        GrantSource::Smaregi if read_now => "the store's point conditions in Smaregi, read now",
        GrantSource::Smaregi => "the store's point conditions in Smaregi, as last read",
        GrantSource::Config => "[earn] granted_by",
        GrantSource::Unchecked => "unchecked",
    };
    Check::ok(
        "granting",
        match granter {
            Granter::Register => format!(
                "the Smaregi register grants points for purchases; pointsd grants none (from {from})"
            ),
            Granter::Pointsd => {
                format!("pointsd grants points for purchases (from {from})")
            }
        },
    )
}

async fn upstream_checks(settings: &Settings) -> (Vec<Check>, LiveStorePoints) {
    let u = &settings.config.upstream;
    let Some(sm) = u
        .smaregi
        .clone()
        .filter(|_| u.kind == UpstreamKind::Smaregi)
    else {
        return (
            vec![Check::ok(
                "upstream",
                "built-in simulator (upstream.kind = \"sim\"); nothing to reach",
            )],
            None,
        );
    };
    let mut out = Vec::new();
    let proxy = proxy_in_use(settings);
    out.push(Check::ok(
        "proxy",
        match &proxy {
            Some(p) => format!("using proxy {p}"),
            None => "no proxy configured (direct connection)".into(),
        },
    ));
    let connect = settings.connect_timeout;
    for (key, base) in [("id_base", &sm.id_base), ("api_base", &sm.api_base)] {
        let Ok(url) = reqwest::Url::parse(base) else {
            continue;
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        if proxy.is_none() {
            match tokio::time::timeout(connect, tokio::net::lookup_host((host.as_str(), port)))
                .await
            {
                Ok(Ok(mut addrs)) => match addrs.next() {
                    Some(a) => {
                        out.push(Check::ok(
                            "dns",
                            format!("{host} ({key}) resolves to {}", a.ip()),
                        ));
                        match tokio::time::timeout(connect, tokio::net::TcpStream::connect(a)).await {
                            Ok(Ok(_)) => out.push(Check::ok("tcp", format!("{a} accepts connections"))),
                            Ok(Err(e)) => out.push(Check::fail(
                                "tcp",
                                format!("cannot connect to {host}:{port}: {e}"),
                                "check the store's internet connection and firewall (outbound TCP to this port)",
                            )),
                            Err(_) => out.push(Check::fail(
                                "tcp",
                                format!("no answer from {host}:{port} within {} ms", connect.as_millis()),
                                "check the internet connection, firewall, or whether a proxy is required (upstream.proxy)",
                            )),
                        }
                    }
                    None => out.push(Check::fail(
                        "dns",
                        format!("{host} has no address"),
                        "check the host name in the config",
                    )),
                },
                Ok(Err(e)) => out.push(Check::fail(
                    "dns",
                    format!("cannot resolve {host} ({key}): {e}"),
                    "check the host name, the machine's DNS settings and internet connection",
                )),
                Err(_) => out.push(Check::fail(
                    "dns",
                    format!(
                        "resolving {host} took longer than {} ms",
                        connect.as_millis()
                    ),
                    "check the machine's DNS settings",
                )),
            }
        }
    }
    let Some(adapter_settings) = settings.smaregi_settings(None) else {
        return (out, None);
    };
    let adapter = Smaregi::new(adapter_settings);
    let adapter = match adapter {
        Ok(a) => a,
        Err(e) => {
            out.push(Check::fail(
                "credentials",
                e.to_string(),
                "fix upstream.proxy",
            ));
            return (out, None);
        }
    };
    match adapter.check_credentials().await {
        Ok(date) => {
            out.push(Check::ok(
                "credentials",
                format!(
                    "the token request for contract {} was accepted (TLS and HTTP work)",
                    sm.contract_id
                ),
            ));
            out.push(clock_check(date));
            out.push(feed_check(&adapter).await);
            if let Some(id) = &settings.config.agent.smaregi_store_id {
                let live = adapter.store_points(id).await;
                return (out, Some(live));
            }
        }
        Err(e) => out.push(credential_failure(&e)),
    }
    (out, None)
}

/// The change feed needs `pos.transactions:read` (DESIGN.md §9). Without it the agent falls
/// back to full pulls every 300 s — which a chain's shared contract cannot carry — and judges
/// lost answers by balance alone. One read of the last minute's transactions tells.
async fn feed_check(adapter: &Smaregi) -> Check {
    const FIX: &str = "grant the app the pos.transactions:read scope in the Smaregi developer console and update the app for this contract; until then the agent pulls in full every 300 s";
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let q = TxnQuery {
        from: crate::clock::smaregi_stamp(now - 60_000),
        to: crate::clock::smaregi_stamp(now),
        customer_code: None,
        page: 1,
    };
    match adapter.list_transactions(&q).await {
        Ok(_) => Check::ok(
            "change feed",
            "pos.transactions:read is granted: the agent polls changes, not the whole directory",
        ),
        Err(e @ UpstreamError::MissingScope { .. }) => {
            Check::warn("change feed", format!("no change feed: {e}"), FIX)
        }
        Err(e) => Check::warn(
            "change feed",
            format!("could not read the transaction list: {e}"),
            "run doctor again; if it persists, check the app's scopes in the Smaregi developer console",
        ),
    }
}

fn credential_failure(e: &UpstreamError) -> Check {
    match e.class() {
        FailureClass::Auth | FailureClass::Permanent => Check::fail(
            "credentials",
            format!("the upstream refused the credentials: {e}"),
            "check contract_id, client_id and client_secret (or POINTSD_UPSTREAM__SMAREGI__CLIENT_SECRET) and that the app is installed with the pos.customers scopes",
        ),
        _ => Check::fail(
            "credentials",
            format!("could not ask for a token: {e}"),
            "fix the connection problems reported above (internet, proxy, TLS interception), then run doctor again",
        ),
    }
}

fn clock_check(server: Option<SystemTime>) -> Check {
    let Some(server) = server else {
        return Check::warn(
            "clock",
            "the upstream sent no Date header; clock skew unknown",
            "make sure the machine syncs its clock (NTP)",
        );
    };
    let now = SystemTime::now();
    let skew = match now.duration_since(server) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    if skew.abs() <= 60 {
        Check::ok(
            "clock",
            format!("within {}s of the upstream's clock", skew.abs()),
        )
    } else {
        Check::warn(
            "clock",
            format!("this machine's clock is {skew}s off the upstream's"),
            "enable time sync (NTP); timestamps in logs and `as_of` depend on it",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_backup_or_one_older_than_two_intervals_is_a_warning_with_the_fix() {
        use crate::store::backup::{BackupReport, LastBackup};
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::BackupConfig::default();
        let hour = 3_600_000;
        // No database: nothing to back up.
        assert_eq!(backup_check(&cfg, dir.path(), 0).level, Level::Ok);
        std::fs::write(dir.path().join("pointsd.db"), b"").unwrap();
        let none = backup_check(&cfg, dir.path(), 10 * hour);
        assert_eq!(none.level, Level::Warn, "{}", none.line());
        assert!(none.line().contains("[backup] dir"), "{}", none.line());
        let rep = BackupReport {
            path: "/backups/pointsd-x.db".into(),
            bytes: 4096,
            sha256: "00".repeat(32),
            at_ms: 10 * hour,
            took_ms: 1,
        };
        LastBackup::record(dir.path(), 10 * hour, &Ok(rep)).unwrap();
        for (now, level) in [
            (11 * hour, Level::Ok),
            (12 * hour, Level::Ok),
            (12 * hour + 1_000, Level::Warn),
        ] {
            let c = backup_check(&cfg, dir.path(), now);
            assert_eq!(c.level, level, "{}", c.line());
        }
    }

    #[test]
    fn a_certificate_is_warned_about_30_days_before_it_expires() {
        let day = 86_400;
        let info = crate::api::tls::CertInfo {
            fingerprint_sha256: "ab".repeat(32),
            spki_sha256_base64: String::new(),
            not_after: "2027-01-31T00:00:00Z".into(),
            not_after_unix: 1_000 * day,
            generated: true,
            cert_file: "/d/tls/cert.pem".into(),
        };
        for (now, level) in [
            (900 * day, Level::Ok),
            (970 * day, Level::Ok),
            (971 * day, Level::Warn),
            (999 * day, Level::Warn),
            (1_001 * day, Level::Fail),
        ] {
            let c = cert_expiry_check(&info, now);
            assert_eq!(c.level, level, "{}", c.message);
            assert!(c.message.contains(&"ab".repeat(32)), "{}", c.message);
        }
    }
}
