//! The HTTP client: one request, retried by the CMMS policy, behind this instance's circuit
//! breaker, measured, and turned into a [`ConnectorError`] the host can act on.
//!
//! Each attempt passes the breaker first. What an attempt's failure means:
//!
//! | failure | retry class | breaker | after the last attempt |
//! |---|---|---|---|
//! | connection refused / cannot connect (nothing was sent) | `Refused` (retried, even a `POST`) | failure | `not_connected` |
//! | timeout, connection dropped after sending | `Transient` (retried when idempotent) | failure | `transient` |
//! | 429 | `Refused`, honouring `Retry-After` | failure | `back_off(Retry-After)` |
//! | 503 | `Refused`, honouring `Retry-After` | failure | `transient` |
//! | other 5xx | `Transient` (retried when idempotent) | failure | `transient` |
//! | other 4xx (400, 401, 404, 422, ...) | `Fatal`: no retry | success (the CMMS is up) | `config`, with status and body |
//! | breaker open | `Refused` with the breaker's wait | (not called) | `back_off(wait)` |
//!
//! A `Retry-After` (or a breaker wait) longer than the policy's `max` ends the call at once
//! with `back_off(that wait)`.

use std::time::Duration;

use millwright_plugin_sdk::circuit_breaker::BreakerState;
use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::retry::GiveUp;
use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use crate::config::Settings;
use crate::secret::Secret;

/// The shortest attempt worth making before the call's deadline.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// The longest body excerpt put in an error or a log line.
const EXCERPT: usize = 512;

/// One logical request (before retries).
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// The connector method it serves (`list_assets`): a bounded metric label.
    pub op: &'static str,
    /// `GET` or `POST`.
    pub method: Method,
    /// The full URL, without the query.
    pub url: String,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// The JSON body, for a `POST`.
    pub body: Option<serde_json::Value>,
    /// The idempotency key sent in the idempotency header, if any.
    pub idempotency_key: Option<String>,
    /// Whether the request may be repeated after it may have taken effect.
    pub idempotency: Idempotency,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The body as JSON; a body that is not JSON comes as a JSON string, an empty one as
    /// `null`.
    pub body: serde_json::Value,
    /// Attempts made (1 when the first one worked).
    pub attempts: u32,
}

/// Why one attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// The connection could not be made: nothing was sent.
    Connect(String),
    /// No full answer within `request_timeout`.
    Timeout,
    /// The connection failed after the request may have been sent.
    Network(String),
    /// The CMMS answered with a non-2xx status.
    Status {
        status: StatusCode,
        retry_after: Option<String>,
        excerpt: String,
    },
    /// The breaker refused the attempt.
    Open(BreakerOpen),
}

impl AttemptError {
    /// Whether the attempt says the CMMS is unwell (counted by the breaker).
    fn is_failure(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Timeout | Self::Network(_) => true,
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Open(_) => false,
        }
    }

    /// The `outcome` label of `cmms_requests_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect_error",
            Self::Timeout => "timeout",
            Self::Network(_) => "network_error",
            Self::Status { status, .. } if status.is_server_error() => "server_error",
            Self::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                "rate_limited"
            }
            Self::Status { .. } => "client_error",
            Self::Open(_) => "breaker_open",
        }
    }
}

/// The text of an error and its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// At most 512 bytes of `text`, cut at a character boundary.
pub fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.len() <= EXCERPT {
        return text.to_owned();
    }
    let mut end = EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The HTTP side of one instance: a reqwest client, the credential, the retry policy and the
/// instance's circuit breaker.
#[derive(Debug)]
pub struct CmmsClient {
    http: reqwest::Client,
    auth: Option<(HeaderName, HeaderValue)>,
    secret: Option<Secret>,
    settings: Settings,
    breaker: SharedCircuitBreaker,
    /// The last failure, for `health`.
    last_failure: Option<String>,
}

