//! Restart intensity: how many restarts a supervisor tolerates in a sliding window.
//!
//! OTP's rule: when more than `max_restarts` restarts happen within `window`, the supervisor
//! stops its children and fails, so that its own supervisor (which may restart a larger part
//! of the tree) decides. Restarts older than the window are forgotten.
//!
//! The restarts are counted over all children ([`IntensityScope::Supervisor`], OTP's rule and
//! the default) or for each child on its own ([`IntensityScope::PerChild`]): a supervisor of
//! many independent instances (thousands of connectors) must not give up because a few
//! unrelated instances crashed in the same window; it gives up when one child keeps failing.
//! Either way a window holds at most `max_restarts + 1` instants.

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

/// Whose restarts one intensity budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IntensityScope {
    /// All the supervisor's restarts together (OTP): more than `max_restarts` restarts of any
    /// children within `window` escalate.
    #[default]
    Supervisor,
    /// Each child on its own: the supervisor escalates when one child is restarted more than
    /// `max_restarts` times within `window`, however many other children restart meanwhile.
    /// For supervisors of many independent instances. A child's history is forgotten when it
    /// is removed or ends for good.
    PerChild,
}

impl std::fmt::Display for IntensityScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Supervisor => "of all children",
            Self::PerChild => "of one child",
        })
    }
}

/// The restart history one budget counts (a supervisor's, or one child's).
#[derive(Debug, Clone, Default)]
pub(crate) struct RestartWindow {
    restarts: VecDeque<Instant>,
}

impl RestartWindow {
    /// Records a restart at `now` against `limit`; `false` when it exceeds it (escalate).
    /// Holds at most `max_restarts + 1` instants.
    pub(crate) fn record(&mut self, limit: RestartIntensity, now: Instant) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= limit.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        let max = limit.max_restarts as usize;
        while self.restarts.len() > max + 1 {
            self.restarts.pop_front();
        }
        self.restarts.len() <= max
    }

    /// Forgets the history and frees its memory.
    pub(crate) fn clear(&mut self) {
        self.restarts = VecDeque::new();
    }

    /// How many restarts the current window holds.
    #[cfg(test)]
    pub(crate) fn in_window(&self) -> usize {
        self.restarts.len()
    }

    /// How many instants it has room for without growing.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.restarts.capacity()
    }
}

/// The restart history of one supervisor, for the budget its [`IntensityScope`] says.
#[derive(Debug, Clone)]
pub(crate) struct IntensityTracker {
    limit: RestartIntensity,
    scope: IntensityScope,
    /// The supervisor's own window (used with [`IntensityScope::Supervisor`]).
    all: RestartWindow,
}

impl IntensityTracker {
    pub(crate) fn new(limit: RestartIntensity, scope: IntensityScope) -> Self {
        Self {
            limit,
            scope,
            all: RestartWindow::default(),
        }
    }

    /// Records a restart at `now` of the child whose window is `child`; `false` when it
    /// exceeds the intensity (escalate).
    pub(crate) fn record(&mut self, child: &mut RestartWindow, now: Instant) -> bool {
        match self.scope {
            IntensityScope::Supervisor => self.all.record(self.limit, now),
            IntensityScope::PerChild => child.record(self.limit, now),
        }
    }

    pub(crate) fn limit(&self) -> RestartIntensity {
        self.limit
    }

    pub(crate) fn scope(&self) -> IntensityScope {
        self.scope
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

    fn tracker(limit: RestartIntensity) -> IntensityTracker {
        IntensityTracker::new(limit, IntensityScope::Supervisor)
    }

    #[test]
    fn the_restart_past_the_limit_escalates() {
        let t0 = Instant::now();
        let mut t = tracker(RestartIntensity::default());
        let mut w = RestartWindow::default();
        assert!(t.record(&mut w, t0));
        assert!(t.record(&mut w, t0 + secs(1.0)));
        assert!(t.record(&mut w, t0 + secs(2.0)));
        assert!(!t.record(&mut w, t0 + secs(3.0)));
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let t0 = Instant::now();
        let limit = RestartIntensity::default();
        let mut w = RestartWindow::default();
        for i in 0..3 {
            assert!(w.record(limit, t0 + secs(f64::from(i))));
        }
        // 5 s after the first one, it leaves the window.
        assert!(w.record(limit, t0 + secs(5.0)));
        assert_eq!(w.in_window(), 3);
        // A steady 1 restart per 2 s never escalates.
        for i in 3..50 {
            assert!(w.record(limit, t0 + secs(5.0 + 2.0 * f64::from(i))));
        }
    }

    #[test]
    fn zero_tolerance_escalates_at_once() {
        let mut t = tracker(RestartIntensity::new(0, secs(5.0)));
        assert!(!t.record(&mut RestartWindow::default(), Instant::now()));
    }

    #[test]
    fn per_child_scope_counts_each_child_on_its_own() {
        let t0 = Instant::now();
        let mut t = IntensityTracker::new(RestartIntensity::default(), IntensityScope::PerChild);
        let mut children = vec![RestartWindow::default(); 1_000];
        // One crash of each of 1,000 children within the same millisecond: absorbed.
        for w in &mut children {
            assert!(t.record(w, t0));
        }
        // The same child a fourth time within the window: escalates.
        let w = &mut children[7];
        assert!(t.record(w, t0 + secs(1.0)));
        assert!(t.record(w, t0 + secs(2.0)));
        assert!(!t.record(w, t0 + secs(3.0)));
        // The supervisor's own window was never used.
        assert_eq!(t.all.in_window(), 0);
    }

    #[test]
    fn a_window_never_holds_more_than_max_restarts_plus_one() {
        let t0 = Instant::now();
        let limit = RestartIntensity::new(3, secs(3600.0));
        let mut w = RestartWindow::default();
        for i in 0..100 {
            w.record(limit, t0 + secs(f64::from(i)));
            assert!(w.in_window() <= 4);
        }
        w.clear();
        assert_eq!((w.in_window(), w.capacity()), (0, 0));
    }
}
