//! Runtime control over the bus: the `control` task serves every component's control verbs
//! ([`ControlVerb`], declared by each [`Component`](crate::component::Component)).
//!
//! | bus subject | body | HTTP |
//! |---|---|---|
//! | `<prefix>.ctl.<node>.dlq` | a DLQ command, e.g. `{"op": "list", "limit": 20}` | `POST /control/dlq` (same body) |
//!
//! A request on the bus gets `{"ok": true}` (with `"reply": ...` when the verb answers) or
//! `{"ok": false, "error": "..."}` back. DLQ commands are `list`, `show`, `replay` and
//! `purge` (see `millwright dlq`).

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SelectAll;
use millwright_bus::{Bus, Headers, SubjectScheme};
use millwright_kernel::supervisor::ChildSpec;
use serde::{Deserialize, Serialize};

use crate::component::ControlVerb;

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

/// The `control` task: subscribes to `<prefix>.ctl.<node>.<verb>` for every verb at its start
/// (before the next sibling starts) and serves requests until it is stopped.
pub fn child_spec(
    id: &str,
    bus: Bus,
    scheme: SubjectScheme,
    node: String,
    verbs: Vec<ControlVerb>,
) -> ChildSpec {
    ChildSpec::task(id, move || {
        let (bus, scheme, node, verbs) = (bus.clone(), scheme.clone(), node.clone(), verbs.clone());
        Box::pin(async move {
            let mut subs = SelectAll::new();
            for verb in verbs {
                let subject = scheme.control(&node, verb.token);
                let sub = bus
                    .subscribe(&subject)
                    .await
                    .map_err(|e| format!("control: cannot subscribe to {subject}: {e}"))?;
                tracing::info!(%subject, "control: listening on the bus");
                subs.push(sub.map(move |msg| (verb.clone(), msg)));
            }
            let serve: millwright_kernel::supervisor::task::TaskLoop = Box::pin(async move {
                if subs.is_empty() {
                    std::future::pending::<()>().await;
                }
                while let Some((verb, msg)) = subs.next().await {
                    let result = (verb.handle)(msg.payload.clone()).await;
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
                Err("control: the bus closed its subscriptions".to_owned())
            });
            Ok(serve)
        })
    })
}
