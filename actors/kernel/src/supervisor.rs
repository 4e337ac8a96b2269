//! OTP-style supervision on ractor: child specs, strategies, restart intensity, backoff.
//!
//! ractor links actors and reports [`SupervisionEvent`]s, but has no restart policy (its default
//! `handle_supervisor_evt` even stops the parent when any child exits). A [`Supervisor`] is a
//! ractor actor that adds Erlang/OTP's rules on top:
//!
//! - **Child specs** ([`ChildSpec`]): a restart type ([`RestartType`]: `permanent`, `transient`
//!   — restarted only after an abnormal exit, a kill counting as abnormal — or `temporary`)
//!   and a shutdown policy ([`Shutdown`]: a timeout after which the child is killed, 5 s for
//!   workers by default; `brutal_kill`; or `infinity`, the default for supervisors).
//! - **Strategies** ([`Strategy`]): `one_for_one`, `one_for_all`, `rest_for_one`. Children start
//!   in spec order (each one's `pre_start` has finished before the next one starts) and stop in
//!   the reverse order.
//! - **Restart intensity** ([`RestartIntensity`], default 3 restarts in 5 s): past it the
//!   supervisor stops its children (in reverse order, honouring their shutdown policies) and
//!   fails, escalating to its own supervisor. A restart whose start fails (the start function
//!   or the child's `pre_start` returns an error) counts as one more restart. The restarts are
//!   counted over all children (OTP) or, with [`IntensityScope::PerChild`], for each child on
//!   its own (a supervisor of thousands of independent instances).
//! - **Backoff** ([`BackoffPolicy`]): the `n`-th consecutive restart of a child waits
//!   `min(max, min_backoff * 2^n) * (1 + jitter)`, a fresh random jitter for each restart of
//!   each child (so children that crash together are not restarted together); a child that
//!   ran for `reset_after` starts again from `n = 0`. The wait is a timer message: the supervisor keeps answering its
//!   mailbox meanwhile.
//! - **Stable identity**: a child is registered under `"<supervisor name>/<child id>"`
//!   (see [`child_name`]) in every incarnation, so `ractor::registry::where_is` finds it again
//!   after a restart; the same string is its id on the [`StatusBoard`].
//! - **Observability**: every restart is logged (`tracing`), counted in
//!   `mw_supervisor_restarts_total{supervisor, child}` and recorded on the [`StatusBoard`]
//!   (`record_restart`), which the health endpoint shows.
//! - **Orderly shutdown**: [`SupervisorMsg::Shutdown`] (or a ractor `stop` from the parent)
//!   stops the children one by one in reverse order with their shutdown policies before the
//!   supervisor itself stops. A ractor *kill* skips all that and kills the whole subtree.
//!
//! Events from an older incarnation of a child (a termination that arrives after the child was
//! already stopped and restarted) are recognised by their `ActorId` and ignored. The rules are
//! written up for operators and plugin authors in `docs/runtime-semantics.md`.

mod backoff;
mod exit;
mod intensity;
mod spec;
pub mod task;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::time::Instant;

pub use backoff::{BackoffPolicy, human};
pub use exit::ExitKind;
pub use intensity::{IntensityScope, RestartIntensity};
pub use spec::{
    ChildSpec, DEFAULT_WORKER_SHUTDOWN, RestartType, Shutdown, StartFn, Strategy, SupervisorSpec,
    child_name,
};

use crate::lifecycle::{Event, Lifecycle, State, StatusBoard};
use crate::reach::{self, ReachError};
use intensity::{IntensityTracker, RestartWindow};
use spec::ChildKind;

