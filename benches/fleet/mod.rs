//! `cargo bench -- fleet`: a chain on one contract (issue 13's fleet table). One in-process
//! simulator with the production limits (50 reads/s, 20 writes/s) and C customers; K agents,
//! each a process of the release binary (`pointsd run`) with its own config, data dir, port,
//! store id and register token. Phases: every agent's first fill; a steady phase (each store's
//! register selling at a steady rate, 10% of the customers shopping in three stores, the online
//! shop changing points through the simulator, 10% of `point/add` answers dropped after
//! applying, freshness probes); an outage of every store's link (the simulator refuses) while
//! the registers keep selling; the recovery and drain.
//!
//! Measured from the simulator (per-`User-Agent` request counts, 429s, the `point/add` log
//! checked against what each store acknowledged: lost, duplicated, out of order) and from the
//! agents' HTTP API (`GET /v1/customers/{id}`: `balance.available`, `changed_elsewhere_at`;
//! `GET /v1/status`; `GET /v1/transactions/{id}`), plus the agents' RSS from /proc. A measure
//! the agent cannot show yet is reported as "n/a", never estimated.
//!
//! Which store made an add: store s (0-based) sells in points `s + 1 + (K + 1)·m`, so
//! `|delta| mod (K + 1) - 1` names the store whatever the agents' `User-Agent` says.
//!
//! Options (after `--`): `--stores K` (50), `--customers C` (200000), `--minutes M` steady
//! phase (5), `--outage-minutes O` (3), `--sales-per-minute S` per store (6),
//! `--outage-sales-per-minute S` per store while the link is down (30: the outage falls in a
//! rush, so that every store still has a backlog well after the last one noticed the link back),
//! `--online-per-minute R` contract-wide (30), `--drop-rate P` (0.1), `--fill-minutes F`
//! longest wait for the first fills (10), `--new-keys` (write the chain config keys the agent
//! gains with issue 13: `sync.pull_interval_s = 30`, `sync.full_refresh_interval_s = 86400`,
//! `sync.max_reads_per_second = 50`, `sync.max_writes_per_second = 20`).
//! Results: `target/bench/fleet.json` (and `fleet-c<C>.json`, which a run at the other size
//! reads for the first row); a Markdown table on stdout.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pointsd::sim::{AgentCounts, Faults, SimHandle, SimOptions};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

pub struct FleetOpts {
    pub stores: usize,
    pub customers: u32,
    pub minutes: f64,
    pub outage_minutes: f64,
    pub sales_per_minute: f64,
    pub outage_sales_per_minute: f64,
    pub online_per_minute: f64,
    pub drop_rate: f64,
    pub fill_minutes: f64,
    pub new_keys: bool,
}

/// The contract's limits (DESIGN.md §4, production).
const READS_PER_S: u32 = 50;
const WRITES_PER_S: u32 = 20;
/// The change-feed interval written with `--new-keys` (s).
const PULL_INTERVAL_S: u64 = 30;
/// A freshness probe starts this often during the steady phase.
const PROBE_EVERY: Duration = Duration::from_secs(10);

