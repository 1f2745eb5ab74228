//! `GET /pos/transactions`: the transaction list, strict about its date window and paging,
//! and the window rule `/pos/customers` shares.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::limits::Class;
use super::state::{Shared, SimTxn};

use super::smaregi::*;

#[derive(Deserialize)]
pub(super) struct TxnListQuery {
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
    /// Not a filter of this list (DESIGN.md §4: `customer_code`, not `customer_id`); taken
    /// only to refuse it, so a client relying on it learns at once instead of reading every
    /// customer's transactions as one's own.
    customer_id: Option<String>,
}

/// A date window filter: both ends, ISO 8601 with an offset, from <= to, at most 31 days
/// (DESIGN.md §4). Anything else is a 400 naming the parameter, as the real API answers.
pub(super) fn date_window(
    from: Option<&str>,
    to: Option<&str>,
    name: &str,
) -> Result<(i64, i64), Response> {
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

pub(super) async fn list_transactions(
    State(st): State<Shared>,
    Path(contract): Path<String>,
    Query(q): Query<TxnListQuery>,
    headers: HeaderMap,
) -> Response {
    // One customer's transactions (`customer_code`) are a read-back, not the change feed.
    let feed = q.customer_code.is_none();
    if let Err(r) = gate(
        &st,
        &headers,
        &contract,
        "pos.transactions:read",
        Class::Read,
        feed,
    )
    .await
    {
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
    if q.customer_id.is_some() {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "customer_id is not a filter of /pos/transactions; use customer_code",
        );
    }
    if upd.is_none() && tran.is_none() {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "a date window is required: upd_date_time-from/-to or transaction_date_time-from/-to",
        );
    }
    // `sort=updDateTime` (DESIGN.md §4); the third-party copy has no `sort` on this list, only
    // `updDateTime:desc` in its pagination schema, so `:asc`/`:desc` are taken too. Both keys
    // order alike here: ids are given in the order of the change. Anything else is a 400.
    let desc = match q
        .sort
        .as_deref()
        .map(|v| v.split_once(':').unwrap_or((v, "asc")))
    {
        None => false,
        Some(("updDateTime" | "transactionHeadId", dir)) => match dir {
            "asc" => false,
            "desc" => true,
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    &format!("sort direction {dir:?} is not asc or desc"),
                );
            }
        },
        Some((other, _)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!(
                    "sort {other:?} is not one of updDateTime, transactionHeadId (:desc for descending)"
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
