//! A coordinator's replica of the operation log (DESIGN §4): several
//! coordinators agree on one ordered log through Raft (the `raft` crate,
//! itself sans-IO: tick, step, ready). A write is proposed, committed once
//! a majority holds it, and only then applied; a coordinator cut off from
//! the majority keeps its writes as pending proposals, which nothing acts
//! on.
//!
//! The replica owns the engine and an in-memory copy of the log. Durability
//! is the driver's: every [`ReplicaOutput::Persist`] is written (entries
//! from the first one's index on replace what the store held there) and
//! acknowledged with [`Replica::persisted`] before the replica goes on, so
//! no vote or acknowledgement leaves before what it promises is on disk.
//!
//! The engine draws its election timeouts from the thread's random
//! generator; the replica overwrites each one with a draw from its own
//! seeded generator before the next tick, so a run stays reproducible.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::{self, ConfState, Entry, EntryType, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

use crate::control::msg::{RaftEntry, RaftMessage, MAX_RAFT_DATA};
use crate::csprng::Drbg;

/// How often the engine ticks unless configured otherwise.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader's word before a follower stands (randomized up
/// to twice this).
pub const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;
/// Bytes of entries the leader puts in one append, so a message stays far
/// below the control frame cap.
const MAX_APPEND_BYTES: u64 = 16 * 1024;
/// Appends in flight to one follower.
const MAX_INFLIGHT: usize = 64;
/// Inputs held while a persist is out; more are dropped (the engine
/// retries what matters).
const MAX_BACKLOG: usize = 4096;

/// How one replica is set up.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's id (1 and up, unique in the cluster).
    pub id: u64,
    /// Every replica of the cluster, this one included.
    pub voters: Vec<u64>,
    /// The engine's tick.
    pub tick: Duration,
}

/// The engine's durable vote and commit state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term seen.
    pub term: u64,
    /// Whom this replica voted for in `term` (0: nobody).
    pub vote: u64,
    /// The highest index known committed.
    pub commit: u64,
}

/// One entry of the replicated log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogEntry {
    /// The term it was written in.
    pub term: u64,
    /// Its index (from 1).
    pub index: u64,
    /// The encoded operation; empty for a new leader's marker entry.
    pub data: Bytes,
    /// Which proposal it is: the proposing replica's id and a nonce.
    pub context: Bytes,
}

/// What a store held at start-up.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// Every persisted entry, in order from index 1.
    pub entries: Vec<LogEntry>,
    /// The highest index the caller has already applied (replayed).
    pub applied: u64,
}

/// What the replica asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaOutput {
    /// Send to the replica `message.to`.
    Send(RaftMessage),
    /// Make durable, then call [`Replica::persisted`]: the hard state (if
    /// any) and the entries, which replace every stored entry from the
    /// first one's index on.
    Persist {
        /// The new hard state.
        hard_state: Option<HardState>,
        /// Entries to store.
        entries: Vec<LogEntry>,
    },
    /// A committed entry, in log order: apply it.
    Commit(LogEntry),
}

/// The role the replica plays now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks for votes.
    Candidate,
    /// Leads: proposals commit through it.
    Leader,
}

impl Role {
    /// The name status shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Follower => "follower",
            Self::Candidate => "candidate",
            Self::Leader => "leader",
        }
    }
}

/// The replica as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// This replica.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// The highest committed index it knows.
    pub commit: u64,
    /// The highest index it has applied.
    pub applied: u64,
    /// Its last log index.
    pub last_index: u64,
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The configuration or the restored state is not usable.
    #[error("replica {id}: {reason}")]
    Engine {
        /// The replica.
        id: u64,
        /// What the engine said.
        reason: String,
    },
}

/// An input held until the outstanding persist is acknowledged.
#[derive(Debug)]
enum Deferred {
    Step(eraftpb::Message),
    Propose { context: Bytes, data: Bytes },
    Tick,
}

