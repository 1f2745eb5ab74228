//! Request validation: ids, field errors, and a transaction body checked into a `NewTxn`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::kinds::Kind;
use super::rules::{EarnConfig, points_for_purchase};

/// Largest |points| a single transaction may carry.
pub const MAX_POINTS: i64 = 10_000_000;
/// Largest purchase amount (yen) an earn may be computed from.
pub const MAX_PURCHASE_AMOUNT: i64 = 10_000_000_000;
pub const MAX_ID_LEN: usize = 64;
pub const MAX_REASON_LEN: usize = 500;
/// Transaction id prefixes kept for the outbox rows of sales and returns.
pub const RESERVED_PREFIXES: [&str; 2] = ["sale:", "return:"];

/// `ids ≤ 64 printable chars`: printable ASCII, no spaces or control characters.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// One field-level validation failure, as it appears in problem+json `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn fe(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// A transaction request that passed validation. Its canonical JSON is what idempotent
/// replays are compared against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTxn {
    pub txn_id: String,
    pub customer_id: String,
    pub kind: Kind,
    pub points: Option<i64>,
    pub purchase_amount: Option<i64>,
    pub reason: Option<String>,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
}

impl NewTxn {
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("plain struct serializes")
    }

    /// Signed change to the balance, with the earn rule applied to a purchase amount.
    pub fn delta(&self, earn: &EarnConfig) -> i64 {
        match self.kind {
            Kind::Earn => self
                .points
                .unwrap_or_else(|| points_for_purchase(self.purchase_amount.unwrap_or(0), earn)),
            Kind::Redeem => -self.points.unwrap_or(0),
            Kind::Adjust => self.points.unwrap_or(0),
        }
    }
}

const FIELDS: [&str; 8] = [
    "txn_id",
    "customer_id",
    "kind",
    "points",
    "purchase_amount",
    "reason",
    "register_id",
    "staff_id",
];

fn opt_id(body: &Map<String, Value>, field: &str, errs: &mut Vec<FieldError>) -> Option<String> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_valid_id(s) => Some(s.clone()),
        Some(Value::String(_)) => {
            errs.push(fe(
                field,
                "must be 1-64 printable ASCII characters without spaces",
            ));
            None
        }
        Some(_) => {
            errs.push(fe(field, "must be a string"));
            None
        }
    }
}

fn opt_int(body: &Map<String, Value>, field: &str, errs: &mut Vec<FieldError>) -> Option<i64> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => Some(v),
            None => {
                errs.push(fe(field, "must be a whole number"));
                None
            }
        },
        Some(_) => {
            errs.push(fe(field, "must be a whole number, not a string"));
            None
        }
    }
}

