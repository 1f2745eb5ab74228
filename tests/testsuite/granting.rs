//! The register is the other granter (issue 25, DESIGN.md §14): `[earn] granted_by = "auto"`
//! reads the store's point conditions from Smaregi and keeps them; where the register grants,
//! pointsd refuses purchase earns and its sales earn nothing; `doctor` fails the mixed setting;
//! register sales (uploaded late too) reach another store's cache through the change feed.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use pointsd::config::{Config, GrantedBy};
use pointsd::sim::{RegisterKind, RegisterSale, SimHandle};
use serde_json::{Value, json};

struct Env {
    sim: SimHandle,
    d: TestDaemon,
    dir: tempfile::TempDir,
}

async fn setup(sim: SimHandle, wait_online: bool, tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&sim, "store-granting");
    tweak(&mut c);
    let d = TestDaemon::start(c, dir.path().to_path_buf(), wait_online).await;
    Env { sim, d, dir }
}

impl Env {
    fn pick(&self, pred: impl Fn(i64) -> bool) -> String {
        (1..=50)
            .map(|i| i.to_string())
            .find(|id| pred(self.sim.balance(id).unwrap()))
            .expect("a sample customer fits")
    }

    async fn granting(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.d
            .wait_for(what, Duration::from_secs(15), |s| pred(&s["granting"]))
            .await["granting"]
            .clone()
    }

    async fn finish(mut self) {
        self.d.stop().await;
        self.sim.shutdown().await;
    }
}

fn store_1(c: &mut Config) {
    c.agent.smaregi_store_id = Some("1".into());
}

