//! Smaregi Platform API adapter (DESIGN.md §4): OAuth2 client credentials, the point list,
//! the relative `point/add`, and the customer directory. The absolute `PATCH .../point` is
//! deliberately absent (DESIGN.md §2.5).
//!
//! Requests that read are safe to repeat, so any failure on them is transient. A `point/add`
//! that may have reached the server without us seeing the answer is `NoAnswer` (ambiguous):
//! the API has no idempotency key, so only a read-back can tell.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{
    Applied, ChangedQuery, Page, StorePoints, TxnQuery, Upstream, UpstreamBalance,
    UpstreamCustomer, UpstreamError, UpstreamTxn, lenient_i64, lenient_opt_string, lenient_string,
};
use crate::secret::Secret;

/// Smaregi's maximum page size for list endpoints.
pub const PAGE_LIMIT: u32 = 1000;
/// Refresh a token this long before the server says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// `pos.transactions:read` is for the transaction list: read-back evidence and the change feed.
/// Without it those degrade (a 403 there is [`UpstreamError::MissingScope`]), points still sync.
const BASE_SCOPE: &str = "pos.customers:read pos.customers:write";
const TXN_SCOPE: &str = "pos.transactions:read";
/// `pos.stores:read` is for the store's point conditions (who grants, DESIGN.md §14), asked only
/// when `agent.smaregi_store_id` is set. Refused, the mode stays as last read.
const STORES_SCOPE: &str = "pos.stores:read";

#[derive(Clone)]
pub struct SmaregiSettings {
    pub contract_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub id_base: String,
    pub api_base: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub proxy: Option<String>,
    pub page_limit: u32,
    /// Named in the User-Agent, so the merchant (and Smaregi) can tell a chain's stores apart.
    pub store_id: String,
    /// Ask for `pos.stores:read` too (the store's point conditions are read).
    pub read_stores: bool,
}

pub struct Smaregi {
    http: reqwest::Client,
    s: SmaregiSettings,
    token: Mutex<Option<(Secret, Instant)>>,
    /// Set when the app was refused `pos.transactions:read` (`invalid_scope`): tokens are then
    /// asked without it, and the transaction list is unavailable.
    no_txn_scope: std::sync::atomic::AtomicBool,
    /// Set when the app was refused `pos.stores:read` (or it is not wanted).
    no_stores_scope: std::sync::atomic::AtomicBool,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Secret,
    #[serde(default = "default_expires_in", deserialize_with = "lenient_i64")]
    expires_in: i64,
}

fn default_expires_in() -> i64 {
    3600
}

/// One row of `GET /pos/customers/point`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PointRow {
    #[serde(deserialize_with = "lenient_string")]
    customer_id: String,
    #[serde(deserialize_with = "lenient_i64")]
    point: i64,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    point_expire_date: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    upd_date_time: Option<String>,
}

impl From<PointRow> for UpstreamBalance {
    fn from(r: PointRow) -> Self {
        UpstreamBalance {
            customer_id: r.customer_id,
            point: r.point,
            expires_at: r.point_expire_date,
            updated_at: r.upd_date_time,
        }
    }
}

/// The answer of `point/add`: the customer's new balance. Some fields may be absent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddAnswer {
    #[serde(default, deserialize_with = "lenient_opt_string")]
    customer_id: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    point: i64,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    point_expire_date: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    upd_date_time: Option<String>,
    /// Current API versions list the point transactions the change created; older lack it.
    #[serde(default, deserialize_with = "lenient_opt_strings")]
    transaction_head_ids: Option<Vec<String>>,
}

/// One row of `GET /pos/transactions` (only the fields the agent uses; a row has dozens).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxnRowJson {
    #[serde(deserialize_with = "lenient_string")]
    transaction_head_id: String,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    transaction_head_division: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    customer_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    customer_code: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    upd_date_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    store_id: Option<String>,
    /// Points a register sale granted and used (strings in the API; absent on some rows;
    /// anything unreadable counts as 0 rather than failing the page).
    #[serde(default)]
    new_point: Option<serde_json::Value>,
    #[serde(default)]
    spend_point: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    transaction_date_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    cancel_division: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    return_sales: Option<String>,
}

