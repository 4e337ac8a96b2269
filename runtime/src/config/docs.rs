//! The config reference, generated from the config types.
//!
//! The `///` docs on the config structs are the single source: [`schema`] derives the JSON
//! Schema (with `schemars`), and [`reference_markdown`] renders it with the SDK's renderer
//! ([`millwright_plugin_sdk::config_reference`], the one every plugin's page uses too): one
//! section per table, with types and defaults. `docs/configuration.md` embeds that text
//! between two markers; a test fails (and rewrites the file) when it is stale.

use millwright_plugin_sdk::config_reference;
use serde_json::Value;

use super::Config;

/// The marker before the generated reference in `docs/configuration.md`.
pub const BEGIN: &str =
    "<!-- BEGIN GENERATED: config reference (cargo nextest run -p millwright-runtime docs) -->";
/// The marker after it.
pub const END: &str = config_reference::END;

/// The JSON Schema of a config file.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(Value::Null)
}

/// Every section as a Markdown table: key, type, default, meaning (ending in a blank line,
/// the layout `docs/configuration.md` has between its markers).
pub fn reference_markdown() -> String {
    let mut md = config_reference::render(&schema(), "");
    md.push('\n');
    md
}
