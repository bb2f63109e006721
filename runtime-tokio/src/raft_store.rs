//! A cluster coordinator's replicated log on disk (`data_dir/raft.redb`):
//! the entries by index and the engine's hard state. Every
//! [`RaftStore::persist`] is one durable redb commit, so what the replica
//! promised its peers survives `kill -9`.
//!
//! An entry is stored as `term u64 | context length u16 | context | data`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use transitloom_proto_core::coordinator::replica::{HardState, LogEntry, Restored};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_entries");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
const HARD_STATE: &str = "hard_state";

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    /// The database itself failed.
    #[error("{}: {source}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: redb::Error,
    },
    /// A stored record is malformed.
    #[error("{}: {what} is corrupt", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which record.
        what: String,
    },
}

/// The replicated log on disk.
#[derive(Debug)]
pub struct RaftStore {
    path: PathBuf,
    db: Database,
}

impl RaftStore {
    /// Opens the store at `path`, creating it if needed.
    ///
    /// # Errors
    /// When the file cannot be opened or is not such a store.
    pub fn open(path: &Path) -> Result<Self, RaftStoreError> {
        let fail = |source: redb::Error| RaftStoreError::Store {
            path: path.to_owned(),
            source,
        };
        let db = Database::create(path).map_err(|e| fail(e.into()))?;
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        txn.open_table(ENTRIES).map_err(|e| fail(e.into()))?;
        txn.open_table(STATE).map_err(|e| fail(e.into()))?;
        txn.commit().map_err(|e| fail(e.into()))?;
        Ok(Self {
            path: path.to_owned(),
            db,
        })
    }

    fn fail(&self, source: impl Into<redb::Error>) -> RaftStoreError {
        RaftStoreError::Store {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    fn corrupt(&self, what: String) -> RaftStoreError {
        RaftStoreError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    /// Everything stored: the hard state and every entry in order.
    /// `applied` is left 0; the caller sets what it replayed.
    ///
    /// # Errors
    /// When the store cannot be read or a record is malformed.
    pub fn load(&self) -> Result<Restored, RaftStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let state = txn.open_table(STATE).map_err(|e| self.fail(e))?;
        let hard_state = match state.get(HARD_STATE).map_err(|e| self.fail(e))? {
            None => HardState::default(),
            Some(bytes) => {
                let b = bytes.value();
                let word = |i: usize| -> Option<u64> {
                    Some(u64::from_be_bytes(
                        b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
                    ))
                };
                match (b.len(), word(0), word(1), word(2)) {
                    (24, Some(term), Some(vote), Some(commit)) => HardState { term, vote, commit },
                    _ => return Err(self.corrupt("the hard state".to_owned())),
                }
            }
        };
        let table = txn.open_table(ENTRIES).map_err(|e| self.fail(e))?;
        let mut entries = Vec::new();
        for record in table.iter().map_err(|e| self.fail(e))? {
            let (index, bytes) = record.map_err(|e| self.fail(e))?;
            let index = index.value();
            let entry = decode(index, bytes.value())
                .ok_or_else(|| self.corrupt(format!("entry {index}")))?;
            if entries.len() as u64 + 1 != index {
                return Err(self.corrupt(format!("entry {index} (a gap before it)")));
            }
            entries.push(entry);
        }
        Ok(Restored {
            hard_state,
            entries,
            applied: 0,
        })
    }

    /// Stores `hard_state` (if any) and `entries`, which replace every
    /// stored entry from the first one's index on; returns once durable.
    ///
    /// # Errors
    /// When the commit fails; then nothing was written.
    pub fn persist(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[LogEntry],
    ) -> Result<(), RaftStoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.fail(e))?;
            if let Some(first) = entries.first() {
                // A new leader may overwrite an uncommitted tail.
                table
                    .retain_in(first.index.., |_, _| false)
                    .map_err(|e| self.fail(e))?;
            }
            for entry in entries {
                table
                    .insert(entry.index, encode(entry).as_slice())
                    .map_err(|e| self.fail(e))?;
            }
            if let Some(hs) = hard_state {
                let mut state = txn.open_table(STATE).map_err(|e| self.fail(e))?;
                let mut bytes = Vec::with_capacity(24);
                for word in [hs.term, hs.vote, hs.commit] {
                    bytes.extend_from_slice(&word.to_be_bytes());
                }
                state
                    .insert(HARD_STATE, bytes.as_slice())
                    .map_err(|e| self.fail(e))?;
            }
        }
        txn.commit().map_err(|e| self.fail(e))
    }
}

fn encode(entry: &LogEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + entry.context.len() + entry.data.len());
    out.extend_from_slice(&entry.term.to_be_bytes());
    // Contexts are at most 64 bytes (the codec's cap).
    out.extend_from_slice(&(entry.context.len() as u16).to_be_bytes());
    out.extend_from_slice(&entry.context);
    out.extend_from_slice(&entry.data);
    out
}

fn decode(index: u64, bytes: &[u8]) -> Option<LogEntry> {
    let term = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = usize::from(u16::from_be_bytes(bytes.get(8..10)?.try_into().ok()?));
    let context = bytes.get(10..10 + len)?;
    let data = bytes.get(10 + len..)?;
    Some(LogEntry {
        term,
        index,
        data: Bytes::copy_from_slice(data),
        context: Bytes::copy_from_slice(context),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &'static [u8]) -> LogEntry {
        LogEntry {
            term,
            index,
            data: Bytes::from_static(data),
            context: Bytes::from_static(b"0123456789abcdef"),
        }
    }

    #[test]
    fn what_is_persisted_is_loaded_back_and_a_new_tail_replaces_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let mut store = RaftStore::open(&path).unwrap();
        let hs = HardState {
            term: 2,
            vote: 1,
            commit: 2,
        };
        store
            .persist(
                Some(hs),
                &[entry(1, 1, b""), entry(2, 1, b"a"), entry(3, 1, b"b")],
            )
            .unwrap();
        // A new leader's entry 3 replaces the old 3 and drops nothing else.
        store.persist(None, &[entry(3, 2, b"c")]).unwrap();
        drop(store);
        let loaded = RaftStore::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded.hard_state, hs);
        assert_eq!(
            loaded.entries,
            vec![entry(1, 1, b""), entry(2, 1, b"a"), entry(3, 2, b"c")]
        );
    }

    #[test]
    fn a_corrupt_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let store = RaftStore::open(&path).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert(1, &[0u8, 1][..])
            .unwrap();
        txn.commit().unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.ends_with("entry 1 is corrupt"), "{err}");
    }
}
