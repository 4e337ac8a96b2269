//! The embedded backend: an in-process bus with NATS' semantics, for a node without NATS.
//!
//! Subscriptions live in one table behind a read-write lock. Publishing looks up the
//! subject's *route* (the subscriptions whose pattern matches it, plain ones and one list per
//! queue group) in a cache keyed by the literal subject, computing it on a miss; subscribing
//! and unsubscribing invalidate only the cached routes their pattern matches. The lock is
//! never held across an `.await`, and publishing never waits: each subscription has a
//! bounded queue, and a message that does not fit is dropped for that subscriber only and
//! counted (`mw_bus_dropped_total{reason="slow_consumer"}`), like NATS' slow-consumer
//! handling. A queue group first tries another member before it drops.
//!
//! Because [`publish`](Embedded::publish) hands a message to every queue synchronously, in
//! call order, messages from one publisher reach each subscriber in the order they were
//! published.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{RwLock, RwLockWriteGuard};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::subject::{Pattern, validate_publish_subject, validate_queue_group};
use super::{BusError, Headers, Message};

/// Default messages one subscription may queue (the same as async-nats' default).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Default largest message (body plus headers), NATS' default `max_payload` (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// At most one slow-consumer warning per subscription in this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Cached routes beyond this are all forgotten at once (a node has far fewer live subjects).
const MAX_CACHED_ROUTES: usize = 16_384;

/// Prefix of reply subjects; routes to them are used once, so they are never cached.
const INBOX_PREFIX: &str = "_INBOX.";

/// Settings of an embedded bus.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Messages one subscription may hold before new ones are dropped for it.
    pub subscription_capacity: usize,
    /// Largest message accepted (body plus headers), as NATS' `max_payload`.
    pub max_payload: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// The receiving end of one subscription's queue, as the publish path sees it.
#[derive(Debug)]
struct Sink {
    subject: Box<str>,
    tx: mpsc::Sender<Message>,
    dropped: AtomicU64,
    /// Milliseconds since the bus' epoch of the last warning; `u64::MAX` before the first.
    last_warn_ms: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    pattern: Pattern,
    group: Option<Box<str>>,
    sink: Arc<Sink>,
}

#[derive(Debug)]
struct Group {
    members: Vec<Arc<Sink>>,
    next: AtomicUsize,
}

/// Everyone a literal subject is delivered to.
#[derive(Debug, Default)]
struct Route {
    plain: Vec<Arc<Sink>>,
    groups: Vec<Group>,
}

impl Route {
    fn interest(&self) -> usize {
        self.plain.len() + self.groups.len()
    }
}

#[derive(Debug, Default)]
struct Table {
    subs: HashMap<u64, Entry>,
    /// Keyed with foldhash: the lookup is on every publish, and subjects are not attacker-chosen
    /// keys in a way SipHash would need to defend against (their number is capped).
    routes: foldhash::HashMap<Box<str>, Route>,
}

impl Table {
    fn compute(&self, subject: &str) -> Route {
        let mut route = Route::default();
        let mut groups: HashMap<&str, Vec<Arc<Sink>>> = HashMap::new();
        // Sorted by sid so that queue-group rotation starts from the oldest member.
        let mut matching: Vec<(&u64, &Entry)> = self
            .subs
            .iter()
            .filter(|(_, e)| e.pattern.matches(subject))
            .collect();
        matching.sort_unstable_by_key(|(sid, _)| **sid);
        for (_, e) in matching {
            match &e.group {
                None => route.plain.push(Arc::clone(&e.sink)),
                Some(g) => groups.entry(g).or_default().push(Arc::clone(&e.sink)),
            }
        }
        route.groups = groups
            .into_values()
            .map(|members| Group {
                members,
                next: AtomicUsize::new(0),
            })
            .collect();
        route
    }

    /// Forgets the cached routes a changed subscription could be part of.
    fn invalidate(&mut self, pattern: &Pattern, subject: &str) {
        if pattern.is_literal() {
            self.routes.remove(subject);
        } else {
            self.routes.retain(|s, _| !pattern.matches(s));
        }
    }
}

