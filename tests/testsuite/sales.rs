use crate::common;

// Sales and returns end to end (issue 14, DESIGN.md §10): a real daemon on loopback against the
// simulator, checked as a register would notice: figures, balances, statuses, the adds the
// simulator applied (one per sale, the returns' net deltas), replays, offline returns synced
// later, shortfalls, and a restart between a sale and its return.

use std::time::Duration;

use common::{MANAGER_TOKEN, TestDaemon, adds_for, set_faults, start_sim, test_config};
use pointsd::config::Config;
use pointsd::sim::SimHandle;
use serde_json::{Value, json};

struct Env {
    sim: SimHandle,
    d: TestDaemon,
    dir: tempfile::TempDir,
}

async fn setup(tweak: impl FnOnce(&mut Config)) -> Env {
    let sim = start_sim(50).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&sim, "store-sales");
    tweak(&mut c);
    let d = TestDaemon::start(c, dir.path().to_path_buf(), true).await;
    Env { sim, d, dir }
}

impl Env {
    /// A sample customer whose simulator balance satisfies `pred`, skipping `not`.
    fn pick(&self, not: &[&str], pred: impl Fn(i64) -> bool) -> String {
        (1..=50)
            .map(|i| i.to_string())
            .find(|id| !not.contains(&id.as_str()) && pred(self.sim.balance(id).unwrap()))
            .expect("a sample customer fits")
    }

    async fn sale(&self, id: &str, customer: &str, amount: i64, used: i64) -> (u16, Value) {
        self.d
            .post(
                "/v1/sales",
                &json!({"sale_id": id, "customer_id": customer, "amount": amount, "points_used": used}),
            )
            .await
    }

    async fn ret(&self, id: &str, sale: &str, amount: Option<i64>) -> (u16, Value) {
        let mut b = json!({"return_id": id, "sale_id": sale});
        if let Some(a) = amount {
            b["amount"] = json!(a);
        }
        self.d.post("/v1/returns", &b).await
    }

    async fn finish(mut self) {
        self.d.stop().await;
        self.sim.shutdown().await;
    }
}

async fn go_offline(env: &Env) {
    set_faults(&env.sim, |f| f.refuse = true);
    env.d
        .wait_for("the link to drop", Duration::from_secs(15), |s| {
            s["online"] == json!(false)
        })
        .await;
}

