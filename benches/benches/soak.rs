//! Flat memory under churn (issue 12, point 7): an hour of faults compressed into minutes on
//! one release node with N = 100 in-process `sim` connectors (embedded bus, one event every
//! 200 ms each):
//!
//! - half crash on their own every 2 to 4 s after each start (`fail_every`): a fatal read, the
//!   supervisor restarts the instance;
//! - a fifth lose their connection every 5 s for 1 s (`degrade_every`, `degrade_for`): backoff
//!   and recovery in place, no restart;
//! - the rest are hung by the bench, one every `MW_SOAK_HANG_EVERY`: `POST
//!   /connectors/<name>/call/hang` with `{"for": "3s"}`, then a `status` call, with the
//!   connector's `call_timeout` at 1 s, so the node gives up on the instance and restarts it.
//!
//! Supervision allows the churn (`max_restarts` a million per second, backoff 10 to 100 ms).
//! Restarts are counted from the node's `mw_supervisor_restarts_total`. After a warm-up of
//! `MW_SOAK_WARMUP_RESTARTS` restarts (200) the node's RSS is recorded, and again once
//! `MW_SOAK_RESTARTS` more (2,000) happened; the difference per restart is the figure, target
//! under 1 KB (printed PASS/FAIL; the process does not fail). RSS is read every second in
//! between; the least-squares slope of RSS over restarts is printed beside it, with threads
//! and open files at both ends (a leak of either shows there).
//!
//! The bench builds nothing. Build the node and the plugin, then run it:
//!
//! ```text
//! cargo build --release -p millwright-runtime -p millwright-plugin-sim
//! cargo bench -p millwright-benches --bench soak
//! ```
//!
//! Environment: `MW_SOAK_N` (100), `MW_SOAK_WARMUP_RESTARTS` (200), `MW_SOAK_RESTARTS`
//! (2000), `MW_SOAK_MAX` (seconds the measured part may last at most, 900),
//! `MW_SOAK_HANG_EVERY` (seconds between hangs, 0.5), `MW_BENCH_NODE` (the node binary).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millwright_benches::node::{self, Node, metric_sum};
use millwright_benches::pause;
use millwright_benches::process::{self, Sample};

const RESTARTS_METRIC: &str = "mw_supervisor_restarts_total";
const KB: f64 = 1000.0;
const MIB: f64 = 1024.0 * 1024.0;

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name).map_or(default, |v| {
        v.trim_end_matches('s')
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

/// The role of connector `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Crash,
    ConnectionLoss,
    Hang,
}

fn role(i: usize) -> Role {
    match i % 10 {
        0..=4 => Role::Crash,
        5..=6 => Role::ConnectionLoss,
        _ => Role::Hang,
    }
}

fn connectors(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let name = format!("s{i}");
        let base = "interval = \"200ms\", tags = [\"a\"]";
        out.push_str(&match role(i) {
            Role::Crash => node::sim(
                &name,
                "",
                &format!("{base}, fail_every = \"{}s\"", 2 + i % 3),
            ),
            Role::ConnectionLoss => node::sim(
                &name,
                "",
                &format!("{base}, degrade_every = \"5s\", degrade_for = \"1s\""),
            ),
            Role::Hang => node::sim(&name, "call_timeout = \"1s\"", base),
        });
    }
    out
}

/// A reading during the run.
#[derive(Debug, Clone, Copy)]
struct Point {
    elapsed: Duration,
    restarts: f64,
    sample: Sample,
    open_files: usize,
}

fn read(node: &Node, start: Instant) -> std::io::Result<Point> {
    let text = node.metrics_text()?;
    Ok(Point {
        elapsed: start.elapsed(),
        restarts: metric_sum(&text, RESTARTS_METRIC),
        sample: Sample::read(node.pid())?,
        open_files: process::open_files(node.pid())?,
    })
}

