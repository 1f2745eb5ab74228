//! The sync engine over real loopback HTTP against the simulator: one test per row of the
//! failure table (DESIGN.md §5) plus the exactly-once, ordering, restart, multi-store,
//! reconcile and outage scenarios. Every assertion is on what a user can see: the
//! simulator's balances and applied adds (the upstream truth), transaction states through
//! `GET /v1/transactions/{id}`, and the queue counts in `/v1/status`.

use crate::common;
use common::adds_for;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use pointsd::clock::Clock;
use pointsd::config::Config;
use pointsd::sim::SimHandle;
use serde_json::{Value, json};

/// One simulator and one daemon in its own temp dir.
struct Env {
    sim: SimHandle,
    d: TestDaemon,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(customers: u32, tweak: impl FnOnce(&mut Config)) -> Env {
        let sim = start_sim(customers).await;
        let mut c = test_config(&sim, "store-sync");
        tweak(&mut c);
        let dir = tempfile::tempdir().unwrap();
        let d = TestDaemon::start(c, dir.path().join("data"), true).await;
        Env { sim, d, _dir: dir }
    }

    async fn stop(mut self) {
        self.d.stop().await;
        self.sim.shutdown().await;
    }
}

fn now_ms() -> i64 {
    pointsd::clock::SystemClock.now_ms()
}

