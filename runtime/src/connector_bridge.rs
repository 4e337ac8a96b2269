//! The bridges between the bus and the connector actors that are not (only) sources: the
//! node's one **rpc bridge** answers the requests to every responder, and a **sink bridge**
//! per sink feeds it the messages of its `subscribe` subjects.
//!
//! | direction | subject | what happens |
//! |---|---|---|
//! | into a sink | each of `[connectors.<name>] subscribe` | messages are batched (up to `max_batch`, what is already there) and written with `write_batch` |
//! | request/reply | `<prefix>.rpc.<name>.<method>` | the body (JSON; empty is `null`) goes to `call(method, body)`; the reply is `{"ok": <answer>}` or `{"error": {"kind": "...", "message": "..."}}` |
//!
//! `POST /connectors/<name>/call/<method>` on `:8080` makes the same call (in process, not over
//! the bus) and answers the same body.
//!
//! The bridges subscribe before the connector instances start and outlive their restarts:
//! they find an actor by its registry name for every batch and every request.
//!
//! **Calls.** One task per node subscribes once to `<prefix>.rpc.*.*` (a plain subscription,
//! no queue group), whatever the number of responders, and dispatches each request by the
//! instance name in its subject. Each request runs in a task of its own, bounded by its
//! connector's `call_timeout` (plus [`ANSWER_MARGIN`]), so a slow connector delays only its
//! own callers. At most [`MAX_PENDING_CALLS`] calls wait per responder; more are answered
//! `back_off`. A request for an instance this node does not run is **not answered** (logged
//! at debug): on a bus shared by several nodes exactly the node that runs the instance
//! answers, and a caller of an instance no node runs gets its own timeout. One for an
//! instance that is not a responder is answered `config`. A request whose caller stopped
//! waiting is not run.
//!
//! What a sink gets, exactly:
//! - while the instance is connecting or restarting, a batch waits and is offered again with
//!   backoff (the subscription buffers what arrives meanwhile, up to the bus' limits: on the
//!   embedded bus 65,536 messages per subscription, on NATS the client's, past which messages
//!   are dropped and counted as slow-consumer drops);
//! - events refused with a retryable error (`not_connected`, `transient`, `back_off`) are
//!   offered again, in order, without those already written; after
//!   [`MAX_WRITE_ATTEMPTS`] failed offers that were not a lost connection, the rest is dropped;
//! - events refused for good (`config`, `fatal`) are logged and dropped;
//! - every dropped event is counted in `mw_connector_write_failures_total`.
//!
//! So a sink is at-least-once across plugin restarts and reconnects, and at-most-once across a
//! restart of the node: messages the bridge holds in memory are not kept on disk (a JetStream
//! consumer per sink is the planned fix).
//! Messages that are not event envelopes are wrapped in one (source `bus`, the message's
//! subject, its JSON body or its text as the payload).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::stream::{SelectAll, StreamExt};
use millwright_bus::{Bus, BusError, Headers, Message, SchemeSubject, SubjectScheme};
use millwright_connect::{self as connector_actor, CallError};
use millwright_kernel::reach::ReachError;
use millwright_kernel::supervisor::task::TaskLoop;
use millwright_plugin_sdk::connector::ConnectorError;
use millwright_plugin_sdk::event::Envelope;
use serde_json::json;

/// One sink's wiring.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// The instance (`[connectors.<name>]`).
    pub instance: String,
    /// The connector actor's registry name.
    pub component_id: String,
    /// Sink input subjects (not empty).
    pub subscribe: Vec<String>,
    /// Most events per write.
    pub max_batch: usize,
    /// How long a write may take.
    pub call_timeout: Duration,
}

/// Subscribes to one sink's `subscribe` subjects and returns the loop that feeds it; the
/// connectors supervisor runs it as the instance's `<name>.bridge` task. The loop ends with
/// an error only when the bus closes a subscription.
///
/// # Errors
/// A subscription the bus refused (an invalid subject).
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the subscriptions made so far.
pub async fn setup(bus: &Bus, spec: BridgeSpec) -> Result<TaskLoop, BusError> {
    let mut subs = SelectAll::new();
    for subject in &spec.subscribe {
        subs.push(bus.subscribe(subject).await?);
    }
    Ok(Box::pin(async move {
        feed_sink(subs, spec.clone()).await;
        Err(format!(
            "bridge of {}: the bus closed a subscription",
            spec.instance
        ))
    }))
}

/// One connector instance as the rpc bridge knows it.
#[derive(Debug, Clone)]
pub struct RpcTarget {
    /// The connector actor's registry name.
    pub component_id: String,
    /// Whether its plugin answers calls.
    pub responder: bool,
    /// How long one of its calls may take.
    pub call_timeout: Duration,
}

