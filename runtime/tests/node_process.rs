//! Black-box tests of the real `millwright run` binary on the embedded bus: probes, health,
//! metrics, faults of `sim` plugin connectors driven over HTTP, SIGTERM, and the single-instance lock.

mod support;

use std::time::Duration;

use millwright_tests::wait_until;
use nix::sys::signal::Signal;
use serde_json::Value;
use support::{NodeProcess, SETTLE, config, sim, sim_out_of_process, two_sims};

fn state(c: &Value) -> &str {
    c["state"].as_str().unwrap_or_default()
}

/// The value of the metric line that starts with `series` (name and labels), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn health_shows_every_sim_connector_active_and_metrics_export_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("hm", dir.path(), &two_sims())).await;
    node.wait_ready().await;
    assert_eq!(node.get("/live").await.unwrap().0, 200);
    for id in ["hm/connectors/m1", "hm/connectors/m2"] {
        node.wait_component(id, "active", |c| state(c) == "active")
            .await;
    }
    let health = node.health().await.unwrap();
    assert_eq!(health["node"], "hm");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["phase"], "ready");
    let ids: Vec<&str> = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "hm",
            "hm/broker",
            "hm/connectors",
            "hm/connectors/m1",
            "hm/connectors/m2"
        ]
    );
    let broker = &health["components"][1];
    assert_eq!(broker["kind"], "broker");
    assert_eq!(
        broker["state"], "active",
        "the sims publish through it: {broker}"
    );
    let m1 = &health["components"][3];
    assert_eq!(m1["kind"], "connector");
    assert_eq!(m1["restarts"], 0);
    assert!(m1["since"].is_string());

    let (code, body) = node.get("/values").await.unwrap();
    assert_eq!(code, 200);
    let values: Value = serde_json::from_str(&body).unwrap();
    let subjects: Vec<&str> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "mw.ev.m1.pressure",
            "mw.ev.m1.temperature",
            "mw.ev.m2.speed"
        ]
    );
    assert!(values[0]["value"].is_f64() && values[0]["count"].as_u64() >= Some(1));

    let (code, plugins) = node.get("/plugins").await.unwrap();
    assert_eq!(code, 200);
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    let listed: Vec<(&str, &str)> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["instance"].as_str().unwrap(),
                p["plugin"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [("m1", "sim"), ("m2", "sim")], "{plugins}");

    let (code, page) = node.get("/").await.unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("/health"), "the status page polls /health");

    let text = node.metrics().await;
    assert_eq!(metric(&text, "mw_build_info{version=\"0.1.0\"}"), Some(1.0));
    assert_eq!(metric(&text, "mw_node_ready"), Some(1.0));
    assert!(
        metric(
            &text,
            "mw_connector_events_total{component=\"hm/connectors/m1\"}"
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "mw_component_state{component=\"hm/connectors/m1\",state=\"active\"}"
        ),
        Some(1.0)
    );
    // Explicit buckets, in seconds.
    assert!(
        metric(
            &text,
            "mw_broker_publish_duration_seconds_bucket{path=\"direct\",le=\"0.001\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(text.contains("# TYPE mw_broker_publish_duration_seconds histogram"));
    assert!(text.contains("# TYPE mw_connector_events_total counter"));
    wait_until(SETTLE, || async {
        metric(&node.metrics().await, "mw_uptime_seconds").is_some_and(|v| v >= 1.0)
    })
    .await
    .expect("uptime is exported");
}

#[tokio::test]
async fn a_sim_told_to_fail_is_restarted_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("rs", dir.path(), &two_sims())).await;
    node.wait_ready().await;
    node.wait_component("rs/connectors/m1", "active", |c| state(c) == "active")
        .await;

    let (code, body) = node.call("m1", "fail", &Value::Null).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"]["fail_pending"], true, "{body}");

    let m1 = node
        .wait_component("rs/connectors/m1", "restarted and active", |c| {
            c["restarts"] == 1 && state(c) == "active"
        })
        .await;
    assert!(
        m1["last_error"]
            .as_str()
            .unwrap()
            .contains("fatal: simulated crash"),
        "{m1}"
    );
    assert!(m1["last_restart"].is_string());
    let m2 = node.component("rs/connectors/m2").await.unwrap();
    assert_eq!(m2["restarts"], 0, "one_for_one: the sibling is untouched");
    // The restarted instance is a new machine: nothing is pending any more.
    let (code, body) = node.call("m1", "status", &Value::Null).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"]["fail_pending"], false, "{body}");

    let text = node.metrics().await;
    assert_eq!(
        metric(
            &text,
            "mw_component_restarts_total{component=\"rs/connectors/m1\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "mw_connector_calls_total{component=\"rs/connectors/m1\"}"
        ),
        Some(2.0),
        "the fault request and the status call are counted: {text}"
    );
}

