//! `docs/connectors/cmms-http.md` embeds the config reference generated from the schema in the
//! plugin's manifest (itself derived from the `///` docs on the config types). When the page is
//! stale this test rewrites it and fails, so the change shows up in review.

use std::fmt::Write;
use std::path::Path;

use millwright_plugin_cmms_http::CMMS;
use millwright_plugin_sdk::manifest::Manifest;
use serde_json::Value;

const BEGIN: &str = "<!-- BEGIN GENERATED: config reference (cargo nextest run -p millwright-plugin-cmms-http docs) -->";
const END: &str = "<!-- END GENERATED: config reference -->";

fn one_line(v: &Value) -> String {
    v.as_str()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn def<'a>(defs: &'a Value, reference: &Value) -> Option<&'a Value> {
    let name = reference.as_str()?.rsplit('/').next()?;
    defs.get(name)
}

/// The object definition a property refers to, and whether it may be absent.
fn table<'a>(field: &'a Value, defs: &'a Value) -> Option<(&'a Value, bool)> {
    if let Some(d) = def(defs, &field["$ref"]).filter(|d| d["type"] == "object") {
        return Some((d, false));
    }
    let any = field["anyOf"].as_array()?;
    let d = any
        .iter()
        .find_map(|v| def(defs, &v["$ref"]))
        .filter(|d| d["type"] == "object")?;
    Some((d, any.iter().any(|v| v["type"] == "null")))
}

fn type_name(field: &Value, defs: &Value) -> String {
    if let Some(variants) = def(defs, &field["$ref"]).and_then(|d| d["oneOf"].as_array()) {
        let names: Vec<String> = variants
            .iter()
            .filter_map(|v| v["const"].as_str())
            .map(|c| format!("`{c}`"))
            .collect();
        return names.join(" or ");
    }
    let (types, optional) = match &field["type"] {
        Value::String(t) => (vec![t.as_str()], false),
        Value::Array(ts) => (
            ts.iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            ts.iter().any(|t| t == "null"),
        ),
        _ => (vec![], false),
    };
    let base = match (types.first().copied(), field["format"].as_str()) {
        (Some("string"), Some("duration")) => "duration".to_owned(),
        (Some("integer"), _) => "integer".to_owned(),
        (Some("number"), _) => "number".to_owned(),
        (Some(t), _) => t.to_owned(),
        (None, _) => "value".to_owned(),
    };
    if optional {
        format!("{base} (optional)")
    } else {
        base
    }
}

fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn rows(out: &mut String, prefix: &str, object: &Value, defs: &Value) {
    let required: Vec<&str> = object["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = object["properties"].as_object() else {
        return;
    };
    // Required keys first, then the rest in alphabetical order (the schema's).
    let mut keys: Vec<&String> = props.keys().collect();
    keys.sort_by_key(|k| (!required.contains(&k.as_str()), (*k).clone()));
    for key in keys {
        let field = &props[key];
        let name = format!("{prefix}{key}");
        if let Some((nested, optional)) = table(field, defs) {
            let kind = if optional {
                "table (optional)"
            } else {
                "table"
            };
            let _ = writeln!(
                out,
                "| `{name}` | {kind} | {} | {} |",
                if optional { "none" } else { "see its keys" },
                one_line(&field["description"])
            );
            rows(out, &format!("{name}."), nested, defs);
            continue;
        }
        let default = if required.contains(&key.as_str()) {
            "required".to_owned()
        } else {
            match field.get("default") {
                None | Some(Value::Null) => "none".to_owned(),
                Some(v) => format!("`{}`", literal(v)),
            }
        };
        let _ = writeln!(
            out,
            "| `{name}` | {} | {default} | {} |",
            type_name(field, defs),
            one_line(&field["description"])
        );
    }
}

fn reference_markdown() -> String {
    let schema = Manifest::of(&CMMS).config_schema;
    let mut out = String::new();
    let _ = writeln!(out, "| key | type | default | meaning |");
    let _ = writeln!(out, "|---|---|---|---|");
    rows(&mut out, "", &schema, &schema["$defs"]);
    out
}

#[test]
fn the_connector_page_documents_the_current_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connectors/cmms-http.md");
    let text = std::fs::read_to_string(&path).expect("docs/connectors/cmms-http.md exists");
    let (before, rest) = text
        .split_once(BEGIN)
        .expect("the page has the begin marker");
    let (_, after) = rest.split_once(END).expect("the page has the end marker");
    let fresh = format!("{before}{BEGIN}\n\n{}\n{END}{after}", reference_markdown());
    if fresh != text {
        std::fs::write(&path, fresh).unwrap();
        panic!(
            "docs/connectors/cmms-http.md was stale and has been regenerated; review and commit it"
        );
    }
}

#[test]
fn the_reference_has_every_key_with_its_default() {
    let md = reference_markdown();
    for needle in [
        "| `base_url` | string | required |",
        "| `request_timeout` | duration | `\"5s\"` |",
        "| `sandbox` | boolean | `false` |",
        "| `auth` | table (optional) | none |",
        "| `auth.scheme` | `bearer` or `api_key` | `\"bearer\"` |",
        "| `auth.secret_env` | string (optional) | none |",
        "| `paths.asset` | string | `\"/assets/{id}\"` |",
        "| `retry.max_retries` | integer | `3` |",
        "| `retry.base` | duration | `\"500ms\"` |",
        "| `breaker.failure_threshold` | integer | `5` |",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
    }
    assert!(
        md.lines().nth(2).unwrap().starts_with("| `base_url`"),
        "required first"
    );
}
