//! The in-process form: the static header `export_plugin!` generates (the symbol the node
//! finds in `libmillwright_plugin_cmms_http.so`), called here from the rlib the same way the
//! node calls it after `dlopen`, through the SDK's `HostedInstance`: `create`, requests through
//! `start` (answered at once or through the completion; MessagePack, `plugin_sdk::codec`),
//! `free`, `destroy`. The HTTP calls wait on the instance's own runtime, so this also checks
//! that pooled connections survive between calls and that logs cross the callbacks.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use millwright_plugin_sdk::abi::MAGIC;
use millwright_plugin_sdk::abi::host::HostedInstance;
use millwright_plugin_sdk::context::{Host, LogRecord, MetricUpdate};
use millwright_plugin_sdk::protocol::{Request, Response};
use serde_json::json;
use support::{Cmms, Reply};

/// Keeps the messages of the log records that cross the boundary.
#[derive(Default)]
struct Logs(Mutex<Vec<String>>);

impl Host for Logs {
    fn log(&self, _instance: &str, record: LogRecord) {
        self.0.lock().unwrap().push(record.message);
    }

    fn metric(&self, _instance: &str, _update: MetricUpdate) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_entry_point_serves_the_plugin() {
    let cmms = Cmms::always(Reply::Json(201, json!({"id": "WO-9"}))).await;
    let base_url = cmms.base_url();
    let logs = Arc::new(Logs::default());
    let header = &millwright_plugin_cmms_http::millwright_plugin_header_v4;
    assert_eq!(header.magic, MAGIC);
    // SAFETY: the header of the plugin linked into this test, which is never unloaded.
    let instance = unsafe { HostedInstance::create(header, logs.clone(), "cmms") }
        .expect("the plugin makes an instance");
    let replies = async {
        let mut replies = Vec::new();
        for request in [
            Request::open(json!({"base_url": base_url})),
            Request::Connect,
            Request::Call {
                method: "list_assets".into(),
                payload: json!({}),
            },
            Request::Call {
                method: "create_work_order".into(),
                payload: json!({"work_order": {"title": "t"}}),
            },
            Request::Call {
                method: "get_asset".into(),
                payload: json!({"id": "P-1"}),
            },
            Request::ReadBatch { max: 10 },
            Request::Close,
        ] {
            replies.push(instance.request(&request).await.expect("an answer"));
        }
        replies
    };
    let replies = tokio::time::timeout(Duration::from_secs(30), replies)
        .await
        .expect("the calls finish");
    drop(instance);
    assert_eq!(replies[0], Response::Done, "open");
    assert_eq!(replies[1], Response::Done, "connect");
    assert_eq!(
        replies[2],
        Response::Reply {
            payload: json!({"id": "WO-9"})
        }
    );
    let Response::Reply { payload } = &replies[3] else {
        panic!("{:?}", replies[3])
    };
    assert_eq!(payload["status"], 201);
    assert_eq!(
        payload["attempts"], 1,
        "no failed attempt on a pooled connection"
    );
    assert!(
        matches!(&replies[4], Response::Reply { .. }),
        "{:?}",
        replies[4]
    );
    let Response::Batch { batch } = &replies[5] else {
        panic!("{:?}", replies[5])
    };
    assert_eq!(batch.events[0].subject, "mw.ev.cmms.work_order.created");
    assert_eq!(cmms.count("GET"), 2);
    assert_eq!(cmms.count("POST"), 1);
    assert!(
        logs.0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("cmms-http ready")),
        "logs reach the host through the callbacks"
    );
}
