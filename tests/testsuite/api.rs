use crate::common;

// The local HTTP API end to end: a real daemon on loopback talking to the simulator over real
// HTTP, checked the way a register (or its developer) would notice: statuses, balances, states
// and problem+json bodies (DESIGN.md §2 invariants 4, 6, 7; §5 failure classes).

use std::time::Duration;

use common::{MANAGER_TOKEN, REGISTER_TOKEN, TestDaemon, set_faults, start_sim, test_config};
use pointsd::sim::SimHandle;
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{Value, json};

/// One simulator, one daemon (online, full cache) and the daemon's data dir.
struct Env {
    sim: SimHandle,
    d: TestDaemon,
    _dir: tempfile::TempDir,
}

async fn setup(customers: u32) -> Env {
    let sim = start_sim(customers).await;
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(
        test_config(&sim, "store-api"),
        dir.path().to_path_buf(),
        true,
    )
    .await;
    Env { sim, d, _dir: dir }
}

impl Env {
    async fn finish(mut self) {
        self.d.stop().await;
        self.sim.shutdown().await;
    }

    /// The first customer (by id, 1..=n) whose simulator balance satisfies `pred`, skipping `not`.
    fn pick(&self, n: u32, not: &[&str], pred: impl Fn(i64) -> bool) -> String {
        (1..=n)
            .map(|i| i.to_string())
            .find(|id| !not.contains(&id.as_str()) && pred(self.sim.balance(id).unwrap()))
            .expect("the sample customers include one that fits")
    }

    /// The deltas the simulator applied for one customer, in order.
    fn adds_for(&self, customer: &str) -> Vec<i64> {
        common::adds_for(&self.sim, customer)
    }

