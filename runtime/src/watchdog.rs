//! The liveness watchdog: pings every connector and records an observation on one that stops
//! answering ("not answering"), so a hang is visible on `/health`, in metrics and on the bus,
//! not only a crash.
//!
//! A supervisor sees crashes, not hangs: a hung actor is alive but never reads its mailbox.
//! The watchdog asks each of them for its state every `watchdog.interval`, waiting at most
//! `watchdog.timeout`. On a timeout it records an [`Observation`] from source `watchdog` on the
//! component (once) and counts `mw_watchdog_unresponsive_total`; on the next answer, or when
//! the component is no longer running (between a crash and its restart, which its supervisor
//! reports), it clears it. It never writes the component's state: the observation sits beside
//! it and folds into the component's health (see `millwright_kernel::lifecycle::observation`).

use std::time::Duration;

use millwright_connect as connector;
use millwright_kernel::lifecycle::{Observation, State, StatusBoard};
use millwright_kernel::reach::ReachError;
use millwright_kernel::supervisor::ChildSpec;
use millwright_kernel::supervisor::task::TaskLoop;
use tokio::time::MissedTickBehavior;

use crate::config::WatchdogConfig;

/// The source name of the watchdog's observations.
pub const SOURCE: &str = "watchdog";

/// One component the watchdog pings, by its registry name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A connector instance, and how long it may take to answer (its call timeout: a ping
    /// waits behind the plugin request in progress).
    Connector(String, Duration),
}

/// What a ping found.
enum Ping {
    Answered(State),
    Silent(Duration),
    NotRunning,
}

impl Probe {
    /// A connector's probe, which waits at most `timeout` (at least the watchdog's).
    pub fn connector(id: String, timeout: Duration) -> Self {
        Self::Connector(id, timeout)
    }

    fn id(&self) -> &str {
        match self {
            Self::Connector(id, _) => id,
        }
    }

    async fn ping(&self, timeout: Duration) -> Ping {
        match self {
            Self::Connector(id, own) => match connector::ping(id, timeout.max(*own)).await {
                Ok(state) => Ping::Answered(state),
                Err(ReachError::Timeout { timeout, .. }) => Ping::Silent(timeout),
                Err(_) => Ping::NotRunning,
            },
        }
    }
}

/// The `watchdog` task, a child of the root supervisor: one task that runs every probe's
/// loop (each with its own interval, so one slow answer does not delay the others).
pub fn child_spec(
    id: &str,
    board: StatusBoard,
    probes: Vec<Probe>,
    config: WatchdogConfig,
) -> ChildSpec {
    ChildSpec::task(id, move || {
        let (board, probes, config) = (board.clone(), probes.clone(), config.clone());
        let body: TaskLoop = Box::pin(async move {
            futures::future::join_all(
                probes
                    .into_iter()
                    .map(|p| probe(board.clone(), p, config.clone())),
            )
            .await;
            Ok(())
        });
        Box::pin(std::future::ready(Ok(body)))
    })
}

async fn probe(board: StatusBoard, probe: Probe, config: WatchdogConfig) {
    let id = probe.id().to_owned();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unresponsive = false;
    loop {
        tick.tick().await;
        match probe.ping(config.timeout).await {
            Ping::Answered(state) => {
                if unresponsive {
                    unresponsive = false;
                    tracing::info!(component = %id, state = %state, "watchdog: component answers again");
                    board.clear_observation(&id, SOURCE);
                }
            }
            Ping::Silent(timeout) => {
                metrics::counter!("mw_watchdog_unresponsive_total", "component" => id.clone())
                    .increment(1);
                if !unresponsive {
                    unresponsive = true;
                    let reason = format!(
                        "not answering: no reply to a liveness ping within {}",
                        humantime::format_duration(timeout)
                    );
                    tracing::warn!(component = %id, %reason, "watchdog: component not answering");
                    board.observe(&id, Observation::new(SOURCE, reason));
                }
            }
            // Restarting: its supervisor reports that; start afresh with the next incarnation.
            Ping::NotRunning => {
                if std::mem::take(&mut unresponsive) {
                    board.clear_observation(&id, SOURCE);
                }
            }
        }
    }
}
