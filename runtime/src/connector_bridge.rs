//! The bridge between the bus and the connector actors that are not (only) sources: it feeds
//! a sink the messages of its `subscribe` subjects and answers requests to a responder.
//!
//! | direction | subject | what happens |
//! |---|---|---|
//! | into a sink | each of `[connectors.<name>] subscribe` | messages are batched (up to `max_batch`, what is already there) and written with `write_batch` |
//! | request/reply | `<prefix>.rpc.<name>.<method>` | the body (JSON; empty is `null`) goes to `call(method, body)`; the reply is `{"ok": <answer>}` or `{"error": {"kind": "...", "message": "..."}}` |
//!
//! `POST /connectors/<name>/call/<method>` on `:8080` makes the same call (in process, not over
//! the bus) and answers the same body.
//!
//! The bridge subscribes before the supervision tree starts and outlives the instance's
//! restarts: it finds the actor by its registry name for every batch and every request.
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
//! consumer per sink is the planned fix). A request whose caller stopped waiting is not run.
//! At most [`MAX_PENDING_CALLS`] calls wait per responder; more are answered `back_off`.
//! Messages that are not event envelopes are wrapped in one (source `bus`, the message's
//! subject, its JSON body or its text as the payload).

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

/// One connector's wiring.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// The instance (`[connectors.<name>]`).
    pub instance: String,
    /// The connector actor's registry name.
    pub component_id: String,
    /// Sink input subjects; empty for none.
    pub subscribe: Vec<String>,
    /// Serve `<prefix>.rpc.<instance>.*`.
    pub responder: bool,
    /// The node's subject scheme.
    pub scheme: SubjectScheme,
    /// Most events per write.
    pub max_batch: usize,
    /// How long a write or a call may take.
    pub call_timeout: Duration,
}

/// Subscribes for one connector (its sink subjects, its rpc subjects) and returns the loop
/// that feeds and serves them; the connectors supervisor runs it as the instance's `bridge`
/// task. The loop ends with an error only when the bus closes a subscription.
///
/// # Errors
/// A subscription the bus refused (an invalid subject).
pub async fn setup(bus: &Bus, spec: BridgeSpec) -> Result<TaskLoop, BusError> {
    let mut loops: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    if !spec.subscribe.is_empty() {
        let mut subs = SelectAll::new();
        for subject in &spec.subscribe {
            subs.push(bus.subscribe(subject).await?);
        }
        loops.push(Box::pin(feed_sink(subs, spec.clone())));
    }
    if spec.responder {
        let subject = spec.scheme.rpcs_of(&spec.instance);
        let group = format!("{}.rpc", spec.scheme.prefix());
        let sub = bus.queue_subscribe(&subject, &group).await?;
        loops.push(Box::pin(serve_calls(bus.clone(), sub, spec.clone())));
    }
    let instance = spec.instance;
    Ok(Box::pin(async move {
        futures::future::select_all(loops).await;
        Err(format!(
            "bridge of {instance}: the bus closed a subscription"
        ))
    }))
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

async fn serve_calls(bus: Bus, mut sub: millwright_bus::Subscription, spec: BridgeSpec) {
    let pending = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_CALLS));
    while let Some(request) = sub.next().await {
        let (bus, spec) = (bus.clone(), spec.clone());
        let permit = pending.clone().try_acquire_owned();
        tokio::spawn(async move {
            let body = match permit {
                Ok(_permit) => answer(&spec, &request).await,
                Err(_) => error_body(
                    "back_off",
                    &format!(
                        "connector {}: {MAX_PENDING_CALLS} calls are already waiting; try again later",
                        spec.instance
                    ),
                ),
            };
            if let Err(e) = bus
                .respond(&request, Headers::new(), Bytes::from(body.to_string()))
                .await
            {
                tracing::debug!(connector = %spec.instance, error = %e, "cannot reply to a call");
            }
        });
    }
}

async fn answer(spec: &BridgeSpec, request: &Message) -> serde_json::Value {
    let Some(SchemeSubject::Rpc { method, .. }) = spec.scheme.parse(&request.subject) else {
        return error_body(
            "config",
            &format!("{} is not a call subject", request.subject),
        );
    };
    call(
        &spec.component_id,
        &method,
        &request.payload,
        spec.call_timeout + ANSWER_MARGIN,
    )
    .await
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
