//! The table, the board and the handle together.

use std::time::Duration;

use super::*;

fn degraded(reason: &str) -> Event {
    Event::Degrade {
        facet: None,
        reason: reason.to_owned(),
    }
}

/// Walks `events` from `to_be_created` through the table.
fn walk(events: &[Event]) -> Result<State, IllegalTransition> {
    events.iter().try_fold(State::ToBeCreated, |s, e| s.next(e))
}

const UP: [Event; 4] = [
    Event::Create,
    Event::Created,
    Event::Start,
    Event::StartDone,
];

#[test]
fn full_lifecycle_walks_every_state() {
    let mut s = walk(&UP).unwrap();
    assert_eq!(s, State::Idle);
    s = s.next(&Event::DataReceived).unwrap();
    assert_eq!(s, State::Active);
    s = s
        .next(&Event::Degrade {
            facet: Some("connection".into()),
            reason: "probe timeout".into(),
        })
        .unwrap();
    assert_eq!(s.name(), "degraded_connection");
    assert_eq!(s.reason(), Some("probe timeout"));
    for (e, want) in [
        (Event::Recovered, State::Idle),
        (Event::Stop, State::Stopping),
        (Event::StopDone, State::Stopped),
        (Event::Remove, State::Removing),
        (Event::RemoveDone, State::Removed),
    ] {
        s = s.next(&e).unwrap();
        assert_eq!(s, want);
    }
}

#[test]
fn illegal_transitions_are_rejected() {
    let err = State::ToBeCreated.next(&Event::DataReceived).unwrap_err();
    assert_eq!(err.from, State::ToBeCreated);
    let idle = walk(&UP).unwrap();
    assert!(idle.next(&Event::StartDone).is_err());
    assert!(idle.next(&Event::Recovered).is_err());
    assert!(
        idle.next(&Event::Remove).is_err(),
        "a running component must stop before removal"
    );
    assert!(State::ToBeCreated.next(&Event::Start).is_err());
}

#[test]
fn start_failure_returns_to_stopped_and_phases_are_named() {
    let s = walk(&[Event::Create, Event::Created, Event::Start]).unwrap();
    let s = s.next(&Event::StartPhase("connection".into())).unwrap();
    assert_eq!(s.name(), "starting_connection");
    assert_eq!(
        s.next(&Event::StartFailed("refused".into())).unwrap(),
        State::Stopped
    );
}

#[test]
fn an_exit_stops_a_running_component_and_a_finished_one_stays_finished() {
    let active = walk(&UP).unwrap().next(&Event::DataReceived).unwrap();
    assert_eq!(active.next(&Event::Exited).unwrap(), State::Stopped);
    let finished = active.next(&Event::Finish).unwrap();
    assert_eq!(finished.name(), "finished");
    assert_eq!(finished.next(&Event::Exited).unwrap(), State::Finished);
    assert!(finished.is_healthy() && !finished.is_running());
    assert!(State::ToBeCreated.next(&Event::Exited).is_err());
}

#[test]
fn aggregate_follows_priority_rules() {
    let deg = State::Degraded {
        facet: None,
        reason: "probe timeout".into(),
    };
    let starting = State::Starting { phase: None };
    assert_eq!(
        aggregate([("connection", &starting), ("flow", &State::Stopped)]).name(),
        "starting_connection"
    );
    let s = aggregate([("connection", &deg), ("flow", &State::Active)]);
    assert_eq!(s.name(), "degraded_connection");
    assert_eq!(s.reason(), Some("connection degraded: probe timeout"));
    assert_eq!(
        aggregate([("connection", &State::Idle), ("flow", &State::Active)]),
        State::Active
    );
    assert_eq!(
        aggregate([("connection", &State::Idle), ("flow", &State::Idle)]),
        State::Idle
    );
    assert_eq!(
        aggregate([("connection", &State::Stopped), ("flow", &State::Stopped)]),
        State::Stopped
    );
    assert_eq!(
        aggregate([("connection", &State::Idle), ("flow", &State::Stopped)]).name(),
        "degraded_flow"
    );
    assert_eq!(
        aggregate([("connection", &State::Stopping), ("flow", &deg)]),
        State::Stopping
    );
    // The part that is gone is named, not the healthy one.
    assert_eq!(
        aggregate([("connection", &State::Idle), ("flow", &State::Removed)]).name(),
        "degraded_flow"
    );
    // A part that ran to its end is left out.
    assert_eq!(
        aggregate([("self", &State::Idle), ("line1", &State::Finished)]),
        State::Idle
    );
    assert_eq!(aggregate([("line1", &State::Finished)]), State::Finished);
}

