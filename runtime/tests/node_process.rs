//! Black-box tests of the real `millwright run` binary on the embedded bus: probes, health,
//! metrics, sim faults driven over HTTP, SIGTERM, and the single-instance lock.

mod support;

use std::time::Duration;

use millwright_tests::wait_until;
use nix::sys::signal::Signal;
use serde_json::Value;
use support::{NodeProcess, SETTLE, TWO_SIMS, config};

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
async fn health_shows_every_sim_active_and_metrics_export_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("hm", dir.path(), TWO_SIMS)).await;
    node.wait_ready().await;
    assert_eq!(node.get("/live").await.unwrap().0, 200);
    for id in ["hm/sims/m1", "hm/sims/m2"] {
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
            "hm/sims",
            "hm/sims/m1",
            "hm/sims/m2"
        ]
    );
    let broker = &health["components"][1];
    assert_eq!(broker["kind"], "broker");
    assert_eq!(
        broker["state"], "active",
        "sims publish through it: {broker}"
    );
    let m1 = &health["components"][4];
    assert_eq!(m1["kind"], "sim");
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

    let (code, page) = node.get("/").await.unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("/health"), "the status page polls /health");

    let text = node.metrics().await;
    assert_eq!(metric(&text, "mw_build_info{version=\"0.1.0\"}"), Some(1.0));
    assert_eq!(metric(&text, "mw_node_ready"), Some(1.0));
    assert!(metric(&text, "mw_events_published_total{source=\"m1\"}").unwrap() >= 2.0);
    assert_eq!(
        metric(
            &text,
            "mw_component_state{component=\"hm/sims/m1\",state=\"active\"}"
        ),
        Some(1.0)
    );
    // Explicit buckets, in seconds.
    assert!(
        metric(
            &text,
            "mw_publish_duration_seconds_bucket{source=\"m1\",le=\"0.001\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(text.contains("# TYPE mw_publish_duration_seconds histogram"));
    assert!(text.contains("# TYPE mw_events_published_total counter"));
    wait_until(SETTLE, || async {
        metric(&node.metrics().await, "mw_uptime_seconds").is_some_and(|v| v >= 1.0)
    })
    .await
    .expect("uptime is exported");
}

#[tokio::test]
async fn a_sim_told_to_fail_is_restarted_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("rs", dir.path(), TWO_SIMS)).await;
    node.wait_ready().await;
    node.wait_component("rs/sims/m1", "active", |c| state(c) == "active")
        .await;

    let (code, body) = node.post("/control/sims/m1/fail").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["ok"], true);

    let m1 = node
        .wait_component("rs/sims/m1", "restarted and active", |c| {
            c["restarts"] == 1 && state(c) == "active"
        })
        .await;
    assert!(
        m1["last_error"]
            .as_str()
            .unwrap()
            .contains("simulated failure of m1: commanded"),
        "{m1}"
    );
    assert!(m1["last_restart"].is_string());
    let m2 = node.component("rs/sims/m2").await.unwrap();
    assert_eq!(m2["restarts"], 0, "one_for_one: the sibling is untouched");

    let text = node.metrics().await;
    assert_eq!(
        metric(
            &text,
            "mw_component_restarts_total{component=\"rs/sims/m1\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "mw_sim_faults_total{machine=\"m1\",fault=\"fail\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_hung_sim_shows_as_not_answering_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("hg", dir.path(), TWO_SIMS)).await;
    node.wait_ready().await;
    node.wait_component("hg/sims/m1", "active", |c| state(c) == "active")
        .await;

    assert_eq!(node.post("/control/sims/m1/hang").await.0, 202);
    let m1 = node
        .wait_component("hg/sims/m1", "not answering", |c| state(c) == "degraded")
        .await;
    assert!(
        m1["reason"]
            .as_str()
            .unwrap()
            .starts_with("not answering: no reply to a liveness ping within 500ms"),
        "{m1}"
    );
    assert_eq!(node.health().await.unwrap()["status"], "degraded");
    assert!(
        metric(
            &node.metrics().await,
            "mw_watchdog_unresponsive_total{component=\"hg/sims/m1\"}"
        )
        .is_some_and(|v| v >= 1.0)
    );
    // hang_for is 3 s; then it answers and publishes again.
    node.wait_component("hg/sims/m1", "answers again", |c| state(c) == "active")
        .await;
    assert_eq!(node.component("hg/sims/m1").await.unwrap()["restarts"], 0);
}

#[tokio::test]
async fn a_degraded_sim_shows_its_reason_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("dg", dir.path(), TWO_SIMS)).await;
    node.wait_ready().await;
    node.wait_component("dg/sims/m2", "active", |c| state(c) == "active")
        .await;

    assert_eq!(node.post("/control/sims/m2/degrade").await.0, 202);
    let m2 = node
        .wait_component("dg/sims/m2", "degraded", |c| state(c) == "degraded")
        .await;
    assert_eq!(m2["reason"], "simulated degradation: commanded");
    assert_eq!(m2["state_name"], "degraded");
    // Its supervisor, a composite, shows which child is the trouble, and so does the root.
    let sims = node.component("dg/sims").await.unwrap();
    assert_eq!(sims["state_name"], "degraded_m2", "{sims}");
    assert_eq!(
        sims["reason"],
        "m2 degraded: simulated degradation: commanded"
    );
    assert_eq!(
        node.component("dg").await.unwrap()["state_name"],
        "degraded_sims"
    );
    assert_eq!(node.health().await.unwrap()["status"], "degraded");
    assert_eq!(
        metric(
            &node.metrics().await,
            "mw_component_state{component=\"dg/sims/m2\",state=\"degraded\"}"
        ),
        Some(1.0)
    );

    assert_eq!(node.post("/control/sims/m2/recover").await.0, 202);
    node.wait_component("dg/sims/m2", "active again", |c| state(c) == "active")
        .await;
    node.wait_component("dg/sims", "healthy again", |c| state(c) == "active")
        .await;
    wait_until(SETTLE, || async {
        node.health().await.is_some_and(|h| h["status"] == "ok")
    })
    .await
    .expect("health back to ok");
}

