//! The contract Millwright plugins link against.
//!
//! `plugin-sdk` holds what both sides of a plugin boundary must agree on: the event
//! [`Envelope`](event::Envelope) every connector produces, and (in later modules) the plugin
//! traits, the ABI and the resilience helpers. It deliberately does not depend on ractor or on
//! any bus client: a plugin author never needs to know how the node is built.

pub mod circuit_breaker;
pub mod event;
pub mod retry;

/// The names a plugin author needs, in one import: `use millwright_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::circuit_breaker::{
        BreakerConfig, BreakerError, BreakerOpen, CircuitBreaker, SharedCircuitBreaker,
    };
    pub use crate::event::{Envelope, EventId, Quality};
    pub use crate::retry::{Idempotency, RetryClass, RetryError, RetryPolicy, retry};
}
