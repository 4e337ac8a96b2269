//! The NATS side of the broker: hand a batch of events to NATS and say, per event, whether the
//! server confirmed it, and if not, whether the failure was the connection's or the event's.
//!
//! - `core`: publish every event, then one `flush` round trip (bounded by the ack timeout).
//!   The flush returning means the server has read everything published before it; a failed
//!   or late flush leaves every event of the batch unconfirmed (they may still arrive: core
//!   delivery is at-least-once).
//! - `jetstream`: publish every event with `Nats-Msg-Id` = the envelope id and await all the
//!   PubAcks at once (so a batch costs one round trip, not one per event).
//!
//! Each event's failure is one of:
//!
//! - [`Failure::Rejected`]: the event can never be published as it is (an invalid subject or
//!   header, a payload over the server's limit): it goes to the DLQ at once, no retries;
//! - [`Failure::Event`]: the stream refused this message for a reason of its own (too large for
//!   the stream, a wrong expected sequence or id), or no stream captures its subject while the
//!   configured stream exists: it counts as one delivery attempt;
//! - [`Failure::StreamMissing`]: the configured stream is gone (deleted, or a server restarted
//!   without its store): not the event's fault; the broker creates the stream again;
//! - [`Failure::Connection`]: everything else: a timeout, a broken connection, a reconnect
//!   during the round, a server that is out of resources or electing a leader, a stream that is
//!   full. Never an attempt: it feeds the breaker, or one outage would empty the queue into the
//!   DLQ.

use std::time::Duration;

use bytes::Bytes;
use millwright_plugin_sdk::event::{Envelope, EventId};

use millwright_bus::jetstream::{JetStream, JsMessage, PublishFailure};
use millwright_bus::{Bus, BusError, Headers, MSG_ID_HEADER, Message};

use crate::DeliveryMode;

/// An event ready for the wire and for the disk queue: its id, its subject and its JSON.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) id: EventId,
    pub(crate) subject: String,
    pub(crate) json: Bytes,
}

/// Version byte of the disk queue record layout.
const RECORD_V1: u8 = 1;

impl Outgoing {
    pub(crate) fn from_envelope(env: &Envelope) -> Self {
        Self {
            id: env.id,
            subject: env.subject.clone(),
            json: Bytes::from(env.to_json_bytes()),
        }
    }

    /// The length of [`to_record`](Self::to_record)'s output, without building it.
    pub(crate) fn record_len(&self) -> usize {
        1 + 16 + 2 + self.subject.len().min(usize::from(u16::MAX)) + self.json.len()
    }

    /// The disk queue record: `[1][id: 16 bytes BE][subject len: u16 BE][subject][json]`, so a
    /// drain needs no JSON parsing to publish.
    pub(crate) fn to_record(&self) -> Vec<u8> {
        let subject = self.subject.as_bytes();
        let mut out = Vec::with_capacity(1 + 16 + 2 + subject.len() + self.json.len());
        out.push(RECORD_V1);
        out.extend_from_slice(&self.id.as_u128().to_be_bytes());
        // Subjects are far shorter than 64 KiB (NATS caps them well below); clamp defensively.
        let len = u16::try_from(subject.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&subject[..usize::from(len)]);
        out.extend_from_slice(&self.json);
        out
    }

    /// Parses a disk queue record written by [`to_record`](Self::to_record).
    pub(crate) fn from_record(record: &[u8]) -> Result<Self, String> {
        let bad = |why: &str| format!("not a broker record: {why}");
        let (&version, rest) = record.split_first().ok_or_else(|| bad("empty"))?;
        if version != RECORD_V1 {
            return Err(bad(&format!("unknown layout version {version}")));
        }
        if rest.len() < 18 {
            return Err(bad("too short"));
        }
        let id = u128::from_be_bytes(rest[..16].try_into().expect("16 bytes"));
        let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
        let rest = &rest[18..];
        if rest.len() < len {
            return Err(bad("subject cut short"));
        }
        let subject = std::str::from_utf8(&rest[..len])
            .map_err(|_| bad("subject is not UTF-8"))?
            .to_owned();
        Ok(Self {
            id: EventId::from_u128(id),
            subject,
            json: Bytes::copy_from_slice(&rest[len..]),
        })
    }

    /// The envelope, for the DLQ (which keeps whole envelopes).
    pub(crate) fn envelope(&self) -> Result<Envelope, String> {
        Envelope::from_json_slice(&self.json).map_err(|e| format!("not an envelope: {e}"))
    }
}

/// Why one event was not confirmed (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// NATS is unreachable, too slow or out of resources: not an attempt.
    Connection(String),
    /// The configured stream does not exist (any more): not an attempt.
    StreamMissing(String),
    /// The stream refused this event: an attempt.
    Event(String),
    /// The event can never be published: straight to the DLQ.
    Rejected(String),
}

/// The NATS side, in one of the two modes.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    mode: DeliveryMode,
    bus: Bus,
    js: Option<JetStream>,
    stream: String,
    ack_timeout: Duration,
}

impl Delivery {
    pub(crate) fn new(
        mode: DeliveryMode,
        bus: Bus,
        stream: String,
        ack_timeout: Duration,
        max_in_flight: usize,
    ) -> Self {
        let js = match mode {
            DeliveryMode::Jetstream => JetStream::new(&bus, ack_timeout, max_in_flight),
            DeliveryMode::Core => None,
        };
        Self {
            mode,
            bus,
            js,
            stream,
            ack_timeout,
        }
    }

    /// The JetStream context, in `jetstream` mode on NATS.
    pub(crate) fn jetstream(&self) -> Option<&JetStream> {
        self.js.as_ref()
    }

