//! HQ's view of the fleet (DESIGN.md §13), with the real tools: three agents push their metrics
//! (Prometheus remote write) into a real Prometheus (Debian's package, `.ci/run` installs it)
//! started with its remote-write receiver on loopback, and the test asks Prometheus's HTTP API
//! what arrived: every store's series with its `store_id`, `online = 0` for a store cut from
//! its upstream, and the samples buffered during a push outage once Prometheus is back. The
//! shipped alert rules pass `promtool check rules` and their unit tests, and the shipped
//! dashboard and rules ask only for metrics pointsd exports.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestDaemon, free_port, set_faults, skip_or_fail, start_sim, test_config};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A real Prometheus with only its remote-write receiver (no scrape jobs), on loopback.
struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(port: u16, dir: &Path) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
        let mut p = Prometheus {
            child: None,
            port,
            dir: dir.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
            http: pointsd::http_client_builder().no_proxy().build().unwrap(),
        };
        p.spawn().await;
        p
    }

    /// Starts (again) on the same port and storage.
    async fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("prometheus.log"))
            .unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(r) = self.http.get(format!("{}/-/ready", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("prometheus exited ({st}):\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus not ready within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// SIGTERM (a clean stop: its WAL is on disk) and wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// `GET /api/v1/query`: the result array.
    async fn query(&self, q: &str, at: Option<f64>) -> Vec<Value> {
        let mut params = vec![("query", q.to_string())];
        if let Some(t) = at {
            params.push(("time", format!("{t:.3}")));
        }
        let r = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&params)
            .send()
            .await
            .expect("query prometheus");
        let v: Value = r.json().await.expect("prometheus answers JSON");
        assert_eq!(v["status"], json!("success"), "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `q` until `pred` holds on its result, or fails the test.
    async fn wait_for(&self, what: &str, q: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let r = self.query(q, None).await;
            if pred(&r) {
                return r;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("timed out waiting for {what}: {q} gave {r:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("sample value")
}

fn store_of(sample: &Value) -> String {
    sample["metric"]["store_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[cfg_attr(
    not(have_prometheus),
    ignore = "requires prometheus and promtool (apt-get install prometheus; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_push_into_a_real_prometheus_and_catch_up_after_an_outage() {
    let t = "three_stores_push_into_a_real_prometheus_and_catch_up_after_an_outage";
    if !works("prometheus", &["--version"]) {
        skip_or_fail(
            t,
            "prometheus is not installed (.ci/run installs Debian's package)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let prom_dir = tmp.path().join("prom");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let mut prom = Prometheus::start(port, &prom_dir).await;
    let write_url = format!("{}/api/v1/write", prom.url);

    // Stores a and b share one upstream; c has its own, so it can be cut alone.
    let sim_ab = start_sim(20).await;
    let sim_c = start_sim(20).await;
    let mut daemons = Vec::new();
    for (id, sim) in [
        ("store-a", &sim_ab),
        ("store-b", &sim_ab),
        ("store-c", &sim_c),
    ] {
        let mut c = test_config(sim, id);
        c.telemetry.remote_write_url = Some(write_url.clone());
        c.telemetry.interval_s = 1;
        c.telemetry.chain = Some("test-chain".into());
        c.telemetry.labels.insert("region".into(), "kanto".into());
        daemons.push(TestDaemon::start(c, tmp.path().join(id), true).await);
    }

    // Every store's series arrive, each with its store_id, the chain and the extra label.
    let stores: BTreeSet<String> = ["store-a", "store-b", "store-c"].map(String::from).into();
    let r = prom
        .wait_for("every store's build info", "pointsd_build_info", |r| {
            r.iter().map(store_of).collect::<BTreeSet<_>>() == stores
        })
        .await;
    for s in &r {
        assert_eq!(s["metric"]["chain"], json!("test-chain"), "{s}");
        assert_eq!(s["metric"]["region"], json!("kanto"), "{s}");
        assert_eq!(
            s["metric"]["version"],
            json!(env!("CARGO_PKG_VERSION")),
            "{s}"
        );
    }
    for name in [
        "pointsd_upstream_online",
        "pointsd_queue_oldest_pending_age_seconds",
        "pointsd_storage_ok",
        "pointsd_feed_last_poll_age_seconds",
        "pointsd_upstream_budget_granted_total",
    ] {
        prom.wait_for(name, name, |r| {
            r.iter().map(store_of).collect::<BTreeSet<_>>() == stores
        })
        .await;
    }
    let q = prom
        .wait_for(
            "the queue by state",
            "pointsd_queue_transactions{state=\"needs_review\"}",
            |r| r.len() == 3,
        )
        .await;
    assert!(q.iter().all(|s| value_of(s) == 0.0), "{q:?}");
    let status = daemons[0].status().await;
    assert_eq!(status["telemetry"]["enabled"], json!(true), "{status:#}");
    assert!(
        status["telemetry"]["last_success_at"].is_string(),
        "{status:#}"
    );

    // Store c's upstream goes away: HQ sees it offline, and only it.
    set_faults(&sim_c, |f| f.refuse = true);
    // (Polled as a whole: on a loaded machine a store's own link can blink for a moment.)
    prom.wait_for(
        "store-c offline, a and b online",
        "pointsd_upstream_online",
        |r| {
            let by_store: std::collections::BTreeMap<String, f64> =
                r.iter().map(|s| (store_of(s), value_of(s))).collect();
            by_store.get("store-c") == Some(&0.0)
                && by_store.get("store-a") == Some(&1.0)
                && by_store.get("store-b") == Some(&1.0)
        },
    )
    .await;

    // Push outage: Prometheus stops; the agents buffer; it comes back on the same port and
    // storage, and the samples taken while it was away arrive.
    prom.stop();
    let outage_from = now_s();
    let during = daemons[0]
        .wait_for(
            "telemetry to report the failed push",
            Duration::from_secs(30),
            |s| {
                s["telemetry"]["last_error"].is_string()
                    && s["telemetry"]["buffered_samples"].as_u64() > Some(0)
            },
        )
        .await;
    assert!(
        during["telemetry"]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{during:#}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let outage_to = now_s();
    let buffered = daemons[0].status().await["telemetry"]["buffered_samples"]
        .as_u64()
        .unwrap();
    assert!(
        buffered > during["telemetry"]["buffered_samples"].as_u64().unwrap(),
        "the buffer grows during the outage"
    );
    prom.spawn().await;

    // The raw samples of the outage window, per store.
    let window = (outage_to - outage_from).ceil() as u64;
    let q = format!("pointsd_build_info[{window}s]");
    let start = Instant::now();
    loop {
        let r = prom.query(&q, Some(outage_to)).await;
        let per_store: Vec<(String, usize)> = r
            .iter()
            .map(|s| {
                let n = s["values"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .filter(|p| {
                                p[0].as_f64()
                                    .is_some_and(|t| t > outage_from && t <= outage_to)
                            })
                            .count()
                    })
                    .unwrap_or(0);
                (store_of(s), n)
            })
            .collect();
        // About one sample a second each for the whole window (at least 3 of ~5).
        if per_store.len() == 3 && per_store.iter().all(|(_, n)| *n >= 3) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the outage's samples did not arrive: {per_store:?}\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = daemons[0]
        .wait_for("telemetry to recover", Duration::from_secs(30), |s| {
            s["telemetry"]["buffered_samples"].as_u64() < Some(buffered)
                && s["telemetry"]["next_attempt_at"].is_null()
        })
        .await;
    assert_eq!(after["telemetry"]["dropped_samples"], json!(0), "{after:#}");
    // The push outage was not an upstream (sync) error.
    assert!(
        !after["upstream"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("remote-write"),
        "{after:#}"
    );
    // Its own metrics say the same.
    let m = daemons[0].metrics_text().await;
    assert!(
        common::metric(
            &m,
            "pointsd_telemetry_send_failures_total",
            Some("unreachable")
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );

    for d in &mut daemons {
        d.stop().await;
    }
    prom.stop();
}

#[cfg_attr(
    not(have_prometheus),
    ignore = "requires prometheus and promtool (apt-get install prometheus; .ci/run does)"
)]
#[test]
fn shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let t = "shipped_alert_rules_pass_promtool_and_their_unit_tests";
    if !works("promtool", &["--version"]) {
        skip_or_fail(
            t,
            "promtool is not installed (package prometheus; .ci/run installs it)",
        );
        return;
    }
    let dir = repo().join("installers/prometheus");
    for args in [
        ["check", "rules", "pointsd-alerts.yml"],
        ["test", "rules", "pointsd-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert the rules define has a unit test.
    let rules = std::fs::read_to_string(dir.join("pointsd-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("pointsd-alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 11, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "{a} has no unit test"
        );
    }
}

/// Metric names (`pointsd_…`) in a text, in order of appearance.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("pointsd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Part of a longer identifier (e.g. `var-pointsd_x`) does not count.
        let before = rest[..i].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Every sample name `/metrics` can show: from its `# TYPE` lines (so families with no series
/// yet count too), with the suffixes each type's samples carry.
fn exported_names(metrics: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(name), Some(kind)) = (f.next(), f.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_query_only_metrics_pointsd_exports() {
    let sim = start_sim(5).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start(test_config(&sim, "store-m"), tmp.path().join("d"), true).await;
    let mut exported = exported_names(&d.metrics_text().await);
    d.stop().await;
    // The certificate's expiry is a hook: its series exists once the API's TLS certificate is
    // loaded and sets it (this daemon serves plain HTTP on loopback).
    let hooked = pointsd::metrics::Metrics::new();
    hooked
        .tls_cert_expiry
        .get_or_create(&pointsd::metrics::CertLabels { certificate: "api" })
        .set(1);
    exported.extend(exported_names(&hooked.encode()));
    for needed in [
        "pointsd_build_info",
        "pointsd_upstream_online",
        "pointsd_upstream_auth_failed",
        "pointsd_upstream_throttled_total",
        "pointsd_upstream_requests_total",
        "pointsd_feed_last_poll_age_seconds",
        "pointsd_feed_oldest_mark_age_seconds",
        "pointsd_tls_certificate_expiry_timestamp_seconds",
        "pointsd_telemetry_samples_dropped_total",
    ] {
        assert!(
            exported.contains(needed),
            "{needed} not exported: {exported:?}"
        );
    }

    let path = repo().join("installers/grafana/pointsd-fleet.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    assert_eq!(dash["uid"], json!("pointsd-fleet"));
    // Drill-down: a store variable every per-store panel filters on.
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == json!("store")), "{vars:?}");
    let panels = dash["panels"].as_array().unwrap();
    assert!(
        panels
            .iter()
            .any(|p| p["type"] == json!("table") && p["title"] == json!("Stores")),
        "no table of stores"
    );
    let mut exprs = Vec::new();
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => collect(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dash, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    let mut used = BTreeSet::new();
    for e in &exprs {
        assert!(
            e.contains("pointsd_"),
            "a query without a pointsd metric: {e}"
        );
        used.extend(metric_names(e));
    }
    let rules =
        std::fs::read_to_string(repo().join("installers/prometheus/pointsd-alerts.yml")).unwrap();
    used.extend(metric_names(&rules));
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or the rules query metrics pointsd does not export: {unknown:?}"
    );
}

/// What a scripted receiver saw: each request's headers and decoded body.
#[derive(Clone, Default)]
struct Seen {
    requests: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, WriteRequest)>>>,
    /// The status to answer with.
    answer: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

use pointsd::telemetry::remote_write::{self, WriteRequest};

async fn scripted_receiver(seen: Seen) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/api/v1/write",
        post(
            |axum::extract::State(seen): axum::extract::State<Seen>,
             headers: axum::http::HeaderMap,
             body: axum::body::Bytes| async move {
                let req = remote_write::decode(&body).expect("a snappy WriteRequest");
                seen.requests.lock().unwrap().push((headers, req));
                let status = seen.answer.load(std::sync::atomic::Ordering::SeqCst);
                axum::http::StatusCode::from_u16(status).unwrap()
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(common::loopback())
        .await
        .unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app.with_state(seen)).await });
    url
}

/// The oldest sample timestamp of a request.
fn oldest(req: &WriteRequest) -> i64 {
    req.timeseries
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
        .min()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_dropped_and_counted_an_unavailable_one_is_retried() {
    let seen = Seen::default();
    seen.answer.store(503, std::sync::atomic::Ordering::SeqCst);
    let url = scripted_receiver(seen.clone()).await;
    let sim = start_sim(5).await;
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("telemetry_token");
    std::fs::write(&token_file, "hq-push-token-0123456789\n").unwrap();
    let mut c = test_config(&sim, "store-r");
    c.telemetry.remote_write_url = Some(url);
    c.telemetry.interval_s = 1;
    c.telemetry.bearer_token_file = Some(token_file);
    // The daemon reads secret files the way `Config::load` does.
    assert!(c.read_secret_files().is_ok());
    let mut d = TestDaemon::start(c, tmp.path().join("d"), true).await;

    // 503: the same oldest batch comes again (retried), and nothing is dropped.
    let start = Instant::now();
    while seen.requests.lock().unwrap().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "no retry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let r = seen.requests.lock().unwrap();
        assert_eq!(oldest(&r[0].1), oldest(&r[1].1), "a 503 is retried");
        let h = &r[0].0;
        assert_eq!(h["content-encoding"], "snappy");
        assert_eq!(h["content-type"], "application/x-protobuf");
        assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(h["authorization"], "Bearer hq-push-token-0123456789");
        // Every series carries the store, its labels sorted, and a __name__.
        for s in &r[0].1.timeseries {
            let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
            assert!(names.is_sorted(), "{names:?}");
            assert!(names.contains(&"__name__"), "{names:?}");
            assert!(
                s.labels
                    .iter()
                    .any(|l| l.name == "store_id" && l.value == "store-r"),
                "{s:?}"
            );
        }
    }
    let s = d.status().await;
    assert_eq!(s["telemetry"]["dropped_samples"], json!(0), "{s:#}");
    assert!(
        s["telemetry"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 503")),
        "{s:#}"
    );
    // A failing push is not an upstream problem.
    assert_eq!(s["online"], json!(true), "{s:#}");
    assert!(s["upstream"]["last_error"].is_null(), "{s:#}");

    // 400: the batch is given up and counted; the next request starts after it.
    seen.answer.store(400, std::sync::atomic::Ordering::SeqCst);
    let refused_from = seen.requests.lock().unwrap().len();
    let s = d
        .wait_for("a refused batch dropped", Duration::from_secs(30), |s| {
            s["telemetry"]["dropped_samples"].as_u64() > Some(0)
        })
        .await;
    let dropped = s["telemetry"]["dropped_samples"].as_u64().unwrap();
    seen.answer.store(204, std::sync::atomic::Ordering::SeqCst);
    let s = d
        .wait_for("pushes accepted again", Duration::from_secs(30), |s| {
            s["telemetry"]["buffered_samples"] == json!(0)
                && s["telemetry"]["sent_samples"].as_u64() > Some(0)
        })
        .await;
    assert_eq!(
        s["telemetry"]["dropped_samples"].as_u64(),
        Some(dropped),
        "{s:#}"
    );
    {
        let r = seen.requests.lock().unwrap();
        let refused = oldest(&r[refused_from].1);
        assert!(
            r[refused_from + 1..]
                .iter()
                .all(|(_, q)| oldest(q) > refused),
            "a refused batch is never sent again"
        );
    }
    let m = d.metrics_text().await;
    assert!(
        common::metric(
            &m,
            "pointsd_telemetry_samples_dropped_total",
            Some("refused")
        )
        .is_some_and(|n| n == dropped as f64),
        "{m}"
    );
    assert!(
        common::metric(
            &m,
            "pointsd_telemetry_send_failures_total",
            Some("unavailable")
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    d.stop().await;
}
