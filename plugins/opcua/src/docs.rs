//! The config reference of `docs/connectors/opcua.md`, generated from the config's JSON Schema
//! (the one in the manifest), so the page cannot drift from the code: a test regenerates the
//! page and fails when it was stale.

use serde_json::Value;

/// The marker before the generated table.
pub const BEGIN: &str = "<!-- BEGIN GENERATED: config reference (cargo test -p millwright-plugin-opcua regenerates) -->";
/// The marker after it.
pub const END: &str = "<!-- END GENERATED -->";

fn resolve<'a>(schema: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            schema.get("$defs").and_then(|d| d.get(name)).unwrap_or(v)
        }
        None => v,
    }
}

fn type_of(schema: &Value, v: &Value) -> String {
    let v = resolve(schema, v);
    if let Some(options) = v
        .get("oneOf")
        .or_else(|| v.get("anyOf"))
        .and_then(Value::as_array)
    {
        let names: Vec<String> = options
            .iter()
            .map(|o| {
                let o = resolve(schema, o);
                if let Some(c) = o.get("const") {
                    format!("`{c}`")
                } else if let Some(e) = o.get("enum").and_then(Value::as_array) {
                    e.iter()
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                } else if let Some(t) = o
                    .get("properties")
                    .and_then(|p| p.get("type"))
                    .and_then(|t| t.get("const"))
                {
                    format!("`{{type = {t}, ...}}`")
                } else {
                    type_of(schema, o)
                }
            })
            .filter(|n| n != "null")
            .collect();
        return names.join(" or ");
    }
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(|x| format!("`{x}`"))
            .collect::<Vec<_>>()
            .join(" or ");
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!(
                "array of {}",
                v.get("items")
                    .map_or("values".into(), |i| type_of(schema, i))
            )
        }
        Some(Value::String(t)) if t == "object" => "table".into(),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "value".into(),
    }
}

fn table(schema: &Value, object: &Value, out: &mut String) {
    let object = resolve(schema, object);
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
    if let Some(props) = object.get("properties").and_then(Value::as_object) {
        for (key, p) in props {
            let default = if required.contains(&key.as_str()) {
                "required".to_owned()
            } else {
                match p.get("default") {
                    Some(Value::Null) | None => "none".to_owned(),
                    Some(d) => format!("`{d}`"),
                }
            };
            let doc = p
                .get("description")
                .or_else(|| resolve(schema, p).get("description"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .replace('\n', " ")
                .replace('|', "\\|");
            out.push_str(&format!(
                "| `{key}` | {} | {default} | {doc} |\n",
                type_of(schema, p).replace('|', "\\|")
            ));
        }
    }
}

/// The reference as markdown: the top-level keys, the keys of each node, the user forms.
pub fn reference_markdown(schema: &Value) -> String {
    let mut out = String::new();
    out.push_str("### `[connectors.<name>.config]`\n\n");
    table(schema, schema, &mut out);
    out.push_str("\n### `[[connectors.<name>.config.nodes]]`\n\n");
    if let Some(node) = schema.pointer("/$defs/NodeConfig") {
        table(schema, node, &mut out);
    }
    out.push_str("\n### `user`\n\n");
    if let Some(forms) = schema
        .pointer("/$defs/UserConfig/oneOf")
        .and_then(Value::as_array)
    {
        for f in forms {
            let ty = f
                .pointer("/properties/type/const")
                .map(|t| t.to_string())
                .unwrap_or_default();
            let doc = f
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            out.push_str(&format!("- `type = {ty}`: {}\n", doc.replace('\n', " ")));
            let keys: Vec<String> = f
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .filter(|(k, _)| *k != "type")
                        .map(|(k, v)| {
                            format!(
                                "  - `{k}`: {}",
                                v.get("description")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for k in keys {
                out.push_str(&k);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use millwright_plugin_sdk::manifest::Manifest;

    #[test]
    fn the_docs_page_is_up_to_date() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connectors/opcua.md");
        let text = std::fs::read_to_string(&path).expect("docs/connectors/opcua.md exists");
        let (before, rest) = text
            .split_once(BEGIN)
            .expect("the page has the begin marker");
        let (_, after) = rest.split_once(END).expect("the page has the end marker");
        let schema = Manifest::of(&crate::OPCUA).config_schema;
        let fresh = format!(
            "{before}{BEGIN}\n\n{}\n{END}{after}",
            reference_markdown(&schema)
        );
        if fresh != text {
            std::fs::write(&path, fresh).unwrap();
            panic!(
                "docs/connectors/opcua.md was stale and has been regenerated; review and commit it"
            );
        }
    }

    #[test]
    fn the_reference_lists_every_key_with_its_default() {
        let md = reference_markdown(&Manifest::of(&crate::OPCUA).config_schema);
        for needle in [
            "| `endpoint` | string | required |",
            "| `publishing_interval_ms` | integer | `1000` |",
            "| `watchdog_timeout_ms` | integer | `30000` |",
            "| `tag` | string | required |",
            "`type = \"username\"`",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
        }
    }
}
