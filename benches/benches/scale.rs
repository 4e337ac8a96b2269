//! The node at scale (issue 12, point 4): one release node on the embedded bus with N
//! in-process `sim` connectors, N = 10, 100, 1,000 and 10,000, at two loads:
//!
//! - `1 ev/s`: every instance emits one event a second (`interval = "1s"`, `tags = ["a"]`);
//! - `idle`: one round at start, then nothing (`interval = "24h"`, `tags = ["a"]`).
//!
//! Each node is a child process, measured from `/proc`: the time from spawn to `/ready`
//! answering 200 (polled every 20 ms); then, after a warm-up, over a window: threads, resident
//! memory, CPU (utime + stime), and the events the broker moved (`delivered + drained` of
//! `/broker`); and the time from SIGTERM to exit. RSS per instance is the node's RSS minus
//! that of the same node with no connectors (measured first, in the same run), divided by N.
//!
//! The baseline, measured in the same run at each N of the busy load: a plain tokio program
//! doing the same per-instance work with one task per instance (this bench binary re-executed
//! as a child process, so that `/proc` measures it alone): every second each task computes its
//! value (the sim plugin's sine plus noise), builds the SDK's `Envelope` and publishes it
//! through the embedded bus (`Bus::publish_envelope`), where one subscriber receives every
//! event (as the node's latest-values subscriber does). The node's CPU per event is compared
//! with the baseline's.
//!
//! Targets (reported, the process does not fail): CPU per event within 3x of the baseline at
//! N = 1,000 and 10,000; idle CPU at N = 10,000 below 2 % of one core; ready and stopped within
//! 10 s at N = 10,000; at most 48 threads at N = 10,000; RSS per idle instance at most 32 KiB
//! (at N = 10,000).
//!
//! The bench builds nothing. Build the node and the plugin, then run it:
//!
//! ```text
//! cargo build --release -p millwright-runtime -p millwright-plugin-sim
//! cargo bench -p millwright-benches --bench scale
//! ```
//!
//! Environment: `MW_SCALE_N` (`10,100,1000,10000`), `MW_SCALE_WINDOW` (seconds, 20),
//! `MW_SCALE_WARMUP` (seconds after ready, 5), `MW_SCALE_LOADS` (`busy,idle`),
//! `MW_SCALE_READY_TIMEOUT` (seconds, 120), `MW_BENCH_NODE` (the node binary, default
//! `target/release/millwright`). The soft limit of open files is raised to the hard limit
//! before the nodes start (they inherit it); both are printed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use millwright_benches::node::{self, Node};
use millwright_benches::pause;
use millwright_benches::process::{self, Sample};
use millwright_bus::Bus;
use millwright_plugin_sdk::event::Envelope;

/// Set (to N) in the environment of the re-executed bench binary that acts as the baseline.
const BASELINE_CHILD: &str = "MW_SCALE_BASELINE_CHILD";

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Busy,
    Idle,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Busy => "1 ev/s",
            Load::Idle => "idle",
        }
    }

    /// The sim plugin's config (an inline table's contents).
    fn sim_config(self) -> &'static str {
        match self {
            Load::Busy => "interval = \"1s\", tags = [\"a\"]",
            Load::Idle => "interval = \"24h\", tags = [\"a\"]",
        }
    }
}

#[derive(Debug)]
struct Settings {
    ns: Vec<usize>,
    loads: Vec<Load>,
    warmup: Duration,
    window: Duration,
    ready_timeout: Duration,
    stop_timeout: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let secs = |name: &str, default: f64| {
            let v = std::env::var(name).ok().map(|v| {
                v.trim_end_matches('s')
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number of seconds"))
            });
            Duration::from_secs_f64(v.unwrap_or(default))
        };
        let ns = std::env::var("MW_SCALE_N")
            .unwrap_or_else(|_| "10,100,1000,10000".to_owned())
            .split(',')
            .map(|n| {
                n.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("MW_SCALE_N: {n:?} is not a number"))
            })
            .collect();
        let loads = std::env::var("MW_SCALE_LOADS")
            .unwrap_or_else(|_| "busy,idle".to_owned())
            .split(',')
            .map(|l| match l.trim() {
                "busy" => Load::Busy,
                "idle" => Load::Idle,
                other => panic!("MW_SCALE_LOADS: {other:?} (expected busy, idle)"),
            })
            .collect();
        Settings {
            ns,
            loads,
            warmup: secs("MW_SCALE_WARMUP", 5.0),
            window: secs("MW_SCALE_WINDOW", 20.0),
            ready_timeout: secs("MW_SCALE_READY_TIMEOUT", 120.0),
            stop_timeout: Duration::from_secs(60),
        }
    }
}

