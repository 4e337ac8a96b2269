//! The bus conformance suite: every test in the `conformance!` list runs once against the
//! embedded backend and once against NATS (a real nats-server on a free loopback port), so the
//! two backends behave the same for the code above them.
//!
//! Each test gets a [`Harness`] with two handles: `bus` and `peer`. On the embedded backend
//! they are clones of one bus; on NATS they are two connections to one server, so messages
//! really cross the server. Subscriptions made on one connection are known to the server
//! once that connection is flushed ([`Harness::sync`]); the embedded bus needs no such step.
//!
//! After the suite come tests of one backend only: NATS faults (restart, kill, a frozen
//! server, an unreachable URL) and the embedded slow-consumer policy.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use millwright_bus::{
    BackendKind, Bus, BusError, ConnectionState, Headers, MSG_ID_HEADER, Message, NatsOptions,
    PreparedSubject, Subscription,
};
use millwright_plugin_sdk::event::Envelope;
use millwright_tests::{NatsServer, next_within, wait_until};

/// How long to wait for something that should happen (only costs time when a test fails).
const WAIT: Duration = Duration::from_secs(10);
/// How long to watch for something that should *not* happen, after a positive check.
const QUIET: Duration = Duration::from_millis(150);

struct Harness {
    bus: Bus,
    peer: Bus,
    _server: Option<NatsServer>,
}

async fn connect(server: &NatsServer, name: &str) -> Bus {
    Bus::connect_nats(NatsOptions::new(server.url()).with_name(name))
        .await
        .expect("connecting to the test nats-server")
}

impl Harness {
    async fn embedded() -> Self {
        let bus = Bus::embedded();
        Self {
            peer: bus.clone(),
            bus,
            _server: None,
        }
    }

    async fn nats() -> Self {
        let server = NatsServer::start().await;
        let bus = connect(&server, "conformance-bus").await;
        let peer = connect(&server, "conformance-peer").await;
        Self {
            bus,
            peer,
            _server: Some(server),
        }
    }

    /// Makes the subscriptions of both handles known to the server.
    async fn sync(&self) {
        self.bus.flush().await.expect("flush bus");
        self.peer.flush().await.expect("flush peer");
    }
}

fn msg(subject: &str, body: &str) -> Message {
    Message::new(subject, Bytes::copy_from_slice(body.as_bytes()))
}

async fn recv(sub: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("no message on {} within {WAIT:?}", sub.subject()))
        .unwrap_or_else(|| panic!("subscription to {} ended", sub.subject()))
}

fn text(m: &Message) -> &str {
    std::str::from_utf8(&m.payload).expect("utf-8 payload")
}

