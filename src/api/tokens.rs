//! `GET /v1/tokens`, `POST /v1/tokens`, `DELETE /v1/tokens/{name}`: a manager issues and
//! revokes tokens from a device (as `pointsd token add|list|revoke` does on the PC). The
//! data dir's `tokens.json` is changed under the lock the CLI takes too, and the token set is
//! swapped before the answer: a 201 token signs in on the next request, a 204 token is
//! refused on every request from then on. A manager cannot revoke its own token, nor the
//! last manager token (409): the store would be left with nobody to issue tokens.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::auth::{Caller, require_manager};
use super::input::json_body;
use super::openapi::{E400, E401, E403, E404, E409, E422};
use super::{ApiError, AppRef};
use crate::config::Role;
use crate::tokens::{self, TokenError, TokenFile};

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenView {
    name: String,
    #[schema(value_type = String, example = "register")]
    role: Role,
    /// `config` (the config file) or `issued` (`tokens.json`).
    source: &'static str,
    revoked: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    name: String,
    #[schema(value_type = String, example = "register")]
    role: Role,
    /// The token, shown only in this answer; pointsd keeps its SHA-256.
    token: String,
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Exists(_) => ApiError::Conflict {
            code: "token_exists",
            title: "Token name taken",
            detail: e.to_string(),
            txn_id: None,
        },
        TokenError::ConfigName(_) => ApiError::Conflict {
            code: "token_exists",
            title: "Token name taken",
            detail: e.to_string(),
            txn_id: None,
        },
        TokenError::OwnToken(_) => ApiError::Conflict {
            code: "own_token",
            title: "Cannot revoke your own token",
            detail: e.to_string(),
            txn_id: None,
        },
        TokenError::LastManager(_) => ApiError::Conflict {
            code: "last_manager_token",
            title: "Cannot revoke the last manager token",
            detail: e.to_string(),
            txn_id: None,
        },
        TokenError::Unknown(_) => ApiError::Missing {
            code: "unknown_token",
            detail: e.to_string(),
        },
        TokenError::BadName(_) => ApiError::field("name", e.to_string()),
        _ => {
            tracing::error!(error = %e, "the token file could not be changed");
            ApiError::Internal
        }
    }
}

fn config_names(st: &AppRef) -> Vec<String> {
    st.settings.tokens.iter().map(|t| t.name.clone()).collect()
}

/// Changes the token file under the shared lock, then applies it, before the answer.
async fn change<T: Send + 'static>(
    st: &AppRef,
    f: impl FnOnce(&mut TokenFile) -> Result<T, TokenError> + Send + 'static,
) -> Result<T, TokenError> {
    let (dir, set) = (st.data_dir.clone(), st.tokens.clone());
    let file = tokens::path(&dir);
    tokio::task::spawn_blocking(move || {
        let v = tokens::modify(&dir, f)?;
        set.reload(&dir)?;
        Ok(v)
    })
    .await
    .unwrap_or_else(|e| {
        Err(TokenError::Write {
            path: file,
            source: std::io::Error::other(e.to_string()),
        })
    })
}

#[utoipa::path(get, path = "/v1/tokens", tag = "pointsd",
    responses((status = 200, body = Vec<TokenView>), E401, E403))]
pub(super) async fn list_tokens(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    require_manager(&caller, "list tokens")?;
    let file = TokenFile::load(&tokens::path(&st.data_dir)).map_err(token_error)?;
    let mut out: Vec<TokenView> = st
        .settings
        .tokens
        .iter()
        .map(|t| TokenView {
            name: t.name.clone(),
            role: t.role,
            source: "config",
            revoked: file.revoked.contains(&t.name),
        })
        .collect();
    out.extend(file.tokens.iter().map(|t| TokenView {
        name: t.name.clone(),
        role: t.role,
        source: "issued",
        revoked: false,
    }));
    Ok(Json(out))
}

#[utoipa::path(post, path = "/v1/tokens", tag = "pointsd",
    request_body = super::openapi::TokenRequest,
    responses((status = 201, body = IssuedToken), E400, E401, E403, E409, E422))]
pub(super) async fn add_token(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_manager(&caller, "issue tokens")?;
    let v = json_body(body)?;
    let Value::Object(map) = &v else {
        return Err(ApiError::field("(body)", "must be a JSON object"));
    };
    if let Some(k) = map.keys().find(|k| *k != "name" && *k != "role") {
        return Err(ApiError::field(k, "unknown field; allowed: name, role"));
    }
    let name = match map.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(ApiError::field(
                "name",
                "required: the device's name, e.g. \"ipad-2\"",
            ));
        }
    };
    let role = match map.get("role") {
        None | Some(Value::Null) => Role::Register,
        Some(Value::String(r)) if r == "register" => Role::Register,
        Some(Value::String(r)) if r == "manager" => Role::Manager,
        _ => {
            return Err(ApiError::field(
                "role",
                "must be \"register\" or \"manager\"",
            ));
        }
    };
    let names = config_names(&st);
    let issued_name = name.clone();
    let token = change(&st, move |f| f.issue(&issued_name, role, &names))
        .await
        .map_err(token_error)?;
    tracing::info!(name = %name, ?role, by = %caller.name, "token issued");
    Ok((StatusCode::CREATED, Json(IssuedToken { name, role, token })).into_response())
}

#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "pointsd",
    params(("name" = String, Path, description = "the token's name")),
    responses((status = 204, description = "revoked"), E401, E403, E404, E409))]
pub(super) async fn revoke_token(
    State(st): State<AppRef>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_manager(&caller, "revoke tokens")?;
    let config = st.settings.tokens.clone();
    let by = caller.name.clone();
    let target = name.clone();
    // Checked on the file as read under the lock, so two managers revoking each other at
    // once cannot leave the store without one.
    change(&st, move |f| f.revoke_as(&target, &by, &config))
        .await
        .map_err(token_error)?;
    tracing::info!(name = ?name, by = %caller.name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
