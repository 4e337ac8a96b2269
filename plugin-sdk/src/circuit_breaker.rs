//! A circuit breaker: stop calling a dependency that keeps failing, and probe it before trusting
//! it again.
//!
//! ```text
//!            failure_threshold consecutive failures, or trip()
//!   Closed ─────────────────────────────────────────────────────▶ Open { until }
//!     ▲                                                             │ allow() once the
//!     │ success_threshold successes                                 │ window has passed
//!     │                                                             ▼
//!     └──────────────────────────────────────────────────────── HalfOpen
//!                         a failure, or trip(): Open again with a doubled window
//! ```
//!
//! * **Closed**: every call is admitted; `failure_threshold` (5) *consecutive* failures open the
//!   breaker. A success resets the count.
//! * **Open**: every call is rejected with [`BreakerOpen`], which says how long until the breaker
//!   will admit a probe. The first open window is `open_base` (10 s).
//! * **HalfOpen**: the first [`allow`](CircuitBreaker::allow) after the window admits a *probe*;
//!   at most `half_open_max_probes` (1) probes are in flight at once. `success_threshold` (2)
//!   successful probes close the breaker; one failure opens it again for twice the previous
//!   window, capped at `open_max` (120 s): 10 s, 20 s, 40 s, 80 s, 120 s, 120 s, ...
//!
//! The breaker decides nothing about *which* errors count: the caller reports outcomes with
//! [`on_success`](CircuitBreaker::on_success) and [`on_failure`](CircuitBreaker::on_failure).
//! Report a failure only when the dependency itself is unwell (a timeout, a refused connection,
//! a 5xx or 429); an answer such as "404 not found" shows the dependency is up and is a success.
//!
//! Two types share one state machine:
//!
//! * [`CircuitBreaker`] is a plain value (`&mut self`), for a single owner such as an actor;
//! * [`SharedCircuitBreaker`] is a cheap-to-clone handle for several tasks (one breaker per NATS
//!   connection or HTTP provider). Admitting a call in the closed state takes one atomic load and
//!   no lock; [`SharedCircuitBreaker::call`] wraps a future and reports its outcome.
//!
//! Time comes from [`tokio::time::Instant`], so tests can run under paused time; each method that
//! depends on time also has an `_at(now)` form for callers that already hold the current instant.
//! The breaker emits no metrics itself: read [`stats`](CircuitBreaker::stats) and export them.

mod shared;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::time::Instant;

pub use shared::{BreakerError, SharedCircuitBreaker};

/// How a [`CircuitBreaker`] behaves. `BreakerConfig::default()` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures in the closed state that open the breaker. Default 5; 0 counts as 1.
    pub failure_threshold: u32,
    /// Successful probes in the half-open state that close the breaker. Default 2; 0 counts as 1.
    pub success_threshold: u32,
    /// The first open window. Default 10 s.
    pub open_base: Duration,
    /// The longest open window: each failed probe doubles the window up to this cap (which also
    /// caps the first window). Default 120 s.
    pub open_max: Duration,
    /// Probes admitted at once in the half-open state. Default 1; 0 counts as 1.
    pub half_open_max_probes: u32,
    /// A probe that reports no outcome within this time is taken as lost (its caller was
    /// cancelled or forgot to report), and another probe is admitted. Default 10 s.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            success_threshold: 2,
            open_base: Duration::from_secs(10),
            open_max: Duration::from_secs(120),
            half_open_max_probes: 1,
            probe_timeout: Duration::from_secs(10),
        }
    }
}

/// The state of a breaker, as seen by its owner.
///
/// An open breaker whose window has passed reports `Open` until the next
/// [`allow`](CircuitBreaker::allow) turns it half-open: no probe has been sent yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls are admitted.
    Closed,
    /// Calls are rejected until `until`.
    Open {
        /// When the breaker will admit a probe.
        until: Instant,
    },
    /// Probes are admitted one (or `half_open_max_probes`) at a time.
    HalfOpen,
}

