//! The instance's config ([`CmmsConfig`]), its defaults, and its validation into the
//! [`Settings`] the client runs with.
//!
//! The `///` docs on the fields are the single source of the config reference: they become the
//! JSON Schema's descriptions in the manifest, and `docs/connectors/cmms-http.md` is generated
//! from that schema (a test fails when the page is stale). Validation does no I/O: the secret
//! is read at `connect` (see [`crate::secret`]).

use std::path::PathBuf;
use std::time::Duration;

use millwright_plugin_sdk::prelude::*;
use reqwest::Url;
use reqwest::header::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use millwright_plugin_sdk::duration;

/// `cmms-http`'s config: where the CMMS is, how to authenticate, and how to behave when it
/// fails.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CmmsConfig {
    /// The CMMS API's base URL, `http://` or `https://`, without credentials or a query: every
    /// path below is appended to it (`https://cmms.example.com/api/v2`).
    pub base_url: String,
    /// How to authenticate. Absent: no credentials are sent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The longest one HTTP attempt may take, connecting and reading the answer included. A
    /// call makes up to `retry.max_retries + 1` attempts.
    #[serde(default = "defaults::request_timeout", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub request_timeout: Duration,
    /// The longest one call may take, every attempt and wait included: a retry that could not
    /// start before it is not made, and the last attempt gets only what is left. Keep it below
    /// the node's `connectors.<name>.call_timeout` (10 s by default), or an out-of-process
    /// plugin is taken for hung.
    #[serde(default = "defaults::call_deadline", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub call_deadline: Duration,
    /// Sandbox mode: creates (calls and sink writes) are logged and published on
    /// `<prefix>.ev.<instance>.would_write` instead of being sent; reads still reach the CMMS.
    #[serde(default)]
    pub sandbox: bool,
    /// The CMMS's REST paths, appended to `base_url`.
    #[serde(default)]
    pub paths: Paths,
    /// The header that carries an idempotency key on a create (`POST`).
    #[serde(default = "defaults::idempotency_header")]
    pub idempotency_header: String,
    /// Give every create an idempotency key (the event id for sink writes, a fresh id for calls
    /// without one), which makes creates safe to retry after a network error. Set it only when
    /// the CMMS de-duplicates on `idempotency_header`; otherwise only creates whose payload
    /// carries `idempotency_key` are retried after a network error.
    #[serde(default)]
    pub auto_idempotency_keys: bool,
    /// Outside sandbox mode, publish every work order created on
    /// `<prefix>.ev.<instance>.work_order.created`.
    #[serde(default = "defaults::yes")]
    pub publish_created: bool,
    /// Most events (would-write and created) kept until the node has published them; past it
    /// the oldest are dropped, counted and logged.
    #[serde(default = "defaults::outbox_capacity")]
    pub outbox_capacity: usize,
    /// Retries of one call (the design's CMMS policy by default: `min(0.5 s * 2^n, 8 s)`, 3
    /// retries).
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker in front of this CMMS instance.
    #[serde(default)]
    pub breaker: BreakerSettings,
}

/// How the connector authenticates. The secret itself never appears in the config: it is read
/// from an environment variable or a file at connect, and never logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `bearer` sends `Authorization: Bearer <secret>`; `api_key` sends `<header>: <secret>`.
    #[serde(default)]
    pub scheme: AuthScheme,
    /// The header an `api_key` is sent in (not used by `bearer`).
    #[serde(default = "defaults::api_key_header")]
    pub header: String,
    /// The environment variable that holds the secret (give this or `secret_file`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A file that holds the secret, surrounding whitespace trimmed (a mounted Kubernetes or
    /// Docker secret); give this or `secret_env`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// How the secret is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// `Authorization: Bearer <secret>`.
    #[default]
    Bearer,
    /// `<header>: <secret>`.
    ApiKey,
}

/// The CMMS's REST paths, each starting with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Work orders: `GET` lists them (filters as query parameters), `POST` creates one.
    #[serde(default = "defaults::work_orders_path")]
    pub work_orders: String,
    /// Assets: `GET` lists them (filters as query parameters).
    #[serde(default = "defaults::assets_path")]
    pub assets: String,
    /// One asset: `GET`; `{id}` is replaced by the percent-encoded asset id.
    #[serde(default = "defaults::asset_path")]
    pub asset: String,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            work_orders: defaults::work_orders_path(),
            assets: defaults::assets_path(),
            asset: defaults::asset_path(),
        }
    }
}

