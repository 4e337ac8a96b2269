//! The broker actor against a real nats-server, in-process: direct delivery, the disk queue
//! behind an outage with FIFO drain, JetStream acks and de-duplication, the DLQ with replay,
//! the size cap, and a stream that conflicts.
//!
//! Every test spawns its own server on free loopback ports and its own data dir.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use millwright_broker::dlq_admin::{DlqCommand, DlqReply, Target};
use millwright_broker::{BrokerHandle, BrokerMsg, BrokerOptions, BrokerStats, DeliveryMode};
use millwright_bus::{Bus, NatsOptions};
use millwright_kernel::lifecycle::StatusBoard;
use millwright_plugin_sdk::event::{Envelope, EventId};
use millwright_tests::{NatsServer, wait_for, wait_until};
use ractor::ActorRef;

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    broker: ActorRef<BrokerMsg>,
    handle: BrokerHandle,
    board: StatusBoard,
    _dir: tempfile::TempDir,
    id: String,
}

fn options(dir: &std::path::Path, mode: DeliveryMode) -> BrokerOptions {
    let mut o = BrokerOptions::new(dir);
    o.mode = mode;
    o.ack_timeout = Duration::from_millis(500);
    o.breaker.open_base = Duration::from_millis(200);
    o.breaker.open_max = Duration::from_millis(400);
    o
}

async fn nats_bus(server: &NatsServer) -> Bus {
    let mut opts = NatsOptions::new(server.url());
    opts.retry_on_initial_connect = true;
    opts.ping_interval = Duration::from_millis(500);
    opts.reconnect_delay_max = Duration::from_millis(200);
    let bus = Bus::connect_nats(opts).await.unwrap();
    // `retry_on_initial_connect` returns before the connection is up; the tests start from a
    // connected client (what happens before is the node tests' business).
    wait_until(WAIT, || async {
        bus.connection_state() == millwright_bus::ConnectionState::Connected
    })
    .await
    .expect("connects");
    bus
}

async fn rig(bus: Bus, tweak: impl FnOnce(&mut BrokerOptions)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), DeliveryMode::Core);
    tweak(&mut opts);
    spawn(bus, opts, dir).await
}

async fn spawn(bus: Bus, opts: BrokerOptions, dir: tempfile::TempDir) -> Rig {
    let board = StatusBoard::new();
    let id = format!("t{}/broker", EventId::new());
    let (handle, broker) = millwright_broker::actor::spawn(&id, opts, bus, board.clone())
        .await
        .unwrap();
    Rig {
        broker,
        handle,
        board,
        _dir: dir,
        id,
    }
}

impl Rig {
    async fn stats(&self) -> BrokerStats {
        ractor::call!(self.broker, BrokerMsg::Stats).unwrap()
    }

    async fn dlq(&self, command: DlqCommand) -> DlqReply {
        ractor::call!(self.broker, BrokerMsg::Dlq, command)
            .unwrap()
            .unwrap()
    }

    fn state(&self) -> String {
        self.board
            .get(&self.id)
            .map(|c| c.state.name())
            .unwrap_or_default()
    }
}

fn event(seq: u64) -> Envelope {
    Envelope::new("load", "mw.ev.load.seq", serde_json::json!({ "seq": seq }))
}

