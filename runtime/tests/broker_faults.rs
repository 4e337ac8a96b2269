//! Fault tests of the broker with the real binary and real nats-server processes: nothing that
//! reached the runtime (an HTTP `/events` call answered 200) is lost.
//!
//! - JetStream mode: 50,000 events while nats-server is killed (SIGKILL) and restarted three
//!   times, and the node is killed (SIGKILL) once during an outage and started again. An
//!   independent JetStream consumer must find every acknowledged id.
//! - Core mode: the same run; every event acknowledged while NATS was down is found.
//! - The NATS path blackholed by a loopback proxy: the breaker opens within a bound, and
//!   nothing is lost once the path is back.
//! - A corrupt byte in a queue segment: the node boots, reports it, delivers the rest.
//! - `millwright dlq`: list, show, replay and purge, on a running node and a stopped one.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use millwright_plugin_sdk::event::{Envelope, EventId};
use millwright_tests::fault_proxy::{FaultProxy, Mode};
use millwright_tests::{NatsServer, wait_for, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::{NodeProcess, config};

const WAIT: Duration = Duration::from_secs(60);
const TOTAL: usize = 50_000;
const BATCH: usize = 500;

/// A nats-server whose JetStream store syncs every write, so that SIGKILL of the server loses
/// nothing it acknowledged (its default syncs every 2 minutes).
async fn durable_nats() -> NatsServer {
    NatsServer::builder()
        .config("jetstream { sync_interval: always }\n")
        .start()
        .await
}

fn broker_config(url: &str, mode: &str) -> String {
    format!(
        r#"
[bus]
nats_url = "{url}"

[broker]
mode = "{mode}"
ack_timeout = "1s"
breaker_open = "200ms"
breaker_open_max = "1s"
queue_sync = "20ms"
"#
    )
}

fn event(seq: usize) -> Envelope {
    Envelope::new("load", "mw.ev.load.seq", json!({ "seq": seq }))
}

/// What the producer learnt: every id acknowledged, and which of them were acknowledged
/// while NATS was down.
#[derive(Default)]
struct Produced {
    acked: Vec<EventId>,
    acked_during_outage: Vec<EventId>,
    retries: usize,
}

/// Posts one batch until the node acknowledges it (the same ids each time, so a batch the
/// node made durable but could not answer for is de-duplicated downstream).
async fn post_until_acked(node: &NodeProcess, batch: &[Envelope]) -> (Value, usize) {
    let body = serde_json::to_value(batch).unwrap();
    let mut retries = 0;
    loop {
        match node.post_json("/events", &body).await {
            Ok((200, answer)) => return (answer, retries),
            Ok(_) | Err(_) => {
                retries += 1;
                assert!(retries < 200, "the node never acknowledged a batch");
                wait_until(WAIT, || async {
                    matches!(node.get("/ready").await, Some((200, _)))
                })
                .await
                .unwrap_or_else(|e| {
                    panic!("the node is ready again: {e}; output:\n{}", node.output())
                });
            }
        }
    }
}

/// The faults of one run, by the number of events acknowledged when they happen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    KillNats,
    StartNats,
    KillNode,
}

const PLAN: &[(usize, Fault)] = &[
    (6_000, Fault::KillNats),
    (10_000, Fault::StartNats),
    (18_000, Fault::KillNats),
    (22_000, Fault::StartNats),
    (30_000, Fault::KillNats),
    (33_000, Fault::KillNode),
    (36_000, Fault::StartNats),
];

