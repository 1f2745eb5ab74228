//! The push loop: every `interval_s` a snapshot of the metrics goes into the buffer, then the
//! buffer is sent to the receiver oldest first. Classification (is a failure worth retrying?)
//! lives on [`PushError`]; the policy (how long to wait) is [`Backoff`]. It runs on its own
//! HTTP client, outside the upstream's rate budget, and logs under its own target at WARN at
//! most: a receiver outage is not a sync error.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header;
use tokio_util::sync::CancellationToken;

use super::buffer::{Buffer, MAX_SAMPLES, Snapshot};
use super::config::{Auth, TelemetrySettings};
use super::remote_write::{self, WriteRequest};
use super::samples;
use crate::api::{AppState, refresh_metrics};
use crate::metrics::ReasonLabels;

/// Samples in one request at most (a catch-up after an outage goes in several requests).
const MAX_SAMPLES_PER_REQUEST: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// 4xx but 429: the receiver will never take this batch (e.g. Prometheus answers 400 to
    /// samples out of order or too old). Retrying would block every newer sample behind it.
    #[error("the remote-write receiver refused the batch: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// 5xx or 429: the receiver is there but cannot take it now.
    #[error("the remote-write receiver is unavailable: HTTP {status}: {body}")]
    Unavailable { status: u16, body: String },
    #[error("cannot reach the remote-write receiver: {0}")]
    Unreachable(#[source] reqwest::Error),
}

impl PushError {
    pub fn is_retriable(&self) -> bool {
        match self {
            PushError::Refused { .. } => false,
            PushError::Unavailable { .. } | PushError::Unreachable(_) => true,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            PushError::Refused { .. } => "refused",
            PushError::Unavailable { .. } => "unavailable",
            PushError::Unreachable(_) => "unreachable",
        }
    }

    fn from_status(status: u16, body: String) -> Option<PushError> {
        match status {
            200..=299 => None,
            429 | 500..=599 => Some(PushError::Unavailable { status, body }),
            _ => Some(PushError::Refused { status, body }),
        }
    }
}

/// Retry delay after `failures` failures in a row: from one second, doubling, up to
/// `max` (five intervals, within 5 s..=5 min).
pub struct Backoff {
    pub max: Duration,
}

impl Backoff {
    pub fn for_interval(interval: Duration) -> Backoff {
        Backoff {
            max: (interval * 5).clamp(Duration::from_secs(5), Duration::from_secs(300)),
        }
    }

    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        Duration::from_secs(1 << exp).min(self.max)
    }
}

pub struct Pusher {
    st: Arc<AppState>,
    settings: TelemetrySettings,
    http: reqwest::Client,
    buffer: Buffer,
    backoff: Backoff,
    failures: u32,
    /// Unix ms before which no push is tried (backing off).
    retry_at: i64,
}

