//! The one interface through which every kind of component plugs into a node.
//!
//! A kind of component (the broker, the connector instances; machine monitors and workflows
//! next) is one type implementing [`Component`], listed once in
//! [`components::BUILTIN`](crate::components::BUILTIN). From that entry the node takes:
//!
//! | what | method | used by |
//! |---|---|---|
//! | its subtree of the supervision tree (its helper tasks included, as supervised children) | [`child_specs`](Component::child_specs) | boot, under the root supervisor |
//! | what the liveness watchdog pings | [`probes`](Component::probes) | the `watchdog` child |
//! | its HTTP routes | [`routes`](Component::routes) | the HTTP server |
//! | its bus control verbs, `<prefix>.ctl.<node>.<verb>` | [`verbs`](Component::verbs) | the `control` child |
//! | how it stops taking in new work at shutdown | [`stop_intake`](Component::stop_intake) | shutdown step 1 |
//!
//! `Node::start` and the shutdown iterate the list; they name no kind of component. Adding a
//! kind touches its own module and one line of [`BUILTIN`](crate::components::BUILTIN)
//! (`docs/architecture.md` walks through the connector as the worked example).

use std::sync::Arc;

use futures::future::BoxFuture;
use millwright_broker::{BrokerHandle, BrokerOptions, Intake};
use millwright_bus::{Bus, SubjectScheme};
use millwright_kernel::lifecycle::StatusBoard;
use millwright_kernel::supervisor::ChildSpec;
use tokio::time::Instant;

use crate::config::Config;
use crate::http::HttpState;
use crate::latest::LatestValues;
use crate::watchdog::Probe;

/// What every component is built from: the node's config and shared services.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The node's config.
    pub config: Arc<Config>,
    /// The node's status board.
    pub board: StatusBoard,
    /// The bus.
    pub bus: Bus,
    /// The subject scheme under the configured prefix.
    pub scheme: SubjectScheme,
    /// The broker's options (from `[broker]`).
    pub broker_options: BrokerOptions,
    /// Producers' handle on the broker.
    pub broker: BrokerHandle,
    /// The broker's intake, shared by its incarnations.
    pub intake: Arc<Intake>,
    /// The connectors, with their plugins loaded and checked ([`crate::plugins::prepare`]).
    pub connectors: Arc<Vec<crate::plugins::PreparedConnector>>,
    /// The latest value per tag of this node's sources (`/values`).
    pub latest: LatestValues,
}

impl BuildContext {
    /// The node's name.
    pub fn node(&self) -> &str {
        &self.config.node.name
    }
}

/// What a control verb's handler answers: a JSON reply (or none), or why it refused.
pub type VerbResult = Result<Option<serde_json::Value>, String>;

/// A control verb: requests on `<prefix>.ctl.<node>.<token>` go to `handle`.
#[derive(Clone)]
pub struct ControlVerb {
    /// The subject token (`dlq`).
    pub token: &'static str,
    /// Handles one request body.
    pub handle: Arc<dyn Fn(bytes::Bytes) -> BoxFuture<'static, VerbResult> + Send + Sync>,
}

impl std::fmt::Debug for ControlVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlVerb")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// How a component's intake stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeStopped {
    /// It takes in nothing new and nothing is in flight.
    Drained,
    /// The deadline passed first; what was in flight is named in the log.
    TimedOut,
}

/// One kind of component (see the module docs).
pub trait Component: Send + Sync + 'static {
    /// Its child id under the root supervisor (`broker`, `connectors`); its first child spec
    /// carries it.
    fn id(&self) -> &'static str;

    /// What it is, for docs and logs.
    fn description(&self) -> &'static str;

    /// Its children under the root supervisor, in start order (they stop in reverse).
    fn child_specs(&self, ctx: &BuildContext) -> Vec<ChildSpec>;

    /// What the liveness watchdog pings.
    fn probes(&self, _ctx: &BuildContext) -> Vec<Probe> {
        Vec::new()
    }

    /// Its HTTP routes (mutating ones included: they sit behind the node's access control).
    fn routes(&self) -> axum::Router<HttpState> {
        axum::Router::new()
    }

    /// Its bus control verbs.
    fn verbs(&self, _ctx: &BuildContext) -> Vec<ControlVerb> {
        Vec::new()
    }

    /// Stops taking in new work (shutdown step 1) and waits, until `deadline`, for what is in
    /// flight. Its actors keep running until the tree stops them.
    fn stop_intake<'a>(
        &'a self,
        _ctx: &'a BuildContext,
        _deadline: Instant,
    ) -> BoxFuture<'a, IntakeStopped> {
        Box::pin(std::future::ready(IntakeStopped::Drained))
    }
}
