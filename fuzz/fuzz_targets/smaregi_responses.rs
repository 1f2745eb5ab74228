//! The Smaregi response parsers (numbers as strings or numbers, missing fields, malformed
//! pages): any body gives rows or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pointsd::upstream::smaregi::{
    parse_add_answer, parse_customers, parse_points, parse_transactions,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_points(text);
    let _ = parse_customers(text);
    let _ = parse_add_answer(text, "1");
    let _ = parse_transactions(text);
});
