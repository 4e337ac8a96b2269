//! The node's TOML configuration: the types (each field documented once, here), loading and
//! validation.
//!
//! Loading is strict: an unknown key, a wrong type, a missing required key or a value that
//! fails validation is reported as a [`Diagnostic`] naming the file, the key path, the line and
//! a hint (see [`error`]). Validation does no I/O: it never connects, binds or creates
//! anything. `millwright check` runs this, then `plugins::check` (which loads each connector's
//! plugin and validates its config against the plugin's schema, as boot does).
//!
//! Durations are humantime strings (`"500ms"`, `"5s"`, `"2m"`). Every key except
//! `node.name` has a default, so the smallest config is:
//!
//! ```toml
//! [node]
//! name = "line1"
//! ```
//!
//! With no `bus.nats_url` the node runs on the embedded in-process bus.

pub mod address;
pub mod docs;
pub use millwright_plugin_sdk::duration;
pub mod error;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Diagnostic};

/// A whole node configuration (one TOML file).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this config was read from (set by [`Config::parse`]; not a key), so that
    /// errors found later (a plugin's schema) can name it.
    #[serde(skip)]
    #[schemars(skip)]
    pub file: Option<String>,
    /// This node: its name, data directory and timing.
    pub node: NodeConfig,
    /// The bus: NATS when `nats_url` is set, the embedded in-process bus otherwise.
    #[serde(default)]
    pub bus: BusConfig,
    /// The broker: how events reach NATS, and the disk queue and DLQ behind it.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// The HTTP server: probes, health JSON, status page and control endpoints.
    #[serde(default)]
    pub http: HttpConfig,
    /// The Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Restart policy of the node's supervisors.
    #[serde(default)]
    pub supervision: SupervisionConfig,
    /// The liveness probe that detects components that stop answering.
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    /// Retired: the built-in simulator's `[sims.<name>]` sections. Kept only so that a config
    /// that still has one is refused with the way to write it as a `sim` plugin connector.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub sims: BTreeMap<String, toml::Value>,
    /// Connector instances, by name (`[connectors.line1]`): plugins the node loads and runs.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorConfig>,
}

/// `[connectors.<name>]`: one connector instance, run from a plugin.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The plugin: a path to a `cdylib` (`.so`) for `in_process` or an executable for
    /// `out_of_process` (relative paths are relative to the working directory), or a plugin
    /// name such as `sim`, looked up as `libmillwright_plugin_sim.so` / `libsim.so` (in
    /// process) or `millwright-plugin-sim` / `sim` (out of process) in the directories of
    /// `MILLWRIGHT_PLUGIN_PATH` (`:`-separated), then beside the `millwright` executable.
    pub plugin: PathBuf,
    /// `in_process` (loaded into the node: fast, for trusted plugins) or `out_of_process` (its
    /// own process: a crash or a hang kills only it).
    #[serde(default)]
    pub mode: PluginMode,
    /// The plugin's own config, checked against the JSON Schema in its manifest at start.
    #[serde(default = "defaults::connector_config")]
    pub config: serde_json::Value,
    /// Most events per read.
    #[serde(default = "defaults::connector_max_batch")]
    pub max_batch: usize,
    /// Wait after an empty read before reading again.
    #[serde(default = "defaults::connector_poll_interval", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub poll_interval: Duration,
    /// The longest one call to an out-of-process plugin may take before it counts as hung;
    /// also how long a request on `<prefix>.rpc.<name>.<method>` waits for its answer.
    #[serde(default = "defaults::connector_call_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub call_timeout: Duration,
    /// For a sink: the bus subjects (wildcards allowed) whose messages are written to it, in
    /// batches of up to `max_batch`. Empty: the sink receives nothing.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// How a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginMode {
    /// Loaded into the node's process.
    #[default]
    InProcess,
    /// A process of its own per instance.
    OutOfProcess,
}

impl PluginMode {
    /// `in_process` or `out_of_process`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in_process",
            Self::OutOfProcess => "out_of_process",
        }
    }
}

