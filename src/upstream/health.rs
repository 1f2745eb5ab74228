//! Link state (online/offline, last success, last error, a pause requested by `Retry-After`)
//! and the wrapper that records it, with metrics, around every upstream call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use super::{
    Applied, Page, TxnQuery, Upstream, UpstreamBalance, UpstreamCustomer, UpstreamError,
    UpstreamTxn,
};
use crate::clock::SharedClock;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthSnapshot {
    pub online: bool,
    pub last_ok_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// The upstream asked us to wait (429 + Retry-After) until this time.
    pub paused_until: Option<i64>,
    /// Credentials were refused even after a fresh token: sync waits for an operator.
    pub auth_failed: bool,
}

pub struct Health {
    inner: Mutex<HealthSnapshot>,
    clock: SharedClock,
    /// Woken when the link comes back, so the push worker drains at once.
    pub back_online: tokio::sync::Notify,
}

impl Health {
    pub fn new(clock: SharedClock) -> Health {
        Health {
            inner: Mutex::new(HealthSnapshot::default()),
            clock,
            back_online: tokio::sync::Notify::new(),
        }
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        self.inner.lock().expect("health").clone()
    }

    pub fn is_online(&self) -> bool {
        let h = self.inner.lock().expect("health");
        h.online && !h.auth_failed
    }

    /// Milliseconds until a `Retry-After` pause ends, if one is in force.
    pub fn pause_remaining_ms(&self) -> Option<i64> {
        let now = self.clock.now_ms();
        let h = self.inner.lock().expect("health");
        h.paused_until.filter(|u| *u > now).map(|u| u - now)
    }

    pub fn record_ok(&self) {
        let now = self.clock.now_ms();
        let was_online = {
            let mut h = self.inner.lock().expect("health");
            let was = h.online && !h.auth_failed;
            h.online = true;
            h.auth_failed = false;
            h.last_ok_at = Some(now);
            was
        };
        if !was_online {
            tracing::info!("upstream reachable again");
            self.back_online.notify_waiters();
        }
    }

    pub fn record_err(&self, e: &UpstreamError) {
        let now = self.clock.now_ms();
        let mut h = self.inner.lock().expect("health");
        h.last_error = Some(e.to_string());
        h.last_error_at = Some(now);
        if let Some(wait) = e.retry_after() {
            h.paused_until = Some(now + wait.as_millis() as i64);
        }
        if e.is_link_down() {
            if h.online {
                tracing::warn!(error = %e, "upstream unreachable; working offline");
            }
            h.online = false;
        } else if e.class() == super::FailureClass::Auth {
            if !h.auth_failed {
                tracing::error!(error = %e, "upstream refused our credentials; sync paused until the config is fixed");
            }
            h.auth_failed = true;
        } else {
            // It answered (4xx, 429): the link is up.
            h.online = true;
        }
    }
}

/// Wraps an adapter: every call updates [`Health`] and the upstream metrics.
pub struct Observed<U> {
    inner: U,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    limiter: Option<governor::DefaultDirectRateLimiter>,
}

/// The pacing for an upstream limit of `n` requests per second. Upstream limits are counted
/// per second, so no one-second span may see more than `n`. With a rate `r` and a burst `b`,
/// a span of one second sees at most `r + b`; so `r = n - b`. The burst lets a sender whose
/// timer woke late catch up: with no burst at all, every late wake-up was lost capacity (the
/// drain ran at 0.83x of a 1000/s limit). From 100/s up, `b` is 2% of `n`.
fn pacing(n: std::num::NonZeroU32) -> governor::Quota {
    let burst = n.get() / 50;
    if burst <= 1 {
        return governor::Quota::per_second(n).allow_burst(std::num::NonZeroU32::MIN);
    }
    let rate = n.get() - burst;
    governor::Quota::with_period(Duration::from_secs_f64(1.0 / rate as f64))
        .expect("positive period")
        .allow_burst(std::num::NonZeroU32::new(burst).expect("burst > 1"))
}