async fn produce_through_faults(
    dir: &Path,
    config: &str,
    nats: &mut NatsServer,
) -> (NodeProcess, Produced) {
    let mut node = NodeProcess::start(dir, config).await;
    node.wait_ready().await;
    let mut produced = Produced::default();
    let mut plan = PLAN.iter().peekable();
    let mut nats_down = false;
    let mut seq = 0;
    while seq < TOTAL {
        while let Some((_, fault)) = plan.next_if(|(at, _)| produced.acked.len() >= *at) {
            match fault {
                Fault::KillNats => {
                    nats.kill();
                    nats_down = true;
                    // Until the node has noticed, an event may still be "delivered" into a
                    // dead socket's buffer and then queued; only count outage acks from here.
                    wait_until(WAIT, || async {
                        node.broker().await.is_some_and(|b| b["connected"] == false)
                    })
                    .await
                    .expect("the broker notices the outage");
                }
                Fault::StartNats => {
                    nats.restart().await;
                    nats_down = false;
                }
                Fault::KillNode => {
                    node.kill9();
                    node = NodeProcess::start(dir, config).await;
                    node.wait_ready().await;
                }
            }
        }
        let batch: Vec<Envelope> = (seq..seq + BATCH).map(event).collect();
        let (answer, retries) = post_until_acked(&node, &batch).await;
        produced.retries += retries;
        assert_eq!(answer["accepted"], BATCH, "{answer}");
        let ids = batch.iter().map(|e| e.id);
        if nats_down {
            assert_eq!(
                answer["queued"], BATCH,
                "NATS is down: all queued: {answer}"
            );
            produced.acked_during_outage.extend(ids.clone());
        }
        produced.acked.extend(ids);
        seq += BATCH;
    }
    (node, produced)
}

/// Reads every message of `stream_name` and counts each `Nats-Msg-Id`.
async fn read_stream(url: &str, stream_name: &str) -> HashMap<String, usize> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(stream_name).await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = HashMap::new();
    for _ in 0..total {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("the stream delivers")
            .expect("not ended")
            .unwrap();
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| {
                Envelope::from_json_slice(&msg.payload)
                    .unwrap()
                    .id
                    .to_string()
            });
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

async fn wait_drained(node: &NodeProcess) {
    wait_until(WAIT, || async {
        node.broker()
            .await
            .is_some_and(|b| b["queue_depth"] == 0 && b["connected"] == true)
    })
    .await
    .unwrap_or_else(|e| panic!("the queue drains: {e}; broker: {:?}", "see output"));
}

