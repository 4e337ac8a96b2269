//! Embedded bus throughput against a raw bounded tokio mpsc channel, in the same run.
//!
//! Each round hands `N` messages with the same 64-byte payload from a publisher to one
//! subscriber, in batches of `BATCH` (publish a batch, then receive it), on a current-thread
//! runtime. Batching keeps the queue from ever filling, so the bus drops nothing and the two
//! paths do the same work apart from the bus itself: subject validation, the route lookup and
//! the hand-off. Two baselines: a channel of `Bytes` (the bare payload) and a channel of the
//! bus' `Message` built the same way (isolating the bus' routing cost).
//!
//! Run: `cargo bench -p millwright-benches --bench bus_embedded` (release profile).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use millwright_bus::{Bus, Message};
use tokio::sync::mpsc;

const N: usize = 1_000_000;
const BATCH: usize = 1_024;
const ROUNDS: usize = 5;
const SUBJECT: &str = "mw.ev.press1.temperature";

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; 64])
}

async fn raw_bytes() -> Duration {
    let (tx, mut rx) = mpsc::channel::<Bytes>(BATCH * 2);
    let body = payload();
    let start = Instant::now();
    for _ in 0..N / BATCH {
        for _ in 0..BATCH {
            tx.send(body.clone()).await.expect("receiver alive");
        }
        for _ in 0..BATCH {
            black_box(rx.recv().await.expect("sender alive"));
        }
    }
    start.elapsed()
}

async fn raw_message() -> Duration {
    let (tx, mut rx) = mpsc::channel::<Message>(BATCH * 2);
    let body = payload();
    let start = Instant::now();
    for _ in 0..N / BATCH {
        for _ in 0..BATCH {
            tx.send(Message::new(SUBJECT, body.clone()))
                .await
                .expect("receiver alive");
        }
        for _ in 0..BATCH {
            black_box(rx.recv().await.expect("sender alive"));
        }
    }
    start.elapsed()
}

async fn bus() -> Duration {
    let bus = Bus::embedded();
    // Other subscriptions on the bus, as on a real node; none matches the subject.
    let mut others = Vec::new();
    for i in 0..50 {
        others.push(bus.subscribe(&format!("mw.ev.other{i}.>")).await.unwrap());
    }
    others.push(bus.subscribe("mw.state.>").await.unwrap());
    let mut sub = bus.subscribe("mw.ev.*.temperature").await.unwrap();
    let body = payload();
    let start = Instant::now();
    for _ in 0..N / BATCH {
        for _ in 0..BATCH {
            bus.publish(Message::new(SUBJECT, body.clone()))
                .await
                .expect("valid message");
        }
        for _ in 0..BATCH {
            black_box(sub.next().await.expect("subscribed"));
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(bus.slow_consumer_drops(), 0, "the benchmark must not drop");
    elapsed
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
        // Warm-up.
        raw_bytes().await;
        raw_message().await;
        bus().await;
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            a.push(raw_bytes().await);
            b.push(raw_message().await);
            c.push(bus().await);
        }
        let (a, b, c) = (median(a), median(b), median(c));
        println!(
            "\n### bus_embedded: {N} messages of 64 B to one subscriber (median of {ROUNDS})\n"
        );
        println!("| path | time | msgs/s | ns/msg | bus ÷ path (throughput) |");
        println!("|---|---|---|---|---|");
        for (name, d) in [
            ("raw mpsc<Bytes>", a),
            ("raw mpsc<Message>", b),
            ("Bus::embedded", c),
        ] {
            println!(
                "| {name} | {:.1} ms | {:.2} M | {:.0} | {:.2} |",
                d.as_secs_f64() * 1e3,
                rate(d) / 1e6,
                d.as_nanos() as f64 / N as f64,
                rate(c) / rate(d),
            );
        }
    });
}