async fn go_online(env: &Env) {
    set_faults(&env.sim, |f| f.refuse = false);
    env.d
        .wait_for("the link to come back", Duration::from_secs(15), |s| {
            s["online"] == json!(true)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_with_points_is_one_upstream_add_and_replays_are_the_first_answer() {
    let env = setup(|_| {}).await;
    let c = env.pick(&[], |b| b >= 500);
    let b0 = env.sim.balance(&c).unwrap();

    // The quote shows the figures and writes nothing.
    let (s, q) = env
        .d
        .post(
            "/v1/sales/quote",
            &json!({"customer_id": c, "amount": 3000, "points_used": 200}),
        )
        .await;
    assert_eq!(s, 200, "{q:#}");
    // 3000 yen less 200 yen paid with points earns on 2800: 28 points; net −172.
    assert_eq!(
        (q["points_earned"].clone(), q["net_delta"].clone()),
        (json!(28), json!(-172)),
        "{q:#}"
    );
    assert_eq!(q["balance_after"]["available"], json!(b0 - 172), "{q:#}");
    let rules: Vec<&str> = q["applied_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"earn.basis"), "{rules:?}");
    assert!(env.sim.adds().is_empty(), "a quote writes nothing");

    let (s, v) = env.sale("s-1", &c, 3000, 200).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("confirmed"), "{v:#}");
    assert_eq!(v["state"], json!("applied"), "{v:#}");
    assert_eq!(
        (
            v["points_used"].clone(),
            v["points_earned"].clone(),
            v["net_delta"].clone()
        ),
        (json!(200), json!(28), json!(-172)),
        "{v:#}"
    );
    assert_eq!(v["balance"]["available"], json!(b0 - 172), "{v:#}");
    assert_eq!(v["applied_rules"], q["applied_rules"]);
    assert_eq!(adds_for(&env.sim, &c), vec![-172], "one add for the sale");
    assert_eq!(env.sim.balance(&c), Some(b0 - 172));

    // Same id, same body: the first answer; another body: a conflict. Nothing more upstream.
    let (s, r) = env.sale("s-1", &c, 3000, 200).await;
    assert_eq!(s, 200, "{r:#}");
    assert_eq!(r["net_delta"], v["net_delta"]);
    assert_eq!(r["balance"]["available"], json!(b0 - 172));
    let (s, r) = env.sale("s-1", &c, 3000, 0).await;
    assert_eq!(
        (s, r["code"].clone()),
        (409, json!("idempotency_conflict")),
        "{r:#}"
    );
    // The Idempotency-Key header names a sale as well.
    let r = env
        .d
        .http
        .post(format!("{}/v1/sales", env.d.url))
        .bearer_auth(common::REGISTER_TOKEN)
        .header("Idempotency-Key", "s-2")
        .json(&json!({"customer_id": c, "amount": 99}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v2: Value = r.json().await.unwrap();
    // 99 yen earns nothing: a net of zero needs no upstream call, and is confirmed at once.
    assert_eq!(
        (
            v2["sale_id"].clone(),
            v2["net_delta"].clone(),
            v2["status"].clone()
        ),
        (json!("s-2"), json!(0), json!("confirmed")),
        "{v2:#}"
    );
    assert_eq!(adds_for(&env.sim, &c), vec![-172]);

    // The sale shows in the transaction list as one 'sale' row with its net delta.
    let (s, t) = env.d.get("/v1/transactions/sale:s-1").await;
    assert_eq!(s, 200, "{t:#}");
    assert_eq!(
        (t["kind"].clone(), t["delta"].clone()),
        (json!("sale"), json!(-172))
    );

    let (s, g) = env.d.get("/v1/sales/s-1").await;
    assert_eq!(s, 200, "{g:#}");
    assert_eq!(g["returnable_amount"], json!(3000), "{g:#}");
    assert_eq!(g["returns"], json!([]));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_rule_or_the_field_and_change_nothing() {
    let env = setup(|c| {
        c.spend.min_points = 100;
        c.spend.unit = 10;
        c.spend.max_share = 0.5;
    })
    .await;
    let c = env.pick(&[], |b| (300..2000).contains(&b));
    let b0 = env.sim.balance(&c).unwrap();
    for (used, amount, rule) in [
        (50, 1000, "spend.min_points"),
        (105, 1000, "spend.unit"),
        (600, 1000, "spend.max_share"),
    ] {
        for path in ["/v1/sales", "/v1/sales/quote"] {
            let mut body = json!({"customer_id": c, "amount": amount, "points_used": used});
            if path == "/v1/sales" {
                body["sale_id"] = json!("bad");
            }
            let (s, v) = env.d.post(path, &body).await;
            assert_eq!(s, 422, "{path} {used}: {v:#}");
            assert_eq!(v["code"], json!("spend_rule"), "{v:#}");
            assert_eq!(v["rule"], json!(rule), "{v:#}");
            assert_eq!(v["errors"][0]["field"], json!("points_used"), "{v:#}");
        }
    }
    // More than available: 409 insufficient_points.
    let (s, v) = env.sale("bad", &c, 100_000, b0 + 10 - (b0 % 10)).await;
    assert_eq!(
        (s, v["code"].clone()),
        (409, json!("insufficient_points")),
        "{v:#}"
    );
    // Bad fields, all named at once.
    let (s, v) = env
        .d
        .post(
            "/v1/sales",
            &json!({"customer_id": c, "amount": -5, "points_used": "3", "extra": 1}),
        )
        .await;
    assert_eq!(s, 422, "{v:#}");
    assert_eq!(v["errors"][0]["field"], json!("extra"), "{v:#}");
    let (s, v) = env
        .d
        .post(
            "/v1/sales",
            &json!({"customer_id": c, "amount": -5, "points_used": "3"}),
        )
        .await;
    assert_eq!(s, 422, "{v:#}");
    let named: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["sale_id", "amount", "points_used"] {
        assert!(named.contains(&f), "{f} in {named:?}");
    }
    let (s, v) = env.sale("s-x", "no-such-customer", 1000, 0).await;
    assert_eq!(s, 404, "{v:#}");
    // Nothing was written.
    let (s, v) = env.d.get("/v1/sales/bad").await;
    assert_eq!(
        (s, v["code"].clone()),
        (404, json!("unknown_sale")),
        "{v:#}"
    );
    assert!(env.sim.adds().is_empty());
    assert_eq!(env.d.available(&c).await, b0);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_returns_follow_the_cumulative_rule_and_a_full_return_restores_the_balance() {
    let env = setup(|_| {}).await;
    let c = env.pick(&[], |b| b >= 1000);
    let b0 = env.sim.balance(&c).unwrap();
    // 1000 yen, 100 points used: 900 yen earns 9; net −91.
    let (s, v) = env.sale("s-r", &c, 1000, 100).await;
    assert_eq!((s, v["net_delta"].clone()), (201, json!(-91)), "{v:#}");

    // Three parts: after 333, 666 and 1000 yen, floor(9·R/1000) and floor(100·R/1000).
    let mut seen = Vec::new();
    for (id, amount, take, give) in [
        ("r-1", Some(333), 2, 33),
        ("r-2", Some(333), 3, 33),
        ("r-3", None, 4, 34),
    ] {
        let (s, v) = env.ret(id, "s-r", amount).await;
        assert_eq!(s, 201, "{v:#}");
        assert_eq!(v["points_taken_back"], json!(take), "{id}: {v:#}");
        assert_eq!(v["points_given_back"], json!(give), "{id}: {v:#}");
        assert_eq!(v["net_delta"], json!(give - take), "{id}: {v:#}");
        assert_eq!(v["shortfall"], json!(0), "{id}: {v:#}");
        assert_eq!(v["status"], json!("confirmed"), "{v:#}");
        seen.push(give - take);
    }
    assert_eq!(env.ret("r-2", "s-r", Some(333)).await.0, 200, "a replay");
    let (s, v) = env.ret("r-4", "s-r", Some(1)).await;
    assert_eq!(
        (s, v["code"].clone()),
        (409, json!("return_exceeds_sale")),
        "{v:#}"
    );
    let (s, v) = env.ret("r-5", "no-such-sale", None).await;
    assert_eq!(
        (s, v["code"].clone()),
        (404, json!("unknown_sale")),
        "{v:#}"
    );

    let mut want = vec![-91];
    want.extend(seen);
    assert_eq!(
        adds_for(&env.sim, &c),
        want,
        "one add per sale and per return"
    );
    assert_eq!(
        env.sim.balance(&c),
        Some(b0),
        "a full return restores the balance"
    );
    assert_eq!(env.d.available(&c).await, b0);

    let (_, g) = env.d.get("/v1/sales/s-r").await;
    assert_eq!(g["returnable_amount"], json!(0), "{g:#}");
    assert_eq!(g["returned_amount"], json!(1000), "{g:#}");
    assert_eq!(
        (
            g["points_taken_back"].clone(),
            g["points_given_back"].clone()
        ),
        (json!(9), json!(100))
    );
    assert_eq!(g["returns"].as_array().unwrap().len(), 3);

    // The outbox rows carry their split: the list, filtered by customer, and one row.
    let (s, l) = env
        .d
        .get(&format!("/v1/transactions?customer_id={c}"))
        .await;
    assert_eq!(s, 200, "{l:#}");
    let rows = l["transactions"].as_array().unwrap();
    let sale = rows.iter().find(|t| t["kind"] == json!("sale")).unwrap();
    assert_eq!(
        sale["split"],
        json!({"sale_id": "s-r", "amount": 1000, "points_used": 100, "points_earned": 9, "net_delta": -91}),
        "{sale:#}"
    );
    let returns: Vec<&Value> = rows
        .iter()
        .filter(|t| t["kind"] == json!("return"))
        .collect();
    assert_eq!(returns.len(), 3, "{l:#}");
    for r in &returns {
        assert_eq!(r["split"]["sale_id"], json!("s-r"), "{r:#}");
        assert_eq!(r["split"]["net_delta"], r["delta"], "{r:#}");
    }
    let (s, one) = env.d.get("/v1/transactions/return:r-3").await;
    assert_eq!(s, 200, "{one:#}");
    assert_eq!(
        one["split"],
        json!({"sale_id": "s-r", "return_id": "r-3", "amount": 334, "points_taken_back": 4,
               "points_given_back": 34, "shortfall": 0, "net_delta": 30}),
        "{one:#}"
    );
    let (_, st) = env.d.get("/v1/status").await;
    assert_eq!(
        (
            st["sales"]["points_used"].clone(),
            st["sales"]["points_earned"].clone(),
            st["sales"]["points_taken_back"].clone(),
            st["sales"]["points_given_back"].clone()
        ),
        (json!(100), json!(9), json!(9), json!(100)),
        "{:#}",
        st["sales"]
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_sales_and_returns_queue_and_sync_later_exactly_once() {
    let env = setup(|_| {}).await;
    let c = env.pick(&[], |b| b >= 500);
    let b0 = env.sim.balance(&c).unwrap();
    // Sold online, returned in the middle of an outage.
    let (s, v) = env.sale("on-1", &c, 5000, 0).await;
    assert_eq!((s, v["net_delta"].clone()), (201, json!(50)), "{v:#}");
    go_offline(&env).await;
    let (s, v) = env.ret("off-r-1", "on-1", Some(2000)).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(
        (v["status"].clone(), v["net_delta"].clone()),
        (json!("queued"), json!(-20)),
        "{v:#}"
    );
    // An offline sale with points; its replay is the same answer.
    let (s, v) = env.sale("off-1", &c, 2000, 300).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(
        (v["status"].clone(), v["net_delta"].clone()),
        (json!("queued"), json!(-283)),
        "{v:#}"
    );
    assert_eq!(
        v["balance"]["available"],
        json!(b0 + 50 - 20 - 283),
        "{v:#}"
    );
    assert_eq!(env.sale("off-1", &c, 2000, 300).await.0, 200);
    let (s, v) = env.ret("off-r-2", "off-1", None).await;
    assert_eq!((s, v["net_delta"].clone()), (201, json!(283)), "{v:#}");
    assert_eq!(
        adds_for(&env.sim, &c),
        vec![50],
        "nothing sent while offline"
    );

    go_online(&env).await;
    env.d.wait_drained(Duration::from_secs(15)).await;
    assert_eq!(
        adds_for(&env.sim, &c),
        vec![50, -20, -283, 283],
        "in order, once each"
    );
    assert_eq!(env.sim.balance(&c), Some(b0 + 50 - 20));
    let (_, g) = env.d.get("/v1/sales/off-1").await;
    assert_eq!(g["state"], json!("applied"), "{g:#}");
    assert_eq!(g["returns"][0]["state"], json!("applied"), "{g:#}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_takes_back_only_what_is_left_and_records_the_shortfall() {
    let env = setup(|_| {}).await;
    let c = env.pick(&[], |b| b == 0 || (1..100).contains(&b));
    let b0 = env.sim.balance(&c).unwrap();
    // 10000 yen earns 100; the customer spends everything afterwards.
    assert_eq!(env.sale("sf", &c, 10_000, 0).await.0, 201);
    let (s, v) = env.d.redeem("spend-all", &c, b0 + 100).await;
    assert_eq!(s, 201, "{v:#}");
    // A return of half is due 50 points back; the customer has none: all shortfall.
    let (s, v) = env.ret("sf-r1", "sf", Some(5000)).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(
        (
            v["points_taken_back"].clone(),
            v["shortfall"].clone(),
            v["net_delta"].clone()
        ),
        (json!(0), json!(50), json!(0)),
        "{v:#}"
    );
    assert_eq!(v["balance"]["available"], json!(0), "never below zero");
    // The customer earns 30 elsewhere-in-this-store; the rest of the return takes those 30.
    assert_eq!(env.d.earn("e30", &c, 30).await.0, 201);
    let (s, v) = env.ret("sf-r2", "sf", None).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(
        (v["points_taken_back"].clone(), v["shortfall"].clone()),
        (json!(30), json!(20)),
        "{v:#}"
    );
    assert_eq!(v["balance"]["available"], json!(0));
    let (_, g) = env.d.get("/v1/sales/sf").await;
    assert_eq!(g["shortfall"], json!(70), "{g:#}");
    env.d.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(env.sim.balance(&c), Some(0));
    let s = env.d.status().await;
    assert_eq!(s["sales"]["shortfall_points"], json!(70), "{s:#}");
    let m = env.d.metrics_text().await;
    assert_eq!(
        common::metric(&m, "pointsd_return_shortfall_points", None),
        Some(70.0),
        "{m}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_back_refused_upstream_becomes_what_the_upstream_has_plus_shortfall() {
    let env = setup(|_| {}).await;
    let c = env.pick(&[], |b| (1..100).contains(&b));
    let b0 = env.sim.balance(&c).unwrap();
    assert_eq!(env.sale("up", &c, 20_000, 0).await.0, 201); // +200
    // Another store spends all but 40 of it upstream; this cache does not know yet.
    env.sim.add_elsewhere(&c, -(b0 + 160));
    let (s, v) = env.ret("up-r", "up", None).await;
    assert_eq!(s, 201, "{v:#}");
    env.d.wait_drained(Duration::from_secs(15)).await;
    let (_, g) = env.d.get("/v1/sales/up").await;
    let r = &g["returns"][0];
    assert_eq!(r["state"], json!("applied"), "{g:#}");
    let taken = r["points_taken_back"].as_i64().unwrap();
    let short = r["shortfall"].as_i64().unwrap();
    assert_eq!(taken + short, 200, "{g:#}");
    assert!(short > 0, "{g:#}");
    assert!(env.sim.balance(&c).unwrap() >= 0);
    assert_eq!(env.sim.balance(&c), Some(40 - taken), "{g:#}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_a_sale_and_its_return_keeps_the_sale() {
    let mut env = setup(|_| {}).await;
    let c = env.pick(&[], |b| b >= 200);
    let b0 = env.sim.balance(&c).unwrap();
    go_offline(&env).await;
    assert_eq!(env.sale("k-1", &c, 4000, 100).await.0, 201); // 39 − 100 = −61
    let config = env.d.config.clone();
    env.d.stop().await;
    set_faults(&env.sim, |f| f.refuse = false);
    env.d = TestDaemon::start(config, env.dir.path().to_path_buf(), true).await;
    env.d.wait_drained(Duration::from_secs(15)).await;
    let (s, v) = env.ret("k-r", "k-1", None).await;
    assert_eq!((s, v["net_delta"].clone()), (201, json!(61)), "{v:#}");
    env.d.wait_drained(Duration::from_secs(15)).await;
    assert_eq!(adds_for(&env.sim, &c), vec![-61, 61]);
    assert_eq!(env.sim.balance(&c), Some(b0));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_of_a_sale_made_elsewhere_needs_a_manager_and_the_receipt() {
    let env = setup(|_| {}).await;
    let c = env.pick(&[], |b| b >= 100);
    let b0 = env.sim.balance(&c).unwrap();
    let body = json!({"return_id": "x-1", "customer_id": c, "amount": 2000, "points_earned": 20, "points_used": 50});
    let (s, v) = env.d.post("/v1/returns", &body).await;
    assert_eq!(
        (s, v["code"].clone()),
        (403, json!("forbidden_for_role")),
        "{v:#}"
    );
    let (s, v) = env.d.post_as("/v1/returns", MANAGER_TOKEN, &body).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(
        (
            v["points_taken_back"].clone(),
            v["points_given_back"].clone(),
            v["net_delta"].clone()
        ),
        (json!(20), json!(50), json!(30)),
        "{v:#}"
    );
    assert_eq!(
        adds_for(&env.sim, &c),
        vec![30],
        "only the return goes upstream"
    );
    assert_eq!(env.sim.balance(&c), Some(b0 + 30));
    env.finish().await;
}
