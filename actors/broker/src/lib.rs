//! The broker: the actor that owns every publish (design.md §3).
//!
//! Every event a node produces goes through the broker. Producers hold a [`BrokerHandle`] and
//! call [`publish`](BrokerHandle::publish) or [`publish_batch`](BrokerHandle::publish_batch);
//! the call returns a [`Receipt`] only once every event of it is **durable somewhere**:
//!
//! - delivered: in `core` mode the NATS server has it (a `flush` round trip after the
//!   publish confirmed it); in `jetstream` mode the stream acknowledged it (PubAck);
//! - or queued: appended to the [`disk_queue`] with `write(2)` returning, which survives
//!   SIGKILL of the node (batched `fdatasync` adds power-loss safety).
//!
//! A producer that gets an error was not acknowledged and must send again; a source connector
//! acknowledges its own source only after a receipt.
//!
//! # Paths
//!
//! ```text
//!  producers ──► intake (bounded) ──► broker actor ──► NATS      (direct: queue empty, breaker closed)
//!                                          │
//!                                          └──────► disk queue ──► drain ──► NATS
//!                                                                    └──(3 event-specific
//!                                                                         failures)──► DLQ
//! ```
//!
//! One [`CircuitBreaker`](millwright_plugin_sdk::circuit_breaker::CircuitBreaker) guards the
//! NATS path. While it is open, while the connection is down, or while the disk queue still
//! holds events, new events are appended to the queue behind the older ones, so the queue
//! drains in FIFO order and new events keep their order behind it. A publish that fails goes
//! to the queue too.
//!
//! Only failures specific to one event count as delivery attempts (the server rejected it, the
//! stream refused it, no stream captures its subject); after `max_attempts` of them the event
//! moves to the [`dead_letter`] store. A connection failure (a timeout, a broken connection)
//! is never an attempt: it feeds the breaker, or one outage would move the whole queue there.
//!
//! # Backpressure
//!
//! The intake in front of the actor is a bounded channel of `intake_capacity` submissions
//! (each at most `max_batch` events). A producer waits at most `intake_timeout` for room and
//! then gets [`BrokerError::Busy`]: producers never crash and never block unboundedly. The
//! disk queue has a hard size cap at which it sheds its oldest segment, counted in
//! `mw_disk_queue_shed_total` and logged.
//!
//! # Layout
//!
//! - [`actor`]: the ractor actor and its state machine;
//! - `delivery`: the NATS side (core publish + flush, JetStream publish + acks) and the
//!   classification of failures into connection-level and event-specific;
//! - [`stream`]: the JetStream stream the broker publishes into, created or checked at boot;
//! - [`dlq_admin`]: list, show, replay and purge the DLQ, on a running broker or a stopped
//!   node's data dir;
//! - [`disk_queue`], [`dead_letter`]: the stores.

pub mod actor;
mod delivery;
pub mod dlq_admin;

pub use millwright_bus::jetstream::stream;
pub use millwright_storage::{dead_letter, disk_queue};

use std::path::PathBuf;
use std::time::Duration;

use millwright_plugin_sdk::circuit_breaker::BreakerConfig;
use millwright_plugin_sdk::event::Envelope;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use actor::{Broker, BrokerArgs, BrokerCallError, BrokerMsg, BrokerStats};
use disk_queue::DiskQueueOptions;
pub use millwright_bus::jetstream::{StreamError, StreamSpec};

/// How the broker hands events to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Core NATS publish, confirmed by a flush round trip: fast; subscribers that are away
    /// miss what is published meanwhile.
    #[default]
    Core,
    /// JetStream publish acknowledged by the stream, de-duplicated by `Nats-Msg-Id`.
    Jetstream,
}

impl std::fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Core => "core",
            Self::Jetstream => "jetstream",
        })
    }
}

/// How a broker behaves. The runtime builds it from `[broker]`.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Core or JetStream delivery.
    pub mode: DeliveryMode,
    /// The stream events go to in `jetstream` mode.
    pub stream: StreamSpec,
    /// The breaker around the NATS path.
    pub breaker: BreakerConfig,
    /// Where the disk queue lives (`<data_dir>/queue`).
    pub queue_dir: PathBuf,
    /// Its layout, cap and sync policy.
    pub queue: DiskQueueOptions,
    /// Where the DLQ store lives (the data dir; the file is `dlq.redb`).
    pub dlq_dir: PathBuf,
    /// Event-specific delivery failures before an event moves to the DLQ.
    pub max_attempts: u32,
    /// How long a core flush or a JetStream ack may take before the publish counts as a
    /// connection failure.
    pub ack_timeout: Duration,
    /// Most events handed to NATS in one round (direct or drain).
    pub max_batch: usize,
    /// Submissions the intake holds before producers wait.
    pub intake_capacity: usize,
    /// How long a producer waits for room in the intake before [`BrokerError::Busy`].
    pub intake_timeout: Duration,
    /// How long a producer waits for its receipt once its call is in the intake, before
    /// [`BrokerError::Stopped`] (the broker is restarting, or its disk is stuck). The events
    /// may still be made durable later; sending again is harmless.
    pub receipt_timeout: Duration,
    /// The broker is `idle` after this long without events.
    pub idle_window: Duration,
}

