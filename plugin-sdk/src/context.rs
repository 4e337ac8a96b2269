//! What a connector gets from its host: its identity, its config, logging, metrics and
//! cancellation.
//!
//! A connector never touches the node's `tracing` subscriber or metrics recorder directly (in
//! a dynamic library they would be different globals from the host's): it goes through its
//! [`Context`], whose [`Host`] forwards each record across the boundary. The host adds the
//! `plugin` and `instance` labels, so a plugin's logs and metrics show up in the node's logs
//! and on `:9090/metrics` like any component's.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A log level, as `tracing` has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Something failed.
    Error,
    /// Something is off.
    Warn,
    /// Normal operation worth telling.
    Info,
    /// Detail for a developer.
    Debug,
    /// Very detailed.
    Trace,
}

/// One log line from a connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Structured fields, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// What kind of metric an update is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A counter; the value is added.
    Counter,
    /// A gauge; the value is set.
    Gauge,
    /// A histogram; the value is recorded (seconds for `_seconds` names).
    Histogram,
}

/// One metric update from a connector. Names follow the node's rules (`mw_` prefix added by
/// the host, base units, `_total` for counters); label values must be bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricUpdate {
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The name without the `mw_plugin_` prefix the host adds (`reads_total`).
    pub name: String,
    /// Extra labels (the host adds `plugin` and `instance`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// The host side of a [`Context`]: where logs and metrics go. The node implements it (the
/// in-process ABI and the out-of-process transport forward to it); the test harness records.
pub trait Host: Send + Sync + 'static {
    /// A log line from `instance`.
    fn log(&self, instance: &str, record: LogRecord);
    /// A metric update from `instance`.
    fn metric(&self, instance: &str, update: MetricUpdate);
}

/// The subject prefix a context has until the host says otherwise.
pub const DEFAULT_SUBJECT_PREFIX: &str = "mw";

/// What every connector call gets. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    plugin: Arc<str>,
    instance: Arc<str>,
    config: Arc<serde_json::Value>,
    subject_prefix: Arc<str>,
    host: Arc<dyn Host>,
    cancel: watch::Receiver<bool>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("plugin", &self.plugin)
            .field("instance", &self.instance)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Cancels the [`Context`]s made with it (the host keeps it; dropping it cancels too).
#[derive(Debug)]
pub struct CancelHandle(watch::Sender<bool>);

impl CancelHandle {
    /// Tells the connector to stop what it is doing.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

impl Context {
    /// A context for instance `instance` of plugin `plugin`, and the handle that cancels it.
    pub fn new(
        plugin: &str,
        instance: &str,
        config: serde_json::Value,
        host: Arc<dyn Host>,
    ) -> (Context, CancelHandle) {
        let (tx, rx) = watch::channel(false);
        (
            Context {
                plugin: plugin.into(),
                instance: instance.into(),
                config: Arc::new(config),
                subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
                host,
                cancel: rx,
            },
            CancelHandle(tx),
        )
    }

    /// The same context with the instance's config and the node's subject prefix (set when
    /// the instance is opened).
    pub(crate) fn opened(&self, config: serde_json::Value, subject_prefix: &str) -> Context {
        Context {
            config: Arc::new(config),
            subject_prefix: subject_prefix.into(),
            ..self.clone()
        }
    }

    /// The node's subject prefix (`mw` unless the node's `[bus] prefix` says otherwise).
    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }

    /// The subject for this instance's events tagged `tag`: `<prefix>.ev.<instance>.<tag>`
    /// (`mw.ev.press1.temperature`). `tag` may hold dots for a deeper tree.
    pub fn event_subject(&self, tag: &str) -> String {
        format!("{}.ev.{}.{}", self.subject_prefix, self.instance, tag)
    }

    /// The plugin's id (`sim`, `opcua`).
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The instance's name from the node's config (`press1`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The instance's config as the user wrote it (already validated against the schema).
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// Logs a line at `level` with structured fields.
    pub fn log(
        &self,
        level: Level,
        message: impl Into<String>,
        fields: &[(&str, &dyn std::fmt::Display)],
    ) {
        self.host.log(
            &self.instance,
            LogRecord {
                level,
                message: message.into(),
                fields: fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_string()))
                    .collect(),
            },
        );
    }

    /// Logs at `info`.
    pub fn info(&self, message: impl Into<String>) {
        self.log(Level::Info, message, &[]);
    }

    /// Logs at `warn`.
    pub fn warn(&self, message: impl Into<String>) {
        self.log(Level::Warn, message, &[]);
    }

    /// Logs at `error`.
    pub fn error(&self, message: impl Into<String>) {
        self.log(Level::Error, message, &[]);
    }

    fn metric(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)], value: f64) {
        self.host.metric(
            &self.instance,
            MetricUpdate {
                kind,
                name: name.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                value,
            },
        );
    }

    /// Adds `value` to counter `name` (shown as `mw_plugin_<name>`).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.metric(MetricKind::Counter, name, labels, value as f64);
    }

    /// Sets gauge `name`.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.metric(MetricKind::Gauge, name, labels, value);
    }

    /// Records `value` in histogram `name`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.metric(MetricKind::Histogram, name, labels, value);
    }

    /// Whether the host asked the connector to stop.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves once the host asks the connector to stop (or drops its handle): race long
    /// waits against it with `tokio::select!`.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.clone();
        // An error means the handle is gone, which cancels too.
        let _ = rx.wait_for(|c| *c).await;
    }
}
