//! The upstream simulator: a real HTTP server speaking the Smaregi Platform API subset of
//! DESIGN.md §4 (token, customers, customers/point, point/add), stateful, seeded with sample
//! customers, with fault switches: refuse connections, 5xx, 429 + Retry-After, latency, and
//! "apply then drop the connection" (the ambiguous case). `demo` runs it in-process; tests
//! start it on an ephemeral port and flip faults through [`SimHandle`] or the admin port.
//!
//! It serves connections with hyper directly (not `axum::serve`) so that it can really refuse
//! (close its listener), cut every open connection, and drop one connection mid-request.

// Early returns here are whole HTTP answers; boxing them buys nothing in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Fault switches. Probabilities are 0.0..=1.0 per API request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Close the listener and every open connection: clients see "connection refused".
    pub refuse: bool,
    /// Answer 503 instead of serving.
    pub error_rate: f64,
    /// Answer 429 with `Retry-After: retry_after_s`.
    pub throttle_rate: f64,
    pub retry_after_s: u64,
    /// Added to every API request before it is handled.
    pub latency_ms: u64,
    /// For `point/add`: apply the change, then drop the connection without answering.
    pub drop_after_apply_rate: f64,
    /// Answer 401 to every API request and refuse new tokens (credentials revoked).
    pub reject_tokens: bool,
    /// Answer `point/add` with this status (and a Smaregi-style error body) without applying.
    pub add_status: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimCustomer {
    pub customer_id: String,
    pub code: String,
    pub barcode: String,
    pub last_name: String,
    pub first_name: String,
    pub point: i64,
    pub expire_date: Option<String>,
    pub upd_date_time: String,
}

/// One applied `point/add`, in the order the simulator applied them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedAdd {
    pub customer_id: String,
    pub delta: i64,
    pub balance_after: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimOptions {
    pub customers: u32,
    pub seed: u64,
    pub contract_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl_s: u64,
    /// Optional per-contract request limit per second (429 + Retry-After beyond it).
    pub rate_limit_per_s: Option<u32>,
    /// Keep customers and the add log in this JSON file across restarts (demo).
    pub state_file: Option<PathBuf>,
    /// Stamp `updDateTime` with milliseconds. Off by default: Smaregi's specification gives
    /// `[YYYY-MM-DDThh:mm:ssTZD]`, whole seconds, so two changes in one second look alike.
    #[serde(default)]
    pub subsecond_stamps: bool,
    /// Leave `transactionHeadIds` out of the `point/add` answer, as older API versions do.
    #[serde(default)]
    pub omit_transaction_head_ids: bool,
    /// Scopes the app was granted; a token request for any other is refused (`invalid_scope`)
    /// and an endpoint needing one the token lacks answers 403. Default: all three.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    [
        "pos.customers:read",
        "pos.customers:write",
        "pos.transactions:read",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            customers: 1_000,
            seed: 42,
            contract_id: "sim-contract".into(),
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            token_ttl_s: 3600,
            rate_limit_per_s: None,
            state_file: None,
            subsecond_stamps: false,
            omit_transaction_head_ids: false,
            scopes: default_scopes(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    customers: Vec<SimCustomer>,
    adds: Vec<AppliedAdd>,
    #[serde(default)]
    transactions: Vec<SimTxn>,
}

/// One entry of the transaction list (取引): what `GET /pos/transactions` serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimTxn {
    pub transaction_head_id: u64,
    /// 1 sale/return, 6 point add, 7 point subtract, 8 point expiry.
    pub division: u8,
    pub customer_id: String,
    pub customer_code: String,
    pub store_id: u32,
    /// Unix ms of the change (the stamp shown is cut to whole seconds unless asked not to).
    pub at_ms: i64,
    pub upd_date_time: String,
}

struct IssuedToken {
    until: Instant,
    scopes: Vec<String>,
}

struct SimState {
    opts: SimOptions,
    customers: BTreeMap<u64, SimCustomer>,
    by_id: HashMap<String, u64>,
    tokens: HashMap<String, IssuedToken>,
    faults: Faults,
    adds: Vec<AppliedAdd>,
    transactions: Vec<SimTxn>,
    requests: u64,
    token_requests: u64,
    window: (Instant, u32),
    dirty: bool,
    rng: rand::rngs::StdRng,
}

