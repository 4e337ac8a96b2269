//! The connector's config: one serde struct, the single source of its docs and JSON Schema
//! (`docs/connectors/opcua.md` is generated from it by a test).

use std::path::PathBuf;
use std::time::Duration;

use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::{duration, retired};
use schemars::JsonSchema;
use serde::Deserialize;

/// `opcua`'s config (`[connectors.<name>.config]`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = retired_keys)]
pub struct OpcUaConfig {
    /// The server's endpoint URL, `opc.tcp://host:port[/path]`. This address is always used to
    /// connect, even when the server advertises another host or port in its endpoints.
    pub endpoint: String,
    /// Message security: `none`, or `basic256sha256` (Basic256Sha256 with SignAndEncrypt).
    #[serde(default)]
    pub security: SecurityConfig,
    /// Who the connector logs in as.
    #[serde(default)]
    pub user: UserConfig,
    /// How the server's certificate is trusted (only with `security = "basic256sha256"`).
    #[serde(default)]
    pub trust: TrustConfig,
    /// The pinned server certificate fingerprint for `trust = "pinned"`: SHA-256 (64 hex digits)
    /// or SHA-1 (40 hex digits), colons and case ignored.
    #[serde(default)]
    pub server_fingerprint: Option<String>,
    /// The client's PKI directory: its own certificate and key (generated on first use, under
    /// `own/` and `private/`) and the fingerprints trusted on first use (`trusted-servers/`).
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// The nodes to read, each with the tag that names its subject.
    pub nodes: Vec<NodeConfig>,
    /// `subscription` (monitored items; the server pushes changes) or `polling` (a Read of
    /// every node each `poll_interval`).
    #[serde(default)]
    pub mode: ModeConfig,
    /// Subscription mode: the publishing interval.
    #[serde(default = "default_publishing_interval", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub publishing_interval: Duration,
    /// Subscription mode: the default sampling interval of each monitored item (a node's
    /// `sampling_interval` overrides it; `"0s"` lets the server sample as fast as it can).
    #[serde(default = "default_sampling_interval", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub sampling_interval: Duration,
    /// Subscription mode: how many changes the server queues per item between publishes.
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// Subscription mode: most notifications in one publish response (the server sends the
    /// rest in the next ones), which keeps each response inside the client's limits (16 MiB,
    /// arrays of 100,000). 0 lets the server decide.
    #[serde(default = "default_max_notifications_per_publish")]
    pub max_notifications_per_publish: u32,
    /// Polling mode: the interval between reads.
    #[serde(default = "default_poll_interval", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub poll_interval: Duration,
    /// Data-freshness watchdog: in subscription mode, when no publish response (data or
    /// keep-alive) arrives for this long the connector drops the session, and the node
    /// reconnects it and recreates its subscription. Keep-alives make it independent of
    /// deadbands and of nodes that do not change. `"0s"` disables it.
    #[serde(default = "default_watchdog_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub watchdog_timeout: Duration,
    /// Timeout of each OPC-UA request.
    #[serde(default = "default_request_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub request_timeout: Duration,
    /// The longest one connect may take (GetEndpoints, session, browse-path resolution,
    /// subscription). Keep it below the node's `call_timeout` (10 s by default) so that an
    /// out-of-process plugin never looks hung.
    #[serde(default = "default_connect_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub connect_timeout: Duration,
    /// Most samples held between reads; past it the oldest are dropped (counted in
    /// `samples_shed_total` and logged).
    #[serde(default = "default_max_buffered_samples")]
    pub max_buffered_samples: usize,
}

/// Message security.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecurityConfig {
    /// No signing or encryption.
    #[default]
    None,
    /// Basic256Sha256, SignAndEncrypt.
    Basic256sha256,
}

/// The user identity.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum UserConfig {
    /// Anonymous.
    #[default]
    Anonymous,
    /// A user name and a password read from an environment variable or a file (never from the
    /// config itself, never logged).
    Username {
        /// The user name.
        username: String,
        /// The environment variable that holds the password.
        #[serde(default)]
        password_env: Option<String>,
        /// A file whose content (trailing newline trimmed) is the password.
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
}

/// Server certificate trust.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrustConfig {
    /// Trust the certificate seen on the first connection and store its SHA-256 fingerprint
    /// under `pki_dir/trusted-servers/`; refuse a different one later.
    #[default]
    TrustOnFirstUse,
    /// Trust only the certificate whose fingerprint is `server_fingerprint`.
    Pinned,
}

/// Subscription or polling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeConfig {
    /// Monitored items in one subscription.
    #[default]
    Subscription,
    /// Periodic reads.
    Polling,
}