/// Validates a transaction body. `header_key` is the `Idempotency-Key` header, if sent.
/// Returns every field error found, so a register developer fixes them in one go.
pub fn validate_txn(
    body: &Value,
    header_key: Option<&str>,
    earn: &EarnConfig,
) -> Result<NewTxn, Vec<FieldError>> {
    let Value::Object(body) = body else {
        return Err(vec![fe("(body)", "must be a JSON object")]);
    };
    let mut errs = Vec::new();
    for k in body.keys() {
        if !FIELDS.contains(&k.as_str()) {
            errs.push(fe(k, "unknown field"));
        }
    }
    let body_key = opt_id(body, "txn_id", &mut errs);
    let header_key = match header_key {
        Some(h) if is_valid_id(h) => Some(h.to_string()),
        Some(_) => {
            errs.push(fe(
                "Idempotency-Key",
                "header must be 1-64 printable ASCII characters without spaces",
            ));
            None
        }
        None => None,
    };
    let txn_id = match (body_key, header_key) {
        (Some(b), Some(h)) if b != h => {
            errs.push(fe(
                "txn_id",
                "differs from the Idempotency-Key header; send one key",
            ));
            None
        }
        (Some(b), _) => Some(b),
        (None, Some(h)) => Some(h),
        (None, None) => {
            if !body.contains_key("txn_id") {
                errs.push(fe(
                    "txn_id",
                    "required (or an Idempotency-Key header) so a retried request is not counted twice",
                ));
            }
            None
        }
    };
    // `sale:` and `return:` name the outbox rows of sales and returns (receipt numbers are
    // predictable): a plain transaction taking one would make the real sale a 409.
    if let Some(id) = &txn_id
        && RESERVED_PREFIXES.iter().any(|p| id.starts_with(p))
    {
        errs.push(fe(
            "txn_id",
            "must not start with \"sale:\" or \"return:\" (those name the transactions of sales and returns)",
        ));
    }
    let customer_id = opt_id(body, "customer_id", &mut errs);
    if customer_id.is_none() && !errs.iter().any(|e| e.field == "customer_id") {
        errs.push(fe("customer_id", "required"));
    }
    let kind = match body.get("kind") {
        Some(Value::String(s)) => match Kind::parse(s) {
            Some(k) => Some(k),
            None => {
                errs.push(fe(
                    "kind",
                    "must be one of \"earn\", \"redeem\", \"adjust\"",
                ));
                None
            }
        },
        None | Some(Value::Null) => {
            errs.push(fe("kind", "required: \"earn\", \"redeem\" or \"adjust\""));
            None
        }
        Some(_) => {
            errs.push(fe(
                "kind",
                "must be a string: \"earn\", \"redeem\" or \"adjust\"",
            ));
            None
        }
    };
    let points = opt_int(body, "points", &mut errs);
    let purchase_amount = opt_int(body, "purchase_amount", &mut errs);
    let had_number_error = errs
        .iter()
        .any(|e| e.field == "points" || e.field == "purchase_amount");
    if let Some(p) = points
        && p.unsigned_abs() > MAX_POINTS as u64
    {
        errs.push(fe(
            "points",
            format!("must be at most {MAX_POINTS} in size"),
        ));
    }
    if let Some(kind) = kind
        && !had_number_error
    {
        match (kind, points, purchase_amount) {
            (Kind::Earn, Some(_), Some(_)) => errs.push(fe(
                "purchase_amount",
                "give points or purchase_amount, not both",
            )),
            (Kind::Earn, None, Some(a)) => {
                if a <= 0 || a > MAX_PURCHASE_AMOUNT {
                    errs.push(fe(
                        "purchase_amount",
                        format!("must be a positive number of yen up to {MAX_PURCHASE_AMOUNT}"),
                    ));
                } else if points_for_purchase(a, earn) > MAX_POINTS {
                    errs.push(fe(
                        "purchase_amount",
                        format!(
                            "would earn {} points; one transaction may carry at most {MAX_POINTS}",
                            points_for_purchase(a, earn)
                        ),
                    ));
                } else if points_for_purchase(a, earn) <= 0 {
                    errs.push(fe(
                        "purchase_amount",
                        format!(
                            "earns no points under the store's rule (1 point per {} yen)",
                            earn.yen_per_point
                        ),
                    ));
                }
            }
            (Kind::Earn | Kind::Redeem, Some(p), None) if p <= 0 => {
                errs.push(fe("points", "must be a positive whole number"))
            }
            (Kind::Earn | Kind::Redeem, Some(_), None) => {}
            (Kind::Earn, None, None) => {
                errs.push(fe("points", "required for earn (or give purchase_amount)"))
            }
            (Kind::Redeem | Kind::Adjust, _, Some(_)) => errs.push(fe(
                "purchase_amount",
                "only allowed for earn; give points instead",
            )),
            (Kind::Redeem, None, None) => errs.push(fe("points", "required for redeem")),
            (Kind::Adjust, Some(0), None) => errs.push(fe("points", "must not be zero")),
            (Kind::Adjust, Some(_), None) => {}
            (Kind::Adjust, None, None) => {
                errs.push(fe("points", "required for adjust (signed, non-zero)"))
            }
        }
    }
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_REASON_LEN => Some(s.clone()),
        Some(Value::String(_)) => {
            errs.push(fe(
                "reason",
                format!("must be at most {MAX_REASON_LEN} characters"),
            ));
            None
        }
        Some(_) => {
            errs.push(fe("reason", "must be a string"));
            None
        }
    };
    let register_id = opt_id(body, "register_id", &mut errs);
    let staff_id = opt_id(body, "staff_id", &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(NewTxn {
        txn_id: txn_id.expect("no errors"),
        customer_id: customer_id.expect("no errors"),
        kind: kind.expect("no errors"),
        points,
        purchase_amount,
        reason,
        register_id,
        staff_id,
    })
}

#[cfg(test)]
mod tests {
    use super::super::rules::Rounding;
    use super::*;
    use serde_json::json;

    fn earn() -> EarnConfig {
        EarnConfig::default()
    }

