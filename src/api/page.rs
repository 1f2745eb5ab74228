//! The cashier page: static assets compiled into the binary, served at `/`.
//!
//! Plain HTML, CSS and JavaScript (no build step, no external hosts: the page must work while
//! the store's internet is down). The page talks to the public `/v1` API with the register's
//! bearer token; the only extra route is `/page/config.json`, the store's non-secret display
//! settings (earn rule, spend rules, offline redeem policy, tiers), so the page can show how
//! many points a purchase earns before the cashier confirms it, and say in the cashier's
//! language which spend rule a refused sale broke. A sale's own preview is the daemon's quote
//! (`POST /v1/sales/quote`), never a figure the page computes.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::AppRef;
use crate::config::{Rounding, TierConfig};
use crate::ledger::SpendConfig;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");

/// The page itself is revalidated every time, so a daemon upgrade shows at the next load;
/// the assets may be reused for a few minutes.
const HTML_CACHE: &str = "no-cache";
const ASSET_CACHE: &str = "public, max-age=300";

pub fn router() -> Router<AppRef> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8", HTML_CACHE) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8", ASSET_CACHE) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8", ASSET_CACHE) }),
        )
        .route("/page/config.json", get(page_config))
}

fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response()
}

/// Display settings only: nothing here is secret, so it needs no token (the sign-in screen
/// may use it too).
#[derive(Serialize)]
struct PageConfig {
    store_id: String,
    version: &'static str,
    yen_per_point: i64,
    rounding: Rounding,
    offline_allow_redeem: bool,
    offline_max_redeem_points: i64,
    tiers: Vec<TierConfig>,
    /// `[spend]`: the page names the figure of the rule a refused sale broke.
    spend: SpendConfig,
}

async fn page_config(State(st): State<AppRef>) -> Response {
    let c = &st.settings.config;
    let mut r = Json(PageConfig {
        store_id: c.agent.store_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        yen_per_point: c.earn.yen_per_point,
        rounding: c.earn.rounding,
        offline_allow_redeem: c.offline.allow_redeem,
        offline_max_redeem_points: c.offline.max_redeem_points,
        tiers: c.tiers.clone(),
        spend: c.spend.clone(),
    })
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(HTML_CACHE));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ` onclick=`, ` oninput=`...: attributes CSP would refuse to run.
    fn has_event_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.chars().take_while(char::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        })
    }

    #[test]
    fn assets_are_self_contained() {
        // No external hosts (the internet may be down) and nothing CSP would block.
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            assert!(!text.contains("http://"), "{name} names an external host");
            assert!(!text.contains("https://"), "{name} names an external host");
            assert!(!text.contains("@import"), "{name} imports");
        }
        assert!(!INDEX_HTML.contains("<style"), "inline style in index.html");
        assert!(!INDEX_HTML.contains(" style="), "inline style attribute");
        assert!(
            !has_event_attribute(INDEX_HTML),
            "inline event handler attribute"
        );
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(
            !APP_JS.contains("randomUUID("),
            "crypto.randomUUID is missing on older Safari"
        );
        assert!(
            !APP_JS.contains(".innerHTML"),
            "build the DOM with textContent"
        );
    }
}
