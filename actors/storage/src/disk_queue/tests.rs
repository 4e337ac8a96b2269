//! Tests of the disk queue: FIFO, recovery, corruption, the cap, sync policies, and a model test.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// Small segments (a few records each) so that every test crosses segment boundaries.
fn opts(segment_bytes: u64, max_bytes: u64) -> DiskQueueOptions {
    DiskQueueOptions {
        segment_bytes,
        max_bytes,
        sync: SyncPolicy::Manual,
        name: "test".to_owned(),
    }
}

fn payload(seq: u64) -> Vec<u8> {
    // Variable lengths, content derived from the sequence number.
    let len = 5 + (seq * 7 % 23) as usize;
    format!("event-{seq:06}-")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

fn open(dir: &Path, o: &DiskQueueOptions) -> (DiskQueue, RecoveryReport) {
    DiskQueue::open(dir, o.clone()).unwrap()
}

fn drain_all(q: &mut DiskQueue) -> Vec<Record> {
    q.peek(usize::MAX).unwrap()
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn append_peek_ack_is_fifo_across_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(128, 1 << 20);
    let (mut q, report) = open(dir.path(), &o);
    assert!(report.is_clean());
    assert_eq!(report.recovered, 0);
    for seq in 1..=40 {
        assert_eq!(q.append(&payload(seq)).unwrap(), seq);
    }
    assert!(q.segment_count() > 5, "only {} segments", q.segment_count());
    assert_eq!(q.len(), 40);

    let mut delivered = Vec::new();
    while !q.is_empty() {
        let batch = q.peek(7).unwrap();
        assert!(!batch.is_empty() && batch.len() <= 7);
        // Peeking again without acking gives the same batch.
        assert_eq!(q.peek(7).unwrap(), batch);
        q.ack_through(batch.last().unwrap().seq).unwrap();
        delivered.extend(batch);
    }
    assert_eq!(seqs(&delivered), (1..=40).collect::<Vec<_>>());
    for r in &delivered {
        assert_eq!(r.payload, payload(r.seq));
    }
    // Consumed segments are deleted; the tail stays.
    assert_eq!(q.segment_count(), 1);
    assert_eq!(segment_paths(dir.path()).len(), 1);
    assert!(q.peek(10).unwrap().is_empty());
}

#[test]
fn new_appends_queue_behind_records_being_drained() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), &opts(128, 1 << 20));
    q.append_batch(&[b"a", b"b", b"c"]).unwrap();
    let batch = q.peek(2).unwrap();
    q.append(b"d").unwrap();
    q.ack_through(batch[1].seq).unwrap();
    let rest = drain_all(&mut q);
    assert_eq!(
        rest.iter()
            .map(|r| r.payload.as_slice())
            .collect::<Vec<_>>(),
        [b"c", b"d"]
    );
}

#[test]
fn a_batch_spans_segments_and_gets_consecutive_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), &opts(100, 1 << 20));
    let payloads: Vec<Vec<u8>> = (1..=30).map(payload).collect();
    assert_eq!(q.append_batch(&payloads).unwrap(), 1..31);
    assert_eq!(q.append_batch::<&[u8]>(&[]).unwrap(), 31..31);
    assert!(q.segment_count() > 3);
    let all = drain_all(&mut q);
    assert_eq!(
        all.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
        payloads
    );
    // Each segment stays within its size.
    for path in segment_paths(dir.path()) {
        assert!(std::fs::metadata(&path).unwrap().len() <= 100, "{path:?}");
    }
}

