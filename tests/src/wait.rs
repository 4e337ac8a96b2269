//! Polling with a deadline, so tests wait for a condition instead of sleeping.
//!
//! The poll interval starts at 1 ms and doubles up to 50 ms: fast conditions are seen fast,
//! slow ones do not burn a core. Under paused tokio time the sleeps auto-advance.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;

const MAX_INTERVAL: Duration = Duration::from_millis(50);

/// A condition did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTimedOut {
    /// How long the caller waited.
    pub waited: Duration,
    /// How many times the condition was checked.
    pub polls: u32,
}

impl fmt::Display for WaitTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "condition still false after {:?} ({} checks)",
            self.waited, self.polls
        )
    }
}

impl std::error::Error for WaitTimedOut {}

/// Polls `condition` until it returns `Some`, and returns that value; gives up after `timeout`.
/// The condition is always checked at least once, and once more at the deadline.
///
/// # Errors
/// [`WaitTimedOut`] when the condition never returned `Some`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut condition: F) -> Result<T, WaitTimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut interval = Duration::from_millis(1);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Some(v) = condition().await {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitTimedOut {
                waited: now - start,
                polls,
            });
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

/// Polls `condition` until it is true; gives up after `timeout`.
///
/// ```
/// # use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
/// # use std::time::Duration;
/// # use millwright_tests::wait_until;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let counter = AtomicU32::new(0);
/// wait_until(Duration::from_secs(10), || async { counter.fetch_add(1, Relaxed) + 1 == 3 })
///     .await
///     .expect("the third poll sees three");
/// # }
/// ```
///
/// # Errors
/// [`WaitTimedOut`] when the condition never held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> Result<(), WaitTimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// The next item of `stream`, or `None` when none arrives within `timeout` (or the stream
/// ended). Use it to assert that something does *not* arrive, with a short timeout, only after
/// a positive check has shown that the pipeline is otherwise live.
pub async fn next_within<S>(stream: &mut S, timeout: Duration) -> Option<S::Item>
where
    S: Stream + Unpin,
{
    tokio::time::timeout(timeout, stream.next())
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn wait_until_returns_when_the_condition_holds() {
        let n = Arc::new(AtomicU32::new(0));
        let n2 = Arc::clone(&n);
        wait_until(Duration::from_secs(5), move || {
            let n = Arc::clone(&n2);
            async move { n.fetch_add(1, Ordering::SeqCst) >= 3 }
        })
        .await
        .unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_times_out_with_a_report() {
        let err = wait_until(Duration::from_secs(1), || async { false })
            .await
            .unwrap_err();
        assert_eq!(err.waited, Duration::from_secs(1));
        assert!(err.polls > 2, "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_yields_the_value() {
        let mut i = 0;
        let v = wait_for(Duration::from_secs(1), || {
            i += 1;
            let i = i;
            async move { (i == 2).then_some("two") }
        })
        .await
        .unwrap();
        assert_eq!(v, "two");
    }

    #[tokio::test(start_paused = true)]
    async fn next_within_times_out_on_a_silent_stream() {
        let mut silent = futures::stream::pending::<u8>();
        assert_eq!(next_within(&mut silent, Duration::from_secs(1)).await, None);
        let mut one = futures::stream::iter([7u8]);
        assert_eq!(next_within(&mut one, Duration::from_secs(1)).await, Some(7));
    }
}
