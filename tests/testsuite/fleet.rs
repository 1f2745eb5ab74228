//! A small chain on one contract (issue 13's short fleet test): three stores' agents share a
//! simulated contract with read and write limits, their registers sell to the same customers at
//! once, the online shop changes points too. Invariants only — nothing lost or doubled
//! upstream, every acknowledged sale applied, every store converging on the contract's
//! balances — and no timing assertions: the deadlines below are generous ceilings for a loaded
//! 2-core machine, not measurements (the fleet bench measures; `cargo bench -- fleet`).

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use pointsd::sim::{SimHandle, SimOptions};
use serde_json::json;

const STORES: usize = 3;
const CUSTOMERS: u32 = 40;
/// Customers every store sells to (the cross-store shoppers).
const SHARED: u32 = 12;

/// Store s sells in points 1 + s + 4k: a (customer, delta) pair names the store that made it.
fn points(store: usize, k: usize) -> i64 {
    (1 + store + 4 * (k % 5)) as i64
}

async fn fleet_daemon(sim: &SimHandle, store: usize, dir: &tempfile::TempDir) -> TestDaemon {
    let mut c = test_config(sim, &format!("store-{store}"));
    // Everything goes through the queue, so the stores' pushes overlap on the contract.
    c.sync.online_budget_ms = 0;
    // The shortest full-refresh interval the config allows: the convergence check rides on it.
    c.sync.pull_interval_s = 10;
    c.sync.max_requests_per_second = 10;
    TestDaemon::start(c, dir.path().to_path_buf(), false).await
}

async fn wait_until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<String>) {
    let t0 = Instant::now();
    loop {
        let Some(why) = f().await else { return };
        assert!(t0.elapsed() < limit, "timed out waiting for {what}: {why}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_on_one_limited_contract_loses_and_doubles_nothing_and_converges() {
    let sim = SimHandle::start(
        loopback(),
        loopback(),
        SimOptions {
            customers: CUSTOMERS,
            read_limit_per_s: Some(25),
            write_limit_per_s: Some(8),
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim starts");
    let dirs: Vec<tempfile::TempDir> = (0..STORES).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut stores = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        stores.push(fleet_daemon(&sim, i, d).await);
    }
    for d in &stores {
        d.wait_for("a full cache", Duration::from_secs(60), |s| {
            s["cache"]["last_full_refresh_at"].is_string()
        })
        .await;
    }
    let initial: BTreeMap<String, i64> = (1..=CUSTOMERS)
        .map(|i| (i.to_string(), sim.balance(&i.to_string()).unwrap()))
        .collect();

    // Every store sells to the shared customers at once, plus some of its own; earns, and
    // redeems where the store believes the points are there.
    let mut tasks = Vec::new();
    for (s, d) in stores.iter().enumerate() {
        let url = d.url.clone();
        let http = d.http.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked: Vec<(String, String, i64)> = Vec::new();
            for k in 0..30usize {
                let customer = if k % 3 == 2 {
                    // One of this store's own customers.
                    (SHARED + 1 + (s as u32 * 9 + k as u32) % (CUSTOMERS - SHARED)).to_string()
                } else {
                    (1 + (k as u32 * 5 + s as u32) % SHARED).to_string()
                };
                let p = points(s, k);
                let (kind, delta) = if k % 4 == 3 {
                    ("redeem", -p)
                } else {
                    ("earn", p)
                };
                let txn = format!("s{s}-{k}");
                let r = http
                    .post(format!("{url}/v1/transactions"))
                    .bearer_auth(REGISTER_TOKEN)
                    .json(
                        &json!({"txn_id": txn, "customer_id": customer, "kind": kind, "points": p}),
                    )
                    .send()
                    .await
                    .expect("store answers");
                if r.status().as_u16() == 201 {
                    acked.push((txn, customer, delta));
                }
            }
            acked
        }));
    }
    // The online shop changes two shared customers meanwhile.
    sim.online_change("1", 50).unwrap();
    sim.online_change("2", 30).unwrap();
    let mut acked: Vec<Vec<(String, String, i64)>> = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    assert!(
        acked.iter().all(|a| a.len() >= 20),
        "most sales are acknowledged (earns always are)"
    );
    for d in &stores {
        d.wait_drained(Duration::from_secs(60)).await;
    }

    // Every acknowledged sale ends applied; a redeem may end rejected (another store spent the
    // points first), which the register hears about — that is neither lost nor doubled.
    let mut applied: Vec<(String, i64)> = Vec::new();
    for (s, d) in stores.iter().enumerate() {
        for (txn, c, delta) in &acked[s] {
            let (st, v) = d.get(&format!("/v1/transactions/{txn}")).await;
            assert_eq!(st, 200, "{v}");
            match v["state"].as_str() {
                Some("applied") => applied.push((c.clone(), *delta)),
                Some("rejected") if *delta < 0 => {}
                _ => panic!("store {s}: {v}"),
            }
        }
        let q = d.status().await;
        assert_eq!(q["queue"]["needs_review"], 0, "store {s}: {q}");
    }
    // Upstream: exactly the applied sales, each once, nothing else.
    let mut want: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (c, delta) in &applied {
        *want.entry((c.clone(), *delta)).or_default() += 1;
    }
    let mut got: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for a in sim.adds() {
        *got.entry((a.customer_id, a.delta)).or_default() += 1;
    }
    assert_eq!(got, want, "applied upstream vs applied at the stores");
    // The contract's balances: the initial ones, every sale, the online shop's changes.
    let mut expected = initial.clone();
    for (c, delta) in &applied {
        *expected.get_mut(c).unwrap() += delta;
    }
    *expected.get_mut("1").unwrap() += 50;
    *expected.get_mut("2").unwrap() += 30;
    for (c, b) in &expected {
        assert_eq!(sim.balance(c), Some(*b), "customer {c}");
    }

    // Every store converges on them after a refresh (of its own, on its interval).
    wait_until(
        "every store to show the contract's balances",
        Duration::from_secs(45),
        async || {
            for (s, d) in stores.iter().enumerate() {
                for (c, b) in &expected {
                    let (st, v) = d.get(&format!("/v1/customers/{c}")).await;
                    if st != 200 || v["balance"]["available"] != json!(b) {
                        return Some(format!("store {s} customer {c}: {v} (contract: {b})"));
                    }
                }
            }
            None
        },
    )
    .await;
    // The contract saw every store by its User-Agent and kept to its limits by 429s.
    let agents = sim.requests_by_agent();
    assert!(
        agents.keys().any(|a| a.starts_with("pointsd/")),
        "{agents:?}"
    );
    for mut d in stores {
        d.stop().await;
    }
    sim.shutdown().await;
}
