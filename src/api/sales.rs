//! Sales and returns (DESIGN.md §10): `POST /v1/sales/quote` (no write), `POST /v1/sales`,
//! `GET /v1/sales/{sale_id}`, `POST /v1/returns`. Each write is one local commit, idempotent
//! by its id (or the `Idempotency-Key` header), with the write-through wait of a transaction.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{Caller, require_manager};
use super::caps;
use super::input::{check_id, json_body};
use super::openapi::{E400, E401, E403, E404, E409, E413, E422, E503};
use super::watch::Watch;
use super::{ApiError, AppRef, AppState};
use crate::clock;
use crate::ledger::{
    self, AppliedRule, Balance, MAX_POINTS, MAX_PURCHASE_AMOUNT, State as TxnState,
};
use crate::store::{
    CustomerRow, NewReturn, NewSale, Receipt, ReturnOutcome, ReturnRecord, SaleOutcome, SaleRecord,
};

use super::sales_input::*;

/// The body of `POST /v1/sales/quote`.
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"customer_id": "1", "amount": 2480, "points_used": 0}))]
pub struct QuoteRequest {
    #[schema(pattern = "^[!-~]{1,64}$")]
    customer_id: String,
    /// Yen, tax included, a positive whole number.
    #[schema(minimum = 1, maximum = 10_000_000_000_i64)]
    amount: i64,
    /// Points the customer uses on this sale (default 0).
    #[schema(minimum = 0, maximum = 10_000_000)]
    points_used: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct QuoteAnswer {
    customer_id: String,
    amount: i64,
    points_used: i64,
    points_earned: i64,
    /// earned − used: the one change the sale would make.
    net_delta: i64,
    /// The balance as it would be after the sale.
    balance_after: Balance,
    /// The most points this sale could use ("use all"): the spend rules (share, unit,
    /// minimum), the balance and, offline, the offline policy.
    max_points_used: i64,
    /// The rules that gave these figures, in the order they apply.
    applied_rules: Vec<AppliedRule>,
    /// Who grants this sale's points: `register` (the Smaregi register, when the sale reaches
    /// Smaregi; `points_earned` is then 0) or `pointsd`.
    earned_by: &'static str,
}

/// `earned_by` of a sale or quote, from the rules that priced it.
fn earned_by(rules: &[AppliedRule]) -> &'static str {
    if rules
        .iter()
        .any(|r| r.rule == ledger::GRANTED_BY_REGISTER_RULE)
    {
        "register"
    } else {
        "pointsd"
    }
}

/// The figures of a sale before the customer pays; nothing is written.
#[utoipa::path(post, path = "/v1/sales/quote", tag = "pointsd",
    request_body = QuoteRequest,
    responses((status = 200, body = QuoteAnswer), E400, E401, E403, E404, E409, E413, E422, E503))]