type Shared = Arc<Mutex<SimState>>;

const FAMILY: [&str; 12] = [
    "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤", "吉田", "山田",
];
const GIVEN: [&str; 12] = [
    "陽翔",
    "蓮",
    "湊",
    "結衣",
    "陽葵",
    "凛",
    "大翔",
    "葵",
    "悠真",
    "紬",
    "さくら",
    "健",
];

fn now_ms() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.now_ms()
}

/// `updDateTime` as Smaregi writes it: whole seconds in JST, or with milliseconds when the
/// simulator was asked for finer stamps.
fn stamp(ms: i64, subsecond: bool) -> String {
    if !subsecond {
        return crate::clock::smaregi_stamp(ms);
    }
    let off = time::UtcOffset::from_hms(9, 0, 0).expect("offset");
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(|t| t.to_offset(off))
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+09:00"
            ))
            .ok()
        })
        .unwrap_or_default()
}

fn jst_today() -> String {
    use crate::clock::Clock;
    crate::clock::jst_date(crate::clock::SystemClock.now_ms())
}

/// EAN-13 check digit, so sample barcodes scan like real member cards.
fn ean13(first12: &str) -> String {
    let sum: u32 = first12
        .bytes()
        .enumerate()
        .map(|(i, b)| (b - b'0') as u32 * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    format!("{first12}{}", (10 - sum % 10) % 10)
}

pub fn sample_customers(n: u32, seed: u64) -> Vec<SimCustomer> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let today = time::OffsetDateTime::now_utc().date();
    (1..=n)
        .map(|i| {
            let point = match rng.random_range(0..10) {
                0 => 0,
                1..=6 => rng.random_range(1..3_000),
                _ => rng.random_range(3_000..20_000),
            };
            let expire = (point > 0)
                .then(|| (today + time::Duration::days(rng.random_range(30..730))).to_string());
            SimCustomer {
                customer_id: i.to_string(),
                code: format!("M{i:06}"),
                barcode: ean13(&format!("20{i:010}")),
                last_name: FAMILY[rng.random_range(0..FAMILY.len())].into(),
                first_name: GIVEN[rng.random_range(0..GIVEN.len())].into(),
                point,
                expire_date: expire,
                upd_date_time: crate::clock::smaregi_stamp(now_ms()),
            }
        })
        .collect()
}

impl SimState {
    fn new(opts: SimOptions) -> SimState {
        let persisted = opts
            .state_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Persisted>(&b).ok());
        let (list, adds, transactions) = match persisted {
            Some(p) => (p.customers, p.adds, p.transactions),
            None => (
                sample_customers(opts.customers, opts.seed),
                Vec::new(),
                Vec::new(),
            ),
        };
        let mut customers = BTreeMap::new();
        let mut by_id = HashMap::new();
        for (i, c) in list.into_iter().enumerate() {
            // Keep Smaregi's numeric order when ids are numbers.
            let key = c
                .customer_id
                .parse::<u64>()
                .unwrap_or(1_000_000_000 + i as u64);
            by_id.insert(c.customer_id.clone(), key);
            customers.insert(key, c);
        }
        let seed = opts.seed;
        SimState {
            opts,
            customers,
            by_id,
            tokens: HashMap::new(),
            faults: Faults::default(),
            adds,
            transactions,
            requests: 0,
            token_requests: 0,
            window: (Instant::now(), 0),
            dirty: false,
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed),
        }
    }

    /// Smaregi expires points before it answers or adds (DESIGN.md §4); an expiry is a
    /// transaction of division 8.
    fn expire_key(&mut self, key: u64, today: &str) {
        let Some(c) = self.customers.get_mut(&key) else {
            return;
        };
        if let Some(d) = &c.expire_date
            && d.as_str() < today
            && c.point > 0
        {
            c.point = 0;
            self.dirty = true;
            self.record_change(key, 8);
        }
    }

    /// Stamps a customer's change and lists it as a transaction; returns the new id.
    fn record_change(&mut self, key: u64, division: u8) -> u64 {
        let at = now_ms();
        let upd = stamp(at, self.opts.subsecond_stamps);
        let id = 1_000_001 + self.transactions.len() as u64;
        let Some(c) = self.customers.get_mut(&key) else {
            return id;
        };
        c.upd_date_time = upd.clone();
        self.transactions.push(SimTxn {
            transaction_head_id: id,
            division,
            customer_id: c.customer_id.clone(),
            customer_code: c.code.clone(),
            store_id: 1,
            at_ms: at,
            upd_date_time: upd,
        });
        id
    }

    fn persist(&mut self) {
        let Some(path) = self.opts.state_file.clone() else {
            return;
        };
        if !self.dirty {
            return;
        }
        let p = Persisted {
            customers: self.customers.values().cloned().collect(),
            adds: self.adds.clone(),
            transactions: self.transactions.clone(),
        };
        let tmp = path.with_extension("tmp");
        let ok = serde_json::to_vec(&p)
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|_| std::fs::rename(&tmp, &path).ok());
        if ok.is_some() {
            self.dirty = false;
        }
    }
}

