//! The `sim` plugin's config: what a simulated machine produces and which faults it acts out.

use std::time::Duration;

use millwright_plugin_sdk::connector::ConnectorError;
use millwright_plugin_sdk::duration;

/// One simulated machine.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The tags the machine produces; each is published on `<prefix>.ev.<instance>.<tag>`.
    #[serde(default = "default_tags")]
    pub tags: Vec<String>,
    /// One sample of every tag per interval (`500ms`, `1s`). `0s`: as fast as the host reads
    /// (every read returns a full batch), for benchmarks.
    #[serde(default = "default_interval", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub interval: Duration,
    /// Stop after this many events in all (the source reaches its end of input). Absent: never.
    #[serde(default)]
    pub count: Option<u64>,
    /// Crash (a fatal error; the supervisor restarts the instance) this long after each start.
    /// Absent: never.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "duration::option::Human")]
    pub fail_every: Option<Duration>,
    /// Lose the connection (reads and connects fail with `not_connected`) every this long, for
    /// `degrade_for`. Absent: never.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "duration::option::Human")]
    pub degrade_every: Option<Duration>,
    /// How long each connection loss lasts.
    #[serde(default = "default_degrade_for", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub degrade_for: Duration,
    /// Ask for maintenance every this long: an event on
    /// `<prefix>.ev.<instance>.maintenance_request` whose payload is a work-order request
    /// (`{"work_order": {"title", "asset", "priority"}}`, what the `cmms-http` sink takes).
    /// Absent: never.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "duration::option::Human")]
    pub maintenance_every: Option<Duration>,
    /// Stop answering (one read waits `hang_for`) this long after each start. Absent: never.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "duration::option::Human")]
    pub hang_after: Option<Duration>,
    /// How long the hang lasts.
    #[serde(default = "default_hang_for", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub hang_for: Duration,
}

fn default_tags() -> Vec<String> {
    vec!["value".to_owned()]
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_degrade_for() -> Duration {
    Duration::from_secs(4)
}

fn default_hang_for() -> Duration {
    Duration::from_secs(8)
}

impl SimConfig {
    /// Checks what the schema cannot say.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming the key and the fix.
    pub fn check(&self) -> Result<(), ConnectorError> {
        if self.tags.is_empty() {
            return Err(ConnectorError::Config(
                "tags: is empty (give at least one tag, e.g. tags = [\"temperature\"])".to_owned(),
            ));
        }
        if let Some(bad) = self.tags.iter().find(|t| !is_subject_token(t)) {
            return Err(ConnectorError::Config(format!(
                "tags: {bad:?} is not a subject token (use letters, digits, `-` and `_`)"
            )));
        }
        if let Some(every) = self.degrade_every
            && self.degrade_for >= every
        {
            return Err(ConnectorError::Config(format!(
                "degrade_for: {:?} is not shorter than degrade_every ({every:?}); the machine \
                 would never recover (make degrade_for shorter)",
                self.degrade_for
            )));
        }
        if self.maintenance_every.is_some_and(|d| d.is_zero()) {
            return Err(ConnectorError::Config(
                "maintenance_every: is 0s (give a positive duration such as \"30s\", or leave it out)"
                    .to_owned(),
            ));
        }
        if self.fail_every.is_some_and(|d| d.is_zero()) {
            return Err(ConnectorError::Config(
                "fail_every: is 0s (give a positive duration such as \"10s\", or leave it out)"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

fn is_subject_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
