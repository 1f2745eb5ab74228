//! The sales verbs on the real binary (issue 14): `pointsd sale`, `pointsd return`, `pointsd
//! sales show`, and the split in `pointsd transactions` / `status`, against a daemon wired to
//! the simulator, checked as a person at a terminal or a script would: figures, exit codes,
//! readable refusals, JSON that parses, and what the simulator applied.

use crate::common;

use std::process::Output;
use std::time::Duration;

use common::{REGISTER_TOKEN, TestDaemon, adds_for, set_faults, start_sim, test_config};
use pointsd::sim::SimHandle;
use serde_json::{Value, json};

struct Env {
    sim: SimHandle,
    d: TestDaemon,
    _dir: tempfile::TempDir,
}

async fn setup() -> Env {
    let sim = start_sim(30).await;
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(
        test_config(&sim, "store-cli"),
        dir.path().to_path_buf(),
        true,
    )
    .await;
    Env { sim, d, _dir: dir }
}

impl Env {
    fn pick(&self, not: &[&str], pred: impl Fn(i64) -> bool) -> String {
        (1..=30)
            .map(|i| i.to_string())
            .find(|id| !not.contains(&id.as_str()) && pred(self.sim.balance(id).unwrap()))
            .expect("a sample customer fits")
    }

    /// Runs `pointsd ARGS --url ... --token ...` to its end.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"));
        cmd.args(args)
            .args(["--url", &self.d.url, "--token", REGISTER_TOKEN])
            // No config file of this machine may leak in.
            .env("POINTSD_CONFIG", self._dir.path().join("none.toml"))
            .env_remove("POINTSD_URL")
            .env_remove("POINTSD_TOKEN")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// Runs a command with `--json` that must succeed, and parses its answer.
    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let o = self.cli(&a).await;
        assert!(o.status.success(), "{args:?} failed: {}", all(&o));
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: --json is not JSON ({e}): {}", all(&o)))
    }

    async fn finish(mut self) {
        self.d.stop().await;
        self.sim.shutdown().await;
    }
}

