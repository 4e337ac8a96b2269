//! The actor test kit (cargo feature `testkit`): what every actor test needs, written once.
//!
//! - [`wait_until`] / [`wait_for`]: poll a condition with a deadline instead of sleeping;
//!   [`next_within`]: the next item of a stream, or `None` after a timeout.
//! - [`wait_state`]: poll the [`StatusBoard`] until a component shows a state.
//! - [`Tree`]: a real [`Supervisor`] (on a [`StatusBoard::recording`] board unless the test
//!   brings its own) with the handles a test needs; [`Tree::actor_under_test`] puts one actor
//!   under it and returns its [`ActorRef`]. [`children_of`], [`child_of`], [`wait_child`] and
//!   [`wait_restarted`] do the same for any supervisor of a tree (a nested one).
//! - [`drain`] (and [`try_drain`]): *drain then observe*, a call that returns once the actor
//!   has handled every message sent to it before the call ([`Tree::children`] is the
//!   supervisor's).
//! - [`run_paused`]: a current-thread runtime with paused time, for test bodies that are not
//!   `#[tokio::test]`s (proptest cases): backoffs, timeouts and idle windows elapse at once.
//!
//! # Drain then observe
//!
//! ractor delivers an actor's messages in the order they were sent, and handles supervision
//! events (a child's exit) before the next message. So the reply to a request sent after some
//! messages proves that the actor handled all of them (and every child exit it was told of
//! before the request): observe after it, never after a sleep. Any request-reply message an
//! actor already has serves as the drain point (the supervisor's `Children`, the broker's
//! `Stats`, the connector's `Ping`); an actor that has none adds a cheap query of its own
//! state. A test that waits for
//! something that happens *later* (a restart after its backoff, data from outside) polls with
//! [`wait_until`] instead.
//!
//! Timeouts here only cost time when a test fails: they are generous ([`PATIENCE`]) and the
//! helpers panic with what they last saw, so a failing test says why.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use ractor::concurrency::JoinHandle;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorRef, Message, RpcReplyPort};
use tokio::time::Instant;

use crate::lifecycle::{ComponentStatus, StatusBoard};
use crate::supervisor::{
    BackoffPolicy, ChildInfo, ChildSpec, RestartIntensity, Strategy, Supervisor, SupervisorMsg,
    SupervisorSpec, children, shutdown,
};

/// How long the kit's helpers wait before they fail a test: generous, since it only costs
/// time when the test fails (the CI machine has two loaded cores).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The longest pause between two polls. Polls start 1 ms apart and double up to this: fast
/// conditions are seen fast, slow ones do not burn a core. Under paused time the pauses
/// elapse at once.
const MAX_INTERVAL: Duration = Duration::from_millis(50);

/// A condition did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTimedOut {
    /// How long the caller waited.
    pub waited: Duration,
    /// How many times the condition was checked.
    pub polls: u32,
}

impl fmt::Display for WaitTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "condition still false after {:?} ({} checks)",
            self.waited, self.polls
        )
    }
}

impl std::error::Error for WaitTimedOut {}

/// Polls `condition` until it returns `Some`, and returns that value; gives up after `timeout`.
/// The condition is always checked at least once, and once more at the deadline.
///
/// # Errors
/// [`WaitTimedOut`] when the condition never returned `Some`.
///
/// # Panics
/// Never (the condition may).
///
/// # Cancel safety
/// Cancel safe: dropping it stops the polling.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut condition: F) -> Result<T, WaitTimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut interval = Duration::from_millis(1);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Some(v) = condition().await {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitTimedOut {
                waited: now - start,
                polls,
            });
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

/// Polls `condition` until it is true; gives up after `timeout`.
///
/// ```
/// # use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
/// # use std::time::Duration;
/// # use millwright_kernel::testkit::wait_until;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let counter = AtomicU32::new(0);
/// wait_until(Duration::from_secs(10), || async { counter.fetch_add(1, Relaxed) + 1 == 3 })
///     .await
///     .expect("the third poll sees three");
/// # }
/// ```
///
/// # Errors
/// [`WaitTimedOut`] when the condition never held.
///
/// # Panics
/// Never (the condition may).
///
/// # Cancel safety
/// Cancel safe: dropping it stops the polling.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> Result<(), WaitTimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// The next item of `stream`, or `None` when none arrives within `timeout` (or the stream
/// ended). Use it to assert that something does *not* arrive, with a short timeout, only after
/// a positive check has shown that the pipeline is otherwise live.
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe when `stream.next()` is.
pub async fn next_within<S>(stream: &mut S, timeout: Duration) -> Option<S::Item>
where
    S: Stream + Unpin,
{
    tokio::time::timeout(timeout, stream.next())
        .await
        .ok()
        .flatten()
}

