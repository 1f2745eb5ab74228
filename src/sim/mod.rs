//! The upstream simulator: a real HTTP server speaking the Smaregi Platform API subset of
//! DESIGN.md §4 (token, customers, customers/point, transactions, point/add) as one **contract**
//! shared by every client: stateful, seeded with sample customers, with the contract-wide read
//! and write limits (429 + `Retry-After`), per-`User-Agent` request counts, changes from
//! elsewhere (a register elsewhere, the online shop, an expiry) and fault switches: refuse
//! connections, 5xx, 429, latency, and "apply then drop the connection" (the ambiguous case).
//! `demo` runs it in-process; tests and the fleet bench start it on an ephemeral port and drive
//! it through [`SimHandle`] or the admin port.
//!
//! Files:
//! - `mod.rs`: this map and [`SimHandle`], the running simulator and its test-facing methods.
//! - `options.rs`: [`SimOptions`] (the contract: size, credentials, limits, scopes) and
//!   [`Faults`].
//! - `state.rs`: the contract's data — customers ([`SimCustomer`]), the `point/add` log
//!   ([`AppliedAdd`]), the transaction list ([`SimTxn`]), changes from elsewhere
//!   ([`Elsewhere`]), issued tokens, persistence to a state file — and [`sample_customers`].
//! - `limits.rs`: the contract's rate limits (a sliding one-second window per class) and
//!   [`AgentCounts`].
//! - `smaregi.rs`: the Smaregi API handlers and the gate (limits, faults, auth, scopes) in front
//!   of them.
//! - `admin.rs`: the admin API (`/_sim/...`).
//! - `conn.rs`: accepting and serving connections (refusing, cutting, dropping one).
//! - `easypoints.rs`: the easyPoints API under `/api/shopify` on the API port, the Smapify
//!   mirror between the two ledgers, and their admin routes (`/_sim/easypoints/...`).

// Early returns here are whole HTTP answers; boxing them buys nothing in a test server.
#![allow(clippy::result_large_err)]

mod admin;
mod conn;
mod easypoints;
pub(crate) mod limits;
mod options;
mod smaregi;
mod state;
mod transactions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use easypoints::{
    EasyPointsSimOptions, EpAllotment, EpCustomer, EpFaults, EpRequest, Mirror, SmapifyOptions,
    sample_member_code,
};
pub use limits::AgentCounts;
pub use options::{Faults, SimOptions};
pub use state::{
    AppliedAdd, ELSEWHERE_STORE, Elsewhere, ElsewhereError, ONLINE_STORE, POINT_ADD_STORE,
    RegisterKind, RegisterSale, SimCustomer, SimStore, SimTxn, sample_customers,
};

use state::{Shared, SimState};

/// A running simulator.
#[derive(Clone)]
pub struct SimHandle {
    state: Shared,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    refuse_tx: Arc<tokio::sync::watch::Sender<bool>>,
    stop: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
}