fn point_json(c: &SimCustomer) -> serde_json::Value {
    // Numbers as strings, as the real API sends them.
    json!({
        "customerId": c.customer_id,
        "point": c.point.to_string(),
        "mile": "0",
        "pointExpireDate": c.expire_date,
        "insDateTime": "2024-01-01T00:00:00+09:00",
        "updDateTime": c.upd_date_time,
    })
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({"type": "about:blank", "title": title, "detail": detail, "status": status.as_u16()})),
    )
        .into_response()
}

/// Kills the connection a request came in on.
#[derive(Clone)]
struct ConnKill(CancellationToken);

/// Paging and filters arrive as strings; [`page_window`] checks them as the API would.
#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    page: Option<String>,
    customer_id: Option<String>,
    #[serde(rename = "upd_date_time-from")]
    upd_from: Option<String>,
    #[serde(rename = "upd_date_time-to")]
    upd_to: Option<String>,
}

#[derive(Deserialize)]
struct AddBody {
    point: String,
}

struct AddPoint {
    point: i64,
}

async fn token(
    State(st): State<Shared>,
    Path(contract): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let latency = st.lock().expect("sim").faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut s = st.lock().expect("sim");
    s.token_requests += 1;
    if contract != s.opts.contract_id {
        return problem(StatusCode::NOT_FOUND, "Not Found", "unknown contract");
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", s.opts.client_id, s.opts.client_secret))
    );
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given != expected || s.faults.reject_tokens {
        return problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "invalid client credentials",
        );
    }
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "grant_type must be client_credentials",
        );
    }
    // Scopes are space-separated; asking for one the app was not granted is `invalid_scope`
    // (OAuth 2.0, RFC 6749 §5.2), and no token is issued.
    let asked: Vec<String> = form
        .get("scope")
        .map(|v| {
            v.split(' ')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = asked.iter().find(|a| !s.opts.scopes.contains(a)) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_scope", "error_description": format!("scope {bad} is not granted to this app")})),
        )
            .into_response();
    }
    let scopes = if asked.is_empty() {
        s.opts.scopes.clone()
    } else {
        asked
    };
    let tok: String = (0..32)
        .map(|_| format!("{:02x}", s.rng.random::<u8>()))
        .collect();
    let ttl = s.opts.token_ttl_s;
    let scope = scopes.join(" ");
    s.tokens.insert(
        tok.clone(),
        IssuedToken {
            until: Instant::now() + Duration::from_secs(ttl),
            scopes,
        },
    );
    Json(json!({
        "access_token": tok,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scope,
    }))
    .into_response()
}

