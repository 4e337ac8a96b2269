//! The one explicit list of the kinds of components a node runs ([`BUILTIN`]), and the
//! supervision tree built from it. No linker magic: a new kind is one module implementing
//! [`Component`] and one more entry in [`BUILTIN`].
//!
//! The supervision tree (ids are the registry names and the status-board ids):
//!
//! ```text
//! <node>                       root supervisor, one_for_one
//! ├── <node>/broker            the broker actor (every publish goes through it)
//! ├── <node>/latest            task: the latest value per tag (`/values`)
//! ├── <node>/rpc               task: the one bridge answering calls to every responder
//! ├── <node>/connectors        supervisor, one_for_one, restart intensity per instance:
//! │   ├── .../line1.bridge     per [connectors.<name>], its sink bridge (if it has
//! │   │                        `subscribe`), then its
//! │   └── .../line1            connector actor, driving its plugin
//! ├── <node>/watchdog          task: pings every component's probes
//! └── <node>/control           task: serves every component's bus control verbs
//! ```
//!
//! Each component's children come in the order of [`BUILTIN`], then the node's own services.
//! The broker starts first and stops last, so producers always have somewhere to publish and
//! their last events are flushed to the disk queue at shutdown.

pub mod broker;
pub mod connectors;

use millwright_kernel::supervisor::{BackoffPolicy, RestartIntensity, Strategy, SupervisorSpec};

pub use broker::{BROKER, BrokerComponent, broker_id, broker_options};
pub use connectors::{CONNECTORS, ConnectorsComponent, connector_id};

use crate::component::{BuildContext, Component};
use crate::config::SupervisionConfig;
use crate::{control, watchdog};

/// Every kind of component, in start order (they stop in the reverse order).
pub const BUILTIN: &[&dyn Component] = &[&BrokerComponent, &ConnectorsComponent];

/// The child id of the watchdog task.
pub const WATCHDOG: &str = "watchdog";
/// The child id of the control task.
pub const CONTROL: &str = "control";

/// The root supervisor's registry name: the node's name.
pub fn root_name(node: &str) -> String {
    node.to_owned()
}

/// The root supervisor's spec: one_for_one over every [`BUILTIN`] component's children, then
/// the watchdog over all their probes and the control verbs of all of them.
pub fn root_spec(ctx: &BuildContext) -> SupervisorSpec {
    let mut spec = policy(
        SupervisorSpec::new(Strategy::OneForOne),
        &ctx.config.supervision,
    );
    for component in BUILTIN {
        for child in component.child_specs(ctx) {
            spec = spec.child(child);
        }
    }
    let probes: Vec<watchdog::Probe> = BUILTIN.iter().flat_map(|c| c.probes(ctx)).collect();
    let verbs: Vec<crate::component::ControlVerb> =
        BUILTIN.iter().flat_map(|c| c.verbs(ctx)).collect();
    spec.child(watchdog::child_spec(
        WATCHDOG,
        ctx.board.clone(),
        probes,
        ctx.config.watchdog.clone(),
    ))
    .child(control::child_spec(
        CONTROL,
        ctx.bus.clone(),
        ctx.scheme.clone(),
        ctx.node().to_owned(),
        verbs,
    ))
}

/// Applies `[supervision]` to a supervisor spec.
pub(crate) fn policy(spec: SupervisorSpec, s: &SupervisionConfig) -> SupervisorSpec {
    spec.intensity(RestartIntensity::new(s.max_restarts, s.max_window))
        .backoff(BackoffPolicy {
            min: s.min_backoff,
            max: s.max_backoff,
            ..BackoffPolicy::default()
        })
}
