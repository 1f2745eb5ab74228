//! Smapify merchants (DESIGN.md §12), against the real binary and the simulator's easyPoints:
//! expiry from easyPoints at the register and offline, the member-code mapping, the
//! cross-ledger report (a lost change after the settle time, never an in-flight one), an
//! easyPoints outage that never blocks a look-up, config check, and secrets kept out of logs
//! and answers. The agent never writes to easyPoints (the simulator's request log).

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use pointsd::sim::{EpFaults, SimHandle, SimOptions, SmapifyOptions};
use serde_json::{Value, json};

const EP_SECRET: &str = "sim-ep-secret";
const SMAREGI_SECRET: &str = "sim-secret";

async fn smapify_sim(delay_ms: u64, code_offset: i64, check_digit: bool) -> SimHandle {
    SimHandle::start(
        loopback(),
        loopback(),
        SimOptions {
            customers: 8,
            smapify: Some(SmapifyOptions {
                delay_ms,
                code_offset,
                check_digit,
                ..SmapifyOptions::default()
            }),
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim starts")
}

/// The daemon's config: Smaregi and easyPoints both at `sim`, a manager token, look-ups that
/// always read (lookup_refresh_after_s = 0) within a generous budget.
fn daemon_config(
    dir: &Path,
    sim: &SimHandle,
    port: u16,
    easypoints_extra: &str,
    api_extra: &str,
) -> std::path::PathBuf {
    let rest = format!(
        r#"[[api.tokens]]
name = "manager"
token = "{MANAGER_TOKEN}"
role = "manager"
[sync]
probe_interval_s = 1
backoff_initial_ms = 100
backoff_max_ms = 500
{upstream}
[easypoints]
public_key = "sim-ep-public"
secret_key = "{EP_SECRET}"
api_base = "{ep}"
{easypoints_extra}
"#,
        upstream = smaregi_upstream(&sim.url(), SMAREGI_SECRET, 1_000),
        ep = sim.easypoints_url(),
    );
    write_config(
        dir,
        "pointsd.toml",
        "store-ep",
        port,
        api_extra,
        REGISTER_TOKEN,
        &rest,
    )
}

struct Agent {
    proc: DaemonProcess,
    http: reqwest::Client,
    data: std::path::PathBuf,
}

impl Agent {
    async fn start(dir: &Path, sim: &SimHandle, easypoints_extra: &str) -> Agent {
        let api = "lookup_refresh_after_s = 0\nlookup_refresh_budget_ms = 2000";
        Agent::start_with(dir, sim, easypoints_extra, api).await
    }

    async fn start_with(
        dir: &Path,
        sim: &SimHandle,
        easypoints_extra: &str,
        api_extra: &str,
    ) -> Agent {
        let port = free_port();
        let cfg = daemon_config(dir, sim, port, easypoints_extra, api_extra);
        let data = dir.join("data");
        let proc = DaemonProcess::start(&cfg, &data, port, "pointsd=debug,info");
        proc.wait_healthy(Duration::from_secs(20)).await;
        let a = Agent {
            proc,
            http: pointsd::http_client_builder()
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            data,
        };
        a.wait_status("online with a full cache", |s| {
            s["online"] == json!(true) && s["cache"]["last_full_refresh_at"].is_string()
        })
        .await;
        a
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.proc.url))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, REGISTER_TOKEN, None)
            .await
    }

    async fn txn(&self, id: &str, kind: &str, customer: &str, points: i64) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/transactions",
            REGISTER_TOKEN,
            Some(json!({"txn_id": id, "kind": kind, "customer_id": customer, "points": points})),
        )
        .await
    }

    async fn wait_status(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (_, s) = self.get("/v1/status").await;
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn report(&self, token: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/reconcile/ledgers",
            token,
            Some(json!({})),
        )
        .await
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A sample customer with points in both ledgers.
fn customer_with_points(sim: &SimHandle, skip: &[&str]) -> String {
    (1..=8)
        .map(|i| i.to_string())
        .find(|id| !skip.contains(&id.as_str()) && sim.balance(id).unwrap_or(0) > 10)
        .expect("a sample customer with points")
}

fn assert_no_write_to_easypoints(sim: &SimHandle) {
    let log = sim.ep_requests();
    assert!(!log.is_empty(), "the agent read easyPoints");
    let writes: Vec<_> = log.iter().filter(|r| r.method != "GET").collect();
    assert!(
        writes.is_empty(),
        "the agent wrote to easyPoints: {writes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_from_easypoints_is_shown_and_enforced_offline() {
    let sim = smapify_sim(300, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), &sim, "").await;
    let expiring = customer_with_points(&sim, &[]);
    let other = customer_with_points(&sim, &[&expiring]);
    let shopify = sim.shopify_id(&expiring).unwrap();

    // Online: the look-up reads easyPoints and shows its expiry (about a year out).
    let (st, v) = a.get(&format!("/v1/customers/{expiring}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["expires_source"], "easypoints", "{v}");
    let ep = sim.ep_customer(&shopify).unwrap();
    let shown = pointsd::clock::parse_stamp(v["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(shown / 1000, ep.expires_at_ms / 1000, "{v}");
    assert_eq!(v["easypoints"]["balance"], ep.point_balance);
    assert_eq!(v["easypoints"]["shopify_customer_id"], shopify.as_str());
    assert_eq!(v["easypoints"]["expiration_delay"], 12);
    assert_eq!(v["expired"], false);

    // easyPoints will zero the balance in 3 s for inactivity; a look-up now caches that.
    sim.ep_expire_in(&shopify, 3);
    let (_, v) = a.get(&format!("/v1/customers/{expiring}")).await;
    let shown = pointsd::clock::parse_stamp(v["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        shown / 1000,
        sim.ep_customer(&shopify).unwrap().expires_at_ms / 1000
    );
    assert_eq!(v["expired"], false);
    a.get(&format!("/v1/customers/{other}")).await;

    // The link drops; the expiry passes while the agent is offline.
    set_faults(&sim, |f| f.refuse = true);
    a.wait_status("offline", |s| s["online"] == json!(false))
        .await;
    while now_ms() <= shown + 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (_, v) = a.get(&format!("/v1/customers/{expiring}")).await;
    assert_eq!(v["expired"], true, "{v}");
    let (st, v) = a.txn("ep-expired-redeem", "redeem", &expiring, 1).await;
    assert_eq!(st, 409, "expired points are not spendable offline: {v}");
    // The same redeem for a customer whose points have not expired is accepted (queued).
    let (st, v) = a.txn("ep-ok-redeem", "redeem", &other, 1).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["status"], "queued", "{v}");

    assert_no_write_to_easypoints(&sim);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn member_codes_map_with_offset_and_check_digit() {
    let sim = smapify_sim(300, 1_000_000, true).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(
        dir.path(),
        &sim,
        "code_offset = 1000000\ncode_check_digit = \"trailing\"",
    )
    .await;
    let id = customer_with_points(&sim, &[]);
    let shopify = sim.shopify_id(&id).unwrap();
    let code = sim.customer(&id).unwrap().code;
    assert_ne!(
        code, shopify,
        "the member code carries offset and check digit"
    );
    let (st, v) = a.get(&format!("/v1/customers?code={code}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["easypoints"]["shopify_customer_id"],
        shopify.as_str(),
        "{v}"
    );
    assert_eq!(v["expires_source"], "easypoints");
    assert_no_write_to_easypoints(&sim);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_lists_a_lost_change_after_the_settle_time_never_an_in_flight_one() {
    let sim = smapify_sim(300, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), &sim, "settle_s = 2").await;
    let lost = customer_with_points(&sim, &[]);
    let carried = customer_with_points(&sim, &[&lost]);
    let pending = customer_with_points(&sim, &[&lost, &carried]);

    // Smapify loses the change of the first earn; the second is carried.
    sim.set_ep_faults(EpFaults {
        lose_next: 1,
        ..EpFaults::default()
    });
    let (st, v) = a.txn("ep-lost", "earn", &lost, 100).await;
    assert_eq!((st, v["status"].as_str()), (201, Some("confirmed")), "{v}");
    let (st, v) = a.txn("ep-carried", "earn", &carried, 50).await;
    assert_eq!((st, v["status"].as_str()), (201, Some("confirmed")), "{v}");
    // An online order Smapify loses, for a customer whose earn here cannot reach Smaregi
    // (still in flight): the two ledgers differ, but this store's delta is on its way.
    set_faults(&sim, |f| f.add_status = Some(503));
    sim.set_ep_faults(EpFaults {
        lose_next: 1,
        ..EpFaults::default()
    });
    sim.ep_order(&sim.shopify_id(&pending).unwrap(), 30)
        .unwrap();
    let (st, v) = a.txn("ep-pending", "earn", &pending, 7).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["status"], "queued", "{v}");

    // Right away: the lost change is within the settle time, so not listed yet.
    let (st, r) = a.report(MANAGER_TOKEN).await;
    assert_eq!(st, 200, "{r}");
    assert!(r["run_at"].is_string() && r["compared"].is_number(), "{r}");
    assert_eq!(r["differences"], json!([]), "{r}");
    assert!(r["settling"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["in_flight"].as_u64().unwrap() >= 1, "{r}");

    // After the settle time it is, with both balances and this store's delta; the carried
    // change and the in-flight one are not.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (st, r) = a.report(MANAGER_TOKEN).await;
    assert_eq!(st, 200, "{r}");
    let diffs = r["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{r}");
    let d = &diffs[0];
    assert_eq!(d["customer_id"], lost.as_str());
    assert_eq!(d["smaregi"], sim.balance(&lost).unwrap());
    let ep = sim.ep_customer(&sim.shopify_id(&lost).unwrap()).unwrap();
    assert_eq!(d["easypoints"], ep.point_balance);
    assert_eq!(d["difference"], 100);
    assert!(d["first_seen_at"].is_string());
    assert_eq!(d["recent_deltas"][0]["txn_id"], "ep-lost", "{d}");
    assert_eq!(d["recent_deltas"][0]["delta"], 100);
    assert!(r["in_flight"].as_u64().unwrap() >= 1, "{r}");
    let m = a
        .http
        .get(format!("{}/metrics", a.proc.url))
        .bearer_auth(REGISTER_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&m, "pointsd_ledger_differences", None),
        Some(1.0),
        "{m}"
    );

    // The last report is kept; running one takes a manager.
    let (st, last) = a.get("/v1/reconcile/ledgers").await;
    assert_eq!(st, 200);
    assert_eq!(last["differences"], r["differences"]);
    let (st, v) = a.report(REGISTER_TOKEN).await;
    assert_eq!(st, 403, "{v}");

    // The CLI prints it as a table and exits 2 (differences found).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args([
            "reconcile",
            "--ledgers",
            "--last",
            "--url",
            &a.proc.url,
            "--token",
            MANAGER_TOKEN,
        ])
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("EASYPOINTS") && text.contains("+100"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(&format!("{lost} "))),
        "{text}"
    );

    assert_no_write_to_easypoints(&sim);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_doctor_say_when_smapify_is_not_carrying_our_changes() {
    let sim = smapify_sim(200, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), &sim, "settle_s = 1").await;
    let id = customer_with_points(&sim, &[]);
    // Smapify is not running: this store's change never reaches easyPoints.
    sim.set_ep_faults(EpFaults {
        paused: true,
        ..EpFaults::default()
    });
    let (st, v) = a.txn("ep-stuck", "earn", &id, 5).await;
    assert_eq!((st, v["status"].as_str()), (201, Some("confirmed")), "{v}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, r) = a.report(MANAGER_TOKEN).await;
    let warning = "changes to Smaregi are not reaching easyPoints — is Smapify's point sync on?";
    assert_eq!(r["smapify"]["carrying"], false, "{r}");
    assert_eq!(r["smapify"]["warning"], warning, "{r}");
    let (_, s) = a.get("/v1/status").await;
    assert_eq!(s["easypoints"]["smapify"]["warning"], warning, "{s}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["doctor", "--config"])
        .arg(dir.path().join("pointsd.toml"))
        .arg("--data-dir")
        .arg(&a.data)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("WARN") && l.contains("smapify") && l.contains(warning)),
        "{text}"
    );

    // Smapify runs again and carries what waited: the next check says so.
    sim.set_ep_faults(EpFaults::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, r) = a.report(MANAGER_TOKEN).await;
    assert_eq!(r["smapify"]["carrying"], true, "{r}");
    assert!(r["smapify"]["warning"].is_null(), "{r}");
    assert_no_write_to_easypoints(&sim);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn easypoints_down_or_slow_never_blocks_a_look_up_and_secrets_stay_out() {
    let sim = smapify_sim(300, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), &sim, "").await;
    let id = customer_with_points(&sim, &[]);

    // Down: the look-up answers from Smaregi, with no easyPoints figure yet.
    sim.set_ep_faults(EpFaults {
        down: true,
        ..EpFaults::default()
    });
    let (st, v) = a.get(&format!("/v1/customers/{id}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["balance"]["confirmed"], sim.balance(&id).unwrap());
    assert!(v["easypoints"].is_null(), "{v}");
    // Slow far beyond the budget (2 s): the answer still comes (the client gives up at 20 s).
    sim.set_ep_faults(EpFaults {
        latency_ms: 60_000,
        ..EpFaults::default()
    });
    let (st, v) = a.get(&format!("/v1/customers/{id}")).await;
    assert_eq!(st, 200, "{v}");
    sim.set_ep_faults(EpFaults::default());

    // Nothing the agent answers or logs holds a secret.
    let (_, status) = a.get("/v1/status").await;
    let (_, metrics) = a.get("/metrics").await;
    let body = format!("{status}{metrics}");
    assert!(!body.contains(EP_SECRET), "{body}");
    // Stopped first, so every line is on disk.
    let mut a = a;
    a.proc.terminate();
    assert!(a.proc.wait_exit(Duration::from_secs(20)).await.is_some());
    let mut logs = String::new();
    for e in std::fs::read_dir(a.data.join("logs")).unwrap() {
        logs.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
    }
    assert!(
        logs.contains("easyPoints"),
        "debug logs mention easyPoints reads"
    );
    assert!(
        !logs.contains(EP_SECRET),
        "the easyPoints secret is in the logs"
    );
    sim.shutdown().await;
}

#[test]
fn config_check_names_easypoints_problems_without_showing_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        "bad.toml",
        "s1",
        free_port(),
        "",
        REGISTER_TOKEN,
        "[easypoints]\nsecret_key = \"very-secret-ep-key\"\napi_base = \"ftp://x\"\nmax_requests_per_second = 0\nsettle_s = 999999\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["config", "check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    for key in [
        "easypoints.public_key",
        "easypoints.api_base",
        "easypoints.max_requests_per_second",
        "easypoints.settle_s",
    ] {
        assert!(text.contains(key), "{key} missing: {text}");
    }
    assert!(!text.contains("very-secret-ep-key"), "{text}");
    // A secret of the wrong type is not echoed either.
    let p = write_config(
        dir.path(),
        "bad2.toml",
        "s1",
        free_port(),
        "",
        REGISTER_TOKEN,
        "[easypoints]\npublic_key = \"pk\"\nsecret_key = 123456789987654321\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["config", "check", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(text.contains("easypoints.secret_key"), "{text}");
    assert!(!text.contains("123456789987654321"), "{text}");
}

/// easyPoints owns the expiry and Smaregi does not know it: once easyPoints says the points
/// expired, a redeem (or a sale using points) is refused online too — 409 `points_expired`
/// with the date — and nothing is sent, while Smaregi (Smapify has not carried the expiry
/// yet) would still have accepted it.
#[tokio::test(flavor = "multi_thread")]
async fn points_easypoints_says_expired_are_refused_online_too() {
    // Smapify carries the expiry to Smaregi only after a minute.
    let sim = smapify_sim(60_000, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), &sim, "").await;
    let id = customer_with_points(&sim, &[]);
    let shopify = sim.shopify_id(&id).unwrap();
    let smaregi_before = sim.balance(&id).unwrap();
    sim.ep_expire_in(&shopify, 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Online, the look-up reads easyPoints: expired.
    let (st, v) = a.get(&format!("/v1/customers/{id}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["expired"], true, "{v}");
    assert_eq!(a.get("/v1/status").await.1["online"], true);
    let adds = sim.adds().len();

    let (st, v) = a.txn("ep-online-expired", "redeem", &id, 10).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["code"], "points_expired", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("expired on 20"),
        "the date: {v}"
    );
    let (st, v) = a
        .call(
            reqwest::Method::POST,
            "/v1/sales",
            REGISTER_TOKEN,
            Some(json!({"sale_id": "ep-sale-1", "customer_id": id, "amount": 3000, "points_used": 10})),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("points_expired")),
        "{v}"
    );
    let (st, q) = a
        .call(
            reqwest::Method::POST,
            "/v1/sales/quote",
            REGISTER_TOKEN,
            Some(json!({"customer_id": id, "amount": 3000})),
        )
        .await;
    assert_eq!(st, 200, "{q}");
    assert_eq!(q["max_points_used"], 0, "{q}");
    // Nothing sent: Smaregi still holds the points, untouched by us.
    assert_eq!(sim.adds().len(), adds);
    assert_eq!(sim.balance(&id), Some(smaregi_before));
    assert_no_write_to_easypoints(&sim);
    sim.shutdown().await;
}

/// IT runs `pointsd reconcile --ledgers` once: a change of this store that Smapify lost is
/// listed by that one run once the settle time has passed since the change reached Smaregi,
/// even though no earlier report saw the difference.
#[tokio::test(flavor = "multi_thread")]
async fn one_report_run_after_the_settle_time_lists_a_lost_change() {
    let sim = smapify_sim(300, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), &sim, "settle_s = 3").await;
    let lost = customer_with_points(&sim, &[]);
    sim.set_ep_faults(EpFaults {
        lose_next: 1,
        ..EpFaults::default()
    });
    let (st, v) = a.txn("ep-lost-once", "earn", &lost, 100).await;
    assert_eq!((st, v["status"].as_str()), (201, Some("confirmed")), "{v}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (st, r) = a.report(MANAGER_TOKEN).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["settling"], 0, "{r:#}");
    let diffs = r["differences"].as_array().unwrap();
    assert!(
        diffs
            .iter()
            .any(|d| d["customer_id"] == lost.as_str() && d["difference"] == 100),
        "{r:#}"
    );
    assert_no_write_to_easypoints(&sim);
    sim.shutdown().await;
}

/// The first online look-up of a Smapify customer after start shows easyPoints' expiry,
/// within the default look-up budget (the background Smapify check must not take the
/// easyPoints slot a cashier's look-up needs).
#[tokio::test(flavor = "multi_thread")]
async fn the_first_look_up_after_start_shows_the_expiry() {
    let sim = smapify_sim(300, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start_with(dir.path(), &sim, "", "").await;
    let id = customer_with_points(&sim, &[]);
    let (st, v) = a.get(&format!("/v1/customers/{id}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["expires_source"], "easypoints", "{v:#}");
    assert!(v["expires_at"].is_string(), "{v:#}");
    sim.shutdown().await;
}