/// What one window of a process measured.
#[derive(Debug, Clone, Copy)]
struct Window {
    threads: u64,
    rss: u64,
    cores: f64,
    events_per_s: f64,
    /// CPU per event, µs (`None` without events).
    cpu_per_event: Option<f64>,
}

impl Window {
    fn between(start: &Sample, end: &Sample, events: u64) -> Window {
        let wall = end.at.duration_since(start.at).as_secs_f64();
        let cpu = end.cpu.saturating_sub(start.cpu).as_secs_f64();
        Window {
            threads: end.threads,
            rss: end.rss,
            cores: start.cores_until(end),
            events_per_s: events as f64 / wall,
            cpu_per_event: (events > 0).then(|| cpu * 1e6 / events as f64),
        }
    }
}

/// One node measured.
#[derive(Debug)]
struct Row {
    n: usize,
    load: Load,
    window: Option<Window>,
    open_files: Option<usize>,
    ready: Option<Duration>,
    stop: Option<Duration>,
    baseline: Option<Window>,
    /// What went wrong, if anything.
    note: String,
}

fn main() {
    if let Ok(n) = std::env::var(BASELINE_CHILD) {
        baseline_child(n.parse().expect("the baseline's N"));
        return;
    }
    let settings = Settings::from_env();
    node::binary();
    let limits = process::raise_open_files_limit();
    eprintln!(
        "scale: open files limit (soft, hard) for the nodes: {limits:?}; {} clock ticks/s; \
         warm-up {:?}, window {:?}",
        process::clock_ticks(),
        settings.warmup,
        settings.window
    );
    let base = measure_node(&settings, 0, Load::Idle);
    eprintln!("scale: {}", describe(&base));
    let base_rss = base.window.map(|w| w.rss);
    let mut rows = Vec::new();
    for &n in &settings.ns {
        for &load in &settings.loads {
            let mut row = measure_node(&settings, n, load);
            if load == Load::Busy {
                row.baseline = Some(measure_baseline(&settings, n));
            }
            eprintln!("scale: {}", describe(&row));
            rows.push(row);
        }
    }
    print_table(&base, &rows, base_rss);
    print_targets(&rows, base_rss);
}

/// Starts a node with `n` sims at `load`, measures it, stops it.
fn measure_node(settings: &Settings, n: usize, load: Load) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut extra = String::with_capacity(n * 96);
    for i in 0..n {
        extra.push_str(&node::sim(&format!("s{i}"), "", load.sim_config()));
    }
    let mut row = Row {
        n,
        load,
        window: None,
        open_files: None,
        ready: None,
        stop: None,
        baseline: None,
        note: String::new(),
    };
    let mut node = Node::start(dir.path(), "scale", &extra);
    row.ready = node.wait_ready(settings.ready_timeout);
    if row.ready.is_none() {
        let running = node.is_running();
        row.open_files = process::open_files(node.pid()).ok();
        let threads = Sample::read(node.pid()).map(|s| s.threads).ok();
        row.note = if running {
            format!(
                "not ready within {:?} (threads {threads:?}, open files {:?})",
                settings.ready_timeout, row.open_files
            )
        } else {
            "exited before ready".to_owned()
        };
        eprintln!(
            "scale: N = {n} {}: {}; the node's last lines:\n{}",
            load.name(),
            row.note,
            node.log_tail(15)
        );
        node.kill();
        return row;
    }
    pause(settings.warmup);
    let measured = (|| -> std::io::Result<Window> {
        let s0 = Sample::read(node.pid())?;
        let e0 = node.events_moved()?;
        pause(settings.window);
        let s1 = Sample::read(node.pid())?;
        let e1 = node.events_moved()?;
        Ok(Window::between(&s0, &s1, e1.saturating_sub(e0)))
    })();
    match measured {
        Ok(w) => row.window = Some(w),
        Err(e) => {
            row.note = format!("not measured: {e}");
            eprintln!(
                "scale: N = {n} {}: {}; the node's last lines:\n{}",
                load.name(),
                row.note,
                node.log_tail(15)
            );
        }
    }
    row.open_files = process::open_files(node.pid()).ok();
    match node.stop(settings.stop_timeout) {
        Some((took, status)) => {
            row.stop = Some(took);
            if !status.success() {
                row.note.push_str(&format!(" exit after SIGTERM: {status}"));
            }
        }
        None => row
            .note
            .push_str(&format!(" not stopped within {:?}", settings.stop_timeout)),
    }
    row
}