/// `[node]`: identity, storage and timing of this node.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name: one subject token (letters, digits, `-`, `_`). It appears in bus
    /// subjects (`mw.state.<node>.<component>`), health JSON and logs.
    pub name: String,
    /// Where the node keeps its files (the lockfile, the endpoints file, the disk queue and the DLQ). Created on
    /// start if missing. Relative paths are relative to the working directory.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// A healthy component with no data for this long is `idle` rather than `active`.
    #[serde(default = "defaults::idle_window", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub idle_window: Duration,
    /// On SIGTERM/SIGINT, how long in-flight work may take to finish before components are
    /// stopped anyway.
    #[serde(default = "defaults::shutdown_grace", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub shutdown_grace: Duration,
}

/// `[bus]`: where events and states are published.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// The NATS server URL (`nats://host:4222`). Absent: the embedded in-process bus, so one
    /// node runs with nothing else installed.
    #[serde(default)]
    pub nats_url: Option<String>,
    /// The first token(s) of every subject (`mw` gives `mw.ev.<source>.<tag>`).
    #[serde(default = "defaults::prefix")]
    pub prefix: String,
}

/// `[broker]`: the actor every event goes through on its way to NATS. Events are acknowledged
/// to their producer only once NATS confirmed them or they are in the disk queue.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `core` (NATS publish confirmed by a flush) or `jetstream` (acknowledged by a stream,
    /// de-duplicated by event id; needs `bus.nats_url`).
    #[serde(default)]
    pub mode: BrokerMode,
    /// The JetStream stream events go to in `jetstream` mode; created when missing, checked
    /// when present.
    #[serde(default = "defaults::stream")]
    pub stream: String,
    /// The subjects the stream captures. Absent: `<bus.prefix>.ev.>`.
    #[serde(default)]
    pub stream_subjects: Option<Vec<String>>,
    /// How long the stream remembers event ids to drop duplicates of retried publishes.
    #[serde(default = "defaults::duplicate_window", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub duplicate_window: Duration,
    /// How long a new stream keeps events.
    #[serde(default = "defaults::stream_max_age", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub stream_max_age: Duration,
    /// Failures specific to one event (the server refused it) before it moves to the DLQ.
    /// Connection failures never count.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// How long a core flush or a JetStream ack may take before the publish counts as a
    /// connection failure (the events go to the disk queue).
    #[serde(default = "defaults::ack_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub ack_timeout: Duration,
    /// Most events handed to NATS in one round.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Producer calls the broker's intake holds before producers wait.
    #[serde(default = "defaults::intake_capacity")]
    pub intake_capacity: usize,
    /// How long a producer waits for room in the intake before its call fails as busy.
    #[serde(default = "defaults::intake_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub intake_timeout: Duration,
    /// How long a producer waits for its receipt once its call is taken, before the call
    /// fails as not acknowledged (the broker is restarting or its disk is stuck).
    #[serde(default = "defaults::receipt_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub receipt_timeout: Duration,
    /// Hard cap on the disk queue's size in bytes; at the cap the oldest events are shed
    /// (counted in `mw_disk_queue_shed_total` and logged).
    #[serde(default = "defaults::queue_max_bytes")]
    pub queue_max_bytes: u64,
    /// Size of one disk queue segment in bytes: the largest event, and the unit of shedding.
    /// At most half of `queue_max_bytes`.
    #[serde(default = "defaults::queue_segment_bytes")]
    pub queue_segment_bytes: u64,
    /// When queued events are `fdatasync`ed: a duration (group commit: at most this long after
    /// the first unsynced write) or `"always"` (before each acknowledgement).
    #[serde(default = "defaults::queue_sync")]
    pub queue_sync: String,
    /// Consecutive NATS failures that open the circuit breaker.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// Successful probes in half-open that close it again.
    #[serde(default = "defaults::breaker_successes")]
    pub breaker_successes: u32,
    /// The first open window; each failed probe doubles it up to `breaker_open_max`.
    #[serde(default = "defaults::breaker_open", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub breaker_open: Duration,
    /// The longest open window.
    #[serde(default = "defaults::breaker_open_max", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub breaker_open_max: Duration,
}

/// How the broker hands events to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// Core NATS publish, confirmed by a flush round trip.
    #[default]
    Core,
    /// JetStream publish acknowledged by the stream.
    Jetstream,
}

/// `[http]`: the probes, health and control server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The address to listen on (`ip:port`). Port 0 picks a free port, logged at start.
    #[serde(default = "defaults::http_listen", with = "address")]
    #[schemars(with = "address::Listen")]
    pub listen: SocketAddr,
}

