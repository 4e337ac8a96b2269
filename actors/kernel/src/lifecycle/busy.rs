//! [`BusyMark`]: how long a component has been inside one message handler, readable by an
//! outside judge (the watchdog) without sending it anything.
//!
//! A hung actor is alive but never gets back to its mailbox. Rather than pinging every
//! component (a message per component per period, a cost that grows with the number of
//! components even when nothing happens), each component marks the start of every message it
//! handles and clears it at the end (two atomic stores), and the watchdog reads all marks in
//! one sweep: a component busy in one handler for longer than its allowance is not answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// One component's mark: when its current handler began (in milliseconds since the mark was
/// made, plus one), or 0 when it is between messages. Clones share the mark; one mark per
/// component id lives on the board across incarnations.
#[derive(Debug, Clone)]
pub struct BusyMark {
    epoch: Instant,
    since: Arc<AtomicU64>,
}

impl Default for BusyMark {
    fn default() -> Self {
        Self::new()
    }
}

impl BusyMark {
    /// A mark that says "not busy".
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            since: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The component starts handling a message; the guard clears the mark when dropped.
    pub fn enter(&self) -> BusyGuard<'_> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.since.store(now + 1, Ordering::Relaxed);
        BusyGuard(self)
    }

    /// How long the component has been in its current handler (`None` between messages).
    pub fn busy_for(&self) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                Some(Duration::from_millis(now.saturating_sub(since - 1)))
            }
        }
    }
}

/// Clears its [`BusyMark`] when dropped (also when the handler fails).
#[derive(Debug)]
pub struct BusyGuard<'a>(&'a BusyMark);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.since.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_mark_tells_how_long_its_handler_runs_and_clears() {
        let mark = BusyMark::new();
        let judge = mark.clone();
        assert_eq!(judge.busy_for(), None);
        {
            let _busy = mark.enter();
            tokio::time::advance(Duration::from_millis(1500)).await;
            let busy = judge.busy_for().expect("busy");
            assert!(busy >= Duration::from_millis(1500), "{busy:?}");
        }
        assert_eq!(judge.busy_for(), None, "cleared when the handler ends");
    }
}