/// Faults and auth common to every API request. `Err` is the answer to send instead.
async fn gate(
    st: &Shared,
    headers: &HeaderMap,
    contract: &str,
    scope: &str,
) -> Result<(), Response> {
    let latency = st.lock().expect("sim").faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut s = st.lock().expect("sim");
    s.requests += 1;
    if contract != s.opts.contract_id {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            "unknown contract",
        ));
    }
    let f = s.faults.clone();
    let retry_after = f.retry_after_s.max(1);
    if let Some(limit) = s.opts.rate_limit_per_s {
        let now = Instant::now();
        if now.duration_since(s.window.0) >= Duration::from_secs(1) {
            s.window = (now, 0);
        }
        s.window.1 += 1;
        if s.window.1 > limit {
            return Err(throttled(1));
        }
    }
    if f.error_rate > 0.0 && s.rng.random_bool(f.error_rate.min(1.0)) {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "simulated outage",
        ));
    }
    if f.throttle_rate > 0.0 && s.rng.random_bool(f.throttle_rate.min(1.0)) {
        return Err(throttled(retry_after));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let token = s.tokens.get(bearer).filter(|t| t.until > Instant::now());
    let Some(token) = token.filter(|_| !f.reject_tokens) else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "invalid or expired access token",
        ));
    };
    if !token.scopes.iter().any(|s| s == scope) {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("the access token lacks the scope {scope}"),
        ));
    }
    Ok(())
}

fn throttled(retry_after_s: u64) -> Response {
    let mut r = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        "rate limit exceeded",
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&retry_after_s.to_string()).expect("digits"),
    );
    r
}

/// The window a `page`/`limit` query asks for. Only that window is built, so paging through a
/// large directory stays linear.
fn page_window(q: &ListQuery) -> Result<(usize, usize), Response> {
    let bad = |d: &str| problem(StatusCode::BAD_REQUEST, "Bad Request", d);
    // limit defaults to 100 and is 1..=1000; page defaults to 1 and starts at 1 (page=0 is a
    // 400, not the first page). A page past the end is an empty list.
    let limit = match q.limit.as_deref().map(str::parse::<u32>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        _ => return Err(bad("limit must be 1..=1000")),
    };
    let page = match q.page.as_deref().map(str::parse::<u32>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        _ => return Err(bad("page must be a whole number from 1")),
    };
    let start = ((page - 1) as usize).saturating_mul(limit as usize);
    Ok((start, limit as usize))
}

async fn list_points(
    State(st): State<Shared>,
    Path(contract): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&st, &headers, &contract, "pos.customers:read").await {
        return r;
    }
    let (start, limit) = match page_window(&q) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let mut guard = st.lock().expect("sim");
    let s = &mut *guard;
    let today = jst_today();
    let keys: Vec<u64> = match q.customer_id.as_ref() {
        Some(id) => s.by_id.get(id).copied().into_iter().collect(),
        None => s
            .customers
            .keys()
            .skip(start)
            .take(limit)
            .copied()
            .collect(),
    };
    let keys: Vec<u64> = if q.customer_id.is_some() {
        keys.into_iter().skip(start).take(limit).collect()
    } else {
        keys
    };
    let rows: Vec<serde_json::Value> = keys
        .into_iter()
        .filter_map(|k| {
            s.expire_key(k, &today);
            s.customers.get(&k).map(point_json)
        })
        .collect();
    Json(rows).into_response()
}

async fn list_customers(
    State(st): State<Shared>,
    Path(contract): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&st, &headers, &contract, "pos.customers:read").await {
        return r;
    }
    let (start, limit) = match page_window(&q) {
        Ok(w) => w,
        Err(r) => return r,
    };
    // `upd_date_time-from/-to`: customers created or changed in the window (at most 31 days).
    let window = match (&q.upd_from, &q.upd_to) {
        (None, None) => None,
        (f, t) => match date_window(f.as_deref(), t.as_deref(), "upd_date_time") {
            Ok(w) => Some(w),
            Err(r) => return r,
        },
    };
    let s = st.lock().expect("sim");
    let rows: Vec<serde_json::Value> = s
        .customers
        .values()
        .filter(|c| {
            window.is_none_or(|(from, to)| {
                crate::clock::parse_stamp(&c.upd_date_time)
                    .is_some_and(|t| t / 1000 >= from / 1000 && t / 1000 <= to / 1000)
            })
        })
        .skip(start)
        .take(limit)
        .map(|c| {
            json!({
                "customerId": c.customer_id,
                "customerCode": c.code,
                "barcode": c.barcode,
                "lastName": c.last_name,
                "firstName": c.first_name,
                "point": c.point.to_string(),
                "updDateTime": c.upd_date_time,
            })
        })
        .collect();
    Json(rows).into_response()
}