#[test]
fn reopen_recovers_every_unacked_record_in_order_and_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(128, 1 << 20);
    {
        let (mut q, _) = open(dir.path(), &o);
        for seq in 1..=25 {
            q.append(&payload(seq)).unwrap();
        }
        let batch = q.peek(10).unwrap();
        q.ack_through(batch[9].seq).unwrap(); // acked: 1..=10
        q.peek(5).unwrap(); // peeked, not acked: 11..=15 must come back
        q.close().unwrap();
    }
    let (mut q, report) = open(dir.path(), &o);
    assert!(report.is_clean());
    assert_eq!(report.recovered, 15);
    assert_eq!(report.acked_through, 10);
    assert_eq!(q.len(), 15);
    assert_eq!(q.next_seq(), 26);
    let all = drain_all(&mut q);
    assert_eq!(seqs(&all), (11..=25).collect::<Vec<_>>());
    assert!(all.iter().all(|r| r.payload == payload(r.seq)));
    assert_eq!(q.append(b"next").unwrap(), 26);
}

#[test]
fn acked_records_do_not_come_back_and_an_emptied_queue_keeps_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(128, 1 << 20);
    {
        let (mut q, _) = open(dir.path(), &o);
        for seq in 1..=20 {
            q.append(&payload(seq)).unwrap();
        }
        // Acknowledging beyond the end acknowledges everything appended.
        q.ack_through(u64::MAX).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.acked_through(), 20);
    }
    let (mut q, report) = open(dir.path(), &o);
    assert_eq!(report.recovered, 0);
    assert!(q.peek(100).unwrap().is_empty());
    assert_eq!(q.append(b"x").unwrap(), 21);
    drop(q);
    let (mut q, _) = open(dir.path(), &o);
    assert_eq!(seqs(&drain_all(&mut q)), [21]);
}

#[test]
fn acking_an_old_sequence_number_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), &opts(128, 1 << 20));
    q.append_batch(&[b"a", b"b", b"c"]).unwrap();
    q.ack_through(2).unwrap();
    q.ack_through(1).unwrap();
    q.ack_through(0).unwrap();
    assert_eq!(seqs(&drain_all(&mut q)), [3]);
    assert_eq!(q.acked_through(), 2);
}

/// Appends `n` records, closes, and returns the segment files.
fn write_log(dir: &Path, o: &DiskQueueOptions, n: u64) -> Vec<PathBuf> {
    let (mut q, _) = open(dir, o);
    for seq in 1..=n {
        q.append(&payload(seq)).unwrap();
    }
    q.close().unwrap();
    segment_paths(dir)
}

/// Byte offsets at which the records of a segment start.
fn record_offsets(path: &Path) -> Vec<usize> {
    let data = std::fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut off = 0;
    while off < data.len() {
        offsets.push(off);
        off = record::parse(&data, off, u64::MAX, |_| true).unwrap().end();
    }
    offsets
}

#[test]
fn a_torn_tail_is_reported_quarantined_and_everything_before_it_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(256, 1 << 20);
    let segs = write_log(dir.path(), &o, 30);
    let tail = segs.last().unwrap();
    let offsets = record_offsets(tail);
    assert!(offsets.len() >= 2);
    let last_start = *offsets.last().unwrap();
    let len = std::fs::metadata(tail).unwrap().len();
    // Cut the last record in the middle of its payload, as power loss can.
    let cut = last_start as u64 + 23;
    let torn_bytes = std::fs::read(tail).unwrap()[last_start..cut as usize].to_vec();
    std::fs::OpenOptions::new()
        .write(true)
        .open(tail)
        .unwrap()
        .set_len(cut)
        .unwrap();
    assert!(cut < len);

    let (mut q, report) = open(dir.path(), &o);
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    assert_eq!(torn.offset, last_start as u64);
    assert_eq!(torn.len, 23);
    assert_eq!(report.torn_tail_bytes(), 23);
    assert!(
        matches!(torn.reason, CorruptReason::Truncated { .. }),
        "{:?}",
        torn.reason
    );
    assert_eq!(std::fs::read(&torn.quarantined_to).unwrap(), torn_bytes);
    assert_eq!(report.recovered, 29);
    let all = drain_all(&mut q);
    assert_eq!(seqs(&all), (1..=29).collect::<Vec<_>>());
    assert!(all.iter().all(|r| r.payload == payload(r.seq)));
    // The lost record's number is reused: it was never acknowledged to anyone.
    assert_eq!(q.next_seq(), 30);
    // The file was cut back: appending continues cleanly and a reopen is clean.
    q.append(b"after").unwrap();
    drop(q);
    let (mut q, report) = open(dir.path(), &o);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(drain_all(&mut q).last().unwrap().payload, b"after");
}

