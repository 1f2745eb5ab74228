//! `pointsd config check` on the real binary: the shipped example config is valid and documents
//! every key, broken configs fail with the key path named, every problem is reported at once,
//! environment overrides apply, and secret-holding files get a permissions warning
//! (DESIGN.md §2.9).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pointsd::config::{
    CampaignConfig, Config, Secret, SmaregiConfig, TierConfig, TokenConfig, Weekday,
};

const TOKEN: &str = "config-cli-test-token-0123456789";

/// A minimal valid config; cases append to it or replace it.
const VALID: &str = r#"
[agent]
store_id = "store-001"

[api]
listen = "127.0.0.1:8765"

[[api.tokens]]
name = "register-1"
token = "config-cli-test-token-0123456789"
"#;

/// The same, without `[agent]`.
const NO_STORE_ID: &str = r#"
[api]
listen = "127.0.0.1:8765"

[[api.tokens]]
name = "register-1"
token = "config-cli-test-token-0123456789"
"#;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pointsd.example.toml")
}

/// The binary with no `POINTSD_*` variable from the developer's environment.
fn pointsd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pointsd"));
    cmd.env_remove("POINTSD_CONFIG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("POINTSD_") {
            cmd.env_remove(&name);
        }
    }
    cmd
}

struct Outcome {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(mut cmd: Command) -> Outcome {
    let out = cmd.output().expect("run pointsd");
    Outcome {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `pointsd config check --config <path>` with extra environment variables.
fn check_with_env(path: &Path, env: &[(&str, &str)]) -> Outcome {
    let mut cmd = pointsd();
    cmd.args(["config", "check", "--config"]).arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd)
}

fn check(path: &Path) -> Outcome {
    check_with_env(path, &[])
}

/// Writes `text` to `name` in `dir` with the given mode (Unix), so permission warnings do not
/// depend on the umask.
fn write_config(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    path
}

/// How `Problem` is printed: `  - <key>: <message>`. Matching the whole prefix keeps
/// `upstream.smaregi` from matching `upstream.smaregi.id_base`.
fn names_key(out: &Outcome, key: &str) -> bool {
    out.all().contains(&format!("- {key}: "))
}

fn assert_fails_naming(out: &Outcome, keys: &[&str], what: &str) {
    assert!(!out.success, "{what}: expected failure, got\n{out}");
    assert!(
        !out.stdout.contains("OK "),
        "{what}: printed OK although invalid\n{out}"
    );
    for key in keys {
        assert!(names_key(out, key), "{what}: {key} not named\n{out}");
    }
}

#[test]
fn example_config_passes_check() {
    let out = check(&example_path());
    // The file holds placeholder secrets and may be 0644 in git: a WARN line is fine.
    assert!(out.success, "{out}");
    assert!(out.stdout.contains("OK "), "{out}");
    assert!(out.stdout.contains("store store-001"), "{out}");
    assert!(out.stdout.contains("upstream Smaregi"), "{out}");
    // Its tokens are placeholders: accepted as syntax, switched off, and said so.
    assert!(out.stdout.contains("0 token(s)"), "{out}");
    assert!(
        out.stdout
            .contains("api.tokens[0].token: is the example placeholder"),
        "{out}"
    );
    for line in out.stdout.lines().filter(|l| !l.starts_with("OK ")) {
        assert!(line.starts_with("WARN "), "unexpected line {line:?}\n{out}");
    }
}

/// Every key path of a TOML value; array-of-table entries are written `name[]`.
fn key_paths(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                key_paths(&p, v, out);
            }
        }
        toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
            for v in a {
                key_paths(&format!("{prefix}[]"), v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// Every leaf (non-table) value of a TOML value with its key path.
fn leaf_values<'a>(prefix: &str, v: &'a toml::Value, out: &mut Vec<(String, &'a toml::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_values(&p, v, out);
            }
        }
        _ => out.push((prefix.to_string(), v)),
    }
}

