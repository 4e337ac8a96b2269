//! Connector instances as a component: the `connectors` supervisor (one connector actor per
//! `[connectors.<name>]`, and before a sink the bridge that feeds it from the bus), the node's
//! one `rpc` bridge that answers the calls to every responder, the `latest` task behind
//! `/values`, their watchdog probes, their HTTP routes, and stop-intake: every source is paused.
//!
//! ```text
//! <node>/latest                    task: the latest value per tag of the sources (it
//!                                  subscribes before the sources start)
//! <node>/rpc                       task: one subscription to <prefix>.rpc.*.*, dispatching
//!                                  each call to its instance (if any instance is a responder)
//! <node>/connectors                supervisor, one_for_one, restart intensity per instance
//! ├── <node>/connectors/line1.bridge   task: the sink's subscriptions (if it has `subscribe`)
//! ├── <node>/connectors/line1          connector actor, driving its plugin
//! └── ...
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use millwright_connect::{ConnectorActor, ConnectorArgs, ConnectorSpec};
use millwright_kernel::reach::ReachError;
use millwright_kernel::supervisor::{
    BackoffPolicy, ChildSpec, IntensityScope, RestartType, Strategy, SupervisorSpec, child_name,
};
use millwright_plugin_sdk::connector::Kind;
use ractor::Actor;
use tokio::time::Instant;

use super::{policy, root_name};
use crate::component::{BuildContext, Component, IntakeStopped};
use crate::config::ConnectorIntensity;
use crate::connector_bridge::{self, BridgeSpec, RpcSpec, RpcTarget};
use crate::http::{HttpState, error_body};
use crate::latest::LatestValue;
use crate::plugins::PreparedConnector;
use crate::watchdog::Probe;

/// The child id of the connectors supervisor.
pub const CONNECTORS: &str = "connectors";
/// The child id of the latest-values task.
pub const LATEST: &str = "latest";
/// The child id of the rpc bridge.
pub const RPC: &str = "rpc";

/// How long `POST /connectors/{instance}/call/{method}` waits for the plugin's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connector instances run from plugins (`[connectors.<name>]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectorsComponent;

/// The registry name and status-board id of connector instance `instance`.
pub fn connector_id(node: &str, instance: &str) -> String {
    format!("{}/{CONNECTORS}/{instance}", root_name(node))
}

impl Component for ConnectorsComponent {
    fn id(&self) -> &'static str {
        CONNECTORS
    }

    fn description(&self) -> &'static str {
        "connector instances run from plugins ([connectors.<name>])"
    }

    fn child_specs(&self, ctx: &BuildContext) -> Vec<ChildSpec> {
        let supervision = &ctx.config.supervision;
        let scope = match supervision.connector_intensity {
            ConnectorIntensity::PerInstance => IntensityScope::PerChild,
            ConnectorIntensity::PerSupervisor => IntensityScope::Supervisor,
        };
        // Thousands of independent instances: by default each has its own restart budget, so
        // that unrelated crashes do not add up to an escalation (see docs/runtime-semantics.md).
        let mut spec =
            policy(SupervisorSpec::new(Strategy::OneForOne), supervision).intensity_scope(scope);
        for c in ctx.connectors.iter() {
            // A sink bridge's subscriptions exist before the instance starts, so nothing
            // published meanwhile is missed; it finds the instance by name once it runs.
            if let Some(bridge) = bridge_child(ctx, c) {
                spec = spec.child(bridge);
            }
            spec = spec.child(connector_child(ctx, c));
        }
        let latest = ctx.latest.clone();
        let bus = ctx.bus.clone();
        let subject = ctx.scheme.all_events();
        let sources: Arc<std::collections::HashSet<String>> =
            Arc::new(ctx.connectors.iter().map(|c| c.name.clone()).collect());
        // `latest` subscribes before the sources start, so their first values are seen; the
        // rpc bridge before the responders start, so no call finds nobody listening.
        let mut children = vec![ChildSpec::task(LATEST, move || {
            let (latest, bus, subject, sources) = (
                latest.clone(),
                bus.clone(),
                subject.clone(),
                sources.clone(),
            );
            Box::pin(async move {
                latest
                    .follow(&bus, &subject, sources)
                    .await
                    .map_err(|e| e.to_string())
            })
        })];
        children.extend(rpc_child(ctx));
        children.push(ChildSpec::supervisor(CONNECTORS, spec));
        children
    }

    fn probes(&self, ctx: &BuildContext) -> Vec<Probe> {
        ctx.connectors
            .iter()
            .map(|c| {
                // A connector counts as not answering only once one plugin request has taken
                // longer than its call timeout (a CMMS call may retry for seconds).
                Probe::connector(
                    connector_id(ctx.node(), &c.name),
                    c.config.call_timeout.max(ctx.config.watchdog.timeout),
                )
            })
            .collect()
    }

    fn routes(&self) -> axum::Router<HttpState> {
        axum::Router::new()
            .route("/values", get(values))
            .route("/plugins", get(plugins))
            .route("/connectors/{instance}/call/{method}", post(call_connector))
    }

    fn stop_intake<'a>(
        &'a self,
        ctx: &'a BuildContext,
        deadline: Instant,
    ) -> BoxFuture<'a, IntakeStopped> {
        Box::pin(async move {
            let pauses = ctx
                .connectors
                .iter()
                .filter(|c| c.manifest.kinds.contains(&Kind::Source))
                .map(|c| async move {
                    let id = connector_id(ctx.node(), &c.name);
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    match millwright_connect::pause(&id, left).await {
                        // One that is restarting reads nothing: its supervisor restarts
                        // nothing any more.
                        Ok(()) | Err(ReachError::NotRunning { .. }) => true,
                        Err(e) => {
                            tracing::warn!(component = %id, error = %e, "source not paused within the grace window");
                            false
                        }
                    }
                });
            if futures::future::join_all(pauses)
                .await
                .into_iter()
                .all(|ok| ok)
            {
                IntakeStopped::Drained
            } else {
                IntakeStopped::TimedOut
            }
        })
    }
}

