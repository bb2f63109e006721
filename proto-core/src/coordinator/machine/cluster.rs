//! Several coordinators, one operation log (DESIGN §4): each coordinator
//! holds a [`Replica`] and dials every other one over the control
//! protocol (QUIC, mutual TLS with its server certificate as the client
//! certificate). Its raft messages leave on the session it dialled; what
//! a peer dials in only brings that peer's.
//!
//! A write is proposed with a tag (this coordinator's replica id and a
//! nonce) and applied when it commits, by every coordinator in the same
//! order. A write that no longer applies when it commits (two
//! coordinators enrolled the same node at once) is skipped by all of
//! them alike, and its proposer refuses whoever asked. A write that does
//! not commit is proposed again every [`RETRY`]; its tag makes a second
//! copy in the log a no-op. A coordinator cut off from the majority thus
//! holds its writes as pending proposals, and nothing acts on them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls_pki_types::CertificateDer;

use super::{Coordinator, CoordinatorEvent, Waiting};
use crate::control::msg::{FrameDecoder, Message, RaftMessage, RejectCode};
use crate::control::transport::{Carrier, SessionId};
use crate::coordinator::registry::{Op, Registry, RegistryError};
use crate::coordinator::replica::{LogEntry, Replica, ReplicaOutput, ReplicaStatus};
use crate::machine::Output;

/// The nonce bit of a write imported from a coordinator's own operation
/// log (the rest is its record's sequence number); other writes never
/// carry it.
const IMPORTED: u64 = 1 << 63;

/// How long an uncommitted write waits before it is proposed again.
pub const RETRY: Duration = Duration::from_secs(2);
/// How long an admin waits for a write before being told it is pending:
/// longer than an election after a leader is lost (about 1 to 3 s), well
/// within `tlctl`'s default wait of 10 s.
pub const NO_MAJORITY_AFTER: Duration = Duration::from_secs(6);
/// First wait before dialling a peer again; doubles up to [`DIAL_MAX`].
const DIAL_MIN: Duration = Duration::from_millis(500);
/// Longest wait between dials.
const DIAL_MAX: Duration = Duration::from_secs(3);

/// Another coordinator of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPeer {
    /// Its replica id.
    pub id: u64,
    /// Its name (its server certificate names it).
    pub name: String,
    /// Its control address (QUIC).
    pub addr: SocketAddr,
}

/// How a coordinator takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This coordinator's replica id.
    pub id: u64,
    /// The other coordinators.
    pub peers: Vec<ClusterPeer>,
    /// TLS for dialling them: the root as trust anchor, this coordinator's
    /// server certificate and key as the client identity.
    pub client_tls: Arc<rustls::ClientConfig>,
}

/// Counters of the cluster, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterCounters {
    /// Raft messages sent to peers.
    pub sent: u64,
    /// Raft messages received from peers.
    pub received: u64,
    /// Raft messages dropped: no session to their peer, or from a session
    /// that is not theirs.
    pub dropped: u64,
    /// Own writes proposed again after [`RETRY`].
    pub reproposed: u64,
    /// Committed writes that no longer applied (skipped everywhere).
    pub skipped: u64,
}

/// Which proposal a log entry is: the proposing replica and a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag {
    origin: u64,
    nonce: u64,
}

impl Tag {
    fn encode(self) -> Bytes {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.nonce.to_be_bytes());
        Bytes::from(out)
    }

    fn decode(context: &[u8]) -> Option<Self> {
        let origin = u64::from_be_bytes(context.get(..8)?.try_into().ok()?);
        let nonce = u64::from_be_bytes(context.get(8..16)?.try_into().ok()?);
        (context.len() == 16).then_some(Self { origin, nonce })
    }
}

