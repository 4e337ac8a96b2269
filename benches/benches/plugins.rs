//! Events per second across each plugin boundary, against the same connector linked into the
//! node, same run: the `sim` source (`plugins/sim`, `interval = "0s"`: every read returns a
//! full batch) read batch by batch (each batch acknowledged with the next read, `AckThenRead`,
//! one crossing per batch as the connector actor does) through
//!
//! - a `StaticTransport` (the baseline: the connector's code called directly through the SDK's
//!   adapter, no boundary);
//! - a `DylibTransport` (the `cdylib`, loaded in process: MessagePack messages through
//!   `extern "C"`);
//! - a `ProcessTransport` (the executable, out of process: MessagePack frames over pipes),
//!
//! at batch sizes 1, 64 and 1024. The plugin is built in release mode first (`cargo build
//! --release -p millwright-plugin-sim`). Rounds alternate between paths; medians.
//! Targets at batch 64: in-process >= 0.9 of static, out of process >= 0.5 of static.
//! `--features testkit` reads the `testkit` counter instead (the source of the figures before
//! the binary encoding).
//!
//! A second table measures the whole path a node runs: the connector actor reading the plugin,
//! publishing every batch through the broker (core mode, embedded bus) and acknowledging it,
//! timed from the first event a subscriber gets to the last (steady state), for the same three
//! transports; its ratios are the median of each round's paired ratio (the paths run back to
//! back in a round, in a rotating order), 45 short rounds at batch 64 and 7 at the others,
//! with the quartiles of the rounds' ratios beside them.
//!
//! Run: `cargo bench -p millwright-benches --bench plugins`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use millwright_broker::BrokerOptions;
use millwright_bus::Bus;
use millwright_connect::{
    ConnectorActor, ConnectorArgs, ConnectorSpec, StaticTransport, Transport, TransportFactory,
};
use millwright_kernel::lifecycle::StatusBoard;
use millwright_kernel::supervisor::BackoffPolicy;
use millwright_plugin_sdk::protocol::{Request, Response};
use millwright_runtime::plugin_host::{self, DylibTransport};
use millwright_runtime::plugin_process::{ProcessSpec, ProcessTransport};

// One source plugin per build: each plugin library exports the same entry symbol, so two
// cannot be linked into one binary.
#[cfg(not(feature = "testkit"))]
use millwright_plugin_sim::{SIM as VTABLE, Sim as Linked};
#[cfg(feature = "testkit")]
use millwright_plugin_testkit::{TESTKIT as VTABLE, Testkit as Linked};

const ROUNDS: usize = 5;
const BATCHES: [usize; 3] = [1, 64, 1024];

/// The source plugin read: `sim`, or `testkit` with `--features testkit`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Source;

impl Source {
    fn name(self) -> &'static str {
        if cfg!(feature = "testkit") {
            "testkit"
        } else {
            "sim"
        }
    }

    /// Its config: `count` events in all (`None`: endless).
    fn config(self, count: Option<u64>) -> serde_json::Value {
        if cfg!(feature = "testkit") {
            serde_json::json!({ "count": count.unwrap_or(u64::MAX / 2) })
        } else {
            match count {
                Some(n) => serde_json::json!({ "interval": "0s", "count": n }),
                None => serde_json::json!({ "interval": "0s" }),
            }
        }
    }

    /// The connector linked in.
    fn linked(self) -> Box<dyn Transport> {
        Box::new(StaticTransport::<Linked>::new(
            &VTABLE,
            "b",
            serde_json::Value::Null,
        ))
    }

    /// Its `(cdylib, executable)`, built in release.
    fn build(self) -> (PathBuf, PathBuf) {
        millwright_tests::build_plugin(self.name(), true)
    }
}

async fn open(t: &mut dyn Transport, source: Source) {
    let config = source.config(None);
    assert_eq!(
        t.request(Request::open(config)).await.unwrap(),
        Response::Done
    );
    assert_eq!(t.request(Request::Connect).await.unwrap(), Response::Done);
}