fn parse_ms(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn faults(sim: &SimHandle, f: impl FnOnce(&mut pointsd::sim::Faults)) {
    set_faults(sim, f)
}

fn clear_faults(sim: &SimHandle) {
    sim.set_faults(pointsd::sim::Faults::default());
}

fn balances(sim: &SimHandle, customers: impl IntoIterator<Item = String>) -> HashMap<String, i64> {
    customers
        .into_iter()
        .map(|c| {
            let b = sim.balance(&c).expect("known customer");
            (c, b)
        })
        .collect()
}

async fn txn(d: &TestDaemon, id: &str) -> Value {
    let (s, v) = d.get(&format!("/v1/transactions/{id}")).await;
    assert_eq!(s, 200, "GET transaction {id}: {v}");
    v
}

/// Polls `GET /v1/transactions/{id}` until `pred` holds.
async fn wait_txn(
    d: &TestDaemon,
    id: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let t = txn(d, id).await;
        if pred(&t) {
            return t;
        }
        if start.elapsed() > limit {
            panic!("timed out waiting on transaction {id}; last seen: {t:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_state(d: &TestDaemon, id: &str, state: &str, limit: Duration) -> Value {
    wait_txn(d, id, limit, |t| t["state"] == json!(state)).await
}

/// Polls a condition on the simulator side.
async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the daemon's link probe has just succeeded, so the next one is about a
/// probe interval (1 s) away: a fault switched on now is first met by the push worker.
async fn after_fresh_probe(d: &TestDaemon) {
    // The change feed polls once right after the first fill; let that pass first, so the
    // request that meets the fault is the one the test makes.
    d.wait_for("the first change-feed poll", Duration::from_secs(10), |s| {
        s["feed"]["last_poll_at"].is_string()
    })
    .await;
    let first = d.status().await["upstream"]["last_ok_at"].clone();
    d.wait_for("a successful probe", Duration::from_secs(10), |s| {
        s["online"] == json!(true) && s["upstream"]["last_ok_at"] != first
    })
    .await;
}

fn assert_queued(what: &str, r: &(u16, Value)) {
    assert_eq!(r.0, 201, "{what}: {}", r.1);
    assert_eq!(r.1["status"], json!("queued"), "{what}: {}", r.1);
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Between a failed attempt and the next one the row is `pending`; while a retry is on the
/// wire it is `sending`. Either way it is still queued: not applied, not given up on.
fn assert_still_queued(t: &Value) {
    assert!(
        t["state"] == json!("pending") || t["state"] == json!("sending"),
        "expected the transaction to still be queued: {t:#}"
    );
    assert!(t["upstream_result"].is_null(), "{t:#}");
}

/// A failed attempt has been recorded and the row waits for its next one.
fn failed_attempts_at_least(n: i64) -> impl Fn(&Value) -> bool {
    move |t| {
        t["attempts"].as_i64().unwrap_or(0) >= n
            && t["last_error"].is_string()
            && t["state"] == json!("pending")
    }
}

// ---------------------------------------------------------------------------------------
// Failure table, row 1: transient failures before anything was sent.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_transient_and_drains_exactly_once() {
    let env = Env::start(10, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let before = sim.balance("1").unwrap();

    after_fresh_probe(d).await;
    faults(sim, |f| f.refuse = true);
    // Let the client's pooled connections see the close first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = d.earn("refused-1", "1", 25).await;
    assert_queued("earn while refused", &r);

    let t = wait_txn(
        d,
        "refused-1",
        Duration::from_secs(10),
        failed_attempts_at_least(1),
    )
    .await;
    assert_eq!(t["state"], json!("pending"), "{t:#}");
    assert!(s(&t["last_error"]).contains("unreachable"), "{t:#}");
    assert!(t["next_attempt_at"].is_string(), "{t:#}");
    let st = d
        .wait_for("offline", Duration::from_secs(10), |s| {
            s["online"] == json!(false)
        })
        .await;
    assert_eq!(st["queue"]["pending"], json!(1), "{st:#}");

    // The link keeps being retried (the probe's error time moves on) ...
    let err_at = st["upstream"]["last_error_at"].clone();
    d.wait_for("another failed try", Duration::from_secs(10), |s| {
        s["upstream"]["last_error_at"] != err_at
    })
    .await;
    // ... without burning the transaction's attempts while the link is known to be down.
    let a1 = txn(d, "refused-1").await["attempts"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = txn(d, "refused-1").await;
    assert_eq!(t["state"], json!("pending"), "{t:#}");
    assert!(t["attempts"].as_i64().unwrap() <= a1 + 1, "{t:#}");
    assert!(sim.adds().is_empty());

    clear_faults(sim);
    let t = wait_state(d, "refused-1", "applied", Duration::from_secs(15)).await;
    assert_eq!(t["upstream_balance"], json!(before + 25), "{t:#}");
    assert_eq!(adds_for(sim, "1"), vec![25]);
    assert_eq!(sim.balance("1"), Some(before + 25));
    let st = d.wait_drained(Duration::from_secs(5)).await;
    assert_eq!(st["queue"]["applied"], json!(1), "{st:#}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_failure_keeps_the_daemon_offline_and_the_earn_queued() {
    // The simulator only supplies the fixture's config shape; nothing talks to it.
    let sim = start_sim(5).await;
    let mut c = test_config(&sim, "store-dns");
    let sm = c.upstream.smaregi.as_mut().unwrap();
    sm.api_base = "http://pointsd-test.invalid".into();
    sm.id_base = "http://pointsd-test.invalid".into();
    // An unresolvable name, never reached: plain http is accepted for it explicitly.
    sm.allow_insecure_http = true;
    c.offline.allow_unknown_customers = true;
    c.sync.online_budget_ms = 0;
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start(c, dir.path().join("data"), false).await;

    let st = d
        .wait_for("a failed upstream call", Duration::from_secs(20), |s| {
            s["upstream"]["last_error"].is_string()
        })
        .await;
    assert_eq!(st["online"], json!(false), "{st:#}");
    assert!(
        s(&st["upstream"]["last_error"]).contains("unreachable"),
        "{st:#}"
    );

    let r = d.earn("dns-1", "1", 40).await;
    assert_queued("earn with the upstream unresolvable", &r);
    assert_eq!(r.1["balance"]["available"], json!(40), "{}", r.1);
    assert_eq!(r.1["customer"]["local_only"], json!(true), "{}", r.1);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = txn(&d, "dns-1").await;
    assert_eq!(t["state"], json!("pending"), "{t:#}");
    let st = d.status().await;
    assert_eq!(st["online"], json!(false), "{st:#}");
    assert_eq!(st["queue"]["pending"], json!(1), "{st:#}");
    assert!(st["upstream"]["last_error"].is_string(), "{st:#}");
    // Still serving.
    let (code, _) = d.get_as("/v1/health", None).await;
    assert_eq!(code, 200);
    assert_eq!(sim.request_count(), 0);
    assert_eq!(sim.token_request_count(), 0);
    d.stop().await;
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Row 2: 5xx, 408, 429.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_applied_once() {
    let env = Env::start(10, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let before = sim.balance("2").unwrap();

    after_fresh_probe(d).await;
    faults(sim, |f| f.error_rate = 1.0);
    let r = d.earn("5xx-1", "2", 30).await;
    assert_queued("earn during 503s", &r);

    let t = wait_txn(
        d,
        "5xx-1",
        Duration::from_secs(10),
        failed_attempts_at_least(1),
    )
    .await;
    assert_eq!(t["state"], json!("pending"), "{t:#}");
    assert!(s(&t["last_error"]).contains("503"), "{t:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = txn(d, "5xx-1").await;
    assert_still_queued(&t);
    assert!(sim.adds().is_empty());
    let st = d.status().await;
    assert!(s(&st["upstream"]["last_error"]).contains("503"), "{st:#}");

    clear_faults(sim);
    wait_state(d, "5xx-1", "applied", Duration::from_secs(15)).await;
    assert_eq!(adds_for(sim, "2"), vec![30]);
    assert_eq!(sim.balance("2"), Some(before + 30));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_408_is_retried_with_backoff_then_applied_once() {
    let env = Env::start(10, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let before = sim.balance("3").unwrap();

    faults(sim, |f| f.add_status = Some(408));
    let r = d.earn("408-1", "3", 12).await;
    assert_queued("earn during 408s", &r);
    // The upstream answers (reads work), so the push keeps retrying with backoff.
    let t = wait_txn(
        d,
        "408-1",
        Duration::from_secs(15),
        failed_attempts_at_least(3),
    )
    .await;
    assert_eq!(t["state"], json!("pending"), "{t:#}");
    assert!(s(&t["last_error"]).contains("408"), "{t:#}");
    assert!(sim.adds().is_empty());

    clear_faults(sim);
    let t = wait_state(d, "408-1", "applied", Duration::from_secs(15)).await;
    assert!(t["last_error"].is_null(), "{t:#}");
    assert_eq!(adds_for(sim, "3"), vec![12]);
    assert_eq!(sim.balance("3"), Some(before + 12));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_429_pauses_the_whole_upstream_for_retry_after() {
    let env = Env::start(10, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let before = sim.balance("4").unwrap();

    after_fresh_probe(d).await;
    faults(sim, |f| {
        f.throttle_rate = 1.0;
        f.retry_after_s = 2;
    });
    let r = d.earn("429-1", "4", 9).await;
    assert_queued("earn while throttled", &r);

    let st = d
        .wait_for("a Retry-After pause", Duration::from_secs(10), |s| {
            s["upstream"]["paused_until"].is_string()
        })
        .await;
    let seen_at = now_ms();
    let paused_until = parse_ms(s(&st["upstream"]["paused_until"]));
    // Requests already on the wire when the pause began may still land; then nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let count = sim.request_count();
    let check_until = (seen_at + 1_000).min(paused_until - 100);
    let mut checks = 0;
    while now_ms() < check_until {
        assert_eq!(
            sim.request_count(),
            count,
            "a request reached the upstream during its Retry-After pause"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        checks >= 5,
        "the pause was too short to observe ({checks} checks)"
    );
    let t = txn(d, "429-1").await;
    assert_still_queued(&t);
    assert!(sim.adds().is_empty());

    clear_faults(sim);
    wait_state(d, "429-1", "applied", Duration::from_secs(15)).await;
    let st = d.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(st["queue"]["applied"], json!(1), "{st:#}");
    assert_eq!(adds_for(sim, "4"), vec![9]);
    assert_eq!(sim.balance("4"), Some(before + 9));
    env.stop().await;
}

// ---------------------------------------------------------------------------------------
// Row 4: permanent refusals.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_are_rejected_with_the_upstream_reason() {
    let env = Env::start(20, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let initial = balances(sim, (1..=20).map(|i| i.to_string()));

    let cases = [
        (400, "Bad Request"),
        (404, "Not Found"),
        (409, "Conflict"),
        (422, "Unprocessable Entity"),
    ];
    for (i, (status, title)) in cases.iter().enumerate() {
        let customer = (i + 1).to_string();
        let id = format!("perm-{status}");
        faults(sim, |f| f.add_status = Some(*status));
        let (code, v) = d.earn(&id, &customer, 50).await;
        // Queued at once; a refusal faster than the answer is reported as such.
        assert!(
            (code == 201 && v["status"] == json!("queued"))
                || (code == 409 && v["code"] == json!("upstream_rejected")),
            "{code} {v}"
        );
        let t = wait_state(d, &id, "rejected", Duration::from_secs(10)).await;
        assert_eq!(t["upstream_result"]["status"], json!(status), "{t:#}");
        assert_eq!(t["upstream_result"]["title"], json!(title), "{t:#}");
        assert!(t["last_error"].is_string(), "{t:#}");
        // The provisional +50 no longer counts.
        let (sc, cv) = d.get(&format!("/v1/customers/{customer}")).await;
        assert_eq!(sc, 200, "{cv}");
        assert_eq!(cv["balance"]["pending"], json!(0), "{cv:#}");
        assert_eq!(
            cv["balance"]["available"], cv["balance"]["confirmed"],
            "{cv:#}"
        );
        assert_eq!(
            cv["balance"]["available"],
            json!(initial[&customer]),
            "{cv:#}"
        );
    }
    clear_faults(sim);

    // A real refusal: the customer spent the points elsewhere before our redeem landed.
    let spender = (5..=20)
        .map(|i| i.to_string())
        .find(|c| initial[c] >= 10)
        .expect("a customer with 10 points");
    sim.add_elsewhere(&spender, -initial[&spender]);
    let (code, v) = d.redeem("perm-insufficient", &spender, 10).await;
    assert!(code == 201 || code == 409, "{code} {v}");
    let t = wait_state(d, "perm-insufficient", "rejected", Duration::from_secs(10)).await;
    assert_eq!(t["upstream_result"]["title"], json!("Bad Request"), "{t:#}");
    assert!(
        s(&t["upstream_result"]["detail"]).contains("insufficient"),
        "{t:#}"
    );
    let (_, cv) = d.get(&format!("/v1/customers/{spender}")).await;
    assert_eq!(cv["balance"]["pending"], json!(0), "{cv:#}");
    assert_eq!(
        cv["balance"]["available"], cv["balance"]["confirmed"],
        "{cv:#}"
    );

    let st = d.status().await;
    assert_eq!(st["queue"]["rejected"], json!(5), "{st:#}");
    assert_eq!(st["queue"]["pending"], json!(0), "{st:#}");
    assert_eq!(st["queue"]["applied"], json!(0), "{st:#}");
    assert!(sim.adds().is_empty(), "{:?}", sim.adds());
    for i in 1..=4 {
        let c = i.to_string();
        assert_eq!(sim.balance(&c), Some(initial[&c]));
    }
    env.stop().await;
}

// ---------------------------------------------------------------------------------------
// Row 5: credentials.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_refreshed_once_without_a_visible_failure() {
    let env = Env::start(10, |_| {}).await;
    let (sim, d) = (&env.sim, &env.d);
    let before = sim.balance("5").unwrap();

    after_fresh_probe(d).await;
    let tokens = sim.token_request_count();
    sim.revoke_tokens();
    let (code, v) = d.earn("auth-refresh-1", "5", 7).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["status"], json!("confirmed"), "{v}");
    assert_eq!(v["balance"]["confirmed"], json!(before + 7), "{v}");
    let t = txn(d, "auth-refresh-1").await;
    assert_eq!(t["state"], json!("applied"), "{t:#}");
    assert_eq!(t["attempts"], json!(1), "{t:#}");
    assert!(t["last_error"].is_null(), "{t:#}");
    assert_eq!(sim.token_request_count(), tokens + 1);
    assert_eq!(adds_for(sim, "5"), vec![7]);
    let st = d.status().await;
    assert_eq!(st["upstream"]["auth_failed"], json!(false), "{st:#}");
    assert_eq!(st["online"], json!(true), "{st:#}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_pause_sync_without_burning_attempts() {
    let env = Env::start(10, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let before = sim.balance("6").unwrap();

    after_fresh_probe(d).await;
    faults(sim, |f| f.reject_tokens = true);
    let r = d.earn("auth-fail-1", "6", 11).await;
    assert_queued("earn with credentials refused", &r);
    let st = d
        .wait_for("auth failure", Duration::from_secs(10), |s| {
            s["upstream"]["auth_failed"] == json!(true)
        })
        .await;
    assert_eq!(st["online"], json!(false), "{st:#}");

    // Another request (the probe) may meet the refusal first while the send is on the wire;
    // that send then comes back refused as well and waits, pending.
    let t1 = wait_txn(d, "auth-fail-1", Duration::from_secs(10), |t| {
        t["state"] != json!("sending")
    })
    .await;
    assert_eq!(t1["state"], json!("pending"), "{t1:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t2 = txn(d, "auth-fail-1").await;
    assert_eq!(t2["state"], json!("pending"), "{t2:#}");
    let (a1, a2) = (
        t1["attempts"].as_i64().unwrap(),
        t2["attempts"].as_i64().unwrap(),
    );
    assert!(a2 <= a1 + 1, "attempts kept growing: {a1} -> {a2}");
    let st = d.status().await;
    assert_eq!(st["upstream"]["auth_failed"], json!(true), "{st:#}");
    assert_eq!(st["online"], json!(false), "{st:#}");
    assert!(sim.adds().is_empty());

    clear_faults(sim);
    wait_state(d, "auth-fail-1", "applied", Duration::from_secs(15)).await;
    let st = d.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(st["upstream"]["auth_failed"], json!(false), "{st:#}");
    assert_eq!(adds_for(sim, "6"), vec![11]);
    assert_eq!(sim.balance("6"), Some(before + 11));
    env.stop().await;
}

// ---------------------------------------------------------------------------------------
// Row 3: ambiguous sends (applied upstream, answer lost).
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_then_drop_is_verified_by_read_back_not_resent() {
    let env = Env::start(10, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let before = sim.balance("7").unwrap();

    faults(sim, |f| f.drop_after_apply_rate = 1.0);
    let r = d.earn("drop-1", "7", 33).await;
    assert_queued("earn with the answer dropped", &r);
    let t = wait_txn(d, "drop-1", Duration::from_secs(20), |t| {
        t["state"] != json!("pending")
            && t["state"] != json!("sending")
            && t["state"] != json!("ambiguous")
    })
    .await;
    assert_eq!(t["state"], json!("applied"), "{t:#}");
    assert_eq!(
        t["upstream_result"]["verified_by"],
        json!("read-back"),
        "{t:#}"
    );
    assert_eq!(t["upstream_balance"], json!(before + 33), "{t:#}");
    assert_eq!(adds_for(sim, "7"), vec![33]);
    assert_eq!(sim.balance("7"), Some(before + 33));
    let st = d.wait_drained(Duration::from_secs(5)).await;
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st:#}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_answers_dropped_never_duplicates_an_apply() {
    let env = Env::start(10, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let customers: Vec<String> = (1..=5).map(|i| i.to_string()).collect();
    let initial = balances(sim, customers.clone());

    faults(sim, |f| f.drop_after_apply_rate = 0.5);
    let mut expected: HashMap<String, i64> = HashMap::new();
    for i in 0..30 {
        let c = &customers[i % 5];
        let points = (i % 7 + 1) as i64;
        let r = d.earn(&format!("half-{i}"), c, points).await;
        assert_eq!(r.0, 201, "{}", r.1);
        *expected.entry(c.clone()).or_default() += points;
    }
    let st = d.wait_drained(Duration::from_secs(60)).await;
    clear_faults(sim);

    let adds = sim.adds();
    assert_eq!(adds.len(), 30, "every earn applied exactly once: {adds:?}");
    for c in &customers {
        assert_eq!(
            sim.balance(c),
            Some(initial[c] + expected[c]),
            "customer {c}: {:?}",
            adds_for(sim, c)
        );
        assert_eq!(adds_for(sim, c).len(), 6, "customer {c}");
    }
    let mut applied = 0;
    for i in 0..30 {
        let t = txn(d, &format!("half-{i}")).await;
        match s(&t["state"]) {
            "applied" => applied += 1,
            "needs_review" => {}
            other => panic!("half-{i} ended {other}: {t:#}"),
        }
    }
    // Nothing else moved these balances, so every read-back can prove its case.
    assert_eq!(applied, 30, "{st:#}");
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st:#}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_after_send_is_verified_never_blindly_resent() {
    let env = Env::start(10, |c| {
        c.sync.online_budget_ms = 0;
        c.upstream.request_timeout_ms = 500;
    })
    .await;
    let (sim, d) = (&env.sim, &env.d);
    let customers: Vec<String> = (1..=3).map(|i| i.to_string()).collect();
    let initial = balances(sim, customers.clone());

    after_fresh_probe(d).await;
    faults(sim, |f| f.latency_ms = 1_500);
    let (a, b, c) = tokio::join!(
        d.earn("slow-1", "1", 5),
        d.earn("slow-2", "2", 6),
        d.earn("slow-3", "3", 7),
    );
    for (n, r) in [a, b, c].iter().enumerate() {
        assert_queued(&format!("slow-{}", n + 1), r);
    }
    d.wait_for("an ambiguous send", Duration::from_secs(10), |s| {
        s["queue"]["ambiguous"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    // While everything is slow (read-backs time out too), nothing is resent: each customer
    // is applied at most once, and a send that got no answer stays ambiguous.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3_000) {
        for c in &customers {
            assert!(
                adds_for(sim, c).len() <= 1,
                "customer {c}: {:?}",
                sim.adds()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = d.status().await;
    assert!(st["queue"]["ambiguous"].as_i64().unwrap() >= 1, "{st:#}");

    clear_faults(sim);
    let st = d.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(st["queue"]["applied"], json!(3), "{st:#}");
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st:#}");
    for (i, c) in customers.iter().enumerate() {
        let delta = 5 + i as i64;
        assert_eq!(adds_for(sim, c), vec![delta], "customer {c}");
        assert_eq!(sim.balance(c), Some(initial[c] + delta));
        let t = txn(d, &format!("slow-{}", i + 1)).await;
        assert_eq!(t["state"], json!("applied"), "{t:#}");
    }
    env.stop().await;
}

/// Sends an earn whose answer is dropped after it was applied, then moves the customer's
/// balance elsewhere before the read-back: the read-back cannot prove anything.
async fn make_unprovable(env: &Env, id: &str, customer: &str, points: i64) -> Value {
    let (sim, d) = (&env.sim, &env.d);
    let already = adds_for(sim, customer).len();
    let r = d.earn(id, customer, points).await;
    assert_queued(id, &r);
    wait_until(
        "the dropped add to be applied",
        Duration::from_secs(10),
        || adds_for(sim, customer).len() > already,
    )
    .await;
    // The read-back waits at least a request timeout (1 s) after the lost answer.
    sim.add_elsewhere(customer, 7);
    wait_state(d, id, "needs_review", Duration::from_secs(15)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprovable_read_back_goes_to_review_and_a_manager_resolves_it() {
    let env = Env::start(10, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let initial = balances(sim, (1..=3).map(|i| i.to_string()));

    faults(sim, |f| f.drop_after_apply_rate = 1.0);
    let t = make_unprovable(&env, "review-1", "1", 20).await;
    let ev = &t["upstream_result"];
    assert_eq!(ev["before_balance"], json!(initial["1"]), "{t:#}");
    assert_eq!(ev["delta"], json!(20), "{t:#}");
    assert_eq!(ev["read_back_balance"], json!(initial["1"] + 27), "{t:#}");
    assert!(t["last_error"].is_string(), "{t:#}");
    make_unprovable(&env, "review-2", "2", 21).await;
    make_unprovable(&env, "review-3", "3", 22).await;
    clear_faults(sim);
    let st = d.status().await;
    assert_eq!(st["queue"]["needs_review"], json!(3), "{st:#}");
    // Nothing was resent on its own.
    for c in ["1", "2", "3"] {
        assert_eq!(adds_for(sim, c).len(), 1, "customer {c}");
    }

    let path = "/v1/transactions/review-1/resolve";
    let body = json!({"as": "applied", "note": "seen once in the Smaregi console"});
    let (code, v) = d.post(path, &body).await;
    assert_eq!(code, 403, "a register may not resolve: {v}");
    assert_eq!(txn(d, "review-1").await["state"], json!("needs_review"));

    let (code, v) = d.post_as(path, MANAGER_TOKEN, &body).await;
    assert_eq!(code, 200, "{v}");
    let t = txn(d, "review-1").await;
    assert_eq!(t["state"], json!("applied"), "{t:#}");
    assert_eq!(
        t["resolutions"][0]["resolved_by"],
        json!("manager"),
        "{t:#}"
    );
    assert_eq!(
        t["resolutions"][0]["note"],
        json!("seen once in the Smaregi console"),
        "{t:#}"
    );
    assert_eq!(t["resolutions"][0]["action"], json!("applied"), "{t:#}");
    assert_eq!(
        t["resolutions"][0]["from_state"],
        json!("needs_review"),
        "{t:#}"
    );
    let (code, v) = d.post_as(path, MANAGER_TOKEN, &body).await;
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["code"], json!("not_resolvable"), "{v}");
    assert_eq!(
        adds_for(sim, "1").len(),
        1,
        "resolving as applied sends nothing"
    );

    // "resend": sent again, once.
    let (code, v) = d
        .post_as(
            "/v1/transactions/review-2/resolve",
            MANAGER_TOKEN,
            &json!({"as": "resend", "note": "not in the Smaregi console"}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let t = wait_state(d, "review-2", "applied", Duration::from_secs(15)).await;
    assert_eq!(t["resolutions"][0]["action"], json!("resend"), "{t:#}");
    assert_eq!(adds_for(sim, "2"), vec![21, 21]);
    assert_eq!(sim.balance("2"), Some(initial["2"] + 21 + 7 + 21));

    // "discard": it no longer counts, and nothing is sent.
    let (code, v) = d
        .post_as(
            "/v1/transactions/review-3/resolve",
            MANAGER_TOKEN,
            &json!({"as": "discard", "note": "duplicate of a till receipt"}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let t = txn(d, "review-3").await;
    assert_eq!(t["state"], json!("discarded"), "{t:#}");
    let (_, cv) = d.get("/v1/customers/3").await;
    assert_eq!(cv["balance"]["pending"], json!(0), "{cv:#}");
    assert_eq!(
        cv["balance"]["available"], cv["balance"]["confirmed"],
        "{cv:#}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(adds_for(sim, "3"), vec![22]);

    let st = d.wait_drained(Duration::from_secs(5)).await;
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st:#}");
    env.stop().await;
}

// ---------------------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_backoff_resumes_the_schedule() {
    let sim = start_sim(10).await;
    let mut c = test_config(&sim, "store-restart");
    c.sync.online_budget_ms = 0;
    c.sync.backoff_initial_ms = 2_000;
    c.sync.backoff_max_ms = 8_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut d = TestDaemon::start(c.clone(), data.clone(), true).await;
    let before = sim.balance("8").unwrap();

    // A transient refusal of the add alone (408): the link stays up, so attempts are made
    // and counted on the backoff schedule.
    faults(&sim, |f| f.add_status = Some(408));
    let r = d.earn("restart-1", "8", 15).await;
    assert_queued("earn", &r);
    let t = wait_txn(&d, "restart-1", Duration::from_secs(30), |t| {
        t["state"] == json!("pending")
            && t["attempts"].as_i64().unwrap_or(0) >= 2
            && t["next_attempt_at"]
                .as_str()
                .is_some_and(|n| parse_ms(n) - now_ms() >= 1_000)
    })
    .await;
    d.stop().await;
    let attempts = t["attempts"].as_i64().unwrap();
    let next_at = parse_ms(s(&t["next_attempt_at"]));
    clear_faults(&sim);

    let d = TestDaemon::start(c, data, true).await;
    let t = txn(&d, "restart-1").await;
    if now_ms() < next_at - 100 {
        assert_eq!(t["attempts"], json!(attempts), "{t:#}");
        assert_eq!(t["state"], json!("pending"), "{t:#}");
        assert_eq!(parse_ms(s(&t["next_attempt_at"])), next_at, "{t:#}");
    }
    wait_until("the add after restart", Duration::from_secs(20), || {
        !adds_for(&sim, "8").is_empty()
    })
    .await;
    let seen = now_ms();
    assert!(
        seen >= next_at,
        "sent {} ms before the persisted next_attempt_at",
        next_at - seen
    );
    let t = wait_state(&d, "restart-1", "applied", Duration::from_secs(10)).await;
    assert_eq!(
        t["attempts"],
        json!(attempts + 1),
        "attempts continue: {t:#}"
    );
    assert_eq!(adds_for(&sim, "8"), vec![15]);
    assert_eq!(sim.balance("8"), Some(before + 15));
    let mut d = d;
    d.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_customer_order_earn_before_redeem() {
    let env = Env::start(100, |c| c.sync.online_budget_ms = 0).await;
    let (sim, d) = (&env.sim, &env.d);
    let customer = (1..=100)
        .map(|i| i.to_string())
        .find(|c| sim.balance(c) == Some(0))
        .expect("a customer with 0 points among the samples");

    faults(sim, |f| f.refuse = true);
    d.wait_for("offline", Duration::from_secs(10), |s| {
        s["online"] == json!(false)
    })
    .await;
    let r = d.earn("order-earn", &customer, 100).await;
    assert_queued("offline earn", &r);
    assert_eq!(r.1["balance"]["available"], json!(100), "{}", r.1);
    let r = d.redeem("order-redeem", &customer, 100).await;
    assert_queued("offline redeem covered by the pending earn", &r);
    assert_eq!(r.1["balance"]["available"], json!(0), "{}", r.1);

    clear_faults(sim);
    let st = d.wait_drained(Duration::from_secs(20)).await;
    assert_eq!(st["queue"]["rejected"], json!(0), "{st:#}");
    assert_eq!(txn(d, "order-earn").await["state"], json!("applied"));
    assert_eq!(txn(d, "order-redeem").await["state"], json!("applied"));
    assert_eq!(adds_for(sim, &customer), vec![100, -100]);
    assert_eq!(sim.balance(&customer), Some(0));
    env.stop().await;
}

/// One agent's share of the two-store test: `n` writes over `customers`, returning the
/// acknowledged deltas per customer.
async fn store_writes(
    d: &TestDaemon,
    prefix: &str,
    range: std::ops::Range<usize>,
    customers: &[String],
) -> HashMap<String, i64> {
    let mut acked: HashMap<String, i64> = HashMap::new();
    for i in range {
        let c = &customers[i % customers.len()];
        let id = format!("{prefix}-{i}");
        let (code, v, delta) = if i % 3 == 2 {
            let p = (i % 7 + 1) as i64;
            let (code, v) = d.redeem(&id, c, p).await;
            (code, v, -p)
        } else {
            let p = (i % 11 + 1) as i64;
            let (code, v) = d.earn(&id, c, p).await;
            (code, v, p)
        };
        assert_eq!(code, 201, "{id}: {v}");
        *acked.entry(c.clone()).or_default() += delta;
    }
    acked
}

fn merge(into: &mut HashMap<String, i64>, from: HashMap<String, i64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_share_one_upstream_and_balances_add_up() {
    let sim = start_sim(30).await;
    let customers: Vec<String> = (1..=30)
        .map(|i| i.to_string())
        .filter(|c| sim.balance(c).unwrap() >= 500)
        .take(5)
        .collect();
    assert_eq!(customers.len(), 5, "five customers with 500+ points");
    let initial = balances(&sim, customers.clone());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ca = test_config(&sim, "store-a");
    ca.sync.online_budget_ms = 0;
    let mut cb = test_config(&sim, "store-b");
    cb.sync.online_budget_ms = 0;
    let (mut a, mut b) = tokio::join!(
        TestDaemon::start(ca, dir_a.path().join("data"), true),
        TestDaemon::start(cb, dir_b.path().join("data"), true),
    );
    let mut acked = HashMap::new();

    // Online, both at once.
    let (x, y) = tokio::join!(
        store_writes(&a, "a", 0..20, &customers),
        store_writes(&b, "b", 0..20, &customers),
    );
    merge(&mut acked, x);
    merge(&mut acked, y);
    tokio::join!(
        a.wait_drained(Duration::from_secs(30)),
        b.wait_drained(Duration::from_secs(30)),
    );

    // The upstream refuses: both keep accepting.
    faults(&sim, |f| f.refuse = true);
    tokio::join!(
        a.wait_for("a offline", Duration::from_secs(10), |s| s["online"]
            == json!(false)),
        b.wait_for("b offline", Duration::from_secs(10), |s| s["online"]
            == json!(false)),
    );
    let (x, y) = tokio::join!(
        store_writes(&a, "a", 20..30, &customers),
        store_writes(&b, "b", 20..30, &customers),
    );
    merge(&mut acked, x);
    merge(&mut acked, y);

    // Back: more writes while both drain their backlog.
    clear_faults(&sim);
    let (x, y) = tokio::join!(
        store_writes(&a, "a", 30..40, &customers),
        store_writes(&b, "b", 30..40, &customers),
    );
    merge(&mut acked, x);
    merge(&mut acked, y);
    let (sa, sb) = tokio::join!(
        a.wait_drained(Duration::from_secs(30)),
        b.wait_drained(Duration::from_secs(30)),
    );

    for st in [&sa, &sb] {
        assert_eq!(st["queue"]["applied"], json!(40), "{st:#}");
        assert_eq!(st["queue"]["needs_review"], json!(0), "{st:#}");
        assert_eq!(st["queue"]["rejected"], json!(0), "{st:#}");
    }
    assert_eq!(sim.adds().len(), 80);
    for c in &customers {
        assert_eq!(
            sim.balance(c),
            Some(initial[c] + acked[c]),
            "customer {c}: {:?}",
            adds_for(&sim, c)
        );
    }
    a.stop().await;
    b.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_changes_made_elsewhere_and_writes_nothing() {
    // The feed would see the change and re-read the customer within seconds; here it polls
    // only once (after the first fill), so the change is found by the reconcile alone.
    let env = Env::start(10, |c| c.sync.pull_interval_s = 3600).await;
    let (sim, d) = (&env.sim, &env.d);
    d.wait_for("the first change-feed poll", Duration::from_secs(10), |s| {
        s["feed"]["last_poll_at"].is_string()
    })
    .await;
    let before = sim.balance("3").unwrap();
    sim.add_elsewhere("3", 50);

    let (code, v) = d.post_as("/v1/reconcile", REGISTER_TOKEN, &json!({})).await;
    assert_eq!(code, 403, "a register may not run a reconciliation: {v}");
    let (code, report) = d.post_as("/v1/reconcile", MANAGER_TOKEN, &json!({})).await;
    assert_eq!(code, 200, "{report}");
    let item = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["customer_id"] == json!("3"))
        .unwrap_or_else(|| panic!("customer 3 not reported: {report:#}"))
        .clone();
    assert_eq!(item["difference"], json!(50), "{item}");
    assert_eq!(item["cached_confirmed"], json!(before), "{item}");
    assert_eq!(item["upstream"], json!(before + 50), "{item}");
    assert!(report["discrepancies"].as_u64().unwrap() >= 1, "{report:#}");

    let (code, last) = d.get("/v1/reconcile").await;
    assert_eq!(code, 200, "{last}");
    assert!(
        last["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["customer_id"] == json!("3") && i["difference"] == json!(50)),
        "{last:#}"
    );
    let st = d.status().await;
    assert!(
        st["reconcile"]["discrepancies"].as_u64().unwrap_or(0) >= 1,
        "{st:#}"
    );
    // Deltas only: the reconcile reported, it wrote nothing upstream.
    assert_eq!(sim.balance("3"), Some(before + 50));
    assert!(sim.adds().is_empty());
    env.stop().await;
}

/// `n` earns over `customers` accepted during an outage, then drained: zero loss, zero
/// duplicates.
async fn outage(n: usize, customers: u32, drain_limit: Duration) {
    let env = Env::start(customers, |c| {
        c.sync.online_budget_ms = 0;
        c.sync.concurrency = 16;
        c.sync.max_requests_per_second = 5_000;
    })
    .await;
    let (sim, d) = (&env.sim, &env.d);
    let ids: Vec<String> = (1..=customers).map(|i| i.to_string()).collect();
    let initial = balances(sim, ids.clone());

    faults(sim, |f| f.refuse = true);
    d.wait_for("offline", Duration::from_secs(10), |s| {
        s["online"] == json!(false)
    })
    .await;

    const CLIENTS: usize = 8;
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        let http = d.http.clone();
        let url = d.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in (k..n).step_by(CLIENTS) {
                let customer = (i as u32 % customers + 1).to_string();
                let points = (i % 9 + 1) as i64;
                let r = http
                    .post(format!("{url}/v1/transactions"))
                    .bearer_auth(REGISTER_TOKEN)
                    .json(&json!({"txn_id": format!("out-{i}"), "customer_id": customer, "kind": "earn", "points": points}))
                    .send()
                    .await
                    .expect("daemon answers");
                let code = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                assert_eq!(code, 201, "out-{i}: {v}");
                assert_eq!(v["status"], json!("queued"), "out-{i}: {v}");
                mine.push((customer, points));
            }
            mine
        }));
    }
    for t in tasks {
        for (c, p) in t.await.unwrap() {
            *expected.entry(c).or_default() += p;
        }
    }
    let st = d.status().await;
    assert_eq!(st["queue"]["pending"], json!(n), "{st:#}");
    assert!(sim.adds().is_empty());

    clear_faults(sim);
    let st = d.wait_drained(drain_limit).await;
    assert_eq!(st["queue"]["applied"], json!(n), "{st:#}");
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st:#}");
    assert_eq!(st["queue"]["rejected"], json!(0), "{st:#}");
    let adds = sim.adds();
    assert_eq!(adds.len(), n, "one apply per transaction");
    let mut per: HashMap<&str, usize> = HashMap::new();
    for a in &adds {
        *per.entry(a.customer_id.as_str()).or_default() += 1;
    }
    for c in &ids {
        let want = (0..n)
            .filter(|i| (*i as u32 % customers + 1).to_string() == *c)
            .count();
        assert_eq!(
            per.get(c.as_str()).copied().unwrap_or(0),
            want,
            "customer {c}"
        );
        assert_eq!(
            sim.balance(c),
            Some(initial[c] + expected.get(c).copied().unwrap_or(0)),
            "customer {c}"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_of_2000_transactions_drains_without_loss_or_duplicates() {
    outage(2_000, 100, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with --ignored"]
async fn outage_of_10000_transactions_drains_without_loss_or_duplicates() {
    outage(10_000, 100, Duration::from_secs(600)).await;
}

/// `pointsd_upstream_requests_total{op="list_balances",…}` summed over outcomes.
async fn balance_pages_requested(d: &TestDaemon) -> u64 {
    let m = d.metrics_text().await;
    metric(
        &m,
        "pointsd_upstream_requests_total",
        Some("op=\"list_balances\""),
    )
    .unwrap_or(0.0) as u64
}

/// When the link returns, the store's own queued transactions go upstream before the full
/// refresh that would share their rate limit; the refresh follows once the queue is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_queue_drains_before_the_full_refresh() {
    let env = Env::start(20, |c| {
        c.sync.online_budget_ms = 0;
        c.sync.probe_interval_s = 1;
        // 60 earns at 20 requests/s: about three seconds of draining to watch.
        c.sync.max_requests_per_second = 20;
    })
    .await;
    let (sim, d) = (&env.sim, &env.d);
    let first_refresh = d.status().await["cache"]["last_full_refresh_at"].clone();

    faults(sim, |f| f.refuse = true);
    d.wait_for("offline", Duration::from_secs(10), |s| {
        s["online"] == json!(false)
    })
    .await;
    for i in 0..60 {
        let r = d
            .earn(&format!("backlog-{i}"), &(i % 20 + 1).to_string(), 1)
            .await;
        assert_queued("earn during the outage", &r);
    }
    let pages_before = balance_pages_requested(d).await;

    clear_faults(sim);
    // A second, short outage in the middle of the drain: the link must still be probed while
    // the refresh waits, or the drain would stall until `pull_interval`.
    wait_until("the drain to start", Duration::from_secs(15), || {
        sim.adds().len() >= 10
    })
    .await;
    faults(sim, |f| f.refuse = true);
    d.wait_for("offline again", Duration::from_secs(10), |s| {
        s["online"] == json!(false)
    })
    .await;
    clear_faults(sim);
    let start = Instant::now();
    let mut saw_draining = false;
    loop {
        let st = d.status().await;
        let q = &st["queue"];
        let open = q["pending"].as_i64().unwrap()
            + q["sending"].as_i64().unwrap()
            + q["ambiguous"].as_i64().unwrap();
        if open == 0 {
            break;
        }
        if st["online"] == json!(true) {
            saw_draining = true;
            assert_eq!(
                balance_pages_requested(d).await,
                pages_before,
                "a full refresh ran while {open} transactions were still queued: {st:#}"
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the queue did not drain: {st:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_draining,
        "the drain was over before it could be watched"
    );
    assert_eq!(sim.adds().len(), 60);

    // Then the change feed catches up on the outage by itself (from its watermark: a couple of
    // requests, not a full pull of every balance).
    let drained_at = d.status().await["feed"]["last_poll_at"].clone();
    d.wait_for(
        "the change feed after the drain",
        Duration::from_secs(40),
        |s| s["feed"]["last_poll_at"] != drained_at && s["feed"]["last_poll_at"].is_string(),
    )
    .await;
    assert_eq!(
        d.status().await["cache"]["last_full_refresh_at"],
        first_refresh,
        "an outage is caught up by the feed, not by a full pull"
    );
    assert_eq!(balance_pages_requested(d).await, pages_before);
    env.stop().await;
}
