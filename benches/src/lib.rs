//! Support for the benches that measure the real node as a process (`scale`, `soak`):
//!
//! - [`process`]: a process's threads, resident memory and CPU time, read from `/proc`, and
//!   the open-files limit raised for children with thousands of instances;
//! - [`node`]: a release `millwright` binary started on free loopback ports with a config the
//!   bench writes, its readiness, its HTTP and metrics endpoints, and SIGTERM with the time to
//!   exit;
//! - [`http`]: the few blocking HTTP/1.0 requests those need (no client library, no runtime).

pub mod http;
pub mod node;
pub mod process;

use std::time::Duration;

/// Waits `d` on the calling thread. The measuring process of these benches runs no tokio
/// runtime (the node and the baseline are other processes), so blocking is what it should do.
#[allow(
    clippy::disallowed_methods,
    reason = "the measuring process has no tokio runtime to block"
)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}
