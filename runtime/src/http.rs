//! The node's HTTP server (`:8080` by default): the probes, the health JSON and the status
//! page are the node's own; every component adds its routes
//! ([`Component::routes`](crate::component::Component::routes)).
//!
//! | method | path | from | answer |
//! |---|---|---|---|
//! | GET | `/live` | node | 200 while the runtime answers |
//! | GET | `/ready` | node | 200 once the supervision tree is up; 503 while starting and while stopping |
//! | GET | `/health` | node | JSON: node, status, phase, every component's state, health, observations, restarts, last error |
//! | GET | `/` | node | a status page that polls `/health` and `/values` every second |
//! | POST | `/events` | broker | ingests a JSON array of event envelopes through the broker; 200 once every one is durable |
//! | GET | `/broker` | broker | JSON: the broker's mode, breaker, queue depth and bytes, DLQ size, counters |
//! | GET | `/control/dlq` | broker | JSON: the oldest 100 dead letters and the total |
//! | POST | `/control/dlq` | broker | runs a DLQ command (`{"op": "replay", "target": "all"}`, ...) |
//! | GET | `/values` | connectors | JSON: the latest value of every tag of this node's sources |
//! | GET | `/plugins` | connectors | JSON: every connector's plugin, version, mode, file, SDK and ABI |
//! | POST | `/connectors/{instance}/call/{method}` | connectors | calls a responder's method |

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use millwright_kernel::lifecycle::{ComponentStatus, Health as ComponentHealth, StatusBoard};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use millwright_broker::BrokerHandle;

use crate::latest::LatestValues;
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
    /// Every component's health is `healthy` (`idle`, `active` or `finished`, and no
    /// observation).
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

/// The node's own routes; the node merges every component's into it.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/", get(status_page))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/health", get(health))
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

/// A JSON error reply: `{"ok": false, "error": "..."}` with `code`.
pub fn error_body(code: StatusCode, error: impl std::fmt::Display) -> Response {
    (
        code,
        Json(serde_json::json!({ "ok": false, "error": error.to_string() })),
    )
        .into_response()
}