/// The example with its commented-out key lines (`# key = value`) switched on.
fn example_with_commented_keys() -> toml::Value {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let on: String = text
        .lines()
        .map(|line| {
            let rest = line.trim_start().strip_prefix("# ").unwrap_or("");
            // A commented-out array-of-tables entry (`# [[earn.campaigns]]`) or optional table
            // (`# [api.tls]`, `# [easypoints]`) is switched on too.
            if rest.starts_with('[') && rest.ends_with(']') && !rest.contains(' ') {
                return rest.to_string();
            }
            let ident = rest.split(" = ").next().filter(|k| {
                rest.contains(" = ")
                    && !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
            match ident {
                Some(_) => rest.to_string(),
                None => line.to_string(),
            }
        })
        .map(|l| l + "\n")
        .collect();
    toml::from_str(&on).unwrap_or_else(|e| panic!("example with keys switched on: {e}\n{on}"))
}

/// A config with every optional part present, so that serializing it yields every key.
fn every_key_config() -> Config {
    let mut c = Config::default();
    c.agent.data_dir = Some("/var/lib/pointsd".into());
    c.agent.smaregi_store_id = Some("1".into());
    c.upstream.proxy = Some("http://proxy.local:3128".into());
    c.upstream.smaregi = Some(SmaregiConfig {
        client_secret_file: Some("/etc/pointsd/client_secret".into()),
        ..SmaregiConfig::default()
    });
    c.api.tokens = vec![TokenConfig {
        name: "r".into(),
        token: Some(Secret::new("t")),
        token_sha256: Some("h".into()),
        ..TokenConfig::default()
    }];
    c.tiers = vec![TierConfig::default()];
    c.easypoints = Some(pointsd::config::EasyPointsConfig {
        secret_key_file: Some("/etc/pointsd/easypoints.secret".into()),
        ..Default::default()
    });
    c.earn.campaigns = vec![CampaignConfig {
        from: Some("2026-12-01".into()),
        to: Some("2026-12-31".into()),
        weekdays: vec![Weekday::Sat],
        multiplier: Some(2.0),
        bonus_points: Some(50),
        ..CampaignConfig::default()
    }];
    // Optional keys (no default value) are documented commented out.
    c.api.tls = Some(pointsd::config::TlsConfig {
        cert_file: Some("/etc/pointsd/tls/cert.pem".into()),
        key_file: Some("/etc/pointsd/tls/key.pem".into()),
        generate: false,
        names: vec!["store-pc.local".into()],
    });
    c.backup.dir = Some("/mnt/backup/pointsd".into());
    c.sync.max_reads_per_second = Some(50);
    c.sync.max_writes_per_second = Some(20);
    c.telemetry.remote_write_url = Some("https://metrics.hq.example/api/v1/write".into());
    c.telemetry.chain = Some("kanto-east".into());
    c.telemetry.bearer_token_file = Some("/etc/pointsd/telemetry_token".into());
    c.telemetry.basic_username = Some("store-001".into());
    c.telemetry.basic_password_file = Some("/etc/pointsd/telemetry_password".into());
    c.telemetry.labels.insert("region".into(), "kanto".into());
    c
}

#[test]
fn example_config_documents_every_key_with_its_default() {
    let documented = example_with_commented_keys();
    let full = toml::Value::try_from(every_key_config()).unwrap();

    let mut want = BTreeSet::new();
    key_paths("", &full, &mut want);
    let mut have = BTreeSet::new();
    key_paths("", &documented, &mut have);
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty(),
        "keys of src/config.rs not in the example: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "keys in the example that src/config.rs does not have: {extra:?}"
    );

    // Keys with a default show that default, apart from the deliberate examples.
    let deliberate = [
        "agent",
        "api.tokens",
        "earn.campaigns",
        "tiers",
        "upstream.kind",
        "upstream.proxy",
        "upstream.smaregi",
    ];
    let defaults = toml::Value::try_from(Config::default()).unwrap();
    let mut leaves = Vec::new();
    leaf_values("", &defaults, &mut leaves);
    let mut checked = 0;
    for (path, default) in leaves {
        if deliberate
            .iter()
            .any(|d| path == *d || path.starts_with(&format!("{d}.")))
        {
            continue;
        }
        let shown = path
            .split('.')
            .try_fold(&documented, |v, k| v.get(k))
            .unwrap_or_else(|| panic!("{path} missing from the example"));
        assert_eq!(
            shown, default,
            "{path}: the example does not show the default"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} defaults compared");

    // The optional [easypoints] section shows its defaults too.
    let ep = &documented["easypoints"];
    let ep_default = toml::Value::try_from(pointsd::config::EasyPointsConfig::default()).unwrap();
    for key in [
        "api_base",
        "code_offset",
        "code_check_digit",
        "max_requests_per_second",
        "settle_s",
        "report_window_days",
        "report_interval_s",
    ] {
        assert_eq!(
            ep[key], ep_default[key],
            "easypoints.{key}: the example does not show the default"
        );
    }

    // The example's Smaregi URLs are the sandbox; the defaults are production.
    let smaregi = &documented["upstream"]["smaregi"];
    assert_eq!(smaregi["id_base"].as_str(), Some("https://id.smaregi.dev"));
    assert_eq!(
        smaregi["api_base"].as_str(),
        Some("https://api.smaregi.dev")
    );
    let text = std::fs::read_to_string(example_path()).unwrap();
    for needle in [
        "https://id.smaregi.jp",
        "https://api.smaregi.jp",
        "POINTSD_UPSTREAM__SMAREGI__CLIENT_SECRET",
        "chmod 600",
        "640",
        "token_sha256",
        "role = \"manager\"",
    ] {
        assert!(
            text.contains(needle),
            "the example does not mention {needle}"
        );
    }
}

#[test]
fn broken_configs_fail_and_name_the_key() {
    let smaregi_ok = "[upstream]\nkind = \"smaregi\"\n[upstream.smaregi]\ncontract_id = \"c\"\n\
                      client_id = \"i\"\nclient_secret = \"s3cr3t-value\"\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing store_id",
            NO_STORE_ID.to_string(),
            "agent.store_id",
        ),
        (
            "bad api.listen",
            VALID.replace("127.0.0.1:8765", "nowhere"),
            "api.listen",
        ),
        (
            "unknown key",
            format!("{VALID}\n[offline]\nallow_redeam = true\n"),
            "offline.allow_redeam",
        ),
        (
            "wrong type",
            format!("{VALID}\n[sync]\nconcurrency = \"four\"\n"),
            "sync.concurrency",
        ),
        (
            "smaregi without [upstream.smaregi]",
            format!("{VALID}\n[upstream]\nkind = \"smaregi\"\n"),
            "upstream.smaregi",
        ),
        (
            "short token",
            VALID.replace(TOKEN, "tiny-tok-9"),
            "api.tokens[0].token",
        ),
        (
            "bad id_base",
            format!("{VALID}\n{smaregi_ok}id_base = \"not a url\"\n"),
            "upstream.smaregi.id_base",
        ),
        (
            "bad telemetry url",
            format!("{VALID}\n[telemetry]\nremote_write_url = \"hq.example/write\"\n"),
            "telemetry.remote_write_url",
        ),
        (
            "telemetry with both auth kinds",
            format!(
                "{VALID}\n[telemetry]\nremote_write_url = \"https://hq.example/api/v1/write\"\n\
                 bearer_token = \"s3cr3t-value\"\nbasic_username = \"u\"\nbasic_password = \"s3cr3t-value\"\n"
            ),
            "telemetry.bearer_token",
        ),
        (
            "telemetry token file missing",
            format!(
                "{VALID}\n[telemetry]\nremote_write_url = \"https://hq.example/api/v1/write\"\n\
                 bearer_token_file = \"/nonexistent/pointsd/telemetry_token\"\n"
            ),
            "telemetry.bearer_token_file",
        ),
        (
            "telemetry password wrong type",
            format!("{VALID}\n[telemetry]\nbasic_password = 12345678\n"),
            "telemetry.basic_password",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, text, key)) in cases.iter().enumerate() {
        let path = write_config(dir.path(), &format!("case{i}.toml"), text, 0o600);
        let out = check(&path);
        assert_fails_naming(&out, &[key], what);
        assert!(
            out.stderr.contains(&path.display().to_string()),
            "{what}: the file is not named\n{out}"
        );
        // Secrets stay secret (§2.9), even in error messages.
        for secret in [TOKEN, "tiny-tok-9", "s3cr3t-value", "12345678"] {
            assert!(
                !out.all().contains(secret),
                "{what}: {secret} printed\n{out}"
            );
        }
    }
}

