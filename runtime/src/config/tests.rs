//! Config loading: every kind of mistake is reported with file, key path, line and hint.

use super::*;

fn err(text: &str) -> Diagnostic {
    match Config::parse("plant.toml", text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e
            .diagnostic()
            .cloned()
            .expect("an invalid-config diagnostic"),
    }
}

const MINIMAL: &str = "[node]\nname = \"line1\"\n";

#[test]
fn minimal_config_gets_every_default() {
    let c = Config::parse("x.toml", MINIMAL).unwrap();
    assert_eq!(c.node.name, "line1");
    assert_eq!(c.node.idle_window, Duration::from_secs(30));
    assert_eq!(c.node.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.bus.nats_url, None);
    assert_eq!(c.bus.prefix, "mw");
    assert_eq!(c.http.listen.port(), 8080);
    assert_eq!(c.metrics.listen.port(), 9090);
    assert_eq!(c.log.format, LogFormat::Human);
    assert_eq!(c.supervision.max_restarts, 3);
    assert!(c.sims.is_empty());
}

#[test]
fn a_retired_sims_section_is_refused_with_the_plugin_form() {
    let d = err("[node]\nname = \"n\"\n\n[sims.press1]\ninterval = \"250ms\"\n");
    assert_eq!(d.path, "sims.press1");
    assert_eq!(d.line, Some(4));
    assert!(d.message.contains("retired"), "{d}");
    let hint = d.hint.as_deref().unwrap();
    assert!(
        hint.contains("[connectors.press1]") && hint.contains("plugin = \"sim\""),
        "{d}"
    );
}

#[test]
fn bad_duration_names_path_line_and_hint() {
    let d = err("[node]\nname = \"n\"\n\n[watchdog]\ninterval = \"5 parsecs\"\n");
    assert_eq!(d.path, "watchdog.interval");
    assert_eq!(d.line, Some(5));
    assert_eq!(d.message, "invalid value \"5 parsecs\"");
    assert_eq!(
        d.to_string(),
        "plant.toml: watchdog.interval: invalid value \"5 parsecs\" at line 5 \
         (expected a duration such as \"500ms\" or \"5s\")"
    );
}

#[test]
fn unknown_key_suggests_the_known_one() {
    let d = err("[node]\nname = \"n\"\n[watchdog]\nintervall = \"1s\"\n");
    assert_eq!(d.path, "watchdog.intervall");
    assert_eq!(d.line, Some(4));
    assert_eq!(d.message, "unknown key `intervall`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `interval`?"));
}

#[test]
fn unknown_section_lists_known_keys_when_nothing_is_close() {
    let d = err("[node]\nname = \"n\"\n[plc]\nx = 1\n");
    assert_eq!(d.path, "plc");
    assert_eq!(d.line, Some(3));
    assert!(d.hint.as_deref().unwrap().contains("connectors"), "{d}");
}

#[test]
fn wrong_type_says_what_was_found_and_expected() {
    let d = err("[node]\nname = \"n\"\n[supervision]\nmax_restarts = \"three\"\n");
    assert_eq!(d.path, "supervision.max_restarts");
    assert_eq!(d.line, Some(4));
    assert_eq!(d.message, "wrong type: found string \"three\"");
    assert_eq!(
        d.hint.as_deref(),
        Some("expected a whole number (0 or more)")
    );
}

#[test]
fn missing_required_key_names_the_table() {
    let d = err("[node]\ndata_dir = \"d\"\n");
    assert_eq!(d.path, "node.name");
    assert_eq!(d.line, Some(1));
    assert_eq!(d.message, "missing required key");
    assert_eq!(d.hint.as_deref(), Some("add `name = ...` to [node]"));
    let d = err("[http]\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(d.path, "node");
    assert_eq!(d.hint.as_deref(), Some("add a [node] table"));
}

#[test]
fn unknown_enum_value_suggests() {
    let d = err("[node]\nname = \"n\"\n[log]\nformat = \"jsn\"\n");
    assert_eq!(d.path, "log.format");
    assert_eq!(d.line, Some(4));
    assert_eq!(d.hint.as_deref(), Some("did you mean \"json\"?"));
}

#[test]
fn syntax_error_has_a_line() {
    let d = err("[node]\nname = \"n\n");
    assert_eq!(d.line, Some(2));
    assert!(d.message.starts_with("invalid TOML"), "{d}");
}

#[test]
fn semantic_problems_are_located() {
    let d = err("[node]\nname = \"has.dot\"\n");
    assert_eq!(d.path, "node.name");
    assert_eq!(d.line, Some(2));
    assert!(d.hint.as_deref().unwrap().contains("subject token"));

    let d = err("[node]\nname = \"n\"\n[watchdog]\ninterval = \"0s\"\n");
    assert_eq!(d.path, "watchdog.interval");
    assert_eq!(d.line, Some(4));

    let d = err("[node]\nname = \"n\"\n[bus]\nnats_url = \"localhost:4222\"\n");
    assert_eq!(d.path, "bus.nats_url");
    assert!(d.hint.as_deref().unwrap().contains("nats://"));

    let d = err("[node]\nname = \"n\"\n[log]\nlevel = \"info,=[\"\n");
    assert_eq!(d.path, "log.level");
}

#[test]
fn bad_listen_address_has_a_hint() {
    let d = err("[node]\nname = \"n\"\n[http]\nlisten = \"8080\"\n");
    assert_eq!(d.path, "http.listen");
    assert_eq!(d.line, Some(4));
    assert_eq!(d.message, "invalid value \"8080\"");
    assert!(d.hint.as_deref().unwrap().contains("0.0.0.0:8080"), "{d}");
}

#[test]
fn the_demo_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml");
    let c = Config::load(&path).unwrap();
    assert!(c.connectors.len() >= 3, "the demo shows several machines");
}

#[test]
fn unreadable_file_is_a_read_error() {
    let e = Config::load(Path::new("/nonexistent/x.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/x.toml: cannot read")
    );
}

/// `docs/configuration.md` embeds the reference generated from the config types; when it is
/// stale this test rewrites it and fails, so the change shows up in review.
#[test]
fn configuration_docs_are_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let text = std::fs::read_to_string(&path).expect("docs/configuration.md exists");
    let (before, rest) = text
        .split_once(docs::BEGIN)
        .expect("docs/configuration.md has the begin marker");
    let (_, after) = rest
        .split_once(docs::END)
        .expect("docs/configuration.md has the end marker");
    let fresh = format!(
        "{before}{}\n\n{}{}{after}",
        docs::BEGIN,
        docs::reference_markdown(),
        docs::END
    );
    if fresh != text {
        std::fs::write(&path, fresh).unwrap();
        panic!("docs/configuration.md was stale and has been regenerated; review and commit it");
    }
}

#[test]
fn the_reference_documents_every_section_and_key() {
    let md = docs::reference_markdown();
    for needle in [
        "### `[node]`",
        "### `[connectors.<name>]`",
        "| `name` | string | required |",
        "| `idle_window` | duration | `\"30s\"` |",
        "| `listen` | address (`ip:port`) | `\"0.0.0.0:8080\"` |",
        "| `format` | `human` or `json` | `\"human\"` |",
        "| `nats_url` | string (optional) | none |",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
    }
}
