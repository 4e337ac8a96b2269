//! Boot-time recovery: scan every segment, quarantine what is invalid, rebuild the index.
//!
//! Each segment is read whole and parsed record by record (see [`record`](super::record) for the
//! frame and how a scan resynchronises after a corrupt record). An invalid stretch of bytes is
//! first copied to `quarantine/<segment>-<offset>.bad` (synced, so nothing is destroyed before its
//! copy is durable), then removed from the segment: a stretch at the very end of the log (a torn
//! tail) by truncating the file, one in the middle by rewriting the segment without it
//! (`<segment>.tmp`, synced, renamed over, directory synced). Every valid record is kept.
//!
//! Then the head is placed after the last record the checkpoint acknowledges, segments with
//! nothing left to deliver are deleted (the last one is kept: it is the tail appends go to), and
//! the next sequence number is chosen above every sequence number seen or acknowledged, so a
//! new record can never be mistaken for an acknowledged one.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::record::{self, CorruptReason};
use super::segment::{self, Segment};
use super::{BadRegion, DiskQueueError, RecoveryReport, io_err};

/// The directory, inside the queue directory, that receives invalid bytes.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// Suffix of a segment being rewritten; leftovers from an interrupted rewrite are removed.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// The queue's state as found on disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub segments: VecDeque<Segment>,
    /// Offset of the head in the front segment.
    pub head_offset: u64,
    /// Records of the front segment before the head.
    pub head_consumed: u64,
    /// Records not yet acknowledged.
    pub depth: u64,
    pub next_seq: u64,
    pub report: RecoveryReport,
}

/// One segment after its scan.
struct Scanned {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    records: u64,
    /// Records (and their bytes) with a sequence number the checkpoint acknowledges.
    consumed: u64,
    consumed_bytes: u64,
}

/// Recovers the queue in `dir` given the checkpoint's acknowledged-through sequence number.
pub(crate) fn recover(dir: &Path, acked_through: u64) -> Result<Recovered, DiskQueueError> {
    remove_leftover_tmp_files(dir)?;
    let listed = segment::list(dir).map_err(|e| io_err(dir, "list segments", e))?;
    let mut report = RecoveryReport {
        acked_through,
        ..RecoveryReport::default()
    };
    let mut scanned = Vec::with_capacity(listed.len());
    let mut last_seq = 0u64;
    for (i, (first_seq, path)) in listed.iter().enumerate() {
        let next_first = listed.get(i + 1).map(|(first, _)| *first);
        let is_last = next_first.is_none();
        let seg = scan_segment(
            dir,
            *first_seq,
            path,
            next_first,
            is_last,
            acked_through,
            &mut last_seq,
            &mut report,
        )?;
        scanned.push(seg);
    }

    // Delete what has nothing left to deliver, except the last segment (the tail).
    let mut segments = VecDeque::with_capacity(scanned.len());
    let mut removed_any = false;
    let (mut head_offset, mut head_consumed) = (0, 0);
    let count = scanned.len();
    for (i, s) in scanned.into_iter().enumerate() {
        let is_last = i + 1 == count;
        if s.consumed == s.records && !is_last {
            fs::remove_file(&s.path).map_err(|e| io_err(&s.path, "remove consumed segment", e))?;
            removed_any = true;
            continue;
        }
        if segments.is_empty() {
            head_offset = s.consumed_bytes;
            head_consumed = s.consumed;
        }
        segments.push_back(Segment {
            first_seq: s.first_seq,
            path: s.path,
            bytes: s.bytes,
            records: s.records,
        });
        report.recovered += s.records - s.consumed;
    }
    if removed_any {
        segment::sync_dir(dir).map_err(|e| io_err(dir, "fsync directory", e))?;
    }
    let last_named = segments.back().map_or(1, |s| s.first_seq);
    let next_seq = (last_seq + 1)
        .max(acked_through.saturating_add(1))
        .max(last_named);
    let depth = report.recovered;
    Ok(Recovered {
        segments,
        head_offset,
        head_consumed,
        depth,
        next_seq,
        report,
    })
}

