//! The liveness watchdog: pings every sim and shows one that stops answering as `degraded`
//! ("not answering") on the status board, so a hang is visible on `/health`, in metrics and
//! on the bus, not only a crash.
//!
//! A supervisor sees crashes, not hangs: a hung actor is alive but never reads its mailbox.
//! The watchdog asks each sim for its state every `watchdog.interval`, waiting at most
//! `watchdog.timeout`. On a timeout it marks the component degraded (once) and counts
//! `mw_watchdog_unresponsive_total`; on the next answer it puts back the state the component
//! reported. A component that is not running (between a crash and its restart) is left to its
//! supervisor.

use millwright_actors::lifecycle::State;
use millwright_actors::sim::{self, SimError};
use millwright_actors::status::StatusBoard;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::WatchdogConfig;

/// Starts one probe task per component id; abort the handles to stop them.
pub fn spawn(board: StatusBoard, ids: Vec<String>, config: WatchdogConfig) -> Vec<JoinHandle<()>> {
    ids.into_iter()
        .map(|id| tokio::spawn(probe(board.clone(), id, config.clone())))
        .collect()
}

async fn probe(board: StatusBoard, id: String, config: WatchdogConfig) {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unresponsive = false;
    loop {
        tick.tick().await;
        match sim::ping(&id, config.timeout).await {
            Ok(state) => {
                if unresponsive {
                    unresponsive = false;
                    tracing::info!(component = %id, state = %state, "watchdog: component answers again");
                    board.set_state(&id, state);
                }
            }
            Err(SimError::Timeout { timeout, .. }) => {
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
            Err(SimError::NotRunning(_)) => unresponsive = false,
        }
    }
}
