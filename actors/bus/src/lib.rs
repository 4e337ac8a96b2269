//! The bus: one interface over an embedded in-process backend and NATS.
//!
//! A [`Bus`] publishes [`Message`]s on subjects, delivers them to [`Subscription`]s (with the
//! `*` and `>` wildcards), balances queue groups, does request/reply with a timeout and a
//! no-responders error, and carries multi-valued [`Headers`]. Two backends implement it:
//!
//! - **embedded** ([`Bus::embedded`]): in-process, the default when no NATS URL is configured,
//!   so one node runs with nothing else installed;
//! - **NATS** ([`Bus::connect_nats`]): async-nats against nats-server >= 2.11, for production
//!   and clusters.
//!
//! Both pass the same conformance suite (`tests/tests/bus_conformance.rs`): what code sees on
//! one backend it sees on the other, except where `docs/runtime-semantics.md` ("Bus") says
//! otherwise. [`Bus`] dispatches over an enum, with no trait objects on the hot path.
//!
//! The subject scheme Millwright uses (`mw.ev.<connector>.<tag>`, ...) lives in [`subject`].

mod embedded;
pub mod jetstream;
mod message;
mod nats;
pub mod subject;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use millwright_plugin_sdk::event::Envelope;
use tokio::sync::watch;

pub use embedded::{DEFAULT_MAX_PAYLOAD, DEFAULT_SUBSCRIPTION_CAPACITY, EmbeddedOptions};
pub use message::{HeaderError, Headers, MSG_ID_HEADER, Message};
pub use nats::{NatsAuth, NatsOptions};
pub use subject::{PreparedSubject, SchemeSubject, SubjectScheme};

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The subject is not valid for this operation.
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The rejected subject.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The queue group name is not valid.
    #[error("invalid queue group {group:?}: {reason}")]
    InvalidQueueGroup {
        /// The rejected group name.
        group: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header cannot be carried.
    #[error(transparent)]
    InvalidHeader(#[from] HeaderError),
    /// The message is larger than the server (or the embedded bus) accepts.
    #[error(
        "message on {subject:?} is {size} bytes, more than the maximum payload of {max} bytes \
         (split it, or raise max_payload on the server)"
    )]
    PayloadTooLarge {
        /// The subject it was meant for.
        subject: String,
        /// Body plus headers, in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Nobody subscribes to the request's subject.
    #[error("no responders for request on {subject:?}: nothing subscribes to it")]
    NoResponders {
        /// The request's subject.
        subject: String,
    },
    /// Somebody subscribes, but no reply arrived in time.
    #[error("request on {subject:?} got no reply within {timeout:?}")]
    Timeout {
        /// The request's subject.
        subject: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// [`Bus::respond`] was given a message that is not a request.
    #[error("cannot respond to the message on {subject:?}: it has no reply subject")]
    NoReplySubject {
        /// The subject of the message.
        subject: String,
    },
    /// The NATS connection is down (it reconnects by itself), or the client's outgoing queue
    /// stayed full for `publish_timeout`; the message was not sent.
    #[error("cannot {operation}{}: not connected to nats (reconnecting)", on_subject(.subject))]
    Disconnected {
        /// What was attempted (`publish`, `request`, `flush`).
        operation: &'static str,
        /// The subject involved; empty for `flush`, and for a publish that failed after the
        /// message was handed to the client (which keeps no copy of the subject).
        subject: String,
    },
    /// The NATS URL (or credentials) given in the options is unusable.
    #[error("invalid nats url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The first connection to NATS failed.
    #[error("cannot connect to nats at {url}: {source} (is nats-server running and reachable?)")]
    Connect {
        /// The URL as configured.
        url: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Any other NATS client error.
    #[error("nats {operation} failed: {source}")]
    Nats {
        /// What was attempted.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

fn on_subject(subject: &str) -> String {
    if subject.is_empty() {
        String::new()
    } else {
        format!(" on {subject:?}")
    }
}

/// Which backend a [`Bus`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// In-process.
    Embedded,
    /// A NATS server.
    Nats,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Embedded => "embedded",
            Self::Nats => "nats",
        })
    }
}

/// Whether the bus can reach its server. The embedded bus is always `Connected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Messages flow.
    Connected,
    /// The connection is down; the client is reconnecting.
    Disconnected,
    /// The connection was closed for good.
    Closed,
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Closed => "closed",
        })
    }
}

#[derive(Debug, Clone)]
enum Backend {
    Embedded(embedded::Embedded, watch::Sender<ConnectionState>),
    Nats(nats::Nats),
}

/// A handle to the bus. Cheap to clone; clones share one embedded bus or one NATS connection.
#[derive(Debug, Clone)]
pub struct Bus {
    backend: Backend,
}

impl Bus {
    /// A new, empty embedded bus with default options.
    pub fn embedded() -> Bus {
        Self::embedded_with(EmbeddedOptions::default())
    }

    /// A new, empty embedded bus.
    pub fn embedded_with(options: EmbeddedOptions) -> Bus {
        let (state, _) = watch::channel(ConnectionState::Connected);
        Bus {
            backend: Backend::Embedded(embedded::Embedded::new(options), state),
        }
    }

