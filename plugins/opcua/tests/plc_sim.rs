//! The connector against a real OPC-UA server (the simulated PLC) on loopback, through the
//! SDK's `TestHost`: data, quality, restarts, cut paths, the watchdog, security, calls.

mod support;

use std::time::{Duration, Instant};

use millwright_plc_sim::{PASSWORD, PlcSim, USER};
use millwright_plugin_opcua::session::fingerprints;
use millwright_plugin_sdk::prelude::*;
use millwright_tests::fault_proxy::{FaultProxy, Mode};
use opcua::types::StatusCode;
use serde_json::json;
use support::{Rig, call, connect, open, read_until};

const T: Duration = Duration::from_secs(15);

fn distinct_payloads(events: &[&Envelope]) -> usize {
    let mut v: Vec<String> = events.iter().map(|e| e.payload.to_string()).collect();
    v.sort();
    v.dedup();
    v.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_flow_with_status_and_all_three_timestamps() {
    let rig = Rig::start().await;
    let cfg = rig.config(
        &rig.sim.endpoint(),
        &[
            ("press.temperature", &rig.press("Temperature")),
            ("press.count", &rig.press("Count")),
            ("v0", &rig.sim.sim(0).to_string()),
        ],
    );
    let mut host = open(cfg).await;
    connect(&mut host, T).await;
    let seen = read_until(&mut host, T, |s| {
        distinct_payloads(&s.on("press.count")) >= 3 && !s.on("v0").is_empty()
    })
    .await;
    let e = seen.on("press.count")[0];
    assert_eq!(e.subject, "mw.ev.line1.press.count");
    assert_eq!(e.source, "line1");
    assert_eq!(e.status_code, Some(0));
    assert_eq!(e.quality, Quality::Good);
    assert!(e.payload.is_i64(), "{}", e.payload);
    let source = e.source_time.expect("source time");
    assert!(e.server_time.is_some(), "server time");
    assert!(e.receive_time >= source - chrono::Duration::seconds(1));
    assert!(seen.on("press.temperature")[0].payload.is_f64());
    assert_eq!(host.health().await, Health::Healthy);
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_going_bad_arrives_as_bad_with_its_full_status_code() {
    let rig = Rig::start().await;
    let temp = rig.sim.press("Temperature");
    let mut host = open(rig.config(&rig.sim.endpoint(), &[("temp", &temp.to_string())])).await;
    connect(&mut host, T).await;
    read_until(&mut host, T, |s| !s.on("temp").is_empty()).await;
    rig.sim
        .set_bad(&temp, StatusCode::BadSensorFailure)
        .unwrap();
    let seen = read_until(&mut host, T, |s| {
        s.on("temp").iter().any(|e| e.quality == Quality::Bad)
    })
    .await;
    let bad = seen
        .on("temp")
        .into_iter()
        .find(|e| e.quality == Quality::Bad)
        .unwrap();
    assert_eq!(bad.status_code, Some(StatusCode::BadSensorFailure.bits()));
    assert_eq!(bad.status_code, Some(0x808C_0000), "the full 32-bit code");
    host.close().await;
}

/// Going Bad with the value unchanged, at whatever moment relative to the server's sampling
/// and publishing: every time, the Bad sample arrives (it was lost when the item had no
/// explicit StatusValue filter, or when the server held it back past a publishing tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_going_bad_again_and_again_arrives_as_bad_every_time() {
    let rig = Rig::start().await;
    let temp = rig.sim.press("Temperature");
    let mut host = open(rig.config(&rig.sim.endpoint(), &[("temp", &temp.to_string())])).await;
    connect(&mut host, T).await;
    for _ in 0..10 {
        rig.sim.clear_bad(&temp);
        read_until(&mut host, T, |s| {
            s.on("temp").iter().any(|e| e.quality == Quality::Good)
        })
        .await;
        rig.sim
            .set_bad(&temp, StatusCode::BadSensorFailure)
            .unwrap();
        let seen = read_until(&mut host, T, |s| {
            s.on("temp").iter().any(|e| e.quality == Quality::Bad)
        })
        .await;
        let bad = seen.on("temp");
        let bad = bad.iter().find(|e| e.quality == Quality::Bad).unwrap();
        assert_eq!(bad.status_code, Some(StatusCode::BadSensorFailure.bits()));
    }
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_resumes_after_the_server_restarts_on_the_same_port() {
    let rig = Rig::start().await;
    let count = rig.press("Count");
    let mut host = open(rig.config(&rig.sim.endpoint(), &[("count", &count)])).await;
    connect(&mut host, T).await;
    read_until(&mut host, T, |s| !s.on("count").is_empty()).await;

    let Rig {
        sim,
        server_pki,
        client_pki: _client_pki,
    } = rig;
    let options = sim.options();
    sim.stop().await;
    // The connector notices.
    let seen = read_until(&mut host, T, |s| !s.errors.is_empty()).await;
    assert_eq!(seen.errors[0].kind(), "not_connected", "{:?}", seen.errors);

    let restarted_at = Instant::now();
    let sim = PlcSim::start(options)
        .await
        .expect("restarts on the same port");
    // A fresh server counts from 1 again: wait for a value from the new one.
    let seen = read_until(&mut host, T, |s| {
        s.on("count").iter().any(|e| e.payload.as_i64() < Some(50))
    })
    .await;
    let took = restarted_at.elapsed();
    assert!(took < Duration::from_secs(10), "resumed after {took:?}");
    assert!(!seen.on("count").is_empty());
    drop(sim);
    drop(server_pki);
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_resumes_after_the_tcp_path_is_cut_and_restored() {
    // The server advertises a host that does not resolve: the configured address must be used.
    let rig = Rig::start_with(|o| o.advertised_host = Some("plc.invalid".into())).await;
    let proxy = FaultProxy::start(rig.sim.addr());
    let endpoint = format!("opc.tcp://127.0.0.1:{}/", proxy.port());
    let count = rig.press("Count");
    let mut host = open(rig.config(&endpoint, &[("count", &count)])).await;
    connect(&mut host, T).await;
    read_until(&mut host, T, |s| !s.on("count").is_empty()).await;

    proxy.set_mode(Mode::Refuse);
    let seen = read_until(&mut host, T, |s| !s.errors.is_empty()).await;
    assert!(
        seen.errors.iter().all(|e| e.kind() == "not_connected"),
        "{:?}",
        seen.errors
    );
    let restored_at = Instant::now();
    proxy.set_mode(Mode::Pass);
    let seen = read_until(&mut host, T, |s| !s.on("count").is_empty()).await;
    let took = restored_at.elapsed();
    assert!(took < Duration::from_secs(10), "resumed after {took:?}");
    // Two connections per connect (GetEndpoints, then the session): a third is a reconnect.
    assert!(
        proxy.connections_accepted() >= 3,
        "it reconnected through the proxy"
    );
    assert_eq!(seen.on("count")[0].quality, Quality::Good);
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_reconnects_when_publish_responses_stop() {
    let rig = Rig::start().await;
    let proxy = FaultProxy::start(rig.sim.addr());
    let endpoint = format!("opc.tcp://127.0.0.1:{}/", proxy.port());
    let mut cfg = rig.config(&endpoint, &[("running", &rig.press("Running"))]);
    // `Running` never changes: only keep-alives keep the watchdog fed.
    cfg["watchdog_timeout"] = json!("1500ms");
    let mut host = open(cfg).await;
    connect(&mut host, T).await;
    read_until(&mut host, T, |s| !s.on("running").is_empty()).await;
    // Quiet for longer than the watchdog: the read waits for data (none comes), and
    // keep-alives alone keep the watchdog from ending it with an error.
    let waited = tokio::time::timeout(Duration::from_millis(2500), host.read_batch(100)).await;
    assert!(
        waited.is_err(),
        "no data and no watchdog error for 2.5 s: {waited:?}"
    );

    // The connection stays open but nothing flows (what the async-opcua bug looks like).
    proxy.set_mode(Mode::Blackhole);
    let cut = Instant::now();
    let seen = read_until(&mut host, T, |s| {
        s.errors.iter().any(|e| e.to_string().contains("watchdog"))
    })
    .await;
    let took = cut.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(6),
        "watchdog fired after {took:?}"
    );
    assert!(seen.errors[0].kind() == "not_connected");
    assert!(
        host.recorded()
            .metrics
            .iter()
            .any(|m| m.name == "watchdog_reconnects_total")
    );
    proxy.set_mode(Mode::Pass);
    read_until(&mut host, T, |s| !s.on("running").is_empty()).await;
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic256sha256_sign_and_encrypt_with_a_username_and_a_pinned_certificate() {
    let rig = Rig::start().await;
    let (sha256, _) = fingerprints(&rig.sim.certificate_der().unwrap());
    let password_file = rig.client_pki.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let mut cfg = rig.config(&rig.sim.endpoint(), &[("count", &rig.press("Count"))]);
    cfg["security"] = json!("basic256sha256");
    cfg["trust"] = json!("pinned");
    cfg["server_fingerprint"] = json!(sha256);
    cfg["user"] = json!({"type": "username", "username": USER, "password_file": password_file});
    let mut host = open(cfg.clone()).await;
    connect(&mut host, T).await;
    let seen = read_until(&mut host, T, |s| distinct_payloads(&s.on("count")) >= 2).await;
    assert_eq!(seen.on("count")[0].quality, Quality::Good);
    let logs = format!("{:?}", host.recorded().logs);
    assert!(!logs.contains(PASSWORD), "the password is never logged");
    host.close().await;

    // A wrong password is a config problem, said as such.
    std::fs::write(&password_file, "wrong").unwrap();
    let mut host = open(cfg).await;
    let err = host.connect().await.unwrap_err();
    assert_eq!(err.kind(), "config", "{err}");
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_naming_the_fingerprint_and_the_fix() {
    let rig = Rig::start().await;
    let (sha256, _) = fingerprints(&rig.sim.certificate_der().unwrap());
    let mut cfg = rig.config(&rig.sim.endpoint(), &[("count", &rig.press("Count"))]);
    cfg["security"] = json!("basic256sha256");
    cfg["trust"] = json!("pinned");
    cfg["server_fingerprint"] = json!("00".repeat(32));
    let mut host = open(cfg.clone()).await;
    let err = host.connect().await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), "config", "{msg}");
    let shown = millwright_plugin_opcua::session::colon_hex(&sha256);
    assert!(msg.contains(&shown), "{msg} names the fingerprint found");
    assert!(msg.contains("set server_fingerprint"), "{msg} says the fix");
    host.close().await;

    // Trust on first use: the first certificate is stored, a different one later is refused.
    cfg["trust"] = json!("trust_on_first_use");
    cfg.as_object_mut().unwrap().remove("server_fingerprint");
    let mut host = open(cfg.clone()).await;
    connect(&mut host, T).await;
    host.close().await;
    let port = rig.sim.port();
    rig.sim.stop().await;
    let other_pki = tempfile::tempdir().unwrap();
    let other = PlcSim::start(millwright_plc_sim::PlcSimOptions::new(other_pki.path()).port(port))
        .await
        .unwrap();
    let mut host = open(cfg).await;
    let err = host.connect().await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), "config", "{msg}");
    assert!(msg.contains("changed since it was first trusted"), "{msg}");
    let (new_sha, _) = fingerprints(&other.certificate_der().unwrap());
    assert!(
        msg.contains(&millwright_plugin_opcua::session::colon_hex(&new_sha)),
        "{msg}"
    );
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_and_browse_calls() {
    let rig = Rig::start().await;
    let setpoint = rig.sim.press("Setpoint");
    let mut host = open(rig.config(&rig.sim.endpoint(), &[("sp", &setpoint.to_string())])).await;
    connect(&mut host, T).await;

    let reply = call(
        &mut host,
        "write",
        json!({"node": setpoint.to_string(), "value": 72.5}),
    )
    .await
    .unwrap();
    assert_eq!(reply["status_code"], 0, "{reply}");
    let on_server = rig.sim.read(&setpoint).unwrap();
    assert_eq!(on_server.value, Some(opcua::types::Variant::Double(72.5)));

    let reply = call(&mut host, "read", json!({"nodes": [setpoint.to_string()]}))
        .await
        .unwrap();
    assert_eq!(reply["values"][0]["value"], 72.5, "{reply}");
    assert_eq!(reply["values"][0]["quality"], "good");
    assert!(reply["values"][0]["source_time"].is_string());

    // A read-only node: the server's status comes back, not an error.
    let reply = call(
        &mut host,
        "write",
        json!({"node": rig.press("Temperature"), "value": 1.0}),
    )
    .await
    .unwrap();
    assert_ne!(reply["status_code"], 0, "{reply}");

    let reply = call(
        &mut host,
        "browse",
        json!({"node": format!("ns={};s=Press", rig.sim.namespace())}),
    )
    .await
    .unwrap();
    let names: Vec<&str> = reply["references"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["display_name"].as_str())
        .collect();
    assert!(
        names.contains(&"Temperature") && names.contains(&"Setpoint"),
        "{names:?}"
    );
    let objects = call(&mut host, "browse", json!({})).await.unwrap();
    assert!(objects.to_string().contains("Press"), "{objects}");

    let err = call(&mut host, "frobnicate", json!({})).await.unwrap_err();
    assert_eq!(err.kind(), "config");
    assert!(err.to_string().contains("write, read and browse"), "{err}");
    let err = call(&mut host, "write", json!({"node": "nope", "value": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "config", "{err}");
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_path_nodes_resolve_and_polling_reads_them() {
    let rig = Rig::start().await;
    let ns = rig.sim.namespace();
    let mut cfg = rig.config(&rig.sim.endpoint(), &[]);
    cfg["nodes"] = json!([
        {"tag": "count", "browse_path": format!("/{ns}:Press/{ns}:Count")},
        {"tag": "temp", "node_id": rig.press("Temperature")},
    ]);
    let mut host = open(cfg.clone()).await;
    connect(&mut host, T).await;
    let seen = read_until(&mut host, T, |s| distinct_payloads(&s.on("count")) >= 2).await;
    assert!(seen.on("count")[0].payload.is_i64());
    host.close().await;

    cfg["mode"] = json!("polling");
    cfg["poll_interval"] = json!("100ms");
    let mut host = open(cfg.clone()).await;
    connect(&mut host, T).await;
    let seen = read_until(&mut host, T, |s| {
        s.on("count").len() >= 3 && s.on("temp").len() >= 3
    })
    .await;
    assert_eq!(seen.on("temp")[0].status_code, Some(0));
    host.close().await;

    cfg["nodes"][0]["browse_path"] = json!(format!("/{ns}:Press/{ns}:NoSuchNode"));
    let mut host = open(cfg).await;
    let err = host.connect().await.unwrap_err();
    assert_eq!(err.kind(), "config", "{err}");
    assert!(err.to_string().contains("nodes[0].browse_path"), "{err}");
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_not_acknowledged_is_read_again_after_a_reconnect() {
    let rig = Rig::start().await;
    let mut host = open(rig.config(&rig.sim.endpoint(), &[("count", &rig.press("Count"))])).await;
    connect(&mut host, T).await;
    let deadline = Instant::now() + T;
    let first = loop {
        let b = host.read_batch(5).await.unwrap();
        if !b.events.is_empty() {
            break b;
        }
        assert!(Instant::now() < deadline);
    };
    // Not acknowledged; the instance reconnects.
    connect(&mut host, T).await;
    let again = host.read_batch(5).await.unwrap();
    assert_eq!(
        again.events.iter().map(|e| e.id).collect::<Vec<_>>()[..first.events.len()],
        first.events.iter().map(|e| e.id).collect::<Vec<_>>()[..],
    );
    host.close().await;
}

/// One failure, one sentence, no wait of the plugin's own: the node's connector actor owns the
/// wait between attempts and says it once ("...; retrying in 400ms (attempt 2)").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_there_is_not_connected_and_the_plugin_does_not_wait() {
    let rig = Rig::start().await;
    let endpoint = rig.sim.endpoint();
    let cfg = rig.config(&endpoint, &[("count", &rig.press("Count"))]);
    rig.sim.stop().await;
    let mut host = open(cfg).await;
    let err = host.connect().await.unwrap_err();
    assert_eq!(err.kind(), "not_connected", "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("not connected: {endpoint}: ")),
        "{text} names the endpoint first"
    );
    assert_eq!(
        text.matches(&endpoint).count(),
        1,
        "{text} names the endpoint once"
    );
    for timing in ["retrying", "reconnecting", "backing off", "attempt"] {
        assert!(!text.contains(timing), "{text} says nothing about waiting");
    }
    // Called again right away (the host decides when), it tries again instead of asking
    // for a wait of its own.
    let again = host.connect().await.unwrap_err();
    assert_eq!(again.kind(), "not_connected", "{again}");
    match host.health().await {
        Health::Unhealthy(reason) => {
            assert_eq!(reason.matches(&endpoint).count(), 1, "{reason}");
            assert!(reason.contains("last failure"), "{reason}");
        }
        other => panic!("not connected is unhealthy, got {other:?}"),
    }
    host.close().await;
}

/// The executable, out of process: the same connector over stdio frames, with its own runtime
/// inside the plugin process serving the session between calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executable_serves_the_connector_out_of_process() {
    use millwright_plugin_sdk::manifest::{ABI_MAJOR, ABI_MINOR};
    use millwright_plugin_sdk::protocol::{Request, Response};
    use millwright_plugin_sdk::stdio::{
        Frame, Handshake, read_frame, read_handshake, write_frame, write_handshake,
    };

    let rig = Rig::start().await;
    let config = rig.config(&rig.sim.endpoint(), &[("count", &rig.press("Count"))]);
    let setpoint = rig.press("Setpoint");
    let (events, reply) = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_millwright-plugin-opcua"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the plugin executable starts");
        let mut input = child.stdin.take().unwrap();
        let mut output = std::io::BufReader::new(child.stdout.take().unwrap());
        write_handshake(
            &mut input,
            &Handshake::Hello {
                major: ABI_MAJOR,
                minor: ABI_MINOR,
                instance: Some("line1".into()),
                manifest: None,
            },
        )
        .unwrap();
        match read_handshake(&mut output).unwrap() {
            Some(Handshake::Hello { manifest, .. }) => {
                assert_eq!(manifest.expect("a manifest").id, "opcua");
            }
            other => panic!("hello: {other:?}"),
        }
        let mut id = 0;
        let mut ask = |request: Request| -> Response {
            id += 1;
            write_frame(&mut input, &Frame::Request { id, request }).unwrap();
            loop {
                match read_frame(&mut output).unwrap().expect("a frame") {
                    Frame::Response { id: got, response } if got == id => return response,
                    _ => {}
                }
            }
        };
        assert_eq!(ask(Request::open(config)), Response::Done);
        let deadline = Instant::now() + T;
        loop {
            match ask(Request::Connect) {
                Response::Done => break,
                other => assert!(Instant::now() < deadline, "connect: {other:?}"),
            }
        }
        let mut events = 0;
        while events < 2 {
            assert!(Instant::now() < deadline, "no events in time");
            if let Response::Batch { batch } = ask(Request::ReadBatch { max: 100 }) {
                events += batch.events.len();
                assert_eq!(ask(Request::Ack { token: batch.token }), Response::Done);
            }
        }
        let reply = match ask(Request::Call {
            method: "write".into(),
            payload: json!({"node": setpoint, "value": 12.5}),
        }) {
            Response::Reply { payload } => payload,
            other => panic!("write: {other:?}"),
        };
        assert_eq!(ask(Request::Close), Response::Done);
        drop(input);
        let _ = child.wait();
        (events, reply)
    })
    .await
    .unwrap();
    assert!(events >= 2, "events through the executable: {events}");
    assert_eq!(reply["status_code"], 0, "{reply}");
    assert_eq!(
        rig.sim.read(&rig.sim.press("Setpoint")).unwrap().value,
        Some(opcua::types::Variant::Double(12.5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_busy_items_stay_connected() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // Regression: with async-opcua's default 320 KiB message limit and no cap on notifications
    // per publish, a publish response of 1,000 busy items overflowed and the session dropped.
    let rig = Rig::start_with(|o| {
        o.variables = 1000;
        o.update_interval = Duration::from_millis(100);
    })
    .await;
    let ids: Vec<(String, String)> = (0..1000)
        .map(|i| (format!("v{i:04}"), rig.sim.sim(i).to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = ids.iter().map(|(t, n)| (t.as_str(), n.as_str())).collect();
    let mut cfg = rig.config(&rig.sim.endpoint(), &refs);
    cfg["sampling_interval"] = json!("0s");
    // ~5,000 changes per publish, more than the 1,000 array limit async-opcua has by default.
    cfg["publishing_interval"] = json!("500ms");
    cfg["max_notifications_per_publish"] = json!(2000);
    let mut host = open(cfg).await;
    connect(&mut host, T).await;
    let seen = read_until(&mut host, T, |s| s.events.len() >= 15_000).await;
    assert!(
        seen.errors.is_empty(),
        "stayed connected: {:?}",
        seen.errors
    );
    host.close().await;
}
