//! A node on a real nats-server, with a `sim` plugin connector: events and state changes reach
//! NATS clients, calls to the connector work over NATS request/reply, and a node whose server is unreachable still starts, with its
//! broker degraded and its events queued on disk.

use std::time::Duration;

use futures::StreamExt;
use millwright_runtime::Node;
use millwright_runtime::config::Config;
use millwright_runtime::shutdown::StopCause;
use millwright_tests::{NatsServer, free_port, wait_for, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Builds `plugins/sim` once per test process; its library.
fn sim_plugin() -> &'static std::path::Path {
    static LIB: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| millwright_tests::build_plugin("sim", false).0)
}

/// A node with one `sim` plugin connector, `press1`.
fn config(name: &str, dir: &std::path::Path, url: &str) -> Config {
    let text = format!(
        r#"[node]
name = "{name}"
data_dir = "{dir}"
[bus]
nats_url = "{url}"
[http]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:0"
[connectors.press1]
plugin = "{lib}"
[connectors.press1.config]
interval = "50ms"
tags = ["temperature", "pressure"]
"#,
        dir = dir.display(),
        lib = sim_plugin().display(),
    );
    Config::parse("inline.toml", &text).unwrap()
}

/// The first state message matching `pred`, with its subject.
async fn next_state(
    states: &mut async_nats::Subscriber,
    pred: impl Fn(&Value) -> bool,
) -> (String, Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, states.next())
            .await
            .expect("a matching state arrives in time")
            .expect("the subscription is open");
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        if pred(&v) {
            return (msg.subject.to_string(), v);
        }
    }
}

#[tokio::test]
async fn events_states_and_control_flow_over_nats() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut events = client.subscribe("mw.ev.press1.>").await.unwrap();
    let mut states = client.subscribe("mw.state.nn.>").await.unwrap();
    client.flush().await.unwrap();

    let node = Node::start(config("nn", dir.path(), &server.url()))
        .await
        .unwrap();

    let msg = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(msg.subject.as_str().starts_with("mw.ev.press1."));
    let env: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(env["source"], "press1");
    assert!(msg.headers.unwrap().get("Nats-Msg-Id").is_some());

    // An event arrived over NATS, so the node's client is connected: from here on every state
    // change reaches NATS. A call over NATS request/reply makes the sim lose its connection for
    // 1 s, which shows as the connector's state changes.
    let reply = client
        .request("mw.rpc.press1.degrade", r#"{"for": "1s"}"#.into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"]["instance"], "press1", "{reply}");
    let (subject, degraded) = next_state(&mut states, |v| {
        v["id"] == "nn/connectors/press1" && v["state"] == "degraded"
    })
    .await;
    assert_eq!(subject, "mw.state.nn.nn%2Fconnectors%2Fpress1");
    assert_eq!(degraded["node"], "nn");
    assert_eq!(degraded["kind"], "connector");
    assert_eq!(degraded["previous"], "active");
    assert!(
        degraded["reason"]
            .as_str()
            .unwrap()
            .starts_with("not connected: simulated connection loss (asked for by a call)"),
        "{degraded}"
    );
    let (_, recovered) = next_state(&mut states, |v| {
        v["id"] == "nn/connectors/press1" && v["state"] != "degraded"
    })
    .await;
    assert_eq!(recovered["state"], "idle", "{recovered}");
    assert_eq!(recovered["previous"], "degraded_connection");

    let report = node.shutdown(StopCause::Requested).await;
    assert!(report.stopped_in_order, "{report:?}");
    assert!(report.lock_released, "{report:?}");
}

#[tokio::test]
async fn an_unreachable_nats_server_leaves_the_node_up_with_the_broker_degraded() {
    // A plant node must start when NATS is away (after a power cut the node may boot first):
    // the broker keeps events in its disk queue and says why on /health.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let node = Node::start(config("nu", dir.path(), &url))
        .await
        .expect("the node starts without NATS");
    let broker = wait_for(Duration::from_secs(10), || async {
        node.board()
            .get("nu/broker")
            .filter(|c| c.state.base_name() == "degraded")
    })
    .await
    .expect("the broker turns degraded");
    let reason = broker.state.reason().unwrap_or_default().to_owned();
    assert!(
        reason.contains("disk queue"),
        "says where events go: {reason}"
    );
    wait_until(Duration::from_secs(10), || async {
        let queued = broker_queue_depth(dir.path());
        queued > 0
    })
    .await
    .expect("the sim connector's events are queued on disk");
    node.shutdown(StopCause::Requested).await;
    assert!(
        !dir.path().join("millwright.lock").exists(),
        "the lock is released on shutdown"
    );
}

/// Events in the broker's disk queue of a node (segments hold records; any byte means some).
fn broker_queue_depth(data_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(data_dir.join("queue"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}
