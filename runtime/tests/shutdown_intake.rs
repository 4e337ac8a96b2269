//! Shutdown stops intake at the sources, with the real binary (issue 11, point 3):
//!
//! - SIGTERM while several sources produce: every source is paused at `stop_intake`, no
//!   source reads after its pause, and every event a source had published (the broker
//!   acknowledged it, so the source's acknowledgement rides on) reaches NATS;
//! - a terminal's Ctrl-C (SIGINT to the node's process group) reaches only the node: its
//!   out-of-process plugin is stopped in order by the node, and nothing is restarted during
//!   the shutdown.

mod support;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use futures::StreamExt;
use millwright_tests::{NatsServer, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::NodeProcess;

const SOURCES: [&str; 3] = ["s1", "s2", "s3"];

/// The position of the first log line with `message` (and `component`, when given).
fn position(logs: &[Value], message: &str, component: Option<&str>) -> Option<usize> {
    logs.iter().position(|l| {
        l["message"].as_str() == Some(message)
            && component.is_none_or(|c| l["component"].as_str() == Some(c))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_pauses_every_source_and_delivers_every_published_event() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = client.subscribe("mw.ev.>").await.unwrap();
    client.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut extra = format!(
        "[bus]\nnats_url = \"{}\"\n\n[log]\nformat = \"json\"\nlevel = \"info,millwright_connect=debug\"\n",
        nats.url()
    );
    for s in SOURCES {
        extra += &support::sim(s, "", "interval = \"20ms\"\ntags = [\"a\", \"b\"]");
    }
    let config = support::config("intake", &dir.path().join("data"), &extra)
        .replace("[log]\nformat = \"json\"\nlevel = \"info\"\n", "");
    let mut node = NodeProcess::start(dir.path(), &config).await;
    node.wait_ready().await;

    // Collect what reaches NATS, per source, until the node is gone and the stream is quiet.
    let received = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let collector = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(msg) = events.next().await {
                let source = msg.subject.split('.').nth(2).unwrap_or_default().to_owned();
                *received.lock().unwrap().entry(source).or_default() += 1;
            }
        })
    };
    wait_until(Duration::from_secs(30), || {
        let r = received.lock().unwrap();
        let all = SOURCES
            .iter()
            .all(|s| r.get(*s).copied().unwrap_or(0) >= 40);
        std::future::ready(all)
    })
    .await
    .expect("every source produces");

    node.signal(Signal::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(30)).await.success());
    let logs = node.logs();

    let stop_intake = logs
        .iter()
        .position(|l| l["message"] == "shutdown step" && l["step"] == "stop_intake")
        .expect("the stop_intake step is logged");
    let mut published = BTreeMap::new();
    for s in SOURCES {
        let id = format!("intake/connectors/{s}");
        let paused = position(&logs, "source paused: no more reads", Some(&id))
            .unwrap_or_else(|| panic!("{id} was not paused:\n{}", node.output()));
        assert!(paused > stop_intake, "{id} paused before stop_intake");
        let reads_after: Vec<&Value> = logs[paused..]
            .iter()
            .filter(|l| l["message"] == "source read" && l["component"] == id.as_str())
            .collect();
        assert!(
            reads_after.is_empty(),
            "{id} read after its pause: {reads_after:?}"
        );
        assert!(
            position(&logs, "source read", Some(&id)).is_some(),
            "the debug log shows reads at all (else the check above proves nothing)"
        );
        published.insert(s.to_owned(), logs[paused]["published"].as_u64().unwrap());
    }

    // Core mode with NATS up: every published event was delivered before its receipt. Wait
    // until the subscriber has seen as many as were published, then check nothing is missing
    // and nothing came twice.
    let all_arrived = wait_until(Duration::from_secs(10), || {
        let r = received.lock().unwrap();
        let all = SOURCES
            .iter()
            .all(|s| r.get(*s).copied().unwrap_or(0) >= published[*s]);
        std::future::ready(all)
    })
    .await;
    collector.abort();
    let received = received.lock().unwrap().clone();
    assert!(
        all_arrived.is_ok(),
        "published {published:?}, received {received:?}"
    );
    for s in SOURCES {
        assert_eq!(
            received[s], published[s],
            "{s}: every published event arrives once (published {published:?}, received {received:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_reaches_only_the_node_which_stops_its_plugin_process_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let extra = support::sim_out_of_process("oop", "", "interval = \"50ms\"\ntags = [\"a\"]");
    let config = support::config("ctrlc", &dir.path().join("data"), &extra);
    // The node leads a process group of its own, as a shell's foreground job does.
    let mut node = NodeProcess::start_with(dir.path(), &config, |cmd| {
        cmd.process_group(0);
    })
    .await;
    node.wait_ready().await;
    node.wait_component("ctrlc/connectors/oop", "producing", |c| {
        c["state"] == "active"
    })
    .await;

    // Ctrl-C in a terminal: SIGINT to the whole foreground process group.
    kill(Pid::from_raw(-(node.pid() as i32)), Signal::SIGINT).unwrap();
    assert!(node.wait_exit(Duration::from_secs(30)).await.success());
    let logs = node.logs();
    let started = position(&logs, "shutdown started", None).expect("a graceful shutdown");
    let late: Vec<&Value> = logs[started..]
        .iter()
        .filter(|l| {
            matches!(
                l["message"].as_str(),
                Some("restart scheduled" | "restarting child" | "child exited; restarting it")
            )
        })
        .collect();
    assert!(late.is_empty(), "restarts during shutdown: {late:?}");
    let crashed: Vec<&Value> = logs[started..]
        .iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .filter(|l| l.to_string().contains("oop"))
        .collect();
    assert!(
        crashed.is_empty(),
        "the plugin process died under the node instead of being stopped by it: {crashed:?}"
    );
}
