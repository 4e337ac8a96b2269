//! Disk queue benchmark, against raw file I/O in the same run.
//!
//! Every row pairs the queue with the cheapest code that gives the same durability:
//!
//! - *append, sync every N*: `DiskQueue::append` per record and `sync()` every N records, vs a
//!   loop of one `write(2)` per record and `fdatasync(2)` every N records on a plain file;
//! - *batch of N*: `append_batch` of N records then `sync()`, vs one `write(2)` of N records
//!   and `fdatasync(2)`;
//! - *drain*: `peek(256)` + `ack_through` until empty, vs reading the same bytes with `pread(2)`
//!   in 256 KiB chunks, handing out each 256-byte record as a slice and recording the position
//!   with a 16-byte `pwrite(2)` to a side file every 256 records (what `ack_through` persists;
//!   neither side syncs it here). The queue also parses and CRC-checks every record and copies
//!   each payload into an owned `Vec`; the baseline does none of that.
//!
//! Payloads are 256 bytes (a small serialised envelope). Each measurement is the best of five
//! runs, queue and baseline alternating. Prints a markdown table; the ratio is queue throughput
//! over baseline throughput (target >= 0.7).
//!
//! `cargo bench -p millwright-benches --bench disk_queue`; `MW_BENCH_DIR` chooses the directory
//! (default: the system temp dir; use the disk the data dir lives on).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use millwright_storage::disk_queue::{DiskQueue, DiskQueueOptions, SyncPolicy};

const PAYLOAD: usize = 256;
const RUNS: usize = 5;

fn options() -> DiskQueueOptions {
    DiskQueueOptions {
        segment_bytes: 64 << 20,
        max_bytes: 1 << 30,
        sync: SyncPolicy::Manual,
        name: "bench".to_owned(),
    }
}

struct Scratch {
    root: PathBuf,
    n: u32,
}

impl Scratch {
    fn fresh(&mut self) -> PathBuf {
        self.n += 1;
        let p = self.root.join(format!("run-{}", self.n));
        std::fs::create_dir_all(&p).expect("create bench directory");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| (0..PAYLOAD).map(|j| (i * 7 + j) as u8).collect())
        .collect()
}

fn raw_file(dir: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.log"))
        .expect("create raw file")
}

fn queue_append(dir: &Path, records: &[Vec<u8>], every: usize) -> Duration {
    let (mut q, _) = DiskQueue::open(dir, options()).expect("open queue");
    let start = Instant::now();
    for (i, p) in records.iter().enumerate() {
        q.append(p).expect("append");
        if (i + 1) % every == 0 {
            q.sync().expect("sync");
        }
    }
    q.sync().expect("sync");
    start.elapsed()
}

fn raw_append(dir: &Path, records: &[Vec<u8>], every: usize) -> Duration {
    let mut f = raw_file(dir);
    let start = Instant::now();
    for (i, p) in records.iter().enumerate() {
        f.write_all(p).expect("write");
        if (i + 1) % every == 0 {
            f.sync_data().expect("fdatasync");
        }
    }
    f.sync_data().expect("fdatasync");
    start.elapsed()
}

fn queue_batch(dir: &Path, records: &[Vec<u8>], n: usize) -> Duration {
    let (mut q, _) = DiskQueue::open(dir, options()).expect("open queue");
    let start = Instant::now();
    for batch in records.chunks(n) {
        q.append_batch(batch).expect("append_batch");
        q.sync().expect("sync");
    }
    start.elapsed()
}

fn raw_batch(dir: &Path, records: &[Vec<u8>], n: usize) -> Duration {
    let mut f = raw_file(dir);
    let mut buf = Vec::with_capacity(n * PAYLOAD);
    let start = Instant::now();
    for batch in records.chunks(n) {
        buf.clear();
        for p in batch {
            buf.extend_from_slice(p);
        }
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
    }
    start.elapsed()
}

