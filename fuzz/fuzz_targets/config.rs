//! The config parser and validator: any text gives settings or a list of problems.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = pointsd::config::Config::parse(text, &Default::default(), "fuzz") {
        let _ = cfg.validate();
    }
});
