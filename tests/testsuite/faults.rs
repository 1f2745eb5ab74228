//! Disk and file faults (issue 7): a full disk, damaged or foreign databases at start-up, a
//! data dir that cannot be used, a second daemon on the same data dir, and wall-clock jumps.
//!
//! The disk-full tests put the data dir on a small tmpfs, which needs root (`mount`). Without
//! it they print `SKIPPED ...` and pass, unless the environment variable `CI` is set, where
//! they fail instead. Every tmpfs is unmounted by a guard, also when a test panics.
//!
//! Everything is checked from the outside: HTTP answers, the simulator's own ledger, exit
//! codes and stderr of the real binary, and the database file's bytes.

use crate::common;
use common::adds_for;

use common::free_port;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use pointsd::clock::{Clock, SharedClock, SystemClock};
use pointsd::config::Config;
use pointsd::sim::{Faults, SimHandle};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

// The tmpfs is `common::Tmpfs` (shared with tests/testsuite/lifecycle.rs).

/// A file that fills its file system; removed on drop (that is how space "returns").
struct Filler(PathBuf);

impl Filler {
    /// Writes until the file system is full, then gives back `room` bytes.
    fn fill(path: PathBuf, room: u64) -> Filler {
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(room)).unwrap();
        Filler(path)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn earn_body(txn_id: &str, customer: &str, points: i64, reason: &str) -> Value {
    json!({"txn_id": txn_id, "customer_id": customer, "kind": "earn", "points": points, "reason": reason})
}

/// POST /v1/transactions, keeping the content type.
async fn post_txn(d: &TestDaemon, body: &Value) -> (u16, String, Value) {
    let r = d
        .http
        .post(format!("{}/v1/transactions", d.url))
        .bearer_auth(REGISTER_TOKEN)
        .json(body)
        .send()
        .await
        .expect("daemon answers");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = r.text().await.unwrap();
    (
        status,
        ct,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn txn_state(d: &TestDaemon, txn_id: &str) -> (u16, Value) {
    d.get(&format!("/v1/transactions/{txn_id}")).await
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Disk full
// ---------------------------------------------------------------------------------------------

/// Storage health while the disk is full: `GET /v1/status` → `storage.ok = false`,
/// `storage.last_error` saying "full", `storage.last_error_at`, `storage.errors` counting the
/// failures; `/metrics` → gauge `pointsd_storage_ok 0`, counter `pointsd_storage_errors_total`.
async fn assert_storage_unhealthy(d: &TestDaemon, at_least: usize) {
    let s = d.status().await;
    assert_eq!(s["storage"]["ok"], json!(false), "status while full: {s:#}");
    let err = s["storage"]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.to_lowercase().contains("full"),
        "status.storage.last_error should say the disk is full: {s:#}"
    );
    assert!(
        s["storage"]["last_error_at"].is_string(),
        "status.storage.last_error_at: {s:#}"
    );
    assert!(
        s["storage"]["errors"].as_u64().unwrap_or(0) >= at_least as u64,
        "status.storage.errors counts at least the {at_least} refused writes: {s:#}"
    );
    let m = d.metrics_text().await;
    assert!(
        metric(&m, "pointsd_storage_errors_total", None).unwrap_or(0.0) >= at_least as f64,
        "pointsd_storage_errors_total counts at least the {at_least} refused writes:\n{m}"
    );
    assert_eq!(
        metric(&m, "pointsd_storage_ok", None),
        Some(0.0),
        "pointsd_storage_ok while full:\n{m}"
    );
}

async fn assert_storage_healthy_again(d: &TestDaemon, at_least: usize) {
    let s = d.status().await;
    assert_eq!(
        s["storage"]["ok"],
        json!(true),
        "status after recovery: {s:#}"
    );
    let m = d.metrics_text().await;
    assert_eq!(
        metric(&m, "pointsd_storage_ok", None),
        Some(1.0),
        "pointsd_storage_ok after recovery:\n{m}"
    );
    assert!(
        metric(&m, "pointsd_storage_errors_total", None).unwrap_or(0.0) >= at_least as f64,
        "the error counter keeps its count after recovery:\n{m}"
    );
}

/// The disk fills while registers keep writing (the link is down, so the only way for a
/// transaction to reach the upstream is after space returns). Writes answer 503
/// `storage_full`, nothing refused is saved, everything acknowledged is readable, look-ups
/// keep working; once space returns, writes recover by themselves and every acknowledged
/// transaction reaches the upstream exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_writes_keeps_lookups_and_recovers_by_itself() {
    let test = "disk_full_refuses_writes_keeps_lookups_and_recovers_by_itself";
    let Some(fs) = Tmpfs::mount(test, "4m") else {
        return;
    };
    let sim = start_sim(5).await;
    let mut config = test_config(&sim, "store-disk-full");
    config.sync.online_budget_ms = 0;
    // The disk floor off: this test is about SQLite itself meeting a full disk, the case the
    // floor (tests/lifecycle.rs) is there to prevent.
    config.storage.min_free_mb = 0;
    let data = fs.path().join("data");
    let mut d = TestDaemon::start(config, data.clone(), true).await;
    let initial = sim.balance("1").unwrap();
    let reason = "r".repeat(pointsd::ledger::MAX_REASON_LEN);
    let mut acked: Vec<(String, i64)> = Vec::new();

    // Room to spare: acknowledged and synced as usual.
    for i in 0..3 {
        let id = format!("full-pre-{i}");
        let (s, v) = d.earn(&id, "1", 1).await;
        assert_eq!(s, 201, "{v}");
        acked.push((id, 1));
    }
    d.wait_drained(Duration::from_secs(15)).await;
    set_faults(&sim, |f| f.refuse = true);
    d.wait_for(
        "the daemon to notice the link is down",
        Duration::from_secs(15),
        |s| s["online"] == json!(false),
    )
    .await;

    // Leave a little room, then write until SQLite cannot.
    let filler = Filler::fill(fs.path().join("filler"), 128 * 1024);
    let mut refused: Vec<(String, i64)> = Vec::new();
    let mut acked_while_filling = 0;
    let mut i = 0;
    while refused.is_empty() {
        assert!(
            i < 500,
            "500 earns with {}-character reasons still fitted: the disk never filled",
            reason.len()
        );
        let (id, pts) = (format!("full-{i}"), (i % 9 + 1) as i64);
        let (s, ct, v) = post_txn(&d, &earn_body(&id, "1", pts, &reason)).await;
        match s {
            201 => {
                acked.push((id, pts));
                acked_while_filling += 1;
            }
            503 => {
                assert_storage_full_problem(&ct, &v);
                refused.push((id, pts));
            }
            other => panic!("earn {id} while the disk fills: {other} {v}"),
        }
        i += 1;
    }
    // More writes while full: refused as storage_full, or acknowledged if they happen to fit
    // into space SQLite already holds; nothing else.
    for j in 0..5 {
        let (id, pts) = (format!("full-more-{j}"), (j % 9 + 1) as i64);
        let (s, ct, v) = post_txn(&d, &earn_body(&id, "1", pts, &reason)).await;
        match s {
            201 => acked.push((id, pts)),
            503 => {
                assert_storage_full_problem(&ct, &v);
                refused.push((id, pts));
            }
            other => panic!("earn {id} on a full disk: {other} {v}"),
        }
    }
    eprintln!(
        "{test}: {acked_while_filling} earn(s) acknowledged while filling, {} refused with storage_full",
        refused.len()
    );

    // Look-ups keep working and count exactly what was acknowledged.
    let sum: i64 = acked.iter().map(|(_, p)| p).sum();
    let (s, c) = d.get("/v1/customers/1").await;
    assert_eq!(s, 200, "look-up while the disk is full: {c}");
    assert_eq!(
        c["balance"]["available"],
        json!(initial + sum),
        "available while full counts every acknowledged earn and nothing refused: {c}"
    );
    for (id, pts) in &acked {
        let (s, t) = txn_state(&d, id).await;
        assert_eq!(s, 200, "acknowledged {id} is not readable: {t}");
        assert_eq!(t["delta"], json!(pts), "{t}");
    }
    for (id, _) in &refused {
        let (s, t) = txn_state(&d, id).await;
        assert_eq!(
            s, 404,
            "{id} was answered 503 \"nothing was saved\", but it is stored: {t}"
        );
    }
    let st = d.status().await;
    assert!(st["queue"].is_object(), "status while full: {st}");
    let m = d.metrics_text().await;
    assert!(
        metric(
            &m,
            "pointsd_api_writes_total",
            Some("result=\"storage_error\"")
        )
        .is_some_and(|n| n >= refused.len() as f64),
        "refused writes are counted in pointsd_api_writes_total{{result=\"storage_error\"}}:\n{m}"
    );
    assert_storage_unhealthy(&d, refused.len()).await;

    // Space returns: the registers retry the same requests, which now succeed with no
    // restart and no operator action.
    drop(filler);
    for (id, pts) in &refused {
        let mut tries = 0;
        loop {
            tries += 1;
            let (s, _, v) = post_txn(&d, &earn_body(id, "1", *pts, &reason)).await;
            match s {
                201 => break,
                503 if tries < 20 => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => panic!("retry {tries} of {id} after space returned: {s} {v}"),
            }
        }
        if tries > 1 {
            eprintln!("{test}: FINDING: {id} needed {tries} tries after space returned");
        }
        acked.push((id.clone(), *pts));
    }
    for j in 0..3 {
        let id = format!("full-after-{j}");
        let (s, v) = d.earn(&id, "1", 2).await;
        assert_eq!(s, 201, "a new earn after space returned: {v}");
        acked.push((id, 2));
    }
    assert_storage_healthy_again(&d, refused.len()).await;

    // Link back: everything acknowledged reaches the upstream exactly once, in order.
    sim.set_faults(Faults::default());
    let st = d.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st}");
    assert_eq!(st["queue"]["rejected"], json!(0), "{st}");
    for (id, _) in &acked {
        let (s, t) = txn_state(&d, id).await;
        assert_eq!((s, &t["state"]), (200, &json!("applied")), "{id}: {t}");
    }
    let want: Vec<i64> = acked.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        adds_for(&sim, "1"),
        want,
        "the upstream's adds for the customer must be exactly the acknowledged earns, in order"
    );
    let sum: i64 = want.iter().sum();
    assert_eq!(sim.balance("1"), Some(initial + sum));