impl Pusher {
    pub fn new(st: Arc<AppState>, settings: TelemetrySettings) -> Result<Pusher, reqwest::Error> {
        let http = crate::http_client_builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("pointsd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Pusher {
            buffer: Buffer::new(settings.buffer.as_millis() as i64, MAX_SAMPLES),
            backoff: Backoff::for_interval(settings.interval),
            st,
            settings,
            http,
            failures: 0,
            retry_at: 0,
        })
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.snapshot().await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.drain() => {}
            }
        }
    }

    async fn snapshot(&mut self) {
        if let Err(e) = refresh_metrics(&self.st).await {
            // The counters and the rest still say something; the gauges keep their last value.
            tracing::debug!(target: "pointsd::telemetry", error = %e, "metrics snapshot without fresh queue figures");
        }
        let text = self.st.metrics.encode();
        let points = match samples::parse(&text, &self.settings.labels) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target: "pointsd::telemetry", error = %e, "metrics snapshot not taken");
                return;
            }
        };
        let at = self.st.clock.now_ms();
        let dropped = self.buffer.push(Snapshot { at, points });
        self.count_dropped("expired", dropped);
        self.publish_buffered();
    }

    /// Sends the buffer oldest first until it is empty or a push fails.
    async fn drain(&mut self) {
        while !self.buffer.is_empty() && self.st.clock.now_ms() >= self.retry_at {
            let batch: Vec<_> = self.buffer.oldest(MAX_SAMPLES_PER_REQUEST).collect();
            let n = batch.len();
            let samples: usize = batch.iter().map(|s| s.points.len()).sum();
            let req = WriteRequest {
                timeseries: samples::merge(batch.iter().map(|s| (s.at, s.points.as_slice()))),
            };
            let result = self.send(&req).await;
            let now = self.st.clock.now_ms();
            let m = &self.st.metrics;
            match result {
                Ok(()) => {
                    self.buffer.pop_front(n);
                    m.telemetry_sent.inc_by(samples as u64);
                    m.telemetry_last_success.set(now / 1000);
                    self.st.telemetry.sent(now, samples as u64);
                    if self.failures > 0 {
                        tracing::info!(target: "pointsd::telemetry", "remote-write receiver reachable again");
                    }
                    self.failures = 0;
                }
                Err(e) => {
                    m.telemetry_failures
                        .get_or_create(&ReasonLabels { reason: e.reason() })
                        .inc();
                    let next = if e.is_retriable() {
                        self.failures += 1;
                        if self.failures == 1 {
                            tracing::warn!(target: "pointsd::telemetry", error = %e, buffered = self.buffer.samples(), "metrics push failed; buffering and retrying");
                        }
                        self.retry_at = now + self.backoff.delay(self.failures).as_millis() as i64;
                        Some(self.retry_at)
                    } else {
                        tracing::warn!(target: "pointsd::telemetry", error = %e, samples, "metrics batch refused by the receiver; dropped");
                        let gone = self.buffer.pop_front(n);
                        self.count_dropped("refused", gone);
                        None
                    };
                    self.st.telemetry.failed(now, e.to_string(), next);
                    if next.is_some() {
                        break;
                    }
                }
            }
            self.publish_buffered();
        }
    }

    async fn send(&self, req: &WriteRequest) -> Result<(), PushError> {
        let mut rb = self
            .http
            .post(self.settings.url.clone())
            .header(header::CONTENT_ENCODING, remote_write::CONTENT_ENCODING)
            .header(header::CONTENT_TYPE, remote_write::CONTENT_TYPE)
            .header(remote_write::VERSION_HEADER, remote_write::VERSION)
            .body(remote_write::encode(req));
        rb = match &self.settings.auth {
            Auth::None => rb,
            Auth::Bearer(t) => rb.bearer_auth(t.expose()),
            Auth::Basic { username, password } => rb.basic_auth(username, Some(password.expose())),
        };
        let resp = rb.send().await.map_err(PushError::Unreachable)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        // Receivers explain a refusal in a short text body; keep the start of it.
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .trim()
            .chars()
            .take(300)
            .collect();
        Err(PushError::from_status(status, body).expect("not 2xx"))
    }

    fn count_dropped(&self, reason: &'static str, samples: usize) {
        if samples == 0 {
            return;
        }
        self.st
            .metrics
            .telemetry_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(samples as u64);
        self.st.telemetry.dropped(samples as u64);
    }

    fn publish_buffered(&self) {
        let n = self.buffer.samples();
        self.st.metrics.telemetry_buffered.set(n as i64);
        self.st.telemetry.buffered(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers() {
        let cases: &[(u16, Option<bool>)] = &[
            (200, None),
            (204, None),
            (400, Some(false)),
            (401, Some(false)),
            (404, Some(false)),
            (413, Some(false)),
            (429, Some(true)),
            (500, Some(true)),
            (503, Some(true)),
        ];
        for (status, retry) in cases {
            let e = PushError::from_status(*status, String::new());
            assert_eq!(e.map(|e| e.is_retriable()), *retry, "HTTP {status}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_intervals() {
        let b = Backoff::for_interval(Duration::from_secs(30));
        let d: Vec<u64> = (1..=10).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 64, 128, 150, 150]);
        assert_eq!(
            Backoff::for_interval(Duration::from_secs(1)).delay(10),
            Duration::from_secs(5)
        );
    }
}
