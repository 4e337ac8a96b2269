//! OPC-UA samples per second from the simulated PLC (`tools/plc-sim`) with 1,000 monitored
//! items, through the `opcua` plugin (its source's `read_batch` then `ack`, via the SDK's
//! `TestHost` and adapter, as the connector actor calls it) against a bare async-opcua client
//! subscription (a callback that only counts) on the same server, same run.
//!
//! The server changes all 1,000 variables every `UPDATE` (20 ms); both clients subscribe with
//! a 100 ms publishing interval, sampling interval 0 and a queue of 10 per item. async-opcua's
//! server samples an item at most every 100 ms (its minimum sampling interval), so it offers
//! 10 samples per item per second: 10 k samples/s for 1,000 items. Besides the rate, each
//! round measures the process' CPU time per sample (user + system, server included, the same
//! server work in both rounds), which shows what the plugin costs even when both keep up. Rounds alternate
//! between the two clients, each measured alone for `WINDOW` after a warm-up; medians.
//! Target: plugin >= 0.8 of the bare client.
//!
//! Run: `cargo bench -p millwright-benches --bench opcua`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use millwright_plc_sim::{PlcSim, PlcSimOptions};
use millwright_plugin_opcua::{OPCUA, OpcUa};
use millwright_plugin_sdk::harness::TestHost;
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken};
use opcua::types::{
    EndpointDescription, MessageSecurityMode, MonitoredItemCreateRequest, TimestampsToReturn,
    UserTokenPolicy,
};

const ITEMS: usize = 1_000;
const UPDATE: Duration = Duration::from_millis(20);
const ROUNDS: usize = 3;
const WARMUP: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(5);

fn config(endpoint: &str, pki: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "endpoint": endpoint,
        "pki_dir": pki,
        "nodes": (0..ITEMS).map(|i| serde_json::json!({
            "tag": format!("v{i:04}"),
            "node_id": millwright_plc_sim::sim_node(2, i).to_string(),
        })).collect::<Vec<_>>(),
        "publishing_interval": "100ms",
        "sampling_interval": "0s",
        "queue_size": 10,
        "max_notifications_per_publish": 5_000,
        "max_buffered_samples": 1_000_000,
    })
}