impl CmmsClient {
    /// A client for `settings`, with its credential (read at connect) and the instance's
    /// breaker (kept across reconnects).
    ///
    /// # Errors
    /// [`ConnectorError::Config`] when the HTTP client cannot be built (a TLS setup problem)
    /// or the secret cannot be a header.
    pub fn new(
        settings: Settings,
        secret: Option<Secret>,
        breaker: SharedCircuitBreaker,
    ) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("millwright-cmms-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                ConnectorError::Config(format!("cannot build the HTTP client: {}", chain(&e)))
            })?;
        let auth = match (&settings.auth, &secret) {
            (Some(auth), Some(secret)) => Some(secret.header(auth)?),
            _ => None,
        };
        Ok(Self {
            http,
            auth,
            secret,
            settings,
            breaker,
            last_failure: None,
        })
    }

    /// The settings the client runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `text` without the secret.
    pub fn scrub(&self, text: &str) -> String {
        match &self.secret {
            Some(s) => s.scrub(text),
            None => text.to_owned(),
        }
    }

    /// The last failure since the last success, if any.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Makes one attempt.
    async fn attempt(
        &self,
        call: &HttpCall,
        timeout: Duration,
    ) -> Result<(u16, serde_json::Value), AttemptError> {
        let mut request = self
            .http
            .request(call.method.clone(), &call.url)
            .timeout(timeout);
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(key) = &call.idempotency_key {
            request = request.header(self.settings.idempotency_header.clone(), key.as_str());
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                AttemptError::Timeout
            } else if e.is_connect() {
                AttemptError::Connect(self.scrub(&chain(&e)))
            } else {
                AttemptError::Network(self.scrub(&chain(&e)))
            }
        };
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.map_err(classify)?;
        if !status.is_success() {
            return Err(AttemptError::Status {
                status,
                retry_after,
                excerpt: self.scrub(&excerpt(&text)),
            });
        }
        let body = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        Ok((status.as_u16(), body))
    }

    fn class(&self, e: &AttemptError) -> RetryClass {
        match e {
            AttemptError::Connect(_) => RetryClass::Refused { retry_after: None },
            AttemptError::Timeout | AttemptError::Network(_) => RetryClass::NETWORK,
            AttemptError::Status {
                status,
                retry_after,
                ..
            } => self
                .settings
                .policy
                .classify_http_status(status.as_u16(), retry_after.as_deref()),
            AttemptError::Open(open) => RetryClass::from(*open),
        }
    }

    /// Publishes the breaker's state as the gauge `cmms_breaker_state` (0 closed, 1 half
    /// open, 2 open).
    fn breaker_gauge(&self, ctx: &Context) {
        let value = match self.breaker.state() {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open { .. } => 2.0,
        };
        ctx.gauge("cmms_breaker_state", &[], value);
    }

    /// Sends `call`, retrying by the policy, each attempt through the breaker.
    ///
    /// Metrics: `cmms_requests_total{method, outcome}` and
    /// `cmms_request_duration_seconds{method}` per attempt, `cmms_retries_total{method}` per
    /// retry, `cmms_breaker_state` after each attempt.
    ///
    /// # Errors
    /// See the [module docs](self): `not_connected`, `transient`, `back_off`, or `config` for
    /// an answer no retry can change (with the status and a body excerpt).
    ///
    /// # Cancel safety
    /// Dropping the future drops the attempt in flight; a `POST` may or may not have reached
    /// the CMMS. A stop request (`ctx.cancelled()`) ends the wait between attempts with a
    /// `transient` error.
    pub async fn send(&mut self, ctx: &Context, call: &HttpCall) -> Result<Answer, ConnectorError> {
        let mut attempts = 0u32;
        let deadline = Instant::now() + self.settings.call_deadline;
        loop {
            attempts += 1;
            let started = Instant::now();
            // The last attempt gets what is left of the call's deadline, if that is shorter.
            let timeout = self
                .settings
                .timeout
                .min(deadline.saturating_duration_since(started))
                .max(MIN_ATTEMPT);
            let result = self
                .breaker
                .call(self.attempt(call, timeout), AttemptError::is_failure)
                .await;
            let result = match result {
                Ok(ok) => Ok(ok),
                Err(BreakerError::Open(open)) => Err(AttemptError::Open(open)),
                Err(BreakerError::Inner(e)) => Err(e),
            };
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.outcome(),
            };
            ctx.counter(
                "cmms_requests_total",
                &[("method", call.op), ("outcome", outcome)],
                1,
            );
            if !matches!(result, Err(AttemptError::Open(_))) {
                ctx.histogram(
                    "cmms_request_duration_seconds",
                    &[("method", call.op)],
                    started.elapsed().as_secs_f64(),
                );
            }
            self.breaker_gauge(ctx);
            let error = match result {
                Ok((status, body)) => {
                    self.last_failure = None;
                    return Ok(Answer {
                        status,
                        body,
                        attempts,
                    });
                }
                Err(e) => e,
            };
            let class = self.class(&error);
            let decision = self
                .settings
                .policy
                .next_retry(attempts, class, call.idempotency)
                .and_then(|wait| {
                    // No retry that could not get a fair attempt in before the deadline.
                    if Instant::now() + wait + MIN_ATTEMPT > deadline {
                        ctx.log(
                            Level::Warn,
                            "CMMS request failed; not retrying: call_deadline would pass",
                            &[
                                ("method", &call.op),
                                ("attempt", &attempts),
                                ("wait_ms", &wait.as_millis()),
                                (
                                    "call_deadline",
                                    &humantime::format_duration(self.settings.call_deadline),
                                ),
                            ],
                        );
                        Err(GiveUp::Exhausted {
                            max_retries: attempts - 1,
                        })
                    } else {
                        Ok(wait)
                    }
                });
            match decision {
                Ok(wait) => {
                    ctx.counter("cmms_retries_total", &[("method", call.op)], 1);
                    ctx.log(
                        Level::Warn,
                        "CMMS request failed; retrying",
                        &[
                            ("method", &call.op),
                            ("http", &format!("{} {}", call.method, call.url)),
                            ("attempt", &attempts),
                            ("wait_ms", &wait.as_millis()),
                            ("error", &self.describe(&error)),
                        ],
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = ctx.cancelled() => {
                            return Err(ConnectorError::Transient(format!(
                                "{} {}: stopped while waiting to retry ({})",
                                call.method, call.url, self.describe(&error)
                            )));
                        }
                    }
                }
                Err(reason) => {
                    // An open breaker is not news about the CMMS: keep the failure that opened it.
                    let refused = matches!(error, AttemptError::Open(_));
                    let e = self.give_up(call, error, class, reason, attempts);
                    if !refused && !matches!(e, ConnectorError::Config(_)) {
                        self.last_failure = Some(e.to_string());
                    }
                    ctx.log(
                        Level::Warn,
                        "CMMS request failed",
                        &[
                            ("method", &call.op),
                            ("http", &format!("{} {}", call.method, call.url)),
                            ("attempts", &attempts),
                            ("error", &e),
                        ],
                    );
                    return Err(e);
                }
            }
        }
    }

    fn describe(&self, e: &AttemptError) -> String {
        match e {
            AttemptError::Connect(m) => format!("cannot connect: {m}"),
            AttemptError::Timeout => format!(
                "no answer within request_timeout ({}) or the rest of call_deadline",
                humantime::format_duration(self.settings.timeout)
            ),
            AttemptError::Network(m) => format!("connection failed: {m}"),
            AttemptError::Status {
                status, excerpt, ..
            } => {
                if excerpt.is_empty() {
                    format!("the CMMS answered {status}")
                } else {
                    format!("the CMMS answered {status}: {excerpt}")
                }
            }
            AttemptError::Open(open) => open.to_string(),
        }
    }

    /// The error the caller sees once the policy gave up.
    fn give_up(
        &self,
        call: &HttpCall,
        error: AttemptError,
        class: RetryClass,
        reason: GiveUp,
        attempts: u32,
    ) -> ConnectorError {
        let what = format!("{} {}", call.method, call.url);
        let tries = if attempts == 1 {
            "1 attempt".to_owned()
        } else {
            format!("{attempts} attempts")
        };
        let detail = self.describe(&error);
        if let GiveUp::RetryAfterTooLong { retry_after, .. } = reason {
            return ConnectorError::BackOff(retry_after);
        }
        match (error, reason) {
            (AttemptError::Open(open), _) => ConnectorError::BackOff(open.retry_in),
            (AttemptError::Status { status, .. }, _) if status == StatusCode::TOO_MANY_REQUESTS => {
                ConnectorError::BackOff(class.retry_after().unwrap_or(self.settings.policy.max))
            }
            (AttemptError::Status { status, .. }, reason)
                if status.is_server_error() && reason == GiveUp::NotIdempotent =>
            {
                ConnectorError::Transient(format!(
                    "{what}: {detail} ({tries}); not retried: the create may have taken \
                     effect; give the payload an idempotency_key to make it safe to retry"
                ))
            }
            (AttemptError::Status { status, .. }, _) if status.is_server_error() => {
                ConnectorError::Transient(format!("{what}: {detail} ({tries})"))
            }
            (AttemptError::Status { status, .. }, _) => {
                let hint = match status {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        "check auth (the secret, auth.scheme and auth.header)"
                    }
                    StatusCode::NOT_FOUND => "check the id, or base_url and paths",
                    _ => "fix the request payload",
                };
                ConnectorError::Config(format!("{what}: {detail} ({tries}); {hint}"))
            }
            (AttemptError::Connect(_), _) => {
                ConnectorError::NotConnected(format!("{what}: {detail} ({tries})"))
            }
            (AttemptError::Timeout | AttemptError::Network(_), GiveUp::NotIdempotent) => {
                ConnectorError::Transient(format!(
                    "{what}: {detail} ({tries}); not retried: the request was sent and may have \
                     created the work order; give the payload an idempotency_key (or set \
                     auto_idempotency_keys) to make it safe to retry"
                ))
            }
            (AttemptError::Timeout | AttemptError::Network(_), _) => {
                ConnectorError::Transient(format!("{what}: {detail} ({tries})"))
            }
        }
    }

    /// The connector's health from the breaker and the last failure.
    pub fn health(&self) -> Health {
        let stats = self.breaker.stats();
        match stats.state {
            BreakerState::Open { until } => Health::Unhealthy(format!(
                "circuit breaker open for {} more (opened {} time(s)); last failure: {}",
                humantime::format_duration(round_up_secs(
                    until.saturating_duration_since(Instant::now())
                )),
                stats.opens,
                self.last_failure.as_deref().unwrap_or("unknown")
            )),
            BreakerState::HalfOpen => Health::Degraded(
                "circuit breaker half open: probing the CMMS after failures".to_owned(),
            ),
            BreakerState::Closed => match &self.last_failure {
                Some(f) => Health::Degraded(format!("last request failed: {f}")),
                None => Health::Healthy,
            },
        }
    }
}

