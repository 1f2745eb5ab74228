//! Request input shared by the resources: ids, query parameters (unknown ones refused by
//! name), and JSON bodies (413 past the size limit, 400 if not JSON).

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::StatusCode;
use serde_json::Value;

use super::ApiError;
use crate::ledger;

pub(super) fn check_id(field: &str, v: &str) -> Result<(), ApiError> {
    if ledger::is_valid_id(v) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be 1-64 printable ASCII characters without spaces",
        ))
    }
}

/// Query parameters, with unknown ones refused by name (typo protection, as for bodies).
pub(super) fn query_params(
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let Query(pairs) = pairs.map_err(|e| ApiError::field("(query)", e.body_text()))?;
    let mut errs = Vec::new();
    let mut out = std::collections::HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            errs.push(ledger::FieldError {
                message: format!("unknown query parameter; allowed: {}", allowed.join(", ")),
                field: k,
            });
        } else if out.insert(k.clone(), v).is_some() {
            errs.push(ledger::FieldError {
                field: k,
                message: "given more than once".into(),
            });
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::Validation(errs))
    }
}

/// A request body as JSON: 413 past the size limit, 400 if it is not JSON.
pub(super) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadJson(e.body_text())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))
}
