//! `opcua`: an OPC-UA client connector (plugin id `opcua`), built on
//! [async-opcua](https://docs.rs/async-opcua/0.19) 0.19 with its `client` feature only.
//!
//! It reads configured nodes by subscription (monitored items with sampling intervals and
//! deadbands, [OPC-UA Part 4 §5.12/§5.13](https://reference.opcfoundation.org/Core/Part4/v105/docs/5.12))
//! or by polling (Read, [Part 4 §5.10.2](https://reference.opcfoundation.org/Core/Part4/v105/docs/5.10.2)),
//! and answers `write`, `read` and `browse` calls. Status codes follow
//! [Part 4 §7.39](https://reference.opcfoundation.org/Core/Part4/v105/docs/7.39); health comes from
//! `Server_ServerStatus` (`i=2256`, its `State` child `i=2259`).
//!
//! - [`config`]: the config (and its schema);
//! - [`session`]: connect, certificate trust, the session's driver task;
//! - [`source`]: subscription/polling and the sample buffer;
//! - [`responder`]: the call methods.
//!
//! The connector builds every session itself (see [`session`]; async-opcua's own reconnect
//! loop is off), and the node waits between attempts: a lost connection is reported once, as
//! `NotConnected` naming the endpoint and the cause, and the node's connector actor calls
//! `connect` again after its jittered backoff (`docs/plugin-authoring.md`, "Who waits"). A
//! data-freshness watchdog drops the session when no publish response (data or keep-alive)
//! arrives for `watchdog_timeout`.
//!
//! The OPC-UA session runs as tasks of the runtime the connector runs on: in process, the
//! instance's runtime, whose worker serves the session's keep-alives and publish requests
//! between calls; out of process, the plugin process's runtime. A [`session::Link`] aborts
//! its session's task when dropped, so `close` leaves nothing running.
//!
//! Delivery: a batch read but not acknowledged is read again after a reconnect of the same
//! instance. Live OPC-UA data that was never read when the process dies cannot be replayed:
//! a new session starts from the servers' current values.

pub mod config;
pub mod responder;
pub mod session;
pub mod source;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millwright_plugin_sdk::prelude::*;
use millwright_plugin_sdk::{export_plugin, plugin_vtable};
use opcua::types::NodeId;

use crate::config::{ModeConfig, NodeRef, OpcUaConfig};
use crate::session::Link;
use crate::source::{Feed, Samples, Tags};

/// Runs `fut` as a task of the current runtime (the instance's, in process), so that a panic
/// inside the OPC-UA client comes back as this call's `Fatal` error, with the connector's own
/// state untouched.
async fn task<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::spawn(fut)
        .await
        .map_err(|e| ConnectorError::Fatal(format!("OPC-UA task failed: {e}")))
}

/// The connector.
#[derive(Debug)]
pub struct OpcUa {
    cfg: Arc<OpcUaConfig>,
    refs: Vec<NodeRef>,
    link: Option<Link>,
    nodes: Vec<NodeId>,
    samples: Arc<Samples>,
    inflight: VecDeque<(u64, Vec<Envelope>)>,
    next_token: u64,
    /// Connects that failed since the last session opened (for `reconnects_total`).
    failures: u32,
    next_poll: Instant,
    /// Why the last session ended or could not open, without the endpoint.
    last_error: Option<String>,
}

impl Plugin for OpcUa {
    type Config = OpcUaConfig;
    const ID: &'static str = "opcua";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "OPC-UA client: subscriptions or polling, write/read/browse calls, health from ServerStatus";

    fn new(config: OpcUaConfig, _ctx: &Context) -> Result<Self, ConnectorError> {
        let refs = config.validate()?;
        Ok(Self {
            samples: Arc::new(Samples::new(config.max_buffered_samples)),
            cfg: Arc::new(config),
            refs,
            link: None,
            nodes: Vec::new(),
            inflight: VecDeque::new(),
            next_token: 0,
            failures: 0,
            next_poll: Instant::now(),
            last_error: None,
        })
    }
}