/// Publishes every `(subject, body)` from `from`, then an `end` marker on `end_subject`, and
/// returns the `(subject, body)` pairs `sub` received before the marker. Because order per
/// publisher is preserved, anything not received by then was not delivered at all.
async fn deliveries(
    from: &Bus,
    sub: &mut Subscription,
    publish: &[(&str, &str)],
    end_subject: &str,
) -> Vec<(String, String)> {
    for (subject, body) in publish {
        from.publish(msg(subject, body)).await.unwrap();
    }
    from.publish(msg(end_subject, "end")).await.unwrap();
    let mut got = Vec::new();
    loop {
        let m = recv(sub).await;
        if text(&m) == "end" {
            return got;
        }
        got.push((m.subject.clone(), text(&m).to_owned()));
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(s, b)| ((*s).to_owned(), (*b).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The suite, written once.

async fn literal_subject_gets_only_its_own_messages(h: Harness) {
    let mut sub = h.bus.subscribe("plant.press1.temp").await.unwrap();
    h.sync().await;
    let got = deliveries(
        &h.peer,
        &mut sub,
        &[
            ("plant.press1.temp", "1"),
            ("plant.press1.pressure", "x"),
            ("plant.press1.temp.raw", "x"),
            ("plant.press1", "x"),
            ("plant.press2.temp", "x"),
            ("plant.press1.temp", "2"),
        ],
        "plant.press1.temp",
    )
    .await;
    assert_eq!(
        got,
        pairs(&[("plant.press1.temp", "1"), ("plant.press1.temp", "2")])
    );
}

async fn star_matches_exactly_one_token(h: Harness) {
    let mut sub = h.bus.subscribe("plant.*.temp").await.unwrap();
    h.sync().await;
    let got = deliveries(
        &h.peer,
        &mut sub,
        &[
            ("plant.press1.temp", "1"),
            ("plant.temp", "x"),
            ("plant.a.b.temp", "x"),
            ("plant.press2.temp", "2"),
            ("plant.press2.pressure", "x"),
            ("other.press1.temp", "x"),
        ],
        "plant.end.temp",
    )
    .await;
    assert_eq!(
        got,
        pairs(&[("plant.press1.temp", "1"), ("plant.press2.temp", "2")])
    );
}

async fn tail_matches_one_or_more_tokens(h: Harness) {
    let mut sub = h.bus.subscribe("plant.>").await.unwrap();
    let mut all = h.bus.subscribe(">").await.unwrap();
    h.sync().await;
    let publish = [
        ("plant", "x"),
        ("plant.a", "1"),
        ("plant.a.b.c", "2"),
        ("plantx.a", "x"),
    ];
    let got = deliveries(&h.peer, &mut sub, &publish, "plant.end").await;
    assert_eq!(got, pairs(&[("plant.a", "1"), ("plant.a.b.c", "2")]));
    // `>` alone sees everything. Reply traffic on `_INBOX.>` (request replies, and on NATS
    // the echo `flush` uses for its round trip) is part of everything, so skip it here.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let m = recv(&mut all).await;
        if !m.subject.starts_with("_INBOX.") {
            seen.push(m.subject);
        }
    }
    assert_eq!(
        seen,
        ["plant", "plant.a", "plant.a.b.c", "plantx.a", "plant.end"]
    );
}

async fn invalid_subjects_and_groups_are_rejected(h: Harness) {
    for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a\nb"] {
        let err = h.bus.publish(msg(bad, "x")).await.unwrap_err();
        assert!(
            matches!(err, BusError::InvalidSubject { .. }),
            "publish {bad:?}: {err}"
        );
        let err = h
            .bus
            .request(bad, Headers::new(), Bytes::new(), WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BusError::InvalidSubject { .. }),
            "request {bad:?}: {err}"
        );
    }
    for bad in ["", "a..b", "a.>.b", "a*", "a.b>", "a b"] {
        let err = h.bus.subscribe(bad).await.unwrap_err();
        assert!(
            matches!(err, BusError::InvalidSubject { .. }),
            "subscribe {bad:?}: {err}"
        );
    }
    for bad in ["", "a b", "a\tb"] {
        let err = h.bus.queue_subscribe("a", bad).await.unwrap_err();
        assert!(
            matches!(err, BusError::InvalidQueueGroup { .. }),
            "group {bad:?}: {err}"
        );
    }
    let err = h
        .bus
        .publish(msg("a", "x").with_reply("bad reply"))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::InvalidSubject { .. }), "{err}");
    // The error names the subject and the problem.
    let err = h.bus.publish(msg("a..b", "x")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid subject "a..b": subject has an empty token (leading, trailing or double dot)"#
    );
}

async fn queue_group_delivers_each_message_to_one_member(h: Harness) {
    const N: usize = 200;
    let mut a = h.bus.queue_subscribe("jobs.>", "workers").await.unwrap();
    let mut b = h.peer.queue_subscribe("jobs.>", "workers").await.unwrap();
    let mut other_group = h.peer.queue_subscribe("jobs.>", "auditors").await.unwrap();
    let mut plain = h.bus.subscribe("jobs.*").await.unwrap();
    h.sync().await;
    for i in 0..N {
        h.peer
            .publish(msg("jobs.run", &i.to_string()))
            .await
            .unwrap();
    }
    // Plain subscribers and a one-member group get everything, in order.
    for sub in [&mut plain, &mut other_group] {
        for i in 0..N {
            assert_eq!(text(&recv(sub).await), i.to_string());
        }
    }
    // The two workers share the messages: each exactly once.
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < N {
        tokio::select! {
            Some(m) = a.next() => got_a.push(text(&m).parse::<usize>().unwrap()),
            Some(m) = b.next() => got_b.push(text(&m).parse::<usize>().unwrap()),
            () = tokio::time::sleep(WAIT) => panic!(
                "workers received {} of {N}", got_a.len() + got_b.len()
            ),
        }
    }
    assert!(
        next_within(&mut a, QUIET).await.is_none(),
        "duplicate delivery"
    );
    assert!(
        next_within(&mut b, QUIET).await.is_none(),
        "duplicate delivery"
    );
    let union: BTreeSet<usize> = got_a.iter().chain(&got_b).copied().collect();
    assert_eq!(union.len(), N, "every message reached exactly one worker");
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both workers got work: {} / {}",
        got_a.len(),
        got_b.len()
    );
    // Each worker still sees its share in publish order.
    assert!(got_a.is_sorted() && got_b.is_sorted());
}

