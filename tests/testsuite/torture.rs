//! Torture harness (issue 7): the real `pointsd run` against a `pointsd sim` subprocess over
//! loopback, with concurrent register clients, SIGKILL + restart at random moments (also while
//! transactions are `sending`) and the upstream flipped between ok, refuse, 5xx, 429 +
//! Retry-After, slow and apply-then-drop. At the end the upstream is restored, the queue drains,
//! and the simulator's own ledger is checked against DESIGN.md §2:
//!
//! - every acknowledged transaction is held by the daemon (§2.1) and reached the upstream
//!   exactly once, or sits in `needs_review` with the read-back evidence (§2.2);
//! - nothing that was not committed reached the upstream, and a definitive refusal wrote
//!   nothing (§2.7);
//! - each customer's adds upstream follow the daemon's acceptance order (§2.3);
//! - upstream balances = initial + applied deltas, and the local figure agrees (§2.4).
//!
//! Everything random comes from one seed: `TORTURE_SEED=<n>` replays a run's schedule (the
//! interleaving of real processes still varies). The seed is printed first; a one-line JSON
//! summary last. A failing run keeps its data dir (database and daemon logs) and prints where;
//! `TORTURE_KEEP=1` keeps it after a clean run too.
//!
//! The simulator's own `refuse` switch is only honoured in-process (its admin route does not
//! close the listener), so "refuse" here is a small TCP relay between the daemon and the
//! simulator that closes its listener and cuts every open connection, as the simulator does.
//!
//! Short run: `cargo test --test torture`. Long run:
//! `cargo test --test torture -- --ignored --nocapture`.
#![cfg(unix)]

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

const TOKEN: &str = "torture-register-token-0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// Processes

use common::{SimProcess as Sim, free_port};

fn start_sim(customers: u32, seed: u64) -> Sim {
    common::start_sim_process(customers, &["--seed", &seed.to_string()])
}

/// The daemon process: the shared guard (SIGKILLed when dropped, so a failing run leaves
/// nothing behind), logging at `info` into the data dir.
type Daemon = common::DaemonProcess;

fn start_daemon(config: &Path, data: &Path, port: u16) -> Daemon {
    Daemon::start(config, data, port, "info")
}

/// The run's config and data dir (database, daemon logs): removed after a clean run, kept
/// (and its path printed) after a violation, a panic, or with `TORTURE_KEEP=1`.
struct RunDir(Option<tempfile::TempDir>);

impl RunDir {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("dir").path()
    }

    fn keep(&mut self) {
        if let Some(d) = self.0.take() {
            eprintln!("torture data dir kept at {}", d.keep().display());
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("TORTURE_KEEP").is_some() {
            self.keep();
        }
    }
}

fn write_config(dir: &Path, upstream: &str, port: u16) -> PathBuf {
    // The first line lands in the token's table: the torture adjusts balances too, which
    // needs the manager role.
    let rest = format!(
        "role = \"manager\"\n{}[sync]\npull_interval_s = 10\nprobe_interval_s = 1\nonline_budget_ms = 200\n\
         backoff_initial_ms = 100\nbackoff_max_ms = 1000\nmax_requests_per_second = 1000\n",
        common::smaregi_upstream(upstream, "sim-secret", 1_000)
    );
    common::write_config(
        dir,
        "pointsd.toml",
        "store-torture",
        port,
        "lookup_refresh_after_s = 0",
        TOKEN,
        &rest,
    )
}

// ---------------------------------------------------------------------------------------------
// A TCP relay in front of the simulator that can refuse connections

