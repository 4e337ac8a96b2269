//! The on-disk record frame: encoding, validation and resynchronisation after corruption.
//!
//! A record is a 20-byte header followed by the payload, all integers little-endian:
//!
//! ```text
//! offset  size  field
//!      0     4  magic   b"MWQ1" (marks the start of a record; lets a scan find the next one)
//!      4     4  len     payload length in bytes
//!      8     8  seq     sequence number (strictly increasing within the queue)
//!     16     4  crc     CRC32C of bytes 4..16 (len, seq) followed by the payload
//!     20   len  payload opaque bytes
//! ```
//!
//! The checksum covers the length and the sequence number as well as the payload, so a flipped
//! bit anywhere in a record (the magic excepted, which is checked by equality) is detected, and a
//! corrupt length can never send the reader past a record boundary unnoticed.
//!
//! **Resynchronisation.** When the record at some offset is invalid (bad magic, impossible
//! length, checksum mismatch, or a sequence number that does not fit), its own length field
//! cannot be trusted, so [`resync`] scans forward byte by byte for the next offset at which a
//! *whole* record validates: magic, a length that fits, a matching CRC32C and a sequence number
//! the caller accepts (greater than the last good one, within the segment's range). Everything
//! between the bad offset and that record is one corrupt region. A false positive would need a
//! payload that embeds a complete, checksummed frame of this very format with a plausible
//! sequence number; payloads are serialised envelopes, so this does not happen by accident.

use std::fmt;

/// The four bytes every record starts with.
pub(crate) const MAGIC: [u8; 4] = *b"MWQ1";

/// Size of the record header in bytes.
pub(crate) const HEADER_LEN: usize = 20;

/// Why a stretch of a segment is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptReason {
    /// The bytes at this offset do not start with the record magic.
    BadMagic,
    /// The length field is larger than any record a segment may hold.
    BadLength {
        /// The length the header claims.
        len: u32,
    },
    /// The checksum does not match the header and payload.
    ChecksumMismatch {
        /// The checksum stored in the header.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// The record is intact but its sequence number is out of place (not after the previous
    /// record, or outside the range the segment's name allows).
    SequenceOutOfPlace {
        /// The record's sequence number.
        seq: u64,
    },
    /// The file ends before the record does.
    Truncated {
        /// Bytes the record needs from its start.
        needed: u64,
        /// Bytes the file still holds from the record's start.
        available: u64,
    },
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "no record magic"),
            Self::BadLength { len } => write!(f, "impossible record length {len}"),
            Self::ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Self::SequenceOutOfPlace { seq } => write!(f, "sequence number {seq} out of place"),
            Self::Truncated { needed, available } => {
                write!(
                    f,
                    "record truncated ({available} of {needed} bytes present)"
                )
            }
        }
    }
}

/// Appends the frame of one record to `buf`.
///
/// The caller guarantees `payload.len() <= u32::MAX` (the queue checks the record size first).
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut meta = [0u8; 12];
    meta[..4].copy_from_slice(&len.to_le_bytes());
    meta[4..].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&meta), payload);
    buf.reserve(HEADER_LEN + payload.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&meta);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The framed size of a record with a payload of `payload_len` bytes.
pub(crate) fn framed_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

/// A record found valid in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Its sequence number.
    pub seq: u64,
    /// Where its payload starts in the buffer.
    pub payload_start: usize,
    /// Its payload length.
    pub payload_len: usize,
}