async fn request_reply_round_trips_with_headers(h: Harness) {
    let mut service = h.peer.queue_subscribe("svc.upper", "svc").await.unwrap();
    let responder = h.peer.clone();
    let task = tokio::spawn(async move {
        let req = service.next().await.expect("a request");
        let reply_headers = Headers::new()
            .with("X-Handled-By", "upper")
            .unwrap()
            .with("X-Seen", req.headers.get("X-Trace").unwrap_or("none"))
            .unwrap();
        let body = text(&req).to_uppercase();
        responder
            .respond(&req, reply_headers, Bytes::from(body))
            .await
            .unwrap();
        req
    });
    h.sync().await;
    let headers = Headers::new().with("X-Trace", "t-42").unwrap();
    let reply = h
        .bus
        .request("svc.upper", headers, Bytes::from_static(b"hello"), WAIT)
        .await
        .unwrap();
    assert_eq!(text(&reply), "HELLO");
    assert_eq!(reply.headers.get("X-Handled-By"), Some("upper"));
    assert_eq!(reply.headers.get("X-Seen"), Some("t-42"));
    let req = task.await.unwrap();
    assert_eq!(req.subject, "svc.upper");
    assert!(req.reply.is_some(), "a request carries a reply subject");
}

async fn request_without_responders_fails_at_once(h: Harness) {
    let started = Instant::now();
    let err = h
        .bus
        .request("nobody.home", Headers::new(), Bytes::new(), WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BusError::NoResponders { subject } if subject == "nobody.home"),
        "{err}"
    );
    assert!(
        started.elapsed() < WAIT / 2,
        "took {:?}: no-responders must not wait for the timeout",
        started.elapsed()
    );
}

async fn request_times_out_when_the_responder_is_silent(h: Harness) {
    let _silent = h.peer.subscribe("svc.silent").await.unwrap();
    h.sync().await;
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = h
        .bus
        .request("svc.silent", Headers::new(), Bytes::new(), timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BusError::Timeout { timeout: t, .. } if *t == timeout),
        "{err}"
    );
    assert!(started.elapsed() >= timeout);
}