/// One coordinator's replica. See the module docs.
pub struct Replica {
    raw: RawNode<MemStorage>,
    tick: Duration,
    next_tick: Instant,
    drbg: Drbg,
    /// The (term, role) whose election timeout was last drawn.
    drawn_for: (u64, StateRole),
    /// A ready whose entries the driver is making durable.
    held: Option<raft::Ready>,
    /// A persist is out and not yet acknowledged.
    awaiting: bool,
    /// Inputs that came while a persist was out: the engine must not move
    /// between handing out a ready and hearing it is durable.
    backlog: VecDeque<Deferred>,
    outputs: VecDeque<ReplicaOutput>,
    /// Incoming messages refused (undecodable kind or entry).
    refused: u64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A replica with what its store held.
    ///
    /// # Errors
    /// When the configuration is invalid (an id of 0, an id not among the
    /// voters) or the restored log does not fit the engine.
    pub fn new(
        config: &ReplicaConfig,
        restored: Restored,
        drbg: Drbg,
        now: Instant,
    ) -> Result<Self, ReplicaError> {
        let id = config.id;
        let fail = |reason: String| ReplicaError::Engine { id, reason };
        if !config.voters.contains(&id) {
            return Err(fail(format!("not among the voters {:?}", config.voters)));
        }
        let store =
            MemStorage::new_with_conf_state(ConfState::from((config.voters.clone(), vec![])));
        {
            let mut core = store.wl();
            let entries: Vec<Entry> = restored.entries.iter().map(to_entry).collect();
            core.append(&entries).map_err(|e| fail(e.to_string()))?;
            core.set_hardstate(eraftpb::HardState {
                term: restored.hard_state.term,
                vote: restored.hard_state.vote,
                commit: restored.hard_state.commit,
                ..eraftpb::HardState::default()
            });
        }
        let engine = raft::Config {
            id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied: restored.applied.min(restored.hard_state.commit),
            max_size_per_msg: MAX_APPEND_BYTES,
            max_inflight_msgs: MAX_INFLIGHT,
            // A leader that lost the majority steps down, and a replica
            // back from a partition does not unseat a working leader.
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        engine.validate().map_err(|e| fail(e.to_string()))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&engine, store, &logger).map_err(|e| fail(e.to_string()))?;
        let mut replica = Self {
            raw,
            tick: config.tick,
            next_tick: now + config.tick,
            drbg,
            drawn_for: (u64::MAX, StateRole::Follower),
            held: None,
            awaiting: false,
            backlog: VecDeque::new(),
            outputs: VecDeque::new(),
            refused: 0,
        };
        replica.redraw();
        Ok(replica)
    }

    /// Proposes an entry. Returns false when no leader is known to take it
    /// (the caller keeps it and proposes again later); true does not mean
    /// it will commit, only that it left.
    pub fn propose(&mut self, context: Bytes, data: Bytes) -> bool {
        if data.len() > MAX_RAFT_DATA {
            tracing::error!(len = data.len(), "an operation too large to replicate");
            return false;
        }
        if self.awaiting {
            let known = self.raw.raft.leader_id != raft::INVALID_ID;
            return known && self.defer(Deferred::Propose { context, data });
        }
        let sent = self.raw.propose(context.to_vec(), data.to_vec()).is_ok();
        self.drive();
        sent
    }

    /// A message from another replica. Undecodable or misaddressed
    /// messages are dropped and counted.
    pub fn step(&mut self, message: &RaftMessage) {
        let Some(m) = from_wire(message) else {
            self.refused += 1;
            return;
        };
        if m.to != self.raw.raft.id || !self.raw.raft.prs().conf().voters().contains(m.from) {
            self.refused += 1;
            return;
        }
        if self.awaiting {
            self.defer(Deferred::Step(m));
            return;
        }
        if self.raw.step(m).is_err() {
            self.refused += 1;
        }
        self.drive();
    }

