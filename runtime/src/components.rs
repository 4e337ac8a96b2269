//! The one explicit list of built-in components a node runs, and how each is built from the
//! config. No linker magic: a new component kind is one more entry in [`BUILTIN`].
//!
//! The supervision tree (ids are the registry names and the status-board ids):
//!
//! ```text
//! <node>                       root supervisor, one_for_one
//! ├── <node>/broker            the broker actor (every publish goes through it)
//! ├── <node>/connectors        supervisor, one_for_one: one connector actor per
//! │   └── <node>/connectors/line1   [connectors.<name>], each driving its plugin
//! └── <node>/sims              supervisor, one_for_one, permanent workers
//!     ├── <node>/sims/press1   sim actor
//!     └── ...
//! ```
//!
//! The broker starts first and stops last, so producers always have somewhere to publish and
//! their last events are flushed to the disk queue at shutdown. Later issues add connectors
//! and machine monitors under the root, here.

use std::sync::Arc;
use std::time::Duration;

use millwright_broker::{
    Broker, BrokerArgs, BrokerHandle, BrokerOptions, DeliveryMode, Intake, StreamSpec,
};
use millwright_bus::{Bus, SubjectScheme};
use millwright_connect::{ConnectorActor, ConnectorArgs, ConnectorSpec};
use millwright_kernel::lifecycle::StatusBoard;
use millwright_kernel::supervisor::{
    BackoffPolicy, ChildSpec, RestartIntensity, RestartType, Strategy, SupervisorSpec, child_name,
};
use millwright_plugin_sdk::circuit_breaker::BreakerConfig;
use millwright_storage::disk_queue::DiskQueueOptions;
use ractor::Actor;

use crate::config::{BrokerMode, Config, SupervisionConfig};

/// What every component builder gets.
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
    /// The broker's options (from `[broker]`, see [`broker_options`]).
    pub broker_options: BrokerOptions,
    /// Producers' handle on the broker.
    pub broker: BrokerHandle,
    /// The broker's intake, shared by its incarnations.
    pub intake: Arc<Intake>,
    /// The connectors, with their plugins loaded and checked ([`crate::plugins::prepare`]).
    pub connectors: Arc<Vec<crate::plugins::PreparedConnector>>,
}

/// A built-in component: its child id under the root and how to build its child spec.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// The child id under the root supervisor.
    pub id: &'static str,
    /// What it is, for docs and logs.
    pub description: &'static str,
    /// Builds its child spec.
    pub build: fn(&BuildContext) -> ChildSpec,
}

/// Every built-in component, in start order (they stop in the reverse order).
pub const BUILTIN: &[Component] = &[
    Component {
        id: BROKER,
        description: "the broker: every publish, the disk queue and the DLQ ([broker])",
        build: broker,
    },
    Component {
        id: CONNECTORS,
        description: "connector instances run from plugins ([connectors.<name>])",
        build: connectors,
    },
];

/// The child id of the connectors supervisor.
pub const CONNECTORS: &str = "connectors";

/// The `connectors` supervisor: one permanent connector actor per `[connectors.<name>]`.
fn connectors(ctx: &BuildContext) -> ChildSpec {
    let spec = ctx.connectors.iter().fold(
        policy(
            SupervisorSpec::new(Strategy::OneForOne),
            &ctx.config.supervision,
        ),
        |spec, c| spec.child(connector_child(ctx, c)),
    );
    ChildSpec::supervisor(CONNECTORS, spec)
}

fn connector_child(ctx: &BuildContext, c: &crate::plugins::PreparedConnector) -> ChildSpec {
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

/// The child id of the broker.
pub const BROKER: &str = "broker";

/// The broker's status-board id and registry name.
pub fn broker_id(node: &str) -> String {
    format!("{}/{BROKER}", root_name(node))
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

/// The broker worker.
fn broker(ctx: &BuildContext) -> ChildSpec {
    let args = BrokerArgs {
        options: ctx.broker_options.clone(),
        intake: ctx.intake.clone(),
        bus: ctx.bus.clone(),
        board: ctx.board.clone(),
        component_id: broker_id(&ctx.config.node.name),
    };
    ChildSpec::worker(BROKER, move |supervisor| {
        let args = args.clone();
        Box::pin(async move {
            let id = args.component_id.clone();
            let (broker, _) = Actor::spawn_linked(Some(id), Broker, args, supervisor).await?;
            Ok(broker.get_cell())
        })
    })
}

/// The root supervisor's registry name: the node's name.
pub fn root_name(node: &str) -> String {
    node.to_owned()
}

/// The registry name and status-board id of connector instance `instance`.
pub fn connector_id(node: &str, instance: &str) -> String {
    format!("{}/{CONNECTORS}/{instance}", root_name(node))
}

/// The root supervisor's spec: one_for_one over every [`BUILTIN`] component.
pub fn root_spec(ctx: &BuildContext) -> SupervisorSpec {
    BUILTIN.iter().fold(
        policy(
            SupervisorSpec::new(Strategy::OneForOne),
            &ctx.config.supervision,
        ),
        |spec, c| spec.child((c.build)(ctx)),
    )
}

/// Applies `[supervision]` to a supervisor spec.
fn policy(spec: SupervisorSpec, s: &SupervisionConfig) -> SupervisorSpec {
    spec.intensity(RestartIntensity::new(s.max_restarts, s.max_window))
        .backoff(BackoffPolicy {
            min: s.min_backoff,
            max: s.max_backoff,
            ..BackoffPolicy::default()
        })
}
