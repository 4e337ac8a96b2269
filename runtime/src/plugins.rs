//! The plugins a node runs: for each `[connectors.<name>]`, find the plugin, load it (in or
//! out of process), check its manifest, validate the instance's config against the manifest's
//! JSON Schema, and prepare the transport the connector actor uses.
//!
//! [`check`] does all of it but the transports, and makes no instance: boot runs it through
//! [`prepare`] (and stops at the first problem, with one sentence, instead of a crash loop),
//! `millwright check` runs it alone and reports every problem with its line. So `check`
//! answers `ok` exactly when boot would accept the connectors.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use millwright_connect::{Transport, TransportFactory};
use millwright_plugin_sdk::connector::Kind;
use millwright_plugin_sdk::manifest::Manifest;
use millwright_plugin_sdk::protocol::Request;
use serde::Serialize;
use serde_json::Value;

use crate::config::{ConnectorConfig, Diagnostic, PluginMode};
use crate::plugin_host::{self, LoadedPlugin, PluginError};
use crate::plugin_process::{self, ProcessSpec, ProcessTransport};

/// Why a connector could not be prepared. Each names the connector's key, the problem and the
/// fix ([`key_path`](Self::key_path), [`problem`](Self::problem), [`fix`](Self::fix)).
#[derive(Debug, thiserror::Error)]
pub enum PreparePluginError {
    /// A plugin path that names no file.
    Missing {
        /// The connector.
        name: String,
        /// The path looked at, as given.
        path: PathBuf,
    },
    /// No plugin of that name in the search path.
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
    /// The plugin library was refused.
    Load {
        /// The connector.
        name: String,
        /// Why.
        #[source]
        source: PluginError,
    },
    /// The plugin executable did not start or shake hands.
    Start {
        /// The connector.
        name: String,
        /// The executable.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A connector key that does not fit the plugin's shapes.
    Shape {
        /// The connector.
        name: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// The instance's config does not match the plugin's schema.
    Config {
        /// The connector.
        name: String,
        /// Where in `config` (`["count"]`), empty for the whole table.
        at: Vec<String>,
        /// What is wrong.
        problem: String,
        /// How to fix it, naming the plugin and where its schema is shown.
        fix: String,
    },
}

impl PreparePluginError {
    /// The connector it is about.
    pub fn connector(&self) -> &str {
        match self {
            Self::Missing { name, .. }
            | Self::NotFound { name, .. }
            | Self::Load { name, .. }
            | Self::Start { name, .. }
            | Self::Shape { name, .. }
            | Self::Config { name, .. } => name,
        }
    }

    /// The config key it is about: `["connectors", "line2", "config", "cont"]`.
    pub fn key_path(&self) -> Vec<String> {
        let mut path = vec!["connectors".to_owned(), self.connector().to_owned()];
        match self {
            Self::Missing { .. }
            | Self::NotFound { .. }
            | Self::Load { .. }
            | Self::Start { .. } => {
                path.push("plugin".to_owned());
            }
            Self::Shape { key, .. } => path.push((*key).to_owned()),
            Self::Config { at, .. } => {
                path.push("config".to_owned());
                path.extend(at.iter().cloned());
            }
        }
        path
    }

    /// What is wrong.
    pub fn problem(&self) -> String {
        match self {
            Self::Missing { path, .. } => format!("no plugin file at {}", path.display()),
            Self::NotFound {
                plugin,
                candidates,
                dirs,
                ..
            } => format!("no plugin named {plugin:?}: looked for {candidates} in {dirs}"),
            Self::Load { source, .. } => source.to_string(),
            Self::Start { path, reason, .. } => {
                format!("cannot start plugin {}: {reason}", path.display())
            }
            Self::Shape { problem, .. } | Self::Config { problem, .. } => problem.clone(),
        }
    }

    /// How to fix it, when [`problem`](Self::problem) does not say it already.
    pub fn fix(&self) -> Option<String> {
        match self {
            Self::Missing { path, .. } if path.is_relative() => Some(format!(
                "a relative path is relative to the working directory{}; build the plugin, or \
                 fix the path",
                std::env::current_dir()
                    .map(|d| format!(" ({})", d.display()))
                    .unwrap_or_default()
            )),
            Self::Missing { .. } => Some("build the plugin, or fix the path".to_owned()),
            Self::NotFound { plugin, .. } => Some(format!(
                "build it (`cargo build -p millwright-plugin-{plugin}`), add its directory to \
                 MILLWRIGHT_PLUGIN_PATH, or give its path"
            )),
            Self::Load { .. } | Self::Start { .. } => None,
            Self::Shape { fix, .. } | Self::Config { fix, .. } => Some(fix.clone()),
        }
    }

    /// The problem as a config diagnostic: `file`, key path, the line found in `text`, fix.
    pub fn diagnostic(&self, file: &str, text: &str) -> Diagnostic {
        Diagnostic::located(file, text, &self.key_path(), self.problem(), self.fix())
    }
}

impl fmt::Display for PreparePluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key_path().join("."), self.problem())?;
        match self.fix() {
            Some(fix) => write!(f, " ({fix})"),
            None => Ok(()),
        }
    }
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
    /// Its plugin's manifest (one per plugin file, shared by its connectors).
    pub manifest: Arc<Manifest>,
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