#[tokio::test]
async fn an_out_of_process_sim_told_to_fail_is_restarted_in_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let sims = sim_out_of_process("m3", "", "interval = \"100ms\"\ntags = [\"temperature\"]");
    let node = NodeProcess::start(dir.path(), &config("ro", dir.path(), &sims)).await;
    node.wait_ready().await;
    node.wait_component("ro/connectors/m3", "active", |c| state(c) == "active")
        .await;
    let (code, body) = node.call("m3", "fail", &Value::Null).await;
    assert_eq!(code, 200, "{body}");
    let m3 = node
        .wait_component("ro/connectors/m3", "restarted and active", |c| {
            c["restarts"] == 1 && state(c) == "active"
        })
        .await;
    assert!(
        m3["last_error"]
            .as_str()
            .unwrap()
            .contains("fatal: simulated crash"),
        "{m3}"
    );
    let pids: Vec<u64> = node
        .logs()
        .iter()
        .filter(|v| v["message"] == "plugin process started" && v["instance"] == "m3")
        .filter_map(|v| v["pid"].as_u64())
        .collect();
    assert_eq!(pids.len(), 2, "one process per incarnation: {pids:?}");
    assert_ne!(pids[0], pids[1]);
}

#[tokio::test]
async fn a_hung_sim_is_given_up_at_its_call_timeout_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let sims = sim(
        "m1",
        "call_timeout = \"1s\"",
        "interval = \"100ms\"\ntags = [\"temperature\", \"pressure\"]",
    ) + &sim("m2", "", "interval = \"100ms\"\ntags = [\"speed\"]");
    let node = NodeProcess::start(dir.path(), &config("hg", dir.path(), &sims)).await;
    node.wait_ready().await;
    node.wait_component("hg/connectors/m1", "active", |c| state(c) == "active")
        .await;

    // A read that would wait 30 s: the instance's 1 s call timeout ends it.
    let (code, body) = node
        .call("m1", "hang", &serde_json::json!({"for": "30s"}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"]["hang_pending"], "30s", "{body}");
    let m1 = node
        .wait_component("hg/connectors/m1", "restarted after the hang", |c| {
            c["restarts"] == 1
        })
        .await;
    assert!(
        m1["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within 1s"),
        "{m1}"
    );
    assert_eq!(
        metric(
            &node.metrics().await,
            "mw_component_restarts_total{component=\"hg/connectors/m1\"}"
        ),
        Some(1.0)
    );
    // The new incarnation publishes again, well before the 30 s hang would have ended.
    node.wait_component("hg/connectors/m1", "active again", |c| state(c) == "active")
        .await;
    let m2 = node.component("hg/connectors/m2").await.unwrap();
    assert_eq!(m2["restarts"], 0, "one_for_one: the sibling is untouched");
    assert_eq!(state(&m2), "active", "{m2}");
}

#[tokio::test]
async fn a_sim_that_loses_its_connection_shows_its_reason_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("dg", dir.path(), &two_sims())).await;
    node.wait_ready().await;
    node.wait_component("dg/connectors/m2", "active", |c| state(c) == "active")
        .await;

    let (code, body) = node
        .call("m2", "degrade", &serde_json::json!({"for": "3s"}))
        .await;
    assert_eq!(code, 200, "{body}");
    let m2 = node
        .wait_component("dg/connectors/m2", "degraded", |c| state(c) == "degraded")
        .await;
    let reason = m2["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not connected: simulated connection loss (asked for by a call)"),
        "{m2}"
    );
    assert_eq!(m2["state_name"], "degraded_connection");
    // Its supervisor, a composite, shows which child is the trouble, and so does the root.
    let connectors = node.component("dg/connectors").await.unwrap();
    assert_eq!(connectors["state_name"], "degraded_m2", "{connectors}");
    assert!(
        connectors["reason"]
            .as_str()
            .unwrap()
            .starts_with("m2 degraded: not connected: simulated connection loss"),
        "{connectors}"
    );
    assert_eq!(
        node.component("dg").await.unwrap()["state_name"],
        "degraded_connectors"
    );
    assert_eq!(node.health().await.unwrap()["status"], "degraded");
    assert_eq!(
        metric(
            &node.metrics().await,
            "mw_component_state{component=\"dg/connectors/m2\",state=\"degraded\"}"
        ),
        Some(1.0)
    );
    // While the connection is lost, the instance answers no calls: 503, not_connected.
    let (code, body) = node.call("m2", "recover", &Value::Null).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["kind"], "not_connected", "{body}");

    // The loss ends after 3 s; the connector reconnects.
    node.wait_component("dg/connectors/m2", "active again", |c| state(c) == "active")
        .await;
    node.wait_component("dg/connectors", "healthy again", |c| state(c) == "active")
        .await;
    wait_until(SETTLE, || async {
        node.health().await.is_some_and(|h| h["status"] == "ok")
    })
    .await
    .expect("health back to ok");
    assert!(
        metric(
            &node.metrics().await,
            "mw_connector_errors_total{component=\"dg/connectors/m2\",kind=\"not_connected\"}"
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert_eq!(
        node.component("dg/connectors/m2").await.unwrap()["restarts"],
        0
    );
}

#[tokio::test]
async fn calls_refuse_unknown_machines_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("cr", dir.path(), &two_sims())).await;
    node.wait_ready().await;
    let (code, body) = node.call("nope", "fail", &Value::Null).await;
    assert_eq!(code, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("configured: m1, m2"),
        "{body}"
    );
    node.wait_component("cr/connectors/m1", "connected", |c| state(c) == "active")
        .await;
    let (code, body) = node.call("m1", "explode", &Value::Null).await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["kind"], "config", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sim answers fail, degrade, hang, recover, status"),
        "{body}"
    );
    let (code, body) = node
        .call("m1", "hang", &serde_json::json!({"for": "soon"}))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected nothing or {\"for\": \"5s\"}"),
        "{body}"
    );
    // The retired built-in simulator's routes are gone.
    let (code, _) = node.post("/control/sims/m1/fail").await;
    assert_eq!(code, 404);
}

