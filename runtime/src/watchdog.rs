//! The liveness watchdog: pings every sim and connector and shows one that stops answering as `degraded`
//! ("not answering") on the status board, so a hang is visible on `/health`, in metrics and
//! on the bus, not only a crash.
//!
//! A supervisor sees crashes, not hangs: a hung actor is alive but never reads its mailbox.
//! The watchdog asks each of them for its state every `watchdog.interval`, waiting at most
//! `watchdog.timeout`. On a timeout it marks the component degraded (once) and counts
//! `mw_watchdog_unresponsive_total`; on the next answer it puts back the state the component
//! reported. A component that is not running (between a crash and its restart) is left to its
//! supervisor.

use std::time::Duration;

use millwright_connect::{self as connector, ReachError};
use millwright_kernel::lifecycle::State;
use millwright_kernel::status::StatusBoard;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::WatchdogConfig;

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

/// Starts one probe task per component; abort the handles to stop them.
pub fn spawn(
    board: StatusBoard,
    probes: Vec<Probe>,
    config: WatchdogConfig,
) -> Vec<JoinHandle<()>> {
    probes
        .into_iter()
        .map(|p| tokio::spawn(probe(board.clone(), p, config.clone())))
        .collect()
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
                    board.set_state(&id, state);
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
                    board.set_state(
                        &id,
                        State::Degraded {
                            facet: None,
                            reason,
                        },
                    );
                }
            }
            // Restarting: its supervisor reports that; start afresh with the next incarnation.
            Ping::NotRunning => unresponsive = false,
        }
    }
}