fn queue_drain(dir: &Path, records: &[Vec<u8>]) -> Duration {
    {
        let (mut q, _) = DiskQueue::open(dir, options()).expect("open queue");
        q.append_batch(records).expect("fill");
        q.close().expect("close");
    }
    let (mut q, _) = DiskQueue::open(dir, options()).expect("reopen queue");
    let start = Instant::now();
    let mut seen = 0;
    loop {
        let batch = q.peek(256).expect("peek");
        let Some(last) = batch.last() else { break };
        seen += batch.len();
        q.ack_through(last.seq).expect("ack");
    }
    let elapsed = start.elapsed();
    assert_eq!(seen, records.len());
    elapsed
}

fn raw_drain(dir: &Path, records: &[Vec<u8>]) -> Duration {
    let mut f = raw_file(dir);
    for p in records {
        f.write_all(p).expect("fill");
    }
    f.sync_data().expect("fdatasync");
    let f = File::open(dir.join("raw.log")).expect("open raw file");
    let head = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("raw.head"))
        .expect("create raw head file");
    let ack = |seen: usize| {
        let mut slot = [0u8; 16];
        slot[..8].copy_from_slice(&(seen as u64).to_le_bytes());
        head.write_all_at(&slot, 0).expect("write head");
    };
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let (mut off, mut seen) = (0u64, 0usize);
    loop {
        let n = f.read_at(&mut buf, off).expect("read");
        if n == 0 {
            break;
        }
        off += n as u64;
        // 256 KiB is a whole number of records, so no record straddles two reads.
        for record in buf[..n].chunks(PAYLOAD) {
            std::hint::black_box(record);
            seen += 1;
            if seen % 256 == 0 {
                ack(seen);
            }
        }
    }
    if seen % 256 != 0 {
        ack(seen);
    }
    let elapsed = start.elapsed();
    assert_eq!(seen, records.len());
    elapsed
}

struct Row {
    name: String,
    records: usize,
    queue: Duration,
    raw: Duration,
}

fn measure(
    scratch: &mut Scratch,
    name: String,
    records: &[Vec<u8>],
    queue: impl Fn(&Path, &[Vec<u8>]) -> Duration,
    raw: impl Fn(&Path, &[Vec<u8>]) -> Duration,
) -> Row {
    let (mut best_q, mut best_r) = (Duration::MAX, Duration::MAX);
    for _ in 0..RUNS {
        best_r = best_r.min(raw(&scratch.fresh(), records));
        best_q = best_q.min(queue(&scratch.fresh(), records));
    }
    Row {
        name,
        records: records.len(),
        queue: best_q,
        raw: best_r,
    }
}

fn rate(records: usize, d: Duration) -> f64 {
    records as f64 / d.as_secs_f64()
}

fn main() {
    let base = std::env::var_os("MW_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let mut scratch = Scratch {
        root: base.join(format!("mw-bench-disk-queue-{}", std::process::id())),
        n: 0,
    };
    let mut rows = Vec::new();
    for (every, count) in [
        (1usize, 1_000usize),
        (16, 8_000),
        (128, 40_000),
        (1024, 200_000),
    ] {
        let records = payloads(count);
        rows.push(measure(
            &mut scratch,
            format!("append, sync every {every}"),
            &records,
            |d, r| queue_append(d, r, every),
            |d, r| raw_append(d, r, every),
        ));
    }
    for (n, count) in [(16usize, 8_000usize), (256, 100_000)] {
        let records = payloads(count);
        rows.push(measure(
            &mut scratch,
            format!("batch of {n}, one sync each"),
            &records,
            |d, r| queue_batch(d, r, n),
            |d, r| raw_batch(d, r, n),
        ));
    }
    let records = payloads(200_000);
    rows.push(measure(
        &mut scratch,
        "drain (peek 256 + ack)".to_owned(),
        &records,
        queue_drain,
        raw_drain,
    ));

    println!("Disk queue vs raw file I/O, {PAYLOAD}-byte payloads, best of {RUNS} (records/s)\n");
    println!("| workload | records | raw file | disk queue | ratio |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        let (raw, queue) = (rate(r.records, r.raw), rate(r.records, r.queue));
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |",
            r.name,
            r.records,
            raw,
            queue,
            queue / raw
        );
    }
}