/// Reads `events` events in batches of `batch`, acknowledging each with the next read
/// (`AckThenRead`, one crossing per batch, as the connector actor does) and the last alone.
async fn run(t: &mut dyn Transport, batch: usize, events: usize) -> Duration {
    let start = Instant::now();
    let mut got = 0;
    let mut request = Request::ReadBatch { max: batch };
    let mut last = None;
    while got < events {
        let Response::Batch { batch: b } = t.request(request).await.unwrap() else {
            panic!("a batch")
        };
        got += b.events.len();
        request = Request::AckThenRead {
            token: b.token,
            max: batch,
        };
        last = Some(b.token);
    }
    if let Some(token) = last {
        assert_eq!(
            t.request(Request::Ack { token }).await.unwrap(),
            Response::Done
        );
    }
    start.elapsed()
}

/// The connector actor through the broker to a subscriber: the time from the first event's
/// arrival to the last's (steady state: the start of the actor, the broker, the plugin
/// instance or process is not in it).
async fn pipeline(
    source: Source,
    transport: TransportFactory,
    batch: usize,
    events: usize,
    n: usize,
) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let bus = Bus::embedded();
    let mut sub = bus.subscribe("mw.ev.>").await.expect("subscribe");
    let board = StatusBoard::new();
    let broker_id = format!("bench{n}/broker");
    let (broker, broker_actor) = millwright_broker::actor::spawn(
        &broker_id,
        BrokerOptions::new(dir.path()),
        bus.clone(),
        board.clone(),
    )
    .await
    .expect("broker");
    let spec = Arc::new(ConnectorSpec {
        instance: "b".into(),
        plugin: source.name().into(),
        config: source.config(Some(events as u64)),
        subject_prefix: "mw".into(),
        kinds: vec![millwright_plugin_sdk::connector::Kind::Source],
        max_batch: batch,
        poll_interval: Duration::from_millis(1),
        backoff: BackoffPolicy::default(),
        republish_delay: Duration::from_millis(1),
        idle_window: Duration::from_secs(30),
    });
    let (actor, _) = ractor::Actor::spawn(
        None,
        ConnectorActor,
        ConnectorArgs {
            spec,
            component_id: format!("bench{n}/connectors/b"),
            board,
            broker,
            transport,
        },
    )
    .await
    .expect("connector");
    // The embedded bus drops what a slow subscriber cannot take (as NATS does): a round that
    // loses events fails with that, instead of waiting for them.
    let next = async |sub: &mut millwright_bus::Subscription| {
        tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("an event within 30 s: none dropped as a slow consumer")
            .expect("the subscription is open")
    };
    next(&mut sub).await;
    let start = Instant::now();
    for _ in 1..events {
        next(&mut sub).await;
    }
    let took = start.elapsed();
    actor.stop(None);
    broker_actor.stop(None);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Each round's `wall[0] / wall[i]` (a path's rate against the static path's in the same
