//! Retries with jittered exponential backoff, error classification and `Retry-After`.
//!
//! A [`RetryPolicy`] says how often and how long to wait; the caller says what each error means
//! by mapping it into a [`RetryClass`], and whether the operation may be repeated
//! ([`Idempotency`]). Then:
//!
//! | class of the failed attempt | idempotent operation | non-idempotent operation |
//! |---|---|---|
//! | [`Fatal`](RetryClass::Fatal) (400, 404, ...) | fail fast | fail fast |
//! | [`Transient`](RetryClass::Transient) (timeout, connection error, opted-in 5xx) | retry | fail fast: it may have taken effect |
//! | [`Refused`](RetryClass::Refused) (429, 503, open breaker) | retry | retry: the server did not process it |
//!
//! The n-th retry (n = 0, 1, ...) waits `min(base * 2^n, max)` plus a random extra of up to
//! `jitter` times that, unless the server sent `Retry-After`: then it waits exactly what the
//! server asked. A `Retry-After` longer than `max` gives up at once and surfaces the server's
//! wait in [`GiveUp::RetryAfterTooLong`] (the default: retrying sooner only earns another 429,
//! and the caller can reschedule the work), or, with [`LongRetryAfter::Cap`], waits `max`.
//!
//! [`retry`] runs the whole loop for an async operation. A caller that cannot sleep in place (an
//! actor that schedules a message to itself) asks [`RetryPolicy::next_retry`] for each decision.
//!
//! Presets follow the design defaults: [`RetryPolicy::cmms_http`],
//! [`RetryPolicy::llm_rate_limited`] and [`RetryPolicy::server_errors`].

mod classify;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

pub use classify::{Idempotency, RetryClass, parse_retry_after, parse_retry_after_at};

/// What to do when the server's `Retry-After` is longer than the policy's `max` delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LongRetryAfter {
    /// Stop retrying and return [`GiveUp::RetryAfterTooLong`], which carries the server's wait.
    #[default]
    GiveUp,
    /// Wait `max` and try again (sooner than the server asked).
    Cap,
}

/// How often to retry and how long to wait. Fields are public; start from a preset or
/// `RetryPolicy::default()` and change what you need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt: `max_retries + 1` attempts in all.
    pub max_retries: u32,
    /// The wait before the first retry; it doubles with each retry.
    pub base: Duration,
    /// The cap on the doubling wait (before jitter), and the longest `Retry-After` honoured.
    pub max: Duration,
    /// The random extra added to each wait, as a fraction of it: 0.2 waits between 1.0 and 1.2
    /// times the backoff. Clamped to `0.0..=1.0` (NaN counts as 0).
    pub jitter: f64,
    /// Whether 5xx responses other than 503 are worth retrying (as
    /// [`Transient`](RetryClass::Transient)); when not, they fail fast. 503 is always retried.
    pub retry_server_errors: bool,
    /// What to do with a `Retry-After` longer than `max`.
    pub long_retry_after: LongRetryAfter,
}

impl Default for RetryPolicy {
    /// 3 retries, 0.5 s doubling to 8 s, 20 % jitter, 5xx other than 503 fail fast.
    fn default() -> Self {
        Self {
            max_retries: 3,
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
            jitter: 0.2,
            retry_server_errors: false,
            long_retry_after: LongRetryAfter::GiveUp,
        }
    }
}

impl RetryPolicy {
    /// HTTP calls to a CMMS: `min(0.5 s * 2^n, 8 s)` (+20 % jitter), 3 retries, then the error
    /// reaches the caller. 5xx responses are retried (for idempotent requests only, as any
    /// [`Transient`](RetryClass::Transient) failure).
    pub fn cmms_http() -> Self {
        Self {
            retry_server_errors: true,
            ..Self::default()
        }
    }

    /// A rate-limited API such as an LLM provider: 5 attempts, 1 s doubling to 60 s (+20 %
    /// jitter), honouring `Retry-After` up to 60 s. 5xx other than 503 fail fast.
    pub fn llm_rate_limited() -> Self {
        Self {
            max_retries: 4,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            ..Self::default()
        }
    }

    /// A service that fails with 5xx now and then: 3 attempts, 1 s doubling to 30 s (+20 %
    /// jitter), 5xx retried.
    pub fn server_errors() -> Self {
        Self {
            max_retries: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            retry_server_errors: true,
            ..Self::default()
        }
    }

    /// The backoff before retry `retry` (0-based), without jitter: `min(base * 2^retry, max)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        1u32.checked_shl(retry)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The wait before retry `retry` (0-based), with jitter: a random duration in
    /// `[backoff, backoff * (1 + jitter)]`.
    pub fn delay(&self, retry: u32) -> Duration {
        let backoff = self.backoff(retry);
        let jitter = self.jitter();
        if jitter == 0.0 {
            return backoff;
        }
        let fraction = rand::random_range(0.0..=jitter);
        // Float to int casts saturate; a wait this long is capped by `checked_add`.
        let extra = (backoff.as_nanos() as f64 * fraction) as u64;
        backoff
            .checked_add(Duration::from_nanos(extra))
            .unwrap_or(backoff)
    }

