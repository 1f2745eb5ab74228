//! The config file's sections, each with its one `Default` (the documented defaults in
//! config/pointsd.example.toml). The rule sections (`[earn]`, `[spend]`, `[returns]`,
//! `[offline]`, `[[tiers]]`) are the ledger's own types, embedded here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ledger::{EarnConfig, OfflineConfig, ReturnsConfig, SpendConfig, TierConfig};
use crate::secret::Secret;
use crate::telemetry::TelemetryConfig;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub agent: AgentConfig,
    pub api: ApiConfig,
    pub upstream: UpstreamConfig,
    pub sync: SyncConfig,
    pub offline: OfflineConfig,
    pub earn: EarnConfig,
    pub spend: SpendConfig,
    pub returns: ReturnsConfig,
    pub tiers: Vec<TierConfig>,
    pub log: LogConfig,
    /// Metrics pushed to HQ (Prometheus remote write); the telemetry component's own type.
    pub telemetry: TelemetryConfig,
    /// The Smapify merchant's second ledger, read only (absent: not read at all).
    pub easypoints: Option<EasyPointsConfig>,
    /// Scheduled backups of the database (DESIGN.md §15).
    pub backup: BackupConfig,
    /// The disk floor.
    pub storage: StorageConfig,
    /// How long closed history is kept.
    pub retention: RetentionConfig,
}

/// `[retention]`: closed transactions, sales and returns older than this are deleted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Days closed history is kept (export it first with `pointsd export`); must be longer
    /// than the store's return period. 0 keeps everything.
    pub keep_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { keep_days: 400 }
    }
}

/// `[storage]`: the free space kept in reserve on the data dir's file system.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Below this many MB free, new writes are refused (507) before SQLite meets a full
    /// disk; they resume by themselves. 0 turns the floor off.
    pub min_free_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { min_free_mb: 256 }
    }
}

/// `[backup]`: where and how often the daemon copies its database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BackupConfig {
    /// Another disk, a USB stick or a share. Unset: no scheduled backups (`pointsd backup`
    /// still works, and `doctor` warns).
    pub dir: Option<PathBuf>,
    /// Seconds between scheduled backups.
    pub interval_s: u64,
    /// Scheduled backups kept in `dir` (the oldest beyond these are deleted).
    pub keep: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: None,
            interval_s: 3600,
            keep: 48,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Identifies this store; goes with every transaction upstream. Required.
    pub store_id: String,
    /// Where the database and logs live. Default: the OS data directory.
    pub data_dir: Option<PathBuf>,
    /// The store's time zone, where campaign dates and weekdays are counted: `Asia/Tokyo`,
    /// `UTC`, or a fixed offset such as `+09:00`.
    pub timezone: String,
    /// The Smaregi store (店舗ID) this agent stands in: with it, `[earn] granted_by = "auto"`
    /// reads the store's point conditions to learn whether its register grants points.
    pub smaregi_store_id: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            store_id: String::new(),
            data_dir: None,
            timezone: "Asia/Tokyo".into(),
            smaregi_store_id: None,
        }
    }
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
    /// At a stop, how long in-flight requests may take before the daemon goes on without
    /// them (a client holding a request open cannot keep the process alive).
    pub shutdown_grace_s: u64,
    /// A connection that has not sent a whole request head within this is closed.
    pub header_timeout_s: u64,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout_s: u64,
    /// A request body must arrive whole within this many seconds of the end of its head
    /// (a byte now and then does not extend it); else 408 and the connection closes.
    pub body_timeout_s: u64,
    /// Requests in progress with one token at once; past it 429
    /// `too_many_requests_in_progress` (a stolen token cannot hold every slot).
    pub max_requests_per_token: u32,
    /// Requests in progress from one client address at once; past it 429.
    pub max_requests_per_address: u32,
    /// Connections served at once; past it the oldest connection without a request in
    /// progress is shed, so held connections cannot lock a register out.
    pub max_connections: u32,
    /// The request line and headers together may not be larger (431 past it).
    pub max_header_bytes: u32,
    /// The most points a register token may grant in one earn or sale (given in points or
    /// derived from an amount); above it needs a manager.
    pub register_max_earn_points: i64,
    /// The largest amount (yen) a register token may give as an earn's `purchase_amount` or
    /// a sale's `amount`; above it needs a manager.
    pub register_max_sale_amount: i64,
    /// Serve plain HTTP on a non-loopback address (tokens then cross the network in clear
    /// text): the operator accepts that risk. Without it such a listen needs `[api.tls]`.
    pub allow_plain_http: bool,
    /// `Host` names served besides loopback ones (`localhost`, `127.0.0.1`, `[::1]`) and,
    /// with TLS, the certificate's names; a request naming another host gets 421.
    pub allowed_hosts: Vec<String>,
    /// Client addresses never throttled for failed sign-ins (empty by default: none is, the
    /// store PC's loopback included). For a tool that must probe without a token.
    pub signin_throttle_exempt: Vec<String>,
    pub tls: Option<TlsConfig>,
}

