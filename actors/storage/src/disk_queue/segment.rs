//! Segment files: naming, listing, and the directory fsync that makes their creation durable.
//!
//! A segment is named after the first sequence number it may hold, zero-padded so that names
//! sort in sequence order: `00000000000000000001.seg`. A segment holds records with sequence
//! numbers from its name up to (not including) the next segment's name.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".seg";

/// What the queue knows about one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The first sequence number the segment may hold (its name).
    pub first_seq: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its length in bytes (valid records only, back to back).
    pub bytes: u64,
    /// How many records it holds.
    pub records: u64,
}

/// The file name of the segment starting at `first_seq`.
pub(crate) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

/// The first sequence number of a segment file name, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, sorted by first sequence number. Other files are ignored.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

/// `fsync(2)`s a directory, making the creation, renaming or removal of its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_sequence_order_and_parse_back() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert!(file_name(9) < file_name(10));
        for bad in [
            "1.seg",
            "0000000000000000000x.seg",
            "00000000000000000001.log",
            "head",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
