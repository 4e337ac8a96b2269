//! A whole node booted in-process ([`Node::start`]) on the embedded bus, with two `sim`
//! plugin connectors: events, state changes and calls over the bus, and the shutdown report.

mod support;

use std::time::Duration;

use bytes::Bytes;
use millwright_bus::{Headers, Subscription};
use millwright_plugin_sdk::event::Envelope;
use millwright_runtime::Node;
use millwright_runtime::config::Config;
use millwright_runtime::phase::Phase;
use millwright_runtime::shutdown::StopCause;
use millwright_tests::{next_within, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn boot(name: &str, dir: &std::path::Path) -> Node {
    let text = format!(
        r#"[node]
name = "{name}"
data_dir = "{dir}"
idle_window = "2s"
shutdown_grace = "5s"
[http]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:0"
{m1}{m2}"#,
        dir = dir.display(),
        m1 = support::sim("m1", "", "interval = \"50ms\"\ntags = [\"temperature\"]"),
        m2 = support::sim("m2", "", "interval = \"50ms\"\ntags = [\"speed\"]"),
    );
    let config = Config::parse("inline.toml", &text).unwrap();
    let node = Node::start(config).await.unwrap();
    assert_eq!(node.phase(), Phase::Ready);
    node
}

async fn next_json(sub: &mut Subscription) -> Value {
    let msg = next_within(sub, WAIT).await.expect("a message arrives");
    serde_json::from_slice(&msg.payload).unwrap()
}

/// Calls `method` of connector `instance` over the bus (`mw.rpc.<instance>.<method>`); the
/// reply body (`{"ok": ...}` or `{"error": {"kind", "message"}}`).
async fn call(node: &Node, instance: &str, method: &str, body: Value) -> Value {
    let reply = node
        .bus()
        .request(
            &format!("mw.rpc.{instance}.{method}"),
            Headers::new(),
            Bytes::from(body.to_string()),
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("{instance}.{method}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap()
}

#[tokio::test]
async fn sims_publish_envelopes_on_their_event_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot("ev", dir.path()).await;
    let mut sub = node.bus().subscribe("mw.ev.m1.>").await.unwrap();
    let msg = next_within(&mut sub, WAIT).await.unwrap();
    assert_eq!(msg.subject, "mw.ev.m1.temperature");
    let env = Envelope::from_json_slice(&msg.payload).unwrap();
    assert_eq!(env.source, "m1");
    assert!(env.payload.is_f64());
    assert_eq!(
        msg.headers.get("Nats-Msg-Id"),
        Some(env.id.to_string().as_str())
    );
    node.shutdown(StopCause::Requested).await;
}

#[tokio::test]
async fn state_changes_are_published_and_calls_work_over_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot("bs", dir.path()).await;
    wait_until(WAIT, || async {
        node.board()
            .get("bs/connectors/m1")
            .is_some_and(|c| c.state.base_name() == "active")
    })
    .await
    .unwrap();
    let mut states = node
        .bus()
        .subscribe("mw.state.bs.bs%2Fconnectors%2Fm1")
        .await
        .unwrap();

    let reply = call(&node, "m1", "degrade", json!({"for": "2s"})).await;
    assert_eq!(reply["ok"]["instance"], "m1", "{reply}");
    assert!(
        reply["ok"]["connection_lost"]
            .as_str()
            .is_some_and(|r| r.contains("asked for by a call")),
        "{reply}"
    );
    let change = next_json(&mut states).await;
    assert_eq!(change["node"], "bs");
    assert_eq!(change["id"], "bs/connectors/m1");
    assert_eq!(change["kind"], "connector");
    assert_eq!(change["state"], "degraded");
    assert!(
        change["reason"]
            .as_str()
            .unwrap()
            .starts_with("not connected: simulated connection loss (asked for by a call)"),
        "{change}"
    );
    assert_eq!(change["previous"], "active");

    // While the connection is lost the instance takes no calls; after 2 s it reconnects.
    let reply = call(&node, "m1", "recover", Value::Null).await;
    assert_eq!(reply["error"]["kind"], "not_connected", "{reply}");
    // Each failed reconnect attempt is a change too (its reason counts the attempts).
    let change = loop {
        let change = next_json(&mut states).await;
        if change["state"] != "degraded" {
            break change;
        }
    };
    assert_eq!(change["state"], "idle", "{change}");
    assert_eq!(change["previous"], "degraded_connection");

    // An instance this node does not run is not answered (on a shared bus only the node that
    // runs it answers): the caller gets its own timeout.
    let unanswered = node
        .bus()
        .request(
            "mw.rpc.m9.fail",
            Headers::new(),
            Bytes::from_static(b"null"),
            Duration::from_millis(500),
        )
        .await;
    assert!(unanswered.is_err(), "no node runs m9: {unanswered:?}");
    let reply = call(&node, "m1", "explode", Value::Null).await;
    assert_eq!(reply["error"]["kind"], "config", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown method \"explode\""),
        "{reply}"
    );
    node.shutdown(StopCause::Requested).await;
}