/// A connector whose plugin was found and checked (its file, header, ABI and manifest) and
/// whose config fits the plugin's schema and shapes: everything boot checks, with no instance
/// made.
#[derive(Clone)]
pub struct CheckedConnector {
    /// Its name (`[connectors.<name>]`).
    pub name: String,
    /// Its settings, `plugin` resolved to the file.
    pub config: ConnectorConfig,
    /// Its plugin's manifest (one per plugin file, shared by its connectors).
    pub manifest: Arc<Manifest>,
    /// The library, in process.
    loaded: Option<Arc<LoadedPlugin>>,
}

impl std::fmt::Debug for CheckedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedConnector")
            .field("name", &self.name)
            .field("path", &self.config.plugin)
            .field("plugin", &self.manifest.id)
            .finish()
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

/// Checks every `[connectors.<name>]` as boot does (see the module docs), all of them: the
/// connectors that passed, and every problem of the others (a plugin that cannot be found or
/// loaded is one problem; a config that does not fit can be several).
pub async fn check(
    connectors: &BTreeMap<String, ConnectorConfig>,
) -> (Vec<CheckedConnector>, Vec<PreparePluginError>) {
    let mut passed = Vec::with_capacity(connectors.len());
    let mut problems = Vec::new();
    // Each plugin file is loaded (or started for its handshake) once, whatever the number of
    // connectors that run it: one manifest and one library in memory.
    let mut found = Found::new();
    for (name, c) in connectors {
        match check_one(name, c, &mut found).await {
            Ok(checked) => passed.push(checked),
            Err(mut found) => problems.append(&mut found),
        }
    }
    (passed, problems)
}

/// The plugin files already found, by path and mode.
type Found = HashMap<(PathBuf, PluginMode), (Arc<Manifest>, Option<Arc<LoadedPlugin>>)>;

