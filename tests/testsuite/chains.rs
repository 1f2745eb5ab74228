//! Chains (issue 13): the upstream load follows changes, a full pull survives a 429 without
//! starting over, and an app without `pos.transactions:read` falls back to full pulls.

use crate::common;

use std::time::Duration;

use common::*;
use pointsd::sim::{SimHandle, SimOptions};
use serde_json::json;

async fn sim_with(customers: u32, f: impl FnOnce(&mut SimOptions)) -> SimHandle {
    let mut o = SimOptions {
        customers,
        ..SimOptions::default()
    };
    f(&mut o);
    SimHandle::start(loopback(), loopback(), o)
        .await
        .expect("sim starts")
}

fn ops(text: &str, op: &str, outcome: &str) -> f64 {
    metric(
        text,
        "pointsd_upstream_requests_total",
        Some(&format!("op=\"{op}\"")),
    )
    .map(|_| {
        text.lines()
            .filter(|l| l.starts_with("pointsd_upstream_requests_total"))
            .filter(|l| {
                l.contains(&format!("op=\"{op}\"")) && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    })
    .unwrap_or(0.0)
}

/// After the first fill the agent asks only for changes: a change made elsewhere marks the
/// customer, the background re-read brings the new balance, and no full pull runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_first_fill_the_feed_marks_and_rereads_changes_elsewhere() {
    let sim = sim_with(30, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&sim, "store-feed");
    c.sync.pull_interval_s = 10;
    let mut d = TestDaemon::start(c, dir.path().to_path_buf(), true).await;
    d.wait_for("the first feed poll", Duration::from_secs(10), |s| {
        s["feed"]["last_poll_at"].is_string()
    })
    .await;
    let filled = d.metrics_text().await;
    let pages = ops(&filled, "list_balances", "ok");
    assert_eq!(pages, 1.0, "30 customers: one page of balances");

    let before = sim.balance("4").unwrap();
    let polled = d.status().await["feed"]["last_poll_at"].clone();
    sim.add_elsewhere("4", 40);
    // The next poll marks the customer; the background re-read answers the mark.
    d.wait_for(
        "a poll after the change and its re-read",
        Duration::from_secs(40),
        |s| s["feed"]["last_poll_at"] != polled && s["feed"]["marked"] == json!(0),
    )
    .await;
    // Offline, the cache alone answers — with the balance moved elsewhere.
    set_faults(&sim, |f| f.refuse = true);
    d.wait_for("offline", Duration::from_secs(15), |s| {
        s["online"] == json!(false)
    })
    .await;
    let (s, v) = d.get("/v1/customers/4").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["balance"]["confirmed"], json!(before + 40), "{v:#}");
    assert!(v["changed_elsewhere_at"].is_null(), "{v:#}");
    set_faults(&sim, |f| f.refuse = false);
    let m = d.metrics_text().await;
    assert_eq!(
        ops(&m, "list_balances", "ok"),
        pages,
        "no full pull after the fill"
    );
    assert!(ops(&m, "list_transactions", "ok") >= 1.0);
    let st = d.status().await;
    assert_eq!(st["feed"]["available"], json!(true), "{st:#}");
    assert_eq!(st["feed"]["marked"], json!(0), "{st:#}");
    d.stop().await;
    sim.shutdown().await;
}

/// A full pull that meets 429s on later pages resumes where it stopped: every page is read
/// successfully exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pull_resumes_after_a_429_instead_of_starting_over() {
    // 4,500 customers: 5 pages of balances and 5 of the directory, at 3 requests/s.
    let sim = sim_with(4_500, |o| o.rate_limit_per_s = Some(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&sim, "store-resume");
    c.sync.max_requests_per_second = 50;
    let mut d = TestDaemon::start(c, dir.path().to_path_buf(), false).await;
    let st = d
        .wait_for("the first fill", Duration::from_secs(60), |s| {
            s["cache"]["last_full_refresh_at"].is_string()
        })
        .await;
    assert_eq!(st["cache"]["customers"], json!(4_500), "{st:#}");
    let m = d.metrics_text().await;
    assert_eq!(ops(&m, "list_balances", "ok"), 5.0, "{m}");
    assert_eq!(ops(&m, "list_customers", "ok"), 5.0, "{m}");
    let throttled = st["budget"]["reads"]["throttled_total"].as_u64().unwrap();
    assert!(throttled >= 1, "the contract's limit was never met: {st:#}");
    assert!(
        st["budget"]["reads"]["rate_per_s"].as_f64().unwrap() < 50.0,
        "a 429 cuts the rate: {st:#}"
    );
    d.stop().await;
    sim.shutdown().await;
}