    /// Decides what follows a failed attempt: `Ok(wait)` to retry after `wait`, or the reason to
    /// give up. `attempts` counts the attempts made so far, including the one that just failed
    /// (so 1 after the first failure).
    ///
    /// # Errors
    ///
    /// The [`GiveUp`] reason when the failure is not to be retried.
    pub fn next_retry(
        &self,
        attempts: u32,
        class: RetryClass,
        idempotency: Idempotency,
    ) -> Result<Duration, GiveUp> {
        let retry_after = match class {
            RetryClass::Fatal => return Err(GiveUp::Fatal),
            RetryClass::Transient { .. } if idempotency == Idempotency::NonIdempotent => {
                return Err(GiveUp::NotIdempotent);
            }
            RetryClass::Transient { retry_after } | RetryClass::Refused { retry_after } => {
                retry_after
            }
        };
        let retries_done = attempts.saturating_sub(1);
        if retries_done >= self.max_retries {
            return Err(GiveUp::Exhausted {
                max_retries: self.max_retries,
            });
        }
        match retry_after {
            Some(wait) if wait > self.max => match self.long_retry_after {
                LongRetryAfter::GiveUp => Err(GiveUp::RetryAfterTooLong {
                    retry_after: wait,
                    max: self.max,
                }),
                LongRetryAfter::Cap => Ok(self.max),
            },
            Some(wait) => Ok(wait),
            None => Ok(self.delay(retries_done)),
        }
    }

    fn jitter(&self) -> f64 {
        if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        }
    }
}

/// Why a retry loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GiveUp {
    /// The error was [`Fatal`](RetryClass::Fatal).
    #[error("the error is not retryable")]
    Fatal,
    /// A [`Transient`](RetryClass::Transient) failure of a non-idempotent operation: it may
    /// already have taken effect, so it was not repeated.
    #[error("the operation is not idempotent and may already have taken effect")]
    NotIdempotent,
    /// Every retry was used.
    #[error("no retries left (at most {max_retries})")]
    Exhausted {
        /// The policy's `max_retries`.
        max_retries: u32,
    },
    /// The server asked to wait longer than the policy allows. Reschedule the work after
    /// `retry_after` rather than retrying now.
    #[error("the server asked to retry after {retry_after:?}, longer than the policy's {max:?}")]
    RetryAfterTooLong {
        /// The server's `Retry-After`.
        retry_after: Duration,
        /// The policy's `max`.
        max: Duration,
    },
}

/// The error of [`retry`]: the last attempt's error, how many attempts were made and why the loop
/// stopped.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {attempts} attempt(s): {reason}")]
#[non_exhaustive]
pub struct RetryError<E> {
    /// Attempts made, including the last one (at least 1).
    pub attempts: u32,
    /// Why the loop stopped.
    pub reason: GiveUp,
    /// The last attempt's error.
    #[source]
    pub last: E,
}

impl<E> RetryError<E> {
    /// The last attempt's error.
    pub fn into_inner(self) -> E {
        self.last
    }
}

/// Runs `op` until it succeeds or `policy` says to stop, sleeping (with [`tokio::time::sleep`])
/// between attempts. `classify` maps each error into a [`RetryClass`]; `idempotency` says whether
/// a [`Transient`](RetryClass::Transient) failure may be repeated.
///
/// ```
/// use millwright_plugin_sdk::retry::{Idempotency, RetryClass, RetryPolicy, retry};
///
/// # async fn demo() {
/// let policy = RetryPolicy::cmms_http();
/// let mut calls = 0;
/// let result = retry(&policy, Idempotency::Idempotent, |_: &&str| RetryClass::NETWORK, || {
///     calls += 1;
///     let attempt = calls;
///     async move { if attempt < 3 { Err("connection reset") } else { Ok(attempt) } }
/// })
/// .await;
/// assert_eq!(result.unwrap(), 3);
/// # }
/// ```
///
/// # Errors
///
/// [`RetryError`] with the last error when the error is fatal, when a transient error hits a
/// non-idempotent operation, when the retries are used up, or when the server's `Retry-After` is
/// longer than the policy's `max` (unless [`LongRetryAfter::Cap`]).
///
/// # Cancel safety
///
/// Dropping the returned future drops the attempt in flight (or the sleep between attempts) and
/// starts no further attempt. Whether dropping an attempt is safe is up to `op`.
pub async fn retry<T, E, F, Fut, C>(
    policy: &RetryPolicy,
    idempotency: Idempotency,
    classify: C,
    mut op: F,
) -> Result<T, RetryError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Fn(&E) -> RetryClass,
{
    let mut attempts = 0u32;
    loop {
        attempts = attempts.saturating_add(1);
        let last = match op().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        match policy.next_retry(attempts, classify(&last), idempotency) {
            Ok(wait) => tokio::time::sleep(wait).await,
            Err(reason) => {
                return Err(RetryError {
                    attempts,
                    reason,
                    last,
                });
            }
        }
    }
}
