//! NATS-backed bus publish throughput against raw async-nats, on one nats-server, same run.
//!
//! Each round publishes `N` messages with the same 64-byte payload on one connection and then
//! waits until the server has processed them all. Every path ends the same way: `Bus::flush`
//! for the bus, and the very same round trip (subscribe to a fresh inbox, publish to it, await
//! the echo) for the raw client. The server handles a connection's operations in order, so the
//! echo proves that every message before it was processed. (async-nats' own `Client::flush`
//! only empties the client's buffer into the socket: a raw path ending with it would stop the
//! clock while up to a socket buffer of messages was still queued for the server.)
//!
//! Rounds alternate between the paths, starting at a different path each round, so that
//! machine noise and position effects hit all alike; the median is reported. The runtime is
//! current-thread: publisher and client connection task share one thread, whose CPU time
//! (`/proc/thread-self/schedstat`) is reported next to the wall time. On a shared machine the
//! CPU time per message is the steadier figure: it does not count the time the thread or
//! nats-server waited for a core.
//!
//! Rows:
//! - raw async-nats, `&'static str` subject: the client's best case (no allocation at all);
//! - raw async-nats, `String` subject: what any dynamic subject costs with the raw client;
//! - raw async-nats, shared `Subject`: a subject built once and cloned per message (one atomic
//!   increment), which is how `PreparedSubject` carries it;
//! - `Bus::publish(Message)`: the general path (a `Message` owns its subject `String`);
//! - `Bus::publish_prepared`: a subject validated once and shared, for repeated publishing.
//!
//! Target: the bus reaches at least 0.9 of raw (`Bus::publish_prepared` against the raw best
//! case).
//!
//! Needs nats-server >= 2.11 (`MILLWRIGHT_NATS_SERVER`, `.tools/`, or PATH, as the tests).
//! Run: `cargo bench -p millwright-benches --bench bus_nats`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use millwright_bus::{Bus, Headers, Message, NatsOptions, PreparedSubject};
use millwright_tests::NatsServer;

const N: usize = 200_000;
const ROUNDS: usize = 15;
const PATHS: usize = 5;
const SUBJECT: &str = "mw.ev.press1.temperature";

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; 64])
}

/// What `Bus::flush` does, with the raw client: returns once the server has processed every
/// message published before it on this connection.
async fn server_round_trip(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .expect("raw subscribe");
    client
        .publish(inbox, Bytes::new())
        .await
        .expect("raw publish");
    echo.next().await.expect("echo");
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
    server_round_trip(client).await;
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
    server_round_trip(client).await;
    start.elapsed()
}

async fn raw_shared(client: &async_nats::Client) -> Duration {
    let body = payload();
    let subject = async_nats::Subject::from(SUBJECT.to_owned());
    drop(subject.clone()); // Make the buffer shared once, as `PreparedSubject::new` does.
    let start = Instant::now();
    for _ in 0..N {
        client
            .publish(subject.clone(), body.clone())
            .await
            .expect("raw publish");
    }
    server_round_trip(client).await;
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

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`, nanoseconds on CPU).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat: time on CPU");
    Duration::from_nanos(ns)
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
        let run = async |path: usize| match path {
            0 => raw_static(&client).await,
            1 => raw_string(&client).await,
            2 => raw_shared(&client).await,
            3 => bus_message(&bus).await,
            _ => bus_prepared(&bus).await,
        };
        // Warm-up.
        for path in 0..PATHS {
            run(path).await;
        }
        let mut wall: [Vec<Duration>; PATHS] = Default::default();
        let mut cpu: [Vec<Duration>; PATHS] = Default::default();
        for round in 0..ROUNDS {
            for k in 0..PATHS {
                let path = (round + k) % PATHS;
                let cpu_start = thread_cpu();
                wall[path].push(run(path).await);
                cpu[path].push(thread_cpu().saturating_sub(cpu_start));
            }
        }
        let spread: [(Duration, Duration); PATHS] = std::array::from_fn(|i| {
            let w = &wall[i];
            (*w.iter().min().unwrap(), *w.iter().max().unwrap())
        });
        let wall = wall.map(median);
        let cpu = cpu.map(median);
        println!(
            "\n### bus_nats: publish {N} messages of 64 B, then a server round trip (median of {ROUNDS})\n"
        );
        println!(
            "| path | time (min–max) | msgs/s | ÷ raw &'static str | ÷ raw String | CPU ns/msg | CPU ÷ raw &'static str |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|");
        let names = [
            "raw async-nats, &'static str subject",
            "raw async-nats, String subject",
            "raw async-nats, shared Subject",
            "Bus::publish(Message)",
            "Bus::publish_prepared",
        ];
        for (i, name) in names.iter().enumerate() {
            let (lo, hi) = spread[i];
            println!(
                "| {name} | {:.1} ms ({:.1}–{:.1}) | {:.2} M | {:.2} | {:.2} | {:.0} | {:.2} |",
                wall[i].as_secs_f64() * 1e3,
                lo.as_secs_f64() * 1e3,
                hi.as_secs_f64() * 1e3,
                rate(wall[i]) / 1e6,
                rate(wall[i]) / rate(wall[0]),
                rate(wall[i]) / rate(wall[1]),
                cpu[i].as_nanos() as f64 / N as f64,
                cpu[0].as_secs_f64() / cpu[i].as_secs_f64(),
            );
        }
        let best = rate(wall[4]) / rate(wall[0]);
        let best_cpu = cpu[0].as_secs_f64() / cpu[4].as_secs_f64();
        let verdict = |x: f64| if x >= 0.9 { "met" } else { "NOT met" };
        println!(
            "\nTarget >= 0.90 of raw: Bus::publish_prepared vs the raw best case: throughput {best:.2} ({}), CPU per message {best_cpu:.2} ({})",
            verdict(best),
            verdict(best_cpu)
        );
    });
}