    /// The last [`ReplicaOutput::Persist`] is durable.
    pub fn persisted(&mut self) {
        if !self.awaiting {
            return;
        }
        self.awaiting = false;
        if let Some(mut ready) = self.held.take() {
            for m in ready.take_persisted_messages() {
                self.send(m);
            }
            let mut light = self.raw.advance(ready);
            for m in light.take_messages() {
                self.send(m);
            }
            for e in light.take_committed_entries() {
                self.commit(e);
            }
            self.raw.advance_apply();
            if let Some(commit) = light.commit_index() {
                let mut hs = self.hard_state();
                hs.commit = commit;
                self.outputs.push_back(ReplicaOutput::Persist {
                    hard_state: Some(hs),
                    entries: Vec::new(),
                });
                self.awaiting = true;
                return;
            }
        }
        self.drive();
        while !self.awaiting {
            let Some(input) = self.backlog.pop_front() else {
                break;
            };
            match input {
                Deferred::Step(m) => {
                    if self.raw.step(m).is_err() {
                        self.refused += 1;
                    }
                }
                Deferred::Propose { context, data } => {
                    // Dropped if the leader went away meanwhile; the
                    // proposer proposes again when it does not commit.
                    let _ = self.raw.propose(context.to_vec(), data.to_vec());
                }
                Deferred::Tick => {
                    self.raw.tick();
                }
            }
            self.drive();
        }
    }

    /// Holds an input until the persist is acknowledged; false when the
    /// backlog is full and it was dropped.
    fn defer(&mut self, input: Deferred) -> bool {
        if self.backlog.len() >= MAX_BACKLOG {
            self.refused += 1;
            return false;
        }
        self.backlog.push_back(input);
        true
    }

    /// Ticks the engine for every tick period passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.next_tick <= now {
            if self.awaiting {
                self.defer(Deferred::Tick);
            } else {
                self.raw.tick();
                self.redraw();
            }
            self.next_tick += self.tick;
        }
        self.drive();
    }

    /// When the engine next ticks.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<ReplicaOutput> {
        self.outputs.pop_front()
    }

    /// Role, leader, term and indexes.
    pub fn status(&self) -> ReplicaStatus {
        let raft = &self.raw.raft;
        ReplicaStatus {
            id: raft.id,
            role: match raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
                StateRole::Follower => Role::Follower,
            },
            leader: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: raft.raft_log.applied,
            last_index: raft.raft_log.last_index(),
        }
    }

    /// Messages from other replicas that were dropped.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn hard_state(&self) -> HardState {
        let hs = self.raw.raft.hard_state();
        HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        }
    }

    /// Draws a fresh election timeout whenever the engine reset its own
    /// (a new term or role), from the seeded generator.
    fn redraw(&mut self) {
        let now = (self.raw.raft.term, self.raw.raft.state);
        if now == self.drawn_for {
            return;
        }
        self.drawn_for = now;
        let span = self.drbg.next_u64() % ELECTION_TICKS as u64;
        self.raw
            .raft
            .set_randomized_election_timeout(ELECTION_TICKS + span as usize);
    }

    /// Takes what the engine has ready, up to the next persist.
    fn drive(&mut self) {
        self.redraw();
        if self.awaiting || !self.raw.has_ready() {
            return;
        }
        let mut ready = self.raw.ready();
        for m in ready.take_messages() {
            self.send(m);
        }
        if !ready.snapshot().data.is_empty() || ready.snapshot().get_metadata().index != 0 {
            // The log is never compacted, so no snapshot is ever made.
            tracing::error!("the replicated log received a snapshot; ignored");
        }
        for e in ready.take_committed_entries() {
            self.commit(e);
        }
        let entries: Vec<LogEntry> = ready.entries().iter().map(from_entry).collect();
        let hard_state = ready.hs().map(|hs| HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        });
        if let Err(err) = self.raw.mut_store().wl().append(ready.entries()) {
            tracing::error!(%err, "the in-memory log refused entries");
        }
        if let Some(hs) = ready.hs() {
            self.raw.mut_store().wl().set_hardstate(hs.clone());
        }
        self.held = Some(ready);
        self.awaiting = true;
        if hard_state.is_none() && entries.is_empty() {
            // Nothing to make durable (a heartbeat, a commit to apply).
            self.persisted();
            return;
        }
        self.outputs.push_back(ReplicaOutput::Persist {
            hard_state,
            entries,
        });
    }

    fn send(&mut self, m: eraftpb::Message) {
        match to_wire(&m) {
            Some(message) => self.outputs.push_back(ReplicaOutput::Send(message)),
            None => {
                tracing::error!(kind = ?m.get_msg_type(), "a raft message that cannot be carried")
            }
        }
    }

    fn commit(&mut self, e: Entry) {
        self.outputs
            .push_back(ReplicaOutput::Commit(from_entry(&e)));
    }
}