/// Runs the baseline with `n` tasks as a child process and measures it as a node is.
fn measure_baseline(settings: &Settings, n: usize) -> Window {
    let mut child = Baseline::start(n);
    pause(settings.warmup);
    let s0 = Sample::read(child.pid()).expect("the baseline runs");
    let e0 = child.received();
    pause(settings.window);
    let s1 = Sample::read(child.pid()).expect("the baseline runs");
    let e1 = child.received();
    Window::between(&s0, &s1, e1.saturating_sub(e0))
}

/// The baseline as a child process: it answers each line on its stdin with the number of
/// events its subscriber received so far.
struct Baseline {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Baseline {
    fn start(n: usize) -> Baseline {
        let mut child = Command::new(std::env::current_exe().expect("the bench's own path"))
            .env(BASELINE_CHILD, n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the baseline starts");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Baseline {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn received(&mut self) -> u64 {
        self.stdin.write_all(b"\n").expect("the baseline reads");
        self.stdin.flush().expect("the baseline reads");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the baseline answers");
        line.trim().parse().expect("a count")
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The baseline process: `n` tasks, each publishing one event a second through the embedded
/// bus, one subscriber receiving them all.
fn baseline_child(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let bus = Bus::embedded();
        let mut sub = bus.subscribe("mw.ev.>").await.expect("subscribe");
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        tokio::spawn(async move {
            while sub.next().await.is_some() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        for i in 0..n {
            tokio::spawn(machine(bus.clone(), i, n));
        }
        // Ends when the bench closes stdin (or kills the process).
        let _ = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            for line in std::io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
                let _ = writeln!(out, "{}", received.load(Ordering::Relaxed));
                let _ = out.flush();
            }
        })
        .await;
    });
}

/// One simulated machine of the baseline: every second (the first after `i / n` of a second,
/// so that the machines spread over the second as a node's do) one value, one envelope, one
/// publish.
async fn machine(bus: Bus, i: usize, n: usize) {
    let name = format!("s{i}");
    let subject = format!("mw.ev.{name}.a");
    let started = std::time::Instant::now();
    let offset = Duration::from_secs(1).mul_f64(i as f64 / n.max(1) as f64);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + offset, Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0u64.. {
        tick.tick().await;
        let value =
            millwright_plugin_sim::values::sample(&name, "a", started.elapsed().as_secs_f64(), seq);
        let env = Envelope::new(name.as_str(), subject.as_str(), value.into());
        bus.publish_envelope(&env).await.expect("a valid subject");
    }
}

fn describe(row: &Row) -> String {
    format!(
        "N = {} {}: ready {:?}, {:?}, baseline {:?}, open files {:?}, stop {:?} {}",
        row.n,
        row.load.name(),
        row.ready,
        row.window,
        row.baseline,
        row.open_files,
        row.stop,
        row.note
    )
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("–".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn rss_per_instance(row: &Row, base_rss: Option<u64>) -> Option<f64> {
    let (w, base) = (row.window?, base_rss?);
    (row.n > 0).then(|| (w.rss as f64 - base as f64) / row.n as f64)
}

fn ratio(row: &Row) -> Option<f64> {
    Some(row.window?.cpu_per_event? / row.baseline?.cpu_per_event?)
}

/// `f(v)`, or a dash for no value.
fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("–".to_owned(), f)
}

fn print_table(base: &Row, rows: &[Row], base_rss: Option<u64>) {
    println!("\n### scale: one node, N in-process sim connectors, embedded bus\n");
    println!(
        "| N | load | threads | RSS | RSS/instance | CPU (cores) | events/s | CPU/event | \
         baseline CPU/event | ratio | ready s | stop s | open files |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in std::iter::once(base).chain(rows) {
        let w = row.window;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |{}",
            row.n,
            if row.n == 0 { "none" } else { row.load.name() },
            opt(w.map(|w| w.threads as f64), |t| format!("{t:.0}")),
            opt(w.map(|w| w.rss as f64), |r| format!("{:.1} MiB", r / MIB)),
            opt(rss_per_instance(row, base_rss), |r| format!(
                "{:.1} KiB",
                r / KIB
            )),
            opt(w.map(|w| w.cores), |c| format!("{c:.3}")),
            opt(w.map(|w| w.events_per_s), |e| format!("{e:.0}")),
            opt(w.and_then(|w| w.cpu_per_event), |u| format!("{u:.0} µs")),
            opt(row.baseline.and_then(|b| b.cpu_per_event), |u| format!(
                "{u:.1} µs"
            )),
            opt(ratio(row), |r| format!("{r:.1}x")),
            secs(row.ready),
            secs(row.stop),
            row.open_files.map_or("–".to_owned(), |f| f.to_string()),
            if row.note.is_empty() {
                String::new()
            } else {
                format!(" {}", row.note.trim())
            }
        );
    }
    let baselines: Vec<_> = rows
        .iter()
        .filter_map(|r| Some((r.n, r.baseline?)))
        .collect();
    if !baselines.is_empty() {
        println!(
            "\nBaseline (plain tokio, one task per instance): N, threads, RSS, CPU (cores), events/s"
        );
        for (n, b) in baselines {
            println!(
                "- {n}: {} threads, {:.1} MiB, {:.3} cores, {:.0} events/s",
                b.threads,
                b.rss as f64 / MIB,
                b.cores,
                b.events_per_s
            );
        }
    }
}

fn print_targets(rows: &[Row], base_rss: Option<u64>) {
    let find = |n: usize, load: Load| rows.iter().find(|r| r.n == n && r.load == load);
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "not measured",
    };
    println!("\nTargets:");
    for n in [1_000, 10_000] {
        let r = find(n, Load::Busy).and_then(ratio);
        println!(
            "- {}: CPU per event within 3x of the baseline at N = {n} ({})",
            verdict(r.map(|r| r <= 3.0)),
            r.map_or("–".to_owned(), |r| format!("{r:.1}x"))
        );
    }
    let idle = find(10_000, Load::Idle);
    let cores = idle.and_then(|r| r.window).map(|w| w.cores);
    println!(
        "- {}: idle CPU at N = 10,000 below 2 % of one core ({})",
        verdict(cores.map(|c| c < 0.02)),
        cores.map_or("–".to_owned(), |c| format!("{:.1} %", c * 100.0))
    );
    for load in [Load::Busy, Load::Idle] {
        let row = find(10_000, load);
        // A node that never got ready or never stopped fails the target it was run for.
        let within =
            |d: Option<Duration>| row.map(|_| d.is_some_and(|d| d <= Duration::from_secs(10)));
        println!(
            "- {}: ready within 10 s at N = 10,000, {} ({} s)",
            verdict(within(row.and_then(|r| r.ready))),
            load.name(),
            secs(row.and_then(|r| r.ready))
        );
        println!(
            "- {}: stopped within 10 s at N = 10,000, {} ({} s)",
            verdict(within(row.and_then(|r| r.stop))),
            load.name(),
            secs(row.and_then(|r| r.stop))
        );
        let threads = row.and_then(|r| r.window).map(|w| w.threads);
        println!(
            "- {}: at most 48 threads at N = 10,000, {} ({})",
            verdict(threads.map(|t| t <= 48)),
            load.name(),
            threads.map_or("–".to_owned(), |t| t.to_string())
        );
    }
    let per = idle.and_then(|r| rss_per_instance(r, base_rss));
    println!(
        "- {}: RSS per idle instance at most 32 KiB at N = 10,000 ({})",
        verdict(per.map(|p| p <= 32.0 * KIB)),
        per.map_or("–".to_owned(), |p| format!("{:.1} KiB", p / KIB))
    );
}