/// How long a killed child may take to be gone before the supervisor moves on without it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Why a supervisor refused a request or gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// More than `max_restarts` restarts happened within `window`: the supervisor stopped its
    /// children and failed, leaving the decision to its own supervisor.
    #[error(
        "supervisor {supervisor}: restart intensity exceeded (more than {max_restarts} restarts {scope} in {window:?}); last: child {child} {exit}"
    )]
    IntensityExceeded {
        /// The supervisor's name.
        supervisor: String,
        /// The configured limit.
        max_restarts: u32,
        /// The configured window.
        window: Duration,
        /// Whose restarts were counted.
        scope: IntensityScope,
        /// The child whose exit (or failed restart) broke the limit.
        child: String,
        /// How that child exited.
        exit: ExitKind,
    },
    /// A child failed to start (at supervisor start, or when added with `StartChild`).
    #[error("supervisor {supervisor}: child {child} failed to start")]
    StartFailed {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What ractor or the start function reported.
        #[source]
        source: SpawnErr,
    },
    /// A child id is empty or contains `/`.
    #[error("supervisor {supervisor}: child id {child:?} {problem}")]
    InvalidChildId {
        /// The supervisor's name.
        supervisor: String,
        /// The rejected id.
        child: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Two children share an id.
    #[error(
        "supervisor {supervisor}: a child with id {child:?} already exists (ids must be unique)"
    )]
    DuplicateChild {
        /// The supervisor's name.
        supervisor: String,
        /// The duplicated id.
        child: String,
    },
    /// No child has this id.
    #[error("supervisor {supervisor}: no child with id {child:?}")]
    UnknownChild {
        /// The supervisor's name.
        supervisor: String,
        /// The id asked for.
        child: String,
    },
    /// The supervisor did not answer: it is stopped, stopping, or the call timed out.
    #[error("supervisor {0}")]
    Unreachable(#[from] ReachError),
}

/// A restart timer's token; only the supervisor makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartDue(u64);

/// What a [`Supervisor`] understands.
#[derive(Debug)]
#[non_exhaustive]
pub enum SupervisorMsg {
    /// Stop every child in reverse start order, each with its [`Shutdown`] policy, then stop
    /// the supervisor. The reply comes once every child has stopped.
    Shutdown(RpcReplyPort<()>),
    /// The children, in start order.
    Children(RpcReplyPort<Vec<ChildInfo>>),
    /// Appends a child and starts it. Fails when the id is taken or the start fails (the child
    /// is then not kept).
    StartChild(ChildSpec, RpcReplyPort<Result<(), SupervisorError>>),
    /// Stops a child with its [`Shutdown`] policy and forgets its spec.
    StopChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// A delayed restart is due (sent by the supervisor to itself).
    Restart(RestartDue),
    /// The node is shutting down: restart nothing from now on (pending restarts are
    /// cancelled), here and in every nested supervisor, then reply. Children keep running
    /// until they are stopped.
    Quiesce(RpcReplyPort<()>),
}

/// What a supervisor reports about one child.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// The child's id among its siblings.
    pub id: String,
    /// Its stable registry name and StatusBoard id: `<supervisor name>/<id>`.
    pub name: String,
    /// How many times it was restarted (each attempt counts, including failed starts).
    pub restarts: u32,
    /// Whether an incarnation is running now.
    pub running: bool,
    /// Whether a restart is scheduled (waiting for its backoff delay).
    pub restart_pending: bool,
    /// The running incarnation.
    pub actor: Option<ActorCell>,
    /// Its restart type.
    pub restart: RestartType,
    /// How its last incarnation ended, if one did.
    pub last_exit: Option<ExitKind>,
}

/// The supervisor actor. Spawn it with [`Supervisor::spawn`] or [`Supervisor::spawn_linked`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

/// The arguments a supervisor starts with (built by [`Supervisor::spawn`]).
#[derive(Debug)]
pub struct SupervisorArgs {
    name: String,
    spec: SupervisorSpec,
    board: StatusBoard,
}

/// Where a child is in its life.
#[derive(Debug)]
enum ChildStatus {
    /// An incarnation is running.
    Running(ActorCell),
    /// Waiting for the restart with this token; `reason` goes on the board when it happens.
    Pending { token: u64, reason: String },
    /// Not running and not to be restarted (a temporary child, a transient child that exited
    /// normally, or a supervisor that is shutting down).
    Done,
}

