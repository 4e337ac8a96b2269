//! Test support: a scripted CMMS on loopback (axum on `127.0.0.1:0`), a server that drops
//! every connection after reading the request, a closed port, and helpers to drive the plugin
//! through the SDK's `TestHost`.

#![allow(dead_code, reason = "each test binary uses part of the support module")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use millwright_plugin_cmms_http::{CMMS, CmmsHttp};
use millwright_plugin_sdk::context::MetricKind;
use millwright_plugin_sdk::harness::TestHost;
use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::protocol::{Request, Response as PluginResponse};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted server answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body with this status.
    Json(u16, Value),
    /// A text body with this status.
    Text(u16, &'static str),
    /// This status, a `Retry-After` header and a short body.
    RetryAfter(u16, &'static str),
    /// Never answers.
    Hang,
    /// This status, with a body that echoes the credential headers it received.
    EchoAuth(u16),
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Hit {
    /// When it arrived.
    pub at: Instant,
    /// `GET`, `POST`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The raw query, if any.
    pub query: Option<String>,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: String,
}

impl Hit {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Debug)]
struct Shared {
    hits: Mutex<Vec<Hit>>,
    script: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Reply>,
}

/// A scripted CMMS on loopback. Answers from the script first, then the fallback.
#[derive(Debug)]
pub struct Cmms {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cmms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let next = s.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| s.fallback.lock().unwrap().clone())
    };
    s.hits.lock().unwrap().push(Hit {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let status = |c: u16| StatusCode::from_u16(c).unwrap();
    match reply {
        Reply::Json(code, v) => (status(code), axum::Json(v)).into_response(),
        Reply::Text(code, t) => (status(code), t).into_response(),
        Reply::RetryAfter(code, after) => {
            (status(code), [("retry-after", after)], "slow down").into_response()
        }
        Reply::Hang => std::future::pending().await,
        Reply::EchoAuth(code) => {
            let echo = format!(
                "denied: authorization={:?} x-api-key={:?}",
                headers.get("authorization"),
                headers.get("x-api-key")
            );
            (status(code), echo).into_response()
        }
    }
}

impl Cmms {
    /// A server answering `script` in order, then `fallback` forever.
    pub async fn start(script: Vec<Reply>, fallback: Reply) -> Self {
        let shared = Arc::new(Shared {
            hits: Mutex::new(Vec::new()),
            script: Mutex::new(script.into()),
            fallback: Mutex::new(fallback),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    /// A server that always answers `reply`.
    pub async fn always(reply: Reply) -> Self {
        Self::start(Vec::new(), reply).await
    }

    /// The plugin's `base_url` for this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// What it received so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// How many requests with `method` it received.
    pub fn count(&self, method: &str) -> usize {
        self.hits().iter().filter(|h| h.method == method).count()
    }
}

/// A server that reads each request in full, then closes the connection without answering:
/// the client cannot know whether the request took effect.
#[derive(Debug)]
pub struct Dropper {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Dropper {
    /// Starts it.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head and the body (Content-Length), then hang up.
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                seen.lock().unwrap().push(text);
                                let _ = stream.shutdown().await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// The plugin's `base_url` for this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The raw requests received in full.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A loopback address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Opens and connects instance `cmms1` with `config`.
pub async fn open(config: Value) -> TestHost<CmmsHttp> {
    let mut host = TestHost::open(&CMMS, "cmms1", config)
        .await
        .expect("the config is valid");
    host.connect().await.expect("connect needs no server");
    host
}

/// `Responder::call` through the host.
pub async fn call(
    host: &mut TestHost<CmmsHttp>,
    method: &str,
    payload: Value,
) -> Result<Value, ConnectorError> {
    match host
        .request(Request::Call {
            method: method.to_owned(),
            payload,
        })
        .await
    {
        PluginResponse::Reply { payload } => Ok(payload),
        PluginResponse::Error { error } => Err(error),
        other => panic!("unexpected response {other:?}"),
    }
}

/// The sum of counter `name` over updates whose labels include all of `labels`.
pub fn counter(host: &TestHost<CmmsHttp>, name: &str, labels: &[(&str, &str)]) -> f64 {
    host.recorded()
        .metrics
        .iter()
        .filter(|m| m.kind == MetricKind::Counter && m.name == name)
        .filter(|m| {
            labels
                .iter()
                .all(|(k, v)| m.labels.iter().any(|(mk, mv)| mk == k && mv == v))
        })
        .map(|m| m.value)
        .sum()
}

/// Every log line as one text (message and fields), for searching.
pub fn log_text(host: &TestHost<CmmsHttp>) -> String {
    host.recorded()
        .logs
        .iter()
        .map(|l| {
            let fields: Vec<String> = l.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{:?} {} {}", l.level, l.message, fields.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The gaps between consecutive hits.
pub fn gaps(hits: &[Hit]) -> Vec<Duration> {
    hits.windows(2).map(|w| w[1].at - w[0].at).collect()
}
