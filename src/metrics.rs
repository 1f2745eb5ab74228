//! Prometheus metrics (`GET /metrics`). Counters and histograms are updated where things
//! happen; queue and cache gauges are read from SQLite at scrape time, so they cannot drift.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
    /// Customers whose Smaregi and easyPoints balances differ (the last cross-ledger report).
    pub ledger_differences: Gauge,
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
        let storage_errors = Counter::default();
        let db_commits = Counter::default();
        let db_write_jobs = Counter::default();
        let sales = Gauge::default();
        let returns = Gauge::default();
        let return_shortfall_points = Gauge::default();
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
            storage_errors,
            db_commits,
            db_write_jobs,
            sales,
            returns,
            return_shortfall_points,
            ledger_differences,
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

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