#[derive(Debug)]
struct Child {
    spec: ChildSpec,
    /// `<supervisor>/<id>`.
    name: String,
    status: ChildStatus,
    restarts: u32,
    /// Consecutive restarts since the last stable period (the backoff exponent).
    consecutive: u32,
    started_at: Option<Instant>,
    last_exit: Option<ExitKind>,
    /// Its recent restarts, when the intensity is counted per child (empty otherwise).
    window: RestartWindow,
}

impl Child {
    fn new(supervisor: &str, spec: ChildSpec) -> Self {
        Child {
            name: format!("{supervisor}/{}", spec.id),
            spec,
            status: ChildStatus::Done,
            restarts: 0,
            consecutive: 0,
            started_at: None,
            last_exit: None,
            window: RestartWindow::default(),
        }
    }

    fn cell(&self) -> Option<&ActorCell> {
        match &self.status {
            ChildStatus::Running(cell) => Some(cell),
            _ => None,
        }
    }

    /// Running or waiting for a restart: what a sibling's restart takes along.
    fn is_active(&self) -> bool {
        !matches!(self.status, ChildStatus::Done)
    }

    fn info(&self) -> ChildInfo {
        ChildInfo {
            id: self.spec.id.clone(),
            name: self.name.clone(),
            restarts: self.restarts,
            running: self.cell().is_some(),
            restart_pending: matches!(self.status, ChildStatus::Pending { .. }),
            actor: self.cell().cloned(),
            restart: self.spec.restart,
            last_exit: self.last_exit.clone(),
        }
    }
}

type Timer = JoinHandle<Result<(), MessagingErr<SupervisorMsg>>>;

/// A supervisor's state (opaque).
#[derive(Debug)]
pub struct SupervisorState {
    name: String,
    strategy: Strategy,
    backoff: BackoffPolicy,
    intensity: IntensityTracker,
    children: Vec<Child>,
    board: StatusBoard,
    next_token: u64,
    timers: HashMap<u64, Timer>,
    shutdown_replies: Vec<RpcReplyPort<()>>,
    shutting_down: bool,
    /// Restarts nothing any more (the node is shutting down).
    quiesced: bool,
    /// Its own entry on the board (set in `pre_start`).
    lifecycle: Option<Lifecycle>,
}

impl Supervisor {
    /// Spawns a top-level supervisor registered as `name`, and starts its children in order.
    ///
    /// # Errors
    /// [`SpawnErr::ActorAlreadyRegistered`] when `name` is taken; [`SpawnErr::StartupFailed`]
    /// (wrapping a [`SupervisorError`]) when a child id is invalid or duplicated, or a child fails
    /// to start — the children already started are then stopped in reverse order.
    ///
    /// # Panics
    /// Never.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future while children are starting leaves the supervisor
    /// half-built until ractor cleans it up (the children are killed, not stopped in order).
    pub async fn spawn(
        name: String,
        spec: SupervisorSpec,
        board: StatusBoard,
    ) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), SpawnErr> {
        let args = SupervisorArgs {
            name: name.clone(),
            spec,
            board,
        };
        <Self as Actor>::spawn(Some(name), Supervisor, args).await
    }

    /// Like [`spawn`](Self::spawn), linked under `parent`, which receives the supervisor's
    /// exit (an escalation arrives as a failure whose error is a [`SupervisorError`]).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    /// Never.
    ///
    /// # Cancel safety
    /// As [`spawn`](Self::spawn).
    pub async fn spawn_linked(
        name: String,
        spec: SupervisorSpec,
        board: StatusBoard,
        parent: ActorCell,
    ) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), SpawnErr> {
        let args = SupervisorArgs {
            name: name.clone(),
            spec,
            board,
        };
        <Self as Actor>::spawn_linked(Some(name), Supervisor, args, parent).await
    }
}

/// Asks `supervisor` for an orderly shutdown and waits until its children have stopped.
///
/// # Errors
/// [`SupervisorError::Unreachable`] when the supervisor is already gone.
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe: the shutdown, once asked for, goes on without the caller.
pub async fn shutdown(supervisor: &ActorRef<SupervisorMsg>) -> Result<(), SupervisorError> {
    call(supervisor, SupervisorMsg::Shutdown, None).await
}

