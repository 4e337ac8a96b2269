//! The dead-letter queue: events the broker gave up on, kept on disk until an operator acts.
//!
//! An event lands here when draining it from the disk queue failed `max_attempts` times (3 by
//! default) *for a reason specific to that event* (the server rejected it, a stream refused
//! it). Connection failures never count as attempts: they trip the circuit breaker instead,
//! or one outage would move the whole queue here.
//!
//! The store is a single [`redb`] file (`<data_dir>/dlq.redb`) keyed by event id. Ids are
//! ULIDs, so listing is in the order the events were created. Each entry keeps the whole
//! envelope, the number of attempts and the last error, so `millwright dlq show ID` tells the
//! operator what failed and why, and `replay` can send it again unchanged (same id, so
//! JetStream de-duplicates a replay that races a late success).
//!
//! redb holds an exclusive lock on the file: while a node runs, only it opens the store, and
//! the CLI reaches it through the node's control subjects.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use millwright_plugin_sdk::event::{Envelope, EventId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// File name of the store inside the data dir.
pub const FILE_NAME: &str = "dlq.redb";

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("dead_letters");

/// One event the broker gave up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event, exactly as it was queued.
    pub envelope: Envelope,
    /// How many delivery attempts failed.
    pub attempts: u32,
    /// The error of the last attempt.
    pub last_error: String,
    /// When the first attempt failed.
    pub first_failed_at: DateTime<Utc>,
    /// When the event was moved here.
    pub dead_at: DateTime<Utc>,
}

impl DeadLetter {
    /// The event id.
    pub fn id(&self) -> EventId {
        self.envelope.id
    }
}

/// Why the dead-letter store failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The store could not be opened (locked by a running node, unreadable, corrupt).
    #[error("cannot open dead-letter store {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("dead-letter store {path}: {source}")]
    Storage {
        /// The store file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::Error,
    },
    /// An entry could not be decoded.
    #[error("dead-letter store {path}: entry {id} is not readable: {source}")]
    Decode {
        /// The store file.
        path: PathBuf,
        /// The entry's key.
        id: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The dead-letter store of one node.
pub struct DeadLetterQueue {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterQueue")
            .field("path", &self.path)
            .finish()
    }
}

impl DeadLetterQueue {
    /// Opens (or creates) the store in `data_dir`.
    ///
    /// # Errors
    /// [`DeadLetterError::Open`] when the file cannot be created or opened — most often
    /// because a running node holds it.
    pub fn open(data_dir: &Path) -> Result<Self, DeadLetterError> {
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|source| DeadLetterError::Open {
            path: path.clone(),
            source,
        })?;
        let this = Self { db, path };
        // Create the table so that readers never see "table does not exist".
        this.write(|table| table.len().map(|_| ()))?;
        Ok(this)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores (or replaces) an entry. Durable when this returns.
    ///
    /// # Errors
    /// [`DeadLetterError::Storage`] when the write fails.
    pub fn put(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let key = letter.id().to_string();
        let value = serde_json::to_vec(letter).expect("dead letters always serialize");
        self.write(|table| table.insert(key.as_str(), value.as_slice()).map(|_| ()))
    }

    /// The entry with `id`, if any.
    ///
    /// # Errors
    /// [`DeadLetterError::Storage`] or [`DeadLetterError::Decode`].
    pub fn get(&self, id: &EventId) -> Result<Option<DeadLetter>, DeadLetterError> {
        let key = id.to_string();
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let table = txn.open_table(TABLE).map_err(|e| self.storage(e))?;
        let Some(value) = table.get(key.as_str()).map_err(|e| self.storage(e))? else {
            return Ok(None);
        };
        self.decode(&key, value.value()).map(Some)
    }

