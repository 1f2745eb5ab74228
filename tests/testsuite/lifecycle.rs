//! Data lifecycle (DESIGN.md §15, issue 26): a writer that survives a bad job, backups,
//! a restore that never double-sends, retention, the disk floor.

use crate::common;

use axum::response::IntoResponse;
use pointsd::config::{EarnConfig, OfflineConfig};
use pointsd::ledger::{Kind, NewTxn};
use pointsd::store::{AcceptCtx, AcceptOutcome, Store, StoreError};
use pointsd::upstream::UpstreamBalance;

fn ctx() -> AcceptCtx {
    AcceptCtx {
        now_ms: 1_000,
        today: "2026-11-23".into(),
        online: true,
        token_name: "register-1".into(),
        earn: EarnConfig::default(),
        offline: OfflineConfig::default(),
    }
}

fn earn(id: &str, points: i64) -> NewTxn {
    NewTxn {
        txn_id: id.into(),
        customer_id: "c1".into(),
        kind: Kind::Earn,
        points: Some(points),
        purchase_amount: None,
        reason: None,
        register_id: None,
        staff_id: None,
    }
}

/// A panicking job in the middle of a burst of earns fails alone: its caller gets the 500
/// `internal` problem, every earn is acknowledged and still there after a reopen, and the
/// writer takes new writes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pointsd.db");
    let store = Store::open(&path).unwrap();
    store
        .upsert_balances(
            vec![UpstreamBalance {
                customer_id: "c1".into(),
                point: 100,
                expires_at: None,
                updated_at: Some("u0".into()),
            }],
            0,
            1,
        )
        .await
        .unwrap();

    // 200 earns queued at once (they share group commits), the bad job queued among them.
    let mut earns = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        earns.push(tokio::spawn(async move {
            s.accept(earn(&format!("e{i:03}"), 1), ctx()).await
        }));
        if i == 100 {
            let s = store.clone();
            earns.push(tokio::spawn(async move {
                s.write(|c| {
                    // Writes something first: the savepoint must undo it.
                    c.execute("INSERT INTO customers(customer_id) VALUES ('ghost')", [])?;
                    panic!("injected bug in a write job");
                    #[allow(unreachable_code)]
                    Ok(AcceptOutcome::UnknownCustomer)
                })
                .await
            }));
        }
    }
    let mut acknowledged = 0;
    let mut panicked = 0;
    for h in earns {
        match h.await.unwrap() {
            Ok(AcceptOutcome::Created { .. }) => acknowledged += 1,
            Ok(other) => panic!("unexpected outcome {other:?}"),
            Err(e @ StoreError::JobPanicked { .. }) => {
                panicked += 1;
                let resp = pointsd::api::ApiError::from(e).into_response();
                assert_eq!(resp.status().as_u16(), 500);
                let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                    .await
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["code"], "internal", "{v}");
            }
            Err(e) => panic!("an earn failed with the bad job: {e}"),
        }
    }
    assert_eq!((acknowledged, panicked), (200, 1));

    // The writer goes on.
    let after = store.accept(earn("after", 5), ctx()).await.unwrap();
    assert!(matches!(after, AcceptOutcome::Created { .. }), "{after:?}");
    assert!(store.storage_health().ok);
    store.close().await;

    // Durable: every acknowledged earn; nothing of the bad job.
    let again = Store::open(&path).unwrap();
    let (txns, sum) = again
        .read(|c| {
            c.query_row("SELECT count(*), sum(delta) FROM txns", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
        })
        .await
        .unwrap();
    assert_eq!((txns, sum), (201, 205));
    let c1 = again.customer("c1").await.unwrap().expect("customer kept");
    assert_eq!(c1.balance().available, 100 + 205);
    assert!(again.customer("ghost").await.unwrap().is_none());
    again.close().await;
}