impl Frame {
    /// Offset just past the record.
    pub fn end(&self) -> usize {
        self.payload_start + self.payload_len
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Parses the record that starts at `off` in `buf`.
///
/// `max_payload` bounds the length field; `seq_ok` decides whether an otherwise intact record's
/// sequence number is in place. A record that runs past the end of `buf` is reported as
/// [`CorruptReason::Truncated`] (for a reader of a whole file that is a torn or cut record; a
/// reader of a chunk reads more and retries).
pub(crate) fn parse(
    buf: &[u8],
    off: usize,
    max_payload: u64,
    seq_ok: impl Fn(u64) -> bool,
) -> Result<Frame, CorruptReason> {
    let avail = buf.len().saturating_sub(off);
    if avail < HEADER_LEN {
        // A partial header: if what is there is not even a prefix of the magic, call it what it is.
        let n = avail.min(MAGIC.len());
        if buf[off..off + n] != MAGIC[..n] {
            return Err(CorruptReason::BadMagic);
        }
        return Err(CorruptReason::Truncated {
            needed: HEADER_LEN as u64,
            available: avail as u64,
        });
    }
    if buf[off..off + 4] != MAGIC {
        return Err(CorruptReason::BadMagic);
    }
    let len = u32_at(buf, off + 4);
    if u64::from(len) > max_payload {
        return Err(CorruptReason::BadLength { len });
    }
    let needed = HEADER_LEN + len as usize;
    if avail < needed {
        return Err(CorruptReason::Truncated {
            needed: needed as u64,
            available: avail as u64,
        });
    }
    let seq = u64_at(buf, off + 8);
    let stored = u32_at(buf, off + 16);
    let payload_start = off + HEADER_LEN;
    let computed = crc32c::crc32c_append(
        crc32c::crc32c(&buf[off + 4..off + 16]),
        &buf[payload_start..payload_start + len as usize],
    );
    if stored != computed {
        return Err(CorruptReason::ChecksumMismatch { stored, computed });
    }
    if !seq_ok(seq) {
        return Err(CorruptReason::SequenceOutOfPlace { seq });
    }
    Ok(Frame {
        seq,
        payload_start,
        payload_len: len as usize,
    })
}

/// Finds the first offset after `bad` at which a whole valid record starts, if any.
pub(crate) fn resync(
    buf: &[u8],
    bad: usize,
    max_payload: u64,
    seq_ok: impl Fn(u64) -> bool,
) -> Option<usize> {
    let mut from = bad + 1;
    while from + HEADER_LEN <= buf.len() {
        let hit = buf[from..].windows(MAGIC.len()).position(|w| w == MAGIC)?;
        let at = from + hit;
        if parse(buf, at, max_payload, &seq_ok).is_ok() {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, seq, payload);
        buf
    }

    #[test]
    fn a_frame_round_trips() {
        let buf = frame(7, b"hello");
        assert_eq!(buf.len() as u64, framed_len(5));
        let f = parse(&buf, 0, 1024, |_| true).unwrap();
        assert_eq!(
            f,
            Frame {
                seq: 7,
                payload_start: HEADER_LEN,
                payload_len: 5
            }
        );
        assert_eq!(&buf[f.payload_start..f.end()], b"hello");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let clean = frame(42, b"some payload bytes");
        for byte in 0..clean.len() {
            for bit in 0..8 {
                let mut buf = clean.clone();
                buf[byte] ^= 1 << bit;
                assert!(
                    parse(&buf, 0, 1024, |_| true).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_cut_record_is_truncated_and_a_zeroed_one_has_no_magic() {
        let buf = frame(1, b"0123456789");
        assert_eq!(
            parse(&buf[..25], 0, 1024, |_| true),
            Err(CorruptReason::Truncated {
                needed: 30,
                available: 25
            })
        );
        assert_eq!(
            parse(&buf[..3], 0, 1024, |_| true),
            Err(CorruptReason::Truncated {
                needed: 20,
                available: 3
            })
        );
        assert_eq!(
            parse(&[0u8; 30], 0, 1024, |_| true),
            Err(CorruptReason::BadMagic)
        );
        assert_eq!(
            parse(&[0u8; 3], 0, 1024, |_| true),
            Err(CorruptReason::BadMagic)
        );
    }

    #[test]
    fn a_length_beyond_the_limit_is_rejected_before_reading() {
        let buf = frame(1, &[7u8; 100]);
        assert_eq!(
            parse(&buf, 0, 99, |_| true),
            Err(CorruptReason::BadLength { len: 100 })
        );
    }

    #[test]
    fn resync_skips_a_corrupt_length_to_the_next_valid_record() {
        let mut buf = frame(1, b"first");
        let second_at = buf.len();
        buf.extend(frame(2, b"second, which holds MWQ1 in its payload"));
        let third_at = buf.len();
        buf.extend(frame(3, b"third"));
        // Corrupt the second record's length so that it claims to run to the end.
        buf[second_at + 4] ^= 0x40;
        assert!(parse(&buf, second_at, 1 << 20, |_| true).is_err());
        assert_eq!(resync(&buf, second_at, 1 << 20, |s| s > 1), Some(third_at));
        // The sequence predicate can reject an otherwise intact record.
        assert_eq!(resync(&buf, second_at, 1 << 20, |s| s > 3), None);
    }
}