fn missing(acked: &[EventId], seen: &HashMap<String, usize>) -> Vec<String> {
    acked
        .iter()
        .map(|id| id.to_string())
        .filter(|id| !seen.contains_key(id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_mode_keeps_every_acknowledged_event_through_nats_kills_and_a_node_sigkill() {
    let mut nats = durable_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("js", dir.path(), &broker_config(&nats.url(), "jetstream"));
    let started = Instant::now();
    let (node, produced) = produce_through_faults(dir.path(), &cfg, &mut nats).await;
    wait_drained(&node).await;
    let seen = read_stream(&nats.url(), "MW_EVENTS").await;

    let lost = missing(&produced.acked, &seen);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "jetstream: {} acknowledged ({} during outages), {} stored, {} duplicates, {} lost, \
         {} retried batches, {:?}",
        produced.acked.len(),
        produced.acked_during_outage.len(),
        seen.len(),
        duplicates,
        lost.len(),
        produced.retries,
        started.elapsed()
    );
    assert_eq!(produced.acked.len(), TOTAL);
    assert!(
        produced.acked_during_outage.len() >= 10_000,
        "the outages covered many events"
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(seen.len(), TOTAL, "nothing but the produced events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_mode_covers_every_outage_with_the_disk_queue() {
    // The audit stream ingests core publishes without acks; a stream that fsyncs every write
    // cannot keep up with them and the server drops what it cannot ingest, so this one keeps
    // the default sync (the events under test are stored long before the next kill).
    let mut nats = NatsServer::start().await;
    // The independent consumer: a stream that captures what the node publishes on core NATS.
    {
        let client = async_nats::connect(nats.url()).await.unwrap();
        jetstream::new(client)
            .create_stream(stream::Config {
                name: "AUDIT".into(),
                subjects: vec!["mw.ev.>".into()],
                duplicate_window: Duration::from_secs(300),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("core", dir.path(), &broker_config(&nats.url(), "core"));
    let (node, produced) = produce_through_faults(dir.path(), &cfg, &mut nats).await;
    wait_drained(&node).await;
    // Core publishes reach the stream asynchronously: read it until the outage events are
    // all there (or the deadline says some were lost).
    let url = nats.url();
    let outage = &produced.acked_during_outage;
    let seen = match wait_for(WAIT, || async {
        let seen = read_stream(&url, "AUDIT").await;
        missing(outage, &seen).is_empty().then_some(seen)
    })
    .await
    {
        Ok(seen) => seen,
        Err(_) => read_stream(&url, "AUDIT").await,
    };
    let lost_in_outage = missing(&produced.acked_during_outage, &seen);
    let lost_overall = missing(&produced.acked, &seen);
    println!(
        "core: {} acknowledged ({} during outages), {} stored, {} lost overall (core NATS \
         gives no server ack), {} lost of those queued during outages",
        produced.acked.len(),
        produced.acked_during_outage.len(),
        seen.len(),
        lost_overall.len(),
        lost_in_outage.len()
    );
    assert!(produced.acked_during_outage.len() >= 10_000);
    assert!(
        lost_in_outage.is_empty(),
        "{} events queued during an outage were lost",
        lost_in_outage.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_nats_path_opens_the_breaker_within_a_bound_and_loses_nothing() {
    let nats = NatsServer::start().await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", nats.port()).parse().unwrap());
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = watcher.subscribe("mw.ev.>").await.unwrap();
    watcher.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", proxy.port());
    let node = NodeProcess::start(
        dir.path(),
        &config("bh", dir.path(), &broker_config(&url, "core")),
    )
    .await;
    node.wait_ready().await;
    let mut seq = 0;
    let mut post = |n: usize| {
        let batch: Vec<Envelope> = (seq..seq + n).map(event).collect();
        seq += n;
        batch
    };
    let first = post(100);
    post_until_acked(&node, &first).await;

    proxy.set_mode(Mode::Blackhole);
    let cut = Instant::now();
    // Keep producing: each call is answered (queued after at most the ack timeout).
    let mut during = 0;
    let opened = wait_for(Duration::from_secs(20), || {
        let batch = post(10);
        during += batch.len();
        let node = &node;
        async move {
            let (answer, _) = post_until_acked(node, &batch).await;
            assert_eq!(answer["accepted"], 10);
            let b = node.broker().await?;
            (b["breaker"] != "closed" || b["connected"] == false).then_some(cut.elapsed())
        }
    })
    .await
    .expect("the breaker opens while the path is blackholed");
    assert!(
        opened < Duration::from_secs(10),
        "the breaker opened after {opened:?}, more than 10 s after the cut"
    );
    let broker = node
        .wait_component("bh/broker", "degraded", |c| c["state"] == "degraded")
        .await;
    assert!(
        broker["reason"]
            .as_str()
            .unwrap_or("")
            .contains("disk queue"),
        "{broker}"
    );
    let more = post(1000);
    let (answer, _) = post_until_acked(&node, &more).await;
    assert_eq!(answer["queued"], 1000, "{answer}");

    proxy.set_mode(Mode::Pass);
    let total = seq;
    let mut seen = HashSet::new();
    while seen.len() < total {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {total} arrived", seen.len()))
            .unwrap();
        let env = Envelope::from_json_slice(&msg.payload).unwrap();
        seen.insert(env.payload["seq"].as_u64().unwrap() as usize);
    }
    assert_eq!(
        seen,
        (0..total).collect(),
        "nothing lost ({during} sent while cut)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_byte_in_a_queue_segment_is_reported_and_the_rest_is_delivered() {
    let mut nats = NatsServer::start().await;
    let url = nats.url();
    nats.kill();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("cq", dir.path(), &broker_config(&url, "core"));
    let mut node = NodeProcess::start(dir.path(), &cfg).await;
    node.wait_ready().await;
    let batch: Vec<Envelope> = (0..1000).map(event).collect();
    let (answer, _) = post_until_acked(&node, &batch).await;
    assert_eq!(answer["queued"], 1000);
    node.signal(Signal::SIGTERM);
    assert!(node.wait_exit(WAIT).await.success());

    // Flip one byte in the middle of the segment: inside some record's payload.
    let segment = std::fs::read_dir(dir.path().join("queue"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&segment, bytes).unwrap();

    nats.restart().await;
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = watcher.subscribe("mw.ev.>").await.unwrap();
    watcher.flush().await.unwrap();
    let node = NodeProcess::start(dir.path(), &cfg).await;
    node.wait_ready().await;
    let mut seen = HashSet::new();
    while seen.len() < 999 {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of 999 arrived", seen.len()))
            .unwrap();
        seen.insert(Envelope::from_json_slice(&msg.payload).unwrap().id);
    }
    let all: HashSet<EventId> = batch.iter().map(|e| e.id).collect();
    assert_eq!(seen.difference(&all).count(), 0);
    assert_eq!(
        all.difference(&seen).count(),
        1,
        "exactly the corrupt record is missing"
    );
    let broker = node.component("cq/broker").await.unwrap();
    let error = broker["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("corrupt"), "health reports it: {broker}");
    assert!(error.contains("quarantine"), "and where it went: {broker}");
    assert!(
        node.metrics()
            .await
            .lines()
            .any(|l| l.starts_with("mw_disk_queue_corrupt_records_total") && !l.ends_with(" 0")),
        "the corrupt record is counted"
    );
    assert!(
        std::fs::read_dir(dir.path().join("queue/quarantine"))
            .unwrap()
            .count()
            >= 1,
        "the bad bytes are kept for an operator"
    );
}

fn dlq(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(support::binary())
        .arg("dlq")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millwright_dlq_lists_shows_replays_and_purges_on_a_running_and_a_stopped_node() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let small = |max_message_size| stream::Config {
        name: "MW_EVENTS".into(),
        subjects: vec!["mw.ev.>".into()],
        max_message_size,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.create_stream(small(512)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("dq", dir.path(), &broker_config(&nats.url(), "jetstream"));
    let mut node = NodeProcess::start(dir.path(), &cfg).await;
    node.wait_ready().await;

    let big = |n: usize| {
        Envelope::new(
            "load",
            "mw.ev.load.big",
            json!({"n": n, "pad": "x".repeat(2000)}),
        )
    };
    let (a, b) = (big(1), big(2));
    post_until_acked(&node, &[a.clone(), b.clone()]).await;
    wait_until(WAIT, || async {
        node.broker().await.is_some_and(|s| s["dead_letters"] == 2)
    })
    .await
    .expect("both refused events reach the DLQ");

    // Running node (over the control subject on NATS).
    let (ok, text) = dlq(&node.config_path, &["list"]);
    assert!(ok, "{text}");
    assert!(text.contains("2 dead letter(s)"), "{text}");
    assert!(
        text.contains(&a.id.to_string()) && text.contains(&b.id.to_string()),
        "{text}"
    );
    js.update_stream(small(-1)).await.unwrap();
    let (ok, text) = dlq(&node.config_path, &["replay", &a.id.to_string()]);
    assert!(ok, "{text}");
    assert!(text.contains("replayed 1 event"), "{text}");
    wait_until(WAIT, || async {
        let mut s = js.get_stream("MW_EVENTS").await.unwrap();
        s.info().await.unwrap().state.messages == 1
    })
    .await
    .expect("the replayed event is stored, once");
    let (ok, text) = dlq(&node.config_path, &["show", &EventId::new().to_string()]);
    assert!(!ok, "an unknown id is an error");
    assert!(text.contains("no dead letter with id"), "{text}");

    // Stopped node (the stores in the data dir).
    node.signal(Signal::SIGTERM);
    assert!(node.wait_exit(WAIT).await.success());
    let (ok, text) = dlq(&node.config_path, &["--json", "list"]);
    assert!(ok, "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["total"], 1, "{listed}");
    let (ok, text) = dlq(&node.config_path, &["--json", "show", &b.id.to_string()]);
    assert!(ok, "{text}");
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["letter"]["attempts"], 3, "{shown}");
    assert_eq!(shown["letter"]["envelope"]["id"], b.id.to_string());
    let (ok, text) = dlq(&node.config_path, &["purge", "--all"]);
    assert!(ok && text.contains("purged 1"), "{text}");
    let (ok, text) = dlq(&node.config_path, &["list"]);
    assert!(ok && text.contains("0 dead letter(s)"), "{text}");
    let (ok, text) = dlq(&node.config_path, &["replay"]);
    assert!(!ok, "replay needs an id or --all: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_disk_queue_cap_the_oldest_are_shed_counted_exactly_and_the_node_stays_up() {
    // The node reaches NATS through a proxy that refuses connections (NATS is "down" for it),
    // while the test's subscriber stays connected to the server itself.
    let nats = NatsServer::start().await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", nats.port()).parse().unwrap());
    proxy.set_mode(Mode::Refuse);
    let url = format!("nats://127.0.0.1:{}", proxy.port());
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = watcher.subscribe("mw.ev.>").await.unwrap();
    watcher.flush().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        "cap",
        dir.path(),
        &format!(
            "{}queue_max_bytes = 262144\nqueue_segment_bytes = 65536\n",
            broker_config(&url, "core")
        ),
    );
    let node = NodeProcess::start(dir.path(), &cfg).await;
    node.wait_ready().await;
    let total = 5_000;
    for start in (0..total).step_by(BATCH) {
        let batch: Vec<Envelope> = (start..start + BATCH).map(event).collect();
        let started = Instant::now();
        let (answer, retries) = post_until_acked(&node, &batch).await;
        assert_eq!(retries, 0, "never refused at the cap");
        assert_eq!(answer["queued"], BATCH);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never blocks at the cap"
        );
    }
    let broker = node.broker().await.unwrap();
    let (shed, depth) = (
        broker["shed"].as_u64().unwrap(),
        broker["queue_depth"].as_u64().unwrap(),
    );
    assert!(shed > 0, "{broker}");
    assert_eq!(
        shed + depth,
        total as u64,
        "every event is either kept or counted: {broker}"
    );
    assert!(
        broker["queue_bytes"].as_u64().unwrap() <= 262_144,
        "{broker}"
    );
    let metric = node
        .metrics()
        .await
        .lines()
        .find(|l| l.starts_with("mw_disk_queue_shed_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64);
    assert_eq!(
        metric,
        Some(shed),
        "the metric counts exactly what was shed"
    );
    assert!(
        node.logs()
            .iter()
            .any(|l| l["message"].as_str().unwrap_or("").contains("shed")),
        "shedding is logged"
    );

    proxy.set_mode(Mode::Pass);
    let mut seen = HashSet::new();
    while seen.len() < depth as usize {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {depth} arrived", seen.len()))
            .unwrap();
        seen.insert(
            Envelope::from_json_slice(&msg.payload).unwrap().payload["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    let newest: HashSet<u64> = (shed..total as u64).collect();
    assert_eq!(seen, newest, "the survivors are exactly the newest events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millwright_dlq_reaches_a_running_node_on_the_embedded_bus_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &config("eh", dir.path(), "")).await;
    node.wait_ready().await;
    let endpoints: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("endpoints.json")).unwrap()).unwrap();
    assert_eq!(endpoints["http"], node.http.to_string(), "{endpoints}");
    let (ok, text) = dlq(&node.config_path, &["--json", "list"]);
    assert!(ok, "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["total"], 0);
    // The node holds the data dir: the CLI went through it, not around it (the redb file is
    // locked by the node, so opening it directly would have failed).
    let (ok, text) = dlq(&node.config_path, &["purge", "--all"]);
    assert!(ok && text.contains("purged 0"), "{text}");
}