async fn headers_survive_multi_valued(h: Harness) {
    let mut sub = h.bus.subscribe("hdr").await.unwrap();
    h.sync().await;
    let headers = Headers::new()
        .with("X-Multi", "one")
        .unwrap()
        .with("X-Multi", "two")
        .unwrap()
        .with("X-Multi", "three")
        .unwrap()
        .with("X-Single", "value with spaces")
        .unwrap();
    h.peer
        .publish(msg("hdr", "body").with_headers(headers.clone()))
        .await
        .unwrap();
    h.peer.publish(msg("hdr", "plain")).await.unwrap();
    let m = recv(&mut sub).await;
    assert_eq!(m.headers, headers);
    assert_eq!(
        m.headers.get_all("X-Multi").collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    assert_eq!(m.headers.get("X-Single"), Some("value with spaces"));
    assert_eq!(text(&m), "body");
    let m = recv(&mut sub).await;
    assert!(m.headers.is_empty(), "{:?}", m.headers);
}

async fn reply_subject_and_empty_payload_are_carried(h: Harness) {
    let mut sub = h.bus.subscribe("carry").await.unwrap();
    h.sync().await;
    h.peer
        .publish(Message::new("carry", Bytes::new()).with_reply("answers.here"))
        .await
        .unwrap();
    let m = recv(&mut sub).await;
    assert_eq!(m.reply.as_deref(), Some("answers.here"));
    assert!(m.payload.is_empty());
}

async fn envelopes_carry_their_id_as_msg_id(h: Harness) {
    let env = Envelope::new(
        "press1",
        "mw.ev.press1.temp",
        serde_json::json!({"v": 21.5}),
    );
    let mut sub = h.bus.subscribe("mw.ev.press1.*").await.unwrap();
    h.sync().await;
    h.peer.publish_envelope(&env).await.unwrap();
    let m = recv(&mut sub).await;
    assert_eq!(m.subject, "mw.ev.press1.temp");
    assert_eq!(
        m.headers.get(MSG_ID_HEADER),
        Some(env.id.to_string().as_str())
    );
    assert_eq!(Envelope::from_json_slice(&m.payload).unwrap(), env);
}

async fn order_per_publisher_is_preserved(h: Harness) {
    const N: usize = 2_000;
    let mut sub = h.bus.subscribe("seq.*").await.unwrap();
    h.sync().await;
    for i in 0..N {
        // Alternate subjects: order holds across subjects the subscription matches.
        let subject = if i % 2 == 0 { "seq.even" } else { "seq.odd" };
        h.peer.publish(msg(subject, &i.to_string())).await.unwrap();
    }
    for i in 0..N {
        assert_eq!(text(&recv(&mut sub).await), i.to_string(), "message {i}");
    }
}

async fn dropping_a_subscription_unsubscribes(h: Harness) {
    // No interest left: a request finds no responders.
    let gone = h.bus.subscribe("svc.gone").await.unwrap();
    drop(gone);
    h.sync().await;
    let err = h
        .bus
        .request("svc.gone", Headers::new(), Bytes::new(), WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::NoResponders { .. }), "{err}");

    // A dropped queue-group member gets no more work: all of it goes to the other one.
    let a = h.bus.queue_subscribe("work", "g").await.unwrap();
    let mut b = h.bus.queue_subscribe("work", "g").await.unwrap();
    drop(a);
    h.sync().await;
    for i in 0..50 {
        h.peer.publish(msg("work", &i.to_string())).await.unwrap();
    }
    for i in 0..50 {
        assert_eq!(text(&recv(&mut b).await), i.to_string());
    }
}

async fn respond_needs_a_reply_subject(h: Harness) {
    let err = h
        .bus
        .respond(&msg("not.a.request", ""), Headers::new(), Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::NoReplySubject { .. }), "{err}");
}

async fn oversized_messages_are_rejected(h: Harness) {
    let big = Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
    let err = h
        .bus
        .publish(Message::new("big", big.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BusError::PayloadTooLarge { size, max, .. } if size == big.len() && max == 1024 * 1024),
        "{err}"
    );
    // A message just under the limit goes through.
    let mut sub = h.bus.subscribe("big").await.unwrap();
    h.sync().await;
    let fits = Bytes::from(vec![b'y'; 1024 * 1024 - 1024]);
    h.peer
        .publish(Message::new("big", fits.clone()))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await.payload, fits);
}

async fn prepared_subjects_publish_like_messages(h: Harness) {
    let err = PreparedSubject::new("prep.*").unwrap_err();
    assert!(matches!(err, BusError::InvalidSubject { .. }), "{err}");
    let subject = PreparedSubject::new("prep.temp").unwrap();
    assert_eq!(subject.as_str(), "prep.temp");
    let mut sub = h.bus.subscribe("prep.*").await.unwrap();
    h.sync().await;
    for i in 0..3 {
        let headers = Headers::new().with("X-I", &i.to_string()).unwrap();
        h.peer
            .publish_prepared(&subject, headers, Bytes::from(format!("v{i}")))
            .await
            .unwrap();
    }
    for i in 0..3 {
        let m = recv(&mut sub).await;
        assert_eq!(m.subject, "prep.temp");
        assert_eq!(text(&m), format!("v{i}"));
        assert_eq!(m.headers.get("X-I"), Some(i.to_string().as_str()));
        assert_eq!(m.reply, None);
    }
}

