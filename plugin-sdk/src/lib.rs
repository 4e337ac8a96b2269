//! The contract Millwright plugins link against.
//!
//! `plugin-sdk` holds what both sides of a plugin boundary must agree on:
//!
//! - [`event`]: the [`Envelope`](event::Envelope) every connector produces;
//! - [`connector`]: the authoring API ([`Plugin`](connector::Plugin),
//!   [`Connector`](connector::Connector), [`Source`](connector::Source),
//!   [`Sink`](connector::Sink), [`Responder`](connector::Responder)) and its typed errors;
//! - [`context`]: what a connector gets from its host (config, logs, metrics, cancellation);
//! - [`duration`]: durations in configs as humantime strings, for the node and every plugin;
//! - [`retired`]: config keys that were renamed or removed, refused with what to write instead;
//! - [`config_reference`]: the Markdown reference of a config, rendered from its JSON Schema,
//!   and the check that keeps a docs page's copy current;
//! - [`protocol`]: the messages every transport carries, and the adapter that calls the traits;
//! - [`codec`]: their one binary encoding (MessagePack), used by both sides and both transports;
//! - [`manifest`]: what a plugin says about itself (versions, kinds, config schema);
//! - [`harness`]: an in-memory host for an author's unit tests, and `vec`/`void` connectors;
//! - [`abi`]: the in-process `extern "C"` boundary ([`export_plugin!`] on the plugin side);
//! - [`stdio`]: the out-of-process transport (length-prefixed frames over stdin/stdout);
//! - [`circuit_breaker`], [`retry`]: the resilience helpers.
//!
//! It deliberately does not depend on ractor or on any bus client: a plugin author never needs
//! to know how the node is built.

pub mod abi;
pub mod circuit_breaker;
pub mod codec;
pub mod config_reference;
pub mod connector;
pub mod context;
pub mod duration;
pub mod event;
pub mod harness;
pub mod interrupt;
pub mod manifest;
pub mod protocol;
pub mod retired;
pub mod retry;
pub mod stdio;

#[doc(hidden)]
pub use serde_json as __serde_json;

/// The names a plugin author needs, in one import: `use millwright_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::circuit_breaker::{
        BreakerConfig, BreakerError, BreakerOpen, CircuitBreaker, SharedCircuitBreaker,
    };
    pub use crate::connector::{
        AckToken, Connector, ConnectorError, Health, Kind, Plugin, Responder, Sink, Source,
        SourceBatch, WriteResult,
    };
    pub use crate::context::{Context, Level};
    pub use crate::event::{Envelope, EventId, Quality};
    pub use crate::manifest::Manifest;
    pub use crate::retry::{Idempotency, RetryClass, RetryError, RetryPolicy, retry};
}
