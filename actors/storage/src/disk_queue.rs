//! The broker's disk queue: a crash-safe, segmented, append-only log of opaque records.
//!
//! The broker appends an event here when it cannot hand it to NATS, and drains the queue FIFO
//! when NATS is back. Records are opaque bytes (the broker stores serialised envelopes), each
//! given a sequence number that increases by one per record and keeps increasing across
//! restarts.
//!
//! # Layout
//!
//! ```text
//! <dir>/00000000000000000001.seg   segments, named after the first sequence number they hold
//! <dir>/00000000000000004097.seg   (the last one is the tail, the only one appended to)
//! <dir>/head                       checkpoint: acknowledged through sequence number N
//! <dir>/quarantine/*.bad           invalid bytes found at boot, kept for an operator
//! ```
//!
//! Every record carries a magic marker, its length, its sequence number and a CRC32C (see
//! `record.rs`). The checkpoint is two checksummed slots written alternately (see
//! `checkpoint.rs`).
//!
//! # Durability
//!
//! - [`append`](DiskQueue::append) returns once `write(2)` has returned: the record is in the
//!   kernel's page cache and survives SIGKILL (or a panic) of the process.
//! - Power-loss safety comes from `fdatasync(2)`, batched by the [`SyncPolicy`] (group commit):
//!   [`SyncPolicy::Always`] syncs before every append returns; [`SyncPolicy::Interval`] syncs
//!   at most that long after the first unsynced write, when the next write happens or when the
//!   owner calls [`maybe_sync`](DiskQueue::maybe_sync) at [`sync_deadline`](DiskQueue::sync_deadline);
//!   [`SyncPolicy::Manual`] leaves it to [`sync`](DiskQueue::sync).
//! - A segment is `fdatasync`ed before the next one is created, and the directory is `fsync`ed
//!   after a segment is created or deleted, so the log on disk is always a prefix of what was
//!   written: power loss can cut the end of the tail, never a hole in the middle.
//! - A failed `fdatasync` is reported, never retried into a false success: as PostgreSQL learnt
//!   (2018, "fsyncgate"), the kernel may have dropped the dirty pages, so the records written
//!   since the last successful sync must be treated as not power-loss safe.
//!
//! # Consuming
//!
//! [`peek`](DiskQueue::peek) reads a batch from the head without moving it;
//! [`ack_through`](DiskQueue::ack_through) moves the head past a sequence number by writing the
//! checkpoint, and deletes segments with nothing left to deliver. A record peeked but not
//! acknowledged before a crash is delivered again after it (at-least-once); consumers
//! de-duplicate (the broker uses the envelope id as NATS' `Nats-Msg-Id`).
//!
//! # The size cap
//!
//! The segment files never exceed [`DiskQueueOptions::max_bytes`] together. When an append
//! would cross it, the oldest segment is deleted whole (the tail never is), its unacknowledged
//! records are added to [`shed_total`](DiskQueue::shed_total) and the
//! `mw_disk_queue_shed_total` counter, and a warning names how many records and bytes went.
//! Shedding is exact (the counter equals the records dropped) and coarse: one segment at a
//! time, so [`DiskQueueOptions::segment_bytes`] is also the shedding granularity.
//! The checkpoint and quarantine files are not counted.
//!
//! # Boot
//!
//! [`DiskQueue::open`] scans every segment (see `recovery.rs`): a torn tail or a corrupt record
//! is reported in the [`RecoveryReport`], logged, copied to `quarantine/`, and removed from the
//! log; every other record is recovered with its sequence number.
//!
//! # Blocking
//!
//! The API is synchronous and does file I/O. Call it from a thread that may block
//! (`tokio::task::spawn_blocking`, `block_in_place`, or a dedicated thread), never from an async
//! task directly. Which calls may wait for the disk:
//!
//! | call | `write`/`pread` | `fdatasync` / directory `fsync` |
//! |---|---|---|
//! | `open` | reads every segment | when it repairs, deletes or creates files |
//! | `append`, `append_batch` | one `write(2)` per segment touched | `Always`; `Interval` once due; creating a segment; shedding |
//! | `peek` | `pread(2)` | never |
//! | `ack_through` | one 16-byte `pwrite(2)` | `Always`; `Interval` once due; deleting a consumed segment |
//! | `sync`, `maybe_sync`, `close`, drop | | yes, if anything is unsynced |
//!
//! One process owns a queue directory at a time (the runtime's single-instance lock on the data
//! dir guarantees it); the queue does not lock it itself.