/// The transaction list is a JSON array in DESIGN.md §4; a third-party copy of the OpenAPI
/// (shabaraba/SmaregiMCP, openapi/pos) wraps it as `{transactions: [...], pagination}` and
/// names the id `id` — accept the envelope, keep the vendor's field names.
#[derive(Deserialize)]
#[serde(untagged)]
enum TxnList {
    Bare(Vec<TxnRowJson>),
    Wrapped { transactions: Vec<TxnRowJson> },
}

fn lenient_opt_strings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        I(i64),
    }
    Ok(Option::<Vec<V>>::deserialize(d)?.map(|v| {
        v.into_iter()
            .map(|x| match x {
                V::S(s) => s,
                V::I(i) => i.to_string(),
            })
            .collect()
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerRowJson {
    #[serde(deserialize_with = "lenient_string")]
    customer_id: String,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    customer_code: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    barcode: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    last_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    first_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    upd_date_time: Option<String>,
}

/// Smaregi's error body (`{type, title, detail}`); any of it may be missing.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

/// A short excerpt of a body for logs and errors; bodies here never carry our secrets.
fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(200).collect();
    if body.chars().count() > 200 {
        s.push('…');
    }
    s
}

fn parse_retry_after(v: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let v = v?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

impl Smaregi {
    pub fn new(s: SmaregiSettings) -> Result<Smaregi, UpstreamError> {
        let mut b = crate::http_client_builder()
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            .user_agent(format!(
                "pointsd/{} (store {})",
                env!("CARGO_PKG_VERSION"),
                s.store_id
            ));
        // A request that timed out may still sit in the kernel's send queue and be
        // retransmitted when the link returns — after the read-back said "nothing moved" and
        // the agent resent it: applied twice. TCP_USER_TIMEOUT makes the kernel drop such a
        // connection once data stays unacknowledged this long, so an orphaned request can
        // only land within the settle delay the sync engine waits before reading back.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            b = b.tcp_user_timeout(s.request_timeout);
        }
        if let Some(p) = &s.proxy {
            let proxy = reqwest::Proxy::all(p)
                .map_err(|e| UpstreamError::Unreachable(format!("invalid upstream.proxy: {e}")))?;
            b = b.proxy(proxy);
        }
        let http = b
            .build()
            .map_err(|e| UpstreamError::Unreachable(format!("cannot build HTTP client: {e}")))?;
        let read_stores = s.read_stores;
        Ok(Smaregi {
            http,
            s,
            token: Mutex::new(None),
            no_txn_scope: std::sync::atomic::AtomicBool::new(false),
            no_stores_scope: std::sync::atomic::AtomicBool::new(!read_stores),
        })
    }

    fn api_url(&self, path: &str) -> String {
        format!(
            "{}/{}{}",
            self.s.api_base.trim_end_matches('/'),
            self.s.contract_id,
            path
        )
    }

    /// Asks for a token once (no cache) and returns the server's clock from its `Date`
    /// header: for `pointsd doctor` (credentials accepted? clock skew?).
    pub async fn check_credentials(&self) -> Result<Option<std::time::SystemTime>, UpstreamError> {
        self.fetch_token().await.map(|(_, _, date)| date)
    }

    async fn fetch_token(
        &self,
    ) -> Result<(Secret, Instant, Option<std::time::SystemTime>), UpstreamError> {
        use std::sync::atomic::Ordering;
        // Optional scopes are dropped one at a time when the app is not granted one
        // (`invalid_scope`): the one the answer names, else the stores scope first.
        loop {
            let txn = !self.no_txn_scope.load(Ordering::Relaxed);
            let stores = !self.no_stores_scope.load(Ordering::Relaxed);
            if !txn && !stores {
                return self.fetch_token_with(BASE_SCOPE).await;
            }
            let mut scope = BASE_SCOPE.to_string();
            for (on, name) in [(txn, TXN_SCOPE), (stores, STORES_SCOPE)] {
                if on {
                    scope.push(' ');
                    scope.push_str(name);
                }
            }
            match self.fetch_token_with(&scope).await {
                Err(UpstreamError::Auth(m)) if m.contains("invalid_scope") => {
                    let drop_txn = txn && (m.contains(TXN_SCOPE) || !stores);
                    if drop_txn {
                        tracing::warn!(
                            "the Smaregi app is not granted {TXN_SCOPE}: read-backs use balances only; grant it in the developer console"
                        );
                        self.no_txn_scope.store(true, Ordering::Relaxed);
                    } else {
                        tracing::warn!(
                            "the Smaregi app is not granted {STORES_SCOPE}: the store's point conditions cannot be read (who grants stays as last read); grant it in the developer console"
                        );
                        self.no_stores_scope.store(true, Ordering::Relaxed);
                    }
                }
                other => return other,
            }
        }
    }

    async fn fetch_token_with(
        &self,
        scope: &str,
    ) -> Result<(Secret, Instant, Option<std::time::SystemTime>), UpstreamError> {
        let url = format!(
            "{}/app/{}/token",
            self.s.id_base.trim_end_matches('/'),
            self.s.contract_id
        );
        let resp = self
            .http
            .post(&url)
            .basic_auth(&self.s.client_id, Some(self.s.client_secret.expose()))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .map_err(|e| transport_error(&e, false))?;
        let status = resp.status();
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let body = resp.text().await.map_err(|e| transport_error(&e, false))?;
        if status == StatusCode::BAD_REQUEST
            || status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
        {
            // OAuth errors are `{error, error_description}`: keep the code (invalid_scope).
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from));
            return Err(UpstreamError::Auth(format!(
                "token request answered {status}: {}{}",
                error_title(&body),
                code.map(|c| format!(" ({c})")).unwrap_or_default()
            )));
        }
        if !status.is_success() {
            return Err(status_error(status, &body, None));
        }
        let t: TokenAnswer = serde_json::from_str(&body)
            .map_err(|e| UpstreamError::Malformed(format!("token answer: {e}")))?;
        let life = Duration::from_secs(t.expires_in.max(1) as u64);
        let valid_until = Instant::now()
            + life
                .saturating_sub(TOKEN_MARGIN)
                .max(Duration::from_secs(1));
        Ok((t.access_token, valid_until, date))
    }

    async fn bearer(&self, force_new: bool) -> Result<Secret, UpstreamError> {
        let mut slot = self.token.lock().await;
        if !force_new
            && let Some((tok, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(tok.clone());
        }
        let (tok, until, _) = self.fetch_token().await?;
        *slot = Some((tok.clone(), until));
        Ok(tok)
    }

    /// Sends one API request; on 401 fetches a new token and tries exactly once more.
    /// `mutating` marks a request whose lost answer is ambiguous.
    async fn call(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        mutating: bool,
    ) -> Result<String, UpstreamError> {
        let mut force = false;
        for attempt in 0..2 {
            let tok = self.bearer(force).await?;
            let mut rb = self
                .http
                .request(method.clone(), url)
                .bearer_auth(tok.expose())
                .query(query);
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            let resp = rb.send().await.map_err(|e| transport_error(&e, mutating))?;
            let status = resp.status();
            let retry_after = parse_retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                // A 401 means the request was not carried out: safe to repeat with a new token.
                force = true;
                continue;
            }
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) if status.is_success() && mutating => {
                    return Err(UpstreamError::NoAnswer(format!(
                        "answer {status} cut off: {e}"
                    )));
                }
                Err(e) => return Err(transport_error(&e, mutating)),
            };
            if status.is_success() {
                return Ok(text);
            }
            if status == StatusCode::FORBIDDEN && url.ends_with("/pos/transactions") {
                return Err(UpstreamError::MissingScope {
                    scope: TXN_SCOPE,
                    detail: error_title(&text),
                });
            }
            if status == StatusCode::FORBIDDEN && url.contains("/pos/stores/") {
                return Err(UpstreamError::MissingScope {
                    scope: STORES_SCOPE,
                    detail: error_title(&text),
                });
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(UpstreamError::Auth(format!(
                    "{status} after a fresh token: {}",
                    error_title(&text)
                )));
            }
            return Err(status_error(status, &text, retry_after));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// One page of a list endpoint, parsed by `parse`; a full page means more may follow.
    async fn list<T>(
        &self,
        path: &str,
        page: u32,
        parse: fn(&str) -> Result<Vec<T>, serde_json::Error>,
    ) -> Result<Page<T>, UpstreamError> {
        let url = self.api_url(path);
        let q = [
            ("limit", self.s.page_limit.to_string()),
            ("page", page.to_string()),
        ];
        let text = self.call(Method::GET, &url, &q, None, false).await?;
        let items = parse(&text).map_err(|e| {
            UpstreamError::Malformed(format!("{path} page {page}: {e}; body: {}", excerpt(&text)))
        })?;
        let more = items.len() as u32 >= self.s.page_limit;
        Ok(Page { items, more })
    }
}

