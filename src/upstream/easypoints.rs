//! The easyPoints API (the Shopify-side ledger of a Smapify merchant), **read only**:
//! `GET /point_balances/{shopify_customer_id}` and `GET /point_allotments` (DESIGN.md §4, §12).
//!
//! pointsd never writes here: with Smapify running, a delta written to Smaregi reaches
//! easyPoints through Smapify, and writing it here as well would count it twice. The client
//! has no method that sends anything but a GET.
//!
//! Facts from the vendor's API documentation (easypoints-docs.netlify.app/api): HTTP Basic
//! `public_key:secret_key`; a balance is `{data: {id, point_balance, expires_at,
//! expiration_delay}}` with `expires_at` ISO 8601 and `expiration_delay` in months; the
//! allotment list is paged (`page`, `per_page` ≤ 250) and filtered by `type`, `after`,
//! `before`. Where the documentation is silent we assume, and say so beside the code: the
//! status of an unknown customer (404), the error body (not parsed, only excerpted), a rate
//! limit (undocumented; 429 with an optional `Retry-After` is honoured), and that
//! `expires_at` may be null for a customer who never had activity.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::config::CheckDigit;
use crate::secret::Secret;

/// The documented page size limit of list endpoints.
pub const MAX_PER_PAGE: u32 = 250;

/// Everything the client needs, built from `[easypoints]` (see `config::Settings`).
#[derive(Debug, Clone)]
pub struct EasyPointsSettings {
    pub api_base: String,
    pub public_key: String,
    pub secret_key: Secret,
    pub code_offset: i64,
    pub code_check_digit: CheckDigit,
    pub max_requests_per_second: u32,
    pub settle: Duration,
    pub report_window: Duration,
    pub report_interval: Option<Duration>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub proxy: Option<String>,
    pub store_id: String,
}

impl EasyPointsSettings {
    /// The Shopify customer id a Smaregi member code stands for under Smapify's customer sync:
    /// by default the code *is* the id; a start number (`code_offset`) was added to it, and a
    /// check digit may follow. `None` when the code cannot be one (not digits, below the
    /// offset): that customer is not read from easyPoints.
    pub fn shopify_id(&self, member_code: &str) -> Option<String> {
        shopify_id(member_code, self.code_offset, self.code_check_digit)
    }
}

/// See [`EasyPointsSettings::shopify_id`].
pub fn shopify_id(member_code: &str, offset: i64, check: CheckDigit) -> Option<String> {
    let code = member_code.trim();
    let digits = match check {
        CheckDigit::None => code,
        // Smapify does not publish its check-digit algorithm: the digit is dropped, not
        // verified (an assumption; a wrong guess would refuse every member).
        CheckDigit::Trailing => code.get(..code.len().checked_sub(1)?)?,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if offset == 0 {
        // No arithmetic: a Shopify id may be longer than an i64 some day; keep it as text.
        return Some(digits.trim_start_matches('0').to_string()).filter(|s| !s.is_empty());
    }
    let n: i128 = digits.parse().ok()?;
    let id = n - offset as i128;
    (id > 0).then(|| id.to_string())
}

/// A customer's easyPoints balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpBalance {
    /// The Shopify customer id.
    #[serde(deserialize_with = "super::lenient_string")]
    pub id: String,
    #[serde(deserialize_with = "super::lenient_i64")]
    pub point_balance: i64,
    /// When the whole balance goes to 0 without activity (ISO 8601). Assumed nullable.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Months without activity after which the balance expires.
    #[serde(default)]
    pub expiration_delay: Option<i64>,
}

/// One entry of the store's ledger of relative changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpAllotment {
    pub uid: String,
    #[serde(deserialize_with = "super::lenient_i64")]
    pub point_value: i64,
    #[serde(default)]
    pub point_balance_uid: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `"easyPoints"` or `"Smapify"`.
    #[serde(default)]
    pub app_reference: Option<String>,
    /// The field table spells it `alloted_at`, the examples `allotted_at`: accept both.
    #[serde(default, alias = "allotted_at")]
    pub alloted_at: Option<String>,
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

/// What a request to easyPoints can fail on. Nothing here is retried by the client: a
/// look-up answers from the cache, a report run notes the customer as not compared.
#[derive(Debug, thiserror::Error)]
pub enum EasyPointsError {
    #[error(
        "easyPoints refused the credentials (HTTP {0}); check easypoints.public_key and secret_key in the easyPoints app's settings"
    )]
    Auth(u16),
    #[error("easyPoints has no point balance for Shopify customer {0}")]
    NotFound(String),
    #[error("easyPoints is throttling this store (HTTP 429); retry after {retry_after:?}")]
    Throttled { retry_after: Option<Duration> },
    #[error("easyPoints answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("easyPoints is unreachable: {0}")]
    Unreachable(String),
    #[error("easyPoints answered something pointsd cannot read: {0}")]
    Decode(String),
}

/// The read-only easyPoints client, paced by its own limiter (apart from the Smaregi budget:
/// the two services count separately).
pub struct EasyPoints {
    http: reqwest::Client,
    s: EasyPointsSettings,
    limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for EasyPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EasyPoints")
            .field("api_base", &self.s.api_base)
            .finish_non_exhaustive()
    }
}

