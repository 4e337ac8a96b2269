//! What a supervisor supervises: child specs, restart types, shutdown policies, strategies.
//!
//! A [`SupervisorSpec`] is plain data (cheap to clone): the strategy, the restart intensity
//! and whose restarts it counts, the backoff policy and the ordered list of [`ChildSpec`]s. A child spec says how to start
//! the child (a start function for a worker, or a nested [`SupervisorSpec`]), when to restart
//! it ([`RestartType`]) and how to stop it ([`Shutdown`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, SpawnErr};

use super::backoff::BackoffPolicy;
use super::intensity::{IntensityScope, RestartIntensity};
use super::task::{TaskActor, TaskLoop, TaskSetup};

/// How long a worker gets to stop gracefully before it is killed, unless its spec says otherwise.
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);

/// When a child that exited is restarted (OTP's `restart` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartType {
    /// Always restarted, whatever the exit.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit: a failure (panic or `Err`) or a kill. A normal
    /// stop (`myself.stop(..)`, a drained mailbox) is final.
    Transient,
    /// Never restarted; a sibling's restart under `one_for_all`/`rest_for_one` stops it for good.
    Temporary,
}

/// How a supervisor stops a child (OTP's `shutdown` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// Ask the child to stop, wait up to this long for `post_stop` to finish, then kill it.
    Timeout(Duration),
    /// Kill the child at once: its `post_stop` does not run.
    BrutalKill,
    /// Ask the child to stop and wait as long as it takes (the default for supervisors,
    /// which bound their own children's shutdown).
    Infinity,
}

/// Which children a failure takes down with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Only the failed child is restarted.
    #[default]
    OneForOne,
    /// Every child is stopped (in reverse start order) and all are restarted (in start order).
    OneForAll,
    /// The failed child and the children started after it are stopped (in reverse order) and
    /// restarted (in start order); earlier siblings keep running.
    RestForOne,
}

/// Starts one incarnation of a worker. It receives the supervisor's cell and must spawn the
/// child *linked* under it (`Actor::spawn_linked(.., supervisor)`), preferably under the name
/// [`child_name`](super::child_name)`(&supervisor, id)` so it keeps a stable identity.
pub type StartFn =
    dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync;

/// How a child is started.
#[derive(Clone)]
pub(crate) enum ChildKind {
    /// A worker, started by a user function.
    Worker(Arc<StartFn>),
    /// A nested supervisor, spawned by the parent under `<parent>/<id>`.
    Supervisor(SupervisorSpec),
}

