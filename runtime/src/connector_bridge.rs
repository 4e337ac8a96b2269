//! The bridge between the bus and the connector actors that are not (only) sources: it feeds
//! a sink the messages of its `subscribe` subjects and answers requests to a responder.
//!
//! | direction | subject | what happens |
//! |---|---|---|
//! | into a sink | each of `[connectors.<name>] subscribe` | messages are batched (up to `max_batch`, what is already there) and written with `write_batch` |
//! | request/reply | `<prefix>.rpc.<name>.<method>` | the body (JSON; empty is `null`) goes to `call(method, body)`; the reply is `{"ok": <answer>}` or `{"error": {"kind": "...", "message": "..."}}` |
//!
//! `POST /connectors/<name>/call/<method>` on `:8080` sends the same request over the bus.
//!
//! The bridge outlives the instance's restarts: it finds the actor by its registry name for
//! every batch and every request. While the instance is not connected (or restarting) a sink
//! batch waits and is offered again with backoff (the subscription buffers what arrives
//! meanwhile, up to the bus' limits), so a reconnect loses nothing the bridge received; a
//! request is answered at once with the `not_connected` error. Events the sink rejects one by
//! one are logged and counted (`mw_connector_write_failures_total`), not retried.
//! Messages that are not event envelopes are wrapped in one (source `bus`, the message's
//! subject, its JSON body or its text as the payload).

use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::stream::{SelectAll, StreamExt};
use millwright_actors::bus::{Bus, BusError, Headers, Message, SchemeSubject, SubjectScheme};
use millwright_actors::connector::{self as connector_actor, ReachError};
use millwright_plugin_sdk::connector::ConnectorError;
use millwright_plugin_sdk::event::Envelope;
use serde_json::json;
use tokio::task::JoinHandle;

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

/// Starts the bridge's tasks for one connector; abort the handles to stop them.
///
/// # Errors
/// A subscription the bus refused (an invalid subject).
pub async fn spawn(bus: &Bus, spec: BridgeSpec) -> Result<Vec<JoinHandle<()>>, BusError> {
    let mut tasks = Vec::new();
    if !spec.subscribe.is_empty() {
        let mut subs = SelectAll::new();
        for subject in &spec.subscribe {
            subs.push(bus.subscribe(subject).await?);
        }
        tasks.push(tokio::spawn(feed_sink(subs, spec.clone())));
    }
    if spec.responder {
        let subject = spec.scheme.rpcs_of(&spec.instance);
        let group = format!("{}.rpc", spec.scheme.prefix());
        let sub = bus.queue_subscribe(&subject, &group).await?;
        tasks.push(tokio::spawn(serve_calls(bus.clone(), sub, spec)));
    }
    Ok(tasks)
}

async fn feed_sink(mut subs: SelectAll<millwright_actors::bus::Subscription>, spec: BridgeSpec) {
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

/// Offers `batch` to the sink until it takes it (or refuses it for good).
async fn write_until_done(spec: &BridgeSpec, batch: Vec<Envelope>) {
    let mut wait = Duration::from_millis(100);
    let max_wait = Duration::from_secs(5);
    loop {
        let error = match connector_actor::write(
            &spec.component_id,
            batch.clone(),
            spec.call_timeout,
        )
        .await
        {
            Ok(results) => {
                for (event, result) in batch.iter().zip(results) {
                    if let Err(e) = result {
                        tracing::warn!(connector = %spec.instance, id = %event.id, subject = %event.subject, error = %e, "sink rejected an event");
                    }
                }
                return;
            }
            Err(e) => e,
        };
        match &error {
            ReachError::Connector(ConnectorError::Config(_) | ConnectorError::Fatal(_)) => {
                tracing::error!(connector = %spec.instance, events = batch.len(), error = %error, "sink refused a batch; dropped");
                metrics::counter!("mw_connector_write_failures_total", "component" => spec.component_id.clone())
                    .increment(batch.len() as u64);
                return;
            }
            ReachError::Connector(ConnectorError::BackOff(d)) => wait = *d,
            _ => {}
        }
        tracing::debug!(connector = %spec.instance, error = %error, ?wait, "sink not ready; offering the batch again");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(max_wait);
    }
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

async fn serve_calls(bus: Bus, mut sub: millwright_actors::bus::Subscription, spec: BridgeSpec) {
    while let Some(request) = sub.next().await {
        let (bus, spec) = (bus.clone(), spec.clone());
        tokio::spawn(async move {
            let body = answer(&spec, &request).await;
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
        spec.call_timeout,
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
        Err(ReachError::Connector(e)) => error_body(e.kind(), &e.to_string()),
        Err(e @ ReachError::Timeout { .. }) => error_body("timeout", &e.to_string()),
        Err(e @ ReachError::NotRunning(_)) => error_body("not_connected", &e.to_string()),
    }
}

fn error_body(kind: &str, message: &str) -> serde_json::Value {
    json!({ "error": { "kind": kind, "message": message } })
}
