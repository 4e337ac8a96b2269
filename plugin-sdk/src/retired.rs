//! Keys a config no longer takes, refused with what to write instead.
//!
//! A plugin that renames or removes a key keeps the old key in its config's JSON Schema,
//! marked with [`mark`] (from a `#[schemars(transform = ...)]` on the config struct):
//!
//! ```json
//! "poll_interval_ms": {
//!   "deprecated": true,
//!   "not": {},
//!   "errorMessage": "renamed; write poll_interval = \"1s\" (a duration)"
//! }
//! ```
//!
//! Any JSON Schema validator refuses the key at its own path (`not: {}` matches nothing), and
//! `errorMessage` (the convention of `ajv-errors`) carries the sentence a user needs. [`check`]
//! finds such keys in a config and answers with that sentence; the SDK's adapter runs it
//! before the config reaches the plugin, and a host can run it before its schema validation
//! so that its error names the key and the fix. The generated reference
//! ([`crate::config_reference`]) leaves these keys out.

use schemars::Schema;
use serde_json::{Map, Value};

/// The keyword that carries the refusal.
pub const ERROR_MESSAGE: &str = "errorMessage";

/// A key found in a config that its schema refuses with a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Refused {
    /// Where the key is: `poll_interval_ms`, `nodes[0].sampling_interval_ms`.
    pub path: String,
    /// What to write instead: `renamed; write poll_interval = "1s" (a duration)`.
    pub message: String,
}

/// Adds the retired `keys` (old key, message) to the properties of the object `schema`
/// describes, as refused keys.
///
/// Typically `#[schemars(transform = retired_keys)]` with
/// `fn retired_keys(s: &mut Schema) { retired::mark(s, &[("poll_interval_ms", "renamed; write poll_interval = \"1s\" (a duration)")]) }`.
pub fn mark(schema: &mut Schema, keys: &[(&str, &str)]) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let properties = object
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(properties) = properties.as_object_mut() else {
        return;
    };
    for (key, message) in keys {
        properties.insert(
            (*key).to_owned(),
            serde_json::json!({
                "deprecated": true,
                "not": {},
                ERROR_MESSAGE: message,
            }),
        );
    }
}

/// The first key of `config` that `schema` refuses with a message, in document order of the
/// schema's tables (nested tables, arrays of tables and optional tables included).
///
/// # Errors
/// [`Refused`] naming the key's path and the message.
pub fn check(schema: &Value, config: &Value) -> Result<(), Refused> {
    walk(schema, schema, config, "")
}

fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            root.get("$defs")
                .and_then(|d| d.get(name))
                .map_or(v, |d| resolve(root, d))
        }
        None => v,
    }
}

/// The schema itself and the alternatives it allows (`anyOf`, `oneOf`, `allOf`), resolved.
fn candidates<'a>(root: &'a Value, v: &'a Value) -> Vec<&'a Value> {
    let v = resolve(root, v);
    let mut out = vec![v];
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(alts) = v.get(k).and_then(Value::as_array) {
            for a in alts {
                out.extend(candidates(root, a));
            }
        }
    }
    out
}

fn walk(root: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), Refused> {
    let schemas = candidates(root, schema);
    match value {
        Value::Object(fields) => {
            for (key, v) in fields {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                for s in &schemas {
                    let Some(prop) = s.get("properties").and_then(|p| p.get(key)) else {
                        continue;
                    };
                    if let Some(message) = prop.get(ERROR_MESSAGE).and_then(Value::as_str) {
                        return Err(Refused {
                            path: at,
                            message: message.to_owned(),
                        });
                    }
                    walk(root, prop, v, &at)?;
                }
            }
        }
        Value::Array(items) => {
            for s in &schemas {
                if let Some(item) = s.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        walk(root, item, v, &format!("{path}[{i}]"))?;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde_json::json;

    use super::*;

    fn retired_top(s: &mut Schema) {
        mark(
            s,
            &[(
                "poll_interval_ms",
                "renamed; write poll_interval = \"1s\" (a duration)",
            )],
        );
    }

    fn retired_item(s: &mut Schema) {
        mark(
            s,
            &[(
                "sampling_interval_ms",
                "renamed; write sampling_interval = \"250ms\" (a duration)",
            )],
        );
    }

    #[derive(JsonSchema)]
    #[schemars(transform = retired_item)]
    #[allow(dead_code)]
    struct Item {
        tag: String,
    }

    #[derive(JsonSchema)]
    #[schemars(transform = retired_top)]
    #[allow(dead_code)]
    struct Config {
        poll_interval: String,
        nodes: Vec<Item>,
        extra: Option<Item>,
    }

    fn schema() -> Value {
        serde_json::to_value(schemars::schema_for!(Config)).unwrap()
    }

    #[test]
    fn a_retired_key_is_refused_at_its_path_with_its_message() {
        let e = check(&schema(), &json!({"poll_interval_ms": 1000, "nodes": []})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "poll_interval_ms: renamed; write poll_interval = \"1s\" (a duration)"
        );
        let e = check(
            &schema(),
            &json!({"nodes": [{"tag": "a"}, {"tag": "b", "sampling_interval_ms": 5}]}),
        )
        .unwrap_err();
        assert_eq!(e.path, "nodes[1].sampling_interval_ms");
        let e = check(&schema(), &json!({"extra": {"sampling_interval_ms": 5}})).unwrap_err();
        assert_eq!(
            e.path, "extra.sampling_interval_ms",
            "through Option's anyOf"
        );
    }

    #[test]
    fn current_keys_pass() {
        check(
            &schema(),
            &json!({"poll_interval": "1s", "nodes": [{"tag": "a"}], "unknown": 1}),
        )
        .unwrap();
    }

    #[test]
    fn the_schema_refuses_the_key_for_any_validator() {
        let s = schema();
        let prop = &s["properties"]["poll_interval_ms"];
        assert_eq!(prop["not"], json!({}), "{s}");
        assert_eq!(prop["deprecated"], json!(true));
    }
}
