//! Configuration: the TOML file, `POINTSD_SECTION__KEY` environment overrides, default paths,
//! and validation into typed values before anything is built.
//!
//! Map of the files:
//! - [`sections`]: the config's sections (`Config`, `ApiConfig`, ...), one `Default` each;
//!   the rule sections are the ledger's types, re-exported here.
//! - [`load`]: reading a file, environment overrides, secret files; `Problem`, `ConfigError`.
//! - [`validate`]: every rule checked at once, into `Settings`.
//! - [`settings`]: `Settings` with typed values (durations, token digests), and the upstream
//!   adapter's settings built from them (`Settings::smaregi_settings`).
//! - [`strength`]: how much randomness a token carries (`config check` wants 128 bits).
//! - [`paths`]: default config, data and log locations (`Scope`).
//! - [`perms`]: permission warnings for a config file that holds secrets.

mod load;
mod paths;
mod perms;
mod sections;
mod settings;
mod strength;
#[cfg(test)]
mod tests;
mod validate;

pub use crate::ledger::{
    CampaignConfig, EarnBasis, EarnConfig, GrantedBy, OfflineConfig, ReturnsConfig, Rounding,
    SpendConfig, TierConfig, Weekday,
};
pub use crate::secret::Secret;
pub use crate::telemetry::TelemetryConfig;
pub use load::{ConfigError, ENV_PREFIX, Problem, env_map, load_settings};
pub use paths::{Scope, default_config_file, default_data_dir, default_log_dir};
#[cfg(unix)]
pub(crate) use perms::group_id;
pub use perms::{file_mode_warnings, private_dir, private_file};
pub use sections::{
    AgentConfig, ApiConfig, BackupConfig, CheckDigit, Config, EasyPointsConfig, LogConfig,
    RetentionConfig, Role, SimConfig, SmaregiConfig, StorageConfig, SyncConfig, TlsConfig,
    TokenConfig, UpstreamConfig, UpstreamKind,
};
pub use settings::{ApiDurations, ApiToken, Settings, SimEndpoint, SyncDurations, sha256};
pub use strength::{MIN_TOKEN_BITS, token_weakness};
pub use validate::PLACEHOLDER;
pub(crate) use validate::cleartext_beyond_loopback;