#[test]
fn invalid_toml_syntax_fails_with_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{VALID}\n[sync\nconcurrency = 4\n");
    let line = text.lines().position(|l| l == "[sync").unwrap() + 1;
    let path = write_config(dir.path(), "syntax.toml", &text, 0o600);
    let out = check(&path);
    assert_fails_naming(&out, &["(file)"], "invalid TOML");
    assert!(out.stderr.contains("not valid TOML"), "{out}");
    assert!(out.stderr.contains(&format!("line {line}")), "{out}");
}

#[test]
fn several_problems_are_all_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[api]
listen = "nowhere"

[[api.tokens]]
name = "register-1"
token = "tiny-tok-9"

[[api.tokens]]
name = "register-1"
token_sha256 = "abcd"

[sync]
concurrency = 0
backoff_multiplier = 0.5

[earn]
yen_per_point = 0

[log]
retention_files = 0
"#;
    let path = write_config(dir.path(), "many.toml", text, 0o600);
    let out = check(&path);
    assert_fails_naming(
        &out,
        &[
            "agent.store_id",
            "api.listen",
            "api.tokens[0].token",
            "api.tokens[1].name",
            "api.tokens[1].token_sha256",
            "sync.concurrency",
            "sync.backoff_multiplier",
            "earn.yen_per_point",
            "log.retention_files",
        ],
        "many problems",
    );
    assert!(out.stderr.contains("9 problem(s)"), "{out}");
}

