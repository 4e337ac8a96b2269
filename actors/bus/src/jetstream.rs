//! JetStream on the NATS backend: the stream the broker publishes into ([`stream`]) and
//! acknowledged, de-duplicated publishing ([`JetStream::publish_batch`]).
//!
//! This module is the only place outside the NATS backend that speaks async-nats: the broker
//! and the runtime see typed outcomes ([`PublishOutcome`], [`PublishFailure`],
//! [`StreamError`]), never the client's error types.

pub mod stream;

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;

use crate::Bus;
pub use stream::{StreamError, StreamSpec};

/// A JetStream context on the bus's NATS connection.
#[derive(Debug, Clone)]
pub struct JetStream {
    context: jetstream::Context,
}

/// One message to publish with an acknowledgement.
#[derive(Debug, Clone)]
pub struct JsMessage {
    /// The subject (a stream must capture it).
    pub subject: String,
    /// The payload.
    pub payload: Bytes,
    /// The `Nats-Msg-Id` the server de-duplicates on.
    pub msg_id: String,
}

/// What the server said about one acknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The server had seen this message id within the stream's duplicate window.
    pub duplicate: bool,
}

/// Why one message was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishFailure {
    /// The server is unreachable, too slow or out of resources: not the message's fault.
    Connection(String),
    /// The stream refused this message (wrong expected sequence or id, too large a header).
    Event(String),
    /// The message can never be published (larger than the server's maximum payload).
    Rejected(String),
    /// No stream answered for the subject: either none captures it, or the stream is gone or
    /// not loaded yet; [`JetStream::stream_available`] tells which.
    NoStream,
}

impl JetStream {
    /// A context on `bus`'s NATS connection, or `None` on the embedded bus. Publishes wait at
    /// most `ack_timeout` for their acknowledgement, with at most `max_in_flight` unacknowledged
    /// at once (a publish past it waits for room).
    pub fn new(bus: &Bus, ack_timeout: Duration, max_in_flight: usize) -> Option<Self> {
        let client = bus.nats_client()?;
        let context = jetstream::ContextBuilder::new()
            .timeout(ack_timeout)
            .max_ack_inflight(max_in_flight.max(1))
            .backpressure_on_inflight(true)
            .build(client.clone());
        Some(Self { context })
    }

    /// Creates the stream `spec` describes, or checks the one that exists.
    ///
    /// # Errors
    /// [`StreamError`]: the server is unreachable, or the stream exists with settings that
    /// break the broker's guarantees.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call leaves the stream created or not, never half changed.
    pub async fn ensure_stream(&self, spec: &StreamSpec) -> Result<(), StreamError> {
        stream::ensure(&self.context, spec).await
    }

    /// Whether the stream `name` exists and answers.
    ///
    /// # Errors
    /// The server's answer, in words, when it does not.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn stream_available(&self, name: &str) -> Result<(), String> {
        self.context
            .get_stream(name)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Publishes `messages` in order and waits for every acknowledgement; one result per
    /// message, in order. After a connection failure the rest are not sent and fail the same
    /// way.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled call may have published some messages without reporting
    /// them (their ids make a retry a server-side duplicate, not a second copy).
    pub async fn publish_batch(
        &self,
        messages: &[JsMessage],
    ) -> Vec<Result<PublishOutcome, PublishFailure>> {
        let mut out: Vec<Result<PublishOutcome, PublishFailure>> =
            Vec::with_capacity(messages.len());
        let mut pending = Vec::with_capacity(messages.len());
        let mut down: Option<String> = None;
        for (i, m) in messages.iter().enumerate() {
            if let Some(reason) = &down {
                out.push(Err(PublishFailure::Connection(reason.clone())));
                continue;
            }
            let publish = PublishMessage::build()
                .payload(m.payload.clone())
                .message_id(m.msg_id.clone());
            match self.context.send_publish(m.subject.clone(), publish).await {
                Ok(ack) => {
                    out.push(Ok(PublishOutcome { duplicate: false }));
                    pending.push((i, ack));
                }
                Err(e) => {
                    let failure = classify(&e);
                    if let PublishFailure::Connection(reason) = &failure {
                        down = Some(reason.clone());
                    }
                    out.push(Err(failure));
                }
            }
        }
        let acks = futures::future::join_all(
            pending
                .into_iter()
                .map(|(i, ack)| async move { (i, ack.await) }),
        )
        .await;
        for (i, result) in acks {
            out[i] = match result {
                Ok(ack) => Ok(PublishOutcome {
                    duplicate: ack.duplicate,
                }),
                Err(e) => Err(classify(&e)),
            };
        }
        out
    }
}

/// Server error codes that are about one message, not the server or the stream's state.
const PER_MESSAGE_CODES: [jetstream::ErrorCode; 5] = [
    jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM,
    jetstream::ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM,
    jetstream::ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID,
    jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE,
    jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
];

fn classify(e: &jetstream::context::PublishError) -> PublishFailure {
    use std::error::Error as _;
    let text = match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    };
    match e.kind() {
        PublishErrorKind::StreamNotFound => PublishFailure::NoStream,
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            PublishFailure::Event(text)
        }
        PublishErrorKind::MaxPayloadExceeded => PublishFailure::Rejected(text),
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => PublishFailure::Connection(text),
        // An error answer about this message is the event's. Every other answer (out of
        // resources, stream full, JetStream temporarily unavailable) and anything else under
        // `Other` (the client closed, an unreadable answer) is not: retrying later can work.
        _ => {
            let per_message = e
                .source()
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
                .is_some_and(|j| PER_MESSAGE_CODES.contains(&j.error_code()));
            if per_message {
                PublishFailure::Event(text)
            } else {
                PublishFailure::Connection(text)
            }
        }
    }
}
