//! The local HTTP API for registers (and the CLI): routes, bearer auth, and the JSON shapes
//! that are a contract (see README "Local API").

pub mod openapi;
pub mod page;
pub mod problem;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::HeaderValue;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::clock::{self, SharedClock};
use crate::config::{Role, Settings, sha256};
use crate::ledger::{self, Balance, RedeemRefusal, State as TxnState};
use crate::metrics::Metrics;
use crate::store::{
    AcceptCtx, AcceptOutcome, CustomerRow, LookupColumn, Resolution, ResolveOutcome, Store,
    TxnFilter, TxnRow,
};
use crate::sync::SyncEngine;
use crate::upstream::health::Health;
pub use problem::ApiError;
use problem::Problem;

pub const BODY_LIMIT: usize = 64 * 1024;

/// Everything a request handler needs; one struct instead of long argument lists.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub sync: Arc<SyncEngine>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    /// Until when (unix ms) look-ups skip the upstream refresh after one ran out of budget.
    pub lookup_refresh_paused_until: std::sync::atomic::AtomicI64,
    /// The daemon's tracker: a task a request starts in the background (the refresh after a
    /// review resolution) is awaited at stop like every other task.
    pub tasks: tokio_util::task::TaskTracker,
}

pub(crate) type AppRef = Arc<AppState>;

/// Who is calling, from their token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

pub fn router(state: AppRef) -> Router {
    let authed = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/whoami", get(whoami))
        .route("/v1/customers", get(find_customer))
        .route("/v1/customers/{id}", get(get_customer))
        .route(
            "/v1/transactions",
            get(list_transactions).post(post_transaction),
        )
        .route("/v1/transactions/{txn_id}", get(get_transaction))
        .route(
            "/v1/transactions/{txn_id}/resolve",
            post(resolve_transaction),
        )
        .route("/v1/reconcile", get(last_reconcile).post(run_reconcile))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi::serve))
        .merge(authed)
        .merge(page::router())
        .fallback(|| async { ApiError::NotFound("No such path. The API lives under /v1.".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // A bug must cost one request a 500 answer, not the connection or the process.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked; answered 500");
                ApiError::Internal.into_response()
            },
        ))
        // The page and the API come from this daemon only; nothing may frame or sniff them.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn auth(State(st): State<AppRef>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let caller = presented.and_then(|tok| {
        // Only digests are compared; the token itself is never stored or logged.
        let h = sha256(tok.as_bytes());
        st.settings
            .tokens
            .iter()
            .find(|t| t.sha256 == h)
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
            })
    });
    match caller {
        Some(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        None => {
            tracing::warn!(
                path = %req.uri().path(),
                token_sent = presented.is_some(),
                "request refused: missing or unknown token"
            );
            ApiError::Unauthorized.into_response()
        }
    }
}

/// Which token is calling: its configured name and role (never the token itself).
#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    name: String,
    #[schema(value_type = String, example = "register")]
    role: Role,
}

#[utoipa::path(get, path = "/v1/whoami", tag = "pointsd",
    responses((status = 200, body = WhoAmI), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json")))]
async fn whoami(axum::Extension(caller): axum::Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        role: caller.role,
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthView {
    #[schema(example = "ok")]
    status: &'static str,
}

#[utoipa::path(get, path = "/v1/health", tag = "pointsd", security(()),
    responses((status = 200, body = HealthView)))]
