//! Control-plane messages (DESIGN §5): one protocol, the same bytes over QUIC
//! streams and TCP + TLS, between nodes, coordinators and `tlctl`.
//!
//! A control stream is a sequence of frames:
//!
//! ```text
//!  0          4      5      6
//!  | len L    | ver  | type | body (L - 2 bytes) |
//! ```
//!
//! `L` is a big-endian u32 counting the version, type and body bytes:
//! `2 <= L <=` [`MAX_FRAME`]. The version is [`VERSION`]. Bodies are the
//! fields of the message in order, with nothing after the last one:
//!
//! - integers are big-endian; a bool is one byte, 0 or 1;
//! - a string is a u16 byte length then UTF-8, each field with its own cap;
//!   a [`Name`] is such a string of 1 to 63 bytes of `[a-z0-9._-]`;
//! - a byte string is a u16 length then the bytes, capped per field;
//! - a socket address is the 19-byte [`AddrRepr`](crate::wire::AddrRepr);
//! - a list is a u16 count then the items, capped per field;
//! - keys and fingerprints are 32 raw bytes;
//! - an enum is one byte, its code (the `code()` of each code enum); an
//!   unknown code is an error, never skipped.
//!
//! Every value has exactly one encoding, so `encode(decode(x)) == x` for all
//! `x` that decode. The type codes are a wire contract; never renumber them:
//!
//! | type | message | direction |
//! |---|---|---|
//! | `0x01` | `Hello` | node → coordinator, first message |
//! | `0x02` | `Welcome` | coordinator → node |
//! | `0x03` | `Reject` | coordinator → node or admin |
//! | `0x04` | `Enroll` | node → coordinator, before it has a certificate |
//! | `0x05` | `Enrolled` | coordinator → node |
//! | `0x06` | `TokenRequest` | node → coordinator |
//! | `0x07` | `TokenGrant` | coordinator → node |
//! | `0x08` | `Renew` | node → coordinator, in a session opened with a token |
//! | `0x09` | `Renewed` | coordinator → node |
//! | `0x10` | `RegisterServices` | node → coordinator |
//! | `0x11` | `Candidates` | both ways |
//! | `0x12` | `AssociationInstalled` | coordinator → node |
//! | `0x13` | `AssociationWithdrawn` | coordinator → node |
//! | `0x14` | `Punch` | coordinator → node |
//! | `0x15` | `RelayAllocation` | coordinator → node |
//! | `0x16` | `Revoked` | coordinator → node |
//! | `0x17` | `Reflectors` | coordinator → node |
//! | `0x18` | `RelayHostOffer` | node → coordinator |
//! | `0x19` | `RelayAllocate` | coordinator → relaying node |
//! | `0x1a` | `RelayOpened` | relaying node → coordinator |
//! | `0x1b` | `RelayRelease` | coordinator → relaying node or end; relaying node → coordinator |
//! | `0x1c` | `RelayHostRefused` | coordinator → node that offered relaying |
//! | `0x30` | `Raft` | coordinator ↔ coordinator (the replicated operation log, [`RaftMessage`]) |
//! | `0x20` | `Keepalive` | both ways |
//! | `0x21` | `KeepaliveAck` | both ways |
//! | `0x40` | `AdminRequest` | `tlctl` → coordinator |
//! | `0x41` | `AdminResponse` | coordinator → `tlctl` |
//!
//! Inside `AdminRequest` an [`AdminCommand`] starts with its own code:
//! 1 `Invite`, 2 `Admit`, 3 `Revoke`, 4 `Readmit`, 5 `ListNodes`,
//! 6 `AssocCreate`, 7 `AssocDelete`, 8 `AssocList`, 9 `Status`,
//! 10 `AssocRekey`, 11 `AssocAllow`. An
//! `AdminResponse` result is an outcome byte, 0 for an [`AdminReply`]
//! (1 `Invited`, 2 `Done`, 3 `Nodes`, 4 `Assocs`, 5 `Status`, 6 `Created`,
//! with the new association's id as a u64) and 1 for an [`AdminError`].
//! The codes of [`RejectCode`], [`CandidateKind`], [`Mode`],
//! [`RelayPolicy`], [`RelaySite`], [`WithdrawReason`], [`AdmissionState`],
//! [`AssocOrigin`] and [`AssocState`] start at 1 in declaration order.
//!
//! Any decoding error ends the session: the stream can no longer be trusted
//! to be in step, so [`FrameDecoder`] keeps returning the error.

mod admin;
mod body;
mod frame;
mod node;
mod prim;
mod raft;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

pub use admin::{
    AdminCommand, AdminError, AdminReply, AdmissionState, AssocInfo, AssocOrigin, AssocState,
    NodeInfo, MAX_LIST, MAX_STATUS_JSON,
};
pub use frame::{encode, FrameDecoder};
pub use node::{
    Candidate, CandidateKind, Mode, RejectCode, RelayPolicy, RelaySite, ServiceDecl,
    WithdrawReason, MAX_CANDIDATES, MAX_PEERS, MAX_SERVICES,
};
pub use prim::{Name, PeerRef, MAX_NAME_LEN};
pub use raft::{
    RaftEntry, RaftMessage, MAX_RAFT_CONTEXT, MAX_RAFT_DATA, MAX_RAFT_ENTRIES, MAX_RAFT_KIND,
};

