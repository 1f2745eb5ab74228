//! Bearer auth: the middleware that turns a token into a `Caller`, the manager check, and
//! `GET /v1/whoami`.

use axum::Json;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
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
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip());
    let now = Instant::now();
    // A throttled address may not try tokens at all, right or wrong: no oracle for a guess.
    if let Some(retry_after_s) = st.throttle.blocked(client, now) {
        return ApiError::Throttled { retry_after_s }.into_response();
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let caller = presented.and_then(|tok| {
        // Only digests are compared; the token itself is never stored or logged.
        let h = sha256(tok.as_bytes());
        st.tokens
            .current()
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
            st.throttle.failed(client, now);
            // The first refusal is logged, then one line a minute with the count: a flood of
            // guesses must not fill the disk.
            if let Some(skipped) = st
                .signin_log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .hit()
            {
                tracing::warn!(
                    %client,
                    path = %req.uri().path(),
                    token_sent = presented.is_some(),
                    refused_since_last_line = skipped,
                    "request refused: missing or unknown token"
                );
            }
            ApiError::Unauthorized.into_response()
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer(v: &str) -> Option<&str> {
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
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
            "Only a token with the manager role may {what}; token {:?} has the register role. Ask a manager, or use a manager token.",
            caller.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (v, t) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("BeArEr   abc  ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearerabc", None),
        ] {
            assert_eq!(bearer(v), t, "{v:?}");
        }
    }
}
