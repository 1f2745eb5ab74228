//! `GET /v1/customers/{id}` and `GET /v1/customers?code=|barcode=|q=`: a customer's balance
//! from the cache, refreshed from upstream first (within a budget) when it is old.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Serialize;

use super::input::{check_id, query_params};
use super::openapi::{E401, E404, E422, E503};
use super::{ApiError, AppRef, AppState};
use crate::clock;
use crate::ledger::{self, Balance};
use crate::store::{CustomerRow, LookupColumn};
use crate::sync::LookupRefresh;

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
    /// When the points expire: easyPoints' inactivity expiry (an instant) for a Smapify
    /// merchant once read, else Smaregi's `pointExpireDate`.
    pub expires_at: Option<String>,
    /// Which ledger `expires_at` comes from: `"easypoints"` or `"smaregi"` (null: none).
    pub expires_source: Option<&'static str>,
    /// The expiry has passed: confirmed points are not spendable offline.
    pub expired: bool,
    /// What easyPoints said at the last read (Smapify merchants only).
    pub easypoints: Option<EasyPointsView>,
    pub tier: Option<String>,
    /// Created offline; the upstream has not confirmed this customer yet.
    pub local_only: bool,
    /// The change feed saw this customer's points move elsewhere (another store, the online
    /// shop) at this upstream time, and the cache has not re-read them since (`stale` is then
    /// true; a look-up online re-reads at once).
    pub changed_elsewhere_at: Option<String>,
}

/// The easyPoints figures of a customer, as last read.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EasyPointsView {
    pub shopify_customer_id: String,
    /// `null`: easyPoints has no balance for this customer.
    pub balance: Option<i64>,
    pub expires_at: Option<String>,
    /// Months without activity before the whole balance expires; a sale or earn is
    /// activity, so after one the date moves to about now + this.
    pub expiration_delay: Option<i64>,
    /// RFC 3339.
    pub read_at: String,
}

pub(super) fn customer_view(st: &AppState, c: CustomerRow) -> CustomerView {
    let now = st.clock.now_ms();
    let online = st.health.is_online();
    let stale_after = st.settings.sync.stale_after.as_millis() as i64;
    let balance = c.balance();
    CustomerView {
        stale: ledger::is_stale(online, c.as_of, now, stale_after)
            || c.changed_elsewhere_at.is_some(),
        changed_elsewhere_at: c.changed_elsewhere_at.clone(),
        online,
        expired: c.expired(&clock::jst_date(now), now),
        tier: ledger::tier_for(balance.available, &st.settings.config.tiers),
        as_of: c.as_of.map(clock::rfc3339),
        customer_id: c.customer_id,
        code: c.code,
        barcode: c.barcode,
        name: c.name,
        balance,
        expires_source: match (&c.easypoints, &c.expires_at) {
            (Some(e), _) if e.expires_at.is_some() => Some("easypoints"),
            (_, Some(_)) => Some("smaregi"),
            _ => None,
        },
        expires_at: c
            .easypoints
            .as_ref()
            .and_then(|e| e.expires_at.clone())
            .or(c.expires_at),
        easypoints: c.easypoints.map(|e| EasyPointsView {
            shopify_customer_id: e.shopify_id,
            balance: e.balance,
            expires_at: e.expires_at,
            expiration_delay: e.expiration_delay,
            read_at: clock::rfc3339(e.read_at),
        }),
        local_only: c.local_only,
    }
}

#[utoipa::path(get, path = "/v1/customers/{id}", tag = "pointsd",
    params(("id" = String, Path, description = "customer id (1-64 printable ASCII)", pattern = "^[!-~]{1,64}$")),
    responses((status = 200, body = CustomerView), E401, E404, E422, E503))]
pub(super) async fn get_customer(
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
/// happens, the cache answers (a hung upstream never blocks a register). For a Smapify
/// merchant, easyPoints is read alongside, within the same budget.
pub(super) async fn fresher(st: &AppState, c: CustomerRow) -> Result<CustomerRow, ApiError> {
    let api = &st.settings.api;
    let Some(ledgers) = st
        .ledgers
        .as_ref()
        .filter(|_| st.health.is_online() && !c.local_only)
    else {
        return fresher_smaregi(st, c).await;
    };
    let (ep, smaregi) = tokio::join!(
        ledgers.lookup_refresh(&c, api.lookup_refresh_budget, api.lookup_refresh_after),
        fresher_smaregi(st, c.clone())
    );
    let c = smaregi?;
    if ep {
        return Ok(st.store.customer(&c.customer_id).await?.unwrap_or(c));
    }
    Ok(c)
}

async fn fresher_smaregi(st: &AppState, c: CustomerRow) -> Result<CustomerRow, ApiError> {
    let api = &st.settings.api;
    let age_limit = api.lookup_refresh_after.as_millis() as i64;
    // A customer the change feed marked is re-read at once, whatever the figure's age.
    let old = c.as_of.is_none_or(|t| st.clock.now_ms() - t >= age_limit) || c.marked_at.is_some();
    if !old || !st.health.is_online() || c.local_only {
        return Ok(c);
    }
    match st
        .sync
        .lookup_refresh(&c.customer_id, api.lookup_refresh_budget)
        .await
    {
        LookupRefresh::Refreshed => Ok(st.store.customer(&c.customer_id).await?.unwrap_or(c)),
        _ => Ok(c),
    }
}

#[utoipa::path(get, path = "/v1/customers", tag = "pointsd",
    params(
        ("code" = Option<String>, Query, description = "member code"),
        ("barcode" = Option<String>, Query, description = "member card barcode"),
        ("q" = Option<String>, Query, description = "anything typed or scanned: id, code or barcode"),
    ),
    responses((status = 200, body = CustomerView), E401, E404, E422, E503))]
pub(super) async fn find_customer(
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