/// Polls `board` until component `id` shows the state named `want` (`idle`,
/// `degraded_connection`, ...), and returns its status then.
///
/// # Panics
/// After [`PATIENCE`], naming every state the component was seen in.
///
/// # Cancel safety
/// Cancel safe.
pub async fn wait_state(board: &StatusBoard, id: &str, want: &str) -> ComponentStatus {
    let mut seen: Vec<String> = Vec::new();
    let found = wait_for(PATIENCE, || {
        let status = board.get(id);
        let name = status
            .as_ref()
            .map(|c| c.state.name())
            .unwrap_or_else(|| "(not on the board)".to_owned());
        if seen.last() != Some(&name) {
            seen.push(name.clone());
        }
        async move { status.filter(|_| name == want) }
    })
    .await;
    found.unwrap_or_else(|e| panic!("{id} never reached {want} ({e}); states seen: {seen:?}"))
}

/// Sends the request that `query` builds and returns the reply: *drain then observe* (see the
/// module docs). `query` wraps the reply port in one of the actor's request messages.
///
/// # Panics
/// When the actor is gone or does not answer within [`PATIENCE`].
///
/// # Cancel safety
/// Cancel safe: the request is sent either way; only the reply is lost.
pub async fn drain<M, R>(actor: &ActorRef<M>, query: impl FnOnce(RpcReplyPort<R>) -> M) -> R
where
    M: Message,
    R: Send + 'static,
{
    let who = actor
        .get_name()
        .unwrap_or_else(|| actor.get_id().to_string());
    match actor.call(query, Some(PATIENCE)).await {
        Ok(CallResult::Success(reply)) => reply,
        Ok(CallResult::Timeout) => panic!("{who} did not answer within {PATIENCE:?}"),
        Ok(CallResult::SenderError) => panic!("{who} stopped before answering"),
        Err(e) => panic!("{who} is gone: {e}"),
    }
}

/// Like [`drain`], for an actor the test races with (one that a supervisor may stop or
/// restart meanwhile): `None` when it is gone, stops before answering, or does not answer
/// within [`PATIENCE`].
///
/// # Panics
/// Never.
///
/// # Cancel safety
/// Cancel safe: the request is sent either way; only the reply is lost.
pub async fn try_drain<M, R>(
    actor: &ActorRef<M>,
    query: impl FnOnce(RpcReplyPort<R>) -> M,
) -> Option<R>
where
    M: Message,
    R: Send + 'static,
{
    match actor.call(query, Some(PATIENCE)).await {
        Ok(CallResult::Success(reply)) => Some(reply),
        _ => None,
    }
}

/// A name no other test in this process uses: `<prefix>-<n>` (ractor's registry is
/// process-wide, and tests share a process under `cargo test`).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs `future` to its end on a new current-thread runtime whose time is paused: whenever
/// every task waits, the clock jumps to the next timer. For test bodies that are not
/// `#[tokio::test(start_paused = true)]` (a proptest case builds its runtime per case).
///
/// # Panics
/// When the runtime cannot be built, or when `future` panics.
pub fn run_paused<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
        .block_on(future)
}

/// A spec with no backoff and room for 10 restarts in 5 s: restarts happen at once, and a
/// test that provokes a few of them does not escalate.
pub fn no_backoff(strategy: Strategy) -> SupervisorSpec {
    SupervisorSpec::new(strategy)
        .backoff(BackoffPolicy::none())
        .intensity(RestartIntensity::new(10, Duration::from_secs(5)))
}

