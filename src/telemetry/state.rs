//! What `GET /v1/status` shows of the push (`telemetry`): shared between the pusher and the API.

use std::sync::Mutex;

use serde::Serialize;

use crate::clock;

#[derive(Debug, Default)]
struct Inner {
    last_success_at: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    buffered_samples: u64,
    sent_samples: u64,
    dropped_samples: u64,
    next_attempt_at: Option<i64>,
}

/// The pusher's state; `disabled()` when `[telemetry]` names no receiver.
#[derive(Debug)]
pub struct TelemetryState {
    /// The receiver without query or credentials (a query can carry an API key).
    target: Option<String>,
    interval_s: Option<u64>,
    inner: Mutex<Inner>,
}

/// `status.telemetry`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TelemetryStatus {
    /// Whether `telemetry.remote_write_url` is set.
    pub enabled: bool,
    /// Scheme, host and path of the receiver.
    pub remote_write_url: Option<String>,
    pub interval_s: Option<u64>,
    pub last_success_at: Option<String>,
    /// The last failed push (the receiver's status and answer, or why it was not reached).
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Samples waiting for the receiver (kept in memory for `telemetry.buffer_minutes`).
    pub buffered_samples: u64,
    pub sent_samples: u64,
    /// Samples given up: older than the buffer window, or refused by the receiver (4xx).
    pub dropped_samples: u64,
    /// When the next push is tried after a failure (backing off).
    pub next_attempt_at: Option<String>,
}

impl TelemetryState {
    pub fn disabled() -> TelemetryState {
        TelemetryState {
            target: None,
            interval_s: None,
            inner: Mutex::default(),
        }
    }

    pub fn new(url: &reqwest::Url, interval_s: u64) -> TelemetryState {
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        TelemetryState {
            target: Some(shown.to_string()),
            interval_s: Some(interval_s),
            inner: Mutex::default(),
        }
    }

    pub fn snapshot(&self) -> TelemetryStatus {
        let i = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        TelemetryStatus {
            enabled: self.target.is_some(),
            remote_write_url: self.target.clone(),
            interval_s: self.interval_s,
            last_success_at: i.last_success_at.map(clock::rfc3339),
            last_error: i.last_error.clone(),
            last_error_at: i.last_error_at.map(clock::rfc3339),
            buffered_samples: i.buffered_samples,
            sent_samples: i.sent_samples,
            dropped_samples: i.dropped_samples,
            next_attempt_at: i.next_attempt_at.map(clock::rfc3339),
        }
    }

    pub(super) fn sent(&self, now: i64, samples: u64) {
        let mut i = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        i.last_success_at = Some(now);
        i.sent_samples += samples;
        i.next_attempt_at = None;
    }

    pub(super) fn failed(&self, now: i64, error: String, next_attempt_at: Option<i64>) {
        let mut i = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        i.last_error = Some(error);
        i.last_error_at = Some(now);
        i.next_attempt_at = next_attempt_at;
    }

    pub(super) fn dropped(&self, samples: u64) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .dropped_samples += samples;
    }

    pub(super) fn buffered(&self, samples: u64) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .buffered_samples = samples;
    }
}
