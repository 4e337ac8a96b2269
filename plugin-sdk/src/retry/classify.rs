//! Error classification for retries: [`RetryClass`], [`Idempotency`], HTTP status codes and
//! `Retry-After` headers.

use std::time::{Duration, SystemTime};

use super::RetryPolicy;

/// What a failed attempt says about trying again. The caller maps its own error type into this
/// (see [`RetryPolicy::classify_http_status`] for HTTP responses).
///
/// The difference between [`Refused`](Self::Refused) and [`Transient`](Self::Transient) is
/// whether the attempt may have taken effect: it decides whether a non-idempotent operation
/// (a `POST` that creates a work order) may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryClass {
    /// Trying again will fail the same way (a 400, 401, 404, a bad configuration): fail fast.
    Fatal,
    /// The attempt failed in a way that may have taken effect: a timeout, a connection error
    /// (reset, refused, DNS), or a 5xx the caller opted into. Retried only when the operation is
    /// [`Idempotent`](Idempotency::Idempotent).
    Transient {
        /// How long the server asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The server refused the request before processing it (429 Too Many Requests, 503 Service
    /// Unavailable, an open circuit breaker): retried whatever the operation's idempotency.
    Refused {
        /// How long the server asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
}

impl RetryClass {
    /// A timeout or connection error with no server hint: `Transient { retry_after: None }`.
    pub const NETWORK: Self = Self::Transient { retry_after: None };

    /// The server's `Retry-After`, if the class carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            Self::Fatal => None,
            Self::Transient { retry_after } | Self::Refused { retry_after } => retry_after,
        }
    }
}

/// Whether repeating an operation is harmless. It decides whether a
/// [`Transient`](RetryClass::Transient) failure may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Idempotency {
    /// Doing it twice has the same effect as doing it once: reads, `PUT`, `DELETE`, and a `POST`
    /// the server de-duplicates (an idempotency key, a client-chosen id).
    Idempotent,
    /// Doing it twice may do it twice: a `POST` that creates something. After a timeout or a
    /// connection error the first attempt may have succeeded, so it is not retried.
    NonIdempotent,
}

impl Idempotency {
    /// The idempotency HTTP defines for a request method (RFC 9110 section 9.2.2): `GET`, `HEAD`,
    /// `OPTIONS`, `TRACE`, `PUT` and `DELETE` are idempotent; `POST`, `PATCH` and anything
    /// unknown are not. A caller that makes a `POST` safe (an idempotency key) says
    /// [`Idempotency::Idempotent`] instead.
    pub fn of_http_method(method: &str) -> Self {
        const IDEMPOTENT: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];
        if IDEMPOTENT.iter().any(|m| m.eq_ignore_ascii_case(method)) {
            Self::Idempotent
        } else {
            Self::NonIdempotent
        }
    }
}

impl RetryPolicy {
    /// Classifies an HTTP error response by its status code and `Retry-After` header value.
    ///
    /// | status | class |
    /// |---|---|
    /// | 429, 503 | [`Refused`](RetryClass::Refused), with the parsed `Retry-After` |
    /// | other 5xx | [`Transient`](RetryClass::Transient) when [`retry_server_errors`](RetryPolicy::retry_server_errors) is set, else [`Fatal`](RetryClass::Fatal) |
    /// | everything else (other 4xx, and 1xx-3xx, which are not errors) | [`Fatal`](RetryClass::Fatal) |
    ///
    /// A `Retry-After` that does not parse is ignored (the policy's backoff applies). Timeouts
    /// and connection errors have no status: classify them as [`RetryClass::NETWORK`].
    pub fn classify_http_status(&self, status: u16, retry_after: Option<&str>) -> RetryClass {
        let retry_after = || retry_after.and_then(parse_retry_after);
        match status {
            429 | 503 => RetryClass::Refused {
                retry_after: retry_after(),
            },
            500..=599 if self.retry_server_errors => RetryClass::Transient {
                retry_after: retry_after(),
            },
            _ => RetryClass::Fatal,
        }
    }
}

/// Parses a `Retry-After` header value, relative to the system clock. See
/// [`parse_retry_after_at`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// Parses a `Retry-After` header value (RFC 9110 section 10.2.3) as a wait from `now`:
///
/// * delay-seconds (`"120"`): that many seconds; a number too large for a `u64` saturates;
/// * an HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, and the obsolete RFC 850 and asctime
///   forms): the time until then, or zero when it has passed;
/// * anything else (`"-1"`, `"1.5"`, `"soon"`, empty): `None`.
pub fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl From<crate::circuit_breaker::BreakerOpen> for RetryClass {
    /// An open breaker refused the call before it was made: [`Refused`](RetryClass::Refused),
    /// to be retried once the breaker's window has passed.
    fn from(open: crate::circuit_breaker::BreakerOpen) -> Self {
        Self::Refused {
            retry_after: Some(open.retry_in),
        }
    }
}
