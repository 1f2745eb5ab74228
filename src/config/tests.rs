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

const EP: &str = "[easypoints]\npublic_key = \"pk\"\nsecret_key = \"ep-secret-0123456789\"\n";

#[test]
fn easypoints_defaults_and_every_rule() {
    let s = parse(&format!("{GOOD}\n{EP}")).unwrap();
    let ep = s.easypoints.expect("configured");
    assert_eq!(ep.api_base, "https://loyalty.slrs.io/api/shopify");
    assert_eq!(ep.max_requests_per_second, 2);
    assert_eq!(ep.settle.as_secs(), 300);
    assert_eq!(ep.report_window.as_secs(), 30 * 86_400);
    assert!(ep.report_interval.is_none());
    assert!(parse(GOOD).unwrap().easypoints.is_none());
    let cases: &[(&str, &str)] = &[
        ("[easypoints]\nsecret_key = \"x\"", "easypoints.public_key"),
        ("[easypoints]\npublic_key = \"pk\"", "easypoints.secret_key"),
        (
            &format!("{EP}api_base = \"loyalty.slrs.io\""),
            "easypoints.api_base",
        ),
        (&format!("{EP}code_offset = -1"), "easypoints.code_offset"),
        (
            &format!("{EP}code_check_digit = \"luhn\""),
            "easypoints.code_check_digit",
        ),
        (
            &format!("{EP}max_requests_per_second = 0"),
            "easypoints.max_requests_per_second",
        ),
        (&format!("{EP}settle_s = 100000"), "easypoints.settle_s"),
        (
            &format!("{EP}report_window_days = 0"),
            "easypoints.report_window_days",
        ),
        (
            &format!("{EP}report_interval_s = 5"),
            "easypoints.report_interval_s",
        ),
        (&format!("{EP}settle = 5"), "easypoints.settle"),
    ];
    for (extra, key) in cases {
        let ks = keys(parse(&format!("{GOOD}\n{extra}\n")));
        assert!(
            ks.iter().any(|k| k == key),
            "{extra:?}: expected {key} in {ks:?}"
        );
    }
}

#[test]
fn easypoints_secret_from_env_or_file_never_in_debug_output() {
    let mut env = BTreeMap::new();
    env.insert(
        "POINTSD_EASYPOINTS__SECRET_KEY".into(),
        "ep-from-env-0123456789".into(),
    );
    env.insert("POINTSD_EASYPOINTS__SETTLE_S".into(), "60".into());
    let c = Config::parse(
        &format!("{GOOD}\n[easypoints]\npublic_key = \"pk\"\n"),
        &env,
        "t",
    )
    .unwrap();
    let s = c.validate().unwrap();
    let ep = s.easypoints.clone().unwrap();
    assert_eq!(ep.secret_key.expose(), "ep-from-env-0123456789");
    assert_eq!(ep.settle.as_secs(), 60);
    assert!(!format!("{s:?}").contains("ep-from-env"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ep.secret");
    std::fs::write(&file, "ep-from-file-0123456789\n").unwrap();
    let text = format!(
        "{GOOD}\n[easypoints]\npublic_key = \"pk\"\nsecret_key_file = {:?}\n",
        file.display().to_string()
    );
    let mut c = Config::parse(&text, &BTreeMap::new(), "t").unwrap();
    c.read_secret_files().unwrap();
    assert_eq!(
        c.easypoints.as_ref().unwrap().secret_key.expose(),
        "ep-from-file-0123456789"
    );
    // Both at once, or a missing file, is a problem naming the key.
    let text = format!(
        "{GOOD}\n{EP}secret_key_file = {:?}\n",
        file.display().to_string()
    );
    let mut c = Config::parse(&text, &BTreeMap::new(), "t").unwrap();
    let p = c.read_secret_files().unwrap_err();
    assert_eq!(p[0].key, "easypoints.secret_key_file");
    let text = format!(
        "{GOOD}\n[easypoints]\npublic_key = \"pk\"\nsecret_key_file = \"/nonexistent/ep\"\n"
    );
    let mut c = Config::parse(&text, &BTreeMap::new(), "t").unwrap();
    assert_eq!(
        c.read_secret_files().unwrap_err()[0].key,
        "easypoints.secret_key_file"
    );
}