/// One supervised child: its id, how to start it, when to restart it and how to stop it.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: String,
    pub(crate) kind: ChildKind,
    pub(crate) restart: RestartType,
    pub(crate) shutdown: Shutdown,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ChildKind::Worker(_) => "worker",
            ChildKind::Supervisor(_) => "supervisor",
        };
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("kind", &kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl ChildSpec {
    /// A permanent worker with a 5 s shutdown timeout, started by `start`.
    ///
    /// `id` is the child's stable identity under its supervisor: it must be non-empty, must not
    /// contain `/` and must be unique among its siblings (checked when the supervisor starts).
    pub fn worker<F>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync + 'static,
    {
        Self {
            id: id.into(),
            kind: ChildKind::Worker(Arc::new(start)),
            restart: RestartType::Permanent,
            shutdown: Shutdown::Timeout(DEFAULT_WORKER_SHUTDOWN),
        }
    }

    /// A permanent worker running the ractor actor that `make` builds (handler and arguments,
    /// once per incarnation), spawned linked under the supervisor with the stable name
    /// [`child_name`]`(supervisor, id)`. The usual way to supervise an actor.
    pub fn actor<A, F>(id: impl Into<String>, make: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let id = id.into();
        let child_id = id.clone();
        Self::worker(id, move |supervisor| {
            let (handler, args) = make();
            let name = child_name(&supervisor, &child_id);
            Box::pin(async move {
                let (actor, _) = A::spawn_linked(Some(name), handler, args, supervisor).await?;
                Ok(actor.get_cell())
            })
        })
    }

    /// A transient worker that runs an async loop under supervision (see [`super::task`]):
    /// `setup` runs at each start (its subscriptions exist before the next sibling starts)
    /// and returns the loop; a loop that fails is restarted like any child, one that ends
    /// with `Ok` is done.
    pub fn task<F>(id: impl Into<String>, setup: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<TaskLoop, String>> + Send + Sync + 'static,
    {
        let setup: Arc<TaskSetup> = Arc::new(setup);
        Self::actor(id, move || (TaskActor, setup.clone())).restart(RestartType::Transient)
    }

    /// A permanent nested supervisor with an unbounded shutdown ([`Shutdown::Infinity`]).
    /// The parent spawns it under the name `<parent name>/<id>`.
    pub fn supervisor(id: impl Into<String>, spec: SupervisorSpec) -> Self {
        Self {
            id: id.into(),
            kind: ChildKind::Supervisor(spec),
            restart: RestartType::Permanent,
            shutdown: Shutdown::Infinity,
        }
    }

    /// Sets the restart type.
    #[must_use]
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown policy.
    #[must_use]
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The child's id among its siblings.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The restart type.
    pub fn restart_type(&self) -> RestartType {
        self.restart
    }

    /// The shutdown policy.
    pub fn shutdown_policy(&self) -> Shutdown {
        self.shutdown
    }

    /// Whether this child is a nested supervisor.
    pub fn is_supervisor(&self) -> bool {
        matches!(self.kind, ChildKind::Supervisor(_))
    }
}

/// Everything a supervisor needs to know: how it reacts to failures and whom it supervises.
#[derive(Debug, Clone, Default)]
pub struct SupervisorSpec {
    /// Which siblings a failure takes down.
    pub strategy: Strategy,
    /// How many restarts in what window before the supervisor gives up and escalates.
    pub intensity: RestartIntensity,
    /// Whose restarts `intensity` counts: all children together (the default, OTP's rule) or
    /// each child on its own.
    pub intensity_scope: IntensityScope,
    /// The delay before each restart.
    pub backoff: BackoffPolicy,
    /// The children, in start order (they stop in the reverse order).
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A spec with `strategy`, default intensity and backoff, and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// Appends a child (children start in the order they are added).
    #[must_use]
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Sets the restart intensity.
    #[must_use]
    pub fn intensity(mut self, intensity: RestartIntensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Sets whose restarts the intensity counts.
    #[must_use]
    pub fn intensity_scope(mut self, scope: IntensityScope) -> Self {
        self.intensity_scope = scope;
        self
    }

    /// Counts the intensity for each child on its own ([`IntensityScope::PerChild`]): for a
    /// supervisor of many independent instances, where unrelated crashes must not add up.
    #[must_use]
    pub fn intensity_per_child(self) -> Self {
        self.intensity_scope(IntensityScope::PerChild)
    }

    /// Sets the backoff policy.
    #[must_use]
    pub fn backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.backoff = backoff;
        self
    }
}

/// The stable registry name (and StatusBoard id) of child `child_id` of `supervisor`:
/// `"<supervisor name>/<child id>"`. Start functions spawn the child under this name so that
/// every incarnation is found again with `ractor::registry::where_is`. Supervisors are always
/// named; for an unnamed cell the actor id stands in.
pub fn child_name(supervisor: &ActorCell, child_id: &str) -> String {
    match supervisor.get_name() {
        Some(name) => format!("{name}/{child_id}"),
        None => format!("{}/{child_id}", supervisor.get_id()),
    }
}

/// Why a child id is not acceptable.
pub(crate) fn check_child_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("is empty")
    } else if id.contains('/') {
        Err("contains '/' (ids are joined with '/' into registry names)")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> ChildSpec {
        ChildSpec::worker("w", |_sup| {
            Box::pin(async { Err(SpawnErr::StartupFailed("not used".into())) })
        })
    }

    #[test]
    fn workers_default_to_permanent_with_five_second_shutdown() {
        let w = noop();
        assert_eq!(w.restart_type(), RestartType::Permanent);
        assert_eq!(
            w.shutdown_policy(),
            Shutdown::Timeout(Duration::from_secs(5))
        );
        assert!(!w.is_supervisor());
    }

    #[test]
    fn supervisors_default_to_unbounded_shutdown() {
        let s = ChildSpec::supervisor("s", SupervisorSpec::default());
        assert_eq!(s.shutdown_policy(), Shutdown::Infinity);
        assert_eq!(s.restart_type(), RestartType::Permanent);
        assert!(s.is_supervisor());
    }

    #[test]
    fn builder_methods_override_defaults() {
        let w = noop()
            .restart(RestartType::Transient)
            .shutdown(Shutdown::BrutalKill);
        assert_eq!(w.restart_type(), RestartType::Transient);
        assert_eq!(w.shutdown_policy(), Shutdown::BrutalKill);
        assert!(format!("{w:?}").contains("worker"));
    }

    #[test]
    fn child_ids_must_be_non_empty_and_slash_free() {
        assert!(check_child_id("press1").is_ok());
        assert!(check_child_id("").is_err());
        assert!(check_child_id("a/b").is_err());
    }
}