/// What one committed entry did to the registry.
#[derive(Debug)]
pub enum Applied {
    /// A leader's empty marker entry, or a copy of a proposal already
    /// applied: nothing.
    Nothing,
    /// The operation applied.
    Done {
        /// The proposal, when the entry carries its tag.
        tag: Option<Tag>,
        /// The operation.
        op: Op,
    },
    /// The operation no longer applied when it committed (another write
    /// came first): skipped, by every coordinator alike.
    Refused {
        /// The proposal, when the entry carries its tag.
        tag: Option<Tag>,
        /// Why.
        err: RegistryError,
    },
    /// The entry does not decode: skipped.
    Corrupt {
        /// The proposal, when the entry carries its tag.
        tag: Option<Tag>,
        /// Why.
        why: String,
    },
}

/// Applies one committed entry to `registry`, deterministically: every
/// coordinator, live or replaying, does the same with the same entry.
fn apply_entry(registry: &mut Registry, tags: &mut BTreeSet<Tag>, entry: &LogEntry) -> Applied {
    if entry.data.is_empty() {
        return Applied::Nothing;
    }
    let tag = Tag::decode(&entry.context);
    if let Some(tag) = tag {
        if !tags.insert(tag) {
            return Applied::Nothing;
        }
    }
    let op = match Op::decode(&entry.data) {
        Ok(op) => op,
        Err(err) => {
            return Applied::Corrupt {
                tag,
                why: err.to_string(),
            }
        }
    };
    match registry.apply(&op) {
        Ok(()) => Applied::Done { tag, op },
        Err(err) => Applied::Refused { tag, err },
    }
}

/// The registry and the tags of applied proposals: what the committed
/// entries build.
#[derive(Debug, Default, Clone)]
pub struct AppliedLog {
    /// The registry.
    pub registry: Registry,
    tags: BTreeSet<Tag>,
}

impl AppliedLog {
    /// Replays `entries` (the committed ones, in order).
    pub fn replay<'a>(entries: impl IntoIterator<Item = &'a LogEntry>) -> Self {
        let mut log = Self::default();
        for entry in entries {
            match apply_entry(&mut log.registry, &mut log.tags, entry) {
                Applied::Refused { err, .. } => {
                    tracing::debug!(index = entry.index, %err, "a committed write skipped at replay");
                }
                Applied::Corrupt { why, .. } => {
                    tracing::error!(index = entry.index, %why, "a committed entry does not decode; skipped");
                }
                Applied::Nothing | Applied::Done { .. } => {}
            }
        }
        log
    }
}

/// A dialled session to one peer.
#[derive(Debug)]
struct Link {
    peer: ClusterPeer,
    session: Option<SessionId>,
    up: bool,
    next_dial: Instant,
    backoff: Duration,
    /// Frames the peer sends back on this session (when its own dialled
    /// session to us is not up, it answers here).
    decoder: FrameDecoder,
}

/// A coordinator's part of the cluster.
#[derive(Debug)]
pub(super) struct Cluster {
    config: ClusterConfig,
    replica: Replica,
    links: Vec<Link>,
    tags: BTreeSet<Tag>,
    next_nonce: u64,
    /// Own writes proposed and not yet committed, by nonce, with when
    /// they were last proposed.
    pub(super) proposed: BTreeMap<u64, Instant>,
    pub(super) counters: ClusterCounters,
    /// Outputs are being moved on: a write proposed while a committed
    /// entry is applied must not apply the next entries in the middle.
    pumping: bool,
}

impl Cluster {
    pub(super) fn new(
        config: ClusterConfig,
        replica: Replica,
        applied: &AppliedLog,
        nonce_seed: u64,
        now: Instant,
    ) -> Self {
        let links = config
            .peers
            .iter()
            .map(|peer| Link {
                peer: peer.clone(),
                session: None,
                up: false,
                next_dial: now,
                backoff: DIAL_MIN,
                decoder: FrameDecoder::new(),
            })
            .collect();
        Self {
            config,
            replica,
            links,
            tags: applied.tags.clone(),
            next_nonce: nonce_seed,
            proposed: BTreeMap::new(),
            counters: ClusterCounters::default(),
            pumping: false,
        }
    }

