//! Link state (online/offline, last success, last error, a pause requested by `Retry-After`)
//! and the wrapper that records it, with metrics, around every upstream call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use super::budget::{Budget, Class};
use super::{
    Applied, ChangedQuery, Page, StorePoints, TxnQuery, Upstream, UpstreamBalance,
    UpstreamCustomer, UpstreamError, UpstreamTxn,
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
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn is_online(&self) -> bool {
        let h = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.online && !h.auth_failed
    }

    /// Milliseconds until a `Retry-After` pause ends, if one is in force.
    pub fn pause_remaining_ms(&self) -> Option<i64> {
        let now = self.clock.now_ms();
        let h = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.paused_until.filter(|u| *u > now).map(|u| u - now)
    }

    pub fn record_ok(&self) {
        let now = self.clock.now_ms();
        let was_online = {
            let mut h = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let mut h = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    budget: Option<Arc<Budget>>,
}

impl<U: Upstream> Observed<U> {
    /// `per_second` caps reads and writes alike (the old single ceiling).
    pub fn new(
        inner: U,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        per_second: Option<u32>,
    ) -> Self {
        let budget = per_second.map(|n| Arc::new(Budget::new(n, n)));
        Self::with_budget(inner, health, metrics, budget)
    }

    /// Paces every request through `budget` (shared with whoever reports it).
    pub fn with_budget(
        inner: U,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        budget: Option<Arc<Budget>>,
    ) -> Self {
        Observed {
            inner,
            health,
            metrics,
            budget,
        }
    }

    async fn permit(&self, class: Class) {
        // A `Retry-After` the upstream asked for holds every request, not only pushes; the
        // restart is spread a little so a chain's agents do not all return in the same tick.
        if let Some(ms) = self.health.pause_remaining_ms() {
            let spread = rand::random_range(0..=ms.clamp(1, 1000) as u64 / 4);
            tokio::time::sleep(Duration::from_millis(ms as u64 + spread)).await;
        }
        if let Some(b) = &self.budget {
            b.acquire(class).await;
        }
    }

    fn outcome<T>(&self, class: Class, r: &Result<T, UpstreamError>) {
        let Some(b) = &self.budget else { return };
        match r {
            Err(UpstreamError::Status { status: 429, .. }) => b.on_throttled(class),
            Ok(_) => b.on_success(class),
            Err(_) => {}
        }
    }

    fn note<T>(&self, op: &'static str, start: Instant, r: &Result<T, UpstreamError>) {
        let class = if op == "add_points" {
            Class::Write
        } else {
            Class::Read
        };
        self.outcome(class, r);
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
        self.permit(Class::Read).await;
        let t = Instant::now();
        let r = self.inner.list_balances(page).await;
        self.note("list_balances", t, &r);
        r
    }
    async fn get_balance(
        &self,
        customer_id: &str,
    ) -> Result<Option<UpstreamBalance>, UpstreamError> {
        self.permit(Class::Read).await;
        let t = Instant::now();
        let r = self.inner.get_balance(customer_id).await;
        self.note("get_balance", t, &r);
        r
    }
    async fn add_points(&self, customer_id: &str, delta: i64) -> Result<Applied, UpstreamError> {
        self.permit(Class::Write).await;
        let t = Instant::now();
        let r = self.inner.add_points(customer_id, delta).await;
        if let (Some(b), Ok(applied)) = (&self.budget, &r)
            && let Some(id) = applied
                .transaction_ids
                .iter()
                .flatten()
                .filter_map(|id| id.parse::<u64>().ok())
                .max()
        {
            b.observe_write_seq(id);
        }
        self.note("add_points", t, &r);
        r
    }
    async fn probe(&self) -> Result<(), UpstreamError> {
        self.permit(Class::Read).await;
        let t = Instant::now();
        let r = self.inner.probe().await;
        self.note("probe", t, &r);
        r
    }
    async fn list_customers(&self, page: u32) -> Result<Page<UpstreamCustomer>, UpstreamError> {
        self.permit(Class::Read).await;
        let t = Instant::now();
        let r = self.inner.list_customers(page).await;
        self.note("list_customers", t, &r);
        r
    }
    async fn list_changed_customers(
        &self,
        q: &ChangedQuery,
    ) -> Result<Page<UpstreamCustomer>, UpstreamError> {
        self.permit(Class::Read).await;
        let t = Instant::now();
        let r = self.inner.list_changed_customers(q).await;
        self.note("list_changed_customers", t, &r);
        r
    }
    async fn list_transactions(&self, q: &TxnQuery) -> Result<Page<UpstreamTxn>, UpstreamError> {
        self.permit(Class::Read).await;
        let t = Instant::now();
        let r = self.inner.list_transactions(q).await;
        self.note("list_transactions", t, &r);
        r
    }

    async fn store_points(&self, store_id: &str) -> Result<Option<StorePoints>, UpstreamError> {
        self.permit(Class::Read).await;
        let t = Instant::now();
        let r = self.inner.store_points(store_id).await;
        self.note("store_points", t, &r);
        r
    }
}