/// Hands `msg` to every plain subscriber of `route` and to one member of each queue group;
/// collects the subscribers whose queue was full into `slow`. Returns the interest count.
fn deliver(route: &Route, msg: Message, slow: &mut Vec<Arc<Sink>>) -> usize {
    let interest = route.interest();
    // Every target but the last gets a clone; the last gets the message itself.
    let mut left = interest;
    let mut msg = Some(msg);
    let mut next_msg = || -> Option<Message> {
        left = left.checked_sub(1)?;
        if left == 0 { msg.take() } else { msg.clone() }
    };
    for sink in &route.plain {
        let Some(m) = next_msg() else { break };
        match sink.tx.try_send(m) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => slow.push(Arc::clone(sink)),
        }
    }
    for group in &route.groups {
        let Some(mut m) = next_msg() else { break };
        let n = group.members.len();
        let start = group.next.fetch_add(1, Ordering::Relaxed);
        let mut delivered = false;
        let mut first_full = None;
        for i in 0..n {
            let sink = &group.members[(start + i) % n];
            match sink.tx.try_send(m) {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(TrySendError::Full(back)) => {
                    first_full.get_or_insert(sink);
                    m = back;
                }
                Err(TrySendError::Closed(back)) => m = back,
            }
        }
        if let (false, Some(sink)) = (delivered, first_full) {
            slow.push(Arc::clone(sink));
        }
    }
    interest
}

#[derive(Debug)]
struct Shared {
    options: EmbeddedOptions,
    table: RwLock<Table>,
    next_sid: AtomicU64,
    next_inbox: AtomicU64,
    inbox_prefix: String,
    epoch: Instant,
    slow_consumer_drops: AtomicU64,
}

/// The embedded backend. Clones share one bus.
#[derive(Debug, Clone)]
pub(crate) struct Embedded {
    shared: Arc<Shared>,
}