struct Relay {
    url: String,
    refuse: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let first = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = first.local_addr().expect("relay addr");
        let (refuse, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                if let Some(l) = listener.take() {
                    // Dropping `cut` (or sending on it) closes every connection of this epoch.
                    let (cut, _) = broadcast::channel::<()>(1);
                    loop {
                        tokio::select! {
                            r = rx.changed() => {
                                if r.is_err() { return; }
                                if *rx.borrow() { break; }
                            }
                            acc = l.accept() => {
                                let Ok((mut client, _)) = acc else { continue };
                                let mut stop = cut.subscribe();
                                tokio::spawn(async move {
                                    let Ok(mut server) = TcpStream::connect(target).await else {
                                        return;
                                    };
                                    let _ = client.set_nodelay(true);
                                    let _ = server.set_nodelay(true);
                                    tokio::select! {
                                        _ = copy_bidirectional(&mut client, &mut server) => {}
                                        _ = stop.recv() => {}
                                    }
                                });
                            }
                        }
                    }
                    // Refusing: no listener (connect gets ECONNREFUSED), every connection cut.
                    drop(l);
                    let _ = cut.send(());
                }
                loop {
                    if rx.changed().await.is_err() {
                        return;
                    }
                    if !*rx.borrow() {
                        break;
                    }
                }
                loop {
                    match TcpListener::bind(addr).await {
                        Ok(l) => {
                            listener = Some(l);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        });
        Relay {
            url: format!("http://{addr}"),
            refuse,
            task,
        }
    }

    fn set_refuse(&self, on: bool) {
        self.refuse.send_replace(on);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Options, summary, the fault schedule

#[derive(Debug, Clone)]
pub struct Opts {
    /// Concurrent register clients.
    pub clients: usize,
    /// Idempotency keys (transactions) the registers send in all.
    pub writes: usize,
    pub customers: u32,
    /// SIGKILL + restart events.
    pub kills: usize,
    /// Upstream mode flips.
    pub fault_flips: usize,
    /// Apply-then-drop rate underneath every mode (the long run's 25%).
    pub base_drop_rate: f64,
    /// A register's pause between transactions.
    pub think_ms: (u64, u64),
    /// Least time between two chaos events.
    pub dwell_ms: (u64, u64),
    /// A register gives up on a key after an unanswered attempt with this probability.
    pub abandon_rate: f64,
    /// After the load, keep draining with only the base apply-then-drop rate on, this long at
    /// most, before restoring everything (the daemon drains slowly under it).
    pub faulty_drain: Duration,
    /// Extra kills spread over that phase.
    pub drain_kills: usize,
    pub drain_timeout: Duration,
}

impl Opts {
    pub fn short() -> Opts {
        Opts {
            clients: 6,
            writes: 500,
            customers: 10,
            kills: 4,
            fault_flips: 10,
            base_drop_rate: 0.0,
            think_ms: (10, 90),
            dwell_ms: (250, 800),
            abandon_rate: 0.05,
            faulty_drain: Duration::ZERO,
            drain_kills: 0,
            drain_timeout: Duration::from_secs(90),
        }
    }

    pub fn long() -> Opts {
        Opts {
            clients: 8,
            writes: 10_000,
            // Keeps each customer's history within one 1000-row page of the list API.
            customers: 20,
            kills: 24,
            fault_flips: 100,
            base_drop_rate: 0.25,
            think_ms: (5, 60),
            dwell_ms: (250, 900),
            abandon_rate: 0.05,
            faulty_drain: Duration::from_secs(120),
            drain_kills: 6,
            drain_timeout: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    /// Keys a register got a 2xx for.
    pub acknowledged: usize,
    /// Adds in the simulator's own ledger.
    pub applied: usize,
    /// Upstream adds that no committed transaction explains (double or phantom applies).
    pub duplicates: usize,
    /// Acknowledged transactions missing from the daemon, plus `applied` ones not upstream.
    pub lost: usize,
    pub needs_review: usize,
    pub kills: usize,
    pub faults: usize,
    pub wall_time_s: f64,
    pub writes: usize,
    pub kills_while_sending: usize,
    /// 409 insufficient / offline-limit answers: definitive, nothing written.
    pub refused: usize,
    /// 409 upstream_rejected answers plus acknowledged ones the upstream refused later.
    pub rejected: usize,
    /// Keys a register gave up on after an unanswered attempt.
    pub abandoned: usize,
    /// Abandoned keys the daemon had committed anyway (it must deliver them).
    pub committed_unacked: usize,
    /// Of those, how many reached the upstream.
    pub committed_unacked_applied: usize,
    /// Answered 2xx only after at least one unanswered attempt.
    pub acknowledged_after_retry: usize,
    /// Applied transactions whose outcome was proven by read-back (the ambiguous path).
    pub verified_by_read_back: usize,
    pub order_violations: usize,
    pub balance_mismatches: usize,
    pub refused_but_written: usize,
    pub review_without_evidence: usize,
    /// Adds the upstream had applied when the faults were lifted, and the open transactions
    /// (pending/sending/ambiguous) left then.
    pub applied_before_restore: usize,
    pub open_at_restore: usize,
    /// Transactions still pending/sending/ambiguous when the drain gave up.
    pub open_after_drain: usize,
    pub drain_s: f64,
    pub fault_modes: BTreeMap<String, usize>,
}

impl Summary {
    fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (name, n) in [
            ("duplicates", self.duplicates),
            ("lost", self.lost),
            ("order_violations", self.order_violations),
            ("balance_mismatches", self.balance_mismatches),
            ("refused_but_written", self.refused_but_written),
            ("review_without_evidence", self.review_without_evidence),
            ("open_after_drain", self.open_after_drain),
        ] {
            if n > 0 {
                v.push(format!("{name} = {n}"));
            }
        }
        v
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Ok,
    Refuse,
    Errors(f64),
    Throttle(f64, u64),
    Slow(u64),
    Drop(f64),
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::Refuse => "refuse",
            Mode::Errors(_) => "5xx",
            Mode::Throttle(..) => "429",
            Mode::Slow(_) => "slow",
            Mode::Drop(_) => "apply_then_drop",
        }
    }

    fn random(rng: &mut StdRng) -> Mode {
        match rng.random_range(0..8) {
            0 | 1 => Mode::Ok,
            2 => Mode::Refuse,
            3 => Mode::Errors(rng.random_range(0.3..=1.0)),
            4 => Mode::Throttle(rng.random_range(0.3..=1.0), rng.random_range(1..=2)),
            // Up to 1.5x the request timeout: some sends time out after they were sent (the
            // simulator drops, unapplied, a request whose client went away while it waited).
            5 => Mode::Slow(rng.random_range(100..=1500)),
            _ => Mode::Drop(rng.random_range(0.3..=0.8)),
        }
    }

    /// The simulator's fault switches for this mode (refusing is the relay's job).
    fn faults(self, base_drop: f64) -> Value {
        let mut f = json!({"drop_after_apply_rate": base_drop});
        match self {
            Mode::Ok | Mode::Refuse => {}
            Mode::Errors(r) => f["error_rate"] = json!(r),
            Mode::Throttle(r, s) => {
                f["throttle_rate"] = json!(r);
                f["retry_after_s"] = json!(s);
            }
            Mode::Slow(ms) => f["latency_ms"] = json!(ms),
            Mode::Drop(r) => f["drop_after_apply_rate"] = json!(r.max(base_drop)),
        }
        f
    }
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Kill {
        while_sending: bool,
        downtime_ms: u64,
    },
    Flip(Mode),
}

/// Chaos events, each due once this many keys have been started.
fn plan(rng: &mut StdRng, o: &Opts) -> Vec<(usize, Event)> {
    let mut ev = Vec::new();
    let slot = o.writes / (o.kills + 1);
    for k in 0..o.kills {
        let jitter = rng.random_range(0..=slot / 2) as isize - (slot / 4) as isize;
        let at = ((k + 1) * slot) as isize + jitter;
        ev.push((
            at.clamp(1, o.writes as isize - 1) as usize,
            Event::Kill {
                while_sending: rng.random_bool(0.6),
                downtime_ms: if rng.random_bool(0.3) {
                    0
                } else {
                    rng.random_range(50..=800)
                },
            },
        ));
    }
    for _ in 0..o.fault_flips {
        let at = rng.random_range(0..o.writes * 95 / 100);
        ev.push((at, Event::Flip(Mode::random(rng))));
    }
    ev.sort_by_key(|(at, _)| *at);
    ev
}

// ---------------------------------------------------------------------------------------------
// Register clients

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Acked,
    /// 409 insufficient / offline limit: nothing written.
    Refused,
    /// 409 upstream_rejected: written, then refused by the upstream.
    Rejected,
    Abandoned,
}

#[derive(Debug, Clone)]
struct KeyRec {
    txn_id: String,
    customer: String,
    delta: i64,
    outcome: Outcome,
    unanswered: u32,
}

struct Load {
    next: AtomicUsize,
    done: AtomicUsize,
    records: Mutex<Vec<KeyRec>>,
}

async fn register_client(
    id: usize,
    seed: u64,
    o: Opts,
    url: String,
    http: reqwest::Client,
    load: Arc<Load>,
) {
    let salt = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = StdRng::seed_from_u64(seed ^ salt);
    let register = format!("reg{id}");
    loop {
        let i = load.next.fetch_add(1, Ordering::SeqCst);
        if i >= o.writes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(o.think_ms.0..=o.think_ms.1),
        ))
        .await;
        let customer = rng.random_range(1..=o.customers).to_string();
        let txn_id = format!("t{seed:x}-{id}-{i}");
        let roll = rng.random_range(0..100);
        let mut body = json!({"txn_id": txn_id, "customer_id": customer, "register_id": register});
        let (kind, points) = if roll < 60 {
            ("earn", rng.random_range(1..=300i64))
        } else if roll < 85 {
            // A cashier looks the customer up, then redeems (sometimes more than shown).
            let p = match lookup(&http, &url, &customer).await {
                Some(a) if a > 0 && rng.random_bool(0.9) => rng.random_range(1..=a.min(300)),
                Some(a) => a.max(0) + rng.random_range(1..=100),
                None => rng.random_range(1..=100),
            };
            ("redeem", p)
        } else {
            body["reason"] = json!("torture adjustment");
            let p = rng.random_range(1..=100i64);
            ("adjust", if rng.random_bool(0.4) { -p } else { p })
        };
        body["kind"] = json!(kind);
        body["points"] = json!(points);
        let delta = if kind == "redeem" { -points } else { points };
        let started = Instant::now();
        let mut unanswered = 0;
        let outcome = loop {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "{txn_id}: no answer from the daemon for 180 s"
            );
            let answer = match http
                .post(format!("{url}/v1/transactions"))
                .bearer_auth(TOKEN)
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match r.bytes().await {
                        Ok(b) => Some((status, serde_json::from_slice(&b).unwrap_or(Value::Null))),
                        Err(_) => None,
                    }
                }
                Err(_) => None,
            };
            match answer {
                Some((200 | 201, v)) => {
                    assert_eq!(v["txn_id"], json!(txn_id), "answer for another key: {v}");
                    assert_eq!(v["delta"], json!(delta), "{txn_id}: wrong delta: {v}");
                    assert_eq!(v["customer_id"], json!(customer), "{v}");
                    break Outcome::Acked;
                }
                Some((409, v)) => match v["code"].as_str() {
                    Some(
                        "insufficient_points" | "offline_redeem_limit" | "offline_redeem_disabled",
                    ) => {
                        break Outcome::Refused;
                    }
                    Some("upstream_rejected") => break Outcome::Rejected,
                    _ => panic!("{txn_id}: unexpected 409: {v}"),
                },
                // Storage trouble or a dying daemon: nothing acknowledged; retry the same key.
                Some((s, _)) if s >= 500 => {}
                Some((s, v)) => panic!("{txn_id}: unexpected answer {s}: {v}"),
                None => {}
            }
            unanswered += 1;
            if rng.random_bool(o.abandon_rate) {
                break Outcome::Abandoned;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..=80))).await;
        };
        load.records.lock().expect("records").push(KeyRec {
            txn_id,
            customer,
            delta,
            outcome,
            unanswered,
        });
    }
    load.done.fetch_add(1, Ordering::SeqCst);
}

