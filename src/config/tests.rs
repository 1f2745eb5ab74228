//! Parse and validation tests: the whole path from TOML text to `Settings` or problems.

use std::collections::BTreeMap;

use super::*;

const GOOD: &str = r#"
[agent]
store_id = "store-001"
[api]
listen = "127.0.0.1:9000"
[[api.tokens]]
name = "register-1"
token = "0123456789abcdef0123"
"#;

fn parse(text: &str) -> Result<Settings, Vec<Problem>> {
    match Config::parse(text, &BTreeMap::new(), "test") {
        Ok(c) => c.validate(),
        Err(ConfigError::Invalid { problems, .. }) => Err(problems),
        Err(e) => panic!("{e}"),
    }
}

fn keys(r: Result<Settings, Vec<Problem>>) -> Vec<String> {
    r.expect_err("should be invalid")
        .into_iter()
        .map(|p| p.key)
        .collect()
}

#[test]
fn minimal_config_is_valid_with_defaults() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.listen.port(), 9000);
    assert_eq!(s.config.offline.max_redeem_points, 5000);
    assert_eq!(s.config.earn.yen_per_point, 100);
    assert_eq!(s.config.log.retention_files, 14);
    assert_eq!(s.tokens.len(), 1);
}

#[test]
fn table_of_invalid_configs_names_the_key() {
    let cases: &[(&str, &str)] = &[
        ("[agent]\nstore_id = \"\"", "agent.store_id"),
        ("[api]\nlisten = \"nowhere\"", "api.listen"),
        ("[sync]\nconcurrency = 0", "sync.concurrency"),
        ("[earn]\nyen_per_point = 0", "earn.yen_per_point"),
        (
            "[offline]\nmax_redeem_points = -1",
            "offline.max_redeem_points",
        ),
        ("[upstream]\nkind = \"smaregi\"", "upstream.smaregi"),
        ("[[tiers]]\nname = \"\"\nmin_points = 5", "tiers[0].name"),
        ("[log]\nretention_files = 0", "log.retention_files"),
        (
            "[agent]\nstore_id = \"s\"\ntimezone = \"Mars/Olympus\"",
            "agent.timezone",
        ),
        ("[spend]\nmax_share = 1.5", "spend.max_share"),
        ("[spend]\nunit = 0", "spend.unit"),
        ("[spend]\nmin_points = 0", "spend.min_points"),
        ("[spend]\nyen_per_point = 0", "spend.yen_per_point"),
        (
            "[[earn.campaigns]]\nname = \"x\"\nfrom = \"2026-13-01\"\nmultiplier = 2.0",
            "earn.campaigns[0].from",
        ),
        (
            "[[earn.campaigns]]\nname = \"x\"\nfrom = \"2026-12-31\"\nto = \"2026-12-01\"\nbonus_points = 5",
            "earn.campaigns[0].to",
        ),
        ("[[earn.campaigns]]\nname = \"x\"", "earn.campaigns[0]"),
        (
            "[[earn.campaigns]]\nname = \"x\"\nweekdays = [\"sat\"]\nmultiplier = 0.0",
            "earn.campaigns[0].multiplier",
        ),
        (
            "[[tiers]]\nname = \"G\"\nmin_points = 5\nearn_multiplier = 0.0",
            "tiers[0].earn_multiplier",
        ),
        (
            "[returns]\nallow_negative_balanse = true",
            "returns.allow_negative_balanse",
        ),
        ("[log]\nlevel = \"inof\"", "log.level"),
        ("[log]\nlevel = \"pointsd=loud\"", "log.level"),
    ];
    for (extra, key) in cases {
        let text = if extra.starts_with("[agent]") || extra.starts_with("[api]") {
            format!("{extra}\n[[api.tokens]]\nname=\"r\"\ntoken=\"0123456789abcdef0\"\n")
        } else {
            format!("{GOOD}\n{extra}\n")
        };
        let ks = keys(parse(&text));
        assert!(
            ks.iter().any(|k| k == key),
            "{extra:?}: expected {key} in {ks:?}"
        );
    }
}

#[test]
fn unknown_keys_are_all_reported() {
    let text = format!("{GOOD}\n[offline]\nallow_redeam = true\n[sync]\nconcurency = 2\n");
    let ks = keys(parse(&text));
    assert!(ks.contains(&"offline.allow_redeam".to_string()), "{ks:?}");
    assert!(ks.contains(&"sync.concurency".to_string()), "{ks:?}");
}

#[test]
fn wrong_type_names_the_key() {
    let ks = keys(parse(&format!("{GOOD}\n[sync]\nconcurrency = \"four\"\n")));
    assert_eq!(ks, vec!["sync.concurrency".to_string()]);
}

#[test]
fn several_rule_problems_at_once() {
    let text = "[api]\nlisten = \"x\"\n[sync]\nconcurrency = 0\n";
    let ks = keys(parse(text));
    for k in [
        "agent.store_id",
        "api.listen",
        "api.tokens",
        "sync.concurrency",
    ] {
        assert!(ks.contains(&k.to_string()), "{k} missing from {ks:?}");
    }
}

#[test]
fn env_overrides_set_nested_keys() {
    let mut env = BTreeMap::new();
    env.insert("POINTSD_SYNC__CONCURRENCY".into(), "9".into());
    env.insert("POINTSD_AGENT__STORE_ID".into(), "store-env".into());
    env.insert("POINTSD_DATA_DIR".into(), "/ignored".into());
    let c = Config::parse(GOOD, &env, "t").unwrap();
    assert_eq!(c.sync.concurrency, 9);
    assert_eq!(c.agent.store_id, "store-env");
    assert!(c.agent.data_dir.is_none());
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let s = parse(GOOD).unwrap();
    let dbg = format!("{:?}", s);
    assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
}

#[test]
fn token_sha256_is_accepted() {
    let h = hex::encode(sha256(b"some-long-register-token"));
    let text =
        format!("[agent]\nstore_id=\"s\"\n[[api.tokens]]\nname=\"r\"\ntoken_sha256=\"{h}\"\n");
    let s = parse(&text).unwrap();
    assert_eq!(s.tokens[0].sha256, sha256(b"some-long-register-token"));
}
