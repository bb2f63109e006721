//! The coordinator as a state machine: control sessions with mutual TLS on
//! one UDP socket (QUIC) and a TCP listener on the same port number (the
//! fallback), enrollment, admission tokens, the service registry, the
//! association table and admin commands. Writes to the operation log leave
//! as [`CoordinatorEvent::Append`]; the driver makes each durable and calls
//! [`Coordinator::committed`], and only then is the write applied and
//! acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::assoc::{desired_for, AssocTable, Ends, LiveAssoc, Reconciled};
use super::lapse::Lapses;
use super::reflector;
use super::registry::{Admission, Op, Registry, RegistryError, ServiceRef};
use super::relay_place::Relays;
use super::replica::{HardState, LogEntry};
use super::throttle::{HandshakeBudget, HandshakeLimit};
use crate::control::msg::{
    self, AdminCommand, AdminError, AdminReply, AdmissionState, FrameDecoder, Message, Mode, Name,
    NodeInfo, PeerRef, RejectCode, RelayPolicy, ServiceDecl, WithdrawReason,
};
use crate::control::quic::{CloseReason, QuicConfig, QuicError, QuicTiming};
use crate::control::token::{JoinToken, TokenSigner, TokenVerifier};
use crate::control::transport::{Carrier, ControlEvent, ControlTransport, SessionId};
use crate::csprng::Drbg;
use crate::id::{AssocId, NodeId, SocketId};
use crate::machine::{Input, Output, StateMachine, Transmit};
use crate::pki::{self, Role};
use crate::time::WallClock;

/// The coordinator's UDP socket: QUIC, and the reflector on the same port.
pub const CONTROL_SOCKET: SocketId = SocketId(0);

/// The first extra reflector socket; the others follow in order.
pub const REFLECTOR_SOCKETS: SocketId = SocketId(2);

/// The coordinator's TCP listener, opened on the UDP socket's address (the
/// same port number) once that is bound.
pub const STREAM_LISTENER: SocketId = SocketId(1);

pub use super::assoc::{
    DEFAULT_ASSOC_KEY_LIFETIME_S, MAX_ASSOC_KEY_LIFETIME_S, MIN_ASSOC_KEY_LIFETIME_S,
};
pub use issue::{DEFAULT_NODE_CERT_LIFETIME_S, MAX_NODE_CERT_LIFETIME_S, MIN_NODE_CERT_LIFETIME_S};

mod cluster;
mod edge;
mod issue;
mod lifecycle;
mod punch;
mod relaying;

pub use cluster::{
    Applied, AppliedLog, ClusterConfig, ClusterCounters, ClusterPeer, ClusterStatus, Tag, RETRY,
};
pub use punch::{PUNCH_LEAD_MAX, PUNCH_LEAD_MIN};
pub use relaying::RelayPlacement;

/// How a coordinator is set up.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Its name (the token issuer).
    pub name: String,
    /// Where its UDP socket binds.
    pub listen: SocketAddr,
    /// TLS server configuration, with optional client certificates (nodes
    /// without one may only enroll).
    pub tls: Arc<rustls::ServerConfig>,
    /// The intermediate certificate (DER) that signs node certificates.
    pub intermediate_der: Vec<u8>,
    /// Its private key (PKCS#8), also the token signing key.
    pub intermediate_key: Vec<u8>,
    /// Trusted token issuers (every intermediate of the root).
    pub verifier: TokenVerifier,
    /// Admission token lifetime.
    pub token_lifetime_s: u64,
    /// Wall-clock anchor.
    pub wall_clock: WallClock,
    /// Session keepalive timing.
    pub timing: QuicTiming,
    /// How many new sessions start per second; excess attempts are refused
    /// before any TLS work and the nodes retry after their backoff.
    pub handshake_limit: HandshakeLimit,
}

/// What the coordinator reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoordinatorEvent {
    /// Make this operation durable, then call [`Coordinator::committed`]
    /// (a lone coordinator).
    Append(Op),
    /// Make this part of the replicated log durable, then call
    /// [`Coordinator::persisted`] (a coordinator of a cluster): the hard
    /// state, if any, and the entries, which replace every stored entry
    /// from the first one's index on.
    Persist {
        /// The new hard state.
        hard_state: Option<HardState>,
        /// Entries to store.
        entries: Vec<LogEntry>,
    },
    /// A session was refused or ended by the coordinator, with the reason.
    Refused {
        /// The peer.
        remote: SocketAddr,
        /// Why.
        code: RejectCode,
        /// Details.
        reason: String,
    },
    /// A node session is up.
    NodeOnline(String),
    /// A node session ended.
    NodeOffline(String),
    /// What the hosted relay reports.
    Relay(crate::relay::RelayEvent),
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinatorCounters {
    /// Sessions accepted, by kind.
    pub sessions_node: u64,
    /// Admin sessions accepted.
    pub sessions_admin: u64,
    /// Refusals, by code name.
    pub refused: BTreeMap<&'static str, u64>,
    /// Tokens granted.
    pub tokens_granted: u64,
    /// Certificates issued.
    pub enrolled: u64,
    /// Enrollments answered again: the same key retried its join token
    /// after the first answer was lost.
    pub enrollments_repeated: u64,
    /// Certificates renewed.
    pub renewed: u64,
    /// Renewals refused (also counted in `refused` by their code).
    pub renewals_refused: u64,
    /// Sessions started (handshakes begun), of every kind.
    pub handshakes: u64,
    /// Session attempts refused by the handshake limit.
    pub handshakes_throttled: u64,
    /// Admissions that lapsed because a node's token expired unrefreshed.
    pub lapsed: u64,
    /// Handshakes that failed in TLS, before any session existed: a client
    /// certificate of another root, expired or unfit, a wrong ALPN.
    pub handshakes_failed: u64,
    /// Sessions that connected over TCP (the fallback), of every kind.
    pub sessions_tcp: u64,
    /// Reflect requests answered.
    pub reflected: u64,
    /// Datagrams on a reflector socket left unanswered, by reason.
    pub reflect_refused: BTreeMap<&'static str, u64>,
    /// Keys of live associations replaced (a new epoch pushed to both
    /// ends): by an admin, at readmission, or at the end of the key
    /// lifetime.
    pub assoc_rekeys: u64,
    /// Punches sent (each to both ends of an association).
    pub punches: u64,
}