#[test]
fn several_unknown_keys_are_all_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{VALID}\n[offline]\nallow_redeam = true\n[sync]\nconcurency = 2\n");
    let path = write_config(dir.path(), "unknown.toml", &text, 0o600);
    let out = check(&path);
    assert_fails_naming(
        &out,
        &["offline.allow_redeam", "sync.concurency"],
        "unknown keys",
    );
}

#[test]
fn unknown_keys_and_rule_problems_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[offline]\nallow_redeam = true\n",
        NO_STORE_ID.replace("127.0.0.1:8765", "nowhere")
    );
    let path = write_config(dir.path(), "mixed.toml", &text, 0o600);
    let out = check(&path);
    assert_fails_naming(
        &out,
        &["offline.allow_redeam", "agent.store_id", "api.listen"],
        "unknown key with rule problems",
    );
}

#[test]
fn env_override_supplies_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "no-store.toml", NO_STORE_ID, 0o600);

    let without = check(&path);
    assert_fails_naming(&without, &["agent.store_id"], "no store_id, no env");

    let with = check_with_env(&path, &[("POINTSD_AGENT__STORE_ID", "from-env")]);
    assert!(with.success, "{with}");
    assert!(with.stdout.contains("store from-env"), "{with}");
}

#[test]
fn env_override_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "c.toml", VALID, 0o600);
    let out = check_with_env(&path, &[("POINTSD_API__LISTEN", "127.0.0.1:9999")]);
    assert!(out.success, "{out}");
    assert!(out.stdout.contains("listening on 127.0.0.1:9999"), "{out}");

    let out = check_with_env(&path, &[("POINTSD_SYNC__CONCURRENCY", "0")]);
    assert_fails_naming(&out, &["sync.concurrency"], "env concurrency 0");
}