#[test]
fn state_serializes_with_its_tag() {
    let s = State::Degraded {
        facet: Some("connection".into()),
        reason: "x".into(),
    };
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["state"], "degraded");
    assert_eq!(v["facet"], "connection");
    assert_eq!(serde_json::from_value::<State>(v).unwrap(), s);
}

fn running(board: &StatusBoard, id: &str) -> Lifecycle {
    let mut l = Lifecycle::begin(board, id, "worker", DEFAULT_IDLE_WINDOW);
    l.apply(Event::Start).unwrap();
    l.apply(Event::StartDone).unwrap();
    l
}

#[test]
fn the_board_changes_state_only_through_the_table() {
    let board = StatusBoard::recording();
    let mut l = running(&board, "n/a");
    let err = l.apply(Event::StartDone).unwrap_err();
    assert_eq!(err.from, State::Idle);
    assert_eq!(board.get("n/a").unwrap().state, State::Idle);
    assert_eq!(board.rejected_transitions(), 1);
    assert!(board.apply("n/unknown", Event::Start).is_err());
    assert_eq!(
        board.history("n/a").unwrap(),
        [
            State::ToBeCreated,
            State::Creating,
            State::Stopped,
            State::Starting { phase: None },
            State::Idle
        ]
    );
}

#[test]
fn a_new_incarnation_begins_from_stopped_through_the_table() {
    let board = StatusBoard::recording();
    let mut l = running(&board, "n/a");
    l.record_data();
    // Its supervisor has not recorded the crash yet: the new incarnation does, as an exit.
    let l2 = Lifecycle::begin(&board, "n/a", "worker", DEFAULT_IDLE_WINDOW);
    assert_eq!(l2.state(), &State::Stopped);
    let history = board.history("n/a").unwrap();
    assert_eq!(
        &history[history.len() - 2..],
        [State::Active, State::Stopped]
    );
}

#[test]
fn observations_sit_beside_the_state_and_fold_into_health() {
    let board = StatusBoard::new();
    board.register_composite("n", "supervisor");
    let mut sup = Lifecycle::begin(&board, "n", "supervisor", DEFAULT_IDLE_WINDOW);
    sup.apply(Event::Start).unwrap();
    sup.apply(Event::StartDone).unwrap();
    let mut m1 = running(&board, "n/m1");
    m1.record_data();
    let mut rx = board.subscribe();

    board.observe(
        "n/m1",
        Observation::new("watchdog", "not answering: no reply within 5s"),
    );
    let s = board.get("n/m1").unwrap();
    assert_eq!(s.state, State::Active, "the FSM state is not overwritten");
    assert_eq!(s.health, Health::Degraded);
    assert_eq!(s.observations[0].source, "watchdog");
    let n = board.get("n").unwrap();
    assert_eq!(n.state_name, "degraded_m1");
    assert_eq!(
        n.state.reason(),
        Some("m1 degraded: not answering: no reply within 5s")
    );
    let change = rx.try_recv().unwrap();
    assert_eq!(change.status.id, "n/m1");
    assert_eq!(change.previous.as_deref(), Some("active"));
    assert_eq!(change.status.observations.len(), 1);

    board.clear_observation("n/m1", "watchdog");
    let s = board.get("n/m1").unwrap();
    assert!(s.observations.is_empty());
    assert_eq!(s.health, Health::Healthy);
    assert_eq!(board.get("n").unwrap().state, State::Active);
}