fn shutdown_steps(node: &NodeProcess) -> Vec<String> {
    node.logs()
        .iter()
        .filter(|v| v["message"] == "shutdown step")
        .map(|v| v["step"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn sigterm_shuts_down_in_order_exits_zero_and_removes_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The supervisors' debug lines say which child stopped, and how.
    let text = config("st", &data, &two_sims()).replace(
        "level = \"info\"",
        "level = \"info,millwright_kernel::supervisor=debug\"",
    );
    let mut node = NodeProcess::start(dir.path(), &text).await;
    node.wait_ready().await;
    for id in ["st/connectors/m1", "st/connectors/m2"] {
        node.wait_component(id, "active", |c| state(c) == "active")
            .await;
    }
    let lock = data.join("millwright.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    assert_eq!(text.lines().next().unwrap(), node.pid().to_string());

    node.signal(Signal::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", node.output());
    assert_eq!(
        shutdown_steps(&node),
        [
            "stop_intake",
            "drain",
            "stop_components",
            "flush",
            "stop_http",
            "release_lock"
        ]
    );
    let done = node
        .find_log("shutdown complete")
        .expect("completion is logged");
    assert_eq!(done["drained"], true);
    assert_eq!(done["stopped_in_order"], true);
    assert_eq!(done["lock_released"], true);
    assert!(!lock.exists(), "the lockfile is gone");
    // The sim connectors were stopped, not killed: each ran its post_stop within its shutdown
    // timeout.
    let logs = node.logs();
    let mut stopped: Vec<&str> = logs
        .iter()
        .filter(|v| v["message"] == "child stopped" && v["supervisor"] == "st/connectors")
        .filter_map(|v| v["child"].as_str())
        .collect();
    stopped.sort_unstable();
    // The sims answer calls through the node's one rpc bridge: no bridge of their own.
    assert_eq!(stopped, ["m1", "m2"], "{}", node.output());
    assert!(
        !logs
            .iter()
            .any(|v| v["message"] == "child did not stop within its shutdown timeout; killing it"),
        "{}",
        node.output()
    );
}

#[tokio::test]
async fn sigterm_while_booting_is_kept_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    // `start` returns at the `listening` line, before the tree is up and before ready.
    let mut node = NodeProcess::start(dir.path(), &config("sb", dir.path(), &two_sims())).await;
    node.signal(Signal::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", node.output());
    assert!(
        node.find_log("shutdown complete").is_some(),
        "the ordered shutdown ran: {}",
        node.output()
    );
    assert!(!dir.path().join("millwright.lock").exists());
}

#[tokio::test]
async fn sigint_also_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), &config("si", dir.path(), &two_sims())).await;
    node.wait_ready().await;
    node.signal(Signal::SIGINT);
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", node.output());
    assert_eq!(shutdown_steps(&node).len(), 6);
}

#[tokio::test]
async fn ready_turns_503_while_a_hung_source_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), &config("dr", dir.path(), &two_sims())).await;
    node.wait_ready().await;
    node.wait_component("dr/connectors/m1", "active", |c| state(c) == "active")
        .await;
    // m1's next read waits 3 s (below its 10 s call timeout), so stopping it waits for the read
    // (within its 5 s shutdown timeout and the 10 s grace window).
    let (code, body) = node
        .call("m1", "hang", &serde_json::json!({"for": "3s"}))
        .await;
    assert_eq!(code, 200, "{body}");
    node.signal(Signal::SIGTERM);
    wait_until(SETTLE, || async {
        matches!(node.get("/ready").await, Some((503, body)) if body.contains("stopping"))
    })
    .await
    .expect("/ready says 503 stopping during shutdown");
    let health = node.health().await.unwrap();
    assert_eq!(health["status"], "stopping");
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", node.output());
    let done = node.find_log("shutdown complete").unwrap();
    assert_eq!(
        done["drained"], true,
        "the hang ended within the grace window"
    );
    assert_eq!(
        done["stopped_in_order"],
        true,
        "the hung read ended within m1's shutdown timeout: {}",
        node.output()
    );
    assert!(
        node.logs()
            .iter()
            .any(|v| v["message"] == "simulated hang for 3s" && v["instance"] == "m1"),
        "the hang happened during the shutdown: {}",
        node.output()
    );
}