impl<U: Upstream> Observed<U> {
    /// `per_second` caps requests to the upstream across every caller (push, pull, look-ups).
    pub fn new(
        inner: U,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        per_second: Option<u32>,
    ) -> Self {
        let limiter = per_second
            .and_then(std::num::NonZeroU32::new)
            .map(|n| governor::RateLimiter::direct(pacing(n)));
        Observed {
            inner,
            health,
            metrics,
            limiter,
        }
    }

    async fn permit(&self) {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
    }

    fn note<T>(&self, op: &'static str, start: Instant, r: &Result<T, UpstreamError>) {
        let secs = start.elapsed().as_secs_f64();
        match r {
            Ok(_) => {
                self.metrics.observe_upstream(op, "ok", secs);
                self.health.record_ok();
            }
            Err(e) => {
                self.metrics.observe_upstream(op, e.outcome_label(), secs);
                self.health.record_err(e);
            }
        }
    }
}

#[async_trait]
impl<U: Upstream> Upstream for Observed<U> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn list_balances(&self, page: u32) -> Result<Page<UpstreamBalance>, UpstreamError> {
        self.permit().await;
        let t = Instant::now();
        let r = self.inner.list_balances(page).await;
        self.note("list_balances", t, &r);
        r
    }
    async fn get_balance(
        &self,
        customer_id: &str,
    ) -> Result<Option<UpstreamBalance>, UpstreamError> {
        self.permit().await;
        let t = Instant::now();
        let r = self.inner.get_balance(customer_id).await;
        self.note("get_balance", t, &r);
        r
    }
    async fn add_points(&self, customer_id: &str, delta: i64) -> Result<Applied, UpstreamError> {
        self.permit().await;
        let t = Instant::now();
        let r = self.inner.add_points(customer_id, delta).await;
        self.note("add_points", t, &r);
        r
    }
    async fn probe(&self) -> Result<(), UpstreamError> {
        self.permit().await;
        let t = Instant::now();
        let r = self.inner.probe().await;
        self.note("probe", t, &r);
        r
    }
    async fn list_customers(&self, page: u32) -> Result<Page<UpstreamCustomer>, UpstreamError> {
        self.permit().await;
        let t = Instant::now();
        let r = self.inner.list_customers(page).await;
        self.note("list_customers", t, &r);
        r
    }
    async fn list_transactions(&self, q: &TxnQuery) -> Result<Page<UpstreamTxn>, UpstreamError> {
        self.permit().await;
        let t = Instant::now();
        let r = self.inner.list_transactions(q).await;
        self.note("list_transactions", t, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    /// Permits granted to a sender that asks every 100 µs, over `secs` seconds of fake time.
    fn granted(n: u32, secs: u64) -> (u32, u32) {
        let clock = FakeRelativeClock::default();
        let quota = pacing(std::num::NonZeroU32::new(n).unwrap());
        let l = governor::RateLimiter::direct_with_clock(quota, clock.clone());
        let (mut first_second, mut total) = (0, 0);
        for step in 0..secs * 10_000 {
            if l.check().is_ok() {
                total += 1;
                if step < 10_000 {
                    first_second += 1;
                }
            }
            clock.advance(Duration::from_micros(100));
        }
        (first_second, total)
    }

    #[test]
    fn pacing_never_exceeds_the_limit_in_a_second_yet_keeps_its_rate() {
        for n in [1, 5, 50, 100, 500, 1000, 5000] {
            let (first, total) = granted(n, 10);
            // The first second starts with the whole burst available: the worst span.
            assert!(first <= n, "{n}/s: {first} in the first second");
            assert!(
                total as f64 >= 0.97 * n as f64 * 10.0 || n < 100,
                "{n}/s: only {total} in 10 s"
            );
        }
    }
}
