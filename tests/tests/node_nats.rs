//! A node on a real nats-server: events and state changes reach NATS clients, control works
//! over NATS request/reply, and an unreachable server is a clear start error.

use std::time::Duration;

use futures::StreamExt;
use millwright_runtime::Node;
use millwright_runtime::config::Config;
use millwright_runtime::shutdown::StopCause;
use millwright_tests::{NatsServer, free_port};
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
async fn an_unreachable_nats_server_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let err = Node::start(config("nu", dir.path(), &url))
        .await
        .expect_err("nothing listens there");
    let text = err.to_string();
    assert!(text.starts_with("bus: "), "{text}");
    assert!(text.contains("127.0.0.1"), "names the server: {text}");
    assert!(
        text.contains("check [bus] nats_url"),
        "says what to fix: {text}"
    );
    assert!(
        !dir.path().join("millwright.lock").exists(),
        "the lock is released on a failed start"
    );
}