    // And on disk, read without the daemon: every acknowledged transaction is there.
    d.stop().await;
    let conn = rusqlite::Connection::open_with_flags(
        data.join("pointsd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    for (id, _) in &acked {
        let state: String = conn
            .query_row("SELECT state FROM txns WHERE txn_id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| panic!("acknowledged {id} is not in the database file: {e}"));
        assert_eq!(state, "applied", "{id}");
    }
    drop(conn);
    sim.shutdown().await;
    drop(d);
    drop(fs);
}

fn assert_storage_full_problem(content_type: &str, v: &Value) {
    assert!(
        content_type.starts_with("application/problem+json"),
        "503 must be problem+json, got {content_type:?}: {v}"
    );
    assert_eq!(v["status"], json!(503), "{v}");
    assert_eq!(v["code"], json!("storage_full"), "{v}");
    assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
    assert!(
        v.get("state").is_none(),
        "a refusal carries no transaction: {v}"
    );
}

/// The disk fills while a send is in flight: the upstream applies the earn, but the daemon
/// cannot record that. Once space returns, the transaction must settle (read back, found
/// applied) without a restart, and the customer's later transactions must flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_outcome_lost_to_a_full_disk_settles_without_a_restart() {
    let test = "a_sync_outcome_lost_to_a_full_disk_settles_without_a_restart";
    let Some(fs) = Tmpfs::mount(test, "4m") else {
        return;
    };
    let sim = start_sim(5).await;
    let mut config = test_config(&sim, "store-disk-full-send");
    config.sync.online_budget_ms = 0;
    // The disk floor off: this test is about SQLite itself meeting a full disk, the case the
    // floor (tests/lifecycle.rs) is there to prevent.
    config.storage.min_free_mb = 0;
    let mut d = TestDaemon::start(config, fs.path().join("data"), true).await;
    let initial = sim.balance("1").unwrap();
    // Slow answers, so the disk can fill between the claim and the answer.
    set_faults(&sim, |f| f.latency_ms = 600);
    let (s, v) = d.earn("inflight-1", "1", 7).await;
    assert_eq!(s, 201, "{v}");
    wait_until("inflight-1 to be sent", Duration::from_secs(5), || async {
        txn_state(&d, "inflight-1").await.1["state"] == json!("sending")
    })
    .await;
    let filler = Filler::fill(fs.path().join("filler"), 0);
    wait_until(
        "the upstream to apply inflight-1",
        Duration::from_secs(5),
        || async { adds_for(&sim, "1") == [7] },
    )
    .await;
    // The answer arrives while the disk is full; give the daemon a moment to try to record it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, t) = txn_state(&d, "inflight-1").await;
    eprintln!("{test}: while full, inflight-1 is {}", t["state"]);
    drop(filler);
    sim.set_faults(Faults::default());
    let (s, v) = d.earn("inflight-2", "1", 5).await;
    assert_eq!(s, 201, "{v}");

    let st = d.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st}");
    for id in ["inflight-1", "inflight-2"] {
        let (_, t) = txn_state(&d, id).await;
        assert_eq!(t["state"], json!("applied"), "{id}: {t}");
    }
    assert_eq!(adds_for(&sim, "1"), [7, 5], "each exactly once, in order");
    assert_eq!(sim.balance("1"), Some(initial + 12));
    d.stop().await;
    sim.shutdown().await;
    drop(d);
    drop(fs);
}