/// One node to read.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = retired_node_keys)]
pub struct NodeConfig {
    /// The tag: the last tokens of the subject `<prefix>.ev.<instance>.<tag>` (letters, digits,
    /// `_`, `-`, and `.` for a deeper tree).
    pub tag: String,
    /// The node id in OPC-UA text form (`ns=2;s=Press.Temperature`, `i=2258`). Give this or
    /// `browse_path`.
    #[serde(default)]
    pub node_id: Option<String>,
    /// A browse path from the Objects folder in OPC-UA text form (`/2:Press/2:Temperature`),
    /// resolved with TranslateBrowsePathsToNodeIds on every connect.
    #[serde(default)]
    pub browse_path: Option<String>,
    /// This item's sampling interval (default: the top-level `sampling_interval`).
    #[serde(default, with = "duration::option")]
    #[schemars(with = "duration::option::Human")]
    pub sampling_interval: Option<Duration>,
    /// An absolute deadband: changes smaller than this are not reported.
    #[serde(default)]
    pub deadband_absolute: Option<f64>,
    /// A percent deadband (of the node's EURange; the server must have one).
    #[serde(default)]
    pub deadband_percent: Option<f64>,
}

/// Keys of earlier versions, refused with what to write instead (see
/// [`millwright_plugin_sdk::retired`]).
pub const RETIRED_KEYS: &[(&str, &str)] = &[
    (
        "publishing_interval_ms",
        "renamed; write publishing_interval = \"1s\" (a duration)",
    ),
    (
        "sampling_interval_ms",
        "renamed; write sampling_interval = \"250ms\" (a duration)",
    ),
    (
        "poll_interval_ms",
        "renamed; write poll_interval = \"1s\" (a duration)",
    ),
    (
        "watchdog_timeout_ms",
        "renamed; write watchdog_timeout = \"30s\" (a duration)",
    ),
    (
        "request_timeout_ms",
        "renamed; write request_timeout = \"5s\" (a duration)",
    ),
    (
        "connect_timeout_ms",
        "renamed; write connect_timeout = \"8s\" (a duration)",
    ),
    (
        "reconnect_min_ms",
        "removed: the node waits between reconnects (set [supervision] min_backoff, a duration)",
    ),
    (
        "reconnect_max_ms",
        "removed: the node waits between reconnects (set [supervision] max_backoff, a duration)",
    ),
    (
        "reconnect_jitter",
        "removed: the node waits between reconnects, with its own jitter (delete this key)",
    ),
];

/// The retired keys of a node.
pub const RETIRED_NODE_KEYS: &[(&str, &str)] = &[(
    "sampling_interval_ms",
    "renamed; write sampling_interval = \"250ms\" (a duration)",
)];

fn retired_keys(schema: &mut schemars::Schema) {
    retired::mark(schema, RETIRED_KEYS);
}

fn retired_node_keys(schema: &mut schemars::Schema) {
    retired::mark(schema, RETIRED_NODE_KEYS);
}

fn default_pki_dir() -> PathBuf {
    PathBuf::from("pki/opcua")
}
fn default_publishing_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_sampling_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_queue_size() -> u32 {
    10
}
fn default_max_notifications_per_publish() -> u32 {
    5_000
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_watchdog_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(8)
}
fn default_max_buffered_samples() -> usize {
    100_000
}

/// Where a node's id comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeRef {
    /// A node id (parsed).
    Id(opcua::types::NodeId),
    /// A browse path from Objects (parsed).
    Path(String, opcua::types::RelativePath),
}

