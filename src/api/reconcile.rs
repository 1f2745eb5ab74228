//! `GET /v1/reconcile` (the last report) and `POST /v1/reconcile` (run one now, manager);
//! `GET|POST /v1/reconcile/ledgers`, the same for the cross-ledger report of a Smapify
//! merchant (Smaregi against easyPoints).

use crate::store::Meta;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use super::auth::{Caller, require_manager};
use super::openapi::{E401, E403, E404, E503};
use super::{ApiError, AppRef};

#[utoipa::path(get, path = "/v1/reconcile", tag = "pointsd",
    responses((status = 200, body = crate::sync::ReconcileReport), E401, E404, E503))]
pub(super) async fn last_reconcile(State(st): State<AppRef>) -> Result<Json<Value>, ApiError> {
    match st.store.meta(Meta::LastReconcile).await? {
        Some(j) => Ok(Json(serde_json::from_str(&j).unwrap_or(Value::Null))),
        None => Err(ApiError::NotFound(
            "No reconciliation has run yet; it runs with every full refresh, or POST /v1/reconcile.".into(),
        )),
    }
}

#[utoipa::path(post, path = "/v1/reconcile", tag = "pointsd",
    responses((status = 200, body = crate::sync::ReconcileReport), E401, E403, E503))]
pub(super) async fn run_reconcile(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    require_manager(&caller, "run a reconciliation")?;
    match tokio::time::timeout(Duration::from_secs(120), st.sync.refresh_and_reconcile()).await {
        Ok(Ok(report)) => Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null))),
        Ok(Err(e)) => Err(ApiError::Upstream(e.to_string())),
        Err(_) => Err(ApiError::Upstream(
            "the upstream took longer than 120 s".into(),
        )),
    }
}

fn ledgers(st: &AppRef) -> Result<&std::sync::Arc<crate::sync::Ledgers>, ApiError> {
    st.ledgers.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "No [easypoints] section is configured: the cross-ledger report is for Smapify merchants (see README \"Smapify merchants\").".into(),
        )
    })
}

#[utoipa::path(get, path = "/v1/reconcile/ledgers", tag = "pointsd",
    responses((status = 200, body = crate::sync::LedgerReport), E401, E404, E503))]
pub(super) async fn last_ledger_report(
    State(st): State<AppRef>,
) -> Result<Json<crate::sync::LedgerReport>, ApiError> {
    match ledgers(&st)?.last_report().await? {
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::NotFound(
            "No cross-ledger report has run yet; POST /v1/reconcile/ledgers (or `pointsd reconcile --ledgers`) runs one.".into(),
        )),
    }
}

#[utoipa::path(post, path = "/v1/reconcile/ledgers", tag = "pointsd",
    responses((status = 200, body = crate::sync::LedgerReport), E401, E403, E404, E503))]
pub(super) async fn run_ledger_report(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<crate::sync::LedgerReport>, ApiError> {
    require_manager(&caller, "run a cross-ledger report")?;
    let l = ledgers(&st)?;
    // Paced at half easyPoints' own limit: 200 customers at 2/s take about three minutes.
    match tokio::time::timeout(Duration::from_secs(300), l.run_report()).await {
        Ok(Ok(r)) => Ok(Json(r)),
        Ok(Err(crate::sync::LedgerError::Store(e))) => Err(e.into()),
        Ok(Err(e)) => Err(ApiError::Upstream(e.to_string())),
        Err(_) => Err(ApiError::Upstream(
            "the report took longer than 300 s; the last one kept is at GET /v1/reconcile/ledgers"
                .into(),
        )),
    }
}

/// `GET /v1/reconcile/doubles`: possible double counts (DESIGN.md §14).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct DoublesReport {
    /// A register sale and a pointsd operation for the same customer within `window_s` that
    /// may have counted the same purchase twice (`kind`: `earn` or `use`). Nothing is
    /// corrected automatically; a manager settles each with an adjust.
    doubles: Vec<crate::store::PossibleDouble>,
    /// `[earn] double_window_s`.
    window_s: u64,
}

/// Possible double counts between the register and pointsd (manager only): register sales
/// of the last 31 days the change feed saw, each with the pointsd grant or redeem close to it.
#[utoipa::path(get, path = "/v1/reconcile/doubles", tag = "pointsd",
    responses((status = 200, body = DoublesReport), E401, E403, E503))]
pub(super) async fn doubles(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<DoublesReport>, ApiError> {
    require_manager(&caller, "list possible double counts")?;
    let (doubles, window) = st.sync.possible_doubles().await?;
    Ok(Json(DoublesReport {
        doubles,
        window_s: window.as_secs(),
    }))
}
