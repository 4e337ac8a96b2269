//! The broker's publish paths against raw async-nats on the same nats-server, same run.
//!
//! Every path publishes the same event envelopes (JSON, with `Nats-Msg-Id`), serialising each
//! one (a producer with the raw client must do that too), and counts an event only once the
//! server confirmed it:
//!
//! - **core**: raw async-nats publishes `N` events then does one server round trip (the
//!   client's best case, nothing confirmed until the end); raw "per batch" does a round trip
//!   after every `BATCH` events, the confirmation the broker gives; the broker path is
//!   `PRODUCERS` tasks calling `BrokerHandle::publish_batch` with `BATCH` events each, awaiting
//!   every receipt (the broker flushes once per round and coalesces producers' batches).
//! - **jetstream**: raw async-nats JetStream publishes `BATCH` events and awaits their `BATCH`
//!   acks, window after window; the broker in `jetstream` mode gets the same windows (one
//!   producer, `publish_batch` of `BATCH`): the same number of acks in flight.
//! - **drain**: NATS is killed, a producer queues events at a steady rate for `OUTAGE`, NATS
//!   comes back, and the time until the disk queue is empty gives the drain rate, reported
//!   against the broker's own direct core rate.
//!
//! Rounds alternate between paths (starting at a different path each round) and the median is
//! reported. Targets: broker core >= 0.8 of raw; broker jetstream >= 0.8 of raw.
//!
//! Run: `cargo bench -p millwright-benches --bench broker` (needs nats-server >= 2.11, found
//! as by the tests). `BROKER_BENCH_OUTAGE_SECS` shortens the outage (default 30).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use futures::StreamExt;
use millwright_broker::{BrokerHandle, BrokerMsg, BrokerOptions, BrokerStats, DeliveryMode};
use millwright_bus::{Bus, NatsOptions};
use millwright_kernel::lifecycle::StatusBoard;
use millwright_plugin_sdk::event::Envelope;
use millwright_tests::{NatsServer, wait_until};
use ractor::ActorRef;

const N: usize = 100_000;
const BATCH: usize = 512;
const PRODUCERS: usize = 4;
const ROUNDS: usize = 7;
const SUBJECT: &str = "mw.ev.press1.temperature";
/// How long the broker may take to connect, create its stream, notice an outage or drain.
/// Only a failing run waits this long.
const DEADLINE: Duration = Duration::from_secs(60);

fn event(i: usize) -> Envelope {
    Envelope::new(
        "press1",
        SUBJECT,
        serde_json::json!({ "value": 21.5, "seq": i }),
    )
}

fn headers(env: &Envelope) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", env.id.to_string().as_str());
    h
}

async fn round_trip(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.expect("subscribe");
    client.publish(inbox, Bytes::new()).await.expect("publish");
    echo.next().await.expect("echo");
}

async fn raw_core(client: &async_nats::Client, every: usize) -> Duration {
    let start = Instant::now();
    for i in 0..N {
        let env = event(i);
        client
            .publish_with_headers(SUBJECT, headers(&env), Bytes::from(env.to_json_bytes()))
            .await
            .expect("raw publish");
        if (i + 1) % every == 0 {
            round_trip(client).await;
        }
    }
    round_trip(client).await;
    start.elapsed()
}

async fn broker_batches(handle: &BrokerHandle, producers: usize) -> Duration {
    let start = Instant::now();
    let per = N / producers;
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut i = p * per;
                let end = i + per;
                while i < end {
                    let n = BATCH.min(end - i);
                    let batch: Vec<Envelope> = (i..i + n).map(event).collect();
                    let r = handle.publish_batch(batch).await.expect("broker publish");
                    assert_eq!(r.delivered, n, "NATS is up: delivered directly");
                    i += n;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("producer");
    }
    start.elapsed()
}

async fn raw_jetstream(js: &jetstream::Context) -> Duration {
    let start = Instant::now();
    let mut i = 0;
    while i < N {
        let n = BATCH.min(N - i);
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(n);
        for k in i..i + n {
            let env = event(k);
            acks.push(
                js.publish_with_headers(SUBJECT, headers(&env), Bytes::from(env.to_json_bytes()))
                    .await
                    .expect("raw js publish"),
            );
        }
        for r in futures::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            r.expect("raw js ack");
        }
        i += n;
    }
    start.elapsed()
}