impl OpcUa {
    fn tags(&self, ctx: &Context) -> Tags {
        Tags {
            source: ctx.instance().into(),
            subjects: Arc::new(
                self.cfg
                    .nodes
                    .iter()
                    .map(|n| ctx.event_subject(&n.tag))
                    .collect(),
            ),
        }
    }

    async fn open_link(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        let cfg = self.cfg.clone();
        let refs = self.refs.clone();
        let c = ctx.clone();
        let tags = self.tags(ctx);
        let samples = self.samples.clone();
        let connect_timeout = self.cfg.connect_timeout.max(Duration::from_millis(1));
        let (link, nodes) = task(async move {
            tokio::time::timeout(connect_timeout, async move {
                let link = session::open(&cfg, &c).await?;
                let nodes = source::resolve(&link.session, &cfg, &refs).await?;
                if cfg.mode == ModeConfig::Subscription {
                    samples.touch();
                    source::subscribe(&link.session, &cfg, &nodes, Feed { samples, tags }).await?;
                }
                Ok::<_, ConnectorError>((link, nodes))
            })
            .await
            .unwrap_or_else(|_| {
                Err(ConnectorError::NotConnected(format!(
                    "connecting took longer than connect_timeout ({})",
                    humantime::format_duration(connect_timeout)
                )))
            })
        })
        .await??;
        self.link = Some(link);
        self.nodes = nodes;
        self.next_poll = Instant::now();
        Ok(())
    }

    /// The connection is gone (or could not be made): drop it and say why, once. The node's
    /// connector actor waits its backoff before calling `connect` again; nothing here waits.
    fn lost(&mut self, ctx: &Context, reason: &str) -> ConnectorError {
        self.link = None;
        self.failures = self.failures.saturating_add(1);
        ctx.log(
            Level::Warn,
            "OPC-UA connection lost",
            &[("endpoint", &self.cfg.endpoint), ("reason", &reason)],
        );
        self.last_error = Some(reason.to_owned());
        ConnectorError::NotConnected(format!("{}: {reason}", self.cfg.endpoint))
    }

    /// A connector error from a session or source step, with the endpoint named once.
    fn at_endpoint(&self, e: ConnectorError) -> ConnectorError {
        match e {
            ConnectorError::NotConnected(m) => {
                ConnectorError::NotConnected(format!("{}: {m}", self.cfg.endpoint))
            }
            ConnectorError::Transient(m) => {
                ConnectorError::Transient(format!("{}: {m}", self.cfg.endpoint))
            }
            other => other,
        }
    }

    fn session(&self) -> Result<Arc<opcua::client::Session>, ConnectorError> {
        match &self.link {
            Some(l) if l.down_reason().is_none() => Ok(l.session.clone()),
            _ => Err(ConnectorError::NotConnected(format!(
                "{}: no session{}",
                self.cfg.endpoint,
                self.last_error
                    .as_deref()
                    .map(|e| format!(" (last failure: {e})"))
                    .unwrap_or_default()
            ))),
        }
    }
}

