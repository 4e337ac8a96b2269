//! The head checkpoint: how far the consumer has acknowledged, kept in a small side file.
//!
//! The file `head` holds two 16-byte slots, each `magic "MWH1" | acked_through u64 | crc32c u32`
//! (little-endian; the checksum covers the first 12 bytes). Writes alternate between the slots
//! with one `pwrite(2)` each, so a write torn by a crash can only damage the slot being written:
//! the other still holds the previous value. On open the valid slot with the larger value wins;
//! with no valid slot the checkpoint is 0 and every record is delivered again (at-least-once).
//!
//! No rename, no directory fsync: acknowledging is one small write, plus one `fdatasync` under
//! the queue's sync policy. A checkpoint lost to power loss only means redelivery.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"MWH1";
const SLOT_LEN: u64 = 16;

/// The file name of the checkpoint inside the queue directory.
pub(crate) const FILE_NAME: &str = "head";

#[derive(Debug)]
pub(crate) struct Checkpoint {
    file: File,
    path: PathBuf,
    /// The slot the next write goes to.
    next_slot: u64,
    value: u64,
}

fn encode(value: u64) -> [u8; SLOT_LEN as usize] {
    let mut slot = [0u8; SLOT_LEN as usize];
    slot[..4].copy_from_slice(&MAGIC);
    slot[4..12].copy_from_slice(&value.to_le_bytes());
    let crc = crc32c::crc32c(&slot[..12]);
    slot[12..].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode(slot: &[u8]) -> Option<u64> {
    if slot.len() < SLOT_LEN as usize || slot[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(slot[12..16].try_into().ok()?);
    if crc != crc32c::crc32c(&slot[..12]) {
        return None;
    }
    Some(u64::from_le_bytes(slot[4..12].try_into().ok()?))
}

impl Checkpoint {
    /// Opens (or creates) the checkpoint in `dir`. Returns it and whether the file was created
    /// (the caller then fsyncs the directory).
    pub fn open(dir: &Path) -> io::Result<(Self, bool)> {
        let path = dir.join(FILE_NAME);
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut buf = [0u8; 2 * SLOT_LEN as usize];
        let mut read = 0;
        while read < buf.len() {
            match file.read_at(&mut buf[read..], read as u64)? {
                0 => break,
                n => read += n,
            }
        }
        let a = decode(&buf[..SLOT_LEN as usize]);
        let b = decode(&buf[SLOT_LEN as usize..]);
        let (value, next_slot) = match (a, b) {
            (Some(a), Some(b)) if b > a => (b, 0),
            (Some(a), _) => (a, 1),
            (None, Some(b)) => (b, 0),
            (None, None) => (0, 0),
        };
        Ok((
            Self {
                file,
                path,
                next_slot,
                value,
            },
            created,
        ))
    }

    /// The acknowledged-through sequence number (0: nothing acknowledged).
    pub fn value(&self) -> u64 {
        self.value
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `value` with one `pwrite(2)` (not synced).
    pub fn write(&mut self, value: u64) -> io::Result<()> {
        self.file
            .write_all_at(&encode(value), self.next_slot * SLOT_LEN)?;
        self.next_slot ^= 1;
        self.value = value;
        Ok(())
    }

    /// `fdatasync(2)`s the checkpoint.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_value_survives_reopen_and_a_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cp, created) = Checkpoint::open(dir.path()).unwrap();
        assert!(created);
        assert_eq!(cp.value(), 0);
        cp.write(5).unwrap();
        cp.write(9).unwrap();
        cp.write(12).unwrap(); // slot 0 now holds 12, slot 1 holds 9
        drop(cp);
        let (cp, created) = Checkpoint::open(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(cp.value(), 12);
        drop(cp);

        // Tear the slot holding 12: the previous value is still there.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[6] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (mut cp, _) = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(cp.value(), 9);
        // The next write overwrites the torn slot, not the good one.
        cp.write(13).unwrap();
        drop(cp);
        assert_eq!(Checkpoint::open(dir.path()).unwrap().0.value(), 13);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(decode(&bytes[16..]), Some(9));
    }
}
