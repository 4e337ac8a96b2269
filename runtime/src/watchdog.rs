//! The liveness watchdog: records an observation on a connector that stops answering ("not
//! answering"), so a hang is visible on `/health`, in metrics and on the bus, not only a
//! crash.
//!
//! A supervisor sees crashes, not hangs: a hung actor is alive but never gets back to its
//! mailbox. Every connector marks the start and end of each message it handles on its
//! [`BusyMark`]; the watchdog reads all marks in one sweep every `watchdog.interval` (no
//! message to anyone, so its cost does not grow with idle components). One busy in a single
//! message for longer than its allowance (`watchdog.timeout`, or the connector's call timeout
//! if longer) gets an [`Observation`] from source `watchdog` (once) and counts
//! `mw_watchdog_unresponsive_total`; when it gets back to its mailbox, or stops (between a
//! crash and its restart, which its supervisor reports), it is cleared. It never writes the component's state: the observation sits beside
//! it and folds into the component's health (see `millwright_kernel::lifecycle::observation`).

use std::time::Duration;

use millwright_kernel::lifecycle::{BusyMark, Observation, StatusBoard};
use millwright_kernel::supervisor::ChildSpec;
use millwright_kernel::supervisor::task::TaskLoop;
use tokio::time::MissedTickBehavior;

use crate::config::WatchdogConfig;

/// The source name of the watchdog's observations.
pub const SOURCE: &str = "watchdog";

/// One component the watchdog watches, by its board id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A connector instance, and how long one message may keep it busy (its call timeout: a
    /// write or a call waits for the plugin that long).
    Connector(String, Duration),
}

impl Probe {
    /// A connector's probe, allowed `timeout` in one handler (at least the watchdog's).
    pub fn connector(id: String, timeout: Duration) -> Self {
        Self::Connector(id, timeout)
    }

    fn id(&self) -> &str {
        match self {
            Self::Connector(id, _) => id,
        }
    }

    fn allowance(&self, watchdog: Duration) -> Duration {
        match self {
            Self::Connector(_, own) => watchdog.max(*own),
        }
    }
}

/// The `watchdog` task, a child of the root supervisor: one loop that reads every probed
/// component's busy mark once per `watchdog.interval` (one sweep, no message to anyone).
pub fn child_spec(
    id: &str,
    board: StatusBoard,
    probes: Vec<Probe>,
    config: WatchdogConfig,
) -> ChildSpec {
    ChildSpec::task(id, move || {
        let (board, probes, config) = (board.clone(), probes.clone(), config.clone());
        let body: TaskLoop = Box::pin(async move {
            sweep(board, probes, config).await;
            Ok(())
        });
        Box::pin(std::future::ready(Ok(body)))
    })
}

/// One probed component as the sweep sees it.
struct Watched {
    id: String,
    mark: BusyMark,
    allowance: Duration,
    not_answering: bool,
}

async fn sweep(board: StatusBoard, probes: Vec<Probe>, config: WatchdogConfig) {
    let mut watched: Vec<Watched> = probes
        .iter()
        .map(|p| Watched {
            id: p.id().to_owned(),
            mark: board.busy_mark(p.id()),
            allowance: p.allowance(config.timeout),
            not_answering: false,
        })
        .collect();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for w in &mut watched {
            match w.mark.busy_for() {
                Some(busy) if busy > w.allowance => {
                    if !w.not_answering {
                        w.not_answering = true;
                        metrics::counter!("mw_watchdog_unresponsive_total", "component" => w.id.clone())
                            .increment(1);
                        let reason = format!(
                            "not answering: busy in one message for more than {}",
                            humantime::format_duration(w.allowance)
                        );
                        tracing::warn!(component = %w.id, %reason, "watchdog: component not answering");
                        board.observe(&w.id, Observation::new(SOURCE, reason));
                    }
                }
                _ => {
                    if std::mem::take(&mut w.not_answering) {
                        tracing::info!(component = %w.id, "watchdog: component answers again");
                        board.clear_observation(&w.id, SOURCE);
                    }
                }
            }
        }
    }
}