/// Flips one byte at `offset_in_record` of the `index`-th record of the middle segment and checks
/// that exactly that record is quarantined and every other one recovered.
fn flip_and_recover(offset_in_record: usize) {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(256, 1 << 20);
    let n = 40;
    let segs = write_log(dir.path(), &o, n);
    assert!(segs.len() >= 3);
    let victim_seg = &segs[1];
    let offsets = record_offsets(victim_seg);
    let index = offsets.len() / 2;
    let start = offsets[index];
    let end = offsets.get(index + 1).copied().unwrap();
    let mut data = std::fs::read(victim_seg).unwrap();
    let victim_seq = record::parse(&data, start, u64::MAX, |_| true).unwrap().seq;
    let original = data[start..end].to_vec();
    data[start + offset_in_record] ^= 0x5a;
    std::fs::write(victim_seg, &data).unwrap();

    let (mut q, report) = open(dir.path(), &o);
    assert!(report.torn_tail.is_none());
    assert_eq!(report.corrupt.len(), 1, "{:?}", report.corrupt);
    let bad = &report.corrupt[0];
    assert_eq!(&bad.segment, victim_seg);
    assert_eq!(bad.offset, start as u64);
    assert_eq!(bad.len, (end - start) as u64, "{:?}", bad.reason);
    let mut quarantined = std::fs::read(&bad.quarantined_to).unwrap();
    quarantined[offset_in_record] ^= 0x5a;
    assert_eq!(
        quarantined, original,
        "the side file holds the record's bytes as found"
    );
    assert_eq!(report.recovered, n - 1);

    let all = drain_all(&mut q);
    let expected: Vec<u64> = (1..=n).filter(|s| *s != victim_seq).collect();
    assert_eq!(seqs(&all), expected);
    assert!(all.iter().all(|r| r.payload == payload(r.seq)));
    drop(q);
    // The segment was rewritten without the bad record: the next boot is clean.
    let (_, report) = open(dir.path(), &o);
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_flipped_payload_byte_quarantines_that_record_and_keeps_its_neighbours() {
    flip_and_recover(record::HEADER_LEN + 2);
}

#[test]
fn a_corrupt_length_field_is_resynchronised_by_the_magic_marker() {
    // Byte 7 is the high byte of the length: the record claims to be ~1.5 GiB long.
    flip_and_recover(7);
}

#[test]
fn a_corrupt_magic_or_sequence_number_is_found_too() {
    flip_and_recover(0);
    flip_and_recover(9);
}

#[test]
fn garbage_in_the_middle_of_a_segment_is_one_region() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(4096, 1 << 20);
    let segs = write_log(dir.path(), &o, 10);
    assert_eq!(segs.len(), 1);
    let offsets = record_offsets(&segs[0]);
    let mut data = std::fs::read(&segs[0]).unwrap();
    // Zero records 4, 5 and 6 (seqs 4..=6 live at indices 3..=5).
    for b in &mut data[offsets[3]..offsets[6]] {
        *b = 0;
    }
    std::fs::write(&segs[0], &data).unwrap();
    let (mut q, report) = open(dir.path(), &o);
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].reason, CorruptReason::BadMagic);
    assert_eq!(report.corrupt[0].len as usize, offsets[6] - offsets[3]);
    assert_eq!(seqs(&drain_all(&mut q)), [1, 2, 3, 7, 8, 9, 10]);
}

#[test]
fn the_cap_sheds_whole_oldest_segments_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(200, 1000);
    let (mut q, _) = open(dir.path(), &o);
    let n = 200;
    for seq in 1..=n {
        q.append(&payload(seq)).unwrap();
        assert!(q.bytes() <= 1000, "{} bytes after append {seq}", q.bytes());
        let on_disk: u64 = segment_paths(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(on_disk, q.bytes());
    }
    let shed = q.shed_total();
    assert!(shed > 0);
    let left = drain_all(&mut q);
    // What is left is exactly the newest records; the shed count is exactly the rest.
    assert_eq!(left.len() as u64 + shed, n);
    assert_eq!(seqs(&left), ((shed + 1)..=n).collect::<Vec<_>>());
    assert_eq!(q.len(), left.len() as u64);
}

