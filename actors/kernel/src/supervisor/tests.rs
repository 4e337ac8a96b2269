//! Supervision tests with real ractor actors.
//!
//! Every test builds a supervisor over [`Worker`] actors that can be told to panic, return an
//! error, stop normally, fail in `pre_start` or `post_start`, or hang in `post_stop`. They
//! record `start:<id>` / `stop:<id>` in a shared log so tests can check ordering. Timer logic
//! runs on paused tokio time; everything else is awaited or polled with the kernel's test kit
//! ([`crate::testkit`]), never slept on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use parking_lot::Mutex;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus};
use tokio::time::Instant;

use super::*;
use crate::testkit::{
    PATIENCE, Tree, child_of, children_of, no_backoff, unique_name as uniq, wait_child,
    wait_restarted,
};

/// What a test can make a worker do, shared by all its incarnations.
#[derive(Clone, Default)]
struct Probe {
    log: Arc<Mutex<Vec<String>>>,
    fail_starts: Arc<AtomicU32>,
    crash_after_start: Arc<AtomicBool>,
    hang_on_stop: Arc<AtomicBool>,
    stops_done: Arc<AtomicU32>,
    /// When each incarnation started (tokio time, paused or not).
    started_at: Arc<Mutex<Vec<Instant>>>,
}

