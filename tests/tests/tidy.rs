//! Tidy checks: invariants of the source tree that are cheap to check and easy to forget.
//!
//! - every Rust module starts with a `//!` doc saying what it is for;
//! - no test carries the ignore attribute (a test that does not run proves nothing);
//! - the docs the README promises exist;
//! - `.ci/run` runs exactly the README's test command.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for top in [
        "plugin-sdk",
        "actors",
        "runtime",
        "tests",
        "benches",
        "plugins",
        "tools",
    ] {
        rust_files(&root.join(top), &mut files);
    }
    assert!(
        files.len() > 5,
        "tidy found too few sources under {}",
        root.display()
    );
    files
}

#[test]
fn every_module_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for file in all_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        // main.rs and bench mains are modules too; they also need a doc.
        if !first.starts_with("//!") {
            missing.push(file.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "these files lack a leading `//!` module doc:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_test_is_ignored() {
    // The attribute, and doc tests fenced as ignored: neither runs.
    let needles = [["#[", "ignore"].concat(), ["```", "ignore"].concat()];
    let mut found = Vec::new();
    for file in all_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        if needles.iter().any(|n| text.contains(n.as_str())) {
            found.push(file.display().to_string());
        }
    }
    assert!(
        found.is_empty(),
        "ignored tests prove nothing; remove the attribute in:\n{}",
        found.join("\n")
    );
}

#[test]
fn promised_docs_exist() {
    let root = workspace_root();
    for doc in [
        "README.md",
        "CHANGELOG.md",
        "docs/architecture.md",
        "docs/runtime-semantics.md",
        "docs/operations.md",
        "docs/reliability.md",
        "docs/benchmarks.md",
        "docs/plugin-authoring.md",
    ] {
        assert!(root.join(doc).is_file(), "{doc} is missing");
    }
}

#[test]
fn every_connector_plugin_has_a_docs_page() {
    // `plugins/<dir>` is the crate `millwright-plugin-<id>`; its page is docs/connectors/<id>.md
    // (testkit is the host's test fixture, not a connector anyone deploys).
    let root = workspace_root();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("plugins")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let id = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \"millwright-plugin-"))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{}: not named millwright-plugin-<id>", dir.display()));
        if id != "testkit" && !root.join(format!("docs/connectors/{id}.md")).is_file() {
            missing.push(format!("docs/connectors/{id}.md"));
        }
    }
    assert!(missing.is_empty(), "connector pages missing: {missing:?}");
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        readme.contains("scripts/test"),
        "README must show scripts/test as its second command"
    );
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !l.starts_with("set ") && !l.starts_with("cd "))
        .collect();
    assert_eq!(
        commands,
        ["exec scripts/test"],
        ".ci/run must run scripts/test and nothing else"
    );
}
