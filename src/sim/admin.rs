//! The admin API for tests, the fleet bench and operators of the simulator (never affected by
//! faults or limits, never counted):
//!
//! - `GET|PUT /_sim/faults`: the fault switches ([`Faults`]).
//! - `GET /_sim/customers/{id}`: a customer as the simulator holds it; `PATCH` with
//!   `{"last_name": ".."}` edits the directory record (moves its `updDateTime`).
//! - `GET /_sim/adds`: every applied `point/add`, in order.
//! - `GET /_sim/requests`: request counts per `User-Agent` ([`AgentCounts`]).
//! - `POST /_sim/elsewhere`: a change no agent made, `{"customer_id": "..", "kind": "sale" |
//!   "online" | "expiry", "delta": <i64, for sale and online>}`; answers the transaction it
//!   listed and the new balance.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::limits::AgentCounts;
use super::options::Faults;
use super::smaregi::problem;
use super::state::{
    AppliedAdd, Elsewhere, ElsewhereError, RegisterKind, RegisterSale, Shared, SimStore,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ElsewhereBody {
    customer_id: String,
    kind: String,
    delta: Option<i64>,
}

/// `POST /_sim/register_sales`: a register's sale (or return, void) reaching the server,
/// rung up `sold_s_ago` seconds before (an offline register's late upload).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterSaleBody {
    store_id: u32,
    customer_id: String,
    #[serde(default)]
    new_point: i64,
    #[serde(default)]
    spend_point: i64,
    #[serde(default)]
    sold_s_ago: i64,
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreBody {
    points_on: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    last_name: String,
}

pub(super) fn admin_router(st: Shared, refuse: Arc<tokio::sync::watch::Sender<bool>>) -> Router {
    async fn get_faults(State(st): State<Shared>) -> Json<Faults> {
        Json(st.lock().expect("sim").faults.clone())
    }
    let put_faults = move |State(st): State<Shared>, Json(f): Json<Faults>| {
        let refuse = refuse.clone();
        async move {
            st.lock().expect("sim").faults = f.clone();
            // The listener follows the switch (close it, or bind again).
            refuse.send_replace(f.refuse);
            Json(f)
        }
    };
    async fn customer(State(st): State<Shared>, Path(id): Path<String>) -> Response {
        match st.lock().expect("sim").customer(&id) {
            Some(c) => Json(c.clone()).into_response(),
            None => problem(StatusCode::NOT_FOUND, "Not Found", "customer not found"),
        }
    }
    async fn edit(
        State(st): State<Shared>,
        Path(id): Path<String>,
        Json(b): Json<EditBody>,
    ) -> Response {
        match st.lock().expect("sim").edit_customer(&id, &b.last_name) {
            Some(c) => Json(c).into_response(),
            None => problem(StatusCode::NOT_FOUND, "Not Found", "customer not found"),
        }
    }
    async fn adds(State(st): State<Shared>) -> Json<Vec<AppliedAdd>> {
        Json(st.lock().expect("sim").adds.clone())
    }
    async fn requests(State(st): State<Shared>) -> Json<BTreeMap<String, AgentCounts>> {
        Json(st.lock().expect("sim").agents.clone())
    }
    async fn elsewhere(State(st): State<Shared>, Json(b): Json<ElsewhereBody>) -> Response {
        let bad = |d: &str| problem(StatusCode::BAD_REQUEST, "Bad Request", d);
        let kind = match (b.kind.as_str(), b.delta) {
            ("sale", Some(delta)) => Elsewhere::Sale { delta },
            ("online", Some(delta)) => Elsewhere::Online { delta },
            ("expiry", None) => Elsewhere::Expiry,
            ("sale" | "online", None) => return bad("delta is required for sale and online"),
            ("expiry", Some(_)) => return bad("an expiry takes no delta (the balance becomes 0)"),
            _ => return bad("kind must be sale, online or expiry"),
        };
        let mut s = st.lock().expect("sim");
        match s.elsewhere(&b.customer_id, kind) {
            Ok(t) => {
                let balance = s.customer(&b.customer_id).map(|c| c.point);
                (
                    StatusCode::CREATED,
                    Json(json!({"transaction": t, "balance": balance})),
                )
                    .into_response()
            }
            Err(e @ ElsewhereError::UnknownCustomer) => {
                problem(StatusCode::NOT_FOUND, "Not Found", &e.to_string())
            }
            Err(e @ ElsewhereError::Insufficient { .. }) => bad(&e.to_string()),
            Err(e @ ElsewhereError::NothingToExpire) => {
                problem(StatusCode::CONFLICT, "Conflict", &e.to_string())
            }
            Err(e) => problem(StatusCode::CONFLICT, "Conflict", &e.to_string()),
        }
    }
    async fn register_sale(State(st): State<Shared>, Json(b): Json<RegisterSaleBody>) -> Response {
        let kind = match b.kind.as_deref().unwrap_or("sale") {
            "sale" => RegisterKind::Sale,
            "return" => RegisterKind::Return,
            "void" => RegisterKind::Void,
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    "kind must be sale, return or void",
                );
            }
        };
        if b.new_point < 0 || b.spend_point < 0 || b.sold_s_ago < 0 {
            return problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                "new_point, spend_point and sold_s_ago must not be negative",
            );
        }
        let r = RegisterSale {
            store_id: b.store_id,
            customer_id: b.customer_id.clone(),
            new_point: b.new_point,
            spend_point: b.spend_point,
            sold_ms_ago: b.sold_s_ago.saturating_mul(1000),
            kind,
        };
        let mut s = st.lock().expect("sim");
        match s.register_sale(&r) {
            Ok(t) => {
                let balance = s.customer(&b.customer_id).map(|c| c.point);
                (
                    StatusCode::CREATED,
                    Json(json!({"transaction": t, "balance": balance})),
                )
                    .into_response()
            }
            Err(e @ ElsewhereError::UnknownCustomer) | Err(e @ ElsewhereError::UnknownStore(_)) => {
                problem(StatusCode::NOT_FOUND, "Not Found", &e.to_string())
            }
            Err(e) => problem(StatusCode::CONFLICT, "Conflict", &e.to_string()),
        }
    }
    async fn put_store(
        State(st): State<Shared>,
        Path(id): Path<u32>,
        Json(b): Json<StoreBody>,
    ) -> Json<serde_json::Value> {
        let mut s = st.lock().expect("sim");
        match s.opts.stores.iter_mut().find(|x| x.store_id == id) {
            Some(x) => x.points_on = b.points_on,
            None => s.opts.stores.push(SimStore {
                store_id: id,
                name: format!("store {id}"),
                points_on: b.points_on,
            }),
        }
        Json(json!({"store_id": id, "points_on": b.points_on}))
    }
    Router::new()
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/customers/{id}", get(customer).patch(edit))
        .route("/_sim/adds", get(adds))
        .route("/_sim/requests", get(requests))
        .route("/_sim/elsewhere", post(elsewhere))
        .route("/_sim/register_sales", post(register_sale))
        .route("/_sim/stores/{id}", axum::routing::put(put_store))
        .with_state(st)
}