impl SimHandle {
    /// Starts the simulator on `listen` (port 0 for any) with its admin API on `admin_listen`.
    pub async fn start(
        listen: SocketAddr,
        admin_listen: SocketAddr,
        opts: SimOptions,
    ) -> std::io::Result<SimHandle> {
        let state: Shared = Arc::new(Mutex::new(SimState::new(opts)));
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let admin = TcpListener::bind(admin_listen).await?;
        let admin_addr = admin.local_addr()?;
        let (refuse_tx, refuse_rx) = tokio::sync::watch::channel(false);
        let refuse_tx = Arc::new(refuse_tx);
        let stop = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        tracker.spawn(conn::serve_api(
            listener,
            addr,
            smaregi::api_router(state.clone()).merge(easypoints::api_router(state.clone())),
            refuse_rx,
            stop.clone(),
            tracker.clone(),
        ));
        let admin_app = admin::admin_router(state.clone(), refuse_tx.clone())
            .merge(easypoints::admin_router(state.clone()));
        let stop2 = stop.clone();
        tracker.spawn(async move {
            let _ = axum::serve(admin, admin_app)
                .with_graceful_shutdown(stop2.cancelled_owned())
                .await;
        });
        let st = state.clone();
        let stop3 = stop.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop3.cancelled() => break,
                    _ = tick.tick() => st.lock().expect("sim").persist(),
                }
            }
            st.lock().expect("sim").persist();
        });
        // Smapify carries changes and easyPoints expires balances as time passes, whether or
        // not anyone asks.
        let st = state.clone();
        let stop4 = stop.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop4.cancelled() => break,
                    _ = tick.tick() => st.lock().expect("sim").ep_tick(),
                }
            }
        });
        tracker.close();
        Ok(SimHandle {
            state,
            addr,
            admin_addr,
            refuse_tx,
            stop,
            tracker,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }
    /// The easyPoints API's base (`api_base` of `[easypoints]`).
    pub fn easypoints_url(&self) -> String {
        format!("http://{}{}", self.addr, easypoints::PREFIX)
    }
    /// The Shopify id easyPoints knows a Smaregi customer by (Smapify merchants).
    pub fn shopify_id(&self, customer_id: &str) -> Option<String> {
        self.state
            .lock()
            .expect("sim")
            .ep
            .by_smaregi
            .get(customer_id)
            .cloned()
    }
    /// A customer as easyPoints holds them, by Shopify id.
    pub fn ep_customer(&self, shopify_id: &str) -> Option<EpCustomer> {
        let mut s = self.state.lock().expect("sim");
        s.ep_tick();
        s.ep.customers.get(shopify_id).cloned()
    }
    /// Makes a customer's easyPoints balance expire `secs` from now.
    pub fn ep_expire_in(&self, shopify_id: &str, secs: i64) {
        if let Some(c) = self
            .state
            .lock()
            .expect("sim")
            .ep
            .customers
            .get_mut(shopify_id)
        {
            c.expires_at_ms = state::now_ms() + secs * 1000;
        }
    }
    /// An online order: easyPoints changes now, Smaregi once Smapify carried it.
    pub fn ep_order(&self, shopify_id: &str, delta: i64) -> Result<EpCustomer, String> {
        self.state.lock().expect("sim").ep_order(shopify_id, delta)
    }
    pub fn ep_faults(&self) -> EpFaults {
        self.state.lock().expect("sim").ep.faults.clone()
    }
    pub fn set_ep_faults(&self, f: EpFaults) {
        self.state.lock().expect("sim").ep.faults = f;
    }
    /// Every request the easyPoints side received, in order.
    pub fn ep_requests(&self) -> Vec<EpRequest> {
        self.state.lock().expect("sim").ep.requests.clone()
    }
    /// Changes Smapify is still carrying, and those it lost.
    pub fn smapify_mirror(&self) -> (Vec<Mirror>, Vec<Mirror>) {
        let mut s = self.state.lock().expect("sim");
        s.ep_tick();
        (s.ep.pending.clone(), s.ep.lost.clone())
    }
    pub fn options(&self) -> SimOptions {
        self.state.lock().expect("sim").opts.clone()
    }

    pub fn set_faults(&self, f: Faults) {
        let refuse = f.refuse;
        self.state.lock().expect("sim").faults = f;
        self.refuse_tx.send_replace(refuse);
    }
    pub fn faults(&self) -> Faults {
        self.state.lock().expect("sim").faults.clone()
    }
    pub fn balance(&self, customer_id: &str) -> Option<i64> {
        self.state
            .lock()
            .expect("sim")
            .customer(customer_id)
            .map(|c| c.point)
    }
    pub fn customer(&self, customer_id: &str) -> Option<SimCustomer> {
        self.state
            .lock()
            .expect("sim")
            .customer(customer_id)
            .cloned()
    }
    /// Sets a customer's expiry date (`YYYY-MM-DD`), e.g. to the past to test expiry.
    pub fn set_expiry(&self, customer_id: &str, date: Option<&str>) {
        let mut s = self.state.lock().expect("sim");
        if let Some(k) = s.by_id.get(customer_id).copied()
            && let Some(c) = s.customers.get_mut(&k)
        {
            c.expire_date = date.map(str::to_string);
            s.dirty = true;
        }
    }
    pub fn adds(&self) -> Vec<AppliedAdd> {
        self.state.lock().expect("sim").adds.clone()
    }
    pub fn request_count(&self) -> u64 {
        self.state.lock().expect("sim").requests
    }
    /// Token requests served (including refused ones).
    pub fn token_request_count(&self) -> u64 {
        self.state.lock().expect("sim").token_requests
    }
    /// Forgets every issued access token, as if they had expired.
    pub fn revoke_tokens(&self) {
        self.state.lock().expect("sim").tokens.clear();
    }
    /// Changes a customer's balance behind the agent's back (another store, the online shop),
    /// listed as a point add or subtract (division 6/7). Unlike [`SimHandle::online_change`]
    /// it does not check the balance: a test may drive it below zero.
    pub fn add_elsewhere(&self, customer_id: &str, delta: i64) {
        let mut s = self.state.lock().expect("sim");
        if let Some(k) = s.by_id.get(customer_id).copied()
            && let Some(c) = s.customers.get_mut(&k)
        {
            c.point += delta;
            s.dirty = true;
            s.record_change(k, if delta < 0 { 7 } else { 6 }, ONLINE_STORE);
        }
    }

    /// A sale or return at a register elsewhere (division 1) whose net point effect is
    /// `delta`; refused if it would take the balance below zero.
    pub fn sale_elsewhere(&self, customer_id: &str, delta: i64) -> Result<SimTxn, ElsewhereError> {
        self.elsewhere(customer_id, Elsewhere::Sale { delta })
    }

    /// A change from the online shop through Smapify (division 6 add, 7 subtract).
    pub fn online_change(&self, customer_id: &str, delta: i64) -> Result<SimTxn, ElsewhereError> {
        self.elsewhere(customer_id, Elsewhere::Online { delta })
    }

    /// The customer's points expire now (division 8): the balance becomes 0.
    pub fn expire_now(&self, customer_id: &str) -> Result<SimTxn, ElsewhereError> {
        self.elsewhere(customer_id, Elsewhere::Expiry)
    }

    /// Any change from elsewhere, with its balance effect and its transaction-list entry.
    pub fn elsewhere(&self, customer_id: &str, kind: Elsewhere) -> Result<SimTxn, ElsewhereError> {
        self.state.lock().expect("sim").elsewhere(customer_id, kind)
    }

    /// A register's sale, return or void reaching the server now (an offline register's
    /// upload: `sold_ms_ago` > 0), with its points applied to the customer's balance.
    pub fn register_sale(&self, r: &RegisterSale) -> Result<SimTxn, ElsewhereError> {
        self.state.lock().expect("sim").register_sale(r)
    }

    /// Switches a store's point conditions (`pointUseDivision`), as its owner would in the
    /// Smaregi back office; adds the store if it is not there.
    pub fn set_store_points(&self, store_id: u32, points_on: bool) {
        let mut s = self.state.lock().expect("sim");
        match s.opts.stores.iter_mut().find(|x| x.store_id == store_id) {
            Some(x) => x.points_on = points_on,
            None => s.opts.stores.push(SimStore {
                store_id,
                name: format!("store {store_id}"),
                points_on,
            }),
        }
    }

    /// Edits a customer's last name in the directory: their directory `updDateTime` moves, so
    /// the next `/pos/customers` window shows them.
    pub fn edit_customer(&self, customer_id: &str, last_name: &str) -> Option<SimCustomer> {
        self.state
            .lock()
            .expect("sim")
            .edit_customer(customer_id, last_name)
    }

    /// Requests per `User-Agent` so far (every request received, whatever the answer).
    pub fn requests_by_agent(&self) -> BTreeMap<String, AgentCounts> {
        self.state.lock().expect("sim").agents.clone()
    }

    /// The transaction list as served (every division, in order).
    pub fn transactions(&self) -> Vec<SimTxn> {
        self.state.lock().expect("sim").transactions.clone()
    }

    /// Stops serving: closes the listeners, cuts every open connection and waits until every
    /// task the simulator spawned (connections included) has ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sim(o: SimOptions) -> SimHandle {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        SimHandle::start(any, any, o).await.unwrap()
    }

    fn client(agent: &str) -> reqwest::Client {
        crate::http_client_builder()
            .no_proxy()
            .user_agent(agent)
            .build()
            .unwrap()
    }

    async fn token(http: &reqwest::Client, s: &SimHandle) -> reqwest::Response {
        http.post(format!("{}/app/sim-contract/token", s.url()))
            .basic_auth("sim-client", Some("sim-secret"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
    }

    /// `GET /pos/stores/{id}` answers the store's point conditions with
    /// `with_point_condition=all` (both settings), refuses other values, needs
    /// `pos.stores:read`; a register sale uploaded late is listed with its points, its store
    /// and its own sale time, found by upd_date_time and moving the balance.
    #[tokio::test]
    async fn stores_have_point_conditions_and_register_sales_are_listed_late() {
        let s = sim(SimOptions {
            customers: 5,
            ..SimOptions::default()
        })
        .await;
        let http = client("pointsd/t (store a)");
        let tok: serde_json::Value = token(&http, &s).await.json().await.unwrap();
        let bearer = tok["access_token"].as_str().unwrap().to_string();
        let get = |path: String| {
            let (http, bearer) = (http.clone(), bearer.clone());
            async move {
                let r = http.get(path).bearer_auth(bearer).send().await.unwrap();
                let st = r.status().as_u16();
                (st, r.json::<serde_json::Value>().await.unwrap_or_default())
            }
        };
        let store = |id: &str, q: &str| format!("{}/sim-contract/pos/stores/{id}{q}", s.url());
        let (st, v) = get(store("1", "?with_point_condition=all")).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["storeId"], "1");
        assert_eq!(v["pointCondition"]["pointUseDivision"], "1", "{v}");
        let (st, v) = get(store("4", "?with_point_condition=all")).await;
        assert_eq!(
            (st, v["pointCondition"]["pointUseDivision"].as_str()),
            (200, Some("0"))
        );
        let (_, v) = get(store("1", "")).await;
        assert!(v.get("pointCondition").is_none(), "none by default: {v}");
        assert_eq!(get(store("1", "?with_point_condition=yes")).await.0, 400);
        assert_eq!(get(store("99", "?with_point_condition=all")).await.0, 404);
        s.set_store_points(1, false);
        let (_, v) = get(store("1", "?with_point_condition=all")).await;
        assert_eq!(v["pointCondition"]["pointUseDivision"], "0");

        // A register sale rung up two days ago, uploaded now.
        let before = s.balance("2").unwrap();
        let t = s
            .register_sale(&RegisterSale {
                store_id: 2,
                customer_id: "2".into(),
                new_point: 12,
                spend_point: 0,
                sold_ms_ago: 2 * 86_400_000,
                kind: RegisterKind::Sale,
            })
            .unwrap();
        assert_eq!(s.balance("2"), Some(before + 12));
        // A store whose points are off moves none.
        assert_eq!(
            s.register_sale(&RegisterSale {
                store_id: 4,
                customer_id: "2".into(),
                new_point: 1,
                spend_point: 0,
                sold_ms_ago: 0,
                kind: RegisterKind::Sale,
            }),
            Err(ElsewhereError::PointsOff(4))
        );
        let head = t.transaction_head_id.to_string();
        let now = state::now_ms();
        let window = |name: &str, from: i64| {
            format!(
                "{}/sim-contract/pos/transactions?{name}-from={}&{name}-to={}",
                s.url(),
                crate::clock::smaregi_stamp(from).replace('+', "%2B"),
                crate::clock::smaregi_stamp(now + 1000).replace('+', "%2B"),
            )
        };
        let (st, v) = get(window("upd_date_time", now - 60_000)).await;
        assert_eq!(st, 200, "{v}");
        let row = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["transactionHeadId"] == head.as_str())
            .unwrap_or_else(|| panic!("the late upload is listed by upd_date_time: {v}"))
            .clone();
        assert_eq!(
            (
                row["transactionHeadDivision"].as_str(),
                row["storeId"].as_str()
            ),
            (Some("1"), Some("2"))
        );
        assert_eq!(
            (row["newPoint"].as_str(), row["spendPoint"].as_str()),
            (Some("12"), Some("0"))
        );
        let sold = crate::clock::parse_stamp(row["transactionDateTime"].as_str().unwrap()).unwrap();
        let upd = crate::clock::parse_stamp(row["updDateTime"].as_str().unwrap()).unwrap();
        assert!(upd - sold >= 2 * 86_400_000 - 1000, "{row}");
        // By the register's own time it falls outside the last minute.
        let (_, v) = get(window("transaction_date_time", now - 60_000)).await;
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .all(|r| r["transactionHeadId"] != head.as_str()),
            "{v}"
        );
    }

    #[tokio::test]
    async fn the_limits_are_the_contracts_and_throttled_answers_say_when() {
        let s = sim(SimOptions {
            customers: 5,
            read_limit_per_s: Some(3),
            write_limit_per_s: Some(1),
            ..SimOptions::default()
        })
        .await;
        let (a, b) = (client("pointsd/t (store a)"), client("pointsd/t (store b)"));
        // Two clients share one contract: three reads in all, then 429.
        let tok: serde_json::Value = token(&a, &s).await.json().await.unwrap();
        let bearer = tok["access_token"].as_str().unwrap().to_string();
        let r = a
            .get(format!("{}/sim-contract/pos/customers/point", s.url()))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(token(&b, &s).await.status(), 200);
        let r = token(&b, &s).await;
        assert_eq!(r.status(), 429);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["title"], "Too Many Requests");
        // The write budget is separate: one point/add passes while reads are exhausted.
        let add = |http: reqwest::Client| {
            let (url, bearer) = (s.url(), bearer.clone());
            async move {
                http.post(format!("{url}/sim-contract/pos/customers/1/point/add"))
                    .bearer_auth(bearer)
                    .json(&serde_json::json!({"point": "5"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(add(a.clone()).await, 200);
        assert_eq!(add(b.clone()).await, 429);
        let counts = s.requests_by_agent();
        let ca = &counts["pointsd/t (store a)"];
        let cb = &counts["pointsd/t (store b)"];
        assert_eq!((ca.reads, ca.tokens, ca.writes, ca.throttled), (2, 1, 1, 0));
        assert_eq!((cb.reads, cb.tokens, cb.writes, cb.throttled), (2, 2, 1, 2));
        // The admin API shows the same.
        let v: BTreeMap<String, AgentCounts> = client("admin")
            .get(format!("{}/_sim/requests", s.admin_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, counts);
        assert_eq!(s.adds()[0].agent, "pointsd/t (store a)");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn the_admin_api_makes_changes_from_elsewhere() {
        let s = sim(SimOptions {
            customers: 5,
            ..SimOptions::default()
        })
        .await;
        let http = client("admin");
        let post = |body: serde_json::Value| {
            let http = http.clone();
            let url = format!("{}/_sim/elsewhere", s.admin_url());
            async move {
                let r = http.post(url).json(&body).send().await.unwrap();
                (
                    r.status().as_u16(),
                    r.json::<serde_json::Value>().await.unwrap(),
                )
            }
        };
        let before = s.balance("2").unwrap();
        let (st, v) =
            post(serde_json::json!({"customer_id": "2", "kind": "online", "delta": 30})).await;
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["transaction"]["division"], 6);
        assert_eq!(v["balance"], before + 30);
        let (st, v) =
            post(serde_json::json!({"customer_id": "2", "kind": "sale", "delta": -10})).await;
        assert_eq!((st, v["transaction"]["division"].as_u64()), (201, Some(1)));
        let (st, _) = post(serde_json::json!({"customer_id": "2", "kind": "expiry"})).await;
        assert_eq!(st, 201);
        assert_eq!(s.balance("2"), Some(0));
        let (st, _) = post(serde_json::json!({"customer_id": "2", "kind": "expiry"})).await;
        assert_eq!(st, 409);
        let (st, _) = post(serde_json::json!({"customer_id": "2", "kind": "sale"})).await;
        assert_eq!(st, 400);
        let (st, _) =
            post(serde_json::json!({"customer_id": "x", "kind": "online", "delta": 1})).await;
        assert_eq!(st, 404);
        let divisions: Vec<u8> = s.transactions().iter().map(|t| t.division).collect();
        assert_eq!(divisions, vec![6, 1, 8]);
        // The handle's switches do the same.
        s.online_change("3", 7).unwrap();
        assert!(s.sale_elsewhere("3", -1_000_000).is_err());
        assert_eq!(s.transactions().len(), 4);
        let c = s.edit_customer("3", "山田").unwrap();
        assert_eq!(s.customer("3").unwrap().last_name, c.last_name);
        s.shutdown().await;
    }

    #[tokio::test]
    async fn the_feed_lists_are_strict_and_follow_changes() {
        let s = sim(SimOptions {
            customers: 20,
            ..SimOptions::default()
        })
        .await;
        let http = client("pointsd/t (store a)");
        let tok: serde_json::Value = token(&http, &s).await.json().await.unwrap();
        let bearer = tok["access_token"].as_str().unwrap().to_string();
        let get = |path: &'static str, q: Vec<(&'static str, String)>| {
            let (http, url, bearer) = (http.clone(), s.url(), bearer.clone());
            async move {
                let r = http
                    .get(format!("{url}/sim-contract{path}"))
                    .bearer_auth(bearer)
                    .query(&q)
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.json::<serde_json::Value>().await.unwrap(),
                )
            }
        };
        let now = state::now_ms();
        let from = crate::clock::smaregi_stamp(now - 3_600_000);
        let to = crate::clock::smaregi_stamp(now + 3_600_000);
        let window = |extra: Vec<(&'static str, String)>| {
            let mut q = vec![
                ("upd_date_time-from", from.clone()),
                ("upd_date_time-to", to.clone()),
            ];
            q.extend(extra);
            q
        };
        // The sample members signed up long ago: no recent window lists them.
        let (st, v) = get("/pos/customers", window(vec![])).await;
        assert_eq!((st, v.as_array().unwrap().len()), (200, 0), "{v}");
        // A directory edit does; a point change does not (it is a transaction).
        s.edit_customer("7", "伊藤").unwrap();
        s.online_change("8", 5).unwrap();
        s.sale_elsewhere("9", 3).unwrap();
        let (_, v) = get("/pos/customers", window(vec![])).await;
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v[0]["customerId"], "7");
        assert_eq!(v[0]["lastName"], "伊藤");
        let (st, v) = get(
            "/pos/transactions",
            window(vec![("sort", "updDateTime".into())]),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let ids: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["customerId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["8", "9"]);
        assert_eq!(v[1]["transactionHeadDivision"], "1");
        let (_, v) = get(
            "/pos/transactions",
            window(vec![("sort", "updDateTime:desc".into())]),
        )
        .await;
        assert_eq!(v[0]["customerId"], "9");
        // One customer's transactions: a read-back, not counted as the feed.
        let (_, v) = get(
            "/pos/transactions",
            window(vec![("customer_code", "M000008".into())]),
        )
        .await;
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        // Refused: no window, a window over 31 days, one end only, a filter the list lacks, a
        // page size over 1000, an unknown sort.
        let long_from = crate::clock::smaregi_stamp(now - 32 * 24 * 3_600_000);
        for (path, q) in [
            ("/pos/transactions", vec![]),
            (
                "/pos/transactions",
                vec![
                    ("upd_date_time-from", long_from.clone()),
                    ("upd_date_time-to", to.clone()),
                ],
            ),
            (
                "/pos/customers",
                vec![
                    ("upd_date_time-from", long_from.clone()),
                    ("upd_date_time-to", to.clone()),
                ],
            ),
            ("/pos/customers", vec![("upd_date_time-from", from.clone())]),
            (
                "/pos/transactions",
                window(vec![("customer_id", "8".into())]),
            ),
            ("/pos/transactions", window(vec![("limit", "1001".into())])),
            ("/pos/transactions", window(vec![("sort", "total".into())])),
        ] {
            let (st, v) = get(path, q.clone()).await;
            assert_eq!(st, 400, "{path} {q:?}: {v}");
            assert!(v["detail"].is_string(), "{v}");
        }
        // The feed reads were counted as such.
        let c = &s.requests_by_agent()["pointsd/t (store a)"];
        assert_eq!(c.feed, 11);
        s.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_ends_open_connections() {
        let s = sim(SimOptions {
            customers: 1,
            ..SimOptions::default()
        })
        .await;
        // An idle keep-alive connection and one stuck in a slow request.
        let mut idle = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut idle,
            b"GET /x/pos/customers HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await
        .unwrap();
        s.set_faults(Faults {
            latency_ms: 60_000,
            ..Faults::default()
        });
        let slow = tokio::spawn({
            let url = s.url();
            async move {
                client("slow")
                    .get(format!("{url}/sim-contract/pos/customers"))
                    .send()
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::time::timeout(Duration::from_secs(5), s.shutdown())
            .await
            .expect("shutdown waits for connections and cuts them");
        assert!(slow.await.unwrap().is_err(), "the slow request was cut");
    }
}
