//! Graceful shutdown on SIGTERM/SIGINT, in the order of the design (section 10).
//!
//! | # | step | what happens |
//! |---|---|---|
//! | 1 | `stop_intake` | `/ready` turns 503 (`/events` refuses); every supervisor stops restarting (a child that dies now stays down); every component stops its intake ([`Component::stop_intake`](crate::component::Component::stop_intake)): every source connector is paused, and answers once no read is in progress |
//! | 2 | `drain` | what the components had in flight finishes within the grace window (a paused source has already published or queued what it read) |
//! | 3 | `stop_components` | the root supervisor stops its children in reverse start order, each with its own shutdown timeout, so one stuck component does not block the others |
//! | 4 | `flush` | the state feed publishes the last state changes; the bus is flushed (the broker, stopped last in step 3, has already appended what was left in its intake to the disk queue) |
//! | 5 | `stop_http` | the HTTP server stops |
//! | 6 | `release_lock` | the lockfile is removed (if it still holds our PID) |
//!
//! Each step logs `shutdown step` with fields `step` (name) and `n` (number); the last line is
//! `shutdown complete`. The process then exits 0. A second signal during shutdown exits at
//! once with status 130 (handled by the CLI).

use std::time::{Duration, Instant};

use millwright_kernel::supervisor;
use tokio::signal::unix::{SignalKind, signal};

use crate::component::IntakeStopped;
use crate::components;
use crate::node::{Node, NodeError};
use crate::phase::Phase;

/// The named steps, in order.
pub const STEPS: [&str; 6] = [
    "stop_intake",
    "drain",
    "stop_components",
    "flush",
    "stop_http",
    "release_lock",
];

/// Why a node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGTERM.
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// The root supervisor died on its own.
    RootFailed,
    /// Asked by code (tests, embedding).
    Requested,
}

/// What a shutdown did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every source drained within the grace window.
    pub drained: bool,
    /// Whether the supervision tree stopped in order (not killed after the grace window).
    pub stopped_in_order: bool,
    /// Whether the lockfile was removed.
    pub lock_released: bool,
}

/// Waits for SIGTERM or SIGINT (or the root supervisor's death), then shuts `node` down.
///
/// # Errors
/// [`NodeError::RootFailed`] when the node stopped because its root supervisor failed (the
/// shutdown still runs); the signal handlers' installation failure otherwise.
pub async fn run_until_signal(node: Node) -> Result<ShutdownReport, NodeError> {
    run_until(node, Signals::install()?).await
}

/// SIGTERM and SIGINT, caught from the moment this is made: a signal that arrives while the
/// node boots is kept and starts the shutdown as soon as the node is up (exit 0, not a
/// default-disposition death with status 143).
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    ///
    /// # Errors
    /// [`NodeError::Signal`] when the handlers cannot be installed.
    pub fn install() -> Result<Self, NodeError> {
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(NodeError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(NodeError::Signal)?,
        })
    }
}

/// As [`run_until_signal`], with handlers installed earlier (before the node started).
///
/// # Errors
/// [`NodeError::RootFailed`] when the node stopped because its root supervisor failed.
pub async fn run_until(mut node: Node, mut signals: Signals) -> Result<ShutdownReport, NodeError> {
    let cause = tokio::select! {
        _ = signals.term.recv() => StopCause::Terminate,
        _ = signals.int.recv() => StopCause::Interrupt,
        _ = &mut node.root_done => StopCause::RootFailed,
    };
    let report = node.shutdown(cause).await;
    if cause == StopCause::RootFailed {
        return Err(NodeError::RootFailed);
    }
    Ok(report)
}

fn step(n: usize) {
    tracing::info!(step = STEPS[n - 1], n, "shutdown step");
}

impl Node {
    /// Shuts the node down in order (see the module docs). Never fails: a step that cannot
    /// finish is logged and the next one runs.
    pub async fn shutdown(self, cause: StopCause) -> ShutdownReport {
        let begun = Instant::now();
        let grace = self.config.node.shutdown_grace;
        tracing::info!(?cause, grace = %humantime::format_duration(grace), "shutdown started");
        let deadline = tokio::time::Instant::now() + grace;

        step(1);
        self.phase.set(Phase::Stopping);
        if let Err(e) = supervisor::quiesce(&self.root).await {
            tracing::warn!(error = %e, "could not stop restarts before shutdown");
        }
        let intakes = components::BUILTIN
            .iter()
            .map(|c| c.stop_intake(&self.ctx, deadline));
        let stopped = futures::future::join_all(intakes).await;

        step(2);
        let drained = stopped.iter().all(|s| *s == IntakeStopped::Drained);

        step(3);
        // The tree gets the rest of the grace window, but at least one worker shutdown
        // timeout: stopping is bounded per child by the supervisors themselves.
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(supervisor::DEFAULT_WORKER_SHUTDOWN + Duration::from_secs(1));
        let stopped_in_order = match tokio::time::timeout(left, supervisor::shutdown(&self.root))
            .await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "root supervisor did not shut down cleanly");
                false
            }
            Err(_) => {
                tracing::error!(waited = ?left, "supervision tree did not stop in time; killing it");
                self.root.kill();
                false
            }
        };

        step(4);
        self.state_feed.stop().await;
        if let Err(e) = self.bus.flush().await {
            tracing::warn!(error = %e, "bus flush failed");
        }

        step(5);
        let _ = self.http_stop.send(());
        if tokio::time::timeout(Duration::from_secs(5), self.http_task)
            .await
            .is_err()
        {
            tracing::warn!("http server did not stop within 5s");
        }

        step(6);
        let lock_released = self.lock.release();

        tracing::info!(
            elapsed_ms = begun.elapsed().as_millis() as u64,
            uptime_s = self.started.elapsed().as_secs(),
            drained,
            stopped_in_order,
            lock_released,
            "shutdown complete"
        );
        ShutdownReport {
            drained,
            stopped_in_order,
            lock_released,
        }
    }
}
