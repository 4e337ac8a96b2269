//! The broker as a component: one worker under the root, `/events`, `/broker`,
//! `/control/dlq` and the `dlq` control verb.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use millwright_broker::disk_queue::DiskQueueOptions;
use millwright_broker::dlq_admin::{DlqCommand, DlqReply};
use millwright_broker::{
    Broker, BrokerArgs, BrokerCallError, BrokerError, BrokerOptions, DeliveryMode, StreamSpec,
};
use millwright_bus::subject;
use millwright_kernel::supervisor::ChildSpec;
use millwright_plugin_sdk::circuit_breaker::BreakerConfig;
use millwright_plugin_sdk::event::Envelope;
use ractor::Actor;

use super::root_name;
use crate::component::{BuildContext, Component, ControlVerb};
use crate::config::{BrokerMode, Config};
use crate::http::{HttpState, error_body};
use crate::phase::Phase;

/// The child id of the broker.
pub const BROKER: &str = "broker";
/// The control verb for the DLQ: `<prefix>.ctl.<node>.dlq`.
pub const DLQ_VERB: &str = "dlq";
/// How long a DLQ command may take on the broker.
pub const DLQ_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker: every publish, the disk queue and the DLQ (`[broker]`).
#[derive(Debug, Clone, Copy)]
pub struct BrokerComponent;

/// The broker's status-board id and registry name.
pub fn broker_id(node: &str) -> String {
    format!("{}/{BROKER}", root_name(node))
}

impl Component for BrokerComponent {
    fn id(&self) -> &'static str {
        BROKER
    }

    fn description(&self) -> &'static str {
        "the broker: every publish, the disk queue and the DLQ ([broker])"
    }

    fn child_specs(&self, ctx: &BuildContext) -> Vec<ChildSpec> {
        let args = BrokerArgs {
            options: ctx.broker_options.clone(),
            intake: ctx.intake.clone(),
            bus: ctx.bus.clone(),
            board: ctx.board.clone(),
            component_id: broker_id(ctx.node()),
        };
        vec![ChildSpec::worker(BROKER, move |supervisor| {
            let args = args.clone();
            Box::pin(async move {
                let id = args.component_id.clone();
                let (broker, _) = Actor::spawn_linked(Some(id), Broker, args, supervisor).await?;
                Ok(broker.get_cell())
            })
        })]
    }

    fn routes(&self) -> axum::Router<HttpState> {
        axum::Router::new()
            .route("/events", post(ingest_events))
            .route("/broker", get(broker_stats))
            .route("/control/dlq", get(dlq_list).post(dlq_command))
    }

    fn verbs(&self, ctx: &BuildContext) -> Vec<ControlVerb> {
        let node = ctx.node().to_owned();
        vec![ControlVerb {
            token: DLQ_VERB,
            handle: std::sync::Arc::new(move |payload| {
                let node = node.clone();
                Box::pin(async move {
                    let command: DlqCommand = serde_json::from_slice(&payload).map_err(|e| {
                        format!(
                            "invalid request: {e} (expected a DLQ command such as {{\"op\": \"list\", \"limit\": 20}})"
                        )
                    })?;
                    let reply = dlq(&node, command).await.map_err(|e| e.to_string())?;
                    Ok(Some(serde_json::to_value(reply).unwrap_or_default()))
                })
            }),
        }]
    }
}

/// Runs a DLQ command on node `node`'s broker.
///
/// # Errors
/// [`BrokerCallError`] when the broker is not running, slow, or the command failed.
///
/// # Cancel safety
/// Cancel safe for the caller; a command already delivered still runs.
pub async fn dlq(node: &str, command: DlqCommand) -> Result<DlqReply, BrokerCallError> {
    let reply =
        millwright_broker::actor::dlq(&broker_id(node), command.clone(), DLQ_TIMEOUT).await?;
    tracing::info!(?command, "control: dlq command done");
    Ok(reply)
}

