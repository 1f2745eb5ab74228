//! `POST /v1/transactions` (the write path with its write-through wait), `GET
//! /v1/transactions[/{txn_id}]`, and `POST /v1/transactions/{txn_id}/resolve` (review).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::auth::{Caller, require_manager};
use super::caps;
use super::customers::{CustomerView, customer_view};
use super::input::{check_id, json_body, query_params};
use super::openapi::{E400, E401, E403, E404, E409, E413, E422, E503};
use super::watch::Watch;
use super::{ApiError, AppRef, AppState, openapi};
use crate::clock;
use crate::ledger::{self, Balance, RedeemRefusal, State as TxnState};
use crate::store::{
    AcceptCtx, AcceptOutcome, CustomerRow, Resolution, ResolveOutcome, TxnFilter, TxnRow, TxnSplit,
};

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
    /// A sale's or a return's row (kind `sale` or `return`): the split its delta is the net of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitView>,
}

/// The split behind a sale's or a return's net delta (DESIGN.md §10).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SplitView {
    /// The sale (for a return: the sale returned).
    pub sale_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_id: Option<String>,
    /// Yen sold, or returned.
    pub amount: i64,
    /// A sale's points used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_used: Option<i64>,
    /// A sale's points earned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_earned: Option<i64>,
    /// A return's earned points taken back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_taken_back: Option<i64>,
    /// A return's used points given back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_given_back: Option<i64>,
    /// A return's earned points due back that the customer no longer had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<i64>,
    /// The sale's or the return's whole net delta (a return whose take-back the upstream
    /// refused has a smaller follow-up row, so it can differ from this row's delta).
    pub net_delta: i64,
}

fn split_view(s: TxnSplit) -> SplitView {
    match s {
        TxnSplit::Sale(x) => SplitView {
            sale_id: x.sale_id,
            return_id: None,
            amount: x.amount,
            points_used: Some(x.points_used),
            points_earned: Some(x.points_earned),
            points_taken_back: None,
            points_given_back: None,
            shortfall: None,
            net_delta: x.net_delta,
        },
        TxnSplit::Return(x) => SplitView {
            sale_id: x.sale_id,
            return_id: Some(x.return_id),
            amount: x.amount,
            points_used: None,
            points_earned: None,
            points_taken_back: Some(x.points_taken_back),
            points_given_back: Some(x.points_given_back),
            shortfall: Some(x.shortfall),
            net_delta: x.net_delta,
        },
    }
}

pub(super) fn txn_view(t: TxnRow, split: Option<TxnSplit>) -> TxnView {
    TxnView {
        split: split.map(split_view),
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
        kind: t.kind.as_str().to_string(),
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
pub(super) struct WriteAnswer {
    #[serde(flatten)]
    txn: TxnView,
    /// `confirmed`: applied upstream. `queued`: saved here, will sync.
    status: &'static str,
    balance: Balance,
    customer: CustomerView,
}

#[utoipa::path(post, path = "/v1/transactions", tag = "pointsd",
    request_body = openapi::TxnRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "instead of txn_id")),
    responses(
        (status = 201, body = WriteAnswer, description = "accepted and on disk; status says confirmed or queued"),
        (status = 200, body = WriteAnswer, description = "a replay of an earlier request with the same key"),
        E400, E401, E403, E404, E409, E413, E422, E503,
    ))]