fn all(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn figures(v: &Value, keys: &[&str]) -> Vec<Value> {
    keys.iter().map(|k| v[*k].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_then_a_partial_return_then_the_rest_from_the_command_line() {
    let env = setup().await;
    let c = env.pick(&[], |b| b >= 500);
    let b0 = env.sim.balance(&c).unwrap();

    // A quote shows the figures and records nothing.
    let q = env
        .json(&["sale", &c, "2480", "--use", "300", "--quote"])
        .await;
    assert_eq!(
        figures(&q, &["points_used", "points_earned", "net_delta"]),
        [json!(300), json!(21), json!(-279)],
        "{q:#}"
    );
    assert!(env.sim.adds().is_empty(), "a quote writes nothing");

    // 2480 yen with 300 points used earns on the 2180 yen paid: 21 points; net −279.
    let v = env
        .json(&["sale", &c, "2480", "--use", "300", "--id", "cli-s1"])
        .await;
    assert_eq!(v["sale_id"], json!("cli-s1"), "{v:#}");
    assert_eq!(
        figures(&v, &["points_used", "points_earned", "net_delta", "status"]),
        [json!(300), json!(21), json!(-279), json!("confirmed")],
        "{v:#}"
    );
    assert_eq!(v["balance"]["available"], json!(b0 - 279), "{v:#}");
    assert!(
        v["applied_rules"].as_array().is_some_and(|a| !a.is_empty()),
        "{v:#}"
    );

    // Half of it comes back: floor(21·1240/2480) = 10 taken back, floor(300·1240/2480) = 150
    // given back.
    let r1 = env
        .json(&["return", "cli-s1", "1240", "--id", "cli-r1"])
        .await;
    assert_eq!(
        figures(
            &r1,
            &[
                "points_taken_back",
                "points_given_back",
                "net_delta",
                "shortfall"
            ]
        ),
        [json!(10), json!(150), json!(140), json!(0)],
        "{r1:#}"
    );

    // The human view of the sale: figures, the return, what is still returnable.
    let o = env.cli(&["sales", "show", "cli-s1"]).await;
    assert!(o.status.success(), "{}", all(&o));
    let out = stdout(&o);
    for want in [
        "sale cli-s1",
        "2,480 yen",
        "points used   300",
        "points earned 21",
        "-279",
        "cli-r1",
        "still returnable 1,240 yen",
        "confirmed by the upstream",
        "rules applied:",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }

    // The rest (no amount): the remainder of both, so the two returns restore the sale exactly.
    let o = env.cli(&["return", "cli-s1"]).await;
    assert!(o.status.success(), "{}", all(&o));
    let out = stdout(&o);
    assert!(
        out.contains("return cli-"),
        "the new return id is shown:\n{out}"
    );
    assert!(
        out.contains("earned points taken back 11") && out.contains("used points given back   150"),
        "{out}"
    );
    let s = env.json(&["sales", "show", "cli-s1"]).await;
    assert_eq!(s["returnable_amount"], json!(0), "{s:#}");
    assert_eq!(s["returns"].as_array().map(Vec::len), Some(2), "{s:#}");
    assert_eq!(
        figures(&s, &["points_taken_back", "points_given_back"]),
        [json!(21), json!(300)],
        "{s:#}"
    );
    env.d.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(
        env.sim.balance(&c),
        Some(b0),
        "a full return restores the balance"
    );
    assert_eq!(adds_for(&env.sim, &c), vec![-279, 140, 139]);

    // Nothing more to return: refused, non-zero, in words.
    let o = env.cli(&["return", "cli-s1", "1"]).await;
    assert!(!o.status.success(), "{}", all(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("More than was sold") && err.contains("0 yen left to return"),
        "{err}"
    );

    // The transactions list and status show the split.
    let o = env.cli(&["transactions"]).await;
    assert!(o.status.success(), "{}", all(&o));
    let out = stdout(&o);
    assert!(
        out.contains("sale cli-s1: 2,480 yen, used 300, earned 21"),
        "{out}"
    );
    assert!(
        out.contains("return cli-r1 of sale cli-s1: 1,240 yen, taken back 10, given back 150"),
        "{out}"
    );
    let l = env.json(&["queue"]).await;
    let row = l["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["txn_id"] == json!("return:cli-r1"))
        .cloned()
        .unwrap_or_else(|| panic!("{l:#}"));
    assert_eq!(row["split"]["sale_id"], json!("cli-s1"), "{row:#}");
    assert_eq!(row["split"]["points_given_back"], json!(150), "{row:#}");
    let o = env.cli(&["status"]).await;
    let out = stdout(&o);
    assert!(
        out.contains(
            "sales: 1 (points used 300, earned 21); returns: 2 (taken back 21, given back 300"
        ),
        "{out}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_id_counts_once_and_refusals_exit_non_zero() {
    let env = setup().await;
    let c = env.pick(&[], |b| (500..=50_000).contains(&b));
    let b0 = env.sim.balance(&c).unwrap();

    // Without --id a new id is made and printed, so the cashier can retry with it.
    let o = env.cli(&["sale", &c, "1000"]).await;
    assert!(o.status.success(), "{}", all(&o));
    let out = stdout(&o);
    let id = out
        .split_whitespace()
        .nth(1)
        .filter(|w| w.starts_with("cli-"))
        .unwrap_or_else(|| panic!("no generated sale id in:\n{out}"))
        .to_string();
    assert!(out.contains("points earned 10"), "{out}");
    let again = env.json(&["sale", &c, "1000", "--id", &id]).await;
    assert_eq!(again["sale_id"], json!(id));
    assert_eq!(again["points_earned"], json!(10), "{again:#}");
    assert_eq!(
        adds_for(&env.sim, &c),
        vec![10],
        "the retry is not sent again"
    );

    // The same id for another sale: refused, nothing recorded.
    let o = env.cli(&["sale", &c, "2000", "--id", &id]).await;
    assert!(!o.status.success(), "{}", all(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Sale id reused"),
        "{}",
        all(&o)
    );

    // More points than the customer has: the problem's message, a non-zero exit, nothing sent.
    let too_many = (b0 + 10 + 1000).to_string();
    let o = env
        .cli(&["sale", &c, "100000", "--use", &too_many, "--id", "cli-big"])
        .await;
    assert!(!o.status.success(), "{}", all(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Not enough points (409)")
            && err.contains(&format!("Using {too_many} points")),
        "{err}"
    );
    assert!(
        !err.contains("retry"),
        "a refusal recorded nothing: no retry hint: {err}"
    );
    let o = env.cli(&["sales", "show", "cli-big"]).await;
    assert!(!o.status.success(), "{}", all(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No sale with sale_id"),
        "{}",
        all(&o)
    );
    let o = env.cli(&["return", "no-such-sale"]).await;
    assert!(!o.status.success(), "{}", all(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No sale with sale_id \"no-such-sale\""));
    let o = env.cli(&["sale", &c, "100", "--use", "lots"]).await;
    assert!(!o.status.success(), "{}", all(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--use"));

    // `--use all` uses as many points as the rules and the balance allow.
    let v = env.json(&["sale", &c, "300", "--use", "all"]).await;
    assert_eq!(
        figures(&v, &["points_used", "points_earned"]),
        [json!(300), json!(0)],
        "{v:#}"
    );
    assert_eq!(adds_for(&env.sim, &c), vec![10, -300]);
    assert_eq!(env.sim.balance(&c), Some(b0 + 10 - 300));

    // An unreachable daemon: the error says which id to retry with.
    let o = {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"));
        cmd.args(["sale", &c, "500", "--id", "cli-unsure", "--token", "x"])
            .args([
                "--url",
                &format!("http://127.0.0.1:{}", common::free_port()),
            ])
            .env("POINTSD_CONFIG", env._dir.path().join("none.toml"));
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach pointsd") && err.contains("--id cli-unsure"),
        "{err}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_sale_is_queued_and_syncs_later() {
    let env = setup().await;
    let c = env.pick(&[], |b| b >= 200);
    let b0 = env.sim.balance(&c).unwrap();
    set_faults(&env.sim, |f| f.refuse = true);
    env.d
        .wait_for("the link to drop", Duration::from_secs(15), |s| {
            s["online"] == json!(false)
        })
        .await;

    let o = env
        .cli(&["sale", &c, "1500", "--use", "100", "--id", "cli-off"])
        .await;
    assert!(o.status.success(), "{}", all(&o));
    let out = stdout(&o);
    assert!(out.contains("saved — will sync"), "{out}");
    let v = env.json(&["sales", "show", "cli-off"]).await;
    assert_eq!(
        figures(&v, &["status", "state", "points_used", "points_earned"]),
        [json!("queued"), json!("pending"), json!(100), json!(14)],
        "{v:#}"
    );
    assert_eq!(v["balance"]["available"], json!(b0 - 86), "{v:#}");
    let r = env
        .json(&["return", "cli-off", "500", "--id", "cli-off-r"])
        .await;
    assert_eq!(r["status"], json!("queued"), "{r:#}");
    assert!(
        env.sim.adds().is_empty(),
        "nothing reached the upstream offline"
    );

    set_faults(&env.sim, |f| f.refuse = false);
    env.d.wait_drained(Duration::from_secs(20)).await;
    let v = env.json(&["sales", "show", "cli-off"]).await;
    assert_eq!(
        figures(&v, &["status", "state"]),
        [json!("confirmed"), json!("applied")],
        "{v:#}"
    );
    assert_eq!(v["returns"][0]["state"], json!("applied"), "{v:#}");
    // 500 of 1500 yen: floor(14/3) = 4 taken back, floor(100/3) = 33 given back.
    assert_eq!(adds_for(&env.sim, &c), vec![-86, 29]);
    assert_eq!(env.sim.balance(&c), Some(b0 - 86 + 29));
    env.finish().await;
}