/// Runs the real binary with `args`; returns (success, stdout + stderr).
fn pointsd(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(args)
        .env_remove("POINTSD_DATA_DIR")
        .env_remove("POINTSD_CONFIG")
        .output()
        .expect("run pointsd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// After a restore, each of the 50 transactions is either applied (proven by read-back) or in
/// review with evidence; the simulator saw each `point/add` once.
async fn check_restored_run(
    sim: &pointsd::sim::SimHandle,
    d: &common::TestDaemon,
    ids: &[(String, String, i64)],
    initial: &std::collections::HashMap<String, i64>,
) {
    d.wait_drained(std::time::Duration::from_secs(120)).await;
    for (txn, customer, points) in ids {
        let (s, v) = d.get(&format!("/v1/transactions/{txn}")).await;
        assert_eq!(s, 200, "{v}");
        let state = v["state"].as_str().unwrap_or_default();
        assert!(
            state == "applied" || state == "needs_review",
            "{txn}: {state}: {v}"
        );
        // Either way the verdict came from the read-back, with its evidence.
        assert!(
            v["upstream_result"].to_string().contains("before_balance"),
            "{txn}: no read-back evidence: {v}"
        );
        assert_eq!(
            common::adds_for(sim, customer),
            vec![*points],
            "customer {customer}: point/add requests applied"
        );
        assert_eq!(sim.balance(customer), Some(initial[customer] + points));
    }
    assert_eq!(sim.adds().len(), ids.len(), "no point/add beyond the 50");
}

/// A backup taken while 50 earns were queued (upstream down), then sent by the old machine;
/// restoring it (in place, and on a "new PC" data dir) and starting → nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_never_sends_twice() {
    use common::*;
    let sim = start_sim(60).await;
    let dir_a = tempfile::tempdir().unwrap();
    let config = test_config(&sim, "store-1");
    let mut d = TestDaemon::start(config.clone(), dir_a.path().to_path_buf(), true).await;
    let customers: Vec<String> = (1..=50).map(|i| i.to_string()).collect();
    let initial: std::collections::HashMap<String, i64> = customers
        .iter()
        .map(|c| (c.clone(), sim.balance(c).unwrap()))
        .collect();

    // The upstream is down: the earns queue.
    set_faults(&sim, |f| f.error_rate = 1.0);
    let mut ids = Vec::new();
    for (i, c) in customers.iter().enumerate() {
        let txn = format!("r-{c}");
        let points = 10 + i as i64;
        let (s, v) = d.earn(&txn, c, points).await;
        assert!(s == 201 || s == 202, "{s} {v}");
        ids.push((txn, c.clone(), points));
    }
    let st = d.status().await;
    let open = st["queue"]["pending"].as_i64().unwrap()
        + st["queue"]["sending"].as_i64().unwrap()
        + st["queue"]["ambiguous"].as_i64().unwrap();
    assert_eq!(open, 50, "{st}");

    // The backup, taken by the real binary while the daemon runs.
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("queued.db");
    let (ok, out) = pointsd(&[
        os("backup"),
        os("--config"),
        os("/nonexistent/pointsd.toml"),
        os("--data-dir"),
        dir_a.path().as_os_str(),
        os("--to"),
        file.as_os_str(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("sha256 ") && out.contains("quick_check ok"),
        "{out}"
    );

    // A restore while the daemon runs is refused.
    let (ok, out) = pointsd(&[
        os("restore"),
        file.as_os_str(),
        os("--config"),
        os("/nonexistent/pointsd.toml"),
        os("--data-dir"),
        dir_a.path().as_os_str(),
    ]);
    assert!(!ok && out.contains("running"), "{out}");

    // The upstream comes back; the old machine sends all 50.
    set_faults(&sim, |f| f.error_rate = 0.0);
    d.wait_drained(std::time::Duration::from_secs(120)).await;
    assert_eq!(sim.adds().len(), 50);
    d.stop().await;

    // Restore in place, start: every row read back, none resent.
    let (ok, out) = pointsd(&[
        os("restore"),
        file.as_os_str(),
        os("--config"),
        os("/nonexistent/pointsd.toml"),
        os("--data-dir"),
        dir_a.path().as_os_str(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("50 transaction(s) were open"), "{out}");
    let mut d = TestDaemon::start(config.clone(), dir_a.path().to_path_buf(), true).await;
    check_restored_run(&sim, &d, &ids, &initial).await;
    // A second start does not read them back again (the restore mark is consumed).
    d.stop().await;

    // The same on a new PC: a fresh data dir.
    let dir_new = tempfile::tempdir().unwrap();
    let new_data = dir_new.path().join("data");
    let (ok, out) = pointsd(&[
        os("restore"),
        file.as_os_str(),
        os("--config"),
        os("/nonexistent/pointsd.toml"),
        os("--data-dir"),
        new_data.as_os_str(),
    ]);
    assert!(ok, "{out}");
    let mut d = TestDaemon::start(config, new_data, true).await;
    check_restored_run(&sim, &d, &ids, &initial).await;
    let applied = {
        let mut n = 0;
        for (txn, ..) in &ids {
            if d.get(&format!("/v1/transactions/{txn}")).await.1["state"] == "applied" {
                n += 1;
            }
        }
        n
    };
    eprintln!("restored on a new data dir: {applied} of 50 proven applied, the rest in review");
    d.stop().await;
}

/// Backups under a steady stream of earns: `pointsd backup` holds every earn acknowledged
/// before it started and passes `quick_check`; the scheduled ones rotate to the newest `keep`;
/// `status` and `/metrics` report the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_under_load_are_consistent_and_scheduled_ones_rotate() {
    use common::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = start_sim(20).await;
    let dir = tempfile::tempdir().unwrap();
    let scheduled = tempfile::tempdir().unwrap();
    let mut config = test_config(&sim, "store-1");
    config.backup.dir = Some(scheduled.path().to_path_buf());
    config.backup.interval_s = 1;
    config.backup.keep = 3;
    let d = Arc::new(TestDaemon::start(config, dir.path().to_path_buf(), true).await);

    // A steady stream of earns, each recorded once acknowledged.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (d, acked, stop) = (d.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let txn = format!("load-{i}");
                let (s, v) = d.earn(&txn, &(1 + i % 20).to_string(), 1).await;
                assert!(s == 201 || s == 202, "{s} {v}");
                acked.lock().unwrap().push(txn);
                i += 1;
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    let file = dir.path().join("manual.db");
    let t0 = std::time::Instant::now();
    let (ok, out) = pointsd(&[
        os("backup"),
        os("--config"),
        os("/nonexistent/pointsd.toml"),
        os("--data-dir"),
        dir.path().as_os_str(),
        os("--to"),
        file.as_os_str(),
    ]);
    let took = t0.elapsed();
    assert!(ok, "{out}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let during = acked.lock().unwrap().len() - before.len();
    // Every earn acknowledged before the backup started is in it.
    let conn =
        rusqlite::Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut st = conn
        .prepare("SELECT 1 FROM txns WHERE txn_id = ?1")
        .unwrap();
    for t in &before {
        assert!(
            st.exists([t]).unwrap(),
            "{t} acknowledged before the backup, missing from it"
        );
    }
    let sha = out
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .expect("sha256 printed")
        .to_string();
    assert_eq!(sha.len(), 64);
    assert_eq!(pointsd::store::backup::digest(&file).unwrap().1, sha);
    eprintln!(
        "manual backup under load: {} earns acknowledged before it, {during} during and just after; took {took:?}",
        before.len()
    );
    assert!(during > 0, "earns went on while the backup ran");

    // Scheduled backups: one a second, the newest 3 kept.
    d.wait_for(
        "5 scheduled backups",
        std::time::Duration::from_secs(30),
        |s| s["backup"]["last_ok"] == true && s["backup"]["next_at"].is_string(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let files = pointsd::store::backup::scheduled_backups(scheduled.path());
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        pointsd::store::backup::verify(f).unwrap();
    }
    let s = d.status().await;
    let last_path = s["backup"]["path"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&last_path).exists(), "{s}");
    assert!(s["backup"]["bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["retention"]["keep_days"], 400, "{s}");
    let m = d.metrics_text().await;
    let ts = metric(&m, "pointsd_backup_last_success_timestamp_seconds", None).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - ts).abs() < 30.0, "{ts} vs {now}");
    Arc::into_inner(d).expect("one handle").stop().await;
}

/// The disk floor on a small tmpfs: below `min_free_mb` writes get 507 `insufficient_storage`
/// while SQLite still has room (storage stays ok: no ENOSPC was ever met), look-ups work,
/// status and /metrics say so; once space is freed, writes resume by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_disk_floor_writes_get_507_and_resume_by_themselves() {
    use common::*;
    let test = "below_the_disk_floor_writes_get_507_and_resume_by_themselves";
    let Some(fs) = Tmpfs::mount(test, "24m") else {
        return;
    };
    let sim = start_sim(5).await;
    let mut config = test_config(&sim, "store-floor");
    config.storage.min_free_mb = 8;
    let data = fs.path().join("data");
    let mut d = TestDaemon::start(config, data.clone(), true).await;
    let (s, v) = d.earn("floor-1", "1", 5).await;
    assert!(s == 201 || s == 202, "{s} {v}");

    // 4 MB left: below the 8 MB floor, well above a full disk.
    let filler = Filler::leave(fs.path().join("filler"), 4 * 1024 * 1024);
    d.wait_for("below the floor", std::time::Duration::from_secs(10), |s| {
        s["storage"]["below_floor"] == true
    })
    .await;
    let (s, v) = d.earn("floor-2", "1", 5).await;
    assert_eq!(s, 507, "{v}");
    assert_eq!(v["code"], "insufficient_storage", "{v}");
    // Nothing of it was saved; look-ups and what was acknowledged are untouched.
    let (s, _) = d.get("/v1/transactions/floor-2").await;
    assert_eq!(s, 404);
    let (s, v) = d.get("/v1/transactions/floor-1").await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.get("/v1/customers/1").await;
    assert_eq!(s, 200, "{v}");
    let st = d.status().await;
    assert_eq!(
        st["storage"]["ok"], true,
        "the floor came before ENOSPC: {st}"
    );
    assert!(st["storage"]["free_mb"].as_u64().unwrap() < 8, "{st}");
    let m = d.metrics_text().await;
    assert_eq!(metric(&m, "pointsd_storage_below_floor", None), Some(1.0));

    // Space returns: writes resume without a restart.
    drop(filler);
    d.wait_for("above the floor", std::time::Duration::from_secs(10), |s| {
        s["storage"]["below_floor"] == false
    })
    .await;
    let (s, v) = d.earn("floor-2", "1", 5).await;
    assert!(s == 201 || s == 202, "{s} {v}");
    let m = d.metrics_text().await;
    assert_eq!(metric(&m, "pointsd_storage_below_floor", None), Some(0.0));
    d.stop().await;
}

/// Retention under a write load: 1,500 applied transactions older than keep_days go in small
/// batches while registers keep earning (every earn acknowledged and kept); recent, open and
/// in-review rows stay; an old sale goes with its return and their transactions, an old sale
/// with a recent return stays; the queue counts stay true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_closed_history_in_batches_under_a_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("pointsd.db")).unwrap();
    store
        .upsert_balances(
            vec![UpstreamBalance {
                customer_id: "c1".into(),
                point: 100,
                expires_at: None,
                updated_at: Some("u0".into()),
            }],
            0,
            1,
        )
        .await
        .unwrap();
    let day = 86_400_000i64;
    let now = 1_000 * day;
    let old = now - 500 * day;
    let cutoff = now - 400 * day;
    let mut ids = Vec::new();
    for i in 0..2_000 {
        ids.push(format!("h{i:05}"));
    }
    for extra in ["sale:S-old", "return:R-old", "sale:S-kept", "return:R-kept"] {
        ids.push(extra.to_string());
    }
    for id in &ids {
        store.accept(earn(id, 1), ctx()).await.unwrap();
    }
    for i in 0..30 {
        store
            .accept(earn(&format!("open{i:02}"), 1), ctx())
            .await
            .unwrap();
    }
    // History: 1,500 applied long ago, 499 applied recently, one old in review, 30 old still
    // open; two old sales (one returned long ago, one returned recently).
    store
        .write(move |c| {
            c.execute_batch(&format!(
                "UPDATE txns SET state = 'applied', created_at = {old}, updated_at = {old} WHERE txn_id < 'h01500';
                 UPDATE txns SET state = 'applied', created_at = {now}, updated_at = {now} WHERE txn_id >= 'h01500' AND txn_id < 'h01999';
                 UPDATE txns SET state = 'needs_review', created_at = {old}, updated_at = {old} WHERE txn_id = 'h01999';
                 UPDATE txns SET created_at = {old}, updated_at = {old} WHERE txn_id LIKE 'open%';
                 UPDATE txns SET state = 'applied', created_at = {old}, updated_at = {old} WHERE txn_id LIKE 'sale:%' OR txn_id = 'return:R-old';
                 UPDATE txns SET state = 'applied', created_at = {now}, updated_at = {now} WHERE txn_id = 'return:R-kept';
                 INSERT INTO sales(sale_id, request, customer_id, amount, points_used, points_earned, net_delta, applied_rules, txn_id, token_name, created_at)
                   VALUES ('S-old', '{{}}', 'c1', 1000, 0, 10, 10, '[]', 'sale:S-old', 't', {old}),
                          ('S-kept', '{{}}', 'c1', 1000, 0, 10, 10, '[]', 'sale:S-kept', 't', {old});
                 INSERT INTO returns(return_id, request, sale_id, amount, points_taken_back, points_given_back, net_delta, txn_id, token_name, created_at)
                   VALUES ('R-old', '{{}}', 'S-old', 1000, 10, 0, -10, 'return:R-old', 't', {old}),
                          ('R-kept', '{{}}', 'S-kept', 1000, 10, 0, -10, 'return:R-kept', 't', {now});"
            ))?;
            Ok(())
        })
        .await
        .unwrap();

    // Registers keep earning while retention runs; each earn's latency is recorded.
    let load = {
        let s = store.clone();
        tokio::spawn(async move {
            let mut worst = std::time::Duration::ZERO;
            for i in 0..300 {
                let t0 = std::time::Instant::now();
                let r = s
                    .accept(earn(&format!("load{i:03}"), 1), ctx())
                    .await
                    .unwrap();
                assert!(matches!(r, AcceptOutcome::Created { .. }), "{r:?}");
                worst = worst.max(t0.elapsed());
            }
            worst
        })
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let t0 = std::time::Instant::now();
    let run = store
        .run_retention(cutoff, std::time::Duration::from_millis(1), &stop)
        .await
        .unwrap();
    let took = t0.elapsed();
    let worst = load.await.unwrap();
    eprintln!("retention: {run:?} in {took:?}; worst earn latency meanwhile {worst:?}");
    assert_eq!((run.txns, run.sales, run.returns), (1_502, 1, 1), "{run:?}");
    assert!(run.batches >= 4, "small batches: {run:?}");

    let count = |sql: &'static str| {
        let s = store.clone();
        async move {
            s.read(move |c| c.query_row(sql, [], |r| r.get::<_, i64>(0)))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM txns WHERE txn_id < 'h01500'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM txns WHERE txn_id >= 'h01500' AND txn_id LIKE 'h%'").await,
        500
    );
    assert_eq!(
        count("SELECT count(*) FROM txns WHERE txn_id LIKE 'open%'").await,
        30
    );
    assert_eq!(
        count("SELECT count(*) FROM txns WHERE txn_id LIKE 'load%'").await,
        300
    );
    assert_eq!(count("SELECT count(*) FROM sales").await, 1);
    assert_eq!(count("SELECT count(*) FROM returns").await, 1);
    assert_eq!(
        count("SELECT count(*) FROM txns WHERE txn_id LIKE 'sale:%' OR txn_id LIKE 'return:%'")
            .await,
        2
    );
    // The queue counts (kept by triggers) agree with the rows.
    let q = store.queue_stats().await.unwrap();
    assert_eq!(
        q.applied,
        count("SELECT count(*) FROM txns WHERE state = 'applied'").await
    );
    assert_eq!(
        q.pending,
        count("SELECT count(*) FROM txns WHERE state = 'pending'").await
    );
    assert_eq!(q.needs_review, 1);
    store.close().await;
}

/// `pointsd export` on the real binary: every transaction created in the range, as JSON lines
/// or CSV; nothing outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_the_history_of_a_date_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("pointsd.db")).unwrap();
    store
        .upsert_balances(
            vec![UpstreamBalance {
                customer_id: "c1".into(),
                point: 100,
                expires_at: None,
                updated_at: Some("u0".into()),
            }],
            0,
            1,
        )
        .await
        .unwrap();
    for i in 0..5 {
        let mut t = earn(&format!("x{i}"), 3);
        t.reason = Some("=cmd, \"quoted\"".into());
        store.accept(t, ctx()).await.unwrap();
    }
    // ctx() stamps 1970-01-01T00:00:01Z: 09:00:01 on 1970-01-01 in Tokyo.
    store.close().await;
    let data = dir.path().as_os_str();
    let run = |from: &str, to: &str, format: &str| {
        let (ok, out) = pointsd(&[
            os("export"),
            os("--config"),
            os("/nonexistent/pointsd.toml"),
            os("--data-dir"),
            data,
            os("--from"),
            os(from),
            os("--to"),
            os(to),
            os("--format"),
            os(format),
        ]);
        assert!(ok, "{out}");
        out
    };
    let jsonl = run("1970-01-01", "1970-01-01", "jsonl");
    let rows: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{jsonl}");
    assert_eq!(rows[0]["record"], "txn");
    assert_eq!(rows[0]["id"], "x0");
    assert_eq!(rows[0]["delta"], 3);
    assert_eq!(rows[0]["state"], "pending");
    let csv = run("1970-01-01", "1970-01-01", "csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 6, "{csv}");
    assert!(lines[0].starts_with("record,id,customer_id"), "{csv}");
    assert!(lines[1].contains("\"'=cmd, \"\"quoted\"\"\""), "{csv}");
    assert_eq!(run("1970-01-02", "1970-12-31", "jsonl").lines().count(), 0);
}

/// Measurement (ignored by default; `cargo test --test lifecycle -- --ignored --nocapture
/// backup_beside`): earn latency with and without a backup of a 200,000-transaction database
/// running beside it. The backup reads one snapshot on its own connection; the writer does not
/// wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (builds a 200,000-row database); run it by name"]
async fn backup_beside_a_stream_of_earns_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pointsd.db");
    let store = Store::open(&db).unwrap();
    store
        .upsert_balances(
            vec![UpstreamBalance {
                customer_id: "c1".into(),
                point: 100,
                expires_at: None,
                updated_at: Some("u0".into()),
            }],
            0,
            1,
        )
        .await
        .unwrap();
    store.accept(earn("seed", 1), ctx()).await.unwrap();
    store
        .write(|c| {
            c.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
                 INSERT INTO txns(txn_id, request, customer_id, kind, delta, points, token_name,
                   created_at, state, next_attempt_at, updated_at)
                 SELECT 'bulk' || i, '{\"reason\":\"a request body of some length, as registers send\"}',
                   'c1', 'earn', 1, 1, 'register-1', 1000, 'applied', 1000, 1000 FROM n;",
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let bytes = std::fs::metadata(&db).unwrap().len()
        + std::fs::metadata(dir.path().join("pointsd.db-wal")).map_or(0, |m| m.len());
    let earns = |s: Store, tag: &'static str, n: usize| async move {
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let t0 = std::time::Instant::now();
            s.accept(earn(&format!("{tag}{i}"), 1), ctx())
                .await
                .unwrap();
            lat.push(t0.elapsed());
        }
        lat.sort();
        (
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            lat[lat.len() - 1],
        )
    };
    let base = earns(store.clone(), "base", 300).await;
    let to = std::env::var_os("BACKUP_TO")
        .map_or_else(|| dir.path().join("copy.db"), std::path::PathBuf::from);
    let db2 = db.clone();
    let backup = tokio::task::spawn_blocking(move || {
        pointsd::store::backup::backup_to(&db2, &to, 0).unwrap()
    });
    let during = earns(store.clone(), "during", 300).await;
    let rep = backup.await.unwrap();
    eprintln!(
        "database {} MB; backup {} MB in {} ms; earn latency p50/p99/max without a backup {:?}, with one running {:?}",
        bytes / 1_000_000,
        rep.bytes / 1_000_000,
        rep.took_ms,
        base,
        during
    );
    store.close().await;
}

/// Measurement (ignored by default; `cargo test --release --test lifecycle -- --ignored
/// --nocapture a_million`): earn and look-up latency on an empty history and beside 1,000,000
/// closed transactions, and the database file's size across retention runs (it stops growing:
/// SQLite reuses the pages retention frees).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (builds a 1,000,000-row database); run it by name"]
async fn a_million_closed_transactions_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pointsd.db");
    let store = Store::open(&db).unwrap();
    store
        .upsert_balances(
            ["c1", "c2"]
                .map(|c| UpstreamBalance {
                    customer_id: c.into(),
                    point: 100,
                    expires_at: None,
                    updated_at: Some("u0".into()),
                })
                .to_vec(),
            0,
            1,
        )
        .await
        .unwrap();
    let measure = |s: Store, tag: String| async move {
        let mut earn_lat = Vec::new();
        let mut look_lat = Vec::new();
        for i in 0..400 {
            let t0 = std::time::Instant::now();
            s.accept(earn(&format!("{tag}{i}"), 1), ctx())
                .await
                .unwrap();
            earn_lat.push(t0.elapsed());
            let t0 = std::time::Instant::now();
            // c2: the customer the closed history belongs to (c1's open earns would add to
            // its look-up's open-rows sum whatever the history).
            assert!(s.customer("c2").await.unwrap().is_some());
            look_lat.push(t0.elapsed());
        }
        earn_lat.sort();
        look_lat.sort();
        (earn_lat[200], look_lat[200])
    };
    store.checkpoint().await.unwrap();
    let empty = measure(store.clone(), "empty".into()).await;
    let old_rows = |from: i64, n: i64| {
        let s = store.clone();
        async move {
            s.write(move |c| {
                c.execute_batch(&format!(
                    "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {from} + {n} - 1)
                     INSERT INTO txns(txn_id, request, customer_id, kind, delta, points, token_name,
                       created_at, state, next_attempt_at, updated_at)
                     SELECT 'old' || i, '{{\"reason\":\"a request body of some length\"}}',
                       'c2', 'earn', 1, 1, 'register-1', 1000, 'applied', 1000, 1000 FROM n;"
                ))?;
                Ok(())
            })
            .await
            .unwrap()
        }
    };
    for k in 0..10 {
        old_rows(k * 100_000, 100_000).await;
    }
    // Measured once the bulk load's WAL is folded in (not beside a 200 MB checkpoint).
    store.checkpoint().await.unwrap();
    let full = measure(store.clone(), "full".into()).await;
    let size = || {
        std::fs::metadata(&db).unwrap().len()
            + std::fs::metadata(dir.path().join("pointsd.db-wal")).map_or(0, |m| m.len())
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let t0 = std::time::Instant::now();
    let cutoff = 2_000;
    let r1 = store
        .run_retention(cutoff, std::time::Duration::from_millis(1), &stop)
        .await
        .unwrap();
    let took = t0.elapsed();
    let after_first = size();
    let mut sizes = Vec::new();
    for round in 0..3 {
        old_rows(2_000_000 + round * 300_000, 300_000).await;
        store
            .run_retention(cutoff, std::time::Duration::from_millis(1), &stop)
            .await
            .unwrap();
        sizes.push(size());
    }
    eprintln!(
        "median earn / look-up: empty history {:?} / {:?}; beside 1,000,000 closed {:?} / {:?}",
        empty.0, empty.1, full.0, full.1
    );
    eprintln!(
        "retention deleted {} rows in {} batches, {took:?}; file {} MB after it, then {:?} MB after 3 rounds of 300,000 more old rows and retention",
        r1.txns,
        r1.batches,
        after_first / 1_000_000,
        sizes.iter().map(|s| s / 1_000_000).collect::<Vec<_>>()
    );
    assert_eq!(r1.txns, 1_000_000);
    store.close().await;
}

/// The old PC died before sending some of what the backup holds, after sending the rest: two
/// earns per customer queued in the backup; for half the customers the first earn reached the
/// upstream before the disk died (applied there, not by the new PC), for the other half
/// nothing did. Restored on a new data dir: what the read-back proves applied is not sent,
/// what it proves not applied is sent, once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_sends_exactly_what_the_old_pc_had_not_sent() {
    use common::*;
    let sim = start_sim(20).await;
    let dir_old = tempfile::tempdir().unwrap();
    let config = test_config(&sim, "store-1");
    let mut d = TestDaemon::start(config.clone(), dir_old.path().to_path_buf(), true).await;
    let customers: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    let initial: std::collections::HashMap<String, i64> = customers
        .iter()
        .map(|c| (c.clone(), sim.balance(c).unwrap()))
        .collect();
    set_faults(&sim, |f| f.error_rate = 1.0);
    for c in &customers {
        for (tag, points) in [("a", 10), ("b", 20)] {
            let (s, v) = d.earn(&format!("{tag}-{c}"), c, points).await;
            assert!(s == 201 || s == 202, "{s} {v}");
        }
    }
    let file = dir_old.path().join("backup.db");
    let (ok, out) = pointsd(&[
        os("backup"),
        os("--config"),
        os("/nonexistent/pointsd.toml"),
        os("--data-dir"),
        dir_old.path().as_os_str(),
        os("--to"),
        file.as_os_str(),
    ]);
    assert!(ok, "{out}");
    // The old PC dies with the upstream still down: nothing more leaves it. For customers
    // 1-5 its first earn had reached the upstream anyway (as if sent just before).
    d.stop().await;
    set_faults(&sim, |f| f.error_rate = 0.0);
    for c in &customers[..5] {
        sim.add_elsewhere(c, 10);
    }

    let dir_new = tempfile::tempdir().unwrap();
    let (ok, out) = pointsd(&[
        os("restore"),
        file.as_os_str(),
        os("--config"),
        os("/nonexistent/pointsd.toml"),
        os("--data-dir"),
        dir_new.path().as_os_str(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("20 transaction(s) were open"), "{out}");
    let mut d = TestDaemon::start(config, dir_new.path().to_path_buf(), true).await;
    d.wait_drained(std::time::Duration::from_secs(120)).await;
    for (i, c) in customers.iter().enumerate() {
        let sent_before = i < 5;
        let expected_adds: Vec<i64> = if sent_before { vec![20] } else { vec![10, 20] };
        assert_eq!(adds_for(&sim, c), expected_adds, "customer {c}");
        assert_eq!(sim.balance(c), Some(initial[c] + 30), "customer {c}");
        for tag in ["a", "b"] {
            let (_, v) = d.get(&format!("/v1/transactions/{tag}-{c}")).await;
            assert_eq!(v["state"], "applied", "{tag}-{c}: {v}");
        }
        assert_eq!(d.available(c).await, initial[c] + 30, "customer {c}");
    }
    d.stop().await;
}

/// The naive move: the data dir copied to a new PC by hand (no `pointsd restore`) while the
/// old PC still had 10 earns queued, which it sent afterwards. The copy knows it was moved
/// (another path; the same holds for another machine or an older file put in place) and reads
/// every open transaction back: nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_copied_by_hand_never_sends_twice() {
    use common::*;
    let sim = start_sim(20).await;
    let old = tempfile::tempdir().unwrap();
    let config = test_config(&sim, "store-1");
    let mut d = TestDaemon::start(config.clone(), old.path().to_path_buf(), true).await;
    let customers: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    let initial: std::collections::HashMap<String, i64> = customers
        .iter()
        .map(|c| (c.clone(), sim.balance(c).unwrap()))
        .collect();
    set_faults(&sim, |f| f.error_rate = 1.0);
    for c in &customers {
        let (s, v) = d.earn(&format!("m-{c}"), c, 7).await;
        assert!(s == 201 || s == 202, "{s} {v}");
    }
    d.stop().await;
    // Copied by hand: every file of the data dir.
    let new = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(old.path()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), new.path().join(e.file_name())).unwrap();
        }
    }
    // The old PC runs once more and sends its queue.
    set_faults(&sim, |f| f.error_rate = 0.0);
    let mut d = TestDaemon::start(config.clone(), old.path().to_path_buf(), true).await;
    d.wait_drained(std::time::Duration::from_secs(60)).await;
    d.stop().await;
    assert_eq!(sim.adds().len(), 10);
    // The copy starts on the new PC.
    let mut d = TestDaemon::start(config, new.path().to_path_buf(), true).await;
    d.wait_drained(std::time::Duration::from_secs(60)).await;
    for c in &customers {
        assert_eq!(adds_for(&sim, c), vec![7], "customer {c}");
        assert_eq!(sim.balance(c), Some(initial[c] + 7));
        let (_, v) = d.get(&format!("/v1/transactions/m-{c}")).await;
        assert!(
            v["state"] == "applied" || v["state"] == "needs_review",
            "m-{c}: {v}"
        );
    }
    d.stop().await;
}