    /// Up to `limit` entries, oldest first.
    ///
    /// # Errors
    /// [`DeadLetterError::Storage`] or [`DeadLetterError::Decode`].
    pub fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let table = txn.open_table(TABLE).map_err(|e| self.storage(e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.storage(e))?.take(limit) {
            let (key, value) = item.map_err(|e| self.storage(e))?;
            out.push(self.decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// How many entries the store holds.
    ///
    /// # Errors
    /// [`DeadLetterError::Storage`].
    pub fn len(&self) -> Result<u64, DeadLetterError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let table = txn.open_table(TABLE).map_err(|e| self.storage(e))?;
        table.len().map_err(|e| self.storage(e))
    }

    /// Whether the store is empty.
    ///
    /// # Errors
    /// [`DeadLetterError::Storage`].
    pub fn is_empty(&self) -> Result<bool, DeadLetterError> {
        Ok(self.len()? == 0)
    }

    /// Removes the entry with `id`; returns it if it existed.
    ///
    /// # Errors
    /// [`DeadLetterError::Storage`] or [`DeadLetterError::Decode`].
    pub fn remove(&self, id: &EventId) -> Result<Option<DeadLetter>, DeadLetterError> {
        let key = id.to_string();
        let mut removed = None;
        self.write(|table| {
            removed = table.remove(key.as_str())?.map(|v| v.value().to_vec());
            Ok(())
        })?;
        removed.map(|bytes| self.decode(&key, &bytes)).transpose()
    }

    /// Removes every entry; returns how many there were.
    ///
    /// # Errors
    /// [`DeadLetterError::Storage`].
    pub fn purge_all(&self) -> Result<u64, DeadLetterError> {
        let mut n = 0;
        self.write(|table| {
            n = table.len()?;
            table.retain(|_, _| false)
        })?;
        Ok(n)
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), DeadLetterError> {
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| self.storage(e))?;
            f(&mut table).map_err(|e| self.storage(e))?;
        }
        txn.commit().map_err(|e| self.storage(e))
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<DeadLetter, DeadLetterError> {
        serde_json::from_slice(bytes).map_err(|source| DeadLetterError::Decode {
            path: self.path.clone(),
            id: key.to_owned(),
            source,
        })
    }

    fn storage(&self, e: impl Into<redb::Error>) -> DeadLetterError {
        DeadLetterError::Storage {
            path: self.path.clone(),
            source: e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: u32) -> DeadLetter {
        DeadLetter {
            envelope: Envelope::new("press1", "mw.ev.press1.t", serde_json::json!(n)),
            attempts: 3,
            last_error: format!("stream refused message {n}"),
            first_failed_at: Utc::now(),
            dead_at: Utc::now(),
        }
    }

    #[test]
    fn put_get_list_remove_purge() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = DeadLetterQueue::open(dir.path()).unwrap();
        assert!(dlq.is_empty().unwrap());
        let letters: Vec<_> = (0..5).map(letter).collect();
        for l in &letters {
            dlq.put(l).unwrap();
        }
        assert_eq!(dlq.len().unwrap(), 5);
        let listed = dlq.list(10).unwrap();
        assert_eq!(listed, letters, "listing is in id (creation) order");
        assert_eq!(dlq.list(2).unwrap().len(), 2);
        assert_eq!(
            dlq.get(&letters[3].id()).unwrap().as_ref(),
            Some(&letters[3])
        );
        assert_eq!(
            dlq.remove(&letters[3].id()).unwrap(),
            Some(letters[3].clone())
        );
        assert_eq!(dlq.remove(&letters[3].id()).unwrap(), None);
        assert_eq!(dlq.purge_all().unwrap(), 4);
        assert!(dlq.is_empty().unwrap());
    }

    #[test]
    fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let l = letter(1);
        {
            let dlq = DeadLetterQueue::open(dir.path()).unwrap();
            dlq.put(&l).unwrap();
        }
        let dlq = DeadLetterQueue::open(dir.path()).unwrap();
        assert_eq!(dlq.get(&l.id()).unwrap(), Some(l));
    }

    #[test]
    fn a_second_opener_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DeadLetterQueue::open(dir.path()).unwrap();
        let err = DeadLetterQueue::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("dlq.redb"), "{msg}");
    }
}
