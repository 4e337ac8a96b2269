//! The connector actor with real parts: the SDK's test connectors and test plugins here, the
//! broker on the embedded bus with its disk queue in a temp dir, and the supervisor.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use millwright_plugin_sdk::connector::{
    AckToken, Connector, ConnectorError, Plugin, Source, SourceBatch,
};
use millwright_plugin_sdk::context::Context;
use millwright_plugin_sdk::event::Envelope;
use millwright_plugin_sdk::harness::{VEC_SOURCE, VecSource};
use millwright_plugin_sdk::plugin_vtable;
use parking_lot::Mutex;
use ractor::Actor;
use schemars::JsonSchema;
use serde::Deserialize;

use super::*;
use millwright_broker::BrokerOptions;
use millwright_bus::Bus;
use millwright_kernel::supervisor::{
    ChildSpec, RestartIntensity, Strategy, SupervisorSpec, child_name,
};
use millwright_kernel::testkit::{PATIENCE as WAIT, Tree, wait_state, wait_until};

struct Rig {
    bus: Bus,
    broker: BrokerHandle,
    board: StatusBoard,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::embedded();
    let board = StatusBoard::new();
    let id = format!("c{}/broker", millwright_plugin_sdk::event::EventId::new());
    let (broker, _) = millwright_broker::actor::spawn(
        &id,
        BrokerOptions::new(dir.path()),
        bus.clone(),
        board.clone(),
    )
    .await
    .unwrap();
    Rig {
        bus,
        broker,
        board,
        _dir: dir,
    }
}

fn spec(instance: &str, plugin: &str, config: serde_json::Value) -> Arc<ConnectorSpec> {
    Arc::new(ConnectorSpec {
        instance: instance.to_owned(),
        plugin: plugin.to_owned(),
        config,
        subject_prefix: "mw".into(),
        kinds: vec![millwright_plugin_sdk::connector::Kind::Source],
        max_batch: 64,
        poll_interval: Duration::from_millis(10),
        backoff: BackoffPolicy {
            min: Duration::from_millis(10),
            max: Duration::from_millis(50),
            ..BackoffPolicy::default()
        },
        republish_delay: Duration::from_millis(10),
        idle_window: Duration::from_secs(30),
    })
}

/// The degradation reason `id` shows once it reaches the state named `want`.
async fn reason_at(board: &StatusBoard, id: &str, want: &str) -> String {
    let status = wait_state(board, id, want).await;
    status.state.reason().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_publishes_every_event_in_order_through_the_broker() {
    let rig = rig().await;
    let mut sub = rig.bus.subscribe("mw.ev.s1.>").await.unwrap();
    let values: Vec<u64> = (0..1000).collect();
    let args = ConnectorArgs {
        spec: spec("s1", "vec", serde_json::json!({ "values": values })),
        component_id: "n/connectors/s1".into(),
        board: rig.board.clone(),
        broker: rig.broker.clone(),
        transport: Arc::new(|| {
            Box::new(StaticTransport::<VecSource>::new(
                VEC_SOURCE,
                "s1",
                serde_json::json!({ "values": (0..1000).collect::<Vec<u64>>() }),
            ))
        }),
    };
    Actor::spawn(None, ConnectorActor, args).await.unwrap();
    for want in 0..1000u64 {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        let env = Envelope::from_json_slice(&msg.payload).unwrap();
        assert_eq!(env.payload, want, "in order, none missing");
        assert_eq!(env.subject, "mw.ev.s1.value");
    }
    wait_state(&rig.board, "n/connectors/s1", "active").await;
}

/// Connection attempts before a `Flaky` source connects, and what it emitted, per instance.
static FLAKY: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Mutex::default);

#[derive(Deserialize, JsonSchema)]
struct FlakyConfig {
    /// Failed connects before one succeeds.
    fail_connects: u32,
}

struct Flaky {
    fail_connects: u32,
    sent: bool,
}

impl Plugin for Flaky {
    type Config = FlakyConfig;
    const ID: &'static str = "flaky";
    const VERSION: &'static str = "0.0.1";
    const DESCRIPTION: &'static str = "fails to connect a few times";
    fn new(c: FlakyConfig, _: &Context) -> Result<Self, ConnectorError> {
        Ok(Self {
            fail_connects: c.fail_connects,
            sent: false,
        })
    }
}

impl Connector for Flaky {
    async fn connect(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        let mut tries = FLAKY.lock();
        let n = tries.entry(ctx.instance().to_owned()).or_insert(0);
        *n += 1;
        if *n <= self.fail_connects {
            return Err(ConnectorError::NotConnected(format!(
                "connection refused (try {n})"
            )));
        }
        Ok(())
    }
}

