//! The outbox: events the connector publishes as a source (would-write records in sandbox
//! mode, created work orders otherwise), kept in memory until the node acknowledges them.
//!
//! `read` hands out events after the last one handed out, `ack` drops every event up to the
//! token, and `rewind` (on connect) hands the unacknowledged ones out again: at-least-once,
//! like every source. The outbox is bounded: at capacity the oldest event is dropped, and the
//! caller counts and logs it.

use std::collections::VecDeque;

use millwright_plugin_sdk::prelude::*;

/// A bounded queue of events with sequence numbers as ack tokens.
#[derive(Debug)]
pub struct Outbox {
    events: VecDeque<(u64, Envelope)>,
    capacity: usize,
    /// The sequence number the next pushed event gets (starts at 1).
    next_seq: u64,
    /// The sequence number of the last event handed out (0: none).
    read_upto: u64,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
            read_upto: 0,
        }
    }

    /// Queues `event`; returns the event dropped to make room, if the outbox was full.
    pub fn push(&mut self, event: Envelope) -> Option<Envelope> {
        let dropped = if self.events.len() >= self.capacity {
            self.events.pop_front().map(|(_, e)| e)
        } else {
            None
        };
        self.events.push_back((self.next_seq, event));
        self.next_seq += 1;
        dropped
    }

    /// Up to `max` events not handed out yet, and the token that acknowledges them.
    pub fn read(&mut self, max: usize) -> SourceBatch {
        let from = self.read_upto;
        let events: Vec<Envelope> = self
            .events
            .iter()
            .filter(|(seq, _)| *seq > from)
            .take(max)
            .map(|(seq, e)| {
                self.read_upto = self.read_upto.max(*seq);
                e.clone()
            })
            .collect();
        SourceBatch::new(AckToken(self.read_upto), events)
    }

    /// Drops every event up to and including `token`.
    pub fn ack(&mut self, token: AckToken) {
        while self.events.front().is_some_and(|(seq, _)| *seq <= token.0) {
            self.events.pop_front();
        }
    }

    /// Hands every unacknowledged event out again (after a reconnect).
    pub fn rewind(&mut self) {
        self.read_upto = self
            .events
            .front()
            .map_or(self.next_seq - 1, |(s, _)| s - 1);
    }

    /// Events held (handed out or not).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Envelope {
        Envelope::new("c", "mw.ev.c.would_write", n.into())
    }

    fn payloads(b: &SourceBatch) -> Vec<serde_json::Value> {
        b.events.iter().map(|e| e.payload.clone()).collect()
    }

    #[test]
    fn reads_in_order_acks_drop_and_a_rewind_rereads_the_rest() {
        let mut o = Outbox::new(10);
        for n in 1..=5 {
            assert!(o.push(ev(n)).is_none());
        }
        let a = o.read(2);
        assert_eq!(payloads(&a), [1, 2]);
        let b = o.read(2);
        assert_eq!(payloads(&b), [3, 4]);
        o.ack(a.token);
        assert_eq!(o.len(), 3);
        o.rewind();
        assert_eq!(
            payloads(&o.read(10)),
            [3, 4, 5],
            "unacknowledged, read again"
        );
        let empty = o.read(10);
        assert!(empty.events.is_empty());
        o.ack(empty.token);
        assert!(o.is_empty());
        o.rewind();
        assert!(
            o.read(10).events.is_empty(),
            "nothing left after a full ack"
        );
    }

    #[test]
    fn a_full_outbox_drops_the_oldest() {
        let mut o = Outbox::new(2);
        o.push(ev(1));
        o.push(ev(2));
        assert_eq!(o.push(ev(3)).unwrap().payload, 1);
        assert_eq!(payloads(&o.read(10)), [2, 3]);
    }
}