impl EasyPoints {
    pub fn new(s: EasyPointsSettings) -> Result<EasyPoints, EasyPointsError> {
        let mut b = crate::http_client_builder()
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            .user_agent(format!(
                "pointsd/{} (store {})",
                env!("CARGO_PKG_VERSION"),
                s.store_id
            ));
        if let Some(p) = &s.proxy {
            let proxy = reqwest::Proxy::all(p).map_err(|e| {
                EasyPointsError::Unreachable(format!("invalid upstream.proxy: {e}"))
            })?;
            b = b.proxy(proxy);
        }
        let http = b
            .build()
            .map_err(|e| EasyPointsError::Unreachable(format!("cannot build HTTP client: {e}")))?;
        // Evenly spaced, no burst: an undocumented limit is best met by never bunching.
        let rate = NonZeroU32::new(s.max_requests_per_second.max(1)).expect("at least 1");
        let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN));
        Ok(EasyPoints { http, s, limiter })
    }

    pub fn settings(&self) -> &EasyPointsSettings {
        &self.s
    }

    /// `GET /point_balances/{shopify_customer_id}`.
    pub async fn point_balance(&self, shopify_id: &str) -> Result<EpBalance, EasyPointsError> {
        let url = format!(
            "{}/point_balances/{}",
            self.s.api_base.trim_end_matches('/'),
            shopify_id
        );
        let r = self.get(&url, &[]).await;
        match r {
            Err(EasyPointsError::Status { status: 404, .. }) => {
                Err(EasyPointsError::NotFound(shopify_id.to_string()))
            }
            Err(e) => Err(e),
            Ok(body) => serde_json::from_str::<Data<EpBalance>>(&body)
                .map(|d| d.data)
                .map_err(|e| EasyPointsError::Decode(e.to_string())),
        }
    }

    /// One page of `GET /point_allotments`, oldest first, `after` (ISO 8601) when given.
    pub async fn allotments(
        &self,
        after: Option<&str>,
        page: u32,
    ) -> Result<Vec<EpAllotment>, EasyPointsError> {
        let url = format!("{}/point_allotments", self.s.api_base.trim_end_matches('/'));
        let mut q = vec![
            ("page", page.max(1).to_string()),
            ("per_page", MAX_PER_PAGE.to_string()),
        ];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        let body = self.get(&url, &q).await?;
        serde_json::from_str::<Data<Vec<EpAllotment>>>(&body)
            .map(|d| d.data)
            .map_err(|e| EasyPointsError::Decode(e.to_string()))
    }

    async fn get(&self, url: &str, q: &[(&str, String)]) -> Result<String, EasyPointsError> {
        self.limiter.until_ready().await;
        let r = self
            .http
            .get(url)
            .query(q)
            .basic_auth(&self.s.public_key, Some(self.s.secret_key.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            // reqwest's error names the URL, which holds no credential (Basic auth is a header).
            .map_err(|e| EasyPointsError::Unreachable(e.without_url().to_string()))?;
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = r
            .text()
            .await
            .map_err(|e| EasyPointsError::Unreachable(e.without_url().to_string()))?;
        match status {
            200..=299 => Ok(body),
            401 | 403 => Err(EasyPointsError::Auth(status)),
            429 => Err(EasyPointsError::Throttled { retry_after }),
            _ => Err(EasyPointsError::Status {
                status,
                body: body.chars().take(200).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_codes_map_to_shopify_ids() {
        let cases: &[(&str, i64, CheckDigit, Option<&str>)] = &[
            ("7012345678901", 0, CheckDigit::None, Some("7012345678901")),
            ("0042", 0, CheckDigit::None, Some("42")),
            ("1000042", 1_000_000, CheckDigit::None, Some("42")),
            ("1000000", 1_000_000, CheckDigit::None, None),
            (
                "70123456789015",
                0,
                CheckDigit::Trailing,
                Some("7012345678901"),
            ),
            ("10000427", 1_000_000, CheckDigit::Trailing, Some("42")),
            ("5", 0, CheckDigit::Trailing, None),
            ("M000001", 0, CheckDigit::None, None),
            ("", 0, CheckDigit::None, None),
            ("12 34", 0, CheckDigit::None, None),
        ];
        for (code, offset, check, want) in cases {
            assert_eq!(
                shopify_id(code, *offset, *check).as_deref(),
                *want,
                "{code} offset {offset} {check:?}"
            );
        }
    }

    #[test]
    fn balances_and_allotments_parse_as_documented() {
        let b: Data<EpBalance> = serde_json::from_str(
            r#"{"data":{"expiration_delay":3,"expires_at":"2020-11-14T07:00:35.000000Z","id":"123","point_balance":800}}"#,
        )
        .unwrap();
        assert_eq!(b.data.point_balance, 800);
        assert_eq!(b.data.expiration_delay, Some(3));
        let a: Data<Vec<EpAllotment>> = serde_json::from_str(
            r#"{"data":[{"uid":"u1","point_value":100,"point_balance_uid":"b","type":"api","app_reference":"Smapify","allotted_at":"2023-01-01T00:00:00.000000"}]}"#,
        )
        .unwrap();
        assert_eq!(a.data[0].app_reference.as_deref(), Some("Smapify"));
        assert_eq!(
            a.data[0].alloted_at.as_deref(),
            Some("2023-01-01T00:00:00.000000")
        );
    }
}
