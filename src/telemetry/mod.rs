//! Telemetry for HQ (DESIGN.md §13): the agent pushes its metrics, the same ones `/metrics`
//! serves, to a Prometheus remote-write receiver, because a store machine behind NAT cannot be
//! scraped. Bounded buffering while the receiver is away; never in a register's way, never on
//! the Smaregi budget.
//!
//! Map of the files:
//! - [`config`]: the `[telemetry]` section, its rules and typed settings.
//! - [`samples`]: a snapshot of the registry as samples, labelled with the store.
//! - [`remote_write`]: the wire format (prost messages, snappy).
//! - [`buffer`]: the bounded window of snapshots not yet accepted.
//! - [`pusher`]: the loop, the HTTP client, retry classification and backoff.
//! - [`state`]: what `GET /v1/status` shows as `telemetry`.

pub mod buffer;
pub mod config;
pub mod pusher;
pub mod remote_write;
pub mod samples;
pub mod state;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Auth, TelemetryConfig, TelemetrySettings};
pub use state::{TelemetryState, TelemetryStatus};

/// Starts the push loop on `tracker` when a receiver is configured.
pub fn start(
    st: Arc<crate::api::AppState>,
    settings: TelemetrySettings,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), reqwest::Error> {
    tracing::info!(target: "pointsd::telemetry", url = %st.telemetry.snapshot().remote_write_url.unwrap_or_default(), interval_s = settings.interval.as_secs(), "pushing metrics (Prometheus remote write)");
    let pusher = pusher::Pusher::new(st, settings)?;
    tracker.spawn(pusher.run(shutdown));
    Ok(())
}
