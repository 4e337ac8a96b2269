//! Sim behaviour under paused time: data, commands, schedules and publish failures.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use ractor::{ActorCell, SupervisionEvent};
use tokio::sync::mpsc;

use super::*;

#[derive(Default)]
struct TestSink {
    events: Mutex<Vec<Envelope>>,
    failing: AtomicBool,
}

impl EventSink for TestSink {
    fn publish(&self, event: Envelope) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err("bus unavailable".to_owned());
            }
            self.events.lock().push(event);
            Ok(())
        })
    }
}

/// A parent that reports its children's exits, to see a sim fail.
struct Parent(mpsc::UnboundedSender<String>);

impl Actor for Parent {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let what = match event {
            SupervisionEvent::ActorFailed(_, e) => format!("failed: {e}"),
            SupervisionEvent::ActorTerminated(..) => "terminated".to_owned(),
            _ => return Ok(()),
        };
        let _ = self.0.send(what);
        Ok(())
    }
}

struct Fixture {
    name: String,
    board: StatusBoard,
    sink: Arc<TestSink>,
    exits: mpsc::UnboundedReceiver<String>,
    _parent: ActorRef<()>,
}

fn spec(name: &str, schedule: FaultSchedule) -> SimSpec {
    SimSpec {
        name: name.to_owned(),
        interval: Duration::from_millis(100),
        tags: vec![
            ("temperature".into(), format!("mw.ev.{name}.temperature")),
            ("pressure".into(), format!("mw.ev.{name}.pressure")),
        ],
        idle_window: Duration::from_secs(2),
        schedule: FaultSchedule {
            hang_for: Duration::from_secs(10),
            degrade_for: Duration::from_secs(1),
            ..schedule
        },
    }
}

async fn start(spec: SimSpec) -> Fixture {
    let (tx, exits) = mpsc::unbounded_channel();
    let (parent, _) = Actor::spawn(None, Parent(tx), ()).await.unwrap();
    let board = StatusBoard::new();
    let sink = Arc::new(TestSink::default());
    let name = format!("test/sims/{}", spec.name);
    let args = SimArgs {
        spec: Arc::new(spec),
        component_id: name.clone(),
        board: board.clone(),
        sink: sink.clone(),
    };
    Actor::spawn_linked(Some(name.clone()), Sim, args, parent.get_cell())
        .await
        .unwrap();
    Fixture {
        name,
        board,
        sink,
        exits,
        _parent: parent,
    }
}

impl Fixture {
    fn state(&self) -> State {
        self.board.get(&self.name).unwrap().state
    }

