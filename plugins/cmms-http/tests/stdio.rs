//! The out-of-process form: the crate's executable serves the same connector over
//! stdin/stdout (`stdio::serve`). A handshake, an `open`, a call that reaches a real HTTP
//! server on loopback, and a clean close, spoken frame by frame as the node would.

mod support;

use std::io::{BufReader, BufWriter, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::protocol::{Request, Response};
use millwright_plugin_sdk::stdio::{
    Frame, Handshake, read_frame, read_handshake, write_frame, write_handshake,
};
use serde_json::json;
use support::{Cmms, Reply};

/// The next frame that is not a heartbeat, log or metric.
fn next(reader: &mut impl std::io::Read) -> Frame {
    loop {
        match read_frame(reader)
            .unwrap()
            .expect("the plugin closed stdout early")
        {
            Frame::Heartbeat | Frame::Log { .. } | Frame::Metric { .. } => continue,
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executable_serves_the_plugin_over_stdio() {
    let cmms = Cmms::always(Reply::Json(200, json!([{"id": "P-1"}]))).await;
    let base_url = cmms.base_url();
    let exchange = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_millwright-plugin-cmms-http"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the plugin executable starts");
        let mut input = BufWriter::new(child.stdin.take().unwrap());
        let mut output = BufReader::new(child.stdout.take().unwrap());
        write_handshake(
            &mut input,
            &Handshake::Hello {
                major: millwright_plugin_sdk::manifest::ABI_MAJOR,
                minor: millwright_plugin_sdk::manifest::ABI_MINOR,
                instance: Some("cmms".into()),
                manifest: None,
            },
        )
        .unwrap();
        input.flush().unwrap();
        let Some(Handshake::Hello {
            manifest: Some(manifest),
            ..
        }) = read_handshake(&mut output).unwrap()
        else {
            panic!("the plugin answers Hello with its manifest")
        };
        let mut send = |frame: Frame| {
            write_frame(&mut input, &frame).unwrap();
            input.flush().unwrap();
        };
        let mut replies = Vec::new();
        for (id, request) in [
            Request::open(json!({"base_url": base_url, "sandbox": true})),
            Request::Connect,
            Request::Call {
                method: "list_assets".into(),
                payload: json!({}),
            },
            Request::Call {
                method: "create_work_order".into(),
                payload: json!({"work_order": {"title": "t"}}),
            },
            Request::ReadBatch { max: 10 },
            Request::Close,
        ]
        .into_iter()
        .enumerate()
        {
            send(Frame::Request {
                id: id as u64,
                request,
            });
            let Frame::Response { id: got, response } = next(&mut output) else {
                panic!("a response")
            };
            assert_eq!(got, id as u64);
            replies.push(response);
        }
        drop(input); // closes the plugin's stdin after Close
        let status = child.wait().unwrap();
        (manifest, replies, status)
    });
    let (manifest, replies, status) = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the exchange finishes")
        .unwrap();
    assert_eq!(manifest.id, "cmms-http");
    assert_eq!(manifest.kinds, [Kind::Source, Kind::Sink, Kind::Responder]);
    assert_eq!(replies[0], Response::Done);
    assert_eq!(replies[1], Response::Done);
    assert_eq!(
        replies[2],
        Response::Reply {
            payload: json!([{"id": "P-1"}])
        }
    );
    let Response::Reply { payload } = &replies[3] else {
        panic!("{:?}", replies[3])
    };
    assert_eq!(payload["sandbox"], true);
    let Response::Batch { batch } = &replies[4] else {
        panic!("{:?}", replies[4])
    };
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].subject, "mw.ev.cmms.would_write");
    assert_eq!(replies[5], Response::Done);
    assert!(status.success(), "exit {status:?}");
    assert_eq!(cmms.count("GET"), 1, "the call reached the server");
    assert_eq!(cmms.count("POST"), 0, "sandbox mode, out of process too");
}
