//! The easyPoints API (a Smapify merchant's Shopify-side ledger) and a Smapify mirror between
//! it and the simulated Smaregi contract, served under `/api/shopify` on the API port.
//!
//! As strict as the vendor's documentation (easypoints-docs.netlify.app/api): HTTP Basic
//! `public_key:secret_key` (401 otherwise), `GET /point_balances/{shopify_customer_id}` (404
//! for a customer easyPoints does not know), `GET /point_allotments` paged (`page`,
//! `per_page` ≤ 250, else 400) and filtered by `type`, `after`, `before` (ISO 8601, else 400).
//! Undocumented, so assumed: a rate limit (429 + `Retry-After`; the default of 5/s is ours),
//! the 404 body (`{"errors": {"detail": ..}}`).
//!
//! Expiry is by inactivity: when `expiration_delay` months pass without activity the whole
//! balance goes to 0; every allotment is activity and moves `expires_at`. Smapify carries every
//! Smaregi `point/add` and register sale to easyPoints (as an allotment with
//! `app_reference: "Smapify"`) after `delay_ms`, and easyPoints changes (online orders, an
//! expiry) to Smaregi the other way. Switches ([`EpFaults`]) lose mirrored changes (the
//! difference Smapify cannot heal), pause Smapify, or take easyPoints down or slow.
//!
//! Every request is logged (method, path, status), so a test can assert the agent never
//! writes here.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::state::{Elsewhere, ElsewhereError, Shared, SimState, now_ms};

/// The prefix the easyPoints API is served under (its production base ends the same way).
pub const PREFIX: &str = "/api/shopify";

/// Shopify ids of the sample customers: this plus the Smaregi key (so they look like ids).
const SHOPIFY_ID_BASE: u64 = 6_000_000_000;

/// easyPoints' own side of the simulator's options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EasyPointsSimOptions {
    pub public_key: String,
    pub secret_key: String,
    /// Requests per second over every client (429 beyond it); `None`: no limit. easyPoints
    /// documents none: 5 is an assumption, kept configurable.
    pub rate_limit_per_s: Option<u32>,
}

impl Default for EasyPointsSimOptions {
    fn default() -> Self {
        EasyPointsSimOptions {
            public_key: "sim-ep-public".into(),
            secret_key: "sim-ep-secret".into(),
            rate_limit_per_s: Some(5),
        }
    }
}

/// Smapify between the two ledgers; `SimOptions::smapify = None`: no Smapify merchant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SmapifyOptions {
    /// How long Smapify takes to carry a change to the other ledger.
    pub delay_ms: u64,
    /// Smapify's start number: a member code is the Shopify id plus this.
    pub code_offset: i64,
    /// Smapify appends a check digit to member codes.
    pub check_digit: bool,
    /// easyPoints' `expiration_delay`: months without activity before a balance expires.
    pub expiration_delay_months: i64,
}

impl Default for SmapifyOptions {
    fn default() -> Self {
        SmapifyOptions {
            delay_ms: 2_000,
            code_offset: 0,
            check_digit: false,
            expiration_delay_months: 12,
        }
    }
}

/// Switches for the easyPoints side, flipped while it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EpFaults {
    /// Smapify loses the next this many changes it would carry (either way).
    pub lose_next: u32,
    /// Smapify is not running: nothing is carried (changes wait until it runs again).
    pub paused: bool,
    /// easyPoints answers 503.
    pub down: bool,
    /// Added to every easyPoints request.
    pub latency_ms: u64,
}

/// One customer in easyPoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpCustomer {
    pub shopify_id: String,
    /// The point balance's own uid (allotments name it, not the customer).
    pub uid: String,
    /// The Smaregi member it is synced with.
    pub smaregi_customer_id: String,
    pub point_balance: i64,
    /// Unix ms when the balance expires without activity.
    pub expires_at_ms: i64,
}