impl Embedded {
    pub(crate) fn new(options: EmbeddedOptions) -> Self {
        let options = EmbeddedOptions {
            subscription_capacity: options.subscription_capacity.max(1),
            ..options
        };
        Self {
            shared: Arc::new(Shared {
                options,
                table: RwLock::new(Table::default()),
                next_sid: AtomicU64::new(1),
                next_inbox: AtomicU64::new(1),
                inbox_prefix: format!("{INBOX_PREFIX}{:016x}", rand::random::<u64>()),
                epoch: Instant::now(),
                slow_consumer_drops: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn options(&self) -> &EmbeddedOptions {
        &self.shared.options
    }

    pub(crate) fn slow_consumer_drops(&self) -> u64 {
        self.shared.slow_consumer_drops.load(Ordering::Relaxed)
    }

    /// Delivers a message; returns how many subscribers (a queue group counting once) had
    /// interest in it, whether or not their queues had room.
    ///
    /// The fast path is one read lock and one hash lookup: a cached route exists only for a
    /// subject that was validated when the route was computed. Delivery happens under the read
    /// lock (it never waits); slow consumers are reported after the lock is released.
    pub(crate) fn publish(&self, msg: Message) -> Result<usize, BusError> {
        if let Some(reply) = &msg.reply {
            validate_publish_subject(reply)?;
        }
        let size = msg.wire_len();
        if size > self.shared.options.max_payload {
            validate_publish_subject(&msg.subject)?;
            return Err(BusError::PayloadTooLarge {
                subject: msg.subject,
                size,
                max: self.shared.options.max_payload,
            });
        }
        let mut slow = Vec::new();
        let interest = {
            let table = self.shared.table.read();
            if let Some(route) = table.routes.get(msg.subject.as_str()) {
                deliver(route, msg, &mut slow)
            } else {
                drop(table);
                validate_publish_subject(&msg.subject)?;
                if msg.subject.starts_with(INBOX_PREFIX) {
                    let table = self.shared.table.read();
                    deliver(&table.compute(&msg.subject), msg, &mut slow)
                } else {
                    let mut table = self.shared.table.write();
                    if !table.routes.contains_key(msg.subject.as_str()) {
                        let route = table.compute(&msg.subject);
                        if table.routes.len() >= MAX_CACHED_ROUTES {
                            table.routes.clear();
                        }
                        table.routes.insert(msg.subject.as_str().into(), route);
                    }
                    let table = RwLockWriteGuard::downgrade(table);
                    match table.routes.get(msg.subject.as_str()) {
                        Some(route) => deliver(route, msg, &mut slow),
                        None => 0,
                    }
                }
            }
        };
        for sink in slow {
            self.note_slow_consumer(&sink);
        }
        Ok(interest)
    }

    fn note_slow_consumer(&self, sink: &Sink) {
        let dropped = sink.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared
            .slow_consumer_drops
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mw_bus_dropped_total", "reason" => "slow_consumer").increment(1);
        let now = u64::try_from(self.shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = sink.last_warn_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= WARN_INTERVAL.as_millis() as u64;
        if due
            && sink
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                subject = %sink.subject,
                dropped,
                capacity = self.shared.options.subscription_capacity,
                "bus subscriber is too slow: its queue is full, so messages for it are dropped \
                 (consume faster, or raise the subscription capacity)"
            );
        }
    }

    pub(crate) fn subscribe(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<EmbeddedSubscription, BusError> {
        self.subscribe_with_capacity(subject, group, self.shared.options.subscription_capacity)
    }

    fn subscribe_with_capacity(
        &self,
        subject: &str,
        group: Option<&str>,
        capacity: usize,
    ) -> Result<EmbeddedSubscription, BusError> {
        let pattern = Pattern::parse(subject)?;
        if let Some(g) = group {
            validate_queue_group(g)?;
        }
        let (tx, rx) = mpsc::channel(capacity);
        let sink = Arc::new(Sink {
            subject: subject.into(),
            tx,
            dropped: AtomicU64::new(0),
            last_warn_ms: AtomicU64::new(u64::MAX),
        });
        let sid = self.shared.next_sid.fetch_add(1, Ordering::Relaxed);
        {
            let mut table = self.shared.table.write();
            table.invalidate(&pattern, subject);
            table.subs.insert(
                sid,
                Entry {
                    pattern,
                    group: group.map(Into::into),
                    sink: Arc::clone(&sink),
                },
            );
        }
        Ok(EmbeddedSubscription {
            rx,
            sid,
            sink,
            shared: Arc::clone(&self.shared),
        })
    }

    pub(crate) async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        validate_publish_subject(subject)?;
        let n = self.shared.next_inbox.fetch_add(1, Ordering::Relaxed);
        let inbox = format!("{}.{n}", self.shared.inbox_prefix);
        let mut replies = self.subscribe_with_capacity(&inbox, None, 4)?;
        let interest = self.publish(Message {
            subject: subject.to_owned(),
            reply: Some(inbox),
            headers,
            payload,
        })?;
        if interest == 0 {
            return Err(BusError::NoResponders {
                subject: subject.to_owned(),
            });
        }
        match tokio::time::timeout(timeout, replies.rx.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            // The queue's sender lives in the table until `replies` drops: never closed here.
            Ok(None) | Err(_) => Err(BusError::Timeout {
                subject: subject.to_owned(),
                timeout,
            }),
        }
    }

    #[cfg(test)]
    fn cached_routes(&self) -> usize {
        self.shared.table.read().routes.len()
    }

    #[cfg(test)]
    fn subscriptions(&self) -> usize {
        self.shared.table.read().subs.len()
    }
}

/// One embedded subscription; leaves the table when dropped.
#[derive(Debug)]
pub(crate) struct EmbeddedSubscription {
    rx: mpsc::Receiver<Message>,
    sid: u64,
    sink: Arc<Sink>,
    shared: Arc<Shared>,
}

impl EmbeddedSubscription {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.sink.dropped.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.rx.len()
    }
}

impl Drop for EmbeddedSubscription {
    fn drop(&mut self) {
        let mut table = self.shared.table.write();
        if let Some(entry) = table.subs.remove(&self.sid) {
            let subject = entry.sink.subject.clone();
            table.invalidate(&entry.pattern, &subject);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(capacity: usize) -> Embedded {
        Embedded::new(EmbeddedOptions {
            subscription_capacity: capacity,
            ..EmbeddedOptions::default()
        })
    }

    fn msg(subject: &str, body: &'static str) -> Message {
        Message::new(subject, Bytes::from_static(body.as_bytes()))
    }

    #[tokio::test]
    async fn full_queue_drops_for_that_subscriber_only_and_counts() {
        let bus = bus(2);
        let mut slow = bus.subscribe("a", None).unwrap();
        let mut fast = bus.subscribe("a", None).unwrap();
        for i in 0..5 {
            assert_eq!(bus.publish(msg("a", "x")).unwrap(), 2, "message {i}");
            // `fast` keeps up.
            assert!(fast.rx.recv().await.is_some());
        }
        assert_eq!(slow.dropped(), 3);
        assert_eq!(fast.dropped(), 0);
        assert_eq!(bus.slow_consumer_drops(), 3);
        assert_eq!(slow.pending(), 2);
        // The first two (oldest) were kept; nothing newer was queued.
        assert!(slow.rx.recv().await.is_some());
        assert!(slow.rx.recv().await.is_some());
        assert_eq!(slow.pending(), 0);
    }

    #[tokio::test]
    async fn queue_group_member_that_is_full_is_skipped() {
        let bus = bus(1);
        let a = bus.subscribe("q", Some("g")).unwrap();
        let b = bus.subscribe("q", Some("g")).unwrap();
        bus.publish(msg("q", "1")).unwrap();
        bus.publish(msg("q", "2")).unwrap();
        assert_eq!((a.pending(), b.pending()), (1, 1));
        assert_eq!(bus.slow_consumer_drops(), 0);
        bus.publish(msg("q", "3")).unwrap();
        assert_eq!(bus.slow_consumer_drops(), 1, "both full: dropped once");
        assert_eq!(a.dropped() + b.dropped(), 1);
    }

    #[tokio::test]
    async fn routes_are_cached_and_invalidated_by_matching_changes_only() {
        let bus = bus(16);
        let _a = bus.subscribe("x.a", None).unwrap();
        bus.publish(msg("x.a", "1")).unwrap();
        bus.publish(msg("y.b", "1")).unwrap();
        assert_eq!(bus.cached_routes(), 2);
        // A new wildcard subscription forgets only the routes it matches ...
        let mut w = bus.subscribe("x.*", None).unwrap();
        assert_eq!(bus.cached_routes(), 1);
        // ... and is then part of the recomputed route.
        assert_eq!(bus.publish(msg("x.a", "2")).unwrap(), 2);
        assert_eq!(w.rx.recv().await.unwrap().payload, "2");
        drop(w);
        assert_eq!(bus.publish(msg("x.a", "3")).unwrap(), 1);
        assert_eq!(bus.subscriptions(), 1);
        // Inbox routes are never cached.
        bus.publish(msg("_INBOX.abc.1", "r")).unwrap();
        assert_eq!(bus.cached_routes(), 2);
    }

    #[tokio::test]
    async fn request_unsubscribes_its_inbox() {
        let bus = bus(16);
        let err = bus
            .request("svc", Headers::new(), Bytes::new(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::NoResponders { .. }), "{err}");
        assert_eq!(bus.subscriptions(), 0);
    }

    #[test]
    fn oversized_messages_are_refused() {
        let bus = Embedded::new(EmbeddedOptions {
            max_payload: 8,
            ..EmbeddedOptions::default()
        });
        bus.publish(msg("a", "12345678")).unwrap();
        let err = bus.publish(msg("a", "123456789")).unwrap_err();
        assert!(
            matches!(
                err,
                BusError::PayloadTooLarge {
                    size: 9,
                    max: 8,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn slow_consumer_drops_reach_the_metric() {
        let recorder = counting::Recorder::default();
        let drops = metrics::with_local_recorder(&recorder, || {
            let bus = bus(1);
            let _sub = bus.subscribe("a", None).unwrap();
            for _ in 0..4 {
                bus.publish(msg("a", "x")).unwrap();
            }
            bus.slow_consumer_drops()
        });
        assert_eq!(drops, 3);
        assert_eq!(
            recorder.get("mw_bus_dropped_total", &[("reason", "slow_consumer")]),
            3
        );
    }

    mod model {
        //! The route cache against a model without a cache: after any sequence of subscribes,
        //! unsubscribes and publishes, every publish reaches exactly the subscriptions whose
        //! pattern matches (one member per queue group), as a fresh scan finds them.

        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Subscribe { pattern: String, group: Option<u8> },
            Unsubscribe(usize),
            Publish(String),
        }

        fn token() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("a".to_owned()),
                Just("b".to_owned()),
                Just("c".to_owned())
            ]
        }

        fn subject() -> impl Strategy<Value = String> {
            prop::collection::vec(token(), 1..4).prop_map(|t| t.join("."))
        }

        fn pattern() -> impl Strategy<Value = String> {
            let tok = prop_oneof![3 => token(), 1 => Just("*".to_owned())];
            (prop::collection::vec(tok, 1..4), any::<bool>()).prop_map(|(mut t, tail)| {
                if tail {
                    *t.last_mut().expect("non-empty") = ">".to_owned();
                }
                t.join(".")
            })
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                2 => (pattern(), prop::option::of(0u8..2))
                    .prop_map(|(pattern, group)| Op::Subscribe { pattern, group }),
                1 => any::<usize>().prop_map(Op::Unsubscribe),
                4 => subject().prop_map(Op::Publish),
            ]
        }

        proptest! {
            #[test]
            fn cached_routes_match_a_fresh_scan(ops in prop::collection::vec(op(), 1..60)) {
                let bus = bus(1024);
                // (pattern, group, subscription)
                let mut live: Vec<(Pattern, Option<u8>, EmbeddedSubscription)> = Vec::new();
                for (seq, op) in ops.into_iter().enumerate() {
                    match op {
                        Op::Subscribe { pattern, group } => {
                            let g = group.map(|g| format!("g{g}"));
                            let sub = bus.subscribe(&pattern, g.as_deref()).unwrap();
                            live.push((Pattern::parse(&pattern).unwrap(), group, sub));
                        }
                        Op::Unsubscribe(i) => {
                            if !live.is_empty() {
                                live.remove(i % live.len());
                            }
                        }
                        Op::Publish(subject) => {
                            let body = seq.to_string();
                            let interest = bus
                                .publish(Message::new(subject.clone(), body.clone()))
                                .unwrap();
                            let matching: Vec<usize> = (0..live.len())
                                .filter(|&i| live[i].0.matches(&subject))
                                .collect();
                            let groups: std::collections::BTreeSet<u8> =
                                matching.iter().filter_map(|&i| live[i].1).collect();
                            let plain = matching.iter().filter(|&&i| live[i].1.is_none()).count();
                            prop_assert_eq!(interest, plain + groups.len());
                            let mut per_group = std::collections::BTreeMap::new();
                            for (i, (p, group, sub)) in live.iter_mut().enumerate() {
                                let got = sub.rx.try_recv().ok();
                                prop_assert!(sub.rx.try_recv().is_err(), "one message at most");
                                let matched = p.matches(&subject);
                                match group {
                                    None => prop_assert_eq!(got.is_some(), matched, "sub {}", i),
                                    Some(g) => {
                                        prop_assert!(matched || got.is_none());
                                        if got.is_some() {
                                            *per_group.entry(*g).or_insert(0) += 1;
                                        }
                                    }
                                }
                                if let Some(m) = got {
                                    prop_assert_eq!(&m.subject, &subject);
                                    prop_assert_eq!(&m.payload[..], body.as_bytes());
                                }
                            }
                            for g in &groups {
                                prop_assert_eq!(per_group.get(g), Some(&1), "group g{}", g);
                            }
                            prop_assert_eq!(per_group.len(), groups.len());
                        }
                    }
                }
                prop_assert_eq!(bus.subscriptions(), live.len());
            }
        }
    }

    /// A minimal recorder that keeps counters, enough to assert on the metrics we emit.
    mod counting {
        use std::collections::BTreeMap;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};

        use metrics::{
            Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit,
        };
        use parking_lot::Mutex;

        #[derive(Default)]
        pub(super) struct Recorder {
            counters: Mutex<BTreeMap<String, Arc<Cell>>>,
        }

        #[derive(Default)]
        struct Cell(AtomicU64);

        impl CounterFn for Cell {
            fn increment(&self, value: u64) {
                self.0.fetch_add(value, Ordering::Relaxed);
            }
            fn absolute(&self, value: u64) {
                self.0.store(value, Ordering::Relaxed);
            }
        }

        fn render(name: &str, labels: impl Iterator<Item = (String, String)>) -> String {
            let mut labels: Vec<_> = labels.map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            format!("{name}{{{}}}", labels.join(","))
        }

        impl Recorder {
            pub(super) fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
                let key = render(name, labels.iter().map(|(k, v)| ((*k).into(), (*v).into())));
                self.counters
                    .lock()
                    .get(&key)
                    .map_or(0, |c| c.0.load(Ordering::Relaxed))
            }
        }

        impl metrics::Recorder for Recorder {
            fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
                let k = render(
                    key.name(),
                    key.labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned())),
                );
                let cell = Arc::clone(self.counters.lock().entry(k).or_default());
                Counter::from_arc(cell)
            }
            fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
                Gauge::noop()
            }
            fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
                Histogram::noop()
            }
        }
    }
}
