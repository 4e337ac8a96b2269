//! Millwright's actor system.
//!
//! Everything that runs inside a node is an actor (ractor on tokio) under a supervisor:
//!
//! - [`supervisor`]: OTP-style supervision (child specs, strategies, restart intensity, backoff);
//! - [`lifecycle`]: the typed state machine every managed component shares;
//! - [`status`]: the node-wide board of component states, restarts and errors that health,
//!   metrics and the bus read;
//! - [`bus`]: one `Bus` interface over an embedded in-process backend and NATS;
//! - [`broker`]: the actor that owns every publish, with its disk queue and dead-letter queue;
//! - [`connector`]: the actor that runs one connector instance (a plugin) and publishes what
//!   it reads through the broker;
//! - [`sim`]: simulated machines for the demo and for tests.
//!
//! This crate never reads files, environment variables or CLI arguments: the runtime does, and
//! hands typed configuration in.

pub mod broker;
pub mod bus;
pub mod connector;
pub mod lifecycle;
pub mod sim;
pub mod status;
pub mod supervisor;