pub(super) async fn post_transaction(
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

pub(super) async fn write_transaction(
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
    // Least privilege: a register earns and redeems; changing a balance by hand, or a grant
    // above api.register_max_earn_points (given in points or derived from a purchase amount),
    // or a purchase amount above api.register_max_sale_amount, needs a manager. Refused
    // before anything is written.
    match new.kind {
        ledger::Kind::Adjust => require_manager(caller, "adjust a balance")?,
        ledger::Kind::Earn => {
            if let Some(a) = new.purchase_amount {
                caps::check_amount(st, caller, a, "purchase_amount")?;
            }
            caps::check_grant(st, caller, new.delta(&cfg.earn), "one earn")?;
        }
        ledger::Kind::Redeem => {}
    }
    // One granter per store (DESIGN.md §14): where the register grants, a purchase earns
    // there; an earn given as points (a gift, goodwill) stays possible. A replay of an earn
    // accepted before the mode changed keeps its first answer.
    if new.kind == ledger::Kind::Earn
        && new.purchase_amount.is_some()
        && st.granting.register_grants()
        && st.store.txn(&new.txn_id).await?.is_none()
    {
        let g = st.granting.status();
        return Err(ApiError::Conflict {
            code: "granted_by_register",
            title: "The register grants points for purchases",
            detail: format!(
                "This store's Smaregi register grants the points for a purchase ([earn] granted_by = \"{}\", in effect: register, from {}), so pointsd does not: an earn with purchase_amount would grant them twice. Ring the sale up on the register, or give points as an earn with points.",
                g.setting,
                match g.source {
                    crate::sync::granting::GrantSource::Smaregi =>
                        "the store's point conditions in Smaregi",
                    crate::sync::granting::GrantSource::Config => "the config",
                    crate::sync::granting::GrantSource::Unchecked =>
                        "a store id whose point conditions were not read yet",
                }
            ),
            txn_id: None,
        });
    }
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
    let watch = (online && !budget.is_zero()).then(|| Watch::new(&st.sync, &txn_id));
    let outcome = st.store.accept(new, ctx).await?;
    match outcome {
        AcceptOutcome::Created { txn, customer } => {
            tracing::info!(txn_id = %txn.txn_id, customer_id = %txn.customer_id, kind = %txn.kind, delta = txn.delta, register = %caller.name, "transaction accepted");
            st.sync.kick();
            let answer = match watch {
                Some(watch) => {
                    // Write-through: give the upstream a short budget to confirm.
                    watch.settled_within(budget).await;
                    current_answer(st, &txn_id).await?
                }
                // No wait: the rows as committed are the answer (no second read).
                None => answer_of(st, txn, customer)?,
            };
            Ok((StatusCode::CREATED, answer))
        }
        AcceptOutcome::Replay { txn, customer } => {
            Ok((StatusCode::OK, answer_of(st, txn, customer)?))
        }
        AcceptOutcome::Conflict { existing } => Err(ApiError::Conflict {
            code: "idempotency_conflict",
            title: "Idempotency key reused",
            detail: format!(
                "txn_id {:?} was already used for a different request (customer {}, {} {}). Use a new txn_id for a new transaction.",
                existing.txn_id, existing.customer_id, existing.kind, existing.delta
            ),
            txn_id: Some(existing.txn_id),
        }),
        AcceptOutcome::UnknownCustomer => Err(ApiError::NotFound(format!(
            "No customer with id {customer_id:?} in the local cache; check the id or look the customer up by code or barcode."
        ))),
        AcceptOutcome::Refused { refusal, .. } => {
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
                RedeemRefusal::ChangedElsewhere { at } => (
                    "changed_elsewhere_offline",
                    "Points changed elsewhere",
                    format!(
                        "The upstream is unreachable and this customer's points changed in another store or online at {at}, after this store last read them; they cannot be spent offline (offline.changed_elsewhere = \"refuse\"). Earning still works."
                    ),
                ),
                RedeemRefusal::Expired { at, spendable } => (
                    "points_expired",
                    "Points expired",
                    format!(
                        "easyPoints says this customer's points expired on {at} (easyPoints owns the expiry; Smaregi does not know it, so pointsd refuses online and offline). Points added since: {spendable}."
                    ),
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
pub(super) async fn current_answer(
    st: &AppState,
    txn_id: &str,
) -> Result<Json<WriteAnswer>, ApiError> {
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
pub(super) fn answer_of(
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
        txn: txn_view(txn, None),
        status,
        balance: view.balance,
        customer: view,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TxnDetail {
    #[serde(flatten)]
    txn: TxnView,
    /// Review decisions taken on this transaction, oldest first.
    resolutions: Vec<ResolutionView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ResolutionView {
    from_state: String,
    action: String,
    resolved_by: String,
    note: String,
    at: String,
}

pub(super) async fn txn_detail(st: &AppState, txn_id: &str) -> Result<Json<TxnDetail>, ApiError> {
    let t = st
        .store
        .txn(txn_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No transaction with txn_id {txn_id:?}.")))?;
    let split = st.store.splits(vec![t.clone()]).await?.pop().flatten();
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
        txn: txn_view(t, split),
        resolutions,
    }))
}

#[utoipa::path(get, path = "/v1/transactions/{txn_id}", tag = "pointsd",
    params(("txn_id" = String, Path, pattern = "^[!-~]{1,64}$")),
    responses((status = 200, body = TxnDetail), E401, E404, E422, E503))]
pub(super) async fn get_transaction(
    State(st): State<AppRef>,
    Path(txn_id): Path<String>,
) -> Result<Json<TxnDetail>, ApiError> {
    check_id("txn_id", &txn_id)?;
    txn_detail(&st, &txn_id).await
}

/// A person's decision on a review-queue item, audited with who and why.
#[utoipa::path(post, path = "/v1/transactions/{txn_id}/resolve", tag = "pointsd",
    params(("txn_id" = String, Path, pattern = "^[!-~]{1,64}$")),
    request_body = openapi::ResolveRequest,
    responses((status = 200, body = TxnDetail), E400, E401, E403, E404,
        E409, E413, E422, E503))]
pub(super) async fn resolve_transaction(
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
    // Both are Some when no error was recorded; a bug here is a 500, never a crash.
    let (Some(res), Some(note)) = (res, note) else {
        return Err(ApiError::Internal);
    };
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
            tracing::warn!(txn_id = %txn_id, action = res.as_str(), by = %caller.name, note = ?note, "review item resolved");
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

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TxnList {
    transactions: Vec<TxnView>,
}

#[utoipa::path(get, path = "/v1/transactions", tag = "pointsd",
    params(
        ("state" = Option<crate::ledger::State>, Query, description = "pending, sending, ambiguous, applied, rejected, needs_review, discarded"),
        ("customer_id" = Option<String>, Query, pattern = "^[!-~]{1,64}$"),
        ("register_id" = Option<String>, Query, pattern = "^[!-~]{1,64}$"),
        ("limit" = Option<u32>, Query, description = "1..=1000, default 100", minimum = 1, maximum = 1000),
    ),
    responses((status = 200, body = TxnList), E401, E422, E503))]
pub(super) async fn list_transactions(
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
    let splits = st.store.splits(rows.clone()).await?;
    Ok(Json(TxnList {
        transactions: rows
            .into_iter()
            .zip(splits)
            .map(|(t, s)| txn_view(t, s))
            .collect(),
    }))
}
