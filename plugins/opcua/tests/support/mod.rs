//! Test support: a plc-sim per test, connector configs, and polling helpers with deadlines.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use millwright_plc_sim::{PlcSim, PlcSimOptions};
use millwright_plugin_opcua::{OPCUA, OpcUa};
use millwright_plugin_sdk::harness::TestHost;
use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::protocol::{Request, Response};
use serde_json::{Value, json};

/// A simulator and the temp dirs of one test.
pub struct Rig {
    pub sim: PlcSim,
    pub server_pki: tempfile::TempDir,
    pub client_pki: tempfile::TempDir,
}

impl Rig {
    /// A simulator with security on, 10 variables, 50 ms updates.
    pub async fn start() -> Rig {
        Self::start_with(|_| {}).await
    }

    /// The same, with options changed by `f`.
    pub async fn start_with(f: impl FnOnce(&mut PlcSimOptions)) -> Rig {
        let server_pki = tempfile::tempdir().unwrap();
        let client_pki = tempfile::tempdir().unwrap();
        let mut options =
            PlcSimOptions::new(server_pki.path()).update_interval(Duration::from_millis(50));
        f(&mut options);
        let sim = PlcSim::start(options).await.expect("plc-sim starts");
        Rig {
            sim,
            server_pki,
            client_pki,
        }
    }

    /// A config for `endpoint` reading `nodes` (tag, node id), fast timings for tests.
    pub fn config(&self, endpoint: &str, nodes: &[(&str, &str)]) -> Value {
        json!({
            "endpoint": endpoint,
            "pki_dir": self.client_pki.path(),
            "nodes": nodes.iter().map(|(tag, id)| json!({"tag": tag, "node_id": id})).collect::<Vec<_>>(),
            "publishing_interval": "100ms",
            "sampling_interval": "50ms",
            "watchdog_timeout": "3s",
            "request_timeout": "2s",
        })
    }

    /// `ns=<ns>;s=Press.<name>`.
    pub fn press(&self, name: &str) -> String {
        self.sim.press(name).to_string()
    }
}

/// Opens the connector.
pub async fn open(config: Value) -> TestHost<OpcUa> {
    TestHost::open(&OPCUA, "line1", config)
        .await
        .expect("config is valid")
}

/// What [`read_until`] saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub events: Vec<Envelope>,
    pub errors: Vec<ConnectorError>,
}

impl Seen {
    pub fn on(&self, tag: &str) -> Vec<&Envelope> {
        self.events
            .iter()
            .filter(|e| e.subject.ends_with(&format!(".{tag}")))
            .collect()
    }
}

/// Connects, retrying retryable errors after a short pause (standing in for the node's
/// backoff, which owns the wait between attempts) until `deadline`.
pub async fn connect(host: &mut TestHost<OpcUa>, within: Duration) -> Vec<ConnectorError> {
    let deadline = Instant::now() + within;
    let mut errors = Vec::new();
    loop {
        match host.connect().await {
            Ok(()) => return errors,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                let wait = match &e {
                    ConnectorError::BackOff(d) => (*d).min(Duration::from_millis(200)),
                    _ => Duration::from_millis(50),
                };
                errors.push(e);
                tokio::time::sleep(wait).await;
            }
            Err(e) => panic!("connect failed: {e} (earlier: {errors:?})"),
        }
    }
}

/// Reads (acknowledging, reconnecting like the host does) until `done` holds for what was
/// seen, or panics at the deadline.
pub async fn read_until(
    host: &mut TestHost<OpcUa>,
    within: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let deadline = Instant::now() + within;
    let mut seen = Seen::default();
    loop {
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}: {} events, errors {:?}",
            seen.events.len(),
            seen.errors
        );
        // A read waits for data: bounded here by what is left of the deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(read) = tokio::time::timeout(left, host.read_batch(1000)).await else {
            panic!(
                "condition not met within {within:?} (a read waited for data): {} events, \
                 errors {:?}",
                seen.events.len(),
                seen.errors
            );
        };
        match read {
            Ok(batch) => {
                host.ack(batch.token).await.unwrap();
                seen.events.extend(batch.events);
            }
            Err(e) if e.is_retryable() => {
                seen.errors.push(e);
                let left = deadline.saturating_duration_since(Instant::now());
                let errs = connect_once_or_wait(host, left).await;
                seen.errors.extend(errs);
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

async fn connect_once_or_wait(host: &mut TestHost<OpcUa>, left: Duration) -> Vec<ConnectorError> {
    match host.connect().await {
        Ok(()) => vec![],
        Err(ConnectorError::BackOff(d)) => {
            tokio::time::sleep(d.min(left).min(Duration::from_millis(200))).await;
            vec![]
        }
        Err(e) if e.is_retryable() => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            vec![e]
        }
        Err(e) => panic!("reconnect failed: {e}"),
    }
}

/// Sends a call and returns the reply or the error.
pub async fn call(
    host: &mut TestHost<OpcUa>,
    method: &str,
    payload: Value,
) -> Result<Value, ConnectorError> {
    match host
        .request(Request::Call {
            method: method.into(),
            payload,
        })
        .await
    {
        Response::Reply { payload } => Ok(payload),
        Response::Error { error } => Err(error),
        other => panic!("unexpected {other:?}"),
    }
}
