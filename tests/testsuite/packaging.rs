//! Packaging: the systemd unit, the .deb, installers/linux/install.sh, the macOS LaunchDaemon
//! and .pkg scripts, and the Windows MSI source and install script.
//!
//! Each test that needs a tool (systemd-analyze, cargo-deb, dpkg-deb, python3, shellcheck, the
//! tree-sitter PowerShell grammar) prints a SKIP notice when the tool is missing, except under
//! CI (the `CI` variable set), where a missing tool fails the test: `.ci/run` installs them.
//! What cannot run on Linux (pkgbuild, launchctl, wix, sc.exe) is checked statically here and
//! by running the scripts against scratch roots.
#![cfg(unix)]

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The MSI's UpgradeCode: changing it breaks upgrades of every installed copy.
const UPGRADE_CODE: &str = "93794622-9B06-41C6-B4F4-0431C5C30690";
const EXEC_START: &str = "ExecStart=/usr/bin/pointsd run --config /etc/pointsd/pointsd.toml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pointsd"))
}

/// A stand-in for the binary in installer tests (they copy it, never run it; the real debug
/// binary is 150 MB).
fn fake_binary(dir: &Path) -> PathBuf {
    let p = dir.join("pointsd");
    fs::write(&p, "#!/bin/sh\necho 'pointsd (test stand-in)'\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn ci() -> bool {
    common::under_ci()
}

/// True when `ok`; otherwise prints a SKIP notice and returns false, or panics under CI.
fn tool(ok: bool, what: &str, test: &str) -> bool {
    if ok {
        return true;
    }
    if ci() {
        panic!("{test}: {what} is not available; CI must run this test (.ci/run installs it)");
    }
    eprintln!("SKIP {test}: {what} is not available (.ci/run installs it)");
    false
}

/// Whether `cmd args` runs and exits 0.
fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`, panicking with its output unless it exits 0.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)));
    assert!(
        out.status.success(),
        "{} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` and expects it to fail; returns its stderr.
fn run_fails(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)));
    assert!(
        !out.status.success(),
        "{} should have failed",
        describe(cmd)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn python_has(module: &str) -> bool {
    works("python3", &["-c", &format!("import {module}")])
}

/// The shipped unit with ExecStart pointing at `exe`, written to `dir/pointsd.service`.
fn unit_with_exec(dir: &Path, exe: &Path) -> PathBuf {
    let exe = exe.to_str().expect("utf-8 path");
    assert!(
        !exe.contains(char::is_whitespace),
        "test binary path has spaces"
    );
    let unit = read(&repo().join("installers/linux/pointsd.service")).replace(
        EXEC_START,
        &format!("ExecStart={exe} run --config /etc/pointsd/pointsd.toml"),
    );
    let path = dir.join("pointsd.service");
    fs::write(&path, unit).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// systemd unit

#[test]
fn systemd_unit_has_the_required_settings() {
    let unit = read(&repo().join("installers/linux/pointsd.service"));
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    let exec: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec,
        [&EXEC_START],
        "one ExecStart line of this shape (install.sh and `service install` rewrite it)"
    );
    for want in [
        "After=network-online.target",
        "Wants=network-online.target",
        "Restart=on-failure",
        "User=pointsd",
        "StateDirectory=pointsd",
        "ConfigurationDirectory=pointsd",
        "LogsDirectory=pointsd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(&want), "unit lacks {want}");
    }
    assert!(
        lines.contains(&"Type=exec") || lines.contains(&"Type=notify"),
        "Type=exec or notify"
    );
}

#[cfg_attr(
    not(have_systemd_analyze),
    ignore = "requires systemd-analyze (apt-get install systemd; .ci/run does)"
)]
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let t = "systemd_unit_passes_systemd_analyze_verify";
    if !tool(
        works("systemd-analyze", &["--version"]),
        "systemd-analyze (Debian package systemd)",
        t,
    ) {
        return;
    }
    // verify checks that ExecStart's binary exists: /usr/bin/pointsd does not here, so point the
    // copy at the binary cargo just built; everything else is the shipped unit.
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_exec(dir.path(), &binary());
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    // verify exits 0 on unknown keys and unparsable values, and only warns: any warning about
    // our unit is a failure.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("pointsd")).collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify warns:\n{}",
        ours.join("\n")
    );
    eprintln!("systemd-analyze verify: OK");
}