/// One entry of the allotment ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpAllotment {
    pub uid: String,
    pub point_value: i64,
    pub point_balance_uid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub app_reference: String,
    pub alloted_at_ms: i64,
}

/// A change Smapify is carrying.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mirror {
    pub due_ms: i64,
    /// `"easypoints"` or `"smaregi"`: where it goes.
    pub to: String,
    pub smaregi_customer_id: String,
    pub delta: i64,
}

/// One request as the easyPoints side received it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
pub(super) struct EpState {
    pub customers: BTreeMap<String, EpCustomer>,
    /// Smaregi customer id → Shopify id.
    pub by_smaregi: BTreeMap<String, String>,
    pub allotments: Vec<EpAllotment>,
    pub pending: Vec<Mirror>,
    /// Changes Smapify lost (the `lose_next` switch).
    pub lost: Vec<Mirror>,
    pub faults: EpFaults,
    pub requests: Vec<EpRequest>,
    window: VecDeque<Instant>,
}

/// The member code Smapify's customer sync gives the simulator's sample customer `key`.
pub fn sample_member_code(key: u64, o: &SmapifyOptions) -> String {
    member_code(SHOPIFY_ID_BASE + key, o)
}

/// A member code as Smapify writes it for a Shopify id.
fn member_code(shopify_id: u64, o: &SmapifyOptions) -> String {
    let n = (shopify_id as i128 + o.code_offset as i128).to_string();
    if !o.check_digit {
        return n;
    }
    // A modulus-10 (weights 3/1, as JAN codes) digit; the agent only drops it.
    let sum: u32 = n
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{n}{}", (10 - sum % 10) % 10)
}

