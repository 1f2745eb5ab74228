//! The Smaregi Platform API the simulator serves (DESIGN.md §4): the token endpoint,
//! `/pos/customers`, `/pos/customers/point`, `/pos/transactions` and `point/add`, with the
//! contract's limits, faults and scopes applied by [`gate`] before each one is handled.
//!
//! Where the third-party OpenAPI copy (`shabaraba/SmaregiMCP`, `openapi/pos/...`) disagrees
//! with DESIGN.md §4, the simulator follows DESIGN and says so where it matters:
//! - `/pos/transactions` in that copy answers `{transactions: [...], pagination}` with items
//!   named `id`/`updatedDateTime`; DESIGN lists bare items with `transactionHeadId` and
//!   `updDateTime` like every other list of the API, and so does the simulator.
//! - that copy has no `sort` parameter on `/pos/transactions` (only its pagination schema
//!   shows `updDateTime:desc`); DESIGN gives `sort=updDateTime`, which the simulator takes,
//!   with `:asc`/`:desc` as in the copy's pagination schema.
//! - that copy states no 31-day rule for `/pos/customers`' `upd_date_time` window; DESIGN does
//!   *(3P)*, and the simulator enforces it (a client built to it works on either).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::conn::ConnKill;
use super::limits::Class;
use super::state::{
    AppliedAdd, IssuedToken, POINT_ADD_STORE, Shared, SimCustomer, jst_today, now_ms,
};
use super::transactions::{date_window, list_transactions};

/// The `User-Agent` a request is counted under.
pub(super) fn agent_of(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_string()
}

pub(super) fn point_json(c: &SimCustomer) -> serde_json::Value {
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

/// A Smaregi error answer: `{type, title, detail}` as `application/problem+json` (DESIGN.md §4).
pub(super) fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"type": "about:blank", "title": title, "detail": detail, "status": status.as_u16()})),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    pub(super) limit: Option<String>,
    pub(super) page: Option<String>,
    pub(super) customer_id: Option<String>,
    #[serde(rename = "upd_date_time-from")]
    pub(super) upd_from: Option<String>,
    #[serde(rename = "upd_date_time-to")]
    pub(super) upd_to: Option<String>,
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
    // A token request counts against the contract's read limit (DESIGN.md §4 *(3P)*).
    if let Err(retry) = s.arrive(&agent_of(&headers), Class::Read, true, false) {
        return throttled(retry);
    }
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

/// Limits, faults and auth common to every API request. `Err` is the answer to send instead.
/// `feed` marks a change-feed read (counted apart in [`super::AgentCounts::feed`]).
pub(super) async fn gate(
    st: &Shared,
    headers: &HeaderMap,
    contract: &str,
    scope: &str,
    class: Class,
    feed: bool,
) -> Result<(), Response> {
    let latency = st.lock().expect("sim").faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let agent = agent_of(headers);
    let mut s = st.lock().expect("sim");
    s.requests += 1;
    // The contract's limits come first: a throttled request is refused whatever it asks.
    if let Err(retry) = s.arrive(&agent, class, false, feed) {
        return Err(throttled(retry));
    }
    if contract != s.opts.contract_id {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            "unknown contract",
        ));
    }
    let f = s.faults.clone();
    let retry_after = f.retry_after_s.max(1);
    if f.error_rate > 0.0 && s.rng.random_bool(f.error_rate.min(1.0)) {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "simulated outage",
        ));
    }
    if f.throttle_rate > 0.0 && s.rng.random_bool(f.throttle_rate.min(1.0)) {
        s.throttled(&agent);
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

/// `429` with `Retry-After` in whole seconds (at least 1) and a problem body.
pub(super) fn throttled(retry_after_s: u64) -> Response {
    let retry_after_s = retry_after_s.max(1);
    let mut r = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        &format!("the contract's rate limit is exceeded; retry after {retry_after_s} s"),
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&retry_after_s.to_string()).expect("digits"),
    );
    r
}