#[cfg_attr(
    not(have_systemd_analyze),
    ignore = "requires systemd-analyze (apt-get install systemd; .ci/run does)"
)]
#[test]
fn systemd_unit_security_exposure_is_ok() {
    let t = "systemd_unit_security_exposure_is_ok";
    if !tool(
        works("systemd-analyze", &["--version"]),
        "systemd-analyze (Debian package systemd)",
        t,
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_exec(dir.path(), &binary());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze runs");
    let stdout = text(&out);
    let Some(line) = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    else {
        // systemd < 250 has no offline mode: nothing to score without a running systemd (a
        // failure under CI, whose Debian has 252).
        common::skip_or_fail(
            t,
            &format!(
                "this systemd-analyze cannot score a unit offline: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return;
    };
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line:?}"));
    eprintln!("systemd-analyze security --offline=yes: {}", line.trim());
    assert!(score < 4.0, "exposure {score} is not OK (< 4.0):\n{stdout}");
}

// ---------------------------------------------------------------------------------------------
// Debian package

#[cfg_attr(
    not(have_cargo_deb),
    ignore = "requires cargo-deb and dpkg-deb (cargo install cargo-deb; apt-get install dpkg-dev; .ci/run does)"
)]
#[test]
fn deb_package_has_binary_unit_conffile_and_maintainer_scripts() {
    let t = "deb_package_has_binary_unit_conffile_and_maintainer_scripts";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !tool(works(&cargo, &["deb", "--version"]), "cargo-deb", t)
        || !tool(works("dpkg-deb", &["--version"]), "dpkg-deb", t)
    {
        return;
    }
    // cargo deb runs `cargo build --release` itself; it reuses target/release, so only what
    // changed is rebuilt. --fast: gzip-level compression, the contents are what matter here.
    let out_dir = tempfile::tempdir().unwrap();
    let built = run(Command::new(&cargo)
        .args(["deb", "--locked", "--fast", "--output"])
        .arg(out_dir.path())
        .current_dir(repo()));
    let deb = text(&built)
        .lines()
        .rev()
        .find(|l| l.trim().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .expect("cargo deb prints the .deb path");
    assert!(deb.is_file(), "{} missing", deb.display());

    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    let entry = |path: &str| -> String {
        listing
            .lines()
            .find(|l| l.split_whitespace().last() == Some(path))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"))
            .to_string()
    };
    assert!(entry("./usr/bin/pointsd").starts_with("-rwxr-xr-x"));
    assert!(entry("./etc/pointsd/pointsd.toml").starts_with("-rw-r-----"));
    entry("./usr/share/doc/pointsd/README.md");
    for fleet in [
        "prometheus/pointsd-alerts.yml",
        "prometheus/pointsd-alerts.test.yml",
        "grafana/pointsd-fleet.json",
    ] {
        assert!(entry(&format!("./usr/share/pointsd/{fleet}")).starts_with("-rw-r--r--"));
    }
    let unit_path = [
        "./lib/systemd/system/pointsd.service",
        "./usr/lib/systemd/system/pointsd.service",
    ]
    .into_iter()
    .find(|p| {
        listing
            .lines()
            .any(|l| l.split_whitespace().last() == Some(*p))
    })
    .unwrap_or_else(|| panic!("no pointsd.service in the package:\n{listing}"));

    let info = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)));
    for member in ["conffiles", "postinst", "prerm", "postrm"] {
        assert!(
            info.contains(member),
            "control archive lacks {member}:\n{info}"
        );
    }
    assert!(info.contains("Package: pointsd"), "{info}");
    assert!(
        info.contains("passwd"),
        "Depends names passwd (useradd):\n{info}"
    );

    // Control files: conffile list, and the maintainer scripts cargo-deb assembled.
    let ctrl = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(ctrl.path()));
    assert_eq!(
        read(&ctrl.path().join("conffiles")).trim(),
        "/etc/pointsd/pointsd.toml"
    );
    let postinst = read(&ctrl.path().join("postinst"));
    let postrm = read(&ctrl.path().join("postrm"));
    for (name, script) in [("postinst", &postinst), ("postrm", &postrm)] {
        assert!(
            !script.contains("#DEBHELPER#"),
            "{name}: token left unexpanded"
        );
        run(Command::new("sh").arg("-n").arg(ctrl.path().join(name)));
    }
    run(Command::new("sh").arg("-n").arg(ctrl.path().join("prerm")));
    assert!(
        postinst.contains("useradd --system"),
        "postinst creates the user"
    );
    assert!(
        postinst.contains("deb-systemd-helper enable pointsd.service"),
        "postinst enables the unit"
    );
    assert!(
        postinst.contains("[ -d /run/systemd/system ]"),
        "postinst starts the unit only when systemd runs"
    );
    // The user is made before the generated fragment starts the service.
    assert!(postinst.find("useradd").unwrap() < postinst.find("deb-systemd-invoke").unwrap());
    assert!(
        postrm.contains("\"$1\" = \"purge\""),
        "postrm deletes only on purge"
    );

    // The files themselves.
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    assert_eq!(
        read(&root.path().join(unit_path)),
        read(&repo().join("installers/linux/pointsd.service")),
        "the packaged unit is the shipped one"
    );
    assert_eq!(
        read(&root.path().join("etc/pointsd/pointsd.toml")),
        read(&repo().join("config/pointsd.example.toml"))
    );
    eprintln!("{}: OK", deb.display());
}