    /// Connects to NATS.
    ///
    /// # Errors
    /// [`BusError::InvalidUrl`] for an unusable URL or credentials; [`BusError::Connect`] when
    /// no server answers within `connect_timeout` (unless `retry_on_initial_connect` is set).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future abandons the connection attempt.
    pub async fn connect_nats(opts: NatsOptions) -> Result<Bus, BusError> {
        Ok(Bus {
            backend: Backend::Nats(nats::Nats::connect(opts).await?),
        })
    }

    /// NATS when options are given, else a new embedded bus: how the runtime opens the bus
    /// from configuration.
    ///
    /// # Errors
    /// As [`Bus::connect_nats`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn open(nats: Option<NatsOptions>) -> Result<Bus, BusError> {
        match nats {
            Some(opts) => Self::connect_nats(opts).await,
            None => Ok(Self::embedded()),
        }
    }

    /// Publishes a message. On the embedded bus it is in every matching subscriber's queue
    /// when this returns (or dropped for a full one); on NATS it is in the client's outgoing
    /// queue (use [`flush`](Self::flush) to wait for the server).
    ///
    /// Never blocks unboundedly: the embedded bus never waits, and NATS waits at most
    /// `publish_timeout` for room in the client's queue.
    ///
    /// # Errors
    /// [`BusError::InvalidSubject`] (including a wildcard subject or an invalid reply
    /// subject), [`BusError::PayloadTooLarge`], and on NATS [`BusError::Disconnected`] while
    /// the connection is down.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled publish either was handed to the backend whole or not at all.
    #[inline]
    pub fn publish(&self, msg: Message) -> impl Future<Output = Result<(), BusError>> + Send + '_ {
        // Not an `async fn`: the NATS path returns the client's send future with no wrapper
        // layers (see `nats::NatsPublish`), which matters at millions of messages per second.
        match &self.backend {
            Backend::Embedded(b, _) => {
                Either::Left(futures::future::lazy(move |_| b.publish(msg).map(drop)))
            }
            Backend::Nats(b) => Either::Right(b.publish(msg)),
        }
    }

    /// Publishes on a [`PreparedSubject`]: the fast path for a subject used again and again
    /// (on NATS it skips validation and the per-message subject allocation).
    ///
    /// # Errors
    /// As [`publish`](Self::publish), except that the subject is known to be valid.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`publish`](Self::publish).
    #[inline]
    pub fn publish_prepared<'a>(
        &'a self,
        subject: &PreparedSubject,
        headers: Headers,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), BusError>> + Send + 'a {
        match &self.backend {
            Backend::Embedded(b, _) => {
                let msg = Message {
                    subject: subject.as_str().to_owned(),
                    reply: None,
                    headers,
                    payload,
                };
                Either::Left(futures::future::lazy(move |_| b.publish(msg).map(drop)))
            }
            Backend::Nats(b) => Either::Right(b.publish_prepared(subject, headers, payload)),
        }
    }

    /// Publishes an event envelope on its subject: JSON body, with header
    /// [`Nats-Msg-Id`](MSG_ID_HEADER) set to the event id (JetStream de-duplicates on it).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`publish`](Self::publish).
    pub async fn publish_envelope(&self, env: &Envelope) -> Result<(), BusError> {
        let mut headers = Headers::new();
        headers.insert(MSG_ID_HEADER, &env.id.to_string())?;
        self.publish(Message {
            subject: env.subject.clone(),
            reply: None,
            headers,
            payload: Bytes::from(env.to_json_bytes()),
        })
        .await
    }

    /// Subscribes to a subject, which may contain wildcards. Every subscriber of a subject
    /// gets every message on it.
    ///
    /// # Errors
    /// [`BusError::InvalidSubject`]; on NATS, [`BusError::Nats`] when the client is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call leaves no subscription behind (on NATS one that was
    /// already sent is removed when the dropped future drops it).
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.subscribe_inner(subject, None).await
    }

    /// Subscribes as a member of queue group `group`: each message on the subject goes to
    /// exactly one member of each group (and to every plain subscriber).
    ///
    /// # Errors
    /// [`BusError::InvalidSubject`], [`BusError::InvalidQueueGroup`]; on NATS,
    /// [`BusError::Nats`] when the client is closed.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`subscribe`](Self::subscribe).
    pub async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
    ) -> Result<Subscription, BusError> {
        self.subscribe_inner(subject, Some(group)).await
    }

    async fn subscribe_inner(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        let inner = match &self.backend {
            Backend::Embedded(b, _) => SubscriptionInner::Embedded(b.subscribe(subject, group)?),
            Backend::Nats(b) => {
                SubscriptionInner::Nats(nats::NatsSubscription(b.subscribe(subject, group).await?))
            }
        };
        Ok(Subscription {
            inner,
            subject: subject.to_owned(),
            group: group.map(str::to_owned),
        })
    }

    /// Sends a request and waits up to `timeout` for the first reply.
    ///
    /// # Errors
    /// [`BusError::NoResponders`] at once when nothing subscribes to `subject`;
    /// [`BusError::Timeout`] when no reply came in time; [`BusError::InvalidSubject`],
    /// [`BusError::PayloadTooLarge`]; on NATS [`BusError::Disconnected`] while the connection
    /// is down.
    ///
    /// # Cancel safety
    /// Cancel safe: the reply inbox is dropped with the future; a late reply goes nowhere.
    pub async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        match &self.backend {
            Backend::Embedded(b, _) => b.request(subject, headers, payload, timeout).await,
            Backend::Nats(b) => b.request(subject, headers, payload, timeout).await,
        }
    }

    /// Replies to a request received from a subscription.
    ///
    /// # Errors
    /// [`BusError::NoReplySubject`] when `request` is not a request; otherwise as
    /// [`publish`](Self::publish).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`publish`](Self::publish).
    pub async fn respond(
        &self,
        request: &Message,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let Some(reply) = &request.reply else {
            return Err(BusError::NoReplySubject {
                subject: request.subject.clone(),
            });
        };
        self.publish(Message {
            subject: reply.clone(),
            reply: None,
            headers,
            payload,
        })
        .await
    }

    /// Waits until everything published so far has reached the server (NATS); returns at once
    /// on the embedded bus, where a publish is complete when it returns.
    ///
    /// # Errors
    /// On NATS, [`BusError::Disconnected`] while the connection is down or when the server
    /// does not answer within `publish_timeout`, [`BusError::Nats`] for other client errors.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn flush(&self) -> Result<(), BusError> {
        match &self.backend {
            Backend::Embedded(..) => Ok(()),
            Backend::Nats(b) => b.flush().await,
        }
    }

    /// Which backend this bus runs on.
    pub fn backend(&self) -> BackendKind {
        match &self.backend {
            Backend::Embedded(..) => BackendKind::Embedded,
            Backend::Nats(_) => BackendKind::Nats,
        }
    }

    /// The NATS client, for JetStream and other NATS-only features; `None` when embedded.
    pub fn nats_client(&self) -> Option<&async_nats::Client> {
        match &self.backend {
            Backend::Embedded(..) => None,
            Backend::Nats(b) => Some(b.client()),
        }
    }

    /// The connection state now.
    pub fn connection_state(&self) -> ConnectionState {
        match &self.backend {
            Backend::Embedded(..) => ConnectionState::Connected,
            Backend::Nats(b) => b.connection_state(),
        }
    }

    /// How many times the NATS client has (re)connected; constant on the embedded bus. Two
    /// reads that differ mean a reconnect happened in between: whatever the client had
    /// written to the old socket may never have reached the server, so a flush that succeeds
    /// on the new connection does not confirm it.
    pub fn connection_epoch(&self) -> u64 {
        match &self.backend {
            Backend::Embedded(..) => 0,
            Backend::Nats(b) => b.connection_epoch(),
        }
    }

    /// A watch of the connection state, updated on every connection event.
    pub fn watch_connection(&self) -> watch::Receiver<ConnectionState> {
        match &self.backend {
            Backend::Embedded(_, state) => state.subscribe(),
            Backend::Nats(b) => b.watch_connection(),
        }
    }

    /// Messages dropped because a subscriber's queue was full, since this bus was created
    /// (on NATS: slow-consumer events reported by the client, a lower bound).
    pub fn slow_consumer_drops(&self) -> u64 {
        match &self.backend {
            Backend::Embedded(b, _) => b.slow_consumer_drops(),
            Backend::Nats(b) => b.slow_consumer_drops(),
        }
    }

    /// The embedded bus' options (queue capacity, maximum payload); `None` on NATS.
    pub fn embedded_options(&self) -> Option<&EmbeddedOptions> {
        match &self.backend {
            Backend::Embedded(b, _) => Some(b.options()),
            Backend::Nats(_) => None,
        }
    }
}