mod checkpoint;
mod record;
mod recovery;
mod segment;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use checkpoint::Checkpoint;
pub use record::CorruptReason;
use segment::Segment;

/// Bytes read from a segment at a time by [`DiskQueue::peek`].
const READ_CHUNK: usize = 256 * 1024;

/// When the queue `fdatasync`s its writes (group commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Before every append and acknowledgement returns: power-loss safe, one sync per call.
    Always,
    /// At most this long after the first unsynced write: many records per sync.
    Interval(Duration),
    /// Only when [`DiskQueue::sync`] is called (and when segments are sealed, created or deleted).
    Manual,
}

/// How a [`DiskQueue`] is laid out and synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskQueueOptions {
    /// Size at which the tail segment is sealed and a new one started; also the largest record
    /// (header included) and the granularity of shedding. Default 64 MiB.
    pub segment_bytes: u64,
    /// Hard cap on the total size of the segment files; at least twice `segment_bytes`.
    /// At the cap the oldest segment is shed. Default 1 GiB.
    pub max_bytes: u64,
    /// When writes are `fdatasync`ed. Default every 100 ms.
    pub sync: SyncPolicy,
    /// The value of the `queue` label on this queue's metrics (a fixed name, e.g. `broker`).
    pub name: String,
}

impl Default for DiskQueueOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
            name: "broker".to_owned(),
        }
    }
}

impl DiskQueueOptions {
    /// Checks the options without touching the disk.
    ///
    /// # Errors
    ///
    /// [`DiskQueueError::InvalidOptions`] when a segment cannot hold a record or the cap is
    /// smaller than two segments.
    pub fn validate(&self) -> Result<(), DiskQueueError> {
        let min_segment = record::framed_len(1);
        if self.segment_bytes < min_segment {
            return Err(DiskQueueError::InvalidOptions(format!(
                "segment_bytes is {} but a segment must hold at least one record ({min_segment} bytes)",
                self.segment_bytes
            )));
        }
        if self.max_bytes / 2 < self.segment_bytes {
            return Err(DiskQueueError::InvalidOptions(format!(
                "max_bytes ({}) must be at least twice segment_bytes ({}): the queue sheds whole \
                 segments at the cap; lower segment_bytes or raise max_bytes",
                self.max_bytes, self.segment_bytes
            )));
        }
        if let SyncPolicy::Interval(d) = self.sync
            && d.is_zero()
        {
            return Err(DiskQueueError::InvalidOptions(
                "sync interval is zero; use SyncPolicy::Always to sync every write".to_owned(),
            ));
        }
        Ok(())
    }

    /// The largest payload a record may carry.
    pub fn max_payload(&self) -> u64 {
        (self.segment_bytes - record::HEADER_LEN as u64).min(u64::from(u32::MAX))
    }
}

/// Errors of the disk queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskQueueError {
    /// The options cannot work; the message says which and how to fix it.
    #[error("invalid disk queue options: {0}")]
    InvalidOptions(String),
    /// A file operation failed.
    #[error("disk queue: {op} {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the queue was doing (`write segment`, `fsync directory`, ...).
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A payload does not fit in a segment.
    #[error(
        "disk queue: a record of {len} bytes exceeds the largest payload a segment holds ({max} bytes); raise segment_bytes"
    )]
    RecordTooLarge {
        /// The payload's length.
        len: u64,
        /// The largest payload allowed.
        max: u64,
    },
    /// A record read back after boot is invalid: the file was changed under the queue, or the
    /// disk returned bad data. Reopening the queue quarantines it and recovers the rest.
    #[error(
        "disk queue: {segment}: invalid record at offset {offset} ({reason}); restart to quarantine it and recover the rest"
    )]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// What is wrong with it.
        reason: CorruptReason,
    },
}

pub(crate) fn io_err(path: &Path, op: &'static str, source: io::Error) -> DiskQueueError {
    DiskQueueError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// One record as read from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// The bytes appended.
    pub payload: Vec<u8>,
}

