//! Network partitions between the daemon and its upstream (issue #7, "Partitions in network
//! namespaces"). The simulator runs in its own network namespace behind a veth pair; an
//! nftables drop rule inside that namespace cuts the link so the daemon sees a silent timeout,
//! never a refusal. Checks: an ambiguous send is settled by reading the balance back before any
//! resend (DESIGN.md §2.2, §5), writes during the partition answer "queued" and sync after the
//! link returns, and look-ups keep answering from the cache while the upstream hangs.
//!
//! Needs root (`ip netns`, `nft`); skipped with a notice otherwise, but fails when `CI` is set.
//! Only the namespace, veth pair and 10.231.<n>.0/30 addresses created here are touched.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "partition-test-token-0123456789ab";
const API_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 8081;
const CUSTOMERS: u32 = 20;

/// Which packets of the upstream's API port the cut drops (the admin port stays reachable, so
/// the test can still read the simulator's ledger during the partition).
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Requests and answers: the link is gone.
    Both,
    /// Only what the upstream sends: requests arrive and are applied, answers are lost.
    Answers,
    /// Only what reaches the upstream: requests are lost before they are applied.
    Requests,
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn skip(why: &str) {
    common::skip_or_fail(
        "partition test",
        &format!("{why} (needs root, iproute2 and nftables)"),
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The namespace, veth pair, simulator (inside) and daemon (outside) of one test. Dropping it
/// kills both processes and deletes the namespace and the veth pair, also on panic.
struct Lab {
    ns: String,
    veth: String,
    sim: Option<Child>,
    daemon: Option<Child>,
    /// The daemon's local API.
    url: String,
    /// The simulator's admin API (inside the namespace, reached over the veth).
    admin: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in [self.daemon.as_mut(), self.sim.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run("ip", &["link", "del", &self.veth]);
        let _ = run("ip", &["netns", "del", &self.ns]);
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Builds the lab, or returns None (after a skip notice) when it cannot run here.
    async fn start(lookup_refresh_after_s: u64) -> Option<Lab> {
        if !is_root() {
            skip("not running as root");
            return None;
        }
        for tool in ["ip", "nft"] {
            if run(tool, &["-V"]).is_err() {
                skip(&format!("`{tool}` is not installed"));
                return None;
            }
        }
        let pid = std::process::id();
        let addrs = Command::new("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        // A /30 not in use on this machine, and a namespace name nobody else has.
        let mut made = None;
        for _ in 0..20 {
            let k = NEXT.fetch_add(1, Ordering::SeqCst);
            let n = (pid.wrapping_mul(7).wrapping_add(k)) % 250 + 1;
            if addrs.contains(&format!("10.231.{n}.")) {
                continue;
            }
            let ns = format!("pointsd-test-{pid}-{k}");
            match run("ip", &["netns", "add", &ns]) {
                Ok(()) => {
                    made = Some((n, k, ns));
                    break;
                }
                Err(e) if k == 0 || e.contains("exists") => continue,
                Err(e) => {
                    skip(&format!("`ip netns add` failed: {e}"));
                    return None;
                }
            }
        }
        let Some((n, k, ns)) = made else {
            skip("`ip netns add` failed or no free 10.231.<n>.0/30");
            return None;
        };
        let veth = format!("pdt{}x{k}", pid % 100_000);
        let peer = format!("{veth}n");
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab {
            ns: ns.clone(),
            veth: veth.clone(),
            sim: None,
            daemon: None,
            url: String::new(),
            admin: String::new(),
            http: pointsd::http_client_builder().no_proxy().build().unwrap(),
            dir,
        };
        let host = format!("10.231.{n}.1");
        let sim_ip = format!("10.231.{n}.2");
        let steps: Vec<Vec<&str>> = vec![
            vec!["link", "add", &veth, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", &ns],
            vec!["addr", "add", "placeholder-host", "dev", &veth],
            vec!["link", "set", &veth, "up"],
            vec!["-n", &ns, "addr", "add", "placeholder-sim", "dev", &peer],
            vec!["-n", &ns, "link", "set", &peer, "up"],
            vec!["-n", &ns, "link", "set", "lo", "up"],
        ];
        let host_cidr = format!("{host}/30");
        let sim_cidr = format!("{sim_ip}/30");
        for step in steps {
            let args: Vec<&str> = step
                .iter()
                .map(|a| match *a {
                    "placeholder-host" => host_cidr.as_str(),
                    "placeholder-sim" => sim_cidr.as_str(),
                    a => a,
                })
                .collect();
            if let Err(e) = run("ip", &args) {
                skip(&format!("could not set up the veth pair: {e}"));
                return None;
            }
        }

        // The simulator, inside the namespace, on the namespace's address.
        let listen = format!("{sim_ip}:{API_PORT}");
        let admin_listen = format!("{sim_ip}:{ADMIN_PORT}");
        let mut sim = Command::new("ip")
            .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_pointsd"), "sim"])
            .args(["--listen", &listen, "--admin-listen", &admin_listen])
            .args(["--customers", &CUSTOMERS.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pointsd sim in the namespace");
        let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
        lab.sim = Some(sim);
        let api = lines.next().unwrap().unwrap();
        let admin = lines.next().unwrap().unwrap();
        assert!(api.contains(&listen), "{api}");
        let api = api.rsplit(' ').next().unwrap().to_string();
        lab.admin = admin.rsplit(' ').next().unwrap().to_string();

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        lab.url = format!("http://127.0.0.1:{port}");
        let rest = format!(
            "{}[sync]\nprobe_interval_s = 1\nonline_budget_ms = 150\nbackoff_initial_ms = 100\n\
             backoff_max_ms = 1000\nmax_requests_per_second = 1000\n",
            common::smaregi_upstream(&api, "sim-secret", 1_000)
        );
        let config = common::write_config(
            lab.dir.path(),
            "pointsd.toml",
            "store-partition",
            port,
            &format!("lookup_refresh_after_s = {lookup_refresh_after_s}"),
            TOKEN,
            &rest,
        );
        lab.daemon = Some(start_daemon(&config, &lab.dir.path().join("data")));
        lab.wait_ready().await;
        Some(lab)
    }

    async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/status", self.url))
                .bearer_auth(TOKEN)
                .send()
                .await
                && let Ok(s) = r.json::<Value>().await
                && s["cache"]["customers"] == json!(CUSTOMERS)
                && s["cache"]["last_full_refresh_at"].is_string()
                && s["online"] == json!(true)
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "daemon never came up with a full cache"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drops the chosen packets of the upstream's API port inside the namespace.
    fn cut(&self, what: Cut) {
        let ns = self.ns.as_str();
        let port = API_PORT.to_string();
        let nft = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns, "nft"];
            all.extend_from_slice(args);
            run("ip", &all).expect("nft");
        };
        nft(&["add", "table", "inet", "pointsd_cut"]);
        if matches!(what, Cut::Both | Cut::Requests) {
            nft(&[
                "add",
                "chain",
                "inet",
                "pointsd_cut",
                "in",
                "{ type filter hook input priority 0; }",
            ]);
            nft(&[
                "add",
                "rule",
                "inet",
                "pointsd_cut",
                "in",
                "tcp",
                "dport",
                &port,
                "drop",
            ]);
        }
        if matches!(what, Cut::Both | Cut::Answers) {
            nft(&[
                "add",
                "chain",
                "inet",
                "pointsd_cut",
                "out",
                "{ type filter hook output priority 0; }",
            ]);
            nft(&[
                "add",
                "rule",
                "inet",
                "pointsd_cut",
                "out",
                "tcp",
                "sport",
                &port,
                "drop",
            ]);
        }
    }

    fn restore(&self) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns,
                "nft",
                "delete",
                "table",
                "inet",
                "pointsd_cut",
            ],
        )
        .expect("remove the drop rules");
    }

    async fn get(&self, url: &str) -> (u16, Value) {
        let r = self
            .http
            .get(url)
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn faults(&self, f: Value) {
        let r = self
            .http
            .put(format!("{}/_sim/faults", self.admin))
            .json(&f)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    async fn sim_balance(&self, c: &str) -> i64 {
        let (_, v) = self
            .get(&format!("{}/_sim/customers/{c}", self.admin))
            .await;
        v["point"].as_i64().unwrap()
    }

    async fn sim_adds(&self, c: &str) -> Vec<i64> {
        let (_, v) = self.get(&format!("{}/_sim/adds", self.admin)).await;
        v.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["customer_id"] == json!(c))
            .map(|a| a["delta"].as_i64().unwrap())
            .collect()
    }

    async fn earn(&self, txn_id: &str, customer: &str, points: i64) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/transactions", self.url))
            .bearer_auth(TOKEN)
            .json(&json!({"txn_id": txn_id, "customer_id": customer, "kind": "earn", "points": points}))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "earn {txn_id}");
        r.json().await.unwrap()
    }

    async fn txn(&self, txn_id: &str) -> Value {
        let (s, t) = self
            .get(&format!("{}/v1/transactions/{txn_id}", self.url))
            .await;
        assert_eq!(s, 200, "{txn_id}: {t}");
        t
    }

    /// Polls a transaction until it is in a final state; returns it and every (state,
    /// last_error) seen on the way.
    async fn settle(&self, txn_id: &str, within: Duration) -> (Value, Vec<(String, String)>) {
        let start = Instant::now();
        let mut seen: Vec<(String, String)> = Vec::new();
        loop {
            let t = self.txn(txn_id).await;
            let step = (
                t["state"].as_str().unwrap_or_default().to_string(),
                t["last_error"].as_str().unwrap_or_default().to_string(),
            );
            if seen.last() != Some(&step) {
                seen.push(step);
            }
            if ["applied", "rejected", "needs_review", "discarded"]
                .contains(&t["state"].as_str().unwrap_or_default())
            {
                return (t, seen);
            }
            assert!(
                start.elapsed() < within,
                "{txn_id} did not settle: {t}\nseen: {seen:?}\nlogs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Watches a transaction for `dur` (while the link is cut), returning the states seen.
    async fn watch(&self, txn_id: &str, dur: Duration) -> Vec<(String, String)> {
        let start = Instant::now();
        let mut seen: Vec<(String, String)> = Vec::new();
        while start.elapsed() < dur {
            let t = self.txn(txn_id).await;
            let step = (
                t["state"].as_str().unwrap_or_default().to_string(),
                t["last_error"].as_str().unwrap_or_default().to_string(),
            );
            if seen.last() != Some(&step) {
                seen.push(step);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        seen
    }

    fn logs(&self) -> String {
        let mut logs = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("data").join("logs")) {
            for e in rd.flatten() {
                logs.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        logs
    }
}

fn start_daemon(config: &Path, data: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pointsd"));
    cmd.args(["run", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    cmd.spawn().expect("start pointsd run")
}

fn passed_through_ambiguous(seen: &[(String, String)]) -> bool {
    seen.iter().any(|(s, _)| s == "ambiguous")
}

/// The cut happens while `point/add` is in flight: the upstream received the request (it is
/// sleeping in its 400 ms latency) and applies it, but the answer never comes back. The daemon
/// must mark it ambiguous, keep it so while the read-back cannot reach the upstream, and settle
/// it as applied by read-back once the link returns — never resend it. A second earn for the
/// same customer and one for another customer, written during the partition, answer "queued"
/// and sync after the restore, in order.
#[cfg_attr(
    not(have_netns),
    ignore = "requires root, iproute2 and nftables (network namespaces; .ci/run installs the tools)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_mid_flight_is_settled_by_read_back_and_never_applied_twice() {
    let Some(lab) = Lab::start(30).await else {
        return;
    };
    let (c, other) = ("3", "4");
    let before = lab.sim_balance(c).await;
    let before_other = lab.sim_balance(other).await;
    lab.faults(json!({"latency_ms": 400})).await;
    let ans = lab.earn("part-mid-1", c, 7).await;
    // The online budget (150 ms) is shorter than the upstream's latency: not yet confirmed.
    assert_eq!(ans["status"], json!("queued"), "{ans}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    lab.cut(Cut::Both);
    let cut_at = Instant::now();

    // Writes during the partition are accepted and queued.
    let a2 = lab.earn("part-mid-2", c, 5).await;
    assert_eq!(a2["status"], json!("queued"), "{a2}");
    let a3 = lab.earn("part-mid-3", other, 11).await;
    assert_eq!(a3["status"], json!("queued"), "{a3}");

    let seen = lab.watch("part-mid-1", Duration::from_secs(4)).await;
    // The upstream applied the in-flight add even though nobody heard the answer.
    assert_eq!(lab.sim_adds(c).await, vec![7], "the in-flight add");
    assert!(
        passed_through_ambiguous(&seen),
        "the lost answer must make the send ambiguous, saw {seen:?}"
    );
    assert_eq!(
        lab.txn("part-mid-2").await["state"],
        json!("pending"),
        "per-customer order: the second earn waits behind the ambiguous one"
    );
    lab.faults(json!({})).await;
    lab.restore();
    eprintln!("link down for {:?}", cut_at.elapsed());

    let (t1, seen_after) = lab.settle("part-mid-1", Duration::from_secs(20)).await;
    eprintln!("part-mid-1 states: {seen:?} then {seen_after:?}");
    assert_eq!(t1["state"], json!("applied"), "{t1}");
    assert_eq!(
        t1["upstream_result"]["verified_by"],
        json!("read-back"),
        "settled by read-back: {t1}"
    );
    for id in ["part-mid-2", "part-mid-3"] {
        let (t, _) = lab.settle(id, Duration::from_secs(20)).await;
        assert_eq!(t["state"], json!("applied"), "{t}");
    }
    assert_eq!(
        lab.sim_adds(c).await,
        vec![7, 5],
        "each earn once, in order"
    );
    assert_eq!(lab.sim_adds(other).await, vec![11]);
    assert_eq!(lab.sim_balance(c).await, before + 12);
    assert_eq!(lab.sim_balance(other).await, before_other + 11);
    let (_, local) = lab.get(&format!("{}/v1/customers/{c}", lab.url)).await;
    assert_eq!(local["balance"]["available"], json!(before + 12), "{local}");
}

/// Only the upstream's answers are dropped: the request arrives and is applied at once, the
/// answer is lost. Settled as applied by read-back, exactly once.
#[cfg_attr(
    not(have_netns),
    ignore = "requires root, iproute2 and nftables (network namespaces; .ci/run installs the tools)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_in_the_partition_is_settled_as_applied_by_read_back() {
    let Some(lab) = Lab::start(30).await else {
        return;
    };
    let c = "5";
    let before = lab.sim_balance(c).await;
    lab.cut(Cut::Answers);
    let ans = lab.earn("part-ans-1", c, 9).await;
    assert_eq!(ans["status"], json!("queued"), "{ans}");
    let seen = lab.watch("part-ans-1", Duration::from_secs(3)).await;
    let adds_during = lab.sim_adds(c).await;
    lab.restore();
    let (t, seen_after) = lab.settle("part-ans-1", Duration::from_secs(20)).await;
    eprintln!(
        "part-ans-1: upstream adds during the cut {adds_during:?}; states {seen:?} then {seen_after:?}"
    );
    assert_eq!(t["state"], json!("applied"), "{t}");
    assert_eq!(lab.sim_adds(c).await, vec![9], "applied exactly once");
    assert_eq!(lab.sim_balance(c).await, before + 9);
    if adds_during == vec![9] {
        // The request got through (a kept-alive connection): only the read-back may settle it.
        assert!(passed_through_ambiguous(&seen), "{seen:?}");
        assert_eq!(
            t["upstream_result"]["verified_by"],
            json!("read-back"),
            "{t}"
        );
    } else {
        // No connection could be opened (the handshake's answer was dropped): a plain retry.
        eprintln!("part-ans-1: the request never reached the upstream during the cut");
    }
}

/// Only the requests are dropped: an add sent on a kept-alive connection never reaches the
/// upstream. If the daemon cannot tell (ambiguous), the read-back shows nothing moved and only
/// then is it resent; either way it is applied exactly once.
#[cfg_attr(
    not(have_netns),
    ignore = "requires root, iproute2 and nftables (network namespaces; .ci/run installs the tools)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_in_the_partition_is_resent_only_after_read_back() {
    let Some(lab) = Lab::start(30).await else {
        return;
    };
    let c = "6";
    let before = lab.sim_balance(c).await;
    lab.cut(Cut::Requests);
    let ans = lab.earn("part-req-1", c, 4).await;
    assert_eq!(ans["status"], json!("queued"), "{ans}");
    let seen = lab.watch("part-req-1", Duration::from_secs(3)).await;
    assert_eq!(
        lab.sim_adds(c).await,
        Vec::<i64>::new(),
        "nothing got through"
    );
    lab.restore();
    let (t, seen_after) = lab.settle("part-req-1", Duration::from_secs(20)).await;
    eprintln!("part-req-1 states: {seen:?} then {seen_after:?}");
    assert_eq!(t["state"], json!("applied"), "{t}");
    assert_eq!(lab.sim_adds(c).await, vec![4], "applied exactly once");
    assert_eq!(lab.sim_balance(c).await, before + 4);
    // Two honest outcomes: the kernel's retransmission of the lost request reached the upstream
    // once the link returned (read-back shows it applied), or it did not and the read-back
    // showed nothing moved before the resend. The resend follows the read-back at once, too
    // fast to poll: the daemon's log has the order.
    let logs = lab.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("part-req-1")).collect();
    eprintln!("part-req-1 log:\n{}", lines.join("\n"));
    let resent_after = lines
        .iter()
        .position(|l| l.contains("read-back shows the send did not land"));
    let sent_ok = lines.iter().position(|l| l.contains("applied upstream"));
    let verified_applied = lines
        .iter()
        .any(|l| l.contains("read-back shows the send was applied"));
    if passed_through_ambiguous(&seen) {
        assert!(
            verified_applied || matches!((resent_after, sent_ok), (Some(v), Some(a)) if v < a),
            "an ambiguous send may only be resent after the read-back showed nothing moved: \
             {seen:?} {seen_after:?}"
        );
    }
}

/// The request sent on a kept-alive connection is lost in the partition; the daemon times out
/// after 1 s and closes the connection, but the kernel keeps retransmitting the unacknowledged
/// request (RTO backoff: about 0.2, 0.6, 1.4, 3.0, 6.2 s after the send). The link returns
/// between two retransmissions (about 3.6 s), so the read-back sees nothing moved and the daemon
/// resends; the old request's next retransmission then reaches the upstream too. Expected: the
/// earn is applied exactly once (e.g. the timed-out connection is aborted with RST / SO_LINGER 0
/// so nothing of it can arrive later, or the resend waits until the old attempt cannot land).
#[cfg_attr(
    not(have_netns),
    ignore = "requires root, iproute2 and nftables (network namespaces; .ci/run installs the tools)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_request_retransmitted_after_the_resend_is_not_applied_twice() {
    let Some(lab) = Lab::start(30).await else {
        return;
    };
    let c = "8";
    let before = lab.sim_balance(c).await;
    lab.cut(Cut::Requests);
    let sent = Instant::now();
    lab.earn("part-late-1", c, 2).await;
    let seen = lab.watch("part-late-1", Duration::from_millis(3600)).await;
    assert!(passed_through_ambiguous(&seen), "{seen:?}");
    assert_eq!(lab.sim_adds(c).await, Vec::<i64>::new());
    lab.restore();
    eprintln!("restored {:?} after the send", sent.elapsed());
    let (t, _) = lab.settle("part-late-1", Duration::from_secs(20)).await;
    assert_eq!(t["state"], json!("applied"), "{t}");
    // Past the next retransmission of the old request.
    while sent.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = lab.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("part-late-1")).collect();
    assert_eq!(
        lab.sim_adds(c).await,
        vec![2],
        "applied more than once upstream; daemon log:\n{}",
        lines.join("\n")
    );
    assert_eq!(lab.sim_balance(c).await, before + 2);
}

/// The simulator applies and then drops the connection (`drop_after_apply_rate`), and the
/// partition starts right after, so the read-back cannot run until the link returns. The row
/// stays ambiguous throughout, and is settled as applied once.
#[cfg_attr(
    not(have_netns),
    ignore = "requires root, iproute2 and nftables (network namespaces; .ci/run installs the tools)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_then_dropped_then_partitioned_is_settled_once() {
    let Some(lab) = Lab::start(30).await else {
        return;
    };
    let c = "7";
    let before = lab.sim_balance(c).await;
    lab.faults(json!({"drop_after_apply_rate": 1.0})).await;
    lab.earn("part-drop-1", c, 3).await;
    let start = Instant::now();
    while lab.sim_adds(c).await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "add never applied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lab.cut(Cut::Both);
    lab.faults(json!({})).await;
    let seen = lab.watch("part-drop-1", Duration::from_secs(3)).await;
    lab.restore();
    let (t, seen_after) = lab.settle("part-drop-1", Duration::from_secs(20)).await;
    eprintln!("part-drop-1 states: {seen:?} then {seen_after:?}");
    assert!(passed_through_ambiguous(&seen), "{seen:?}");
    assert_eq!(t["state"], json!("applied"), "{t}");
    assert_eq!(
        t["upstream_result"]["verified_by"],
        json!("read-back"),
        "{t}"
    );
    assert_eq!(lab.sim_adds(c).await, vec![3]);
    assert_eq!(lab.sim_balance(c).await, before + 3);
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99).div_ceil(100) - 1]
}

struct LookupRun {
    normal: Duration,
    during: Duration,
    slow_during: usize,
}

/// 200 look-ups before the cut, then 200 starting right at the cut (connects and requests to
/// the upstream hang until their timeouts). Every look-up must answer 200 from the cache. Look-
/// ups refresh a customer older than 1 s from the upstream (within the 300 ms budget), so this
/// also covers the window before the daemon notices it is offline.
async fn lookups_during_partition() -> Option<LookupRun> {
    let lab = Lab::start(1).await?;
    let mut cached = Vec::new();
    for c in 1..=CUSTOMERS {
        cached.push(lab.sim_balance(&c.to_string()).await);
    }
    let measure = async |label: &str| {
        let mut times = Vec::new();
        for i in 0..200usize {
            let c = i % CUSTOMERS as usize + 1;
            let t0 = Instant::now();
            let (s, v) = lab.get(&format!("{}/v1/customers/{c}", lab.url)).await;
            times.push(t0.elapsed());
            assert_eq!(s, 200, "{label} look-up {i} of {c}: {v}");
            assert_eq!(
                v["balance"]["available"],
                json!(cached[c - 1]),
                "{label} look-up of {c}: {v}"
            );
        }
        times
    };
    // Let the cached figures age past the refresh threshold, so look-ups try the upstream.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let normal = measure("normal").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    lab.cut(Cut::Both);
    let during = measure("partition").await;
    let (_, status) = lab.get(&format!("{}/v1/status", lab.url)).await;
    // A write during the partition is queued, and syncs after the restore.
    let w = lab.earn("part-lookup-1", "2", 6).await;
    assert_eq!(w["status"], json!("queued"), "{w}");
    lab.restore();
    let (t, _) = lab.settle("part-lookup-1", Duration::from_secs(20)).await;
    assert_eq!(t["state"], json!("applied"), "{t}");
    assert_eq!(lab.sim_adds("2").await, vec![6]);
    let slow_during = during
        .iter()
        .filter(|d| **d > Duration::from_millis(100))
        .count();
    let run = LookupRun {
        normal: p99(normal),
        during: p99(during.clone()),
        slow_during,
    };
    eprintln!(
        "look-up p99: normal {:?}, during the partition {:?} ({} of 200 over 100 ms; online after: {})",
        run.normal, run.during, run.slow_during, status["online"]
    );
    Some(run)
}

#[cfg_attr(
    not(have_netns),
    ignore = "requires root, iproute2 and nftables (network namespaces; .ci/run installs the tools)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answer_from_the_cache_while_the_upstream_hangs() {
    lookups_during_partition().await;
}

/// The timing half of issue #7: look-up p99 during the partition within 2x of normal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing assertion (p99 during a partition within 2x of normal): run with --ignored"]
async fn lookup_p99_during_the_partition_is_within_twice_normal() {
    let Some(run) = lookups_during_partition().await else {
        return;
    };
    assert!(
        run.during <= run.normal * 2,
        "look-up p99 during the partition {:?} > 2x normal {:?} ({} look-ups over 100 ms)",
        run.during,
        run.normal,
        run.slow_during
    );
}
