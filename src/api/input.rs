//! Request input shared by the resources: ids, query parameters (unknown ones refused by
//! name), and JSON bodies (413 past the size limit, 400 if not JSON).

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::StatusCode;
use serde::Deserialize;
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

/// A request body as JSON: 413 past the size limit, 408 when it stalls, 400 if it is not
/// JSON or names a key twice (`"points":1,"points":5000` must not mean 5000).
pub(super) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else if timed_out(&e) {
            ApiError::Http {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "body_timeout",
                detail: "The request body did not arrive whole within api.body_timeout_s of its head; send it whole.".into(),
            }
        } else {
            ApiError::BadJson(e.body_text())
        }
    })?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let v = StrictValue::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v.0))
        .map_err(|e| ApiError::BadJson(e.to_string()))?;
    Ok(v)
}

fn timed_out(e: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<super::server::BodyDeadline>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A JSON value whose objects may not repeat a key.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(d).map(|v| v.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key {k:?} is given more than once"
                )));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies() {
        let ok = |s: &str| json_body(Ok(Bytes::from(s.to_owned())));
        assert_eq!(ok(r#"{"a":1,"b":[{"c":2}]}"#).unwrap()["b"][0]["c"], 2);
        for bad in [
            r#"{"points":1,"points":5000}"#,
            r#"{"a":{"x":1,"x":2}}"#,
            r#"[{"k":1,"k":1}]"#,
            r#"{"a":1} trailing"#,
            "not json",
        ] {
            assert!(matches!(ok(bad), Err(ApiError::BadJson(_))), "{bad}");
        }
        // Large integers keep their exact value.
        assert_eq!(ok("18446744073709551615").unwrap(), Value::from(u64::MAX));
    }
}
