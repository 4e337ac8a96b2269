//! `docs/connectors/cmms-http.md` embeds the config reference rendered from the schema in the
//! plugin's manifest (itself derived from the `///` docs on the config types). When the page is
//! stale this test rewrites it and fails, so the change shows up in review.

use std::path::Path;

use millwright_plugin_cmms_http::CMMS;
use millwright_plugin_sdk::config_reference;
use millwright_plugin_sdk::manifest::Manifest;

#[test]
fn the_connector_page_documents_the_current_config() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connectors/cmms-http.md");
    config_reference::ensure_block(&page, &config_reference::plugin(&Manifest::of(&CMMS)));
}

#[test]
fn the_reference_has_every_key_with_its_default() {
    let md = config_reference::plugin(&Manifest::of(&CMMS));
    for needle in [
        "| `base_url` | string | required |",
        "| `request_timeout` | duration | `\"5s\"` |",
        "| `sandbox` | boolean | `false` |",
        "### `[connectors.<name>.config.auth]`\n\nOptional section.",
        "| `scheme` | `bearer` or `api_key` | `\"bearer\"` |",
        "| `secret_env` | string (optional) | none |",
        "### `[connectors.<name>.config.paths]`",
        "| `asset` | string | `\"/assets/{id}\"` |",
        "### `[connectors.<name>.config.retry]`",
        "| `max_retries` | integer | `3` |",
        "| `base` | duration | `\"500ms\"` |",
        "### `[connectors.<name>.config.breaker]`",
        "| `failure_threshold` | integer | `5` |",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
    }
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| `")).collect();
    assert!(
        rows[0].starts_with("| `base_url`"),
        "required first: {rows:?}"
    );
}
