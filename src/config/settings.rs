//! `Settings`: a config that passed validation, with its values typed (addresses, token
//! digests, durations), and the one place the upstream adapter's settings are built from it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::load::Problem;
use super::sections::{Config, Role};
use crate::secret::Secret;
use crate::upstream::easypoints::EasyPointsSettings;
use crate::upstream::smaregi::{PAGE_LIMIT, SmaregiSettings};

/// A config that passed validation, with its text fields parsed into typed values.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
    pub sync: SyncDurations,
    pub api: ApiDurations,
    /// `upstream.connect_timeout_ms` and `upstream.request_timeout_ms`.
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// `[easypoints]`, when the merchant runs Smapify (the second ledger, read only).
    pub easypoints: Option<EasyPointsSettings>,
    /// Problems that do not stop the daemon but an operator should fix (e.g. file modes).
    pub warnings: Vec<Problem>,
}

/// The `[sync]` section's durations.
#[derive(Debug, Clone, Copy)]
pub struct SyncDurations {
    pub pull_interval: Duration,
    pub probe_interval: Duration,
    pub stale_after: Duration,
    pub online_budget: Duration,
}

/// The `[api]` section's durations.
#[derive(Debug, Clone, Copy)]
pub struct ApiDurations {
    pub lookup_refresh_budget: Duration,
    pub lookup_refresh_after: Duration,
    /// At a stop, how long in-flight requests may take before the daemon goes on without them.
    pub shutdown_grace: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
}

/// The built-in simulator's address and credentials, when `upstream.kind = "sim"`.
#[derive(Debug, Clone)]
pub struct SimEndpoint {
    pub url: String,
    pub contract_id: String,
    pub client_id: String,
    pub client_secret: Secret,
}

impl Settings {
    /// Typed values of a config whose rules were checked.
    pub(super) fn typed(config: Config, listen: SocketAddr, tokens: Vec<ApiToken>) -> Settings {
        let (s, a, u) = (&config.sync, &config.api, &config.upstream);
        Settings {
            sync: SyncDurations {
                pull_interval: Duration::from_secs(s.pull_interval_s),
                probe_interval: Duration::from_secs(s.probe_interval_s),
                stale_after: Duration::from_secs(s.stale_after_s),
                online_budget: Duration::from_millis(s.online_budget_ms),
            },
            api: ApiDurations {
                lookup_refresh_budget: Duration::from_millis(a.lookup_refresh_budget_ms),
                lookup_refresh_after: Duration::from_secs(a.lookup_refresh_after_s),
                shutdown_grace: Duration::from_secs(a.shutdown_grace_s),
                header_timeout: Duration::from_secs(a.header_timeout_s),
                idle_timeout: Duration::from_secs(a.idle_timeout_s),
                body_timeout: Duration::from_secs(a.body_timeout_s),
            },
            connect_timeout: Duration::from_millis(u.connect_timeout_ms),
            request_timeout: Duration::from_millis(u.request_timeout_ms),
            easypoints: config.easypoints.as_ref().map(|e| EasyPointsSettings {
                api_base: e.api_base.clone(),
                public_key: e.public_key.clone(),
                secret_key: e.secret_key.clone(),
                code_offset: e.code_offset,
                code_check_digit: e.code_check_digit,
                max_requests_per_second: e.max_requests_per_second,
                settle: Duration::from_secs(e.settle_s),
                report_window: Duration::from_secs(u64::from(e.report_window_days) * 86_400),
                report_interval: (e.report_interval_s > 0)
                    .then(|| Duration::from_secs(e.report_interval_s)),
                connect_timeout: Duration::from_millis(u.connect_timeout_ms),
                request_timeout: Duration::from_millis(u.request_timeout_ms),
                proxy: u.proxy.clone(),
                store_id: config.agent.store_id.clone(),
            }),
            listen,
            tokens,
            config,
            warnings: Vec::new(),
        }
    }

    /// The Smaregi adapter's settings: pointed at the built-in simulator when `sim` is given
    /// (`upstream.kind = "sim"`), else at `[upstream.smaregi]`. `None` only when that section
    /// is missing, which validation refuses for `kind = "smaregi"`.
    pub fn smaregi_settings(&self, sim: Option<SimEndpoint>) -> Option<SmaregiSettings> {
        let u = &self.config.upstream;
        let (contract_id, client_id, client_secret, id_base, api_base, proxy) = match sim {
            Some(sim) => (
                sim.contract_id,
                sim.client_id,
                sim.client_secret,
                sim.url.clone(),
                sim.url,
                None,
            ),
            None => {
                let sm = u.smaregi.clone()?;
                (
                    sm.contract_id,
                    sm.client_id,
                    sm.client_secret,
                    sm.id_base,
                    sm.api_base,
                    u.proxy.clone(),
                )
            }
        };
        Some(SmaregiSettings {
            contract_id,
            client_id,
            client_secret,
            id_base,
            api_base,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            proxy,
            page_limit: PAGE_LIMIT,
            store_id: self.config.agent.store_id.clone(),
            read_stores: self.config.agent.smaregi_store_id.is_some(),
        })
    }
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
