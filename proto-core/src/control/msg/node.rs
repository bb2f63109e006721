//! The parts of node ↔ coordinator messages: reject codes, service
//! declarations, candidates and association policy.

use std::net::SocketAddr;

use super::prim::{list_len, name_len, wire_enum, Codec, Name, PeerRef, Reader, Writer};
use super::MsgError;

/// Most services one `RegisterServices` declares.
pub const MAX_SERVICES: usize = 64;
/// Most peers one service declares.
pub const MAX_PEERS: usize = 64;
/// Most candidates in one `Candidates` message.
pub const MAX_CANDIDATES: usize = 64;

wire_enum! {
    /// Why a coordinator refuses a session or a command.
    RejectCode {
        /// A message did not decode.
        Malformed = 1 => "malformed",
        /// A protocol version this coordinator does not speak.
        BadVersion = 2 => "bad-version",
        /// The TLS client certificate is missing, expired or untrusted.
        BadCertificate = 3 => "bad-certificate",
        /// The admission token does not verify.
        TokenInvalid = 4 => "token-invalid",
        /// The admission token has expired.
        TokenExpired = 5 => "token-expired",
        /// The admission token belongs to another node or certificate.
        TokenWrongNode = 6 => "token-wrong-node",
        /// The node is enrolled but not admitted yet.
        Pending = 7 => "pending",
        /// The node has been revoked.
        Revoked = 8 => "revoked",
        /// The coordinator does not know the node.
        UnknownNode = 9 => "unknown-node",
        /// The join token does not verify.
        JoinTokenInvalid = 10 => "join-token-invalid",
        /// The join token was already used.
        JoinTokenUsed = 11 => "join-token-used",
        /// The join token has expired.
        JoinTokenExpired = 12 => "join-token-expired",
        /// An admin command from a peer without an admin certificate.
        NotAdmin = 13 => "not-admin",
        /// Too many requests: retry later.
        RateLimited = 14 => "rate-limited",
        /// The coordinator failed; the request may be retried.
        Internal = 15 => "internal",
        /// An admin write contradicts the registry: the node is enrolled
        /// already, or the association exists or joins a service to itself.
        Conflict = 16 => "conflict",
        /// The node's admission state does not allow the admin write
        /// (admitting an admitted node, revoking a revoked one, …).
        WrongState = 17 => "wrong-state",
        /// No association has that id.
        UnknownAssociation = 18 => "unknown-association",
        /// A coordinator of a cluster could not get the write committed in
        /// time: no majority is reachable from it. The write stays pending
        /// and takes effect if a majority commits it later.
        NoMajority = 19 => "no-majority",
    }
}

wire_enum! {
    /// How a candidate address was learned.
    CandidateKind {
        /// An address of a local interface.
        Host = 1 => "host",
        /// A private address reachable inside a shared intranet.
        Intranet = 2 => "intranet",
        /// The address the coordinator's reflector saw.
        ServerReflexive = 3 => "server-reflexive",
        /// An address a peer saw.
        PeerReflexive = 4 => "peer-reflexive",
        /// A port predicted from the NAT's allocation behaviour.
        Predicted = 5 => "predicted",
        /// A relay leg.
        Relay = 6 => "relay",
    }
}

wire_enum! {
    /// How packets of an association cross paths.
    Mode {
        /// Each packet goes whole over one path.
        WholePacket = 1 => "whole-packet",
        /// Packets may be split across paths.
        Segmented = 2 => "segmented",
    }
}

wire_enum! {
    /// Whether an association may use relays.
    RelayPolicy {
        /// Direct paths first, relays when needed.
        Allow = 1 => "allow",
        /// Direct paths only.
        Never = 2 => "never",
        /// Relays only.
        Only = 3 => "only",
    }
}

wire_enum! {
    /// What hosts a relay allocation: the ends label the path with it.
    RelaySite {
        /// The coordinator's own relay.
        Coordinator = 1 => "coordinator",
        /// A node that relays for others (`[relay] data = true`).
        Node = 2 => "node",
    }
}

wire_enum! {
    /// Why an association was withdrawn.
    WithdrawReason {
        /// One endpoint was revoked.
        Revoked = 1 => "revoked",
        /// An admin deleted it.
        Deleted = 2 => "deleted",
        /// An endpoint stopped declaring the service.
        ServiceRemoved = 3 => "service-removed",
        /// The peer node is gone.
        PeerGone = 4 => "peer-gone",
        /// Replaced by a new epoch with a fresh key.
        Rekey = 5 => "rekey",
    }
}

/// A local service and the peer services it consents to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDecl {
    /// The local service.
    pub name: Name,
    /// Remote services it accepts associations with (at most [`MAX_PEERS`]).
    pub peers: Vec<PeerRef>,
}

impl Codec for ServiceDecl {
    fn wire_len(&self) -> usize {
        name_len(&self.name) + list_len(&self.peers)
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        w.name(&self.name);
        w.list("ServiceDecl.peers", &self.peers, MAX_PEERS)
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(Self {
            name: r.name("ServiceDecl.name")?,
            peers: r.list("ServiceDecl.peers", MAX_PEERS)?,
        })
    }
}

/// An address a peer may be reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The address. An IPv6 flow label and scope id are not carried.
    pub addr: SocketAddr,
    /// How it was learned.
    pub kind: CandidateKind,
    /// The uplink it belongs to.
    pub uplink: Name,
}

impl Codec for Candidate {
    fn wire_len(&self) -> usize {
        crate::wire::ADDR_LEN + 1 + name_len(&self.uplink)
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        w.addr(self.addr);
        self.kind.put(w)?;
        w.name(&self.uplink);
        Ok(())
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(Self {
            addr: r.addr("Candidate.addr")?,
            kind: CandidateKind::take(r)?,
            uplink: r.name("Candidate.uplink")?,
        })
    }
}