fn main() {
    let n = env_number("MW_SOAK_N", 100.0) as usize;
    let warmup = env_number("MW_SOAK_WARMUP_RESTARTS", 200.0);
    let target = env_number("MW_SOAK_RESTARTS", 2000.0);
    let max = Duration::from_secs_f64(env_number("MW_SOAK_MAX", 900.0));
    let hang_every = Duration::from_secs_f64(env_number("MW_SOAK_HANG_EVERY", 0.5));
    node::binary();
    process::raise_open_files_limit().expect("the open files limit");

    let dir = tempfile::tempdir().expect("temp dir");
    let extra = format!(
        "[supervision]\nmax_restarts = 1000000\nmax_window = \"1s\"\nmin_backoff = \"10ms\"\n\
         max_backoff = \"100ms\"\n{}",
        connectors(n)
    );
    let mut node = Node::start(dir.path(), "soak", &extra);
    if node.wait_ready(Duration::from_secs(120)).is_none() {
        panic!("the node is not ready:\n{}", node.log_tail(30));
    }
    let start = Instant::now();

    // The hangs, from a thread of their own: each `status` call waits for its answer on a
    // thread of its own as well, so that a hang does not delay the next.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let hanger = {
        let (stop, outcomes) = (stop.clone(), outcomes.clone());
        let http = node.http;
        std::thread::spawn(move || {
            let hung: Vec<String> = (0..n)
                .filter(|&i| role(i) == Role::Hang)
                .map(|i| format!("s{i}"))
                .collect();
            let mut waiting = Vec::new();
            for name in hung.iter().cycle() {
                if stop.load(Ordering::Relaxed) || hung.is_empty() {
                    break;
                }
                let call = |method: &str, body: serde_json::Value| {
                    millwright_benches::http::post_json(
                        http,
                        &format!("/connectors/{name}/call/{method}"),
                        Some(&body),
                        Duration::from_secs(35),
                    )
                };
                match call("hang", serde_json::json!({ "for": "3s" })) {
                    Ok(r) => tally(&outcomes, format!("hang → {}", r.status)),
                    Err(e) => tally(&outcomes, format!("hang → {}", e.kind())),
                }
                let outcomes = outcomes.clone();
                let name = name.clone();
                waiting.push(std::thread::spawn(move || {
                    let r = millwright_benches::http::post_json(
                        http,
                        &format!("/connectors/{name}/call/status"),
                        Some(&serde_json::Value::Null),
                        Duration::from_secs(35),
                    );
                    match r {
                        Ok(r) => tally(&outcomes, format!("status after hang → {}", r.status)),
                        Err(e) => tally(&outcomes, format!("status after hang → {}", e.kind())),
                    }
                }));
                waiting.retain(|t| !t.is_finished());
                pause(hang_every);
            }
            for t in waiting {
                let _ = t.join();
            }
        })
    };

    let mut warm: Option<Point> = None;
    let mut series = Vec::new();
    let mut last = None;
    let mut failure = None;
    loop {
        pause(Duration::from_secs(1));
        if !node.is_running() {
            failure = Some(format!(
                "the node exited during the soak:\n{}",
                node.log_tail(30)
            ));
            break;
        }
        let point = match read(&node, start) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("soak: a reading failed ({e}); next second");
                continue;
            }
        };
        last = Some(point);
        match warm {
            None if point.restarts >= warmup => {
                eprintln!(
                    "soak: warmed up after {:.0} s: {} restarts, RSS {:.2} MiB",
                    point.elapsed.as_secs_f64(),
                    point.restarts,
                    point.sample.rss as f64 / MIB
                );
                warm = Some(point);
                series.push(point);
            }
            None => {}
            Some(w) => {
                series.push(point);
                if series.len() % 15 == 0 {
                    eprintln!(
                        "soak: {:.0} s: {} restarts since warm-up, RSS {:.2} MiB",
                        point.elapsed.as_secs_f64(),
                        point.restarts - w.restarts,
                        point.sample.rss as f64 / MIB
                    );
                }
                if point.restarts - w.restarts >= target {
                    break;
                }
                if point.elapsed - w.elapsed > max {
                    failure = Some(format!(
                        "only {} restarts after warm-up within {max:?}",
                        point.restarts - w.restarts
                    ));
                    break;
                }
            }
        }
        if warm.is_none() && point.elapsed > max {
            failure = Some(format!(
                "only {} restarts within {max:?}, short of the warm-up",
                point.restarts
            ));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = hanger.join();
    let stopped = node.stop(Duration::from_secs(60));

    println!("\n### soak: N = {n} sims crashing, losing their connection and hanging\n");
    if let Some(f) = &failure {
        println!("The run did not complete: {f}\n");
    }
    println!("| point | time s | restarts | RSS | threads | open files |");
    println!("|---|---|---|---|---|---|");
    for (label, p) in [("after warm-up", warm), ("end", last)] {
        if let Some(p) = p {
            println!(
                "| {label} | {:.0} | {:.0} | {:.2} MiB | {} | {} |",
                p.elapsed.as_secs_f64(),
                p.restarts,
                p.sample.rss as f64 / MIB,
                p.sample.threads,
                p.open_files
            );
        }
    }
    println!("\nCalls of the hangs: {:?}", outcomes.lock().unwrap());
    println!(
        "Stop after SIGTERM: {}",
        stopped.map_or("not within 60 s".to_owned(), |(d, s)| format!(
            "{:.2} s, {s}",
            d.as_secs_f64()
        ))
    );
    if let (Some(w), Some(e)) = (warm, last)
        && e.restarts > w.restarts
    {
        let restarts = e.restarts - w.restarts;
        let per = (e.sample.rss as f64 - w.sample.rss as f64) / restarts;
        println!(
            "\nRSS growth: {:+.0} bytes over {restarts:.0} restarts = {per:+.0} bytes per restart; \
             least-squares slope over {} readings: {:+.0} bytes per restart",
            e.sample.rss as f64 - w.sample.rss as f64,
            series.len(),
            slope(&series)
        );
        println!(
            "- {}: RSS grows under 1 KB per restart ({per:+.0} B)",
            if per < KB { "PASS" } else { "FAIL" }
        );
    } else {
        println!("\n- not measured: RSS per restart (no restarts after the warm-up)");
    }
}

fn tally(outcomes: &Mutex<BTreeMap<String, u64>>, key: String) {
    *outcomes.lock().unwrap().entry(key).or_insert(0) += 1;
}

/// The least-squares slope of RSS (bytes) over restarts.
fn slope(points: &[Point]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(x, y), p| {
        (x + p.restarts / n, y + p.sample.rss as f64 / n)
    });
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for p in points {
        let dx = p.restarts - mx;
        sxy += dx * (p.sample.rss as f64 - my);
        sxx += dx * dx;
    }
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}
