//! Plugins in a real node (the binary): connectors declared in the config, one in process and
//! one out of process, run through the broker with their logs and metrics in the node's; a
//! config that breaks the plugin's schema stops the node with one sentence; `millwright plugin
//! inspect` and `plugin list`.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{NodeProcess, config, testkit};

fn connectors(count: u64) -> String {
    let (lib, exe) = testkit();
    format!(
        r#"
[connectors.k1]
plugin = "{lib}"
config = {{ count = {count} }}
max_batch = 50

[connectors.k2]
plugin = "{exe}"
mode = "out_of_process"
config = {{ count = {count} }}
max_batch = 50
"#,
        lib = lib.display(),
        exe = exe.display()
    )
}

fn millwright(args: &[&str]) -> (bool, String) {
    let out = Command::new(support::binary()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_run_in_and_out_of_process_with_their_logs_and_metrics_in_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("pn", dir.path(), &connectors(500))).await;
    node.wait_ready().await;
    let published = millwright_tests::wait_until(support::SETTLE, || async {
        let m = node.metrics().await;
        ["k1", "k2"].iter().all(|k| {
            metric(
                &m,
                &format!("mw_connector_events_total{{component=\"pn/connectors/{k}\"}}"),
            ) == Some(500.0)
        })
    })
    .await;
    if let Err(e) = published {
        panic!(
            "both connectors publish 500 events: {e}\n{}\n{}",
            node.metrics().await,
            node.output()
        );
    }
    let m = node.metrics().await;
    for k in ["k1", "k2"] {
        assert!(
            m.lines().any(|l| l.starts_with("mw_plugin_reads_total")
                && l.contains("plugin=\"testkit\"")
                && l.contains(&format!("instance=\"{k}\""))),
            "the plugin's own metric, labelled, for {k}:\n{m}"
        );
        let logged = node.logs().iter().any(|l| {
            l["message"] == "testkit connected" && l["instance"] == k && l["plugin"] == "testkit"
        });
        assert!(logged, "the plugin's log line, labelled, for {k}");
    }
    let broker = node.broker().await.unwrap();
    assert_eq!(
        broker["delivered"], 1000,
        "everything went through the broker: {broker}"
    );

    let (code, body) = node.get("/plugins").await.unwrap();
    assert_eq!(code, 200);
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    let modes: Vec<(&str, &str)> = listed
        .iter()
        .map(|p| (p["instance"].as_str().unwrap(), p["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(modes, [("k1", "in_process"), ("k2", "out_of_process")]);
    let (ok, text) = millwright(&[
        "plugin",
        "list",
        "--config",
        node.config_path.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("k1") && text.contains("testkit") && text.contains("out_of_process"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_breaks_the_plugin_schema_stops_the_node_with_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let bad = connectors(5).replacen("count = 5", "cont = 5", 1);
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config("pb", dir.path(), &bad)).unwrap();
    let out = Command::new(support::binary())
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = out
        .lines()
        .find(|l| l.contains("connectors.k1.config"))
        .unwrap_or_else(|| panic!("names the key: {out}"));
    assert!(line.contains("cont"), "names the wrong key: {line}");
    assert!(
        line.contains("bad.toml: connectors.k1.config"),
        "names the file: {line}"
    );
    assert!(line.contains("testkit"), "names the plugin: {line}");
    assert!(
        line.contains("plugin inspect"),
        "says where the schema is: {line}"
    );
}

#[test]
fn plugin_inspect_prints_the_manifest_and_refuses_non_plugins() {
    let (lib, exe) = testkit();
    let (ok, text) = millwright(&["plugin", "inspect", lib.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("plugin testkit"), "{text}");
    assert!(text.contains("abi 4.0"), "{text}");
    assert!(text.contains("\"count\""), "the config schema: {text}");
    let (ok, text) = millwright(&[
        "plugin",
        "inspect",
        "--out-of-process",
        "--json",
        exe.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["id"], "testkit");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.so");
    std::fs::write(&junk, "junk").unwrap();
    let (ok, text) = millwright(&["plugin", "inspect", junk.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains("junk.so") && text.contains("not a plugin"),
        "{text}"
    );
}
