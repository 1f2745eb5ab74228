//! pointsd: an offline-first loyalty point agent that runs next to a Smaregi register.
//!
//! Map of the crate (one module per concern; the binary `src/main.rs` only calls [`cli`]):
//! - [`cli`]: the command line: command tree, paths, serve/demo/service-run, remote commands.
//! - [`config`]: TOML config, environment overrides, default paths, validation into `Settings`.
//! - [`ledger`]: domain rules: kinds, states, validation, balance math, earn rule, tiers,
//!   offline redeem policy, staleness. Imports nothing from the crate; `config` embeds its types.
//! - [`store`]: SQLite schema, migrations, the single writer with group commit, queries.
//! - [`api`]: the local HTTP API (axum): one file per resource, bearer auth, problem+json.
//! - [`sync`]: push worker (outbox → upstream, read-back), pull worker (full pulls, the change
//!   feed, re-reads of customers changed elsewhere).
//! - [`upstream`]: the `Upstream` trait, failure classes, the Smaregi adapter, link health, the
//!   contract's rate budget.
//! - [`sim`]: the Smaregi simulator (a whole contract) used by `demo`, the tests and the fleet
//!   benchmark.
//! - [`telemetry`]: metrics pushed to HQ (Prometheus remote write), buffered while offline.
//! - [`daemon`]: wiring and the bounded graceful stop.
//! - [`service`]: install as a system service (systemd, launchd, Windows SCM).
//! - [`doctor`]: one-shot health check of an installation.
//! - [`tokens`]: tokens issued and revoked live (`tokens.json` in the data dir, watched).
//! - [`secret`]: the redacted `Secret` string shared by config and upstream.
//! - [`logging`], [`metrics`], [`clock`]: cross-cutting pieces.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod secret;
pub mod service;
pub mod sim;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tokens;
pub mod upstream;

/// Every HTTP client (upstream, CLI, tests) starts here: reqwest is built without its default
/// TLS provider (aws-lc, 2 MB of the binary), so ring is installed as the process-wide rustls
/// provider before the first client is built.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // Err only if another provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}