/// Tells `supervisor` and every supervisor below it to restart nothing from now on (the
/// node's shutdown calls it before it stops anything), and waits until they all have.
///
/// # Errors
/// [`SupervisorError::Unreachable`] when the supervisor is gone.
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe: the supervisors quiesce whether or not the caller waits.
pub async fn quiesce(supervisor: &ActorRef<SupervisorMsg>) -> Result<(), SupervisorError> {
    call(supervisor, SupervisorMsg::Quiesce, None).await
}

/// The children of `supervisor`, in start order.
///
/// # Errors
/// [`SupervisorError::Unreachable`] when the supervisor is gone or does not answer in `timeout`.
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe.
pub async fn children(
    supervisor: &ActorRef<SupervisorMsg>,
    timeout: Option<Duration>,
) -> Result<Vec<ChildInfo>, SupervisorError> {
    call(supervisor, SupervisorMsg::Children, timeout).await
}

/// Adds `child` to `supervisor` (after its current children) and starts it.
///
/// # Errors
/// The supervisor's refusal ([`SupervisorError::DuplicateChild`],
/// [`SupervisorError::InvalidChildId`], [`SupervisorError::StartFailed`]), or
/// [`SupervisorError::Unreachable`].
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe: the child is added (or not) whether or not the caller waits.
pub async fn start_child(
    supervisor: &ActorRef<SupervisorMsg>,
    child: ChildSpec,
) -> Result<(), SupervisorError> {
    call(
        supervisor,
        |reply| SupervisorMsg::StartChild(child, reply),
        None,
    )
    .await?
}

/// Stops the child `id` of `supervisor` with its shutdown policy and removes its spec.
///
/// # Errors
/// [`SupervisorError::UnknownChild`], or [`SupervisorError::Unreachable`].
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe: the child is stopped whether or not the caller waits.
pub async fn stop_child(
    supervisor: &ActorRef<SupervisorMsg>,
    id: &str,
) -> Result<(), SupervisorError> {
    let id = id.to_owned();
    call(
        supervisor,
        |reply| SupervisorMsg::StopChild(id, reply),
        None,
    )
    .await?
}

