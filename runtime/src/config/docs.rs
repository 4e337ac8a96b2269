//! The config reference, generated from the config types.
//!
//! The `///` docs on the config structs are the single source: [`schema`] derives the JSON
//! Schema (with `schemars`), and [`reference_markdown`] renders it as one table per section,
//! with types and defaults. `docs/configuration.md` embeds that text between two markers; a
//! test fails (and rewrites the file) when it is stale.

use std::fmt::Write;

use serde_json::Value;

use super::Config;

/// The marker before the generated reference in `docs/configuration.md`.
pub const BEGIN: &str =
    "<!-- BEGIN GENERATED: config reference (cargo nextest run -p millwright-runtime docs) -->";
/// The marker after it.
pub const END: &str = "<!-- END GENERATED: config reference -->";

/// The JSON Schema of a config file.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(Value::Null)
}

/// Every section as a Markdown table: key, type, default, meaning.
pub fn reference_markdown() -> String {
    let root = schema();
    let defs = &root["$defs"];
    let mut out = String::new();
    let Some(sections) = root["properties"].as_object() else {
        return out;
    };
    let required_sections: Vec<&str> = strings(&root["required"]);
    for (section, prop) in sections {
        let (title, reference) = match prop.get("additionalProperties") {
            Some(items) => (format!("[{section}.<name>]"), &items["$ref"]),
            None => (format!("[{section}]"), &prop["$ref"]),
        };
        let Some(def) = reference.as_str().and_then(|r| defs.get(def_name(r))) else {
            continue;
        };
        let _ = writeln!(out, "### `{title}`\n");
        let need = if required_sections.contains(&section.as_str()) {
            "Required section. "
        } else {
            "Optional section. "
        };
        let _ = writeln!(out, "{need}{}\n", one_line(&prop["description"]));
        let _ = writeln!(out, "| key | type | default | meaning |");
        let _ = writeln!(out, "|---|---|---|---|");
        let required: Vec<&str> = strings(&def["required"]);
        if let Some(fields) = def["properties"].as_object() {
            for (key, field) in fields {
                let default = match field.get("default") {
                    _ if required.contains(&key.as_str()) => "required".to_owned(),
                    Some(Value::Null) | None => "none".to_owned(),
                    Some(v) => format!("`{}`", toml_literal(v)),
                };
                let _ = writeln!(
                    out,
                    "| `{key}` | {} | {default} | {} |",
                    type_name(field, defs),
                    one_line(&field["description"]).replace('|', "\\|")
                );
            }
        }
        out.push('\n');
    }
    out
}

fn def_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn one_line(v: &Value) -> String {
    v.as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A value as it would be written in TOML.
fn toml_literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(toml_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(m) if m.is_empty() => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// The type of a field in words.
fn type_name(field: &Value, defs: &Value) -> String {
    if let Some(r) = field["$ref"].as_str() {
        let def = &defs[def_name(r)];
        let consts: Vec<String> = def["oneOf"]
            .as_array()
            .map(|alts| {
                alts.iter()
                    .filter_map(|a| a["const"].as_str().map(|c| format!("`{c}`")))
                    .collect()
            })
            .unwrap_or_default();
        if !consts.is_empty() {
            return consts.join(" or ");
        }
        let values: Vec<String> = strings(&def["enum"])
            .iter()
            .map(|c| format!("`{c}`"))
            .collect();
        if !values.is_empty() {
            return values.join(" or ");
        }
        return "table".to_owned();
    }
    let (ty, optional) = match &field["type"] {
        Value::Array(types) => (
            types
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("any")
                .to_owned(),
            true,
        ),
        Value::String(t) => (t.clone(), false),
        _ => ("any".to_owned(), false),
    };
    let base = match (ty.as_str(), field["format"].as_str()) {
        ("string", Some("duration")) => "duration".to_owned(),
        ("string", Some("ip:port")) => "address (`ip:port`)".to_owned(),
        ("string", _) => "string".to_owned(),
        ("integer", _) => "integer".to_owned(),
        ("number", _) => "number".to_owned(),
        ("boolean", _) => "boolean".to_owned(),
        ("array", _) => match field["items"]["type"].as_str() {
            Some(t) => format!("array of {t}s"),
            None => "array".to_owned(),
        },
        (other, _) => other.to_owned(),
    };
    if optional {
        format!("{base} (optional)")
    } else {
        base
    }
}