/// Retries of one call: the n-th retry waits `min(base * 2^n, max)` plus up to `jitter` times
/// that; a `Retry-After` from the server replaces the wait.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 = no retries).
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// The wait before the first retry; it doubles with each retry.
    #[serde(default = "defaults::retry_base", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub base: Duration,
    /// The cap on the doubling wait, and the longest `Retry-After` honoured: a longer one ends
    /// the call with a `back_off` error carrying the server's wait.
    #[serde(default = "defaults::retry_max", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub max: Duration,
    /// The random extra added to each wait, as a fraction of it (0 to 1).
    #[serde(default = "defaults::retry_jitter")]
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: defaults::max_retries(),
            base: defaults::retry_base(),
            max: defaults::retry_max(),
            jitter: defaults::retry_jitter(),
        }
    }
}

/// The circuit breaker: after `failure_threshold` consecutive failed attempts (timeouts,
/// connection errors, 5xx, 429) calls are refused at once for `open_base`, doubling up to
/// `open_max` while probes keep failing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failed attempts that open the breaker.
    #[serde(default = "defaults::failure_threshold")]
    pub failure_threshold: u32,
    /// Successful probes that close it again.
    #[serde(default = "defaults::success_threshold")]
    pub success_threshold: u32,
    /// The first open window.
    #[serde(default = "defaults::open_base", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub open_base: Duration,
    /// The longest open window.
    #[serde(default = "defaults::open_max", with = "duration")]
    #[schemars(with = "duration::Human")]
    pub open_max: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: defaults::failure_threshold(),
            success_threshold: defaults::success_threshold(),
            open_base: defaults::open_base(),
            open_max: defaults::open_max(),
        }
    }
}

/// The defaults, one function per key.
mod defaults {
    use super::*;

    pub fn request_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn call_deadline() -> Duration {
        Duration::from_secs(9)
    }
    pub fn idempotency_header() -> String {
        "Idempotency-Key".to_owned()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn outbox_capacity() -> usize {
        10_000
    }
    pub fn api_key_header() -> String {
        "X-API-Key".to_owned()
    }
    pub fn work_orders_path() -> String {
        "/work_orders".to_owned()
    }
    pub fn assets_path() -> String {
        "/assets".to_owned()
    }
    pub fn asset_path() -> String {
        "/assets/{id}".to_owned()
    }
    pub fn max_retries() -> u32 {
        RetryPolicy::cmms_http().max_retries
    }
    pub fn retry_base() -> Duration {
        RetryPolicy::cmms_http().base
    }
    pub fn retry_max() -> Duration {
        RetryPolicy::cmms_http().max
    }
    pub fn retry_jitter() -> f64 {
        RetryPolicy::cmms_http().jitter
    }
    pub fn failure_threshold() -> u32 {
        BreakerConfig::default().failure_threshold
    }
    pub fn success_threshold() -> u32 {
        BreakerConfig::default().success_threshold
    }
    pub fn open_base() -> Duration {
        BreakerConfig::default().open_base
    }
    pub fn open_max() -> Duration {
        BreakerConfig::default().open_max
    }
}

/// The validated config, in the types the client uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `base_url`, without a trailing `/`.
    pub base: String,
    /// `auth`, checked.
    pub auth: Option<AuthConfig>,
    /// `request_timeout`.
    pub timeout: Duration,
    /// `call_deadline`.
    pub call_deadline: Duration,
    /// `sandbox`.
    pub sandbox: bool,
    /// `paths`.
    pub paths: Paths,
    /// `idempotency_header`.
    pub idempotency_header: HeaderName,
    /// `auto_idempotency_keys`.
    pub auto_idempotency_keys: bool,
    /// `publish_created`.
    pub publish_created: bool,
    /// `outbox_capacity`.
    pub outbox_capacity: usize,
    /// `retry` over the CMMS preset.
    pub policy: RetryPolicy,
    /// `breaker` over the SDK's defaults.
    pub breaker: BreakerConfig,
}

fn config_error(key: &str, problem: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Config(format!("{key}: {problem}"))
}

