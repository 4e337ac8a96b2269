//! Tidy checks: invariants of the source tree that are cheap to check and easy to forget.
//!
//! - every Rust module starts with a `//!` doc saying what it is for;
//! - no test carries the ignore attribute (a test that does not run proves nothing);
//! - the docs the README promises exist;
//! - `.ci/run` runs exactly the README's test command;
//! - every workspace crate depends only on the crates the dependency rules of
//!   `docs/architecture.md` ("Dependency rules") allow, read from `cargo metadata`;
//! - every repo path `docs/architecture.md` names exists, and it names every workspace crate
//!   and every crate's top-level modules.

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

/// Where the dependency rules are written for people: keep the two in step.
const RULES_DOC: &str = "docs/architecture.md (section \"Dependency rules\")";

/// The workspace crates a crate may have as normal dependencies (dev-dependencies are free).
/// The same table is in [`RULES_DOC`].
const ALLOWED_WORKSPACE_DEPS: &[(&str, &[&str])] = &[
    ("millwright-plugin-sdk", &[]),
    ("millwright-kernel", &[]),
    ("millwright-bus", &["millwright-plugin-sdk"]),
    ("millwright-storage", &["millwright-plugin-sdk"]),
    (
        "millwright-broker",
        &[
            "millwright-kernel",
            "millwright-bus",
            "millwright-storage",
            "millwright-plugin-sdk",
        ],
    ),
    (
        "millwright-connect",
        &[
            "millwright-kernel",
            "millwright-broker",
            "millwright-plugin-sdk",
        ],
    ),
    (
        "millwright-runtime",
        &[
            "millwright-kernel",
            "millwright-bus",
            "millwright-storage",
            "millwright-broker",
            "millwright-connect",
            "millwright-plugin-sdk",
        ],
    ),
    ("millwright-tests", &["millwright-kernel"]),
    ("millwright-cmms-sim", &[]),
    ("millwright-plc-sim", &[]),
    // Plugins: `millwright-plugin-<id>`, matched by prefix below.
    ("millwright-plugin-*", &["millwright-plugin-sdk"]),
    // Benchmarks measure everything against its baseline.
    ("millwright-benches", &["*"]),
];

/// Outside crates that only some workspace crates may have as normal dependencies.
const RESTRICTED_EXTERNAL_DEPS: &[(&str, &[&str])] = &[
    // The one NATS client lives behind the bus.
    ("async-nats", &["millwright-bus", "millwright-benches"]),
    // Actors: the SDK, storage, plugins and tools stay free of them.
    (
        "ractor",
        &[
            "millwright-kernel",
            "millwright-broker",
            "millwright-connect",
            "millwright-runtime",
            "millwright-benches",
        ],
    ),
];

/// Known breaks of the rules, each with the fix that removes it. The test fails when one of
/// these no longer occurs, so the entry goes with its fix.
const KNOWN_VIOLATIONS: &[(&str, &str, &str)] = &[];

fn metadata() -> serde_json::Value {
    let root = workspace_root();
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .output()
        .expect("cannot run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata printed no JSON")
}

/// One workspace crate as the checks below need it.
struct Crate {
    name: String,
    /// Its directory relative to the workspace root (`actors/kernel`).
    dir: String,
    /// Normal (not dev, not build) dependencies, by package name.
    normal_deps: Vec<String>,
    /// Its `lib.rs` and `main.rs`.
    roots: Vec<PathBuf>,
}

fn workspace_crates() -> Vec<Crate> {
    let root = workspace_root();
    let meta = metadata();
    let mut crates = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
        let dir = manifest
            .parent()
            .unwrap()
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let normal_deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        let roots = p["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| PathBuf::from(t["src_path"].as_str().unwrap()))
            .filter(|path| path.ends_with("src/lib.rs") || path.ends_with("src/main.rs"))
            .collect();
        crates.push(Crate {
            name: p["name"].as_str().unwrap().to_owned(),
            dir,
            normal_deps,
            roots,
        });
    }
    assert!(crates.len() > 5, "cargo metadata listed too few crates");
    crates
}

fn allowed_workspace_deps(name: &str) -> Option<&'static [&'static str]> {
    ALLOWED_WORKSPACE_DEPS
        .iter()
        .find(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => *pattern == name,
        })
        .map(|(_, allowed)| *allowed)
}