impl Probe {
    /// A probe writing into the same log as `self`.
    fn sibling(&self) -> Probe {
        Probe {
            log: self.log.clone(),
            ..Probe::default()
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    fn clear_log(&self) {
        self.log.lock().clear();
    }
}

struct Worker {
    id: String,
}

enum WorkerMsg {
    Panic,
    Fail,
    Exit,
}

struct WorkerState {
    probe: Probe,
    /// Read in `pre_start`, so a flag set after a start only affects later incarnations.
    crash_after_start: bool,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = Probe;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        probe: Probe,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let remaining = probe.fail_starts.load(Ordering::SeqCst);
        if remaining > 0 {
            probe.fail_starts.store(remaining - 1, Ordering::SeqCst);
            return Err(format!("{}: configured start failure", self.id).into());
        }
        probe.log.lock().push(format!("start:{}", self.id));
        probe.started_at.lock().push(Instant::now());
        let crash_after_start = probe.crash_after_start.load(Ordering::SeqCst);
        Ok(WorkerState {
            probe,
            crash_after_start,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.crash_after_start {
            return Err("crash loop".into());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: WorkerMsg,
        _state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Panic => panic!("boom"),
            WorkerMsg::Fail => Err("failed on purpose".into()),
            WorkerMsg::Exit => {
                myself.stop(Some("done".into()));
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let probe = &state.probe;
        probe.log.lock().push(format!("stop:{}", self.id));
        if probe.hang_on_stop.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        probe.stops_done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn worker(id: &str, probe: &Probe) -> ChildSpec {
    let probe = probe.clone();
    let name = id.to_owned();
    ChildSpec::actor(id, move || (Worker { id: name.clone() }, probe.clone()))
}

fn actor_id(info: &ChildInfo) -> ActorId {
    info.actor.as_ref().expect("child is running").get_id()
}

fn send(info: &ChildInfo, msg: WorkerMsg) {
    let cell = info.actor.as_ref().expect("child is running");
    cell.send_message(msg).expect("child accepts messages");
}

/// A supervisor under test on a recording board, with its handles.
async fn spawn_sup(
    name: &str,
    spec: SupervisorSpec,
) -> (ActorRef<SupervisorMsg>, Tree, StatusBoard) {
    let tree = Tree::spawn_on(StatusBoard::recording(), name, spec).await;
    let (sup, board) = (tree.supervisor.clone(), tree.board.clone());
    (sup, tree, board)
}

/// An orderly shutdown that fails the test instead of hanging it.
async fn shut(sup: &ActorRef<SupervisorMsg>) {
    tokio::time::timeout(PATIENCE, shutdown(sup))
        .await
        .expect("shutdown finishes in time")
        .expect("supervisor answers");
}

fn restart_counter(
    recorder_snapshot: metrics_util::debugging::Snapshot,
    sup: &str,
    child: &str,
) -> u64 {
    recorder_snapshot
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == "mw_supervisor_restarts_total"
                && key
                    .labels()
                    .any(|l| l.key() == "supervisor" && l.value() == sup)
                && key
                    .labels()
                    .any(|l| l.key() == "child" && l.value() == child)
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("not a counter: {other:?}"),
        })
        .sum()
}

#[tokio::test]
async fn permanent_child_is_restarted_under_the_same_name_and_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The test runtime is single-threaded: every actor task records into this recorder.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let name = uniq("perm");
    let probe = Probe::default();
    let (sup, tree, board) = spawn_sup(
        &name,
        no_backoff(Strategy::OneForOne).child(worker("a", &probe)),
    )
    .await;
    let child_name = format!("{name}/a");
    let before = child_of(&sup, "a").await;
    assert_eq!(before.name, child_name);
    let old = actor_id(&before);
    assert_eq!(
        ractor::registry::where_is(child_name.clone()).map(|c| c.get_id()),
        Some(old)
    );

    send(&before, WorkerMsg::Panic);
    let after = wait_restarted(&sup, "a", old).await;

    // Stable identity: the new incarnation is found under the same registry name.
    let found = ractor::registry::where_is(child_name.clone()).expect("registered again");
    assert_eq!(found.get_id(), actor_id(&after));
    assert_eq!(after.restarts, 1);
    assert!(matches!(&after.last_exit, Some(ExitKind::Abnormal(e)) if e.contains("boom")));
    // Recorded on the board (health endpoint) and in metrics.
    let status = board.get(&child_name).expect("on the board");
    assert_eq!(status.restarts, 1);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("boom"))
    );
    assert_eq!(restart_counter(snapshotter.snapshot(), &name, "a"), 1);
    assert_eq!(board.get(&name).map(|s| s.state), Some(State::Idle));

    tree.shutdown().await;
}

#[tokio::test]
async fn transient_child_normal_exit_is_not_restarted() {
    let name = uniq("transient-normal");
    let probe = Probe::default();
    let spec =
        no_backoff(Strategy::OneForOne).child(worker("a", &probe).restart(RestartType::Transient));
    let (sup, tree, board) = spawn_sup(&name, spec).await;

    send(&child_of(&sup, "a").await, WorkerMsg::Exit);
    let info = wait_child(&sup, "a", "exited", |c| c.last_exit.is_some()).await;
    assert!(!info.running);
    assert!(!info.restart_pending);
    assert_eq!(info.restarts, 0);
    assert_eq!(
        info.last_exit,
        Some(ExitKind::Normal {
            reason: Some("done".into())
        })
    );
    assert!(ractor::registry::where_is(format!("{name}/a")).is_none());
    assert_eq!(
        board
            .get(&format!("{name}/a"))
            .map(|s| s.restarts)
            .unwrap_or(0),
        0
    );
    assert_eq!(probe.log(), vec!["start:a", "stop:a"]);

    tree.shutdown().await;
}

#[tokio::test]
async fn transient_child_is_restarted_after_a_failure_and_after_a_kill() {
    let name = uniq("transient-abnormal");
    let probe = Probe::default();
    let spec =
        no_backoff(Strategy::OneForOne).child(worker("a", &probe).restart(RestartType::Transient));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;

    let first = child_of(&sup, "a").await;
    send(&first, WorkerMsg::Fail);
    let second = wait_restarted(&sup, "a", actor_id(&first)).await;
    assert_eq!(second.restarts, 1);
    assert!(
        matches!(&second.last_exit, Some(ExitKind::Abnormal(e)) if e.contains("failed on purpose"))
    );

    // A kill is abnormal: the transient child comes back.
    second.actor.as_ref().unwrap().kill();
    let third = wait_restarted(&sup, "a", actor_id(&second)).await;
    assert_eq!(third.restarts, 2);
    assert_eq!(third.last_exit, Some(ExitKind::Killed));

    tree.shutdown().await;
}

#[tokio::test]
async fn temporary_child_is_never_restarted() {
    let name = uniq("temporary");
    let probe = Probe::default();
    let spec = no_backoff(Strategy::OneForOne)
        .child(worker("a", &probe).restart(RestartType::Temporary))
        .child(worker("b", &probe.sibling()));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;

    send(&child_of(&sup, "a").await, WorkerMsg::Panic);
    let info = wait_child(&sup, "a", "exited", |c| c.last_exit.is_some()).await;
    assert!(!info.running && !info.restart_pending);
    assert_eq!(info.restarts, 0);
    assert!(child_of(&sup, "b").await.running);

    tree.shutdown().await;
}

#[tokio::test]
async fn one_for_all_restarts_every_child_in_order() {
    let name = uniq("one-for-all");
    let probe = Probe::default();
    let spec = no_backoff(Strategy::OneForAll)
        .child(worker("a", &probe))
        .child(worker("b", &probe.sibling()))
        .child(worker("c", &probe.sibling()));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;
    let before = children_of(&sup).await;
    probe.clear_log();

    send(&before[1], WorkerMsg::Panic);
    for old in &before {
        wait_restarted(&sup, &old.id, actor_id(old)).await;
    }
    // The others stopped latest first, then all started in order (b panicked: no post_stop).
    assert_eq!(
        probe.log(),
        vec!["stop:c", "stop:a", "start:a", "start:b", "start:c"]
    );
    // The stopped siblings' own exit events arrive after their restart: stale, ignored, so
    // each child was restarted exactly once.
    let after = children_of(&sup).await;
    assert_eq!(
        after.iter().map(|c| c.restarts).collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
    assert!(after.iter().all(|c| c.running));

    tree.shutdown().await;
}

#[tokio::test]
async fn rest_for_one_restarts_only_later_siblings() {
    let name = uniq("rest-for-one");
    let probe = Probe::default();
    let spec = no_backoff(Strategy::RestForOne)
        .child(worker("a", &probe))
        .child(worker("b", &probe.sibling()))
        .child(worker("c", &probe.sibling()));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;
    let before = children_of(&sup).await;
    probe.clear_log();

    send(&before[1], WorkerMsg::Panic);
    wait_restarted(&sup, "b", actor_id(&before[1])).await;
    wait_restarted(&sup, "c", actor_id(&before[2])).await;
    assert_eq!(probe.log(), vec!["stop:c", "start:b", "start:c"]);
    let after = children_of(&sup).await;
    assert_eq!(actor_id(&after[0]), actor_id(&before[0]), "a kept running");
    assert_eq!(
        after.iter().map(|c| c.restarts).collect::<Vec<_>>(),
        vec![0, 1, 1]
    );

    tree.shutdown().await;
}

#[tokio::test]
async fn children_start_in_order_and_stop_in_reverse_including_nested_ones() {
    let name = uniq("order");
    let probe = Probe::default();
    let inner = no_backoff(Strategy::OneForOne)
        .child(worker("x", &probe.sibling()))
        .child(worker("y", &probe.sibling()));
    let spec = no_backoff(Strategy::OneForOne)
        .child(worker("a", &probe))
        .child(worker("b", &probe.sibling()))
        .child(ChildSpec::supervisor("inner", inner))
        .child(worker("c", &probe.sibling()));
    let (sup, tree, board) = spawn_sup(&name, spec).await;
    assert_eq!(
        probe.log(),
        vec!["start:a", "start:b", "start:x", "start:y", "start:c"]
    );
    // The nested supervisor is registered under its stable name, its children under theirs.
    assert!(ractor::registry::where_is(format!("{name}/inner")).is_some());
    assert!(ractor::registry::where_is(format!("{name}/inner/y")).is_some());
    probe.clear_log();

    shut(&sup).await;
    assert_eq!(
        probe.log(),
        vec!["stop:c", "stop:y", "stop:x", "stop:b", "stop:a"]
    );
    tree.join().await;
    assert_eq!(board.get(&name).map(|s| s.state), Some(State::Stopped));
    assert_eq!(
        board.get(&format!("{name}/inner")).map(|s| s.state),
        Some(State::Stopped)
    );
}

#[tokio::test]
async fn a_ractor_stop_from_the_parent_also_stops_children_in_reverse() {
    let name = uniq("ractor-stop");
    let probe = Probe::default();
    let spec = no_backoff(Strategy::OneForOne)
        .child(worker("a", &probe))
        .child(worker("b", &probe.sibling()));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;
    probe.clear_log();
    sup.stop_and_wait(None, Some(PATIENCE)).await.unwrap();
    assert_eq!(probe.log(), vec!["stop:b", "stop:a"]);
    tree.join().await;
}

#[tokio::test(start_paused = true)]
async fn child_ignoring_stop_is_killed_after_its_shutdown_timeout() {
    let name = uniq("hang");
    let probe = Probe::default();
    let stubborn = probe.sibling();
    stubborn.hang_on_stop.store(true, Ordering::SeqCst);
    let spec = no_backoff(Strategy::OneForOne)
        .child(worker("a", &probe))
        .child(worker("stubborn", &stubborn).shutdown(Shutdown::Timeout(Duration::from_secs(2))));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;
    let cell = child_of(&sup, "stubborn").await.actor.unwrap();
    probe.clear_log();

    let t0 = Instant::now();
    shut(&sup).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "killed before its timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "waited past its timeout: {took:?}"
    );
    assert_eq!(cell.get_status(), ActorStatus::Stopped);
    // It entered post_stop and never finished it; the sibling was stopped after it.
    assert_eq!(stubborn.stops_done.load(Ordering::SeqCst), 0);
    assert_eq!(probe.log(), vec!["stop:stubborn", "stop:a"]);
    assert_eq!(probe.stops_done.load(Ordering::SeqCst), 1);
    tree.join().await;
}

#[tokio::test]
async fn brutal_kill_skips_post_stop() {
    let name = uniq("brutal");
    let probe = Probe::default();
    let spec =
        no_backoff(Strategy::OneForOne).child(worker("a", &probe).shutdown(Shutdown::BrutalKill));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;
    let cell = child_of(&sup, "a").await.actor.unwrap();
    probe.clear_log();
    shut(&sup).await;
    assert_eq!(cell.get_status(), ActorStatus::Stopped);
    assert!(probe.log().is_empty(), "post_stop ran: {:?}", probe.log());
    tree.join().await;
}

#[tokio::test(start_paused = true)]
async fn crash_loop_exceeds_intensity_and_escalates() {
    let name = uniq("crash-loop");
    let probe = Probe::default();
    let looping = probe.sibling();
    // Default intensity (3 in 5 s) and default backoff (100 ms doubling).
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("steady", &probe))
        .child(worker("looping", &looping));
    let (sup, tree, board) = spawn_sup(&name, spec).await;
    let t0 = Instant::now();
    looping.crash_after_start.store(true, Ordering::SeqCst);
    send(&child_of(&sup, "looping").await, WorkerMsg::Panic);

    tree.join().await;
    // Three restarts were tolerated (100 + 200 + 400 ms of backoff), the fourth escalated.
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(board.get(&format!("{name}/looping")).unwrap().restarts, 3);
    let status = board.get(&name).unwrap();
    assert_eq!(status.state, State::Stopped);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("restart intensity exceeded")),
        "{status:?}"
    );
    // The sibling was stopped in order, not killed.
    assert_eq!(probe.stops_done.load(Ordering::SeqCst), 1);
    assert!(ractor::registry::where_is(name.clone()).is_none());
}

