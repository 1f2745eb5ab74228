//! Reading a sale's or a return's request body, and turning the store's refusals into
//! problem+json answers (shared by the handlers in `sales.rs`).

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use super::auth::Caller;
use super::customers::customer_view;
use super::{ApiError, AppState};
use crate::clock;
use crate::ledger::{
    self, Balance, FieldError, MAX_PURCHASE_AMOUNT, RedeemRefusal, SaleRules, State as TxnState,
};
use crate::store::{CustomerRow, PriceRefusal, SaleCtx};

pub(super) fn fe(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// A JSON object body, with unknown fields refused by name.
pub(super) fn object<'a>(
    body: &'a Value,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::field("(body)", "must be a JSON object"));
    };
    let unknown: Vec<FieldError> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| fe(k, "unknown field"))
        .collect();
    if unknown.is_empty() {
        Ok(map)
    } else {
        Err(ApiError::Validation(unknown))
    }
}

pub(super) fn opt_id(
    map: &Map<String, Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> Option<String> {
    match map.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if ledger::is_valid_id(s) => Some(s.clone()),
        Some(_) => {
            errs.push(fe(
                field,
                "must be a string of 1-64 printable ASCII characters without spaces",
            ));
            None
        }
    }
}

pub(super) fn req_id(
    map: &Map<String, Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> Option<String> {
    let v = opt_id(map, field, errs);
    if v.is_none() && !errs.iter().any(|e| e.field == field) {
        errs.push(fe(field, "required"));
    }
    v
}

/// A whole number in `min..=max`, or none when absent.
pub(super) fn opt_int(
    map: &Map<String, Value>,
    field: &str,
    min: i64,
    max: i64,
    errs: &mut Vec<FieldError>,
) -> Option<i64> {
    match map.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                errs.push(fe(field, format!("must be a whole number {min}..={max}")));
                None
            }
        },
        Some(_) => {
            errs.push(fe(field, "must be a whole number, not a string"));
            None
        }
    }
}

pub(super) fn req_amount(map: &Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<i64> {
    let v = opt_int(map, "amount", 1, MAX_PURCHASE_AMOUNT, errs);
    if v.is_none() && !errs.iter().any(|e| e.field == "amount") {
        errs.push(fe(
            "amount",
            "required: yen, tax included, a positive whole number",
        ));
    }
    v
}

/// The id of a write: the body's field or the `Idempotency-Key` header (equal if both).
pub(super) fn write_id(
    map: &Map<String, Value>,
    field: &str,
    headers: &HeaderMap,
    errs: &mut Vec<FieldError>,
) -> Option<String> {
    let body = opt_id(map, field, errs);
    let header = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(h)) if ledger::is_valid_id(h) => Some(h.to_string()),
        Some(_) => {
            errs.push(fe(
                "Idempotency-Key",
                "header must be 1-64 printable ASCII characters without spaces",
            ));
            None
        }
    };
    match (body, header) {
        (Some(b), Some(h)) if b != h => {
            errs.push(fe(
                field,
                "differs from the Idempotency-Key header; send one key",
            ));
            None
        }
        (Some(b), _) => Some(b),
        (None, Some(h)) => Some(h),
        (None, None) => {
            if !errs.iter().any(|e| e.field == field) {
                errs.push(fe(
                    field,
                    "required (or an Idempotency-Key header) so a retried request is not counted twice",
                ));
            }
            None
        }
    }
}

pub(super) fn done<T>(errs: Vec<FieldError>, v: impl FnOnce() -> T) -> Result<T, ApiError> {
    if errs.is_empty() {
        Ok(v())
    } else {
        Err(ApiError::Validation(errs))
    }
}

pub(super) fn sale_ctx(st: &AppState, caller: &Caller) -> SaleCtx {
    let cfg = &st.settings.config;
    let now = st.clock.now_ms();
    let offset = ledger::parse_timezone(&cfg.agent.timezone).unwrap_or(9 * 3600);
    SaleCtx {
        now_ms: now,
        today: clock::jst_date(now),
        day: ledger::store_day(now, offset),
        online: st.health.is_online(),
        token_name: caller.name.clone(),
        rules: SaleRules {
            earn: cfg.earn.clone(),
            spend: cfg.spend.clone(),
            tiers: cfg.tiers.clone(),
            register_grants: st.granting.register_grants(),
        },
        offline: cfg.offline.clone(),
        returns: cfg.returns.clone(),
        earn_cap: (caller.role == crate::config::Role::Register)
            .then_some(cfg.api.register_max_earn_points),
    }
}

pub(super) fn refusal(r: PriceRefusal) -> ApiError {
    match r {
        PriceRefusal::EarnCap { earned, cap } => ApiError::RegisterCap {
            key: super::caps::MAX_EARN_KEY,
            detail: format!(
                "A register token may grant at most {cap} points in one sale ({}); this sale would earn {earned}. Ask a manager, or use a manager token.",
                super::caps::MAX_EARN_KEY
            ),
        },
        PriceRefusal::TooManyPoints { earned } => ApiError::field(
            "amount",
            format!(
                "would earn {earned} points; one sale may carry at most {}",
                ledger::MAX_POINTS
            ),
        ),
        PriceRefusal::Spend(s) => ApiError::Rule {
            rule: s.rule,
            field: "points_used",
            message: s.message,
        },
        PriceRefusal::Redeem(r) => {
            let (code, title, detail) = match r {
                RedeemRefusal::Insufficient {
                    requested,
                    spendable,
                } => (
                    "insufficient_points",
                    "Not enough points",
                    format!(
                        "Using {requested} points needs more than the {spendable} points available."
                    ),
                ),
                RedeemRefusal::OfflineDisabled => (
                    "offline_redeem_disabled",
                    "Points cannot be used offline",
                    "The upstream is unreachable and this store does not allow using points offline (offline.allow_redeem = false). Sell without points, or try again when online.".to_string(),
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
                        "The upstream is unreachable; offline, at most {limit} points can be used at once (asked for {requested})."
                    ),
                ),
                RedeemRefusal::ChangedElsewhere { at } => (
                    "changed_elsewhere_offline",
                    "Points changed elsewhere",
                    format!(
                        "The upstream is unreachable and this customer's points changed in another store or online at {at}; they cannot be spent offline (offline.changed_elsewhere = \"refuse\"). A sale without points still works."
                    ),
                ),
            };
            ApiError::Conflict {
                code,
                title,
                detail,
                txn_id: None,
            }
        }
    }
}

pub(super) fn unknown_customer(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "No customer with id {id:?} in the local cache; check the id or look the customer up by code or barcode."
    ))
}

pub(super) fn status_of(state: TxnState) -> &'static str {
    if state == TxnState::Applied {
        "confirmed"
    } else {
        "queued"
    }
}

pub(super) fn balance_of(st: &AppState, c: CustomerRow) -> Balance {
    customer_view(st, c).balance
}

// ----- quote -----
