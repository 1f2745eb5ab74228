//! The seam to the cloud ledgers: one trait, one file per adapter, and the error type that
//! carries the failure class of DESIGN.md §5. Classification lives here, on the error; the
//! retry *policy* lives in `sync::schedule`.
//!
//! Files: this one (trait, shared types, errors, lenient number parsing); `smaregi.rs` (the
//! Smaregi Platform API adapter); `health.rs` (link state and the wrapper that records it);
//! `budget.rs` (the agent's share of the contract: read/write pacing, AIMD, priorities);
//! `easypoints.rs` (the easyPoints API, read only: a Smapify merchant's second ledger).

pub mod budget;
pub mod easypoints;
pub mod health;
pub mod smaregi;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize};

/// A customer's balance as the upstream reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamBalance {
    pub customer_id: String,
    pub point: i64,
    pub expires_at: Option<String>,
    /// The upstream's own last-change stamp (Smaregi `updDateTime`).
    pub updated_at: Option<String>,
}

/// A customer directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamCustomer {
    pub customer_id: String,
    pub code: Option<String>,
    pub barcode: Option<String>,
    pub name: Option<String>,
    /// `updDateTime` of the directory entry.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A window of last change for the directory (`GET /pos/customers?upd_date_time-from/-to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedQuery {
    pub from: String,
    pub to: String,
    pub page: u32,
}

/// The answer of a relative change: the balance after it, and the ids of the point
/// transactions it created (Smaregi `transactionHeadIds`; optional, older API versions lack it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub balance: UpstreamBalance,
    pub transaction_ids: Option<Vec<String>>,
}

/// One entry of the upstream's transaction list (Smaregi 取引, `GET /pos/transactions`):
/// every transaction naming a customer may have moved that customer's points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTxn {
    pub id: String,
    /// `transactionHeadDivision`: 1 sale/return, 6 point add, 7 point subtract, 8 expiry.
    pub division: Option<String>,
    pub customer_id: Option<String>,
    pub customer_code: Option<String>,
    pub updated_at: Option<String>,
    /// `storeId`: the store whose register (or, for point adds, whose contract) made it.
    #[serde(default)]
    pub store_id: Option<String>,
    /// `newPoint` (points the register granted) and `spendPoint` (points used); 0 if absent.
    #[serde(default)]
    pub new_point: i64,
    #[serde(default)]
    pub spend_point: i64,
    /// `transactionDateTime`: when the register rang it up (an offline register uploads
    /// later, so this may be well before `updated_at`).
    #[serde(default)]
    pub transaction_at: Option<String>,
    /// `cancelDivision` "1": a void; `returnSales` "1": a return.
    #[serde(default)]
    pub cancelled: bool,
    #[serde(default)]
    pub is_return: bool,
}

impl UpstreamTxn {
    /// A register's sale, return or void that moved a member's points (division 1 with a
    /// customer and a non-zero `newPoint` or `spendPoint`, DESIGN.md §14).
    pub fn is_register_points(&self) -> bool {
        self.division.as_deref() == Some("1")
            && self.customer_id.is_some()
            && (self.new_point != 0 || self.spend_point != 0)
    }

    /// Divisions that can move a member's points (DESIGN.md §4): 1 (a sale or a return),
    /// 6 (add), 7 (subtract), 8 (expiry). A missing division is counted: better one more
    /// "maybe" than a change overlooked.
    pub fn moves_points(&self) -> bool {
        matches!(
            self.division.as_deref(),
            None | Some("1") | Some("6") | Some("7") | Some("8")
        )
    }
}

/// A store's point conditions (Smaregi `GET /pos/stores/{id}?with_point_condition=all`,
/// `pointCondition`): whether the register grants and takes points at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorePoints {
    pub store_id: String,
    /// `pointUseDivision`: "1" (使用する: the register grants points by the store's rate),
    /// "0" (使用しない). `None` when the store answered without a point condition.
    pub point_use_division: Option<String>,
}

impl StorePoints {
    /// Whether the store's register grants points itself (`pointUseDivision = "1"`).
    pub fn register_grants(&self) -> Option<bool> {
        match self.point_use_division.as_deref() {
            Some("1") => Some(true),
            Some("0") => Some(false),
            _ => None,
        }
    }
}

/// A window of the transaction list, by last change (`upd_date_time-from/-to`, both
/// inclusive, at most 31 days apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnQuery {
    /// ISO 8601 with offset, whole seconds.
    pub from: String,
    pub to: String,
    /// Smaregi filters by member code, not by id.
    pub customer_code: Option<String>,
    pub page: u32,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// True when another page may follow.
    pub more: bool,
}

/// What the sync engine does about a failure (DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Nothing reached the upstream, or it said "later": retry with backoff.
    Transient,
    /// The request left but no answer came: read back before anything else.
    Ambiguous,
    /// The upstream refused for good: reject, keep its reason.
    Permanent,
    /// Credentials refused: refresh once, then pause and alert.
    Auth,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable ({0}); nothing was sent")]
    Unreachable(String),
    #[error("no answer from the upstream after the request was sent ({0})")]
    NoAnswer(String),
    #[error("upstream answered {status}: {title}{}", detail.as_deref().map(|d| format!(" — {d}")).unwrap_or_default())]
    Status {
        status: u16,
        title: String,
        detail: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("upstream sent a malformed response: {0}")]
    Malformed(String),
    #[error(
        "upstream refused the credentials ({0}); check client_id/client_secret and the app's scopes"
    )]
    Auth(String),
    /// The credentials work but lack a scope this request needs (403 on an optional feature,
    /// such as the transaction list): that feature is unavailable, sync goes on without it.
    #[error(
        "the app lacks the scope {scope} ({detail}); grant it in the Smaregi developer console"
    )]
    MissingScope { scope: &'static str, detail: String },
}

