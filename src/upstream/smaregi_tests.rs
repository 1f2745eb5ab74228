//! Unit tests of the Smaregi adapter's parsers and error mapping.

use super::*;

#[test]
fn point_rows_parse_strings_and_numbers() {
    let src = r#"[{"customerId":"12","point":"150","mile":"0","pointExpireDate":"2027-03-31","insDateTime":"x","updDateTime":"2026-11-01T10:00:00+09:00","extra":1},
                  {"customerId":13,"point":7}]"#;
    let rows: Vec<PointRow> = serde_json::from_str(src).unwrap();
    let b: Vec<UpstreamBalance> = rows.into_iter().map(Into::into).collect();
    assert_eq!(b[0].customer_id, "12");
    assert_eq!(b[0].point, 150);
    assert_eq!(b[0].expires_at.as_deref(), Some("2027-03-31"));
    assert_eq!(b[1].point, 7);
    assert_eq!(b[1].expires_at, None);
}

#[test]
fn malformed_rows_fail() {
    for bad in [
        r#"{"customerId":"1"}"#,
        r#"[{"customerId":"1","point":"abc"}]"#,
        "<html>",
    ] {
        assert!(serde_json::from_str::<Vec<PointRow>>(bad).is_err(), "{bad}");
    }
}

#[test]
fn error_bodies_keep_title_and_detail() {
    let e = status_error(
        StatusCode::BAD_REQUEST,
        r#"{"type":"about:blank","title":"Bad Request","detail":"ポイントが不足しています"}"#,
        None,
    );
    let s = e.to_string();
    assert!(s.contains("Bad Request") && s.contains("ポイント"), "{s}");
    assert_eq!(e.class(), super::super::FailureClass::Permanent);
}

#[test]
fn escapes_path_segments() {
    assert_eq!(url_escape("ab-1"), "ab-1");
    assert_eq!(url_escape("a/b"), "a%2Fb");
}

#[test]
fn store_point_conditions_and_register_sale_fields_parse_leniently() {
    let sp = parse_store_points(
        r#"{"storeId":"3","storeName":"x","pointCondition":{"storeId":"3","pointUseDivision":"1","spendRate":"1"}}"#,
    )
    .unwrap();
    assert_eq!(sp.register_grants(), Some(true));
    let sp =
        parse_store_points(r#"{"storeId":3,"pointCondition":{"pointUseDivision":0}}"#).unwrap();
    assert_eq!(
        (sp.store_id.as_str(), sp.register_grants()),
        ("3", Some(false))
    );
    let sp = parse_store_points(r#"{"storeId":"3"}"#).unwrap();
    assert_eq!(sp.register_grants(), None);
    let rows = parse_transactions(
        r#"[{"transactionHeadId":"9","transactionHeadDivision":"1","customerId":"5","storeId":"2",
            "newPoint":"12","spendPoint":"3.0","transactionDateTime":"2026-12-01T10:00:00+09:00",
            "cancelDivision":"1","returnSales":"0","updDateTime":"2026-12-03T10:00:00+09:00"},
           {"transactionHeadId":"10","transactionHeadDivision":"6","customerId":"5","newPoint":"x"}]"#,
    )
    .unwrap();
    assert_eq!((rows[0].new_point, rows[0].spend_point), (12, 3));
    assert!(rows[0].cancelled && !rows[0].is_return && rows[0].is_register_points());
    assert_eq!(rows[0].store_id.as_deref(), Some("2"));
    assert_eq!(
        rows[0].transaction_at.as_deref(),
        Some("2026-12-01T10:00:00+09:00")
    );
    // A point add is never a register sale, whatever its fields say.
    assert_eq!(rows[1].new_point, 0);
    assert!(!rows[1].is_register_points());
}
