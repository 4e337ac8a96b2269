//! The manifest: what a plugin says about itself, read by the loader right after the static
//! header's checks (in process, its `manifest` function is the first plugin code to run; out of
//! process, it comes in the `Hello`).
//!
//! It names the plugin, its version, the SDK and ABI it was built against, the target, the
//! shapes it offers and the JSON Schema of its config (derived from the config type with
//! `schemars`, so the docs on the config fields are the schema's descriptions). The host
//! validates a user's config against that schema and refuses a mismatch with the file, the key
//! and the fix, before the plugin is even opened.

use serde::{Deserialize, Serialize};

use crate::connector::{Kind, Plugin};
use crate::protocol::VTable;

/// The SDK version a plugin was built with.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The major version of the plugin ABI and protocol: a host refuses any other.
///
/// The encoding of the messages is part of it: ABI 1 carried JSON requests and responses;
/// ABI 2 carries MessagePack ([`codec`](crate::codec)), with the envelope's id and times in
/// binary; ABI 3 exports the in-process header as data (read before any plugin code runs) and
/// replaces its blocking `handle` with a `start` that answers at once or calls back
/// ([`abi`](crate::abi)); ABI 4 makes a source's read wait for data, with an `interrupt` entry
/// in the header, an `Interrupt` frame out of process and the `interrupted` response, and
/// shares one runtime among a library's instances. The manifest and the stdio handshake are JSON in all of them, so each
/// side can still read the other's versions and refuse with a message that names them.
pub const ABI_MAJOR: u32 = 4;
/// The minor version: a host accepts plugins with a minor at most its own (additions only).
pub const ABI_MINOR: u32 = 0;

/// Whether a plugin of ABI minor `minor` (of our major) can be loaded: minors only add.
#[allow(
    clippy::absurd_extreme_comparisons,
    reason = "ABI_MINOR starts at 0 for each major and grows; the comparison is for later minors"
)]
pub fn supports_minor(minor: u32) -> bool {
    minor <= ABI_MINOR
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// One line about it.
    pub description: String,
    /// The SDK version it was built with.
    pub sdk_version: String,
    /// The ABI major version.
    pub abi_major: u32,
    /// The ABI minor version.
    pub abi_minor: u32,
    /// `<arch>-<os>` it was built for (`x86_64-linux`).
    pub target: String,
    /// The shapes it offers.
    pub kinds: Vec<Kind>,
    /// The JSON Schema of its config.
    pub config_schema: serde_json::Value,
}

/// The target this code is built for, as manifests name it.
pub fn this_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

impl Manifest {
    /// The manifest of plugin `P` with its vtable.
    pub fn of<P: Plugin>(vtable: &VTable<P>) -> Manifest {
        Manifest {
            id: P::ID.to_owned(),
            version: P::VERSION.to_owned(),
            description: P::DESCRIPTION.to_owned(),
            sdk_version: SDK_VERSION.to_owned(),
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            target: this_target(),
            kinds: vtable.kinds.to_vec(),
            config_schema: serde_json::to_value(schemars::schema_for!(P::Config))
                .unwrap_or(serde_json::Value::Null),
        }
    }

    /// Whether a host of this SDK can load it; the error is one sentence naming the versions
    /// found, the versions supported and the fix.
    ///
    /// # Errors
    /// A description of the mismatch.
    pub fn check_compatible(&self) -> Result<(), String> {
        if self.abi_major != ABI_MAJOR || !supports_minor(self.abi_minor) {
            return Err(format!(
                "plugin {} {} was built for plugin ABI {}.{} (SDK {}), but this node supports \
                 ABI {ABI_MAJOR}.0 to {ABI_MAJOR}.{ABI_MINOR} (SDK {SDK_VERSION}); rebuild the \
                 plugin against millwright-plugin-sdk {SDK_VERSION}",
                self.id, self.version, self.abi_major, self.abi_minor, self.sdk_version
            ));
        }
        let here = this_target();
        if self.target != here {
            return Err(format!(
                "plugin {} {} was built for {}, but this node runs on {here}; build the plugin \
                 for {here}",
                self.id, self.version, self.target
            ));
        }
        Ok(())
    }
}
