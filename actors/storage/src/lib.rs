//! Millwright's durable stores, usable without actors or a bus:
//!
//! - [`disk_queue`]: an append-only, checksummed, segmented FIFO on disk with a hard size cap,
//!   crash recovery and quarantine of corrupt records (the broker's queue behind NATS);
//! - [`dead_letter`]: the dead-letter store, keyed by event id (redb).
//!
//! Both are synchronous: an async caller runs them on a blocking thread.

pub mod dead_letter;
pub mod disk_queue;
