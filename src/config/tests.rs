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
token = "3f9a0c7e51d24b8e96a1f0c37d5b2e84"
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
            format!(
                "{extra}\n[[api.tokens]]\nname=\"r\"\ntoken=\"3f9a0c7e51d24b8e96a1f0c37d5b2e84\"\n"
            )
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
    assert!(!dbg.contains("3f9a0c7e51d24b8e"), "{dbg}");
}

#[test]
fn token_sha256_is_accepted() {
    let h = hex::encode(sha256(b"some-long-register-token"));
    let text =
        format!("[agent]\nstore_id=\"s\"\n[[api.tokens]]\nname=\"r\"\ntoken_sha256=\"{h}\"\n");
    let s = parse(&text).unwrap();
    assert_eq!(s.tokens[0].sha256, sha256(b"some-long-register-token"));
}

#[test]
fn table_of_lan_and_token_rules() {
    let tok = |name: &str, t: &str| format!("[[api.tokens]]\nname=\"{name}\"\ntoken=\"{t}\"\n");
    let strong = "3f9a0c7e51d24b8e96a1f0c37d5b2e84";
    let base = "[agent]\nstore_id=\"s\"\n";
    let cases: Vec<(String, Option<&str>)> = vec![
        (
            format!("{base}{}", tok("r", "passwordpassword")),
            Some("api.tokens[0].token"),
        ),
        (
            format!("{base}{}", tok("r", "with space 0123456789abcdefXYZ")),
            Some("api.tokens[0].token"),
        ),
        (
            format!("{base}{}", tok("r", "ü3f9a0c7e51d24b8e96a1f0c37d5b2e84")),
            Some("api.tokens[0].token"),
        ),
        (
            format!("{base}{}{}", tok("a", strong), tok("b", strong)),
            Some("api.tokens[1]"),
        ),
        (
            format!(
                "{base}{}{}",
                tok("a", strong),
                tok("a", "aB3dE5gH7jK9mN1pQ2rS4t")
            ),
            Some("api.tokens[1].name"),
        ),
        (
            format!("{base}[api]\nlisten=\"0.0.0.0:8765\"\n{}", tok("r", strong)),
            Some("api.listen"),
        ),
        (
            format!(
                "{base}[api]\nlisten=\"192.168.1.10:8765\"\n{}",
                tok("r", strong)
            ),
            Some("api.listen"),
        ),
        (
            format!(
                "{base}[api]\nlisten=\"0.0.0.0:8765\"\nallow_plain_http=true\n{}",
                tok("r", strong)
            ),
            None,
        ),
        (
            format!(
                "{base}[api]\nlisten=\"0.0.0.0:8765\"\n[api.tls]\ngenerate=true\nnames=[\"pc.local\",\"192.168.1.10\"]\n{}",
                tok("r", strong)
            ),
            None,
        ),
        (
            format!(
                "{base}[api]\nlisten=\"0.0.0.0:8765\"\n[api.tls]\ngenerate=true\n{}",
                tok("r", strong)
            ),
            Some("api.tls.names"),
        ),
        (
            format!(
                "{base}[api.tls]\ngenerate=true\nnames=[\"not a name\"]\n{}",
                tok("r", strong)
            ),
            Some("api.tls.names[0]"),
        ),
        (
            format!(
                "{base}[api.tls]\ncert_file=\"/x.pem\"\n{}",
                tok("r", strong)
            ),
            Some("api.tls.key_file"),
        ),
        (
            format!(
                "{base}[api.tls]\ncert_file=\"/x.pem\"\nkey_file=\"/k.pem\"\ngenerate=true\n{}",
                tok("r", strong)
            ),
            Some("api.tls.generate"),
        ),
        (
            format!("{base}[api]\nmax_connections=0\n{}", tok("r", strong)),
            Some("api.max_connections"),
        ),
        (
            format!("{base}[api]\nheader_timeout_s=0\n{}", tok("r", strong)),
            Some("api.header_timeout_s"),
        ),
        (
            format!(
                "{base}[api]\nallowed_hosts=[\"http://x/\"]\n{}",
                tok("r", strong)
            ),
            Some("api.allowed_hosts[0]"),
        ),
        (
            format!("{base}[log]\nmax_total_mb=0\n{}", tok("r", strong)),
            Some("log.max_total_mb"),
        ),
        (format!("{base}{}", tok("r", strong)), None),
    ];
    for (text, key) in cases {
        match (parse(&text), key) {
            (Ok(_), None) => {}
            (Ok(_), Some(k)) => panic!("{text:?}: expected a problem at {k}"),
            (Err(p), None) => panic!("{text:?}: expected valid, got {p:?}"),
            (Err(p), Some(k)) => {
                assert!(p.iter().any(|p| p.key == k), "{text:?}: {k} not in {p:?}")
            }
        }
    }
}