/// Parses a page of `GET /pos/customers/point` (also a fuzz target: any input must give a
/// value or an error, never a panic).
pub fn parse_points(text: &str) -> Result<Vec<UpstreamBalance>, serde_json::Error> {
    serde_json::from_str::<Vec<PointRow>>(text)
        .map(|rows| rows.into_iter().map(Into::into).collect())
}

/// Parses a page of `GET /pos/customers`.
pub fn parse_customers(text: &str) -> Result<Vec<UpstreamCustomer>, serde_json::Error> {
    serde_json::from_str::<Vec<CustomerRowJson>>(text).map(|rows| {
        rows.into_iter()
            .map(|r| {
                let name = [r.last_name, r.first_name]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                UpstreamCustomer {
                    customer_id: r.customer_id,
                    code: r.customer_code,
                    barcode: r.barcode,
                    name: (!name.is_empty()).then_some(name),
                    updated_at: r.upd_date_time,
                }
            })
            .collect()
    })
}

/// Parses the answer of `point/add` (`customer_id` fills in a missing id).
pub fn parse_add_answer(text: &str, customer_id: &str) -> Result<Applied, serde_json::Error> {
    serde_json::from_str::<AddAnswer>(text).map(|a| Applied {
        balance: UpstreamBalance {
            customer_id: a.customer_id.unwrap_or_else(|| customer_id.to_string()),
            point: a.point,
            expires_at: a.point_expire_date,
            updated_at: a.upd_date_time,
        },
        transaction_ids: a.transaction_head_ids,
    })
}