#[test]
fn shedding_counts_only_unacked_records_of_a_partly_consumed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(200, 400);
    let (mut q, _) = open(dir.path(), &o);
    // Fill exactly one segment and start a second.
    let mut seq = 0;
    while q.segment_count() < 2 {
        seq += 1;
        q.append(&payload(seq)).unwrap();
    }
    let first_seg_records = seq - 1;
    q.ack_through(3).unwrap();
    while q.shed_total() == 0 {
        seq += 1;
        q.append(&payload(seq)).unwrap();
    }
    assert_eq!(q.shed_total(), first_seg_records - 3);
    let left = drain_all(&mut q);
    assert_eq!(left.first().unwrap().seq, first_seg_records + 1);
    assert_eq!(left.last().unwrap().seq, seq);
    assert_eq!(q.len(), seq - first_seg_records);
}

#[test]
fn a_peeked_batch_that_was_shed_is_acked_harmlessly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), &opts(200, 400));
    q.append(&payload(1)).unwrap();
    let batch = q.peek(10).unwrap();
    let mut seq = 1;
    while q.shed_total() == 0 {
        seq += 1;
        q.append(&payload(seq)).unwrap();
    }
    let before = q.len();
    q.ack_through(batch.last().unwrap().seq).unwrap();
    assert_eq!(q.len(), before, "the shed records are gone already");
    assert!(drain_all(&mut q).iter().all(|r| r.seq > 1));
}

#[test]
fn shed_counts_are_exported_as_metrics() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = open(dir.path(), &opts(200, 400));
        for seq in 1..=40 {
            q.append(&payload(seq)).unwrap();
        }
        q.sync().unwrap();
        let values: std::collections::HashMap<String, String> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key.key().name().to_owned(), format!("{value:?}")))
            .collect();
        assert_eq!(
            values["mw_disk_queue_shed_total"],
            format!(
                "{:?}",
                metrics_util::debugging::DebugValue::Counter(q.shed_total())
            )
        );
        assert_eq!(
            values["mw_disk_queue_depth"],
            format!(
                "{:?}",
                metrics_util::debugging::DebugValue::Gauge((q.len() as f64).into())
            )
        );
        assert!(values.contains_key("mw_disk_queue_fsync_seconds"));
        assert!(q.shed_total() > 0);
    });
}

#[test]
fn oversized_records_and_bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), &opts(100, 1000));
    let err = q.append(&[0u8; 81]).unwrap_err();
    assert!(
        matches!(err, DiskQueueError::RecordTooLarge { len: 81, max: 80 }),
        "{err}"
    );
    assert_eq!(q.append(&[0u8; 80]).unwrap(), 1);
    // A batch with one oversized payload writes nothing.
    assert!(q.append_batch(&[&[1u8][..], &[0u8; 200][..]]).is_err());
    assert_eq!(q.len(), 1);

    for bad in [opts(10, 1000), opts(600, 1000)] {
        let err = DiskQueue::open(dir.path().join("x"), bad).unwrap_err();
        assert!(matches!(err, DiskQueueError::InvalidOptions(_)), "{err}");
    }
    let mut zero = opts(100, 1000);
    zero.sync = SyncPolicy::Interval(Duration::ZERO);
    assert!(zero.validate().is_err());
    assert!(DiskQueueOptions::default().validate().is_ok());
}

