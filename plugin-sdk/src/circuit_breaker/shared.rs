//! [`SharedCircuitBreaker`]: one breaker used from many tasks.
//!
//! The state machine lives in a [`CircuitBreaker`] behind a `std::sync::Mutex` that is never held
//! across an `.await`. A one-byte atomic mirrors the coarse state so that the hot path, a call
//! admitted and succeeding while the breaker is closed and clean, takes no lock at all.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{BreakerConfig, BreakerOpen, BreakerState, BreakerStats, CircuitBreaker};

/// Closed with no failures counted: `allow` and `on_success` need no lock.
const CLOSED_CLEAN: u8 = 0;
/// Closed with failures counted: `allow` needs no lock, `on_success` must reset the count.
const CLOSED_FAILING: u8 = 1;
/// Open or half-open: every operation takes the lock.
const GUARDED: u8 = 2;

/// A circuit breaker shared by several tasks; clones share one state.
///
/// It has the same state machine and methods as [`CircuitBreaker`], plus
/// [`call`](Self::call), which admits, runs and reports a future in one step.
///
/// ```
/// use millwright_plugin_sdk::circuit_breaker::{BreakerError, SharedCircuitBreaker};
///
/// # async fn demo() {
/// let breaker = SharedCircuitBreaker::default();
/// let result: Result<u32, BreakerError<std::io::Error>> = breaker
///     .call(async { Ok(42) }, |_e: &std::io::Error| true)
///     .await;
/// assert_eq!(result.unwrap(), 42);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SharedCircuitBreaker {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    fast: AtomicU8,
    breaker: Mutex<CircuitBreaker>,
}

/// The error of [`SharedCircuitBreaker::call`]: the breaker refused the call, or the call failed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker is open: the call was not made.
    #[error(transparent)]
    Open(#[from] BreakerOpen),
    /// The call was made and returned this error.
    #[error(transparent)]
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The call's own error, if the call was made.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Open(_) => None,
        }
    }
}

impl SharedCircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            inner: Arc::new(Shared {
                fast: AtomicU8::new(CLOSED_CLEAN),
                breaker: Mutex::new(CircuitBreaker::new(config)),
            }),
        }
    }

    /// Asks to make a call now; see [`CircuitBreaker::allow_at`]. Lock-free while closed.
    ///
    /// # Errors
    ///
    /// [`BreakerOpen`] when the breaker is open, or half-open with all probe slots taken.
    pub fn allow(&self) -> Result<(), BreakerOpen> {
        if self.inner.fast.load(Ordering::Acquire) != GUARDED {
            return Ok(());
        }
        self.with(|b| b.allow())
    }

    /// Reports that an admitted call succeeded; see [`CircuitBreaker::on_success`]. Lock-free
    /// while closed with no failures counted.
    pub fn on_success(&self) {
        if self.inner.fast.load(Ordering::Acquire) == CLOSED_CLEAN {
            return;
        }
        self.with(CircuitBreaker::on_success);
    }

    /// Reports that an admitted call failed; see [`CircuitBreaker::on_failure_at`].
    pub fn on_failure(&self) {
        self.with(CircuitBreaker::on_failure);
    }

    /// Opens the breaker now, whatever its state; see [`CircuitBreaker::trip_at`].
    pub fn trip(&self) {
        self.with(CircuitBreaker::trip);
    }

    /// Closes the breaker and forgets its failures; see [`CircuitBreaker::reset`].
    pub fn reset(&self) {
        self.with(CircuitBreaker::reset);
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.with(|b| b.state())
    }

    /// The current state and counters, read together.
    pub fn stats(&self) -> BreakerStats {
        self.with(|b| b.stats())
    }

    /// Runs `fut` if the breaker admits it, and reports its outcome: `Ok` is a success, an `Err`
    /// for which `is_failure` returns `true` is a failure, and any other `Err` (say a 404: the
    /// dependency answered) is a success.
    ///
    /// The future is not polled when the breaker rejects the call. Wrap it in
    /// `tokio::time::timeout` (and count the timeout as a failure) if it could hang: a call that
    /// never ends never reports.
    ///
    /// # Errors
    ///
    /// [`BreakerError::Open`] when the breaker rejects the call; [`BreakerError::Inner`] with the
    /// future's own error otherwise.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe as far as the breaker is concerned: dropping the returned future before it
    /// completes reports no outcome and frees the half-open probe slot, if the call held one.
    /// Whether cancelling `fut` itself is safe is up to `fut`.
    pub async fn call<T, E, Fut>(
        &self,
        fut: Fut,
        is_failure: impl FnOnce(&E) -> bool,
    ) -> Result<T, BreakerError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.allow()?;
        let mut pending = PendingCall {
            breaker: self,
            done: false,
        };
        let result = fut.await;
        pending.done = true;
        match &result {
            Err(e) if is_failure(e) => self.on_failure(),
            _ => self.on_success(),
        }
        result.map_err(BreakerError::Inner)
    }

    fn with<R>(&self, f: impl FnOnce(&mut CircuitBreaker) -> R) -> R {
        let mut breaker = self.lock();
        let r = f(&mut breaker);
        let fast = if breaker.is_closed_clean() {
            CLOSED_CLEAN
        } else if breaker.state() == BreakerState::Closed {
            CLOSED_FAILING
        } else {
            GUARDED
        };
        self.inner.fast.store(fast, Ordering::Release);
        r
    }

    fn lock(&self) -> MutexGuard<'_, CircuitBreaker> {
        // The breaker's methods do not panic, so a poisoned lock still holds a consistent state.
        self.inner
            .breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for SharedCircuitBreaker {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

impl From<CircuitBreaker> for SharedCircuitBreaker {
    fn from(breaker: CircuitBreaker) -> Self {
        let shared = Self::new(breaker.config);
        shared.with(|b| *b = breaker);
        shared
    }
}

/// Frees the half-open probe slot of a [`SharedCircuitBreaker::call`] dropped mid-flight.
struct PendingCall<'a> {
    breaker: &'a SharedCircuitBreaker,
    done: bool,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.with(CircuitBreaker::release_probe);
        }
    }
}