#[test]
fn env_override_of_a_digits_only_string_key_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "no-store.toml", NO_STORE_ID, 0o600);
    let out = check_with_env(&path, &[("POINTSD_AGENT__STORE_ID", "12345")]);
    assert!(out.success, "{out}");
    assert!(out.stdout.contains("store 12345"), "{out}");
}

#[test]
fn env_client_secret_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{VALID}\n[upstream]\nkind = \"smaregi\"\n[upstream.smaregi]\ncontract_id = \"c\"\nclient_id = \"i\"\n"
    );
    let path = write_config(dir.path(), "c.toml", &text, 0o600);
    let secret = "918273645546372819";
    let out = check_with_env(
        &path,
        &[("POINTSD_UPSTREAM__SMAREGI__CLIENT_SECRET", secret)],
    );
    assert!(!out.all().contains(secret), "secret printed\n{out}");
    assert!(out.success, "{out}");
}

#[test]
fn pointsd_config_env_selects_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "c.toml", VALID, 0o600);
    let mut cmd = pointsd();
    cmd.args(["config", "check"]).env("POINTSD_CONFIG", &path);
    let out = run(cmd);
    assert!(out.success, "{out}");
    assert!(
        out.stdout.contains(&format!("OK {}", path.display())),
        "{out}"
    );
}

#[cfg(unix)]
#[test]
fn world_readable_config_with_a_secret_gets_a_chmod_warning() {
    let dir = tempfile::tempdir().unwrap();
    let open = write_config(dir.path(), "open.toml", VALID, 0o644);
    let out = check(&open);
    assert!(out.success, "{out}");
    let warn = out
        .stdout
        .lines()
        .find(|l| l.starts_with("WARN"))
        .unwrap_or_else(|| panic!("no WARN line\n{out}"));
    assert!(warn.contains("chmod 600"), "{out}");
    assert!(warn.contains(&open.display().to_string()), "{out}");
    assert!(warn.contains("644"), "{out}");

    let closed = write_config(dir.path(), "closed.toml", VALID, 0o600);
    let out = check(&closed);
    assert!(out.success, "{out}");
    assert!(!out.all().contains("WARN"), "{out}");
    assert!(!out.all().contains("chmod"), "{out}");

    // 640 is right only with the service's own group (root:pointsd, as the packages install
    // it); a temp file's group is the test user's, so it is too wide.
    let group = write_config(dir.path(), "group.toml", VALID, 0o640);
    let out = check(&group);
    assert!(out.success, "{out}");
    assert!(out.stdout.contains("readable by its group"), "{out}");
}

#[cfg(unix)]
#[test]
fn world_readable_config_without_secrets_gets_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let text = format!(
        "[agent]\nstore_id = \"store-001\"\n[[api.tokens]]\nname = \"r\"\ntoken_sha256 = \"{hash}\"\n"
    );
    let path = write_config(dir.path(), "hashed.toml", &text, 0o644);
    let out = check(&path);
    assert!(out.success, "{out}");
    assert!(!out.all().contains("WARN"), "{out}");
}

#[test]
fn missing_config_file_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.toml");
    let out = check(&path);
    assert!(!out.success, "{out}");
    assert!(out.stderr.contains(&path.display().to_string()), "{out}");
    assert!(out.stderr.contains("--config"), "{out}");
}

#[test]
fn telemetry_with_a_token_file_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("telemetry_token");
    std::fs::write(&token, "hq-token-from-a-file\n").unwrap();
    let text = format!(
        "{VALID}\n[telemetry]\nremote_write_url = \"https://hq.example/api/v1/write\"\n\
         bearer_token_file = \"{}\"\nchain = \"kanto\"\nlabels = {{ region = \"east\" }}\n",
        token.display()
    );
    let path = write_config(dir.path(), "ok.toml", &text, 0o600);
    let out = check(&path);
    assert!(out.success, "{out}");
    assert!(!out.all().contains("hq-token-from-a-file"), "{out}");
}