async fn health() -> Json<HealthView> {
    Json(HealthView { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
struct StatusView {
    online: bool,
    store_id: String,
    version: &'static str,
    upstream: UpstreamView,
    queue: QueueView,
    cache: CacheView,
    reconcile: Option<ReconcileSummary>,
    storage: StorageView,
}

#[derive(Serialize, utoipa::ToSchema)]
struct StorageView {
    /// False while the database cannot commit (e.g. the disk is full): writes answer 503.
    ok: bool,
    last_error: Option<String>,
    last_error_at: Option<String>,
    errors: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ReconcileSummary {
    last_run_at: String,
    discrepancies: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UpstreamView {
    kind: &'static str,
    last_ok_at: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    paused_until: Option<String>,
    auth_failed: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
struct QueueView {
    pending: i64,
    sending: i64,
    ambiguous: i64,
    needs_review: i64,
    rejected: i64,
    applied: i64,
    oldest_pending_age_s: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CacheView {
    customers: i64,
    last_full_refresh_at: Option<String>,
}

#[utoipa::path(get, path = "/v1/status", tag = "pointsd",
    responses((status = 200, body = StatusView), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn status(State(st): State<AppRef>) -> Result<Json<StatusView>, ApiError> {
    let q = st.store.queue_stats().await?;
    let customers = st.store.customer_count().await?;
    let last_refresh = st
        .store
        .meta("last_full_refresh_at")
        .await?
        .and_then(|v| v.parse::<i64>().ok());
    let reconcile = st
        .store
        .meta("last_reconcile")
        .await?
        .and_then(|j| serde_json::from_str::<Value>(&j).ok())
        .map(|v| ReconcileSummary {
            last_run_at: v["ran_at"].as_str().unwrap_or_default().to_string(),
            discrepancies: v["discrepancies"].as_u64().unwrap_or(0),
        });
    let h = st.health.snapshot();
    let now = st.clock.now_ms();
    let storage = st.store.storage_health();
    Ok(Json(StatusView {
        storage: StorageView {
            ok: storage.ok,
            last_error: storage.last_error,
            last_error_at: storage.last_error_at.map(clock::rfc3339),
            errors: storage.errors,
        },
        reconcile,
        online: h.online && !h.auth_failed,
        store_id: st.settings.config.agent.store_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        upstream: UpstreamView {
            kind: st.sync.upstream().kind(),
            last_ok_at: h.last_ok_at.map(clock::rfc3339),
            last_error: h.last_error,
            last_error_at: h.last_error_at.map(clock::rfc3339),
            paused_until: h.paused_until.filter(|u| *u > now).map(clock::rfc3339),
            auth_failed: h.auth_failed,
        },
        queue: QueueView {
            pending: q.pending,
            sending: q.sending,
            ambiguous: q.ambiguous,
            needs_review: q.needs_review,
            rejected: q.rejected,
            applied: q.applied,
            oldest_pending_age_s: q
                .oldest_pending_created_at
                .map(|t| ((now - t) / 1000).max(0)),
        },
        cache: CacheView {
            customers,
            last_full_refresh_at: last_refresh.map(clock::rfc3339),
        },
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CustomerView {
    pub customer_id: String,
    pub code: Option<String>,
    pub barcode: Option<String>,
    pub name: Option<String>,
    pub balance: Balance,
    /// When `confirmed` was last confirmed by the upstream.
    pub as_of: Option<String>,
    /// The figure may be out of date: offline, never confirmed, or older than `stale_after_s`.
    pub stale: bool,
    pub online: bool,
    pub expires_at: Option<String>,
    /// The upstream expiry date has passed: confirmed points are not spendable offline.
    pub expired: bool,
    pub tier: Option<String>,
    /// Created offline; the upstream has not confirmed this customer yet.
    pub local_only: bool,
}

fn customer_view(st: &AppState, c: CustomerRow) -> CustomerView {
    let now = st.clock.now_ms();
    let online = st.health.is_online();
    let stale_after = st.settings.config.sync.stale_after_s as i64 * 1000;
    let balance = c.balance();
    CustomerView {
        stale: ledger::is_stale(online, c.as_of, now, stale_after),
        online,
        expired: ledger::is_expired(c.expires_at.as_deref(), &clock::jst_date(now)),
        tier: ledger::tier_for(balance.available, &st.settings.config.tiers),
        as_of: c.as_of.map(clock::rfc3339),
        customer_id: c.customer_id,
        code: c.code,
        barcode: c.barcode,
        name: c.name,
        balance,
        expires_at: c.expires_at,
        local_only: c.local_only,
    }
}

fn check_id(field: &str, v: &str) -> Result<(), ApiError> {
    if ledger::is_valid_id(v) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be 1-64 printable ASCII characters without spaces",
        ))
    }
}

#[utoipa::path(get, path = "/v1/customers/{id}", tag = "pointsd",
    params(("id" = String, Path, description = "customer id (1-64 printable ASCII)", pattern = "^[!-~]{1,64}$")),
    responses((status = 200, body = CustomerView), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 404, description = "unknown customer or transaction", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field; `errors` names it", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn get_customer(
    State(st): State<AppRef>,
    Path(id): Path<String>,
) -> Result<Json<CustomerView>, ApiError> {
    check_id("customer_id", &id)?;
    match st.store.customer(&id).await? {
        Some(c) => Ok(Json(customer_view(&st, fresher(&st, c).await?))),
        None => Err(ApiError::NotFound(format!(
            "No customer with id {id:?} in the local cache."
        ))),
    }
}

/// While online, a look-up of a customer whose cached figure is older than
/// `api.lookup_refresh_after_s` asks the upstream first, within a short budget; whatever
/// happens, the cache answers (a hung upstream never blocks a register).
async fn fresher(st: &AppState, c: CustomerRow) -> Result<CustomerRow, ApiError> {
    let api = &st.settings.config.api;
    let age_limit = api.lookup_refresh_after_s as i64 * 1000;
    let old = c.as_of.is_none_or(|t| st.clock.now_ms() - t >= age_limit);
    if !old || !st.health.is_online() || c.local_only {
        return Ok(c);
    }
    // After a refresh ran out of budget, look-ups answer from the cache at once for a while:
    // at the start of an outage (before the probe notices) each look-up would otherwise
    // wait out the whole budget.
    let now = st.clock.now_ms();
    if now
        < st.lookup_refresh_paused_until
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Ok(c);
    }
    let budget = Duration::from_millis(api.lookup_refresh_budget_ms);
    match tokio::time::timeout(budget, st.sync.refresh_customer(&c.customer_id)).await {
        Ok(Ok(true)) => Ok(st.store.customer(&c.customer_id).await?.unwrap_or(c)),
        Ok(Ok(false)) => Ok(c),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, customer_id = %c.customer_id, "look-up refresh failed; answering from the cache");
            Ok(c)
        }
        Err(_) => {
            let pause = st.settings.config.sync.probe_interval_s as i64 * 2_000;
            st.lookup_refresh_paused_until
                .store(now + pause.max(2_000), std::sync::atomic::Ordering::Relaxed);
            Ok(c)
        }
    }
}

/// Query parameters, with unknown ones refused by name (typo protection, as for bodies).
fn query_params(
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let Query(pairs) = pairs.map_err(|e| ApiError::field("(query)", e.body_text()))?;
    let mut errs = Vec::new();
    let mut out = std::collections::HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            errs.push(ledger::FieldError {
                message: format!("unknown query parameter; allowed: {}", allowed.join(", ")),
                field: k,
            });
        } else if out.insert(k.clone(), v).is_some() {
            errs.push(ledger::FieldError {
                field: k,
                message: "given more than once".into(),
            });
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::Validation(errs))
    }
}

#[utoipa::path(get, path = "/v1/customers", tag = "pointsd",
    params(
        ("code" = Option<String>, Query, description = "member code"),
        ("barcode" = Option<String>, Query, description = "member card barcode"),
        ("q" = Option<String>, Query, description = "anything typed or scanned: id, code or barcode"),
    ),
    responses((status = 200, body = CustomerView), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 404, description = "unknown customer or transaction", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field; `errors` names it", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn find_customer(
    State(st): State<AppRef>,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<CustomerView>, ApiError> {
    let mut q = query_params(pairs, &["code", "barcode", "q"])?;
    let found = match (q.remove("code"), q.remove("barcode"), q.remove("q")) {
        (Some(code), None, None) => {
            check_id("code", &code)?;
            st.store.customer_by(LookupColumn::Code, &code).await?
        }
        (None, Some(bc), None) => {
            check_id("barcode", &bc)?;
            st.store.customer_by(LookupColumn::Barcode, &bc).await?
        }
        (None, None, Some(any)) => {
            let any = any.trim().to_string();
            check_id("q", &any)?;
            match st.store.customer(&any).await? {
                Some(c) => Some(c),
                None => match st.store.customer_by(LookupColumn::Code, &any).await? {
                    Some(c) => Some(c),
                    None => st.store.customer_by(LookupColumn::Barcode, &any).await?,
                },
            }
        }
        _ => {
            return Err(ApiError::field(
                "(query)",
                "give exactly one of code=, barcode= or q=",
            ));
        }
    };
    match found {
        Some(c) => Ok(Json(customer_view(&st, fresher(&st, c).await?))),
        None => Err(ApiError::NotFound(
            "No customer matches that id, code or barcode.".into(),
        )),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TxnView {
    pub txn_id: String,
    pub customer_id: String,
    pub kind: String,
    /// Signed change to the balance.
    pub delta: i64,
    pub purchase_amount: Option<i64>,
    pub state: TxnState,
    pub attempts: i64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub reason: Option<String>,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
    pub token_name: String,
    /// The upstream's balance after applying this, or its reason for refusing.
    pub upstream_balance: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub upstream_result: Option<Value>,
    pub resolved_by: Option<String>,
    pub resolution_note: Option<String>,
}

fn txn_view(t: TxnRow) -> TxnView {
    TxnView {
        next_attempt_at: matches!(t.state, TxnState::Pending | TxnState::Ambiguous)
            .then(|| clock::rfc3339(t.next_attempt_at)),
        created_at: clock::rfc3339(t.created_at),
        updated_at: clock::rfc3339(t.updated_at),
        upstream_result: t
            .upstream_result
            .as_deref()
            .map(|s| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))),
        txn_id: t.txn_id,
        customer_id: t.customer_id,
        kind: t.kind,
        delta: t.delta,
        purchase_amount: t.purchase_amount,
        state: t.state,
        attempts: t.attempts,
        last_error: t.last_error,
        reason: t.reason,
        register_id: t.register_id,
        staff_id: t.staff_id,
        token_name: t.token_name,
        upstream_balance: t.upstream_balance,
        resolved_by: t.resolved_by,
        resolution_note: t.resolution_note,
    }
}

/// The answer to a write: the transaction, whether the upstream already confirmed it, and
/// the customer's balance now.
#[derive(Serialize, utoipa::ToSchema)]
struct WriteAnswer {
    #[serde(flatten)]
    txn: TxnView,
    /// `confirmed`: applied upstream. `queued`: saved here, will sync.
    status: &'static str,
    balance: Balance,
    customer: CustomerView,
}

/// A request body as JSON: 413 past the size limit, 400 if it is not JSON.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadJson(e.body_text())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))
}

#[utoipa::path(post, path = "/v1/transactions", tag = "pointsd",
    request_body = openapi::TxnRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "instead of txn_id")),
    responses(
        (status = 201, body = WriteAnswer, description = "accepted and on disk; status says confirmed or queued"),
        (status = 200, body = WriteAnswer, description = "a replay of an earlier request with the same key"),
        (status = 400, description = "the body is not JSON", body = Problem, content_type = "application/problem+json"), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 404, description = "unknown customer or transaction", body = Problem, content_type = "application/problem+json"), (status = 409, description = "insufficient points, offline policy, key reused, refused upstream, or nothing to resolve", body = Problem, content_type = "application/problem+json"), (status = 413, description = "body over 64 KiB", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field; `errors` names it", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json"),
    ))]
