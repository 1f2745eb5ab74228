//! Operations commands on the real binary: `pointsd doctor` against the simulator (all OK,
//! then each kind of breakage reported as FAIL with a fix) and `service install --dry-run`
//! for each platform.

use crate::common;

use common::free_port;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pointsd::sim::SimHandle;

fn write_config(dir: &Path, sim_url: &str, secret: &str, port: u16) -> PathBuf {
    common::write_config(
        dir,
        "pointsd.toml",
        "store-doctor",
        port,
        "",
        "doctor-test-token-0123456789",
        &common::smaregi_upstream(sim_url, secret, 2_000),
    )
}

async fn doctor(config: &Path, data: &Path) -> Output {
    let (config, data) = (config.to_path_buf(), data.to_path_buf());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pointsd"))
            .args(["doctor", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn lines(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn fail_line<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.starts_with("FAIL") && l.split_whitespace().nth(1) == Some(name))
}

async fn sim() -> SimHandle {
    common::start_sim(10).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_is_all_ok_against_a_working_upstream() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    // A complete install names its Smaregi store (without it, doctor warns that it cannot
    // tell who grants points).
    let cfg = common::write_config(
        dir.path(),
        "pointsd.toml",
        "store-doctor\"\nsmaregi_store_id = \"1",
        free_port(),
        "",
        "doctor-test-token-0123456789",
        &common::smaregi_upstream(&sim.url(), "sim-secret", 2_000),
    );
    let o = doctor(&cfg, &dir.path().join("data")).await;
    let out = lines(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("FAIL") && !out.contains("WARN"), "{out}");
    for name in [
        "config",
        "data dir",
        "database",
        "listen",
        "dns",
        "tcp",
        "credentials",
        "clock",
        "change feed",
        "granting",
        "log dir",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("OK") && l[4..].trim_start().starts_with(name)),
            "no OK line for {name}:\n{out}"
        );
    }
}

