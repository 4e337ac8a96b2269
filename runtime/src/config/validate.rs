//! Checks a config beyond what its types enforce: names that must be subject tokens, durations
//! that must be positive, bounds that must be ordered. No I/O.
//!
//! [`Config::parse`] stops at the first problem (the node refuses the file either way);
//! [`Config::parse_all`], for `millwright check`, lists every one.

use super::error::{ConfigError, Diagnostic};
use super::{Config, duration};

/// One semantic problem, before it is located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub path: Vec<String>,
    pub message: String,
    pub hint: String,
}

impl Problem {
    fn new(path: &[&str], message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Locates the problem in `text` and names `file`.
    pub fn into_diagnostic(self, file: &str, text: &str) -> Diagnostic {
        Diagnostic::located(file, text, &self.path, self.message, Some(self.hint))
    }
}

const TOKEN_HINT: &str =
    "use letters, digits, '-' and '_' only (up to 64), since it becomes a bus subject token";

/// Whether `s` can be one token of a bus subject.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Config {
    /// Parses `text` as [`Config::parse`] does, but lists every problem instead of the first:
    /// the config (whenever its types fit, so that later checks such as the plugins' can run
    /// on it too) and every diagnostic. A TOML syntax error or a key of the wrong type or name
    /// stops the parser, so it is the only diagnostic then. Does no I/O.
    pub fn parse_all(file: &str, text: &str) -> (Option<Config>, Vec<Diagnostic>) {
        let first = match Config::parse(file, text) {
            Ok(config) => return (Some(config), Vec::new()),
            Err(ConfigError::Invalid(d)) => *d,
            // `parse` reads no file, so this is not reached; it is reported all the same.
            Err(e @ ConfigError::Read { .. }) => {
                let d = Diagnostic::located(file, text, &[], e.to_string(), None);
                return (None, vec![d]);
            }
        };
        // The types fit and only the checks of this module failed: list them all.
        match toml::from_str::<Config>(text) {
            Ok(config) => {
                let all = problems(&config)
                    .into_iter()
                    .map(|p| p.into_diagnostic(file, text))
                    .collect();
                let config = Config {
                    file: Some(file.to_owned()),
                    ..config
                };
                (Some(config), all)
            }
            Err(_) => (None, vec![first]),
        }
    }
}

/// The first problem in `config`, in file order of sections.
pub(crate) fn first_problem(config: &Config) -> Option<Problem> {
    problems(config).into_iter().next()
}

/// Every problem in `config`.
pub(crate) fn problems(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let node = &config.node;
    if !is_token(&node.name) {
        out.push(Problem::new(
            &["node", "name"],
            format!("invalid node name {:?}", node.name),
            TOKEN_HINT,
        ));
    }
    if node.data_dir.as_os_str().is_empty() {
        out.push(Problem::new(
            &["node", "data_dir"],
            "empty data directory",
            "give a directory path such as \"data\" or \"/var/lib/millwright\"",
        ));
    }
    positive(&mut out, &["node", "idle_window"], node.idle_window);

    let bus = &config.bus;
    if !bus.prefix.split('.').all(is_token) {
        out.push(Problem::new(
            &["bus", "prefix"],
            format!("invalid subject prefix {:?}", bus.prefix),
            "use dot-separated tokens of letters, digits, '-' and '_', such as \"mw\"",
        ));
    }
    if let Some(url) = &bus.nats_url {
        let ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|scheme| {
                url.strip_prefix(scheme)
                    .is_some_and(|rest| !rest.is_empty())
            });
        if !ok {
            out.push(Problem::new(
                &["bus", "nats_url"],
                format!("{url:?} is not a NATS URL"),
                "expected nats://host:port, or remove the key to use the embedded bus",
            ));
        }
    }

    broker(&mut out, config);

    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        out.push(Problem::new(
            &["log", "level"],
            format!("invalid log filter {:?}: {e}", config.log.level),
            "expected a level such as \"info\" or directives such as \"info,millwright_connect=debug\"",
        ));
    }

    let sup = &config.supervision;
    if sup.max_restarts == 0 {
        out.push(Problem::new(
            &["supervision", "max_restarts"],
            "max_restarts is 0",
            "allow at least 1 restart, or a supervisor fails on its first child crash",
        ));
    }
    positive(&mut out, &["supervision", "max_window"], sup.max_window);
    if sup.min_backoff > sup.max_backoff {
        out.push(Problem::new(
            &["supervision", "min_backoff"],
            format!(
                "min_backoff ({}) is longer than max_backoff ({})",
                humantime::format_duration(sup.min_backoff),
                humantime::format_duration(sup.max_backoff)
            ),
            "make min_backoff at most max_backoff",
        ));
    }

    positive(
        &mut out,
        &["watchdog", "interval"],
        config.watchdog.interval,
    );
    positive(&mut out, &["watchdog", "timeout"], config.watchdog.timeout);

    for (name, c) in &config.connectors {
        if !is_token(name) {
            out.push(Problem::new(
                &["connectors", name],
                format!("invalid connector name {name:?}"),
                TOKEN_HINT,
            ));
        }
        if c.max_batch == 0 {
            out.push(Problem::new(
                &["connectors", name, "max_batch"],
                "max_batch is 0",
                "use at least 1",
            ));
        }
        positive(
            &mut out,
            &["connectors", name, "poll_interval"],
            c.poll_interval,
        );
        positive(
            &mut out,
            &["connectors", name, "call_timeout"],
            c.call_timeout,
        );
        if !c.config.is_object() {
            out.push(Problem::new(
                &["connectors", name, "config"],
                "config is not a table",
                "write the plugin's settings as a table: config = { key = value }",
            ));
        }
    }

    for name in config.sims.keys() {
        out.push(Problem::new(
            &["sims", name],
            "the built-in simulator is retired: a simulated machine is a connector of the sim plugin",
            format!(
                "write it as [connectors.{name}] with plugin = \"sim\" and its settings \
                 (interval, tags, fail_every, ...) under [connectors.{name}.config]; \
                 see docs/connectors/sim.md"
            ),
        ));
    }
    out
}

