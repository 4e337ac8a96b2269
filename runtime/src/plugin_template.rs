//! `millwright plugin new NAME`: the template of a plugin crate.
//!
//! The crate builds a `cdylib` (in process), an executable (out of process) and an `rlib` (for
//! its tests) from the same code, with a documented config struct, a source that counts, and a
//! unit test on the SDK's in-memory harness. The files are in `plugin_template/`; `{{name}}`,
//! `{{crate}}`, `{{sdk}}` and `{{sdk_version}}` are filled in.

use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("plugin_template/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("plugin_template/lib.rs.tmpl");
const MAIN_RS: &str = include_str!("plugin_template/main.rs.tmpl");
const README: &str = include_str!("plugin_template/README.md.tmpl");

/// Writes the crate `name` under `parent`; its folder.
///
/// # Errors
/// A bad name, an existing folder, or an I/O error, as one sentence.
pub fn write(name: &str, parent: &Path, sdk: Option<&Path>) -> Result<PathBuf, String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(format!(
            "invalid plugin name {name:?}: use lowercase letters, digits and '-', starting with \
             a letter (e.g. acme-press)"
        ));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(format!(
            "{} already exists; choose another name or --path",
            dir.display()
        ));
    }
    let sdk = match sdk {
        Some(p) => p.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk"),
    };
    let sdk = sdk.canonicalize().map_err(|e| {
        format!(
            "the plugin SDK at {} is not there ({e}); pass --sdk-path to a millwright-plugin-sdk checkout",
            sdk.display()
        )
    })?;
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string())
            .replace(
                "{{sdk_version}}",
                millwright_plugin_sdk::manifest::SDK_VERSION,
            )
    };
    let io = |e: std::io::Error| format!("cannot write the plugin in {}: {e}", dir.display());
    std::fs::create_dir_all(dir.join("src")).map_err(io)?;
    std::fs::write(dir.join("Cargo.toml"), fill(CARGO_TOML)).map_err(io)?;
    std::fs::write(dir.join("src/lib.rs"), fill(LIB_RS)).map_err(io)?;
    std::fs::write(dir.join("src/main.rs"), fill(MAIN_RS)).map_err(io)?;
    std::fs::write(dir.join("README.md"), fill(README)).map_err(io)?;
    std::fs::write(dir.join(".gitignore"), "/target\n").map_err(io)?;
    Ok(dir)
}