async fn post_transaction(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let r = write_transaction(&st, &caller, &headers, body).await;
    st.metrics.count_write(match &r {
        Ok((StatusCode::CREATED, _)) => "created",
        Ok(_) => "replayed",
        Err(ApiError::Store(_)) => "storage_error",
        Err(ApiError::Conflict { .. }) => "conflict",
        Err(_) => "invalid",
    });
    r.map(|(status, body)| (status, body).into_response())
}

async fn write_transaction(
    st: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<WriteAnswer>), ApiError> {
    let value = json_body(body)?;
    let header_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::field("Idempotency-Key", "must be printable ASCII"))?,
        ),
        None => None,
    };
    let cfg = &st.settings.config;
    let new = ledger::validate_txn(&value, header_key, &cfg.earn).map_err(ApiError::Validation)?;
    let now = st.clock.now_ms();
    let online = st.health.is_online();
    let ctx = AcceptCtx {
        now_ms: now,
        today: clock::jst_date(now),
        online,
        token_name: caller.name.clone(),
        earn: cfg.earn.clone(),
        offline: cfg.offline.clone(),
    };
    let txn_id = new.txn_id.clone();
    let customer_id = new.customer_id.clone();
    // Watch before the row exists, so a fast push cannot settle it unseen.
    let budget = st.settings.sync.online_budget;
    let watch = (online && !budget.is_zero()).then(|| st.sync.watch(&txn_id));
    let outcome = st.store.accept(new, ctx).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            st.sync.unwatch(&txn_id);
            return Err(e.into());
        }
    };
    match outcome {
        AcceptOutcome::Created { txn, customer } => {
            tracing::info!(txn_id = %txn.txn_id, customer_id = %txn.customer_id, kind = %txn.kind, delta = txn.delta, register = %caller.name, "transaction accepted");
            st.sync.kick();
            let answer = match watch {
                Some(rx) => {
                    // Write-through: give the upstream a short budget to confirm.
                    let _ = tokio::time::timeout(budget, rx).await;
                    st.sync.unwatch(&txn_id);
                    current_answer(st, &txn_id).await?
                }
                // No wait: the rows as committed are the answer (no second read).
                None => answer_of(st, txn, customer)?,
            };
            Ok((StatusCode::CREATED, answer))
        }
        AcceptOutcome::Replay { txn, customer } => {
            st.sync.unwatch(&txn_id);
            Ok((StatusCode::OK, answer_of(st, txn, customer)?))
        }
        AcceptOutcome::Conflict { existing } => {
            st.sync.unwatch(&txn_id);
            Err(ApiError::Conflict {
                code: "idempotency_conflict",
                title: "Idempotency key reused",
                detail: format!(
                    "txn_id {:?} was already used for a different request (customer {}, {} {}). Use a new txn_id for a new transaction.",
                    existing.txn_id, existing.customer_id, existing.kind, existing.delta
                ),
                txn_id: Some(existing.txn_id),
            })
        }
        AcceptOutcome::UnknownCustomer => {
            st.sync.unwatch(&txn_id);
            Err(ApiError::NotFound(format!(
                "No customer with id {customer_id:?} in the local cache; check the id or look the customer up by code or barcode."
            )))
        }
        AcceptOutcome::Refused { refusal, .. } => {
            st.sync.unwatch(&txn_id);
            let (code, title, detail) = match refusal {
                RedeemRefusal::Insufficient {
                    requested,
                    spendable,
                } => (
                    "insufficient_points",
                    "Not enough points",
                    format!(
                        "Redeeming {requested} points needs more than the {spendable} points available."
                    ),
                ),
                RedeemRefusal::OfflineDisabled => (
                    "offline_redeem_disabled",
                    "Redeem not allowed offline",
                    "The upstream is unreachable and this store does not allow redeeming points offline (offline.allow_redeem = false). Try again when the store is online.".to_string(),
                ),
                RedeemRefusal::OfflineLimit { requested, limit } => (
                    "offline_redeem_limit",
                    "Offline redeem limit",
                    format!(
                        "The upstream is unreachable; offline, at most {limit} points can be redeemed at once (asked for {requested})."
                    ),
                ),
            };
            Err(ApiError::Conflict {
                code,
                title,
                detail,
                txn_id: None,
            })
        }
    }
}

