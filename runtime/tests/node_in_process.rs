//! A whole node booted in-process ([`Node::start`]) on the embedded bus: events, state
//! changes and control over the bus, and the shutdown report.

use std::time::Duration;

use bytes::Bytes;
use millwright_bus::{Headers, Subscription};
use millwright_plugin_sdk::event::Envelope;
use millwright_runtime::Node;
use millwright_runtime::config::Config;
use millwright_runtime::control::ControlReply;
use millwright_runtime::phase::Phase;
use millwright_runtime::shutdown::StopCause;
use millwright_tests::{next_within, wait_until};
use serde_json::Value;

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
[sims.m1]
interval = "50ms"
tags = ["temperature"]
[sims.m2]
interval = "50ms"
tags = ["speed"]
"#,
        dir = dir.display()
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

async fn control(node: &Node, body: &str) -> ControlReply {
    let reply = node
        .bus()
        .request(
            &format!("mw.ctl.{}.sim", node.name()),
            Headers::new(),
            Bytes::from(body.to_owned()),
            WAIT,
        )
        .await
        .unwrap();
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
async fn state_changes_are_published_and_control_works_over_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot("bs", dir.path()).await;
    wait_until(WAIT, || async {
        node.board()
            .get("bs/sims/m1")
            .is_some_and(|c| c.state.base_name() == "active")
    })
    .await
    .unwrap();
    let mut states = node
        .bus()
        .subscribe("mw.state.bs.bs%2Fsims%2Fm1")
        .await
        .unwrap();

    let reply = control(&node, r#"{"machine":"m1","command":"degrade"}"#).await;
    assert_eq!(
        reply,
        ControlReply {
            ok: true,
            error: None,
            reply: None,
        }
    );
    let change = next_json(&mut states).await;
    assert_eq!(change["node"], "bs");
    assert_eq!(change["id"], "bs/sims/m1");
    assert_eq!(change["kind"], "sim");
    assert_eq!(change["state"], "degraded");
    assert_eq!(change["reason"], "simulated degradation: commanded");
    assert_eq!(change["previous"], "active");

    let reply = control(&node, r#"{"machine":"m1","command":"recover"}"#).await;
    assert!(reply.ok);
    let change = next_json(&mut states).await;
    assert_eq!(change["state"], "idle");
    assert_eq!(change["previous"], "degraded");

    let reply = control(&node, r#"{"machine":"m9","command":"fail"}"#).await;
    assert!(!reply.ok);
    assert!(
        reply
            .error
            .unwrap()
            .contains("unknown machine \"m9\" (configured: m1, m2)")
    );
    let reply = control(&node, r#"{"machine":"m1","command":"explode"}"#).await;
    assert!(!reply.ok);
    assert!(reply.error.unwrap().starts_with("invalid request"));
    node.shutdown(StopCause::Requested).await;
}

#[tokio::test]
async fn a_failed_sim_restarts_with_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let node = boot("id", dir.path()).await;
    let mut events = node.bus().subscribe("mw.ev.m2.speed").await.unwrap();
    assert!(next_within(&mut events, WAIT).await.is_some());
    assert!(
        control(&node, r#"{"machine":"m2","command":"fail"}"#)
            .await
            .ok
    );
    wait_until(WAIT, || async {
        node.board()
            .get("id/sims/m2")
            .is_some_and(|c| c.restarts == 1)
    })
    .await
    .unwrap();
    // The restarted sim publishes on the same subject and answers control again.
    let msg = next_within(&mut events, WAIT).await.unwrap();
    assert_eq!(msg.subject, "mw.ev.m2.speed");
    wait_until(WAIT, || async {
        control(&node, r#"{"machine":"m2","command":"pause"}"#)
            .await
            .ok
    })
    .await
    .unwrap();
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
    for id in ["sd/sims/m1", "sd/sims/m2", "sd/sims", "sd"] {
        assert_eq!(
            board.get(id).unwrap().state.base_name(),
            "stopped",
            "{id} stopped in order"
        );
    }
}
