//! Runtime control of components, over the bus and over HTTP.
//!
//! | bus subject | body | HTTP |
//! |---|---|---|
//! | `<prefix>.ctl.<node>.sim` | `{"machine": "press1", "command": "fail"}` | `POST /control/sims/{machine}/{command}` |
//! | `<prefix>.ctl.<node>.dlq` | a [`DlqCommand`], e.g. `{"op": "list", "limit": 20}` | `POST /control/dlq` (same body) |
//!
//! A request on the bus gets `{"ok": true}` (with `"reply": ...` for the DLQ) or
//! `{"ok": false, "error": "..."}` back. Sim commands are those of [`SimCommand`]: `fail`,
//! `hang`, `degrade`, `recover`, `pause`, `resume`; DLQ commands are `list`, `show`, `replay`
//! and `purge` (see `millwright dlq`).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use millwright_actors::broker::dlq_admin::{DlqCommand, DlqReply};
use millwright_actors::broker::{self, BrokerCallError};
use millwright_actors::bus::{Bus, BusError, Headers, Subscription};
use millwright_actors::sim::{self, SimCommand, SimError};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::components;

/// The control verb for sims: `<prefix>.ctl.<node>.sim`.
pub const SIM_VERB: &str = "sim";
/// The control verb for the DLQ: `<prefix>.ctl.<node>.dlq`.
pub const DLQ_VERB: &str = "dlq";
/// How long a DLQ command may take on the broker.
pub const DLQ_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The answer, for commands that have one (the DLQ's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<serde_json::Value>,
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

    /// Runs a DLQ command on this node's broker.
    ///
    /// # Errors
    /// [`BrokerCallError`] when the broker is not running, slow, or the command failed.
    pub async fn dlq(&self, command: DlqCommand) -> Result<DlqReply, BrokerCallError> {
        let reply = broker::actor::dlq(
            &components::broker_id(&self.node),
            command.clone(),
            DLQ_TIMEOUT,
        )
        .await?;
        tracing::info!(?command, "control: dlq command done");
        Ok(reply)
    }

    /// Handles one bus message with a [`SimControlRequest`] body.
    async fn handle_sim(&self, payload: &[u8]) -> Result<Option<serde_json::Value>, String> {
        let req: SimControlRequest = serde_json::from_slice(payload)
            .map_err(|e| ControlError::BadRequest(e.to_string()).to_string())?;
        self.sim(&req.machine, req.command)
            .await
            .map(|()| None)
            .map_err(|e| e.to_string())
    }

    /// Handles one bus message with a [`DlqCommand`] body.
    async fn handle_dlq(&self, payload: &[u8]) -> Result<Option<serde_json::Value>, String> {
        let command: DlqCommand = serde_json::from_slice(payload).map_err(|e| {
            format!(
                "invalid request: {e} (expected a DLQ command such as {{\"op\": \"list\", \"limit\": 20}})"
            )
        })?;
        let reply = self.dlq(command).await.map_err(|e| e.to_string())?;
        Ok(Some(serde_json::to_value(reply).unwrap_or_default()))
    }
}

/// Which control requests a subscription serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// [`SIM_VERB`].
    Sim,
    /// [`DLQ_VERB`].
    Dlq,
}

impl Verb {
    /// The subject token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Sim => SIM_VERB,
            Self::Dlq => DLQ_VERB,
        }
    }

    fn handle<'a>(
        self,
        control: &'a Control,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, String>> {
        match self {
            Self::Sim => Box::pin(control.handle_sim(payload)),
            Self::Dlq => Box::pin(control.handle_dlq(payload)),
        }
    }
}

/// Subscribes to `subject` and serves `verb` requests until the task is aborted.
///
/// # Errors
/// The bus' error when the subscription cannot be made.
pub async fn serve_bus(
    bus: Bus,
    subject: String,
    verb: Verb,
    control: Control,
) -> Result<JoinHandle<()>, BusError> {
    let mut sub: Subscription = bus.subscribe(&subject).await?;
    tracing::info!(%subject, "control: listening on the bus");
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let result = verb.handle(&control, &msg.payload).await;
            if let Err(e) = &result {
                tracing::warn!(subject = %msg.subject, error = %e, "control: request refused");
            }
            if msg.reply.is_some() {
                let reply = match result {
                    Ok(reply) => ControlReply {
                        ok: true,
                        error: None,
                        reply,
                    },
                    Err(e) => ControlReply {
                        ok: false,
                        error: Some(e),
                        reply: None,
                    },
                };
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                if let Err(e) = bus.respond(&msg, Headers::new(), Bytes::from(body)).await {
                    tracing::warn!(error = %e, "control: could not reply");
                }
            }
        }
    }))
}