/// Store 1's point conditions are on (`pointUseDivision = "1"`): the register grants. A
/// purchase earn is refused naming the setting and writes nothing; an earn given as points
/// still works; a sale records the points used and earns none; its return gives back the used
/// points only. The reading survives a restart with the upstream down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reads_the_store_and_where_the_register_grants_pointsd_grants_nothing() {
    let env = setup(start_sim(50).await, true, store_1).await;
    let g = env
        .granting("the store read from Smaregi", |g| g["source"] == "smaregi")
        .await;
    assert_eq!(g["granted_by"], "register", "{g}");
    assert_eq!(g["setting"], "auto", "{g}");
    assert_eq!(g["store_points_on"], true, "{g}");
    assert!(g["read_at"].is_string(), "{g}");
    assert!(g["warning"].is_null(), "{g}");

    let id = env.pick(|b| b >= 100);
    let before = env.sim.balance(&id).unwrap();
    let adds = env.sim.adds().len();

    // A purchase earn: 409 naming the setting, nothing written.
    let (s, v) = env
        .d
        .post(
            "/v1/transactions",
            &json!({"txn_id": "g-earn-1", "customer_id": id, "kind": "earn", "purchase_amount": 5000}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["code"], "granted_by_register", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("granted_by"), "{v}");
    let (s, v) = env.d.get("/v1/transactions/g-earn-1").await;
    assert_eq!(s, 404, "nothing written: {v}");
    // The same key is free for a valid request afterwards: an earn given as points.
    let (s, v) = env.d.earn("g-earn-1", &id, 5).await;
    assert_eq!(s, 201, "{v}");
    env.d.wait_drained(Duration::from_secs(20)).await;
    assert_eq!(env.sim.balance(&id), Some(before + 5));

    // The quote and the sale: points used recorded, none earned, earned_by register.
    let (s, q) = env
        .d
        .post(
            "/v1/sales/quote",
            &json!({"customer_id": id, "amount": 3000, "points_used": 10}),
        )
        .await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(
        (q["points_earned"].as_i64(), q["earned_by"].as_str()),
        (Some(0), Some("register")),
        "{q}"
    );
    let (s, v) = env
        .d
        .post(
            "/v1/sales",
            &json!({"sale_id": "g-sale-1", "customer_id": id, "amount": 3000, "points_used": 10}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["points_earned"], 0, "{v}");
    assert_eq!(v["points_used"], 10, "{v}");
    assert_eq!(v["net_delta"], -10, "{v}");
    assert_eq!(v["earned_by"], "register", "{v}");
    env.d.wait_drained(Duration::from_secs(20)).await;
    assert_eq!(env.sim.balance(&id), Some(before + 5 - 10));

    // The return gives back the points used only (the register takes back its own grant).
    let (s, r) = env
        .d
        .post(
            "/v1/returns",
            &json!({"return_id": "g-ret-1", "sale_id": "g-sale-1"}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(
        (
            r["points_taken_back"].as_i64(),
            r["points_given_back"].as_i64()
        ),
        (Some(0), Some(10)),
        "{r}"
    );
    env.d.wait_drained(Duration::from_secs(20)).await;
    assert_eq!(env.sim.balance(&id), Some(before + 5));
    // Two sends of ours (the gift, the sale's use) and the return: nothing for the refusal.
    assert_eq!(env.sim.adds().len(), adds + 3);

    // The mode holds across a restart with Smaregi unreachable (kept in the database).
    let Env { sim, mut d, dir } = env;
    let read_at = d.status().await["granting"]["read_at"].clone();
    d.stop().await;
    set_faults(&sim, |f| f.refuse = true);
    let mut c = test_config(&sim, "store-granting");
    store_1(&mut c);
    let d = TestDaemon::start(c, dir.path().to_path_buf(), false).await;
    let g = d.status().await["granting"].clone();
    assert_eq!(
        (g["granted_by"].as_str(), g["source"].as_str()),
        (Some("register"), Some("smaregi")),
        "{g}"
    );
    assert_eq!(g["read_at"], read_at, "{g}");
    let (s, v) = d
        .post(
            "/v1/transactions",
            &json!({"txn_id": "g-earn-2", "customer_id": id, "kind": "earn", "purchase_amount": 5000}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("granted_by_register")),
        "{v}"
    );
    set_faults(&sim, |f| f.refuse = false);
    Env { sim, d, dir }.finish().await;
}

/// Store 1's points switched off in Smaregi: pointsd grants, as today.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_with_the_stores_points_off_lets_pointsd_grant() {
    let sim = start_sim(50).await;
    sim.set_store_points(1, false);
    let env = setup(sim, true, store_1).await;
    let g = env
        .granting("the store read from Smaregi", |g| g["source"] == "smaregi")
        .await;
    assert_eq!(g["granted_by"], "pointsd", "{g}");
    assert_eq!(g["store_points_on"], false, "{g}");
    let id = env.pick(|b| b >= 0);
    let before = env.sim.balance(&id).unwrap();
    let (s, v) = env
        .d
        .post(
            "/v1/transactions",
            &json!({"txn_id": "p-earn-1", "customer_id": id, "kind": "earn", "purchase_amount": 5000}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = env
        .d
        .post(
            "/v1/sales",
            &json!({"sale_id": "p-sale-1", "customer_id": id, "amount": 3000}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["points_earned"].as_i64(), v["earned_by"].as_str()),
        (Some(30), Some("pointsd")),
        "{v}"
    );
    env.d.wait_drained(Duration::from_secs(20)).await;
    assert_eq!(env.sim.balance(&id), Some(before + 50 + 30));
    env.finish().await;
}

/// Without `agent.smaregi_store_id`, `auto` cannot ask: pointsd grants as before, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_a_store_id_keeps_todays_behaviour_and_says_it_is_unchecked() {
    let env = setup(start_sim(50).await, true, |_| {}).await;
    let g = env.d.status().await["granting"].clone();
    assert_eq!(
        (g["granted_by"].as_str(), g["source"].as_str()),
        (Some("pointsd"), Some("unchecked")),
        "{g}"
    );
    assert!(g["read_at"].is_null(), "{g}");
    assert!(
        g["warning"]
            .as_str()
            .unwrap()
            .contains("agent.smaregi_store_id"),
        "{g}"
    );
    let (s, v) = env
        .d
        .post(
            "/v1/transactions",
            &json!({"txn_id": "u-earn-1", "customer_id": "1", "kind": "earn", "purchase_amount": 1000}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    env.finish().await;
}

/// A store id never read (first start offline): behave as if the register grants, and say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_never_read_counts_as_the_register_granting() {
    let sim = start_sim(50).await;
    set_faults(&sim, |f| f.refuse = true);
    let env = setup(sim, false, store_1).await;
    let g = env.d.status().await["granting"].clone();
    assert_eq!(
        (g["granted_by"].as_str(), g["source"].as_str()),
        (Some("register"), Some("unchecked")),
        "{g}"
    );
    assert!(g["read_at"].is_null(), "{g}");
    assert!(g["warning"].as_str().unwrap().contains("never read"), "{g}");
    let (s, v) = env
        .d
        .post(
            "/v1/transactions",
            &json!({"txn_id": "n-earn-1", "customer_id": "1", "kind": "earn", "purchase_amount": 1000}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("granted_by_register")),
        "{v}"
    );
    // Once Smaregi answers (the retry comes within a minute; here the store's points are off),
    // the mode follows it.
    env.sim.set_store_points(1, false);
    set_faults(&env.sim, |f| f.refuse = false);
    env.finish().await;
}

/// `granted_by = "pointsd"` where Smaregi says the store's points are on: status carries the
/// warning, and `doctor` FAILs with the sentence a manager needs and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_and_status_warns_when_both_would_grant() {
    let env = setup(start_sim(50).await, true, |c| {
        store_1(c);
        c.earn.granted_by = GrantedBy::Pointsd;
    })
    .await;
    let both = "the register and pointsd would both grant points for every sale";
    let g = env
        .granting("the store read from Smaregi", |g| {
            g["store_points_on"] == true
        })
        .await;
    assert_eq!(g["both_grant"], true, "{g}");
    assert_eq!(g["source"], "config", "{g}");
    assert!(g["warning"].as_str().unwrap().contains(both), "{g}");

    // The real binary's doctor, against the same simulator.
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        "{}\n",
        smaregi_upstream(&env.sim.url(), "sim-secret", 2_000)
    );
    const AGENT: &str = "[agent]\nsmaregi_store_id = \"1\"\n";
    let agent = AGENT;
    let doctor = |granted_by: &'static str, agent_extra: &'static str| {
        let cfg = dir
            .path()
            .join(format!("{granted_by}-{}.toml", agent_extra.len()));
        std::fs::write(
            &cfg,
            format!(
                "{agent_extra}store_id = \"store-doctor\"\n[api]\nlisten = \"127.0.0.1:{}\"\n[[api.tokens]]\nname = \"register-1\"\ntoken = \"{REGISTER_TOKEN}\"\n[earn]\ngranted_by = \"{granted_by}\"\n{rest}",
                free_port()
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let data = dir.path().join(format!("data-{granted_by}"));
        // The doctor blocks; the simulator it asks runs on this runtime.
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
                .args(["doctor", "--config"])
                .arg(&cfg)
                .arg("--data-dir")
                .arg(&data)
                .env_remove("HTTPS_PROXY")
                .env_remove("https_proxy")
                .env_remove("HTTP_PROXY")
                .env_remove("http_proxy")
                .env_remove("ALL_PROXY")
                .env_remove("all_proxy")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string(),
            )
        })
    };
    let (code, text) = doctor("pointsd", agent).await.unwrap();
    assert_ne!(code, Some(0), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("granting"))
        .unwrap_or_else(|| panic!("no granting FAIL:\n{text}"));
    assert!(line.contains(both), "{line}");
    assert!(line.contains("granted_by = \"auto\""), "the fix: {line}");

    // auto with the store id: OK, the register grants.
    let (code, text) = doctor("auto", agent).await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("OK")
            && l.contains("granting")
            && l.contains("the Smaregi register grants")),
        "{text}"
    );
    // auto without a store id: a WARN naming the key.
    let (_, text) = doctor("auto", "[agent]\n").await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("WARN")
            && l.contains("granting")
            && l.contains("agent.smaregi_store_id")),
        "{text}"
    );
    env.finish().await;
}