struct Spawned {
    handle: BrokerHandle,
    actor: ActorRef<BrokerMsg>,
    _dir: tempfile::TempDir,
}

async fn spawn_broker(bus: Bus, mode: DeliveryMode, name: &str) -> Spawned {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = BrokerOptions::new(dir.path());
    options.mode = mode;
    options.breaker.open_base = Duration::from_millis(100);
    options.breaker.open_max = Duration::from_millis(500);
    let (handle, actor) = millwright_broker::actor::spawn(name, options, bus, StatusBoard::new())
        .await
        .expect("broker starts");
    Spawned {
        handle,
        actor,
        _dir: dir,
    }
}

async fn stats(actor: &ActorRef<BrokerMsg>) -> BrokerStats {
    ractor::call!(actor, BrokerMsg::Stats).expect("broker stats")
}

/// Waits until the broker delivers directly: connected, its stream created or checked
/// (`jetstream` mode), breaker closed, disk queue empty. The bus connects in the background
/// (`retry_on_initial_connect`), so a broker spawned on it may start before the connection is
/// up, and creates its stream only once it is: nothing may look the stream up or expect a
/// direct delivery before this returns.
///
/// # Panics
/// When the broker is not ready within [`DEADLINE`], with its last stats.
async fn wait_ready(broker: &Spawned, what: &str) {
    let ready = wait_until(DEADLINE, || async {
        let s = stats(&broker.actor).await;
        s.connected && s.stream_ready && s.breaker == "closed" && s.queue_depth == 0
    })
    .await;
    if let Err(e) = ready {
        panic!(
            "the {what} broker is not ready to deliver directly ({e}); its stats: {:?}",
            stats(&broker.actor).await
        );
    }
}

async fn nats_bus(url: String, name: &str) -> Bus {
    let mut opts = NatsOptions::new(url).with_name(name);
    opts.retry_on_initial_connect = true;
    opts.reconnect_delay_max = Duration::from_millis(200);
    Bus::connect_nats(opts).await.expect("bus connect")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn rate(d: Duration) -> f64 {
    N as f64 / d.as_secs_f64()
}

fn table(title: &str, names: &[&str], wall: Vec<Vec<Duration>>, baseline: usize) -> Vec<f64> {
    println!("\n### broker: {title} ({N} events, median of {ROUNDS})\n");
    println!("| path | time (min–max) | events/s | ÷ baseline |");
    println!("|---|---|---:|---:|");
    let medians: Vec<Duration> = wall.iter().cloned().map(median).collect();
    let mut ratios = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let lo = wall[i].iter().min().unwrap();
        let hi = wall[i].iter().max().unwrap();
        let ratio = rate(medians[i]) / rate(medians[baseline]);
        ratios.push(ratio);
        println!(
            "| {name} | {:.0} ms ({:.0}–{:.0}) | {:.0} k | {ratio:.2} |",
            medians[i].as_secs_f64() * 1e3,
            lo.as_secs_f64() * 1e3,
            hi.as_secs_f64() * 1e3,
            rate(medians[i]) / 1e3,
        );
    }
    ratios
}