impl Source for Flaky {
    async fn read_batch(&mut self, ctx: &Context, _: usize) -> Result<SourceBatch, ConnectorError> {
        let events = if self.sent {
            vec![]
        } else {
            self.sent = true;
            vec![Envelope::new(
                ctx.instance(),
                format!("mw.ev.{}.up", ctx.instance()),
                1.into(),
            )]
        };
        Ok(SourceBatch::new(AckToken(1), events))
    }
    async fn ack(&mut self, _: &Context, _: AckToken) -> Result<(), ConnectorError> {
        Ok(())
    }
}

plugin_vtable!(FLAKY_VT: Flaky, source);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_connect_backs_off_degraded_then_recovers_without_a_crash() {
    let rig = rig().await;
    let mut sub = rig.bus.subscribe("mw.ev.f1.>").await.unwrap();
    let config = serde_json::json!({ "fail_connects": 3 });
    let transport_config = config.clone();
    let args = ConnectorArgs {
        spec: spec("f1", "flaky", config),
        component_id: "n/connectors/f1".into(),
        board: rig.board.clone(),
        broker: rig.broker.clone(),
        transport: Arc::new(move || {
            Box::new(StaticTransport::<Flaky>::new(
                &FLAKY_VT,
                "f1",
                transport_config.clone(),
            ))
        }),
    };
    let (actor, _) = Actor::spawn(None, ConnectorActor, args).await.unwrap();
    let reason = reason_at(&rig.board, "n/connectors/f1", "degraded_connection").await;
    assert!(reason.contains("connection refused"), "{reason}");
    assert!(
        reason.contains("retrying in"),
        "says what happens next: {reason}"
    );
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject, "mw.ev.f1.up");
    assert_eq!(FLAKY.lock()["f1"], 4, "three refusals, then a connect");
    wait_state(&rig.board, "n/connectors/f1", "active").await;
    assert_eq!(
        actor.get_status(),
        ractor::ActorStatus::Running,
        "never crashed"
    );
    assert_eq!(rig.board.get("n/connectors/f1").unwrap().restarts, 0);
}

/// The acknowledged position of each `Panicky` instance: it survives the instance.
static ACKED: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Mutex::default);
static PANICKED: LazyLock<Mutex<bool>> = LazyLock::new(Mutex::default);

#[derive(Deserialize, JsonSchema)]
struct PanickyConfig {
    /// Emit 0..total.
    total: u64,
    /// Panic once, in the read that would start at this value.
    panic_at: u64,
}

struct Panicky {
    total: u64,
    panic_at: u64,
    next: u64,
}

impl Plugin for Panicky {
    type Config = PanickyConfig;
    const ID: &'static str = "panicky";
    const VERSION: &'static str = "0.0.1";
    const DESCRIPTION: &'static str = "panics once inside read_batch";
    fn new(c: PanickyConfig, _: &Context) -> Result<Self, ConnectorError> {
        Ok(Self {
            total: c.total,
            panic_at: c.panic_at,
            next: 0,
        })
    }
}

impl Connector for Panicky {
    async fn connect(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        // Resume after what was acknowledged, like a real source with a committed offset.
        self.next = ACKED.lock().get(ctx.instance()).copied().unwrap_or(0);
        Ok(())
    }
}

impl Source for Panicky {
    async fn read_batch(
        &mut self,
        ctx: &Context,
        max: usize,
    ) -> Result<SourceBatch, ConnectorError> {
        if self.next >= self.panic_at && !std::mem::replace(&mut *PANICKED.lock(), true) {
            panic!("simulated bug in read_batch at {}", self.next);
        }
        if self.next >= self.total {
            return Err(ConnectorError::EndOfInput);
        }
        let end = (self.next + max as u64).min(self.total);
        let subject = format!("mw.ev.{}.seq", ctx.instance());
        let events = (self.next..end)
            .map(|v| Envelope::new(ctx.instance(), subject.clone(), v.into()))
            .collect();
        // Read but not acknowledged yet: a crash before `ack` re-reads from the last ack.
        self.next = end;
        Ok(SourceBatch::new(AckToken(end), events))
    }
    async fn ack(&mut self, ctx: &Context, token: AckToken) -> Result<(), ConnectorError> {
        ACKED.lock().insert(ctx.instance().to_owned(), token.0);
        Ok(())
    }
}

plugin_vtable!(PANICKY_VT: Panicky, source);

