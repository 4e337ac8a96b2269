//! `millwright plugin new NAME` writes a crate that builds and passes its own tests out of the
//! box, whose library `millwright plugin inspect` then reads.

mod support;

use std::process::Command;

fn millwright(args: &[&str]) -> (bool, String) {
    let out = Command::new(support::binary()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_new_plugin_builds_passes_its_tests_and_inspects() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = millwright(&[
        "plugin",
        "new",
        "acme-counter",
        "--path",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let krate = dir.path().join("acme-counter");
    for file in ["Cargo.toml", "src/lib.rs", "src/main.rs", "README.md"] {
        assert!(krate.join(file).is_file(), "{file} written");
    }
    // Resolve to the versions the workspace already has (no network, no new downloads).
    let root = millwright_tests::workspace_root();
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("plugin-new");
    let out = Command::new(env!("CARGO"))
        .args(["test", "--offline"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the new plugin's tests pass:\n{text}");
    assert!(text.contains("2 passed"), "{text}");

    let built = Command::new(env!("CARGO"))
        .args(["build", "--offline"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(built.success(), "the new plugin builds");
    let lib = target.join("debug/libacme_counter.so");
    assert!(lib.is_file(), "a cdylib");
    assert!(
        target.join("debug/acme-counter").is_file(),
        "and an executable"
    );
    let (ok, text) = millwright(&["plugin", "inspect", lib.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("plugin acme-counter 0.1.0"), "{text}");
    assert!(
        text.contains("How many values to emit."),
        "the schema carries the docs: {text}"
    );

    let (ok, text) = millwright(&[
        "plugin",
        "new",
        "acme-counter",
        "--path",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("already exists"), "{text}");
    let (ok, text) = millwright(&[
        "plugin",
        "new",
        "Bad_Name",
        "--path",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("invalid plugin name"), "{text}");
}