pub(super) async fn quote(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<QuoteAnswer>, ApiError> {
    let v = json_body(body)?;
    let map = object(&v, &["customer_id", "amount", "points_used"])?;
    let mut errs = Vec::new();
    let customer_id = req_id(map, "customer_id", &mut errs);
    let amount = req_amount(map, &mut errs);
    let used = opt_int(map, "points_used", 0, MAX_POINTS, &mut errs).unwrap_or(0);
    let (customer_id, amount) = done(errs, || (customer_id.unwrap(), amount.unwrap()))?;
    // A quote writes nothing: a register is told what its sale would meet, a manager's
    // larger quote is no grant to log.
    if caller.role == crate::config::Role::Register {
        caps::check_amount(&st, &caller, amount, "amount")?;
    }
    let ctx = sale_ctx(&st, &caller);
    let Some((q, customer)) = st
        .store
        .quote_sale(&customer_id, amount, used, &ctx)
        .await?
    else {
        return Err(unknown_customer(&customer_id));
    };
    let q = q.map_err(refusal)?;
    let b = customer.balance();
    // What a sale could spend: as the redeem checks count it (offline policy, expiry, points
    // changed elsewhere), then the spend rules.
    let expired = customer.expired(&ctx.today, ctx.now_ms);
    let changed = ledger::check_changed_elsewhere(
        customer.changed_elsewhere_at.as_deref(),
        ctx.online,
        &ctx.offline,
    );
    let spendable = match changed {
        Ok(()) => ledger::max_spendable(b, expired, ctx.online, &ctx.offline),
        Err(_) => 0,
    };
    // easyPoints' expiry holds online too: only points added since remain.
    let spendable = match customer.owner_expired_at(ctx.now_ms) {
        Some(_) => spendable.min((b.available - b.confirmed).max(0)),
        None => spendable,
    };
    let max = ledger::usable_points_for(amount, &ctx.rules.spend, spendable);
    Ok(Json(QuoteAnswer {
        customer_id,
        amount,
        points_used: q.points_used,
        points_earned: q.points_earned,
        net_delta: q.net_delta,
        balance_after: Balance::new(b.confirmed, b.pending + q.net_delta),
        max_points_used: max,
        earned_by: earned_by(&q.applied_rules),
        applied_rules: q.applied_rules,
    }))
}

// ----- sales -----

/// The body of `POST /v1/sales` (unknown fields are refused).
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sale_id": "R-0001", "customer_id": "1", "amount": 2480, "points_used": 0}))]
pub struct SaleRequest {
    /// The sale's id (e.g. the receipt number; or send the `Idempotency-Key` header).
    #[schema(pattern = "^[!-~]{1,64}$")]
    sale_id: Option<String>,
    #[schema(pattern = "^[!-~]{1,64}$")]
    customer_id: String,
    /// Yen, tax included, a positive whole number.
    #[schema(minimum = 1, maximum = 10_000_000_000_i64)]
    amount: i64,
    /// Points the customer uses on this sale (default 0).
    #[schema(minimum = 0, maximum = 10_000_000)]
    points_used: Option<i64>,
    #[schema(pattern = "^[!-~]{1,64}$")]
    register_id: Option<String>,
    #[schema(pattern = "^[!-~]{1,64}$")]
    staff_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SaleAnswer {
    sale_id: String,
    customer_id: String,
    amount: i64,
    points_used: i64,
    points_earned: i64,
    /// earned − used, sent upstream as one change (none when zero).
    net_delta: i64,
    applied_rules: Vec<AppliedRule>,
    /// Who grants this sale's points: `register` (the Smaregi register, when the sale reaches
    /// Smaregi; `points_earned` is then 0) or `pointsd`.
    earned_by: &'static str,
    /// Where the net delta is on its way upstream (`applied` when there was nothing to send).
    state: TxnState,
    /// `confirmed`: applied upstream (or nothing to send). `queued`: saved here, will sync.
    status: &'static str,
    /// The customer's balance now.
    balance: Balance,
    /// The outbox transaction carrying the net delta, if any.
    txn_id: Option<String>,
    register_id: Option<String>,
    staff_id: Option<String>,
    created_at: String,
}

fn sale_answer(st: &AppState, r: SaleRecord) -> SaleAnswer {
    let state = r.state();
    let s = r.sale;
    SaleAnswer {
        sale_id: s.sale_id,
        customer_id: s.customer_id,
        amount: s.amount,
        points_used: s.points_used,
        points_earned: s.points_earned,
        net_delta: s.net_delta,
        earned_by: earned_by(&s.applied_rules),
        applied_rules: s.applied_rules,
        state,
        status: status_of(state),
        balance: balance_of(st, r.customer),
        txn_id: s.txn_id,
        register_id: s.register_id,
        staff_id: s.staff_id,
        created_at: clock::rfc3339(s.created_at),
    }
}

fn upstream_rejected(txn: Option<&crate::store::TxnRow>, what: &str) -> Option<ApiError> {
    let t = txn.filter(|t| t.state == TxnState::Rejected)?;
    let reason = t
        .upstream_result
        .clone()
        .or(t.last_error.clone())
        .unwrap_or_default();
    Some(ApiError::Conflict {
        code: "upstream_rejected",
        title: "Refused by the upstream",
        detail: format!(
            "The upstream refused this {what}'s points, so they do not count: {reason}"
        ),
        txn_id: Some(t.txn_id.clone()),
    })
}

async fn current_sale(st: &AppState, sale_id: &str) -> Result<SaleRecord, ApiError> {
    st.store
        .sale(sale_id)
        .await?
        .ok_or_else(|| ApiError::Missing {
            code: "unknown_sale",
            detail: format!("No sale with sale_id {sale_id:?} was recorded by this store."),
        })
}

/// A sale: points used and earned in one write, pushed upstream as one net delta.
#[utoipa::path(post, path = "/v1/sales", tag = "pointsd",
    request_body = SaleRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "instead of sale_id")),
    responses(
        (status = 201, body = SaleAnswer, description = "recorded and on disk; status says confirmed or queued"),
        (status = 200, body = SaleAnswer, description = "a replay of an earlier request with the same id"),
        E400, E401, E403, E404, E409, E413, E422, E503,
    ))]