/// An invalid stretch of a segment found at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRegion {
    /// The segment file it was in.
    pub segment: PathBuf,
    /// Its offset in the segment as found.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Why the first record in it is invalid.
    pub reason: CorruptReason,
    /// The side file that now holds its bytes.
    pub quarantined_to: PathBuf,
}

/// What [`DiskQueue::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Unacknowledged records recovered, ready to drain.
    pub recovered: u64,
    /// The checkpoint: every sequence number up to this one was acknowledged (0: none).
    pub acked_through: u64,
    /// Invalid regions in the middle of the log, one entry per contiguous region (a flipped byte
    /// makes one region covering one record). Every record around them is recovered.
    pub corrupt: Vec<BadRegion>,
    /// An invalid stretch at the very end of the log: a write cut short by power loss.
    pub torn_tail: Option<BadRegion>,
}

impl RecoveryReport {
    /// Bytes cut from the end of the log.
    pub fn torn_tail_bytes(&self) -> u64 {
        self.torn_tail.as_ref().map_or(0, |r| r.len)
    }

    /// Every side file written during recovery.
    pub fn quarantined_to(&self) -> Vec<&Path> {
        self.corrupt
            .iter()
            .chain(&self.torn_tail)
            .map(|r| r.quarantined_to.as_path())
            .collect()
    }

    /// Whether the log was intact.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.torn_tail.is_none()
    }
}

#[derive(Debug)]
struct Metrics {
    depth: metrics::Gauge,
    bytes: metrics::Gauge,
    shed: metrics::Counter,
    corrupt: metrics::Counter,
    fsync: metrics::Histogram,
}

impl Metrics {
    fn new(name: &str) -> Self {
        let label = || ("queue", name.to_owned());
        Self {
            depth: metrics::gauge!("mw_disk_queue_depth", &[label()]),
            bytes: metrics::gauge!("mw_disk_queue_bytes", &[label()]),
            shed: metrics::counter!("mw_disk_queue_shed_total", &[label()]),
            corrupt: metrics::counter!("mw_disk_queue_corrupt_records_total", &[label()]),
            fsync: metrics::histogram!("mw_disk_queue_fsync_seconds", &[label()]),
        }
    }
}

/// A position in the log: `offset` bytes and `consumed` records into the segment `seg_first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    seg_first: u64,
    offset: u64,
    consumed: u64,
}

/// The last bytes read from a segment: `data` is what segment `seg_first` holds from `offset`.
#[derive(Debug, Default)]
struct Chunk {
    data: Vec<u8>,
    seg_first: u64,
    offset: u64,
}

impl Chunk {
    fn covers(&self, seg_first: u64, offset: u64) -> bool {
        self.seg_first == seg_first
            && self.offset <= offset
            && offset < self.offset + self.data.len() as u64
    }
}

fn remaining_from(seg_bytes: u64, offset: u64) -> usize {
    usize::try_from(seg_bytes - offset).unwrap_or(usize::MAX)
}

/// The disk queue. See the [module docs](self) for layout, durability and blocking.
#[derive(Debug)]
pub struct DiskQueue {
    dir: PathBuf,
    opts: DiskQueueOptions,
    /// Oldest first; never empty; the last one is the tail.
    segments: VecDeque<Segment>,
    /// The tail segment, opened for appending (and reading).
    tail: File,
    /// A failed write could not be undone; the tail must be cut back before the next append.
    tail_needs_truncate: bool,
    /// Head position inside the front segment.
    head_offset: u64,
    head_consumed: u64,
    checkpoint: Checkpoint,
    next_seq: u64,
    depth: u64,
    bytes: u64,
    shed_total: u64,
    /// A read handle on a sealed segment: `(first_seq, file)`.
    reader: Option<(u64, File)>,
    /// Positions after each record of the last peek, valid while the head is where it started.
    peeked: Vec<(u64, Cursor)>,
    peeked_from: Option<Cursor>,
    tail_dirty: bool,
    checkpoint_dirty: bool,
    /// When the oldest unsynced write happened.
    dirty_since: Option<Instant>,
    buf: Vec<u8>,
    /// Read cache of [`walk`](Self::walk).
    chunk: Chunk,
    metrics: Metrics,
}