fn remove_leftover_tmp_files(dir: &Path) -> Result<(), DiskQueueError> {
    let entries = fs::read_dir(dir).map_err(|e| io_err(dir, "list directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, "list directory", e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_suffix(TMP_SUFFIX)
            .and_then(segment::parse_name)
            .is_some()
        {
            let path = entry.path();
            fs::remove_file(&path)
                .map_err(|e| io_err(&path, "remove leftover temporary segment", e))?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn scan_segment(
    dir: &Path,
    first_seq: u64,
    path: &Path,
    next_first: Option<u64>,
    is_last: bool,
    acked_through: u64,
    last_seq: &mut u64,
    report: &mut RecoveryReport,
) -> Result<Scanned, DiskQueueError> {
    let data = fs::read(path).map_err(|e| io_err(path, "read segment", e))?;
    let max_payload = u64::from(u32::MAX);
    let mut bad: Vec<(Range<usize>, CorruptReason)> = Vec::new();
    let (mut records, mut consumed, mut consumed_bytes) = (0u64, 0u64, 0u64);
    let mut off = 0usize;
    while off < data.len() {
        let floor = *last_seq;
        let seq_ok = |s: u64| s > floor && s >= first_seq && next_first.is_none_or(|n| s < n);
        match record::parse(&data, off, max_payload, seq_ok) {
            Ok(frame) => {
                records += 1;
                *last_seq = frame.seq;
                if frame.seq <= acked_through {
                    consumed += 1;
                    consumed_bytes += (frame.end() - off) as u64;
                }
                off = frame.end();
            }
            Err(reason) => {
                let next = record::resync(&data, off, max_payload, seq_ok).unwrap_or(data.len());
                bad.push((off..next, reason));
                off = next;
            }
        }
    }
    let bad_bytes: usize = bad.iter().map(|(r, _)| r.len()).sum();
    if !bad.is_empty() {
        repair(dir, first_seq, path, &data, &bad, is_last, report)?;
    }
    Ok(Scanned {
        first_seq,
        path: path.to_path_buf(),
        bytes: (data.len() - bad_bytes) as u64,
        records,
        consumed,
        consumed_bytes,
    })
}

/// Quarantines the bad regions of one segment, then removes them from it.
fn repair(
    dir: &Path,
    first_seq: u64,
    path: &Path,
    data: &[u8],
    bad: &[(Range<usize>, CorruptReason)],
    is_last: bool,
    report: &mut RecoveryReport,
) -> Result<(), DiskQueueError> {
    let qdir = dir.join(QUARANTINE_DIR);
    if !qdir.is_dir() {
        fs::create_dir_all(&qdir).map_err(|e| io_err(&qdir, "create quarantine directory", e))?;
        segment::sync_dir(dir).map_err(|e| io_err(dir, "fsync directory", e))?;
    }
    for (range, reason) in bad {
        let qpath = qdir.join(format!("{first_seq:020}-{}.bad", range.start));
        let mut f =
            File::create(&qpath).map_err(|e| io_err(&qpath, "create quarantine file", e))?;
        f.write_all(&data[range.clone()])
            .map_err(|e| io_err(&qpath, "write quarantine file", e))?;
        f.sync_data()
            .map_err(|e| io_err(&qpath, "fsync quarantine file", e))?;
        let region = BadRegion {
            segment: path.to_path_buf(),
            offset: range.start as u64,
            len: range.len() as u64,
            reason: reason.clone(),
            quarantined_to: qpath,
        };
        let torn = is_last && range.end == data.len();
        tracing::warn!(
            segment = %region.segment.display(),
            offset = region.offset,
            bytes = region.len,
            reason = %region.reason,
            quarantined_to = %region.quarantined_to.display(),
            "disk queue: {} quarantined, every other record kept",
            if torn { "torn tail" } else { "corrupt region" },
        );
        if torn {
            report.torn_tail = Some(region);
        } else {
            report.corrupt.push(region);
        }
    }
    segment::sync_dir(&qdir).map_err(|e| io_err(&qdir, "fsync quarantine directory", e))?;

    if let [(range, _)] = bad
        && range.end == data.len()
    {
        // Only a bad end: cut it off.
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, "open segment", e))?;
        f.set_len(range.start as u64)
            .map_err(|e| io_err(path, "truncate segment", e))?;
        f.sync_all().map_err(|e| io_err(path, "fsync segment", e))?;
        return Ok(());
    }
    let tmp = path.with_extension(format!("seg{TMP_SUFFIX}"));
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, "create segment rewrite", e))?;
    let mut at = 0;
    for (range, _) in bad {
        f.write_all(&data[at..range.start])
            .map_err(|e| io_err(&tmp, "write segment rewrite", e))?;
        at = range.end;
    }
    f.write_all(&data[at..])
        .map_err(|e| io_err(&tmp, "write segment rewrite", e))?;
    f.sync_all()
        .map_err(|e| io_err(&tmp, "fsync segment rewrite", e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, "replace segment with its rewrite", e))?;
    segment::sync_dir(dir).map_err(|e| io_err(dir, "fsync directory", e))?;
    Ok(())
}