async fn check_one(
    name: &str,
    c: &ConnectorConfig,
    cache: &mut Found,
) -> Result<CheckedConnector, Vec<PreparePluginError>> {
    // The subjects' syntax needs no plugin: reported even when the plugin is not found.
    let mut problems: Vec<PreparePluginError> = c
        .subscribe
        .iter()
        .filter_map(|subject| {
            let e = millwright_bus::subject::validate_subscribe_subject(subject).err()?;
            Some(PreparePluginError::Shape {
                name: name.to_owned(),
                key: "subscribe",
                problem: format!("{subject:?}: {e}"),
                fix: "give dot-separated tokens, with `*` for one token or a final `>` for \
                      the rest"
                    .to_owned(),
            })
        })
        .collect();
    let refused = |problem: PreparePluginError, mut problems: Vec<PreparePluginError>| {
        problems.insert(0, problem);
        problems
    };
    let mut c = c.clone();
    c.plugin = match resolve(name, &c.plugin, c.mode) {
        Ok(path) => path,
        Err(e) => return Err(refused(*e, problems)),
    };
    let key = (c.plugin.clone(), c.mode);
    let found = match c.mode {
        _ if cache.contains_key(&key) => Ok(cache[&key].clone()),
        PluginMode::InProcess => plugin_host::load(&c.plugin)
            .map(|loaded| (Arc::new(loaded.manifest.clone()), Some(Arc::new(loaded))))
            .map_err(|source| PreparePluginError::Load {
                name: name.to_owned(),
                source,
            }),
        PluginMode::OutOfProcess => inspect(&c.plugin, c.mode)
            .await
            .map(|(manifest, loaded)| (Arc::new(manifest), loaded))
            .map_err(|reason| PreparePluginError::Start {
                name: name.to_owned(),
                path: c.plugin.clone(),
                reason,
            }),
    };
    let (manifest, loaded) = match found {
        Ok(found) => {
            cache.entry(key).or_insert_with(|| found.clone());
            found
        }
        Err(e) => return Err(refused(e, problems)),
    };
    problems.extend(validate(name, &c, &manifest));
    if !c.subscribe.is_empty() && !manifest.kinds.contains(&Kind::Sink) {
        problems.push(PreparePluginError::Shape {
            name: name.to_owned(),
            key: "subscribe",
            problem: format!(
                "plugin {} is not a sink (it offers {:?}), so it cannot take messages",
                manifest.id, manifest.kinds
            ),
            fix: "remove `subscribe`".to_owned(),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CheckedConnector {
        name: name.to_owned(),
        config: c,
        manifest,
        loaded,
    })
}

/// Prepares every `[connectors.<name>]`: [`check`], then a transport per connector.
///
/// # Errors
/// The first problem [`check`] found, with the connector's key, the cause and the fix.
pub async fn prepare(
    connectors: &BTreeMap<String, ConnectorConfig>,
) -> Result<Vec<PreparedConnector>, Box<PreparePluginError>> {
    let (checked, problems) = check(connectors).await;
    if let Some(first) = problems.into_iter().next() {
        return Err(Box::new(first));
    }
    let mut out = Vec::with_capacity(checked.len());
    for CheckedConnector {
        name,
        config: c,
        manifest,
        loaded,
    } in checked
    {
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
            name,
            mode: c.mode,
            path: c.plugin.clone(),
            manifest,
            config: c,
            transport,
        });
    }
    Ok(out)
}