/// The window a `page`/`limit` query asks for. Only that window is built, so paging through a
/// large directory stays linear.
pub(super) fn page_window(q: &ListQuery) -> Result<(usize, usize), Response> {
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
    if let Err(r) = gate(
        &st,
        &headers,
        &contract,
        "pos.customers:read",
        Class::Read,
        false,
    )
    .await
    {
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
    // With a window, this is the directory's change feed.
    let feed = q.upd_from.is_some() || q.upd_to.is_some();
    if let Err(r) = gate(
        &st,
        &headers,
        &contract,
        "pos.customers:read",
        Class::Read,
        feed,
    )
    .await
    {
        return r;
    }
    let (start, limit) = match page_window(&q) {
        Ok(w) => w,
        Err(r) => return r,
    };
    // `upd_date_time-from/-to`: the customers created or changed in the window, both ends
    // inclusive in whole seconds, at most 31 days (DESIGN.md §4 *(3P)*). Changed means a
    // directory edit (name, code…; [`super::SimHandle::edit_customer`]): a point change moves
    // the point record's `updDateTime` and lists a transaction, not the directory's. Whether
    // Smaregi also moves the customer's stamp on a point change is not documented; the strict
    // reading makes a client take point moves from `/pos/transactions`, which works either way.
    let window = match (&q.upd_from, &q.upd_to) {
        (None, None) => None,
        (f, t) => match date_window(f.as_deref(), t.as_deref(), "upd_date_time") {
            Ok(w) => Some(w),
            Err(r) => return r,
        },
    };
    let s = st.lock().expect("sim");
    let page: Vec<&SimCustomer> = match window {
        None => s.customers.values().skip(start).take(limit).collect(),
        Some((from, to)) => {
            // In customer order, as the unfiltered list.
            let mut keys: Vec<u64> = s
                .directory_index
                .range((from / 1000, 0)..=(to / 1000, u64::MAX))
                .map(|&(_, k)| k)
                .collect();
            keys.sort_unstable();
            keys.into_iter()
                .skip(start)
                .take(limit)
                .filter_map(|k| s.customers.get(&k))
                .collect()
        }
    };
    let rows: Vec<serde_json::Value> = page
        .into_iter()
        .map(|c| {
            json!({
                "customerId": c.customer_id,
                "customerCode": c.code,
                "barcode": c.barcode,
                "lastName": c.last_name,
                "firstName": c.first_name,
                "point": c.point.to_string(),
                "updDateTime": c.directory_stamp(),
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
    if let Err(r) = gate(
        &st,
        &headers,
        &contract,
        "pos.customers:write",
        Class::Write,
        false,
    )
    .await
    {
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
        let id = s.record_change(key, if b.point < 0 { 7 } else { 6 }, POINT_ADD_STORE);
        let mut answer = point_json(s.customers.get(&key).expect("indexed"));
        if !s.opts.omit_transaction_head_ids {
            answer["transactionHeadIds"] = json!([id.to_string()]);
        }
        s.adds.push(AppliedAdd {
            customer_id: customer_id.clone(),
            delta: b.point,
            balance_after: new,
            agent: agent_of(&headers),
            at_ms: now_ms(),
            transaction_head_id: id,
        });
        s.smapify_from_smaregi(&customer_id, b.point);
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
pub(super) fn api_router(st: Shared) -> Router {
    Router::new()
        .route("/app/{contract}/token", post(token))
        .route("/{contract}/pos/customers", get(list_customers))
        .route("/{contract}/pos/customers/point", get(list_points))
        .route("/{contract}/pos/transactions", get(list_transactions))
        .route(
            "/{contract}/pos/stores/{store_id}",
            get(super::transactions::get_store),
        )
        .route(
            "/{contract}/pos/customers/{customer_id}/point/add",
            post(add_point),
        )
        .with_state(st)
}