/// A real supervisor running for a test, with its board.
#[derive(Debug)]
pub struct Tree {
    /// The supervisor.
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The board it (and its children) write to.
    pub board: StatusBoard,
    /// Its registry name and board id (children are `<name>/<child id>`).
    pub name: String,
    handle: Option<JoinHandle<()>>,
}

/// One actor under test, supervised: see [`Tree::actor_under_test`].
#[derive(Debug)]
pub struct UnderTest<M: Message> {
    /// Its supervisor (one child, `under-test`, one-for-one, no backoff).
    pub tree: Tree,
    /// The first incarnation of the actor.
    pub actor: ActorRef<M>,
    /// Its stable id on the board and in the registry.
    pub id: String,
}

impl Tree {
    /// Spawns a supervisor named [`unique_name`]`(prefix)` over `spec`, on a new
    /// [`StatusBoard::recording`] board.
    ///
    /// # Panics
    /// When the supervisor (or one of its children) fails to start.
    ///
    /// # Cancel safety
    /// Not cancel safe (see [`Supervisor::spawn`]).
    pub async fn spawn(prefix: &str, spec: SupervisorSpec) -> Self {
        Self::spawn_on(StatusBoard::recording(), unique_name(prefix), spec).await
    }

    /// Spawns a supervisor named `name` over `spec`, writing to `board`.
    ///
    /// # Panics
    /// When the supervisor (or one of its children) fails to start.
    ///
    /// # Cancel safety
    /// Not cancel safe (see [`Supervisor::spawn`]).
    pub async fn spawn_on(
        board: StatusBoard,
        name: impl Into<String>,
        spec: SupervisorSpec,
    ) -> Self {
        let name = name.into();
        let (supervisor, handle) = Supervisor::spawn(name.clone(), spec, board.clone())
            .await
            .unwrap_or_else(|e| panic!("supervisor {name} does not start: {e}"));
        Self {
            supervisor,
            board,
            name,
            handle: Some(handle),
        }
    }

    /// Puts the actor that `make` builds (once per incarnation, given the tree's recording
    /// board and the actor's stable id, for its [`Lifecycle`](crate::lifecycle::Lifecycle))
    /// under a new supervisor as its only child `under-test` (permanent, restarted at once),
    /// and returns its first incarnation's [`ActorRef`].
    ///
    /// # Panics
    /// When the actor fails to start.
    ///
    /// # Cancel safety
    /// Not cancel safe (see [`Supervisor::spawn`]).
    pub async fn actor_under_test<A, F>(make: F) -> UnderTest<A::Msg>
    where
        A: Actor,
        F: Fn(&StatusBoard, &str) -> (A, A::Arguments) + Send + Sync + 'static,
    {
        const CHILD: &str = "under-test";
        let board = StatusBoard::recording();
        let name = unique_name(CHILD);
        let id = format!("{name}/{CHILD}");
        let (make_board, make_id) = (board.clone(), id.clone());
        let child = ChildSpec::actor(CHILD, move || make(&make_board, &make_id));
        let tree = Self::spawn_on(board, name, no_backoff(Strategy::OneForOne).child(child)).await;
        let actor = tree
            .child(CHILD)
            .await
            .actor
            .expect("the child runs")
            .into();
        UnderTest { id, actor, tree }
    }

    /// The board id (and registry name) of the descendant at `path` (`"inner/w"`).
    pub fn id(&self, path: &str) -> String {
        format!("{}/{path}", self.name)
    }