/// round, so that a change of machine load between rounds cancels): their median, first
/// quartile and third quartile.
fn paired_ratio(wall: &[Vec<Duration>], i: usize) -> (f64, f64, f64) {
    let mut r: Vec<f64> = wall[0]
        .iter()
        .zip(&wall[i])
        .map(|(s, p)| s.as_secs_f64() / p.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    let n = r.len();
    (r[n / 2], r[n / 4], r[(3 * n) / 4])
}

/// Rounds of the whole path at batch size `batch`: more at 64, where the targets are judged,
/// each shorter (a median of many short paired rounds varies less between runs than one of a
/// few long ones on a shared machine).
fn pipeline_rounds(batch: usize) -> usize {
    if batch == 64 { 45 } else { 7 }
}

/// Events of one whole-path round at batch size `batch`: about a third of a second at batch
/// 64 (the static path), a second at 1024; batch 1 out of process is far slower.
fn pipeline_events(batch: usize) -> usize {
    if batch == 64 {
        100_000
    } else {
        (batch * 3_000).clamp(20_000, 300_000)
    }
}

fn main() {
    let source = Source;
    let (lib, exe) = source.build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let loaded = plugin_host::load(&lib).expect("the plugin loads");
        let mut paths: Vec<(&str, Box<dyn Transport>)> = vec![
            ("static (linked in)", source.linked()),
            (
                "in-process (cdylib)",
                Box::new(DylibTransport::new(&loaded, "b", Duration::from_secs(30)).unwrap()),
            ),
            (
                "out of process",
                Box::new(ProcessTransport::new(ProcessSpec {
                    program: exe.clone(),
                    instance: "b".into(),
                    call_timeout: Duration::from_secs(30),
                })),
            ),
        ];
        for (_, t) in &mut paths {
            open(t.as_mut(), source).await;
        }
        println!(
            "\n### plugins ({}): events per second across the boundary (median of {ROUNDS})\n",
            source.name()
        );
        println!("| batch | path | events/s | ÷ static |");
        println!("|---:|---|---:|---:|");
        let mut at_64 = (0.0, 0.0);
        for batch in BATCHES {
            let events = (batch * 2_000).clamp(20_000, 400_000);
            for (_, t) in &mut paths {
                run(t.as_mut(), batch, events / 10).await; // warm-up
            }
            let mut wall = vec![Vec::new(); paths.len()];
            for round in 0..ROUNDS {
                for k in 0..paths.len() {
                    let i = (round + k) % paths.len();
                    wall[i].push(run(paths[i].1.as_mut(), batch, events).await);
                }
            }
            let rates: Vec<f64> = wall
                .into_iter()
                .map(|w| events as f64 / median(w).as_secs_f64())
                .collect();
            for (i, (name, _)) in paths.iter().enumerate() {
                println!(
                    "| {batch} | {name} | {:.0} k | {:.2} |",
                    rates[i] / 1e3,
                    rates[i] / rates[0]
                );
            }
            if batch == 64 {
                at_64 = (rates[1] / rates[0], rates[2] / rates[0]);
            }
        }
        println!(
            "\n### plugins ({}): the whole path, connector actor → broker → bus (rounds: {} at batch 64, {} else; events/s: median; ratio: median of the rounds' paired ratios [quartiles])\n",
            source.name(),
            pipeline_rounds(64),
            pipeline_rounds(1),
        );
        println!("| batch | path | events/s | ÷ static [q1–q3] |");
        println!("|---:|---|---:|---:|");
        let mut run_no = 0;
        let mut pipe_64 = (0.0, 0.0);
        for batch in BATCHES {
            let events = pipeline_events(batch);
            let factories: Vec<(&str, TransportFactory)> = vec![
                (
                    "static (linked in)",
                    Arc::new(move || -> Box<dyn Transport> { source.linked() }),
                ),
                (
                    "in-process (cdylib)",
                    plugin_host::transport_factory(
                        Arc::new(loaded.clone()),
                        "b".into(),
                        Duration::from_secs(30),
                    ),
                ),
                (
                    "out of process",
                    millwright_runtime::plugin_process::transport_factory(ProcessSpec {
                        program: exe.clone(),
                        instance: "b".into(),
                        call_timeout: Duration::from_secs(30),
                    }),
                ),
            ];
            let mut wall = vec![Vec::new(); factories.len()];
            for round in 0..pipeline_rounds(batch) {
                for k in 0..factories.len() {
                    let i = (round + k) % factories.len();
                    run_no += 1;
                    wall[i].push(
                        pipeline(source, factories[i].1.clone(), batch, events, run_no).await,
                    );
                }
            }
            let rates: Vec<f64> = wall
                .iter()
                .map(|w| (events - 1) as f64 / median(w.clone()).as_secs_f64())
                .collect();
            let ratios: Vec<(f64, f64, f64)> = (0..factories.len())
                .map(|i| paired_ratio(&wall, i))
                .collect();
            for (i, (name, _)) in factories.iter().enumerate() {
                let (ratio, q1, q3) = ratios[i];
                println!(
                    "| {batch} | {name} | {:.0} k | {ratio:.2} [{q1:.2}–{q3:.2}] |",
                    rates[i] / 1e3,
                );
            }
            if batch == 64 {
                pipe_64 = (ratios[1].0, ratios[2].0);
            }
        }
        let verdict = |x: f64, t: f64| if x >= t { "met" } else { "NOT met" };
        for (what, (inp, oop)) in [("boundary alone", at_64), ("whole path", pipe_64)] {
            println!(
                "\nTargets at batch 64, {what}: in-process {inp:.2} of static (>= 0.90: {}), \
                 out of process {oop:.2} (>= 0.50: {})",
                verdict(inp, 0.9),
                verdict(oop, 0.5)
            );
        }
    });
}