impl DiskQueue {
    /// Opens the queue in `dir` (created if missing), recovering what is there.
    ///
    /// Scans every segment; see the [module docs](self#boot). Blocks on reads and, when it
    /// repairs or creates files, on `fsync`.
    ///
    /// # Errors
    ///
    /// [`DiskQueueError::InvalidOptions`] for bad options, [`DiskQueueError::Io`] when the
    /// directory or a file cannot be read, written or synced. Invalid records are not errors:
    /// they are quarantined and reported.
    pub fn open(
        dir: impl AsRef<Path>,
        opts: DiskQueueOptions,
    ) -> Result<(Self, RecoveryReport), DiskQueueError> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "create directory", e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                segment::sync_dir(parent).map_err(|e| io_err(parent, "fsync directory", e))?;
            }
        }
        let (checkpoint, created) =
            Checkpoint::open(&dir).map_err(|e| io_err(&dir, "open checkpoint", e))?;
        if created {
            segment::sync_dir(&dir).map_err(|e| io_err(&dir, "fsync directory", e))?;
        }
        let rec = recovery::recover(&dir, checkpoint.value())?;
        let mut segments = rec.segments;
        if segments.is_empty() {
            let path = dir.join(segment::file_name(rec.next_seq));
            create_segment_file(&path)?;
            segment::sync_dir(&dir).map_err(|e| io_err(&dir, "fsync directory", e))?;
            segments.push_back(Segment {
                first_seq: rec.next_seq,
                path,
                bytes: 0,
                records: 0,
            });
        }
        let tail_path = &segments.back().expect("at least one segment").path;
        let tail = OpenOptions::new()
            .read(true)
            .append(true)
            .open(tail_path)
            .map_err(|e| io_err(tail_path, "open tail segment", e))?;
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let metrics = Metrics::new(&opts.name);
        let bad = rec.report.corrupt.len() as u64 + u64::from(rec.report.torn_tail.is_some());
        metrics.corrupt.increment(bad);
        let report = rec.report;
        tracing::info!(
            queue = %opts.name,
            dir = %dir.display(),
            recovered = report.recovered,
            acked_through = report.acked_through,
            next_seq = rec.next_seq,
            corrupt_regions = report.corrupt.len(),
            torn_tail_bytes = report.torn_tail_bytes(),
            "disk queue opened"
        );
        let queue = Self {
            dir,
            opts,
            segments,
            tail,
            tail_needs_truncate: false,
            head_offset: rec.head_offset,
            head_consumed: rec.head_consumed,
            checkpoint,
            next_seq: rec.next_seq,
            depth: rec.depth,
            bytes,
            shed_total: 0,
            reader: None,
            peeked: Vec::new(),
            peeked_from: None,
            tail_dirty: false,
            checkpoint_dirty: false,
            dirty_since: None,
            buf: Vec::new(),
            chunk: Chunk::default(),
            metrics,
        };
        queue.publish_gauges();
        Ok((queue, report))
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the queue was opened with.
    pub fn options(&self) -> &DiskQueueOptions {
        &self.opts
    }

    /// Records appended and not yet acknowledged (nor shed).
    pub fn len(&self) -> u64 {
        self.depth
    }

    /// Whether there is nothing to deliver.
    pub fn is_empty(&self) -> bool {
        self.depth == 0
    }

    /// Total size of the segment files (what the cap applies to).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records shed at the cap since the queue was opened.
    pub fn shed_total(&self) -> u64 {
        self.shed_total
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every sequence number up to this one is acknowledged (0: none).
    pub fn acked_through(&self) -> u64 {
        self.checkpoint.value()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// When unsynced writes become due for `fdatasync` under [`SyncPolicy::Interval`]; the
    /// owner calls [`maybe_sync`](Self::maybe_sync) then. `None` when nothing is unsynced or
    /// the policy is not `Interval`.
    pub fn sync_deadline(&self) -> Option<Instant> {
        match self.opts.sync {
            SyncPolicy::Interval(d) => self.dirty_since.map(|t| t + d),
            SyncPolicy::Always | SyncPolicy::Manual => None,
        }
    }

    /// Appends one record and returns its sequence number.
    ///
    /// Returns once `write(2)` has returned (and `fdatasync(2)` too under the sync policy).
    /// May shed the oldest segment to stay under the cap.
    ///
    /// # Errors
    ///
    /// [`DiskQueueError::RecordTooLarge`] (nothing written), [`DiskQueueError::Io`] when the
    /// write (nothing appended) or a sync (the record is appended but not known to be power-loss
    /// safe) fails.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, DiskQueueError> {
        self.append_batch(&[payload]).map(|r| r.start)
    }

    /// Appends records in order with as few `write(2)` calls as possible (one per segment
    /// touched) and returns their sequence numbers.
    ///
    /// # Errors
    ///
    /// [`DiskQueueError::RecordTooLarge`] if any payload is too large (nothing written).
    /// [`DiskQueueError::Io`] when a write or sync fails; when the batch spans segments, the
    /// records before the failing segment may have been appended (and will be delivered).
    pub fn append_batch<P: AsRef<[u8]>>(
        &mut self,
        payloads: &[P],
    ) -> Result<Range<u64>, DiskQueueError> {
        let max = self.opts.max_payload();
        if let Some(p) = payloads.iter().find(|p| p.as_ref().len() as u64 > max) {
            return Err(DiskQueueError::RecordTooLarge {
                len: p.as_ref().len() as u64,
                max,
            });
        }
        if self.tail_needs_truncate {
            let tail = self.segments.back().expect("at least one segment");
            self.tail
                .set_len(tail.bytes)
                .map_err(|e| io_err(&tail.path, "cut back failed write", e))?;
            self.tail_needs_truncate = false;
        }
        let start = self.next_seq;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let result = self.append_into(&mut buf, payloads);
        buf.clear();
        self.buf = buf;
        self.publish_gauges();
        result?;
        self.after_write()?;
        Ok(start..self.next_seq)
    }

    fn append_into<P: AsRef<[u8]>>(
        &mut self,
        buf: &mut Vec<u8>,
        payloads: &[P],
    ) -> Result<(), DiskQueueError> {
        let mut pending = 0u64;
        for p in payloads {
            let p = p.as_ref();
            let framed = record::framed_len(p.len());
            let tail_bytes =
                self.segments.back().expect("at least one segment").bytes + buf.len() as u64;
            if tail_bytes > 0 && tail_bytes + framed > self.opts.segment_bytes {
                self.flush(buf, pending)?;
                pending = 0;
                self.roll()?;
            }
            self.make_room(buf.len() as u64 + framed)?;
            record::encode(buf, self.next_seq + pending, p);
            pending += 1;
        }
        self.flush(buf, pending)
    }

    /// Writes the encoded records in `buf` to the tail with one `write(2)`.
    fn flush(&mut self, buf: &mut Vec<u8>, records: u64) -> Result<(), DiskQueueError> {
        if buf.is_empty() {
            return Ok(());
        }
        let tail = self.segments.back_mut().expect("at least one segment");
        if let Err(e) = self.tail.write_all(buf) {
            // Cut a partial write back so that the next append does not follow garbage.
            if self.tail.set_len(tail.bytes).is_err() {
                self.tail_needs_truncate = true;
            }
            buf.clear();
            return Err(io_err(&tail.path, "write segment", e));
        }
        let len = buf.len() as u64;
        buf.clear();
        tail.bytes += len;
        tail.records += records;
        self.bytes += len;
        self.depth += records;
        self.next_seq += records;
        self.tail_dirty = true;
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Seals the tail (synced) and starts a new segment (directory synced).
    fn roll(&mut self) -> Result<(), DiskQueueError> {
        if self.tail_dirty {
            let path = &self.segments.back().expect("at least one segment").path;
            self.timed_sync(|q| q.tail.sync_data())
                .map_err(|e| io_err(path, "fdatasync segment", e))?;
            self.tail_dirty = false;
            if !self.checkpoint_dirty {
                self.dirty_since = None;
            }
        }
        let first_seq = self.next_seq;
        let path = self.dir.join(segment::file_name(first_seq));
        let file = create_segment_file(&path)?;
        let sealed = std::mem::replace(&mut self.tail, file);
        if self.segments.len() == 1 {
            // The sealed tail is also the front: keep reading it through the cached handle.
            self.reader = Some((self.segments[0].first_seq, sealed));
        }
        self.segments.push_back(Segment {
            first_seq,
            path,
            bytes: 0,
            records: 0,
        });
        segment::sync_dir(&self.dir).map_err(|e| io_err(&self.dir, "fsync directory", e))
    }

    /// Sheds oldest segments until `extra` more bytes fit under the cap.
    fn make_room(&mut self, extra: u64) -> Result<(), DiskQueueError> {
        while self.bytes + extra > self.opts.max_bytes && self.segments.len() > 1 {
            let seg = self
                .segments
                .front()
                .expect("more than one segment")
                .clone();
            std::fs::remove_file(&seg.path)
                .map_err(|e| io_err(&seg.path, "remove shed segment", e))?;
            self.segments.pop_front();
            let shed = seg.records - self.head_consumed;
            self.forget_front(&seg);
            self.depth -= shed;
            self.shed_total += shed;
            self.metrics.shed.increment(shed);
            tracing::warn!(
                queue = %self.opts.name,
                shed_records = shed,
                shed_bytes = seg.bytes,
                shed_total = self.shed_total,
                first_seq = seg.first_seq,
                max_bytes = self.opts.max_bytes,
                "disk queue at its size cap: shed the oldest segment"
            );
            segment::sync_dir(&self.dir).map_err(|e| io_err(&self.dir, "fsync directory", e))?;
        }
        Ok(())
    }

    /// Bookkeeping after the front segment `seg` left the queue (shed or consumed).
    fn forget_front(&mut self, seg: &Segment) {
        self.bytes -= seg.bytes;
        self.head_offset = 0;
        self.head_consumed = 0;
        self.peeked.clear();
        self.peeked_from = None;
        if self
            .reader
            .as_ref()
            .is_some_and(|(first, _)| *first == seg.first_seq)
        {
            self.reader = None;
        }
    }

    fn head(&self) -> Cursor {
        Cursor {
            seg_first: self
                .segments
                .front()
                .expect("at least one segment")
                .first_seq,
            offset: self.head_offset,
            consumed: self.head_consumed,
        }
    }

    /// Reads up to `max` records from the head, oldest first, without moving the head.
    ///
    /// Blocks on `pread(2)` only.
    ///
    /// # Errors
    ///
    /// [`DiskQueueError::Io`] when a segment cannot be read, [`DiskQueueError::Corrupt`] when a
    /// record changed on disk since boot.
    pub fn peek(&mut self, max: usize) -> Result<Vec<Record>, DiskQueueError> {
        let mut out =
            Vec::with_capacity(max.min(usize::try_from(self.depth).unwrap_or(usize::MAX)));
        let head = self.head();
        let mut positions = Vec::with_capacity(out.capacity());
        self.walk(head, |seq, payload, after| {
            if out.len() == max {
                return false;
            }
            out.push(Record {
                seq,
                payload: payload.to_vec(),
            });
            positions.push((seq, after));
            true
        })?;
        self.peeked = positions;
        self.peeked_from = Some(head);
        Ok(out)
    }

    /// Acknowledges every record with a sequence number up to `seq`: they are never delivered
    /// again (barring power loss before the checkpoint is synced, which only redelivers).
    ///
    /// Writes the checkpoint (and syncs it under the sync policy) and deletes the segments left
    /// with nothing to deliver. Acknowledging an already acknowledged sequence number does
    /// nothing; one beyond the last appended record acknowledges everything appended.
    ///
    /// # Errors
    ///
    /// [`DiskQueueError::Io`] when the checkpoint cannot be written or a segment deleted;
    /// [`DiskQueueError::Corrupt`] as for [`peek`](Self::peek).
    pub fn ack_through(&mut self, seq: u64) -> Result<(), DiskQueueError> {
        let target = seq.min(self.next_seq - 1);
        if target <= self.checkpoint.value() {
            return Ok(());
        }
        let head = self.head();
        let mut new_head = head;
        let mut acked = 0u64;
        let mut more = true;
        if self.peeked_from == Some(head) {
            for (s, after) in &self.peeked {
                if *s > target {
                    more = false;
                    break;
                }
                new_head = *after;
                acked += 1;
            }
        }
        if more {
            self.walk(new_head, |s, _, after| {
                if s > target {
                    return false;
                }
                new_head = after;
                acked += 1;
                true
            })?;
        }
        let cp_path = self.checkpoint.path().to_path_buf();
        self.checkpoint
            .write(target)
            .map_err(|e| io_err(&cp_path, "write checkpoint", e))?;
        self.checkpoint_dirty = true;
        self.dirty_since.get_or_insert_with(Instant::now);
        self.depth -= acked;

        // Move the head, deleting segments with nothing left to deliver (never the tail).
        let mut deleted = false;
        while self.segments.len() > 1 {
            let front = self.segments.front().expect("more than one segment");
            let done = front.first_seq < new_head.seg_first
                || (front.first_seq == new_head.seg_first && new_head.consumed == front.records);
            if !done {
                break;
            }
            let seg = front.clone();
            std::fs::remove_file(&seg.path)
                .map_err(|e| io_err(&seg.path, "remove consumed segment", e))?;
            self.segments.pop_front();
            self.forget_front(&seg);
            deleted = true;
        }
        let front = self.segments.front().expect("at least one segment");
        if front.first_seq == new_head.seg_first {
            self.head_offset = new_head.offset;
            self.head_consumed = new_head.consumed;
        }
        if self.peeked_from == Some(head) {
            // Keep the rest of the peek valid from the new head.
            let rest = self
                .peeked
                .iter()
                .position(|(s, _)| *s > target)
                .unwrap_or(self.peeked.len());
            self.peeked.drain(..rest);
            self.peeked_from = Some(self.head());
        }
        self.publish_gauges();
        if deleted {
            segment::sync_dir(&self.dir).map_err(|e| io_err(&self.dir, "fsync directory", e))?;
        }
        self.after_write()
    }

    /// Calls `visit(seq, payload, position after the record)` for each record from `from`
    /// onwards until it returns `false` or the log ends.
    fn walk(
        &mut self,
        from: Cursor,
        visit: impl FnMut(u64, &[u8], Cursor) -> bool,
    ) -> Result<(), DiskQueueError> {
        let mut chunk = std::mem::take(&mut self.chunk);
        let result = self.walk_with(&mut chunk, from, visit);
        self.chunk = chunk;
        result
    }

    fn walk_with(
        &mut self,
        chunk: &mut Chunk,
        from: Cursor,
        mut visit: impl FnMut(u64, &[u8], Cursor) -> bool,
    ) -> Result<(), DiskQueueError> {
        let max_payload = self.opts.max_payload();
        let Some(mut idx) = self
            .segments
            .iter()
            .position(|s| s.first_seq == from.seg_first)
        else {
            return Ok(());
        };
        let mut cursor = from;
        while idx < self.segments.len() {
            let (seg_first, seg_bytes) = (self.segments[idx].first_seq, self.segments[idx].bytes);
            if cursor.offset >= seg_bytes {
                idx += 1;
                if let Some(next) = self.segments.get(idx) {
                    cursor = Cursor {
                        seg_first: next.first_seq,
                        offset: 0,
                        consumed: 0,
                    };
                }
                continue;
            }
            // Bytes below a segment's length never change, so a chunk read earlier stays valid.
            let remaining = remaining_from(seg_bytes, cursor.offset);
            if !chunk.covers(seg_first, cursor.offset) {
                self.read_at(
                    idx,
                    cursor.offset,
                    remaining.min(READ_CHUNK),
                    &mut chunk.data,
                )?;
                (chunk.seg_first, chunk.offset) = (seg_first, cursor.offset);
            }
            let mut pos = usize::try_from(cursor.offset - chunk.offset).unwrap_or(usize::MAX);
            loop {
                match record::parse(&chunk.data, pos, max_payload, |_| true) {
                    Ok(frame) => {
                        cursor.offset += (frame.end() - pos) as u64;
                        cursor.consumed += 1;
                        let payload = &chunk.data[frame.payload_start..frame.end()];
                        if !visit(frame.seq, payload, cursor) {
                            return Ok(());
                        }
                        pos = frame.end();
                        if pos == chunk.data.len() {
                            break;
                        }
                    }
                    Err(CorruptReason::Truncated { needed, .. })
                        if cursor.offset + needed <= seg_bytes =>
                    {
                        // The record continues past this chunk: read again from its start, with
                        // room for all of it.
                        let needed = usize::try_from(needed).unwrap_or(usize::MAX);
                        let want =
                            remaining_from(seg_bytes, cursor.offset).min(READ_CHUNK.max(needed));
                        self.read_at(idx, cursor.offset, want, &mut chunk.data)?;
                        (chunk.seg_first, chunk.offset) = (seg_first, cursor.offset);
                        pos = 0;
                    }
                    Err(reason) => {
                        self.metrics.corrupt.increment(1);
                        chunk.data.clear();
                        return Err(DiskQueueError::Corrupt {
                            segment: self.segments[idx].path.clone(),
                            offset: cursor.offset,
                            reason,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads exactly `len` bytes at `offset` of segment `idx` into `out`.
    fn read_at(
        &mut self,
        idx: usize,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DiskQueueError> {
        out.resize(len, 0);
        let seg = &self.segments[idx];
        let file = if idx + 1 == self.segments.len() {
            &self.tail
        } else {
            if self
                .reader
                .as_ref()
                .is_none_or(|(first, _)| *first != seg.first_seq)
            {
                let f = File::open(&seg.path).map_err(|e| io_err(&seg.path, "open segment", e))?;
                self.reader = Some((seg.first_seq, f));
            }
            &self.reader.as_ref().expect("just set").1
        };
        file.read_exact_at(out, offset)
            .map_err(|e| io_err(&seg.path, "read segment", e))
    }

    /// `fdatasync`s everything written so far (tail segment and checkpoint).
    ///
    /// # Errors
    ///
    /// [`DiskQueueError::Io`] when a sync fails: the records written since the last successful
    /// sync survive a crash of the process but may not survive power loss.
    pub fn sync(&mut self) -> Result<(), DiskQueueError> {
        if self.tail_dirty {
            let path = self
                .segments
                .back()
                .expect("at least one segment")
                .path
                .clone();
            self.timed_sync(|q| q.tail.sync_data())
                .map_err(|e| io_err(&path, "fdatasync segment", e))?;
            self.tail_dirty = false;
        }
        if self.checkpoint_dirty {
            let path = self.checkpoint.path().to_path_buf();
            self.timed_sync(|q| q.checkpoint.sync())
                .map_err(|e| io_err(&path, "fdatasync checkpoint", e))?;
            self.checkpoint_dirty = false;
        }
        self.dirty_since = None;
        Ok(())
    }

    /// Syncs if the [`SyncPolicy::Interval`] deadline has passed by `now` (group commit timer).
    ///
    /// # Errors
    ///
    /// As for [`sync`](Self::sync).
    pub fn maybe_sync(&mut self, now: Instant) -> Result<(), DiskQueueError> {
        match self.sync_deadline() {
            Some(deadline) if now >= deadline => self.sync(),
            _ => Ok(()),
        }
    }

    /// Syncs and closes the queue (what dropping it does, with the error reported).
    ///
    /// # Errors
    ///
    /// As for [`sync`](Self::sync).
    pub fn close(mut self) -> Result<(), DiskQueueError> {
        self.sync()
    }

    fn after_write(&mut self) -> Result<(), DiskQueueError> {
        match self.opts.sync {
            SyncPolicy::Always => self.sync(),
            SyncPolicy::Interval(_) => self.maybe_sync(Instant::now()),
            SyncPolicy::Manual => Ok(()),
        }
    }

    fn timed_sync(&self, f: impl FnOnce(&Self) -> io::Result<()>) -> io::Result<()> {
        let start = Instant::now();
        let result = f(self);
        self.metrics.fsync.record(start.elapsed().as_secs_f64());
        result
    }

    fn publish_gauges(&self) {
        self.metrics.depth.set(self.depth as f64);
        self.metrics.bytes.set(self.bytes as f64);
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        if (self.tail_dirty || self.checkpoint_dirty)
            && let Err(e) = self.sync()
        {
            tracing::error!(queue = %self.opts.name, error = %e, "disk queue: final sync failed");
        }
    }
}

fn create_segment_file(path: &Path) -> Result<File, DiskQueueError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err(path, "create segment", e))
}