    fn fields(v: Value, header: Option<&str>) -> Vec<String> {
        validate_txn(&v, header, &earn())
            .expect_err("should be invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn valid_earn_redeem_adjust() {
        let t = validate_txn(
            &json!({"txn_id":"t1","customer_id":"c1","kind":"earn","points":10}),
            None,
            &earn(),
        )
        .unwrap();
        assert_eq!(t.delta(&earn()), 10);
        let t = validate_txn(
            &json!({"customer_id":"c1","kind":"redeem","points":7}),
            Some("hdr-1"),
            &earn(),
        )
        .unwrap();
        assert_eq!(t.txn_id, "hdr-1");
        assert_eq!(t.delta(&earn()), -7);
        let t = validate_txn(
            &json!({"txn_id":"t3","customer_id":"c1","kind":"adjust","points":-5,"reason":"fix"}),
            None,
            &earn(),
        )
        .unwrap();
        assert_eq!(t.delta(&earn()), -5);
    }

    #[test]
    fn purchase_amount_uses_the_earn_rule() {
        let t = validate_txn(
            &json!({"txn_id":"t","customer_id":"c","kind":"earn","purchase_amount":1999}),
            None,
            &earn(),
        )
        .unwrap();
        assert_eq!(t.delta(&earn()), 19);
        let ceil = EarnConfig {
            rounding: Rounding::Ceil,
            ..EarnConfig::default()
        };
        assert_eq!(points_for_purchase(1901, &ceil), 20);
        let round = EarnConfig {
            rounding: Rounding::Round,
            ..EarnConfig::default()
        };
        assert_eq!(points_for_purchase(1950, &round), 20);
        assert_eq!(points_for_purchase(1949, &round), 19);
    }

    #[test]
    fn a_derived_delta_stays_within_the_bound_and_reserved_ids_are_refused() {
        // 1 point per 100 yen: 1,000,000,000 yen is exactly the bound, one more 100 is past it.
        let ok = json!({"txn_id":"t","customer_id":"c","kind":"earn","purchase_amount":1_000_000_000i64});
        assert_eq!(
            validate_txn(&ok, None, &earn()).unwrap().delta(&earn()),
            MAX_POINTS
        );
        let big = json!({"txn_id":"t","customer_id":"c","kind":"earn","purchase_amount":1_000_000_100i64});
        assert_eq!(fields(big, None), vec!["purchase_amount"]);
        for id in ["sale:R-0042", "return:R-0042-1"] {
            let v = json!({"txn_id": id,"customer_id":"c","kind":"earn","points":1});
            assert_eq!(fields(v.clone(), None), vec!["txn_id"], "{id}");
            let mut h = v;
            h.as_object_mut().unwrap().remove("txn_id");
            assert_eq!(fields(h, Some(id)), vec!["txn_id"], "header {id}");
        }
        assert!(
            validate_txn(
                &json!({"txn_id":"sales-1","customer_id":"c","kind":"earn","points":1}),
                None,
                &earn()
            )
            .is_ok()
        );
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let cases = vec![
            (
                json!({"customer_id":"c","kind":"earn","points":1}),
                "txn_id",
            ),
            (
                json!({"txn_id":"t","kind":"earn","points":1}),
                "customer_id",
            ),
            (json!({"txn_id":"t","customer_id":"c","points":1}), "kind"),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"gift","points":1}),
                "kind",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","points":0}),
                "points",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","points":-3}),
                "points",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"redeem"}),
                "points",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"adjust","points":0}),
                "points",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","points":"5"}),
                "points",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","points":1.5}),
                "points",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","points":10_000_001}),
                "points",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","purchase_amount":50}),
                "purchase_amount",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"redeem","points":1,"purchase_amount":50}),
                "purchase_amount",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","points":1,"pionts":2}),
                "pionts",
            ),
            (
                json!({"txn_id":"has space","customer_id":"c","kind":"earn","points":1}),
                "txn_id",
            ),
            (
                json!({"txn_id":"x".repeat(65),"customer_id":"c","kind":"earn","points":1}),
                "txn_id",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","points":1,"register_id":5}),
                "register_id",
            ),
            (
                json!({"txn_id":"t","customer_id":"c","kind":"earn","points":1,"reason":"x".repeat(501)}),
                "reason",
            ),
        ];
        for (body, field) in cases {
            let f = fields(body.clone(), None);
            assert!(
                f.contains(&field.to_string()),
                "{body}: expected {field} in {f:?}"
            );
        }
        assert_eq!(fields(json!([1, 2]), None), vec!["(body)".to_string()]);
        let f = fields(
            json!({"txn_id":"a","customer_id":"c","kind":"earn","points":1}),
            Some("b"),
        );
        assert_eq!(f, vec!["txn_id".to_string()]);
    }

    #[test]
    fn all_errors_are_reported_together() {
        let f = fields(json!({"kind":"nope","points":"x"}), None);
        for k in ["txn_id", "customer_id", "kind", "points"] {
            assert!(f.contains(&k.to_string()), "{k} missing in {f:?}");
        }
    }
}
