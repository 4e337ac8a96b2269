//! `docs/connectors/sim.md` embeds the config reference rendered from the schema in the
//! plugin's manifest; when the page is stale this test rewrites it and fails.

use std::path::Path;

use millwright_plugin_sdk::config_reference;
use millwright_plugin_sdk::manifest::Manifest;
use millwright_plugin_sim::SIM;

#[test]
fn the_connector_page_documents_the_current_config() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connectors/sim.md");
    config_reference::ensure_block(&page, &config_reference::plugin(&Manifest::of(&SIM)));
}

#[test]
fn the_reference_has_every_key_with_its_default() {
    let md = config_reference::plugin(&Manifest::of(&SIM));
    for needle in [
        "| `interval` | duration | `\"1s\"` |",
        "| `tags` | array of strings | `[\"value\"]` |",
        "| `count` | integer (optional) | none |",
        "| `degrade_every` | duration (optional) | none |",
        "| `hang_for` | duration | `\"8s\"` |",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
    }
}