#[tokio::test]
async fn control_refuses_unknown_machines_and_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("cr", dir.path(), TWO_SIMS)).await;
    node.wait_ready().await;
    let (code, body) = node.post("/control/sims/nope/fail").await;
    assert_eq!(code, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("configured: m1, m2"),
        "{body}"
    );
    let (code, body) = node.post("/control/sims/m1/explode").await;
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("expected fail, hang"),
        "{body}"
    );
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
    let mut node = NodeProcess::start(dir.path(), &config("st", &data, TWO_SIMS)).await;
    node.wait_ready().await;
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
    // The sims were stopped, not killed: each ran its post_stop.
    let stopped = node
        .logs()
        .iter()
        .filter(|v| v["message"] == "sim stopped")
        .count();
    assert_eq!(stopped, 2);
}

#[tokio::test]
async fn sigterm_while_booting_is_kept_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    // `start` returns at the `listening` line, before the tree is up and before ready.
    let mut node = NodeProcess::start(dir.path(), &config("sb", dir.path(), TWO_SIMS)).await;
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
    let mut node = NodeProcess::start(dir.path(), &config("si", dir.path(), TWO_SIMS)).await;
    node.wait_ready().await;
    node.signal(Signal::SIGINT);
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", node.output());
    assert_eq!(shutdown_steps(&node).len(), 6);
}

#[tokio::test]
async fn ready_turns_503_while_a_hung_source_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), &config("dr", dir.path(), TWO_SIMS)).await;
    node.wait_ready().await;
    node.wait_component("dr/sims/m1", "active", |c| state(c) == "active")
        .await;
    // m1 hangs for 3 s, so the drain step waits for it (within the 10 s grace window).
    assert_eq!(node.post("/control/sims/m1/hang").await.0, 202);
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
}

#[tokio::test]
async fn a_second_node_on_the_same_data_dir_displaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first =
        NodeProcess::start_named(dir.path(), "a.toml", &config("ra", &data, TWO_SIMS)).await;
    first.wait_ready().await;
    let second =
        NodeProcess::start_named(dir.path(), "b.toml", &config("rb", &data, TWO_SIMS)).await;
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

    let node = NodeProcess::start(dir.path(), &config("sl", &data, TWO_SIMS)).await;
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
        r#"
[sims.crashy]
interval = "20ms"
tags = ["t"]
fail_every = "60ms"
"#,
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