/// Parses a page of `GET /pos/transactions`.
pub fn parse_transactions(text: &str) -> Result<Vec<UpstreamTxn>, serde_json::Error> {
    let rows = match serde_json::from_str::<TxnList>(text)? {
        TxnList::Bare(r) | TxnList::Wrapped { transactions: r } => r,
    };
    Ok(rows
        .into_iter()
        .map(|r| UpstreamTxn {
            id: r.transaction_head_id,
            division: r.transaction_head_division,
            customer_id: r.customer_id,
            customer_code: r.customer_code,
            updated_at: r.upd_date_time,
            store_id: r.store_id,
            // Points may come as "12" or "12.0"; whole points either way.
            new_point: points_of(r.new_point.as_ref()),
            spend_point: points_of(r.spend_point.as_ref()),
            transaction_at: r.transaction_date_time,
            cancelled: r.cancel_division.as_deref() == Some("1"),
            is_return: r.return_sales.as_deref() == Some("1"),
        })
        .collect())
}

/// The store object of `GET /pos/stores/{id}` (dozens of fields; only these are used).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoreJson {
    #[serde(deserialize_with = "lenient_string")]
    store_id: String,
    #[serde(default)]
    point_condition: Option<PointConditionJson>,
}

/// `pointCondition`: `storeId`, `pointUseDivision` (0 使用しない / 1 使用する), `spendRate`,
/// `pointGivingUnitPrice`, `pointGivingUnit`… *(3P)*; only the division decides who grants.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PointConditionJson {
    #[serde(default, deserialize_with = "lenient_opt_string")]
    point_use_division: Option<String>,
}