/// The process' CPU time so far (user + system), from `/proc/self/stat`.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command; 100 ticks/s.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The plugin: samples per second read (and acknowledged) over the window, and CPU per sample.
async fn plugin_round(endpoint: &str, pki: &std::path::Path) -> (f64, f64) {
    let mut host: TestHost<OpcUa> = TestHost::open(&OPCUA, "bench", config(endpoint, pki))
        .await
        .expect("config");
    host.connect().await.expect("connects");
    let warm = Instant::now() + WARMUP;
    while Instant::now() < warm {
        read(&mut host).await;
    }
    let start = Instant::now();
    let cpu0 = cpu();
    let mut n = 0u64;
    while start.elapsed() < WINDOW {
        n += read(&mut host).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let per = (cpu() - cpu0).as_secs_f64() * 1e6 / n.max(1) as f64;
    host.close().await;
    (rate, per)
}

/// One read and ack; a lost connection is reported and reconnected (counted as zero).
async fn read(host: &mut TestHost<OpcUa>) -> u64 {
    match host.read_batch(1024).await {
        Ok(b) => {
            host.ack(b.token).await.expect("ack");
            b.events.len() as u64
        }
        Err(e) => {
            eprintln!("plugin read failed: {e}; reconnecting");
            while let Err(e) = host.connect().await {
                if let millwright_plugin_sdk::prelude::ConnectorError::BackOff(d) = e {
                    tokio::time::sleep(d).await;
                }
            }
            0
        }
    }
}

/// The bare client: notifications per second counted by the callback over the window.
async fn bare_round(endpoint: &str, pki: &std::path::Path) -> (f64, f64) {
    let mut client = ClientBuilder::new()
        .application_name("bench")
        .application_uri("urn:bench")
        .pki_dir(pki)
        .session_retry_limit(0)
        .max_message_size(millwright_plugin_opcua::session::MAX_MESSAGE_SIZE)
        .max_chunk_count(millwright_plugin_opcua::session::MAX_MESSAGE_SIZE / 65_535 + 1)
        .max_array_length(millwright_plugin_opcua::session::MAX_ARRAY_LENGTH)
        .client()
        .expect("client");
    let ep: EndpointDescription = (
        endpoint,
        "None",
        MessageSecurityMode::None,
        UserTokenPolicy::anonymous(),
    )
        .into();
    let (session, event_loop) = client
        .connect_to_matching_endpoint(ep, IdentityToken::Anonymous)
        .await
        .expect("connects");
    let driver = event_loop.spawn();
    session.wait_for_connection().await;
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let sub = session
        .create_subscription(
            Duration::from_millis(100),
            30,
            10,
            5_000,
            0,
            true,
            DataChangeCallback::new(move |_, _| {
                c.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .await
        .expect("subscription");
    let items: Vec<MonitoredItemCreateRequest> = (0..ITEMS)
        .map(|i| {
            let mut r: MonitoredItemCreateRequest = millwright_plc_sim::sim_node(2, i).into();
            r.requested_parameters.sampling_interval = 0.0;
            r.requested_parameters.queue_size = 10;
            r.requested_parameters.discard_oldest = true;
            r
        })
        .collect();
    session
        .create_monitored_items(sub, TimestampsToReturn::Both, items)
        .await
        .expect("items");
    session.trigger_publish_now();
    tokio::time::sleep(WARMUP).await;
    let before = count.load(Ordering::Relaxed);
    let start = Instant::now();
    let cpu0 = cpu();
    tokio::time::sleep(WINDOW).await;
    let n = count.load(Ordering::Relaxed) - before;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let per = (cpu() - cpu0).as_secs_f64() * 1e6 / n.max(1) as f64;
    let _ = session.disconnect().await;
    driver.abort();
    (rate, per)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server_pki = tempfile::tempdir().expect("temp dir");
        let client_pki = tempfile::tempdir().expect("temp dir");
        let mut options = PlcSimOptions::new(server_pki.path())
            .variables(ITEMS)
            .update_interval(UPDATE);
        options.secure = false;
        let sim = PlcSim::start(options).await.expect("plc-sim");
        assert_eq!(sim.namespace(), 2);
        let endpoint = sim.endpoint();
        // The server samples each item at most every 100 ms.
        let offered = ITEMS as f64 * 10.0;
        let mut plugin = Vec::new();
        let mut bare = Vec::new();
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                plugin.push(plugin_round(&endpoint, client_pki.path()).await);
                bare.push(bare_round(&endpoint, client_pki.path()).await);
            } else {
                bare.push(bare_round(&endpoint, client_pki.path()).await);
                plugin.push(plugin_round(&endpoint, client_pki.path()).await);
            }
        }
        let p = median(plugin.iter().map(|r| r.0).collect());
        let b = median(bare.iter().map(|r| r.0).collect());
        let pc = median(plugin.iter().map(|r| r.1).collect());
        let bc = median(bare.iter().map(|r| r.1).collect());
        println!(
            "\n### opcua: samples per second, {ITEMS} monitored items, server offers {:.0} k samples/s (median of {ROUNDS})\n",
            offered / 1e3
        );
        println!("| path | samples/s | ÷ bare | process CPU µs/sample |");
        println!("|---|---:|---:|---:|");
        println!("| bare async-opcua subscription (counting callback) | {:.1} k | 1.00 | {bc:.1} |", b / 1e3);
        println!("| opcua plugin (read_batch + ack via TestHost) | {:.1} k | {:.2} | {pc:.1} |", p / 1e3, p / b);
        println!("\nrounds (samples/s, CPU µs/sample): plugin {plugin:.1?}, bare {bare:.1?}");
        println!(
            "target plugin >= 0.8 of bare: {}",
            if p / b >= 0.8 { "met" } else { "NOT met" }
        );
        sim.stop().await;
    });
}
