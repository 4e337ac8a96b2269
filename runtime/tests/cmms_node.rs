//! The CMMS connector in a real node against a real (simulated) CMMS on loopback: machines'
//! maintenance requests become work orders through the sink; in sandbox mode the CMMS receives
//! no write while the would-be work orders are published and reads still reach it; calls over
//! HTTP reach the CMMS.

mod support;

use millwright_cmms_sim::CmmsSim;
use millwright_tests::wait_until;
use serde_json::{Value, json};
use support::{NodeProcess, config};

fn node_config(base_url: &str, sandbox: bool, mode: &str) -> String {
    format!(
        r#"
[connectors.press1]
plugin = "sim"
config = {{ interval = "200ms", tags = ["temperature"], maintenance_every = "300ms" }}

[connectors.cmms]
plugin = "cmms-http"
mode = "{mode}"
subscribe = ["mw.ev.*.maintenance_request"]
config = {{ base_url = "{base_url}", sandbox = {sandbox} }}
"#
    )
}

async fn start(dir: &std::path::Path, cmms: &CmmsSim, sandbox: bool, mode: &str) -> NodeProcess {
    millwright_tests::build_plugin("sim", false);
    millwright_tests::build_plugin("cmms-http", false);
    let text = config("cm", dir, &node_config(&cmms.base_url(), sandbox, mode));
    let node = NodeProcess::start(dir, &text).await;
    node.wait_ready().await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_requests_become_work_orders_out_of_process() {
    let cmms = CmmsSim::start("127.0.0.1:0".parse().unwrap(), &["press1"])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &cmms, false, "out_of_process").await;
    let created = wait_until(support::SETTLE, || async { cmms.work_orders().len() >= 3 }).await;
    assert!(
        created.is_ok(),
        "three work orders in the CMMS:\n{}",
        node.output()
    );
    let orders = cmms.work_orders();
    assert!(
        orders.iter().all(|wo| wo["asset"] == "press1"),
        "{orders:?}"
    );
    assert!(
        orders
            .iter()
            .any(|wo| wo["title"].as_str().unwrap().ends_with("#1")),
        "the first request is not missed: {orders:?}"
    );
    // The connector publishes what it created.
    let published = wait_until(support::SETTLE, || async {
        node.get("/values")
            .await
            .is_some_and(|(_, body)| body.contains("mw.ev.cmms.work_order.created"))
    })
    .await;
    assert!(published.is_ok(), "work_order.created on /values");
    // A call over HTTP reads through to the CMMS.
    let (code, body) = node
        .post_json("/connectors/cmms/call/get_asset", &json!({"id": "press1"}))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"]["id"], "press1", "{body}");
    let (code, body) = node
        .post_json("/connectors/cmms/call/get_asset", &json!({"id": "nope"}))
        .await
        .unwrap();
    assert_eq!(
        code, 400,
        "a 404 from the CMMS fails fast as a config error: {body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("404"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_mode_publishes_would_be_work_orders_and_sends_no_write() {
    let cmms = CmmsSim::start("127.0.0.1:0".parse().unwrap(), &["press1"])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &cmms, true, "in_process").await;
    let metric = "mw_connector_events_total{component=\"cm/connectors/cmms\"}";
    let published = wait_until(support::SETTLE, || async {
        node.metrics().await.lines().any(|l| {
            l.starts_with(metric)
                && l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 3.0)
        })
    })
    .await;
    assert!(
        published.is_ok(),
        "three would_write events published:\n{}",
        node.output()
    );
    let (_, values) = node.get("/values").await.unwrap();
    let values: Vec<Value> = serde_json::from_str(&values).unwrap();
    let would = values
        .iter()
        .find(|v| v["subject"] == "mw.ev.cmms.would_write")
        .expect("a would_write value");
    assert_eq!(would["value"]["method"], "POST", "{would}");
    assert_eq!(would["value"]["body"]["asset"], "press1", "{would}");
    // Reads still happen in sandbox mode; writes never.
    let (code, body) = node
        .post_json("/connectors/cmms/call/list_assets", &json!(null))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"][0]["id"], "press1");
    let (code, body) = node
        .post_json(
            "/connectors/cmms/call/create_work_order",
            &json!({"work_order": {"title": "by hand", "asset": "press1"}}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"]["sandbox"], true, "{body}");
    assert_eq!(cmms.posts(), 0, "the CMMS received no write");
    assert!(cmms.work_orders().is_empty());
    assert!(cmms.requests() >= 1, "but it was read");
}
