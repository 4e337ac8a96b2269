//! Config references in Markdown, rendered from a config's JSON Schema, and the check that
//! keeps a docs page's copy of one current.
//!
//! The `///` docs on a config struct are the single source: `schemars` turns them into the
//! JSON Schema (the one a plugin's manifest carries), [`render`] turns the schema into
//! Markdown, and [`ensure_block`] writes it between two markers in a page. The node's own
//! reference (`docs/configuration.md`) and every plugin's (`docs/connectors/<id>.md`) come from
//! this one renderer, so they read alike:
//!
//! - one `###` section per TOML table, headed by the header a user writes (`[broker]`,
//!   `[connectors.<name>.config]`, `[[connectors.<name>.config.nodes]]` for an array of
//!   tables, `[connectors.<name>]` for a table of tables by name), saying whether the table is
//!   required and what it is for;
//! - in each, a table of its keys, required keys first, then by name: the type in words
//!   (`duration`, `` `none` or `basic256sha256` ``, `string (optional)`), the default as it
//!   would be written in TOML, and the key's doc on one line;
//! - a table that is one of several forms chosen by a tag (`type = "username"`) lists each
//!   form with its own keys;
//! - keys the schema marks `deprecated` (the refused keys of [`crate::retired`]) are left out.
//!
//! [`ensure_block`] is rust-analyzer's `ensure_file_contents` idea applied to a block: a test
//! calls it with the fresh text; when the page differs it is rewritten and the test fails, so
//! the change shows up in review and the next run passes.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::manifest::Manifest;

/// How the line before a generated block starts; the rest of the line (up to `-->`) may say
/// how to regenerate it (`(cargo nextest run -p millwright-plugin-opcua docs)`).
pub const BEGIN: &str = "<!-- BEGIN GENERATED: config reference";

/// The line after a generated block.
pub const END: &str = "<!-- END GENERATED: config reference -->";

/// The TOML table a plugin's config is written in.
pub const PLUGIN_TABLE: &str = "connectors.<name>.config";

/// The reference of a plugin's config, as written under `[connectors.<name>.config]`.
pub fn plugin(manifest: &Manifest) -> String {
    render(&manifest.config_schema, PLUGIN_TABLE)
}

/// Renders the reference of the config `schema` describes, whose keys are written in the TOML
/// table `table` (`""` for a whole file, [`PLUGIN_TABLE`] for a plugin's config).
pub fn render(schema: &Value, table: &str) -> String {
    let mut r = Renderer {
        root: schema,
        out: String::new(),
    };
    r.table(table, &Header::Table, schema, None);
    let trimmed = r.out.trim_end().len();
    r.out.truncate(trimmed);
    r.out.push('\n');
    r.out
}

/// Makes the generated block of `page` hold `content`: the text between the line starting
/// with [`BEGIN`] and the line [`END`] becomes `content` with one blank line around it.
///
/// Meant for a test, one line per page:
///
/// ```no_run
/// # use millwright_plugin_sdk::{config_reference, manifest::Manifest};
/// # fn manifest() -> Manifest { unimplemented!() }
/// let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connectors/sim.md");
/// config_reference::ensure_block(&page, &config_reference::plugin(&manifest()));
/// ```
///
/// # Panics
/// When the page was stale (after rewriting it, so the next run passes: review and commit
/// the change), and when the page cannot be read or written or lacks the markers.
pub fn ensure_block(page: &Path, content: &str) {
    match refresh(page, content) {
        Ok(Freshness::Current) => {}
        Ok(Freshness::Rewritten) => {
            let hint = if std::env::var_os("CI").is_some() {
                " (run the tests locally and commit the page)"
            } else {
                ""
            };
            panic!(
                "{} was stale and has been regenerated; review and commit it{hint}",
                page.display()
            );
        }
        Err(e) => panic!("{e}"),
    }
}

/// What [`refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Current,
    Rewritten,
}

/// Why a page's block could not be checked.
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("{}: cannot read or write it: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no line starting with {BEGIN:?} followed later by {END:?} (add both around the place the reference goes)", path.display())]
    Markers { path: std::path::PathBuf },
}