async fn fresh_bus_is_connected(h: Harness) {
    assert_eq!(h.bus.connection_state(), ConnectionState::Connected);
    assert_eq!(
        *h.bus.watch_connection().borrow(),
        ConnectionState::Connected
    );
    assert_eq!(h.bus.slow_consumer_drops(), 0);
    match h.bus.backend() {
        BackendKind::Embedded => assert!(h.bus.nats_client().is_none()),
        BackendKind::Nats => assert!(h.bus.nats_client().is_some()),
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $test() {
                    let h = super::Harness::embedded().await;
                    assert_eq!(h.bus.backend(), super::BackendKind::Embedded);
                    super::$test(h).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $test() {
                    let h = super::Harness::nats().await;
                    assert_eq!(h.bus.backend(), super::BackendKind::Nats);
                    super::$test(h).await;
                }
            )*
        }
    };
}

conformance!(
    literal_subject_gets_only_its_own_messages,
    star_matches_exactly_one_token,
    tail_matches_one_or_more_tokens,
    invalid_subjects_and_groups_are_rejected,
    queue_group_delivers_each_message_to_one_member,
    request_reply_round_trips_with_headers,
    request_without_responders_fails_at_once,
    request_times_out_when_the_responder_is_silent,
    headers_survive_multi_valued,
    reply_subject_and_empty_payload_are_carried,
    envelopes_carry_their_id_as_msg_id,
    order_per_publisher_is_preserved,
    dropping_a_subscription_unsubscribes,
    respond_needs_a_reply_subject,
    oversized_messages_are_rejected,
    prepared_subjects_publish_like_messages,
    fresh_bus_is_connected,
);

// ---------------------------------------------------------------------------------------------
// NATS only: faults.

mod nats_faults {
    use super::*;
    use millwright_tests::free_port;

    fn options(server_url: String) -> NatsOptions {
        let mut opts = NatsOptions::new(server_url).with_name("faults");
        opts.reconnect_delay_max = Duration::from_millis(200);
        opts
    }

