//! The in-process form: the `extern "C"` entry point `export_plugin!` generates (the symbol the
//! node finds in `libmillwright_plugin_cmms_http.so`), called here from the rlib the same way
//! the node calls it after `dlopen`: header, `create`, requests through `handle` (MessagePack,
//! `plugin_sdk::codec`), `free`,
//! `destroy`. Each instance runs on its own current-thread runtime that only runs during a
//! call, so this also checks that pooled HTTP connections survive between calls.

mod support;

use std::ffi::c_void;
use std::sync::Mutex;
use std::time::Duration;

use millwright_plugin_sdk::abi::{HostCallbacks, MAGIC, PluginHeader, StrRef};
use millwright_plugin_sdk::codec;
use millwright_plugin_sdk::context::LogRecord;
use millwright_plugin_sdk::protocol::{Request, Response};
use serde_json::json;
use support::{Cmms, Reply};

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn log(_: *const c_void, _instance: StrRef, record: StrRef) {
    // SAFETY: the plugin lends the record for the duration of the call.
    let bytes = unsafe { record.as_bytes() };
    let text = codec::decode::<LogRecord>(bytes)
        .map(|r| r.message)
        .unwrap_or_default();
    LOGS.lock().unwrap().push(text);
}

extern "C" fn metric(_: *const c_void, _instance: StrRef, _update: StrRef) {}

fn handle(header: &PluginHeader, instance: *mut c_void, request: &Request) -> Response {
    let bytes = codec::encode(request).unwrap();
    let buffer = (header.handle)(instance, StrRef::from_bytes(&bytes));
    // SAFETY: a live buffer the plugin returned; freed right after by the plugin's `free`.
    let response = codec::decode(unsafe { buffer.as_bytes() }).unwrap();
    (header.free)(buffer);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_entry_point_serves_the_plugin() {
    let cmms = Cmms::always(Reply::Json(201, json!({"id": "WO-9"}))).await;
    let base_url = cmms.base_url();
    let replies = tokio::task::spawn_blocking(move || {
        // SAFETY: the entry point returns a pointer to a static header.
        let header = unsafe { &*millwright_plugin_cmms_http::millwright_plugin_entry_v2() };
        assert_eq!(header.magic, MAGIC);
        let callbacks = HostCallbacks {
            ctx: std::ptr::null(),
            log,
            metric,
        };
        let instance = (header.create)(&callbacks, StrRef::from_static("cmms"));
        assert!(!instance.is_null());
        let replies: Vec<Response> = [
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
        ]
        .iter()
        .map(|r| handle(header, instance, r))
        .collect();
        (header.destroy)(instance);
        replies
    });
    let replies = tokio::time::timeout(Duration::from_secs(30), replies)
        .await
        .expect("the calls finish")
        .unwrap();
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
        LOGS.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("cmms-http ready")),
        "logs reach the host through the callbacks"
    );
}