fn broker(out: &mut Vec<Problem>, config: &Config) {
    let b = &config.broker;
    if b.mode == super::BrokerMode::Jetstream && config.bus.nats_url.is_none() {
        out.push(Problem::new(
            &["broker", "mode"],
            "mode \"jetstream\" needs a NATS server, but bus.nats_url is not set",
            "set [bus] nats_url = \"nats://host:4222\", or use mode = \"core\" on the embedded bus",
        ));
    }
    if !b
        .stream
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        || b.stream.is_empty()
    {
        out.push(Problem::new(
            &["broker", "stream"],
            format!("invalid stream name {:?}", b.stream),
            "use letters, digits, '-' and '_' only, such as \"MW_EVENTS\"",
        ));
    }
    if let Some(subjects) = &b.stream_subjects
        && subjects.is_empty()
    {
        out.push(Problem::new(
            &["broker", "stream_subjects"],
            "no subjects",
            "list the subjects the stream captures, or remove the key for <prefix>.ev.>",
        ));
    }
    for (key, n) in [
        ("max_attempts", u64::from(b.max_attempts)),
        ("max_batch", b.max_batch as u64),
        ("intake_capacity", b.intake_capacity as u64),
        ("breaker_failures", u64::from(b.breaker_failures)),
        ("breaker_successes", u64::from(b.breaker_successes)),
    ] {
        if n == 0 {
            out.push(Problem::new(
                &["broker", key],
                format!("{key} is 0"),
                "use at least 1",
            ));
        }
    }
    for (key, d) in [
        ("duplicate_window", b.duplicate_window),
        ("ack_timeout", b.ack_timeout),
        ("intake_timeout", b.intake_timeout),
        ("receipt_timeout", b.receipt_timeout),
        ("breaker_open", b.breaker_open),
        ("breaker_open_max", b.breaker_open_max),
    ] {
        positive(out, &["broker", key], d);
    }
    if b.breaker_open > b.breaker_open_max {
        out.push(Problem::new(
            &["broker", "breaker_open"],
            "breaker_open is longer than breaker_open_max",
            "make breaker_open at most breaker_open_max",
        ));
    }
    if b.sync_policy().is_none() {
        out.push(Problem::new(
            &["broker", "queue_sync"],
            format!("invalid queue_sync {:?}", b.queue_sync),
            format!("expected \"always\" or {}", duration::EXPECTED),
        ));
    }
    if b.queue_segment_bytes < 4096 || b.queue_max_bytes / 2 < b.queue_segment_bytes {
        out.push(Problem::new(
            &["broker", "queue_segment_bytes"],
            format!(
                "queue_segment_bytes ({}) must be at least 4096 and at most half of \
                 queue_max_bytes ({})",
                b.queue_segment_bytes, b.queue_max_bytes
            ),
            "the queue sheds whole segments at its cap: lower queue_segment_bytes or raise \
             queue_max_bytes",
        ));
    }
}

fn positive(out: &mut Vec<Problem>, path: &[&str], d: std::time::Duration) {
    if d.is_zero() {
        out.push(Problem::new(
            path,
            "zero duration",
            format!("expected a positive duration; {}", duration::EXPECTED),
        ));
    }
}
