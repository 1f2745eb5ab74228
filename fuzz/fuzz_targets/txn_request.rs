//! The transaction request validator: any JSON body (and any Idempotency-Key header) gives a
//! validated request or field errors, never a panic; a validated one stays within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pointsd::config::EarnConfig;
use pointsd::ledger::{MAX_POINTS, validate_txn};

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let earn = EarnConfig::default();
    if let Ok(t) = validate_txn(&v, header, &earn) {
        let d = t.delta(&earn);
        assert!(d != 0 || t.kind == pointsd::ledger::Kind::Earn);
        assert!(t.points.is_none_or(|p| p.unsigned_abs() <= MAX_POINTS as u64));
        let _ = t.canonical();
    }
});