    /// Hands `events` to NATS; one result per event, in order.
    pub(crate) async fn deliver(&self, events: &[Outgoing]) -> Vec<Result<(), Failure>> {
        match (&self.js, self.mode) {
            (Some(js), DeliveryMode::Jetstream) => self.deliver_jetstream(js, events).await,
            _ => self.deliver_core(events).await,
        }
    }

    async fn deliver_core(&self, events: &[Outgoing]) -> Vec<Result<(), Failure>> {
        let mut out = Vec::with_capacity(events.len());
        let epoch = self.bus.connection_epoch();
        let mut down: Option<String> = None;
        let mut sent = false;
        for ev in events {
            if let Some(reason) = &down {
                out.push(Err(Failure::Connection(reason.clone())));
                continue;
            }
            let mut headers = Headers::new();
            if let Err(e) = headers.insert(MSG_ID_HEADER, &ev.id.to_string()) {
                out.push(Err(Failure::Rejected(e.to_string())));
                continue;
            }
            let msg = Message {
                subject: ev.subject.clone(),
                reply: None,
                headers,
                payload: ev.json.clone(),
            };
            match self.bus.publish(msg).await {
                Ok(()) => {
                    sent = true;
                    out.push(Ok(()));
                }
                Err(e) => match classify_bus(&e) {
                    Failure::Connection(reason) | Failure::StreamMissing(reason) => {
                        out.push(Err(Failure::Connection(reason.clone())));
                        down = Some(reason);
                    }
                    f => out.push(Err(f)),
                },
            }
        }
        if sent {
            let flushed = match tokio::time::timeout(self.ack_timeout, self.bus.flush()).await {
                // A flush answered on a new connection does not confirm what was written to
                // the old one.
                Ok(Ok(())) if self.bus.connection_epoch() != epoch => {
                    Err("the connection was re-established during the round".to_owned())
                }
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("flush failed: {e}")),
                Err(_) => Err(format!(
                    "flush not confirmed within {:?} (server unresponsive)",
                    self.ack_timeout
                )),
            };
            if let Err(reason) = flushed {
                for r in &mut out {
                    if r.is_ok() {
                        *r = Err(Failure::Connection(reason.clone()));
                    }
                }
            }
        }
        out
    }

    async fn deliver_jetstream(
        &self,
        js: &JetStream,
        events: &[Outgoing],
    ) -> Vec<Result<(), Failure>> {
        let messages: Vec<JsMessage> = events
            .iter()
            .map(|ev| JsMessage {
                subject: ev.subject.clone(),
                payload: ev.json.clone(),
                msg_id: ev.id.to_string(),
            })
            .collect();
        let mut no_stream = Vec::new();
        let mut out: Vec<Result<(), Failure>> = js
            .publish_batch(&messages)
            .await
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Ok(ack) => {
                    if ack.duplicate {
                        metrics::counter!("mw_broker_duplicates_total").increment(1);
                    }
                    Ok(())
                }
                Err(PublishFailure::Connection(reason)) => Err(Failure::Connection(reason)),
                Err(PublishFailure::Event(reason)) => Err(Failure::Event(reason)),
                Err(PublishFailure::Rejected(reason)) => Err(Failure::Rejected(reason)),
                Err(PublishFailure::NoStream) => {
                    no_stream.push(i);
                    Ok(())
                }
            })
            .collect();
        if !no_stream.is_empty() {
            // "No responders": either no stream captures this subject (the event's problem),
            // or the stream itself is gone or not loaded yet (a server restart: not the event's).
            let failure = match js.stream_available(&self.stream).await {
                Ok(()) => Failure::Event(format!(
                    "no jetstream stream captures this subject (stream {} exists but does not \
                     list it)",
                    self.stream
                )),
                Err(e) => {
                    Failure::StreamMissing(format!("stream {} not available: {e}", self.stream))
                }
            };
            for i in no_stream {
                out[i] = Err(failure.clone());
            }
        }
        out
    }
}

fn classify_bus(e: &BusError) -> Failure {
    match e {
        BusError::InvalidSubject { .. }
        | BusError::InvalidHeader(_)
        | BusError::PayloadTooLarge { .. } => Failure::Rejected(e.to_string()),
        _ => Failure::Connection(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_without_touching_the_json() {
        let env = Envelope::new("press1", "mw.ev.press1.temp", serde_json::json!({"v": 1.5}));
        let out = Outgoing::from_envelope(&env);
        let back = Outgoing::from_record(&out.to_record()).unwrap();
        assert_eq!(back.id, env.id);
        assert_eq!(back.subject, env.subject);
        assert_eq!(back.envelope().unwrap(), env);
    }

    #[test]
    fn foreign_records_are_refused() {
        assert!(Outgoing::from_record(&[]).is_err());
        assert!(Outgoing::from_record(&[9, 0, 0]).is_err());
        let mut rec =
            Outgoing::from_envelope(&Envelope::new("s", "mw.ev.s.t", 1.into())).to_record();
        rec.truncate(20);
        assert!(Outgoing::from_record(&rec).is_err());
    }

    #[test]
    fn bus_errors_split_into_event_and_connection_failures() {
        let too_large = BusError::PayloadTooLarge {
            subject: "x".into(),
            size: 10,
            max: 1,
        };
        assert!(matches!(classify_bus(&too_large), Failure::Rejected(_)));
        let down = BusError::Disconnected {
            operation: "publish",
            subject: String::new(),
        };
        assert!(matches!(classify_bus(&down), Failure::Connection(_)));
    }
}
