//! Plugins out of process, with the real `plugins/testkit` executable: the handshake and
//! requests over frames, and a plugin that aborts or stops answering is restarted by its
//! supervisor with every event delivered (at-least-once, none missing), while the node (this
//! test process) carries on.

mod support;

use std::path::Path;
use std::time::Duration;

use millwright_connect::Transport;
use millwright_plugin_sdk::protocol::{Request, Response};
use millwright_runtime::plugin_process::{self, ProcessSpec, ProcessTransport};

fn testkit() -> &'static Path {
    &support::testkit().1
}

fn spec(instance: &str, timeout: Duration) -> ProcessSpec {
    ProcessSpec {
        program: testkit().to_path_buf(),
        instance: instance.to_owned(),
        call_timeout: timeout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executable_shakes_hands_and_serves_requests_over_frames() {
    let mut t = ProcessTransport::new(spec("x1", Duration::from_secs(10)));
    let config = serde_json::json!({ "count": 5 });
    assert_eq!(
        t.request(Request::open(config)).await.unwrap(),
        Response::Done
    );
    assert_eq!(
        t.manifest().unwrap().id,
        "testkit",
        "the manifest came with Hello"
    );
    assert_eq!(t.request(Request::Connect).await.unwrap(), Response::Done);
    let Response::Batch { batch } = t.request(Request::ReadBatch { max: 10 }).await.unwrap() else {
        panic!("a batch")
    };
    assert_eq!(batch.events.len(), 5);
    assert_eq!(batch.events[0].subject, "mw.ev.x1.seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_waits_for_data_and_an_interrupt_frame_lets_the_next_request_through() {
    let timeout = Duration::from_millis(500);
    let mut t = ProcessTransport::new(spec("iw", timeout));
    // `stall_at: 0`: the first read waits and never has data.
    let config = serde_json::json!({ "count": 5, "stall_at": 0 });
    assert_eq!(
        t.request(Request::open(config)).await.unwrap(),
        Response::Done
    );
    assert_eq!(t.request(Request::Connect).await.unwrap(), Response::Done);
    let read = t.request(Request::ReadBatch { max: 10 });
    tokio::pin!(read);
    // No answer, and no timeout either, for several call timeouts: a read waits for data.
    assert!(
        tokio::time::timeout(timeout * 4, read.as_mut())
            .await
            .is_err(),
        "the read waits"
    );
    // A request sent now queues behind the read, until the interrupt frame ends the read.
    let health = t.request(Request::Health);
    t.interrupt();
    assert_eq!(read.await.unwrap(), Response::Interrupted);
    assert!(matches!(health.await.unwrap(), Response::Health { .. }));
}

/// A fake plugin executable that answers the handshake with `reply` (one JSON frame), then
/// waits for its stdin to close.
fn fake_plugin(dir: &Path, name: &str, reply: &[u8]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let frame = dir.join(format!("{name}.frame"));
    let mut bytes = (reply.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(reply);
    std::fs::write(&frame, bytes).unwrap();
    let program = dir.join(name);
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\ncat '{}'\nexec cat >/dev/null\n",
            frame.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

async fn handshake_error(program: std::path::PathBuf) -> String {
    let mut t = ProcessTransport::new(ProcessSpec {
        program,
        instance: "old".into(),
        call_timeout: Duration::from_secs(10),
    });
    t.request(Request::open(serde_json::json!({})))
        .await
        .expect_err("refused")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_protocol_1_json_is_refused_naming_the_versions() {
    let dir = tempfile::tempdir().unwrap();
    // What an ABI 1 plugin answers a Hello of major 2 with (its own, JSON refusal).
    let refusing = fake_plugin(
        dir.path(),
        "refusing",
        br#"{"frame":"refused","reason":"plugin old 0.1.0 speaks plugin protocol 1.0, the host 3.x; rebuild the plugin against the host's millwright-plugin-sdk"}"#,
    );
    let text = handshake_error(refusing).await;
    assert!(
        text.contains("speaks plugin protocol 1.0, the host 3.x"),
        "the plugin's refusal is passed on: {text}"
    );
    // A JSON plugin that says it speaks protocol 1 instead of refusing.
    let hello = fake_plugin(
        dir.path(),
        "hello_v1",
        br#"{"frame":"hello","major":1,"minor":0}"#,
    );
    let text = handshake_error(hello).await;
    assert!(
        text.contains("speaks plugin protocol 1.0")
            && text.contains("supports 4.0 to 4.0")
            && text.contains("rebuild the plugin"),
        "{text}"
    );
    // Something that is not a plugin at all.
    let garbage = fake_plugin(dir.path(), "garbage", b"\x81\xa3abc");
    let text = handshake_error(garbage).await;
    assert!(text.contains("did not answer the handshake"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_aborts_is_restarted_and_every_event_arrives() {
    let (counts, restarts) = support::run_with_fault("abort_at", "ab", |i| {
        plugin_process::transport_factory(spec(i, Duration::from_secs(2)))
    })
    .await;
    assert_eq!(counts.len(), 300, "none missing");
    assert_eq!(restarts, 1, "one restart, for the abort");
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    println!("abort: 300 values, {duplicates} duplicates, {restarts} restart");
    assert_eq!(
        duplicates, 0,
        "the abort hit before the batch was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_stops_answering_is_restarted_and_every_event_arrives() {
    let (counts, restarts) = support::run_with_fault("hang_at", "hg", |i| {
        plugin_process::transport_factory(spec(i, Duration::from_secs(2)))
    })
    .await;
    assert_eq!(counts.len(), 300, "none missing");
    assert_eq!(restarts, 1, "one restart, for the hang");
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    println!("hang: 300 values, {duplicates} duplicates, {restarts} restart");
    assert_eq!(duplicates, 0);
}
