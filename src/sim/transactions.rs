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
        .filter(|t| within(upd, t.at_ms) && within(tran, t.sold_at_ms()))
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
                "transactionDateTime": if t.transaction_date_time.is_empty() {
                    &t.upd_date_time
                } else {
                    &t.transaction_date_time
                },
                "transactionHeadDivision": t.division.to_string(),
                "cancelDivision": if t.cancel { "1" } else { "0" },
                "returnSales": if t.return_sales { "1" } else { "0" },
                "storeId": t.store_id.to_string(),
                "customerId": t.customer_id,
                "customerCode": t.customer_code,
                "newPoint": t.new_point.to_string(),
                "spendPoint": t.spend_point.to_string(),
                "total": "0",
                "updDateTime": t.upd_date_time,
            })
        })
        .collect();
    Json(rows).into_response()
}

/// `GET /pos/stores/{store_id}` (店舗取得) with `with_point_condition=all|none`: the store, and
/// with "all" its `pointCondition` (third-party copies of the specification:
/// feedforce/smaregi-platform-api, PointCondition / GetStoresResponseItem; scope
/// `pos.stores:read` *(3P)*). Numbers are strings, as everywhere in this API.
#[derive(Deserialize)]
pub(super) struct StoreQuery {
    with_point_condition: Option<String>,
    with_receipt_print_info: Option<String>,
}

pub(super) async fn get_store(
    State(st): State<Shared>,
    Path((contract, store_id)): Path<(String, String)>,
    Query(q): Query<StoreQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(
        &st,
        &headers,
        &contract,
        "pos.stores:read",
        Class::Read,
        false,
    )
    .await
    {
        return r;
    }
    let flag = |v: &Option<String>, name: &str| match v.as_deref() {
        None | Some("none") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => Err(problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &format!("{name} must be all or none (got {other:?})"),
        )),
    };
    let with_points = match flag(&q.with_point_condition, "with_point_condition") {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = flag(&q.with_receipt_print_info, "with_receipt_print_info") {
        return r;
    }
    let s = st.lock().expect("sim");
    let Some(store) = store_id
        .parse::<u32>()
        .ok()
        .and_then(|id| s.opts.stores.iter().find(|x| x.store_id == id))
    else {
        return problem(StatusCode::NOT_FOUND, "Not Found", "no such store");
    };
    let mut body = json!({
        "storeId": store.store_id.to_string(),
        "storeCode": format!("S{:03}", store.store_id),
        "storeName": store.name,
        "division": "1",
        "pointNotApplicable": "0",
    });
    if with_points {
        body["pointCondition"] = json!({
            "storeId": store.store_id.to_string(),
            "pointUseDivision": if store.points_on { "1" } else { "0" },
            "spendRate": "1",
            "pointGivingUnitPrice": "100",
            "pointGivingUnit": "1",
            "pointGivingDivision": "0",
            "pointUseUnit": "1",
            "pointSpendDivision": "0",
            "pointSpendLimitDivision": "0",
            "expireDivision": "0",
            "expireLimit": "12",
            "mileageDivision": "0",
        });
    }
    Json(body).into_response()
}