/// Checks an instance's config against its plugin's schema: every mismatch, each at its key.
fn validate(name: &str, c: &ConnectorConfig, manifest: &Manifest) -> Vec<PreparePluginError> {
    let schema_note = format!(
        "the config schema of plugin {} {} is shown by `millwright plugin inspect {}`",
        manifest.id,
        manifest.version,
        c.plugin.display()
    );
    let error =
        |at: Vec<String>, problem: String, fix: Option<String>| PreparePluginError::Config {
            name: name.to_owned(),
            at,
            problem,
            fix: match fix {
                Some(fix) if fix.ends_with('?') => format!("{fix} {}", capitalized(&schema_note)),
                Some(fix) => format!("{fix}; {schema_note}"),
                None => schema_note.clone(),
            },
        };
    // A key the plugin retired is named with what to write instead, before the schema's
    // generic "not allowed" could be.
    if let Err(r) = millwright_plugin_sdk::retired::check(&manifest.config_schema, &c.config) {
        let at = r
            .path
            .replace('[', ".")
            .replace(']', "")
            .split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let (problem, fix) = match r.message.split_once("; ") {
            Some((problem, fix)) => (problem.to_owned(), Some(fix.to_owned())),
            None => (r.message.clone(), None),
        };
        return vec![error(at, problem, fix)];
    }
    let validator = match jsonschema::validator_for(&manifest.config_schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![error(
                Vec::new(),
                format!("the plugin's schema is invalid: {e}"),
                Some("report it to the plugin's authors".to_owned()),
            )];
        }
    };
    let mut out = Vec::new();
    for e in validator.iter_errors(&c.config) {
        let at: Vec<String> = e
            .instance_path()
            .into_iter()
            .map(|seg| match seg {
                jsonschema::paths::LocationSegment::Property(p) => p.to_string(),
                jsonschema::paths::LocationSegment::Index(i) => i.to_string(),
            })
            .collect();
        match e.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                let known = known_keys(&manifest.config_schema, &at);
                for key in unexpected {
                    let fix = match crate::config::error::suggest(key, &known) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if known.is_empty() => "this table takes no keys".to_owned(),
                        None => format!("known keys: {}", known.join(", ")),
                    };
                    let mut at = at.clone();
                    at.push(key.clone());
                    out.push(error(at, format!("unknown key `{key}`"), Some(fix)));
                }
            }
            jsonschema::error::ValidationErrorKind::Required { property } => {
                let key = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_owned);
                let table = std::iter::once(format!("connectors.{name}.config"))
                    .chain(at.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(".");
                let fix = format!("add `{key} = ...` to [{table}]");
                let mut at = at.clone();
                at.push(key);
                out.push(error(at, "missing required key".to_owned(), Some(fix)));
            }
            _ => out.push(error(at, e.to_string(), None)),
        }
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The keys the schema allows in the table at `at` of an instance (following local `$ref`s
/// and the alternatives of `anyOf`/`oneOf`/`allOf`); empty when the schema does not list them.
fn known_keys(schema: &Value, at: &[String]) -> Vec<String> {
    fn deref<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
        // A bounded walk: a `$ref` cycle ends instead of looping.
        for _ in 0..16 {
            match node
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|pointer| root.pointer(pointer))
            {
                Some(target) => node = target,
                None => break,
            }
        }
        node
    }
    /// The node and its alternatives, each dereferenced.
    fn branches<'a>(root: &'a Value, node: &'a Value) -> Vec<&'a Value> {
        let node = deref(root, node);
        let mut out = vec![node];
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(alts) = node.get(key).and_then(Value::as_array) {
                out.extend(alts.iter().map(|a| deref(root, a)));
            }
        }
        out
    }
    let mut nodes = vec![schema];
    for seg in at {
        nodes = nodes
            .into_iter()
            .flat_map(|n| branches(schema, n))
            .filter_map(|n| {
                n.get("properties")
                    .and_then(|p| p.get(seg.as_str()))
                    .or_else(|| seg.parse::<usize>().ok().and(n.get("items")))
            })
            .collect();
    }
    let mut keys: Vec<String> = nodes
        .into_iter()
        .flat_map(|n| branches(schema, n))
        .filter_map(|n| n.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
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
        if !plugin.exists() {
            return Err(Box::new(PreparePluginError::Missing {
                name: connector.to_owned(),
                path: plugin.to_path_buf(),
            }));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_follow_properties_items_refs_and_alternatives() {
        let schema = serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "endpoint": {"type": "string"},
                "nodes": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                "auth": {"anyOf": [{"$ref": "#/$defs/Auth"}, {"type": "null"}]}
            },
            "$defs": {
                "Node": {"type": "object", "properties": {"tag": {}, "node_id": {}}},
                "Auth": {"type": "object", "properties": {"user": {}, "password": {}}}
            }
        });
        let keys = |at: &[&str]| {
            let at: Vec<String> = at.iter().map(|s| (*s).to_owned()).collect();
            known_keys(&schema, &at)
        };
        assert_eq!(keys(&[]), ["auth", "endpoint", "nodes"]);
        assert_eq!(keys(&["nodes", "1"]), ["node_id", "tag"]);
        assert_eq!(keys(&["auth"]), ["password", "user"]);
        assert!(keys(&["endpoint"]).is_empty());
    }

    #[test]
    fn a_misspelled_key_is_reported_at_its_path_with_the_closest_key() {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "id": "p", "version": "1.0.0", "description": "", "sdk_version": "0",
            "abi_major": 3, "abi_minor": 0, "target": "", "kinds": ["source"],
            "config_schema": {
                "type": "object", "additionalProperties": false, "required": ["count"],
                "properties": {"count": {"type": "integer"}, "interval": {"type": "string"}}
            }
        }))
        .unwrap();
        let c: ConnectorConfig =
            toml::from_str("plugin = \"/p.so\"\nconfig = { cont = 5, intervall = 3, zz = 1 }")
                .unwrap();
        let problems: Vec<String> = validate("line2", &c, &manifest)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems.iter().any(|p| {
                p.starts_with(
            "connectors.line2.config.cont: unknown key `cont` (did you mean `count`? The config \
             schema of plugin p 1.0.0 is shown by `millwright plugin inspect /p.so`)"
        )
            }),
            "{problems:#?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with(
                "connectors.line2.config.zz: unknown key `zz` (known keys: count, interval;"
            )),
            "{problems:#?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with(
                "connectors.line2.config.count: missing required key (add `count = ...` to \
             [connectors.line2.config];"
            )),
            "{problems:#?}"
        );
    }
}