/// The node's rpc bridge: every connector instance of the node, by name.
#[derive(Debug, Clone)]
pub struct RpcSpec {
    /// The node's name (in the answer to an unknown instance).
    pub node: String,
    /// The node's subject scheme.
    pub scheme: SubjectScheme,
    /// Every connector instance, by `[connectors.<name>]`.
    pub targets: HashMap<String, RpcTarget>,
}

/// Subscribes once to `<prefix>.rpc.*.*` (every node, no queue group) and returns the loop that
/// answers every request, each in a task of its own; the root supervisor runs it as the
/// node's `rpc` task. The loop ends with an error only when the bus closes the subscription.
///
/// # Errors
/// The bus refused the subscription.
///
/// # Cancel safety
/// Cancel safe.
pub async fn setup_rpc(bus: &Bus, spec: RpcSpec) -> Result<TaskLoop, BusError> {
    let sub = bus.subscribe(&spec.scheme.all_rpcs()).await?;
    let bus = bus.clone();
    Ok(Box::pin(async move {
        serve_calls(bus, sub, Arc::new(RpcBridge::new(spec))).await;
        Err("rpc bridge: the bus closed its subscription".to_owned())
    }))
}

/// What the rpc bridge's request tasks share.
#[derive(Debug)]
struct RpcBridge {
    spec: RpcSpec,
    /// Calls waiting per responder.
    pending: HashMap<String, Arc<tokio::sync::Semaphore>>,
}

impl RpcBridge {
    fn new(spec: RpcSpec) -> Self {
        let pending = spec
            .targets
            .iter()
            .filter(|(_, t)| t.responder)
            .map(|(name, _)| {
                (
                    name.clone(),
                    Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_CALLS)),
                )
            })
            .collect();
        Self { spec, pending }
    }

    /// The reply body to `request`.
    /// `None` for an instance this node does not run (another node may: only the node that
    /// runs it answers).
    async fn answer(&self, request: &Message) -> Option<serde_json::Value> {
        let Some(SchemeSubject::Rpc { connector, method }) =
            self.spec.scheme.parse(&request.subject)
        else {
            return Some(error_body(
                "config",
                &format!("{} is not a call subject", request.subject),
            ));
        };
        let Some(target) = self.spec.targets.get(&connector) else {
            tracing::debug!(node = %self.spec.node, %connector, "a call for an instance this node does not run; not answered");
            return None;
        };
        Some(self.answer_for(target, &connector, &method, request).await)
    }

    /// The reply body to a call of `method` on `connector` (run here as `target`).
    async fn answer_for(
        &self,
        target: &RpcTarget,
        connector: &str,
        method: &str,
        request: &Message,
    ) -> serde_json::Value {
        let Some(pending) = self.pending.get(connector) else {
            return error_body(
                "config",
                &format!(
                    "connector {connector:?} on node {:?} answers no calls (its plugin is not a responder)",
                    self.spec.node
                ),
            );
        };
        let Ok(_permit) = pending.clone().try_acquire_owned() else {
            return error_body(
                "back_off",
                &format!(
                    "connector {connector}: {MAX_PENDING_CALLS} calls are already waiting; try again later"
                ),
            );
        };
        call(
            &target.component_id,
            method,
            &request.payload,
            target.call_timeout + ANSWER_MARGIN,
        )
        .await
    }
}

async fn feed_sink(mut subs: SelectAll<millwright_bus::Subscription>, spec: BridgeSpec) {
    let max = spec.max_batch.max(1);
    while let Some(first) = subs.next().await {
        let mut batch = vec![to_envelope(first)];
        while batch.len() < max {
            match subs.next().now_or_never() {
                Some(Some(m)) => batch.push(to_envelope(m)),
                _ => break,
            }
        }
        write_until_done(&spec, batch).await;
    }
}