pub(super) async fn post_sale(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(body)?;
    let map = object(
        &v,
        &[
            "sale_id",
            "customer_id",
            "amount",
            "points_used",
            "register_id",
            "staff_id",
        ],
    )?;
    let mut errs = Vec::new();
    let sale_id = write_id(map, "sale_id", &headers, &mut errs);
    let customer_id = req_id(map, "customer_id", &mut errs);
    let amount = req_amount(map, &mut errs);
    let points_used = opt_int(map, "points_used", 0, MAX_POINTS, &mut errs).unwrap_or(0);
    let register_id = opt_id(map, "register_id", &mut errs);
    let staff_id = opt_id(map, "staff_id", &mut errs);
    let new = done(errs, || NewSale {
        sale_id: sale_id.unwrap(),
        customer_id: customer_id.unwrap(),
        amount: amount.unwrap(),
        points_used,
        register_id,
        staff_id,
    })?;
    // A register's sale is bounded by amount here and by points earned in the same commit
    // that prices it (`SaleCtx::earn_cap`); nothing is written past either.
    caps::check_amount(&st, &caller, new.amount, "amount")?;
    let ctx = sale_ctx(&st, &caller);
    let budget = st.settings.sync.online_budget;
    let txn_id = crate::store::sale_txn_id(&new.sale_id);
    let watch = (ctx.online && !budget.is_zero()).then(|| Watch::new(&st.sync, &txn_id));
    let sale_id = new.sale_id.clone();
    let customer_id = new.customer_id.clone();
    match st.store.accept_sale(new, ctx).await? {
        SaleOutcome::Created(rec) => {
            tracing::info!(sale_id = %sale_id, customer_id = %customer_id, amount = rec.sale.amount,
                used = rec.sale.points_used, earned = rec.sale.points_earned, net = rec.sale.net_delta,
                register = %caller.name, "sale recorded");
            // A manager's sale past the register's cap leaves a WARN (a register's was refused).
            caps::warn_manager_grant(&st, &caller, rec.sale.points_earned, "one sale");
            let rec = if rec.txn.is_some() {
                st.sync.kick();
                match watch {
                    Some(w) => {
                        w.settled_within(budget).await;
                        current_sale(&st, &sale_id).await?
                    }
                    None => rec,
                }
            } else {
                rec
            };
            if let Some(e) = upstream_rejected(rec.txn.as_ref(), "sale") {
                return Err(e);
            }
            Ok((StatusCode::CREATED, Json(sale_answer(&st, rec))).into_response())
        }
        SaleOutcome::Replay(rec) => {
            if let Some(e) = upstream_rejected(rec.txn.as_ref(), "sale") {
                return Err(e);
            }
            Ok((StatusCode::OK, Json(sale_answer(&st, rec))).into_response())
        }
        SaleOutcome::Conflict { existing } => Err(ApiError::Conflict {
            code: "idempotency_conflict",
            title: "Sale id reused",
            detail: format!(
                "sale_id {:?} was already used for a different sale (customer {}, {} yen, {} points used). Use a new sale_id for a new sale.",
                existing.sale_id, existing.customer_id, existing.amount, existing.points_used
            ),
            txn_id: existing.txn_id,
        }),
        SaleOutcome::IdTaken { txn_id } => Err(ApiError::Conflict {
            code: "idempotency_conflict",
            title: "Sale id reused",
            detail: format!(
                "The sale's transaction id {txn_id:?} is already used by another transaction; use another sale_id."
            ),
            txn_id: Some(txn_id),
        }),
        SaleOutcome::UnknownCustomer => Err(unknown_customer(&customer_id)),
        SaleOutcome::Refused(r) => Err(refusal(r)),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ReturnAnswer {
    return_id: String,
    sale_id: String,
    customer_id: String,
    /// Yen returned.
    amount: i64,
    /// Earned points taken back.
    points_taken_back: i64,
    /// Used points given back.
    points_given_back: i64,
    /// given back − taken back, sent upstream as one change (none when zero).
    net_delta: i64,
    /// Earned points due back that the customer no longer had (not taken).
    shortfall: i64,
    state: TxnState,
    /// `confirmed` or `queued`.
    status: &'static str,
    /// The customer's balance now.
    balance: Balance,
    /// The outbox transaction carrying the net delta, if any.
    txn_id: Option<String>,
    register_id: Option<String>,
    staff_id: Option<String>,
    created_at: String,
}

fn return_answer(st: &AppState, r: ReturnRecord, customer: CustomerRow) -> ReturnAnswer {
    let state = r.state();
    let x = r.ret;
    ReturnAnswer {
        return_id: x.return_id,
        sale_id: x.sale_id,
        customer_id: customer.customer_id.clone(),
        amount: x.amount,
        points_taken_back: x.points_taken_back,
        points_given_back: x.points_given_back,
        net_delta: x.net_delta,
        shortfall: x.shortfall,
        state,
        status: status_of(state),
        balance: balance_of(st, customer),
        txn_id: x.txn_id,
        register_id: x.register_id,
        staff_id: x.staff_id,
        created_at: clock::rfc3339(x.created_at),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SaleDetail {
    #[serde(flatten)]
    sale: SaleAnswer,
    /// Recorded from a receipt for a return (a sale this store never recorded).
    external: bool,
    returns: Vec<ReturnAnswer>,
    returned_amount: i64,
    /// Yen that can still be returned.
    returnable_amount: i64,
    points_taken_back: i64,
    points_given_back: i64,
    /// Earned points its returns could not take back.
    shortfall: i64,
}

/// A sale, its returns and what is still returnable.
#[utoipa::path(get, path = "/v1/sales/{sale_id}", tag = "pointsd",
    params(("sale_id" = String, Path, pattern = "^[!-~]{1,64}$")),
    responses((status = 200, body = SaleDetail), E401, E404, E422, E503))]
pub(super) async fn get_sale(
    State(st): State<AppRef>,
    Path(sale_id): Path<String>,
) -> Result<Json<SaleDetail>, ApiError> {
    if sale_id.is_empty()
        || sale_id.len() > 80
        || !sale_id.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        check_id("sale_id", &sale_id)?;
    }
    let rec = current_sale(&st, &sale_id).await?;
    let (returned_amount, returnable_amount) = (rec.returned_amount(), rec.returnable_amount());
    let sum = |f: fn(&ReturnRecord) -> i64| rec.returns.iter().map(f).sum::<i64>();
    let (taken, given, short) = (
        sum(|r| r.ret.points_taken_back),
        sum(|r| r.ret.points_given_back),
        sum(|r| r.ret.shortfall),
    );
    let external = rec.sale.external;
    let returns = rec
        .returns
        .iter()
        .cloned()
        .map(|r| return_answer(&st, r, rec.customer.clone()))
        .collect();
    Ok(Json(SaleDetail {
        sale: sale_answer(&st, rec),
        external,
        returns,
        returned_amount,
        returnable_amount,
        points_taken_back: taken,
        points_given_back: given,
        shortfall: short,
    }))
}

// ----- returns -----

/// The body of `POST /v1/returns`: `{return_id, sale_id, amount?}`, or, for a sale this store
/// never recorded (manager token only), `{return_id, customer_id, amount, points_earned,
/// points_used}` with the receipt's figures.
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"return_id": "RT-0001", "sale_id": "R-0001", "amount": 1240}))]
pub struct ReturnRequest {
    /// The return's id (or send the `Idempotency-Key` header).
    #[schema(pattern = "^[!-~]{1,64}$")]
    return_id: Option<String>,
    /// The sale returned (a receipt barcode).
    #[schema(pattern = "^[!-~]{1,64}$")]
    sale_id: Option<String>,
    /// Yen returned; omitted: all that is still returnable. Required with a receipt.
    #[schema(minimum = 1, maximum = 10_000_000_000_i64)]
    amount: Option<i64>,
    /// Receipt form only: the customer of the unrecorded sale.
    #[schema(pattern = "^[!-~]{1,64}$")]
    customer_id: Option<String>,
    /// Receipt form only: points the returned goods earned.
    #[schema(minimum = 0, maximum = 10_000_000)]
    points_earned: Option<i64>,
    /// Receipt form only: points used on the returned goods.
    #[schema(minimum = 0, maximum = 10_000_000)]
    points_used: Option<i64>,
    #[schema(pattern = "^[!-~]{1,64}$")]
    register_id: Option<String>,
    #[schema(pattern = "^[!-~]{1,64}$")]
    staff_id: Option<String>,
}