/// The node's one rpc bridge, when any instance is a responder.
fn rpc_child(ctx: &BuildContext) -> Option<ChildSpec> {
    let targets: HashMap<String, RpcTarget> = ctx
        .connectors
        .iter()
        .map(|c| {
            let target = RpcTarget {
                component_id: connector_id(ctx.node(), &c.name),
                responder: c.manifest.kinds.contains(&Kind::Responder),
                call_timeout: c.config.call_timeout,
            };
            (c.name.clone(), target)
        })
        .collect();
    if !targets.values().any(|t| t.responder) {
        return None;
    }
    let spec = RpcSpec {
        node: ctx.node().to_owned(),
        scheme: ctx.scheme.clone(),
        targets,
    };
    let bus = ctx.bus.clone();
    Some(ChildSpec::task(RPC, move || {
        let (bus, spec) = (bus.clone(), spec.clone());
        Box::pin(async move {
            connector_bridge::setup_rpc(&bus, spec)
                .await
                .map_err(|e| e.to_string())
        })
    }))
}

/// The bridge that feeds a sink its `subscribe` subjects, if it has any.
fn bridge_child(ctx: &BuildContext, c: &PreparedConnector) -> Option<ChildSpec> {
    if c.config.subscribe.is_empty() {
        return None;
    }
    let spec = BridgeSpec {
        instance: c.name.clone(),
        component_id: connector_id(ctx.node(), &c.name),
        subscribe: c.config.subscribe.clone(),
        max_batch: c.config.max_batch,
        call_timeout: c.config.call_timeout,
    };
    let bus = ctx.bus.clone();
    Some(ChildSpec::task(format!("{}.bridge", c.name), move || {
        let (bus, spec) = (bus.clone(), spec.clone());
        Box::pin(async move {
            connector_bridge::setup(&bus, spec)
                .await
                .map_err(|e| e.to_string())
        })
    }))
}

fn connector_child(ctx: &BuildContext, c: &PreparedConnector) -> ChildSpec {
    let spec = Arc::new(ConnectorSpec {
        instance: c.name.clone(),
        plugin: c.manifest.id.clone(),
        config: c.config.config.clone(),
        subject_prefix: ctx.config.bus.prefix.clone(),
        kinds: c.manifest.kinds.clone(),
        max_batch: c.config.max_batch,
        poll_interval: c.config.poll_interval,
        backoff: BackoffPolicy {
            min: ctx.config.supervision.min_backoff,
            max: ctx.config.supervision.max_backoff,
            ..BackoffPolicy::default()
        },
        republish_delay: Duration::from_millis(100),
        idle_window: ctx.config.node.idle_window,
    });
    let (board, broker, transport) = (ctx.board.clone(), ctx.broker.clone(), c.transport.clone());
    let id = c.name.clone();
    // Transient: a source that reaches its end of input stops for good; a crash restarts it.
    ChildSpec::worker(&c.name, move |supervisor| {
        let component_id = child_name(&supervisor, &id);
        let args = ConnectorArgs {
            spec: spec.clone(),
            component_id: component_id.clone(),
            board: board.clone(),
            broker: broker.clone(),
            transport: transport.clone(),
        };
        Box::pin(async move {
            let (a, _) =
                Actor::spawn_linked(Some(component_id), ConnectorActor, args, supervisor).await?;
            Ok(a.get_cell())
        })
    })
    .restart(RestartType::Transient)
}

async fn values(State(state): State<HttpState>) -> Json<Vec<LatestValue>> {
    Json(state.latest.snapshot())
}

/// `GET /plugins`.
async fn plugins(State(state): State<HttpState>) -> Json<Vec<crate::plugins::PluginInfo>> {
    Json(state.plugins.as_ref().clone())
}

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
    let id = connector_id(&state.node, &instance);
    let reply = connector_bridge::call(&id, &method, &body, CALL_TIMEOUT).await;
    let code = match reply["error"]["kind"].as_str() {
        None => StatusCode::OK,
        Some("config") => StatusCode::BAD_REQUEST,
        Some("not_connected" | "back_off" | "transient") => StatusCode::SERVICE_UNAVAILABLE,
        Some("timeout") => StatusCode::GATEWAY_TIMEOUT,
        Some(_) => StatusCode::BAD_GATEWAY,
    };
    (code, Json(reply)).into_response()
}
