//! A test harness: run a connector against an in-memory host, without a node.
//!
//! [`TestHost`] speaks the same [`Request`]s to the same [`Adapter`] the node uses, records the
//! connector's logs and metrics, and validates the config against the manifest's schema
//! shape by deserialising it (the node validates with the JSON Schema itself). An author's
//! unit test:
//!
//! ```
//! use millwright_plugin_sdk::harness::{TestHost, VecSource, VEC_SOURCE};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut host = TestHost::open(&VEC_SOURCE, "t1", serde_json::json!({"values": [1, 2, 3]}))
//!     .await
//!     .expect("config is valid");
//! host.connect().await.unwrap();
//! let batch = host.read_batch(10).await.unwrap();
//! assert_eq!(batch.events.len(), 3);
//! host.ack(batch.token).await.unwrap();
//! assert_eq!(host.read_batch(10).await.unwrap().events.len(), 0, "acknowledged, not re-read");
//! # }
//! ```
//!
//! Two tiny connectors live here for every test that needs one: [`VecSource`] (emits the
//! configured values, re-reading what was not acknowledged) and [`VoidSink`] (accepts
//! everything, counting).

use std::sync::Arc;

use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::connector::{
    AckToken, Connector, ConnectorError, Health, Plugin, Sink, Source, SourceBatch, WriteResult,
};
use crate::context::{CancelHandle, Context, Host, LogRecord, MetricUpdate};
use crate::event::Envelope;
use crate::manifest::Manifest;
use crate::plugin_vtable;
use crate::protocol::{Adapter, Request, Response, VTable};

/// What the harness' host recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Log lines, in order.
    pub logs: Vec<LogRecord>,
    /// Metric updates, in order.
    pub metrics: Vec<MetricUpdate>,
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Recorded>);

impl Host for Recorder {
    fn log(&self, _instance: &str, record: LogRecord) {
        self.0.lock().logs.push(record);
    }
    fn metric(&self, _instance: &str, update: MetricUpdate) {
        self.0.lock().metrics.push(update);
    }
}

/// One connector instance driven by a test.
#[derive(Debug)]
pub struct TestHost<P: Plugin> {
    adapter: Adapter<P>,
    recorder: Arc<Recorder>,
    cancel: CancelHandle,
    manifest: Manifest,
}

fn expect_done(r: Response) -> Result<(), ConnectorError> {
    match r {
        Response::Done => Ok(()),
        Response::Error { error } => Err(error),
        other => Err(ConnectorError::Fatal(format!(
            "unexpected response {other:?}"
        ))),
    }
}

impl<P: Plugin> TestHost<P> {
    /// Opens instance `instance` with `config`.
    ///
    /// # Errors
    /// The connector's error, or [`ConnectorError::Config`] for a config that does not match
    /// its type.
    ///
    /// # Cancel safety
    /// Not cancel safe (see [`Adapter::handle`]).
    pub async fn open(
        vtable: &'static VTable<P>,
        instance: &str,
        config: serde_json::Value,
    ) -> Result<Self, ConnectorError> {
        let recorder = Arc::new(Recorder::default());
        let (ctx, cancel) = Context::new(P::ID, instance, config.clone(), recorder.clone());
        let mut adapter = Adapter::new(vtable, ctx);
        expect_done(adapter.handle(Request::open(config)).await)?;
        Ok(Self {
            adapter,
            recorder,
            cancel,
            manifest: Manifest::of(vtable),
        })
    }

    /// The plugin's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Sends any request (for what the helpers below do not cover).
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn request(&mut self, request: Request) -> Response {
        self.adapter.handle(request).await
    }