/// A `Panicky` connector instance `id` as a worker child, spawned under the stable name its
/// supervisor gives it.
fn panicky_child(rig: &Rig, id: &'static str, config: serde_json::Value) -> ChildSpec {
    let spec = spec(id, "panicky", config.clone());
    let board = rig.board.clone();
    let broker = rig.broker.clone();
    ChildSpec::worker(id, move |supervisor| {
        let component_id = child_name(&supervisor, id);
        let config = config.clone();
        let args = ConnectorArgs {
            spec: spec.clone(),
            component_id: component_id.clone(),
            board: board.clone(),
            broker: broker.clone(),
            transport: Arc::new(move || {
                Box::new(StaticTransport::<Panicky>::new(
                    &PANICKY_VT,
                    id,
                    config.clone(),
                ))
            }),
        };
        Box::pin(async move {
            let (a, _) =
                Actor::spawn_linked(Some(component_id), ConnectorActor, args, supervisor).await?;
            Ok(a.get_cell())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_read_batch_restarts_the_instance_and_no_event_is_lost() {
    let rig = rig().await;
    let mut sub = rig.bus.subscribe("mw.ev.p1.>").await.unwrap();
    let config = serde_json::json!({ "total": 500, "panic_at": 200 });
    let sup_spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(RestartIntensity::new(5, Duration::from_secs(10)))
        .child(panicky_child(&rig, "p1", config));
    let _tree = Tree::spawn_on(rig.board.clone(), "n", sup_spec).await;
    let mut counts: HashMap<u64, u32> = HashMap::new();
    while counts.len() < 500 {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of 500 distinct values arrived", counts.len()))
            .unwrap();
        let env = Envelope::from_json_slice(&msg.payload).unwrap();
        *counts.entry(env.payload.as_u64().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 500, "every value arrived");
    assert!(*PANICKED.lock(), "the panic happened");
    let restarts = rig.board.get("n/p1").map(|c| c.restarts).unwrap_or(0);
    assert_eq!(restarts, 1, "restarted once by its supervisor");
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    assert_eq!(
        duplicates, 0,
        "the panic hit before the batch was published, so none repeat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_always_fails_stays_degraded_and_backs_off_without_crashing() {
    let rig = rig().await;
    let config = serde_json::json!({ "fail_connects": u32::MAX });
    let transport_config = config.clone();
    let args = ConnectorArgs {
        spec: spec("f2", "flaky", config),
        component_id: "n/connectors/f2".into(),
        board: rig.board.clone(),
        broker: rig.broker.clone(),
        transport: Arc::new(move || {
            Box::new(StaticTransport::<Flaky>::new(
                &FLAKY_VT,
                "f2",
                transport_config.clone(),
            ))
        }),
    };
    let (actor, _) = Actor::spawn(None, ConnectorActor, args).await.unwrap();
    wait_state(&rig.board, "n/connectors/f2", "degraded_connection").await;
    // Keep watching while it retries: many attempts, never a crash, always degraded.
    wait_until(WAIT, || async {
        assert_eq!(actor.get_status(), ractor::ActorStatus::Running, "no crash");
        FLAKY.lock().get("f2").copied().unwrap_or(0) >= 8
    })
    .await
    .expect("it keeps retrying");
    let status = rig.board.get("n/connectors/f2").unwrap();
    assert_eq!(status.state.name(), "degraded_connection");
    assert_eq!(status.restarts, 0, "backing off is not restarting");
    let reason = status.state.reason().unwrap_or_default().to_owned();
    assert!(reason.contains("attempt"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_reaches_its_end_is_finished_and_does_not_degrade_its_supervisor() {
    let rig = rig().await;
    // A pure source that ends after three events.
    let config = serde_json::json!({ "total": 3, "panic_at": u64::MAX });
    let sup_spec = SupervisorSpec::new(Strategy::OneForOne).child(
        panicky_child(&rig, "e1", config)
            .restart(millwright_kernel::supervisor::RestartType::Transient),
    );
    let tree = Tree::spawn_on(rig.board.clone(), "fin", sup_spec).await;
    let e1 = wait_state(&rig.board, "fin/e1", "finished").await;
    assert_eq!(e1.restarts, 0, "an end of input is not a crash");
    assert_eq!(e1.health, millwright_kernel::lifecycle::Health::Healthy);
    let sup = rig.board.get("fin").unwrap();
    assert!(
        !sup.state_name.starts_with("degraded"),
        "a finished source does not degrade its supervisor: {sup:?}"
    );
    assert_eq!(sup.health, millwright_kernel::lifecycle::Health::Healthy);
    tree.shutdown().await;
}
