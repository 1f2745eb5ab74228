//! Shared fixtures: a simulator and a real daemon on loopback port 0, wired as in production
//! (`upstream.kind = "smaregi"` pointed at the simulator), with fast sync timings.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pointsd::config::{Config, Role, Secret, SmaregiConfig, TierConfig, TokenConfig, UpstreamKind};
use pointsd::sim::{Faults, SimHandle, SimOptions};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const REGISTER_TOKEN: &str = "test-register-token-0123456789";
pub const MANAGER_TOKEN: &str = "test-manager-token-0123456789";

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn start_sim(customers: u32) -> SimHandle {
    SimHandle::start(
        loopback(),
        loopback(),
        SimOptions {
            customers,
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim starts")
}

/// A config for a daemon talking to `sim`, with fast timings for tests.
pub fn test_config(sim: &SimHandle, store_id: &str) -> Config {
    let o = sim.options();
    let mut c = Config::default();
    c.agent.store_id = store_id.into();
    c.api.listen = "127.0.0.1:0".into();
    c.api.tokens = vec![
        TokenConfig {
            name: "register-1".into(),
            token: Some(Secret::new(REGISTER_TOKEN)),
            token_sha256: None,
            role: Role::Register,
        },
        TokenConfig {
            name: "manager".into(),
            token: Some(Secret::new(MANAGER_TOKEN)),
            token_sha256: None,
            role: Role::Manager,
        },
    ];
    c.upstream.kind = UpstreamKind::Smaregi;
    c.upstream.connect_timeout_ms = 500;
    c.upstream.request_timeout_ms = 1_000;
    c.upstream.smaregi = Some(SmaregiConfig {
        contract_id: o.contract_id,
        client_id: o.client_id,
        client_secret: Secret::new(o.client_secret),
        client_secret_file: None,
        id_base: sim.url(),
        api_base: sim.url(),
        allow_insecure_http: false,
    });
    c.sync.probe_interval_s = 1;
    c.sync.backoff_initial_ms = 100;
    c.sync.backoff_max_ms = 1_000;
    c.sync.online_budget_ms = 1_500;
    c.tiers = vec![
        TierConfig {
            name: "Silver".into(),
            min_points: 1000,
            ..Default::default()
        },
        TierConfig {
            name: "Gold".into(),
            min_points: 5000,
            ..Default::default()
        },
    ];
    c
}

pub struct TestDaemon {
    pub url: String,
    pub dir: PathBuf,
    pub config: Config,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<Result<(), pointsd::daemon::DaemonError>>>,
    pub http: reqwest::Client,
}

impl TestDaemon {
    /// Starts a daemon in this process and waits until it has talked to the upstream
    /// (unless the upstream is meant to be down: `wait_online = false`).
    pub async fn start(config: Config, dir: PathBuf, wait_online: bool) -> TestDaemon {
        let settings = Arc::new(config.clone().validate().expect("valid test config"));
        let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pointsd::daemon::run(pointsd::daemon::RunConfig {
            settings,
            data_dir: dir.clone(),
            listener,
            shutdown: shutdown.clone(),
            clock: pointsd::clock::system(),
        }));
        let d = TestDaemon {
            url,
            dir,
            config,
            shutdown,
            task: Some(task),
            http: pointsd::http_client_builder().no_proxy().build().unwrap(),
        };
        if wait_online {
            d.wait_for(
                "daemon online with a full cache",
                Duration::from_secs(10),
                |s| s["online"] == json!(true) && s["cache"]["last_full_refresh_at"].is_string(),
            )
            .await;
        }
        d
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("daemon task").expect("daemon exits cleanly");
        }
    }

    /// `/metrics` as text.
    pub async fn metrics_text(&self) -> String {
        let (s, v) = self.get("/metrics").await;
        assert_eq!(s, 200, "{v}");
        v.as_str().expect("metrics are text").to_string()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(path, Some(REGISTER_TOKEN)).await
    }

    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut rb = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.expect("daemon answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_as(path, REGISTER_TOKEN, body).await
    }

    pub async fn post_as(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("daemon answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn earn(&self, txn_id: &str, customer: &str, points: i64) -> (u16, Value) {
        self.post(
            "/v1/transactions",
            &json!({"txn_id": txn_id, "customer_id": customer, "kind": "earn", "points": points}),
        )
        .await
    }

    pub async fn redeem(&self, txn_id: &str, customer: &str, points: i64) -> (u16, Value) {
        self.post(
            "/v1/transactions",
            &json!({"txn_id": txn_id, "customer_id": customer, "kind": "redeem", "points": points}),
        )
        .await
    }

    pub async fn status(&self) -> Value {
        self.get("/v1/status").await.1
    }

    pub async fn available(&self, customer: &str) -> i64 {
        let (s, v) = self.get(&format!("/v1/customers/{customer}")).await;
        assert_eq!(s, 200, "{v}");
        v["balance"]["available"].as_i64().unwrap()
    }

    /// Polls `/v1/status` until `pred` holds, or fails the test with the last status seen.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            if start.elapsed() > limit {
                panic!("timed out waiting for {what}; last status: {s:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until nothing is pending, sending or ambiguous.
    pub async fn wait_drained(&self, limit: Duration) -> Value {
        self.wait_for("the queue to drain", limit, |s| {
            s["queue"]["pending"] == json!(0)
                && s["queue"]["sending"] == json!(0)
                && s["queue"]["ambiguous"] == json!(0)
        })
        .await
    }
}

pub fn set_faults(sim: &SimHandle, f: impl FnOnce(&mut Faults)) {
    let mut faults = sim.faults();
    f(&mut faults);
    sim.set_faults(faults);
}

/// A free loopback port (for configs that must name their listen address up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `pointsd sim` as a child process (the real binary); killed when dropped.
pub struct SimProcess {
    child: std::process::Child,
    pub url: String,
    pub admin: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pointsd sim --customers N` plus `extra` flags and reads the two URLs it prints.
pub fn start_sim_process(customers: u32, extra: &[&str]) -> SimProcess {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["sim", "--customers", &customers.to_string()])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pointsd sim");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || {
        lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.rsplit(' ').next().map(str::to_string))
            .unwrap_or_default()
    };
    let (url, admin) = (next(), next());
    let sim = SimProcess { child, url, admin };
    assert!(!sim.admin.is_empty(), "pointsd sim did not print its URLs");
    sim
}

/// Sum of a Prometheus sample over the series whose labels contain `label` (if given).
pub fn metric(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if label.is_some_and(|l| !rest.contains(l)) {
            continue;
        }
        if let Some(v) = rest
            .split_whitespace()
            .last()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Whether this run is under CI: `CI` set to anything but empty, `false` or `0`. Every gate
/// below reads it the same way.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A test that cannot run here (no root, a tool missing): a notice on a developer machine,
/// a failure under CI. Returns `false`, so a caller writes `if !runnable(..) { return; }`.
pub fn skip_or_fail(test: &str, why: &str) -> bool {
    if under_ci() {
        panic!("{test} cannot run: {why} (CI is set, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// The deltas the simulator applied for one customer, in order.
pub fn adds_for(sim: &SimHandle, customer: &str) -> Vec<i64> {
    sim.adds()
        .into_iter()
        .filter(|a| a.customer_id == customer)
        .map(|a| a.delta)
        .collect()
}

/// `[upstream]` for the real binary, pointed at a simulator at `url` through the Smaregi
/// adapter (as in production).
pub fn smaregi_upstream(url: &str, secret: &str, request_timeout_ms: u64) -> String {
    // The simulator speaks plain HTTP; beyond loopback (a test's own network namespace) the
    // config must accept that explicitly, as an operator would have to.
    let loopback = ["http://127.", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| url.starts_with(p));
    let insecure = if loopback {
        ""
    } else {
        "allow_insecure_http = true\n"
    };
    format!(
        r#"[upstream]
kind = "smaregi"
connect_timeout_ms = 500
request_timeout_ms = {request_timeout_ms}
[upstream.smaregi]
contract_id = "sim-contract"
client_id = "sim-client"
client_secret = "{secret}"
id_base = "{url}"
api_base = "{url}"
{insecure}"#
    )
}

/// Writes a config for the real binary to `dir/name` (mode 600, as it holds a token):
/// `[agent]` with `store_id`, `[api]` on `127.0.0.1:port` with `api_extra` lines, one
/// register token, then `rest` (the upstream and any other sections).
pub fn write_config(
    dir: &std::path::Path,
    name: &str,
    store_id: &str,
    port: u16,
    api_extra: &str,
    token: &str,
    rest: &str,
) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            r#"[agent]
store_id = "{store_id}"
[api]
listen = "127.0.0.1:{port}"
{api_extra}
[[api.tokens]]
name = "register-1"
token = "{token}"
{rest}"#
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p
}

/// `pointsd run --config C --data-dir D` as a child process (the real binary); SIGKILLed and
/// reaped when dropped, so a failing test leaves no process behind.
pub struct DaemonProcess {
    child: Option<std::process::Child>,
    pub url: String,
}

impl DaemonProcess {
    /// Starts the daemon listening on `port`; `log` is its `RUST_LOG`.
    pub fn start(config: &std::path::Path, data: &std::path::Path, port: u16, log: &str) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
            .args(["run", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", log)
            .env_remove("POINTSD_DATA_DIR")
            .env_remove("POINTSD_CONFIG")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start pointsd run");
        DaemonProcess {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL (`Child::kill` on Unix) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM (Unix).
    pub fn terminate(&self) {
        let st = std::process::Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.exited() {
                self.child = None;
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits until `/v1/health` answers.
    pub async fn wait_healthy(&self, limit: Duration) {
        let http = pointsd::http_client_builder().no_proxy().build().unwrap();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(r) = http.get(format!("{}/v1/health", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("daemon did not come up at {}", self.url);
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tmpfs mounted on a fresh temp dir (needs root); unmounted on drop (lazily if something
/// still holds a file open). `None` (after [`skip_or_fail`]) where it cannot be mounted.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("pointsd-test")
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                skip_or_fail(
                    test,
                    &format!(
                        "`mount -t tmpfs` failed (needs root): {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                );
                None
            }
            Err(e) => {
                skip_or_fail(test, &format!("cannot run `mount`: {e}"));
                None
            }
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Makes the file system read-only under whoever has files open on it.
    pub fn remount_read_only(&self) {
        let st = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount read-only failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(self.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.path())
                .status();
        }
    }
}

/// A file that takes a file system's space; removed on drop (that is how space "returns").
pub struct Filler(pub PathBuf);

impl Filler {
    /// Writes until only `room` bytes are left free (or the file system is full).
    pub fn leave(path: PathBuf, room: u64) -> Filler {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            let free = fs4_free(&path);
            if free <= room + chunk.len() as u64 {
                break;
            }
            match f.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        f.sync_all().unwrap();
        Filler(path)
    }
}

fn fs4_free(p: &std::path::Path) -> u64 {
    fs4::available_space(p.parent().unwrap_or(p)).unwrap()
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