#[tokio::test]
async fn a_call_stuck_on_one_instance_does_not_hold_up_calls_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot("slow", dir.path()).await;
    let reply = call(&node, "m1", "hang", json!({"for": "3s"})).await;
    assert!(reply.get("ok").is_some(), "{reply}");
    // Once m1 is stuck in its hung read, a call to it gets no answer within 300 ms ...
    wait_until(WAIT, || async {
        node.bus()
            .request(
                "mw.rpc.m1.status",
                Headers::new(),
                Bytes::new(),
                Duration::from_millis(300),
            )
            .await
            .is_err()
    })
    .await
    .expect("m1 stops answering while its read hangs");
    // ... while a call to m2, through the node's same rpc bridge, is answered at once.
    let t0 = tokio::time::Instant::now();
    let reply = call(&node, "m2", "status", Value::Null).await;
    let took = t0.elapsed();
    assert_eq!(reply["ok"]["instance"], "m2", "{reply}");
    assert!(took < Duration::from_secs(1), "m2 answered in {took:?}");
    node.shutdown(StopCause::Requested).await;
}

#[tokio::test]
async fn a_failed_sim_restarts_with_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot("id", dir.path()).await;
    let mut events = node.bus().subscribe("mw.ev.m2.speed").await.unwrap();
    assert!(next_within(&mut events, WAIT).await.is_some());
    let reply = call(&node, "m2", "fail", Value::Null).await;
    assert_eq!(reply["ok"]["fail_pending"], true, "{reply}");
    wait_until(WAIT, || async {
        node.board()
            .get("id/connectors/m2")
            .is_some_and(|c| c.restarts == 1)
    })
    .await
    .unwrap();
    let restarted_at = node
        .board()
        .get("id/connectors/m2")
        .and_then(|c| c.last_restart)
        .expect("the restart is recorded");
    // The restarted sim publishes on the same subject (events read before the crash may still
    // be waiting in the subscription) and answers calls again, as a new machine.
    let deadline = tokio::time::Instant::now() + WAIT;
    let fresh = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = next_within(&mut events, left)
            .await
            .expect("the restarted sim publishes");
        let env = Envelope::from_json_slice(&msg.payload).unwrap();
        if env.receive_time > restarted_at {
            break msg;
        }
    };
    assert_eq!(fresh.subject, "mw.ev.m2.speed");
    let reply = call(&node, "m2", "status", Value::Null).await;
    assert_eq!(reply["ok"]["fail_pending"], false, "{reply}");
    node.shutdown(StopCause::Requested).await;
}

#[tokio::test]
async fn shutdown_stops_everything_in_order_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot("sd", dir.path()).await;
    let board = node.board().clone();
    let lock = dir.path().join("millwright.lock");
    assert!(lock.exists());
    let report = node.shutdown(StopCause::Requested).await;
    assert!(report.drained);
    assert!(report.stopped_in_order);
    assert!(report.lock_released);
    assert!(!lock.exists());
    for id in [
        "sd/connectors/m1",
        "sd/connectors/m2",
        "sd/connectors",
        "sd",
    ] {
        assert_eq!(
            board.get(id).unwrap().state.base_name(),
            "stopped",
            "{id} stopped in order"
        );
    }
}
