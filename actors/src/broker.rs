//! The broker: the actor that owns every publish (design.md §3).
//!
//! Every event a node produces goes through the broker. A circuit breaker wraps the NATS publish;
//! while the breaker is open or a publish fails, events go to the [`disk_queue`], a crash-safe,
//! segmented, append-only log in the data dir. When NATS is back the broker drains the queue
//! FIFO, and an event whose drain fails three times moves to the [`dead_letter`] store.
//!
//! The broker acknowledges an event to its producer only once it is durable somewhere: accepted
//! by NATS (JetStream mode), or appended to the disk queue with `write(2)` returning, which
//! survives SIGKILL of the node (batched `fdatasync` adds power-loss safety).

pub mod dead_letter;
pub mod disk_queue;
