//! The OpenAPI 3.1 document of the local API, generated from the handlers' annotations
//! (`utoipa`), served at `/v1/openapi.json` and checked into the repo as `openapi.json` (a
//! test fails when the two differ: regenerate with `UPDATE_OPENAPI=1 cargo test --test testsuite openapi`).

use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::auth::__path_whoami;
use super::customers::{__path_find_customer, __path_get_customer};
use super::problem::Problem;
use super::reconcile::{
    __path_doubles, __path_last_ledger_report, __path_last_reconcile, __path_run_ledger_report,
    __path_run_reconcile,
};
use super::sales::{
    __path_get_sale, __path_post_return, __path_post_sale, __path_quote, QuoteRequest,
    ReturnRequest, SaleRequest,
};
use super::status::{__path_health, __path_metrics, __path_status};
use super::transactions::{
    __path_get_transaction, __path_list_transactions, __path_post_transaction,
    __path_resolve_transaction,
};

/// The error answers the handlers share, one per status, so each handler's `responses(...)`
/// names them (`E401, E503`) instead of repeating the description and the content type.
macro_rules! problem_responses {
    ($($name:ident = $status:literal, $description:literal;)*) => {$(
        #[allow(dead_code)]
        #[derive(utoipa::IntoResponses)]
        #[response(status = $status, description = $description, content_type = "application/problem+json")]
        pub(super) struct $name(Problem);
    )*};
}

problem_responses! {
    E400 = 400, "the body is not JSON";
    E401 = 401, "missing or unknown bearer token";
    E403 = 403, "needs a manager token (`forbidden_for_role`; `role` names the role needed)";
    E404 = 404, "unknown customer, transaction or sale (`unknown_sale`)";
    E409 = 409, "insufficient points, offline policy, key reused, refused upstream, a return beyond its sale, or nothing to resolve";
    E413 = 413, "body over 64 KiB";
    E422 = 422, "invalid field, or against a spend rule (`spend_rule`, `rule` names it); `errors` names the field";
    E503 = 503, "storage failing (e.g. disk full) or upstream unavailable; nothing was saved";
}

/// The body of `POST /v1/transactions` (validated field by field; unknown fields are refused).
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    /// Idempotency key (or send the `Idempotency-Key` header): 1-64 printable ASCII.
    #[schema(pattern = "^[!-~]{1,64}$")]
    txn_id: Option<String>,
    #[schema(pattern = "^[!-~]{1,64}$")]
    customer_id: String,
    #[schema(example = "earn")]
    kind: crate::ledger::Kind,
    /// Positive for earn and redeem; signed, non-zero for adjust; |points| ≤ 10,000,000.
    #[schema(minimum = -10_000_000, maximum = 10_000_000)]
    points: Option<i64>,
    /// Yen, for earn only, instead of points: the store's earn rule computes the points.
    #[schema(minimum = 1, maximum = 10_000_000_000_i64)]
    purchase_amount: Option<i64>,
    #[schema(max_length = 500)]
    reason: Option<String>,
    #[schema(pattern = "^[!-~]{1,64}$")]
    register_id: Option<String>,
    #[schema(pattern = "^[!-~]{1,64}$")]
    staff_id: Option<String>,
}

/// The body of `POST /v1/tokens` (unknown fields are refused).
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ipad-2", "role": "register"}))]
pub struct TokenRequest {
    /// The device's name: 1-64 letters, digits, '-', '_' or '.'.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// `register` (the default) or `manager`.
    role: Option<TokenRole>,
}

/// A token's role.
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    Register,
    Manager,
}

/// How a manager resolves a transaction in review.
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResolveAs {
    Applied,
    Resend,
    Discard,
}

/// The body of `POST /v1/transactions/{txn_id}/resolve`.
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// `applied`, `resend` or `discard`.
    #[serde(rename = "as")]
    #[schema(example = "applied")]
    as_: ResolveAs,
    /// Why, for the audit trail.
    #[schema(min_length = 1, max_length = 500)]
    note: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "pointsd local API", description = "Loyalty point look-ups and transactions for registers, online or offline."),
    paths(
        health, whoami, status, get_customer, find_customer, post_transaction, list_transactions,
        get_transaction, resolve_transaction, quote, post_sale, get_sale, post_return,
        last_reconcile, run_reconcile, last_ledger_report, run_ledger_report, doubles, metrics,
        super::tokens::list_tokens, super::tokens::add_token, super::tokens::revoke_token
    ),
    components(schemas(Problem, TxnRequest, ResolveRequest, TokenRequest, QuoteRequest, SaleRequest, ReturnRequest)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The document as served and as checked in.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// Serves the checked-in document, which `tests/testsuite/api.rs` keeps equal to the generated
/// one: the binary then carries no document generator (utoipa's schema builders stay in the
/// tests; about 0.2 MB of the 12 MB size goal).
pub async fn serve() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}