#[test]
fn dependencies_follow_the_rules() {
    let crates = workspace_crates();
    let members: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
    let mut wrong = Vec::new();
    let mut seen = Vec::new();
    for c in &crates {
        let Some(allowed) = allowed_workspace_deps(&c.name) else {
            wrong.push(format!(
                "{}: a crate the dependency rules do not know; add it to the table in {RULES_DOC} \
                 and to ALLOWED_WORKSPACE_DEPS in tests/tests/tidy.rs",
                c.name
            ));
            continue;
        };
        for dep in &c.normal_deps {
            let rule = if members.contains(&dep.as_str()) {
                (!allowed.contains(&"*") && !allowed.contains(&dep.as_str())).then(|| {
                    format!(
                        "{} may depend on {} only",
                        c.name,
                        if allowed.is_empty() {
                            "no workspace crate".to_owned()
                        } else {
                            allowed.join(", ")
                        }
                    )
                })
            } else {
                RESTRICTED_EXTERNAL_DEPS
                    .iter()
                    .find(|(ext, _)| ext == dep)
                    .filter(|(_, users)| !users.contains(&c.name.as_str()))
                    .map(|(ext, users)| format!("only {} may depend on {ext}", users.join(", ")))
            };
            let Some(rule) = rule else { continue };
            if let Some((.., fix)) = KNOWN_VIOLATIONS
                .iter()
                .find(|(krate, d, _)| *krate == c.name && d == dep)
            {
                seen.push((c.name.clone(), dep.clone()));
                eprintln!("known violation: {} -> {dep}: {fix}", c.name);
                continue;
            }
            wrong.push(format!(
                "{} -> {dep}: {rule} ({RULES_DOC}); remove the dependency from {}/Cargo.toml \
                 (a dev-dependency is fine for tests), or change the rule in both places",
                c.name, c.dir
            ));
        }
    }
    for (krate, dep, _) in KNOWN_VIOLATIONS {
        if !seen.iter().any(|(k, d)| k == krate && d == dep) {
            wrong.push(format!(
                "{krate} -> {dep} is listed in KNOWN_VIOLATIONS (tests/tests/tidy.rs) but no \
                 longer occurs: remove the entry"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies that break the rules:\n{}",
        wrong.join("\n")
    );
}

fn architecture_doc() -> String {
    std::fs::read_to_string(workspace_root().join("docs/architecture.md")).unwrap()
}

/// The inline code spans of a Markdown text, outside fenced code blocks.
fn code_spans(markdown: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_owned())
        .collect()
}

/// Whether a code span looks like a path in the repository (not a route, a subject, a
/// component id with placeholders, or a glob).
fn looks_like_repo_path(span: &str) -> bool {
    let plain = !span.is_empty()
        && !span.starts_with('/')
        && !span
            .chars()
            .any(|c| c.is_whitespace() || "<>{}*:|()=\"'$".contains(c));
    plain
        && (span.contains('/')
            || span.ends_with(".rs")
            || span.ends_with(".toml")
            || span.ends_with(".md"))
}

#[test]
fn paths_in_the_architecture_doc_exist() {
    let root = workspace_root();
    let spans = code_spans(&architecture_doc());
    let paths: Vec<&String> = spans.iter().filter(|s| looks_like_repo_path(s)).collect();
    assert!(
        paths.len() > 20,
        "docs/architecture.md names too few paths ({}): is the parser broken?",
        paths.len()
    );
    let missing: Vec<&str> = paths
        .iter()
        .map(|s| s.as_str())
        .filter(|p| !root.join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist (paths are relative to the \
         workspace root); fix the doc where a file moved:\n{}",
        missing.join("\n")
    );
}

/// The top-level modules a crate root declares (`mod x;`, `pub mod x;`, `pub mod x {`), its
/// unit-test modules aside.
fn top_level_modules(root_file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root_file).unwrap();
    let mut modules = Vec::new();
    let mut previous = "";
    for line in text.lines() {
        let rest = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "));
        if let Some(rest) = rest {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name != "tests" && previous.trim() != "#[cfg(test)]" {
                modules.push(name);
            }
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    modules
}

/// The doc's `###` sections: heading and body.
fn sections(markdown: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            out.push((heading.to_owned(), String::new()));
        } else if line.starts_with("## ") {
            out.push((String::new(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn the_architecture_doc_names_every_crate_and_module() {
    let doc = architecture_doc();
    let sections = sections(&doc);
    let mut missing = Vec::new();
    for c in workspace_crates() {
        // The code map has one `### `<dir>/` (crate `<name>`)` section per crate.
        let heading = format!("`{}/`", c.dir);
        let Some((_, body)) = sections
            .iter()
            .find(|(h, _)| h.contains(&heading) && h.contains(&format!("`{}`", c.name)))
        else {
            missing.push(format!(
                "crate {}: add a code-map section headed ### {heading} (crate `{}`)",
                c.name, c.name
            ));
            continue;
        };
        let named: Vec<String> = code_spans(body)
            .iter()
            .flat_map(|s| {
                s.split(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        for root in &c.roots {
            for module in top_level_modules(root) {
                if !named.contains(&module) {
                    missing.push(format!(
                        "module `{module}` of {} ({}): name it in backticks in the section {heading}",
                        c.name,
                        root.display()
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not name:\n{}",
        missing.join("\n")
    );
}
