//! Strict HTTP at the door, before any handler: request-head and URI size, the `Host` a
//! loopback listener serves (DNS rebinding), an early 413 on a large `Content-Length`, JSON
//! bodies only; and on the way out `Cache-Control: no-store`, and every error answer as
//! problem+json (axum's own rejections, e.g. a path that is not UTF-8, are plain text).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppRef, BODY_LIMIT};

/// The longest request target served (414 past it).
pub const MAX_URI_BYTES: usize = 8 * 1024;

pub(super) async fn guard(State(st): State<AppRef>, req: Request, next: Next) -> Response {
    let api = &st.settings.config.api;
    if let Err(e) = check(&st, &req, api.max_header_bytes as usize) {
        return e.into_response();
    }
    let mut r = next.run(req).await;
    r.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    let status = r.status();
    let is_problem = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        return as_problem(r).await;
    }
    r
}

fn check(st: &AppRef, req: &Request, max_header_bytes: usize) -> Result<(), ApiError> {
    let uri_len = req.uri().to_string().len();
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::Http {
            status: StatusCode::URI_TOO_LONG,
            code: "uri_too_long",
            detail: format!(
                "The request target is {uri_len} bytes; at most {MAX_URI_BYTES} are served."
            ),
        });
    }
    // As on the wire: "Name: value\r\n" for each header, plus the request line.
    let head: usize = uri_len
        + 16
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > max_header_bytes {
        return Err(ApiError::Http {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "headers_too_large",
            detail: format!(
                "The request line and headers are about {head} bytes; api.max_header_bytes allows {max_header_bytes}."
            ),
        });
    }
    if let Some(host) = req.headers().get(header::HOST)
        && !host_allowed(st, host)
    {
        return Err(ApiError::Http {
            status: StatusCode::MISDIRECTED_REQUEST,
            code: "host_not_allowed",
            detail: "This pointsd does not serve that host name; use the address it listens on (or add the name to api.allowed_hosts).".into(),
        });
    }
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Refused before a byte of it is read.
    if length.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(ApiError::TooLarge);
    }
    let has_body =
        length.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    if has_body && matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::Http {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                detail: "Send the body as JSON with `Content-Type: application/json`.".into(),
            });
        }
    }
    Ok(())
}

/// A loopback listener serves only loopback names (a web page on a rebound DNS name must not
/// reach it), the TLS certificate's names and `api.allowed_hosts`; a LAN listener any name.
fn host_allowed(st: &AppRef, host: &HeaderValue) -> bool {
    if !st.settings.listen.ip().is_loopback() {
        return true;
    }
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = host_name(host);
    let extra = st.settings.config.api.allowed_hosts.iter();
    let tls = st
        .settings
        .config
        .api
        .tls
        .iter()
        .flat_map(|t| t.names.iter());
    is_loopback_name(name) || extra.chain(tls).any(|h| h.eq_ignore_ascii_case(name))
}

/// The name of a `Host` header, without its port (`[::1]:8765` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(n, _)| n)
}

fn is_loopback_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || lower == "[::1]"
        || lower
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error answer that is not problem+json yet (axum's rejections), re-made as one with
/// its text as the detail.
async fn as_problem(r: Response) -> Response {
    let status = r.status();
    let text = axum::body::to_bytes(r.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "body_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        s if s.is_server_error() => "internal",
        _ => "http_error",
    };
    let detail = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("Error").to_string()
    } else {
        text.trim().to_string()
    };
    let mut out = ApiError::Http {
        status,
        code,
        detail,
    }
    .into_response();
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_loopback() {
        for (host, name, loopback) in [
            ("127.0.0.1:8765", "127.0.0.1", true),
            ("localhost", "localhost", true),
            ("LOCALHOST:1", "LOCALHOST", true),
            ("[::1]:8765", "[::1]", true),
            ("127.9.9.9", "127.9.9.9", true),
            ("app.localhost:80", "app.localhost", true),
            ("evil.example:8765", "evil.example", false),
            ("192.168.1.10:8765", "192.168.1.10", false),
            ("localhost.evil.example", "localhost.evil.example", false),
        ] {
            assert_eq!(host_name(host), name, "{host}");
            assert_eq!(is_loopback_name(host_name(host)), loopback, "{host}");
        }
    }
}