impl BreakerState {
    /// A stable lowercase name for logs and metric labels: `closed`, `open` or `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A snapshot of a breaker's state and counters, for metrics and health pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerStats {
    /// The current state.
    pub state: BreakerState,
    /// How many times the breaker has opened (including [`trip`](CircuitBreaker::trip)s), ever.
    pub opens: u64,
    /// How many calls [`allow`](CircuitBreaker::allow) has rejected, ever.
    pub rejections: u64,
    /// Consecutive failures counted in the closed state (0 in the other states).
    pub consecutive_failures: u32,
    /// The length of the current or most recent open window (zero before the first open).
    pub open_window: Duration,
}

/// The breaker rejected a call: the dependency is considered down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is open: retry in {retry_in:?}")]
pub struct BreakerOpen {
    /// How long until the breaker may admit a call (the rest of the open window, or until a
    /// half-open probe slot frees at the latest). A caller that retries should wait this long.
    pub retry_in: Duration,
}

/// The internal state; `Inner::HalfOpen` tracks its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        successes: u32,
        in_flight: u32,
        last_probe: Instant,
    },
}

/// A circuit breaker owned by one task. See the [module docs](self) for the state machine.
///
/// ```
/// use millwright_plugin_sdk::circuit_breaker::{BreakerConfig, CircuitBreaker};
///
/// let mut breaker = CircuitBreaker::new(BreakerConfig::default());
/// let now = tokio::time::Instant::now();
/// for _ in 0..5 {
///     breaker.allow_at(now).expect("closed: admitted");
///     breaker.on_failure_at(now);
/// }
/// let rejected = breaker.allow_at(now).unwrap_err();
/// assert_eq!(rejected.retry_in, std::time::Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
    window: Duration,
    opens: u64,
    rejections: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Inner::Closed { failures: 0 },
            window: Duration::ZERO,
            opens: 0,
            rejections: 0,
        }
    }

    /// The configuration this breaker was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Asks to make a call now. See [`allow_at`](Self::allow_at).
    ///
    /// # Errors
    ///
    /// [`BreakerOpen`] when the breaker is open, or half-open with all probe slots taken.
    pub fn allow(&mut self) -> Result<(), BreakerOpen> {
        self.allow_at(Instant::now())
    }

    /// Asks to make a call at `now`. In the closed state this always succeeds; an open breaker
    /// whose window has passed turns half-open and admits the call as a probe. Every admitted
    /// call should be followed by [`on_success`](Self::on_success) or
    /// [`on_failure`](Self::on_failure); a probe that never reports is taken as lost after
    /// `probe_timeout`.
    ///
    /// # Errors
    ///
    /// [`BreakerOpen`] when the breaker is open, or half-open with all probe slots taken.
    pub fn allow_at(&mut self, now: Instant) -> Result<(), BreakerOpen> {
        match self.inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until } if now < until => {
                self.rejections += 1;
                Err(BreakerOpen {
                    retry_in: until - now,
                })
            }
            Inner::Open { .. } => {
                self.inner = Inner::HalfOpen {
                    successes: 0,
                    in_flight: 1,
                    last_probe: now,
                };
                Ok(())
            }
            Inner::HalfOpen {
                successes,
                in_flight,
                last_probe,
            } => {
                let max = self.config.half_open_max_probes.max(1);
                let probe_expiry = add_or_far(last_probe, self.config.probe_timeout);
                let in_flight = if in_flight < max {
                    in_flight + 1
                } else if now >= probe_expiry {
                    // The probes in flight are overdue: take them as lost.
                    1
                } else {
                    self.rejections += 1;
                    return Err(BreakerOpen {
                        retry_in: probe_expiry - now,
                    });
                };
                self.inner = Inner::HalfOpen {
                    successes,
                    in_flight,
                    last_probe: now,
                };
                Ok(())
            }
        }
    }

    /// Reports that an admitted call succeeded. In the closed state this resets the count of
    /// consecutive failures; in the half-open state it counts towards closing. A late report
    /// while open (from a call admitted before the breaker opened) is ignored.
    pub fn on_success(&mut self) {
        match self.inner {
            Inner::Closed { .. } => self.inner = Inner::Closed { failures: 0 },
            Inner::Open { .. } => {}
            Inner::HalfOpen {
                successes,
                in_flight,
                last_probe,
            } => {
                let successes = successes.saturating_add(1);
                self.inner = if successes >= self.config.success_threshold.max(1) {
                    Inner::Closed { failures: 0 }
                } else {
                    Inner::HalfOpen {
                        successes,
                        in_flight: in_flight.saturating_sub(1),
                        last_probe,
                    }
                };
            }
        }
    }

    /// Reports that an admitted call failed. See [`on_failure_at`](Self::on_failure_at).
    pub fn on_failure(&mut self) {
        self.on_failure_at(Instant::now());
    }

    /// Reports that an admitted call failed at `now`. In the closed state the
    /// `failure_threshold`-th consecutive failure opens the breaker for `open_base`; in the
    /// half-open state any failure opens it again for twice the previous window (capped at
    /// `open_max`). A late report while open is ignored.
    pub fn on_failure_at(&mut self, now: Instant) {
        match self.inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold.max(1) {
                    self.open(now, false);
                } else {
                    self.inner = Inner::Closed { failures };
                }
            }
            Inner::Open { .. } => {}
            Inner::HalfOpen { .. } => self.open(now, true),
        }
    }

    /// Opens the breaker now, whatever its state. See [`trip_at`](Self::trip_at).
    pub fn trip(&mut self) {
        self.trip_at(Instant::now());
    }

    /// Opens the breaker at `now`, whatever its state, as a failure would: from closed for
    /// `open_base`, from half-open for a doubled window; an open breaker restarts its current
    /// window from `now`. Use it when the caller learns out of band that the dependency is down
    /// (a NATS disconnect event, a provider's status page).
    pub fn trip_at(&mut self, now: Instant) {
        match self.inner {
            Inner::Closed { .. } => self.open(now, false),
            Inner::HalfOpen { .. } => self.open(now, true),
            Inner::Open { .. } => {
                self.opens += 1;
                self.inner = Inner::Open {
                    until: add_or_far(now, self.window),
                };
            }
        }
    }

    /// Closes the breaker and forgets its failures, whatever its state. The next open window
    /// starts again from `open_base`. The `opens` and `rejections` counters are kept.
    pub fn reset(&mut self) {
        self.inner = Inner::Closed { failures: 0 };
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } => BreakerState::Open { until },
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The current state and counters.
    pub fn stats(&self) -> BreakerStats {
        BreakerStats {
            state: self.state(),
            opens: self.opens,
            rejections: self.rejections,
            consecutive_failures: match self.inner {
                Inner::Closed { failures } => failures,
                _ => 0,
            },
            open_window: self.window,
        }
    }

    /// Frees the probe slot of a half-open call that ended without an outcome (cancelled).
    fn release_probe(&mut self) {
        if let Inner::HalfOpen {
            successes,
            in_flight,
            last_probe,
        } = self.inner
        {
            self.inner = Inner::HalfOpen {
                successes,
                in_flight: in_flight.saturating_sub(1),
                last_probe,
            };
        }
    }

    /// Whether the breaker is closed with no failures counted (nothing to do on a success).
    fn is_closed_clean(&self) -> bool {
        self.inner == Inner::Closed { failures: 0 }
    }

    fn open(&mut self, now: Instant, escalate: bool) {
        let cap = self.config.open_max;
        self.window = if escalate {
            self.window
                .saturating_mul(2)
                .clamp(self.config.open_base.min(cap), cap)
        } else {
            self.config.open_base.min(cap)
        };
        self.opens += 1;
        self.inner = Inner::Open {
            until: add_or_far(now, self.window),
        };
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

/// `at + d`, or a point about a century later when that overflows (a configured `Duration::MAX`).
fn add_or_far(at: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(d)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
}