    /// Resolves once the bus reports `state`.
    async fn wait_state(bus: &Bus, state: ConnectionState) {
        let mut watch = bus.watch_connection();
        tokio::time::timeout(WAIT, watch.wait_for(|s| *s == state))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "bus still {} after {WAIT:?}, expected {state}",
                    bus.connection_state()
                )
            })
            .expect("the connection watch is alive");
        assert_eq!(bus.connection_state(), state);
    }

    /// Publishes on `subject` until `sub` receives one of the messages (a subscription is
    /// restored asynchronously after a reconnect).
    async fn until_delivered(bus: &Bus, sub: &mut Subscription, subject: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            // Publishing fails while the connection is still coming back.
            let _ = bus.publish(msg(subject, "ping")).await;
            if next_within(sub, Duration::from_millis(100)).await.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no delivery on {subject} after {WAIT:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restart_reconnects_and_restores_subscriptions() {
        let mut server = NatsServer::start().await;
        let bus = Bus::connect_nats(options(server.url())).await.unwrap();
        let mut states = bus.watch_connection();
        let mut sub = bus.subscribe("after.restart").await.unwrap();
        bus.flush().await.unwrap();

        server.restart().await;
        // It went down and came back.
        tokio::time::timeout(
            WAIT,
            states.wait_for(|s| *s == ConnectionState::Disconnected),
        )
        .await
        .expect("the restart is noticed")
        .unwrap();
        wait_state(&bus, ConnectionState::Connected).await;
        until_delivered(&bus, &mut sub, "after.restart").await;
        // And another client on the restarted server reaches the restored subscription.
        let other = connect(&server, "other").await;
        other
            .publish(msg("after.restart", "from-other"))
            .await
            .unwrap();
        loop {
            let m = recv(&mut sub).await;
            if text(&m) == "from-other" {
                break;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_fails_fast_while_the_server_is_down() {
        let mut server = NatsServer::start().await;
        let bus = Bus::connect_nats(options(server.url())).await.unwrap();
        server.kill();
        wait_state(&bus, ConnectionState::Disconnected).await;
        let started = Instant::now();
        let err = bus.publish(msg("x", "lost")).await.unwrap_err();
        assert!(
            matches!(&err, BusError::Disconnected { operation: "publish", subject } if subject == "x"),
            "{err}"
        );
        let err = bus
            .request("x", Headers::new(), Bytes::new(), WAIT)
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Disconnected { .. }), "{err}");
        assert!(matches!(
            bus.flush().await,
            Err(BusError::Disconnected { .. })
        ));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );

        server.restart().await;
        wait_state(&bus, ConnectionState::Connected).await;
        bus.publish(msg("x", "ok")).await.unwrap();
        bus.flush().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_server_is_noticed_by_pings() {
        let server = NatsServer::start().await;
        let opts = options(server.url()).with_ping_interval(Duration::from_millis(200));
        let bus = Bus::connect_nats(opts).await.unwrap();
        server.freeze();
        // Two unanswered pings at 200 ms: noticed within about a second, far inside WAIT.
        let started = Instant::now();
        wait_state(&bus, ConnectionState::Disconnected).await;
        let noticed = started.elapsed();
        server.thaw();
        wait_state(&bus, ConnectionState::Connected).await;
        assert!(
            noticed < Duration::from_secs(5),
            "noticed after {noticed:?}"
        );
    }

    #[tokio::test]
    async fn unreachable_server_is_a_clear_error() {
        let url = format!("nats://127.0.0.1:{}", free_port());
        let mut opts = NatsOptions::new(url.clone());
        opts.connect_timeout = Duration::from_secs(2);
        let err = Bus::connect_nats(opts).await.unwrap_err();
        assert!(
            matches!(&err, BusError::Connect { url: u, .. } if *u == url),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains("nats-server running"),
            "{text}"
        );

        let err = Bus::connect_nats(NatsOptions::new("not a url at all"))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::InvalidUrl { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retry_on_initial_connect_waits_for_a_late_server() {
        let port = free_port();
        let mut opts = options(format!("nats://127.0.0.1:{port}"));
        opts.retry_on_initial_connect = true;
        let bus = Bus::connect_nats(opts).await.unwrap();
        assert_eq!(bus.connection_state(), ConnectionState::Disconnected);
        assert!(matches!(
            bus.publish(msg("early", "x")).await,
            Err(BusError::Disconnected { .. })
        ));
        let mut sub = bus.subscribe("late").await.unwrap();
        let _server = NatsServer::builder().port(port).start().await;
        wait_state(&bus, ConnectionState::Connected).await;
        until_delivered(&bus, &mut sub, "late").await;
    }

    #[tokio::test]
    async fn slow_consumers_are_counted() {
        let server = NatsServer::start().await;
        let mut opts = options(server.url());
        opts.subscription_capacity = 8;
        let bus = Bus::connect_nats(opts).await.unwrap();
        let _never_read = bus.subscribe("flood").await.unwrap();
        bus.flush().await.unwrap();
        for i in 0..500 {
            bus.publish(msg("flood", &i.to_string())).await.unwrap();
        }
        bus.flush().await.unwrap();
        wait_until(WAIT, || async { bus.slow_consumer_drops() > 0 })
            .await
            .expect("the client reports dropped messages");
    }
}

// ---------------------------------------------------------------------------------------------
// Embedded only: the slow-consumer policy through the public API.

mod embedded_policy {
    use super::*;
    use millwright_bus::EmbeddedOptions;

    #[tokio::test]
    async fn a_full_subscriber_loses_new_messages_and_the_publisher_never_waits() {
        let bus = Bus::embedded_with(EmbeddedOptions {
            subscription_capacity: 4,
            ..EmbeddedOptions::default()
        });
        let mut slow = bus.subscribe("fast.producer").await.unwrap();
        let mut healthy = bus.subscribe("fast.producer").await.unwrap();
        let started = Instant::now();
        for i in 0..10 {
            bus.publish(msg("fast.producer", &i.to_string()))
                .await
                .unwrap();
            assert_eq!(text(&recv(&mut healthy).await), i.to_string());
        }
        assert!(started.elapsed() < WAIT);
        assert_eq!(slow.dropped(), Some(6));
        assert_eq!(healthy.dropped(), Some(0));
        assert_eq!(bus.slow_consumer_drops(), 6);
        // The oldest four were kept, in order; the newer ones were dropped.
        for i in 0..4 {
            assert_eq!(text(&recv(&mut slow).await), i.to_string());
        }
        assert!(next_within(&mut slow, QUIET).await.is_none());
        // Once it has room again, it receives new messages.
        bus.publish(msg("fast.producer", "again")).await.unwrap();
        assert_eq!(text(&recv(&mut slow).await), "again");
    }
}
