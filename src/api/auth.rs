//! Bearer auth: the middleware that turns a token into a `Caller`, the manager check, and
//! `GET /v1/whoami`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::openapi::E401;
use super::{ApiError, AppRef};
use crate::config::{Role, sha256};

/// Who is calling, from their token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

pub(super) async fn auth(State(st): State<AppRef>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let caller = presented.and_then(|tok| {
        // Only digests are compared; the token itself is never stored or logged.
        let h = sha256(tok.as_bytes());
        st.settings
            .tokens
            .iter()
            .find(|t| t.sha256 == h)
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
            })
    });
    match caller {
        Some(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        None => {
            tracing::warn!(
                path = %req.uri().path(),
                token_sent = presented.is_some(),
                "request refused: missing or unknown token"
            );
            ApiError::Unauthorized.into_response()
        }
    }
}

/// Which token is calling: its configured name and role (never the token itself).
#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    name: String,
    #[schema(value_type = String, example = "register")]
    role: Role,
}

#[utoipa::path(get, path = "/v1/whoami", tag = "pointsd",
    responses((status = 200, body = WhoAmI), E401))]
pub(super) async fn whoami(axum::Extension(caller): axum::Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        role: caller.role,
    })
}
pub(super) fn require_manager(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.role == Role::Manager {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "Only a manager token may {what}; token {:?} is a register token.",
            caller.name
        )))
    }
}