/// Parses the answer of `GET /pos/stores/{id}?with_point_condition=all`.
pub fn parse_store_points(text: &str) -> Result<StorePoints, serde_json::Error> {
    serde_json::from_str::<StoreJson>(text).map(|s| StorePoints {
        store_id: s.store_id,
        point_use_division: s.point_condition.and_then(|p| p.point_use_division),
    })
}

/// A point figure of the transaction list (a string of a number, or a number; absent or
/// unreadable: 0).
fn points_of(v: Option<&serde_json::Value>) -> i64 {
    let f = match v {
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        _ => None,
    };
    f.filter(|f| f.is_finite() && f.abs() < 1e12)
        .map_or(0, |f| f.trunc() as i64)
}

fn error_title(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.title)
        .unwrap_or_else(|| excerpt(body))
}

fn status_error(status: StatusCode, body: &str, retry_after: Option<Duration>) -> UpstreamError {
    let parsed = serde_json::from_str::<ErrorBody>(body).unwrap_or_default();
    let detail = parsed.detail.map(|d| match d {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    });
    UpstreamError::Status {
        status: status.as_u16(),
        title: parsed
            .title
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string()),
        detail: detail.or_else(|| (!body.is_empty()).then(|| excerpt(body))),
        retry_after,
    }
}

