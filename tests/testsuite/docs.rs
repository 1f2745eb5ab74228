//! The README and `docs/` are the front door: every relative link in them leads to a file
//! that exists (a moved test file or a renamed installer script breaks a reader's path).

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The targets of the Markdown links `[text](target)` in `text`, anchors and titles dropped.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        let target = target.split('#').next().unwrap_or("");
        if !target.is_empty() {
            out.push(target.to_string());
        }
        rest = &rest[end..];
    }
    out
}

fn is_relative(target: &str) -> bool {
    !(target.contains("://") || target.starts_with("mailto:") || target.starts_with('/'))
}

#[test]
fn link_targets_are_read_as_a_reader_follows_them() {
    let cases: &[(&str, &[&str])] = &[
        (
            "see [the unit](installers/linux/pointsd.service).",
            &["installers/linux/pointsd.service"],
        ),
        (
            "[a](docs/x.md#part) and [b](https://example.org/y)",
            &["docs/x.md", "https://example.org/y"],
        ),
        ("[anchor only](#performance)", &[]),
        ("no links [here] (nor here)", &[]),
    ];
    for (text, want) in cases {
        assert_eq!(link_targets(text), *want, "{text}");
    }
    assert!(is_relative("docs/x.md"));
    assert!(!is_relative("https://example.org"));
}

#[test]
fn every_relative_link_in_the_readme_and_docs_points_at_a_file_that_exists() {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        for e in dir.flatten() {
            if e.path().extension().is_some_and(|x| x == "md") {
                files.push(e.path());
            }
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let base = file.parent().unwrap_or(Path::new("."));
        for target in link_targets(&text).into_iter().filter(|t| is_relative(t)) {
            checked += 1;
            if !base.join(&target).exists() {
                broken.push(format!(
                    "{}: {target}",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to files that do not exist:\n{}",
        broken.join("\n")
    );
    assert!(
        checked > 0,
        "no relative links found: is the parser still right?"
    );
}