impl Connector for OpcUa {
    async fn connect(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        if let Some(link) = self.link.take() {
            let _ = task(link.close()).await;
        }
        // What was read and not acknowledged is read again, first.
        let unacked: Vec<Envelope> = self.inflight.drain(..).flat_map(|(_, e)| e).collect();
        self.samples.requeue(unacked);
        match self.open_link(ctx).await {
            Ok(()) => {
                if self.failures > 0 {
                    ctx.counter("reconnects_total", &[], 1);
                }
                self.failures = 0;
                self.last_error = None;
                ctx.log(
                    Level::Info,
                    "OPC-UA session open",
                    &[
                        ("endpoint", &self.cfg.endpoint),
                        ("nodes", &self.nodes.len()),
                    ],
                );
                Ok(())
            }
            Err(ConnectorError::NotConnected(m) | ConnectorError::Transient(m)) => {
                Err(self.lost(ctx, &m))
            }
            Err(e) => {
                self.link = None;
                ctx.log(
                    Level::Error,
                    "OPC-UA connector cannot connect",
                    &[("endpoint", &self.cfg.endpoint), ("error", &e)],
                );
                self.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn close(&mut self, _ctx: &Context) {
        if let Some(link) = self.link.take() {
            let _ = task(link.close()).await;
        }
    }

    async fn connection_test(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        let cfg = self.cfg.clone();
        let refs = self.refs.clone();
        let c = ctx.clone();
        task(async move {
            let link = session::open(&cfg, &c).await?;
            let r = source::resolve(&link.session, &cfg, &refs)
                .await
                .map(|_| ());
            link.close().await;
            r
        })
        .await?
        .map_err(|e| self.at_endpoint(e))
    }

    async fn health(&mut self, _ctx: &Context) -> Health {
        let session = match self.session() {
            Ok(s) => s,
            Err(e) => return Health::Unhealthy(e.to_string()),
        };
        let timeout = self.cfg.request_timeout();
        let read = task(async move {
            let ids = [
                opcua::types::VariableId::Server_ServerStatus_State,
                opcua::types::VariableId::Server_ServerStatus_CurrentTime,
            ]
            .map(|v| opcua::types::ReadValueId::from(NodeId::from(v)));
            tokio::time::timeout(
                timeout,
                session.read(&ids, opcua::types::TimestampsToReturn::Neither, 0.0),
            )
            .await
        })
        .await;
        match read {
            Ok(Ok(Ok(values))) => {
                let state = values.first().and_then(|v| v.value.clone());
                match state {
                    Some(opcua::types::Variant::Int32(0)) => Health::Healthy,
                    Some(opcua::types::Variant::Int32(s)) => {
                        let name = [
                            "Running",
                            "Failed",
                            "NoConfiguration",
                            "Suspended",
                            "Shutdown",
                            "Test",
                            "CommunicationFault",
                            "Unknown",
                        ]
                        .get(s as usize)
                        .copied()
                        .unwrap_or("Unknown");
                        let reason = format!("{}: server state is {name} ({s})", self.cfg.endpoint);
                        if matches!(s, 1 | 4 | 6) {
                            Health::Unhealthy(reason)
                        } else {
                            Health::Degraded(reason)
                        }
                    }
                    other => Health::Degraded(format!(
                        "{}: ServerStatus.State reads {other:?}",
                        self.cfg.endpoint
                    )),
                }
            }
            Ok(Ok(Err(e))) => {
                Health::Unhealthy(format!("{}: reading ServerStatus: {e}", self.cfg.endpoint))
            }
            Ok(Err(_)) => Health::Unhealthy(format!(
                "{}: reading ServerStatus timed out",
                self.cfg.endpoint
            )),
            Err(e) => Health::Unhealthy(e.to_string()),
        }
    }
}

impl Source for OpcUa {
    /// Waits until there are samples (or the link drops, or the watchdog's time is up): an
    /// idle subscription costs no crossing; the node interrupts the wait when it needs the
    /// instance.
    async fn read_batch(
        &mut self,
        ctx: &Context,
        max: usize,
    ) -> Result<SourceBatch, ConnectorError> {
        loop {
            let batch = self.read_once(ctx, max).await?;
            if !batch.events.is_empty() || ctx.is_cancelled() {
                return Ok(batch);
            }
        }
    }

    async fn ack(&mut self, _ctx: &Context, token: AckToken) -> Result<(), ConnectorError> {
        while self.inflight.front().is_some_and(|(t, _)| *t <= token.0) {
            self.inflight.pop_front();
        }
        Ok(())
    }
}

impl OpcUa {
    /// One wait for samples (one poll in polling mode); may return an empty batch.
    async fn read_once(
        &mut self,
        ctx: &Context,
        max: usize,
    ) -> Result<SourceBatch, ConnectorError> {
        let Some(link) = &self.link else {
            return Err(self.session().err().unwrap_or_else(|| {
                ConnectorError::NotConnected(format!("{}: no session", self.cfg.endpoint))
            }));
        };
        if let Some(reason) = link.down_reason() {
            return Err(self.lost(ctx, &reason));
        }
        match self.cfg.mode {
            ModeConfig::Subscription => {
                let watchdog = self.cfg.watchdog_timeout;
                if !watchdog.is_zero() && self.samples.since_publish() > watchdog {
                    ctx.counter("watchdog_reconnects_total", &[], 1);
                    let silent = self.samples.since_publish();
                    let reason = format!(
                        "watchdog: no publish response (data or keep-alive) for {}",
                        humantime::format_duration(Duration::from_millis(
                            u64::try_from(silent.as_millis()).unwrap_or(u64::MAX)
                        ))
                    );
                    return Err(self.lost(ctx, &reason));
                }
                let samples = self.samples.clone();
                let state = link.state.clone();
                // Wait for data, for the link to drop, or until the watchdog's time is up
                // (keep-alives move it on).
                let until_watchdog = if watchdog.is_zero() {
                    Duration::from_secs(3600)
                } else {
                    watchdog.saturating_sub(self.samples.since_publish())
                        + Duration::from_millis(10)
                };
                let wait = async move {
                    let mut state = state;
                    tokio::select! {
                        () = samples.wait(until_watchdog) => {}
                        _ = state.wait_for(|s| matches!(s, session::LinkState::Down(_))) => {}
                    }
                };
                tokio::select! {
                    () = wait => {}
                    () = ctx.cancelled() => {}
                }
            }
            ModeConfig::Polling => {
                let now = Instant::now();
                if now < self.next_poll {
                    let wait = self.next_poll - now;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = ctx.cancelled() => {}
                    }
                }
                if Instant::now() >= self.next_poll {
                    let interval = self.cfg.poll_interval;
                    self.next_poll = (self.next_poll + interval).max(Instant::now());
                    let session = self.session()?;
                    let nodes = self.nodes.clone();
                    let tags = self.tags(ctx);
                    let timeout = self.cfg.request_timeout();
                    match task(async move { source::poll(&session, &nodes, &tags, timeout).await })
                        .await?
                    {
                        Ok(events) => self.samples.push(events),
                        Err(
                            ConnectorError::NotConnected(cause) | ConnectorError::Transient(cause),
                        ) => return Err(self.lost(ctx, &cause)),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let shed = self.samples.take_shed();
        if shed > 0 {
            ctx.counter("samples_shed_total", &[], shed);
            ctx.log(
                Level::Warn,
                "sample buffer full; dropped the oldest samples",
                &[("dropped", &shed), ("cap", &self.cfg.max_buffered_samples)],
            );
        }
        let events = self.samples.take(max.max(1));
        if events.is_empty() {
            return Ok(SourceBatch::new(AckToken(self.next_token), events));
        }
        ctx.counter("samples_total", &[], events.len() as u64);
        self.next_token += 1;
        self.inflight.push_back((self.next_token, events.clone()));
        Ok(SourceBatch::new(AckToken(self.next_token), events))
    }
}

impl Responder for OpcUa {
    async fn call(
        &mut self,
        _ctx: &Context,
        method: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, ConnectorError> {
        if !matches!(method, "write" | "read" | "browse") {
            return Err(ConnectorError::Config(format!(
                "unknown call method {method:?} (the opcua connector answers write, read and browse)"
            )));
        }
        let session = self.session()?;
        let timeout = self.cfg.request_timeout();
        let method = method.to_owned();
        task(async move { responder::call(&session, &method, payload, timeout).await }).await?
    }
}

plugin_vtable!(pub OPCUA: OpcUa, source, responder);

/// Serves the plugin out of process (the executable's `main`).
pub fn serve() -> std::process::ExitCode {
    millwright_plugin_sdk::stdio::serve(&OPCUA)
}
export_plugin!(&OPCUA, OpcUa);
