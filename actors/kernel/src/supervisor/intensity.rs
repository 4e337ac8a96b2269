//! Restart intensity: how many restarts a supervisor tolerates in a sliding window.
//!
//! OTP's rule: when more than `max_restarts` restarts happen within `window`, the supervisor
//! stops its children and fails, so that its own supervisor (which may restart a larger part
//! of the tree) decides. Restarts older than the window are forgotten.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// At most `max_restarts` restarts within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RestartIntensity {
    /// How many restarts the window tolerates; one more escalates. `0` escalates on the first
    /// failure that needs a restart.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RestartIntensity {
    /// 3 restarts in 5 s.
    fn default() -> Self {
        Self {
            max_restarts: 3,
            window: Duration::from_secs(5),
        }
    }
}

impl RestartIntensity {
    /// `max_restarts` in `window`.
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        Self {
            max_restarts,
            window,
        }
    }
}

/// The restart history of one supervisor.
#[derive(Debug, Clone)]
pub(crate) struct IntensityTracker {
    limit: RestartIntensity,
    restarts: VecDeque<Instant>,
}

impl IntensityTracker {
    pub(crate) fn new(limit: RestartIntensity) -> Self {
        Self {
            limit,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; `false` when it exceeds the intensity (escalate).
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= self.limit.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.limit.max_restarts as usize
    }

    /// How many restarts the current window holds.
    #[cfg(test)]
    pub(crate) fn in_window(&self) -> usize {
        self.restarts.len()
    }

    pub(crate) fn limit(&self) -> RestartIntensity {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn default_is_three_in_five_seconds() {
        assert_eq!(
            RestartIntensity::default(),
            RestartIntensity::new(3, secs(5.0))
        );
    }

    #[test]
    fn the_restart_past_the_limit_escalates() {
        let t0 = Instant::now();
        let mut t = IntensityTracker::new(RestartIntensity::default());
        assert!(t.record(t0));
        assert!(t.record(t0 + secs(1.0)));
        assert!(t.record(t0 + secs(2.0)));
        assert!(!t.record(t0 + secs(3.0)));
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut t = IntensityTracker::new(RestartIntensity::default());
        for i in 0..3 {
            assert!(t.record(t0 + secs(f64::from(i))));
        }
        // 5 s after the first one, it leaves the window.
        assert!(t.record(t0 + secs(5.0)));
        assert_eq!(t.in_window(), 3);
        // A steady 1 restart per 2 s never escalates.
        for i in 3..50 {
            assert!(t.record(t0 + secs(5.0 + 2.0 * f64::from(i))));
        }
    }

    #[test]
    fn zero_tolerance_escalates_at_once() {
        let mut t = IntensityTracker::new(RestartIntensity::new(0, secs(5.0)));
        assert!(!t.record(Instant::now()));
    }
}