#[derive(Deserialize)]
struct TxnListQuery {
    limit: Option<String>,
    page: Option<String>,
    sort: Option<String>,
    #[serde(rename = "upd_date_time-from")]
    upd_from: Option<String>,
    #[serde(rename = "upd_date_time-to")]
    upd_to: Option<String>,
    #[serde(rename = "transaction_date_time-from")]
    tran_from: Option<String>,
    #[serde(rename = "transaction_date_time-to")]
    tran_to: Option<String>,
    customer_code: Option<String>,
    transaction_head_division: Option<String>,
    store_id: Option<String>,
}

/// A date window filter: both ends, ISO 8601 with an offset, from <= to, at most 31 days
/// (DESIGN.md §4). Anything else is a 400 naming the parameter, as the real API answers.
fn date_window(from: Option<&str>, to: Option<&str>, name: &str) -> Result<(i64, i64), Response> {
    let bad = |detail: String| problem(StatusCode::BAD_REQUEST, "Bad Request", &detail);
    let (Some(f), Some(t)) = (from, to) else {
        return Err(bad(format!(
            "{name}-from and {name}-to must be given together"
        )));
    };
    // A '+' sent unescaped in a query string arrives as a space: refused, as a strict
    // server would (the offset is part of the value).
    let parse = |v: &str, which: &str| {
        crate::clock::parse_stamp(v).ok_or_else(|| {
            bad(format!(
                "{name}-{which} must be ISO 8601 with an offset, e.g. 2026-12-01T10:00:00+09:00 (got {v:?})"
            ))
        })
    };
    let (f, t) = (parse(f, "from")?, parse(t, "to")?);
    if f > t {
        return Err(bad(format!("{name}-from is after {name}-to")));
    }
    if t - f > 31 * 24 * 3600 * 1000 {
        return Err(bad(format!("the {name} window may span at most 31 days")));
    }
    Ok((f, t))
}

async fn list_transactions(
    State(st): State<Shared>,
    Path(contract): Path<String>,
    Query(q): Query<TxnListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&st, &headers, &contract, "pos.transactions:read").await {
        return r;
    }
    let lq = ListQuery {
        limit: q.limit.clone(),
        page: q.page.clone(),
        customer_id: None,
        upd_from: None,
        upd_to: None,
    };
    let (start, limit) = match page_window(&lq) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let upd = match (&q.upd_from, &q.upd_to) {
        (None, None) => None,
        (f, t) => match date_window(f.as_deref(), t.as_deref(), "upd_date_time") {
            Ok(w) => Some(w),
            Err(r) => return r,
        },
    };
    let tran = match (&q.tran_from, &q.tran_to) {
        (None, None) => None,
        (f, t) => match date_window(f.as_deref(), t.as_deref(), "transaction_date_time") {
            Ok(w) => Some(w),
            Err(r) => return r,
        },
    };
    if upd.is_none() && tran.is_none() {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "a date window is required: upd_date_time-from/-to or transaction_date_time-from/-to",
        );
    }
    let desc = match q.sort.as_deref() {
        None | Some("updDateTime") | Some("transactionHeadId") => false,
        Some("-updDateTime") | Some("-transactionHeadId") => true,
        Some(other) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!(
                    "sort {other:?} is not one of updDateTime, transactionHeadId (- for descending)"
                ),
            );
        }
    };
    let s = st.lock().expect("sim");
    // Whole seconds on both ends, inclusive, as the stamps are.
    let within = |w: Option<(i64, i64)>, at: i64| {
        w.is_none_or(|(f, t)| at / 1000 >= f / 1000 && at / 1000 <= t / 1000)
    };
    let mut rows: Vec<&SimTxn> = s
        .transactions
        .iter()
        .filter(|t| within(upd, t.at_ms) && within(tran, t.at_ms))
        .filter(|t| {
            q.customer_code
                .as_ref()
                .is_none_or(|c| *c == t.customer_code)
        })
        .filter(|t| {
            q.transaction_head_division
                .as_ref()
                .is_none_or(|d| *d == t.division.to_string())
        })
        .filter(|t| {
            q.store_id
                .as_ref()
                .is_none_or(|id| *id == t.store_id.to_string())
        })
        .collect();
    // Listed in the order of the change (ties by id): stamps of whole seconds tie often.
    if desc {
        rows.reverse();
    }
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|t| {
            json!({
                "transactionHeadId": t.transaction_head_id.to_string(),
                "transactionDateTime": t.upd_date_time,
                "transactionHeadDivision": t.division.to_string(),
                "cancelDivision": "0",
                "storeId": t.store_id.to_string(),
                "customerId": t.customer_id,
                "customerCode": t.customer_code,
                "total": "0",
                "updDateTime": t.upd_date_time,
            })
        })
        .collect();
    Json(rows).into_response()
}

