//! The plugins a node runs: for each `[connectors.<name>]`, load the plugin (in or out of
//! process), check its manifest, validate the instance's config against the manifest's JSON
//! Schema, and prepare the transport the connector actor uses. All of it happens at boot,
//! before any instance is opened, so a bad plugin or a bad config stops the node with one
//! sentence instead of a crash loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use millwright_connect::{Transport, TransportFactory};
use millwright_plugin_sdk::connector::Kind;
use millwright_plugin_sdk::manifest::Manifest;
use millwright_plugin_sdk::protocol::Request;
use serde::Serialize;

use crate::config::{ConnectorConfig, PluginMode};
use crate::plugin_host::{self, LoadedPlugin, PluginError};
use crate::plugin_process::{self, ProcessSpec, ProcessTransport};

/// Why a connector could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PreparePluginError {
    /// The plugin library was refused.
    #[error("connectors.{name}: {source}")]
    Load {
        /// The connector.
        name: String,
        /// Why.
        #[source]
        source: PluginError,
    },
    /// The plugin executable did not start or shake hands.
    #[error("connectors.{name}: cannot start plugin {path}: {reason}")]
    Start {
        /// The connector.
        name: String,
        /// The executable.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No plugin of that name in the search path.
    #[error(
        "connectors.{name}.plugin: no plugin named {plugin:?} found (looked for {candidates} in \
         {dirs}); build it (`cargo build -p millwright-plugin-{plugin}`), add its directory to \
         MILLWRIGHT_PLUGIN_PATH, or give its path"
    )]
    NotFound {
        /// The connector.
        name: String,
        /// The plugin name given.
        plugin: String,
        /// The file names tried, comma-separated.
        candidates: String,
        /// The directories searched, comma-separated.
        dirs: String,
    },
    /// A connector key that does not fit the plugin's shapes.
    #[error("connectors.{name}.{key}: {problem}")]
    Shape {
        /// The connector.
        name: String,
        /// The key.
        key: &'static str,
        /// What is wrong, and the fix.
        problem: String,
    },
    /// The instance's config does not match the plugin's schema.
    #[error(
        "connectors.{name}.config{at}: {problem} (plugin {plugin} {version}; run `millwright \
         plugin inspect {path}` for its config schema)"
    )]
    Config {
        /// The connector.
        name: String,
        /// Where in the config (`.count`), empty for the whole table.
        at: String,
        /// What is wrong.
        problem: String,
        /// The plugin's id.
        plugin: String,
        /// Its version.
        version: String,
        /// Its file.
        path: String,
    },
}

/// One connector, ready to be supervised.
#[derive(Clone)]
pub struct PreparedConnector {
    /// Its name (`[connectors.<name>]`).
    pub name: String,
    /// How it runs.
    pub mode: PluginMode,
    /// Its plugin's file.
    pub path: PathBuf,
    /// Its plugin's manifest.
    pub manifest: Manifest,
    /// Its settings.
    pub config: ConnectorConfig,
    /// A transport per incarnation.
    pub transport: TransportFactory,
}

impl std::fmt::Debug for PreparedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedConnector")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("plugin", &self.manifest.id)
            .finish()
    }
}

/// What `/plugins` and `millwright plugin list` show for one connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PluginInfo {
    /// The connector instance.
    pub instance: String,
    /// The plugin's id.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// `in_process` or `out_of_process`.
    pub mode: String,
    /// Its file.
    pub path: String,
    /// The SDK it was built with.
    pub sdk_version: String,
    /// Its ABI.
    pub abi: String,
}

impl PreparedConnector {
    /// Its line in `/plugins`.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            instance: self.name.clone(),
            plugin: self.manifest.id.clone(),
            version: self.manifest.version.clone(),
            mode: self.mode.as_str().to_owned(),
            path: self.path.display().to_string(),
            sdk_version: self.manifest.sdk_version.clone(),
            abi: format!("{}.{}", self.manifest.abi_major, self.manifest.abi_minor),
        }
    }
}

/// Reads a plugin's manifest, whichever kind of file it is: a library is loaded (its header
/// checked first), an executable is started for its handshake and stopped again.
///
/// # Errors
/// The load or start failure, as one sentence.
pub async fn inspect(
    path: &Path,
    mode: PluginMode,
) -> Result<(Manifest, Option<Arc<LoadedPlugin>>), String> {
    match mode {
        PluginMode::InProcess => {
            let loaded = Arc::new(plugin_host::load(path).map_err(|e| e.to_string())?);
            Ok((loaded.manifest.clone(), Some(loaded)))
        }
        PluginMode::OutOfProcess => {
            let mut t = ProcessTransport::new(ProcessSpec {
                program: path.to_path_buf(),
                instance: "inspect".to_owned(),
                call_timeout: Duration::from_secs(10),
            });
            // A harmless request starts the process and shakes hands.
            t.request(Request::Health)
                .await
                .map_err(|e| e.to_string())?;
            let manifest = t
                .manifest()
                .cloned()
                .ok_or("no manifest in the handshake")?;
            Ok((manifest, None))
        }
    }
}