#[test]
fn a_composite_shows_the_aggregate_of_itself_and_its_children_up_the_tree() {
    let board = StatusBoard::new();
    for id in ["n", "n/sims"] {
        board.register_composite(id, "supervisor");
        let mut s = Lifecycle::begin(&board, id, "supervisor", DEFAULT_IDLE_WINDOW);
        s.apply(Event::Start).unwrap();
        s.apply(Event::StartDone).unwrap();
    }
    let mut m1 = running(&board, "n/sims/m1");
    let mut m2 = running(&board, "n/sims/m2");
    m1.record_data();
    // A worker known only from its restarts does not count.
    board.record_restart("n/sims/plain", "boom");
    assert_eq!(board.get("n/sims").unwrap().state, State::Active);

    m2.apply(degraded("probe timeout")).unwrap();
    let sims = board.get("n/sims").unwrap();
    assert_eq!(sims.state_name, "degraded_m2");
    assert_eq!(sims.state.reason(), Some("m2 degraded: probe timeout"));
    assert_eq!(
        sims.last_error, None,
        "a child's reason is not the composite's error"
    );
    assert_eq!(
        board.get("n").unwrap().state_name,
        "degraded_sims",
        "and up the tree"
    );

    m2.apply(Event::Recovered).unwrap();
    assert_eq!(board.get("n/sims").unwrap().state, State::Active);
    assert_eq!(board.get("n").unwrap().state, State::Active);

    // A finished child does not count against its supervisor.
    m1.apply(Event::Finish).unwrap();
    assert_eq!(board.get("n/sims").unwrap().state, State::Idle);
    assert_eq!(board.get("n/sims").unwrap().health, Health::Healthy);

    // Its own trouble comes first, and is its last error.
    board
        .apply("n/sims", degraded("restarting child m1"))
        .unwrap();
    let sims = board.get("n/sims").unwrap();
    assert_eq!(sims.state.reason(), Some("restarting child m1"));
    assert_eq!(sims.last_error.as_deref(), Some("restarting child m1"));
}

#[test]
fn restarts_and_errors_survive_a_new_incarnation() {
    let board = StatusBoard::new();
    let _ = running(&board, "n/press1");
    board.record_restart("n/press1", "panicked: boom");
    let l = Lifecycle::begin(&board, "n/press1", "worker", DEFAULT_IDLE_WINDOW);
    let s = board.get("n/press1").unwrap();
    assert_eq!(s.restarts, 1);
    assert_eq!(s.last_error.as_deref(), Some("panicked: boom"));
    assert_eq!(l.state(), &State::Stopped);
}

#[tokio::test]
async fn changes_are_broadcast_with_previous_state() {
    let board = StatusBoard::new();
    let mut rx = board.subscribe();
    let mut l = running(&board, "a");
    l.apply(degraded("slow")).unwrap();
    let first = rx.recv().await.unwrap();
    assert_eq!(first.previous, None);
    let mut last = first;
    while let Ok(c) = rx.try_recv() {
        last = c;
    }
    assert_eq!(last.previous.as_deref(), Some("idle"));
    assert_eq!(last.status.state_name, "degraded");
    assert_eq!(last.status.last_error.as_deref(), Some("slow"));
}

#[tokio::test(start_paused = true)]
async fn active_falls_back_to_idle_after_the_window_only() {
    let board = StatusBoard::new();
    let mut l = Lifecycle::begin(&board, "a", "worker", Duration::from_secs(30));
    l.apply(Event::Start).unwrap();
    l.apply(Event::StartDone).unwrap();
    l.record_data();
    assert_eq!(l.state(), &State::Active);
    tokio::time::advance(Duration::from_secs(29)).await;
    l.tick();
    assert_eq!(l.state(), &State::Active);
    l.record_data();
    tokio::time::advance(Duration::from_secs(29)).await;
    l.tick();
    assert_eq!(l.state(), &State::Active, "new data restarts the window");
    tokio::time::advance(Duration::from_secs(1)).await;
    l.tick();
    assert_eq!(l.state(), &State::Idle);
    assert_eq!(board.get("a").unwrap().state, State::Idle);
}

#[test]
fn snapshot_serializes_state_fields_flat() {
    let board = StatusBoard::new();
    board.register("a", "worker");
    let v = serde_json::to_value(board.snapshot()).unwrap();
    assert_eq!(v[0]["id"], "a");
    assert_eq!(v[0]["state"], "to_be_created");
    assert_eq!(v[0]["health"], "down");
    assert_eq!(v[0]["restarts"], 0);
}