impl OpcUaConfig {
    /// Checks what can be checked without I/O.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming the key and the fix.
    pub fn validate(&self) -> Result<Vec<NodeRef>, ConnectorError> {
        let bad = |key: &str, msg: String| ConnectorError::Config(format!("{key}: {msg}"));
        if !self.endpoint.starts_with("opc.tcp://") || self.endpoint.len() <= "opc.tcp://".len() {
            return Err(bad(
                "endpoint",
                format!(
                    "{:?} is not an OPC-UA URL (expected opc.tcp://host:port)",
                    self.endpoint
                ),
            ));
        }
        if self.nodes.is_empty() {
            return Err(bad(
                "nodes",
                "no nodes configured (add [[connectors.<name>.config.nodes]] with tag and node_id)"
                    .into(),
            ));
        }
        if self.trust == TrustConfig::Pinned {
            match &self.server_fingerprint {
                None => {
                    return Err(bad(
                        "server_fingerprint",
                        "trust = \"pinned\" needs server_fingerprint (the server certificate's SHA-256 in hex)".into(),
                    ));
                }
                Some(f) => {
                    normalize_fingerprint(f).map_err(|m| bad("server_fingerprint", m))?;
                }
            }
        }
        if let UserConfig::Username {
            password_env,
            password_file,
            ..
        } = &self.user
            && password_env.is_some() == password_file.is_some()
        {
            return Err(bad(
                "user",
                "type = \"username\" needs exactly one of password_env or password_file".into(),
            ));
        }
        if self.max_notifications_per_publish > 100_000 {
            return Err(bad(
                "max_notifications_per_publish",
                format!(
                    "{} is more than the client decodes in one response (100000)",
                    self.max_notifications_per_publish
                ),
            ));
        }
        if self.mode == ModeConfig::Polling && self.poll_interval.is_zero() {
            return Err(bad(
                "poll_interval",
                "is 0s (give a positive duration such as \"1s\")".into(),
            ));
        }
        let mut tags = std::collections::HashSet::new();
        let mut refs = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            let key = format!("nodes[{i}]");
            if n.tag.is_empty()
                || !n
                    .tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                || n.tag.starts_with('.')
                || n.tag.ends_with('.')
            {
                return Err(bad(
                    &format!("{key}.tag"),
                    format!(
                        "{:?} is not a subject token (use letters, digits, _, - and .)",
                        n.tag
                    ),
                ));
            }
            if !tags.insert(n.tag.as_str()) {
                return Err(bad(
                    &format!("{key}.tag"),
                    format!("{:?} is used twice (tags must be unique)", n.tag),
                ));
            }
            if n.deadband_absolute.is_some() && n.deadband_percent.is_some() {
                return Err(bad(
                    &key,
                    "give deadband_absolute or deadband_percent, not both".into(),
                ));
            }
            let r = match (&n.node_id, &n.browse_path) {
                (Some(id), None) => NodeRef::Id(id.parse().map_err(|_| {
                    bad(
                        &format!("{key}.node_id"),
                        format!("{id:?} is not a node id (expected e.g. ns=2;s=Press.Temperature or i=2258)"),
                    )
                })?),
                (None, Some(p)) => NodeRef::Path(
                    p.clone(),
                    opcua::types::RelativePath::from_str(
                        p,
                        &opcua::types::RelativePathElement::default_node_resolver,
                    )
                    .map_err(|e| {
                        bad(
                            &format!("{key}.browse_path"),
                            format!("{p:?} is not a browse path ({e}; expected e.g. /2:Press/2:Temperature)"),
                        )
                    })?,
                ),
                _ => {
                    return Err(bad(
                        &key,
                        format!("tag {:?}: give exactly one of node_id or browse_path", n.tag),
                    ));
                }
            };
            refs.push(r);
        }
        Ok(refs)
    }

    /// The request timeout (at least 1 ms).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout.max(Duration::from_millis(1))
    }

    /// The password of a username user, read now.
    ///
    /// # Errors
    /// `Config` when the variable or the file is missing (the message names it, never the
    /// password).
    pub fn password(&self) -> Result<Option<(String, String)>, ConnectorError> {
        let UserConfig::Username {
            username,
            password_env,
            password_file,
        } = &self.user
        else {
            return Ok(None);
        };
        let password = if let Some(var) = password_env {
            std::env::var(var).map_err(|_| {
                ConnectorError::Config(format!(
                    "user.password_env: the environment variable {var} is not set (set it to the password of OPC-UA user {username:?})"
                ))
            })?
        } else if let Some(file) = password_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ConnectorError::Config(format!(
                    "user.password_file: cannot read {}: {e} (write the password of OPC-UA user {username:?} there)",
                    file.display()
                ))
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        } else {
            String::new()
        };
        Ok(Some((username.clone(), password)))
    }
}