/// `months` calendar months after `ms` (the day clamped to the month's length).
fn add_months(ms: i64, months: i64) -> i64 {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return ms;
    };
    let total = t.year() as i64 * 12 + (t.month() as i64 - 1) + months;
    let (year, month0) = (total.div_euclid(12) as i32, total.rem_euclid(12) as u8);
    let Ok(month) = time::Month::try_from(month0 + 1) else {
        return ms;
    };
    let day = t.day().min(month.length(year));
    time::Date::from_calendar_date(year, month, day)
        .map(|d| (t.replace_date(d).unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(ms)
}

fn iso(ms: i64) -> String {
    // The documented shape: microseconds and `Z`.
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .unwrap_or_default()
}

impl SimState {
    /// With Smapify on: member codes become Shopify ids (as Smapify's customer sync writes
    /// them), Smaregi's expiry dates are empty, and every member gets an easyPoints balance
    /// equal to their Smaregi one.
    pub(super) fn start_smapify(&mut self) {
        let Some(o) = self.opts.smapify.clone() else {
            return;
        };
        let now = now_ms();
        for (key, c) in self.customers.iter_mut() {
            let shopify = SHOPIFY_ID_BASE + key;
            c.code = sample_member_code(*key, &o);
            // Smapify requires Smaregi's own expiry switched off: easyPoints owns it.
            c.expire_date = None;
            let id = shopify.to_string();
            self.ep.by_smaregi.insert(c.customer_id.clone(), id.clone());
            self.ep.customers.insert(
                id.clone(),
                EpCustomer {
                    uid: format!("pb-{id}"),
                    shopify_id: id,
                    smaregi_customer_id: c.customer_id.clone(),
                    point_balance: c.point,
                    expires_at_ms: add_months(now, o.expiration_delay_months),
                },
            );
        }
    }

    /// A change to Smaregi points (a `point/add`, a register sale) that Smapify carries to
    /// easyPoints.
    pub(super) fn smapify_from_smaregi(&mut self, customer_id: &str, delta: i64) {
        self.smapify_carry("easypoints", customer_id, delta);
    }

    fn smapify_carry(&mut self, to: &str, customer_id: &str, delta: i64) {
        let Some(o) = &self.opts.smapify else {
            return;
        };
        if delta == 0 {
            return;
        }
        let m = Mirror {
            due_ms: now_ms() + o.delay_ms as i64,
            to: to.into(),
            smaregi_customer_id: customer_id.into(),
            delta,
        };
        if self.ep.faults.lose_next > 0 {
            self.ep.faults.lose_next -= 1;
            self.ep.lost.push(m);
        } else {
            self.ep.pending.push(m);
        }
    }

    fn allot(&mut self, shopify_id: &str, delta: i64, kind: &str, app: &str, now: i64) {
        let months = self
            .opts
            .smapify
            .as_ref()
            .map_or(12, |o| o.expiration_delay_months);
        let Some(c) = self.ep.customers.get_mut(shopify_id) else {
            return;
        };
        c.point_balance += delta;
        // Activity moves the expiry (an expiry itself is no activity).
        if kind != "expiration" {
            c.expires_at_ms = add_months(now, months);
        }
        let uid = format!("al-{}", self.ep.allotments.len() + 1);
        let point_balance_uid = c.uid.clone();
        self.ep.allotments.push(EpAllotment {
            uid,
            point_value: delta,
            point_balance_uid,
            kind: kind.into(),
            app_reference: app.into(),
            alloted_at_ms: now,
        });
    }

    /// Applies what is due: inactivity expiries, and the changes Smapify has carried.
    pub(super) fn ep_tick(&mut self) {
        if self.opts.smapify.is_none() {
            return;
        }
        let now = now_ms();
        let expired: Vec<(String, i64)> = self
            .ep
            .customers
            .values()
            .filter(|c| c.point_balance > 0 && now >= c.expires_at_ms)
            .map(|c| (c.shopify_id.clone(), c.point_balance))
            .collect();
        for (id, balance) in expired {
            self.allot(&id, -balance, "expiration", "easyPoints", now);
            let smaregi = self.ep.customers[&id].smaregi_customer_id.clone();
            self.smapify_carry("smaregi", &smaregi, -balance);
        }
        if self.ep.faults.paused {
            return;
        }
        let (due, later): (Vec<Mirror>, Vec<Mirror>) = std::mem::take(&mut self.ep.pending)
            .into_iter()
            .partition(|m| m.due_ms <= now);
        self.ep.pending = later;
        for m in due {
            if m.to == "easypoints" {
                if let Some(id) = self.ep.by_smaregi.get(&m.smaregi_customer_id).cloned() {
                    self.allot(&id, m.delta, "api", "Smapify", now);
                }
            } else {
                let r =
                    self.elsewhere(&m.smaregi_customer_id, Elsewhere::Online { delta: m.delta });
                if let Err(ElsewhereError::Insufficient { .. }) = r {
                    // An expiry carried over: Smaregi has less than easyPoints took away.
                    let _ = self.elsewhere(&m.smaregi_customer_id, Elsewhere::Expiry);
                }
            }
        }
    }

    /// An online order in the Shopify shop: easyPoints changes now, Smaregi when Smapify
    /// has carried it.
    pub(super) fn ep_order(&mut self, shopify_id: &str, delta: i64) -> Result<EpCustomer, String> {
        self.ep_tick();
        let c = self
            .ep
            .customers
            .get(shopify_id)
            .ok_or_else(|| "customer not found".to_string())?;
        if c.point_balance + delta < 0 {
            return Err(format!(
                "point balance {} is too small for {delta}",
                c.point_balance
            ));
        }
        let smaregi = c.smaregi_customer_id.clone();
        self.allot(shopify_id, delta, "fulfillment", "easyPoints", now_ms());
        self.smapify_carry("smaregi", &smaregi, delta);
        Ok(self.ep.customers[shopify_id].clone())
    }

    fn ep_admit(&mut self) -> bool {
        let Some(limit) = self.opts.easypoints.rate_limit_per_s else {
            return true;
        };
        let now = Instant::now();
        while self
            .ep
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.ep.window.pop_front();
        }
        if self.ep.window.len() >= limit as usize {
            return false;
        }
        self.ep.window.push_back(now);
        true
    }
}

