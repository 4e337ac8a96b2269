//! NATS-backed bus publish throughput against raw async-nats, on one nats-server, same run.
//!
//! Each round publishes `N` messages with the same 64-byte payload on one connection and then
//! waits for the server: raw async-nats with `Client::flush` (socket flush), the bus with
//! `Bus::flush` (a round trip through the server, slightly more work). Rounds alternate
//! between the paths so that machine noise hits all alike; the median is reported. The
//! runtime is current-thread: publisher and client connection task share one thread, so the
//! numbers are CPU per message, not the luck of cross-thread wake-ups on a loaded machine.
//!
//! Rows:
//! - raw async-nats, `&'static str` subject: the client's best case (no allocation at all);
//! - raw async-nats, `String` subject: what any dynamic subject costs with the raw client;
//! - `Bus::publish(Message)`: the general path (a `Message` owns its subject `String`);
//! - `Bus::publish_prepared`: a subject validated once and shared, for repeated publishing.
//!
//! Target: the bus reaches at least 0.9 of raw.
//!
//! Needs nats-server >= 2.11 (`MILLWRIGHT_NATS_SERVER`, `.tools/`, or PATH, as the tests).
//! Run: `cargo bench -p millwright-benches --bench bus_nats`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use millwright_actors::bus::{Bus, Headers, Message, NatsOptions, PreparedSubject};
use millwright_tests::NatsServer;

const N: usize = 200_000;
const ROUNDS: usize = 15;
const SUBJECT: &str = "mw.ev.press1.temperature";

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; 64])
}

async fn raw_static(client: &async_nats::Client) -> Duration {
    let body = payload();
    let start = Instant::now();
    for _ in 0..N {
        client
            .publish(SUBJECT, body.clone())
            .await
            .expect("raw publish");
    }
    client.flush().await.expect("raw flush");
    start.elapsed()
}

async fn raw_string(client: &async_nats::Client) -> Duration {
    let body = payload();
    let start = Instant::now();
    for _ in 0..N {
        client
            .publish(SUBJECT.to_owned(), body.clone())
            .await
            .expect("raw publish");
    }
    client.flush().await.expect("raw flush");
    start.elapsed()
}

async fn bus_message(bus: &Bus) -> Duration {
    let body = payload();
    let start = Instant::now();
    for _ in 0..N {
        bus.publish(Message::new(SUBJECT, body.clone()))
            .await
            .expect("bus publish");
    }
    bus.flush().await.expect("bus flush");
    start.elapsed()
}

async fn bus_prepared(bus: &Bus) -> Duration {
    let body = payload();
    let subject = PreparedSubject::new(SUBJECT).expect("valid subject");
    let start = Instant::now();
    for _ in 0..N {
        bus.publish_prepared(&subject, Headers::new(), body.clone())
            .await
            .expect("bus publish");
    }
    bus.flush().await.expect("bus flush");
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn rate(d: Duration) -> f64 {
    N as f64 / d.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let server = NatsServer::builder().jetstream(false).start().await;
        let client = async_nats::connect(server.url())
            .await
            .expect("raw connect");
        let bus = Bus::connect_nats(NatsOptions::new(server.url()).with_name("bench"))
            .await
            .expect("bus connect");
        // Warm-up.
        raw_static(&client).await;
        raw_string(&client).await;
        bus_message(&bus).await;
        bus_prepared(&bus).await;
        let mut t: [Vec<Duration>; 4] = Default::default();
        for _ in 0..ROUNDS {
            t[0].push(raw_static(&client).await);
            t[1].push(raw_string(&client).await);
            t[2].push(bus_message(&bus).await);
            t[3].push(bus_prepared(&bus).await);
        }
        let [a, b, c, d] = t.map(median);
        println!("\n### bus_nats: publish {N} messages of 64 B, then flush (median of {ROUNDS})\n");
        println!("| path | time | msgs/s | ns/msg | ÷ raw (&'static str) | ÷ raw (String) |");
        println!("|---|---|---|---|---|---|");
        for (name, x) in [
            ("raw async-nats, &'static str subject", a),
            ("raw async-nats, String subject", b),
            ("Bus::publish(Message)", c),
            ("Bus::publish_prepared", d),
        ] {
            println!(
                "| {name} | {:.1} ms | {:.2} M | {:.0} | {:.2} | {:.2} |",
                x.as_secs_f64() * 1e3,
                rate(x) / 1e6,
                x.as_nanos() as f64 / N as f64,
                rate(x) / rate(a),
                rate(x) / rate(b),
            );
        }
        let best = rate(d) / rate(a);
        println!(
            "\nTarget >= 0.90 of raw: Bus::publish_prepared vs the raw best case {best:.2} ({})",
            if best >= 0.9 { "met" } else { "NOT met" }
        );
    });
}
