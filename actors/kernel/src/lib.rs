//! Millwright's kernel: what every kind of component stands on.
//!
//! - [`supervisor`]: OTP-style supervision (child specs, strategies, restart intensity, backoff);
//! - [`lifecycle`]: the typed state machine every managed component shares, and the status
//!   board, the one owner of every component's state, that health, metrics and the bus read;
//! - [`reach`]: calling an actor by its stable name, with a timeout and one error type;
//! - `testkit` (feature `testkit`): the actor test kit that every crate's tests use.
//!
//! This crate never reads files, environment variables or CLI arguments, and knows nothing of
//! the bus, the broker or plugins: the crates above it do.

pub mod lifecycle;
pub mod reach;
pub mod supervisor;
#[cfg(feature = "testkit")]
pub mod testkit;