/// The transaction as it stands now, with the customer's current balance.
async fn current_answer(st: &AppState, txn_id: &str) -> Result<Json<WriteAnswer>, ApiError> {
    let txn = st
        .store
        .txn(txn_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("transaction vanished".into()))?;
    let customer = st
        .store
        .customer(&txn.customer_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("customer vanished".into()))?;
    answer_of(st, txn, customer)
}

/// The answer for a transaction and its customer as read together (in the commit that
/// created it, or just now).
fn answer_of(
    st: &AppState,
    txn: TxnRow,
    customer: CustomerRow,
) -> Result<Json<WriteAnswer>, ApiError> {
    if txn.state == TxnState::Rejected {
        let reason = txn
            .upstream_result
            .clone()
            .or(txn.last_error.clone())
            .unwrap_or_default();
        return Err(ApiError::Conflict {
            code: "upstream_rejected",
            title: "Refused by the upstream",
            detail: format!(
                "The upstream refused this transaction, so it does not count: {reason}"
            ),
            txn_id: Some(txn.txn_id),
        });
    }
    let status = if txn.state == TxnState::Applied {
        "confirmed"
    } else {
        "queued"
    };
    let view = customer_view(st, customer);
    Ok(Json(WriteAnswer {
        txn: txn_view(txn),
        status,
        balance: view.balance,
        customer: view,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct TxnDetail {
    #[serde(flatten)]
    txn: TxnView,
    /// Review decisions taken on this transaction, oldest first.
    resolutions: Vec<ResolutionView>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ResolutionView {
    from_state: String,
    action: String,
    resolved_by: String,
    note: String,
    at: String,
}

async fn txn_detail(st: &AppState, txn_id: &str) -> Result<Json<TxnDetail>, ApiError> {
    let t = st
        .store
        .txn(txn_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No transaction with txn_id {txn_id:?}.")))?;
    let resolutions = st
        .store
        .resolutions(txn_id)
        .await?
        .into_iter()
        .map(|r| ResolutionView {
            from_state: r.from_state,
            action: r.action,
            resolved_by: r.resolved_by,
            note: r.note,
            at: clock::rfc3339(r.at),
        })
        .collect();
    Ok(Json(TxnDetail {
        txn: txn_view(t),
        resolutions,
    }))
}

#[utoipa::path(get, path = "/v1/transactions/{txn_id}", tag = "pointsd",
    params(("txn_id" = String, Path, pattern = "^[!-~]{1,64}$")),
    responses((status = 200, body = TxnDetail), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 404, description = "unknown customer or transaction", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field; `errors` names it", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn get_transaction(
    State(st): State<AppRef>,
    Path(txn_id): Path<String>,
) -> Result<Json<TxnDetail>, ApiError> {
    check_id("txn_id", &txn_id)?;
    txn_detail(&st, &txn_id).await
}

fn require_manager(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.role == Role::Manager {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "Only a manager token may {what}; token {:?} is a register token.",
            caller.name
        )))
    }
}

/// A person's decision on a review-queue item, audited with who and why.
#[utoipa::path(post, path = "/v1/transactions/{txn_id}/resolve", tag = "pointsd",
    params(("txn_id" = String, Path, pattern = "^[!-~]{1,64}$")),
    request_body = openapi::ResolveRequest,
    responses((status = 200, body = TxnDetail), (status = 400, description = "the body is not JSON", body = Problem, content_type = "application/problem+json"), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 403, description = "needs a manager token", body = Problem, content_type = "application/problem+json"), (status = 404, description = "unknown customer or transaction", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "insufficient points, offline policy, key reused, refused upstream, or nothing to resolve", body = Problem, content_type = "application/problem+json"), (status = 413, description = "body over 64 KiB", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field; `errors` names it", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn resolve_transaction(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(txn_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TxnDetail>, ApiError> {
    require_manager(&caller, "resolve review items")?;
    check_id("txn_id", &txn_id)?;
    let v = json_body(body)?;
    let mut errs = Vec::new();
    let Value::Object(map) = &v else {
        return Err(ApiError::field("(body)", "must be a JSON object"));
    };
    for k in map.keys() {
        if k != "as" && k != "note" {
            errs.push(ledger::FieldError {
                field: k.clone(),
                message: "unknown field".into(),
            });
        }
    }
    let res = match map.get("as").and_then(Value::as_str) {
        Some("applied") => Some(Resolution::Applied),
        Some("resend") => Some(Resolution::Resend),
        Some("discard") => Some(Resolution::Discard),
        _ => {
            errs.push(ledger::FieldError {
                field: "as".into(),
                message: "required: \"applied\", \"resend\" or \"discard\"".into(),
            });
            None
        }
    };
    let note = match map.get("note").and_then(Value::as_str).map(str::trim) {
        Some(n) if !n.is_empty() && n.chars().count() <= ledger::MAX_REASON_LEN => {
            Some(n.to_string())
        }
        _ => {
            errs.push(ledger::FieldError {
                field: "note".into(),
                message: format!(
                    "required: why (1-{} characters), for the audit trail",
                    ledger::MAX_REASON_LEN
                ),
            });
            None
        }
    };
    if !errs.is_empty() {
        return Err(ApiError::Validation(errs));
    }
    let (res, note) = (res.expect("checked"), note.expect("checked"));
    match st
        .store
        .resolve(&txn_id, res, &caller.name, &note, st.clock.now_ms())
        .await?
    {
        ResolveOutcome::NotFound => {
            return Err(ApiError::NotFound(format!(
                "No transaction with txn_id {txn_id:?}."
            )));
        }
        ResolveOutcome::NotResolvable(state) => {
            return Err(ApiError::Conflict {
                code: "not_resolvable",
                title: "Nothing to resolve",
                detail: format!(
                    "Transaction {txn_id:?} is {}; only needs_review items (or rejected ones, to resend or discard) can be resolved.",
                    state.as_str()
                ),
                txn_id: Some(txn_id),
            });
        }
        ResolveOutcome::Done { customer_id } => {
            tracing::warn!(txn_id = %txn_id, action = res.as_str(), by = %caller.name, note = %note, "review item resolved");
            match res {
                Resolution::Resend => st.sync.kick(),
                Resolution::Applied => {
                    // The upstream has it: take its figure rather than guessing one.
                    let sync = st.sync.clone();
                    st.tasks.spawn(async move {
                        let _ = sync.refresh_customer(&customer_id).await;
                    });
                }
                Resolution::Discard => {}
            }
        }
    }
    txn_detail(&st, &txn_id).await
}

#[utoipa::path(get, path = "/v1/reconcile", tag = "pointsd",
    responses((status = 200, body = crate::sync::ReconcileReport), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 404, description = "unknown customer or transaction", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn last_reconcile(State(st): State<AppRef>) -> Result<Json<Value>, ApiError> {
    match st.store.meta("last_reconcile").await? {
        Some(j) => Ok(Json(serde_json::from_str(&j).unwrap_or(Value::Null))),
        None => Err(ApiError::NotFound(
            "No reconciliation has run yet; it runs with every full refresh, or POST /v1/reconcile.".into(),
        )),
    }
}

#[utoipa::path(post, path = "/v1/reconcile", tag = "pointsd",
    responses((status = 200, body = crate::sync::ReconcileReport), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 403, description = "needs a manager token", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn run_reconcile(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    require_manager(&caller, "run a reconciliation")?;
    match tokio::time::timeout(Duration::from_secs(120), st.sync.refresh_and_reconcile()).await {
        Ok(Ok(report)) => Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null))),
        Ok(Err(e)) => Err(ApiError::Upstream(e)),
        Err(_) => Err(ApiError::Upstream(
            "the upstream took longer than 120 s".into(),
        )),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct TxnList {
    transactions: Vec<TxnView>,
}

#[utoipa::path(get, path = "/v1/transactions", tag = "pointsd",
    params(
        ("state" = Option<String>, Query, description = "pending, sending, ambiguous, applied, rejected, needs_review, discarded"),
        ("customer_id" = Option<String>, Query, pattern = "^[!-~]{1,64}$"),
        ("register_id" = Option<String>, Query, pattern = "^[!-~]{1,64}$"),
        ("limit" = Option<u32>, Query, description = "1..=1000, default 100", minimum = 1, maximum = 1000),
    ),
    responses((status = 200, body = TxnList), (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 422, description = "invalid field; `errors` names it", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn list_transactions(
    State(st): State<AppRef>,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<TxnList>, ApiError> {
    let mut q = query_params(pairs, &["state", "customer_id", "register_id", "limit"])?;
    let state = match q.get("state").map(String::as_str) {
        None => None,
        Some(s) => Some(TxnState::parse(s).ok_or_else(|| {
            ApiError::field(
                "state",
                "must be one of pending, sending, ambiguous, applied, rejected, needs_review, discarded",
            )
        })?),
    };
    let customer_id = q.remove("customer_id");
    if let Some(c) = &customer_id {
        check_id("customer_id", c)?;
    }
    let register_id = q.remove("register_id");
    if let Some(r) = &register_id {
        check_id("register_id", r)?;
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(ApiError::field("limit", "must be a whole number 1..=1000")),
        },
    };
    let rows = st
        .store
        .list_txns(TxnFilter {
            state,
            customer_id,
            register_id,
            limit,
        })
        .await?;
    Ok(Json(TxnList {
        transactions: rows.into_iter().map(txn_view).collect(),
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "pointsd",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "missing or unknown bearer token", body = Problem, content_type = "application/problem+json"), (status = 503, description = "storage failing (e.g. disk full) or upstream unavailable; nothing was saved", body = Problem, content_type = "application/problem+json")))]
async fn metrics(State(st): State<AppRef>) -> Result<Response, ApiError> {
    let q = st.store.queue_stats().await?;
    let m = &st.metrics;
    for (state, n) in [
        ("pending", q.pending),
        ("sending", q.sending),
        ("ambiguous", q.ambiguous),
        ("applied", q.applied),
        ("rejected", q.rejected),
        ("needs_review", q.needs_review),
        ("discarded", q.discarded),
    ] {
        m.queue_depth
            .get_or_create(&crate::metrics::StateLabels { state })
            .set(n);
    }
    let now = st.clock.now_ms();
    m.oldest_pending_age.set(
        q.oldest_pending_created_at
            .map_or(0, |t| ((now - t) / 1000).max(0)),
    );
    m.cache_customers.set(st.store.customer_count().await?);
    m.online.set(st.health.is_online() as i64);
    let storage = st.store.storage_health();
    m.storage_ok.set(storage.ok as i64);
    // The store keeps running totals; the counters catch up to them.
    for (counter, now) in [
        (&m.storage_errors, storage.errors),
        (&m.db_commits, storage.commits),
        (&m.db_write_jobs, storage.jobs),
    ] {
        let seen = counter.get();
        if now > seen {
            counter.inc_by(now - seen);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response())
}
