//! Runtime control of components, over the bus and over HTTP.
//!
//! | bus subject | body | HTTP |
//! |---|---|---|
//! | `<prefix>.ctl.<node>.dlq` | a [`DlqCommand`], e.g. `{"op": "list", "limit": 20}` | `POST /control/dlq` (same body) |
//!
//! A request on the bus gets `{"ok": true}` (with `"reply": ...` for the DLQ) or
//! `{"ok": false, "error": "..."}` back. DLQ commands are `list`, `show`, `replay` and
//! `purge` (see `millwright dlq`).

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use millwright_broker::BrokerCallError;
use millwright_broker::dlq_admin::{DlqCommand, DlqReply};
use millwright_bus::{Bus, BusError, Headers, Subscription};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::components;

/// The control verb for the DLQ: `<prefix>.ctl.<node>.dlq`.
pub const DLQ_VERB: &str = "dlq";
/// How long a DLQ command may take on the broker.
pub const DLQ_TIMEOUT: Duration = Duration::from_secs(30);

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
}

impl Control {
    /// Control of node `node`'s components.
    pub fn new(node: impl Into<String>) -> Self {
        Self { node: node.into() }
    }

    /// Runs a DLQ command on this node's broker.
    ///
    /// # Errors
    /// [`BrokerCallError`] when the broker is not running, slow, or the command failed.
    pub async fn dlq(&self, command: DlqCommand) -> Result<DlqReply, BrokerCallError> {
        let reply = millwright_broker::actor::dlq(
            &components::broker_id(&self.node),
            command.clone(),
            DLQ_TIMEOUT,
        )
        .await?;
        tracing::info!(?command, "control: dlq command done");
        Ok(reply)
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
    /// [`DLQ_VERB`].
    Dlq,
}

impl Verb {
    /// The subject token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Dlq => DLQ_VERB,
        }
    }

    fn handle<'a>(
        self,
        control: &'a Control,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, String>> {
        match self {
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