#[tokio::test]
async fn a_second_node_on_the_same_data_dir_displaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first =
        NodeProcess::start_named(dir.path(), "a.toml", &config("ra", &data, &two_sims())).await;
    first.wait_ready().await;
    let second =
        NodeProcess::start_named(dir.path(), "b.toml", &config("rb", &data, &two_sims())).await;
    // The first gets SIGTERM and shuts down gracefully.
    let status = first.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", first.output());
    assert!(first.find_log("shutdown complete").is_some());
    second.wait_ready().await;
    let lock = std::fs::read_to_string(data.join("millwright.lock")).unwrap();
    assert_eq!(lock.lines().next().unwrap(), second.pid().to_string());
    assert!(
        second.logs().iter().any(|v| v["message"]
            == "another instance holds the lock; sending SIGTERM"
            && v["pid"] == first.pid()),
        "{}",
        second.output()
    );
}

#[tokio::test]
async fn a_stale_lock_with_a_dead_pid_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(data.join("millwright.lock"), format!("{dead_pid}\n")).unwrap();

    let node = NodeProcess::start(dir.path(), &config("sl", &data, &two_sims())).await;
    node.wait_ready().await;
    let lock = std::fs::read_to_string(data.join("millwright.lock")).unwrap();
    assert_eq!(lock.lines().next().unwrap(), node.pid().to_string());
    assert!(
        node.find_log("removing a stale lock (its process is gone)")
            .is_some()
    );
}