async fn add_point(
    State(st): State<Shared>,
    Path((contract, customer_id)): Path<(String, String)>,
    Extension(kill): Extension<ConnKill>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = gate(&st, &headers, &contract, "pos.customers:write").await {
        return r;
    }
    let forced = st.lock().expect("sim").faults.add_status;
    if let Some(code) = forced {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return problem(
            status,
            status.canonical_reason().unwrap_or("Error"),
            "simulated failure",
        );
    }
    // The specification writes the change as a string of a signed integer.
    let Some(b) = serde_json::from_slice::<AddBody>(&body)
        .ok()
        .filter(|b| {
            let d = b.point.strip_prefix('-').unwrap_or(&b.point);
            !d.is_empty() && d.len() <= 9 && d.bytes().all(|c| c.is_ascii_digit())
        })
        .and_then(|b| b.point.parse::<i64>().ok().map(|point| AddPoint { point }))
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "point must be a string of a signed integer, e.g. \"-120\"",
        );
    };
    let drop_it = {
        let mut s = st.lock().expect("sim");
        let Some(key) = s.by_id.get(&customer_id).copied() else {
            return problem(StatusCode::NOT_FOUND, "Not Found", "customer not found");
        };
        let today = jst_today();
        let rate = s.faults.drop_after_apply_rate;
        let drop_it = rate > 0.0 && s.rng.random_bool(rate.min(1.0));
        s.expire_key(key, &today);
        let c = s.customers.get_mut(&key).expect("indexed");
        let new = c.point + b.point;
        if new < 0 {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!(
                    "point is insufficient (balance {}, change {})",
                    c.point, b.point
                ),
            );
        }
        c.point = new;
        let id = s.record_change(key, if b.point < 0 { 7 } else { 6 });
        let mut answer = point_json(s.customers.get(&key).expect("indexed"));
        if !s.opts.omit_transaction_head_ids {
            answer["transactionHeadIds"] = json!([id.to_string()]);
        }
        s.adds.push(AppliedAdd {
            customer_id: customer_id.clone(),
            delta: b.point,
            balance_after: new,
        });
        s.dirty = true;
        if !drop_it {
            return Json(answer).into_response();
        }
        drop_it
    };
    debug_assert!(drop_it);
    // Applied, but the client never hears: cut the connection and never answer.
    kill.0.cancel();
    std::future::pending::<()>().await;
    unreachable!()
}

/// The simulator's API router (mounted at both `id_base` and `api_base`).
fn api_router(st: Shared) -> Router {
    Router::new()
        .route("/app/{contract}/token", post(token))
        .route("/{contract}/pos/customers", get(list_customers))
        .route("/{contract}/pos/customers/point", get(list_points))
        .route("/{contract}/pos/transactions", get(list_transactions))
        .route(
            "/{contract}/pos/customers/{customer_id}/point/add",
            post(add_point),
        )
        .with_state(st)
}