fn refresh(page: &Path, content: &str) -> Result<Freshness, PageError> {
    let io = |source| PageError::Io {
        path: page.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(page).map_err(io)?;
    let markers = || PageError::Markers {
        path: page.to_owned(),
    };
    let start = text.find(BEGIN).ok_or_else(markers)?;
    let body = start + text[start..].find('\n').ok_or_else(markers)? + 1;
    let end = body + text[body..].find(END).ok_or_else(markers)?;
    let fresh = format!(
        "{}\n{}\n\n{}",
        &text[..body],
        content.trim_end(),
        &text[end..]
    );
    if fresh == text {
        return Ok(Freshness::Current);
    }
    std::fs::write(page, fresh).map_err(io)?;
    Ok(Freshness::Rewritten)
}

/// How a section's header is written.
enum Header {
    /// `[path]`.
    Table,
    /// `[[path]]`.
    ArrayOfTables,
}

/// What a key holds, for the layout.
enum Shape<'a> {
    /// A value written on the key's row.
    Value,
    /// A table of its own (`[path.key]`), perhaps optional.
    Table(&'a Value),
    /// An array of tables (`[[path.key]]`).
    Tables(&'a Value),
    /// Tables by name (`[path.key.<name>]`).
    Named(&'a Value),
    /// One of several tagged forms.
    Forms(&'a Value),
}

struct Renderer<'a> {
    root: &'a Value,
    out: String,
}

impl<'a> Renderer<'a> {
    fn resolve(&self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap_or_default();
                self.root
                    .get("$defs")
                    .and_then(|d| d.get(name))
                    .map_or(v, |d| self.resolve(d))
            }
            None => v,
        }
    }

    /// The non-null alternatives of `anyOf`/`oneOf` (an `Option<T>` is `anyOf: [T, null]`),
    /// or the value itself.
    fn alternatives(&self, v: &'a Value) -> (Vec<&'a Value>, bool) {
        let v = self.resolve(v);
        let Some(alts) = v
            .get("anyOf")
            .or_else(|| v.get("oneOf"))
            .and_then(Value::as_array)
        else {
            return (vec![v], is_nullable(v));
        };
        let mut nullable = false;
        let mut out = Vec::new();
        for a in alts {
            let a = self.resolve(a);
            if a.get("type").and_then(Value::as_str) == Some("null") {
                nullable = true;
            } else {
                out.push(a);
            }
        }
        (out, nullable)
    }

    fn is_table(&self, v: &Value) -> bool {
        v.get("properties").is_some_and(Value::is_object)
    }

    /// The tag key of a union of tables (`type` in `{type = "username", ...}`): the key every
    /// form has as a constant.
    fn tag_of(&self, forms: &[&'a Value]) -> Option<String> {
        let first = forms.first()?.get("properties")?.as_object()?;
        first
            .iter()
            .find(|(k, _)| {
                forms.iter().all(|f| {
                    f.get("properties")
                        .and_then(|p| p.get(k.as_str()))
                        .is_some_and(|p| p.get("const").is_some())
                })
            })
            .map(|(k, _)| k.clone())
    }

    fn shape(&self, field: &'a Value) -> Shape<'a> {
        let (alts, _) = self.alternatives(field);
        if alts.len() > 1 && alts.iter().all(|a| self.is_table(a)) && self.tag_of(&alts).is_some() {
            return Shape::Forms(self.resolve(field));
        }
        let [one] = alts[..] else {
            return Shape::Value;
        };
        if self.is_table(one) {
            return Shape::Table(one);
        }
        if let Some(items) = one.get("items") {
            let items = self.resolve(items);
            if self.is_table(items) {
                return Shape::Tables(items);
            }
        }
        if let Some(values) = one.get("additionalProperties").filter(|v| v.is_object()) {
            let values = self.resolve(values);
            if self.is_table(values) {
                return Shape::Named(values);
            }
        }
        Shape::Value
    }

    /// One table's section (its keys), then the sections of the tables inside it.
    fn table(&mut self, path: &str, header: &Header, object: &'a Value, intro: Option<String>) {
        let required = strings(object.get("required"));
        let mut keys: Vec<(&'a String, &'a Value)> = object
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        keys.retain(|(_, f)| f.get("deprecated") != Some(&Value::Bool(true)));
        keys.sort_by_key(|(k, _)| (!required.contains(&k.as_str()), k.as_str()));

        let mut rows = String::new();
        let mut inner = Vec::new();
        for (key, field) in keys {
            let is_required = required.contains(&key.as_str());
            match self.shape(field) {
                Shape::Value => {
                    let default = if is_required {
                        "required".to_owned()
                    } else {
                        match field.get("default") {
                            None | Some(Value::Null) => "none".to_owned(),
                            Some(d) => format!("`{}`", toml_literal(d)),
                        }
                    };
                    let _ = writeln!(
                        rows,
                        "| `{key}` | {} | {default} | {} |",
                        self.type_name(field).replace('|', "\\|"),
                        one_line(self.description(field)).replace('|', "\\|")
                    );
                }
                shape => inner.push((key, field, is_required, shape)),
            }
        }

        let titled = !path.is_empty();
        if titled {
            let title = match header {
                Header::Table => format!("[{path}]"),
                Header::ArrayOfTables => format!("[[{path}]]"),
            };
            let _ = writeln!(self.out, "### `{title}`\n");
            if let Some(intro) = intro {
                let _ = writeln!(self.out, "{intro}\n");
            }
        }
        if !rows.is_empty() {
            self.out
                .push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
            self.out.push_str(&rows);
            self.out.push('\n');
        }

        for (key, field, is_required, shape) in inner {
            let sub = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let need = if is_required {
                "Required section"
            } else {
                "Optional section"
            };
            let doc = one_line(self.description(field));
            let intro = |extra: &str| {
                let mut s = format!("{need}{extra}.");
                if !doc.is_empty() {
                    s.push(' ');
                    s.push_str(&doc);
                }
                s
            };
            match shape {
                Shape::Table(t) => self.table(&sub, &Header::Table, t, Some(intro(""))),
                Shape::Tables(t) => self.table(
                    &sub,
                    &Header::ArrayOfTables,
                    t,
                    Some(intro(", repeated once per item")),
                ),
                Shape::Named(t) => self.table(
                    &format!("{sub}.<name>"),
                    &Header::Table,
                    t,
                    Some(intro(", one per name")),
                ),
                Shape::Forms(union) => self.forms(&sub, field, union, &intro("")),
                Shape::Value => {}
            }
        }
    }

    /// A table that is one of several forms, chosen by a tag key.
    fn forms(&mut self, path: &str, field: &'a Value, union: &'a Value, intro: &str) {
        let (forms, _) = self.alternatives(union);
        let tag = self.tag_of(&forms).unwrap_or_default();
        let _ = writeln!(self.out, "### `[{path}]`\n");
        let default = field
            .get("default")
            .filter(|d| !d.is_null())
            .map(|d| format!(" (default `{}`)", toml_literal(d)))
            .unwrap_or_default();
        let _ = writeln!(
            self.out,
            "{intro} One of these forms, chosen by `{tag}`{default}:\n"
        );
        for form in forms {
            let value = form
                .pointer(&format!("/properties/{tag}/const"))
                .map(toml_literal)
                .unwrap_or_default();
            let _ = writeln!(
                self.out,
                "- `{tag} = {value}`: {}",
                one_line(self.description(form))
            );
            let required = strings(form.get("required"));
            let mut keys: Vec<(&String, &Value)> = form
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.iter().filter(|(k, _)| **k != tag).collect())
                .unwrap_or_default();
            keys.sort_by_key(|(k, _)| (!required.contains(&k.as_str()), k.as_str()));
            for (key, f) in keys {
                let need = if required.contains(&key.as_str()) {
                    "required"
                } else {
                    "optional"
                };
                let _ = writeln!(
                    self.out,
                    "  - `{key}` ({}, {need}): {}",
                    self.type_name(f).trim_end_matches(" (optional)"),
                    one_line(self.description(f))
                );
            }
        }
        self.out.push('\n');
    }

    fn description(&self, field: &'a Value) -> &'a str {
        field
            .get("description")
            .or_else(|| self.resolve(field).get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The type of a value in words.
    fn type_name(&self, field: &'a Value) -> String {
        let (alts, nullable) = self.alternatives(field);
        let mut names: Vec<String> = Vec::new();
        for a in alts {
            for n in self.names(a) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let base = if names.is_empty() {
            "any".to_owned()
        } else {
            names.join(" or ")
        };
        if nullable {
            format!("{base} (optional)")
        } else {
            base
        }
    }

    /// The names of one alternative: the constants of an enumeration, or its type.
    fn names(&self, v: &'a Value) -> Vec<String> {
        if let Some(c) = v.get("const") {
            return vec![format!("`{}`", plain(c))];
        }
        if let Some(values) = v.get("enum").and_then(Value::as_array) {
            return values
                .iter()
                .filter(|x| !x.is_null())
                .map(|x| format!("`{}`", plain(x)))
                .collect();
        }
        if v.get("anyOf").or_else(|| v.get("oneOf")).is_some() {
            return vec![self.type_name(v)];
        }
        let types: Vec<&str> = match v.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => return Vec::new(),
        };
        types
            .into_iter()
            .map(|t| match (t, v.get("format").and_then(Value::as_str)) {
                ("string", Some("duration")) => "duration".to_owned(),
                ("string", Some("ip:port")) => "address (`ip:port`)".to_owned(),
                ("array", _) => match v.get("items") {
                    Some(items) => format!("array of {}", plural(&self.type_name(items))),
                    None => "array".to_owned(),
                },
                ("object", _) => match v.get("additionalProperties").filter(|a| a.is_object()) {
                    Some(values) => format!("table of {}", plural(&self.type_name(values))),
                    None => "table".to_owned(),
                },
                (t, _) => t.to_owned(),
            })
            .collect()
    }
}

fn is_nullable(v: &Value) -> bool {
    v.get("type")
        .and_then(Value::as_array)
        .is_some_and(|ts| ts.iter().any(|t| t == "null"))
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `strings` for `string`, `tables` for `table`; longer names stay as they are.
fn plural(name: &str) -> String {
    match name {
        "string" | "integer" | "number" | "boolean" | "duration" | "table" => format!("{name}s"),
        other => other.to_owned(),
    }
}

/// A constant as a user reads it in a type: `human`, `5`.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as it is written in TOML: `"5s"`, `["a", "b"]`, `{ type = "anonymous" }`.
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
        Value::Object(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!("{k} = {}", toml_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