async fn lookup(http: &reqwest::Client, url: &str, customer: &str) -> Option<i64> {
    let r = http
        .get(format!("{url}/v1/customers/{customer}"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["balance"]["available"].as_i64()
}

// ---------------------------------------------------------------------------------------------
// Helpers against the daemon and the simulator

async fn get_json(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let r = http
        .get(url)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let s = r.status().as_u16();
    Some((s, r.json().await.unwrap_or(Value::Null)))
}

async fn must_get(http: &reqwest::Client, url: &str) -> Value {
    for _ in 0..50 {
        if let Some((200, v)) = get_json(http, url).await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("GET {url} kept failing");
}

async fn put_faults(http: &reqwest::Client, admin: &str, f: &Value) {
    let r = http
        .put(format!("{admin}/_sim/faults"))
        .json(f)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("simulator admin");
    assert!(r.status().is_success(), "PUT faults {f}: {}", r.status());
}

async fn wait_healthy(http: &reqwest::Client, url: &str, daemon: &mut Daemon, data: &Path) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some((200, _)) = get_json(http, &format!("{url}/v1/health")).await {
            return;
        }
        if let Some(st) = daemon.exited() {
            panic!("daemon exited at start-up ({st}):\n{}", log_tail(data, 40));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("daemon did not come up at {url}:\n{}", log_tail(data, 40));
}

fn log_tail(data: &Path, n: usize) -> String {
    let mut lines = Vec::new();
    if let Ok(rd) = std::fs::read_dir(data.join("logs")) {
        let mut files: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Ok(s) = std::fs::read_to_string(f) {
                lines.extend(s.lines().map(str::to_string));
            }
        }
    }
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

/// Kills the daemon; with `while_sending`, first slows the upstream and waits (briefly) until
/// the outbox has a row in `sending`. Returns whether a send was in flight at the kill.
async fn kill_daemon(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    daemon: &mut Daemon,
    rng: &mut StdRng,
    while_sending: bool,
    current: Value,
) -> bool {
    let mut in_flight = false;
    if while_sending {
        let mut f = current.clone();
        let lat = f["latency_ms"]
            .as_u64()
            .unwrap_or(0)
            .max(rng.random_range(300..=800));
        f["latency_ms"] = json!(lat);
        put_faults(http, admin, &f).await;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Some((200, s)) = get_json(http, &format!("{url}/v1/status")).await
                && s["queue"]["sending"].as_i64().unwrap_or(0) > 0
            {
                in_flight = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    daemon.kill();
    if while_sending {
        put_faults(http, admin, &current).await;
    }
    in_flight
}

/// One customer: the daemon's transactions in acceptance order as `(delta, optional)`
/// (`applied` = must be upstream once, `needs_review` = at most once) against the deltas the
/// upstream applied, in its order. Returns (lost, unexplained adds, order kept); the order is
/// only judged when the counts match.
fn compare(txns: &[(i64, bool)], adds: &[i64]) -> (usize, usize, bool) {
    let mut need: HashMap<i64, i64> = HashMap::new();
    let mut opt: HashMap<i64, i64> = HashMap::new();
    let mut have: HashMap<i64, i64> = HashMap::new();
    for &(d, optional) in txns {
        *if optional { &mut opt } else { &mut need }
            .entry(d)
            .or_default() += 1;
    }
    for d in adds {
        *have.entry(*d).or_default() += 1;
    }
    let lost: i64 = need
        .iter()
        .map(|(d, n)| (n - have.get(d).copied().unwrap_or(0)).max(0))
        .sum();
    let dup: i64 = have
        .iter()
        .map(|(d, n)| {
            (n - need.get(d).copied().unwrap_or(0) - opt.get(d).copied().unwrap_or(0)).max(0)
        })
        .sum();
    let order_ok = lost > 0 || dup > 0 || order_consistent(txns, adds);
    (lost as usize, dup as usize, order_ok)
}

/// Order check (§2.3): can the upstream's adds for one customer be produced from the
/// daemon's transactions in acceptance order, each `applied` one exactly once and each
/// `needs_review` one at most once?
fn order_consistent(txns: &[(i64, bool)], adds: &[i64]) -> bool {
    // reach[j]: the first i transactions can explain the first j adds.
    let m = adds.len();
    let mut reach = vec![false; m + 1];
    reach[0] = true;
    for &(delta, optional) in txns {
        let mut next = vec![false; m + 1];
        for (j, _) in reach.iter().enumerate().filter(|(_, r)| **r) {
            if optional {
                next[j] = true;
            }
            if adds.get(j) == Some(&delta) {
                next[j + 1] = true;
            }
        }
        reach = next;
    }
    reach[m]
}

// ---------------------------------------------------------------------------------------------
// The harness

pub async fn run(seed: u64, o: Opts) -> Summary {
    println!("torture seed: {seed} (replay with TORTURE_SEED={seed})");
    let wall = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let http = pointsd::http_client_builder()
        .no_proxy()
        .build()
        .expect("http client");

    let sim = start_sim(o.customers, seed);
    let sim_addr: SocketAddr = sim
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("sim address");
    let relay = Relay::start(sim_addr).await;
    let mut initial = BTreeMap::new();
    for c in 1..=o.customers {
        let v = must_get(&http, &format!("{}/_sim/customers/{c}", sim.admin)).await;
        initial.insert(c.to_string(), v["point"].as_i64().expect("point"));
    }
    put_faults(&http, &sim.admin, &Mode::Ok.faults(o.base_drop_rate)).await;

    let mut dir = RunDir(Some(
        tempfile::Builder::new()
            .prefix(&format!("torture-{seed}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir"),
    ));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), &relay.url, port);
    let data = dir.path().join("data");
    let mut daemon = start_daemon(&config, &data, port);
    wait_healthy(&http, &url, &mut daemon, &data).await;
    let start = Instant::now();
    loop {
        let s = must_get(&http, &format!("{url}/v1/status")).await;
        if s["cache"]["customers"] == json!(o.customers)
            && s["cache"]["last_full_refresh_at"].is_string()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "cache never filled: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut s = Summary {
        seed,
        ..Default::default()
    };

    // Registers.
    let load = Arc::new(Load {
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        records: Mutex::new(Vec::new()),
    });
    let mut clients = Vec::new();
    for id in 0..o.clients {
        clients.push(tokio::spawn(register_client(
            id,
            seed,
            o.clone(),
            url.clone(),
            http.clone(),
            load.clone(),
        )));
    }

    // Chaos.
    let mut current = Mode::Ok.faults(o.base_drop_rate);
    let mut last = Instant::now();
    for (at, ev) in plan(&mut rng, &o) {
        let dwell = Duration::from_millis(rng.random_range(o.dwell_ms.0..=o.dwell_ms.1));
        loop {
            let all_done = load.done.load(Ordering::SeqCst) == o.clients;
            if (load.next.load(Ordering::SeqCst) >= at || all_done) && last.elapsed() >= dwell {
                break;
            }
            // A client that ended without counting itself done panicked: surface it now.
            let finished = clients.iter().filter(|c| c.is_finished()).count();
            if finished > load.done.load(Ordering::SeqCst) {
                for c in clients.drain(..).filter(|c| c.is_finished()) {
                    if let Err(e) = c.await {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match ev {
            Event::Kill {
                while_sending,
                downtime_ms,
            } => {
                let sending = kill_daemon(
                    &http,
                    &url,
                    &sim.admin,
                    &mut daemon,
                    &mut rng,
                    while_sending,
                    current.clone(),
                )
                .await;
                s.kills += 1;
                s.kills_while_sending += sending as usize;
                tokio::time::sleep(Duration::from_millis(downtime_ms)).await;
                daemon = start_daemon(&config, &data, port);
                wait_healthy(&http, &url, &mut daemon, &data).await;
            }
            Event::Flip(mode) => {
                current = mode.faults(o.base_drop_rate);
                put_faults(&http, &sim.admin, &current).await;
                relay.set_refuse(matches!(mode, Mode::Refuse));
                s.faults += 1;
                *s.fault_modes.entry(mode.name().to_string()).or_default() += 1;
            }
        }
        last = Instant::now();
    }
    for c in clients {
        if let Err(e) = c.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let records = std::mem::take(&mut *load.records.lock().expect("records"));
    assert_eq!(records.len(), o.writes, "every key ends with an outcome");
    s.writes = records.len();

    // Drain: first (long run) under the base apply-then-drop rate alone, then with everything
    // restored.
    let drain = Instant::now();
    let open_now = async || {
        let st = must_get(&http, &format!("{url}/v1/status")).await;
        let q = &st["queue"];
        let open = ["pending", "sending", "ambiguous"]
            .iter()
            .map(|k| q[k].as_i64().unwrap_or(0))
            .sum::<i64>();
        (open, st)
    };
    if !o.faulty_drain.is_zero() {
        let base = Mode::Ok.faults(o.base_drop_rate);
        put_faults(&http, &sim.admin, &base).await;
        relay.set_refuse(false);
        // Kills keep coming while rows are `sending` or waiting for their read-back.
        let every = o.faulty_drain / (o.drain_kills as u32 + 1);
        let mut next_kill = Instant::now() + every;
        while drain.elapsed() < o.faulty_drain && open_now().await.0 > 0 {
            if Instant::now() >= next_kill {
                let sending = kill_daemon(
                    &http,
                    &url,
                    &sim.admin,
                    &mut daemon,
                    &mut rng,
                    true,
                    base.clone(),
                )
                .await;
                s.kills += 1;
                s.kills_while_sending += sending as usize;
                daemon = start_daemon(&config, &data, port);
                wait_healthy(&http, &url, &mut daemon, &data).await;
                next_kill = Instant::now() + every;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (open, _) = open_now().await;
    s.open_at_restore = open as usize;
    s.applied_before_restore = must_get(&http, &format!("{}/_sim/adds", sim.admin))
        .await
        .as_array()
        .map_or(0, Vec::len);
    put_faults(&http, &sim.admin, &json!({})).await;
    relay.set_refuse(false);
    let status = loop {
        let (open, st) = open_now().await;
        if open == 0 {
            break st;
        }
        if drain.elapsed() > o.drain_timeout {
            eprintln!("queue did not drain in {:?}: {st}", o.drain_timeout);
            s.open_after_drain = open as usize;
            break st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    s.drain_s = (drain.elapsed().as_secs_f64() * 10.0).round() / 10.0;

    // The daemon's view: every transaction, per customer, in acceptance order.
    let mut by_customer: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut daemon_txns: HashMap<String, Value> = HashMap::new();
    for c in initial.keys() {
        let v = must_get(
            &http,
            &format!("{url}/v1/transactions?limit=1000&customer_id={c}"),
        )
        .await;
        let mut list = v["transactions"].as_array().cloned().unwrap_or_default();
        assert!(
            list.len() < 1000,
            "customer {c} has 1000+ transactions; run with more customers"
        );
        list.reverse();
        for t in &list {
            daemon_txns.insert(
                t["txn_id"].as_str().unwrap_or_default().to_string(),
                t.clone(),
            );
        }
        by_customer.insert(c.clone(), list);
    }
    // The upstream's view.
    let adds = must_get(&http, &format!("{}/_sim/adds", sim.admin)).await;
    let adds = adds.as_array().cloned().unwrap_or_default();
    s.applied = adds.len();
    let mut adds_by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for a in &adds {
        adds_by
            .entry(a["customer_id"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(a["delta"].as_i64().unwrap_or(0));
    }

    // Keys as the registers saw them.
    let known: HashSet<&str> = records.iter().map(|r| r.txn_id.as_str()).collect();
    for t in daemon_txns.keys() {
        assert!(
            known.contains(t.as_str()),
            "the daemon holds a key nobody sent: {t}"
        );
    }
    let mut problem_customers = HashSet::new();
    for r in &records {
        let held = daemon_txns.get(&r.txn_id);
        if let Some(t) = held {
            assert_eq!(t["delta"], json!(r.delta), "{}: delta changed", r.txn_id);
            assert_eq!(t["customer_id"], json!(r.customer), "{}", r.txn_id);
        }
        match r.outcome {
            Outcome::Acked => {
                s.acknowledged += 1;
                if r.unanswered > 0 {
                    s.acknowledged_after_retry += 1;
                }
                match held {
                    None => {
                        eprintln!("LOST: acknowledged {} is not in the daemon", r.txn_id);
                        s.lost += 1;
                        problem_customers.insert(r.customer.clone());
                    }
                    Some(t) if t["state"] == json!("rejected") => s.rejected += 1,
                    Some(_) => {}
                }
            }
            Outcome::Refused => {
                s.refused += 1;
                if let Some(t) = held {
                    eprintln!("refused {} was written: {t}", r.txn_id);
                    s.refused_but_written += 1;
                }
            }
            Outcome::Rejected => {
                s.rejected += 1;
                if held.is_none_or(|t| t["state"] != json!("rejected")) {
                    eprintln!(
                        "upstream_rejected {} is not held as rejected: {held:?}",
                        r.txn_id
                    );
                    s.lost += 1;
                }
            }
            Outcome::Abandoned => {
                s.abandoned += 1;
                if let Some(t) = held {
                    s.committed_unacked += 1;
                    if t["state"] == json!("applied") {
                        s.committed_unacked_applied += 1;
                    }
                }
            }
        }
    }

    // Per customer: exactly once (multiset), order (alignment), balances.
    for (c, txns) in &by_customer {
        let ups = adds_by.get(c).cloned().unwrap_or_default();
        let mut seq = Vec::new();
        let mut applied_sum = 0;
        let mut reviews = 0;
        for t in txns {
            let d = t["delta"].as_i64().unwrap_or(0);
            match t["state"].as_str().unwrap_or_default() {
                "applied" => {
                    seq.push((d, false));
                    applied_sum += d;
                    if t["upstream_result"]["verified_by"] == json!("read-back") {
                        s.verified_by_read_back += 1;
                    }
                }
                "needs_review" => {
                    seq.push((d, true));
                    reviews += 1;
                    s.needs_review += 1;
                    let ev = &t["upstream_result"];
                    if !(ev.get("read_back_balance").is_some() && ev.get("delta").is_some()) {
                        eprintln!("needs_review without evidence: {t}");
                        s.review_without_evidence += 1;
                    }
                }
                _ => {}
            }
        }
        let (lost, dup, order_ok) = compare(&seq, &ups);
        s.lost += lost;
        s.duplicates += dup;
        s.order_violations += !order_ok as usize;
        let sim_now = must_get(&http, &format!("{}/_sim/customers/{c}", sim.admin)).await["point"]
            .as_i64()
            .expect("point");
        let mut mismatch = sim_now != initial[c] + ups.iter().sum::<i64>();
        if reviews == 0 {
            mismatch |= sim_now != initial[c] + applied_sum;
            let local = must_get(&http, &format!("{url}/v1/customers/{c}")).await;
            if local["balance"]["available"].as_i64() != Some(sim_now) {
                eprintln!("customer {c}: local {local} vs upstream {sim_now}");
                mismatch = true;
            }
        }
        s.balance_mismatches += mismatch as usize;
        if lost > 0 || dup > 0 || mismatch || reviews > 0 || !order_ok {
            problem_customers.insert(c.clone());
        }
    }
    s.wall_time_s = (wall.elapsed().as_secs_f64() * 10.0).round() / 10.0;

    let violations = s.violations();
    if !violations.is_empty() || s.needs_review > 0 {
        eprintln!("final status: {status}");
        for c in &problem_customers {
            eprintln!(
                "--- customer {c}: initial {}, daemon transactions in acceptance order:",
                initial[c]
            );
            for t in by_customer.get(c).into_iter().flatten() {
                eprintln!(
                    "  {} {:>5} {:<12} attempts={} created={} err={} result={}",
                    t["txn_id"].as_str().unwrap_or_default(),
                    t["delta"],
                    t["state"].as_str().unwrap_or_default(),
                    t["attempts"],
                    t["created_at"].as_str().unwrap_or_default(),
                    t["last_error"],
                    t["upstream_result"],
                );
            }
            eprintln!("  simulator adds: {:?}", adds_by.get(c));
        }
    }
    daemon.kill();
    if !violations.is_empty() {
        eprintln!("violations: {violations:?}");
        dir.keep();
    }
    drop(relay);
    drop(sim);
    println!("{}", serde_json::to_string(&s).expect("summary"));
    s
}

fn seed_from_env() -> u64 {
    match std::env::var("TORTURE_SEED") {
        Ok(v) => v.trim().parse().expect("TORTURE_SEED must be a u64"),
        Err(_) => rand::rng().random(),
    }
}

fn check(s: &Summary, o: &Opts) {
    assert!(s.kills >= o.kills, "{s:?}");
    assert!(
        s.violations().is_empty(),
        "seed {}: {:?}",
        s.seed,
        s.violations()
    );
    assert_eq!(s.duplicates, 0);
    assert_eq!(s.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_short() {
    let o = Opts::short();
    let s = run(seed_from_env(), o.clone()).await;
    check(&s, &o);
    assert!(s.kills >= 3 && s.writes >= 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 10,000 writes, 30 kills, 100 upstream flips, 25% apply-then-drop (~5 min)"]
async fn torture_long() {
    let o = Opts::long();
    let s = run(seed_from_env(), o.clone()).await;
    check(&s, &o);
    assert!(s.kills >= 20 && s.writes >= 10_000);
}

#[test]
fn the_checker_catches_what_it_must() {
    // Exactly once, in order; a needs_review item may or may not be upstream.
    assert_eq!(compare(&[(5, false), (-3, false)], &[5, -3]), (0, 0, true));
    assert_eq!(
        compare(&[(5, false), (7, true), (-3, false)], &[5, 7, -3]),
        (0, 0, true)
    );
    assert_eq!(
        compare(&[(5, false), (7, true), (-3, false)], &[5, -3]),
        (0, 0, true)
    );
    // A double apply, a phantom, a loss, a swap.
    assert_eq!(compare(&[(5, false)], &[5, 5]), (0, 1, true));
    assert_eq!(compare(&[(5, false)], &[5, 9]), (0, 1, true));
    assert_eq!(compare(&[(5, false), (5, false)], &[5]), (1, 0, true));
    assert_eq!(compare(&[(5, false), (-3, false)], &[-3, 5]), (0, 0, false));
    assert_eq!(
        compare(&[(5, false), (7, true), (5, false)], &[5, 5, 7]),
        (0, 0, false)
    );
}