#[test]
fn a_record_larger_than_the_read_chunk_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(4 << 20, 16 << 20);
    let (mut q, _) = open(dir.path(), &o);
    let big: Vec<u8> = (0..(READ_CHUNK * 3 + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    q.append(b"small").unwrap();
    q.append(&big).unwrap();
    q.append(b"after").unwrap();
    let all = drain_all(&mut q);
    assert_eq!(all[1].payload, big);
    assert_eq!(all[2].payload, b"after");
    q.ack_through(2).unwrap();
    assert_eq!(seqs(&q.peek(5).unwrap()), [3]);
}

#[test]
fn draining_through_many_read_chunks_while_appending_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), &opts(4 << 20, 16 << 20));
    let big = |seq: u64| -> Vec<u8> { payload(seq).repeat(20) };
    let mut appended = 0u64;
    for _ in 0..3000 {
        appended += 1;
        q.append(&big(appended)).unwrap();
    }
    assert!(q.bytes() > 3 * READ_CHUNK as u64);
    let mut expected = 1u64;
    while !q.is_empty() {
        let batch = q.peek(333).unwrap();
        for r in &batch {
            assert_eq!((r.seq, &r.payload), (expected, &big(expected)));
            expected += 1;
        }
        q.ack_through(batch.last().unwrap().seq).unwrap();
        if appended < 4000 {
            for _ in 0..100 {
                appended += 1;
                q.append(&big(appended)).unwrap();
            }
        }
    }
    assert_eq!(expected, appended + 1);
}

#[test]
fn interval_policy_syncs_once_the_deadline_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(4096, 1 << 20);
    o.sync = SyncPolicy::Interval(Duration::from_secs(3600));
    let (mut q, _) = open(dir.path(), &o);
    assert_eq!(q.sync_deadline(), None);
    let before = Instant::now();
    q.append(b"a").unwrap();
    let deadline = q.sync_deadline().expect("unsynced data has a deadline");
    assert!(deadline >= before + Duration::from_secs(3600));
    q.append(b"b").unwrap();
    assert_eq!(
        q.sync_deadline(),
        Some(deadline),
        "the deadline follows the oldest write"
    );
    q.maybe_sync(deadline - Duration::from_secs(1)).unwrap();
    assert_eq!(q.sync_deadline(), Some(deadline));
    q.maybe_sync(deadline).unwrap();
    assert_eq!(q.sync_deadline(), None);
    q.ack_through(1).unwrap();
    assert!(
        q.sync_deadline().is_some(),
        "a checkpoint write is unsynced data too"
    );
    q.sync().unwrap();
    assert_eq!(q.sync_deadline(), None);
}

#[test]
fn always_policy_leaves_nothing_unsynced() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(4096, 1 << 20);
    o.sync = SyncPolicy::Always;
    let (mut q, _) = open(dir.path(), &o);
    q.append(b"a").unwrap();
    assert!(!q.tail_dirty && q.dirty_since.is_none());
    q.ack_through(1).unwrap();
    assert!(!q.checkpoint_dirty && q.dirty_since.is_none());
}

#[test]
fn leftover_rewrite_files_and_fully_consumed_segments_are_cleaned_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(128, 1 << 20);
    let segs = write_log(dir.path(), &o, 30);
    let leftover = dir
        .path()
        .join(format!("{}{}", segment::file_name(1), recovery::TMP_SUFFIX));
    std::fs::write(&leftover, b"half a rewrite").unwrap();
    // Acknowledge through the end of the second segment by writing the checkpoint alone, as a
    // crash between the checkpoint write and the segment deletion leaves it.
    let second_last = {
        let data = std::fs::read(&segs[1]).unwrap();
        let last = *record_offsets(&segs[1]).last().unwrap();
        record::parse(&data, last, u64::MAX, |_| true).unwrap().seq
    };
    {
        let (mut cp, _) = checkpoint::Checkpoint::open(dir.path()).unwrap();
        cp.write(second_last).unwrap();
    }
    let (mut q, report) = open(dir.path(), &o);
    assert!(report.is_clean());
    assert!(!leftover.exists());
    assert!(!segs[0].exists() && !segs[1].exists());
    assert_eq!(
        seqs(&drain_all(&mut q)),
        ((second_last + 1)..=30).collect::<Vec<_>>()
    );
}

