//! The local HTTP API for registers (and the CLI): routes, bearer auth, and the JSON shapes
//! that are a contract (see README "Local API").
//!
//! Map of the files:
//! - this file: the state every handler shares (`AppState`) and the router with its layers.
//! - [`auth`]: bearer auth middleware, `Caller`, the manager check, `/v1/whoami`.
//! - [`customers`]: look-ups by id, code or barcode, with the refresh-on-look-up.
//! - [`transactions`]: the write path, listing, detail, review resolution.
//! - [`sales`]: sales (quote, sale, detail) and returns, each one write with its split.
//! - [`status`]: `/v1/health`, `/v1/status`, `/metrics`.
//! - [`reconcile`]: the last reconciliation report, and running one; the same for the
//!   cross-ledger (Smaregi / easyPoints) report.
//! - [`input`]: ids, query parameters and JSON bodies, checked the same way everywhere.
//! - [`watch`]: the write-through wait (`Watch`, a guard that always unwatches).
//! - [`problem`]: problem+json errors (`ApiError`).
//! - [`openapi`]: the OpenAPI document and its shared response lists.
//! - [`page`]: the cashier page.
//! - [`strict`]: strict HTTP at the door (sizes, `Host`, content type, problem answers).
//! - [`throttle`]: failed sign-ins limited per client address.
//! - [`limits`]: requests in progress counted per token and per client address.
//! - [`tokens`]: a manager issues and revokes tokens (`/v1/tokens`).
//! - [`tls`]: `[api.tls]`: the operator's or a generated certificate, its fingerprint.
//! - [`server`]: the accept loop: connection cap, timeouts, TLS, a bounded stop.

mod auth;
mod caps;
mod customers;
mod input;
mod limits;
pub mod openapi;
pub mod page;
pub mod problem;
mod reconcile;
mod sales;
mod sales_input;
pub mod server;
mod status;
mod strict;
mod throttle;
pub mod tls;
mod tokens;
mod transactions;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::sync::SyncEngine;
use crate::upstream::health::Health;
pub use auth::Caller;
pub use customers::CustomerView;
pub use problem::ApiError;
pub use throttle::Throttle;
pub use transactions::TxnView;

use auth::{auth, whoami};
use customers::{find_customer, get_customer};
use reconcile::{doubles, last_ledger_report, last_reconcile, run_ledger_report, run_reconcile};
use sales::{get_sale, post_return, post_sale, quote};
pub(crate) use status::refresh_metrics;
use status::{health, metrics, status};
use tokens::{add_token, list_tokens, revoke_token};
use transactions::{get_transaction, list_transactions, post_transaction, resolve_transaction};

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
    /// The daemon's tracker: a task a request starts in the background (the refresh after a
    /// review resolution) is awaited at stop like every other task.
    pub tasks: tokio_util::task::TaskTracker,
    /// The remote-write push's state, for `status` (disabled when `[telemetry]` is not set).
    pub telemetry: Arc<crate::telemetry::TelemetryState>,
    /// The tokens that sign in now (the config's and `tokens.json`'s, reloaded live).
    pub tokens: Arc<crate::tokens::TokenSet>,
    pub throttle: throttle::Throttle,
    /// Requests in progress per token (`api.max_requests_per_token`).
    pub token_requests: limits::InProgress<String>,
    /// Refused sign-ins are logged sampled.
    pub signin_log: std::sync::Mutex<crate::logging::Sampler>,
    /// The data dir (its `tokens.json` is changed by `/v1/tokens`).
    pub data_dir: std::path::PathBuf,
    /// The served certificate, with `[api.tls]`.
    pub tls: Option<tls::CertInfo>,
    /// easyPoints, for a Smapify merchant (`[easypoints]`); read only.
    pub ledgers: Option<Arc<crate::sync::Ledgers>>,
    /// Who grants points for a purchase: the register or pointsd (DESIGN.md §14).
    pub granting: Arc<crate::sync::granting::Granting>,
    /// When the next scheduled backup is due (`[backup] dir`).
    pub backup: Arc<crate::store::backup::BackupSchedule>,
    /// The last retention run (`[retention] keep_days`).
    pub retention: Arc<std::sync::Mutex<crate::store::RetentionStatus>>,
}

pub(crate) type AppRef = Arc<AppState>;

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
        .route("/v1/sales", post(post_sale))
        .route("/v1/sales/quote", post(quote))
        .route("/v1/sales/{sale_id}", get(get_sale))
        .route("/v1/returns", post(post_return))
        .route("/v1/reconcile", get(last_reconcile).post(run_reconcile))
        .route("/v1/reconcile/doubles", get(doubles))
        .route("/v1/tokens", get(list_tokens).post(add_token))
        .route("/v1/tokens/{name}", axum::routing::delete(revoke_token))
        .route(
            "/v1/reconcile/ledgers",
            get(last_ledger_report).post(run_ledger_report),
        )
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
        .layer(middleware::from_fn_with_state(state.clone(), strict::guard))
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
        // The path only: a query string may carry what should not be in a log.
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
            }),
        )
        .with_state(state)
}
