//! The node's HTTP server (`:8080` by default): probes, health JSON, a live status page and
//! control endpoints.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/live` | 200 while the runtime answers |
//! | GET | `/ready` | 200 once the supervision tree is up; 503 while starting and while stopping |
//! | GET | `/health` | JSON: node, status, phase, every component's state, restarts, last error |
//! | GET | `/values` | JSON: the latest value of every tag of this node's sources |
//! | GET | `/` | a status page that polls `/health` and `/values` every second |
//! | POST | `/events` | ingests a JSON array of event envelopes through the broker; 200 once every one is durable |
//! | GET | `/plugins` | JSON: every connector's plugin, version, mode, file, SDK and ABI |
//! | GET | `/broker` | JSON: the broker's mode, breaker, queue depth and bytes, DLQ size, counters |
//! | GET | `/control/dlq` | JSON: the oldest 100 dead letters and the total |
//! | POST | `/control/dlq` | runs a DLQ command (`{"op": "replay", "target": "all"}`, ...) |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use millwright_kernel::lifecycle::{ComponentStatus, Health as ComponentHealth, StatusBoard};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use millwright_broker::dlq_admin::DlqCommand;
use millwright_broker::{self, BrokerCallError, BrokerError, BrokerHandle};
use millwright_bus::subject;
use millwright_plugin_sdk::event::Envelope;

use crate::components;
use crate::control::Control;
use crate::latest::{LatestValue, LatestValues};
use crate::phase::{Phase, PhaseCell};

/// The status page served at `/`.
const STATUS_PAGE: &str = include_str!("http/status_page.html");

/// The HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error(
        "http: cannot listen on {addr}: {source} (set [http] listen or --http-port to a free port)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The node's name.
    pub node: String,
    /// The node's status board.
    pub board: StatusBoard,
    /// The node's phase.
    pub phase: PhaseCell,
    /// Component control.
    pub control: Control,
    /// When the node started.
    pub started: Instant,
    /// The latest value per tag.
    pub latest: LatestValues,
    /// Producers' handle on the broker (for `/events`).
    pub broker: BrokerHandle,
    /// Subjects `/events` accepts start with this (`mw.ev.`).
    pub events_prefix: String,
    /// The plugins this node loaded, one line per connector.
    pub plugins: std::sync::Arc<Vec<crate::plugins::PluginInfo>>,
}

/// The overall verdict in `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every component is `idle` or `active`.
    Ok,
    /// At least one component is degraded, stopped or otherwise not healthy.
    Degraded,
    /// The node is booting.
    Starting,
    /// The node is shutting down.
    Stopping,
}

/// The body of `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// The node's name.
    pub node: String,
    /// The verdict.
    pub status: HealthStatus,
    /// The node's phase.
    pub phase: Phase,
    /// Seconds since the node started.
    pub uptime_seconds: f64,
    /// Every component, ordered by id.
    pub components: Vec<ComponentStatus>,
}

impl Health {
    /// The health of the node now.
    pub fn now(state: &HttpState) -> Self {
        let components = state.board.snapshot();
        let phase = state.phase.get();
        let status = match phase {
            Phase::Starting => HealthStatus::Starting,
            Phase::Stopping => HealthStatus::Stopping,
            Phase::Ready
                if components
                    .iter()
                    .all(|c| c.health == ComponentHealth::Healthy) =>
            {
                HealthStatus::Ok
            }
            Phase::Ready => HealthStatus::Degraded,
        };
        Self {
            node: state.node.clone(),
            status,
            phase,
            uptime_seconds: state.started.elapsed().as_secs_f64(),
            components,
        }
    }
}

/// The router with every endpoint.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/values", get(values))
        .route("/events", post(ingest_events))
        .route("/broker", get(broker_stats))
        .route("/plugins", get(plugins))
        .route("/connectors/{instance}/call/{method}", post(call_connector))
        .route("/control/dlq", get(dlq_list).post(dlq_command))
        .with_state(state)
}

/// Binds `addr` (port 0 picks a free port).
///
/// # Errors
/// [`HttpError::Listen`] when the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Listen { addr, source })
}

/// Serves `router` on `listener` until `stop` resolves.
pub fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "http server failed");
        }
    })
}

async fn status_page() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

async fn ready(State(state): State<HttpState>) -> Response {
    let phase = state.phase.get();
    let code = if phase == Phase::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(serde_json::json!({ "status": phase.as_str() }))).into_response()
}

async fn health(State(state): State<HttpState>) -> Response {
    let health = Health::now(&state);
    let code = match health.status {
        HealthStatus::Ok | HealthStatus::Degraded => StatusCode::OK,
        HealthStatus::Starting | HealthStatus::Stopping => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(health)).into_response()
}

async fn values(State(state): State<HttpState>) -> Json<Vec<LatestValue>> {
    Json(state.latest.snapshot())
}

fn error_body(code: StatusCode, error: impl std::fmt::Display) -> Response {
    (
        code,
        Json(serde_json::json!({ "ok": false, "error": error.to_string() })),
    )
        .into_response()
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
    match millwright_broker::actor::stats(
        &components::broker_id(&state.node),
        std::time::Duration::from_secs(5),
    )
    .await
    {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => broker_error(e),
    }
}

/// `GET /control/dlq`.
async fn dlq_list(State(state): State<HttpState>) -> Response {
    match state.control.dlq(DlqCommand::List { limit: 100 }).await {
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
    match state.control.dlq(command).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => broker_error(e),
    }
}

/// `GET /plugins`.
async fn plugins(State(state): State<HttpState>) -> Json<Vec<crate::plugins::PluginInfo>> {
    Json(state.plugins.as_ref().clone())
}

/// How long `POST /connectors/{instance}/call/{method}` waits for the plugin's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST /connectors/{instance}/call/{method}`: the same call as a request on
/// `<prefix>.rpc.<instance>.<method>`, with the same reply body. The status says the outcome:
/// 200 answered, 400 a bad request (`config`), 404 no such connector, 503 not connected or
/// backing off, 504 no answer in time, 502 any other plugin error.
async fn call_connector(
    State(state): State<HttpState>,
    Path((instance, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if !state.plugins.iter().any(|p| p.instance == instance) {
        let known: Vec<&str> = state.plugins.iter().map(|p| p.instance.as_str()).collect();
        return error_body(
            StatusCode::NOT_FOUND,
            format!(
                "no connector {instance:?} (configured: {})",
                known.join(", ")
            ),
        );
    }
    let id = crate::components::connector_id(&state.node, &instance);
    let reply = crate::connector_bridge::call(&id, &method, &body, CALL_TIMEOUT).await;
    let code = match reply["error"]["kind"].as_str() {
        None => StatusCode::OK,
        Some("config") => StatusCode::BAD_REQUEST,
        Some("not_connected" | "back_off" | "transient") => StatusCode::SERVICE_UNAVAILABLE,
        Some("timeout") => StatusCode::GATEWAY_TIMEOUT,
        Some(_) => StatusCode::BAD_GATEWAY,
    };
    (code, Json(reply)).into_response()
}
