//! Decides at build time which integration tests can run on this machine (issue 24: a skip must
//! not look like a pass). For each tool group a `have_*` cfg is set when its tools are present;
//! a test that needs a missing group is compiled with `#[ignore = "requires …"]` and `cargo test`
//! lists it as ignored, with the reason, instead of passing it. Under CI (`CI` set, as `.ci/run`
//! does) every group counts as present, so a missing tool fails its tests.
//!
//! Nothing here affects the library or the binary: only `tests/testsuite` reads these cfgs.

use std::path::Path;
use std::process::{Command, Stdio};

const GROUPS: &[&str] = &[
    "have_browser",
    "have_systemd_analyze",
    "have_cargo_deb",
    "have_shellcheck",
    "have_tree_sitter_powershell",
    "have_netns",
    "have_prometheus",
    "have_wine",
    "have_msitools",
];

fn main() {
    // A tool installed later (apt-get writes to these directories) or CI set or unset: decide again.
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        if Path::new(dir).is_dir() {
            println!("cargo::rerun-if-changed={dir}");
        }
    }
    println!("cargo::rerun-if-changed=build.rs");
    for var in ["CI", "PATH", "POINTSD_CHROMIUM", "POINTSD_CHROMEDRIVER"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    for g in GROUPS {
        println!("cargo::rustc-check-cfg=cfg({g})");
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let present = |g: &str| -> bool {
        match g {
            "have_browser" => {
                (file_or_env("POINTSD_CHROMEDRIVER", &["/usr/bin/chromedriver"]))
                    && file_or_env(
                        "POINTSD_CHROMIUM",
                        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
                    )
            }
            "have_systemd_analyze" => works("systemd-analyze", &["--version"]),
            "have_cargo_deb" => {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                works(&cargo, &["deb", "--version"]) && works("dpkg-deb", &["--version"])
            }
            "have_shellcheck" => works("shellcheck", &["--version"]),
            "have_tree_sitter_powershell" => works(
                "python3",
                &["-c", "import tree_sitter, tree_sitter_powershell"],
            ),
            "have_netns" => is_root() && works("ip", &["-V"]) && works("nft", &["--version"]),
            "have_prometheus" => {
                works("prometheus", &["--version"]) && works("promtool", &["--version"])
            }
            "have_wine" => {
                (on_path("wine64")
                    || Path::new("/usr/lib/wine/wine64").is_file()
                    || on_path("wine"))
                    && on_path("x86_64-w64-mingw32-gcc")
            }
            "have_msitools" => ["wixl", "msibuild", "msiinfo", "msidump", "msiextract"]
                .iter()
                .all(|t| on_path(t)),
            _ => false,
        }
    };
    for g in GROUPS {
        if ci || present(g) {
            println!("cargo::rustc-cfg={g}");
        }
    }
}

fn file_or_env(var: &str, candidates: &[&str]) -> bool {
    std::env::var_os(var).is_some_and(|p| Path::new(&p).is_file())
        || candidates.iter().any(|p| Path::new(p).is_file())
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
