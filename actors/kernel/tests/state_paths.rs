//! Property: whatever happens to a supervision tree, every component's recorded states form a
//! path through the transition table, and nobody asked the table for an illegal step.
//!
//! Each case builds a real tree on a [`StatusBoard::recording`] board: a root supervisor over
//! two workers and a nested supervisor over two more (strategies drawn per case), plus
//! children added and removed at run time. Every worker keeps its own state through a
//! [`Lifecycle`] (`begin`, `Start`, `StartPhase`, `StartDone`, data, degrade and recover,
//! finish, an orderly stop in `post_stop`) and only sends events its current state accepts.
//! Random operations then crash workers (panic or error), stop them normally, kill them, fail
//! their next start, make their next stop hang past its timeout, crash a nested worker in a
//! burst past its supervisor's restart intensity (escalation to the root), kill the nested
//! supervisor, set and clear watchdog observations, add and remove children, let the tree
//! settle, and shut the whole tree down and start it again on the same board.
//!
//! At the end, for every id on the board, each consecutive pair of recorded FSM states is one
//! step of [`State::next`], and [`StatusBoard::rejected_transitions`] is zero: the workers only
//! ask for legal steps, so a rejection is the kernel's (the supervisor's) own.
//!
//! Time is paused (backoffs and shutdown timeouts elapse at once); the test waits for
//! conditions by polling or by draining an actor, never by sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use millwright_kernel::lifecycle::{Event, Lifecycle, Observation, State, StatusBoard};
use millwright_kernel::supervisor::{
    BackoffPolicy, ChildSpec, RestartIntensity, RestartType, Shutdown, Strategy, SupervisorMsg,
    SupervisorSpec, children, start_child, stop_child,
};
use millwright_kernel::testkit::{PATIENCE, Tree, run_paused, try_drain, unique_name, wait_for};
use proptest::prelude::{Just, ProptestConfig, TestCaseError, prop};
use proptest::strategy::Strategy as Gen;
use proptest::{prop_assert, prop_assert_eq, prop_oneof, proptest};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};

/// The workers, by slot: their path under the root supervisor.
const PATHS: [&str; 7] = [
    "w0",       // root, permanent
    "w1",       // root, transient
    "inner/x0", // nested, permanent
    "inner/x1", // nested, transient, 1 s shutdown timeout
    "d0",       // root, added at run time, temporary
    "d1",       // root, added at run time, permanent
    "inner/d2", // nested, added at run time, transient
];

/// The nested supervisor's restart intensity: a burst of one more crash escalates.
const INNER_MAX_RESTARTS: u32 = 2;

/// What a test can make one worker do, shared by all its incarnations.
#[derive(Debug, Default)]
struct Knobs {
    /// Starts that fail (in `pre_start`, after `Start`) before one succeeds.
    fail_starts: AtomicU32,
    /// Whether the next stop asked for by its supervisor hangs in `post_stop`.
    hang_on_stop: AtomicBool,
}

struct Unit;

struct UnitArgs {
    board: StatusBoard,
    id: String,
    knobs: Arc<Knobs>,
}

struct UnitState {
    lifecycle: Lifecycle,
    knobs: Arc<Knobs>,
    /// Set when it stops itself (a normal exit): such a stop never hangs.
    exiting: bool,
}

#[derive(Debug, Clone, Copy)]
enum Intent {
    Data,
    Quiet,
    Degrade,
    Recover,
    Finish,
}

enum UnitMsg {
    Tell(Intent),
    Panic,
    Fail,
    Exit,
    Ping(RpcReplyPort<()>),
}

/// Applies `event` if the worker's current state accepts it: a well-behaved component never
/// asks the table for an illegal step.
fn step(lifecycle: &mut Lifecycle, event: Event) {
    if lifecycle.state().next(&event).is_ok() {
        lifecycle
            .apply(event)
            .expect("the board agrees with the worker's own copy of its state");
    }
}