/// `[api.tls]`: the operator's certificate and key, or one the daemon makes itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Make a self-signed certificate for `names` at first start, kept in the data dir.
    pub generate: bool,
    /// DNS names and IP addresses the generated certificate is for.
    pub names: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8765".into(),
            tokens: Vec::new(),
            lookup_refresh_budget_ms: 300,
            lookup_refresh_after_s: 30,
            shutdown_grace_s: 10,
            header_timeout_s: 10,
            idle_timeout_s: 60,
            body_timeout_s: 30,
            max_requests_per_token: 32,
            max_requests_per_address: 64,
            max_connections: 512,
            max_header_bytes: 16_384,
            register_max_earn_points: 10_000,
            register_max_sale_amount: 1_000_000,
            allow_plain_http: false,
            allowed_hosts: Vec::new(),
            signin_throttle_exempt: Vec::new(),
            tls: None,
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
    /// May also adjust, return unlinked sales, resolve reviews, run reconciles and manage
    /// tokens.
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
    /// Accept `http://` for `id_base`/`api_base` beyond loopback (the client secret and the
    /// access token would cross the network in clear text); `config check` refuses it
    /// otherwise.
    pub allow_insecure_http: bool,
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
            allow_insecure_http: false,
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
    /// The change feed's polling interval (directory and transaction changes since the
    /// watermark). Without `pos.transactions:read` the agent falls back to full pulls every
    /// 300 s.
    pub pull_interval_s: u64,
    /// Full refresh of balances and the directory: the safety net once the feed works
    /// (spread by a per-store jitter of up to a tenth of it).
    pub full_refresh_interval_s: u64,
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
    /// The old single ceiling (reads and writes alike); used for a class whose own key is
    /// not set.
    pub max_requests_per_second: u32,
    /// Read requests per second this agent starts at (its ceiling). The contract's limit is
    /// shared by every store: on a 429 the agent halves its rate and grows back slowly.
    pub max_reads_per_second: Option<u32>,
    /// Write requests (`point/add`) per second this agent starts at.
    pub max_writes_per_second: Option<u32>,
    /// Background re-reads of customers the change feed marked, per second at most. Each store
    /// re-reads what changed everywhere else, so this is what a chain's size multiplies.
    pub reread_per_second: f64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            pull_interval_s: 30,
            full_refresh_interval_s: 86_400,
            probe_interval_s: 5,
            stale_after_s: 900,
            online_budget_ms: 1_500,
            concurrency: 4,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            backoff_multiplier: 2.0,
            max_requests_per_second: 20,
            max_reads_per_second: None,
            max_writes_per_second: None,
            reread_per_second: 0.2,
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
    /// The log files together are kept under this many MiB (the oldest are deleted).
    pub max_total_mb: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            retention_files: 14,
            max_total_mb: 256,
        }
    }
}

/// How a Smaregi member code carries the Shopify customer id (Smapify's customer sync).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckDigit {
    /// The member code is the number itself (Smapify's default).
    #[default]
    None,
    /// Smapify appended one check digit to the member code; it is dropped before the id is
    /// read (Smapify does not publish its algorithm, so the digit is not verified).
    Trailing,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct EasyPointsConfig {
    /// From the easyPoints app's settings (API credentials).
    pub public_key: String,
    pub secret_key: Secret,
    /// Read the secret key from this file instead.
    pub secret_key_file: Option<PathBuf>,
    pub api_base: String,
    /// Smapify's start number: the member code is the Shopify customer id plus this.
    pub code_offset: i64,
    pub code_check_digit: CheckDigit,
    /// easyPoints requests per second at most (its own budget, apart from Smaregi's).
    pub max_requests_per_second: u32,
    /// How long Smapify may take to carry a change between the ledgers before a difference
    /// counts (the cross-ledger report).
    pub settle_s: u64,
    /// The report compares customers this store looked up or wrote in the last this many
    /// days.
    pub report_window_days: u32,
    /// Run the cross-ledger report this often (seconds); 0: only when asked.
    pub report_interval_s: u64,
}

impl Default for EasyPointsConfig {
    fn default() -> Self {
        EasyPointsConfig {
            public_key: String::new(),
            secret_key: Secret::default(),
            secret_key_file: None,
            api_base: "https://loyalty.slrs.io/api/shopify".into(),
            code_offset: 0,
            code_check_digit: CheckDigit::None,
            max_requests_per_second: 2,
            settle_s: 300,
            report_window_days: 30,
            report_interval_s: 0,
        }
    }
}