    fn peer_of_session(&self, session: SessionId) -> Option<usize> {
        self.links.iter().position(|l| l.session == Some(session))
    }
}

/// What status shows of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    /// The replica.
    pub replica: ReplicaStatus,
    /// Peers and whether the session dialled to each is up.
    pub peers: Vec<(ClusterPeer, bool)>,
    /// Own writes waiting to commit.
    pub pending: usize,
    /// Counters.
    pub counters: ClusterCounters,
}

impl Coordinator {
    /// Joins a cluster: writes go through `replica` from now on. `applied`
    /// is what the log replayed into the registry this coordinator was
    /// built with.
    pub fn join_cluster(
        &mut self,
        config: ClusterConfig,
        replica: Replica,
        applied: &AppliedLog,
        now: Instant,
    ) {
        let nonce = self.drbg.next_u64();
        self.cluster = Some(Cluster::new(config, replica, applied, nonce, now));
        self.pump_replica(now);
    }

    /// Proposes an operation of a log this coordinator kept before it
    /// joined the cluster, unchecked: if the cluster's log already has it
    /// (another coordinator imported the same), it is skipped at commit.
    /// Record `seq` of that log is proposed under a tag of its own, so a
    /// coordinator restarted before all of them committed proposes again
    /// only those the log does not hold yet; returns false for one it
    /// holds.
    pub fn import(&mut self, now: Instant, seq: u64, op: Op) -> bool {
        let Some(c) = self.cluster.as_ref() else {
            return false;
        };
        let nonce = IMPORTED | seq;
        let tag = Tag {
            origin: c.config.id,
            nonce,
        };
        if c.tags.contains(&tag) {
            return false;
        }
        self.waiting.push_back(super::Write {
            op: op.clone(),
            waiting: Waiting::Own,
            nonce,
            since: now,
        });
        self.propose_as(now, &op, nonce);
        true
    }

