//! Polling with a deadline, so tests wait for a condition instead of sleeping.
//!
//! One implementation, in the kernel's actor test kit ([`millwright_kernel::testkit`]),
//! re-exported here for the black-box tests, the plugins and the benches.

pub use millwright_kernel::testkit::{WaitTimedOut, next_within, wait_for, wait_until};