    /// The children, in start order, after a drain (see [`children_of`]).
    ///
    /// # Panics
    /// As [`children_of`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn children(&self) -> Vec<ChildInfo> {
        children_of(&self.supervisor).await
    }

    /// Child `id`, after a drain (see [`child_of`]).
    ///
    /// # Panics
    /// As [`child_of`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn child(&self, id: &str) -> ChildInfo {
        child_of(&self.supervisor, id).await
    }

    /// Polls until `pred` holds for child `id` (see [`wait_child`]).
    ///
    /// # Panics
    /// As [`wait_child`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_child(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&ChildInfo) -> bool,
    ) -> ChildInfo {
        wait_child(&self.supervisor, id, what, pred).await
    }

    /// Waits until child `id` runs as an incarnation other than `old` (see
    /// [`wait_restarted`]).
    ///
    /// # Panics
    /// As [`wait_restarted`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_restarted(&self, id: &str, old: ActorId) -> ChildInfo {
        wait_restarted(&self.supervisor, id, old).await
    }

    /// Shuts the tree down in order and waits until the supervisor's task has ended.
    ///
    /// # Panics
    /// When the shutdown or the task's end takes longer than [`PATIENCE`], when the
    /// supervisor is already gone, or when its task panicked.
    ///
    /// # Cancel safety
    /// Not cancel safe: the supervisor's task is no longer joined.
    pub async fn shutdown(self) {
        tokio::time::timeout(PATIENCE, shutdown(&self.supervisor))
            .await
            .unwrap_or_else(|_| panic!("{} did not shut down within {PATIENCE:?}", self.name))
            .unwrap_or_else(|e| panic!("{e}"));
        self.join().await;
    }

    /// Waits until the supervisor's task has ended (after a shutdown, an escalation or a
    /// ractor stop or kill).
    ///
    /// # Panics
    /// After [`PATIENCE`], or when the task panicked.
    ///
    /// # Cancel safety
    /// Not cancel safe: the supervisor's task is no longer joined.
    pub async fn join(mut self) {
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(PATIENCE, handle)
                .await
                .unwrap_or_else(|_| panic!("{} did not stop within {PATIENCE:?}", self.name))
                .unwrap_or_else(|e| panic!("{}'s task panicked: {e}", self.name));
        }
    }

    /// Whether the supervisor's task has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

/// The children of `supervisor` (any supervisor of a tree: `where_is("<root>/inner")`), in
/// start order, once it has handled everything sent to it before: its drain point.
///
/// # Panics
/// When the supervisor is gone or does not answer within [`PATIENCE`].
///
/// # Cancel safety
/// Cancel safe.
pub async fn children_of(supervisor: &ActorRef<SupervisorMsg>) -> Vec<ChildInfo> {
    children(supervisor, Some(PATIENCE))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Child `id` of `supervisor`, after a drain.
///
/// # Panics
/// When there is no such child, or as [`children_of`].
///
/// # Cancel safety
/// Cancel safe.
pub async fn child_of(supervisor: &ActorRef<SupervisorMsg>, id: &str) -> ChildInfo {
    children_of(supervisor)
        .await
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| {
            let name = supervisor.get_name().unwrap_or_default();
            panic!("supervisor {name} has no child {id}")
        })
}

/// Polls `supervisor` until `pred` holds for its child `id` (for what happens later: a
/// restart after its backoff), and returns that child's info.
///
/// # Panics
/// After [`PATIENCE`], with the child's last info and `what` it never did.
///
/// # Cancel safety
/// Cancel safe.
pub async fn wait_child(
    supervisor: &ActorRef<SupervisorMsg>,
    id: &str,
    what: &str,
    pred: impl Fn(&ChildInfo) -> bool,
) -> ChildInfo {
    let last = RefCell::new(None);
    let found = wait_for(PATIENCE, || {
        let (last, pred) = (&last, &pred);
        async move {
            let info = child_of(supervisor, id).await;
            let done = pred(&info);
            *last.borrow_mut() = Some(info.clone());
            done.then_some(info)
        }
    })
    .await;
    found.unwrap_or_else(|e| panic!("child {id} never {what} ({e}): {:?}", last.borrow()))
}