/// The broker's options from `[node]`, `[bus]` and `[broker]`.
pub fn broker_options(config: &Config) -> BrokerOptions {
    let b = &config.broker;
    let mut o = BrokerOptions::new(&config.node.data_dir);
    o.mode = match b.mode {
        BrokerMode::Core => DeliveryMode::Core,
        BrokerMode::Jetstream => DeliveryMode::Jetstream,
    };
    o.stream = StreamSpec {
        name: b.stream.clone(),
        subjects: b
            .stream_subjects
            .clone()
            .unwrap_or_else(|| vec![format!("{}.ev.>", config.bus.prefix)]),
        duplicate_window: b.duplicate_window,
        max_age: b.stream_max_age,
        replicas: 1,
    };
    o.breaker = BreakerConfig {
        failure_threshold: b.breaker_failures,
        success_threshold: b.breaker_successes,
        open_base: b.breaker_open,
        open_max: b.breaker_open_max,
        ..BreakerConfig::default()
    };
    o.queue = DiskQueueOptions {
        segment_bytes: b.queue_segment_bytes,
        max_bytes: b.queue_max_bytes,
        sync: b.sync_policy().unwrap_or(DiskQueueOptions::default().sync),
        name: BROKER.to_owned(),
    };
    o.max_attempts = b.max_attempts;
    o.ack_timeout = b.ack_timeout;
    o.max_batch = b.max_batch;
    o.intake_capacity = b.intake_capacity;
    o.intake_timeout = b.intake_timeout;
    o.receipt_timeout = b.receipt_timeout;
    o.idle_window = config.node.idle_window;
    o
}

/// `POST /events`: a JSON array of envelopes (the bus wire format), published through the
/// broker in order. 200 with the receipt once every event is durable; on any error none of
/// them is acknowledged and the caller sends them again (ids de-duplicate).
async fn ingest_events(State(state): State<HttpState>, body: axum::body::Bytes) -> Response {
    if state.phase.get() == Phase::Stopping {
        return error_body(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    let events: Vec<Envelope> = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                format!("invalid body: {e} (expected a JSON array of event envelopes)"),
            );
        }
    };
    if let Some(bad) = events.iter().find(|e| {
        !e.subject.starts_with(&state.events_prefix)
            || subject::validate_publish_subject(&e.subject).is_err()
    }) {
        return error_body(
            StatusCode::BAD_REQUEST,
            format!(
                "event {} has subject {:?}; /events takes event subjects under {}<source>.<tag>",
                bad.id, bad.subject, state.events_prefix
            ),
        );
    }
    let count = events.len();
    match state.broker.publish_batch(events).await {
        Ok(receipt) => (
            StatusCode::OK,
            Json(serde_json::json!({
                "ok": true,
                "accepted": count,
                "delivered": receipt.delivered,
                "queued": receipt.queued,
            })),
        )
            .into_response(),
        Err(e @ (BrokerError::Busy { .. } | BrokerError::Stopped)) => {
            error_body(StatusCode::SERVICE_UNAVAILABLE, e)
        }
        Err(e) => error_body(StatusCode::INSUFFICIENT_STORAGE, e),
    }
}

fn broker_error(e: BrokerCallError) -> Response {
    match e {
        BrokerCallError::Failed(msg) if msg.starts_with("no dead letter") => {
            error_body(StatusCode::NOT_FOUND, msg)
        }
        BrokerCallError::Failed(msg) => error_body(StatusCode::INTERNAL_SERVER_ERROR, msg),
        other => error_body(StatusCode::SERVICE_UNAVAILABLE, other),
    }
}

/// `GET /broker`.
async fn broker_stats(State(state): State<HttpState>) -> Response {
    match millwright_broker::actor::stats(&broker_id(&state.node), Duration::from_secs(5)).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => broker_error(e),
    }
}

/// `GET /control/dlq`.
async fn dlq_list(State(state): State<HttpState>) -> Response {
    match dlq(&state.node, DlqCommand::List { limit: 100 }).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => broker_error(e),
    }
}

/// `POST /control/dlq` with a [`DlqCommand`] body.
async fn dlq_command(State(state): State<HttpState>, body: axum::body::Bytes) -> Response {
    let command: DlqCommand = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid DLQ command: {e} (e.g. {{\"op\": \"replay\", \"target\": \"all\"}})"
                ),
            );
        }
    };
    match dlq(&state.node, command).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => broker_error(e),
    }
}