/// `d` rounded up to whole seconds, for messages.
fn round_up_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// `segment` percent-encoded as one URL path segment (RFC 3986 unreserved characters stay).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use millwright_plugin_sdk::context::{Host, LogRecord, MetricUpdate};

    use super::*;
    use crate::config::CmmsConfig;

    #[test]
    fn ids_are_one_encoded_segment_and_excerpts_are_bounded() {
        assert_eq!(encode_segment("P-1"), "P-1");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("Kühl"), "K%C3%BChl");
        let long = "é".repeat(400);
        let e = excerpt(&long);
        assert!(e.len() <= EXCERPT + 3 && e.ends_with("..."), "{}", e.len());
    }

    fn client(config: serde_json::Value) -> CmmsClient {
        let c: CmmsConfig = serde_json::from_value(config).unwrap();
        let settings = Settings::from_config(&c).unwrap();
        let breaker = SharedCircuitBreaker::new(settings.breaker);
        CmmsClient::new(settings, None, breaker).unwrap()
    }

    fn post() -> HttpCall {
        HttpCall {
            op: "create_work_order",
            method: Method::POST,
            url: "http://h/api/work_orders".into(),
            query: Vec::new(),
            body: None,
            idempotency_key: None,
            idempotency: Idempotency::NonIdempotent,
        }
    }

    fn status(code: u16, retry_after: Option<&str>) -> AttemptError {
        AttemptError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: retry_after.map(str::to_owned),
            excerpt: "body".into(),
        }
    }

    /// The module docs' table, row by row, without I/O.
    #[test]
    fn each_failure_is_classified_and_mapped_as_documented() {
        let c = client(serde_json::json!({"base_url": "http://h/api"}));
        let s = Duration::from_secs(1);
        let refused = |r: Option<Duration>| RetryClass::Refused { retry_after: r };
        for (error, class, breaker_failure) in [
            (AttemptError::Connect("refused".into()), refused(None), true),
            (AttemptError::Timeout, RetryClass::NETWORK, true),
            (
                AttemptError::Network("reset".into()),
                RetryClass::NETWORK,
                true,
            ),
            (status(429, Some("3")), refused(Some(3 * s)), true),
            (status(503, None), refused(None), true),
            (
                status(500, None),
                RetryClass::Transient { retry_after: None },
                true,
            ),
            (status(404, None), RetryClass::Fatal, false),
            (status(401, None), RetryClass::Fatal, false),
            (
                AttemptError::Open(BreakerOpen { retry_in: 4 * s }),
                refused(Some(4 * s)),
                false,
            ),
        ] {
            assert_eq!(c.class(&error), class, "{error:?}");
            assert_eq!(error.is_failure(), breaker_failure, "{error:?}");
        }
        let exhausted = GiveUp::Exhausted { max_retries: 3 };
        let give_up = |e: AttemptError, reason: GiveUp| {
            let class = c.class(&e);
            c.give_up(&post(), e, class, reason, 4)
        };
        assert!(matches!(
            give_up(AttemptError::Connect("refused".into()), exhausted),
            ConnectorError::NotConnected(m) if m.contains("cannot connect") && m.contains("4 attempts")
        ));
        assert!(matches!(
            give_up(AttemptError::Network("reset".into()), GiveUp::NotIdempotent),
            ConnectorError::Transient(m) if m.contains("not retried") && m.contains("idempotency_key")
        ));
        assert_eq!(
            give_up(status(429, Some("3")), exhausted),
            ConnectorError::BackOff(3 * s)
        );
        assert_eq!(
            give_up(status(429, None), exhausted),
            ConnectorError::BackOff(8 * s),
            "a 429 without Retry-After backs off for retry.max"
        );
        assert_eq!(
            give_up(
                status(503, Some("60")),
                GiveUp::RetryAfterTooLong {
                    retry_after: 60 * s,
                    max: 8 * s
                }
            ),
            ConnectorError::BackOff(60 * s)
        );
        assert!(matches!(
            give_up(status(503, None), exhausted),
            ConnectorError::Transient(m) if m.contains("503") && m.contains("body")
        ));
        assert!(matches!(
            give_up(status(401, None), GiveUp::Fatal),
            ConnectorError::Config(m) if m.contains("401") && m.contains("check auth")
        ));
        assert!(matches!(
            give_up(status(422, None), GiveUp::Fatal),
            ConnectorError::Config(m) if m.contains("422") && m.contains("fix the request payload")
        ));
        assert_eq!(
            give_up(
                AttemptError::Open(BreakerOpen { retry_in: 4 * s }),
                exhausted
            ),
            ConnectorError::BackOff(4 * s)
        );
    }

    /// Counts the retries the client announces (the counter is bumped as a wait begins).
    #[derive(Default)]
    struct Retries(std::sync::atomic::AtomicU64);

    impl Host for Retries {
        fn log(&self, _: &str, _: LogRecord) {}
        fn metric(&self, _: &str, update: MetricUpdate) {
            if update.name == "cmms_retries_total" {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    #[tokio::test]
    async fn a_stop_request_ends_the_wait_between_attempts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut c = client(serde_json::json!({
            "base_url": format!("http://{addr}/api"),
            "retry": {"base": "8s", "jitter": 0.0},
        }));
        let retries = Arc::new(Retries::default());
        let (ctx, cancel) =
            Context::new("cmms-http", "t", serde_json::Value::Null, retries.clone());
        let call = HttpCall {
            op: "list_assets",
            method: Method::GET,
            url: format!("http://{addr}/api/assets"),
            query: Vec::new(),
            body: None,
            idempotency_key: None,
            idempotency: Idempotency::Idempotent,
        };
        let started = Instant::now();
        let send = c.send(&ctx, &call);
        tokio::pin!(send);
        // Drive the call until the first attempt has failed and the 8 s wait has begun.
        let waiting = async {
            while retries.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            r = &mut send => panic!("the call ended before its first retry: {r:?}"),
            () = waiting => {}
        }
        cancel.cancel();
        let err = send.await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Transient(m) if m.contains("stopped while waiting")),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