pub fn opts(args: &[String]) -> FleetOpts {
    let mut o = FleetOpts {
        stores: 50,
        customers: 200_000,
        minutes: 5.0,
        outage_minutes: 3.0,
        sales_per_minute: 6.0,
        outage_sales_per_minute: 30.0,
        online_per_minute: 30.0,
        drop_rate: 0.1,
        fill_minutes: 10.0,
        new_keys: true,
    };
    let mut i = 0;
    while i < args.len() {
        let val = || -> f64 {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--stores" => o.stores = val() as usize,
            "--customers" => o.customers = val() as u32,
            "--minutes" => o.minutes = val(),
            "--outage-minutes" => o.outage_minutes = val(),
            "--sales-per-minute" => o.sales_per_minute = val(),
            "--outage-sales-per-minute" => o.outage_sales_per_minute = val(),
            "--online-per-minute" => o.online_per_minute = val(),
            "--drop-rate" => o.drop_rate = val(),
            "--fill-minutes" => o.fill_minutes = val(),
            "--new-keys" => {
                o.new_keys = true;
                i += 1;
                continue;
            }
            // For comparing against an agent built before the chain keys existed.
            "--no-new-keys" => {
                o.new_keys = false;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(o.stores >= 2, "--stores needs at least 2 (a chain)");
    assert!(
        o.customers as usize >= 20 * o.stores,
        "--customers needs at least 20 per store"
    );
    o
}

/// A child process killed when dropped, so a failed phase leaves nothing running.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Agent {
    p: Proc,
    url: String,
    token: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn total_rss_kib(agents: &[Agent]) -> u64 {
    agents.iter().map(|a| rss_kib(a.p.0.id())).sum()
}

fn write_config(
    dir: &Path,
    sim: &SimHandle,
    store: usize,
    port: u16,
    token: &str,
    o: &FleetOpts,
) -> PathBuf {
    let so = sim.options();
    let chain_keys = if o.new_keys {
        format!(
            "pull_interval_s = {PULL_INTERVAL_S}\nfull_refresh_interval_s = 86400\nmax_reads_per_second = {READS_PER_S}\nmax_writes_per_second = {WRITES_PER_S}\n"
        )
    } else {
        String::new()
    };
    let cfg = dir.join("pointsd.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
store_id = "store-{store:03}"
[api]
listen = "127.0.0.1:{port}"
# The freshness probes read the cache: a look-up must not refresh from upstream by age.
lookup_refresh_after_s = 86400
[[api.tokens]]
name = "register-1"
token = "{token}"
[upstream]
kind = "smaregi"
[upstream.smaregi]
contract_id = "{contract}"
client_id = "{client}"
client_secret = "{secret}"
id_base = "{url}"
api_base = "{url}"
[sync]
{chain_keys}[log]
level = "warn"
"#,
            contract = so.contract_id,
            client = so.client_id,
            secret = so.client_secret,
            url = sim.url(),
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    cfg
}

async fn start_agent(
    bin: &Path,
    work: &Path,
    sim: &SimHandle,
    store: usize,
    o: &FleetOpts,
    http: &reqwest::Client,
) -> Agent {
    let dir = work.join(format!("store-{store:03}"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let token = format!("fleet-register-{store:03}-0123456789abcdef");
    let cfg = write_config(&dir, sim, store, port, &token, o);
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start pointsd");
    let mut p = Proc(child);
    let url = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{url}/v1/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = p.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            panic!(
                "store {store}: pointsd exited ({status}) before it was ready{}:\n{log}",
                if o.new_keys {
                    " (--new-keys: does this build know the chain config keys?)"
                } else {
                    ""
                }
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "store {store}: pointsd did not become ready within 60 s (see {})",
            dir.join("agent.log").display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Agent { p, url, token }
}

async fn get(http: &reqwest::Client, a: &Agent, path: &str) -> Option<Value> {
    let r = http
        .get(format!("{}{path}", a.url))
        .bearer_auth(&a.token)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

fn open_queue(s: &Value) -> i64 {
    let q = &s["queue"];
    q["pending"].as_i64().unwrap_or(0)
        + q["sending"].as_i64().unwrap_or(0)
        + q["ambiguous"].as_i64().unwrap_or(0)
}

/// One sale a store's register made and the store acknowledged (201).
#[derive(Clone)]
struct Sale {
    txn_id: String,
    customer: String,
    delta: i64,
}

/// Which customers shop where: 10% (ids ≡ 0 mod 10) in three stores, the rest in one;
/// the last `probes` ids are kept for the freshness probes.
struct Shoppers {
    stores: usize,
    sellable: u32,
}

impl Shoppers {
    fn shops_at(&self, id: u32, store: usize) -> bool {
        let home = (id as usize / 10) % self.stores;
        if id.is_multiple_of(10) {
            (0..3).any(|k| (home + k) % self.stores == store)
        } else {
            id as usize % self.stores == store
        }
    }
    fn pick(&self, store: usize, rng: &mut impl Rng) -> u32 {
        loop {
            let id = rng.random_range(1..=self.sellable);
            if self.shops_at(id, store) {
                return id;
            }
        }
    }
}

fn points_for(store: usize, stores: usize, m: usize) -> i64 {
    (store + 1 + (stores + 1) * m) as i64
}

fn store_of(delta: i64, stores: usize) -> Option<usize> {
    let r = (delta.unsigned_abs() as usize) % (stores + 1);
    (r >= 1).then(|| r - 1)
}

const STEADY: u8 = 0;
const OUTAGE: u8 = 1;
const DRAIN: u8 = 2;
const STOP: u8 = 3;

#[allow(clippy::too_many_arguments)]
async fn sell(
    http: &reqwest::Client,
    a: &Agent,
    store: usize,
    stores: usize,
    customer: u32,
    redeem: bool,
    n: usize,
    m: usize,
) -> Option<Sale> {
    let p = points_for(store, stores, m);
    let txn_id = format!("f{store}-{n}");
    let (kind, delta) = if redeem { ("redeem", -p) } else { ("earn", p) };
    let r = http
        .post(format!("{}/v1/transactions", a.url))
        .bearer_auth(&a.token)
        .json(&json!({"txn_id": txn_id, "customer_id": customer.to_string(), "kind": kind, "points": p}))
        .send()
        .await
        .ok()?;
    (r.status().as_u16() == 201).then(|| Sale {
        txn_id,
        customer: customer.to_string(),
        delta,
    })
}

fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

fn jain(x: &[f64]) -> Option<f64> {
    let s: f64 = x.iter().sum();
    let s2: f64 = x.iter().map(|v| v * v).sum();
    (s2 > 0.0).then(|| s * s / (x.len() as f64 * s2))
}

/// The agents' requests (every `User-Agent` starting `pointsd/`) summed, from `a` to `b`.
fn delta(a: &BTreeMap<String, AgentCounts>, b: &BTreeMap<String, AgentCounts>) -> AgentCounts {
    let mut d = AgentCounts::default();
    for (k, v) in b.iter().filter(|(k, _)| k.starts_with("pointsd/")) {
        let z = AgentCounts::default();
        let u = a.get(k).unwrap_or(&z);
        d.reads += v.reads - u.reads;
        d.writes += v.writes - u.writes;
        d.tokens += v.tokens - u.tokens;
        d.feed += v.feed - u.feed;
        d.throttled += v.throttled - u.throttled;
        d.throttled_writes += v.throttled_writes - u.throttled_writes;
    }
    d
}

fn share_429(d: &AgentCounts) -> Option<f64> {
    let n = d.reads + d.writes;
    (n > 0).then(|| d.throttled as f64 / n as f64)
}

/// 429s among write requests alone (the drain's own cost, undiluted by reads).
fn share_429_writes(d: &AgentCounts) -> Option<f64> {
    (d.writes > 0).then(|| d.throttled_writes as f64 / d.writes as f64)
}

struct Probe {
    online: bool,
    marked_s: Option<f64>,
    reread_s: Option<f64>,
    /// The watching store's answers carried `changed_elsewhere_at` at all.
    field_seen: bool,
}

/// A change at store A (or the online shop) for a probe customer, then store B polled
/// until it marks the customer changed and shows the new balance.
#[allow(clippy::too_many_arguments)]
async fn probe(
    http: reqwest::Client,
    sim: SimHandle,
    agents: Arc<Vec<Agent>>,
    sales: Arc<Vec<Mutex<Vec<Sale>>>>,
    phase: Arc<AtomicU8>,
    customer: u32,
    online: bool,
    a: usize,
    b: usize,
    n: usize,
) -> Option<Probe> {
    let stores = agents.len();
    let id = customer.to_string();
    let before = sim.balance(&id)?;
    let t0 = if online {
        sim.online_change(&id, 7).ok()?;
        Instant::now()
    } else {
        let s = sell(
            &http,
            &agents[a],
            a,
            stores,
            customer,
            false,
            1_000_000 + n,
            1,
        )
        .await?;
        sales[a].lock().unwrap().push(s);
        let t = Instant::now();
        loop {
            if sim.balance(&id) != Some(before) {
                break Instant::now();
            }
            if t.elapsed() > Duration::from_secs(120) || phase.load(Ordering::Relaxed) != STEADY {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let expected = sim.balance(&id)?;
    let mut p = Probe {
        online,
        marked_s: None,
        reread_s: None,
        field_seen: false,
    };
    while phase.load(Ordering::Relaxed) == STEADY {
        if let Some(v) = get(&http, &agents[b], &format!("/v1/customers/{id}")).await {
            let now = t0.elapsed().as_secs_f64();
            if let Some(f) = v.get("changed_elsewhere_at") {
                p.field_seen = true;
                if p.marked_s.is_none() && f.is_string() {
                    p.marked_s = Some(now);
                }
            }
            if p.reread_s.is_none() && v["balance"]["available"].as_i64() == Some(expected) {
                p.reread_s = Some(now);
                // Showing the new balance is knowing of the change: a cashier's look-up
                // re-reads a marked customer at once, so the mark itself is seldom seen.
                p.marked_s.get_or_insert(now);
            }
            if p.reread_s.is_some() && (p.marked_s.is_some() || !p.field_seen) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Some(p)
}

struct Row {
    measure: String,
    value: String,
    goal: String,
    /// None: not measurable with this agent (n/a).
    met: Option<bool>,
}

fn row(measure: impl Into<String>, value: impl Into<String>, goal: &str, met: Option<bool>) -> Row {
    Row {
        measure: measure.into(),
        value: value.into(),
        goal: goal.into(),
        met,
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn secs(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.1} s"))
}

pub async fn run(bin: &Path, out_dir: &Path, o: FleetOpts) {
    let work = out_dir.join("fleet-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let http = pointsd::http_client_builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .build()
        .unwrap();
    let k = o.stores;
    eprintln!(
        "fleet: {k} stores, {} customers, limits {READS_PER_S} reads/s {WRITES_PER_S} writes/s, steady {} min, outage {} min, new keys {}",
        o.customers, o.minutes, o.outage_minutes, o.new_keys
    );
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = SimHandle::start(
        any,
        any,
        SimOptions {
            customers: o.customers,
            ..SimOptions::default()
        }
        .production_limits(),
    )
    .await
    .expect("simulator starts");
    let probes_n = (o.customers / 10).min(200);
    let shoppers = Arc::new(Shoppers {
        stores: k,
        sellable: o.customers - probes_n,
    });

    // First fills.
    let t_start = Instant::now();
    let mut agents = Vec::new();
    for s in 0..k {
        agents.push(start_agent(bin, &work, &sim, s, &o, &http).await);
    }
    let agents = Arc::new(agents);
    let mut filled: Vec<Option<f64>> = vec![None; k];
    let fill_limit = Duration::from_secs_f64(o.fill_minutes * 60.0);
    while filled.iter().any(Option::is_none) && t_start.elapsed() < fill_limit {
        for (s, a) in agents.iter().enumerate() {
            if filled[s].is_none()
                && let Some(v) = get(&http, a, "/v1/status").await
                && v["cache"]["last_full_refresh_at"].is_string()
            {
                filled[s] = Some(t_start.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let n_filled = filled.iter().flatten().count();
    let mut fill_times: Vec<f64> = filled.iter().flatten().copied().collect();
    eprintln!(
        "first fill: {n_filled} of {k} stores within {:.0} s",
        t_start.elapsed().as_secs_f64()
    );

    // Steady phase: registers, the online shop, freshness probes; 10% of answers dropped.
    sim.set_faults(Faults {
        drop_after_apply_rate: o.drop_rate,
        ..Faults::default()
    });
    let phase = Arc::new(AtomicU8::new(STEADY));
    let sales: Arc<Vec<Mutex<Vec<Sale>>>> =
        Arc::new((0..k).map(|_| Mutex::new(Vec::new())).collect());
    let mut registers = Vec::new();
    for s in 0..k {
        let (http, agents, sales, phase, shoppers) = (
            http.clone(),
            agents.clone(),
            sales.clone(),
            phase.clone(),
            shoppers.clone(),
        );
        let every = Duration::from_secs_f64(60.0 / o.sales_per_minute.max(0.01));
        let every_outage = Duration::from_secs_f64(60.0 / o.outage_sales_per_minute.max(0.01));
        registers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(s as u64);
            // Spread the registers' first sales over one interval.
            tokio::time::sleep(every.mul_f64(rng.random_range(0.0..1.0))).await;
            let mut n = 0;
            while phase.load(Ordering::Relaxed) != STOP {
                let c = shoppers.pick(s, &mut rng);
                let redeem = rng.random_bool(0.2);
                if let Some(sale) = sell(
                    &http,
                    &agents[s],
                    s,
                    k,
                    c,
                    redeem,
                    n,
                    rng.random_range(0..4),
                )
                .await
                {
                    sales[s].lock().unwrap().push(sale);
                }
                n += 1;
                let gap = if phase.load(Ordering::Relaxed) == OUTAGE {
                    every_outage
                } else {
                    every
                };
                tokio::time::sleep(gap.mul_f64(rng.random_range(0.5..1.5))).await;
            }
        }));
    }
    let online = {
        let (sim, phase, shoppers) = (sim.clone(), phase.clone(), shoppers.clone());
        let every = Duration::from_secs_f64(60.0 / o.online_per_minute.max(0.01));
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0x0171e);
            let mut n = 0u64;
            while phase.load(Ordering::Relaxed) != STOP {
                let c = rng.random_range(1..=shoppers.sellable).to_string();
                let d = if rng.random_bool(0.7) {
                    rng.random_range(1..50)
                } else {
                    -rng.random_range(1..20)
                };
                n += sim.online_change(&c, d).is_ok() as u64;
                tokio::time::sleep(every).await;
            }
            n
        })
    };
    let t_steady = Instant::now();
    let counts_steady0 = sim.requests_by_agent();
    let mut probe_tasks = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e0be);
    let steady = Duration::from_secs_f64(o.minutes * 60.0);
    let mut n = 0usize;
    while t_steady.elapsed() < steady {
        let customer = o.customers - (n as u32 % probes_n);
        let a = rng.random_range(0..k);
        let b = (a + rng.random_range(1..k)) % k;
        probe_tasks.push(tokio::spawn(probe(
            http.clone(),
            sim.clone(),
            agents.clone(),
            sales.clone(),
            phase.clone(),
            customer,
            n.is_multiple_of(2),
            a,
            b,
            n,
        )));
        n += 1;
        tokio::time::sleep(PROBE_EVERY).await;
    }
    let steady_s = t_steady.elapsed().as_secs_f64();
    let counts_steady1 = sim.requests_by_agent();
    let steady_rss = total_rss_kib(&agents);
    let steady_d = delta(&counts_steady0, &counts_steady1);
    let agent_names = counts_steady1
        .keys()
        .filter(|k| k.starts_with("pointsd/"))
        .count();

    // Outage of every store's link; the registers keep selling.
    phase.store(OUTAGE, Ordering::Relaxed);
    let mut probes: Vec<Probe> = Vec::new();
    for t in probe_tasks {
        if let Ok(Some(p)) = t.await {
            probes.push(p);
        }
    }
    sim.set_faults(Faults {
        refuse: true,
        drop_after_apply_rate: o.drop_rate,
        ..Faults::default()
    });
    eprintln!("outage for {} min", o.outage_minutes);
    tokio::time::sleep(Duration::from_secs_f64(o.outage_minutes * 60.0)).await;
    let mut backlog = Vec::new();
    for a in agents.iter() {
        backlog.push(
            get(&http, a, "/v1/status")
                .await
                .map_or(0, |v| open_queue(&v)),
        );
    }
    eprintln!(
        "backlog at the end of the outage: {} in all",
        backlog.iter().sum::<i64>()
    );

    // Recovery: the drain.
    phase.store(DRAIN, Ordering::Relaxed);
    let counts_drain0 = sim.requests_by_agent();
    let adds0 = sim.adds().len();
    sim.set_faults(Faults {
        drop_after_apply_rate: o.drop_rate,
        ..Faults::default()
    });
    let t_restore = Instant::now();
    let restore_ms = pointsd_now_ms();
    let mut emptied: Vec<Option<f64>> = vec![None; k];
    let mut peak_rss = 0;
    let drain_limit = Duration::from_secs(1800);
    while emptied.iter().any(Option::is_none) && t_restore.elapsed() < drain_limit {
        peak_rss = peak_rss.max(total_rss_kib(&agents));
        for (s, a) in agents.iter().enumerate() {
            if emptied[s].is_none()
                && let Some(v) = get(&http, a, "/v1/status").await
                && open_queue(&v) == 0
            {
                emptied[s] = Some(t_restore.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain_s = t_restore.elapsed().as_secs_f64();
    let counts_drain1 = sim.requests_by_agent();
    let drain_d = delta(&counts_drain0, &counts_drain1);
    // Stores that had a backlog when the link came back (the others were empty at once).
    let backlogged: Vec<usize> = (0..k).filter(|&s| backlog[s] > 0).collect();
    let first_empty = backlogged
        .iter()
        .filter_map(|&s| emptied[s])
        .fold(f64::INFINITY, f64::min);
    let all_drained = emptied.iter().all(Option::is_some);

    // Stop selling; let everything settle; then check every acknowledged sale.
    phase.store(STOP, Ordering::Relaxed);
    for r in registers {
        let _ = r.await;
    }
    let online_changes = online.await.unwrap_or(0);
    sim.set_faults(Faults::default());
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(600) {
        let mut open = 0;
        for a in agents.iter() {
            open += get(&http, a, "/v1/status")
                .await
                .map_or(1, |v| open_queue(&v));
        }
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let adds = sim.adds();
    // Writes while every store had a backlog: from the restore to the first store emptied.
    let window_ms = if first_empty.is_finite() {
        (first_empty * 1000.0) as i64
    } else {
        (drain_s * 1000.0) as i64
    };
    let mut per_store = vec![0f64; k];
    let mut in_window = 0usize;
    for a in &adds[adds0..] {
        if a.at_ms >= restore_ms && a.at_ms <= restore_ms + window_ms {
            in_window += 1;
            if let Some(s) = store_of(a.delta, k).filter(|&s| s < k) {
                per_store[s] += 1.0;
            }
        }
    }
    let window_s = (window_ms as f64 / 1000.0).max(0.001);
    let drain_wps = in_window as f64 / window_s;
    let fairness = jain(&backlogged.iter().map(|&s| per_store[s]).collect::<Vec<_>>());

    // Lost, duplicated, out of order: per store and customer, what the store says it applied
    // (in the order the register sold) against what the contract applied (in its order).
    let mut states: HashMap<String, usize> = HashMap::new();
    let mut sure: BTreeMap<(usize, String), Vec<i64>> = BTreeMap::new();
    let mut maybe: BTreeMap<(usize, String), Vec<i64>> = BTreeMap::new();
    for (s, a) in agents.iter().enumerate() {
        let list = sales[s].lock().unwrap().clone();
        for sale in list {
            let st = get(&http, a, &format!("/v1/transactions/{}", sale.txn_id))
                .await
                .and_then(|v| v["state"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            *states.entry(st.clone()).or_default() += 1;
            let key = (s, sale.customer.clone());
            match st.as_str() {
                "applied" => sure.entry(key).or_default().push(sale.delta),
                "rejected" | "discarded" => {}
                _ => maybe.entry(key).or_default().push(sale.delta),
            }
        }
    }
    let mut upstream: BTreeMap<(usize, String), Vec<i64>> = BTreeMap::new();
    let mut unattributed = 0;
    for a in &adds {
        match store_of(a.delta, k).filter(|&s| s < k) {
            Some(s) => upstream
                .entry((s, a.customer_id.clone()))
                .or_default()
                .push(a.delta),
            None => unattributed += 1,
        }
    }
    let (mut lost, mut dup, mut out_of_order) = (0usize, 0usize, 0usize);
    let keys: std::collections::BTreeSet<_> = sure.keys().chain(upstream.keys()).cloned().collect();
    for key in keys {
        let want = sure.get(&key).cloned().unwrap_or_default();
        let mut got = upstream.get(&key).cloned().unwrap_or_default();
        let mut maybe = maybe.get(&key).cloned().unwrap_or_default();
        // Matched in order: what is left of `want` is lost, of `got` duplicated.
        let mut matched = Vec::new();
        for d in &want {
            if let Some(i) = got.iter().position(|g| g == d) {
                matched.push(i);
                got[i] = i64::MIN;
            } else {
                lost += 1;
            }
        }
        if matched.windows(2).any(|w| w[0] > w[1]) {
            out_of_order += 1;
        }
        for g in got.into_iter().filter(|&g| g != i64::MIN) {
            // An add the store has not settled (ambiguous, needs_review) is not a duplicate.
            if let Some(i) = maybe.iter().position(|m| *m == g) {
                maybe.remove(i);
            } else {
                dup += 1;
            }
        }
    }
    let mut needs_review = 0;
    for a in agents.iter() {
        needs_review += get(&http, a, "/v1/status")
            .await
            .map_or(0, |v| v["queue"]["needs_review"].as_i64().unwrap_or(0));
    }
    let final_rss = total_rss_kib(&agents);

    // Freshness.
    let mut marked: Vec<f64> = probes.iter().filter_map(|p| p.marked_s).collect();
    let mut reread: Vec<f64> = probes.iter().filter_map(|p| p.reread_s).collect();
    let field_seen = probes.iter().any(|p| p.field_seen);
    let probes_online = probes.iter().filter(|p| p.online).count();

    // The table.
    let minutes = steady_s / 60.0;
    let reads_pspm = steady_d.reads as f64 / k as f64 / minutes;
    let this_size = json!({"customers": o.customers, "stores": k, "reads_per_store_per_minute": reads_pspm, "new_keys": o.new_keys});
    std::fs::create_dir_all(out_dir).unwrap();
    std::fs::write(
        out_dir.join(format!("fleet-c{}.json", o.customers)),
        serde_json::to_string_pretty(&this_size).unwrap(),
    )
    .unwrap();
    let other_c = if o.customers == 20_000 {
        200_000
    } else {
        20_000
    };
    let other: Option<f64> = std::fs::read(out_dir.join(format!("fleet-c{other_c}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|v| v["stores"] == json!(k))
        .and_then(|v| v["reads_per_store_per_minute"].as_f64());
    let mut rows = Vec::new();
    let (r20, r200) = if o.customers == 20_000 {
        (Some(reads_pspm), other)
    } else if o.customers == 200_000 {
        (other, Some(reads_pspm))
    } else {
        (None, None)
    };
    rows.push(row(
        "steady-state reads per store per minute, C = 20,000 / C = 200,000",
        match (r20, r200) {
            (None, None) => format!(
                "{reads_pspm:.1} at C = {} (run at 20,000 and 200,000 to compare)",
                o.customers
            ),
            _ => format!(
                "{} / {}",
                r20.map_or("n/a (run with --customers 20000)".into(), |v| format!(
                    "{v:.1}"
                )),
                r200.map_or("n/a (run with --customers 200000)".into(), |v| format!(
                    "{v:.1}"
                ))
            ),
        },
        "the same at both sizes",
        match (r20, r200) {
            (Some(a), Some(b)) => Some((a - b).abs() <= 0.2 * a.max(b).max(1.0)),
            _ => None,
        },
    ));
    let feed_share = steady_d.feed as f64 / steady_s / READS_PER_S as f64;
    rows.push(if steady_d.feed == 0 {
        row(
            "change-feed polling of the fleet, share of the read limit",
            "n/a (no change-feed requests: the agent does not poll the feed yet)",
            "≤ 10%",
            None,
        )
    } else {
        row(
            "change-feed polling of the fleet, share of the read limit",
            pct(feed_share),
            "≤ 10%",
            Some(feed_share <= 0.10),
        )
    });
    let m50 = percentile(&mut marked, 50.0);
    let m99 = percentile(&mut marked, 99.0);
    let r50 = percentile(&mut reread, 50.0);
    let r99 = percentile(&mut reread, 99.0);
    let pull_s = if o.new_keys {
        PULL_INTERVAL_S as f64
    } else {
        300.0
    };
    rows.push(row(
        "cross-store freshness, marked (or already showing the new balance) p50 / p99",
        if field_seen {
            format!(
                "{} / {} ({} of {} probes)",
                secs(m50),
                secs(m99),
                marked.len(),
                probes.len()
            )
        } else {
            "n/a (answers carry no changed_elsewhere_at yet)".into()
        },
        "p99 ≤ 2 × pull_interval_s",
        (field_seen && !marked.is_empty())
            .then(|| m99.unwrap_or(f64::INFINITY) <= 2.0 * pull_s && marked.len() == probes.len()),
    ));
    rows.push(row(
        "cross-store freshness, re-read (new balance shown) p50 / p99",
        format!(
            "{} / {} ({} of {} probes within the run; {} online, {} from a store)",
            secs(r50),
            secs(r99),
            reread.len(),
            probes.len(),
            probes_online,
            probes.len() - probes_online
        ),
        "reported against N × R",
        None,
    ));
    rows.push(row(
        format!("drain after the fleet-wide outage: writes/s while every store had a backlog ({window_s:.0} s)"),
        format!("{drain_wps:.1}/s = {:.2}× the limit", drain_wps / WRITES_PER_S as f64),
        "≥ 0.85× of 20/s",
        Some(drain_wps / WRITES_PER_S as f64 >= 0.85),
    ));
    rows.push(row(
        format!(
            "fairness of the drain (Jain's index of per-store writes, {} stores with a backlog)",
            backlogged.len()
        ),
        fairness.map_or("n/a (nothing drained)".into(), |j| format!("{j:.3}")),
        "≥ 0.9",
        fairness.map(|j| j >= 0.9),
    ));
    let (q_s, q_d) = (share_429(&steady_d), share_429(&drain_d));
    rows.push(row(
        "429s, share of requests, steady / drain",
        format!(
            "{} / {} (writes alone: {} / {})",
            q_s.map_or("n/a".into(), pct),
            q_d.map_or("n/a".into(), pct),
            share_429_writes(&steady_d).map_or("n/a".into(), pct),
            share_429_writes(&drain_d).map_or("n/a".into(), pct)
        ),
        "< 1% / < 5%",
        Some(q_s.unwrap_or(0.0) < 0.01 && q_d.unwrap_or(0.0) < 0.05),
    ));
    rows.push(row(
        "lost / duplicated / out of order",
        format!("{lost} / {dup} / {out_of_order}"),
        "0 / 0 / 0",
        Some(lost == 0 && dup == 0 && out_of_order == 0 && all_drained),
    ));
    rows.push(row(
        format!(
            "needs_review, cross-store customers, {}% apply-then-drop",
            (o.drop_rate * 100.0).round()
        ),
        format!("{needs_review} (this build)"),
        "reported, lower after the multi-writer read-back",
        None,
    ));
    rows.push(row(
        format!("total RSS of the {k} agents"),
        format!(
            "{:.0} MiB steady, {:.0} MiB peak in the drain, {:.0} MiB at the end",
            steady_rss as f64 / 1024.0,
            peak_rss as f64 / 1024.0,
            final_rss as f64 / 1024.0
        ),
        "reported",
        None,
    ));

    println!("\n| measure | value | goal | met |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.measure,
            r.value,
            r.goal,
            r.met.map_or("n/a", |m| if m { "yes" } else { "no" })
        );
    }
    let doc = json!({
        "at_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        "machine": {"cores": std::thread::available_parallelism().map_or(1, |n| n.get())},
        "params": {"stores": k, "customers": o.customers, "steady_minutes": o.minutes, "outage_minutes": o.outage_minutes,
                   "sales_per_minute_per_store": o.sales_per_minute, "outage_sales_per_minute_per_store": o.outage_sales_per_minute, "online_per_minute": o.online_per_minute,
                   "drop_after_apply_rate": o.drop_rate, "new_keys": o.new_keys, "read_limit": READS_PER_S, "write_limit": WRITES_PER_S},
        "rows": rows.iter().map(|r| json!({"measure": r.measure, "value": r.value, "goal": r.goal, "met": r.met})).collect::<Vec<_>>(),
        "details": {
            "first_fill": {"stores_filled": n_filled, "p50_s": percentile(&mut fill_times, 50.0), "max_s": fill_times.last()},
            "steady": {"seconds": steady_s, "requests": steady_d, "user_agents": agent_names, "reads_per_store_per_minute": reads_pspm},
            "outage_backlog": backlog,
            "drain": {"seconds_until_all_empty": drain_s, "all_drained": all_drained, "first_store_empty_s": first_empty.is_finite().then_some(first_empty),
                      "writes_in_window": in_window, "window_s": window_s, "per_store_writes": per_store, "requests": drain_d},
            "freshness": {"probes": probes.len(), "marked_s": marked, "reread_s": reread, "changed_elsewhere_at_seen": field_seen},
            "sales_states": states, "unattributed_adds": unattributed, "adds": adds.len(), "online_changes": online_changes,
            "lost": lost, "duplicated": dup, "out_of_order": out_of_order, "needs_review": needs_review,
            "rss_kib": {"steady": steady_rss, "drain_peak": peak_rss, "end": final_rss},
        },
    });
    let text = serde_json::to_string_pretty(&doc).unwrap();
    std::fs::write(out_dir.join("fleet.json"), &text).unwrap();
    eprintln!("results: {}", out_dir.join("fleet.json").display());
    drop(agents);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&work);
}

fn pointsd_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