#[derive(Debug)]
enum SubscriptionInner {
    Embedded(embedded::EmbeddedSubscription),
    Nats(nats::NatsSubscription),
}

/// A stream of the messages on a subject. Dropping it unsubscribes.
///
/// The stream ends only when the bus is closed for good (a NATS connection closed); it does
/// not end on a disconnect, after which NATS restores the subscription.
#[derive(Debug)]
pub struct Subscription {
    inner: SubscriptionInner,
    subject: String,
    group: Option<String>,
}

impl Subscription {
    /// The next message; `None` when the bus is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken off the queue only when this returns it.
    pub async fn next(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match &mut self.inner {
            SubscriptionInner::Embedded(s) => s.poll_recv(cx),
            SubscriptionInner::Nats(s) => s.poll_recv(cx),
        }
    }

    /// The subject (pattern) subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The queue group, if this is a queue subscription.
    pub fn queue_group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Messages dropped for this subscription because its queue was full (embedded only;
    /// NATS reports drops per connection, see [`Bus::slow_consumer_drops`]).
    pub fn dropped(&self) -> Option<u64> {
        match &self.inner {
            SubscriptionInner::Embedded(s) => Some(s.dropped()),
            SubscriptionInner::Nats(_) => None,
        }
    }
}

impl futures::Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().poll_recv(cx)
    }
}
