//! The Windows deliverable, proven on Linux: the real cross-built `pointsd.exe` run under Wine,
//! and the real MSI built by `installers/windows/build-msi.sh` (wixl, from the one WiX source)
//! read back with msiinfo and msiextract, then installed with Wine's msiexec.
//!
//! Needs the exe (`cargo build --release --target x86_64-pc-windows-gnu`, or a path in
//! `POINTSD_WINDOWS_EXE`), `wine64` (Debian's Wine 8), MinGW's `x86_64-w64-mingw32-gcc` (the
//! test-only ProcessPrng shim, tests/support/processprng/, where Wine lacks bcryptprimitives.dll),
//! and `wixl`/`msiinfo`/`msiextract` (packages wixl, msitools). Without them a test prints a
//! notice and passes; under CI it fails (`.ci/run` installs them and builds the exe first).
//!
//! Two fresh Wine prefixes under the test tmp dir: one for the exe's commands (run, demo,
//! SIGKILL), one for msiexec and the service manager, so an installed service cannot meet
//! the other tests' folders or ports.

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "windows-test-register-token-01";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("windows")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `wine64` (Debian's wine64 package puts it in /usr/lib/wine), else `wine`.
fn wine_binary() -> Option<PathBuf> {
    on_path("wine64")
        .or_else(|| Some(PathBuf::from("/usr/lib/wine/wine64")).filter(|p| p.is_file()))
        .or_else(|| on_path("wine"))
}

/// The cross-built release exe (or `POINTSD_WINDOWS_EXE`).
fn windows_exe() -> Result<PathBuf, String> {
    let p = std::env::var_os("POINTSD_WINDOWS_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/x86_64-pc-windows-gnu/release/pointsd.exe"));
    if !p.is_file() {
        return Err(format!(
            "{} is missing: run `cargo build --release --target x86_64-pc-windows-gnu`",
            p.display()
        ));
    }
    // A stale exe would test old code: say so (CI builds it right before the tests).
    let built = fs::metadata(&p).and_then(|m| m.modified()).ok();
    if let Some(built) = built
        && newest_source(&repo().join("src")).is_some_and(|t| t > built)
    {
        eprintln!(
            "NOTE: {} is older than src/; rebuild it to test the current code",
            p.display()
        );
    }
    Ok(p)
}

fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for e in fs::read_dir(dir).ok()?.flatten() {
        let t = if e.path().is_dir() {
            newest_source(&e.path())
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// `Z:\...`: how a Windows program under Wine names a Linux path.
fn win_path(p: &Path) -> String {
    let abs = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    format!("Z:{}", abs.display()).replace('/', "\\")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Wine prefix made for this test run.
struct Prefix {
    dir: PathBuf,
    wine: PathBuf,
    /// Whether the ProcessPrng shim had to be installed (Wine without bcryptprimitives.dll).
    shimmed: bool,
}

impl Prefix {
    fn create(name: &str) -> Result<Prefix, String> {
        let wine = wine_binary().ok_or("wine64 is not installed (apt-get install wine64)")?;
        let dir = tmp_root().join(format!("prefix-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut p = Prefix {
            dir,
            wine,
            shimmed: false,
        };
        let out = p
            .command("wineboot")
            .arg("-i")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", p.wine.display()))?;
        let system32 = p.drive_c().join("windows/system32");
        if !system32.join("kernel32.dll").exists() {
            return Err(format!(
                "wineboot did not create the prefix ({}): {}",
                out.status,
                text(&out.stderr)
            ));
        }
        if !system32.join("bcryptprimitives.dll").exists() {
            fs::copy(processprng_shim()?, system32.join("bcryptprimitives.dll"))
                .map_err(|e| format!("copy the shim: {e}"))?;
            p.shimmed = true;
        }
        Ok(p)
    }

    fn drive_c(&self) -> PathBuf {
        self.dir.join("drive_c")
    }

    /// `C:\users\<you>`: the one user folder wineboot made (not Public).
    fn profile(&self) -> PathBuf {
        fs::read_dir(self.drive_c().join("users"))
            .expect("users folder")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n != "Public"))
            .expect("a user profile in the prefix")
    }

    /// `wine64 <program>` in this prefix, with a clean environment for pointsd.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(&self.wine);
        c.arg(program)
            .current_dir(&self.dir)
            .env("WINEPREFIX", &self.dir)
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko installer prompts.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::null());
        for v in [
            "POINTSD_DATA_DIR",
            "POINTSD_CONFIG",
            "POINTSD_URL",
            "POINTSD_TOKEN",
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// Runs a Windows program to its end (at most `limit`), returning its output.
    fn run(&self, program: &str, args: &[&str], limit: Duration) -> Output {
        let mut child = self
            .command(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wine");
        let start = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if start.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{program} {args:?} under Wine did not finish in {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("output")
    }
}

/// The shim DLL, built once from tests/support/processprng with MinGW.
fn processprng_shim() -> Result<PathBuf, String> {
    let gcc = on_path("x86_64-w64-mingw32-gcc")
        .ok_or("Wine lacks bcryptprimitives.dll and x86_64-w64-mingw32-gcc (apt-get install gcc-mingw-w64-x86-64) is missing to build the ProcessPrng shim")?;
    let src = repo().join("tests/support/processprng");
    // Not in a folder a Wine process runs in: Windows looks for DLLs in the current folder.
    let out = tmp_root().join("shim/bcryptprimitives.dll");
    fs::create_dir_all(out.parent().unwrap()).map_err(|e| e.to_string())?;
    let st = Command::new(gcc)
        .args(["-shared", "-s", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(src.join("bcryptprimitives.c"))
        .arg(src.join("bcryptprimitives.def"))
        .arg("-lbcrypt")
        .output()
        .map_err(|e| format!("mingw gcc: {e}"))?;
    if !st.status.success() {
        return Err(format!("the shim does not build: {}", text(&st.stderr)));
    }
    Ok(out)
}

fn shared_prefix(
    cell: &'static OnceLock<Result<Prefix, String>>,
    name: &str,
) -> Result<&'static Prefix, String> {
    cell.get_or_init(|| {
        fs::create_dir_all(tmp_root()).expect("tmp dir");
        Prefix::create(name)
    })
    .as_ref()
    .map_err(Clone::clone)
}

static RUN_PREFIX: OnceLock<Result<Prefix, String>> = OnceLock::new();

/// The exe and the prefix for the exe's commands, or `None` after a skip notice (a failure
/// under CI).
fn ready(test: &str) -> Option<(PathBuf, &'static Prefix)> {
    let exe = match windows_exe() {
        Ok(e) => e,
        Err(why) => {
            common::skip_or_fail(test, &why);
            return None;
        }
    };
    match shared_prefix(&RUN_PREFIX, "run") {
        Ok(p) => Some((exe, p)),
        Err(why) => {
            common::skip_or_fail(test, &why);
            None
        }
    }
}

/// `pointsd.exe ...` under Wine as a child process; killed (SIGKILL) and reaped when dropped.
struct WinProc {
    child: Option<Child>,
    stderr_log: PathBuf,
}

impl WinProc {
    fn start(prefix: &Prefix, exe: &Path, args: &[&str], name: &str) -> WinProc {
        let stderr_log = tmp_root().join(format!("{name}.stderr.log"));
        let child = prefix
            .command(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_log).expect("log file"))
            .spawn()
            .expect("start pointsd.exe under Wine");
        WinProc {
            child: Some(child),
            stderr_log,
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The stdout lines, read on a thread (the demo prints its tokens there).
    fn stdout_lines(&mut self) -> std::sync::mpsc::Receiver<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let out = self.child().stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGINT: Wine turns it into a console Ctrl-C event, which `pointsd` handles like
    /// Ctrl-C in a Windows console (a graceful stop).
    fn interrupt(&mut self) {
        let id = self.child().id().to_string();
        let st = Command::new("kill")
            .args(["-INT", &id])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child().try_wait().expect("try_wait") {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for WinProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http() -> reqwest::Client {
    pointsd::http_client_builder().no_proxy().build().unwrap()
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let r = http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("pointsd.exe answers");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn earn(base: &str, token: &str, txn: &str, customer: &str, points: i64) -> (u16, Value) {
    let r = http()
        .post(format!("{base}/v1/transactions"))
        .bearer_auth(token)
        .json(&json!({"txn_id": txn, "customer_id": customer, "kind": "earn", "points": points}))
        .send()
        .await
        .expect("pointsd.exe answers");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn available(base: &str, token: &str, customer: &str) -> i64 {
    let (s, v) = get(&format!("{base}/v1/customers/{customer}"), token).await;
    assert_eq!(s, 200, "{v}");
    v["balance"]["available"].as_i64().expect("available")
}

/// Waits until `/v1/health` answers (Wine's first start of a process takes a few seconds).
async fn wait_healthy(base: &str, p: &mut WinProc, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = http().get(format!("{base}/v1/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Some(s) = p.child().try_wait().expect("try_wait") {
            panic!("pointsd.exe exited ({s}) before answering:\n{}", p.stderr());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pointsd.exe did not answer at {base}:\n{}", p.stderr());
}

/// Waits until the daemon has filled its cache from the upstream once.
async fn wait_full_cache(base: &str, token: &str) {
    let start = Instant::now();
    loop {
        let (_, s) = get(&format!("{base}/v1/status"), token).await;
        if s["online"] == json!(true) && s["cache"]["last_full_refresh_at"].is_string() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no full cache: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The exe under Wine

#[cfg_attr(
    not(have_wine),
    ignore = "requires Wine and MinGW (apt-get install wine64 gcc-mingw-w64-x86-64; .ci/run does)"
)]
#[test]
fn exe_prints_its_version_under_wine() {
    let Some((exe, prefix)) = ready("exe_prints_its_version_under_wine") else {
        return;
    };
    let out = prefix.run(
        exe.to_str().unwrap(),
        &["--version"],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("pointsd {}", env!("CARGO_PKG_VERSION"))
    );
    eprintln!(
        "pointsd.exe --version ran under Wine ({})",
        if prefix.shimmed {
            "with the ProcessPrng shim: this Wine has no bcryptprimitives.dll"
        } else {
            "this Wine has bcryptprimitives.dll: no shim"
        }
    );
}

#[cfg_attr(
    not(have_wine),
    ignore = "requires Wine and MinGW (apt-get install wine64 gcc-mingw-w64-x86-64; .ci/run does)"
)]
#[test]
fn exe_checks_the_example_config_as_on_linux() {
    let Some((exe, prefix)) = ready("exe_checks_the_example_config_as_on_linux") else {
        return;
    };
    let example = repo().join("config/pointsd.example.toml");
    let out = prefix.run(
        exe.to_str().unwrap(),
        &["config", "check", "--config", &win_path(&example)],
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout
            .contains("store store-001, upstream Smaregi, 0 token(s), listening on 127.0.0.1:8765"),
        "{stdout}"
    );
    // The same verdict as the Linux binary, line for line, apart from the path and the Unix
    // mode warning (Windows has no mode bits; ACLs are the MSI's job).
    let linux = Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["config", "check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    let norm = |s: &str, path: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.contains("(mode "))
            .map(|l| l.replace(path, "<config>"))
            .collect()
    };
    let both = |o: &Output| text(&o.stdout) + &text(&o.stderr);
    assert_eq!(
        norm(&both(&out), &win_path(&example)),
        norm(&both(&linux), example.to_str().unwrap()),
    );
}

#[cfg_attr(
    not(have_wine),
    ignore = "requires Wine and MinGW (apt-get install wine64 gcc-mingw-w64-x86-64; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread")]
async fn demo_answers_lookups_and_earns_from_linux_and_stops_cleanly() {
    let t = "demo_answers_lookups_and_earns_from_linux_and_stops_cleanly";
    let Some((exe, prefix)) = ready(t) else {
        return;
    };
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let args = ["demo", "--listen", listen.as_str(), "--customers", "50"];
    let mut demo = WinProc::start(prefix, &exe, &args, "demo");
    let lines = demo.stdout_lines();
    let mut token = None;
    let mut data_dir = None;
    let start = Instant::now();
    while token.is_none() || data_dir.is_none() {
        let l = lines
            .recv_timeout(Duration::from_secs(60).saturating_sub(start.elapsed()))
            .unwrap_or_else(|_| panic!("demo printed no token:\n{}", demo.stderr()));
        if let Some(v) = l.trim().strip_prefix("register token:") {
            token = Some(v.trim().to_string());
        }
        if let Some(v) = l.trim().strip_prefix("data dir:") {
            data_dir = Some(v.trim().to_string());
        }
    }
    let token = token.unwrap();
    // The user's Local AppData, the name once.
    let data_dir = data_dir.unwrap();
    assert!(
        data_dir.ends_with(r"\AppData\Local\pointsd\data\demo"),
        "{data_dir}"
    );
    let on_disk = prefix.profile().join("AppData/Local/pointsd/data/demo");
    wait_healthy(&base, &mut demo, Duration::from_secs(60)).await;
    assert!(
        on_disk.join("pointsd.db").is_file(),
        "{}",
        on_disk.display()
    );
    assert!(!prefix.profile().join("AppData/Roaming/pointsd").exists());
    // Health answers before the built-in simulator's first fill is in the cache.
    wait_full_cache(&base, &token).await;

    let (s, v) = get(&format!("{base}/v1/customers/1"), &token).await;
    assert_eq!(s, 200, "{v}");
    let before = v["balance"]["available"].as_i64().expect("balance");
    let (s, v) = earn(&base, &token, "win-demo-1", "1", 120).await;
    assert!(s == 200 || s == 201 || s == 202, "{s} {v}");
    assert_eq!(available(&base, &token, "1").await, before + 120);
    // The same key again is the same transaction, not a second earn.
    let (s, _) = earn(&base, &token, "win-demo-1", "1", 120).await;
    assert!(s < 300, "{s}");
    assert_eq!(available(&base, &token, "1").await, before + 120);
    let (s, _) = get(&format!("{base}/v1/customers/1"), "wrong-token-wrong-token").await;
    assert_eq!(s, 401);

    demo.interrupt();
    let st = demo
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("demo did not stop on Ctrl-C:\n{}", demo.stderr()));
    assert!(st.success(), "demo exit {st}:\n{}", demo.stderr());
    assert!(
        http()
            .get(format!("{base}/v1/health"))
            .send()
            .await
            .is_err()
    );
}

/// The config for `run`: the Linux-side simulator as the Smaregi upstream.
fn run_config(dir: &Path, port: u16, sim_url: &str) -> PathBuf {
    common::write_config(
        dir,
        "pointsd.toml",
        "win-store",
        port,
        "",
        TOKEN,
        &(common::smaregi_upstream(sim_url, "sim-secret", 1_000)
            + "[sync]\nprobe_interval_s = 1\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000\n"),
    )
}

#[cfg_attr(
    not(have_wine),
    ignore = "requires Wine and MinGW (apt-get install wine64 gcc-mingw-w64-x86-64; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread")]
async fn run_without_data_dir_uses_program_data_and_keeps_acknowledged_earns_after_sigkill() {
    let t = "run_without_data_dir_uses_program_data_and_keeps_acknowledged_earns_after_sigkill";
    let Some((exe, prefix)) = ready(t) else {
        return;
    };
    let sim = common::start_sim(20).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = run_config(dir.path(), port, &sim.url());
    let args = ["run", "--config", &win_path(&config)];
    let data = prefix.drive_c().join("ProgramData/pointsd/data");

    let mut d = WinProc::start(prefix, &exe, &args, "run-system");
    wait_healthy(&base, &mut d, Duration::from_secs(60)).await;
    assert!(data.join("pointsd.db").is_file(), "{}", data.display());
    wait_full_cache(&base, TOKEN).await;
    // Earns acknowledged while the upstream is down stay queued on disk.
    common::set_faults(&sim, |f| f.refuse = true);
    let before = available(&base, TOKEN, "3").await;
    let mut acked = 0;
    for i in 0..10 {
        let (s, v) = earn(&base, TOKEN, &format!("win-kill-{i}"), "3", 7).await;
        assert!(s < 300, "{s} {v}");
        acked += 7;
    }
    d.kill();
    let logs = data.join("logs");
    let logged: Vec<_> = fs::read_dir(&logs)
        .unwrap_or_else(|e| panic!("{}: {e}", logs.display()))
        .flatten()
        .collect();
    assert!(!logged.is_empty(), "no log file in {}", logs.display());

    let mut d = WinProc::start(prefix, &exe, &args, "run-system-2");
    wait_healthy(&base, &mut d, Duration::from_secs(60)).await;
    assert_eq!(available(&base, TOKEN, "3").await, before + acked);
    common::set_faults(&sim, |f| f.refuse = false);
    let start = Instant::now();
    while common::adds_for(&sim, "3").len() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the upstream got {:?}",
            common::adds_for(&sim, "3")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        common::adds_for(&sim, "3"),
        vec![7; 10],
        "each earn exactly once"
    );
    d.interrupt();
    let st = d
        .wait_exit(Duration::from_secs(30))
        .expect("stops on Ctrl-C");
    assert!(st.success(), "{st}:\n{}", d.stderr());
}

#[cfg_attr(
    not(have_wine),
    ignore = "requires Wine and MinGW (apt-get install wine64 gcc-mingw-w64-x86-64; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread")]
async fn run_user_keeps_config_data_and_logs_in_local_app_data() {
    let t = "run_user_keeps_config_data_and_logs_in_local_app_data";
    let Some((exe, prefix)) = ready(t) else {
        return;
    };
    let sim = common::start_sim(5).await;
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    // No --config, no --data-dir: the user's default config file.
    let home = prefix.profile().join("AppData/Local/pointsd");
    fs::create_dir_all(&home).unwrap();
    run_config(&home, port, &sim.url());
    let mut d = WinProc::start(prefix, &exe, &["run", "--user"], "run-user");
    wait_healthy(&base, &mut d, Duration::from_secs(60)).await;
    wait_full_cache(&base, TOKEN).await;
    let (s, v) = earn(&base, TOKEN, "win-user-1", "2", 5).await;
    assert!(s < 300, "{s} {v}");
    assert!(home.join("data/pointsd.db").is_file());
    assert!(
        fs::read_dir(home.join("data/logs"))
            .unwrap()
            .next()
            .is_some(),
        "no log in {}",
        home.join("data/logs").display()
    );
    assert!(!home.join("pointsd").exists(), "doubled folder name");
    assert!(!prefix.profile().join("AppData/Roaming/pointsd").exists());
    d.interrupt();
    let st = d
        .wait_exit(Duration::from_secs(30))
        .expect("stops on Ctrl-C");
    assert!(st.success(), "{st}:\n{}", d.stderr());
}

// ---------------------------------------------------------------------------------------------
// The MSI: built with wixl from installers/windows/pointsd.wxs, read back with msidump

const UPGRADE_CODE: &str = "{93794622-9B06-41C6-B4F4-0431C5C30690}";

/// One MSI table from `msidump` (IDT: column names, types, keys, then rows).
struct Table {
    cols: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn col(&self, name: &str) -> usize {
        self.cols
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.cols))
    }
    /// The rows whose column `key` is `value`.
    fn find(&self, key: &str, value: &str) -> Vec<&Vec<String>> {
        let k = self.col(key);
        self.rows.iter().filter(|r| r[k] == value).collect()
    }
    /// The one row whose column `key` is `value`.
    fn row(&self, key: &str, value: &str) -> &Vec<String> {
        let found = self.find(key, value);
        assert_eq!(
            found.len(),
            1,
            "one row with {key} = {value}: {:?}",
            self.rows
        );
        found[0]
    }
    fn get(&self, row: &[String], col: &str) -> String {
        row[self.col(col)].clone()
    }
    fn int(&self, row: &[String], col: &str) -> i64 {
        self.get(row, col)
            .parse()
            .unwrap_or_else(|_| panic!("{col}: {row:?}"))
    }
}

fn msi_tools(test: &str) -> bool {
    for t in [
        "wixl",
        "msibuild",
        "msiinfo",
        "msidump",
        "msiextract",
        "python3",
    ] {
        if on_path(t).is_none() {
            return common::skip_or_fail(
                test,
                &format!("{t} is not installed (apt-get install wixl msitools python3)"),
            );
        }
    }
    true
}

/// Builds the MSI with build-msi.sh from `exe` into the test tmp dir (once per run).
fn built_msi(exe: &Path) -> PathBuf {
    static MSI: OnceLock<PathBuf> = OnceLock::new();
    MSI.get_or_init(|| {
        let out = tmp_root().join("pointsd-test-x64.msi");
        fs::create_dir_all(tmp_root()).unwrap();
        let o = Command::new(repo().join("installers/windows/build-msi.sh"))
            .arg("--binary")
            .arg(exe)
            .arg("--output")
            .arg(&out)
            .output()
            .expect("run build-msi.sh");
        assert!(
            o.status.success(),
            "build-msi.sh failed:\n{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        out
    })
    .clone()
}

fn dump_tables(msi: &Path) -> std::collections::BTreeMap<String, Table> {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("msidump")
        .args(["-t", "-d"])
        .arg(dir.path())
        .arg(msi)
        .output()
        .expect("msidump");
    assert!(o.status.success(), "msidump: {}", text(&o.stderr));
    let mut tables = std::collections::BTreeMap::new();
    for e in fs::read_dir(dir.path()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(table) = name.strip_suffix(".idt") else {
            continue;
        };
        let body = fs::read_to_string(e.path()).unwrap();
        let lines: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
        let split = |l: &str| l.split('\t').map(str::to_string).collect::<Vec<_>>();
        tables.insert(
            table.to_string(),
            Table {
                cols: split(lines[0]),
                rows: lines.iter().skip(3).map(|l| split(l)).collect(),
            },
        );
    }
    tables
}

#[cfg_attr(
    not(have_msitools),
    ignore = "requires wixl and msitools (apt-get install wixl msitools; .ci/run does)"
)]
#[test]
fn msi_built_with_wixl_has_the_designed_tables() {
    let t = "msi_built_with_wixl_has_the_designed_tables";
    let exe = match windows_exe() {
        Ok(e) => e,
        Err(why) => {
            common::skip_or_fail(t, &why);
            return;
        }
    };
    if !msi_tools(t) {
        return;
    }
    let msi = built_msi(&exe);
    let tables = dump_tables(&msi);
    let tab = |n: &str| {
        tables
            .get(n)
            .unwrap_or_else(|| panic!("no {n} table; tables: {:?}", tables.keys()))
    };

    // Files: the exe (the very bytes built), README, the example twice (docs, and the config
    // installed only when none exists).
    let file = tab("File");
    let exe_row = file.row("File", "PointsdExe");
    assert_eq!(file.get(exe_row, "FileName"), "pointsd.exe");
    assert_eq!(
        file.int(exe_row, "FileSize") as u64,
        fs::metadata(&exe).unwrap().len()
    );
    for (id, name, comp) in [
        ("PointsdExe", "pointsd.exe", "ServiceExe"),
        ("ReadmeMd", "README.md", "Docs"),
        ("ExampleToml", "pointsd.example.toml", "Docs"),
        ("PointsdToml", "pointsd.toml", "ConfigToml"),
    ] {
        let r = file.row("File", id);
        assert_eq!(file.get(r, "FileName"), name);
        assert_eq!(file.get(r, "Component_"), comp);
    }
    assert_eq!(file.rows.len(), 4, "{:?}", file.rows);
    let extracted = tempfile::tempdir().unwrap();
    let o = Command::new("msiextract")
        .arg("-C")
        .arg(extracted.path())
        .arg(&msi)
        .output()
        .unwrap();
    assert!(o.status.success(), "msiextract: {}", text(&o.stderr));
    let inside = walk(extracted.path());
    // msiextract names folders by their MSI names: INSTALLFOLDER is "pointsd".
    let inside_exe = inside
        .iter()
        .find(|p| p.ends_with("pointsd/pointsd.exe"))
        .unwrap_or_else(|| panic!("no pointsd/pointsd.exe in {inside:?}"));
    assert!(
        fs::read(inside_exe).unwrap() == fs::read(&exe).unwrap(),
        "the exe inside differs"
    );

    // Where they go: Program Files\pointsd (64-bit) and ProgramData\pointsd.
    let dir = tab("Directory");
    let r = dir.row("Directory", "INSTALLFOLDER");
    assert_eq!(dir.get(r, "Directory_Parent"), "ProgramFiles64Folder");
    assert_eq!(dir.get(r, "DefaultDir"), "pointsd");
    let r = dir.row("Directory", "DATAROOT");
    assert_eq!(dir.get(r, "Directory_Parent"), "CommonAppDataFolder");
    assert_eq!(dir.get(r, "DefaultDir"), "pointsd");

    // Components: all 64-bit; the ProgramData folder and the config are permanent (kept on
    // uninstall and upgrade), the config never overwritten.
    let comp = tab("Component");
    const BIT64: i64 = 0x100;
    const PERMANENT: i64 = 0x10;
    const NEVER_OVERWRITE: i64 = 0x80;
    for (id, dir_id, permanent, never_overwrite) in [
        ("ServiceExe", "INSTALLFOLDER", false, false),
        ("Docs", "INSTALLFOLDER", false, false),
        ("DataRootAcl", "DATAROOT", true, false),
        ("ConfigToml", "DATAROOT", true, true),
    ] {
        let r = comp.row("Component", id);
        let a = comp.int(r, "Attributes");
        assert_eq!(comp.get(r, "Directory_"), dir_id);
        assert_ne!(a & BIT64, 0, "{id} 64-bit");
        assert_eq!(a & PERMANENT != 0, permanent, "{id} permanent: {a}");
        assert_eq!(
            a & NEVER_OVERWRITE != 0,
            never_overwrite,
            "{id} never overwrite: {a}"
        );
        assert!(!comp.get(r, "ComponentId").is_empty(), "{id} has a GUID");
    }

    // The service: pointsd, own process, automatic start, LocalSystem, vital, service-run.
    let si = tab("ServiceInstall");
    let r = si.row("Name", "pointsd");
    assert_eq!(si.int(r, "ServiceType"), 0x10, "own process");
    assert_eq!(si.int(r, "StartType"), 2, "automatic");
    assert_eq!(si.get(r, "StartName"), "LocalSystem");
    assert_eq!(si.int(r, "ErrorControl"), 0x8001, "normal, vital");
    assert_eq!(
        si.get(r, "Arguments"),
        r#"service-run --config "[CommonAppDataFolder]pointsd\pointsd.toml""#
    );
    assert_eq!(si.get(r, "Component_"), "ServiceExe");
    // Started on install; stopped on install (upgrade) and uninstall; deleted on uninstall.
    let sc = tab("ServiceControl");
    let r = sc.row("Name", "pointsd");
    const START: i64 = 0x1;
    const STOP: i64 = 0x2;
    const UNINSTALL_STOP: i64 = 0x20;
    const UNINSTALL_DELETE: i64 = 0x80;
    assert_eq!(
        sc.int(r, "Event"),
        START | STOP | UNINSTALL_STOP | UNINSTALL_DELETE
    );
    assert_eq!(sc.int(r, "Wait"), 1);
    // Restart after 5 s on the first three failures, count reset after a day, also after an
    // error exit; delayed automatic start.
    let fa = tab("MsiServiceConfigFailureActions");
    let r = fa.row("Name", "pointsd");
    assert_eq!(fa.get(r, "Actions"), "1[~]1[~]1", "restart x3");
    assert_eq!(fa.get(r, "DelayActions"), "5000[~]5000[~]5000");
    assert_eq!(fa.int(r, "ResetPeriod"), 86_400);
    assert_ne!(fa.int(r, "Event") & 1, 0, "applied on install");
    let cfg = tab("MsiServiceConfig");
    let r = cfg.row("ConfigType", "4");
    assert_eq!(
        cfg.get(r, "Argument"),
        "1",
        "failure actions also on an error exit"
    );
    let r = cfg.row("ConfigType", "3");
    assert_eq!(cfg.get(r, "Argument"), "1", "delayed automatic start");
    let seq = tab("InstallExecuteSequence");
    let at = |a: &str| seq.int(seq.row("Action", a), "Sequence");
    assert!(at("InstallServices") < at("MsiConfigureServices"));
    assert!(at("MsiConfigureServices") < at("StartServices"));
    assert!(at("StopServices") < at("DeleteServices"));
    // Major upgrade: the old product goes first, right after InstallValidate.
    assert!(at("InstallValidate") < at("RemoveExistingProducts"));
    assert!(at("RemoveExistingProducts") < at("InstallInitialize"));

    // %ProgramData%\pointsd and the config: SYSTEM and Administrators only, protected.
    let lock = tab("MsiLockPermissionsEx");
    for (obj, table) in [("DATAROOT", "CreateFolder"), ("PointsdToml", "File")] {
        let r = lock.row("LockObject", obj);
        assert_eq!(lock.get(r, "Table"), table);
        let sddl = lock.get(r, "SDDLText");
        assert!(sddl.starts_with("D:P"), "protected: {sddl}");
        let aces: Vec<&str> = sddl.split('(').skip(1).collect();
        assert_eq!(aces.len(), 2, "{sddl}");
        assert!(aces.iter().any(|a| a.ends_with(";;;SY)")), "{sddl}");
        assert!(aces.iter().any(|a| a.ends_with(";;;BA)")), "{sddl}");
    }
    let cf = tab("CreateFolder");
    assert_eq!(
        cf.get(cf.row("Directory_", "DATAROOT"), "Component_"),
        "DataRootAcl"
    );

    // Registry: HKLM\SOFTWARE\pointsd DataRoot; no shortcuts (a service has none).
    let reg = tab("Registry");
    let r = reg.row("Name", "DataRoot");
    assert_eq!(reg.int(r, "Root"), 2, "HKLM");
    assert_eq!(reg.get(r, "Key"), r"SOFTWARE\pointsd");
    assert_eq!(reg.get(r, "Value"), "[DATAROOT]");
    assert!(tables.get("Shortcut").is_none_or(|s| s.rows.is_empty()));

    // Major upgrade with the fixed UpgradeCode: older versions are removed, a newer one blocks.
    let prop = tab("Property");
    let p = |k: &str| prop.get(prop.row("Property", k), "Value");
    assert_eq!(
        p("UpgradeCode"),
        UPGRADE_CODE,
        "never change the UpgradeCode"
    );
    assert_eq!(p("ProductVersion"), env!("CARGO_PKG_VERSION"));
    assert_eq!(p("ALLUSERS"), "1", "per machine");
    let up = tab("Upgrade");
    assert!(
        up.rows
            .iter()
            .all(|r| up.get(r, "UpgradeCode") == UPGRADE_CODE)
    );
    let r = up.row("ActionProperty", "WIX_UPGRADE_DETECTED");
    assert_eq!(up.get(r, "VersionMax"), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        up.int(r, "Attributes") & 2,
        0,
        "not detect-only: removes the old one"
    );
    let r = up.row("ActionProperty", "WIX_DOWNGRADE_DETECTED");
    assert_eq!(up.get(r, "VersionMin"), env!("CARGO_PKG_VERSION"));
    assert_ne!(up.int(r, "Attributes") & 2, 0, "detect only");
    let lc = tab("LaunchCondition");
    lc.row("Condition", "NOT WIX_DOWNGRADE_DETECTED");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The generator refuses what it does not know instead of dropping it from the MSI.
#[test]
fn wixl_generator_refuses_an_element_it_does_not_know() {
    let t = "wixl_generator_refuses_an_element_it_does_not_know";
    if on_path("python3").is_none() {
        common::skip_or_fail(t, "python3 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = fs::read_to_string(repo().join("installers/windows/pointsd.wxs")).unwrap();
    let bad = src.replacen(
        "<MediaTemplate EmbedCab=\"yes\" />",
        "<MediaTemplate EmbedCab=\"yes\" />\n    <Icon Id=\"x\" SourceFile=\"x.ico\" />",
        1,
    );
    assert_ne!(bad, src);
    let wxs = dir.path().join("bad.wxs");
    fs::write(&wxs, bad).unwrap();
    let o = Command::new("python3")
        .arg(repo().join("installers/windows/wixl.py"))
        .arg(&wxs)
        .args(["-D", "BinaryPath=/nonexistent.exe", "-o"])
        .arg(dir.path().join("x.msi"))
        .arg("--wixl-out")
        .arg(dir.path().join("x.wxs"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("Package child Icon"), "{err}");
    assert!(!dir.path().join("x.msi").exists());
}
