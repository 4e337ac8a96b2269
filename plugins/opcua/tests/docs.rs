//! `docs/connectors/opcua.md` embeds the config reference rendered from the schema in the
//! plugin's manifest; when the page is stale this test rewrites it and fails.

use std::path::Path;

use millwright_plugin_opcua::OPCUA;
use millwright_plugin_sdk::config_reference;
use millwright_plugin_sdk::manifest::Manifest;

#[test]
fn the_connector_page_documents_the_current_config() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connectors/opcua.md");
    config_reference::ensure_block(&page, &config_reference::plugin(&Manifest::of(&OPCUA)));
}

#[test]
fn the_reference_lists_every_key_with_its_default() {
    let md = config_reference::plugin(&Manifest::of(&OPCUA));
    for needle in [
        "| `endpoint` | string | required |",
        "| `publishing_interval` | duration | `\"1s\"` |",
        "| `watchdog_timeout` | duration | `\"30s\"` |",
        "| `sampling_interval` | duration (optional) | none |",
        "### `[[connectors.<name>.config.nodes]]`",
        "| `tag` | string | required |",
        "- `type = \"username\"`:",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
    }
    assert!(
        !md.contains("_ms`") && !md.contains("reconnect_"),
        "retired keys are not documented:\n{md}"
    );
}