#[test]
fn a_record_changed_on_disk_after_boot_is_an_error_not_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(4096, 1 << 20);
    let (mut q, _) = open(dir.path(), &o);
    q.append_batch(&[b"one", b"two"]).unwrap();
    let seg = segment_paths(dir.path()).remove(0);
    let mut data = std::fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 1] ^= 1;
    std::fs::write(&seg, &data).unwrap();
    let err = q.peek(10).unwrap_err();
    assert!(matches!(err, DiskQueueError::Corrupt { .. }), "{err}");
    drop(q);
    let (mut q, report) = open(dir.path(), &o);
    assert!(report.torn_tail.is_some());
    assert_eq!(seqs(&drain_all(&mut q)), [1]);
}

// ---------------------------------------------------------------------------------------------
// Model test: random operations against a VecDeque, including reopening the queue.

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    AppendBatch(Vec<usize>),
    Peek(usize),
    /// Acknowledge the `n`-th queued record (modulo the length), or beyond the end.
    Ack(usize),
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..60).prop_map(Op::Append),
        2 => prop::collection::vec(0usize..60, 0..6).prop_map(Op::AppendBatch),
        2 => (1usize..8).prop_map(Op::Peek),
        3 => (0usize..12).prop_map(Op::Ack),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

fn model_payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn run_model(ops: Vec<Op>, max_bytes: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(160, max_bytes);
    let (mut q, _) = open(dir.path(), &o);
    let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut next_seq = 1u64;
    let mut shed_seen = 0u64;
    for op in ops {
        match op {
            Op::Append(len) => {
                let p = model_payload(next_seq, len);
                prop_assert_eq!(q.append(&p).unwrap(), next_seq);
                model.push_back((next_seq, p));
                next_seq += 1;
            }
            Op::AppendBatch(lens) => {
                let payloads: Vec<Vec<u8>> = lens
                    .iter()
                    .enumerate()
                    .map(|(i, len)| model_payload(next_seq + i as u64, *len))
                    .collect();
                let range = q.append_batch(&payloads).unwrap();
                prop_assert_eq!(range.clone(), next_seq..next_seq + lens.len() as u64);
                for p in payloads {
                    model.push_back((next_seq, p));
                    next_seq += 1;
                }
            }
            Op::Peek(max) => {
                let got = q.peek(max).unwrap();
                let want: Vec<_> = model.iter().take(max).cloned().collect();
                let got: Vec<_> = got.into_iter().map(|r| (r.seq, r.payload)).collect();
                prop_assert_eq!(got, want);
            }
            Op::Ack(n) => {
                let through = model.get(n).map_or(next_seq + 5, |(s, _)| *s);
                q.ack_through(through).unwrap();
                while model.front().is_some_and(|(s, _)| *s <= through) {
                    model.pop_front();
                }
            }
            Op::Sync => q.sync().unwrap(),
            Op::Reopen => {
                drop(q);
                let (reopened, report) = open(dir.path(), &o);
                prop_assert!(report.is_clean());
                prop_assert_eq!(report.recovered, model.len() as u64);
                q = reopened;
                shed_seen = 0;
            }
        }
        // Shedding removes exactly the oldest records it counts.
        let shed = q.shed_total() - shed_seen;
        for _ in 0..shed {
            model.pop_front();
        }
        shed_seen = q.shed_total();
        prop_assert!(q.bytes() <= max_bytes);
        prop_assert_eq!(q.len(), model.len() as u64);
        prop_assert_eq!(q.next_seq(), next_seq);
    }
    let got: Vec<_> = drain_all(&mut q)
        .into_iter()
        .map(|r| (r.seq, r.payload))
        .collect();
    prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_queue_behaves_like_a_fifo_model(ops in prop::collection::vec(op(), 1..60)) {
        run_model(ops, 1 << 20)?;
    }

    #[test]
    fn the_queue_behaves_like_a_fifo_model_at_its_cap(ops in prop::collection::vec(op(), 1..80)) {
        run_model(ops, 480)?;
    }
}