/// How often a batch is offered again after failures that are not a lost connection (a
/// transient error, a timeout, a plugin that crashed during the write) before it is dropped.
pub const MAX_WRITE_ATTEMPTS: u32 = 10;
/// Concurrent calls waiting on one responder; past it a call is answered `back_off`.
pub const MAX_PENDING_CALLS: usize = 64;
/// How much longer than the connector's `call_timeout` the bridge waits for an answer (the
/// request may wait in the instance's mailbox behind another one).
pub const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Offers `batch` to the sink until it takes every event, refuses some for good, or has
/// failed [`MAX_WRITE_ATTEMPTS`] times: events refused with a retryable error are offered
/// again (in order, without those already written), with backoff; while the instance is not
/// connected or restarting, the batch waits without counting attempts.
async fn write_until_done(spec: &BridgeSpec, mut batch: Vec<Envelope>) {
    let mut wait = Duration::from_millis(100);
    let max_wait = Duration::from_secs(5);
    let mut attempts = 0;
    let timeout = spec.call_timeout + ANSWER_MARGIN;
    loop {
        let error = match connector_actor::write(&spec.component_id, batch.clone(), timeout).await {
            Ok(results) => {
                let mut again = Vec::new();
                for (event, result) in batch.into_iter().zip(results) {
                    match result {
                        Ok(()) => {}
                        Err(e) if e.is_retryable() => again.push(event),
                        Err(e) => {
                            tracing::warn!(connector = %spec.instance, id = %event.id, subject = %event.subject, error = %e, "sink rejected an event; dropped");
                            dropped(spec, 1);
                        }
                    }
                }
                if again.is_empty() {
                    return;
                }
                batch = again;
                attempts += 1;
                format!("{} events failed with a retryable error", batch.len())
            }
            Err(e) => {
                match &e {
                    CallError::Connector(
                        ConnectorError::Config(_)
                        | ConnectorError::Fatal(_)
                        | ConnectorError::EndOfInput,
                    ) => {
                        tracing::error!(connector = %spec.instance, events = batch.len(), error = %e, "sink refused a batch; dropped");
                        dropped(spec, batch.len());
                        return;
                    }
                    CallError::Connector(ConnectorError::BackOff(d)) => wait = *d,
                    // Connecting or restarting: wait for it, however long.
                    CallError::Reach(ReachError::NotRunning { .. })
                    | CallError::Connector(ConnectorError::NotConnected(_)) => {}
                    _ => attempts += 1,
                }
                e.to_string()
            }
        };
        if attempts >= MAX_WRITE_ATTEMPTS {
            tracing::error!(connector = %spec.instance, events = batch.len(), attempts, error = %error, "sink failed a batch too often; dropped");
            dropped(spec, batch.len());
            return;
        }
        tracing::debug!(connector = %spec.instance, error = %error, ?wait, "offering the batch to the sink again");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(max_wait);
    }
}

fn dropped(spec: &BridgeSpec, n: usize) {
    metrics::counter!("mw_connector_write_failures_total", "component" => spec.component_id.clone())
        .increment(n as u64);
}

/// A bus message as an event: an envelope as is, anything else wrapped.
fn to_envelope(m: Message) -> Envelope {
    if let Ok(e) = Envelope::from_json_slice(&m.payload) {
        return e;
    }
    let payload = serde_json::from_slice(&m.payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&m.payload).into()));
    Envelope::new("bus", m.subject, payload)
}

/// Answers every request of `sub`, each in a task of its own (bounded by its connector's call
/// timeout), until the subscription ends.
async fn serve_calls(bus: Bus, mut sub: millwright_bus::Subscription, bridge: Arc<RpcBridge>) {
    while let Some(request) = sub.next().await {
        let (bus, bridge) = (bus.clone(), bridge.clone());
        tokio::spawn(async move {
            let Some(body) = bridge.answer(&request).await else {
                return;
            };
            if let Err(e) = bus
                .respond(&request, Headers::new(), Bytes::from(body.to_string()))
                .await
            {
                tracing::debug!(subject = %request.subject, error = %e, "cannot reply to a call");
            }
        });
    }
}

/// Calls `method` of the connector registered as `component_id` with a JSON `body` (empty is
/// `null`) and returns the reply body: `{"ok": ...}` or `{"error": {"kind", "message"}}`.
/// `kind` is a [`ConnectorError::kind`], or `timeout`.
///
/// # Cancel safety
/// Not cancel safe: the call may happen after the future is dropped.
pub async fn call(
    component_id: &str,
    method: &str,
    body: &[u8],
    timeout: Duration,
) -> serde_json::Value {
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return error_body("config", &format!("the request body is not JSON: {e}"));
            }
        }
    };
    match connector_actor::call(component_id, method, payload, timeout).await {
        Ok(answer) => json!({ "ok": answer }),
        Err(CallError::Connector(e)) => error_body(e.kind(), &e.to_string()),
        Err(e @ CallError::Reach(ReachError::Timeout { .. })) => {
            error_body("timeout", &e.to_string())
        }
        Err(e @ CallError::Reach(_)) => error_body("not_connected", &e.to_string()),
    }
}

fn error_body(kind: &str, message: &str) -> serde_json::Value {
    json!({ "error": { "kind": kind, "message": message } })
}