/// `[metrics]`: the Prometheus exporter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The address the exporter listens on (`ip:port`), serving `/metrics`. Port 0 picks a free
    /// port, logged at start.
    #[serde(default = "defaults::metrics_listen", with = "address")]
    #[schemars(with = "address::Listen")]
    pub listen: SocketAddr,
}

/// `[log]`: the format and level of the node's logs (written to stdout).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (one readable line per event) or `json` (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or directives (`info,millwright_connect=debug`).
    /// The `RUST_LOG` environment variable, when set, takes precedence.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log shippers and tests.
    Json,
}

/// `[supervision]`: the restart policy of every supervisor the node builds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// At most this many restarts within `max_window`; one more and the supervisor stops its
    /// children and fails, escalating to its parent.
    #[serde(default = "defaults::max_restarts")]
    pub max_restarts: u32,
    /// The window `max_restarts` is counted in.
    #[serde(default = "defaults::max_window", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub max_window: Duration,
    /// The first restart's delay; each further restart doubles it, up to `max_backoff`.
    #[serde(default = "defaults::min_backoff", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub min_backoff: Duration,
    /// The longest delay between restarts.
    #[serde(default = "defaults::max_backoff", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub max_backoff: Duration,
    /// How the `connectors` supervisor counts `max_restarts`: `per_instance` (each connector
    /// instance has its own budget; the supervisor gives up only when one instance keeps
    /// crashing, so unrelated crashes of many instances do not add up) or `per_supervisor`
    /// (all instances share one budget, as every other supervisor does).
    #[serde(default)]
    pub connector_intensity: ConnectorIntensity,
}

/// Whose restarts the `connectors` supervisor's `max_restarts` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorIntensity {
    /// Each connector instance on its own.
    #[default]
    PerInstance,
    /// All connector instances together.
    PerSupervisor,
}

/// `[watchdog]`: pings components and marks those that stop answering as degraded.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    /// How often each component is pinged.
    #[serde(default = "defaults::watchdog_interval", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub interval: Duration,
    /// A component that does not answer a ping within this is shown `degraded` ("not
    /// answering").
    #[serde(default = "defaults::watchdog_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub timeout: Duration,
}

/// The default of every key, one function each (serde's `default = "..."`).
pub mod defaults {
    use super::*;

