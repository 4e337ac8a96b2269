//! The `sim` plugin through the SDK's test harness, on paused time.

use std::time::Duration;

use millwright_plugin_sdk::harness::TestHost;
use millwright_plugin_sdk::prelude::*;
use serde_json::json;

use crate::SIM;

async fn open(config: serde_json::Value) -> TestHost<crate::Sim> {
    let mut host = TestHost::open(&SIM, "press1", config)
        .await
        .expect("valid config");
    host.connect().await.expect("connects");
    host
}

#[tokio::test(start_paused = true)]
async fn emits_one_sample_per_tag_per_interval_on_the_instance_subjects() {
    let mut host = open(json!({"tags": ["temperature", "pressure"], "interval": "500ms"})).await;
    let start = tokio::time::Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let batch = host.read_batch(64).await.unwrap();
        seen.extend(batch.events.iter().map(|e| e.subject.clone()));
        host.ack(batch.token).await.unwrap();
    }
    assert_eq!(
        seen,
        ["temperature", "pressure"]
            .repeat(3)
            .iter()
            .map(|t| format!("mw.ev.press1.{t}"))
            .collect::<Vec<_>>()
    );
    // Three rounds: at 0, 500 ms and 1 s.
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_batch_is_read_again_and_count_ends_the_input() {
    let mut host = open(json!({"interval": "0s", "count": 5})).await;
    let first = host.read_batch(3).await.unwrap();
    assert_eq!(first.events.len(), 3);
    let again = host.read_batch(3).await.unwrap();
    assert_eq!(
        again, first,
        "not acknowledged: the same batch, the same ids"
    );
    host.ack(first.token).await.unwrap();
    let rest = host.read_batch(64).await.unwrap();
    assert_eq!(rest.events.len(), 2, "count caps the total");
    host.ack(rest.token).await.unwrap();
    assert_eq!(host.read_batch(64).await, Err(ConnectorError::EndOfInput));
}

#[tokio::test(start_paused = true)]
async fn faults_follow_the_schedule() {
    let mut host = open(json!({
        "interval": "100ms", "fail_every": "10s", "degrade_every": "3s", "degrade_for": "1s"
    }))
    .await;
    tokio::time::advance(Duration::from_millis(3100)).await;
    assert!(matches!(
        host.read_batch(8).await,
        Err(ConnectorError::NotConnected(_))
    ));
    assert!(matches!(
        host.connect().await,
        Err(ConnectorError::NotConnected(_))
    ));
    assert!(matches!(host.health().await, Health::Degraded(_)));
    tokio::time::advance(Duration::from_secs(1)).await;
    host.connect().await.expect("the loss lasts degrade_for");
    let b = host.read_batch(8).await.unwrap();
    assert!(!b.events.is_empty());
    host.ack(b.token).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(matches!(
        host.read_batch(8).await,
        Err(ConnectorError::Fatal(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn calls_inject_faults_and_report_status() {
    let mut host = open(json!({"interval": "100ms"})).await;
    host.call("degrade", json!({"for": "2s"})).await.unwrap();
    assert!(matches!(
        host.read_batch(8).await,
        Err(ConnectorError::NotConnected(_))
    ));
    host.call("recover", json!(null)).await.unwrap();
    host.read_batch(8).await.expect("recovered");
    host.call("hang", json!({"for": "3s"})).await.unwrap();
    let before = tokio::time::Instant::now();
    host.read_batch(8).await.unwrap();
    assert!(before.elapsed() >= Duration::from_secs(3), "the read hung");
    host.call("fail", json!(null)).await.unwrap();
    assert!(matches!(
        host.read_batch(8).await,
        Err(ConnectorError::Fatal(_))
    ));
    let status = host.call("status", json!(null)).await.unwrap();
    assert_eq!(status["instance"], "press1");
    let err = host.call("explode", json!(null)).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Config(m) if m.contains("explode")),
        "{err}"
    );
}

#[tokio::test]
async fn bad_config_names_the_key() {
    for (config, key) in [
        (json!({"tags": []}), "tags"),
        (json!({"tags": ["a.b"]}), "tags"),
        (
            json!({"degrade_every": "2s", "degrade_for": "3s"}),
            "degrade_for",
        ),
        (json!({"interval": "soon"}), "interval"),
    ] {
        let err = TestHost::open(&SIM, "m", config.clone()).await.unwrap_err();
        assert!(err.to_string().contains(key), "{config}: {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn maintenance_requests_are_work_orders_on_their_own_subject() {
    let mut host = open(json!({"interval": "1s", "maintenance_every": "5s"})).await;
    let mut requests = Vec::new();
    let start = tokio::time::Instant::now();
    while requests.len() < 2 {
        let batch = host.read_batch(64).await.unwrap();
        requests.extend(
            batch
                .events
                .iter()
                .filter(|e| e.subject == "mw.ev.press1.maintenance_request")
                .cloned(),
        );
        host.ack(batch.token).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_secs(10), "one every 5 s");
    assert_eq!(requests[0].payload["work_order"]["asset"], "press1");
    assert!(
        requests[1].payload["work_order"]["title"]
            .as_str()
            .unwrap()
            .ends_with("#2")
    );
}