/// Without `pos.transactions:read` the agent says so in `status` and keeps the cache by full
/// pulls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_transactions_scope_full_pulls_keep_the_cache() {
    let sim = sim_with(5, |o| {
        o.scopes = vec!["pos.customers:read".into(), "pos.customers:write".into()];
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start(
        test_config(&sim, "store-noscope"),
        dir.path().to_path_buf(),
        true,
    )
    .await;
    let st = d
        .wait_for(
            "the feed to report itself unavailable",
            Duration::from_secs(20),
            |s| s["feed"]["available"] == json!(false),
        )
        .await;
    assert!(
        st["feed"]["unavailable_reason"]
            .as_str()
            .is_some_and(|r| r.contains("pos.transactions:read")),
        "{st:#}"
    );
    assert_eq!(st["online"], json!(true), "{st:#}");
    assert_eq!(st["upstream"]["auth_failed"], json!(false), "{st:#}");
    d.stop().await;
    sim.shutdown().await;
}

/// Many customers changed elsewhere: a full pull replaces their re-reads, but no sooner than
/// the background re-reads would have spent as many requests — a busy chain's stores would
/// otherwise all pull in full at every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_changes_elsewhere_bring_a_full_pull_spaced_by_the_reread_budget() {
    // 2,500 customers: a full pull is 3 pages of balances and 3 of the directory (costed as
    // 6 requests); at 0.2 re-reads a second it may run once per 30 s.
    let sim = sim_with(2_500, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&sim, "store-spaced");
    c.sync.pull_interval_s = 10;
    c.sync.reread_per_second = 0.2;
    let mut d = TestDaemon::start(c, dir.path().to_path_buf(), true).await;
    d.wait_for("the first feed poll", Duration::from_secs(30), |s| {
        s["feed"]["last_poll_at"].is_string()
    })
    .await;
    let filled = ops(&d.metrics_text().await, "list_balances", "ok");
    assert_eq!(filled, 3.0, "2,500 customers: three pages of balances");
    for id in 1..=30 {
        sim.add_elsewhere(&id.to_string(), 5);
    }
    // The next poll marks them (30 > 6) but the last full pull is too recent: no full pull.
    let polled = d.status().await["feed"]["last_poll_at"].clone();
    let st = d
        .wait_for("a poll that marks them", Duration::from_secs(30), |s| {
            s["feed"]["last_poll_at"] != polled && s["feed"]["marked"].as_i64() >= Some(20)
        })
        .await;
    assert_eq!(
        ops(&d.metrics_text().await, "list_balances", "ok"),
        filled,
        "a full pull within the re-read budget's spacing: {st:#}"
    );
    // Once the spacing has passed, a poll still finding them marked pulls in full, and the
    // full pull clears every mark at once (the re-reads alone would take 150 s).
    let full_at = st["cache"]["last_full_refresh_at"].clone();
    d.wait_for(
        "the full pull and the marks cleared",
        Duration::from_secs(90),
        |s| s["cache"]["last_full_refresh_at"] != full_at && s["feed"]["marked"] == json!(0),
    )
    .await;
    let m = d.metrics_text().await;
    assert_eq!(
        ops(&m, "list_balances", "ok"),
        filled + 3.0,
        "one more full pull"
    );
    let (s, v) = d.get("/v1/customers/7").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["balance"]["confirmed"].as_i64(),
        sim.balance("7"),
        "{v:#}"
    );
    d.stop().await;
    sim.shutdown().await;
}

/// A drain never waits behind a full pull: while the first fill of a large directory crawls
/// at a tight read limit, queued earns go up at once (writes have their own lane, and a
/// push's reads go first in the read lane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_earns_go_up_while_a_long_full_pull_is_in_progress() {
    // 30,000 customers: 30 pages of balances and 30 of the directory at 4 reads/s, 15 s at
    // the very least.
    let sim = sim_with(30_000, |o| {
        o.read_limit_per_s = Some(4);
        o.write_limit_per_s = Some(10);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&sim, "store-drain-first");
    c.sync.online_budget_ms = 0;
    c.sync.max_reads_per_second = Some(4);
    let mut d = TestDaemon::start(c, dir.path().to_path_buf(), false).await;
    d.wait_for(
        "the fill under way and online",
        Duration::from_secs(30),
        |s| s["online"] == json!(true),
    )
    .await;
    let before: Vec<i64> = (1..=10)
        .map(|i| sim.balance(&i.to_string()).unwrap())
        .collect();
    for i in 1..=10 {
        let (s, v) = d.earn(&format!("drain-{i}"), &i.to_string(), 5).await;
        assert!(s == 200 || s == 201 || s == 202, "{s} {v}");
    }
    let st = d
        .wait_for("every earn applied", Duration::from_secs(60), |s| {
            s["queue"]["applied"] == json!(10)
        })
        .await;
    assert!(
        st["cache"]["last_full_refresh_at"].is_null(),
        "the earns waited for the full pull: {st:#}"
    );
    for i in 1..=10 {
        assert_eq!(
            sim.balance(&i.to_string()).unwrap(),
            before[i - 1] + 5,
            "customer {i}"
        );
    }
    d.stop().await;
    sim.shutdown().await;
}