/// Writes stub commands that log their arguments to `log` (and fake the account tools).
fn stub_bin(dir: &Path, log: &Path) -> PathBuf {
    let bin = dir.join("stub-bin");
    fs::create_dir_all(&bin).unwrap();
    let logline = format!("echo \"$(basename \"$0\") $*\" >> '{}'\n", log.display());
    let stubs: [(&str, &str); 7] = [
        // --root ROOT ... NAME: record the account in ROOT/etc/{group,passwd}.
        (
            "groupadd",
            "root=$2; for n; do name=$n; done; mkdir -p \"$root/etc\"; echo \"$name:x:990:\" >> \"$root/etc/group\"\n",
        ),
        (
            "useradd",
            "root=$2; for n; do name=$n; done; mkdir -p \"$root/etc\"; echo \"$name:x:990:990::/var/lib/pointsd:/usr/sbin/nologin\" >> \"$root/etc/passwd\"\n",
        ),
        (
            "userdel",
            "root=$2; sed -i '/^pointsd:/d' \"$root/etc/passwd\"\n",
        ),
        (
            "groupdel",
            "root=$2; sed -i '/^pointsd:/d' \"$root/etc/group\"\n",
        ),
        ("chown", ""),
        ("dpkg-statoverride", "exit 1\n"),
        ("systemctl", ""),
    ];
    for (name, body) in stubs {
        let p = bin.join(name);
        fs::write(&p, format!("#!/bin/sh\n{logline}{body}")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn deb_maintainer_scripts_create_the_user_and_purge_only_on_purge() {
    // The scripts as they are in the repo (the DEBHELPER token is a comment there), run with
    // DPKG_ROOT pointing at a scratch root and stubbed account tools.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let log = dir.path().join("calls.log");
    let bin = stub_bin(dir.path(), &log);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let scripts = repo().join("installers/linux/debian");
    fs::create_dir_all(root.join("etc/pointsd")).unwrap();
    fs::write(root.join("etc/pointsd/pointsd.toml"), "# conffile\n").unwrap();
    fs::set_permissions(
        root.join("etc/pointsd/pointsd.toml"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let script = |name: &str, args: &[&str]| -> Output {
        run(Command::new("sh")
            .arg(scripts.join(name))
            .args(args)
            .env("DPKG_ROOT", &root)
            .env("PATH", &path))
    };

    script("postinst", &["configure", ""]);
    let calls = read(&log);
    let root_s = root.display().to_string();
    assert!(
        calls.contains(&format!("groupadd --root {root_s} --system pointsd")),
        "{calls}"
    );
    assert!(
        calls.contains(&format!(
            "useradd --root {root_s} --system --gid pointsd --home-dir /var/lib/pointsd --no-create-home --shell /usr/sbin/nologin"
        )),
        "{calls}"
    );
    for (owner, p) in [
        ("root:pointsd", "etc/pointsd"),
        ("root:pointsd", "etc/pointsd/pointsd.toml"),
        ("pointsd:pointsd", "var/lib/pointsd"),
        ("pointsd:pointsd", "var/log/pointsd"),
    ] {
        assert!(
            calls.contains(&format!("chown {owner} {root_s}/{p}\n")),
            "chown {owner} {p}:\n{calls}"
        );
    }
    assert_eq!(mode(&root.join("etc/pointsd")), 0o750);
    assert_eq!(mode(&root.join("etc/pointsd/pointsd.toml")), 0o640);
    assert_eq!(mode(&root.join("var/lib/pointsd")), 0o750);
    assert_eq!(mode(&root.join("var/log/pointsd")), 0o750);

    // An upgrade: the user exists, nothing is created twice.
    fs::write(&log, "").unwrap();
    script("postinst", &["configure", "0.1.0-1"]);
    let calls = read(&log);
    assert!(
        !calls.contains("useradd") && !calls.contains("groupadd"),
        "{calls}"
    );

    // remove keeps everything; purge deletes data, logs, config and the user.
    fs::write(root.join("var/lib/pointsd/pointsd.db"), "data").unwrap();
    script("postrm", &["remove"]);
    script("postrm", &["upgrade", "0.1.0-1"]);
    assert!(root.join("var/lib/pointsd/pointsd.db").exists());
    assert!(root.join("etc/pointsd/pointsd.toml").exists());
    assert!(!read(&log).contains("userdel"));
    script("postrm", &["purge"]);
    for p in ["var/lib/pointsd", "var/log/pointsd", "etc/pointsd"] {
        assert!(!root.join(p).exists(), "{p} survived purge");
    }
    let calls = read(&log);
    assert!(
        calls.contains(&format!("userdel --root {root_s} pointsd")),
        "{calls}"
    );
    assert!(!read(&root.join("etc/passwd")).contains("pointsd"));
}

// ---------------------------------------------------------------------------------------------
// installers/linux/install.sh

fn linux_install(destdir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg(repo().join("installers/linux/install.sh"))
        .args(args)
        .env("DESTDIR", destdir);
    c
}

#[test]
fn install_sh_installs_into_destdir_upgrades_and_uninstalls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let bin = fake_binary(dir.path());
    let bin_s = bin.to_str().unwrap();
    let args = ["--prefix", "/opt/pointsd", "--binary", bin_s];

    let out = run(&mut linux_install(&root, &args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("skipping user creation"), "{stderr}");

    // Files and modes.
    let installed = root.join("opt/pointsd/bin/pointsd");
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(fs::read(&installed).unwrap(), fs::read(&bin).unwrap());
    let config = root.join("etc/pointsd/pointsd.toml");
    assert!(
        [0o640, 0o600].contains(&mode(&config)),
        "config mode {:o}",
        mode(&config)
    );
    assert_eq!(
        read(&config),
        read(&repo().join("config/pointsd.example.toml"))
    );
    assert_eq!(mode(&root.join("etc/pointsd")), 0o750);
    assert_eq!(mode(&root.join("var/lib/pointsd")), 0o750);
    assert_eq!(mode(&root.join("var/log/pointsd")), 0o750);
    assert!(
        root.join("opt/pointsd/share/doc/pointsd/README.md")
            .is_file()
    );
    assert!(
        root.join("opt/pointsd/share/doc/pointsd/pointsd.example.toml")
            .is_file()
    );
    for fleet in [
        "prometheus/pointsd-alerts.yml",
        "prometheus/pointsd-alerts.test.yml",
        "grafana/pointsd-fleet.json",
    ] {
        let p = root.join("opt/pointsd/share/pointsd").join(fleet);
        assert_eq!(mode(&p), 0o644, "{fleet}");
        assert_eq!(read(&p), read(&repo().join("installers").join(fleet)));
    }
    let unit_path = root.join("etc/systemd/system/pointsd.service");
    assert_eq!(mode(&unit_path), 0o644);
    let unit = read(&unit_path);
    let shipped = read(&repo().join("installers/linux/pointsd.service"));
    assert_eq!(
        unit,
        shipped.replace(
            EXEC_START,
            "ExecStart=/opt/pointsd/bin/pointsd run --config /etc/pointsd/pointsd.toml"
        ),
        "only ExecStart differs"
    );

    // Second run: an edited config and the data stay; the binary is replaced.
    let edited = format!("{}\n# edited by the store's IT\n", read(&config));
    fs::write(&config, &edited).unwrap();
    fs::write(root.join("var/lib/pointsd/pointsd.db"), "data").unwrap();
    fs::write(&installed, "old binary").unwrap();
    let out = run(&mut linux_install(&root, &args));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeping the existing"));
    assert_eq!(read(&config), edited);
    assert_eq!(fs::read(&installed).unwrap(), fs::read(&bin).unwrap());
    assert_eq!(read(&unit_path), unit);

    // Uninstall finds the prefix from the unit; config and data stay.
    run(&mut linux_install(&root, &["--uninstall"]));
    assert!(!installed.exists());
    assert!(!unit_path.exists());
    assert!(!root.join("opt/pointsd/share/doc/pointsd").exists());
    assert!(!root.join("opt/pointsd/share/pointsd").exists());
    assert_eq!(read(&config), edited);
    assert!(root.join("var/lib/pointsd/pointsd.db").exists());

    // Purge removes config, data and logs.
    run(&mut linux_install(&root, &["--uninstall", "--purge"]));
    for p in ["etc/pointsd", "var/lib/pointsd", "var/log/pointsd"] {
        assert!(!root.join(p).exists(), "{p} survived --purge");
    }
}

#[test]
fn install_sh_defaults_to_usr_local_and_rejects_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let bin = fake_binary(dir.path());
    run(&mut linux_install(
        &root,
        &["--binary", bin.to_str().unwrap()],
    ));
    assert_eq!(mode(&root.join("usr/local/bin/pointsd")), 0o755);
    assert!(
        read(&root.join("etc/systemd/system/pointsd.service")).contains(
            "\nExecStart=/usr/local/bin/pointsd run --config /etc/pointsd/pointsd.toml\n"
        )
    );
    let e = run_fails(&mut linux_install(&root, &["--purge"]));
    assert!(e.contains("--purge only goes with --uninstall"), "{e}");
    let e = run_fails(&mut linux_install(&root, &["--prefix", "relative/dir"]));
    assert!(e.contains("absolute"), "{e}");
    let e = run_fails(&mut linux_install(
        &root,
        &["--binary", "/nonexistent/pointsd"],
    ));
    assert!(e.contains("no such file"), "{e}");
    let e = run_fails(&mut linux_install(&root, &["--bogus"]));
    assert!(e.contains("unknown option"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// shell scripts

#[cfg_attr(
    not(have_shellcheck),
    ignore = "requires shellcheck (apt-get install shellcheck; .ci/run does)"
)]
#[test]
fn shell_scripts_parse_and_pass_shellcheck() {
    let r = repo();
    let scripts = [
        r.join("installers/linux/install.sh"),
        r.join("installers/linux/debian/postinst"),
        r.join("installers/linux/debian/postrm"),
        r.join("installers/macos/build-pkg.sh"),
        r.join("installers/macos/install.sh"),
        r.join("installers/macos/scripts/preinstall"),
        r.join("installers/macos/scripts/postinstall"),
    ];
    for s in &scripts {
        assert!(
            mode(s) & 0o111 == 0o111,
            "{} is not executable",
            s.display()
        );
        assert!(
            read(s).starts_with("#!/bin/sh\n"),
            "{}: POSIX sh",
            s.display()
        );
        run(Command::new("sh").arg("-n").arg(s));
    }
    if !tool(
        works("shellcheck", &["--version"]),
        "shellcheck",
        "shell_scripts_parse_and_pass_shellcheck",
    ) {
        return;
    }
    run(Command::new("shellcheck").args(["-s", "sh"]).args(&scripts));
}

// ---------------------------------------------------------------------------------------------
// macOS

#[test]
fn macos_plist_parses_and_has_the_keys() {
    let t = "macos_plist_parses_and_has_the_keys";
    if !tool(python_has("plistlib"), "python3 (plistlib)", t) {
        return;
    }
    let plist = repo().join("installers/macos/jp.pointsd.plist");
    let out = run(Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(&plist));
    let d: Value = serde_json::from_str(&text(&out)).unwrap();
    assert_eq!(d["Label"], "jp.pointsd");
    assert_eq!(
        d["ProgramArguments"],
        serde_json::json!([
            "/usr/local/bin/pointsd",
            "run",
            "--config",
            "/Library/Application Support/pointsd/pointsd.toml"
        ])
    );
    assert_eq!(d["RunAtLoad"], true);
    assert_eq!(d["KeepAlive"], serde_json::json!({"SuccessfulExit": false}));
    for key in ["StandardOutPath", "StandardErrorPath"] {
        let p = d[key].as_str().unwrap_or_else(|| panic!("{key} missing"));
        assert!(p.starts_with("/Library/Logs/pointsd/"), "{key} = {p}");
    }
    let user = d["UserName"].as_str().expect("UserName");
    assert!(["root", "_pointsd"].contains(&user), "UserName = {user}");
    assert!(
        read(&plist).contains(&format!("UserName {user}")),
        "the plist's comment explains the UserName choice"
    );
}

#[test]
fn macos_pkg_payload_and_postinstall() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let bin = fake_binary(dir.path());
    let out = run(Command::new("sh")
        .arg(repo().join("installers/macos/build-pkg.sh"))
        .arg("--stage-only")
        .arg(&stage)
        .arg("--binary")
        .arg(&bin));
    let said = text(&out);
    assert!(
        said.contains("pkgbuild --root") && said.contains("--identifier jp.pointsd"),
        "{said}"
    );
    let payload = stage.join("root");
    for (p, m) in [
        ("usr/local/bin/pointsd", 0o755),
        ("usr/local/share/pointsd/pointsd.example.toml", 0o644),
        ("usr/local/share/pointsd/README.md", 0o644),
        (
            "usr/local/share/pointsd/prometheus/pointsd-alerts.yml",
            0o644,
        ),
        (
            "usr/local/share/pointsd/prometheus/pointsd-alerts.test.yml",
            0o644,
        ),
        ("usr/local/share/pointsd/grafana/pointsd-fleet.json", 0o644),
        ("Library/LaunchDaemons/jp.pointsd.plist", 0o644),
    ] {
        assert_eq!(mode(&payload.join(p)), m, "{p}");
    }
    assert_eq!(
        read(&payload.join("Library/LaunchDaemons/jp.pointsd.plist")),
        read(&repo().join("installers/macos/jp.pointsd.plist"))
    );
    // The config and the data are not in the payload: an upgrade cannot overwrite them.
    assert!(!payload.join("Library/Application Support").exists());
    for s in ["preinstall", "postinstall"] {
        assert_eq!(mode(&stage.join("scripts").join(s)), 0o755, "{s}");
    }

    // What Installer does: lay the payload onto the target volume, then run postinstall with
    // the volume as $3 (a volume other than / is not loaded with launchctl).
    let vol = dir.path().join("vol");
    run(Command::new("cp").arg("-R").arg(&payload).arg(&vol));
    let postinstall = || {
        run(Command::new("sh")
            .arg(stage.join("scripts/postinstall"))
            .arg(dir.path().join("pointsd.pkg"))
            .arg("/")
            .arg(&vol)
            .arg("/"))
    };
    run(Command::new("sh")
        .arg(stage.join("scripts/preinstall"))
        .arg(dir.path().join("pointsd.pkg"))
        .arg("/")
        .arg(&vol)
        .arg("/"));
    let said = text(&postinstall());
    assert!(said.contains("not loading"), "{said}");
    let support = vol.join("Library/Application Support/pointsd");
    assert_eq!(mode(&support), 0o750);
    assert_eq!(mode(&support.join("data")), 0o750);
    assert_eq!(mode(&support.join("pointsd.toml")), 0o600);
    assert_eq!(mode(&vol.join("Library/Logs/pointsd")), 0o750);
    // Upgrade: the config is kept.
    fs::write(support.join("pointsd.toml"), "# edited\n").unwrap();
    postinstall();
    assert_eq!(read(&support.join("pointsd.toml")), "# edited\n");
}

#[test]
fn macos_install_sh_into_destdir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let bin = fake_binary(dir.path());
    let sh = |args: &[&str]| -> Output {
        run(Command::new("sh")
            .arg(repo().join("installers/macos/install.sh"))
            .args(args)
            .env("DESTDIR", &root))
    };
    sh(&["--binary", bin.to_str().unwrap()]);
    let support = root.join("Library/Application Support/pointsd");
    assert_eq!(mode(&root.join("usr/local/bin/pointsd")), 0o755);
    assert_eq!(
        mode(&root.join("Library/LaunchDaemons/jp.pointsd.plist")),
        0o644
    );
    assert_eq!(mode(&support), 0o750);
    assert_eq!(mode(&support.join("pointsd.toml")), 0o600);
    assert_eq!(mode(&root.join("Library/Logs/pointsd")), 0o750);

    fs::write(support.join("pointsd.toml"), "# edited\n").unwrap();
    fs::write(support.join("data/pointsd.db"), "data").unwrap();
    sh(&["--binary", bin.to_str().unwrap()]);
    assert_eq!(read(&support.join("pointsd.toml")), "# edited\n");

    sh(&["--uninstall"]);
    assert!(!root.join("usr/local/bin/pointsd").exists());
    assert!(!root.join("Library/LaunchDaemons/jp.pointsd.plist").exists());
    assert!(support.join("pointsd.toml").exists() && support.join("data/pointsd.db").exists());
    sh(&["--uninstall", "--purge"]);
    assert!(!support.exists());
    assert!(!root.join("Library/Logs/pointsd").exists());
}

// ---------------------------------------------------------------------------------------------
// Windows

/// The .wxs as JSON: every element with its namespace, local name and attributes, in order.
const WXS_TO_JSON: &str = r#"
import json, sys, xml.etree.ElementTree as ET
out = []
for e in ET.parse(sys.argv[1]).getroot().iter():
    ns, _, name = e.tag[1:].partition('}')
    out.append({'ns': ns, 'name': name, 'attrs': e.attrib})
print(json.dumps(out))
"#;

#[test]
fn windows_wxs_is_well_formed_and_installs_the_service() {
    let t = "windows_wxs_is_well_formed_and_installs_the_service";
    if !tool(python_has("xml.etree.ElementTree"), "python3", t) {
        return;
    }
    let out = run(Command::new("python3")
        .args(["-c", WXS_TO_JSON])
        .arg(repo().join("installers/windows/pointsd.wxs")));
    let elems: Vec<Value> = serde_json::from_str(&text(&out)).unwrap();
    const WIX: &str = "http://wixtoolset.org/schemas/v4/wxs";
    let all = |ns: &str, name: &str| -> Vec<&Value> {
        elems
            .iter()
            .filter(|e| e["ns"] == ns && e["name"] == name)
            .map(|e| &e["attrs"])
            .collect()
    };
    let one = |ns: &str, name: &str| -> &Value {
        let found = all(ns, name);
        assert_eq!(found.len(), 1, "exactly one {name}");
        found[0]
    };
    assert_eq!(elems[0]["name"], "Wix");
    assert_eq!(elems[0]["ns"], WIX, "WiX v4 namespace");

    let package = one(WIX, "Package");
    assert_eq!(
        package["UpgradeCode"], UPGRADE_CODE,
        "never change the UpgradeCode"
    );
    assert_eq!(package["Scope"], "perMachine");
    one(WIX, "MajorUpgrade");

    let svc = one(WIX, "ServiceInstall");
    assert_eq!(svc["Name"], "pointsd");
    assert_eq!(svc["Start"], "auto");
    assert_eq!(svc["Account"], "LocalSystem");
    assert_eq!(
        svc["Arguments"],
        r#"service-run --config "[CommonAppDataFolder]pointsd\pointsd.toml""#
    );
    let ctl = one(WIX, "ServiceControl");
    assert_eq!(ctl["Name"], "pointsd");
    assert_eq!(ctl["Start"], "install");
    assert_eq!(ctl["Stop"], "both");
    assert_eq!(ctl["Remove"], "uninstall");
    // Failure actions are core Windows Installer 5.0 tables (no WiX extension): restart after
    // 5 s three times, count reset after a day, also after an error exit.
    let fa = one(WIX, "ServiceConfigFailureActions");
    assert_eq!(fa["ResetPeriod"], "86400");
    assert_eq!(fa["OnInstall"], "yes");
    let failures = all(WIX, "Failure");
    assert_eq!(failures.len(), 3);
    for f in failures {
        assert_eq!(f["Action"], "restartService");
        assert_eq!(f["Delay"], "5000");
    }
    let sc = one(WIX, "ServiceConfig");
    assert_eq!(sc["FailureActionsWhen"], "failedToStopOrReturnedError");
    assert_eq!(sc["DelayedAutoStart"], "yes");
    assert!(
        elems.iter().all(|e| e["ns"] == WIX),
        "no extension namespaces: wixl and plain `wix build` read it"
    );

    // ProgramData\pointsd survives uninstall and upgrade, and only SYSTEM and Administrators
    // may read it (protected DACL, no Users/Everyone entry).
    let data_components: Vec<&Value> = all(WIX, "Component")
        .into_iter()
        .filter(|c| c["Id"] == "DataRootAcl" || c["Id"] == "ConfigToml")
        .collect();
    assert_eq!(data_components.len(), 2);
    for c in &data_components {
        assert_eq!(c["Permanent"], "yes", "{c}");
    }
    assert_eq!(data_components[1]["NeverOverwrite"], "yes");
    let sddls = all(WIX, "PermissionEx");
    assert!(!sddls.is_empty());
    for p in sddls {
        let sddl = p["Sddl"].as_str().unwrap();
        assert!(sddl.starts_with("D:P"), "protected DACL: {sddl}");
        assert!(sddl.contains(";;;SY)") && sddl.contains(";;;BA)"), "{sddl}");
        for broad in [";;;BU)", ";;;WD)", ";;;AU)", ";;;IU)"] {
            assert!(!sddl.contains(broad), "{sddl} grants {broad}");
        }
    }
}

const PS_SYNTAX_ERRORS: &str = r#"
import sys, tree_sitter, tree_sitter_powershell as tsp
parser = tree_sitter.Parser(tree_sitter.Language(tsp.language()))
bad = []
for path in sys.argv[1:]:
    stack = [parser.parse(open(path, 'rb').read()).root_node]
    while stack:
        n = stack.pop()
        if n.type == 'ERROR' or n.is_missing:
            bad.append('%s:%d:%d: %s' % (path, n.start_point[0] + 1, n.start_point[1] + 1, n.type))
        stack.extend(n.children)
print('\n'.join(bad))
sys.exit(1 if bad else 0)
"#;

#[cfg_attr(
    not(have_tree_sitter_powershell),
    ignore = "requires python3 with tree-sitter-powershell (pip install tree-sitter tree-sitter-powershell; .ci/run does)"
)]
#[test]
fn windows_install_ps1_has_the_service_commands_and_parses() {
    let ps1 = repo().join("installers/windows/install.ps1");
    let s = read(&ps1);
    for want in [
        "[string]$Binary",
        "[string]$ConfigSource",
        "[switch]$Uninstall",
        "[switch]$Purge",
        "\"create $ServiceName binPath= ",
        "start= delayed-auto",
        "service-run --config",
        "\"failure $ServiceName reset= 86400 actions= restart/5000/restart/5000/restart/5000\"",
        "\"start $ServiceName\"",
        "\"delete $ServiceName\"",
        "/inheritance:r",
        "*S-1-5-18",
        "*S-1-5-32-544",
        "Join-Path $env:ProgramFiles 'pointsd'",
        "Join-Path $env:ProgramData 'pointsd'",
    ] {
        assert!(s.contains(want), "install.ps1 lacks {want}");
    }
    let t = "windows_install_ps1_has_the_service_commands_and_parses";
    if !tool(
        python_has("tree_sitter") && python_has("tree_sitter_powershell"),
        "python3 with tree-sitter and tree-sitter-powershell (pip)",
        t,
    ) {
        return;
    }
    run(Command::new("python3")
        .args(["-c", PS_SYNTAX_ERRORS])
        .arg(&ps1)
        .arg(repo().join("installers/windows/build-msi.ps1")));
}
