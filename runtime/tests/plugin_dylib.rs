//! The in-process plugin boundary with a real `cdylib` (`plugins/testkit`) and real shared
//! libraries that are not plugins (compiled from C by the test): loading and its refusals,
//! requests across the boundary, a panic contained in the plugin, and the connector actor
//! running a loaded plugin through the broker.

mod support;

use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use millwright_bus::Bus;
use millwright_connect::{ConnectorActor, ConnectorArgs, ConnectorSpec, Transport, TransportError};
use millwright_kernel::lifecycle::StatusBoard;
use millwright_kernel::supervisor::BackoffPolicy;
use millwright_plugin_sdk::connector::{ConnectorError, Kind};
use millwright_plugin_sdk::event::Envelope;
use millwright_plugin_sdk::protocol::{Request, Response};
use millwright_runtime::plugin_host::{self, DylibTransport, PluginError};
use ractor::Actor;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn testkit() -> &'static Path {
    &support::testkit().0
}

use support::c_library;

#[test]
fn the_testkit_plugin_loads_with_its_manifest() {
    let plugin = plugin_host::load(testkit()).expect("loads");
    assert_eq!(plugin.manifest.id, "testkit");
    assert_eq!(
        plugin.manifest.kinds,
        [Kind::Source, Kind::Sink, Kind::Responder]
    );
    assert_eq!(
        plugin.manifest.sdk_version,
        millwright_plugin_sdk::manifest::SDK_VERSION
    );
    let props = &plugin.manifest.config_schema["properties"];
    assert!(
        props["count"]["description"]
            .as_str()
            .unwrap()
            .starts_with("How many events to emit")
    );
    assert!(
        plugin.rustc_version.starts_with("rustc "),
        "{}",
        plugin.rustc_version
    );
}

