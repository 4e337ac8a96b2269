//! The node's phase (`starting`, `ready`, `stopping`): what `/ready` answers, what `/health`
//! reports and what `mw_node_ready` exports.

use serde::Serialize;
use tokio::sync::watch;

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Booting: the supervision tree is not up yet (`/ready` answers 503).
    Starting,
    /// Up and serving (`/ready` answers 200).
    Ready,
    /// Shutting down after SIGTERM/SIGINT (`/ready` answers 503 again).
    Stopping,
}

impl Phase {
    /// `starting`, `ready` or `stopping`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Stopping => "stopping",
        }
    }
}

/// The shared, observable phase. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PhaseCell(watch::Sender<Phase>);

impl Default for PhaseCell {
    fn default() -> Self {
        Self::new()
    }
}

impl PhaseCell {
    /// A cell in [`Phase::Starting`].
    pub fn new() -> Self {
        Self(watch::Sender::new(Phase::Starting))
    }

    /// The phase now.
    pub fn get(&self) -> Phase {
        *self.0.borrow()
    }

    /// Moves to `phase`, updating `mw_node_ready`.
    pub fn set(&self, phase: Phase) {
        self.0.send_replace(phase);
        crate::metrics::set_ready(phase == Phase::Ready);
    }

    /// A receiver that sees every later change.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.0.subscribe()
    }
}