/// Admin endpoints for tests and operators of the simulator (never affected by faults).
fn admin_router(st: Shared, refuse: Arc<tokio::sync::watch::Sender<bool>>) -> Router {
    async fn get_faults(State(st): State<Shared>) -> Json<Faults> {
        Json(st.lock().expect("sim").faults.clone())
    }
    let put_faults = move |State(st): State<Shared>, Json(f): Json<Faults>| {
        let refuse = refuse.clone();
        async move {
            st.lock().expect("sim").faults = f.clone();
            // The listener follows the switch (close it, or bind again).
            refuse.send_replace(f.refuse);
            Json(f)
        }
    };
    async fn customer(State(st): State<Shared>, Path(id): Path<String>) -> Response {
        let s = st.lock().expect("sim");
        match s.by_id.get(&id).and_then(|k| s.customers.get(k)) {
            Some(c) => Json(c.clone()).into_response(),
            None => problem(StatusCode::NOT_FOUND, "Not Found", "customer not found"),
        }
    }
    async fn adds(State(st): State<Shared>) -> Json<Vec<AppliedAdd>> {
        Json(st.lock().expect("sim").adds.clone())
    }
    Router::new()
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/customers/{id}", get(customer))
        .route("/_sim/adds", get(adds))
        .with_state(st)
}

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
        tracker.spawn(serve_api(
            listener,
            addr,
            api_router(state.clone()),
            refuse_rx,
            stop.clone(),
        ));
        let admin_app = admin_router(state.clone(), refuse_tx.clone());
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
        let s = self.state.lock().expect("sim");
        s.by_id
            .get(customer_id)
            .and_then(|k| s.customers.get(k))
            .map(|c| c.point)
    }
    pub fn customer(&self, customer_id: &str) -> Option<SimCustomer> {
        let s = self.state.lock().expect("sim");
        s.by_id
            .get(customer_id)
            .and_then(|k| s.customers.get(k))
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
    /// Changes a customer's balance behind the agent's back (another store, the online shop).
    pub fn add_elsewhere(&self, customer_id: &str, delta: i64) {
        let mut s = self.state.lock().expect("sim");
        if let Some(k) = s.by_id.get(customer_id).copied()
            && let Some(c) = s.customers.get_mut(&k)
        {
            c.point += delta;
            s.dirty = true;
            s.record_change(k, if delta < 0 { 7 } else { 6 });
        }
    }

    /// The transaction list as served (every division, in order).
    pub fn transactions(&self) -> Vec<SimTxn> {
        self.state.lock().expect("sim").transactions.clone()
    }

    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

async fn serve_api(
    first: TcpListener,
    addr: SocketAddr,
    app: Router,
    mut refuse: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut listener = Some(first);
    loop {
        // Every connection of this epoch is cut when refusing starts.
        let epoch = stop.child_token();
        if let Some(l) = listener.take() {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => { epoch.cancel(); return; }
                    r = refuse.changed() => {
                        if r.is_err() || *refuse.borrow() { break; }
                    }
                    acc = l.accept() => {
                        let Ok((stream, _)) = acc else { continue };
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_conn(stream, app.clone(), epoch.clone()));
                    }
                }
            }
            drop(l);
            epoch.cancel();
        }
        // Refusing: wait until told to serve again, then rebind the same port.
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = refuse.changed() => {
                    if r.is_err() { return; }
                    if !*refuse.borrow() { break; }
                }
            }
        }
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, %addr, "simulator cannot rebind yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_conn(stream: tokio::net::TcpStream, app: Router, epoch: CancellationToken) {
    let kill = epoch.child_token();
    let k2 = kill.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnKill(k2.clone()));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection future closes the socket without an answer.
        _ = kill.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barcodes_have_valid_check_digits() {
        assert_eq!(ean13("400638133393"), "4006381333931");
        let c = sample_customers(3, 1);
        assert_eq!(c[0].barcode.len(), 13);
        assert_eq!(c[2].code, "M000003");
    }

    #[test]
    fn samples_are_deterministic_per_seed() {
        let a = sample_customers(20, 7);
        let b = sample_customers(20, 7);
        assert_eq!(
            a.iter().map(|c| c.point).collect::<Vec<_>>(),
            b.iter().map(|c| c.point).collect::<Vec<_>>()
        );
    }
}