/// Prepares every `[connectors.<name>]` (see the module docs).
///
/// # Errors
/// The first connector that cannot run, with its name, the cause and the fix.
pub async fn prepare(
    connectors: &BTreeMap<String, ConnectorConfig>,
) -> Result<Vec<PreparedConnector>, Box<PreparePluginError>> {
    let mut out = Vec::with_capacity(connectors.len());
    for (name, c) in connectors {
        let mut c = c.clone();
        c.plugin = resolve(name, &c.plugin, c.mode)?;
        let c = &c;
        let (manifest, loaded) = match c.mode {
            PluginMode::InProcess => {
                let loaded =
                    plugin_host::load(&c.plugin).map_err(|source| PreparePluginError::Load {
                        name: name.clone(),
                        source,
                    })?;
                (loaded.manifest.clone(), Some(Arc::new(loaded)))
            }
            PluginMode::OutOfProcess => {
                inspect(&c.plugin, c.mode)
                    .await
                    .map_err(|reason| PreparePluginError::Start {
                        name: name.clone(),
                        path: c.plugin.clone(),
                        reason,
                    })?
            }
        };
        validate(name, c, &manifest)?;
        for subject in &c.subscribe {
            if let Err(e) = millwright_bus::subject::validate_subscribe_subject(subject) {
                return Err(Box::new(PreparePluginError::Shape {
                    name: name.clone(),
                    key: "subscribe",
                    problem: format!("{subject:?}: {e}"),
                }));
            }
        }
        if !c.subscribe.is_empty() && !manifest.kinds.contains(&Kind::Sink) {
            return Err(Box::new(PreparePluginError::Shape {
                name: name.clone(),
                key: "subscribe",
                problem: format!(
                    "plugin {} is not a sink (it offers {:?}), so it cannot take messages; \
                     remove `subscribe`",
                    manifest.id, manifest.kinds
                ),
            }));
        }
        if c.subscribe.is_empty() && manifest.kinds == [Kind::Sink] {
            tracing::warn!(connector = %name, "a sink with no `subscribe` subjects receives nothing");
        }
        let transport: TransportFactory = match loaded {
            Some(lib) => plugin_host::transport_factory(lib, name.clone(), c.call_timeout),
            None => plugin_process::transport_factory(ProcessSpec {
                program: c.plugin.clone(),
                instance: name.clone(),
                call_timeout: c.call_timeout,
            }),
        };
        tracing::info!(connector = %name, plugin = %manifest.id, version = %manifest.version, mode = c.mode.as_str(), "connector prepared");
        out.push(PreparedConnector {
            name: name.clone(),
            mode: c.mode,
            path: c.plugin.clone(),
            manifest,
            config: c.clone(),
            transport,
        });
    }
    Ok(out)
}

/// Checks an instance's config against its plugin's schema.
fn validate(
    name: &str,
    c: &ConnectorConfig,
    manifest: &Manifest,
) -> Result<(), Box<PreparePluginError>> {
    let error = |at: String, problem: String| {
        Box::new(PreparePluginError::Config {
            name: name.to_owned(),
            at,
            problem,
            plugin: manifest.id.clone(),
            version: manifest.version.clone(),
            path: c.plugin.display().to_string(),
        })
    };
    let validator = jsonschema::validator_for(&manifest.config_schema).map_err(|e| {
        error(
            String::new(),
            format!("the plugin's schema is invalid: {e}"),
        )
    })?;
    if let Some(e) = validator.iter_errors(&c.config).next() {
        let at = e
            .instance_path()
            .to_string()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| format!(".{s}"))
            .collect::<String>();
        return Err(error(at, e.to_string()));
    }
    Ok(())
}

/// The directories a plugin name is looked up in: `MILLWRIGHT_PLUGIN_PATH`, then the
/// directory of the running executable.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("MILLWRIGHT_PLUGIN_PATH")
        .map(|p| {
            // Empty entries (which a shell reads as the working directory) are skipped.
            std::env::split_paths(&p)
                .filter(|d| !d.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    dirs
}

/// The file names a plugin `name` may have in `mode`, most specific first.
pub fn candidate_names(name: &str, mode: PluginMode) -> Vec<String> {
    use std::env::consts::{DLL_PREFIX, DLL_SUFFIX, EXE_SUFFIX};
    let crate_name = format!("millwright-plugin-{name}");
    match mode {
        PluginMode::InProcess => vec![
            format!("{DLL_PREFIX}{}{DLL_SUFFIX}", crate_name.replace('-', "_")),
            format!("{DLL_PREFIX}{}{DLL_SUFFIX}", name.replace('-', "_")),
        ],
        PluginMode::OutOfProcess => vec![
            format!("{crate_name}{EXE_SUFFIX}"),
            format!("{name}{EXE_SUFFIX}"),
        ],
    }
}

/// A path as given, or the file a bare plugin name (no `/`, no extension) stands for.
fn resolve(
    connector: &str,
    plugin: &Path,
    mode: PluginMode,
) -> Result<PathBuf, Box<PreparePluginError>> {
    // A bare name is always a name (write `./sim` for a file in the working directory).
    let is_name = plugin.components().count() == 1
        && matches!(
            plugin.components().next(),
            Some(std::path::Component::Normal(_))
        )
        && plugin.extension().is_none();
    if !is_name {
        return Ok(plugin.to_path_buf());
    }
    let name = plugin.display().to_string();
    let candidates = candidate_names(&name, mode);
    let dirs = search_dirs();
    for dir in &dirs {
        for file in &candidates {
            let path = dir.join(file);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(Box::new(PreparePluginError::NotFound {
        name: connector.to_owned(),
        plugin: name,
        candidates: candidates.join(", "),
        dirs: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }))
}
