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
//! | POST | `/control/sims/{machine}/{command}` | tells a sim to `fail`, `hang`, `degrade`, `recover`, `pause` or `resume` |

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use millwright_actors::status::{ComponentStatus, StatusBoard};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::control::{Control, ControlError};
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
            Phase::Ready if components.iter().all(|c| c.state.is_healthy()) => HealthStatus::Ok,
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
        .route("/control/sims/{machine}/{command}", post(control_sim))
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

async fn control_sim(
    State(state): State<HttpState>,
    Path((machine, command)): Path<(String, String)>,
) -> Response {
    let reply = |code: StatusCode, error: Option<String>| {
        let body = match error {
            None => serde_json::json!({ "ok": true, "machine": machine, "command": command }),
            Some(e) => serde_json::json!({ "ok": false, "error": e }),
        };
        (code, Json(body)).into_response()
    };
    if state.phase.get() == Phase::Stopping {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("the node is shutting down".to_owned()),
        );
    }
    let command = match command.parse() {
        Ok(c) => c,
        Err(e) => return reply(StatusCode::BAD_REQUEST, Some(format!("{e}"))),
    };
    match state.control.sim(&machine, command).await {
        Ok(()) => reply(StatusCode::ACCEPTED, None),
        Err(e @ ControlError::UnknownMachine { .. }) => {
            reply(StatusCode::NOT_FOUND, Some(e.to_string()))
        }
        Err(e @ ControlError::NotRunning(_)) => {
            reply(StatusCode::SERVICE_UNAVAILABLE, Some(e.to_string()))
        }
        Err(e @ ControlError::BadRequest(_)) => reply(StatusCode::BAD_REQUEST, Some(e.to_string())),
    }
}