#[derive(Debug)]
enum Peer {
    /// No certificate: may only enroll.
    Enrolling,
    /// A node certificate; `welcomed` once its token was accepted.
    Node {
        name: String,
        fingerprint: [u8; 32],
        welcomed: bool,
        /// What renewal needs of the presented certificate.
        leaf: issue::LeafFacts,
        /// A session renews at most once (the node reconnects with the
        /// new certificate), which bounds what one session adds to the log.
        renewed: bool,
    },
    /// An admin certificate.
    Admin { name: String },
    /// Another coordinator of the cluster (its server certificate).
    Coordinator { name: String },
}

#[derive(Debug)]
struct Session {
    remote: SocketAddr,
    peer: Peer,
    decoder: FrameDecoder,
}

/// A node session the registry accepts.
struct AdmittedNode {
    name: String,
    id: NodeId,
    epoch: u64,
    fingerprint: [u8; 32],
}

/// A write of this coordinator's that waits to be durable (a lone
/// coordinator) or committed (a cluster), and whom to answer after.
#[derive(Debug)]
struct Write {
    op: Op,
    waiting: Waiting,
    /// Its proposal's nonce (a cluster; 0 for a lone coordinator).
    nonce: u64,
    /// When it was first written.
    since: Instant,
}

/// Whom to answer once a write is in the log.
#[derive(Debug)]
enum Waiting {
    Enroll {
        conn: SessionId,
        chain: Vec<Bytes>,
    },
    Renew {
        conn: SessionId,
        chain: Vec<Bytes>,
    },
    Admin {
        conn: SessionId,
        request_id: u32,
        reply: AdminReply,
    },
    /// The coordinator's own association write: nobody to answer.
    Own,
}

/// The coordinator. See the module docs.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    transport: ControlTransport,
    signer: TokenSigner,
    drbg: Drbg,
    registry: Registry,
    sessions: BTreeMap<SessionId, Session>,
    online: BTreeMap<String, SessionId>,
    services: BTreeMap<String, Vec<ServiceDecl>>,
    assocs: AssocTable,
    waiting: VecDeque<Write>,
    outputs: VecDeque<Output<CoordinatorEvent>>,
    bound: bool,
    /// Where the TCP listener listens, once it does.
    stream_listening: Option<SocketAddr>,
    counters: CoordinatorCounters,
    handshakes: HandshakeBudget,
    lapses: Lapses,
    /// How long the node certificates it issues are valid.
    node_cert_lifetime_s: u64,
    /// Extra reflector addresses, besides the control socket.
    reflectors: Vec<ExtraReflector>,
    /// Where relay allocations live: its own relay, if it hosts one, and
    /// the nodes that offered relaying.
    relays: Relays,
    /// The other coordinators and the replicated log, when there are any.
    cluster: Option<cluster::Cluster>,
}

/// A reflector socket besides the control socket.
#[derive(Debug, Clone)]
struct ExtraReflector {
    socket: SocketId,
    /// Where nodes send to (the configured address, or the bound one when
    /// it asked for port 0).
    advertised: SocketAddr,
}

