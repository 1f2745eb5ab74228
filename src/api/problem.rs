//! `application/problem+json` (RFC 9457) answers. Every error the local API gives is one of
//! these, with a stable `code` a register can branch on and a `detail` a person can read.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ledger::FieldError;
use crate::store::StoreError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable reason, e.g. `insufficient_points`.
    #[schema(value_type = String)]
    pub code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
    /// The store rule a request went against, e.g. `spend.min_points` (with `spend_rule`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// With `forbidden_for_role`: the role the operation needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub role: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// A manager operation called with a register token (403 `forbidden_for_role`).
    #[error("this token may not do that")]
    Forbidden(String),
    /// A register token past one of its caps (403 `forbidden_for_role`; `rule` names the key,
    /// e.g. `api.register_max_earn_points`).
    #[error("{detail}")]
    RegisterCap { key: &'static str, detail: String },
    /// Too many failed sign-ins from this address (429 with `Retry-After`).
    #[error("too many failed sign-ins")]
    Throttled { retry_after_s: u64 },
    /// A low-level answer (path decoding, 414, 415, 431, ...) carried as a problem.
    #[error("{detail}")]
    Http {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// A 404 with its own code, e.g. `unknown_sale`.
    #[error("{detail}")]
    Missing { code: &'static str, detail: String },
    /// Against one of the store's rules (422, `spend_rule`): names the rule and the field.
    #[error("{rule}: {message}")]
    Rule {
        rule: &'static str,
        field: &'static str,
        message: String,
    },
    #[error("{detail}")]
    Conflict {
        code: &'static str,
        title: &'static str,
        detail: String,
        txn_id: Option<String>,
    },
    #[error("request body too large")]
    TooLarge,
    #[error("the upstream could not be reached: {0}")]
    Upstream(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error")]
    Internal,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            ApiError::BadJson(d) => (
                StatusCode::BAD_REQUEST,
                "bad_json",
                "Malformed JSON",
                format!("The body is not valid JSON ({d}). Send a JSON object."),
            ),
            ApiError::Validation(errs) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
                errs.iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "Send `Authorization: Bearer <token>` with a register token from the config."
                    .into(),
            ),
            ApiError::Forbidden(d) | ApiError::RegisterCap { detail: d, .. } => (
                StatusCode::FORBIDDEN,
                "forbidden_for_role",
                "Not allowed for this token's role",
                d.clone(),
            ),
            ApiError::Throttled { retry_after_s } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_sign_ins",
                "Too many failed sign-ins",
                format!("Too many wrong or missing tokens from this address; try again in {retry_after_s} s with a valid token."),
            ),
            ApiError::Http {
                status,
                code,
                detail,
            } => (
                *status,
                code,
                status.canonical_reason().unwrap_or("Error"),
                detail.clone(),
            ),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "not_found", "Not found", d.clone()),
            ApiError::Missing { code, detail } => {
                (StatusCode::NOT_FOUND, code, "Not found", detail.clone())
            }
            ApiError::Rule {
                rule,
                field,
                message,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "spend_rule",
                "Against the store's spend rule",
                format!("{field}: {rule}: {message}"),
            ),
            ApiError::Conflict {
                code,
                title,
                detail,
                ..
            } => (StatusCode::CONFLICT, code, title, detail.clone()),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "Request body too large",
                "Request bodies are limited to 64 KiB; send a smaller body.".into(),
            ),
            ApiError::Upstream(d) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "Upstream unavailable",
                format!("{d}. The local cache and queue keep working; try again when online."),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "pointsd hit a bug answering this request. Retry with the same txn_id (a retry is never counted twice), and report it with the log.".into(),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "This path does not accept that HTTP method.".into(),
            ),
            ApiError::Store(StoreError::Full) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                "Storage full",
                "The disk is full, so nothing was saved. Free space in the data dir; retry the same request (same txn_id) afterwards.".into(),
            ),
            // A bug in a write job (it panicked, or broke its own invariant): 500 like any
            // other bug; the writer logged the job's kind, and nothing of the job was kept.
            ApiError::Store(StoreError::BelowFloor { free_mb, min_mb }) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "Insufficient storage",
                format!("The store PC's disk has {free_mb} MB free, below the floor of {min_mb} MB, so nothing was saved (look-ups still work). Free space in the data dir; writes resume by themselves; retry the same request (same txn_id) afterwards."),
            ),
            ApiError::Store(e) if e.is_bug() => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "pointsd hit a bug answering this request. Retry with the same txn_id (a retry is never counted twice), and report it with the log.".into(),
            ),
            ApiError::Store(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_error",
                "Storage error",
                format!("The transaction was not saved ({e}). Retry with the same txn_id."),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title, detail) = self.parts();
        if status.is_server_error() {
            // Debug-quoted: a client-provided string in a detail cannot start a forged log line.
            tracing::error!(code, detail = ?detail, "request failed");
        }
        let retry_after = match &self {
            ApiError::Throttled { retry_after_s } => Some(*retry_after_s),
            _ => None,
        };
        let role = matches!(self, ApiError::Forbidden(_) | ApiError::RegisterCap { .. })
            .then_some("manager");
        let (errors, txn_id, rule) = match self {
            ApiError::Validation(e) => (e, None, None),
            ApiError::Conflict { txn_id, .. } => (Vec::new(), txn_id, None),
            ApiError::Rule {
                rule,
                field,
                message,
            } => (
                vec![FieldError {
                    field: field.into(),
                    message: format!("{rule}: {message}"),
                }],
                None,
                Some(rule.to_string()),
            ),
            ApiError::RegisterCap { key, .. } => (Vec::new(), None, Some(key.to_string())),
            _ => (Vec::new(), None, None),
        };
        let body = Problem {
            type_: format!("urn:pointsd:problem:{code}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            code,
            errors,
            txn_id,
            rule,
            role,
        };
        let mut r = (status, Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}