impl UpstreamError {
    pub fn class(&self) -> FailureClass {
        match self {
            UpstreamError::Unreachable(_) | UpstreamError::Malformed(_) => FailureClass::Transient,
            UpstreamError::NoAnswer(_) => FailureClass::Ambiguous,
            UpstreamError::Auth(_) => FailureClass::Auth,
            UpstreamError::MissingScope { .. } => FailureClass::Permanent,
            UpstreamError::Status { status, .. } => match *status {
                401 | 403 => FailureClass::Auth,
                408 | 429 => FailureClass::Transient,
                400 | 404 | 409 | 422 => FailureClass::Permanent,
                s if s >= 500 => FailureClass::Transient,
                // Other 4xx: the request itself is wrong; retrying will not help.
                _ => FailureClass::Permanent,
            },
        }
    }

    /// How long the upstream asked everyone to wait (429/503 `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this failure says the link itself is down (for the online/offline flag).
    ///
    /// A lost answer is not taken as "down": one dropped connection says little about the
    /// link, and going offline would pause every send (and switch registers to offline
    /// rules) until the next probe. If the link really is down, the next request says so.
    pub fn is_link_down(&self) -> bool {
        matches!(self, UpstreamError::Unreachable(_))
            || matches!(self, UpstreamError::Status { status, .. } if *status >= 500)
    }

    /// A short, secret-free label for metrics.
    pub fn outcome_label(&self) -> &'static str {
        match self.class() {
            FailureClass::Transient => "transient",
            FailureClass::Ambiguous => "ambiguous",
            FailureClass::Permanent => "permanent",
            FailureClass::Auth => "auth",
        }
    }
}

/// One upstream ledger.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    /// One page (1-based) of every customer's balance.
    async fn list_balances(&self, page: u32) -> Result<Page<UpstreamBalance>, UpstreamError>;
    /// One customer's balance; `None` if the upstream does not know the customer.
    async fn get_balance(
        &self,
        customer_id: &str,
    ) -> Result<Option<UpstreamBalance>, UpstreamError>;
    /// Applies a signed change and returns the balance after it. Never an absolute set.
    async fn add_points(&self, customer_id: &str, delta: i64) -> Result<Applied, UpstreamError>;
    /// One page (1-based) of the customer directory.
    async fn list_customers(&self, page: u32) -> Result<Page<UpstreamCustomer>, UpstreamError>;
    /// One page of the customers created or changed in a window.
    async fn list_changed_customers(
        &self,
        q: &ChangedQuery,
    ) -> Result<Page<UpstreamCustomer>, UpstreamError>;
    /// One page of the transaction list in a window of last change.
    async fn list_transactions(&self, q: &TxnQuery) -> Result<Page<UpstreamTxn>, UpstreamError>;
    /// One store's point conditions; `None` if the upstream does not know the store.
    async fn store_points(&self, store_id: &str) -> Result<Option<StorePoints>, UpstreamError>;
    /// The cheapest authenticated request, to tell whether the link and credentials work.
    async fn probe(&self) -> Result<(), UpstreamError>;
}

/// Smaregi sends numbers as JSON strings; accept either, and tolerate absence.
pub(crate) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        I(i64),
        F(f64),
        S(String),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::F(f) if f.fract() == 0.0 && f.abs() < 9e15 => Ok(f as i64),
        N::F(f) => Err(serde::de::Error::custom(format!(
            "{f} is not a whole number"
        ))),
        N::S(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a whole number"))),
    }
}

/// Ids may arrive as numbers or strings; keep them as strings.
pub(crate) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        I(i64),
    }
    Ok(match V::deserialize(d)? {
        V::S(s) => s,
        V::I(i) => i.to_string(),
    })
}

pub(crate) fn lenient_opt_string<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        I(i64),
    }
    Ok(match Option::<V>::deserialize(d)? {
        Some(V::S(s)) if s.is_empty() => None,
        Some(V::S(s)) => Some(s),
        Some(V::I(i)) => Some(i.to_string()),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> UpstreamError {
        UpstreamError::Status {
            status: s,
            title: "t".into(),
            detail: None,
            retry_after: None,
        }
    }

    #[test]
    fn failure_table() {
        use FailureClass::*;
        assert_eq!(
            UpstreamError::Unreachable("refused".into()).class(),
            Transient
        );
        assert_eq!(UpstreamError::NoAnswer("timeout".into()).class(), Ambiguous);
        assert_eq!(UpstreamError::Malformed("x".into()).class(), Transient);
        for s in [500, 502, 503, 504, 408, 429] {
            assert_eq!(status(s).class(), Transient, "{s}");
        }
        for s in [400, 404, 409, 422] {
            assert_eq!(status(s).class(), Permanent, "{s}");
        }
        for s in [401, 403] {
            assert_eq!(status(s).class(), Auth, "{s}");
        }
    }

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "lenient_i64")]
        n: i64,
    }

    #[test]
    fn numbers_as_strings_or_numbers() {
        for (src, want) in [
            (r#"{"n":"12"}"#, 12),
            (r#"{"n":-3}"#, -3),
            (r#"{"n":" 7 "}"#, 7),
            (r#"{"n":5.0}"#, 5),
        ] {
            assert_eq!(serde_json::from_str::<T>(src).unwrap().n, want, "{src}");
        }
        for bad in [r#"{"n":"x"}"#, r#"{"n":1.5}"#, r#"{"n":null}"#, r#"{}"#] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
    }
}