/// Why a coordinator could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The intermediate key cannot sign tokens.
    #[error("intermediate key: {0}")]
    Key(#[from] crate::control::token::TokenError),
    /// The QUIC endpoint refused the configuration.
    #[error("QUIC: {0}")]
    Quic(#[from] QuicError),
}

/// The reject code an admin sees when the registry refuses a write.
fn refusal_code(err: &RegistryError) -> RejectCode {
    match err {
        RegistryError::UnknownNode(_) => RejectCode::UnknownNode,
        RegistryError::UnknownAssociation(_) => RejectCode::UnknownAssociation,
        RegistryError::WrongState { .. } => RejectCode::WrongState,
        RegistryError::JoinTokenInvalid(_) => RejectCode::JoinTokenInvalid,
        RegistryError::JoinTokenUsed(_) => RejectCode::JoinTokenUsed,
        RegistryError::JoinTokenExpired(_) => RejectCode::JoinTokenExpired,
        RegistryError::NotItsCertificate(_) => RejectCode::BadCertificate,
        RegistryError::AlreadyEnrolled(_) | RegistryError::BadAssociation(..) => {
            RejectCode::Conflict
        }
    }
}

fn now_unix_s(wall: &WallClock, now: Instant) -> u64 {
    wall.unix_us(now) / 1_000_000
}

impl Coordinator {
    /// A coordinator with the registry replayed from its log.
    ///
    /// # Errors
    /// When the key or the QUIC configuration is unusable.
    pub fn new(
        config: CoordinatorConfig,
        registry: Registry,
        mut drbg: Drbg,
    ) -> Result<Self, CoordinatorError> {
        let signer = TokenSigner::from_pkcs8(&config.intermediate_key, &config.name)?;
        let transport = ControlTransport::new(
            QuicConfig {
                wall_clock: config.wall_clock,
                server: Some(config.tls.clone()),
                timing: config.timing,
            },
            drbg.fork(),
        )?;
        let mut outputs = VecDeque::new();
        outputs.push_back(Output::BindSocket {
            socket: CONTROL_SOCKET,
            local: config.listen,
        });
        let handshakes = HandshakeBudget::new(config.handshake_limit);
        let coordinator = Self {
            config,
            transport,
            signer,
            drbg,
            registry,
            sessions: BTreeMap::new(),
            online: BTreeMap::new(),
            services: BTreeMap::new(),
            assocs: AssocTable::default(),
            waiting: VecDeque::new(),
            outputs,
            bound: false,
            stream_listening: None,
            counters: CoordinatorCounters::default(),
            handshakes,
            lapses: Lapses::default(),
            node_cert_lifetime_s: DEFAULT_NODE_CERT_LIFETIME_S,
            reflectors: Vec::new(),
            relays: Relays::default(),
            cluster: None,
        };
        Ok(coordinator)
    }

    /// Sets how long the node certificates it issues (at enrollment and
    /// renewal) are valid, clamped to [`MIN_NODE_CERT_LIFETIME_S`] ..=
    /// [`MAX_NODE_CERT_LIFETIME_S`]; [`DEFAULT_NODE_CERT_LIFETIME_S`]
    /// until set.
    pub fn set_node_cert_lifetime(&mut self, lifetime_s: u64) {
        self.node_cert_lifetime_s =
            lifetime_s.clamp(MIN_NODE_CERT_LIFETIME_S, MAX_NODE_CERT_LIFETIME_S);
    }

    /// How long the node certificates it issues are valid.
    pub fn node_cert_lifetime_s(&self) -> u64 {
        self.node_cert_lifetime_s
    }

    /// The registry (admission state, admin associations).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The counters.
    pub fn counters(&self) -> &CoordinatorCounters {
        &self.counters
    }

    /// Where the TCP fallback listens, once its listener is open.
    pub fn stream_listening(&self) -> Option<SocketAddr> {
        self.stream_listening
    }

    /// Names of nodes with a live session.
    pub fn online(&self) -> impl Iterator<Item = &str> {
        self.online.keys().map(String::as_str)
    }

    /// The live associations: (id, one end, other end).
    pub fn associations(&self) -> impl Iterator<Item = (AssocId, String, String)> + '_ {
        self.assocs
            .live
            .iter()
            .map(|(e, l)| (l.id, e.0.to_string(), e.1.to_string()))
    }

    /// The oldest pending [`CoordinatorEvent::Append`] is durable: apply it
    /// and answer whoever asked.
    pub fn committed(&mut self, now: Instant) {
        let Some(Write { op, waiting, .. }) = self.waiting.pop_front() else {
            return;
        };
        if let Err(err) = self.registry.apply(&op) {
            // Checked before it was appended; only a concurrent change could
            // make it fail, and there is none (one writer).
            tracing::error!(?op, %err, "a committed operation did not apply");
        }
        self.answer(now, &op, Some(waiting));
        self.after_change(now, &op);
        self.flush(now);
    }

    /// Answers whoever asked for `op`, now applied.
    fn answer(&mut self, now: Instant, op: &Op, waiting: Option<Waiting>) {
        match waiting {
            Some(Waiting::Enroll { conn, chain }) => {
                let node_id = match op {
                    Op::Enroll { node, .. } => self.registry.node(node).map(|n| n.id),
                    _ => None,
                };
                self.counters.enrolled += 1;
                if let Some(node_id) = node_id {
                    self.send(
                        now,
                        conn,
                        &Message::Enrolled {
                            node_id,
                            chain_der: chain,
                        },
                    );
                }
            }
            Some(Waiting::Renew { conn, chain }) => {
                self.counters.renewed += 1;
                if let Op::Renew { node, .. } = op {
                    tracing::info!(%node, "node certificate renewed");
                }
                self.send(now, conn, &Message::Renewed { chain_der: chain });
            }
            Some(Waiting::Admin {
                conn,
                request_id,
                reply,
            }) => {
                // A created association's id is known once it is applied.
                let reply = match op {
                    Op::AssocCreate { a, b } => self
                        .registry
                        .assoc_between(a, b)
                        .map_or(reply, |r| AdminReply::Created { assoc: r.id }),
                    _ => reply,
                };
                self.send(
                    now,
                    conn,
                    &Message::AdminResponse {
                        request_id,
                        result: Ok(reply),
                    },
                );
            }
            Some(Waiting::Own) | None => {}
        }
    }

    /// Checks `op` against the registry as it will be once every write
    /// already waiting for its commit is applied, so two writes in one
    /// batch can never both pass and leave an unreplayable log.
    fn check_after_pending(&self, op: &Op, now_unix_s: u64) -> Result<(), RegistryError> {
        if self.waiting.is_empty() {
            return self.registry.check(op, now_unix_s);
        }
        let mut projected = self.registry.clone();
        for pending in &self.waiting {
            // In a cluster a pending write may no longer apply (a peer's
            // came first); it will be skipped at commit, so skip it here.
            let _ = projected.apply(&pending.op);
        }
        projected.check(op, now_unix_s)
    }

    /// Writes `op` as an admin command would (tests drive revocations
    /// without an admin session).
    #[cfg(test)]
    pub(crate) fn append_for_test(&mut self, now: Instant, op: Op) {
        self.append(now, op, Waiting::Own);
    }

    /// Writes `op`: to the driver for a lone coordinator, as a proposal to
    /// the cluster otherwise; `waiting` is answered once it is in.
    fn append(&mut self, now: Instant, op: Op, waiting: Waiting) {
        if self.cluster.is_some() {
            let nonce = self.propose(now, &op);
            self.waiting.push_back(Write {
                op,
                waiting,
                nonce,
                since: now,
            });
            return;
        }
        self.waiting.push_back(Write {
            op: op.clone(),
            waiting,
            nonce: 0,
            since: now,
        });
        self.outputs
            .push_back(Output::Event(CoordinatorEvent::Append(op)));
    }

    /// Effects of an applied operation on sessions and associations: only
    /// the nodes it names are reconciled, so a revoke costs in the revoked
    /// node's associations, not in the number of nodes.
    fn after_change(&mut self, now: Instant, op: &Op) {
        if let Op::Revoke { node } = op {
            self.services.remove(node);
            self.lapses.forget(node);
            if let Some(conn) = self.online.remove(node) {
                self.send(
                    now,
                    conn,
                    &Message::Revoked {
                        reason: "revoked by an admin".to_owned(),
                    },
                );
                let _ = self.transport.close_when_sent(
                    now,
                    conn,
                    u32::from(RejectCode::Revoked.code()),
                    b"revoked",
                );
                self.sessions.remove(&conn);
                self.outputs
                    .push_back(Output::Event(CoordinatorEvent::NodeOffline(node.clone())));
            }
        }
        match op {
            // A renewal changes which certificate the node holds, nothing
            // its associations depend on.
            Op::Invite { .. } | Op::Renew { .. } => {}
            Op::Enroll { node, .. }
            | Op::Admit { node }
            | Op::Revoke { node }
            | Op::Readmit { node } => self.reconcile_node(now, node),
            Op::AssocCreate { a, b } | Op::AssocForm { a, b } => {
                self.reconcile_node(now, &a.node);
                self.reconcile_node(now, &b.node);
            }
            Op::AssocKey { assoc, .. } => self.key_committed(now, *assoc),
            Op::AssocDelete { assoc } | Op::AssocDeny { assoc } | Op::AssocAllow { assoc } => {
                // The old delete forgot the record: its ends are in the table.
                let nodes = match self.registry.assoc(*assoc) {
                    Some(r) => Some((r.a.node.clone(), r.b.node.clone())),
                    None => self
                        .assocs
                        .ends_of(*assoc)
                        .map(|e| (e.0.node.clone(), e.1.node.clone())),
                };
                if let Some((a, b)) = nodes {
                    self.reconcile_node(now, &a);
                    self.reconcile_node(now, &b);
                }
            }
        }
    }

    /// Brings `node`'s associations to what the registry and services
    /// want, and writes what installing them needs (a record, a key).
    fn reconcile_node(&mut self, now: Instant, node: &str) {
        let want = desired_for(&self.registry, self.lapses.lapsed(), &self.services, node);
        let Reconciled {
            installed,
            withdrawn,
            needs,
        } = self.assocs.reconcile_node(node, &want, &self.registry);
        self.push_changes(now, installed, withdrawn);
        self.write_needs(now, needs);
    }

    /// Tells the online ends of each association what changed.
    fn push_changes(
        &mut self,
        now: Instant,
        installed: Vec<Ends>,
        withdrawn: Vec<(Ends, LiveAssoc)>,
    ) {
        for (ends, live) in withdrawn {
            self.release_relay(now, live.id);
            // The old delete forgot the record; now a delete keeps it.
            let deleted = self.registry.assoc(live.id).is_none_or(|r| r.deleted);
            let reason = match (
                self.registry.node(&ends.0.node),
                self.registry.node(&ends.1.node),
            ) {
                (Some(a), Some(b))
                    if a.admission == Admission::Revoked || b.admission == Admission::Revoked =>
                {
                    WithdrawReason::Revoked
                }
                _ if self.lapses.lapsed().contains(&ends.0.node)
                    || self.lapses.lapsed().contains(&ends.1.node) =>
                {
                    WithdrawReason::PeerGone
                }
                _ if deleted => WithdrawReason::Deleted,
                _ => WithdrawReason::ServiceRemoved,
            };
            // The key that was withdrawn is never installed again: the
            // next epoch's is written now, into the log, so a coordinator
            // restarted before the pair returns pushes a fresh key too
            // (a deleted record takes none; its return writes one).
            if !deleted {
                self.write_key(now, live.id);
            }
            for end in [&ends.0, &ends.1] {
                if let Some(&conn) = self.online.get(&end.node) {
                    self.send(
                        now,
                        conn,
                        &Message::AssociationWithdrawn {
                            assoc: live.id,
                            reason,
                        },
                    );
                }
            }
        }
        for ends in installed {
            self.push_install(now, &ends);
        }
    }

    /// Sends an association to both of its ends that are online.
    fn push_install(&mut self, now: Instant, ends: &Ends) {
        for (here, there) in [(&ends.0, &ends.1), (&ends.1, &ends.0)] {
            if let Some(&conn) = self.online.get(&here.node) {
                self.install_at(now, conn, ends, here, there);
            }
        }
    }

    fn install_at(
        &mut self,
        now: Instant,
        conn: SessionId,
        ends: &Ends,
        here: &ServiceRef,
        there: &ServiceRef,
    ) {
        let Some(live) = self.assocs.live.get(ends) else {
            return;
        };
        let (Ok(service), Ok(peer_node), Ok(peer_service)) = (
            Name::new(&here.service),
            Name::new(&there.node),
            Name::new(&there.service),
        ) else {
            return;
        };
        let message = Message::AssociationInstalled {
            assoc: live.id,
            epoch: live.epoch,
            service,
            peer: PeerRef {
                node: peer_node,
                service: peer_service,
            },
            key: live.key,
            mode: Mode::WholePacket,
            relay: RelayPolicy::Allow,
        };
        let candidates = live.candidates.get(&there.node).cloned();
        let assoc = live.id;
        self.send(now, conn, &message);
        if let Some(candidates) = candidates {
            self.send(now, conn, &Message::Candidates { assoc, candidates });
        }
        let here = here.node.clone();
        self.offer_relay(now, assoc, ends, &here);
    }

    fn send(&mut self, now: Instant, conn: SessionId, message: &Message) {
        let mut buf = BytesMut::new();
        if let Err(err) = msg::encode(message, &mut buf) {
            tracing::error!(%conn, %err, "a message could not be encoded");
            return;
        }
        if let Err(err) = self.transport.send(now, conn, &buf) {
            tracing::debug!(%conn, %err, "send to a session failed");
        }
    }

    fn refuse(&mut self, now: Instant, conn: SessionId, code: RejectCode, reason: String) {
        let remote = self.sessions.get(&conn).map(|s| s.remote);
        tracing::info!(%conn, ?remote, code = code.as_str(), %reason, "session refused");
        *self.counters.refused.entry(code.as_str()).or_default() += 1;
        self.send(
            now,
            conn,
            &Message::Reject {
                code,
                reason: reason.clone(),
            },
        );
        let _ = self.transport.close_when_sent(
            now,
            conn,
            u32::from(code.code()),
            code.as_str().as_bytes(),
        );
        if let Some(session) = self.sessions.remove(&conn) {
            self.forget(&session);
            self.outputs
                .push_back(Output::Event(CoordinatorEvent::Refused {
                    remote: session.remote,
                    code,
                    reason,
                }));
        }
    }

    fn forget(&mut self, session: &Session) {
        if let Peer::Node {
            name,
            welcomed: true,
            ..
        } = &session.peer
        {
            if self
                .online
                .get(name)
                .is_some_and(|c| !self.sessions.contains_key(c))
            {
                self.online.remove(name);
                self.outputs
                    .push_back(Output::Event(CoordinatorEvent::NodeOffline(name.clone())));
            }
        }
    }

    /// Handles every session event and moves datagrams and stream requests
    /// to the outputs.
    fn flush(&mut self, now: Instant) {
        while let Some(event) = self.transport.poll_event() {
            match event {
                ControlEvent::Connected {
                    session,
                    ref peer_chain,
                    ..
                } if self.cluster_session_event(session, Some(peer_chain)) => {}
                ControlEvent::Closed { session, .. }
                    if self.cluster_session_event(session, None) => {}
                ControlEvent::Received { session, bytes } if self.dialled_peer(session) => {
                    self.on_dialled_bytes(now, session, &bytes);
                }
                ControlEvent::Connected {
                    session,
                    carrier,
                    peer_chain,
                    remote,
                } => {
                    if carrier == Carrier::Tcp {
                        self.counters.sessions_tcp += 1;
                    }
                    self.on_connected(now, session, peer_chain, remote)
                }
                ControlEvent::Received { session, bytes } => self.on_bytes(now, session, &bytes),
                ControlEvent::Closed { session, reason } => {
                    if let Some(closed) = self.sessions.remove(&session) {
                        tracing::debug!(%session, ?reason, "session closed");
                        self.forget(&closed);
                    } else if let CloseReason::HandshakeFailed(why) = &reason {
                        // Refused by TLS itself: no session, no Reject to
                        // send, but the operator must see it.
                        self.counters.handshakes_failed += 1;
                        tracing::info!(%session, %why, "handshake refused");
                    }
                }
            }
        }
        // Before the transmits: both queue control messages.
        self.sweep_relay_nodes(now);
        self.drain_relay(now);
        while let Some(t) = self.transport.poll_transmit(now) {
            self.outputs.push_back(Output::Transmit(Transmit {
                socket: CONTROL_SOCKET,
                dst: t.dst,
                payload: t.payload,
            }));
        }
        while let Some(command) = self.transport.poll_stream_command() {
            self.outputs.push_back(command.into_output());
        }
    }

    fn on_connected(
        &mut self,
        now: Instant,
        conn: SessionId,
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        remote: SocketAddr,
    ) {
        let peer = match chain.first() {
            None => Peer::Enrolling,
            Some(leaf) => {
                if let Ok(name) = pki::role_name_of(leaf, Role::Node) {
                    self.counters.sessions_node += 1;
                    Peer::Node {
                        name,
                        fingerprint: pki::cert_fingerprint(leaf),
                        welcomed: false,
                        leaf: issue::LeafFacts::of(leaf),
                        renewed: false,
                    }
                } else if let Ok(name) = pki::role_name_of(leaf, Role::Admin) {
                    self.counters.sessions_admin += 1;
                    Peer::Admin { name }
                } else if let Some(name) = pki::role_name_of(leaf, Role::Coordinator)
                    .ok()
                    .filter(|name| self.peer_id(name).is_some())
                {
                    Peer::Coordinator { name }
                } else {
                    self.sessions.insert(
                        conn,
                        Session {
                            remote,
                            peer: Peer::Enrolling,
                            decoder: FrameDecoder::new(),
                        },
                    );
                    self.refuse(
                        now,
                        conn,
                        RejectCode::BadCertificate,
                        "neither a node, an admin nor a peer coordinator certificate".to_owned(),
                    );
                    return;
                }
            }
        };
        self.sessions.insert(
            conn,
            Session {
                remote,
                peer,
                decoder: FrameDecoder::new(),
            },
        );
    }

    fn on_bytes(&mut self, now: Instant, conn: SessionId, bytes: &[u8]) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        session.decoder.push(bytes);
        loop {
            let Some(session) = self.sessions.get_mut(&conn) else {
                return;
            };
            match session.decoder.next() {
                Ok(Some(message)) => self.on_message(now, conn, message),
                Ok(None) => return,
                Err(err) => {
                    self.refuse(now, conn, RejectCode::Malformed, err.to_string());
                    return;
                }
            }
        }
    }

    fn on_message(&mut self, now: Instant, conn: SessionId, message: Message) {
        let Some(session) = self.sessions.get(&conn) else {
            return;
        };
        match (&session.peer, message) {
            (
                Peer::Enrolling,
                Message::Enroll {
                    join_token,
                    csr_der,
                },
            ) => self.enroll(now, conn, &join_token, &csr_der),
            (Peer::Node { .. }, Message::TokenRequest) => self.grant_token(now, conn),
            (Peer::Node { .. }, Message::Renew { csr_der }) => self.renew(now, conn, &csr_der),
            (Peer::Node { .. }, Message::Hello { node, token, .. }) => {
                self.hello(now, conn, &node, &token)
            }
            (
                Peer::Node {
                    welcomed: true,
                    name,
                    ..
                },
                Message::RegisterServices { services },
            ) => {
                let name = name.clone();
                self.services.insert(name.clone(), services);
                self.reconcile_node(now, &name);
            }
            (
                Peer::Node {
                    welcomed: true,
                    name,
                    ..
                },
                Message::Candidates { assoc, candidates },
            ) => {
                let name = name.clone();
                self.forward_candidates(now, &name, assoc, candidates);
            }
            (
                Peer::Node {
                    welcomed: true,
                    name,
                    ..
                },
                message @ (Message::RelayHostOffer { .. }
                | Message::RelayOpened { .. }
                | Message::RelayRelease { .. }),
            ) => {
                let name = name.clone();
                let seen = session.remote.ip();
                self.on_relay_message(now, &name, seen, message);
            }
            (Peer::Coordinator { name }, Message::Raft(message)) => {
                if let Some(id) = self.peer_id(name) {
                    self.on_raft(now, id, &message);
                }
            }
            // Any session may probe liveness: a TCP session's transport
            // writes keepalives on its own, before a hello or in an admin
            // session.
            (_, Message::Keepalive { seq }) => self.send(now, conn, &Message::KeepaliveAck { seq }),
            (_, Message::KeepaliveAck { .. }) => {}
            (
                Peer::Admin { name },
                Message::AdminRequest {
                    request_id,
                    command,
                },
            ) => {
                tracing::info!(admin = %name, ?command, "admin request");
                self.admin(now, conn, request_id, command);
            }
            (_, other) => {
                let reason = format!("{} is not allowed in this session", other.name());
                self.refuse(now, conn, RejectCode::Malformed, reason);
            }
        }
    }

    /// The registry's verdict on a node session, or the refusal.
    fn admitted(&self, conn: SessionId) -> Result<AdmittedNode, (RejectCode, String)> {
        let Some(Session {
            peer: Peer::Node {
                name, fingerprint, ..
            },
            ..
        }) = self.sessions.get(&conn)
        else {
            return Err((RejectCode::BadCertificate, "not a node session".to_owned()));
        };
        let Some(record) = self.registry.node(name) else {
            return Err((
                RejectCode::UnknownNode,
                format!("{name} is not enrolled here"),
            ));
        };
        match record.admission {
            Admission::Pending => {
                return Err((
                    RejectCode::Pending,
                    format!("{name} waits for `tlctl node admit {name}`"),
                ))
            }
            Admission::Revoked => return Err((RejectCode::Revoked, format!("{name} is revoked"))),
            Admission::Admitted => {}
        }
        if !record.holds(fingerprint) {
            return Err((
                RejectCode::BadCertificate,
                format!("{name} presented a certificate that is not its current one"),
            ));
        }
        Ok(AdmittedNode {
            name: name.clone(),
            id: record.id,
            epoch: record.epoch,
            fingerprint: *fingerprint,
        })
    }

    fn grant_token(&mut self, now: Instant, conn: SessionId) {
        let AdmittedNode {
            name,
            id,
            epoch,
            fingerprint,
        } = match self.admitted(conn) {
            Ok(ok) => ok,
            Err((code, reason)) => return self.refuse(now, conn, code, reason),
        };
        let unix = now_unix_s(&self.config.wall_clock, now);
        let mut claims = self.signer.claims(id.0, &name, fingerprint, epoch, unix);
        claims.expires_unix_s = unix + self.config.token_lifetime_s;
        match self.signer.sign(&claims) {
            Ok(token) => {
                self.counters.tokens_granted += 1;
                self.lapses.token(&name, claims.expires_unix_s);
                self.send(
                    now,
                    conn,
                    &Message::TokenGrant {
                        token,
                        expires_unix_s: claims.expires_unix_s,
                    },
                );
            }
            Err(err) => self.refuse(now, conn, RejectCode::Internal, err.to_string()),
        }
    }

    fn hello(&mut self, now: Instant, conn: SessionId, node: &Name, token: &[u8]) {
        let AdmittedNode {
            name,
            id,
            epoch,
            fingerprint,
        } = match self.admitted(conn) {
            Ok(ok) => ok,
            Err((code, reason)) => return self.refuse(now, conn, code, reason),
        };
        if node.as_str() != name {
            return self.refuse(
                now,
                conn,
                RejectCode::TokenWrongNode,
                format!("hello names {node}, the certificate {name}"),
            );
        }
        let unix = now_unix_s(&self.config.wall_clock, now);
        let claims = match self.config.verifier.verify(token, unix, &fingerprint, id.0) {
            Ok(claims) => claims,
            Err(err) => {
                let code = match err {
                    crate::control::token::TokenError::Expired { .. } => RejectCode::TokenExpired,
                    crate::control::token::TokenError::WrongNode { .. } => {
                        RejectCode::TokenWrongNode
                    }
                    _ => RejectCode::TokenInvalid,
                };
                return self.refuse(now, conn, code, err.to_string());
            }
        };
        if claims.admission_epoch != epoch {
            return self.refuse(
                now,
                conn,
                RejectCode::TokenInvalid,
                "the token predates a revocation".to_owned(),
            );
        }
        if let Some(Session {
            peer: Peer::Node { welcomed, .. },
            ..
        }) = self.sessions.get_mut(&conn)
        {
            *welcomed = true;
        }
        // One session per node: a newer one replaces the older.
        if let Some(old) = self.online.insert(name.clone(), conn) {
            if old != conn {
                let _ = self
                    .transport
                    .close(now, old, 0, b"replaced by a newer session");
                self.sessions.remove(&old);
            }
        }
        self.outputs
            .push_back(Output::Event(CoordinatorEvent::NodeOnline(name.clone())));
        self.send(
            now,
            conn,
            &Message::Welcome {
                node_id: id,
                token_expires_unix_s: claims.expires_unix_s,
            },
        );
        let extra: Vec<SocketAddr> = self.reflectors.iter().map(|r| r.advertised).collect();
        if !extra.is_empty() {
            self.send(now, conn, &Message::Reflectors { extra });
        }
        let mine: Vec<(Ends, ServiceRef, ServiceRef)> = self
            .assocs
            .of_node(&name)
            .map(|(e, _)| {
                let (here, there) = if e.0.node == name {
                    (&e.0, &e.1)
                } else {
                    (&e.1, &e.0)
                };
                (e.clone(), here.clone(), there.clone())
            })
            .collect();
        for (ends, here, there) in mine {
            self.install_at(now, conn, &ends, &here, &there);
        }
        self.reschedule_keys_of(&name);
        self.lapses.token(&name, claims.expires_unix_s);
        if self.lapses.revive(&name) {
            tracing::info!(node = %name, "admission restored by a fresh token");
            self.reconcile_node(now, &name);
        }
    }

    /// The instant the wall clock reads `unix_s`.
    fn instant_of(&self, unix_s: u64) -> Instant {
        let wall = &self.config.wall_clock;
        let ahead = unix_s
            .saturating_mul(1_000_000)
            .saturating_sub(wall.unix_us);
        wall.at + std::time::Duration::from_micros(ahead)
    }

    /// Nodes whose newest token expired lose their admission: a session
    /// still open is closed, and their associations are withdrawn from
    /// every peer.
    fn expire_tokens(&mut self, now: Instant) {
        let unix = now_unix_s(&self.config.wall_clock, now);
        for node in self.lapses.expire(unix) {
            tracing::info!(%node, "admission lapsed: its token expired without a fresh one");
            self.counters.lapsed += 1;
            if let Some(conn) = self.online.get(&node).copied() {
                self.refuse(
                    now,
                    conn,
                    RejectCode::TokenExpired,
                    format!("{node}'s admission token expired"),
                );
                if self.online.get(&node) == Some(&conn) {
                    self.online.remove(&node);
                    self.outputs
                        .push_back(Output::Event(CoordinatorEvent::NodeOffline(node.clone())));
                }
            }
            self.reconcile_node(now, &node);
        }
    }

    fn forward_candidates(
        &mut self,
        now: Instant,
        from: &str,
        assoc: AssocId,
        candidates: Vec<msg::Candidate>,
    ) {
        let Some((ends, live)) = self.assocs.by_id_mut(assoc) else {
            return;
        };
        if ends.0.node != from && ends.1.node != from {
            return;
        }
        let changed = live.candidates.get(from) != Some(&candidates);
        live.candidates.insert(from.to_owned(), candidates.clone());
        let other = if ends.0.node == from {
            ends.1.node.clone()
        } else {
            ends.0.node.clone()
        };
        if let Some(&conn) = self.online.get(&other) {
            self.send(now, conn, &Message::Candidates { assoc, candidates });
        }
        if changed {
            self.punch(now, assoc);
        }
    }

    fn admin(&mut self, now: Instant, conn: SessionId, request_id: u32, command: AdminCommand) {
        let unix = now_unix_s(&self.config.wall_clock, now);
        let fail = |code: RejectCode, reason: String| Message::AdminResponse {
            request_id,
            result: Err(AdminError { code, reason }),
        };
        let write = |op: Op, reply: AdminReply| (op, reply);
        let planned = match command {
            AdminCommand::Invite { node, admit, ttl_s } => {
                match JoinToken::generate(&mut self.drbg, node.as_str()) {
                    Ok(token) => {
                        let op = Op::Invite {
                            node: node.as_str().to_owned(),
                            digest: token.digest(),
                            expires_unix_s: unix + u64::from(ttl_s),
                            admit,
                        };
                        Ok(write(
                            op,
                            AdminReply::Invited {
                                join_token: token.to_string(),
                            },
                        ))
                    }
                    Err(err) => Err((RejectCode::Malformed, err.to_string())),
                }
            }
            AdminCommand::Admit { node } => Ok(write(
                Op::Admit {
                    node: node.as_str().to_owned(),
                },
                AdminReply::Done,
            )),
            AdminCommand::Revoke { node } => Ok(write(
                Op::Revoke {
                    node: node.as_str().to_owned(),
                },
                AdminReply::Done,
            )),
            AdminCommand::Readmit { node } => Ok(write(
                Op::Readmit {
                    node: node.as_str().to_owned(),
                },
                AdminReply::Done,
            )),
            AdminCommand::AssocCreate { a, b } => {
                let end = |p: &PeerRef| ServiceRef {
                    node: p.node.as_str().to_owned(),
                    service: p.service.as_str().to_owned(),
                };
                Ok(write(
                    Op::AssocCreate {
                        a: end(&a),
                        b: end(&b),
                    },
                    AdminReply::Done,
                ))
            }
            AdminCommand::AssocDelete { assoc } => {
                Ok(write(Op::AssocDeny { assoc }, AdminReply::Done))
            }
            AdminCommand::AssocAllow { assoc } => {
                Ok(write(Op::AssocAllow { assoc }, AdminReply::Done))
            }
            AdminCommand::AssocRekey { assoc } => match self.next_key(now, assoc) {
                Some(op) => Ok(write(op, AdminReply::Done)),
                None => Err((
                    RejectCode::UnknownAssociation,
                    RegistryError::UnknownAssociation(assoc).to_string(),
                )),
            },
            AdminCommand::ListNodes => {
                let nodes = self.node_list();
                return self.send(
                    now,
                    conn,
                    &Message::AdminResponse {
                        request_id,
                        result: Ok(AdminReply::Nodes(nodes)),
                    },
                );
            }
            AdminCommand::AssocList => {
                let assocs = self.association_list();
                return self.send(
                    now,
                    conn,
                    &Message::AdminResponse {
                        request_id,
                        result: Ok(AdminReply::Assocs(assocs)),
                    },
                );
            }
            AdminCommand::Status => {
                // A cluster's coordinator also says where the log stands.
                let cluster = self.cluster_status().map_or_else(
                    || "null".to_owned(),
                    |c| {
                        format!(
                            "{{\"id\":{},\"role\":\"{}\",\"leader\":{},\"term\":{},\"commit\":{},\"pending\":{},\"peers_connected\":{}}}",
                            c.replica.id,
                            c.replica.role.as_str(),
                            c.replica.leader,
                            c.replica.term,
                            c.replica.commit,
                            c.pending,
                            c.peers.iter().filter(|(_, up)| *up).count()
                        )
                    },
                );
                let json = format!(
                    "{{\"coordinator\":{:?},\"nodes\":{},\"online\":{},\"associations\":{},\"associations_deleted\":{},\"cluster\":{cluster}}}",
                    self.config.name,
                    self.registry.nodes().count(),
                    self.online.len(),
                    self.assocs.live.len(),
                    self.registry.assocs().filter(|r| r.deleted).count()
                );
                return self.send(
                    now,
                    conn,
                    &Message::AdminResponse {
                        request_id,
                        result: Ok(AdminReply::Status { json }),
                    },
                );
            }
        };
        match planned {
            Ok((op, reply)) => match self.check_after_pending(&op, unix) {
                Ok(()) => self.append(
                    now,
                    op,
                    Waiting::Admin {
                        conn,
                        request_id,
                        reply,
                    },
                ),
                Err(err) => self.send(now, conn, &fail(refusal_code(&err), err.to_string())),
            },
            Err((code, reason)) => self.send(now, conn, &fail(code, reason)),
        }
    }

    fn node_list(&self) -> Vec<NodeInfo> {
        self.registry
            .nodes()
            .filter_map(|n| {
                Some(NodeInfo {
                    node_id: n.id,
                    name: Name::new(&n.name).ok()?,
                    state: match n.admission {
                        Admission::Pending => AdmissionState::Pending,
                        Admission::Admitted => AdmissionState::Admitted,
                        Admission::Revoked => AdmissionState::Revoked,
                    },
                    connected: self.online.contains_key(&n.name),
                    last_seen_unix_s: 0,
                })
            })
            .collect()
    }
}