/// A return of all or part of a sale: earned points taken back and used points given back in
/// proportion (cumulative rule), as one net delta.
#[utoipa::path(post, path = "/v1/returns", tag = "pointsd",
    request_body = ReturnRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "instead of return_id")),
    responses(
        (status = 201, body = ReturnAnswer, description = "recorded and on disk; status says confirmed or queued"),
        (status = 200, body = ReturnAnswer, description = "a replay of an earlier request with the same id"),
        E400, E401, E403, E404, E409, E413, E422, E503,
    ))]
pub(super) async fn post_return(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(body)?;
    let map = object(
        &v,
        &[
            "return_id",
            "sale_id",
            "amount",
            "customer_id",
            "points_earned",
            "points_used",
            "register_id",
            "staff_id",
        ],
    )?;
    let mut errs = Vec::new();
    let return_id = write_id(map, "return_id", &headers, &mut errs);
    let sale_id = opt_id(map, "sale_id", &mut errs);
    let amount = opt_int(map, "amount", 1, MAX_PURCHASE_AMOUNT, &mut errs);
    let customer_id = opt_id(map, "customer_id", &mut errs);
    let earned = opt_int(map, "points_earned", 0, MAX_POINTS, &mut errs);
    let used = opt_int(map, "points_used", 0, MAX_POINTS, &mut errs);
    let register_id = opt_id(map, "register_id", &mut errs);
    let staff_id = opt_id(map, "staff_id", &mut errs);
    let receipt_fields = ["customer_id", "points_earned", "points_used"];
    let receipt = if sale_id.is_some() {
        for f in receipt_fields {
            if map.get(f).is_some_and(|v| !v.is_null()) {
                errs.push(fe(f, "only for a return without sale_id (receipt figures)"));
            }
        }
        None
    } else if map.get("sale_id").is_some_and(|v| !v.is_null()) {
        None // its error is already listed
    } else if customer_id.is_some() || earned.is_some() || used.is_some() {
        for (f, missing) in [
            ("customer_id", customer_id.is_none()),
            ("points_earned", earned.is_none()),
            ("points_used", used.is_none()),
            ("amount", amount.is_none()),
        ] {
            if missing && !errs.iter().any(|e| e.field == f) {
                errs.push(fe(f, "required with receipt figures"));
            }
        }
        Some(())
    } else {
        errs.push(fe(
            "sale_id",
            "required: the sale returned (or, with a manager token, the receipt figures customer_id, amount, points_earned, points_used)",
        ));
        None
    };
    if receipt.is_some() && errs.is_empty() {
        require_manager(
            &caller,
            "record a return of a sale this store never recorded",
        )?;
    }
    let new = done(errs, || NewReturn {
        return_id: return_id.unwrap(),
        sale_id,
        amount,
        receipt: receipt.map(|()| Receipt {
            customer_id: customer_id.unwrap(),
            points_earned: earned.unwrap(),
            points_used: used.unwrap(),
        }),
        register_id,
        staff_id,
    })?;
    let ctx = sale_ctx(&st, &caller);
    let budget = st.settings.sync.online_budget;
    let txn_id = crate::store::return_txn_id(&new.return_id);
    let watch = (ctx.online && !budget.is_zero()).then(|| Watch::new(&st.sync, &txn_id));
    let return_id = new.return_id.clone();
    let sale_ref = new.sale_id.clone().unwrap_or_default();
    let current = |st: AppRef, id: String| async move {
        st.store
            .return_of(&id)
            .await?
            .ok_or_else(|| ApiError::Missing {
                code: "unknown_return",
                detail: format!("return {id:?} vanished"),
            })
    };
    match st.store.accept_return(new, ctx).await? {
        ReturnOutcome::Created { ret, customer } => {
            tracing::info!(return_id = %return_id, sale_id = %ret.ret.sale_id, amount = ret.ret.amount,
                taken_back = ret.ret.points_taken_back, given_back = ret.ret.points_given_back,
                shortfall = ret.ret.shortfall, register = %caller.name, "return recorded");
            let (ret, customer) = if ret.txn.is_some() {
                st.sync.kick();
                match watch {
                    Some(w) => {
                        w.settled_within(budget).await;
                        current(st.clone(), return_id).await?
                    }
                    None => (ret, customer),
                }
            } else {
                (ret, customer)
            };
            if let Some(e) = upstream_rejected(ret.txn.as_ref(), "return") {
                return Err(e);
            }
            Ok((StatusCode::CREATED, Json(return_answer(&st, ret, customer))).into_response())
        }
        ReturnOutcome::Replay { ret, customer } => {
            Ok((StatusCode::OK, Json(return_answer(&st, ret, customer))).into_response())
        }
        ReturnOutcome::Conflict { existing } => Err(ApiError::Conflict {
            code: "idempotency_conflict",
            title: "Return id reused",
            detail: format!(
                "return_id {:?} was already used for a different return (sale {}, {} yen). Use a new return_id for a new return.",
                existing.return_id, existing.sale_id, existing.amount
            ),
            txn_id: existing.txn_id,
        }),
        ReturnOutcome::IdTaken { id } => Err(ApiError::Conflict {
            code: "idempotency_conflict",
            title: "Return id reused",
            detail: format!("{id:?} is already used by another record; use another return_id."),
            txn_id: None,
        }),
        ReturnOutcome::UnknownSale => Err(ApiError::Missing {
            code: "unknown_sale",
            detail: format!(
                "No sale with sale_id {sale_ref:?} was recorded by this store. For a sale made elsewhere (or before pointsd ran here), a manager records the return with the receipt's figures: customer_id, amount, points_earned, points_used."
            ),
        }),
        ReturnOutcome::UnknownCustomer => Err(unknown_customer(
            v.get("customer_id").and_then(Value::as_str).unwrap_or(""),
        )),
        ReturnOutcome::Exceeds { returnable, asked } => Err(ApiError::Conflict {
            code: "return_exceeds_sale",
            title: "More than was sold",
            detail: format!(
                "Sale {sale_ref:?} has {returnable} yen left to return; this return asks for {asked}."
            ),
            txn_id: None,
        }),
        ReturnOutcome::SaleNotCounted { state } => Err(ApiError::Conflict {
            code: "sale_not_counted",
            title: "The sale's points do not count",
            detail: format!(
                "Sale {sale_ref:?} is {}: its points never counted, so a return has nothing to reverse.",
                state.as_str()
            ),
            txn_id: None,
        }),
    }
}
