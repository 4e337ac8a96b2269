//! A source that reaches the end of its input is not shown as a degraded supervisor (issue 11,
//! point 11). The `sim` plugin also answers calls, so its instance keeps running, `idle`; a pure
//! source is `finished` (`actors/connect/src/tests.rs` proves that with a pure source plugin).

mod support;

use support::NodeProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_ends_goes_idle_and_the_node_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let extra = support::sim(
        "line1",
        "",
        "interval = \"10ms\"\ntags = [\"a\"]\ncount = 5",
    ) + &support::sim("line2", "", "interval = \"100ms\"\ntags = [\"b\"]");
    let config = support::config("ends", &dir.path().join("data"), &extra);
    let node = NodeProcess::start(dir.path(), &config).await;
    node.wait_ready().await;
    // It produced all it had (and went active on the way) before it is looked at.
    millwright_tests::wait_until(support::SETTLE, || async {
        let (code, status) = node.call("line1", "status", &serde_json::json!({})).await;
        code == 200 && status["ok"]["samples"] == 5
    })
    .await
    .expect("line1 produces its 5 samples");
    let line1 = node
        .wait_component("ends/connectors/line1", "idle after its end", |c| {
            c["state"] == "idle"
        })
        .await;
    assert_eq!(line1["health"], "healthy", "{line1}");
    assert_eq!(
        line1["restarts"], 0,
        "an end of input is not a crash: {line1}"
    );
    let health = node.health().await.unwrap();
    let supervisor = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "ends/connectors")
        .unwrap();
    assert!(
        !supervisor["state"]
            .as_str()
            .unwrap()
            .starts_with("degraded"),
        "a finished source does not degrade its supervisor: {supervisor}"
    );
    assert_eq!(health["status"], "ok", "{health}");
}