fn verdict(x: f64, target: f64) -> &'static str {
    if x >= target { "met" } else { "NOT met" }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut server = NatsServer::start().await;
        let raw = async_nats::connect(server.url()).await.expect("raw connect");

        // Core.
        let core = spawn_broker(nats_bus(server.url(), "bench-core").await, DeliveryMode::Core, "bench/core").await;
        wait_ready(&core, "core").await;
        let mut wall = vec![Vec::new(); 3];
        for round in 0..=ROUNDS {
            for k in 0..3 {
                let path = (round + k) % 3;
                let d = match path {
                    0 => raw_core(&raw, usize::MAX).await,
                    1 => raw_core(&raw, BATCH).await,
                    _ => broker_batches(&core.handle, PRODUCERS).await,
                };
                if round > 0 {
                    wall[path].push(d); // round 0 warms up
                }
            }
        }
        let core_rates: Vec<f64> = wall.iter().cloned().map(|w| rate(median(w))).collect();
        let r = table(
            "core mode",
            &[
                "raw async-nats, one round trip at the end",
                &format!("raw async-nats, a round trip every {BATCH}"),
                &format!("broker core, {PRODUCERS} producers x publish_batch({BATCH})"),
            ],
            wall,
            0,
        );
        println!(
            "\nTarget >= 0.80 of raw: broker core {:.2} of raw best case ({}), {:.2} of raw with the same confirmation ({})",
            r[2],
            verdict(r[2], 0.8),
            r[2] / r[1],
            verdict(r[2] / r[1], 0.8)
        );

        // JetStream.
        let js_ctx = jetstream::new(raw.clone());
        let jsb = spawn_broker(nats_bus(server.url(), "bench-js").await, DeliveryMode::Jetstream, "bench/js").await;
        // The broker creates the stream once its connection is up; purge it between rounds so
        // both paths see the same one.
        wait_ready(&jsb, "jetstream").await;
        let mut wall = vec![Vec::new(); 2];
        for round in 0..=ROUNDS {
            for k in 0..2 {
                let path = (round + k) % 2;
                js_ctx
                    .get_stream("MW_EVENTS")
                    .await
                    .expect("stream")
                    .purge()
                    .await
                    .expect("purge");
                let d = match path {
                    0 => raw_jetstream(&js_ctx).await,
                    _ => broker_batches(&jsb.handle, 1).await,
                };
                if round > 0 {
                    wall[path].push(d);
                }
            }
        }
        let r = table(
            &format!("jetstream mode, {BATCH} acks in flight"),
            &[
                &format!("raw async-nats JetStream, windows of {BATCH}"),
                &format!("broker jetstream, publish_batch({BATCH})"),
            ],
            wall,
            0,
        );
        println!(
            "\nTarget >= 0.80 of raw: broker jetstream {:.2} ({})",
            r[1],
            verdict(r[1], 0.8)
        );
        jsb.actor.stop(None);

        // Drain after an outage.
        let outage = Duration::from_secs(
            std::env::var("BROKER_BENCH_OUTAGE_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30),
        );
        let handle = core.handle.clone();
        server.kill();
        wait_until(DEADLINE, || async { !stats(&core.actor).await.connected })
            .await
            .unwrap_or_else(|e| panic!("the core broker did not notice that nats-server was killed ({e})"));
        let produced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let until = Instant::now() + outage;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut i = 0;
        while Instant::now() < until {
            tick.tick().await;
            let batch: Vec<Envelope> = (i..i + 100).map(event).collect();
            i += 100;
            let r = handle.publish_batch(batch).await.expect("queued");
            produced.fetch_add(r.queued, std::sync::atomic::Ordering::Relaxed);
        }
        let queued = stats(&core.actor).await.queue_depth;
        let back = Instant::now();
        server.restart().await;
        // Polled every 5 ms at most, so the clock stops within 5 ms of the queue emptying.
        let drain_limit = DEADLINE.max(outage);
        let drain_deadline = Instant::now() + drain_limit;
        loop {
            let s = stats(&core.actor).await;
            if s.queue_depth == 0 {
                break;
            }
            assert!(
                Instant::now() < drain_deadline,
                "the core broker did not drain its disk queue within {drain_limit:?} of nats-server's restart; its stats: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = back.elapsed();
        let drain_rate = queued as f64 / took.as_secs_f64();
        println!(
            "\n### broker: drain after a {outage:?} outage\n\n{queued} events queued ({} produced at ~10 k/s), drained in {:.2} s (server restart included): {:.0} k events/s, {:.2} of the broker's direct core rate ({:.0} k/s)",
            produced.load(std::sync::atomic::Ordering::Relaxed),
            took.as_secs_f64(),
            drain_rate / 1e3,
            drain_rate / core_rates[2],
            core_rates[2] / 1e3
        );
        core.actor.stop(None);
    });
}