fn ep_error(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({"errors": {"detail": detail}}))).into_response()
}

/// Logs every request and applies auth, the rate limit and the faults in front of the handlers.
async fn gate(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let authorized = {
        let s = st.lock().expect("sim");
        let o = &s.opts.easypoints;
        let want = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", o.public_key, o.secret_key));
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .is_some_and(|v| v.trim() == want)
    };
    let (latency, down, admitted) = {
        let mut s = st.lock().expect("sim");
        let admitted = s.ep_admit();
        (s.ep.faults.latency_ms, s.ep.faults.down, admitted)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let r = if !admitted {
        let mut r = ep_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    } else if down {
        ep_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
    } else if !authorized {
        let mut r = ep_error(StatusCode::UNAUTHORIZED, "Unauthorized");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"easyPoints\""),
        );
        r
    } else {
        st.lock().expect("sim").ep_tick();
        next.run(req).await
    };
    st.lock().expect("sim").ep.requests.push(EpRequest {
        method: method.to_string(),
        path,
        status: r.status().as_u16(),
    });
    r
}

async fn point_balance(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let s = st.lock().expect("sim");
    let delay = s
        .opts
        .smapify
        .as_ref()
        .map_or(12, |o| o.expiration_delay_months);
    match s.ep.customers.get(&id) {
        Some(c) => Json(json!({"data": {
            "expiration_delay": delay,
            "expires_at": iso(c.expires_at_ms),
            "id": c.shopify_id,
            "point_balance": c.point_balance,
        }}))
        .into_response(),
        None => ep_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllotmentQuery {
    page: Option<u32>,
    per_page: Option<u32>,
    direction: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

async fn allotments(
    State(st): State<Shared>,
    q: Result<Query<AllotmentQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad = |d: &str| ep_error(StatusCode::BAD_REQUEST, d);
    let Ok(Query(q)) = q else {
        return bad("unknown or malformed query parameter");
    };
    let per_page = q.per_page.unwrap_or(250);
    if per_page == 0 || per_page > 250 {
        return bad("per_page must be 1..=250");
    }
    let page = q.page.unwrap_or(1).max(1);
    let bound = |v: &Option<String>| match v {
        None => Ok(None),
        Some(s) => crate::clock::parse_stamp(s)
            .or_else(|| crate::clock::parse_stamp(&format!("{s}Z")))
            .map(Some)
            .ok_or(()),
    };
    let (Ok(after), Ok(before)) = (bound(&q.after), bound(&q.before)) else {
        return bad("after and before must be ISO 8601 timestamps");
    };
    let desc = match q
        .direction
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return bad("direction must be asc or desc"),
    };
    let s = st.lock().expect("sim");
    let mut items: Vec<&EpAllotment> =
        s.ep.allotments
            .iter()
            .filter(|a| q.kind.as_ref().is_none_or(|k| &a.kind == k))
            .filter(|a| after.is_none_or(|t| a.alloted_at_ms > t))
            .filter(|a| before.is_none_or(|t| a.alloted_at_ms < t))
            .collect();
    if desc {
        items.reverse();
    }
    let data: Vec<_> = items
        .into_iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .map(|a| {
            json!({
                "uid": a.uid,
                "point_value": a.point_value,
                "point_balance_uid": a.point_balance_uid,
                "type": a.kind,
                "app_reference": a.app_reference,
                "alloted_at": iso(a.alloted_at_ms),
                "inserted_at": iso(a.alloted_at_ms),
                "points_deducted": 0,
            })
        })
        .collect();
    Json(json!({ "data": data })).into_response()
}

/// easyPoints' write endpoints exist in the real API; here they are only logged and refused,
/// so a test sees any write attempt in the request log.
async fn refuse_write(method: Method) -> Response {
    ep_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("the simulator does not accept {method} on easyPoints"),
    )
}

/// The easyPoints routes, nested under [`PREFIX`] on the API port.
pub(super) fn api_router(st: Shared) -> Router {
    let ep = Router::new()
        .route("/point_balances/{id}", get(point_balance))
        .route("/point_allotments", get(allotments).post(refuse_write))
        .route(
            "/point_balances/{id}/set_balance",
            axum::routing::post(refuse_write),
        )
        .fallback(|| async { ep_error(StatusCode::NOT_FOUND, "Not Found") })
        .layer(middleware::from_fn_with_state(st.clone(), gate))
        .with_state(st);
    Router::new().nest(PREFIX, ep)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    shopify_customer_id: String,
    delta: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiryBody {
    /// The balance expires this many seconds from now (as if its last activity was long ago).
    expires_in_s: i64,
}

/// The admin routes (`/_sim/easypoints/...`).
pub(super) fn admin_router(st: Shared) -> Router {
    async fn customer(State(st): State<Shared>, Path(id): Path<String>) -> Response {
        let mut s = st.lock().expect("sim");
        s.ep_tick();
        match s.ep.customers.get(&id) {
            Some(c) => Json(c.clone()).into_response(),
            None => ep_error(StatusCode::NOT_FOUND, "customer not found"),
        }
    }
    async fn set_expiry(
        State(st): State<Shared>,
        Path(id): Path<String>,
        Json(b): Json<ExpiryBody>,
    ) -> Response {
        let mut s = st.lock().expect("sim");
        match s.ep.customers.get_mut(&id) {
            Some(c) => {
                c.expires_at_ms = now_ms() + b.expires_in_s * 1000;
                Json(c.clone()).into_response()
            }
            None => ep_error(StatusCode::NOT_FOUND, "customer not found"),
        }
    }
    async fn order(State(st): State<Shared>, Json(b): Json<OrderBody>) -> Response {
        match st
            .lock()
            .expect("sim")
            .ep_order(&b.shopify_customer_id, b.delta)
        {
            Ok(c) => (StatusCode::CREATED, Json(c)).into_response(),
            Err(e) => ep_error(StatusCode::BAD_REQUEST, &e),
        }
    }
    async fn get_faults(State(st): State<Shared>) -> Json<EpFaults> {
        Json(st.lock().expect("sim").ep.faults.clone())
    }
    async fn put_faults(State(st): State<Shared>, Json(f): Json<EpFaults>) -> Json<EpFaults> {
        st.lock().expect("sim").ep.faults = f.clone();
        Json(f)
    }
    async fn requests(State(st): State<Shared>) -> Json<Vec<EpRequest>> {
        Json(st.lock().expect("sim").ep.requests.clone())
    }
    async fn mirror(State(st): State<Shared>) -> Json<serde_json::Value> {
        let mut s = st.lock().expect("sim");
        s.ep_tick();
        Json(json!({"pending": s.ep.pending, "lost": s.ep.lost}))
    }
    Router::new()
        .route(
            "/_sim/easypoints/customers/{id}",
            get(customer).patch(set_expiry),
        )
        .route("/_sim/easypoints/orders", axum::routing::post(order))
        .route("/_sim/easypoints/faults", get(get_faults).put(put_faults))
        .route("/_sim/easypoints/requests", get(requests))
        .route("/_sim/easypoints/mirror", get(mirror))
        .with_state(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_codes_round_trip_through_the_agents_mapping() {
        use crate::config::CheckDigit;
        use crate::upstream::easypoints::shopify_id;
        for (offset, check) in [(0, false), (1_000_000, false), (0, true), (500, true)] {
            let o = SmapifyOptions {
                code_offset: offset,
                check_digit: check,
                ..SmapifyOptions::default()
            };
            let code = member_code(6_000_000_042, &o);
            let c = if check {
                CheckDigit::Trailing
            } else {
                CheckDigit::None
            };
            assert_eq!(
                shopify_id(&code, offset, c).as_deref(),
                Some("6000000042"),
                "{code}"
            );
        }
    }

    fn client() -> reqwest::Client {
        crate::http_client_builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn easypoints_is_strict_and_smapify_carries_both_ways() {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let s = super::super::SimHandle::start(
            any,
            any,
            super::super::SimOptions {
                customers: 3,
                easypoints: EasyPointsSimOptions {
                    rate_limit_per_s: Some(3),
                    ..EasyPointsSimOptions::default()
                },
                smapify: Some(SmapifyOptions {
                    delay_ms: 0,
                    ..SmapifyOptions::default()
                }),
                ..super::super::SimOptions::default()
            },
        )
        .await
        .unwrap();
        let http = client();
        let id = s.shopify_id("1").unwrap();
        let url = format!("{}/point_balances/{id}", s.easypoints_url());
        let get = |url: String, auth: Option<(&'static str, &'static str)>| {
            let http = http.clone();
            async move {
                let mut r = http.get(url);
                if let Some((u, p)) = auth {
                    r = r.basic_auth(u, Some(p));
                }
                let r = r.send().await.unwrap();
                (
                    r.status().as_u16(),
                    r.json::<serde_json::Value>().await.unwrap_or_default(),
                )
            }
        };
        let good = Some(("sim-ep-public", "sim-ep-secret"));
        // Basic auth is required; a known customer answers the documented shape.
        assert_eq!(get(url.clone(), None).await.0, 401);
        assert_eq!(
            get(url.clone(), Some(("sim-ep-public", "wrong"))).await.0,
            401
        );
        let (st, v) = get(url.clone(), good).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"]["id"], id.as_str());
        assert_eq!(v["data"]["point_balance"], s.balance("1").unwrap());
        assert_eq!(v["data"]["expiration_delay"], 12);
        // The limit counts every request: the fourth within a second is 429.
        let (st, _) = get(url.clone(), good).await;
        assert_eq!(st, 429);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // Unknown customers are 404; page sizes beyond 250 are refused.
        assert_eq!(
            get(format!("{}/point_balances/42", s.easypoints_url()), good)
                .await
                .0,
            404
        );
        let list = format!("{}/point_allotments", s.easypoints_url());
        assert_eq!(get(format!("{list}?per_page=251"), good).await.0, 400);
        assert_eq!(get(format!("{list}?after=yesterday"), good).await.0, 400);

        // A Smaregi change reaches easyPoints as a Smapify allotment; an online order reaches
        // Smaregi; an inactivity expiry zeroes easyPoints and then Smaregi.
        s.sale_elsewhere("1", 5).unwrap();
        s.ep_order(&id, 7).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ep = s.ep_customer(&id).unwrap();
        assert_eq!(ep.point_balance, s.balance("1").unwrap());
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let (st, v) = get(format!("{list}?type=api"), good).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"][0]["app_reference"], "Smapify");
        assert_eq!(v["data"][0]["point_value"], 5);
        s.ep_expire_in(&id, 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.ep_customer(&id).unwrap().point_balance, 0);
        assert_eq!(s.balance("1"), Some(0));
        // A lost change stays lost: the ledgers differ.
        s.set_ep_faults(EpFaults {
            lose_next: 1,
            ..EpFaults::default()
        });
        s.sale_elsewhere("1", 9).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.ep_customer(&id).unwrap().point_balance, 0);
        assert_eq!(s.balance("1"), Some(9));
        assert_eq!(s.smapify_mirror().1.len(), 1);
        // Nothing but GETs reached it, and every one was logged.
        assert!(s.ep_requests().iter().all(|r| r.method == "GET"));
        assert_eq!(s.ep_requests().len(), 8);
        s.shutdown().await;
    }

    #[test]
    fn months_are_calendar_months() {
        let jan31 = crate::clock::parse_stamp("2027-01-31T10:00:00Z").unwrap();
        assert_eq!(iso(add_months(jan31, 1)), "2027-02-28T10:00:00.000000Z");
        assert_eq!(iso(add_months(jan31, 12)), "2028-01-31T10:00:00.000000Z");
    }
}