    /// `connect`.
    ///
    /// # Errors
    /// The connector's.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn connect(&mut self) -> Result<(), ConnectorError> {
        expect_done(self.request(Request::Connect).await)
    }

    /// `read_batch`.
    ///
    /// # Errors
    /// The connector's.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn read_batch(&mut self, max: usize) -> Result<SourceBatch, ConnectorError> {
        match self.request(Request::ReadBatch { max }).await {
            Response::Batch { batch } => Ok(batch),
            Response::Error { error } => Err(error),
            other => Err(ConnectorError::Fatal(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    /// `ack`.
    ///
    /// # Errors
    /// The connector's.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn ack(&mut self, token: AckToken) -> Result<(), ConnectorError> {
        expect_done(self.request(Request::Ack { token }).await)
    }

    /// `write_batch`.
    ///
    /// # Errors
    /// The connector's.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn write_batch(
        &mut self,
        events: Vec<Envelope>,
    ) -> Result<Vec<WriteResult>, ConnectorError> {
        match self.request(Request::WriteBatch { events }).await {
            Response::Written { results } => Ok(results),
            Response::Error { error } => Err(error),
            other => Err(ConnectorError::Fatal(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    /// `call`.
    ///
    /// # Errors
    /// The connector's.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn call(
        &mut self,
        method: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, ConnectorError> {
        let request = Request::Call {
            method: method.to_owned(),
            payload,
        };
        match self.request(request).await {
            Response::Reply { payload } => Ok(payload),
            Response::Error { error } => Err(error),
            other => Err(ConnectorError::Fatal(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    /// `health`.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn health(&mut self) -> Health {
        match self.request(Request::Health).await {
            Response::Health { health } => health,
            other => Health::Unhealthy(format!("unexpected response {other:?}")),
        }
    }

    /// `close`.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn close(mut self) {
        self.cancel.cancel();
        let _ = self.request(Request::Close).await;
    }

    /// What the connector logged and measured so far.
    pub fn recorded(&self) -> parking_lot::MutexGuard<'_, Recorded> {
        self.recorder.0.lock()
    }
}

/// Config of [`VecSource`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VecSourceConfig {
    /// The values to emit, one event each, in order.
    pub values: Vec<serde_json::Value>,
    /// The tag token of the subject `mw.ev.<instance>.<tag>`.
    #[serde(default = "default_tag")]
    pub tag: String,
}

fn default_tag() -> String {
    "value".to_owned()
}

/// A source that emits its configured values and re-reads what was not acknowledged.
#[derive(Debug)]
pub struct VecSource {
    config: VecSourceConfig,
    /// Index of the first value not acknowledged.
    acked: usize,
    /// Index of the next value to read.
    next: usize,
    connected: bool,
}

impl Plugin for VecSource {
    type Config = VecSourceConfig;
    const ID: &'static str = "vec";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "emits the configured values (a test connector)";

    fn new(config: VecSourceConfig, _ctx: &Context) -> Result<Self, ConnectorError> {
        Ok(Self {
            config,
            acked: 0,
            next: 0,
            connected: false,
        })
    }
}

impl Connector for VecSource {
    async fn connect(&mut self, ctx: &Context) -> Result<(), ConnectorError> {
        // A reconnect starts again from the first value not acknowledged.
        self.next = self.acked;
        self.connected = true;
        ctx.info("vec source connected");
        Ok(())
    }
}

impl Source for VecSource {
    async fn read_batch(
        &mut self,
        ctx: &Context,
        max: usize,
    ) -> Result<SourceBatch, ConnectorError> {
        if !self.connected {
            return Err(ConnectorError::NotConnected("connect first".to_owned()));
        }
        let end = (self.next + max).min(self.config.values.len());
        let subject = ctx.event_subject(&self.config.tag);
        let events = self.config.values[self.next..end]
            .iter()
            .map(|v| Envelope::new(ctx.instance(), subject.clone(), v.clone()))
            .collect::<Vec<_>>();
        ctx.counter("reads_total", &[], 1);
        self.next = end;
        Ok(SourceBatch::new(AckToken(end as u64), events))
    }

    async fn ack(&mut self, _ctx: &Context, token: AckToken) -> Result<(), ConnectorError> {
        self.acked = self
            .acked
            .max(usize::try_from(token.0).unwrap_or(usize::MAX));
        Ok(())
    }
}

plugin_vtable!(VEC_SOURCE_VTABLE: VecSource, source);
/// The vtable of [`VecSource`].
pub static VEC_SOURCE: &VTable<VecSource> = &VEC_SOURCE_VTABLE;

/// Config of [`VoidSink`].
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidSinkConfig {}

/// A sink that accepts every event and counts them.
#[derive(Debug, Default)]
pub struct VoidSink {
    /// Events written so far.
    pub written: u64,
}

impl Plugin for VoidSink {
    type Config = VoidSinkConfig;
    const ID: &'static str = "void";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "accepts every event (a test connector)";

    fn new(_config: VoidSinkConfig, _ctx: &Context) -> Result<Self, ConnectorError> {
        Ok(Self::default())
    }
}

impl Connector for VoidSink {
    async fn connect(&mut self, _ctx: &Context) -> Result<(), ConnectorError> {
        Ok(())
    }
}

impl Sink for VoidSink {
    async fn write_batch(
        &mut self,
        ctx: &Context,
        events: Vec<Envelope>,
    ) -> Result<Vec<WriteResult>, ConnectorError> {
        self.written += events.len() as u64;
        ctx.counter("written_total", &[], events.len() as u64);
        Ok(events.iter().map(|_| Ok(())).collect())
    }
}

plugin_vtable!(VOID_SINK_VTABLE: VoidSink, sink);
/// The vtable of [`VoidSink`].
pub static VOID_SINK: &VTable<VoidSink> = &VOID_SINK_VTABLE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Kind;
    use crate::context::MetricKind;

    #[tokio::test]
    async fn a_source_re_reads_what_was_not_acknowledged_after_a_reconnect() {
        let mut host = TestHost::open(
            VEC_SOURCE,
            "s1",
            serde_json::json!({"values": [1, 2, 3, 4]}),
        )
        .await
        .unwrap();
        assert_eq!(
            host.read_batch(2).await.unwrap_err().kind(),
            "not_connected",
            "reads need a connection"
        );
        host.connect().await.unwrap();
        let first = host.read_batch(2).await.unwrap();
        assert_eq!(first.events.len(), 2);
        assert_eq!(first.events[0].subject, "mw.ev.s1.value");
        host.ack(first.token).await.unwrap();
        let second = host.read_batch(2).await.unwrap();
        assert_eq!(second.events[0].payload, 3);
        // Not acknowledged, then a reconnect: delivered again (at-least-once).
        host.connect().await.unwrap();
        let again = host.read_batch(10).await.unwrap();
        assert_eq!(
            again
                .events
                .iter()
                .map(|e| e.payload.clone())
                .collect::<Vec<_>>(),
            [3, 4]
        );
        let rec = host.recorded();
        assert!(rec.logs.iter().any(|l| l.message == "vec source connected"));
        assert!(
            rec.metrics
                .iter()
                .any(|m| m.name == "reads_total" && m.kind == MetricKind::Counter)
        );
    }

    #[tokio::test]
    async fn a_config_that_does_not_match_the_type_is_a_config_error() {
        let err = TestHost::open(VEC_SOURCE, "s1", serde_json::json!({"valuez": []}))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains("valuez"), "{err}");
    }

    #[tokio::test]
    async fn a_shape_the_plugin_does_not_offer_is_refused() {
        let mut host = TestHost::open(VOID_SINK, "v", serde_json::json!({}))
            .await
            .unwrap();
        let err = host.read_batch(1).await.unwrap_err();
        assert!(err.to_string().contains("not a source"), "{err}");
        let results = host
            .write_batch(vec![Envelope::new("x", "mw.ev.x.y", 1.into())])
            .await
            .unwrap();
        assert_eq!(results, [Ok(())]);
        assert_eq!(host.health().await, Health::Healthy);
    }

    /// A source that also answers calls: both shapes through one vtable.
    struct Echo;

    impl Plugin for Echo {
        type Config = VoidSinkConfig;
        const ID: &'static str = "echo";
        const VERSION: &'static str = "0.0.1";
        const DESCRIPTION: &'static str = "echoes";
        fn new(_: VoidSinkConfig, _: &Context) -> Result<Self, ConnectorError> {
            Ok(Echo)
        }
    }

    impl Connector for Echo {
        async fn connect(&mut self, _: &Context) -> Result<(), ConnectorError> {
            Ok(())
        }
    }

    impl Source for Echo {
        async fn read_batch(
            &mut self,
            _: &Context,
            _: usize,
        ) -> Result<SourceBatch, ConnectorError> {
            Err(ConnectorError::EndOfInput)
        }
        async fn ack(&mut self, _: &Context, _: AckToken) -> Result<(), ConnectorError> {
            Ok(())
        }
    }

    impl crate::connector::Responder for Echo {
        async fn call(
            &mut self,
            _: &Context,
            method: &str,
            payload: serde_json::Value,
        ) -> Result<serde_json::Value, ConnectorError> {
            match method {
                "echo" => Ok(payload),
                other => Err(ConnectorError::Config(format!("unknown method {other:?}"))),
            }
        }
    }

    plugin_vtable!(ECHO: Echo, source, responder);

    #[tokio::test]
    async fn one_plugin_can_offer_several_shapes() {
        assert_eq!(Manifest::of(&ECHO).kinds, [Kind::Source, Kind::Responder]);
        let mut host = TestHost::open(&ECHO, "e", serde_json::json!({}))
            .await
            .unwrap();
        let reply = host
            .request(Request::Call {
                method: "echo".into(),
                payload: serde_json::json!({"a": 1}),
            })
            .await;
        assert_eq!(
            reply,
            Response::Reply {
                payload: serde_json::json!({"a": 1})
            }
        );
        assert_eq!(
            host.read_batch(1).await.unwrap_err(),
            ConnectorError::EndOfInput
        );
        assert!(matches!(
            host.write_batch(vec![]).await.unwrap_err(),
            ConnectorError::Config(m) if m.contains("not a sink")
        ));
    }

    #[test]
    fn the_manifest_carries_versions_kinds_and_the_config_schema() {
        let m = Manifest::of(VEC_SOURCE);
        assert_eq!(m.id, "vec");
        assert_eq!(m.kinds, [Kind::Source]);
        assert_eq!(m.abi_major, crate::manifest::ABI_MAJOR);
        let props = &m.config_schema["properties"];
        assert!(props["values"].is_object(), "{}", m.config_schema);
        assert_eq!(
            props["values"]["description"],
            "The values to emit, one event each, in order."
        );
        assert_eq!(m.check_compatible(), Ok(()));
    }

    #[test]
    fn an_incompatible_manifest_is_refused_with_the_versions_and_the_fix() {
        let mut m = Manifest::of(VOID_SINK);
        m.abi_major = 9;
        let err = m.check_compatible().unwrap_err();
        assert!(err.contains("ABI 9.0"), "{err}");
        assert!(err.contains("rebuild the plugin"), "{err}");
        let mut m = Manifest::of(VOID_SINK);
        m.target = "riscv64-plan9".into();
        let err = m.check_compatible().unwrap_err();
        assert!(
            err.contains("riscv64-plan9") && err.contains("build the plugin for"),
            "{err}"
        );
    }
}