    /// Lets the sim run for `d` of (paused) time.
    async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

fn cell(name: &str) -> Option<ActorCell> {
    ractor::registry::where_is(name)
}

#[tokio::test(start_paused = true)]
async fn publishes_every_tag_and_turns_active() {
    let f = start(spec("pub1", FaultSchedule::default())).await;
    assert_eq!(f.state(), State::Idle, "idle right after start");
    f.run_for(Duration::from_millis(350)).await;
    let events = f.sink.events.lock().clone();
    assert!(events.len() >= 6, "3 ticks x 2 tags, got {}", events.len());
    assert_eq!(events[0].source, "pub1");
    assert_eq!(events[0].subject, "mw.ev.pub1.temperature");
    assert_eq!(events[1].subject, "mw.ev.pub1.pressure");
    assert!(events[0].payload.is_f64());
    assert!(events[0].source_time.is_some());
    assert_eq!(f.state(), State::Active);
}

#[tokio::test(start_paused = true)]
async fn degrade_and_recover_commands() {
    let f = start(spec("deg1", FaultSchedule::default())).await;
    command(&f.name, SimCommand::Degrade).await.unwrap();
    let state = ping(&f.name, Duration::from_secs(1)).await.unwrap();
    assert_eq!(state.base_name(), "degraded");
    assert_eq!(state.reason(), Some("simulated degradation: commanded"));
    f.run_for(Duration::from_millis(300)).await;
    assert_eq!(
        f.state().base_name(),
        "degraded",
        "data does not heal a commanded degradation"
    );
    command(&f.name, SimCommand::Recover).await.unwrap();
    f.run_for(Duration::from_millis(150)).await;
    assert_eq!(f.state(), State::Active);
}

#[tokio::test(start_paused = true)]
async fn a_hung_sim_does_not_answer_until_the_hang_ends() {
    let f = start(spec("hang1", FaultSchedule::default())).await;
    command(&f.name, SimCommand::Hang).await.unwrap();
    let err = ping(&f.name, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, SimError::Timeout { .. }), "{err}");
    let before = f.sink.events.lock().len();
    f.run_for(Duration::from_secs(5)).await;
    assert_eq!(f.sink.events.lock().len(), before, "no data while hung");
    f.run_for(Duration::from_secs(5)).await;
    assert!(ping(&f.name, Duration::from_secs(1)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn fail_command_panics_so_the_parent_sees_a_failure() {
    let mut f = start(spec("fail1", FaultSchedule::default())).await;
    command(&f.name, SimCommand::Fail).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), f.exits.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.starts_with("failed:"), "{exit}");
    assert!(
        exit.contains("simulated failure of fail1: commanded"),
        "{exit}"
    );
    assert!(cell(&f.name).is_none());
    assert!(matches!(
        command(&f.name, SimCommand::Recover).await,
        Err(SimError::NotRunning(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn scheduled_failure_happens_after_its_delay_only() {
    let mut f = start(spec(
        "sched1",
        FaultSchedule {
            fail_every: Some(Duration::from_secs(3)),
            ..FaultSchedule::default()
        },
    ))
    .await;
    f.run_for(Duration::from_millis(2_900)).await;
    assert!(f.exits.try_recv().is_err(), "still running before 3s");
    let exit = tokio::time::timeout(Duration::from_secs(1), f.exits.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.contains("scheduled after 3s"), "{exit}");
}

#[tokio::test(start_paused = true)]
async fn scheduled_degradation_comes_and_goes() {
    let f = start(spec(
        "sched2",
        FaultSchedule {
            degrade_every: Some(Duration::from_secs(3)),
            ..FaultSchedule::default()
        },
    ))
    .await;
    f.run_for(Duration::from_millis(2_950)).await;
    assert_eq!(f.state(), State::Active);
    f.run_for(Duration::from_millis(200)).await;
    let s = f.state();
    assert_eq!(s.base_name(), "degraded");
    assert_eq!(
        s.reason(),
        Some("simulated degradation: scheduled every 3s for 1s")
    );
    f.run_for(Duration::from_millis(1_100)).await;
    assert_eq!(f.state(), State::Active, "recovered after degrade_for");
}

#[tokio::test(start_paused = true)]
async fn scheduled_hang_happens_once() {
    let f = start(spec(
        "sched3",
        FaultSchedule {
            hang_after: Some(Duration::from_secs(1)),
            ..FaultSchedule::default()
        },
    ))
    .await;
    f.run_for(Duration::from_millis(1_150)).await;
    assert!(ping(&f.name, Duration::from_secs(1)).await.is_err(), "hung");
    f.run_for(Duration::from_secs(10)).await;
    assert!(
        ping(&f.name, Duration::from_secs(1)).await.is_ok(),
        "answers after hang_for"
    );
    f.run_for(Duration::from_secs(2)).await;
    assert!(
        ping(&f.name, Duration::from_secs(1)).await.is_ok(),
        "does not hang again"
    );
}

#[tokio::test(start_paused = true)]
async fn publish_failure_degrades_until_publishing_works() {
    let f = start(spec("pubfail", FaultSchedule::default())).await;
    f.sink.failing.store(true, Ordering::SeqCst);
    f.run_for(Duration::from_millis(150)).await;
    let s = f.state();
    assert_eq!(s.reason(), Some("publish failed: bus unavailable"));
    f.sink.failing.store(false, Ordering::SeqCst);
    f.run_for(Duration::from_millis(250)).await;
    assert_eq!(f.state(), State::Active);
}

#[tokio::test(start_paused = true)]
async fn paused_sim_turns_idle_after_the_window() {
    let f = start(spec("pause1", FaultSchedule::default())).await;
    f.run_for(Duration::from_millis(250)).await;
    assert_eq!(f.state(), State::Active);
    command(&f.name, SimCommand::Pause).await.unwrap();
    f.run_for(Duration::from_millis(1_500)).await;
    assert_eq!(f.state(), State::Active, "still inside the 2s idle window");
    f.run_for(Duration::from_millis(1_000)).await;
    assert_eq!(f.state(), State::Idle);
    command(&f.name, SimCommand::Resume).await.unwrap();
    f.run_for(Duration::from_millis(250)).await;
    assert_eq!(f.state(), State::Active);
}

#[test]
fn commands_parse_from_their_names() {
    for c in SimCommand::ALL {
        assert_eq!(c.as_str().parse::<SimCommand>().unwrap(), c);
    }
    let e = "explode".parse::<SimCommand>().unwrap_err();
    assert!(e.to_string().contains("expected fail, hang"));
    let c: SimCommand = serde_json::from_str("\"degrade\"").unwrap();
    assert_eq!(c, SimCommand::Degrade);
}