impl Actor for Unit {
    type Msg = UnitMsg;
    type State = UnitState;
    type Arguments = UnitArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<UnitMsg>,
        args: UnitArgs,
    ) -> Result<UnitState, ActorProcessingErr> {
        let UnitArgs { board, id, knobs } = args;
        let mut lifecycle = Lifecycle::begin(&board, id, "worker", Duration::from_secs(30));
        step(&mut lifecycle, Event::Start);
        step(&mut lifecycle, Event::StartPhase("connection".into()));
        let failing = knobs.fail_starts.load(Ordering::SeqCst);
        if failing > 0 {
            knobs.fail_starts.store(failing - 1, Ordering::SeqCst);
            step(
                &mut lifecycle,
                Event::StartFailed("connection refused".into()),
            );
            return Err("connection refused".into());
        }
        step(&mut lifecycle, Event::StartDone);
        Ok(UnitState {
            lifecycle,
            knobs,
            exiting: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<UnitMsg>,
        msg: UnitMsg,
        state: &mut UnitState,
    ) -> Result<(), ActorProcessingErr> {
        let lifecycle = &mut state.lifecycle;
        match msg {
            UnitMsg::Tell(Intent::Data) => step(lifecycle, Event::DataReceived),
            UnitMsg::Tell(Intent::Quiet) => step(lifecycle, Event::NoDataTimeout),
            UnitMsg::Tell(Intent::Degrade) => step(
                lifecycle,
                Event::Degrade {
                    facet: Some("connection".into()),
                    reason: "connection lost".into(),
                },
            ),
            UnitMsg::Tell(Intent::Recover) => step(lifecycle, Event::Recovered),
            UnitMsg::Tell(Intent::Finish) => step(lifecycle, Event::Finish),
            UnitMsg::Panic => panic!("worker {} panics on purpose", lifecycle.id()),
            UnitMsg::Fail => return Err("failed on purpose".into()),
            UnitMsg::Exit => {
                state.exiting = true;
                myself.stop(Some("done".into()));
            }
            UnitMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<UnitMsg>,
        state: &mut UnitState,
    ) -> Result<(), ActorProcessingErr> {
        step(&mut state.lifecycle, Event::Stop);
        if !state.exiting && state.knobs.hang_on_stop.swap(false, Ordering::SeqCst) {
            // Killed by its supervisor once its shutdown timeout has passed.
            std::future::pending::<()>().await;
        }
        step(&mut state.lifecycle, Event::StopDone);
        Ok(())
    }
}

/// Everything a case needs to rebuild or reach its tree.
struct Rig {
    root: String,
    board: StatusBoard,
    knobs: Vec<Arc<Knobs>>,
    root_strategy: Strategy,
    inner_strategy: Strategy,
}

impl Rig {
    fn id(&self, path: &str) -> String {
        format!("{}/{path}", self.root)
    }

    fn worker(&self, slot: usize, id: &str, restart: RestartType) -> ChildSpec {
        let board = self.board.clone();
        let full = self.id(PATHS[slot]);
        let knobs = self.knobs[slot].clone();
        ChildSpec::actor(id, move || {
            let args = UnitArgs {
                board: board.clone(),
                id: full.clone(),
                knobs: knobs.clone(),
            };
            (Unit, args)
        })
        .restart(restart)
        // Short enough that a whole tree of hanging workers stops within the kit's patience.
        .shutdown(Shutdown::Timeout(Duration::from_secs(2)))
    }

    fn inner_spec(&self) -> SupervisorSpec {
        SupervisorSpec::new(self.inner_strategy)
            .backoff(backoff())
            .intensity(RestartIntensity::new(
                INNER_MAX_RESTARTS,
                Duration::from_secs(10),
            ))
            .child(self.worker(2, "x0", RestartType::Permanent))
            .child(
                self.worker(3, "x1", RestartType::Transient)
                    .shutdown(Shutdown::Timeout(Duration::from_secs(1))),
            )
    }

    fn root_spec(&self) -> SupervisorSpec {
        SupervisorSpec::new(self.root_strategy)
            .backoff(backoff())
            // The root never gives up: its children's escalations are what is tested.
            .intensity(RestartIntensity::new(u32::MAX, Duration::from_secs(1)))
            .child(self.worker(0, "w0", RestartType::Permanent))
            .child(self.worker(1, "w1", RestartType::Transient))
            .child(ChildSpec::supervisor("inner", self.inner_spec()))
    }

    /// The child a `StartChild` adds, and the supervisor (by path, `""` for the root) it goes to.
    fn dynamic(&self, which: Dyn) -> (&'static str, ChildSpec) {
        match which {
            Dyn::D0 => ("", self.worker(4, "d0", RestartType::Temporary)),
            Dyn::D1 => ("", self.worker(5, "d1", RestartType::Permanent)),
            Dyn::D2 => ("inner", self.worker(6, "d2", RestartType::Transient)),
            Dyn::Inner => ("", ChildSpec::supervisor("inner", self.inner_spec())),
        }
    }

    fn supervisor(&self, path: &str) -> Option<ActorRef<SupervisorMsg>> {
        let name = if path.is_empty() {
            self.root.clone()
        } else {
            self.id(path)
        };
        ractor::registry::where_is(name).map(ActorRef::from)
    }

    /// The running incarnation of the worker in `slot`, if any.
    fn unit(&self, slot: usize) -> Option<ActorCell> {
        ractor::registry::where_is(self.id(PATHS[slot]))
    }

    /// Drains the root and the nested supervisor (whichever run): what they were told of
    /// before is handled.
    async fn drain(&self) {
        for path in ["", "inner"] {
            if let Some(sup) = self.supervisor(path) {
                let _ = children(&sup, Some(PATIENCE)).await;
            }
        }
    }

    /// Waits until no restart is pending anywhere in the tree.
    async fn settle(&self) {
        let settled = wait_for(PATIENCE, || async {
            for path in ["", "inner"] {
                let Some(sup) = self.supervisor(path) else {
                    // The nested supervisor may be gone for good (stopped with StopChild).
                    continue;
                };
                let Ok(kids) = children(&sup, Some(PATIENCE)).await else {
                    return None;
                };
                if kids.iter().any(|c| c.restart_pending) {
                    return None;
                }
            }
            Some(())
        })
        .await;
        settled.expect("the tree settles: no restart stays pending");
    }
}

fn backoff() -> BackoffPolicy {
    BackoffPolicy {
        min: Duration::from_millis(50),
        max: Duration::from_millis(400),
        jitter: 0.2,
        reset_after: Duration::from_secs(2),
    }
}

#[derive(Debug, Clone, Copy)]
enum Dyn {
    D0,
    D1,
    D2,
    Inner,
}

#[derive(Debug, Clone)]
enum Op {
    /// Tell a worker what happens to it, one intent after the other.
    Tell(usize, Vec<Intent>),
    Panic(usize),
    Fail(usize),
    Exit(usize),
    Kill(usize),
    FailNextStart(usize),
    HangNextStop(usize),
    /// Crash a nested worker `INNER_MAX_RESTARTS + 1` times, each new incarnation at once.
    Burst(usize),
    KillInner,
    Watchdog(usize, bool),
    StartChild(Dyn),
    StopChild(Dyn),
    Settle,
    /// Shut the tree down in order and start it again on the same board.
    Restart,
}

async fn run(rig: &mut Rig, tree: &mut Option<Tree>, op: &Op) {
    match *op {
        Op::Tell(slot, ref intents) => {
            if let Some(cell) = rig.unit(slot) {
                let unit = ActorRef::<UnitMsg>::from(cell);
                for &intent in intents {
                    let _ = unit.send_message(UnitMsg::Tell(intent));
                }
                try_drain(&unit, UnitMsg::Ping).await;
            }
        }
        Op::Panic(slot) | Op::Fail(slot) | Op::Exit(slot) | Op::Kill(slot) => {
            let Some(cell) = rig.unit(slot) else { return };
            match op {
                Op::Panic(_) => drop(cell.send_message(UnitMsg::Panic)),
                Op::Fail(_) => drop(cell.send_message(UnitMsg::Fail)),
                Op::Exit(_) => drop(cell.send_message(UnitMsg::Exit)),
                _ => cell.kill(),
            }
            let _ = cell.wait(Some(PATIENCE)).await;
            rig.drain().await;
        }
        Op::FailNextStart(slot) => rig.knobs[slot].fail_starts.store(1, Ordering::SeqCst),
        Op::HangNextStop(slot) => rig.knobs[slot].hang_on_stop.store(true, Ordering::SeqCst),
        Op::Burst(slot) => {
            for _ in 0..=INNER_MAX_RESTARTS {
                let Some(cell) = rig.unit(slot) else { return };
                let old = cell.get_id();
                let _ = cell.send_message(UnitMsg::Panic);
                let _ = cell.wait(Some(PATIENCE)).await;
                // The next incarnation (after a backoff, or after the escalation restarted
                // the nested supervisor), unless the worker is gone for good.
                let _ = wait_for(PATIENCE, || async {
                    rig.unit(slot).filter(|c| c.get_id() != old)
                })
                .await;
            }
        }
        Op::KillInner => {
            let Some(inner) = rig.supervisor("inner") else {
                return;
            };
            inner.kill();
            let _ = inner.wait(Some(PATIENCE)).await;
            rig.drain().await;
        }
        Op::Watchdog(slot, true) => rig.board.observe(
            &rig.id(PATHS[slot]),
            Observation::new(
                "watchdog",
                "not answering: no reply to a liveness ping within 5s",
            ),
        ),
        Op::Watchdog(slot, false) => rig
            .board
            .clear_observation(&rig.id(PATHS[slot]), "watchdog"),
        Op::StartChild(which) => {
            let (parent, spec) = rig.dynamic(which);
            if let Some(sup) = rig.supervisor(parent) {
                // Refusals (a duplicate id, a failed start) are part of the game.
                let _ = start_child(&sup, spec).await;
            }
        }
        Op::StopChild(which) => {
            let (parent, spec) = rig.dynamic(which);
            if let Some(sup) = rig.supervisor(parent) {
                let _ = stop_child(&sup, spec.id()).await;
            }
        }
        Op::Settle => rig.settle().await,
        Op::Restart => {
            if let Some(old) = tree.take() {
                old.shutdown().await;
            }
            // A boot that fails is not what this op tests.
            for knobs in &rig.knobs {
                knobs.fail_starts.store(0, Ordering::SeqCst);
            }
            *tree =
                Some(Tree::spawn_on(rig.board.clone(), rig.root.clone(), rig.root_spec()).await);
        }
    }
}

/// The events that could have led to `to`: the fixed ones, and the parametrised ones built
/// from `to` itself.
fn events_into(to: &State) -> Vec<Event> {
    let mut events = vec![
        Event::Create,
        Event::Created,
        Event::Start,
        Event::StartDone,
        Event::StartFailed(String::new()),
        Event::DataReceived,
        Event::NoDataTimeout,
        Event::Recovered,
        Event::Stop,
        Event::StopDone,
        Event::Finish,
        Event::Exited,
        Event::Remove,
        Event::RemoveDone,
    ];
    match to {
        State::Starting { phase: Some(p) } => events.push(Event::StartPhase(p.clone())),
        State::Degraded { facet, reason } => events.push(Event::Degrade {
            facet: facet.clone(),
            reason: reason.clone(),
        }),
        _ => {}
    }
    events
}

fn is_step(from: &State, to: &State) -> bool {
    events_into(to)
        .iter()
        .any(|e| from.next(e).as_ref() == Ok(to))
}

async fn run_case(
    root_strategy: Strategy,
    inner_strategy: Strategy,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut rig = Rig {
        root: unique_name("paths"),
        board: StatusBoard::recording(),
        knobs: (0..PATHS.len()).map(|_| Arc::default()).collect(),
        root_strategy,
        inner_strategy,
    };
    let mut tree = Some(Tree::spawn_on(rig.board.clone(), rig.root.clone(), rig.root_spec()).await);
    for op in &ops {
        run(&mut rig, &mut tree, op).await;
    }
    rig.settle().await;
    tree.take().expect("a tree runs").shutdown().await;

    let board = &rig.board;
    let root = board.history(&rig.root).expect("the root is on the board");
    prop_assert_eq!(root.last(), Some(&State::Stopped), "the root ends stopped");
    for status in board.snapshot() {
        let history = board.history(&status.id).expect("a recording board");
        prop_assert_eq!(
            history.first(),
            Some(&State::ToBeCreated),
            "{} starts where the table starts",
            status.id
        );
        for pair in history.windows(2) {
            prop_assert!(
                is_step(&pair[0], &pair[1]),
                "{}: {} -> {} is no step of the table; its path: {:?}",
                status.id,
                pair[0],
                pair[1],
                history.iter().map(State::name).collect::<Vec<_>>()
            );
        }
    }
    prop_assert_eq!(
        board.rejected_transitions(),
        0,
        "the kernel asked for an illegal transition (the workers ask only for legal ones)"
    );
    Ok(())
}

fn strategy() -> impl Gen<Value = Strategy> {
    prop_oneof![
        Just(Strategy::OneForOne),
        Just(Strategy::OneForAll),
        Just(Strategy::RestForOne)
    ]
}

fn intent() -> impl Gen<Value = Intent> {
    prop_oneof![
        Just(Intent::Data),
        Just(Intent::Quiet),
        Just(Intent::Degrade),
        Just(Intent::Recover),
        Just(Intent::Finish),
    ]
}

fn dynamic() -> impl Gen<Value = Dyn> {
    prop_oneof![
        Just(Dyn::D0),
        Just(Dyn::D1),
        Just(Dyn::D2),
        Just(Dyn::Inner)
    ]
}

fn op() -> impl Gen<Value = Op> {
    let slot = 0..PATHS.len();
    prop_oneof![
        6 => (slot.clone(), prop::collection::vec(intent(), 1..5))
            .prop_map(|(s, i)| Op::Tell(s, i)),
        2 => slot.clone().prop_map(Op::Panic),
        2 => slot.clone().prop_map(Op::Fail),
        2 => slot.clone().prop_map(Op::Exit),
        2 => slot.clone().prop_map(Op::Kill),
        1 => slot.clone().prop_map(Op::FailNextStart),
        1 => slot.clone().prop_map(Op::HangNextStop),
        1 => prop_oneof![Just(2usize), Just(3), Just(6)].prop_map(Op::Burst),
        1 => Just(Op::KillInner),
        2 => (slot, prop::bool::ANY).prop_map(|(s, on)| Op::Watchdog(s, on)),
        2 => dynamic().prop_map(Op::StartChild),
        1 => dynamic().prop_map(Op::StopChild),
        1 => Just(Op::Settle),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn recorded_states_are_paths_through_the_table(
        root in strategy(),
        inner in strategy(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run_paused(run_case(root, inner, ops))?;
    }
}