/// An app without `pos.transactions:read`: a WARN naming the scope and the fix, not a FAIL
/// (points still sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_warns_when_the_app_lacks_the_transactions_scope() {
    let sim = SimHandle::start(
        common::loopback(),
        common::loopback(),
        pointsd::sim::SimOptions {
            customers: 10,
            scopes: vec!["pos.customers:read".into(), "pos.customers:write".into()],
            ..pointsd::sim::SimOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sim.url(), "sim-secret", free_port());
    let o = doctor(&cfg, &dir.path().join("data")).await;
    let out = lines(&o);
    assert!(o.status.success(), "a missing feed is a warning:\n{out}");
    let l = out
        .lines()
        .find(|l| l.starts_with("WARN") && l.contains("change feed"))
        .unwrap_or_else(|| panic!("no WARN for the change feed:\n{out}"));
    assert!(l.contains("pos.transactions:read"), "{l}");
    assert!(out.contains("developer console"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_wrong_credentials() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sim.url(), "wrong-secret", free_port());
    let o = doctor(&cfg, &dir.path().join("data")).await;
    let out = lines(&o);
    assert!(!o.status.success());
    let l = fail_line(&out, "credentials").unwrap_or_else(|| panic!("{out}"));
    assert!(l.contains("client_secret"), "{l}");
    assert!(
        !out.contains("wrong-secret"),
        "the secret must not be printed:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_an_unreachable_upstream() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = write_config(dir.path(), &dead, "sim-secret", free_port());
    let o = doctor(&cfg, &dir.path().join("data")).await;
    let out = lines(&o);
    assert!(!o.status.success());
    assert!(fail_line(&out, "tcp").is_some(), "{out}");
    assert!(fail_line(&out, "credentials").is_some(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_an_unwritable_data_dir() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sim.url(), "sim-secret", free_port());
    // A data dir below a regular file cannot be created, even by root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let o = doctor(&cfg, &blocker.join("data")).await;
    let out = lines(&o);
    assert!(!o.status.success());
    let l = fail_line(&out, "data").unwrap_or_else(|| panic!("{out}"));
    assert!(l.contains("not writable") && l.contains("fix:"), "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_tells_a_taken_port_from_a_running_pointsd() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let cfg = write_config(dir.path(), &sim.url(), "sim-secret", port);
    // Something else answers on the port (accepts, then closes without HTTP).
    std::thread::spawn(move || {
        for s in squatter.incoming().take(4) {
            drop(s);
        }
    });
    let o = doctor(&cfg, &dir.path().join("data")).await;
    let out = lines(&o);
    assert!(!o.status.success());
    let l = fail_line(&out, "listen").unwrap_or_else(|| panic!("{out}"));
    assert!(l.contains("taken by another program"), "{l}");

    // The same port held by a running pointsd is fine.
    let mut c = common::test_config(&sim, "store-doctor");
    let d = common::TestDaemon::start(c.clone(), dir.path().join("d2"), true).await;
    let port2: u16 = d.url.rsplit(':').next().unwrap().parse().unwrap();
    c.api.listen = format!("127.0.0.1:{port2}");
    let cfg2 = write_config(dir.path(), &sim.url(), "sim-secret", port2);
    let o = doctor(&cfg2, &dir.path().join("data3")).await;
    let out = lines(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("OK") && l.contains("in use by a running pointsd")),
        "{out}"
    );
}

fn dry_run(platform: &str, config: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args([
            "service",
            "install",
            "--dry-run",
            "--platform",
            platform,
            "--config",
            config,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn service_install_dry_run_shows_the_systemd_unit() {
    let out = dry_run("systemd", "/etc/pointsd/pointsd.toml");
    let bin = std::fs::canonicalize(env!("CARGO_BIN_EXE_pointsd")).unwrap();
    assert!(
        out.contains("would write /etc/systemd/system/pointsd.service"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "| ExecStart={} run --config /etc/pointsd/pointsd.toml",
            bin.display()
        )) || out.contains(&format!(
            "| ExecStart={} run --config /etc/pointsd/pointsd.toml",
            env!("CARGO_BIN_EXE_pointsd")
        )),
        "{out}"
    );
    for l in [
        "| After=network-online.target",
        "| User=pointsd",
        "| StateDirectory=pointsd",
        "| ProtectSystem=strict",
        "systemctl enable pointsd.service",
    ] {
        assert!(out.contains(l), "{l} missing:\n{out}");
    }
}

#[test]
fn service_install_dry_run_shows_the_launchd_plist() {
    let out = dry_run(
        "launchd",
        "/Library/Application Support/pointsd/pointsd.toml",
    );
    assert!(
        out.contains("/Library/LaunchDaemons/jp.pointsd.plist"),
        "{out}"
    );
    assert!(
        out.contains("<string>/Library/Application Support/pointsd/pointsd.toml</string>"),
        "{out}"
    );
    assert!(
        out.contains("<key>KeepAlive</key>") && out.contains("<key>RunAtLoad</key>"),
        "{out}"
    );
    assert!(out.contains("launchctl bootstrap system"), "{out}");
}

#[test]
fn service_install_dry_run_shows_the_sc_exe_commands() {
    let out = dry_run("windows", r"C:\ProgramData\pointsd\pointsd.toml");
    assert!(
        out.contains(r"service-run --config C:\ProgramData\pointsd\pointsd.toml"),
        "{out}"
    );
    assert!(out.contains("sc.exe create pointsd"), "{out}");
    assert!(
        out.contains(
            "sc.exe failure pointsd reset= 86400 actions= restart/5000/restart/5000/restart/5000"
        ),
        "{out}"
    );
    assert!(out.contains("sc.exe start pointsd"), "{out}");
}

#[test]
fn service_install_for_another_platform_needs_dry_run() {
    let other = if cfg!(windows) { "systemd" } else { "windows" };
    let o = Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["service", "install", "--platform", other])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dry-run"));
}

#[test]
fn the_launchd_plist_written_by_install_parses() {
    let out = dry_run(
        "launchd",
        "/Library/Application Support/pointsd/pointsd.toml",
    );
    let plist: String = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("  | ")
                .or_else(|| (l == "  |").then_some(""))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.plist");
    std::fs::write(&p, plist).unwrap();
    let check = Command::new("python3")
        .arg("-c")
        .arg(
            "import plistlib,sys; d=plistlib.load(open(sys.argv[1],'rb')); \
             assert d['Label']=='jp.pointsd'; a=d['ProgramArguments']; \
             assert a[1:]==['run','--config','/Library/Application Support/pointsd/pointsd.toml'], a; \
             assert d['KeepAlive']=={'SuccessfulExit': False}",
        )
        .arg(&p)
        .output()
        .expect("python3 runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A stop is bounded (`api.shutdown_grace_s`): with the upstream hanging, a reconcile in
/// flight and five half-sent requests held open by a client, SIGTERM still ends the real
/// binary with exit 0 within the grace plus a small margin, and every acknowledged
/// transaction is on disk afterwards.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_the_grace_while_clients_hold_requests_open() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    const TOKEN: &str = "shutdown-test-token-0123456789";
    const MANAGER: &str = "shutdown-manager-token-0123456789";
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rest = format!(
        "[[api.tokens]]\nname = \"manager\"\ntoken = \"{MANAGER}\"\nrole = \"manager\"\n{}\
         [sync]\nprobe_interval_s = 1\nonline_budget_ms = 0\n",
        common::smaregi_upstream(&sim.url(), "sim-secret", 1_500)
    );
    let cfg = common::write_config(
        dir.path(),
        "pointsd.toml",
        "store-shutdown",
        port,
        "shutdown_grace_s = 2",
        TOKEN,
        &rest,
    );
    let data = dir.path().join("data");
    let mut d = common::DaemonProcess::start(&cfg, &data, port, "warn");
    d.wait_healthy(Duration::from_secs(20)).await;
    let http = pointsd::http_client_builder().no_proxy().build().unwrap();
    let start = Instant::now();
    loop {
        let s: serde_json::Value = http
            .get(format!("{}/v1/status", d.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["cache"]["last_full_refresh_at"].is_string() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no full refresh: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The upstream stops answering (every call runs into the request timeout).
    common::set_faults(&sim, |f| f.latency_ms = 600_000);
    let mut acked = Vec::new();
    for i in 0..5 {
        let txn_id = format!("stop-{i}");
        let r = http
            .post(format!("{}/v1/transactions", d.url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"txn_id": txn_id, "customer_id": "1", "kind": "earn", "points": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
        acked.push(txn_id);
    }
    let reconcile = {
        let (http, url) = (http.clone(), d.url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/reconcile"))
                .bearer_auth(MANAGER)
                .json(&serde_json::json!({}))
                .send()
                .await
        })
    };
    // Five requests whose bodies never finish arriving.
    let held: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                s,
                "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"txn_id\":"
            )
            .unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stop = Instant::now();
    d.terminate();
    let status = d
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("pointsd exits after SIGTERM");
    let took = stop.elapsed();
    assert!(
        status.success(),
        "pointsd exited with {status} after SIGTERM"
    );
    // grace 2 s; the sync workers' current call ends within the request timeout (1.5 s).
    assert!(
        took < Duration::from_secs(5),
        "the stop took {took:?}, more than the 2 s grace plus a margin"
    );
    drop(held);
    let _ = reconcile.await;

    let store = pointsd::store::Store::open(&data.join("pointsd.db")).unwrap();
    for txn_id in &acked {
        assert!(
            store.txn(txn_id).await.unwrap().is_some(),
            "acknowledged {txn_id} is not on disk"
        );
    }
}