/// Failed before a response arrived. A connect failure means nothing was sent; anything
/// later, for a mutating request, may have been applied.
fn transport_error(e: &reqwest::Error, mutating: bool) -> UpstreamError {
    // The error's Display may contain the URL; ours carry no secrets (tokens go in headers).
    let what = if e.is_timeout() {
        "timed out"
    } else {
        "connection failed"
    };
    let msg = format!("{what}: {}", error_chain(e));
    if e.is_connect() || !mutating {
        UpstreamError::Unreachable(msg)
    } else {
        UpstreamError::NoAnswer(msg)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[async_trait]
impl Upstream for Smaregi {
    fn kind(&self) -> &'static str {
        "smaregi"
    }

    async fn list_balances(&self, page: u32) -> Result<Page<UpstreamBalance>, UpstreamError> {
        self.list("/pos/customers/point", page, parse_points).await
    }

    async fn get_balance(
        &self,
        customer_id: &str,
    ) -> Result<Option<UpstreamBalance>, UpstreamError> {
        let url = self.api_url("/pos/customers/point");
        let q = [("customer_id", customer_id.to_string())];
        let text = self.call(Method::GET, &url, &q, None, false).await?;
        let rows = parse_points(&text).map_err(|e| {
            UpstreamError::Malformed(format!(
                "point of {customer_id}: {e}; body: {}",
                excerpt(&text)
            ))
        })?;
        Ok(rows.into_iter().find(|r| r.customer_id == customer_id))
    }

    async fn add_points(&self, customer_id: &str, delta: i64) -> Result<Applied, UpstreamError> {
        // Path segment: customer ids are ours to validate (printable ASCII), but escape anyway.
        let id: String = url_escape(customer_id);
        let url = self.api_url(&format!("/pos/customers/{id}/point/add"));
        let body = serde_json::json!({ "point": delta.to_string() });
        let text = self.call(Method::POST, &url, &[], Some(body), true).await?;
        // A 2xx we cannot read still means "applied"; but without the figure we cannot
        // confirm a balance, so it goes through the read-back like any lost answer.
        parse_add_answer(&text, customer_id).map_err(|e| {
            UpstreamError::NoAnswer(format!(
                "unreadable answer to point/add ({e}); body: {}",
                excerpt(&text)
            ))
        })
    }

    async fn store_points(&self, store_id: &str) -> Result<Option<StorePoints>, UpstreamError> {
        if self
            .no_stores_scope
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(UpstreamError::MissingScope {
                scope: STORES_SCOPE,
                detail: "not granted to the app (invalid_scope at the token request)".into(),
            });
        }
        // `GET /pos/stores/{store_id}?with_point_condition=all` (店舗取得): "all" adds the
        // store's `pointCondition` (third-party copies of the POS API specification:
        // feedforce/smaregi-platform-api, docs PointCondition.md and GetStoresResponseItem.md;
        // scope pos.stores:read *(3P)*).
        let url = self.api_url(&format!("/pos/stores/{}", url_escape(store_id)));
        let q = [("with_point_condition", "all".to_string())];
        let text = match self.call(Method::GET, &url, &q, None, false).await {
            Ok(t) => t,
            Err(UpstreamError::Status { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse_store_points(&text).map(Some).map_err(|e| {
            UpstreamError::Malformed(format!(
                "/pos/stores/{store_id}: {e}; body: {}",
                excerpt(&text)
            ))
        })
    }

    async fn probe(&self) -> Result<(), UpstreamError> {
        let url = self.api_url("/pos/customers/point");
        let q = [("limit", "1".to_string()), ("page", "1".to_string())];
        self.call(Method::GET, &url, &q, None, false)
            .await
            .map(|_| ())
    }

    async fn list_customers(&self, page: u32) -> Result<Page<UpstreamCustomer>, UpstreamError> {
        self.list("/pos/customers", page, parse_customers).await
    }

    async fn list_changed_customers(
        &self,
        q: &ChangedQuery,
    ) -> Result<Page<UpstreamCustomer>, UpstreamError> {
        let url = self.api_url("/pos/customers");
        let query = [
            ("limit", self.s.page_limit.to_string()),
            ("page", q.page.max(1).to_string()),
            ("upd_date_time-from", q.from.clone()),
            ("upd_date_time-to", q.to.clone()),
        ];
        let text = self.call(Method::GET, &url, &query, None, false).await?;
        let items = parse_customers(&text).map_err(|e| {
            UpstreamError::Malformed(format!(
                "/pos/customers (changed) page {}: {e}; body: {}",
                q.page,
                excerpt(&text)
            ))
        })?;
        let more = items.len() as u32 >= self.s.page_limit;
        Ok(Page { items, more })
    }

    async fn list_transactions(&self, q: &TxnQuery) -> Result<Page<UpstreamTxn>, UpstreamError> {
        if self.no_txn_scope.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(UpstreamError::MissingScope {
                scope: TXN_SCOPE,
                detail: "refused at the token request (invalid_scope)".into(),
            });
        }
        let url = self.api_url("/pos/transactions");
        let mut query = vec![
            ("limit", self.s.page_limit.to_string()),
            ("page", q.page.max(1).to_string()),
            ("sort", "updDateTime".to_string()),
            ("upd_date_time-from", q.from.clone()),
            ("upd_date_time-to", q.to.clone()),
        ];
        if let Some(code) = &q.customer_code {
            query.push(("customer_code", code.clone()));
        }
        let text = self.call(Method::GET, &url, &query, None, false).await?;
        let items = parse_transactions(&text).map_err(|e| {
            UpstreamError::Malformed(format!(
                "/pos/transactions page {}: {e}; body: {}",
                q.page,
                excerpt(&text)
            ))
        })?;
        let more = items.len() as u32 >= self.s.page_limit;
        Ok(Page { items, more })
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
#[path = "smaregi_tests.rs"]
mod tests;