// ---------------------------------------------------------------------------------------------
// 2. Refusing to start: damaged or foreign database, unusable data dir, second daemon
// ---------------------------------------------------------------------------------------------

const TOKEN: &str = "faults-test-token-0123456789";
const CUSTOMERS: u32 = 20;

/// A config for the real binary with the built-in simulator.
fn write_run_config(dir: &Path, name: &str, port: u16) -> PathBuf {
    let rest = format!(
        "[upstream]\nkind = \"sim\"\n[upstream.sim]\ncustomers = {CUSTOMERS}\n\
         [sync]\nprobe_interval_s = 1\nonline_budget_ms = 0\n"
    );
    common::write_config(dir, name, "store-faults", port, "", TOKEN, &rest)
}

fn daemon_command(config: &Path, data: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_pointsd"));
    c.args(["run", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .env_remove("POINTSD_DATA_DIR")
        .env_remove("POINTSD_CONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// A running `pointsd run` (the shared guard: killed on drop).
struct Daemon {
    process: common::DaemonProcess,
    url: String,
    http: reqwest::Client,
}

impl Daemon {
    async fn start(config: &Path, data: &Path, port: u16) -> Daemon {
        let process = common::DaemonProcess::start(config, data, port, "warn");
        let d = Daemon {
            url: process.url.clone(),
            process,
            http: pointsd::http_client_builder().no_proxy().build().unwrap(),
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = d
                .http
                .get(format!("{}/v1/status", d.url))
                .bearer_auth(TOKEN)
                .send()
                .await
                && r.status().is_success()
            {
                let s: Value = r.json().await.unwrap();
                if s["cache"]["customers"] == json!(CUSTOMERS)
                    && s["cache"]["last_full_refresh_at"].is_string()
                {
                    return d;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pointsd did not come up at {}",
                d.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn earn(&self, txn_id: &str, customer: u32, points: i64, reason: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/transactions", self.url))
            .bearer_auth(TOKEN)
            .json(&earn_body(txn_id, &customer.to_string(), points, reason))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// SIGTERM, then wait for a clean exit.
    async fn stop(mut self) {
        self.process.terminate();
        let status = self
            .process
            .wait_exit(Duration::from_secs(30))
            .await
            .expect("pointsd stops within 30 s of SIGTERM");
        assert!(
            status.success(),
            "pointsd exited with {status} after SIGTERM"
        );
    }
}

/// A data dir holding a database written by a real run and stopped cleanly (with its WAL
/// folded into the main file, so the file alone is the whole database).
async fn clean_data_dir(dir: &Path) -> PathBuf {
    let port = free_port();
    let config = write_run_config(dir, "make-db.toml", port);
    let data = dir.join("data");
    let d = Daemon::start(&config, &data, port).await;
    let reason = "d".repeat(400);
    for i in 0..60u32 {
        let (s, v) = d
            .earn(&format!("seed-{i}"), i % CUSTOMERS + 1, 1, &reason)
            .await;
        assert_eq!(s, 201, "{v}");
    }
    d.stop().await;
    let db = data.join("pointsd.db");
    let wal = data.join("pointsd.db-wal");
    if let Ok(m) = std::fs::metadata(&wal) {
        eprintln!(
            "note: after a clean stop, {} is still there ({} bytes)",
            wal.display(),
            m.len()
        );
    }
    // Fold a WAL left by the run into the main file; closing the last connection removes it.
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    // File times are coarse (a clock tick): a change made in the same tick as the stop would
    // look untouched and skip the start-up check. A real edit comes much later.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !wal.exists(),
        "{} survived a checkpoint and close",
        wal.display()
    );
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(
        len >= 16 * 4096,
        "the seed database is too small to damage its middle: {len}"
    );
    data
}

/// Starts `pointsd run` expecting it to refuse. Returns its stderr after checking a clean
/// refusal: non-zero exit (not a signal, not a panic) within 20 s, naming `path`, and saying
/// each of `hints` (what to do).
async fn expect_refusal(config: &Path, data: &Path, path: &Path, hints: &[&str]) -> String {
    let child = daemon_command(config, data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pointsd run");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "pointsd started (still running after 20 s) on {} instead of refusing",
                data.display()
            )
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "pointsd exited 0 instead of refusing:\n{err}"
    );
    assert!(
        out.status.code().is_some(),
        "pointsd died from a signal ({}), not a clean refusal:\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "pointsd panicked:\n{err}");
    let p = path.display().to_string();
    assert!(err.contains(&p), "the error does not name {p}:\n{err}");
    for h in hints {
        assert!(
            err.to_lowercase().contains(&h.to_lowercase()),
            "the error does not say {h:?}:\n{err}"
        );
    }
    err
}

/// The database file must be exactly as it was, and no WAL with content may have appeared.
fn assert_untouched(db: &Path, before: &[u8]) {
    let after = std::fs::read(db).unwrap();
    assert!(
        after == before,
        "{} was modified ({} bytes before, {} after)",
        db.display(),
        before.len(),
        after.len()
    );
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if let Ok(m) = std::fs::metadata(&wal) {
        assert_eq!(
            m.len(),
            0,
            "a WAL with content appeared next to {}",
            db.display()
        );
    }
}

/// Deterministic garbage.
fn garbage(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = clean_data_dir(dir.path()).await;
    let db = data.join("pointsd.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    let mid = bytes.len() / 2 / page * page;
    bytes[mid - page..mid + page].copy_from_slice(&garbage(2 * page));
    std::fs::write(&db, &bytes).unwrap();

    let config = write_run_config(dir.path(), "run.toml", free_port());
    let err = expect_refusal(&config, &data, &db, &["integrity", "backup"]).await;
    eprintln!(
        "corrupt database: {}",
        err.lines().last().unwrap_or_default()
    );
    assert_untouched(&db, &bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = clean_data_dir(dir.path()).await;
    let db = data.join("pointsd.db");
    let len = std::fs::metadata(&db).unwrap().len();
    let cut = len / 2 + 1000;
    assert_ne!(cut % 4096, 0);
    std::fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let bytes = std::fs::read(&db).unwrap();

    let config = write_run_config(dir.path(), "run.toml", free_port());
    let err = expect_refusal(&config, &data, &db, &["backup"]).await;
    eprintln!(
        "truncated database: {}",
        err.lines().last().unwrap_or_default()
    );
    assert_untouched(&db, &bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = clean_data_dir(dir.path()).await;
    let db = data.join("pointsd.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(!data.join("pointsd.db-wal").exists());
    let bytes = std::fs::read(&db).unwrap();

    let config = write_run_config(dir.path(), "run.toml", free_port());
    let err = expect_refusal(&config, &data, &db, &["99", "newer"]).await;
    eprintln!("newer schema: {}", err.lines().last().unwrap_or_default());
    assert_untouched(&db, &bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_under_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"keep me").unwrap();
    let data = file.join("data");
    let config = write_run_config(dir.path(), "run.toml", free_port());
    let err = expect_refusal(&config, &data, &data, &["data dir", "writable"]).await;
    eprintln!(
        "data dir under a file: {}",
        err.lines().last().unwrap_or_default()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid() == 0
}

/// A data dir the daemon cannot write to: a read-only mount as root (root ignores
/// permission bits), `chmod 000` otherwise. The database in it stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_data_dir_is_refused_and_left_untouched() {
    let test = "unwritable_data_dir_is_refused_and_left_untouched";
    let dir = tempfile::tempdir().unwrap();
    let seed = clean_data_dir(dir.path()).await;
    let bytes = std::fs::read(seed.join("pointsd.db")).unwrap();
    let config = write_run_config(dir.path(), "run.toml", free_port());

    if running_as_root() {
        let Some(fs) = Tmpfs::mount(test, "8m") else {
            return;
        };
        let data = fs.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("pointsd.db"), &bytes).unwrap();
        fs.remount_read_only();
        let err = expect_refusal(&config, &data, &data, &["data dir", "writable"]).await;
        eprintln!(
            "read-only data dir: {}",
            err.lines().last().unwrap_or_default()
        );
        assert_untouched(&data.join("pointsd.db"), &bytes);
        drop(fs);
    } else {
        use std::os::unix::fs::PermissionsExt;
        struct Restore(PathBuf);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
            }
        }
        let data = dir.path().join("locked-out");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("pointsd.db"), &bytes).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o000)).unwrap();
        let restore = Restore(data.clone());
        let err = expect_refusal(&config, &data, &data, &["data dir", "writable"]).await;
        eprintln!(
            "chmod 000 data dir: {}",
            err.lines().last().unwrap_or_default()
        );
        drop(restore);
        assert_untouched(&data.join("pointsd.db"), &bytes);
    }
}

/// A second daemon on the same data dir refuses, and the first one carries on unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_run_config(dir.path(), "first.toml", port);
    let data = dir.path().join("data");
    let first = Daemon::start(&config, &data, port).await;
    let (s, v) = first.earn("before-second", 1, 3, "x").await;
    assert_eq!(s, 201, "{v}");

    let config2 = write_run_config(dir.path(), "second.toml", free_port());
    let err = expect_refusal(
        &config2,
        &data,
        &data,
        &["already running", "stop it first"],
    )
    .await;
    eprintln!("second daemon: {}", err.lines().last().unwrap_or_default());

    let (s, t) = first.get("/v1/transactions/before-second").await;
    assert_eq!(s, 200, "{t}");
    let (s, v) = first.earn("after-second", 1, 4, "x").await;
    assert_eq!(s, 201, "the first daemon must keep working: {v}");
    first.stop().await;
}

/// The lock file is gone (an over-eager clean-up deleted it) while a daemon runs: a second
/// daemon must still refuse, because the database itself is in use (the issue: "lock file
/// or SQLite lock").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_is_refused_even_without_the_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_run_config(dir.path(), "first.toml", port);
    let data = dir.path().join("data");
    let first = Daemon::start(&config, &data, port).await;
    std::fs::remove_file(data.join("pointsd.lock")).unwrap();

    let config2 = write_run_config(dir.path(), "second.toml", free_port());
    let err = expect_refusal(&config2, &data, &data, &["already running"]).await;
    eprintln!(
        "second daemon without lock file: {}",
        err.lines().last().unwrap_or_default()
    );
    let (s, v) = first.earn("still-first", 1, 4, "x").await;
    assert_eq!(s, 201, "{v}");
    first.stop().await;
}

/// After a clean stop (SIGTERM, exit 0) the database file is self-contained: a copy of
/// `pointsd.db` alone (a backup taken with the service stopped, or a file kept "for
/// support") holds every acknowledged transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_a_self_contained_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("pointsd.db");
    let reason = "s".repeat(400);
    let mut acked = 0;
    for round in 0..3 {
        let port = free_port();
        let config = write_run_config(dir.path(), &format!("round-{round}.toml"), port);
        let d = Daemon::start(&config, &data, port).await;
        for i in 0..40u32 {
            let (s, v) = d
                .earn(&format!("stop-{round}-{i}"), i % CUSTOMERS + 1, 1, &reason)
                .await;
            assert_eq!(s, 201, "{v}");
            acked += 1;
        }
        d.stop().await;
        let wal_len = std::fs::metadata(data.join("pointsd.db-wal")).map_or(0, |m| m.len());
        let copy = dir.path().join(format!("copy-{round}.db"));
        std::fs::copy(&db, &copy).unwrap();
        let in_copy: i64 = rusqlite::Connection::open(&copy)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM txns", [], |r| r.get(0))
            .unwrap_or(-1);
        if wal_len > 0 {
            eprintln!("note: stop {round}: pointsd.db-wal left behind with {wal_len} bytes");
        }
        assert_eq!(
            in_copy, acked,
            "stop {round}: a copy of pointsd.db alone (its WAL, {wal_len} bytes, left behind) has \
             {in_copy} of the {acked} acknowledged transactions"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Wall-clock jumps
// ---------------------------------------------------------------------------------------------

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// The system clock moved by a settable offset: time flows as usual, and a test makes it
/// jump the way NTP, a dead RTC battery or an operator would.
#[derive(Default)]
struct JumpClock {
    offset_ms: AtomicI64,
}

impl JumpClock {
    fn set_offset(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for JumpClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
}

/// Like `TestDaemon::start`, with the clock under the test's control.
async fn start_with_clock(config: Config, dir: PathBuf, clock: SharedClock) -> TestDaemon {
    let settings = Arc::new(config.clone().validate().expect("valid test config"));
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(pointsd::daemon::run(pointsd::daemon::RunConfig {
        settings,
        data_dir: dir.clone(),
        listener,
        shutdown: shutdown.clone(),
        clock,
    }));
    let d = TestDaemon {
        url,
        dir,
        config,
        shutdown,
        task: Some(task),
        http: pointsd::http_client_builder().no_proxy().build().unwrap(),
    };
    d.wait_for(
        "daemon online with a full cache",
        Duration::from_secs(10),
        |s| s["online"] == json!(true) && s["cache"]["last_full_refresh_at"].is_string(),
    )
    .await;
    d
}

fn parse_ms(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Checks that the simulator applied exactly `want` for `customer`, in that order, and that
/// the daemon holds every one of them as applied.
async fn assert_applied_in_order(
    d: &TestDaemon,
    sim: &SimHandle,
    customer: &str,
    initial: i64,
    want: &[(String, i64)],
) {
    for (id, _) in want {
        let (s, t) = txn_state(d, id).await;
        assert_eq!((s, &t["state"]), (200, &json!("applied")), "{id}: {t}");
    }
    let deltas: Vec<i64> = want.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        adds_for(sim, customer),
        deltas,
        "customer {customer}: the upstream's adds must be the accepted earns, each once, in acceptance order"
    );
    assert_eq!(
        sim.balance(customer),
        Some(initial + deltas.iter().sum::<i64>())
    );
}

/// Writes for two customers while the clock jumps back by hours and ahead by days between
/// them, with the upstream healthy, flaky (503s, so retries are scheduled by the jumping
/// clock) and unreachable in turn. After the clock settles past every jump, the queue
/// drains and each customer's adds arrive in acceptance order, none lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_do_not_reorder_or_lose_transactions() {
    let sim = start_sim(5).await;
    let mut config = test_config(&sim, "store-clock");
    config.sync.online_budget_ms = 0;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(JumpClock::default());
    let mut d = start_with_clock(config, dir.path().join("data"), clock.clone()).await;
    let (initial1, initial2) = (sim.balance("1").unwrap(), sim.balance("2").unwrap());
    let jumps = [
        0,
        -3 * HOUR,
        2 * DAY,
        -5 * HOUR,
        7 * DAY,
        -HOUR,
        DAY,
        -12 * HOUR,
        3 * DAY,
    ];
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for i in 0..30i64 {
        match i {
            10 => set_faults(&sim, |f| f.error_rate = 0.5),
            20 => set_faults(&sim, |f| {
                f.error_rate = 0.0;
                f.refuse = true;
            }),
            25 => sim.set_faults(Faults::default()),
            _ => {}
        }
        clock.set_offset(jumps[i as usize % jumps.len()]);
        for (customer, list, points) in [("1", &mut one, i + 1), ("2", &mut two, 100 + i)] {
            let id = format!("jump-{customer}-{i}");
            let (s, v) = d.earn(&id, customer, points).await;
            assert_eq!(s, 201, "{id}: {v}");
            list.push((id, points));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // The clock settles past every jump (as it would once the jumps are behind it).
    clock.set_offset(8 * DAY);
    sim.set_faults(Faults::default());
    let st = d.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st}");
    assert_eq!(st["queue"]["rejected"], json!(0), "{st}");
    assert_applied_in_order(&d, &sim, "1", initial1, &one).await;
    assert_applied_in_order(&d, &sim, "2", initial2, &two).await;

    // The jumps were real to the daemon: acceptance times are out of order.
    let (_, list) = d.get("/v1/transactions?customer_id=1&limit=100").await;
    let mut created: Vec<i64> = list["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| parse_ms(t["created_at"].as_str().unwrap()))
        .collect();
    created.reverse(); // oldest sequence first
    assert!(
        created.windows(2).any(|w| w[1] < w[0]),
        "the clock jumps did not reach the daemon"
    );
    d.stop().await;
    sim.shutdown().await;
}

/// The clock ran days ahead while the link was down (transactions accepted then carry
/// future times), then is corrected back. When the link returns, the queue must drain at
/// once, in order, not wait for the wall clock to catch up with the wrong times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_corrected_backwards_does_not_stall_the_queue() {
    let sim = start_sim(5).await;
    let mut config = test_config(&sim, "store-clock-back");
    config.sync.online_budget_ms = 0;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(JumpClock::default());
    let mut d = start_with_clock(config, dir.path().join("data"), clock.clone()).await;
    let initial = sim.balance("1").unwrap();
    set_faults(&sim, |f| f.refuse = true);
    d.wait_for("offline", Duration::from_secs(15), |s| {
        s["online"] == json!(false)
    })
    .await;
    let mut accepted = Vec::new();
    for (i, offset) in [2 * DAY, 2 * DAY, 0, 0].into_iter().enumerate() {
        clock.set_offset(offset);
        let id = format!("back-{i}");
        let (s, v) = d.earn(&id, "1", i as i64 + 1).await;
        assert_eq!(s, 201, "{id}: {v}");
        accepted.push((id, i as i64 + 1));
    }
    // NTP corrects the clock; then the link returns.
    clock.set_offset(0);
    sim.set_faults(Faults::default());
    let st = d.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(st["queue"]["needs_review"], json!(0), "{st}");
    assert_applied_in_order(&d, &sim, "1", initial, &accepted).await;
    d.stop().await;
    sim.shutdown().await;
}