fn seq_of(payload: &[u8]) -> u64 {
    let env = Envelope::from_json_slice(payload).unwrap();
    env.payload["seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_mode_delivers_directly_when_nats_is_up() {
    let server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let mut sub = bus.subscribe("mw.ev.>").await.unwrap();
    let rig = rig(bus, |_| {}).await;

    let receipt = rig
        .handle
        .publish_batch((0..100).map(event).collect())
        .await
        .unwrap();
    assert_eq!(receipt.delivered, 100, "{receipt:?}");
    assert_eq!(receipt.queued, 0);
    for want in 0..100 {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seq_of(&msg.payload), want, "in order");
        assert!(msg.headers.get("Nats-Msg-Id").is_some(), "carries the id");
    }
    let stats = rig.stats().await;
    assert_eq!(stats.queue_depth, 0);
    assert_eq!(stats.breaker, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_queues_on_disk_and_the_queue_drains_in_order_behind_new_events() {
    let mut server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    // Subscribed before the outage: the client restores it first thing on reconnect, before
    // anything the broker publishes then.
    let mut sub = bus.subscribe("mw.ev.>").await.unwrap();
    let rig = rig(bus.clone(), |_| {}).await;

    rig.handle
        .publish_batch((0..10).map(event).collect())
        .await
        .unwrap();
    for want in 0..10 {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seq_of(&msg.payload), want);
    }
    server.kill();
    wait_until(WAIT, || async { !rig.stats().await.connected })
        .await
        .expect("the broker sees the connection drop");
    let receipt = rig
        .handle
        .publish_batch((10..1010).map(event).collect())
        .await
        .unwrap();
    assert_eq!(
        receipt.queued, 1000,
        "all queued while NATS is down: {receipt:?}"
    );
    assert!(rig.state().starts_with("degraded"), "{}", rig.state());
    let stats = rig.stats().await;
    assert_eq!(stats.queue_depth, 1000);
    assert_ne!(stats.breaker, "closed");

    server.restart().await;
    // New events published during the drain must come after every queued one.
    let mut seen = Vec::new();
    let publisher = {
        let handle = rig.handle.clone();
        tokio::spawn(async move {
            for s in 1010..1110 {
                handle.publish(event(s)).await.unwrap();
            }
        })
    };
    while seen.len() < 1100 {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(msg)) => seen.push(seq_of(&msg.payload)),
            other => panic!("stream ended after {} events: {other:?}", seen.len()),
        }
    }
    publisher.await.unwrap();
    // Core NATS may deliver a few duplicates (a batch re-sent after an unconfirmed flush);
    // with them removed, the order is exactly the order of publishing.
    let mut unique = Vec::new();
    let mut dedup = HashSet::new();
    for s in seen {
        if dedup.insert(s) {
            unique.push(s);
        }
    }
    assert_eq!(unique, (10..1110).collect::<Vec<_>>(), "FIFO");
    wait_until(WAIT, || async { rig.stats().await.queue_depth == 0 })
        .await
        .unwrap();
    wait_until(WAIT, || async {
        rig.state() == "active" || rig.state() == "idle"
    })
    .await
    .unwrap_or_else(|_| panic!("recovers: {}", rig.state()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_mode_creates_the_stream_acks_and_deduplicates() {
    let server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let js = jetstream::new(bus.nats_client().unwrap().clone());
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), DeliveryMode::Jetstream);
    let rig = spawn(bus, opts, dir).await;

    let events: Vec<Envelope> = (0..200).map(event).collect();
    let receipt = rig.handle.publish_batch(events.clone()).await.unwrap();
    assert_eq!(receipt.delivered, 200, "{receipt:?}");
    // The same events again (a producer that never saw its receipt): stored once.
    rig.handle.publish_batch(events).await.unwrap();
    let mut s = js.get_stream("MW_EVENTS").await.unwrap();
    let info = s.info().await.unwrap();
    assert_eq!(info.config.subjects, ["mw.ev.>"]);
    assert_eq!(
        info.state.messages, 200,
        "duplicates dropped by Nats-Msg-Id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_refuses_an_event_sends_it_to_the_dlq_and_replay_delivers_it_once() {
    let server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let js = jetstream::new(bus.nats_client().unwrap().clone());
    js.create_stream(stream::Config {
        name: "MW_EVENTS".into(),
        subjects: vec!["mw.ev.>".into()],
        max_message_size: 512,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), DeliveryMode::Jetstream);
    let rig = spawn(bus, opts, dir).await;

    let big = Envelope::new(
        "load",
        "mw.ev.load.big",
        serde_json::json!("x".repeat(2000)),
    );
    let receipt = rig
        .handle
        .publish_batch(vec![event(1), big.clone(), event(2)])
        .await
        .unwrap();
    assert_eq!(
        receipt.delivered, 2,
        "the small ones go through: {receipt:?}"
    );
    assert_eq!(receipt.queued, 1, "the refused one is kept");
    wait_until(WAIT, || async { rig.stats().await.dead_letters == 1 })
        .await
        .expect("moves to the DLQ after 3 attempts");
    let DlqReply::Letters { total, letters } = rig.dlq(DlqCommand::List { limit: 10 }).await else {
        panic!("list answers letters")
    };
    assert_eq!(total, 1);
    assert_eq!(letters[0].id(), big.id);
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].last_error.contains("maximum"),
        "names the server's reason: {}",
        letters[0].last_error
    );
    assert_eq!(rig.stats().await.queue_depth, 0, "the queue moved on");

    // Fix the stream, replay, and see it stored exactly once.
    js.update_stream(stream::Config {
        name: "MW_EVENTS".into(),
        subjects: vec!["mw.ev.>".into()],
        max_message_size: -1,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let reply = rig
        .dlq(DlqCommand::Replay {
            target: Target::One(big.id),
        })
        .await;
    assert_eq!(reply, DlqReply::Replayed { count: 1 });
    let stream = js.get_stream("MW_EVENTS").await.unwrap();
    let stored = wait_for(WAIT, || {
        let stream = stream.clone();
        async move {
            let info = stream.get_info().await.ok()?;
            (info.state.messages >= 3).then_some(info.state.messages)
        }
    })
    .await
    .expect("the replayed event is stored");
    assert_eq!(stored, 3, "two small events and the replayed one, once");
    assert_eq!(rig.stats().await.dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_sheds_the_oldest_and_counts_exactly_what_was_dropped() {
    let mut server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let mut sub = bus.subscribe("mw.ev.>").await.unwrap();
    let rig = rig(bus.clone(), |o| {
        o.queue.segment_bytes = 64 << 10;
        o.queue.max_bytes = 256 << 10;
    })
    .await;
    server.kill();
    wait_until(WAIT, || async { !rig.stats().await.connected })
        .await
        .unwrap();
    let total = 5_000u64;
    for chunk in (0..total).collect::<Vec<_>>().chunks(250) {
        let r = rig
            .handle
            .publish_batch(chunk.iter().copied().map(event).collect())
            .await
            .expect("never fails or blocks at the cap");
        assert_eq!(r.queued, chunk.len());
    }
    let stats = rig.stats().await;
    assert!(stats.shed > 0, "past the cap something was shed: {stats:?}");
    assert!(stats.queue_bytes <= 256 << 10, "{stats:?}");
    assert_eq!(stats.shed + stats.queue_depth, total, "{stats:?}");

    server.restart().await;
    let mut seen = HashSet::new();
    let want = stats.queue_depth as usize;
    while seen.len() < want {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        seen.insert(seq_of(&msg.payload));
    }
    // The survivors are exactly the newest ones: the oldest were shed.
    let expected: HashSet<u64> = (stats.shed..total).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_before_a_stop_are_delivered_by_the_next_incarnation() {
    let mut server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut sub = bus.subscribe("mw.ev.>").await.unwrap();
    let rig = spawn(bus.clone(), options(&path, DeliveryMode::Core), dir).await;
    server.kill();
    wait_until(WAIT, || async { !rig.stats().await.connected })
        .await
        .unwrap();
    rig.handle
        .publish_batch((0..300).map(event).collect())
        .await
        .unwrap();
    rig.broker.stop(None);
    wait_until(WAIT, || async {
        rig.broker.get_status() == ractor::ActorStatus::Stopped
    })
    .await
    .unwrap();

    server.restart().await;
    let again = spawn(
        bus,
        options(&path, DeliveryMode::Core),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let mut seen = HashSet::new();
    while seen.len() < 300 {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        seen.insert(seq_of(&msg.payload));
    }
    assert_eq!(seen, (0..300).collect());
    wait_until(WAIT, || async { again.stats().await.queue_depth == 0 })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_opens_the_breaker_within_a_bound_and_nothing_is_lost() {
    let server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let mut sub = bus.subscribe("mw.ev.>").await.unwrap();
    let rig = rig(bus.clone(), |o| o.breaker.failure_threshold = 3).await;
    rig.handle.publish(event(0)).await.unwrap();

    server.freeze();
    let frozen = std::time::Instant::now();
    // Each publish waits at most the ack timeout (500 ms), then is queued; three of them
    // open the breaker (or the client notices the dead connection first).
    let mut n = 1;
    while rig.stats().await.breaker == "closed" {
        let r = rig.handle.publish(event(n)).await.unwrap();
        assert_eq!(r.delivered + r.queued, 1);
        n += 1;
        assert!(
            frozen.elapsed() < Duration::from_secs(5),
            "the breaker must open within 5 s of the server hanging"
        );
    }
    for _ in 0..100 {
        rig.handle.publish(event(n)).await.unwrap();
        n += 1;
    }
    server.thaw();
    let mut seen = HashSet::new();
    while seen.len() < n as usize {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        seen.insert(seq_of(&msg.payload));
    }
    assert_eq!(seen, (0..n).collect(), "nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_bounds_producers_with_a_busy_error_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), DeliveryMode::Core);
    opts.intake_capacity = 1;
    opts.intake_timeout = Duration::from_millis(50);
    // Without a broker actor taking from it, the intake holds one call; of two producers,
    // one is held and the other is told "busy" after the intake timeout.
    let (handle, _intake) = BrokerHandle::new(&opts);
    let spawn_publish = |seq| {
        let handle = handle.clone();
        tokio::spawn(async move { handle.publish(event(seq)).await })
    };
    let (a, b) = (spawn_publish(0), spawn_publish(1));
    let started = std::time::Instant::now();
    wait_until(WAIT, || async { a.is_finished() || b.is_finished() })
        .await
        .expect("one producer is answered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the intake timeout"
    );
    let (done, held) = if a.is_finished() { (a, b) } else { (b, a) };
    assert!(
        matches!(
            done.await.unwrap(),
            Err(millwright_broker::BrokerError::Busy { .. })
        ),
        "a full intake answers busy"
    );
    assert!(
        !held.is_finished(),
        "the other waits for a broker to take it"
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_under_the_broker_is_created_again_and_nothing_is_lost() {
    let server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let js = jetstream::new(bus.nats_client().unwrap().clone());
    let dir = tempfile::tempdir().unwrap();
    let rig = spawn(bus, options(dir.path(), DeliveryMode::Jetstream), dir).await;
    rig.handle
        .publish_batch((0..10).map(event).collect())
        .await
        .unwrap();
    js.delete_stream("MW_EVENTS").await.unwrap();
    let r = rig
        .handle
        .publish_batch((10..20).map(event).collect())
        .await
        .unwrap();
    assert_eq!(r.delivered + r.queued, 10);
    let stored = wait_for(WAIT, || {
        let js = js.clone();
        async move {
            let mut s = js.get_stream("MW_EVENTS").await.ok()?;
            let n = s.info().await.ok()?.state.messages;
            (n == 10).then_some(n)
        }
    })
    .await
    .expect("the stream is created again and the 10 later events land in it");
    assert_eq!(stored, 10);
    assert_eq!(
        rig.stats().await.dead_letters,
        0,
        "a missing stream is not the events' fault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_holds_events_in_the_queue_instead_of_dead_lettering_them() {
    let server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let js = jetstream::new(bus.nats_client().unwrap().clone());
    let full = |max_messages| stream::Config {
        name: "MW_EVENTS".into(),
        subjects: vec!["mw.ev.>".into()],
        max_messages,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.create_stream(full(10)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rig = spawn(bus, options(dir.path(), DeliveryMode::Jetstream), dir).await;
    let r = rig
        .handle
        .publish_batch((0..30).map(event).collect())
        .await
        .unwrap();
    assert_eq!(r.delivered, 10, "{r:?}");
    assert_eq!(r.queued, 20);
    // The refusals open the breaker (a full stream is the server's state, not the events').
    wait_until(WAIT, || async { rig.stats().await.breaker != "closed" })
        .await
        .expect("a full stream trips the breaker");
    let stats = rig.stats().await;
    assert_eq!(stats.dead_letters, 0, "{stats:?}");
    assert_eq!(stats.queue_depth, 20, "{stats:?}");
    js.update_stream(full(-1)).await.unwrap();
    wait_until(WAIT, || async { rig.stats().await.queue_depth == 0 })
        .await
        .expect("drains once the stream has room");
    let mut s = js.get_stream("MW_EVENTS").await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_the_disk_queue_fails_only_its_own_call() {
    let server = NatsServer::start().await;
    let bus = nats_bus(&server).await;
    let rig = rig(bus, |o| {
        o.queue.segment_bytes = 8 << 10;
        o.queue.max_bytes = 64 << 10;
    })
    .await;
    let big = Envelope::new(
        "load",
        "mw.ev.load.big",
        serde_json::json!("x".repeat(20_000)),
    );
    let err = rig.handle.publish(big).await.unwrap_err();
    assert!(
        err.to_string().contains("queue_segment_bytes"),
        "says what to change: {err}"
    );
    let ok = rig.handle.publish(event(1)).await.unwrap();
    assert_eq!(ok.delivered, 1);
}
