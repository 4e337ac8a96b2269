//! A node on a real nats-server: events and state changes reach NATS clients, control works
//! over NATS request/reply, and a node whose server is unreachable still starts, with its
//! broker degraded and its events queued on disk.

use std::time::Duration;

use futures::StreamExt;
use millwright_runtime::Node;
use millwright_runtime::config::Config;
use millwright_runtime::shutdown::StopCause;
use millwright_tests::{NatsServer, free_port, wait_for, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

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
[sims.press1]
interval = "50ms"
tags = ["temperature", "pressure"]
"#,
        dir = dir.display()
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

    // The sim's start is visible as state changes on NATS.
    let (subject, active) = next_state(&mut states, |v| {
        v["id"] == "nn/sims/press1" && v["state"] == "active"
    })
    .await;
    assert_eq!(subject, "mw.state.nn.nn%2Fsims%2Fpress1");
    assert_eq!(active["node"], "nn");

    let reply = client
        .request(
            "mw.ctl.nn.sim",
            r#"{"machine":"press1","command":"degrade"}"#.into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], true);
    let (_, degraded) = next_state(&mut states, |v| v["state"] == "degraded").await;
    assert_eq!(degraded["reason"], "simulated degradation: commanded");

    let report = node.shutdown(StopCause::Requested).await;
    assert!(report.stopped_in_order && report.lock_released);
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
    .expect("the sim's events are queued on disk");
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
