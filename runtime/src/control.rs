//! Runtime control of components, over the bus and over HTTP.
//!
//! - Bus: a request (or plain message) on `<prefix>.ctl.<node>.sim` with the JSON body
//!   `{"machine": "press1", "command": "fail"}`; a request gets `{"ok": true}` or
//!   `{"ok": false, "error": "..."}` back.
//! - HTTP: `POST /control/sims/{machine}/{command}` (see [`crate::http`]).
//!
//! Commands are those of [`SimCommand`]: `fail`, `hang`, `degrade`, `recover`, `pause`,
//! `resume`.

use std::collections::BTreeSet;

use bytes::Bytes;
use millwright_actors::bus::{Bus, BusError, Headers, Subscription};
use millwright_actors::sim::{self, SimCommand, SimError};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::components;

/// The control verb for sims: `<prefix>.ctl.<node>.sim`.
pub const SIM_VERB: &str = "sim";

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such machine in the config.
    #[error("unknown machine {machine:?} (configured: {known})")]
    UnknownMachine {
        /// The requested name.
        machine: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// The machine exists but its sim is not running right now (restarting).
    #[error("{0}")]
    NotRunning(#[from] SimError),
    /// The request body is not a control request.
    #[error(
        "invalid request: {0} (expected {{\"machine\": \"<name>\", \"command\": \"fail|hang|degrade|recover|pause|resume\"}})"
    )]
    BadRequest(String),
}

/// A sim control request, as sent on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimControlRequest {
    /// The machine (`[sims.<machine>]`).
    pub machine: String,
    /// What to do.
    pub command: SimCommand,
}

/// The reply to a control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the command was delivered.
    pub ok: bool,
    /// Why not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Delivers control commands to this node's components.
#[derive(Debug, Clone)]
pub struct Control {
    node: String,
    machines: BTreeSet<String>,
}

impl Control {
    /// Control of the sims `machines` of node `node`.
    pub fn new(node: impl Into<String>, machines: impl IntoIterator<Item = String>) -> Self {
        Self {
            node: node.into(),
            machines: machines.into_iter().collect(),
        }
    }

    /// Sends `command` to machine `machine`'s sim.
    ///
    /// # Errors
    /// [`ControlError::UnknownMachine`] for a name not in the config,
    /// [`ControlError::NotRunning`] when its sim is between a crash and its restart.
    pub async fn sim(&self, machine: &str, command: SimCommand) -> Result<(), ControlError> {
        if !self.machines.contains(machine) {
            return Err(ControlError::UnknownMachine {
                machine: machine.to_owned(),
                known: self.machines.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        sim::command(&components::sim_id(&self.node, machine), command).await?;
        tracing::info!(machine, %command, "control: command delivered");
        Ok(())
    }

    /// Handles one bus message with a [`SimControlRequest`] body.
    async fn handle(&self, payload: &[u8]) -> Result<(), ControlError> {
        let req: SimControlRequest =
            serde_json::from_slice(payload).map_err(|e| ControlError::BadRequest(e.to_string()))?;
        self.sim(&req.machine, req.command).await
    }
}

/// Subscribes to `subject` and serves sim control requests until the task is aborted.
///
/// # Errors
/// The bus' error when the subscription cannot be made.
pub async fn serve_bus(
    bus: Bus,
    subject: String,
    control: Control,
) -> Result<JoinHandle<()>, BusError> {
    let mut sub: Subscription = bus.subscribe(&subject).await?;
    tracing::info!(%subject, "control: listening on the bus");
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let result = control.handle(&msg.payload).await;
            if let Err(e) = &result {
                tracing::warn!(subject = %msg.subject, error = %e, "control: request refused");
            }
            if msg.reply.is_some() {
                let reply = ControlReply {
                    ok: result.is_ok(),
                    error: result.err().map(|e| e.to_string()),
                };
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                if let Err(e) = bus.respond(&msg, Headers::new(), Bytes::from(body)).await {
                    tracing::warn!(error = %e, "control: could not reply");
                }
            }
        }
    }))
}
