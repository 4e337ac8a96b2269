//! Republishes every status-board change as JSON on `<prefix>.state.<node>.<component>`, so
//! other nodes, dashboards and tests can follow component states over the bus.
//!
//! The body is the component's status (as on `/health`) plus `node` and `previous` (the
//! state name before the change). A feed that falls more than 1024 changes behind skips them
//! and republishes a full snapshot rather than dropping states silently, at most one snapshot
//! every 2 s (so a burst of changes of thousands of components costs a few snapshots, not a
//! snapshot per burst).

use bytes::Bytes;
use millwright_bus::{Bus, Headers, Message, SubjectScheme};
use millwright_kernel::lifecycle::{ComponentStatus, StatusBoard};
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// The shortest time between two snapshots republished after the feed fell behind.
const RESYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The message published on every change.
#[derive(Debug, Clone, Serialize)]
pub struct StateMessage<'a> {
    /// The node.
    pub node: &'a str,
    /// The component after the change.
    #[serde(flatten)]
    pub status: &'a ComponentStatus,
    /// The state name before the change (absent for a new component or a resync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<&'a str>,
}

/// The running feed.
#[derive(Debug)]
pub struct StateFeed {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl StateFeed {
    /// Starts republishing changes of `board` from now on.
    pub fn spawn(board: &StatusBoard, bus: Bus, scheme: SubjectScheme, node: String) -> Self {
        let mut changes = board.subscribe();
        let board = board.clone();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let feed = Publisher { bus, scheme, node };
            let mut last_resync: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    change = changes.recv() => match change {
                        Ok(c) => feed.publish(&c.status, c.previous.as_deref()).await,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // Skip what is still queued (the snapshot covers it), and at most
                            // one snapshot per `RESYNC_EVERY`: with thousands of components a
                            // snapshot takes long enough for the next burst to lag again, and
                            // resyncing back to back would spin.
                            changes = changes.resubscribe();
                            if let Some(at) = last_resync
                                && at.elapsed() < RESYNC_EVERY
                            {
                                tokio::select! {
                                    _ = &mut stopped => break,
                                    () = tokio::time::sleep_until(at + RESYNC_EVERY) => {}
                                }
                                changes = changes.resubscribe();
                            }
                            tracing::warn!(missed = n, "state feed fell behind; republishing a snapshot");
                            last_resync = Some(tokio::time::Instant::now());
                            for status in board.snapshot() {
                                feed.publish(&status, None).await;
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
            // Stopping: publish what is already queued, then end.
            while let Ok(c) = changes.try_recv() {
                feed.publish(&c.status, c.previous.as_deref()).await;
            }
        });
        Self { stop, task }
    }

    /// Publishes the changes already made, then stops.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct Publisher {
    bus: Bus,
    scheme: SubjectScheme,
    node: String,
}

impl Publisher {
    async fn publish(&self, status: &ComponentStatus, previous: Option<&str>) {
        let msg = StateMessage {
            node: &self.node,
            status,
            previous,
        };
        let body = match serde_json::to_vec(&msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "state feed: cannot serialize a state");
                return;
            }
        };
        let subject = self.scheme.state(&self.node, &status.id);
        let message = Message {
            subject,
            reply: None,
            headers: Headers::new(),
            payload: Bytes::from(body),
        };
        if let Err(e) = self.bus.publish(message).await {
            metrics::counter!("mw_state_publish_errors_total").increment(1);
            tracing::debug!(error = %e, component = %status.id, "state feed: publish failed");
        }
    }
}