    /// `node.data_dir`.
    pub fn data_dir() -> PathBuf {
        PathBuf::from("data")
    }
    /// `node.idle_window`: 30 s.
    pub fn idle_window() -> Duration {
        millwright_kernel::lifecycle::DEFAULT_IDLE_WINDOW
    }
    /// `node.shutdown_grace`: 30 s.
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    /// `bus.prefix`.
    pub fn prefix() -> String {
        "mw".to_owned()
    }
    /// `broker.stream`.
    pub fn stream() -> String {
        "MW_EVENTS".to_owned()
    }
    /// `broker.duplicate_window`: 2 min.
    pub fn duplicate_window() -> Duration {
        Duration::from_secs(120)
    }
    /// `broker.stream_max_age`: 7 days.
    pub fn stream_max_age() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    /// `broker.max_attempts`.
    pub fn max_attempts() -> u32 {
        3
    }
    /// `broker.ack_timeout`.
    pub fn ack_timeout() -> Duration {
        Duration::from_secs(2)
    }
    /// `broker.max_batch`.
    pub fn max_batch() -> usize {
        2048
    }
    /// `broker.intake_capacity`.
    pub fn intake_capacity() -> usize {
        1024
    }
    /// `broker.intake_timeout`.
    pub fn intake_timeout() -> Duration {
        Duration::from_secs(5)
    }
    /// `broker.receipt_timeout`.
    pub fn receipt_timeout() -> Duration {
        Duration::from_secs(30)
    }
    /// `broker.queue_max_bytes`: 1 GiB.
    pub fn queue_max_bytes() -> u64 {
        1 << 30
    }
    /// `broker.queue_segment_bytes`: 64 MiB.
    pub fn queue_segment_bytes() -> u64 {
        64 << 20
    }
    /// `broker.queue_sync`.
    pub fn queue_sync() -> String {
        "100ms".to_owned()
    }
    /// `broker.breaker_failures`.
    pub fn breaker_failures() -> u32 {
        5
    }
    /// `broker.breaker_successes`.
    pub fn breaker_successes() -> u32 {
        2
    }
    /// `broker.breaker_open`.
    pub fn breaker_open() -> Duration {
        Duration::from_secs(10)
    }
    /// `broker.breaker_open_max`.
    pub fn breaker_open_max() -> Duration {
        Duration::from_secs(120)
    }
    /// `http.listen`.
    pub fn http_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    /// `metrics.listen`.
    pub fn metrics_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 9090))
    }
    /// `log.level`.
    pub fn log_level() -> String {
        "info".to_owned()
    }
    /// `supervision.max_restarts`.
    pub fn max_restarts() -> u32 {
        3
    }
    /// `supervision.max_window`.
    pub fn max_window() -> Duration {
        Duration::from_secs(5)
    }
    /// `supervision.min_backoff`.
    pub fn min_backoff() -> Duration {
        Duration::from_millis(100)
    }
    /// `supervision.max_backoff`.
    pub fn max_backoff() -> Duration {
        Duration::from_secs(10)
    }
    /// `watchdog.interval`.
    pub fn watchdog_interval() -> Duration {
        Duration::from_secs(1)
    }
    /// `watchdog.timeout`.
    pub fn watchdog_timeout() -> Duration {
        Duration::from_secs(2)
    }
    /// `connectors.<name>.config`: an empty table.
    pub fn connector_config() -> serde_json::Value {
        serde_json::Value::Object(serde_json::Map::new())
    }
    /// `connectors.<name>.max_batch`.
    pub fn connector_max_batch() -> usize {
        256
    }
    /// `connectors.<name>.poll_interval`.
    pub fn connector_poll_interval() -> Duration {
        Duration::from_millis(100)
    }
    /// `connectors.<name>.call_timeout`.
    pub fn connector_call_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            prefix: defaults::prefix(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            mode: BrokerMode::default(),
            stream: defaults::stream(),
            stream_subjects: None,
            duplicate_window: defaults::duplicate_window(),
            stream_max_age: defaults::stream_max_age(),
            max_attempts: defaults::max_attempts(),
            ack_timeout: defaults::ack_timeout(),
            max_batch: defaults::max_batch(),
            intake_capacity: defaults::intake_capacity(),
            intake_timeout: defaults::intake_timeout(),
            receipt_timeout: defaults::receipt_timeout(),
            queue_max_bytes: defaults::queue_max_bytes(),
            queue_segment_bytes: defaults::queue_segment_bytes(),
            queue_sync: defaults::queue_sync(),
            breaker_failures: defaults::breaker_failures(),
            breaker_successes: defaults::breaker_successes(),
            breaker_open: defaults::breaker_open(),
            breaker_open_max: defaults::breaker_open_max(),
        }
    }
}

impl BrokerConfig {
    /// The disk queue's sync policy from `queue_sync`; `None` when it is neither `always` nor
    /// a positive duration (validation reports it).
    pub fn sync_policy(&self) -> Option<millwright_storage::disk_queue::SyncPolicy> {
        use millwright_storage::disk_queue::SyncPolicy;
        match self.queue_sync.trim() {
            "always" => Some(SyncPolicy::Always),
            other => humantime::parse_duration(other)
                .ok()
                .filter(|d| !d.is_zero())
                .map(SyncPolicy::Interval),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: defaults::http_listen(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: defaults::metrics_listen(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: defaults::log_level(),
        }
    }
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            max_restarts: defaults::max_restarts(),
            max_window: defaults::max_window(),
            min_backoff: defaults::min_backoff(),
            max_backoff: defaults::max_backoff(),
            connector_intensity: ConnectorIntensity::default(),
        }
    }
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            interval: defaults::watchdog_interval(),
            timeout: defaults::watchdog_timeout(),
        }
    }
}

impl Config {
    /// Reads and validates the config at `path`. Errors name `path` as given.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Invalid`] when it is
    /// not a valid config.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses and validates `text`; `file` only names it in errors. Does no I/O.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with the first problem found.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| error::from_syntax_error(file, text, &e))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect();
            error::from_data_error(file, text, path, e.inner())
        })?;
        if let Some(problem) = validate::first_problem(&config) {
            return Err(problem.into_diagnostic(file, text).into());
        }
        Ok(Config {
            file: Some(file.to_owned()),
            ..config
        })
    }
}

#[cfg(test)]
mod tests;
