//! The coordinator's operation log on disk: an append-only redb table of
//! encoded [`Op`]s keyed by sequence number. `append` returns only after the
//! commit is durable, so an acknowledged operation survives `kill -9`.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use transitloom_proto_core::coordinator::registry::{Op, OpDecodeError, Registry, RegistryError};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("oplog");

/// Why the log could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum OpLogError {
    /// The database itself failed.
    #[error("{}: {source}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: redb::Error,
    },
    /// A stored record could not be decoded.
    #[error("{}: record {seq} is corrupt: {source}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The record's sequence number.
        seq: u64,
        /// Why.
        source: OpDecodeError,
    },
    /// A stored record does not apply to the state before it.
    #[error("{}: record {seq} does not apply: {source}", path.display())]
    Inconsistent {
        /// The database file.
        path: PathBuf,
        /// The record's sequence number.
        seq: u64,
        /// Why.
        source: RegistryError,
    },
}

/// The operation log.
#[derive(Debug)]
pub struct OpLog {
    path: PathBuf,
    db: Database,
    next: u64,
}

impl OpLog {
    /// Opens the log at `path`, creating it if needed.
    ///
    /// # Errors
    /// When the file cannot be opened or is not a log.
    pub fn open(path: &Path) -> Result<Self, OpLogError> {
        let fail = |source: redb::Error| OpLogError::Store {
            path: path.to_owned(),
            source,
        };
        let db = Database::create(path).map_err(|e| fail(e.into()))?;
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        txn.open_table(LOG).map_err(|e| fail(e.into()))?;
        txn.commit().map_err(|e| fail(e.into()))?;
        let mut log = Self {
            path: path.to_owned(),
            db,
            next: 1,
        };
        log.next = log.records()?.last().map_or(1, |(seq, _)| seq + 1);
        Ok(log)
    }

    fn fail(&self, source: impl Into<redb::Error>) -> OpLogError {
        OpLogError::Store {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    /// Every record, in order.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn records(&self) -> Result<Vec<(u64, Vec<u8>)>, OpLogError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(LOG).map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.fail(e))? {
            let (seq, bytes) = entry.map_err(|e| self.fail(e))?;
            out.push((seq.value(), bytes.value().to_vec()));
        }
        Ok(out)
    }

    /// Appends `op` durably and returns its sequence number.
    ///
    /// # Errors
    /// When the commit fails; then nothing was appended.
    pub fn append(&mut self, op: &Op) -> Result<u64, OpLogError> {
        let seq = self.next;
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| self.fail(e))?;
            table
                .insert(seq, op.encode().as_slice())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))?;
        self.next = seq + 1;
        Ok(seq)
    }

    /// Every record, decoded, with its sequence number, in order.
    ///
    /// # Errors
    /// When the store cannot be read or a record is corrupt.
    pub fn replay_ops(&self) -> Result<Vec<(u64, Op)>, OpLogError> {
        self.records()?
            .into_iter()
            .map(|(seq, bytes)| {
                Op::decode(&bytes)
                    .map(|op| (seq, op))
                    .map_err(|source| OpLogError::Corrupt {
                        path: self.path.clone(),
                        seq,
                        source,
                    })
            })
            .collect()
    }

    /// Rebuilds the registry by applying every record in order.
    ///
    /// # Errors
    /// When a record is corrupt or does not apply.
    pub fn replay(&self) -> Result<Registry, OpLogError> {
        let mut registry = Registry::new();
        for (seq, bytes) in self.records()? {
            let op = Op::decode(&bytes).map_err(|source| OpLogError::Corrupt {
                path: self.path.clone(),
                seq,
                source,
            })?;
            registry
                .apply(&op)
                .map_err(|source| OpLogError::Inconsistent {
                    path: self.path.clone(),
                    seq,
                    source,
                })?;
        }
        Ok(registry)
    }
}
