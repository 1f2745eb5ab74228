//! Prometheus metrics (`GET /metrics`). Counters and histograms are updated where things
//! happen; queue and cache gauges are read from SQLite at scrape time, so they cannot drift.
//! The same registry feeds the remote-write push (`crate::telemetry`), so HQ sees what a
//! scrape of `/metrics` would.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The upstream's two budget classes (`read`, `write`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// Which certificate: `api` is the local API's TLS certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub certificate: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A gauge holding seconds or a rate (fractional).
pub type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub upstream_latency: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub queue_depth: Family<StateLabels, Gauge>,
    pub oldest_pending_age: Gauge,
    pub cache_customers: Gauge,
    pub online: Gauge,
    pub writes: Family<ResultLabels, Counter>,
    pub storage_ok: Gauge,
    pub storage_errors: Counter,
    pub db_commits: Counter,
    pub db_write_jobs: Counter,
    pub sales: Gauge,
    pub returns: Gauge,
    pub return_shortfall_points: Gauge,
    /// 1 while the upstream refuses our credentials (sync waits for an operator).
    pub auth_failed: Gauge,
    pub build_info: Family<VersionLabels, Gauge>,
    /// The rate budget's running totals per class, caught up from its snapshot at scrape.
    pub budget_granted: Family<ClassLabels, Counter>,
    pub budget_throttled: Family<ClassLabels, Counter>,
    pub budget_rate: Family<ClassLabels, FloatGauge>,
    pub feed_last_poll_age: FloatGauge,
    pub feed_oldest_mark_age: FloatGauge,
    pub feed_marked: Gauge,
    /// Hook for the API's TLS certificate: whoever loads the certificate sets its `notAfter`
    /// (unix seconds) under `certificate="api"`. No series exists until then, so a daemon
    /// without TLS never trips the expiry alert.
    pub tls_cert_expiry: Family<CertLabels, Gauge>,
    pub telemetry_sent: Counter,
    pub telemetry_dropped: Family<ReasonLabels, Counter>,
    pub telemetry_failures: Family<ReasonLabels, Counter>,
    pub telemetry_buffered: Gauge,
    pub telemetry_last_success: Gauge,
    /// When this process started, for ages that have no event yet (no feed poll so far).
    pub started: std::time::Instant,
    /// Customers whose Smaregi and easyPoints balances differ (the last cross-ledger report).
    pub ledger_differences: Gauge,
    /// Requests refused for a missing or unknown token, or from a throttled address.
    pub signin_refused: Counter,
    /// Client addresses throttled now (10 failed sign-ins within a minute).
    pub signin_throttled_addresses: Gauge,
    /// Register sales that may have counted a purchase twice with pointsd (DESIGN.md §14).
    pub possible_double_counts: Gauge,
    /// Unix seconds of the last good backup (0: none yet), and the configured interval.
    pub backup_last_success: Gauge,
    pub backup_interval: Gauge,
    /// 1 while new writes are refused for lack of disk space; the free bytes last measured.
    pub storage_below_floor: Gauge,
    pub storage_free_bytes: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pointsd");
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        let upstream_latency =
            Family::<UpstreamLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let queue_depth = Family::<StateLabels, Gauge>::default();
        let oldest_pending_age = Gauge::default();
        let cache_customers = Gauge::default();
        let online = Gauge::default();
        let writes = Family::<ResultLabels, Counter>::default();
        let storage_ok = Gauge::default();
        let backup_last_success = Gauge::default();
        let backup_interval = Gauge::default();
        let storage_below_floor = Gauge::default();
        let storage_free_bytes = Gauge::default();
        registry.register(
            "storage_below_floor",
            "1 while free space in the data dir is below [storage] min_free_mb: new writes get 507",
            storage_below_floor.clone(),
        );
        registry.register(
            "storage_free_bytes",
            "Free space on the data dir's file system at the last check (-1: not measured)",
            storage_free_bytes.clone(),
        );
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the last verified backup of the database was taken (unix seconds; 0: never)",
            backup_last_success.clone(),
        );
        registry.register(
            "backup_interval_seconds",
            "[backup] interval_s: how often a backup is due",
            backup_interval.clone(),
        );
        let storage_errors = Counter::default();
        let db_commits = Counter::default();
        let db_write_jobs = Counter::default();
        let sales = Gauge::default();
        let returns = Gauge::default();
        let return_shortfall_points = Gauge::default();
        let auth_failed = Gauge::default();
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let budget_granted = Family::<ClassLabels, Counter>::default();
        let budget_throttled = Family::<ClassLabels, Counter>::default();
        let budget_rate = Family::<ClassLabels, FloatGauge>::default();
        let feed_last_poll_age = FloatGauge::default();
        let feed_oldest_mark_age = FloatGauge::default();
        let feed_marked = Gauge::default();
        let tls_cert_expiry = Family::<CertLabels, Gauge>::default();
        let telemetry_sent = Counter::default();
        let telemetry_dropped = Family::<ReasonLabels, Counter>::default();
        let telemetry_failures = Family::<ReasonLabels, Counter>::default();
        // Every reason starts at 0, so `rate()` and the dashboard see the series from the start.
        for reason in ["expired", "refused"] {
            telemetry_dropped
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
        for reason in ["refused", "unavailable", "unreachable"] {
            telemetry_failures
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
        let telemetry_buffered = Gauge::default();
        let telemetry_last_success = Gauge::default();
        registry.register(
            "build_info",
            "Always 1; the version label says which pointsd runs",
            build_info.clone(),
        );
        registry.register(
            "upstream_auth_failed",
            "1 while the upstream refuses the credentials (sync paused until the config is fixed)",
            auth_failed.clone(),
        );
        registry.register(
            "upstream_budget_granted",
            "Requests the rate budget let through to the upstream, by class (read, write)",
            budget_granted.clone(),
        );
        registry.register(
            "upstream_throttled",
            "429 answers from the upstream (the contract's shared rate limit), by class",
            budget_throttled.clone(),
        );
        registry.register(
            "upstream_budget_rate_per_second",
            "The rate this agent paces its upstream requests at now, by class",
            budget_rate.clone(),
        );
        registry.register(
            "feed_last_poll_age_seconds",
            "Seconds since the last change-feed poll (since the start, before the first one)",
            feed_last_poll_age.clone(),
        );
        registry.register(
            "feed_oldest_mark_age_seconds",
            "Age of the oldest customer marked changed elsewhere and not re-read yet (0: none)",
            feed_oldest_mark_age.clone(),
        );
        registry.register(
            "feed_marked_customers",
            "Customers marked changed elsewhere and not re-read yet",
            feed_marked.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate stops being valid (notAfter), unix seconds",
            tls_cert_expiry.clone(),
        );
        registry.register(
            "telemetry_samples_sent",
            "Samples the remote-write receiver accepted",
            telemetry_sent.clone(),
        );
        registry.register(
            "telemetry_samples_dropped",
            "Samples given up: buffer window exceeded, or refused by the receiver (4xx)",
            telemetry_dropped.clone(),
        );
        registry.register(
            "telemetry_send_failures",
            "Remote-write requests that failed, by reason",
            telemetry_failures.clone(),
        );
        registry.register(
            "telemetry_buffered_samples",
            "Samples waiting to be sent to the remote-write receiver",
            telemetry_buffered.clone(),
        );
        registry.register(
            "telemetry_last_success_timestamp_seconds",
            "When the receiver last accepted a push, unix seconds (0: not yet)",
            telemetry_last_success.clone(),
        );
        let signin_refused = Counter::default();
        registry.register(
            "api_signin_refused",
            "API requests refused for a missing or unknown token, or from a throttled address",
            signin_refused.clone(),
        );
        let signin_throttled_addresses = Gauge::default();
        registry.register(
            "api_signin_throttled_addresses",
            "Client addresses throttled now for failed sign-ins",
            signin_throttled_addresses.clone(),
        );
        let possible_double_counts = Gauge::default();
        registry.register(
            "possible_double_counts",
            "Register sales close to a pointsd grant or redeem of the same customer (GET /v1/reconcile/doubles)",
            possible_double_counts.clone(),
        );
        let ledger_differences = Gauge::default();
        registry.register(
            "ledger_differences",
            "Customers whose Smaregi and easyPoints balances differ (last cross-ledger report)",
            ledger_differences.clone(),
        );
        registry.register("sales", "Sales recorded by this store", sales.clone());
        registry.register("returns", "Returns recorded by this store", returns.clone());
        registry.register(
            "return_shortfall_points",
            "Earned points returns could not take back (the customer no longer had them)",
            return_shortfall_points.clone(),
        );
        registry.register(
            "db_commits",
            "Group commits (one fsync each)",
            db_commits.clone(),
        );
        registry.register(
            "db_write_jobs",
            "Writes carried by those commits; jobs / commits = writes sharing one fsync",
            db_write_jobs.clone(),
        );
        registry.register(
            "storage_ok",
            "1 when the last database commit worked, 0 when storage is failing (e.g. disk full)",
            storage_ok.clone(),
        );
        registry.register(
            "storage_errors",
            "Database commits or writes that failed for storage reasons",
            storage_errors.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests to the upstream by operation and outcome",
            upstream_requests.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Upstream request latency by operation and outcome",
            upstream_latency.clone(),
        );
        registry.register(
            "queue_transactions",
            "Transactions in the outbox by state",
            queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_pending_age_seconds",
            "Age of the oldest transaction not yet confirmed upstream",
            oldest_pending_age.clone(),
        );
        registry.register(
            "cache_customers",
            "Customers in the local cache",
            cache_customers.clone(),
        );
        registry.register(
            "upstream_online",
            "1 when the upstream answered recently, else 0",
            online.clone(),
        );
        registry.register(
            "api_writes",
            "Transaction requests from registers by result",
            writes.clone(),
        );
        Metrics {
            registry,
            upstream_requests,
            upstream_latency,
            queue_depth,
            oldest_pending_age,
            cache_customers,
            online,
            writes,
            storage_ok,
            backup_last_success,
            backup_interval,
            storage_below_floor,
            storage_free_bytes,
            storage_errors,
            db_commits,
            db_write_jobs,
            sales,
            returns,
            return_shortfall_points,
            auth_failed,
            build_info,
            budget_granted,
            budget_throttled,
            budget_rate,
            feed_last_poll_age,
            feed_oldest_mark_age,
            feed_marked,
            tls_cert_expiry,
            telemetry_sent,
            telemetry_dropped,
            telemetry_failures,
            telemetry_buffered,
            telemetry_last_success,
            started: std::time::Instant::now(),
            ledger_differences,
            signin_refused,
            signin_throttled_addresses,
            possible_double_counts,
        }
    }

    pub fn observe_upstream(&self, op: &'static str, outcome: &'static str, secs: f64) {
        let l = UpstreamLabels { op, outcome };
        self.upstream_requests.get_or_create(&l).inc();
        self.upstream_latency.get_or_create(&l).observe(secs);
    }

    pub fn count_write(&self, result: &'static str) {
        self.writes.get_or_create(&ResultLabels { result }).inc();
    }

    /// Moves `counter` up to `total`, a running total kept elsewhere (counters only rise).
    pub fn catch_up(counter: &Counter, total: u64) {
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