async fn call<R: Send + 'static>(
    supervisor: &ActorRef<SupervisorMsg>,
    build: impl FnOnce(RpcReplyPort<R>) -> SupervisorMsg,
    timeout: Option<Duration>,
) -> Result<R, SupervisorError> {
    Ok(reach::call_ref(supervisor, timeout, build).await?)
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let SupervisorArgs { name, spec, board } = args;
        let mut state = SupervisorState {
            intensity: IntensityTracker::new(spec.intensity, spec.intensity_scope),
            strategy: spec.strategy,
            backoff: spec.backoff,
            children: Vec::with_capacity(spec.children.len()),
            board,
            next_token: 0,
            timers: HashMap::new(),
            shutdown_replies: Vec::new(),
            shutting_down: false,
            quiesced: false,
            lifecycle: None,
            name,
        };
        for child in spec.children {
            state.check_new_child(&child)?;
            state.children.push(Child::new(&state.name, child));
        }
        state.board.register_composite(&state.name, "supervisor");
        state.lifecycle = Some(Lifecycle::begin(
            &state.board,
            &state.name,
            "supervisor",
            crate::lifecycle::DEFAULT_IDLE_WINDOW,
        ));
        state.own(Event::Start);
        let cell = myself.get_cell();
        for i in 0..state.children.len() {
            if let Err(source) = state.start_child(&cell, i).await {
                let err = SupervisorError::StartFailed {
                    supervisor: state.name.clone(),
                    child: state.children[i].spec.id.clone(),
                    source,
                };
                tracing::error!(supervisor = %state.name, error = %err, "supervisor failed to start");
                state.stop_all("supervisor failed to start").await;
                state.own(Event::StartFailed(err.to_string()));
                state.board.record_error(&state.name, err.to_string());
                return Err(err.into());
            }
        }
        state.own(Event::StartDone);
        tracing::debug!(supervisor = %state.name, children = state.children.len(), "supervisor started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // After an escalation it is already stopped.
        let running = state.own_state().is_some_and(|s| s.is_running());
        if running {
            state.own(Event::Stop);
        }
        state.stop_all("supervisor shutdown").await;
        if running {
            state.own(Event::StopDone);
        }
        tracing::debug!(supervisor = %state.name, "supervisor stopped");
        for reply in state.shutdown_replies.drain(..) {
            let _ = reply.send(());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Shutdown(reply) => {
                // post_stop does the orderly stop and answers.
                state.shutting_down = true;
                state.shutdown_replies.push(reply);
                myself.stop(Some("shutdown".to_owned()));
            }
            SupervisorMsg::Children(reply) => {
                let _ = reply.send(state.children.iter().map(Child::info).collect());
            }
            SupervisorMsg::StartChild(spec, reply) => {
                let result = state.add_child(&myself.get_cell(), spec).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::StopChild(id, reply) => {
                let result = state.remove_child(&id).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Restart(RestartDue(token)) => {
                state.timers.remove(&token);
                if !state.shutting_down && !state.quiesced {
                    state.restart_loop(&myself, token, Duration::ZERO).await?;
                }
            }
            SupervisorMsg::Quiesce(reply) => {
                state.quiesce().await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Never ractor's default (which stops the supervisor on any child exit).
        let Some((id, exit)) = ExitKind::from_event(&event) else {
            return Ok(());
        };
        match state.running_index(id) {
            Some(i) => state.on_child_exit(&myself, i, exit).await,
            None => {
                tracing::trace!(supervisor = %state.name, actor = %id, %exit, "ignoring exit of a stale or unknown actor");
                Ok(())
            }
        }
    }
}

impl SupervisorState {
    /// Restarts nothing from now on, here and below; cancels pending restarts.
    async fn quiesce(&mut self) {
        self.quiesced = true;
        for (_, timer) in self.timers.drain() {
            timer.abort();
        }
        for child in &mut self.children {
            if matches!(child.status, ChildStatus::Pending { .. }) {
                child.status = ChildStatus::Done;
            }
        }
        for child in &self.children {
            if let (ChildKind::Supervisor(_), Some(cell)) = (&child.spec.kind, child.cell()) {
                let nested: ActorRef<SupervisorMsg> = cell.clone().into();
                if let Err(e) = quiesce(&nested).await {
                    tracing::warn!(supervisor = %child.name, error = %e, "could not quiesce");
                }
            }
        }
        tracing::info!(supervisor = %self.name, "quiesced: no more restarts");
    }

    /// Applies `event` to its own state through the board's table.
    fn own(&mut self, event: Event) {
        if let Some(lifecycle) = &mut self.lifecycle {
            let _ = lifecycle.apply(event);
        }
    }

    /// Its own FSM state.
    fn own_state(&self) -> Option<&State> {
        self.lifecycle.as_ref().map(Lifecycle::state)
    }

    fn check_new_child(&self, child: &ChildSpec) -> Result<(), SupervisorError> {
        if let Err(problem) = spec::check_child_id(&child.id) {
            return Err(SupervisorError::InvalidChildId {
                supervisor: self.name.clone(),
                child: child.id.clone(),
                problem,
            });
        }
        if self.children.iter().any(|c| c.spec.id == child.id) {
            return Err(SupervisorError::DuplicateChild {
                supervisor: self.name.clone(),
                child: child.id.clone(),
            });
        }
        Ok(())
    }

    fn running_index(&self, id: ActorId) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.cell().is_some_and(|cell| cell.get_id() == id))
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Starts one incarnation of child `i` and marks it running.
    async fn start_child(&mut self, myself: &ActorCell, i: usize) -> Result<(), SpawnErr> {
        let child = &self.children[i];
        let name = child.name.clone();
        let started = match &child.spec.kind {
            ChildKind::Worker(start) => {
                let start = start.clone();
                start(myself.clone()).await
            }
            ChildKind::Supervisor(spec) => Supervisor::spawn_linked(
                name.clone(),
                spec.clone(),
                self.board.clone(),
                myself.clone(),
            )
            .await
            .map(|(actor, _)| actor.get_cell()),
        };
        let cell = started?;
        let linked_here = cell
            .try_get_supervisor()
            .is_some_and(|s| s.get_id() == myself.get_id());
        if !linked_here {
            tracing::warn!(supervisor = %self.name, child = %name,
                "start function did not spawn the child linked to its supervisor; linking it now");
            cell.link(myself.clone());
        }
        if cell.get_name().as_deref() != Some(name.as_str()) {
            tracing::debug!(supervisor = %self.name, child = %name, actual = ?cell.get_name(),
                "child is not registered under its stable name");
        }
        let child = &mut self.children[i];
        child.status = ChildStatus::Running(cell);
        child.started_at = Some(Instant::now());
        Ok(())
    }

    /// The children a failure of child `i` takes down (including `i`), in start order.
    fn group(&self, i: usize) -> Vec<usize> {
        let active = |j: usize| j == i || self.children[j].is_active();
        match self.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..self.children.len()).filter(|&j| active(j)).collect(),
            Strategy::RestForOne => (i..self.children.len()).filter(|&j| active(j)).collect(),
        }
    }

    async fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        i: usize,
        exit: ExitKind,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let child = &mut self.children[i];
        child.status = ChildStatus::Done;
        child.last_exit = Some(exit.clone());
        if exit.is_abnormal()
            && self
                .board
                .get(&child.name)
                .is_some_and(|c| c.kind != "unknown")
        {
            // It could not record its own end.
            let _ = self.board.apply(&child.name, Event::Exited);
            self.board.record_error(&child.name, exit.to_string());
        }
        let restart = !self.shutting_down
            && !self.quiesced
            && match child.spec.restart {
                RestartType::Permanent => true,
                RestartType::Transient => exit.is_abnormal(),
                RestartType::Temporary => false,
            };
        if !restart {
            // Ended for good: its restart history is of no use any more.
            child.window.clear();
            tracing::info!(supervisor = %self.name, child = %child.spec.id, %exit,
                restart = ?child.spec.restart, "child exited; not restarting it");
            return Ok(());
        }
        if child
            .started_at
            .is_some_and(|t| now.saturating_duration_since(t) >= self.backoff.reset_after)
        {
            child.consecutive = 0;
        }
        tracing::warn!(supervisor = %self.name, child = %child.spec.id, %exit, "child exited; restarting it");
        if !self.intensity.record(&mut child.window, now) {
            return Err(self.escalate(i, exit).await.into());
        }
        let delay = self.backoff.delay(child.consecutive);
        child.consecutive = child.consecutive.saturating_add(1);

        let failed_id = child.spec.id.clone();
        let group = self.group(i);
        // Stop the running siblings of the group, latest first.
        for &j in group.iter().rev() {
            if j == i {
                continue;
            }
            if let Some(cell) = self.children[j].cell().cloned() {
                self.children[j].status = ChildStatus::Done;
                let reason = format!("restarting with sibling {failed_id}");
                terminate_child(&self.name, &self.children[j], &cell, &reason).await;
            }
        }
        let token = self.token();
        for &j in &group {
            let sibling = &mut self.children[j];
            if j != i && sibling.spec.restart == RestartType::Temporary {
                sibling.status = ChildStatus::Done;
                continue;
            }
            let reason = if j == i {
                exit.to_string()
            } else {
                format!("sibling {failed_id} {exit}")
            };
            sibling.status = ChildStatus::Pending { token, reason };
        }
        self.restart_loop(myself, token, delay).await
    }

    /// Restarts the children pending under `token` after `delay`: at once when it is zero,
    /// otherwise from a timer message. A failed start schedules its retry the same way, except
    /// that an immediate retry also goes through the mailbox, so a child that can never start
    /// does not starve the runtime or keep a `Shutdown` waiting.
    async fn restart_loop(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        token: u64,
        delay: Duration,
    ) -> Result<(), ActorProcessingErr> {
        if !delay.is_zero() {
            self.schedule(myself, token, delay);
            return Ok(());
        }
        match self.run_restart(&myself.get_cell(), token).await? {
            Some((next, next_delay)) => self.schedule(myself, next, next_delay),
            None => {
                let pending = self
                    .children
                    .iter()
                    .any(|c| matches!(c.status, ChildStatus::Pending { .. }));
                if !pending && matches!(self.own_state(), Some(State::Degraded { .. })) {
                    self.own(Event::Recovered);
                }
            }
        }
        Ok(())
    }

    /// Sends `Restart(token)` to the supervisor after `delay` (right away when zero).
    fn schedule(&mut self, myself: &ActorRef<SupervisorMsg>, token: u64, delay: Duration) {
        let first = self
            .children
            .iter()
            .find(|c| matches!(&c.status, ChildStatus::Pending { token: t, .. } if *t == token));
        if let Some(child) = first {
            tracing::info!(supervisor = %self.name, child = %child.spec.id, ?delay, "restart scheduled");
            let reason = format!("restarting child {} in {}", child.spec.id, human(delay));
            self.own(Event::Degrade {
                facet: None,
                reason,
            });
        }
        if delay.is_zero() {
            // Cannot fail while the supervisor runs: its own mailbox is open.
            let _ = myself.send_message(SupervisorMsg::Restart(RestartDue(token)));
        } else {
            let timer = myself.send_after(delay, move || SupervisorMsg::Restart(RestartDue(token)));
            self.timers.insert(token, timer);
        }
    }

    /// Starts, in order, the children pending under `token`. On a failed start, returns the
    /// retry to schedule (a new token and its delay).
    async fn run_restart(
        &mut self,
        myself: &ActorCell,
        token: u64,
    ) -> Result<Option<(u64, Duration)>, ActorProcessingErr> {
        let group: Vec<usize> = (0..self.children.len())
            .filter(|&j| {
                matches!(&self.children[j].status, ChildStatus::Pending { token: t, .. } if *t == token)
            })
            .collect();
        for (pos, &j) in group.iter().enumerate() {
            let child = &mut self.children[j];
            let reason = match std::mem::replace(&mut child.status, ChildStatus::Done) {
                ChildStatus::Pending { reason, .. } => reason,
                _ => String::new(),
            };
            child.restarts = child.restarts.saturating_add(1);
            self.board.record_restart(&child.name, &reason);
            metrics::counter!(
                "mw_supervisor_restarts_total",
                "supervisor" => self.name.clone(),
                "child" => child.spec.id.clone()
            )
            .increment(1);
            tracing::info!(supervisor = %self.name, child = %child.spec.id, restarts = child.restarts, %reason, "restarting child");

            let Err(err) = self.start_child(myself, j).await else {
                continue;
            };
            let exit = ExitKind::StartFailed(err.to_string());
            let child = &mut self.children[j];
            child.last_exit = Some(exit.clone());
            tracing::warn!(supervisor = %self.name, child = %child.spec.id, %exit, "restart failed");
            if !self.intensity.record(&mut child.window, Instant::now()) {
                return Err(self.escalate(j, exit).await.into());
            }
            let child = &mut self.children[j];
            let delay = self.backoff.delay(child.consecutive);
            child.consecutive = child.consecutive.saturating_add(1);
            let failed_id = child.spec.id.clone();
            let retry: Vec<usize> = if self.strategy == Strategy::OneForAll {
                // The whole group goes down and up together: undo this round's starts.
                for &k in group[..pos].iter().rev() {
                    if let Some(cell) = self.children[k].cell().cloned() {
                        self.children[k].status = ChildStatus::Done;
                        let reason = format!("restarting with sibling {failed_id}");
                        terminate_child(&self.name, &self.children[k], &cell, &reason).await;
                    }
                }
                group.clone()
            } else {
                group[pos..].to_vec()
            };
            let next = self.token();
            for k in retry {
                let reason = if k == j {
                    exit.to_string()
                } else {
                    format!("sibling {failed_id} {exit}")
                };
                self.children[k].status = ChildStatus::Pending {
                    token: next,
                    reason,
                };
            }
            return Ok(Some((next, delay)));
        }
        Ok(None)
    }

    /// Stops every child (latest first) and returns the error the supervisor fails with.
    async fn escalate(&mut self, i: usize, exit: ExitKind) -> SupervisorError {
        let limit = self.intensity.limit();
        let err = SupervisorError::IntensityExceeded {
            supervisor: self.name.clone(),
            max_restarts: limit.max_restarts,
            window: limit.window,
            scope: self.intensity.scope(),
            child: self.children[i].spec.id.clone(),
            exit,
        };
        tracing::error!(supervisor = %self.name, error = %err, "giving up: stopping children and escalating");
        self.shutting_down = true;
        self.own(Event::Stop);
        self.stop_all("supervisor escalating").await;
        self.own(Event::StopDone);
        self.board.record_error(&self.name, err.to_string());
        err
    }

    /// Stops every running child, latest first, each with its shutdown policy; cancels
    /// pending restarts.
    async fn stop_all(&mut self, reason: &str) {
        self.shutting_down = true;
        for (_, timer) in self.timers.drain() {
            timer.abort();
        }
        for j in (0..self.children.len()).rev() {
            let running = self.children[j].cell().cloned();
            self.children[j].status = ChildStatus::Done;
            if let Some(cell) = running {
                terminate_child(&self.name, &self.children[j], &cell, reason).await;
            }
        }
    }

    async fn add_child(
        &mut self,
        myself: &ActorCell,
        spec: ChildSpec,
    ) -> Result<(), SupervisorError> {
        self.check_new_child(&spec)?;
        let id = spec.id.clone();
        self.children.push(Child::new(&self.name, spec));
        let i = self.children.len() - 1;
        match self.start_child(myself, i).await {
            Ok(()) => {
                tracing::info!(supervisor = %self.name, child = %id, "child added");
                Ok(())
            }
            Err(source) => {
                self.children.pop();
                Err(SupervisorError::StartFailed {
                    supervisor: self.name.clone(),
                    child: id,
                    source,
                })
            }
        }
    }

    async fn remove_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let Some(i) = self.children.iter().position(|c| c.spec.id == id) else {
            return Err(SupervisorError::UnknownChild {
                supervisor: self.name.clone(),
                child: id.to_owned(),
            });
        };
        if let Some(cell) = self.children[i].cell().cloned() {
            self.children[i].status = ChildStatus::Done;
            terminate_child(&self.name, &self.children[i], &cell, "removed").await;
        }
        self.children.remove(i);
        tracing::info!(supervisor = %self.name, child = %id, "child removed");
        Ok(())
    }
}

/// Stops one incarnation with the child's shutdown policy and waits until it is gone.
async fn terminate_child(supervisor: &str, child: &Child, cell: &ActorCell, reason: &str) {
    let id = &child.spec.id;
    match child.spec.shutdown {
        Shutdown::BrutalKill => {
            cell.kill();
            wait_killed(supervisor, id, cell).await;
        }
        Shutdown::Timeout(limit) => {
            cell.stop(Some(reason.to_owned()));
            if cell.wait(Some(limit)).await.is_err() {
                tracing::warn!(supervisor, child = %id, ?limit, "child did not stop within its shutdown timeout; killing it");
                cell.kill();
                wait_killed(supervisor, id, cell).await;
            }
        }
        Shutdown::Infinity => {
            cell.stop(Some(reason.to_owned()));
            let _ = cell.wait(None).await;
        }
    }
    tracing::debug!(supervisor, child = %id, reason, "child stopped");
}

async fn wait_killed(supervisor: &str, id: &str, cell: &ActorCell) {
    if cell.wait(Some(KILL_WAIT)).await.is_err() {
        tracing::error!(supervisor, child = %id, "child still running {KILL_WAIT:?} after a kill (blocked thread?); moving on without it");
    }
}