impl BrokerOptions {
    /// Defaults for a broker keeping its files in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            mode: DeliveryMode::Core,
            stream: StreamSpec::default(),
            breaker: BreakerConfig::default(),
            queue_dir: data_dir.join("queue"),
            queue: DiskQueueOptions::default(),
            dlq_dir: data_dir,
            max_attempts: 3,
            ack_timeout: Duration::from_secs(2),
            max_batch: 2048,
            intake_capacity: 1024,
            intake_timeout: Duration::from_secs(5),
            receipt_timeout: Duration::from_secs(30),
            idle_window: Duration::from_secs(30),
        }
    }
}

/// How the events of one accepted call were made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Receipt {
    /// Handed to NATS and confirmed (flush or PubAck).
    pub delivered: usize,
    /// Appended to the disk queue; they are delivered when NATS is back.
    pub queued: usize,
}

/// Why the broker did not acknowledge a call. None of its events is acknowledged: send again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The intake stayed full for the whole intake timeout.
    #[error(
        "broker is busy: its intake stayed full for {waited:?} (the node is overloaded or the disk is slow)"
    )]
    Busy {
        /// How long the producer waited.
        waited: Duration,
    },
    /// The broker stopped, restarted or stalled before it acknowledged the call.
    #[error(
        "broker did not acknowledge the events (it stopped, restarted or stalled); send them again"
    )]
    Stopped,
    /// The events could neither be delivered nor queued (the disk queue failed, or an event is
    /// larger than a queue segment).
    #[error("broker could not make the events durable: {reason}")]
    NotDurable {
        /// Why.
        reason: String,
    },
}

/// One producer call on its way to the broker.
#[derive(Debug)]
pub struct Submission {
    pub(crate) events: Vec<Envelope>,
    pub(crate) ack: oneshot::Sender<Result<Receipt, BrokerError>>,
    pub(crate) received: tokio::time::Instant,
}

/// The bounded intake shared by the handles and every incarnation of the broker actor.
#[derive(Debug)]
pub struct Intake {
    pub(crate) rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Submission>>>,
    /// The pump of the current incarnation: a new one aborts it (a crashed incarnation's
    /// pump would otherwise keep the receiver until its next submission).
    pub(crate) pump: parking_lot::Mutex<Option<tokio::task::AbortHandle>>,
}

/// The producers' side of the broker. Cheap to clone; survives restarts of the actor.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    tx: mpsc::Sender<Submission>,
    timeout: Duration,
    receipt_timeout: Duration,
    max_batch: usize,
}

impl BrokerHandle {
    /// A handle and the intake to give to [`BrokerArgs`].
    pub fn new(options: &BrokerOptions) -> (BrokerHandle, std::sync::Arc<Intake>) {
        let (tx, rx) = mpsc::channel(options.intake_capacity.max(1));
        (
            BrokerHandle {
                tx,
                timeout: options.intake_timeout,
                receipt_timeout: options.receipt_timeout,
                max_batch: options.max_batch.max(1),
            },
            std::sync::Arc::new(Intake {
                rx: std::sync::Arc::new(tokio::sync::Mutex::new(rx)),
                pump: parking_lot::Mutex::new(None),
            }),
        )
    }

    /// Publishes one event; see [`publish_batch`](Self::publish_batch).
    ///
    /// # Errors
    /// As [`publish_batch`](Self::publish_batch).
    ///
    /// # Cancel safety
    /// As [`publish_batch`](Self::publish_batch).
    pub async fn publish(&self, event: Envelope) -> Result<Receipt, BrokerError> {
        self.publish_batch(vec![event]).await
    }

    /// Publishes events in order and returns once every one is durable (see the
    /// [module docs](self)). A batch larger than `max_batch` is split; each part is
    /// acknowledged on its own, so on an error some earlier parts may already be durable
    /// (sending them again is harmless: ids de-duplicate).
    ///
    /// # Errors
    /// [`BrokerError::Busy`] when the intake stays full for the intake timeout,
    /// [`BrokerError::Stopped`] when the broker goes away before acknowledging or no receipt
    /// comes within the receipt timeout,
    /// [`BrokerError::NotDurable`] when the disk queue cannot take the events.
    ///
    /// # Cancel safety
    /// Not cancel safe in the sense that a cancelled call may still have its events delivered
    /// (without telling anyone): treat cancellation as "not acknowledged" and send again.
    pub async fn publish_batch(&self, events: Vec<Envelope>) -> Result<Receipt, BrokerError> {
        let mut total = Receipt::default();
        let mut events = events;
        while !events.is_empty() {
            let rest = if events.len() > self.max_batch {
                events.split_off(self.max_batch)
            } else {
                Vec::new()
            };
            let part = self.submit(std::mem::replace(&mut events, rest)).await?;
            total.delivered += part.delivered;
            total.queued += part.queued;
        }
        Ok(total)
    }

    async fn submit(&self, events: Vec<Envelope>) -> Result<Receipt, BrokerError> {
        let (ack, done) = oneshot::channel();
        let submission = Submission {
            events,
            ack,
            received: tokio::time::Instant::now(),
        };
        match self.tx.send_timeout(submission, self.timeout).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                metrics::counter!("mw_broker_rejected_total", "reason" => "busy").increment(1);
                return Err(BrokerError::Busy {
                    waited: self.timeout,
                });
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(BrokerError::Stopped),
        }
        match tokio::time::timeout(self.receipt_timeout, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(BrokerError::Stopped),
        }
    }
}