#[tokio::test]
async fn a_crash_loop_that_exhausts_the_root_stops_the_node_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        "cl",
        dir.path(),
        &sim(
            "crashy",
            "",
            "interval = \"20ms\"\ntags = [\"t\"]\nfail_every = \"60ms\"",
        ),
    )
    .replace("max_restarts = 10", "max_restarts = 1")
    .replace("min_backoff = \"50ms\"", "min_backoff = \"10ms\"");
    let mut node = NodeProcess::start(dir.path(), &text).await;
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "output:\n{}", node.output());
    let logs = node.logs();
    assert!(
        logs.iter().any(|v| v["message"] == "node stopped"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("root supervisor failed"))),
        "{}",
        node.output()
    );
    assert!(
        logs.iter().any(|v| v["message"] == "shutdown complete"),
        "the node still shuts down in order"
    );
    assert!(!dir.path().join("millwright.lock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_config_shows_live_data_a_restart_and_a_degraded_machine() {
    // The README's first command runs configs/demo.toml; run that file (on free ports, a
    // temp data dir and JSON logs) and check what the README promises a newcomer sees.
    let dir = tempfile::tempdir().unwrap();
    millwright_tests::build_plugin("sim", false);
    millwright_tests::build_plugin("cmms-http", false);
    millwright_tests::build_plugin("opcua", false);
    let mut plc = millwright_plc_sim::PlcSimOptions::new(dir.path().join("pki-plc-sim"));
    plc.secure = false;
    let plc = millwright_plc_sim::PlcSim::start(plc).await.unwrap();
    let cmms = millwright_cmms_sim::CmmsSim::start("127.0.0.1:0".parse().unwrap(), &["conveyor4"])
        .await
        .unwrap();
    let demo = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml"),
    )
    .unwrap();
    let text = demo
        .replace("\"0.0.0.0:8080\"", "\"127.0.0.1:0\"")
        .replace("\"0.0.0.0:9090\"", "\"127.0.0.1:0\"")
        .replace("\"data/demo\"", &format!("{:?}", dir.path().join("data")))
        .replace("format = \"human\"", "format = \"json\"")
        .replace("http://127.0.0.1:8089/api", &cmms.base_url())
        .replace("opc.tcp://127.0.0.1:4840/", &plc.endpoint())
        .replace(
            "\"data/demo/pki/opcua\"",
            &format!("{:?}", dir.path().join("pki-opcua")),
        );
    assert_ne!(
        text, demo,
        "the demo's ports, data dir and log format were found"
    );
    let node = NodeProcess::start(dir.path(), &text).await;
    node.wait_ready().await;
    node.wait_component("demo/connectors/conveyor4", "active", |c| {
        state(c) == "active"
    })
    .await;
    node.wait_component("demo/broker", "active", |c| state(c) == "active")
        .await;
    wait_until(SETTLE, || async {
        node.get("/values")
            .await
            .is_some_and(|(code, body)| code == 200 && body.contains("mw.ev.press1.temperature"))
    })
    .await
    .expect("live values of press1 on /values");
    wait_until(SETTLE, || async {
        node.get("/values").await.is_some_and(|(_, body)| {
            body.contains("mw.ev.plc1.temperature") && body.contains("mw.ev.plc1.pressure")
        })
    })
    .await
    .expect("the PLC's values over OPC-UA on /values");
    let (code, wrote) = node
        .post_json(
            "/connectors/plc1/call/write",
            &serde_json::json!({"node": "ns=2;s=Press.Setpoint", "value": 42.0}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, &wrote["ok"]["status"]),
        (200, &serde_json::json!("Good")),
        "{wrote}"
    );
    let (code, plugins) = node.get("/plugins").await.unwrap();
    assert_eq!(code, 200);
    let plugins: serde_json::Value = serde_json::from_str(&plugins).unwrap();
    let modes: Vec<(&str, &str)> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["instance"].as_str().unwrap(), p["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(
        modes,
        [
            ("cmms", "in_process"),
            ("conveyor4", "out_of_process"),
            ("mixer2", "in_process"),
            ("oven3", "in_process"),
            ("plc1", "in_process"),
            ("press1", "in_process")
        ],
        "every machine is a sim plugin instance, and the CMMS a connector"
    );
    let (code, assets) = node
        .post_json(
            "/connectors/cmms/call/list_assets",
            &serde_json::json!(null),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, &assets["ok"][0]["id"]),
        (200, &serde_json::json!("conveyor4")),
        "{assets}"
    );
    // press1 crashes every 10 s, mixer2 loses its connection every 12 s, oven3 hangs 15 s after
    // it starts.
    let wait = Duration::from_secs(40);
    wait_until(wait, || async {
        node.component("demo/connectors/press1")
            .await
            .is_some_and(|c| c["restarts"].as_u64() >= Some(1))
    })
    .await
    .expect("press1 is restarted by its supervisor");
    // Counters, which only grow, rather than states that last seconds: on a loaded machine a
    // one-shot window can pass while another wait runs.
    let node = &node;
    let counted = |series: &'static str| async move {
        metric(&node.metrics().await, series).is_some_and(|v| v >= 1.0)
    };
    wait_until(wait, || {
        counted(
            "mw_connector_errors_total{component=\"demo/connectors/mixer2\",kind=\"not_connected\"}",
        )
    })
    .await
    .expect("mixer2 loses its connection");
    // oven3's read waits 8 s; its call timeout (2 s) ends it and the instance is restarted.
    wait_until(wait, || async {
        node.component("demo/connectors/oven3")
            .await
            .is_some_and(|c| c["restarts"].as_u64() >= Some(1))
    })
    .await
    .expect("oven3's hang is ended by its call timeout and the instance restarted");
    wait_until(wait, || async {
        node.get("/values")
            .await
            .is_some_and(|(_, body)| body.contains("mw.ev.cmms.would_write"))
    })
    .await
    .expect("conveyor4's maintenance request becomes a would-be work order");
    assert_eq!(cmms.posts(), 0, "sandbox: the CMMS received no write");
    assert!(node.metrics().await.contains("mw_component_restarts_total"));
}