    async fn customer(&self, id: &str) -> Value {
        let (s, v) = self.d.get(&format!("/v1/customers/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn txn(&self, txn_id: &str) -> Value {
        let (s, v) = self.d.get(&format!("/v1/transactions/{txn_id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn list(&self, query: &str) -> Vec<Value> {
        let (s, v) = self.d.get(&format!("/v1/transactions{query}")).await;
        assert_eq!(s, 200, "{v}");
        v["transactions"].as_array().expect("a list").clone()
    }

    /// POSTs a raw body (anything, not necessarily JSON) as a register.
    async fn post_raw(&self, body: impl Into<reqwest::Body>) -> Answer {
        call(
            self.d
                .http
                .post(format!("{}/v1/transactions", self.d.url))
                .bearer_auth(REGISTER_TOKEN)
                .header(CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }
}

/// A whole HTTP answer: status, the headers that matter here, and the body as JSON (or a
/// JSON string holding the text when it is not JSON).
struct Answer {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    body: Value,
}

async fn call(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.expect("daemon answers");
    let status = r.status().as_u16();
    let header = |name| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let www_authenticate = header(WWW_AUTHENTICATE);
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        content_type,
        www_authenticate,
        body,
    }
}

/// Asserts an RFC 9457 problem with this status and code; returns the body.
fn assert_problem(a: &Answer, status: u16, code: &str) -> Value {
    assert_eq!(a.status, status, "{}", a.body);
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "content-type {:?} for {}",
        a.content_type,
        a.body
    );
    check_problem_body(&a.body, status, code);
    a.body.clone()
}

/// The problem+json body itself, for answers read through the fixture (no headers there).
fn check_problem_body(body: &Value, status: u16, code: &str) {
    assert_eq!(body["status"], json!(status), "{body}");
    assert_eq!(body["code"], json!(code), "{body}");
    assert!(body["title"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert!(body["type"].is_string(), "{body}");
}

/// The `errors[].field` names of a validation problem.
fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    assert!(
                        e["message"].is_string(),
                        "every error says the rule: {body}"
                    );
                    e["field"].as_str().unwrap().to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn tier_for(available: i64) -> Value {
    if available >= 5000 {
        json!("Gold")
    } else if available >= 1000 {
        json!("Silver")
    } else {
        Value::Null
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Auth
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_and_every_other_route_needs_a_known_token() {
    let env = setup(20).await;
    let d = &env.d;

    let a = call(d.http.get(format!("{}/v1/health", d.url))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, json!({"status": "ok"}));

    let earn = json!({"txn_id": "auth-1", "customer_id": "1", "kind": "earn", "points": 10});
    let routes: [(&str, &str); 7] = [
        ("GET", "/v1/status"),
        ("GET", "/v1/customers/1"),
        ("GET", "/v1/customers?code=M000001"),
        ("GET", "/v1/transactions"),
        ("POST", "/v1/transactions"),
        ("GET", "/v1/transactions/x"),
        ("GET", "/metrics"),
    ];
    let sim_before = env.sim.balance("1");
    // Failed sign-ins are throttled per address: each probe comes from its own loopback
    // address, so this checks the 401s and not the throttle.
    let next = std::cell::Cell::new(10u8);
    let client = || {
        next.set(next.get() + 1);
        pointsd::http_client_builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from([127, 0, 0, next.get()]))
            .build()
            .unwrap()
    };
    for (method, path) in routes {
        for token in [None, Some("wrong-token-0123456789"), Some("")] {
            let url = format!("{}{path}", d.url);
            let mut rb = match method {
                "GET" => client().get(url),
                _ => client().post(url).json(&earn),
            };
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            let a = call(rb).await;
            assert_problem(&a, 401, "unauthorized");
            assert_eq!(
                a.www_authenticate.as_deref(),
                Some("Bearer"),
                "{method} {path} with token {token:?}"
            );
        }
        // Another scheme carrying a valid token is not a bearer token either.
        let url = format!("{}{path}", d.url);
        let rb = match method {
            "GET" => client().get(url),
            _ => client().post(url).json(&earn),
        };
        let a = call(rb.header("Authorization", format!("Basic {REGISTER_TOKEN}"))).await;
        assert_problem(&a, 401, "unauthorized");
    }

    // The refused POSTs wrote nothing.
    assert!(env.list("").await.is_empty());
    assert!(env.sim.adds().is_empty());
    assert_eq!(env.sim.balance("1"), sim_before);
    let (s, _) = d.get("/v1/transactions/auth-1").await;
    assert_eq!(s, 404);

    // Both configured tokens work.
    let (s, _) = d.get_as("/v1/status", Some(REGISTER_TOKEN)).await;
    assert_eq!(s, 200);
    let (s, _) = d.get_as("/v1/status", Some(MANAGER_TOKEN)).await;
    assert_eq!(s, 200);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_are_problems_too() {
    let env = setup(5).await;
    let d = &env.d;
    let a = call(
        d.http
            .get(format!("{}/v2/nothing", d.url))
            .bearer_auth(REGISTER_TOKEN),
    )
    .await;
    assert_problem(&a, 404, "not_found");
    let a = call(
        d.http
            .delete(format!("{}/v1/transactions", d.url))
            .bearer_auth(REGISTER_TOKEN),
    )
    .await;
    assert_problem(&a, 405, "method_not_allowed");
    let a = call(
        d.http
            .put(format!("{}/v1/customers/1", d.url))
            .bearer_auth(REGISTER_TOKEN)
            .json(&json!({"points": 1_000_000})),
    )
    .await;
    assert_problem(&a, 405, "method_not_allowed");
    assert!(env.sim.adds().is_empty());
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Status
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_link_queue_and_cache() {
    let env = setup(37).await;
    let s = env.d.status().await;
    assert_eq!(s["online"], json!(true), "{s:#}");
    assert_eq!(s["store_id"], json!("store-api"));
    assert!(s["version"].is_string(), "{s:#}");

    let up = &s["upstream"];
    assert_eq!(up["kind"], json!("smaregi"), "{s:#}");
    assert!(up["last_ok_at"].is_string(), "{s:#}");
    assert!(up.get("last_error").is_some(), "{s:#}");

    let q = &s["queue"];
    for k in ["pending", "sending", "needs_review", "rejected"] {
        assert_eq!(q[k], json!(0), "queue.{k}: {s:#}");
    }
    assert!(q.get("oldest_pending_age_s").is_some(), "{s:#}");
    assert!(q["oldest_pending_age_s"].is_null(), "{s:#}");

    assert_eq!(s["cache"]["customers"], json!(37), "{s:#}");
    assert!(s["cache"]["last_full_refresh_at"].is_string(), "{s:#}");
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Customer look-ups
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_lookups_by_id_code_barcode_and_q() {
    let env = setup(200).await;
    let d = &env.d;
    let sc = env.sim.customer("1").unwrap();
    let sim_balance = env.sim.balance("1").unwrap();

    let c = env.customer("1").await;
    assert_eq!(c["customer_id"], json!("1"), "{c:#}");
    assert_eq!(c["code"], json!("M000001"), "{c:#}");
    assert_eq!(c["barcode"], json!(sc.barcode), "{c:#}");
    assert!(c["name"].is_string(), "{c:#}");
    assert_eq!(c["balance"]["available"], json!(sim_balance), "{c:#}");
    assert_eq!(c["balance"]["confirmed"], json!(sim_balance), "{c:#}");
    assert_eq!(c["balance"]["pending"], json!(0), "{c:#}");
    assert_eq!(c["online"], json!(true), "{c:#}");
    assert_eq!(c["stale"], json!(false), "{c:#}");
    assert!(c["as_of"].is_string(), "{c:#}");
    assert_eq!(c["tier"], tier_for(sim_balance), "{c:#}");

    for q in [
        "code=M000001".to_string(),
        format!("barcode={}", sc.barcode),
        "q=1".to_string(),
        "q=M000001".to_string(),
        format!("q={}", sc.barcode),
        format!("q=%20{}%20", sc.barcode), // a scan with stray spaces
    ] {
        let (s, v) = d.get(&format!("/v1/customers?{q}")).await;
        assert_eq!(s, 200, "?{q}: {v}");
        assert_eq!(v["customer_id"], json!("1"), "?{q}: {v}");
        assert_eq!(v["balance"]["available"], json!(sim_balance), "?{q}: {v}");
    }

    // Unknown customers: 404 problems.
    for path in [
        "/v1/customers/99999",
        "/v1/customers?code=M999999",
        "/v1/customers?barcode=2000000999990",
        "/v1/customers?q=nobody",
    ] {
        let a = call(
            d.http
                .get(format!("{}{path}", d.url))
                .bearer_auth(REGISTER_TOKEN),
        )
        .await;
        assert_problem(&a, 404, "not_found");
    }

    // More than one way of looking up at once: 422 naming what is wrong.
    for q in [
        format!("code=M000001&barcode={}", sc.barcode),
        "code=M000001&q=1".to_string(),
    ] {
        let a = call(
            d.http
                .get(format!("{}/v1/customers?{q}", d.url))
                .bearer_auth(REGISTER_TOKEN),
        )
        .await;
        let p = assert_problem(&a, 422, "validation");
        let f = fields(&p);
        assert!(
            f.iter()
                .any(|f| ["code", "barcode", "q", "(query)"].contains(&f.as_str())),
            "?{q}: {p:#}"
        );
    }
    // No way of looking up at all, or a malformed id.
    for path in ["/v1/customers", "/v1/customers?code=has%20space"] {
        let a = call(
            d.http
                .get(format!("{}{path}", d.url))
                .bearer_auth(REGISTER_TOKEN),
        )
        .await;
        let p = assert_problem(&a, 422, "validation");
        assert!(!fields(&p).is_empty(), "{path}: {p:#}");
    }

    // Tiers follow the configured thresholds (Silver ≥ 1000, Gold ≥ 5000); walk the sample
    // until every band has been seen.
    let mut seen = [false; 3];
    for i in 1..=200 {
        let id = i.to_string();
        let c = env.customer(&id).await;
        let avail = c["balance"]["available"].as_i64().unwrap();
        assert_eq!(Some(avail), env.sim.balance(&id), "{c:#}");
        assert_eq!(c["tier"], tier_for(avail), "{c:#}");
        seen[match avail {
            ..1000 => 0,
            1000..5000 => 1,
            _ => 2,
        }] = true;
        if seen.iter().all(|s| *s) {
            break;
        }
    }
    assert_eq!(
        seen, [true; 3],
        "the sample has customers in every tier band"
    );
    env.finish().await;
}

/// An unknown query parameter is named in `errors[].field`, as an unknown body field is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_are_named_in_errors() {
    let env = setup(5).await;
    let d = &env.d;
    for path in [
        "/v1/customers?code=M000001&colour=red",
        "/v1/customers?colour=red",
        "/v1/transactions?colour=red",
    ] {
        let a = call(
            d.http
                .get(format!("{}{path}", d.url))
                .bearer_auth(REGISTER_TOKEN),
        )
        .await;
        let p = assert_problem(&a, 422, "validation");
        assert_eq!(fields(&p), vec!["colour".to_string()], "{path}: {p:#}");
    }
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Writes while online
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_writes_are_confirmed_and_move_the_upstream_balance() {
    let env = setup(50).await;
    let d = &env.d;
    let c = env.pick(50, &[], |b| b >= 1000);
    let s0 = env.sim.balance(&c).unwrap();
    assert_eq!(d.available(&c).await, s0);

    // earn
    let (s, v) = d.earn("on-earn-1", &c, 100).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["txn_id"], json!("on-earn-1"));
    assert_eq!(v["status"], json!("confirmed"), "{v:#}");
    assert_eq!(v["state"], json!("applied"), "{v:#}");
    assert_eq!(v["kind"], json!("earn"));
    assert_eq!(v["delta"], json!(100));
    assert_eq!(v["customer_id"], json!(c));
    assert_eq!(v["balance"]["available"], json!(s0 + 100), "{v:#}");
    assert_eq!(v["balance"]["pending"], json!(0), "{v:#}");
    assert_eq!(v["upstream_balance"], json!(s0 + 100), "{v:#}");
    assert_eq!(v["customer"]["customer_id"], json!(c));
    assert_eq!(env.sim.balance(&c), Some(s0 + 100));

    // redeem
    let (s, v) = d.redeem("on-redeem-1", &c, 30).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("confirmed"), "{v:#}");
    assert_eq!(v["state"], json!("applied"), "{v:#}");
    assert_eq!(v["delta"], json!(-30));
    assert_eq!(v["balance"]["available"], json!(s0 + 70), "{v:#}");
    assert_eq!(env.sim.balance(&c), Some(s0 + 70));

    // adjust down, with a reason
    let (s, v) = d
        .post_as(
            "/v1/transactions",
            MANAGER_TOKEN,
            &json!({"txn_id": "on-adjust-1", "customer_id": c, "kind": "adjust", "points": -5,
                    "reason": "double scan", "register_id": "reg-1", "staff_id": "staff-9"}),
        )
        .await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("confirmed"), "{v:#}");
    assert_eq!(v["delta"], json!(-5));
    assert_eq!(v["reason"], json!("double scan"));
    assert_eq!(v["register_id"], json!("reg-1"));
    assert_eq!(v["staff_id"], json!("staff-9"));
    assert_eq!(v["token_name"], json!("manager"));
    assert_eq!(v["balance"]["available"], json!(s0 + 65), "{v:#}");
    assert_eq!(env.sim.balance(&c), Some(s0 + 65));

    // earn from a purchase amount: 1 point per 100 yen, floor
    let (s, v) = d
        .post(
            "/v1/transactions",
            &json!({"txn_id": "on-purchase-1", "customer_id": c, "kind": "earn", "purchase_amount": 1999}),
        )
        .await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("confirmed"), "{v:#}");
    assert_eq!(v["delta"], json!(19), "{v:#}");
    assert_eq!(v["purchase_amount"], json!(1999), "{v:#}");
    assert_eq!(v["balance"]["available"], json!(s0 + 84), "{v:#}");
    assert_eq!(env.sim.balance(&c), Some(s0 + 84));

    // the key in an Idempotency-Key header instead of txn_id
    let body = json!({"customer_id": c, "kind": "earn", "points": 7});
    let hdr = |key: &str| {
        d.http
            .post(format!("{}/v1/transactions", d.url))
            .bearer_auth(REGISTER_TOKEN)
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let a = call(hdr("hdr-key-1")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["txn_id"], json!("hdr-key-1"));
    assert_eq!(a.body["status"], json!("confirmed"));
    assert_eq!(a.body["balance"]["available"], json!(s0 + 91));
    let a = call(hdr("hdr-key-1")).await;
    assert_eq!(
        a.status, 200,
        "a retry with the same header is a replay: {}",
        a.body
    );
    assert_eq!(a.body["txn_id"], json!("hdr-key-1"));
    // The header and the same key in the body are one key.
    let (s, v) = d
        .post(
            "/v1/transactions",
            &json!({"txn_id": "hdr-key-1", "customer_id": c, "kind": "earn", "points": 7}),
        )
        .await;
    assert_eq!(s, 200, "{v:#}");

    // The upstream saw each change exactly once, in order.
    assert_eq!(env.adds_for(&c), vec![100, -30, -5, 19, 7]);
    assert_eq!(env.sim.balance(&c), Some(s0 + 91));
    let v = env.customer(&c).await;
    assert_eq!(v["balance"]["available"], json!(s0 + 91), "{v:#}");
    assert_eq!(v["balance"]["confirmed"], json!(s0 + 91), "{v:#}");
    assert_eq!(v["balance"]["pending"], json!(0), "{v:#}");
    let all = env.list(&format!("?customer_id={c}")).await;
    assert_eq!(all.len(), 5);
    assert!(
        all.iter().all(|t| t["state"] == json!("applied")),
        "{all:#?}"
    );
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_replay_and_a_reused_key_with_another_body_conflicts() {
    let env = setup(20).await;
    let d = &env.d;
    let c = env.pick(20, &[], |b| b >= 100);
    let s0 = env.sim.balance(&c).unwrap();

    let (s, first) = d.earn("idem-1", &c, 25).await;
    assert_eq!(s, 201, "{first:#}");
    assert_eq!(first["status"], json!("confirmed"));

    for _ in 0..3 {
        let (s, again) = d.earn("idem-1", &c, 25).await;
        assert_eq!(s, 200, "{again:#}");
        assert_eq!(again["txn_id"], json!("idem-1"));
        assert_eq!(again["state"], json!("applied"));
        assert_eq!(again["status"], json!("confirmed"));
        assert_eq!(again["delta"], first["delta"]);
        assert_eq!(again["created_at"], first["created_at"]);
        assert_eq!(again["balance"]["available"], json!(s0 + 25));
    }
    assert_eq!(env.adds_for(&c), vec![25], "applied upstream only once");
    assert_eq!(env.sim.balance(&c), Some(s0 + 25));

    // Same key, another body: other points, another kind, another customer.
    let other = env.pick(20, &[&c], |_| true);
    for body in [
        json!({"txn_id": "idem-1", "customer_id": c, "kind": "earn", "points": 26}),
        json!({"txn_id": "idem-1", "customer_id": c, "kind": "redeem", "points": 25}),
        json!({"txn_id": "idem-1", "customer_id": other, "kind": "earn", "points": 25}),
        json!({"txn_id": "idem-1", "customer_id": c, "kind": "earn", "points": 25, "reason": "x"}),
    ] {
        let a = call(
            d.http
                .post(format!("{}/v1/transactions", d.url))
                .bearer_auth(REGISTER_TOKEN)
                .json(&body),
        )
        .await;
        let p = assert_problem(&a, 409, "idempotency_conflict");
        assert_eq!(p["txn_id"], json!("idem-1"), "{p:#}");
    }
    // Nothing changed.
    assert_eq!(env.adds_for(&c), vec![25]);
    assert!(env.adds_for(&other).is_empty());
    assert_eq!(env.sim.balance(&c), Some(s0 + 25));
    assert_eq!(d.available(&c).await, s0 + 25);
    let t = env.txn("idem-1").await;
    assert_eq!(t["delta"], json!(25));
    assert_eq!(t["kind"], json!("earn"));
    assert_eq!(t["customer_id"], json!(c));
    assert_eq!(env.list("").await.len(), 1);
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Validation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_problem_naming_the_field_and_changes_nothing() {
    let env = setup(20).await;
    let d = &env.d;
    let b0 = d.available("1").await;
    let long_id = "a".repeat(65);

    let cases: Vec<(Value, &[&str])> = vec![
        (json!({}), &["txn_id", "customer_id", "kind"]),
        (
            json!({"customer_id": "1", "kind": "earn", "points": 1}),
            &["txn_id"],
        ),
        (
            json!({"txn_id": "v-1", "kind": "earn", "points": 1}),
            &["customer_id"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "points": 1}),
            &["kind"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn"}),
            &["points"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "redeem"}),
            &["points"],
        ),
        // wrong types
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": "10"}),
            &["points"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": 10.5}),
            &["points"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": 1, "kind": "earn", "points": 10}),
            &["customer_id"],
        ),
        (
            json!({"txn_id": 7, "customer_id": "1", "kind": "earn", "points": 10}),
            &["txn_id"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": 1, "points": 10}),
            &["kind"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "gift", "points": 10}),
            &["kind"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": 1, "reason": 5}),
            &["reason"],
        ),
        // zero / negative points
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": 0}),
            &["points"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": -5}),
            &["points"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "redeem", "points": 0}),
            &["points"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "redeem", "points": -5}),
            &["points"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "adjust", "points": 0}),
            &["points"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": 100_000_000}),
            &["points"],
        ),
        // purchase amounts
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": 5, "purchase_amount": 500}),
            &["purchase_amount"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "purchase_amount": 99}),
            &["purchase_amount"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "purchase_amount": -100}),
            &["purchase_amount"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "redeem", "purchase_amount": 1000}),
            &["purchase_amount"],
        ),
        // unknown field
        (
            json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": 1, "colour": "red"}),
            &["colour"],
        ),
        // ids too long or not printable ASCII
        (
            json!({"txn_id": long_id, "customer_id": "1", "kind": "earn", "points": 1}),
            &["txn_id"],
        ),
        (
            json!({"txn_id": "has space", "customer_id": "1", "kind": "earn", "points": 1}),
            &["txn_id"],
        ),
        (
            json!({"txn_id": "v-1", "customer_id": "", "kind": "earn", "points": 1}),
            &["customer_id"],
        ),
        // not an object
        (
            json!([{"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": 1}]),
            &["(body)"],
        ),
        (json!("earn 10"), &["(body)"]),
        (json!(null), &["(body)"]),
    ];
    for (body, want) in &cases {
        let a = env.post_raw(serde_json::to_vec(body).unwrap()).await;
        assert!(
            (400..500).contains(&a.status),
            "{body} -> {}: {}",
            a.status,
            a.body
        );
        let p = assert_problem(&a, 422, "validation");
        let got = fields(&p);
        for f in *want {
            assert!(
                got.iter().any(|g| g == f),
                "{body}: want {f:?} in {got:?}: {p:#}"
            );
        }
    }

    // A key in the header that differs from the body's, and a malformed header key.
    for (key, want) in [("other-key", "txn_id"), ("bad key", "Idempotency-Key")] {
        let a = call(
            d.http
                .post(format!("{}/v1/transactions", d.url))
                .bearer_auth(REGISTER_TOKEN)
                .header("Idempotency-Key", key)
                .json(&json!({"txn_id": "v-1", "customer_id": "1", "kind": "earn", "points": 1})),
        )
        .await;
        let p = assert_problem(&a, 422, "validation");
        assert!(fields(&p).iter().any(|f| f == want), "{key}: {p:#}");
    }

    // Not JSON at all: 400 bad_json.
    for raw in [
        &b"not json{"[..],
        &b"{\"txn_id\": \"v-1\", "[..],
        &b""[..],
        &b"\xff\xfe"[..],
    ] {
        let a = env.post_raw(raw.to_vec()).await;
        assert_problem(&a, 400, "bad_json");
    }

    // Bad input wrote nothing: no transactions, no upstream calls, same balance.
    assert!(env.list("").await.is_empty());
    let s = d.status().await;
    assert_eq!(s["queue"]["pending"], json!(0), "{s:#}");
    assert_eq!(s["queue"]["applied"], json!(0), "{s:#}");
    assert!(env.sim.adds().is_empty());
    assert_eq!(d.available("1").await, b0);
    assert_eq!(env.sim.balance("1"), Some(b0));
    let (s, _) = d.get("/v1/transactions/v-1").await;
    assert_eq!(s, 404);

    // ... and a refused request does not use up its key.
    let (s, v) = d.earn("v-1", "1", 3).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["balance"]["available"], json!(b0 + 3));
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Body limit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_413() {
    let env = setup(5).await;
    let body = json!({"txn_id": "big-1", "customer_id": "1", "kind": "earn", "points": 1,
                      "reason": "x".repeat(70 * 1024)});
    let a = env.post_raw(serde_json::to_vec(&body).unwrap()).await;
    assert_problem(&a, 413, "too_large");

    // Without a Content-Length (chunked), the limit holds too.
    let raw = serde_json::to_vec(&body).unwrap();
    let (status, text) = post_chunked(&env.d, &raw).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("too_large"), "{text}");

    assert!(env.list("").await.is_empty());
    assert!(env.sim.adds().is_empty());
    env.finish().await;
}

/// POSTs `body` to /v1/transactions with `Transfer-Encoding: chunked` (no Content-Length) over
/// a plain TCP connection; returns the status and whatever of the answer arrived.
async fn post_chunked(d: &TestDaemon, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = d.url.trim_start_matches("http://");
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST /v1/transactions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {REGISTER_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let body = body.to_vec();
    // Write and read at once: the server may answer (and close) before it has read it all.
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(8 * 1024) {
            wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            wr.write_all(chunk).await?;
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(b"0\r\n\r\n").await
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = writer.await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

// ---------------------------------------------------------------------------------------------
// 8, 9. Refusals before anything is written
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeeming_more_than_available_is_refused_and_writes_nothing() {
    let env = setup(20).await;
    let d = &env.d;
    let c = env.pick(20, &[], |b| (1..3000).contains(&b));
    let b0 = d.available(&c).await;

    let a = call(
        d.http
            .post(format!("{}/v1/transactions", d.url))
            .bearer_auth(REGISTER_TOKEN)
            .json(
                &json!({"txn_id": "over-1", "customer_id": c, "kind": "redeem", "points": b0 + 1}),
            ),
    )
    .await;
    let p = assert_problem(&a, 409, "insufficient_points");
    assert!(
        p["detail"].as_str().unwrap().contains(&b0.to_string()),
        "the detail tells how many points there are: {p:#}"
    );
    // A negative adjustment may not overdraw either.
    let (s, v) = d
        .post_as(
            "/v1/transactions",
            MANAGER_TOKEN,
            &json!({"txn_id": "over-2", "customer_id": c, "kind": "adjust", "points": -(b0 + 1)}),
        )
        .await;
    assert_eq!(s, 409, "{v:#}");
    check_problem_body(&v, 409, "insufficient_points");

    assert!(env.list("").await.is_empty());
    assert!(env.sim.adds().is_empty());
    assert_eq!(d.available(&c).await, b0);
    assert_eq!(env.sim.balance(&c), Some(b0));
    let (s, _) = d.get("/v1/transactions/over-1").await;
    assert_eq!(s, 404);

    // Exactly everything is fine, and the refused key was not used up.
    let (s, v) = d.redeem("over-1", &c, b0).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("confirmed"), "{v:#}");
    assert_eq!(v["balance"]["available"], json!(0));
    assert_eq!(env.sim.balance(&c), Some(0));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_for_an_unknown_customer_are_404() {
    let env = setup(10).await;
    let d = &env.d;
    for (kind, points) in [("earn", 10), ("redeem", 10), ("adjust", 5)] {
        let a = call(
            d.http
                .post(format!("{}/v1/transactions", d.url))
                .bearer_auth(MANAGER_TOKEN)
                .json(
                    &json!({"txn_id": format!("nobody-{kind}"), "customer_id": "99999",
                              "kind": kind, "points": points}),
                ),
        )
        .await;
        assert_problem(&a, 404, "not_found");
    }
    assert!(env.list("").await.is_empty());
    assert!(env.sim.adds().is_empty());
    let (s, _) = d.get("/v1/customers/99999").await;
    assert_eq!(s, 404, "no customer was made up");
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 10. Offline
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_writes_queue_with_provisional_balances_then_drain_exactly_once() {
    let env = setup(200).await;
    let d = &env.d;
    let big = env.pick(200, &[], |b| b > 5001);
    let earner = env.pick(200, &[&big], |_| true);
    let spender = env.pick(200, &[&big, &earner], |b| b >= 500);
    let e0 = env.sim.balance(&earner).unwrap();
    let p0 = env.sim.balance(&spender).unwrap();
    let g0 = env.sim.balance(&big).unwrap();

    set_faults(&env.sim, |f| f.refuse = true);
    d.wait_for(
        "the daemon to notice the link is down",
        Duration::from_secs(15),
        |s| s["online"] == json!(false),
    )
    .await;

    // earn
    let (s, v) = d.earn("off-earn-1", &earner, 150).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("queued"), "{v:#}");
    assert_eq!(v["state"], json!("pending"), "{v:#}");
    assert_eq!(v["balance"]["confirmed"], json!(e0), "{v:#}");
    assert_eq!(v["balance"]["pending"], json!(150), "{v:#}");
    assert_eq!(v["balance"]["available"], json!(e0 + 150), "{v:#}");
    assert_eq!(v["customer"]["online"], json!(false), "{v:#}");
    assert_eq!(v["customer"]["stale"], json!(true), "{v:#}");

    // a second earn for the same customer adds up
    let (s, v) = d.earn("off-earn-2", &earner, 50).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("queued"), "{v:#}");
    assert_eq!(v["balance"]["pending"], json!(200), "{v:#}");
    assert_eq!(v["balance"]["available"], json!(e0 + 200), "{v:#}");

    // redeem
    let (s, v) = d.redeem("off-redeem-1", &spender, 300).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("queued"), "{v:#}");
    assert_eq!(v["state"], json!("pending"), "{v:#}");
    assert_eq!(v["balance"]["pending"], json!(-300), "{v:#}");
    assert_eq!(v["balance"]["available"], json!(p0 - 300), "{v:#}");

    // a replay while offline is still a replay
    let (s, v) = d.redeem("off-redeem-1", &spender, 300).await;
    assert_eq!(s, 200, "{v:#}");
    assert_eq!(v["balance"]["available"], json!(p0 - 300), "{v:#}");

    // offline, a single redeem is capped at offline.max_redeem_points (5000)
    let a = call(
        d.http
            .post(format!("{}/v1/transactions", d.url))
            .bearer_auth(REGISTER_TOKEN)
            .json(&json!({"txn_id": "off-big-1", "customer_id": big, "kind": "redeem", "points": 5001})),
    )
    .await;
    assert_problem(&a, 409, "offline_redeem_limit");
    assert_eq!(d.available(&big).await, g0);
    let (s, _) = d.get("/v1/transactions/off-big-1").await;
    assert_eq!(s, 404);

    // a look-up shows the provisional figure
    let c = env.customer(&earner).await;
    assert_eq!(c["balance"]["available"], json!(e0 + 200), "{c:#}");
    assert_eq!(c["balance"]["pending"], json!(200), "{c:#}");
    assert_eq!(c["stale"], json!(true), "{c:#}");

    let s = d.status().await;
    assert_eq!(s["online"], json!(false), "{s:#}");
    assert_eq!(s["queue"]["pending"], json!(3), "{s:#}");
    assert!(s["queue"]["oldest_pending_age_s"].is_i64(), "{s:#}");
    assert!(s["upstream"]["last_error"].is_string(), "{s:#}");
    assert_eq!(env.list("?state=pending").await.len(), 3);
    assert!(env.sim.adds().is_empty());

    // The link comes back: everything is sent, once, and confirmed.
    set_faults(&env.sim, |f| f.refuse = false);
    d.wait_for("the link to come back", Duration::from_secs(15), |s| {
        s["online"] == json!(true)
    })
    .await;
    let s = d.wait_drained(Duration::from_secs(20)).await;
    assert_eq!(s["queue"]["rejected"], json!(0), "{s:#}");
    assert_eq!(s["queue"]["needs_review"], json!(0), "{s:#}");
    for t in ["off-earn-1", "off-earn-2", "off-redeem-1"] {
        let v = env.txn(t).await;
        assert_eq!(v["state"], json!("applied"), "{v:#}");
    }
    assert_eq!(env.sim.balance(&earner), Some(e0 + 200));
    assert_eq!(env.sim.balance(&spender), Some(p0 - 300));
    assert_eq!(env.sim.balance(&big), Some(g0));
    assert_eq!(
        env.adds_for(&earner),
        vec![150, 50],
        "in the order accepted"
    );
    assert_eq!(env.adds_for(&spender), vec![-300]);
    assert!(env.adds_for(&big).is_empty());
    for (id, want) in [(&earner, e0 + 200), (&spender, p0 - 300), (&big, g0)] {
        let c = env.customer(id).await;
        assert_eq!(c["balance"]["available"], json!(want), "{c:#}");
        assert_eq!(c["balance"]["confirmed"], json!(want), "{c:#}");
        assert_eq!(c["balance"]["pending"], json!(0), "{c:#}");
    }
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 11. A permanent refusal by the upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusal_is_409_rejected_and_stops_counting() {
    let env = setup(50).await;
    let d = &env.d;
    let c = env.pick(50, &[], |b| b >= 200);
    let b0 = d.available(&c).await;
    assert_eq!(env.sim.balance(&c), Some(b0));

    // The points expire upstream; this store's cache has not heard yet.
    env.sim.set_expiry(&c, Some("2000-01-01"));
    assert_eq!(d.available(&c).await, b0);

    let a = call(
        d.http
            .post(format!("{}/v1/transactions", d.url))
            .bearer_auth(REGISTER_TOKEN)
            .json(&json!({"txn_id": "rej-1", "customer_id": c, "kind": "redeem", "points": 100})),
    )
    .await;
    let p = assert_problem(&a, 409, "upstream_rejected");
    assert_eq!(p["txn_id"], json!("rej-1"), "{p:#}");
    assert!(
        p["detail"].as_str().unwrap().contains("insufficient"),
        "the upstream's reason is passed on: {p:#}"
    );

    let t = env.txn("rej-1").await;
    assert_eq!(t["state"], json!("rejected"), "{t:#}");
    assert!(t["upstream_result"].is_object(), "{t:#}");
    assert_eq!(t["upstream_result"]["status"], json!(400), "{t:#}");
    assert!(t["next_attempt_at"].is_null(), "{t:#}");

    let s = d.status().await;
    assert_eq!(s["queue"]["rejected"], json!(1), "{s:#}");
    assert_eq!(s["queue"]["pending"], json!(0), "{s:#}");
    assert_eq!(env.list("?state=rejected").await.len(), 1);

    // The refused redeem no longer counts toward the balance.
    let v = env.customer(&c).await;
    let bal = &v["balance"];
    assert_eq!(bal["pending"], json!(0), "{v:#}");
    assert_eq!(bal["available"], bal["confirmed"], "{v:#}");
    assert_ne!(bal["available"], json!(b0 - 100), "{v:#}");
    assert!(
        bal["available"] == json!(b0) || bal["available"] == json!(0),
        "either the old figure or the upstream's expired one: {v:#}"
    );
    assert!(env.adds_for(&c).is_empty());
    assert_eq!(env.sim.balance(&c), Some(0));

    // A retry of the same request gives the same answer and sends nothing.
    let (s, v) = d.redeem("rej-1", &c, 100).await;
    assert_eq!(s, 409, "{v:#}");
    check_problem_body(&v, 409, "upstream_rejected");
    assert!(env.adds_for(&c).is_empty());
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 12. Listing and reading transactions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_can_be_listed_filtered_and_read() {
    let env = setup(20).await;
    let d = &env.d;
    for (t, c, p) in [
        ("l-1", "1", 10),
        ("l-2", "1", 11),
        ("l-3", "1", 12),
        ("l-4", "2", 13),
    ] {
        let (s, v) = d
            .post(
                "/v1/transactions",
                &json!({"txn_id": t, "customer_id": c, "kind": "earn", "points": p, "register_id": format!("reg-{c}")}),
            )
            .await;
        assert_eq!(s, 201, "{v:#}");
        assert_eq!(v["status"], json!("confirmed"), "{v:#}");
    }

    assert_eq!(env.list("").await.len(), 4);
    let l = env.list("?state=applied&customer_id=1&limit=2").await;
    assert_eq!(l.len(), 2, "{l:#?}");
    for t in &l {
        assert_eq!(t["customer_id"], json!("1"), "{t:#}");
        assert_eq!(t["state"], json!("applied"), "{t:#}");
    }
    let l = env.list("?state=applied&customer_id=1").await;
    assert_eq!(l.len(), 3, "{l:#?}");
    let l = env.list("?customer_id=2").await;
    assert_eq!(l.len(), 1, "{l:#?}");
    assert_eq!(l[0]["txn_id"], json!("l-4"));
    assert_eq!(l[0]["delta"], json!(13));
    let l = env.list("?register_id=reg-2").await;
    assert_eq!(l.len(), 1, "{l:#?}");
    assert!(env.list("?state=pending").await.is_empty());
    assert!(env.list("?customer_id=3").await.is_empty());

    let t = env.txn("l-2").await;
    assert_eq!(t["txn_id"], json!("l-2"));
    assert_eq!(t["customer_id"], json!("1"));
    assert_eq!(t["kind"], json!("earn"));
    assert_eq!(t["delta"], json!(11));
    assert_eq!(t["state"], json!("applied"));
    assert_eq!(t["attempts"], json!(1));
    assert!(t["created_at"].is_string(), "{t:#}");
    assert!(t["upstream_balance"].is_i64(), "{t:#}");
    assert_eq!(t["resolutions"], json!([]), "{t:#}");

    for (q, field) in [
        ("?state=bogus", "state"),
        ("?state=applied&limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?customer_id=has%20space", "customer_id"),
    ] {
        let a = call(
            d.http
                .get(format!("{}/v1/transactions{q}", d.url))
                .bearer_auth(REGISTER_TOKEN),
        )
        .await;
        let p = assert_problem(&a, 422, "validation");
        assert!(fields(&p).iter().any(|f| f == field), "{q}: {p:#}");
    }

    let a = call(
        d.http
            .get(format!("{}/v1/transactions/no-such-txn", d.url))
            .bearer_auth(REGISTER_TOKEN),
    )
    .await;
    assert_problem(&a, 404, "not_found");
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 13. Metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_to_token_holders() {
    let env = setup(12).await;
    let d = &env.d;
    let (s, v) = d.earn("m-1", "1", 5).await;
    assert_eq!(s, 201, "{v:#}");
    let r = d
        .http
        .get(format!("{}/metrics", d.url))
        .bearer_auth(REGISTER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.contains("text"), "{ct}");
    let text = r.text().await.unwrap();
    for name in [
        "pointsd_queue_transactions",
        "pointsd_upstream_requests_total",
        "pointsd_cache_customers",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains("pointsd_cache_customers 12"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("pointsd_queue_transactions{")
                && l.contains("applied")
                && l.ends_with(" 1")),
        "{text}"
    );
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 14. 5xx from the upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_queues_then_applies_once_when_it_recovers() {
    let env = setup(20).await;
    let d = &env.d;
    let c = env.pick(20, &[], |_| true);
    let s0 = env.sim.balance(&c).unwrap();

    // A confirmed write first: the link is freshly known good, so the next write is sent.
    let (s, v) = d.earn("5xx-0", &c, 10).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("confirmed"), "{v:#}");

    set_faults(&env.sim, |f| f.error_rate = 1.0);
    let (s, v) = d.earn("5xx-1", &c, 20).await;
    assert_eq!(s, 201, "{v:#}");
    assert_eq!(v["status"], json!("queued"), "{v:#}");
    assert_eq!(v["balance"]["available"], json!(s0 + 30), "{v:#}");
    assert_eq!(v["balance"]["pending"], json!(20), "{v:#}");

    let t = env.txn("5xx-1").await;
    assert_eq!(t["state"], json!("pending"), "{t:#}");
    assert!(t["attempts"].as_i64().unwrap() > 0, "it was tried: {t:#}");
    assert!(
        t["last_error"].as_str().unwrap_or_default().contains("503"),
        "{t:#}"
    );
    assert!(t["next_attempt_at"].is_string(), "{t:#}");
    assert_eq!(env.adds_for(&c), vec![10]);
    let s = d.status().await;
    assert_eq!(s["queue"]["pending"], json!(1), "{s:#}");
    assert!(
        s["upstream"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{s:#}"
    );

    set_faults(&env.sim, |f| f.error_rate = 0.0);
    d.wait_drained(Duration::from_secs(20)).await;
    let t = env.txn("5xx-1").await;
    assert_eq!(t["state"], json!("applied"), "{t:#}");
    assert_eq!(env.adds_for(&c), vec![10, 20], "applied once");
    assert_eq!(env.sim.balance(&c), Some(s0 + 30));
    let v = env.customer(&c).await;
    assert_eq!(v["balance"]["available"], json!(s0 + 30), "{v:#}");
    assert_eq!(v["balance"]["pending"], json!(0), "{v:#}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_names_the_token_and_its_role_never_the_token() {
    let sim = common::start_sim(5).await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::TestDaemon::start(
        common::test_config(&sim, "store-who"),
        dir.path().into(),
        true,
    )
    .await;
    let (s, v) = d.get_as("/v1/whoami", Some(common::REGISTER_TOKEN)).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        serde_json::json!({"name": "register-1", "role": "register"})
    );
    let (_, v) = d.get_as("/v1/whoami", Some(common::MANAGER_TOKEN)).await;
    assert_eq!(v["role"], "manager");
    assert!(!v.to_string().contains(common::MANAGER_TOKEN));
    let (s, _) = d.get_as("/v1/whoami", None).await;
    assert_eq!(s, 401);
}

/// The OpenAPI document is generated from the code; the checked-in copy must match it.
/// Regenerate with `UPDATE_OPENAPI=1 cargo test --test testsuite openapi`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served_and_checked_in() {
    let generated = pointsd::api::openapi::document();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, format!("{generated}\n")).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        checked_in.trim_end(),
        generated.trim_end(),
        "openapi.json is out of date: run UPDATE_OPENAPI=1 cargo test --test testsuite openapi"
    );
    let v: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(v["openapi"], "3.1.0");

    let sim = common::start_sim(3).await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::TestDaemon::start(
        common::test_config(&sim, "store-oas"),
        dir.path().into(),
        true,
    )
    .await;
    // Served without a token, so tools can fetch it.
    let (s, served) = d.get_as("/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(served, v);
}

/// Look-ups of one customer whose figure is old, all at once: one upstream read answers them
/// all (refreshes coalesce), and every look-up shows the balance the upstream now holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_one_customer_share_one_upstream_read() {
    let sim = start_sim(20).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&sim, "store-coalesce");
    cfg.api.lookup_refresh_after_s = 0;
    cfg.api.lookup_refresh_budget_ms = 3_000;
    let mut d = TestDaemon::start(cfg, dir.path().to_path_buf(), true).await;
    let reads = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("pointsd_upstream_requests_total{op=\"get_balance\""))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    };
    // Changed elsewhere, so a refresh has something to show; slow, so the look-ups overlap.
    sim.add_elsewhere("7", 25);
    let want = sim.balance("7").unwrap();
    set_faults(&sim, |f| f.latency_ms = 500);
    let before = reads(&d.metrics_text().await);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (http, url) = (d.http.clone(), format!("{}/v1/customers/7", d.url));
        set.spawn(async move {
            let r = http
                .get(url)
                .bearer_auth(REGISTER_TOKEN)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        });
    }
    let answers = set.join_all().await;
    set_faults(&sim, |f| f.latency_ms = 0);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["balance"]["confirmed"], json!(want), "{body}");
    }
    let after = reads(&d.metrics_text().await);
    assert_eq!(
        after - before,
        1,
        "ten look-ups of one customer read it upstream once"
    );
    d.stop().await;
    sim.shutdown().await;
}
