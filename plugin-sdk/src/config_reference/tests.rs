//! Tests of the config-reference renderer and of the stale-page check.

use std::path::PathBuf;
use std::time::Duration;

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use super::*;
use crate::duration;

fn retired_keys(s: &mut Schema) {
    crate::retired::mark(s, &[("interval_ms", "renamed; write interval = \"1s\"")]);
}

/// The example config.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = retired_keys)]
#[allow(dead_code)]
struct Example {
    /// The server,
    /// on one line.
    endpoint: String,
    /// Between | reads.
    #[serde(default = "one_second", with = "duration")]
    #[schemars(with = "duration::Human")]
    interval: Duration,
    /// How to talk.
    #[serde(default)]
    mode: Mode,
    /// An optional limit.
    #[serde(default)]
    limit: Option<u32>,
    /// The nodes.
    nodes: Vec<Node>,
    /// Retries.
    #[serde(default)]
    retry: Option<Retry>,
    /// Who logs in.
    #[serde(default)]
    user: User,
    /// Tags.
    #[serde(default = "tags")]
    tags: Vec<String>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn tags() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

/// A mode.
#[derive(Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// Pushed.
    #[default]
    Subscription,
    /// Pulled.
    Polling,
}

/// One node.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Node {
    /// Its tag.
    tag: String,
}

/// Retry policy.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Retry {
    /// Most tries.
    #[serde(default)]
    max: u32,
}

/// The identity.
#[derive(Default, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
enum User {
    /// Nobody.
    #[default]
    Anonymous,
    /// Someone.
    Username {
        /// The name.
        username: String,
        /// Where the password is.
        #[serde(default)]
        password_env: Option<String>,
    },
}

fn example() -> String {
    render(
        &serde_json::to_value(schemars::schema_for!(Example)).unwrap(),
        PLUGIN_TABLE,
    )
}

#[test]
fn the_reference_has_a_section_per_table_and_a_row_per_key() {
    let md = example();
    for needle in [
        "### `[connectors.<name>.config]`\n\n| key | type | default | meaning |",
        "| `endpoint` | string | required | The server, on one line. |",
        "| `interval` | duration | `\"1s\"` | Between \\| reads. |",
        "| `mode` | `subscription` or `polling` | `\"subscription\"` | How to talk. |",
        "| `limit` | integer (optional) | none | An optional limit. |",
        "| `tags` | array of strings | `[\"a\", \"b\"]` | Tags. |",
        "### `[[connectors.<name>.config.nodes]]`\n\nRequired section, repeated once per item. The nodes.",
        "| `tag` | string | required | Its tag. |",
        "### `[connectors.<name>.config.retry]`\n\nOptional section. Retries.",
        "| `max` | integer | `0` | Most tries. |",
        "One of these forms, chosen by `type` (default `{ type = \"anonymous\" }`):",
        "- `type = \"username\"`: Someone.",
        "  - `username` (string, required): The name.",
        "  - `password_env` (string, optional): Where the password is.",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
    }
    assert!(
        !md.contains("interval_ms"),
        "retired keys are left out:\n{md}"
    );
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| `")).collect();
    assert!(
        rows[0].starts_with("| `endpoint`"),
        "required keys first: {rows:?}"
    );
}

#[test]
fn a_whole_file_starts_with_its_sections() {
    /// A file.
    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct File {
        /// Named things.
        #[serde(default)]
        things: std::collections::BTreeMap<String, Node>,
        /// This node.
        node: Node,
    }
    let md = render(
        &serde_json::to_value(schemars::schema_for!(File)).unwrap(),
        "",
    );
    assert!(
        md.starts_with("### `[node]`\n\nRequired section. This node."),
        "{md}"
    );
    assert!(
        md.contains("### `[things.<name>]`\n\nOptional section, one per name. Named things."),
        "{md}"
    );
}

struct Page(PathBuf);

impl Drop for Page {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn page(text: &str) -> Page {
    let path = std::env::temp_dir().join(format!(
        "mw-config-reference-{}-{}.md",
        std::process::id(),
        ulid::Ulid::generate()
    ));
    std::fs::write(&path, text).unwrap();
    Page(path)
}

#[test]
fn a_stale_block_is_rewritten_and_a_current_one_left_alone() {
    let p = page(&format!(
        "# Title\n\n{BEGIN} (cargo test) -->\nold\n{END}\n\nafter\n"
    ));
    assert_eq!(refresh(&p.0, "| new |\n").unwrap(), Freshness::Rewritten);
    let text = std::fs::read_to_string(&p.0).unwrap();
    assert_eq!(
        text,
        format!("# Title\n\n{BEGIN} (cargo test) -->\n\n| new |\n\n{END}\n\nafter\n")
    );
    assert_eq!(refresh(&p.0, "| new |").unwrap(), Freshness::Current);
    ensure_block(&p.0, "| new |");
}

#[test]
#[should_panic(expected = "was stale and has been regenerated")]
fn ensure_block_fails_on_a_stale_page() {
    let p = page(&format!("{BEGIN} -->\n{END}\n"));
    ensure_block(&p.0, "| fresh |");
}

#[test]
fn a_page_without_markers_says_what_to_add() {
    let p = page("# nothing here\n");
    let e = refresh(&p.0, "x").unwrap_err();
    assert!(e.to_string().contains("add both"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&p.0).unwrap(),
        "# nothing here\n",
        "left alone"
    );
}