/// Normalises a fingerprint to lowercase hex without separators.
///
/// # Errors
/// A message saying what is wrong.
pub fn normalize_fingerprint(f: &str) -> Result<String, String> {
    let hex: String = f
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    let hex = hex
        .strip_prefix("sha256")
        .or_else(|| hex.strip_prefix("sha1"))
        .unwrap_or(&hex)
        .to_owned();
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) || !(hex.len() == 64 || hex.len() == 40) {
        return Err(format!(
            "{f:?} is not a SHA-256 (64 hex digits) or SHA-1 (40 hex digits) fingerprint"
        ));
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use millwright_plugin_sdk::manifest::Manifest;

    use super::*;

    fn parse(v: serde_json::Value) -> OpcUaConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let c = parse(serde_json::json!({
            "endpoint": "opc.tcp://127.0.0.1:4840",
            "nodes": [{"tag": "temp", "node_id": "ns=2;s=Press.Temperature"}],
        }));
        assert_eq!(c.security, SecurityConfig::None);
        assert_eq!(c.mode, ModeConfig::Subscription);
        assert_eq!(c.publishing_interval, Duration::from_secs(1));
        assert_eq!(c.request_timeout(), Duration::from_secs(5));
        let refs = c.validate().unwrap();
        assert!(matches!(&refs[0], NodeRef::Id(id) if id.namespace == 2));
    }

    #[test]
    fn bad_configs_name_the_key_and_the_fix() {
        let cases = [
            (
                serde_json::json!({"endpoint": "opc.tcp//x", "nodes": [{"tag": "t", "node_id": "i=1"}]}),
                "endpoint",
            ),
            (
                serde_json::json!({"endpoint": "opc.tcp://x:1", "nodes": [{"tag": "t", "node_id": "nope"}]}),
                "nodes[0].node_id",
            ),
            (
                serde_json::json!({"endpoint": "opc.tcp://x:1", "nodes": [{"tag": "t"}]}),
                "exactly one of node_id or browse_path",
            ),
            (
                serde_json::json!({"endpoint": "opc.tcp://x:1", "trust": "pinned", "nodes": [{"tag": "t", "node_id": "i=1"}]}),
                "server_fingerprint",
            ),
            (
                serde_json::json!({"endpoint": "opc.tcp://x:1", "nodes": [{"tag": "t", "node_id": "i=1"}, {"tag": "t", "node_id": "i=2"}]}),
                "used twice",
            ),
            (
                serde_json::json!({"endpoint": "opc.tcp://x:1", "user": {"type": "username", "username": "u"}, "nodes": [{"tag": "t", "node_id": "i=1"}]}),
                "password_env or password_file",
            ),
        ];
        for (json, needle) in cases {
            let err = parse(json).validate().unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn fingerprints_accept_colons_and_case() {
        let sha1 = "AB:".repeat(19) + "AB";
        assert_eq!(normalize_fingerprint(&sha1).unwrap(), "ab".repeat(20));
        assert!(normalize_fingerprint("abc").is_err());
    }

    #[test]
    fn durations_are_humantime_strings() {
        let c = parse(serde_json::json!({
            "endpoint": "opc.tcp://x:1",
            "mode": "polling",
            "poll_interval": "250ms",
            "watchdog_timeout": "0s",
            "nodes": [{"tag": "t", "node_id": "i=1", "sampling_interval": "2s"}],
        }));
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert!(c.watchdog_timeout.is_zero());
        assert_eq!(c.nodes[0].sampling_interval, Some(Duration::from_secs(2)));
        let zero = parse(serde_json::json!({
            "endpoint": "opc.tcp://x:1", "mode": "polling", "poll_interval": "0s",
            "nodes": [{"tag": "t", "node_id": "i=1"}],
        }));
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("poll_interval: is 0s"), "{err}");
    }

    #[test]
    fn the_old_millisecond_keys_are_refused_naming_the_new_key() {
        let schema = Manifest::of(&crate::OPCUA).config_schema;
        let refused = |config| retired::check(&schema, &config).unwrap_err().to_string();
        assert_eq!(
            refused(serde_json::json!({
                "endpoint": "opc.tcp://x:1", "poll_interval_ms": 1000, "nodes": [],
            })),
            "poll_interval_ms: renamed; write poll_interval = \"1s\" (a duration)"
        );
        assert_eq!(
            refused(serde_json::json!({
                "endpoint": "opc.tcp://x:1",
                "nodes": [{"tag": "t", "node_id": "i=1", "sampling_interval_ms": 100}],
            })),
            "nodes[0].sampling_interval_ms: renamed; write sampling_interval = \"250ms\" (a duration)"
        );
        assert!(
            refused(
                serde_json::json!({"endpoint": "opc.tcp://x:1", "reconnect_min_ms": 1, "nodes": []})
            )
            .contains("[supervision] min_backoff")
        );
        for (key, _) in RETIRED_KEYS {
            assert_eq!(
                schema["properties"][key]["not"],
                serde_json::json!({}),
                "{key} is refused by any schema validator"
            );
        }
    }

    #[tokio::test]
    async fn opening_with_an_old_key_names_the_new_one() {
        let err = millwright_plugin_sdk::harness::TestHost::open(
            &crate::OPCUA,
            "plc1",
            serde_json::json!({
                "endpoint": "opc.tcp://x:1",
                "poll_interval_ms": 1000,
                "nodes": [{"tag": "t", "node_id": "i=1"}],
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            ConnectorError::Config(
                "poll_interval_ms: renamed; write poll_interval = \"1s\" (a duration)".into()
            )
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<OpcUaConfig>(serde_json::json!({
            "endpoint": "opc.tcp://x:1", "nodes": [], "endpont": 1
        }))
        .unwrap_err();
        assert!(err.to_string().contains("endpont"));
    }
}