    /// The cluster as status shows it; `None` for a lone coordinator.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        let c = self.cluster.as_ref()?;
        Some(ClusterStatus {
            replica: c.replica.status(),
            peers: c.links.iter().map(|l| (l.peer.clone(), l.up)).collect(),
            pending: c.proposed.len(),
            counters: c.counters.clone(),
        })
    }

    /// The last [`CoordinatorEvent::Persist`] is durable.
    pub fn persisted(&mut self, now: Instant) {
        if let Some(c) = self.cluster.as_mut() {
            c.replica.persisted();
        }
        self.pump_replica(now);
        self.flush(now);
    }

    /// Proposes a write of this coordinator's; returns its nonce.
    pub(super) fn propose(&mut self, now: Instant, op: &Op) -> u64 {
        let Some(c) = self.cluster.as_mut() else {
            return 0;
        };
        let nonce = c.next_nonce & !IMPORTED;
        c.next_nonce = c.next_nonce.wrapping_add(1);
        self.propose_as(now, op, nonce);
        nonce
    }

    /// Proposes `op` under `nonce`.
    fn propose_as(&mut self, now: Instant, op: &Op, nonce: u64) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let tag = Tag {
            origin: c.config.id,
            nonce,
        };
        c.proposed.insert(nonce, now);
        if !c.replica.propose(tag.encode(), Bytes::from(op.encode())) {
            tracing::debug!(nonce, "no leader known; the write waits");
        }
        self.pump_replica(now);
    }

    /// Proposes again every own write that has waited [`RETRY`]; an
    /// admin still waiting for one after [`NO_MAJORITY_AFTER`] is told it
    /// is not committed yet (the write stays pending and nobody is
    /// answered again).
    pub(super) fn repropose(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let due: Vec<u64> = c
            .proposed
            .iter()
            .filter(|(_, &at)| now.saturating_duration_since(at) >= RETRY)
            .map(|(&n, _)| n)
            .collect();
        for nonce in due {
            let op = self
                .waiting
                .iter()
                .find(|w| w.nonce == nonce)
                .map(|w| w.op.clone());
            let Some(c) = self.cluster.as_mut() else {
                return;
            };
            let Some(op) = op else {
                c.proposed.remove(&nonce);
                continue;
            };
            let tag = Tag {
                origin: c.config.id,
                nonce,
            };
            c.proposed.insert(nonce, now);
            c.counters.reproposed += 1;
            c.replica.propose(tag.encode(), Bytes::from(op.encode()));
            self.tell_pending(now, nonce);
        }
        self.pump_replica(now);
    }

    /// The admin waiting for write `nonce` learns it is not committed and
    /// stays pending; the write is then this coordinator's to finish.
    fn tell_pending(&mut self, now: Instant, nonce: u64) {
        let Some(write) = self.waiting.iter_mut().find(|w| w.nonce == nonce) else {
            return;
        };
        if !matches!(write.waiting, Waiting::Admin { .. })
            || now.saturating_duration_since(write.since) < NO_MAJORITY_AFTER
        {
            return;
        }
        let Waiting::Admin {
            conn, request_id, ..
        } = std::mem::replace(&mut write.waiting, Waiting::Own)
        else {
            return;
        };
        tracing::warn!(
            request_id,
            "an admin write is not committed after {} s: no majority reachable; it stays pending",
            NO_MAJORITY_AFTER.as_secs()
        );
        self.send(
            now,
            conn,
            &Message::AdminResponse {
                request_id,
                result: Err(crate::control::msg::AdminError {
                    code: RejectCode::NoMajority,
                    reason: format!(
                        "not committed after {} s: this coordinator reaches no majority of the \
                         cluster. The write stays pending here and takes effect if a majority \
                         commits it later (see cluster.pending in /status)",
                        NO_MAJORITY_AFTER.as_secs()
                    ),
                }),
            },
        );
    }

    pub(super) fn next_cluster_timeout(&self) -> Option<Instant> {
        let c = self.cluster.as_ref()?;
        let retry = c.proposed.values().min().map(|&at| at + RETRY);
        let dial = c
            .links
            .iter()
            .filter(|l| l.session.is_none())
            .map(|l| l.next_dial)
            .min();
        [Some(c.replica.poll_timeout()), retry, dial]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn cluster_timeout(&mut self, now: Instant) {
        if self.cluster.is_none() {
            return;
        }
        self.dial(now);
        if let Some(c) = self.cluster.as_mut() {
            c.replica.handle_timeout(now);
        }
        self.repropose(now);
    }

    /// Dials every peer without a session whose wait is over.
    fn dial(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if !self.bound {
            return;
        }
        for link in c.links.iter_mut().filter(|l| l.session.is_none()) {
            if link.next_dial > now {
                continue;
            }
            link.next_dial = now + link.backoff;
            link.backoff = (link.backoff * 2).min(DIAL_MAX);
            match self.transport.connect(
                now,
                Carrier::Quic,
                link.peer.addr,
                &link.peer.name,
                c.config.client_tls.clone(),
            ) {
                Ok(session) => {
                    tracing::debug!(peer = %link.peer.name, %session, "dialling a peer coordinator");
                    link.session = Some(session);
                }
                Err(err) => {
                    tracing::warn!(peer = %link.peer.name, %err, "a peer coordinator cannot be dialled");
                }
            }
        }
    }

    /// Whether `session` is one this coordinator dialled to a peer; a
    /// connect or close of it is handled here.
    pub(super) fn cluster_session_event(
        &mut self,
        session: SessionId,
        connected: Option<&[CertificateDer<'static>]>,
    ) -> bool {
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        let Some(i) = c.peer_of_session(session) else {
            return false;
        };
        let link = &mut c.links[i];
        match connected {
            Some(chain) => {
                tracing::info!(peer = %link.peer.name, "peer coordinator connected");
                link.up = true;
                link.backoff = DIAL_MIN;
                link.decoder = FrameDecoder::new();
                // TLS checked the chain against the root for the peer's
                // name: its intermediate signs the tokens it grants, which
                // this coordinator then accepts too.
                if let [_, intermediate] = chain {
                    if let Ok(key) = crate::pki::ed25519_public_key(intermediate) {
                        let name = link.peer.name.clone();
                        self.config.verifier.trust(&name, key);
                    }
                }
            }
            None => {
                if link.up {
                    tracing::warn!(peer = %link.peer.name, "peer coordinator session lost");
                }
                link.up = false;
                link.session = None;
            }
        }
        true
    }

    /// Whether `session` is one this coordinator dialled to a peer.
    pub(super) fn dialled_peer(&self, session: SessionId) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.peer_of_session(session).is_some())
    }

    /// Bytes on a session this coordinator dialled: the peer's raft
    /// messages, when it answers on the session we opened.
    pub(super) fn on_dialled_bytes(&mut self, now: Instant, session: SessionId, bytes: &[u8]) {
        let mut messages = Vec::new();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(i) = c.peer_of_session(session) else {
            return;
        };
        let link = &mut c.links[i];
        let id = link.peer.id;
        link.decoder.push(bytes);
        loop {
            match link.decoder.next() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(peer = %link.peer.name, %err, "a peer coordinator sent a malformed frame");
                    c.counters.dropped += 1;
                    break;
                }
            }
        }
        for message in messages {
            match message {
                Message::Raft(m) => self.on_raft(now, id, &m),
                Message::Reject { code, reason } => {
                    tracing::warn!(peer = id, code = code.as_str(), %reason, "a peer coordinator refused this one");
                }
                _ => {}
            }
        }
    }

    /// The session to send raft messages to peer `id` on: the one dialled
    /// to it, or else the one it dialled to us.
    fn session_to(&self, id: u64) -> Option<SessionId> {
        let c = self.cluster.as_ref()?;
        let link = c.links.iter().find(|l| l.peer.id == id)?;
        if link.up {
            return link.session;
        }
        self.sessions
            .iter()
            .find(|(_, s)| matches!(&s.peer, super::Peer::Coordinator { name } if *name == link.peer.name))
            .map(|(&conn, _)| conn)
    }

    /// The replica id of the peer coordinator `name`, if it is one.
    pub(super) fn peer_id(&self, name: &str) -> Option<u64> {
        let c = self.cluster.as_ref()?;
        c.links
            .iter()
            .find(|l| l.peer.name == name)
            .map(|l| l.peer.id)
    }

    /// A raft message from the peer coordinator `from` (its session's
    /// certificate says so).
    pub(super) fn on_raft(&mut self, now: Instant, from: u64, message: &RaftMessage) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if message.from != from {
            c.counters.dropped += 1;
            return;
        }
        c.counters.received += 1;
        c.replica.step(message);
        self.pump_replica(now);
    }

    /// Moves the replica's outputs on: messages to peers, persists to the
    /// driver, commits to the registry.
    pub(super) fn pump_replica(&mut self, now: Instant) {
        match self.cluster.as_mut() {
            // The outer pump goes on with what this call would have taken.
            Some(c) if c.pumping => return,
            Some(c) => c.pumping = true,
            None => return,
        }
        self.pump_replica_outputs(now);
        if let Some(c) = self.cluster.as_mut() {
            c.pumping = false;
        }
    }

    fn pump_replica_outputs(&mut self, now: Instant) {
        loop {
            let Some(c) = self.cluster.as_mut() else {
                return;
            };
            let Some(out) = c.replica.poll_output() else {
                return;
            };
            match out {
                ReplicaOutput::Send(message) => match self.session_to(message.to) {
                    Some(session) => {
                        if let Some(c) = self.cluster.as_mut() {
                            c.counters.sent += 1;
                        }
                        self.send(now, session, &Message::Raft(message));
                    }
                    None => {
                        if let Some(c) = self.cluster.as_mut() {
                            c.counters.dropped += 1;
                        }
                    }
                },
                ReplicaOutput::Persist {
                    hard_state,
                    entries,
                } => {
                    self.outputs
                        .push_back(Output::Event(CoordinatorEvent::Persist {
                            hard_state,
                            entries,
                        }));
                    // The driver answers with `persisted`; nothing more
                    // comes from the replica until then.
                    return;
                }
                ReplicaOutput::Commit(entry) => self.apply_committed(now, &entry),
            }
        }
    }

    fn apply_committed(&mut self, now: Instant, entry: &LogEntry) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let applied = apply_entry(&mut self.registry, &mut c.tags, entry);
        let own = |tag: Option<Tag>, c: &mut Cluster| {
            tag.filter(|t| t.origin == c.config.id)
                .map(|t| t.nonce)
                .filter(|n| c.proposed.remove(n).is_some())
        };
        match applied {
            Applied::Nothing => {}
            Applied::Corrupt { tag, why } => {
                tracing::error!(index = entry.index, %why, "a committed entry does not decode; skipped");
                // Never proposed again: it would not decode the next time.
                if let Some(w) = own(tag, c).and_then(|n| self.take_waiting(n)) {
                    let reason = format!("the write did not decode when it committed: {why}");
                    let codes = (RejectCode::Internal, RejectCode::Internal);
                    self.refuse_write(now, w.waiting, codes, reason);
                }
            }
            Applied::Refused { tag, err } => {
                c.counters.skipped += 1;
                tracing::info!(index = entry.index, %err, "a committed write no longer applies; skipped");
                if let Some(w) = own(tag, c).and_then(|n| self.take_waiting(n)) {
                    self.refuse_skipped(now, w.waiting, &err);
                }
            }
            Applied::Done { tag, op } => {
                tracing::info!(index = entry.index, ?op, "operation committed");
                let waiting = own(tag, c).and_then(|n| self.take_waiting(n));
                self.answer(now, &op, waiting.map(|w| w.waiting));
                self.after_change(now, &op);
            }
        }
    }

    fn take_waiting(&mut self, nonce: u64) -> Option<super::Write> {
        let i = self.waiting.iter().position(|w| w.nonce == nonce)?;
        self.waiting.remove(i)
    }

    /// Whoever asked for a write that was skipped at commit learns why.
    fn refuse_skipped(&mut self, now: Instant, waiting: Waiting, err: &RegistryError) {
        let session_code = match err {
            RegistryError::JoinTokenUsed(_) => RejectCode::JoinTokenUsed,
            RegistryError::JoinTokenExpired(_) => RejectCode::JoinTokenExpired,
            _ => RejectCode::Conflict,
        };
        let admin_code = super::refusal_code(err);
        self.refuse_write(now, waiting, (session_code, admin_code), err.to_string());
    }

    /// Refuses whoever asked for a write that will not take effect: a
    /// session (enrollment, renewal) with the first code, an admin with
    /// the second.
    fn refuse_write(
        &mut self,
        now: Instant,
        waiting: Waiting,
        (session_code, admin_code): (RejectCode, RejectCode),
        reason: String,
    ) {
        match waiting {
            Waiting::Enroll { conn, .. } | Waiting::Renew { conn, .. } => {
                self.refuse(now, conn, session_code, reason);
            }
            Waiting::Admin {
                conn, request_id, ..
            } => self.send(
                now,
                conn,
                &Message::AdminResponse {
                    request_id,
                    result: Err(crate::control::msg::AdminError {
                        code: admin_code,
                        reason,
                    }),
                },
            ),
            Waiting::Own => {}
        }
    }
}