fn to_entry(e: &LogEntry) -> Entry {
    let mut out = Entry::default();
    out.set_entry_type(EntryType::EntryNormal);
    out.term = e.term;
    out.index = e.index;
    out.data = e.data.clone();
    out.context = e.context.clone();
    out
}

fn from_entry(e: &Entry) -> LogEntry {
    LogEntry {
        term: e.term,
        index: e.index,
        data: e.data.clone(),
        context: e.context.clone(),
    }
}

/// The engine's message in the control codec's shape; `None` for what
/// this cluster never carries (snapshots, configuration changes).
fn to_wire(m: &eraftpb::Message) -> Option<RaftMessage> {
    if m.get_msg_type() == MessageType::MsgSnapshot
        || m.entries
            .iter()
            .any(|e| e.get_entry_type() != EntryType::EntryNormal)
    {
        return None;
    }
    Some(RaftMessage {
        kind: u8::try_from(m.get_msg_type() as i32).ok()?,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m
            .entries
            .iter()
            .map(|e| RaftEntry {
                term: e.term,
                index: e.index,
                data: e.data.clone(),
                context: e.context.clone(),
            })
            .collect(),
        commit: m.commit,
        commit_term: m.commit_term,
        reject: m.reject,
        reject_hint: m.reject_hint,
        request_snapshot: m.request_snapshot,
        priority: m.priority,
        context: m.context.clone(),
    })
}

/// A peer's message for the engine; `None` for kinds a peer never sends
/// (the engine's local-only kinds: 0 hup, 1 beat, 10 unreachable, 11 snapshot
/// status, 12 check quorum; 7, snapshots; and 13 and 14, leadership
/// transfer, which this cluster never asks for: a `TimeoutNow` would start
/// an election past the pre-vote). A snapshot request is dropped too:
/// none is ever served.
fn from_wire(m: &RaftMessage) -> Option<eraftpb::Message> {
    use MessageType as K;
    let kind = match m.kind {
        3 => K::MsgAppend,
        4 => K::MsgAppendResponse,
        5 => K::MsgRequestVote,
        6 => K::MsgRequestVoteResponse,
        8 => K::MsgHeartbeat,
        9 => K::MsgHeartbeatResponse,
        2 => K::MsgPropose,
        15 => K::MsgReadIndex,
        16 => K::MsgReadIndexResp,
        17 => K::MsgRequestPreVote,
        18 => K::MsgRequestPreVoteResponse,
        _ => return None,
    };
    let mut out = eraftpb::Message::default();
    out.set_msg_type(kind);
    out.to = m.to;
    out.from = m.from;
    out.term = m.term;
    out.log_term = m.log_term;
    out.index = m.index;
    out.entries = m
        .entries
        .iter()
        .map(|e| {
            to_entry(&LogEntry {
                term: e.term,
                index: e.index,
                data: e.data.clone(),
                context: e.context.clone(),
            })
        })
        .collect();
    out.commit = m.commit;
    out.commit_term = m.commit_term;
    out.reject = m.reject;
    out.reject_hint = m.reject_hint;
    out.request_snapshot = 0;
    out.priority = m.priority;
    out.context = m.context.clone();
    Some(out)
}

#[cfg(test)]
mod tests;
