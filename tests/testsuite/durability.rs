//! Acknowledged means durable (DESIGN.md §2.1), tested on the real binary: registers send
//! earns, the daemon is killed with SIGKILL mid-load, restarted, and every acknowledged
//! transaction is still there, reaches the upstream exactly once, and balances add up.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "durability-test-token-0123456789";

use common::{DaemonProcess as Daemon, SimProcess as Sim, free_port};

fn start_sim(customers: u32) -> Sim {
    common::start_sim_process(customers, &[])
}

fn write_config(dir: &Path, sim: &Sim, port: u16) -> std::path::PathBuf {
    let rest = format!(
        "{}[sync]\nprobe_interval_s = 1\nonline_budget_ms = 0\nbackoff_initial_ms = 100\n\
         backoff_max_ms = 1000\nmax_requests_per_second = 1000\n",
        common::smaregi_upstream(&sim.url, "sim-secret", 2_000)
    );
    common::write_config(
        dir,
        "pointsd.toml",
        "store-durability",
        port,
        "",
        TOKEN,
        &rest,
    )
}

/// `pointsd run` on the shared guard (SIGKILLed when dropped).
fn start_daemon(config: &Path, data: &Path, port: u16) -> Daemon {
    Daemon::start(config, data, port, "warn")
}

async fn wait_healthy(http: &reqwest::Client, url: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(r) = http.get(format!("{url}/v1/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon did not come up at {url}");
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).bearer_auth(TOKEN).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_earns_survive_sigkill_and_sync_exactly_once() {
    const CUSTOMERS: u32 = 20;
    const WRITES: usize = 300;
    const KILL_AFTER: usize = 150;

    let sim = start_sim(CUSTOMERS);
    let http = pointsd::http_client_builder().no_proxy().build().unwrap();
    // Slow the upstream down so the outbox holds a backlog (and rows in `sending`) at the kill.
    http.put(format!("{}/_sim/faults", sim.admin))
        .json(&json!({"latency_ms": 20}))
        .send()
        .await
        .unwrap();
    let mut initial = HashMap::new();
    for c in 1..=CUSTOMERS {
        let (_, v) = get(&http, &format!("{}/_sim/customers/{c}", sim.admin)).await;
        initial.insert(c.to_string(), v["point"].as_i64().unwrap());
    }

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), &sim, port);
    let data = dir.path().join("data");
    let mut daemon = start_daemon(&config, &data, port);
    wait_healthy(&http, &url).await;
    // Wait for the first full refresh, so the customers are known.
    let start = Instant::now();
    loop {
        let (_, s) = get(&http, &format!("{url}/v1/status")).await;
        if s["cache"]["customers"] == json!(CUSTOMERS)
            && s["cache"]["last_full_refresh_at"].is_string()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "cache never filled: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Eight registers send earns; the daemon is killed once KILL_AFTER are acknowledged,
    // with requests still in flight.
    let acked: Arc<Mutex<Vec<(String, String, i64)>>> = Arc::default();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for r in 0..8 {
        let (http, url, acked, sent) = (http.clone(), url.clone(), acked.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= WRITES {
                    break;
                }
                let customer = (i as u32 % CUSTOMERS + 1).to_string();
                let points = (i % 7 + 1) as i64;
                let txn_id = format!("dur-{r}-{i}");
                let res = http
                    .post(format!("{url}/v1/transactions"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"txn_id": txn_id, "customer_id": customer, "kind": "earn", "points": points}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match res {
                    Ok(resp) if resp.status().as_u16() == 201 => {
                        acked.lock().unwrap().push((txn_id, customer, points));
                    }
                    Ok(resp) => panic!("unexpected status {}", resp.status()),
                    // The daemon died under this request: not acknowledged.
                    Err(_) => break,
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < KILL_AFTER {
        assert!(start.elapsed() < Duration::from_secs(60), "load too slow");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    daemon.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER);

    // Restart on the same data dir.
    let mut daemon = start_daemon(&config, &data, port);
    wait_healthy(&http, &url).await;
    let (_, s) = get(&http, &format!("{url}/v1/status")).await;
    eprintln!(
        "after restart: {} acknowledged, queue {}",
        acked.len(),
        s["queue"]
    );
    for (txn_id, customer, points) in &acked {
        let (s, t) = get(&http, &format!("{url}/v1/transactions/{txn_id}")).await;
        assert_eq!(s, 200, "acknowledged {txn_id} lost after SIGKILL");
        assert_eq!(&t["customer_id"], customer);
        assert_eq!(t["delta"], json!(points));
    }

    // Let the queue drain, then compare with the simulator's own ledger.
    let start = Instant::now();
    let status = loop {
        let (_, s) = get(&http, &format!("{url}/v1/status")).await;
        let q = &s["queue"];
        if q["pending"] == json!(0) && q["sending"] == json!(0) && q["ambiguous"] == json!(0) {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "queue did not drain: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if status["queue"]["needs_review"] != json!(0) {
        let (_, r) = get(&http, &format!("{url}/v1/transactions?state=needs_review")).await;
        let mut logs = String::new();
        for e in std::fs::read_dir(data.join("logs")).unwrap() {
            logs.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
        }
        panic!("transactions need review after the restart: {r:#}\ndaemon logs:\n{logs}");
    }
    assert_eq!(status["queue"]["rejected"], json!(0), "{status}");

    // Every transaction the daemon holds (acknowledged or committed just before the kill)
    // was applied exactly once.
    let (_, list) = get(&http, &format!("{url}/v1/transactions?limit=1000")).await;
    let rows = list["transactions"].as_array().unwrap();
    let mut expected = initial.clone();
    for t in rows {
        assert_eq!(t["state"], json!("applied"), "{t}");
        *expected
            .get_mut(t["customer_id"].as_str().unwrap())
            .unwrap() += t["delta"].as_i64().unwrap();
    }
    let (_, adds) = get(&http, &format!("{}/_sim/adds", sim.admin)).await;
    assert_eq!(
        adds.as_array().unwrap().len(),
        rows.len(),
        "the upstream saw a different number of adds than the daemon holds: duplicates or losses"
    );
    for (c, want) in &expected {
        let (_, v) = get(&http, &format!("{}/_sim/customers/{c}", sim.admin)).await;
        assert_eq!(v["point"].as_i64().unwrap(), *want, "customer {c}");
        let (_, local) = get(&http, &format!("{url}/v1/customers/{c}")).await;
        assert_eq!(
            local["balance"]["available"].as_i64().unwrap(),
            *want,
            "local balance of {c}"
        );
    }
    daemon.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let sim = start_sim(5);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &sim, port);
    let data = dir.path().join("data");
    let mut first = start_daemon(&config, &data, port);
    let http = pointsd::http_client_builder().no_proxy().build().unwrap();
    wait_healthy(&http, &format!("http://127.0.0.1:{port}")).await;
    // Same data dir, another port: must refuse because of the data dir lock.
    let config2 = dir.path().join("second.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!(":{port}\""), &format!(":{}\"", free_port()));
    std::fs::write(&config2, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["run", "--config"])
        .arg(&config2)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains(&data.display().to_string()), "{err}");
    first.kill();
}