fn check_path(key: &str, path: &str) -> Result<(), ConnectorError> {
    if !path.starts_with('/') {
        return Err(config_error(
            key,
            format!("{path:?} does not start with '/' (write it as \"/{path}\")"),
        ));
    }
    if path.contains(['?', '#']) {
        return Err(config_error(
            key,
            format!("{path:?} holds a query or fragment; give only the path"),
        ));
    }
    Ok(())
}

impl Settings {
    /// Checks `config` without any I/O.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming the key, what is wrong and the fix.
    pub fn from_config(config: &CmmsConfig) -> Result<Self, ConnectorError> {
        let url = Url::parse(&config.base_url).map_err(|e| {
            config_error(
                "base_url",
                format!(
                    "{:?} is not a URL ({e}); expected http://host[:port]/path or https://...",
                    config.base_url
                ),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config_error(
                "base_url",
                format!(
                    "{:?} uses scheme {:?}; use http:// or https://",
                    config.base_url,
                    url.scheme()
                ),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(config_error(
                "base_url",
                "holds credentials; remove them and use auth.secret_env or auth.secret_file",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(config_error(
                "base_url",
                format!(
                    "{:?} holds a query or fragment; give only scheme, host and path (secrets \
                     go in auth)",
                    config.base_url
                ),
            ));
        }
        if let Some(auth) = &config.auth {
            match (&auth.secret_env, &auth.secret_file) {
                (Some(_), Some(_)) => {
                    return Err(config_error(
                        "auth",
                        "both secret_env and secret_file are set; keep one",
                    ));
                }
                (None, None) => {
                    return Err(config_error(
                        "auth",
                        "no secret source; set auth.secret_env (an environment variable) or \
                         auth.secret_file (a file holding the secret)",
                    ));
                }
                (Some(var), None) if var.is_empty() || var.contains(['=', '\0']) => {
                    return Err(config_error(
                        "auth.secret_env",
                        format!("{var:?} is not an environment variable name"),
                    ));
                }
                _ => {}
            }
            if auth.scheme == AuthScheme::ApiKey {
                HeaderName::from_bytes(auth.header.as_bytes()).map_err(|_| {
                    config_error(
                        "auth.header",
                        format!(
                            "{:?} is not an HTTP header name (e.g. \"X-API-Key\")",
                            auth.header
                        ),
                    )
                })?;
            }
        }
        if config.request_timeout.is_zero() {
            return Err(config_error(
                "request_timeout",
                "is zero; give a duration such as \"5s\"",
            ));
        }
        if config.call_deadline < config.request_timeout {
            return Err(config_error(
                "call_deadline",
                format!(
                    "{} is shorter than request_timeout ({}); raise call_deadline or lower \
                     request_timeout",
                    humantime::format_duration(config.call_deadline),
                    humantime::format_duration(config.request_timeout)
                ),
            ));
        }
        check_path("paths.work_orders", &config.paths.work_orders)?;
        check_path("paths.assets", &config.paths.assets)?;
        check_path("paths.asset", &config.paths.asset)?;
        if !config.paths.asset.contains("{id}") {
            return Err(config_error(
                "paths.asset",
                format!(
                    "{:?} has no {{id}} placeholder (e.g. \"/assets/{{id}}\")",
                    config.paths.asset
                ),
            ));
        }
        let idempotency_header = HeaderName::from_bytes(config.idempotency_header.as_bytes())
            .map_err(|_| {
                config_error(
                    "idempotency_header",
                    format!(
                        "{:?} is not an HTTP header name (e.g. \"Idempotency-Key\")",
                        config.idempotency_header
                    ),
                )
            })?;
        if config.outbox_capacity == 0 {
            return Err(config_error(
                "outbox_capacity",
                "is 0; give at least 1 (the default is 10000)",
            ));
        }
        let r = &config.retry;
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err(config_error(
                "retry.jitter",
                format!("{} is outside 0..=1 (0.2 adds up to 20 %)", r.jitter),
            ));
        }
        if r.base > r.max {
            return Err(config_error(
                "retry.base",
                format!(
                    "{} is longer than retry.max ({}); lower base or raise max",
                    humantime::format_duration(r.base),
                    humantime::format_duration(r.max)
                ),
            ));
        }
        let b = &config.breaker;
        if b.failure_threshold == 0 || b.success_threshold == 0 {
            return Err(config_error(
                "breaker",
                "failure_threshold and success_threshold must be at least 1",
            ));
        }
        if b.open_base > b.open_max || b.open_base.is_zero() {
            return Err(config_error(
                "breaker.open_base",
                "must be above zero and at most breaker.open_max",
            ));
        }
        Ok(Self {
            base: config.base_url.trim_end_matches('/').to_owned(),
            auth: config.auth.clone(),
            timeout: config.request_timeout,
            call_deadline: config.call_deadline,
            sandbox: config.sandbox,
            paths: config.paths.clone(),
            idempotency_header,
            auto_idempotency_keys: config.auto_idempotency_keys,
            publish_created: config.publish_created,
            outbox_capacity: config.outbox_capacity,
            policy: RetryPolicy {
                max_retries: r.max_retries,
                base: r.base,
                max: r.max,
                jitter: r.jitter,
                ..RetryPolicy::cmms_http()
            },
            breaker: BreakerConfig {
                failure_threshold: b.failure_threshold,
                success_threshold: b.success_threshold,
                open_base: b.open_base,
                open_max: b.open_max,
                ..BreakerConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Settings, String> {
        let c: CmmsConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        Settings::from_config(&c).map_err(|e| e.to_string())
    }

    #[test]
    fn the_minimal_config_gets_the_design_defaults() {
        let s = parse(serde_json::json!({"base_url": "http://127.0.0.1:1/api/"})).unwrap();
        assert_eq!(s.base, "http://127.0.0.1:1/api");
        assert_eq!(s.policy, RetryPolicy::cmms_http());
        assert_eq!(s.breaker, BreakerConfig::default());
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.paths.asset, "/assets/{id}");
        assert!(!s.sandbox && s.publish_created && !s.auto_idempotency_keys);
    }

    #[test]
    fn bad_configs_name_the_key_and_the_fix() {
        for (config, needles) in [
            (
                serde_json::json!({"base_url": "cmms.local/api"}),
                &["base_url", "not a URL"][..],
            ),
            (
                serde_json::json!({"base_url": "ftp://h/"}),
                &["base_url", "http://"],
            ),
            (
                serde_json::json!({"base_url": "http://u:p@h/"}),
                &["base_url", "credentials", "secret_env"],
            ),
            (
                serde_json::json!({"base_url": "http://h/?token=x"}),
                &["base_url", "query"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "auth": {"scheme": "bearer"}}),
                &["auth", "secret_env", "secret_file"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "auth": {"secret_env": "A", "secret_file": "/x"}}),
                &["auth", "keep one"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "auth": {"scheme": "api_key", "header": "bad header", "secret_env": "A"}}),
                &["auth.header", "X-API-Key"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "paths": {"asset": "/assets"}}),
                &["paths.asset", "{id}"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "paths": {"assets": "assets"}}),
                &["paths.assets", "\"/assets\""],
            ),
            (
                serde_json::json!({"base_url": "http://h", "retry": {"jitter": 2.0}}),
                &["retry.jitter"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "retry": {"base": "10s", "max": "1s"}}),
                &["retry.base", "retry.max"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "request_timeout": "soon"}),
                &["a duration such as"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "token": "s3cr3t"}),
                &["unknown field `token`"],
            ),
            (
                serde_json::json!({"base_url": "http://h", "request_timeout": "10s", "call_deadline": "5s"}),
                &["call_deadline", "request_timeout"],
            ),
            (serde_json::json!({}), &["missing field `base_url`"]),
        ] {
            let err = parse(config.clone()).unwrap_err();
            for n in needles {
                assert!(err.contains(n), "{config}: {err:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn overrides_reach_the_policy_and_the_breaker() {
        let s = parse(serde_json::json!({
            "base_url": "https://h",
            "request_timeout": "250ms",
            "retry": {"max_retries": 1, "base": "10ms", "max": "20ms", "jitter": 0.0},
            "breaker": {"failure_threshold": 2, "open_base": "1m", "open_max": "2m"},
        }))
        .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(
            (s.policy.max_retries, s.policy.base, s.policy.max),
            (1, Duration::from_millis(10), Duration::from_millis(20))
        );
        assert!(s.policy.retry_server_errors, "the CMMS preset retries 5xx");
        assert_eq!(s.breaker.failure_threshold, 2);
        assert_eq!(s.breaker.open_base, Duration::from_secs(60));
    }
}
