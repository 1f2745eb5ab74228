//! The cashier page: static assets compiled into the binary, served at `/`.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use super::AppRef;

pub fn router() -> Router<AppRef> {
    Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>pointsd</title>") }),
    )
}
