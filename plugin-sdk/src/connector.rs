//! The authoring API: what a connector implements.
//!
//! After Benthos' proven connector shapes, a plugin implements [`Plugin`] (its config type and
//! how to build an instance) and [`Connector`] (connect, close, and optionally a connection
//! test and health), plus one or more of:
//!
//! - [`Source`]: `read_batch` returns events with an [`AckToken`]; the host calls `ack` with
//!   that token once every event of the batch is durable (the broker's receipt). A batch that
//!   is never acknowledged (the node crashed, the instance restarted) is read again: sources
//!   are at-least-once, never at-most-once.
//! - [`Sink`]: `write_batch` writes events and says per event whether it worked.
//! - [`Responder`]: `call` answers a request (an OPC-UA write, a CMMS work order).
//!
//! Errors are [`ConnectorError`]s; the host acts on their variant (see its docs).
//!
//! The same plugin runs statically linked, in-process from a `cdylib`, or out-of-process: the
//! host speaks the messages of [`crate::protocol`] to an [`Adapter`](crate::protocol::Adapter)
//! that calls these traits, so a connector cannot tell the transports apart.
//!
//! ```
//! use millwright_plugin_sdk::prelude::*;
//!
//! /// Emits one counter value per read.
//! struct Counter { n: u64 }
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct CounterConfig {
//!     /// The first value.
//!     #[serde(default)]
//!     start: u64,
//! }
//!
//! impl Plugin for Counter {
//!     type Config = CounterConfig;
//!     const ID: &'static str = "counter";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "counts";
//!     fn new(config: CounterConfig, _ctx: &Context) -> Result<Self, ConnectorError> {
//!         Ok(Counter { n: config.start })
//!     }
//! }
//!
//! impl Connector for Counter {
//!     async fn connect(&mut self, _ctx: &Context) -> Result<(), ConnectorError> { Ok(()) }
//! }
//!
//! impl Source for Counter {
//!     async fn read_batch(&mut self, ctx: &Context, _max: usize) -> Result<SourceBatch, ConnectorError> {
//!         self.n += 1;
//!         let subject = ctx.event_subject("count");
//!         Ok(SourceBatch::new(AckToken(self.n), vec![Envelope::new(ctx.instance(), subject, self.n.into())]))
//!     }
//!     async fn ack(&mut self, _ctx: &Context, _token: AckToken) -> Result<(), ConnectorError> { Ok(()) }
//! }
//!
//! millwright_plugin_sdk::plugin_vtable!(COUNTER: Counter, source);
//! ```

pub mod error;

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::event::Envelope;
pub use error::ConnectorError;

/// A plugin: its identity, its config type and how an instance is built.
pub trait Plugin: Sized + Send + 'static {
    /// The instance's config: a serde struct with a `///` doc on every field and
    /// `#[serde(deny_unknown_fields)]`; its JSON Schema ships in the manifest, and the host
    /// validates the user's config against it before calling [`new`](Self::new).
    type Config: DeserializeOwned + JsonSchema;
    /// The plugin's id: lowercase letters, digits and `-` (`opcua`, `cmms-http`).
    const ID: &'static str;
    /// The plugin's version (use `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// One line for `millwright plugin inspect` and the docs.
    const DESCRIPTION: &'static str;

    /// Builds an instance. Do no I/O here: [`Connector::connect`] does it.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] when the config cannot work (name the key and the fix).
    fn new(config: Self::Config, ctx: &Context) -> Result<Self, ConnectorError>;
}

/// What the host reports as a connector's own view of its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "health", content = "reason", rename_all = "snake_case")]
pub enum Health {
    /// Working.
    Healthy,
    /// Working, impaired; the reason is shown on `/health`.
    Degraded(String),
    /// Not working.
    Unhealthy(String),
}

/// The part every connector shares: connect and close, plus optional checks.
pub trait Connector: Send + 'static {
    /// Connects (or reconnects) to the peer. Called before the first read or write, and again
    /// after a [`ConnectorError::NotConnected`].
    ///
    /// # Errors
    /// `NotConnected` or `Transient` (the host retries with backoff), `BackOff`, `Config`,
    /// `Fatal`.
    ///
    /// # Cancel safety
    /// The host may drop the future at shutdown; leave nothing half-open that `close` cannot
    /// clean up.
    fn connect(&mut self, ctx: &Context)
    -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// Releases the connection. Called once, at the end; must not fail.
    fn close(&mut self, ctx: &Context) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Does the same I/O the connector will do, once, without side effects (`millwright
    /// plugin test`, the first boot). Default: nothing to test.
    ///
    /// # Errors
    /// What `connect` would return.
    fn connection_test(
        &mut self,
        ctx: &Context,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// The connector's own view of its health (a server status, a lag). Default: healthy.
    fn health(&mut self, ctx: &Context) -> impl Future<Output = Health> + Send {
        let _ = ctx;
        async { Health::Healthy }
    }
}

/// Identifies a batch a source returned; the host hands it back to [`Source::ack`]. Its
/// meaning is the source's (an offset, a sequence number, a delivery tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AckToken(pub u64);

/// What [`Source::read_batch`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceBatch {
    /// Hand this to `ack` once the events are durable.
    pub token: AckToken,
    /// The events, in order; may be empty (nothing new yet).
    pub events: Vec<Envelope>,
}

impl SourceBatch {
    /// A batch.
    pub fn new(token: AckToken, events: Vec<Envelope>) -> Self {
        Self { token, events }
    }
}

/// A connector that produces events.
pub trait Source: Connector {
    /// Reads up to `max` events. Return an empty batch when there is nothing yet (the host
    /// calls again after a short wait); wait inside for at most about a second so that stop
    /// requests are seen.
    ///
    /// # Errors
    /// `NotConnected` (the host reconnects), `Transient`, `BackOff`, `EndOfInput` (done for
    /// good), `Fatal`.
    fn read_batch(
        &mut self,
        ctx: &Context,
        max: usize,
    ) -> impl Future<Output = Result<SourceBatch, ConnectorError>> + Send;

    /// Every event of the batch with `token` is durable: acknowledge it upstream (commit the
    /// offset, ack the delivery). Tokens come in the order the batches were read.
    ///
    /// # Errors
    /// As `read_batch`; a failed ack means the batch may be read again.
    fn ack(
        &mut self,
        ctx: &Context,
        token: AckToken,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}

/// The outcome of one event of a [`Sink::write_batch`].
pub type WriteResult = Result<(), ConnectorError>;

/// A connector that consumes events.
pub trait Sink: Connector {
    /// Writes events; one result per event, in order (a partial success is normal).
    ///
    /// # Errors
    /// An `Err` for the whole call when nothing was written (`NotConnected`, `Transient`, ...).
    fn write_batch(
        &mut self,
        ctx: &Context,
        events: Vec<Envelope>,
    ) -> impl Future<Output = Result<Vec<WriteResult>, ConnectorError>> + Send;
}

/// A connector that answers requests.
pub trait Responder: Connector {
    /// Handles request `method` with a JSON `payload` and returns the JSON answer.
    ///
    /// # Errors
    /// `Config` for an unknown method or a bad payload (say which), and the usual others.
    fn call(
        &mut self,
        ctx: &Context,
        method: &str,
        payload: serde_json::Value,
    ) -> impl Future<Output = Result<serde_json::Value, ConnectorError>> + Send;
}

/// The shapes a plugin offers, as listed in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// [`Source`].
    Source,
    /// [`Sink`].
    Sink,
    /// [`Responder`].
    Responder,
}