/// Waits until child `id` of `supervisor` runs as an incarnation other than `old`.
///
/// # Panics
/// After [`PATIENCE`].
///
/// # Cancel safety
/// Cancel safe.
pub async fn wait_restarted(
    supervisor: &ActorRef<SupervisorMsg>,
    id: &str,
    old: ActorId,
) -> ChildInfo {
    wait_child(supervisor, id, "restarted", |c| {
        c.actor.as_ref().is_some_and(|a| a.get_id() != old)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use ractor::ActorProcessingErr;

    use super::*;
    use crate::lifecycle::{Event, Lifecycle, State};

    #[tokio::test(start_paused = true)]
    async fn wait_until_returns_when_the_condition_holds() {
        let n = Arc::new(AtomicU32::new(0));
        let n2 = Arc::clone(&n);
        wait_until(Duration::from_secs(5), move || {
            let n = Arc::clone(&n2);
            async move { n.fetch_add(1, Ordering::SeqCst) >= 3 }
        })
        .await
        .unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_times_out_with_a_report() {
        let err = wait_until(Duration::from_secs(1), || async { false })
            .await
            .unwrap_err();
        assert_eq!(err.waited, Duration::from_secs(1));
        assert!(err.polls > 2, "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_yields_the_value() {
        let mut i = 0;
        let v = wait_for(Duration::from_secs(1), || {
            i += 1;
            let i = i;
            async move { (i == 2).then_some("two") }
        })
        .await
        .unwrap();
        assert_eq!(v, "two");
    }

    #[tokio::test(start_paused = true)]
    async fn next_within_times_out_on_a_silent_stream() {
        let mut silent = futures::stream::pending::<u8>();
        assert_eq!(next_within(&mut silent, Duration::from_secs(1)).await, None);
        let mut one = futures::stream::iter([7u8]);
        assert_eq!(next_within(&mut one, Duration::from_secs(1)).await, Some(7));
    }

    #[test]
    fn run_paused_skips_timers() {
        let waited = run_paused(async {
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            t0.elapsed()
        });
        assert!(waited >= Duration::from_secs(3600));
    }

    /// An actor that counts what it was told, with a board entry of its own.
    struct Counter;

    enum CounterMsg {
        Add,
        Count(RpcReplyPort<u32>),
        Crash,
    }

    impl Actor for Counter {
        type Msg = CounterMsg;
        type State = (u32, Lifecycle);
        type Arguments = (StatusBoard, String);

        async fn pre_start(
            &self,
            _myself: ActorRef<CounterMsg>,
            (board, id): (StatusBoard, String),
        ) -> Result<Self::State, ActorProcessingErr> {
            let mut lifecycle = Lifecycle::begin(&board, id, "counter", PATIENCE);
            lifecycle.apply(Event::Start)?;
            lifecycle.apply(Event::StartDone)?;
            Ok((0, lifecycle))
        }

        async fn handle(
            &self,
            _myself: ActorRef<CounterMsg>,
            msg: CounterMsg,
            (count, _): &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                CounterMsg::Add => *count += 1,
                CounterMsg::Count(reply) => {
                    let _ = reply.send(*count);
                }
                CounterMsg::Crash => return Err("crashed on purpose".into()),
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_actor_under_test_is_supervised_drained_and_restarted() {
        let board = StatusBoard::recording();
        let name = unique_name("kit");
        let make_board = board.clone();
        let id = format!("{name}/c");
        let make_id = id.clone();
        let spec = no_backoff(Strategy::OneForOne).child(ChildSpec::actor("c", move || {
            (Counter, (make_board.clone(), make_id.clone()))
        }));
        let tree = Tree::spawn_on(board, name, spec).await;
        assert_eq!(tree.id("c"), id);
        let first: ActorRef<CounterMsg> = tree.child("c").await.actor.unwrap().into();
        for _ in 0..100 {
            first.send_message(CounterMsg::Add).unwrap();
        }
        assert_eq!(drain(&first, CounterMsg::Count).await, 100, "all handled");
        wait_state(&tree.board, &id, "idle").await;

        first.send_message(CounterMsg::Crash).unwrap();
        let second = tree.wait_restarted("c", first.get_id()).await;
        assert_eq!(second.restarts, 1);
        let history = tree.board.history(&id).unwrap();
        assert_eq!(history.last(), Some(&State::Idle));
        assert!(history.contains(&State::Stopped), "{history:?}");
        tree.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn actor_under_test_hands_out_the_first_incarnation() {
        let under =
            Tree::actor_under_test(|board, id| (Counter, (board.clone(), id.to_owned()))).await;
        under.actor.send_message(CounterMsg::Add).unwrap();
        assert_eq!(drain(&under.actor, CounterMsg::Count).await, 1);
        assert_eq!(under.id, under.tree.id("under-test"));
        assert!(ractor::registry::where_is(under.id.clone()).is_some());
        // It wrote its state to the tree's recording board.
        let history = under.tree.board.history(&under.id).unwrap();
        assert_eq!(history.last(), Some(&State::Idle), "{history:?}");
        under.tree.shutdown().await;
    }
}