/// A register sale at another store — rung up online, or offline two days ago and uploaded
/// now — reaches this store's cache through the change feed within twice its interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_sales_reach_the_cache_within_twice_the_feed_interval_late_uploads_too() {
    let interval_s = 10;
    let env = setup(start_sim(50).await, true, |c| {
        store_1(c);
        c.sync.pull_interval_s = interval_s;
        // Look-ups answer from the cache here: only the feed can bring the change.
        c.api.lookup_refresh_after_s = 86_400;
    })
    .await;
    env.d
        .wait_for("the first feed poll", Duration::from_secs(15), |s| {
            s["feed"]["last_poll_at"].is_string()
        })
        .await;
    let limit = Duration::from_secs(2 * interval_s);
    let mut seen = Vec::new();
    for (n, (ago_ms, kind)) in [
        (0, RegisterKind::Sale),
        (2 * 86_400_000, RegisterKind::Sale),
        (3_600_000, RegisterKind::Return),
    ]
    .into_iter()
    .enumerate()
    {
        let id = (10 + n).to_string();
        let before = env.sim.balance(&id).unwrap();
        let (new_point, spend_point) = if kind == RegisterKind::Return {
            (0, 5)
        } else {
            (25, 0)
        };
        let t = env
            .sim
            .register_sale(&RegisterSale {
                store_id: 2,
                customer_id: id.clone(),
                new_point,
                spend_point,
                sold_ms_ago: ago_ms,
                kind,
            })
            .expect("the register sale lands");
        let after = env.sim.balance(&id).unwrap();
        assert_ne!(before, after);
        let start = Instant::now();
        loop {
            let (s, v) = env.d.get(&format!("/v1/customers/{id}")).await;
            assert_eq!(s, 200, "{v}");
            if v["changed_elsewhere_at"].is_string() || v["balance"]["confirmed"] == json!(after) {
                break;
            }
            assert!(
                start.elapsed() < limit + Duration::from_millis(500),
                "register sale {} (rung up {} s before its upload) not seen within {limit:?}: {v:#}",
                t.transaction_head_id,
                ago_ms / 1000
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen.push(start.elapsed());
    }
    eprintln!("register sales seen after {seen:?} (feed interval {interval_s} s)");
    env.finish().await;
}

/// A register sale that earned close to a purchase grant through pointsd, and one that used
/// points close to a redeem through pointsd, are listed as possible double counts with both
/// records — in the API (manager only), `/metrics`, `status` and `pointsd reconcile --doubles`
/// (exit 2). A gift earn, a sale rung up two days before its upload, and our own point adds
/// are never listed. Nothing is corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_grants_and_double_uses_are_listed_never_corrected() {
    let env = setup(start_sim(50).await, true, |c| {
        // This store's points are off in Smaregi (pointsd grants); store 2's register grants.
        c.agent.smaregi_store_id = Some("4".into());
        c.sync.pull_interval_s = 10;
    })
    .await;
    env.granting("the store read from Smaregi", |g| g["source"] == "smaregi")
        .await;
    let ids: Vec<String> = (1..=50)
        .map(|i| i.to_string())
        .filter(|id| env.sim.balance(id).unwrap() >= 50)
        .take(4)
        .collect();
    let [a, b, c, late] = [&ids[0], &ids[1], &ids[2], &ids[3]];
    let txn = |id: &str, customer: &str, kind: &str, field: &str, n: i64| json!({"txn_id": id, "customer_id": customer, "kind": kind, field: n});
    for (body, what) in [
        (
            txn("d-earn-a", a, "earn", "purchase_amount", 3000),
            "purchase earn",
        ),
        (txn("d-redeem-b", b, "redeem", "points", 20), "redeem"),
        (txn("d-gift-c", c, "earn", "points", 5), "gift"),
        (
            txn("d-earn-late", late, "earn", "purchase_amount", 1000),
            "earn",
        ),
    ] {
        let (s, v) = env.d.post("/v1/transactions", &body).await;
        assert_eq!(s, 201, "{what}: {v}");
    }
    env.d.wait_drained(Duration::from_secs(20)).await;
    let balances: Vec<i64> = ids.iter().map(|id| env.sim.balance(id).unwrap()).collect();
    let sale = |customer: &String, new_point, spend_point, sold_ms_ago| RegisterSale {
        store_id: 2,
        customer_id: customer.clone(),
        new_point,
        spend_point,
        sold_ms_ago,
        kind: RegisterKind::Sale,
    };
    for r in [
        sale(a, 30, 0, 0),
        sale(b, 0, 20, 0),
        sale(c, 10, 0, 0),
        sale(late, 10, 0, 2 * 86_400_000),
    ] {
        env.sim.register_sale(&r).expect("the register sale lands");
    }
    let st = env
        .d
        .wait_for(
            "the feed to find the doubles",
            Duration::from_secs(40),
            |s| s["possible_double_counts"] == json!(2),
        )
        .await;
    assert_eq!(st["possible_double_counts"], 2, "{st}");

    let (s, v) = env.d.get("/v1/reconcile/doubles").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("forbidden_for_role")),
        "{v}"
    );
    let (s, v) = env
        .d
        .get_as("/v1/reconcile/doubles", Some(MANAGER_TOKEN))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["window_s"], 600, "{v}");
    let list = v["doubles"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v:#}");
    let find = |kind: &str| {
        list.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} double: {v:#}"))
    };
    let e = find("earn");
    assert_eq!(
        (e["customer_id"].as_str(), e["pointsd"]["id"].as_str()),
        (Some(a.as_str()), Some("d-earn-a")),
        "{e}"
    );
    assert_eq!(
        (
            e["register"]["points"].as_i64(),
            e["pointsd"]["points"].as_i64()
        ),
        (Some(30), Some(30)),
        "{e}"
    );
    assert_eq!(e["register"]["store_id"], "2", "{e}");
    let u = find("use");
    assert_eq!(
        (u["customer_id"].as_str(), u["pointsd"]["id"].as_str()),
        (Some(b.as_str()), Some("d-redeem-b")),
        "{u}"
    );
    assert_eq!(
        (
            u["register"]["points"].as_i64(),
            u["pointsd"]["points"].as_i64()
        ),
        (Some(20), Some(20)),
        "{u}"
    );
    // Our own point adds are never taken for register sales.
    let own: Vec<String> = env
        .sim
        .adds()
        .iter()
        .map(|x| x.transaction_head_id.to_string())
        .collect();
    assert!(
        list.iter().all(|d| !own.contains(
            &d["register"]["transaction_head_id"]
                .as_str()
                .unwrap()
                .to_string()
        )),
        "{v:#}"
    );

    let m = env.d.metrics_text().await;
    assert_eq!(
        metric(&m, "pointsd_possible_double_counts", None),
        Some(2.0),
        "{m}"
    );

    // The CLI: exit 2 with both listed.
    let d = &env.d;
    let url = d.url.clone();
    let none = env.dir.path().join("none.toml");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
            .args([
                "reconcile",
                "--doubles",
                "--url",
                &url,
                "--token",
                MANAGER_TOKEN,
            ])
            .env("POINTSD_CONFIG", none)
            .env_remove("POINTSD_URL")
            .env_remove("POINTSD_TOKEN")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2 possible double count(s)") && text.contains("d-earn-a"),
        "{text}"
    );
    let (url, none) = (env.d.url.clone(), env.dir.path().join("none.toml"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
            .args(["status", "--url", &url, "--token", REGISTER_TOKEN])
            .env("POINTSD_CONFIG", none)
            .env_remove("POINTSD_URL")
            .env_remove("POINTSD_TOKEN")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("POSSIBLE DOUBLE COUNTS: 2"), "{text}");
    assert!(text.contains("granting: pointsd"), "{text}");

    // Nothing was corrected: no add beyond our four sends.
    let now: Vec<i64> = ids.iter().map(|id| env.sim.balance(id).unwrap()).collect();
    let register: Vec<i64> = vec![30, -20, 10, 10];
    for i in 0..4 {
        assert_eq!(now[i], balances[i] + register[i], "customer {}", ids[i]);
    }
    assert_eq!(env.sim.adds().len(), 4);
    env.finish().await;
}