#[tokio::test]
async fn a_failed_restart_counts_as_a_restart() {
    let name = uniq("pre-start");
    let probe = Probe::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy::none())
        .intensity(RestartIntensity::new(2, Duration::from_secs(60)))
        .child(worker("a", &probe));
    let (sup, tree, board) = spawn_sup(&name, spec).await;

    // Every restart fails in pre_start: crash (1), failed start (2), failed start (3) > 2.
    probe.fail_starts.store(u32::MAX, Ordering::SeqCst);
    send(&child_of(&sup, "a").await, WorkerMsg::Panic);
    tree.join().await;
    assert_eq!(board.get(&format!("{name}/a")).unwrap().restarts, 2);
    let status = board.get(&name).unwrap();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("failed to start")),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_failed_restart_is_retried() {
    let name = uniq("retry");
    let probe = Probe::default();
    let (sup, tree, _board) = spawn_sup(
        &name,
        no_backoff(Strategy::OneForOne).child(worker("a", &probe)),
    )
    .await;
    let first = child_of(&sup, "a").await;
    probe.fail_starts.store(1, Ordering::SeqCst);
    send(&first, WorkerMsg::Panic);
    let info = wait_restarted(&sup, "a", actor_id(&first)).await;
    assert_eq!(info.restarts, 2, "the failed attempt and the good one");
    tree.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn intensity_window_slides() {
    let name = uniq("window");
    let probe = Probe::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy::none())
        .intensity(RestartIntensity::new(2, Duration::from_secs(5)))
        .child(worker("a", &probe));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;

    for round in 0..3 {
        for _ in 0..2 {
            let current = child_of(&sup, "a").await;
            send(&current, WorkerMsg::Panic);
            wait_restarted(&sup, "a", actor_id(&current)).await;
        }
        assert_eq!(child_of(&sup, "a").await.restarts, 2 * (round + 1));
        // The two restarts leave the window; without that the next crash would escalate.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert!(!tree.is_finished());
    tree.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_restarts_without_blocking_the_mailbox_and_resets() {
    let name = uniq("backoff");
    let probe = Probe::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy {
            min: Duration::from_secs(1),
            max: Duration::from_secs(4),
            jitter: 0.0,
            reset_after: Duration::from_secs(10),
        })
        .intensity(RestartIntensity::new(100, Duration::from_secs(1)))
        .child(worker("a", &probe));
    let (sup, tree, board) = spawn_sup(&name, spec).await;

    // Crash right after each restart: 1 s, 2 s, 4 s, 4 s (capped); then after a stable
    // period of 10 s the next delay is 1 s again.
    for expected in [1, 2, 4, 4, 1] {
        if expected == 1 && child_of(&sup, "a").await.restarts > 0 {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let current = child_of(&sup, "a").await;
        send(&current, WorkerMsg::Panic);
        let t0 = Instant::now();
        let delay = Duration::from_secs(expected);
        tokio::time::sleep_until(t0 + delay - Duration::from_millis(1)).await;
        // The supervisor answers while it waits, and reports the pending restart.
        let waiting = child_of(&sup, "a").await;
        assert!(!waiting.running && waiting.restart_pending, "{waiting:?}");
        assert!(matches!(
            board.get(&name).map(|s| s.state),
            Some(State::Degraded { .. })
        ));
        tokio::time::sleep_until(t0 + delay + Duration::from_millis(1)).await;
        let restarted = child_of(&sup, "a").await;
        assert!(
            restarted.running,
            "not restarted {expected} s after the crash: {restarted:?}"
        );
    }
    assert_eq!(board.get(&name).map(|s| s.state), Some(State::Idle));
    tree.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn jittered_delay_stays_within_its_bounds() {
    let name = uniq("jitter");
    let probe = Probe::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy {
            min: Duration::from_secs(2),
            max: Duration::from_secs(2),
            jitter: 0.5,
            reset_after: Duration::from_secs(60),
        })
        .child(worker("a", &probe));
    let (sup, tree, _board) = spawn_sup(&name, spec).await;
    let current = child_of(&sup, "a").await;
    send(&current, WorkerMsg::Panic);
    let t0 = Instant::now();
    let info = wait_restarted(&sup, "a", actor_id(&current)).await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    // Polling adds at most one step (the kit polls at most 50 ms apart).
    assert!(took <= Duration::from_millis(3050), "{took:?}");
    assert_eq!(info.restarts, 1);
    tree.shutdown().await;
}

#[tokio::test]
async fn nested_escalation_reaches_the_parent() {
    let name = uniq("parent");
    let probe = Probe::default();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy::none())
        .intensity(RestartIntensity::new(1, Duration::from_secs(60)))
        .child(worker("w", &probe));
    let spec = no_backoff(Strategy::OneForOne)
        .child(worker("sibling", &probe.sibling()))
        .child(ChildSpec::supervisor("inner", inner));
    let (sup, tree, board) = spawn_sup(&name, spec).await;
    let inner_before = child_of(&sup, "inner").await;
    let inner_ref: ActorRef<SupervisorMsg> = inner_before.actor.clone().unwrap().into();

    // Two crashes exceed the inner supervisor's intensity (1).
    let w = child_of(&inner_ref, "w").await;
    send(&w, WorkerMsg::Panic);
    let w = wait_restarted(&inner_ref, "w", actor_id(&w)).await;
    send(&w, WorkerMsg::Panic);

    let inner_after = wait_restarted(&sup, "inner", actor_id(&inner_before)).await;
    assert_eq!(inner_after.restarts, 1);
    assert!(
        matches!(&inner_after.last_exit, Some(ExitKind::Abnormal(e)) if e.contains("restart intensity exceeded")),
        "{inner_after:?}"
    );
    assert_eq!(board.get(&format!("{name}/inner")).unwrap().restarts, 1);
    // The new inner supervisor started a fresh worker under the same name.
    let inner_ref: ActorRef<SupervisorMsg> = inner_after.actor.clone().unwrap().into();
    let w_new = child_of(&inner_ref, "w").await;
    assert_eq!(w_new.restarts, 0);
    let found = ractor::registry::where_is(format!("{name}/inner/w")).unwrap();
    assert_eq!(found.get_id(), actor_id(&w_new));
    // The parent's other child was untouched.
    assert_eq!(child_of(&sup, "sibling").await.restarts, 0);

    tree.shutdown().await;
}

#[tokio::test]
async fn children_can_be_added_and_removed_at_run_time() {
    let name = uniq("dynamic");
    let probe = Probe::default();
    let (sup, tree, _board) = spawn_sup(
        &name,
        no_backoff(Strategy::OneForOne).child(worker("a", &probe)),
    )
    .await;

    start_child(&sup, worker("b", &probe.sibling()))
        .await
        .unwrap();
    assert_eq!(
        children_of(&sup)
            .await
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(ractor::registry::where_is(format!("{name}/b")).is_some());
    assert!(matches!(
        start_child(&sup, worker("b", &probe)).await,
        Err(SupervisorError::DuplicateChild { .. })
    ));
    assert!(matches!(
        start_child(&sup, worker("x/y", &probe)).await,
        Err(SupervisorError::InvalidChildId { .. })
    ));
    let failing = probe.sibling();
    failing.fail_starts.store(1, Ordering::SeqCst);
    assert!(matches!(
        start_child(&sup, worker("c", &failing)).await,
        Err(SupervisorError::StartFailed { .. })
    ));
    assert_eq!(
        children_of(&sup).await.len(),
        2,
        "a child that failed to start is not kept"
    );

    probe.clear_log();
    stop_child(&sup, "b").await.unwrap();
    assert_eq!(probe.log(), vec!["stop:b"]);
    assert_eq!(children_of(&sup).await.len(), 1);
    assert!(matches!(
        stop_child(&sup, "b").await,
        Err(SupervisorError::UnknownChild { .. })
    ));

    tree.shutdown().await;
    assert!(matches!(
        children(&sup, Some(PATIENCE)).await,
        Err(SupervisorError::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_child_failing_at_boot_fails_the_spawn_and_stops_the_others_in_reverse() {
    let name = uniq("boot");
    let probe = Probe::default();
    let bad = probe.sibling();
    bad.fail_starts.store(1, Ordering::SeqCst);
    let spec = no_backoff(Strategy::OneForOne)
        .child(worker("a", &probe))
        .child(worker("b", &probe.sibling()))
        .child(worker("c", &bad));
    let err = Supervisor::spawn(name.clone(), spec, StatusBoard::new())
        .await
        .expect_err("c cannot start");
    assert!(err.to_string().contains("child c failed to start"), "{err}");
    assert_eq!(probe.log(), vec!["start:a", "start:b", "stop:b", "stop:a"]);
    assert!(ractor::registry::where_is(name).is_none());
}

#[tokio::test]
async fn duplicate_child_ids_are_rejected() {
    let probe = Probe::default();
    let spec = no_backoff(Strategy::OneForOne)
        .child(worker("a", &probe))
        .child(worker("a", &probe));
    let err = Supervisor::spawn(uniq("dup"), spec, StatusBoard::new())
        .await
        .expect_err("duplicate ids");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(probe.log().is_empty(), "nothing was started");
}

#[tokio::test]
async fn exits_of_unknown_actors_are_ignored() {
    let name = uniq("unknown");
    let probe = Probe::default();
    let (sup, tree, _board) = spawn_sup(
        &name,
        no_backoff(Strategy::OneForOne).child(worker("a", &probe)),
    )
    .await;
    // An actor linked to the supervisor that is none of its children.
    let (stranger, stranger_handle) = Actor::spawn_linked(
        None,
        Worker {
            id: "stranger".into(),
        },
        probe.sibling(),
        sup.get_cell(),
    )
    .await
    .unwrap();
    stranger.send_message(WorkerMsg::Panic).unwrap();
    stranger_handle.await.unwrap();
    let info = child_of(&sup, "a").await;
    assert!(info.running);
    assert_eq!(info.restarts, 0);
    assert!(!tree.is_finished());
    tree.shutdown().await;
}

#[tokio::test]
async fn child_names_join_supervisor_and_child_ids() {
    let name = uniq("naming");
    let (sup, tree, _board) = spawn_sup(&name, no_backoff(Strategy::OneForOne)).await;
    let cell: ActorCell = sup.get_cell();
    assert_eq!(child_name(&cell, "press1"), format!("{name}/press1"));
    tree.shutdown().await;
}

/// `n` workers `w0`..`w<n-1>`, each with its own probe.
fn many_workers(spec: SupervisorSpec, n: usize) -> (SupervisorSpec, Vec<Probe>) {
    let probes: Vec<Probe> = (0..n).map(|_| Probe::default()).collect();
    let spec = probes
        .iter()
        .enumerate()
        .fold(spec, |spec, (i, p)| spec.child(worker(&format!("w{i}"), p)));
    (spec, probes)
}

#[tokio::test]
async fn per_child_intensity_absorbs_one_crash_of_each_of_many_children() {
    let name = uniq("per-child");
    let n = 200;
    // 3 restarts in 60 s, counted per child: 200 crashes in a moment do not add up.
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy::none())
        .intensity(RestartIntensity::new(3, Duration::from_secs(60)))
        .intensity_per_child();
    let (spec, _probes) = many_workers(spec, n);
    let (sup, tree, board) = spawn_sup(&name, spec).await;
    let before = children_of(&sup).await;
    for info in &before {
        send(info, WorkerMsg::Panic);
    }
    for info in &before {
        let after = wait_restarted(&sup, &info.id, actor_id(info)).await;
        assert_eq!(after.restarts, 1, "{after:?}");
    }
    assert!(!tree.is_finished(), "the supervisor gave up");
    assert!(board.get(&name).unwrap().last_error.is_none());
    tree.shutdown().await;
}

#[tokio::test]
async fn per_child_intensity_escalates_when_one_child_exceeds_its_own_budget() {
    let name = uniq("per-child-loop");
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy::none())
        .intensity(RestartIntensity::new(3, Duration::from_secs(60)))
        .intensity_per_child();
    let (spec, _probes) = many_workers(spec, 20);
    let (sup, tree, board) = spawn_sup(&name, spec).await;
    // Every other child crashes once: absorbed.
    for info in children_of(&sup).await.iter().skip(1) {
        send(info, WorkerMsg::Panic);
        wait_restarted(&sup, &info.id, actor_id(info)).await;
    }
    // w0 crashes four times: its fourth restart is past its own budget of 3.
    for _ in 0..3 {
        let current = child_of(&sup, "w0").await;
        send(&current, WorkerMsg::Panic);
        wait_restarted(&sup, "w0", actor_id(&current)).await;
    }
    assert!(
        !tree.is_finished(),
        "three restarts of w0 are within its budget"
    );
    send(&child_of(&sup, "w0").await, WorkerMsg::Panic);
    tree.join().await;
    let status = board.get(&name).unwrap();
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("restart intensity exceeded (more than 3 restarts of one child")
            && error.contains("child w0"),
        "{error}"
    );
}

#[tokio::test]
async fn supervisor_intensity_still_counts_all_children_by_default() {
    assert_eq!(
        SupervisorSpec::default().intensity_scope,
        IntensityScope::Supervisor
    );
    let name = uniq("per-sup");
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy::none())
        .intensity(RestartIntensity::new(3, Duration::from_secs(60)));
    let (spec, _probes) = many_workers(spec, 4);
    let (sup, tree, board) = spawn_sup(&name, spec).await;
    // Four unrelated children crash once each: the fourth restart escalates.
    let all = children_of(&sup).await;
    for info in &all[..3] {
        send(info, WorkerMsg::Panic);
        wait_restarted(&sup, &info.id, actor_id(info)).await;
    }
    send(&all[3], WorkerMsg::Panic);
    tree.join().await;
    let error = board.get(&name).unwrap().last_error.unwrap_or_default();
    assert!(
        error.contains("more than 3 restarts of all children") && error.contains("child w3"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn children_crashing_together_are_restarted_at_jittered_times() {
    let name = uniq("storm");
    let n = 100;
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .backoff(BackoffPolicy {
            min: Duration::from_secs(1),
            max: Duration::from_secs(1),
            jitter: 0.5,
            reset_after: Duration::from_secs(60),
        })
        .intensity_per_child();
    let (spec, probes) = many_workers(spec, n);
    let (sup, tree, _board) = spawn_sup(&name, spec).await;
    let before = children_of(&sup).await;
    // Paused time: every crash happens at the same instant.
    let crash = Instant::now();
    for info in &before {
        send(info, WorkerMsg::Panic);
    }
    for info in &before {
        wait_restarted(&sup, &info.id, actor_id(info)).await;
    }
    let mut delays: Vec<Duration> = probes
        .iter()
        .map(|p| {
            let starts = p.started_at.lock();
            assert_eq!(starts.len(), 2, "one start and one restart");
            starts[1] - crash
        })
        .collect();
    delays.sort_unstable();
    // Each delay is the base (1 s) plus its own jitter of up to 50 %...
    assert!(delays[0] >= Duration::from_secs(1), "{delays:?}");
    assert!(delays[n - 1] <= Duration::from_millis(1_501), "{delays:?}");
    // ... so the restarts are spread over the jitter range, not bunched in one instant.
    let spread = delays[n - 1] - delays[0];
    assert!(
        spread >= Duration::from_millis(300),
        "spread {spread:?}: {delays:?}"
    );
    let mut distinct = delays.clone();
    distinct.dedup_by(|a, b| a.abs_diff(*b) < Duration::from_millis(1));
    assert!(
        distinct.len() >= n / 2,
        "{} distinct ms of {n}",
        distinct.len()
    );
    tree.shutdown().await;
}

mod model {
    //! A model test: random strategies, restart types and exit sequences against a few lines
    //! of reference logic (no backoff, unbounded intensity).

    use proptest::prelude::{Just, ProptestConfig, TestCaseError, prop};
    use proptest::strategy::Strategy as Gen;
    use proptest::{prop_assert_eq, prop_oneof, proptest};

    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Exit {
        Fail,
        Normal,
        Kill,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct ModelChild {
        restart: RestartType,
        running: bool,
        restarts: u32,
    }

    fn model_exit(strategy: Strategy, kids: &mut [ModelChild], k: usize, exit: Exit) {
        let abnormal = !matches!(exit, Exit::Normal);
        kids[k].running = false;
        let restart = match kids[k].restart {
            RestartType::Permanent => true,
            RestartType::Transient => abnormal,
            RestartType::Temporary => false,
        };
        if !restart {
            return;
        }
        let group: Vec<usize> = match strategy {
            Strategy::OneForOne => vec![k],
            Strategy::OneForAll => (0..kids.len()).collect(),
            Strategy::RestForOne => (k..kids.len()).collect(),
        };
        for j in group {
            if j != k && !kids[j].running {
                continue; // ended for good earlier
            }
            if j != k && kids[j].restart == RestartType::Temporary {
                kids[j].running = false;
            } else {
                kids[j].running = true;
                kids[j].restarts += 1;
            }
        }
    }

    fn restart_type() -> impl Gen<Value = RestartType> {
        prop_oneof![
            Just(RestartType::Permanent),
            Just(RestartType::Transient),
            Just(RestartType::Temporary)
        ]
    }

    fn strategy() -> impl Gen<Value = Strategy> {
        prop_oneof![
            Just(Strategy::OneForOne),
            Just(Strategy::OneForAll),
            Just(Strategy::RestForOne)
        ]
    }

    fn exit() -> impl Gen<Value = Exit> {
        prop_oneof![Just(Exit::Fail), Just(Exit::Normal), Just(Exit::Kill)]
    }

    async fn run_case(
        strategy: Strategy,
        types: Vec<RestartType>,
        ops: Vec<(usize, Exit)>,
    ) -> Result<(), TestCaseError> {
        let name = uniq("model");
        let probe = Probe::default();
        let mut spec = SupervisorSpec::new(strategy)
            .backoff(BackoffPolicy::none())
            .intensity(RestartIntensity::new(u32::MAX, Duration::from_secs(1)));
        for (i, t) in types.iter().enumerate() {
            spec = spec.child(worker(&format!("c{i}"), &probe.sibling()).restart(*t));
        }
        let (sup, tree, _board) = spawn_sup(&name, spec).await;
        let mut model: Vec<ModelChild> = types
            .iter()
            .map(|&restart| ModelChild {
                restart,
                running: true,
                restarts: 0,
            })
            .collect();
        for (k, exit) in ops {
            let k = k % types.len();
            let before = children_of(&sup).await;
            let Some(cell) = before[k].actor.clone() else {
                continue;
            };
            match exit {
                Exit::Fail => cell.send_message(WorkerMsg::Fail).unwrap(),
                Exit::Normal => cell.send_message(WorkerMsg::Exit).unwrap(),
                Exit::Kill => cell.kill(),
            }
            // The exit report reaches the supervisor before the actor counts as stopped, and
            // supervision events are handled before the next `Children` request.
            tokio::time::timeout(PATIENCE, cell.wait(None))
                .await
                .expect("child exits")
                .unwrap();
            model_exit(strategy, &mut model, k, exit);
            let after = children_of(&sup).await;
            for (j, (info, m)) in after.iter().zip(&model).enumerate() {
                prop_assert_eq!(
                    info.running,
                    m.running,
                    "child c{} after {:?} of c{}",
                    j,
                    exit,
                    k
                );
                prop_assert_eq!(
                    info.restarts,
                    m.restarts,
                    "child c{} after {:?} of c{}",
                    j,
                    exit,
                    k
                );
                if let Some(actor) = &info.actor {
                    // Stable identity: the registry resolves the name to this incarnation.
                    let found = ractor::registry::where_is(info.name.clone()).map(|c| c.get_id());
                    prop_assert_eq!(found, Some(actor.get_id()));
                }
            }
        }
        tree.shutdown().await;
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn restarts_follow_the_model(
            strategy in strategy(),
            types in prop::collection::vec(restart_type(), 1..5),
            ops in prop::collection::vec((0usize..5, exit()), 1..10),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(run_case(strategy, types, ops))?;
        }
    }
}