#[test]
fn files_that_are_not_plugins_are_refused_with_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.so");
    std::fs::write(&garbage, b"this is not an ELF file").unwrap();
    let e = plugin_host::load(&garbage).unwrap_err();
    assert!(matches!(e, PluginError::NotALibrary { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("garbage.so") && text.contains("not a plugin"),
        "{text}"
    );

    let plain = c_library(dir.path(), "plain", "int answer(void) { return 42; }\n");
    let text = plugin_host::load(&plain).unwrap_err().to_string();
    assert!(text.contains("libplain.so"), "{text}");
    assert!(
        text.contains("millwright_plugin_header_v4"),
        "names the missing symbol: {text}"
    );
    assert!(
        text.contains("export_plugin!"),
        "says how to fix it: {text}"
    );

    // A plugin of ABI 1 (JSON messages) exports `millwright_plugin_entry_v1`.
    let v1 = c_library(
        dir.path(),
        "old",
        "void *millwright_plugin_entry_v1(void) { return 0; }\n",
    );
    let e = plugin_host::load(&v1).unwrap_err();
    assert!(matches!(e, PluginError::WrongAbi { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("libold.so"), "the file: {text}");
    assert!(text.contains("ABI 1.x"), "the version found: {text}");
    assert!(
        text.contains("supports ABI 3.0 to 3.0"),
        "the versions supported: {text}"
    );
    assert!(text.contains("rebuild the plugin"), "the fix: {text}");

    // ABI 2 (a blocking `handle`) still exported an entry function.
    let v2 = c_library(
        dir.path(),
        "blocking",
        "void *millwright_plugin_entry_v2(void) { return 0; }\n",
    );
    let text = plugin_host::load(&v2).unwrap_err().to_string();
    assert!(text.contains("ABI 2.x"), "the version found: {text}");

    let v4 = c_library(
        dir.path(),
        "future",
        "char millwright_plugin_header_v4[64];\n",
    );
    let text = plugin_host::load(&v4).unwrap_err().to_string();
    assert!(text.contains("ABI 4.x"), "the version found: {text}");

    // The right symbol, but a header that says ABI 1.
    let liar = c_library(
        dir.path(),
        "liar",
        "struct h { unsigned long long magic; unsigned int major, minor, size, unwind;\n\
                    unsigned long long rest[32]; };\n\
         struct h millwright_plugin_header_v4 = { 0x4d57504c5547494eULL, 1, 0, 0, 1, {0} };\n",
    );
    let e = plugin_host::load(&liar).unwrap_err();
    assert!(matches!(e, PluginError::WrongAbi { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("ABI 1.0") && text.contains("supports ABI 3.0 to 3.0"),
        "{text}"
    );

    let magic = c_library(
        dir.path(),
        "magic",
        "unsigned long long millwright_plugin_header_v4[16] = {42};\n",
    );
    let text = plugin_host::load(&magic).unwrap_err().to_string();
    assert!(text.contains("magic 0x2a"), "{text}");
}

async fn request(t: &mut DylibTransport, r: Request) -> Response {
    t.request(r).await.expect("the transport answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cross_the_boundary_and_a_panic_stays_inside_the_plugin() {
    let plugin = plugin_host::load(testkit()).unwrap();
    let mut t = DylibTransport::new(&plugin, "k1", CALL_TIMEOUT).unwrap();
    let config = serde_json::json!({ "count": 10 });
    assert_eq!(request(&mut t, Request::open(config)).await, Response::Done);
    assert_eq!(request(&mut t, Request::Connect).await, Response::Done);
    let Response::Batch { batch } = request(&mut t, Request::ReadBatch { max: 100 }).await else {
        panic!("a batch")
    };
    assert_eq!(batch.events.len(), 10);
    assert_eq!(batch.events[3].subject, "mw.ev.k1.seq");
    assert_eq!(batch.events[3].payload, 3);
    assert_eq!(
        request(&mut t, Request::Ack { token: batch.token }).await,
        Response::Done
    );

    let mut p = DylibTransport::new(&plugin, "k2", CALL_TIMEOUT).unwrap();
    let config = serde_json::json!({ "count": 10, "panic_at": 0 });
    request(&mut p, Request::open(config)).await;
    request(&mut p, Request::Connect).await;
    let Response::Error { error } = request(&mut p, Request::ReadBatch { max: 1 }).await else {
        panic!("an error")
    };
    assert!(
        matches!(&error, ConnectorError::Fatal(m) if m.contains("panicked") && m.contains("told to panic")),
        "{error:?}"
    );
    let Response::Error { error } = request(&mut p, Request::Health).await else {
        panic!("an error")
    };
    assert!(
        matches!(&error, ConnectorError::Fatal(m) if m.contains("poisoned")),
        "{error:?}"
    );
    // This process (the node) is still here, and the other instance still works.
    assert_eq!(request(&mut t, Request::Connect).await, Response::Done);
}

/// Counts ticks of a task on the test's runtime while `f` runs: it only ticks if the thread
/// is free.
async fn ticks_during<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let out = f.await;
    ticker.abort();
    (out, ticks.load(Ordering::Relaxed))
}

/// One thread only: if a waiting plugin held it, nothing else on the runtime would run.
#[tokio::test(flavor = "current_thread")]
async fn a_request_that_waits_holds_no_node_thread_and_times_out_after_call_timeout() {
    let plugin = plugin_host::load(testkit()).unwrap();
    // A read that waits 300 ms, then answers through the completion.
    let mut t = DylibTransport::new(&plugin, "w1", CALL_TIMEOUT).unwrap();
    let config = serde_json::json!({ "count": 5, "stall_at": 0, "stall_ms": 300 });
    request(&mut t, Request::open(config)).await;
    request(&mut t, Request::Connect).await;
    let started = std::time::Instant::now();
    let (answer, ticks) = ticks_during(request(&mut t, Request::ReadBatch { max: 10 })).await;
    let waited = started.elapsed();
    let Response::Batch { batch } = answer else {
        panic!("a batch, got {answer:?}")
    };
    assert_eq!(batch.events.len(), 5);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        ticks >= 5,
        "the runtime's only thread ran other tasks: {ticks} ticks"
    );

    // A read that never answers: the call timeout ends it, and the thread was free meanwhile.
    let timeout = Duration::from_millis(300);
    let mut stuck = DylibTransport::new(&plugin, "w2", timeout).unwrap();
    let config = serde_json::json!({ "count": 5, "stall_at": 0 });
    request(&mut stuck, Request::open(config)).await;
    request(&mut stuck, Request::Connect).await;
    let (outcome, ticks) = ticks_during(stuck.request(Request::ReadBatch { max: 10 })).await;
    assert_eq!(outcome.unwrap_err(), TransportError::Timeout(timeout));
    assert!(ticks >= 5, "{ticks} ticks");
    // A later request waits behind the stuck one inside the plugin (one at a time), and times
    // out too; destroying the instance drops the stuck read without waiting for it.
    assert_eq!(
        stuck.request(Request::Health).await.unwrap_err(),
        TransportError::Timeout(timeout)
    );
    drop(stuck);
    assert_eq!(
        request(&mut t, Request::Ack { token: batch.token }).await,
        Response::Done
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_plugin_that_stops_answering_is_restarted_and_every_event_arrives() {
    let plugin = Arc::new(plugin_host::load(testkit()).unwrap());
    let (counts, restarts) = support::run_with_fault("stall_at", "st", |instance| {
        plugin_host::transport_factory(plugin.clone(), instance.into(), Duration::from_secs(1))
    })
    .await;
    assert_eq!(counts.len(), 300, "none missing");
    assert_eq!(restarts, 1, "one restart, for the stall");
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    println!("stall: 300 values, {duplicates} duplicates, {restarts} restart");
    assert_eq!(
        duplicates, 0,
        "the stall hit before the batch was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_actor_runs_a_loaded_plugin_through_the_broker() {
    let plugin = Arc::new(plugin_host::load(testkit()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::embedded();
    let mut sub = bus.subscribe("mw.ev.d1.>").await.unwrap();
    let board = StatusBoard::new();
    let broker = support::spawn_broker("pd/broker", dir.path(), &bus, &board).await;
    let spec = Arc::new(ConnectorSpec {
        instance: "d1".into(),
        plugin: "testkit".into(),
        config: serde_json::json!({ "count": 300 }),
        subject_prefix: "mw".into(),
        kinds: vec![millwright_plugin_sdk::connector::Kind::Source],
        max_batch: 64,
        poll_interval: Duration::from_millis(10),
        backoff: BackoffPolicy::default(),
        republish_delay: Duration::from_millis(10),
        idle_window: Duration::from_secs(30),
    });
    let args = ConnectorArgs {
        spec,
        component_id: "pd/connectors/d1".into(),
        board: board.clone(),
        broker,
        transport: plugin_host::transport_factory(plugin, "d1".into(), CALL_TIMEOUT),
    };
    let (actor, handle) = Actor::spawn(None, ConnectorActor, args).await.unwrap();
    for want in 0..300u64 {
        let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            Envelope::from_json_slice(&msg.payload).unwrap().payload,
            want
        );
    }
    // The source's end of input stops the instance normally.
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("the actor stops at the end of input")
        .unwrap();
    assert_eq!(actor.get_status(), ractor::ActorStatus::Stopped);
}
