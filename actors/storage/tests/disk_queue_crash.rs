//! Crash test of the disk queue: a writer process is SIGKILLed in the middle of its append loop,
//! and every record whose append had returned is recovered, in order, with nothing acknowledged
//! coming back.
//!
//! The test binary re-executes itself as the writer (`MW_DISK_QUEUE_CRASH_DIR` set): the child
//! appends records and reports on stdout each append that returned `Ok`, and each
//! acknowledgement before (`ack-begin`) and after (`ack-done`) it happens. The parent kills it
//! after a number of reports, reads what the pipe still holds, reopens the queue and checks.
//! Three rounds run on the same directory, so recovery after a crash is itself crashed into.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use millwright_storage::disk_queue::{DiskQueue, DiskQueueOptions, SyncPolicy};

const CHILD_ENV: &str = "MW_DISK_QUEUE_CRASH_DIR";
const TEST_NAME: &str = "disk_queue_keeps_every_append_that_returned_across_sigkill";

fn options() -> DiskQueueOptions {
    DiskQueueOptions {
        segment_bytes: 64 * 1024,
        max_bytes: 64 << 20,
        sync: SyncPolicy::Interval(Duration::from_millis(5)),
        name: "crash-test".to_owned(),
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let len = 50 + (seq * 131 % 700) as usize;
    let stamp = seq.to_le_bytes();
    (0..len).map(|i| stamp[i % 8] ^ (i as u8)).collect()
}

/// The writer: appends until killed (or, should the parent vanish, for at most a minute).
fn child(dir: &Path) {
    let (mut q, _) = DiskQueue::open(dir, options()).expect("child opens the queue");
    let mut out = std::io::stdout().lock();
    writeln!(out, "@dq start {}", q.next_seq()).unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    let mut appended = 0u64;
    while started.elapsed() < Duration::from_secs(60) {
        let seq = q.next_seq();
        let got = q.append(&payload(seq)).expect("append");
        assert_eq!(got, seq);
        writeln!(out, "@dq appended {seq}").unwrap();
        out.flush().unwrap();
        appended += 1;
        if appended.is_multiple_of(200) {
            let through = seq - 150;
            q.peek(30).expect("peek");
            writeln!(out, "@dq ack-begin {through}").unwrap();
            out.flush().unwrap();
            q.ack_through(through).expect("ack");
            writeln!(out, "@dq ack-done {through}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[derive(Debug, Default)]
struct Reported {
    start: Option<u64>,
    appended: Vec<u64>,
    ack_begin: u64,
    ack_done: u64,
}

fn run_round(dir: &Path, kill_after: usize, reported: &mut Reported) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("re-execute the test binary as the writer");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = 0;
    let mut killed = false;
    reported.start = None;
    // Read until the kill point, kill, then read what the pipe still holds (EOF after the kill).
    for line in lines {
        let line = line.unwrap();
        // libtest may print "test NAME ... " on the same line as the writer's first report.
        let Some(at) = line.find("@dq ") else {
            continue;
        };
        let mut words = line[at + 4..].split_whitespace();
        let (Some(kind), Some(n)) = (
            words.next(),
            words.next().and_then(|w| w.parse::<u64>().ok()),
        ) else {
            continue;
        };
        match kind {
            "start" => reported.start = Some(n),
            "appended" => {
                reported.appended.push(n);
                seen += 1;
            }
            "ack-begin" => reported.ack_begin = n,
            "ack-done" => reported.ack_done = n,
            _ => continue,
        }
        if seen == kill_after && !killed {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the writer exited on its own ({status}) after {seen} appends"
    );
    assert!(!status.success());
}

#[test]
fn disk_queue_keeps_every_append_that_returned_across_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("queue");
    let mut reported = Reported::default();
    let mut expected_next = 1;
    for (round, kill_after) in [700usize, 2500, 1300].into_iter().enumerate() {
        let before = reported.appended.len();
        run_round(&dir, kill_after, &mut reported);
        assert_eq!(
            reported.start,
            Some(expected_next),
            "round {round}: the writer continues the sequence"
        );
        assert!(reported.appended.len() - before >= kill_after);

        let (mut q, report) = DiskQueue::open(&dir, options()).unwrap();
        assert!(report.corrupt.is_empty(), "round {round}: {report:?}");
        // SIGKILL does not tear a write that returned; at most the one in flight is cut.
        let acked = report.acked_through;
        assert!(
            (reported.ack_done..=reported.ack_begin).contains(&acked),
            "round {round}: checkpoint {acked} outside [{}, {}]",
            reported.ack_done,
            reported.ack_begin
        );
        let records = q.peek(usize::MAX).unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        let last_reported = *reported.appended.last().unwrap();
        // Exactly the unacknowledged records: contiguous from the checkpoint, and at least up
        // to the last append reported (one more may have returned without being reported).
        assert_eq!(seqs.first().copied(), Some(acked + 1), "round {round}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "round {round}: gap"
        );
        let last = *seqs.last().unwrap();
        assert!(
            last == last_reported || last == last_reported + 1,
            "round {round}: recovered through {last}, reported through {last_reported}"
        );
        for r in &records {
            assert_eq!(
                r.payload,
                payload(r.seq),
                "round {round}: payload of {}",
                r.seq
            );
        }
        for seq in reported.appended.iter().filter(|s| **s > acked) {
            assert!(
                seqs.binary_search(seq).is_ok(),
                "round {round}: {seq} was lost"
            );
        }
        expected_next = last + 1;
        assert_eq!(q.next_seq(), expected_next);
        q.close().unwrap();
    }
}