use crate::id::{AssocId, NodeId};
use crate::wire::KEY_LEN;

/// The only protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Largest frame length `L` (version, type and body).
pub const MAX_FRAME: usize = 65_536;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Longest reason text, in bytes.
pub const MAX_REASON_LEN: usize = 255;
/// Longest join token, in bytes.
pub const MAX_TOKEN_TEXT_LEN: usize = 255;
/// Longest admission token, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Longest DER certificate or certificate request, in bytes.
pub const MAX_DER_LEN: usize = 4096;
/// Most certificates in an enrolled chain.
pub const MAX_CHAIN: usize = 4;
/// Most extra reflector addresses in one `Reflectors` message.
pub const MAX_REFLECTORS: usize = 4;

/// Why bytes were not a valid control message, or a message could not be
/// encoded. A peer that sends one of these has its session closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    /// The length prefix (or the message to encode) is over [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds {MAX_FRAME}")]
    FrameTooLarge {
        /// The frame length `L`.
        len: usize,
    },
    /// The length prefix is too small for the version and type bytes.
    #[error("frame of {len} bytes is shorter than its 2-byte header")]
    FrameTooShort {
        /// The frame length `L`.
        len: usize,
    },
    /// A protocol version this build does not speak.
    #[error("unsupported control protocol version {0}")]
    UnsupportedVersion(u8),
    /// A message type this build does not know.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// The body ended in the middle of a field.
    #[error("body ends inside {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes left after the last field of a message.
    #[error("{count} trailing bytes after {message}")]
    TrailingBytes {
        /// The message.
        message: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A string or byte string over its cap.
    #[error("{field} of {len} bytes exceeds {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Its cap.
        max: usize,
    },
    /// A list over its cap.
    #[error("{field} has {count} entries, more than {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Its count.
        count: usize,
        /// Its cap.
        max: usize,
    },
    /// A string that is not UTF-8.
    #[error("{field} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A bool byte other than 0 or 1.
    #[error("{field} is {value:#04x}, not a bool (0 or 1)")]
    BadBool {
        /// The field.
        field: &'static str,
        /// The byte.
        value: u8,
    },
    /// An enum code this build does not know.
    #[error("unknown {kind} {value}")]
    UnknownCode {
        /// The enum.
        kind: &'static str,
        /// The code.
        value: u8,
    },
    /// An address with an unknown family or non-canonical bytes.
    #[error("{field} is not a valid socket address")]
    BadAddress {
        /// The field.
        field: &'static str,
    },
    /// An empty name.
    #[error("name is empty")]
    NameEmpty,
    /// A name over [`MAX_NAME_LEN`] bytes.
    #[error("name of {len} bytes exceeds {MAX_NAME_LEN}")]
    NameTooLong {
        /// Its length.
        len: usize,
    },
    /// A name with a byte outside `[a-z0-9._-]`.
    #[error("name {name:?} has a character outside [a-z0-9._-]")]
    NameCharset {
        /// The name (lossily decoded).
        name: String,
    },
    /// Text that should read `node/service`.
    #[error("peer {text:?} is not of the form node/service")]
    BadPeerRef {
        /// The text.
        text: String,
    },
    /// Bytes pushed while a whole frame was waiting: the caller must drain
    /// [`FrameDecoder::next`] after every push, which bounds the buffer.
    #[error("bytes pushed while a whole frame was waiting to be decoded")]
    Undrained,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Opens a node session: who the node is and its admission token.
    Hello {
        /// The node's name (also in its certificate).
        node: Name,
        /// The admission token, opaque here (at most [`MAX_TOKEN_LEN`] bytes).
        token: Bytes,
        /// Whether the node lets its private addresses be advertised.
        advertise_private: bool,
    },
    /// Accepts a node session.
    Welcome {
        /// The node's id.
        node_id: NodeId,
        /// When the presented admission token expires.
        token_expires_unix_s: u64,
    },
    /// Refuses a session or request; the sender closes the session.
    Reject {
        /// Why.
        code: RejectCode,
        /// Details (at most [`MAX_REASON_LEN`] bytes).
        reason: String,
    },
    /// Asks for a node certificate with a one-time join token.
    Enroll {
        /// The join token from `tlctl node invite` (at most 255 bytes).
        join_token: String,
        /// The certificate signing request (at most [`MAX_DER_LEN`] bytes).
        csr_der: Bytes,
    },
    /// The node certificate from an enrollment.
    Enrolled {
        /// The node's id.
        node_id: NodeId,
        /// The node certificate, then its intermediate (at most
        /// [`MAX_CHAIN`] certificates of [`MAX_DER_LEN`] bytes).
        chain_der: Vec<Bytes>,
    },
    /// Asks for a fresh admission token.
    TokenRequest,
    /// Asks for a new certificate before the current one expires, for the
    /// key the node already holds.
    Renew {
        /// The certificate signing request (at most [`MAX_DER_LEN`] bytes).
        csr_der: Bytes,
    },
    /// The renewed certificate.
    Renewed {
        /// The node certificate, then its intermediate (at most
        /// [`MAX_CHAIN`] certificates of [`MAX_DER_LEN`] bytes).
        chain_der: Vec<Bytes>,
    },
    /// A fresh admission token.
    TokenGrant {
        /// The token (at most [`MAX_TOKEN_LEN`] bytes).
        token: Bytes,
        /// When it expires.
        expires_unix_s: u64,
    },
    /// The node's services and the peers each consents to (replaces any
    /// earlier declaration).
    RegisterServices {
        /// The services (at most [`MAX_SERVICES`]).
        services: Vec<ServiceDecl>,
    },
    /// Addresses where one side of an association may be reached.
    Candidates {
        /// The association.
        assoc: AssocId,
        /// The addresses (at most [`MAX_CANDIDATES`]).
        candidates: Vec<Candidate>,
    },
    /// An association (or its new epoch) with its key.
    AssociationInstalled {
        /// The association.
        assoc: AssocId,
        /// The key epoch.
        epoch: u32,
        /// The local service.
        service: Name,
        /// The remote service.
        peer: PeerRef,
        /// The association key of this epoch.
        key: [u8; KEY_LEN],
        /// How packets cross paths.
        mode: Mode,
        /// Whether relays may be used.
        relay: RelayPolicy,
    },
    /// An association to drop at once.
    AssociationWithdrawn {
        /// The association.
        assoc: AssocId,
        /// Why.
        reason: WithdrawReason,
    },
    /// Start hole punching to the peer's candidates at a given time.
    Punch {
        /// The association.
        assoc: AssocId,
        /// When both sides start sending.
        at_unix_ms: u64,
    },
    /// A relay leg for an association.
    RelayAllocation {
        /// The association.
        assoc: AssocId,
        /// The relay's address.
        relay: SocketAddr,
        /// The allocation at the relay.
        allocation: u64,
        /// Which leg this node binds.
        leg: u8,
        /// The key that authenticates relay binds.
        key: [u8; KEY_LEN],
        /// What hosts the allocation.
        site: RelaySite,
    },
    /// The node relays for others (DESIGN §7, node relay): sent after
    /// every `Welcome`; the coordinator may then ask it for allocations.
    RelayHostOffer {
        /// The address other nodes send to (each allocation gets its own
        /// port); on the wire an address with port 0.
        ip: IpAddr,
        /// Allocations it holds at most.
        max_allocations: u32,
        /// Allocations one node may take part in at once.
        quota_per_node: u32,
    },
    /// Asks a relaying node to open an allocation.
    RelayAllocate {
        /// The allocation (the coordinator's id).
        allocation: u64,
        /// The association it carries.
        assoc: AssocId,
        /// The key both ends sign their binds with.
        key: [u8; KEY_LEN],
        /// The nodes of leg 0 and leg 1.
        nodes: [NodeId; 2],
    },
    /// A relaying node opened an allocation's port.
    RelayOpened {
        /// The allocation.
        allocation: u64,
        /// Where the ends send to.
        relay: SocketAddr,
    },
    /// An allocation is gone: to the relaying node, drop it; to an end,
    /// drop the leg; from the relaying node, it was refused, its port
    /// failed or it expired.
    RelayRelease {
        /// The association it carried.
        assoc: AssocId,
        /// The allocation.
        allocation: u64,
    },
    /// The coordinator refused this node's `RelayHostOffer`: the offered
    /// address is a local one and the node's session comes from another
    /// (it sits behind a NAT that other nodes cannot send through).
    RelayHostRefused {
        /// The address the node's session comes from; on the wire an
        /// address with port 0.
        seen: IpAddr,
    },
    /// The coordinator's other reflector addresses, sent after `Welcome`.
    /// A node asks the reflector at the address its session uses and at
    /// each of these from every mesh socket: the answers are its
    /// server-reflexive candidates and, compared, its NAT's behaviour.
    Reflectors {
        /// Reflector addresses besides the session's own (at most
        /// [`MAX_REFLECTORS`]).
        extra: Vec<std::net::SocketAddr>,
    },
    /// This node has been revoked; the session ends.
    Revoked {
        /// Details (at most [`MAX_REASON_LEN`] bytes).
        reason: String,
    },
    /// One message of the consensus engine between two coordinators
    /// replicating the operation log (DESIGN §4).
    Raft(RaftMessage),
    /// Liveness probe.
    Keepalive {
        /// Echoed in the ack.
        seq: u64,
    },
    /// Answer to a keepalive.
    KeepaliveAck {
        /// The keepalive's sequence number.
        seq: u64,
    },
    /// An admin command.
    AdminRequest {
        /// Pairs the response with the request.
        request_id: u32,
        /// What to do.
        command: AdminCommand,
    },
    /// The answer to an admin command.
    AdminResponse {
        /// The request's id.
        request_id: u32,
        /// The reply or the error.
        result: Result<AdminReply, AdminError>,
    },
}

#[cfg(test)]
mod tests;
