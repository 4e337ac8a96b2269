//! Sinks and responders in a real node (the binary): events on a sink's `subscribe` subjects
//! reach the plugin in and out of process, a rejected event is counted, calls are answered
//! over HTTP and over NATS request/reply with the documented bodies; plugins are found by
//! name; a name that finds nothing and a `subscribe` on a plugin that is no sink stop the node
//! with one sentence naming the file.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use millwright_tests::{NatsServer, wait_until};
use serde_json::{Value, json};
use support::{NodeProcess, config, testkit};

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of the metric series `series` (name and labels), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn sinks(dir: &Path) -> String {
    let (lib, exe) = testkit();
    format!(
        r#"
[connectors.w1]
plugin = "{lib}"
subscribe = ["mw.ev.feed.>"]
config = {{ sink_file = "{f1}" }}

[connectors.w2]
plugin = "{exe}"
mode = "out_of_process"
subscribe = ["mw.ev.feed.>"]
max_batch = 7
config = {{ sink_file = "{f2}" }}
"#,
        lib = lib.display(),
        exe = exe.display(),
        f1 = dir.join("w1.jsonl").display(),
        f2 = dir.join("w2.jsonl").display(),
    )
}

fn event(n: u64, payload: Value) -> Value {
    json!({
        "id": millwright_plugin_sdk::event::EventId::new().to_string(),
        "source": "feed",
        "subject": format!("mw.ev.feed.n{}", n % 3),
        "receive_time": "2026-12-01T00:00:00Z",
        "payload": payload,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_in_and_out_of_process_get_every_event_in_order_and_rejects_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("cs", dir.path(), &sinks(dir.path()))).await;
    node.wait_ready().await;
    for c in ["w1", "w2"] {
        node.wait_component(&format!("cs/connectors/{c}"), "connected", |c| {
            c["state"] == "idle" || c["state"] == "active"
        })
        .await;
    }
    // Through the broker and the bus, as a source's events would come.
    let mut events: Vec<Value> = (0..200).map(|n| event(n, json!(n))).collect();
    events.insert(100, event(1000, json!("reject")));
    events.insert(150, event(1001, json!("transient-once")));
    for chunk in events.chunks(50) {
        let (code, body) = node.post_json("/events", &json!(chunk)).await.unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let want: Vec<Value> = (0..200).map(|n| json!(n)).collect();
    let done = wait_until(support::SETTLE, || async {
        lines(&dir.path().join("w1.jsonl")).len() >= 201
            && lines(&dir.path().join("w2.jsonl")).len() >= 201
    })
    .await;
    assert!(
        done.is_ok(),
        "both sinks get 201 events:\n{}",
        node.output()
    );
    for (file, how) in [("w1.jsonl", "in process"), ("w2.jsonl", "out of process")] {
        let mut got = lines(&dir.path().join(file));
        // The event refused once is offered again (after the rest of its batch, possibly).
        let again = got.iter().position(|v| v == "transient-once");
        assert!(
            again.is_some(),
            "{how}: the transient refusal is offered again: {got:?}"
        );
        got.remove(again.unwrap());
        assert_eq!(got, want, "{how}: everything else exactly once, in order");
    }
    let m = node.metrics().await;
    for c in ["w1", "w2"] {
        let series = format!("{{component=\"cs/connectors/{c}\"}}");
        let value = |name: &str| metric(&m, &format!("{name}{series}"));
        assert_eq!(
            value("mw_connector_write_failures_total"),
            Some(1.0),
            "the rejected event, for {c}:\n{m}"
        );
        assert_eq!(
            value("mw_connector_written_total"),
            Some(201.0),
            "201 written by {c}:\n{m}"
        );
    }
    assert!(
        node.find_log("sink rejected an event; dropped").is_some(),
        "the rejection is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_answered_over_http_and_nats_with_the_documented_bodies() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[bus]\nnats_url = \"{}\"\n{}",
        nats.url(),
        sinks(dir.path())
    );
    let node = NodeProcess::start(dir.path(), &config("cc", dir.path(), &extra)).await;
    node.wait_ready().await;
    for c in ["w1", "w2"] {
        node.wait_component(&format!("cc/connectors/{c}"), "connected", |c| {
            c["state"] == "idle" || c["state"] == "active"
        })
        .await;
    }
    for c in ["w1", "w2"] {
        let (code, body) = node
            .post_json(&format!("/connectors/{c}/call/echo"), &json!({"a": [1, 2]}))
            .await
            .unwrap();
        assert_eq!((code, body), (200, json!({"ok": {"a": [1, 2]}})), "{c}");
    }
    let (code, body) = node
        .post_json("/connectors/w1/call/nope", &json!(null))
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["kind"], "config");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nope"),
        "{body}"
    );
    let (code, body) = node
        .post_json("/connectors/w2/call/fail", &json!(null))
        .await
        .unwrap();
    assert_eq!(
        (code, &body["error"]["kind"]),
        (503, &json!("transient")),
        "{body}"
    );
    let (code, body) = node
        .post_json("/connectors/zz/call/echo", &json!(null))
        .await
        .unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("w1, w2"), "{body}");

    // The same calls over NATS request/reply, from an ordinary client.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let ask = |method: &'static str, body: &'static str| {
        let client = client.clone();
        async move {
            let reply = tokio::time::timeout(
                Duration::from_secs(10),
                client.request(format!("mw.rpc.w1.{method}"), body.into()),
            )
            .await
            .expect("answered in time")
            .expect("a reply");
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    // After the transient failure above w2 reconnects; w1 answers at once.
    assert_eq!(
        ask("echo", r#"{"x": true}"#).await,
        json!({"ok": {"x": true}})
    );
    assert_eq!(
        ask("echo", "").await,
        json!({"ok": null}),
        "an empty body is null"
    );
    let bad = ask("echo", "{not json").await;
    assert_eq!(bad["error"]["kind"], "config", "{bad}");
    let position = ask("position", "").await;
    assert_eq!(position["ok"]["acked"], 0, "{position}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_named_is_found_beside_the_binary() {
    testkit();
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[connectors.k1]
plugin = "testkit"
config = { count = 10 }

[connectors.k2]
plugin = "testkit"
mode = "out_of_process"
config = { count = 10 }
"#;
    let node = NodeProcess::start(dir.path(), &config("cn", dir.path(), extra)).await;
    node.wait_ready().await;
    let (code, body) = node.get("/plugins").await.unwrap();
    assert_eq!(code, 200);
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    let paths: Vec<&str> = listed.iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert!(
        paths[0].ends_with("/libmillwright_plugin_testkit.so"),
        "{paths:?}"
    );
    assert!(
        paths[1].ends_with("/millwright-plugin-testkit"),
        "{paths:?}"
    );
}

fn refused(dir: &Path, extra: &str) -> String {
    let path = dir.join("node.toml");
    std::fs::write(&path, config("cr", dir, extra)).unwrap();
    let mut child = Command::new(support::binary())
        .arg("run")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Refused at boot: it must exit on its own; a node that ran instead is killed, not waited
    // on forever.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the node did not refuse the config within 30 s");
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "a std child process, polled without a runtime"
        )]
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "node failed to start")
        .and_then(|l| l["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("one error: {text}"))
}

#[test]
fn an_unknown_plugin_name_and_a_subscribe_on_a_source_are_refused_with_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let line = refused(dir.path(), "[connectors.x]\nplugin = \"nosuch\"\n");
    assert!(
        line.starts_with(&dir.path().join("node.toml").display().to_string()),
        "{line}"
    );
    assert!(line.contains("node.toml: connectors.x.plugin"), "{line}");
    assert!(line.contains("no plugin named \"nosuch\""), "{line}");
    assert!(
        line.contains("libmillwright_plugin_nosuch.so"),
        "the names tried: {line}"
    );
    assert!(
        line.contains("cargo build -p millwright-plugin-nosuch"),
        "the fix: {line}"
    );

    millwright_tests::build_plugin("sim", false);
    let line = refused(
        dir.path(),
        "[connectors.m]\nplugin = \"sim\"\nsubscribe = [\"mw.ev.>\"]\n",
    );
    assert!(line.contains("node.toml: connectors.m.subscribe"), "{line}");
    assert!(line.contains("not a sink"), "{line}");

    testkit();
    let line = refused(
        dir.path(),
        "[connectors.w]\nplugin = \"testkit\"\nsubscribe = [\"mw..bad\"]\n",
    );
    assert!(
        line.contains("node.toml: connectors.w.subscribe: \"mw..bad\""),
        "{line}"
    );
}
