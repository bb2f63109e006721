//! `Raft` bodies: one message of the consensus engine that replicates the
//! coordinators' operation log (DESIGN §4), in this codec rather than the
//! engine's protobuf, so a peer coordinator's bytes go through the same
//! checked reader as everything else.
//!
//! ```text
//! kind u8 | to u64 | from u64 | term u64 | log_term u64 | index u64 |
//! commit u64 | commit_term u64 | reject bool | reject_hint u64 |
//! request_snapshot u64 | priority i64 (as u64) | context bytes |
//! entries: u16 count, each term u64 | index u64 | data bytes | context bytes
//! ```
//!
//! Only normal entries travel: the membership is fixed by configuration,
//! so no configuration-change entry is ever written, and snapshots are not
//! carried (the log is never compacted).

use bytes::Bytes;

use super::prim::{list_len, text_len, Codec, Reader, Writer};
use super::MsgError;

/// Highest raft message kind (the engine's `MessageType` codes run 0..=18).
pub const MAX_RAFT_KIND: u8 = 18;
/// Most entries in one message. The engine's size cap per message keeps
/// real batches far below this and below [`MAX_FRAME`](super::MAX_FRAME).
pub const MAX_RAFT_ENTRIES: usize = 1024;
/// Longest entry payload: one encoded operation.
pub const MAX_RAFT_DATA: usize = 1024;
/// Longest context (of a message or an entry).
pub const MAX_RAFT_CONTEXT: usize = 64;

/// One message between replicas of the operation log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftMessage {
    /// The engine's message type code (0 ..= [`MAX_RAFT_KIND`]).
    pub kind: u8,
    /// Receiving replica.
    pub to: u64,
    /// Sending replica.
    pub from: u64,
    /// The sender's term.
    pub term: u64,
    /// Term of the entry before `entries` (or probed).
    pub log_term: u64,
    /// Index of the entry before `entries` (or probed).
    pub index: u64,
    /// Entries to append.
    pub entries: Vec<RaftEntry>,
    /// The sender's commit index.
    pub commit: u64,
    /// Term of the committed entry.
    pub commit_term: u64,
    /// An append or vote was refused.
    pub reject: bool,
    /// Where a refused append should go back to.
    pub reject_hint: u64,
    /// Asks for a snapshot from this index (never served: no compaction).
    pub request_snapshot: u64,
    /// Election priority.
    pub priority: i64,
    /// Opaque context (read-index and campaign tags).
    pub context: Bytes,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftEntry {
    /// The term it was written in.
    pub term: u64,
    /// Its place in the log.
    pub index: u64,
    /// The encoded operation (empty for a new leader's marker entry).
    pub data: Bytes,
    /// Which proposal it is, for the replica that proposed it.
    pub context: Bytes,
}

impl Codec for RaftEntry {
    fn wire_len(&self) -> usize {
        8 + 8 + text_len(&self.data) + text_len(&self.context)
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        w.u64(self.term);
        w.u64(self.index);
        w.blob("RaftEntry.data", &self.data, MAX_RAFT_DATA)?;
        w.blob("RaftEntry.context", &self.context, MAX_RAFT_CONTEXT)
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(Self {
            term: r.u64("RaftEntry.term")?,
            index: r.u64("RaftEntry.index")?,
            data: r.blob("RaftEntry.data", MAX_RAFT_DATA)?,
            context: r.blob("RaftEntry.context", MAX_RAFT_CONTEXT)?,
        })
    }
}

impl Codec for RaftMessage {
    fn wire_len(&self) -> usize {
        1 + 8 * 7 + 1 + 8 * 3 + text_len(&self.context) + list_len(&self.entries)
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        if self.kind > MAX_RAFT_KIND {
            return Err(MsgError::UnknownCode {
                kind: "raft message kind",
                value: self.kind,
            });
        }
        w.u8(self.kind);
        for value in [
            self.to,
            self.from,
            self.term,
            self.log_term,
            self.index,
            self.commit,
            self.commit_term,
        ] {
            w.u64(value);
        }
        w.bool(self.reject);
        w.u64(self.reject_hint);
        w.u64(self.request_snapshot);
        w.u64(self.priority as u64);
        w.blob("Raft.context", &self.context, MAX_RAFT_CONTEXT)?;
        w.list("Raft.entries", &self.entries, MAX_RAFT_ENTRIES)
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        let kind = r.u8("Raft.kind")?;
        if kind > MAX_RAFT_KIND {
            return Err(MsgError::UnknownCode {
                kind: "raft message kind",
                value: kind,
            });
        }
        Ok(Self {
            kind,
            to: r.u64("Raft.to")?,
            from: r.u64("Raft.from")?,
            term: r.u64("Raft.term")?,
            log_term: r.u64("Raft.log_term")?,
            index: r.u64("Raft.index")?,
            commit: r.u64("Raft.commit")?,
            commit_term: r.u64("Raft.commit_term")?,
            reject: r.bool("Raft.reject")?,
            reject_hint: r.u64("Raft.reject_hint")?,
            request_snapshot: r.u64("Raft.request_snapshot")?,
            priority: r.u64("Raft.priority")? as i64,
            context: r.blob("Raft.context", MAX_RAFT_CONTEXT)?,
            entries: r.list("Raft.entries", MAX_RAFT_ENTRIES)?,
        })
    }
}