impl StateMachine for Coordinator {
    type Event = CoordinatorEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        let for_relay = match &input {
            Input::Datagram(d) => Some(d.socket),
            Input::SocketBound { socket, .. } | Input::SocketFailed { socket, .. } => Some(*socket),
            _ => None,
        }
        .is_some_and(|s| self.relays.own.as_ref().is_some_and(|h| h.owns(s)));
        if for_relay {
            if let Some(host) = self.relays.own.as_mut() {
                host.handle_input(now, input);
            }
            self.drain_relay(now);
            return;
        }
        match input {
            Input::Datagram(d)
                if d.socket == CONTROL_SOCKET && reflector::is_mesh_control(d.payload) =>
            {
                self.reflect(now, d.socket, d.src, d.payload);
                return;
            }
            Input::Datagram(d) if self.reflectors.iter().any(|r| r.socket == d.socket) => {
                self.reflect(now, d.socket, d.src, d.payload);
                return;
            }
            Input::SocketBound { socket, local }
                if self.reflectors.iter().any(|r| r.socket == socket) =>
            {
                if let Some(r) = self.reflectors.iter_mut().find(|r| r.socket == socket) {
                    if r.advertised.port() == 0 {
                        r.advertised = local;
                    }
                }
                tracing::debug!(%local, "reflector listening");
            }
            Input::SocketFailed { socket, reason }
                if self.reflectors.iter().any(|r| r.socket == socket) =>
            {
                tracing::error!(?reason, "a reflector address could not be bound; nodes cannot classify their NAT through it");
                self.reflectors.retain(|r| r.socket != socket);
            }
            Input::Datagram(d) if d.socket == CONTROL_SOCKET && self.bound => {
                // The handshake limit: decided before quinn sees the
                // datagram, charged only if it opened a session.
                self.transport.set_accepting(self.handshakes.available(now));
                let before = self.transport.quic_counters();
                self.transport
                    .handle_datagram(now, self.config.listen, d.src, d.payload);
                let after = self.transport.quic_counters();
                if after.accepted > before.accepted {
                    self.handshakes.take(now);
                    self.counters.handshakes += 1;
                }
                if after.throttled > before.throttled {
                    self.counters.handshakes_throttled += 1;
                }
            }
            Input::SocketBound {
                socket: CONTROL_SOCKET,
                local,
            } => {
                self.bound = true;
                self.config.listen = local;
                // TCP on the same port number as QUIC (DESIGN §5).
                self.outputs.push_back(Output::ListenStream {
                    listener: STREAM_LISTENER,
                    local,
                });
            }
            Input::SocketFailed {
                socket: CONTROL_SOCKET,
                reason,
            } => {
                tracing::error!(listen = %self.config.listen, ?reason, "the coordinator socket could not be bound");
            }
            Input::SocketBound {
                socket: STREAM_LISTENER,
                local,
            } => {
                self.stream_listening = Some(local);
                tracing::debug!(%local, "listening for control sessions over TCP");
            }
            Input::SocketFailed {
                socket: STREAM_LISTENER,
                reason,
            } => {
                // A driver without streams (the simulator) says Unsupported.
                if reason == std::io::ErrorKind::Unsupported {
                    tracing::debug!("this driver carries no streams: no TCP fallback");
                } else {
                    tracing::error!(listen = %self.config.listen, ?reason, "the TCP listener could not be opened; nodes whose UDP is blocked cannot reach this coordinator");
                }
            }
            Input::StreamAccepted {
                listener: STREAM_LISTENER,
                stream,
                remote,
            } => {
                // The same handshake limit as QUIC's, before any TLS work.
                self.transport.set_accepting(self.handshakes.available(now));
                if self.transport.handle_stream_accepted(now, stream, remote) {
                    self.handshakes.take(now);
                    self.counters.handshakes += 1;
                } else {
                    self.counters.handshakes_throttled += 1;
                }
            }
            Input::StreamOpened { stream, .. } => self.transport.handle_stream_opened(now, stream),
            Input::StreamData { stream, bytes } => {
                self.transport.handle_stream_data(now, stream, bytes)
            }
            Input::StreamClosed { stream, error } => {
                self.transport.handle_stream_closed(now, stream, error)
            }
            _ => {}
        }
        self.flush(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.transport.handle_timeout(now);
        if let Some(host) = self.relays.own.as_mut() {
            host.handle_timeout(now);
        }
        self.expire_tokens(now);
        self.rekey_due(now);
        self.retire_relays(now);
        self.cluster_timeout(now);
        self.flush(now);
    }

    fn poll_output(&mut self) -> Option<Output<CoordinatorEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let lapse = self.lapses.next().map(|at| self.instant_of(at));
        let relay = self.relays.own.as_ref().and_then(|h| h.poll_timeout());
        let rekey = self.next_rekey_unix_s().map(|at| self.instant_of(at));
        let retire = self.next_relay_retire();
        let cluster = self.next_cluster_timeout();
        [
            self.transport.poll_timeout(),
            lapse,
            relay,
            rekey,
            retire,
            cluster,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
