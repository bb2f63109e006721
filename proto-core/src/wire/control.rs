//! Mesh control packets (DESIGN §6): probes, reflector requests, relay binds
//! and path statistics, sharing the mesh sockets with data.
//!
//! ```text
//!  0        8   9    10      12       20         28          28+n   28+n+16
//!  | magic  | v | kind| len n | txid   | time µs  | body (n)   | tag  |
//! ```
//!
//! All integers are big-endian. The magic starts with 0x00, which is neither
//! a WireGuard message type nor a QUIC first byte. A datagram is a control
//! packet only when the magic matches *and* the tag verifies under the
//! association key; everything else is data and is never altered.

use bytes::{BufMut, Bytes, BytesMut};

use super::addr::{AddrRepr, ADDR_LEN};
use super::auth::{AuthKey, TAG_LEN};
use super::WireError;

/// The first eight bytes of every control packet.
pub const MAGIC: [u8; 8] = [0x00, b'T', b'L', b'o', b'o', b'm', 0xC7, 0x1D];
/// The only version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 28;
/// Smallest control packet: header, empty body, tag.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// Largest body accepted.
pub const MAX_BODY: usize = 1_400;

const KIND_PING: u8 = 1;
const KIND_PONG: u8 = 2;
pub(crate) const KIND_REFLECT_REQUEST: u8 = 3;
const KIND_REFLECT_RESPONSE: u8 = 4;
const KIND_RELAY_BIND: u8 = 5;
const KIND_RELAY_BIND_ACK: u8 = 6;
const KIND_PATH_STATS: u8 = 7;

/// A ping's policy bit: the sending socket's uplink is a backup, so the
/// peer sends to it only when no primary path can carry (DESIGN §8).
pub const PING_BACKUP: u8 = 0x01;
/// A ping's policy bit: the sending socket's uplink is metered, so the peer
/// sends no bulk to it while unmetered paths suffice.
pub const PING_METERED: u8 = 0x02;
/// A ping's key bit: the sender holds a newer association key than the one
/// this ping is under, and sends under the older one until the peer shows
/// it holds the newer one too (a ping under it, or this bit).
pub const PING_NEWER_KEY: u8 = 0x04;
/// A ping's NAT bit: the sending socket's NAT maps per destination
/// address and picks its ports at random, a hard side that a peer whose
/// NAT maps per destination and port with predictable ports can meet by
/// birthday probing from new mappings (which it costs that peer).
pub const PING_HARD_BY_ADDRESS: u8 = 0x08;

/// Body of a relay bind or its acknowledgement before the observed address:
/// allocation, leg, cookie.
const RELAY_FIELDS_LEN: usize = 17;
const PATH_STATS_LEN: usize = 28;

/// A checked view of a control packet: magic, version, kind and length are
/// known to be consistent, so the accessors cannot panic.
#[derive(Debug, Clone, Copy)]
pub struct ControlPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ControlPacket<T> {
    /// Checks the framing of `buf` (not the tag).
    ///
    /// # Errors
    /// The first framing rule `buf` breaks.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let bytes = buf.as_ref();
        if bytes.len() < MIN_LEN {
            return Err(if bytes.starts_with(&MAGIC[..bytes.len().min(8)]) {
                WireError::Truncated
            } else {
                WireError::BadMagic
            });
        }
        if bytes[..8] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if bytes[8] != VERSION {
            return Err(WireError::UnsupportedVersion(bytes[8]));
        }
        let body_len = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
        if body_len > MAX_BODY || HEADER_LEN + body_len + TAG_LEN != bytes.len() {
            return Err(WireError::LengthMismatch);
        }
        Ok(Self { buf })
    }

    /// The message kind byte.
    pub fn kind(&self) -> u8 {
        self.buf.as_ref()[9]
    }

    /// The transaction id.
    pub fn txid(&self) -> u64 {
        u64::from_be_bytes(self.array(12))
    }

    /// The sender's timestamp, in microseconds of its wall clock.
    pub fn timestamp_us(&self) -> u64 {
        u64::from_be_bytes(self.array(20))
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        let bytes = self.buf.as_ref();
        &bytes[HEADER_LEN..bytes.len() - TAG_LEN]
    }

    /// True when the tag verifies under `key`.
    pub fn verify(&self, key: &AuthKey) -> bool {
        let bytes = self.buf.as_ref();
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        key.verify(signed, tag)
    }

    fn array(&self, at: usize) -> [u8; 8] {
        let mut out = [0u8; 8];
        out.copy_from_slice(&self.buf.as_ref()[at..at + 8]);
        out
    }
}

/// The meaning of a control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlBody {
    /// A path probe. The body is `pad` bytes (at least [`ADDR_LEN`]) so
    /// the pong is never larger than the ping; its first byte tells the
    /// sending socket's uplink policy ([`PING_BACKUP`], [`PING_METERED`]),
    /// whether the sender holds a newer key ([`PING_NEWER_KEY`]) and
    /// whether its NAT is hard by address ([`PING_HARD_BY_ADDRESS`]); the
    /// rest is zero padding.
    Ping {
        /// Body length.
        pad: u16,
        /// The sender's uplink policy, key and NAT bits (0 from builds
        /// before them: primary, unmetered, no newer key, not known hard).
        policy: u8,
    },
    /// The answer to a ping, carrying the address the ping came from.
    Pong {
        /// The pinger's address as the responder saw it.
        observed: AddrRepr,
    },
    /// A request for the sender's reflexive address, padded like a ping.
    /// The body starts with the association whose key signs it (the
    /// reflector holds every association's key); the rest is padding.
    ReflectRequest {
        /// The association whose key authenticates the request.
        assoc: u64,
        /// Body length, at least [`ADDR_LEN`] so the response is never larger.
        pad: u16,
    },
    /// The reflector's answer.
    ReflectResponse {
        /// The requester's address as the reflector saw it.
        observed: AddrRepr,
    },
    /// An endpoint binds one leg of a relay allocation, padded to the ack's size.
    RelayBind {
        /// The relay allocation.
        allocation: u64,
        /// Which leg (0 or 1).
        leg: u8,
        /// The cookie the relay gave this source address (0: none yet).
        /// Only a bind that carries it pins the leg, so a bind replayed
        /// from another address pins nothing.
        cookie: u64,
    },
    /// The relay's answer to a bind: the leg is pinned when the bind
    /// carried this cookie, otherwise bind again with it.
    RelayBindAck {
        /// The relay allocation.
        allocation: u64,
        /// Which leg.
        leg: u8,
        /// The cookie of the address the bind came from.
        cookie: u64,
        /// The address the bind came from, as the relay saw it.
        observed: AddrRepr,
    },
    /// The receiver's cumulative counts for one path, so the sender can
    /// derive loss and delivery rate without adding bytes to data.
    PathStats {
        /// Report sequence number.
        seq: u32,
        /// Data packets received on the path.
        rx_packets: u64,
        /// Data bytes received on the path.
        rx_bytes: u64,
        /// Receiver's timestamp of the last data packet counted.
        last_rx_us: u64,
    },
}

impl ControlBody {
    fn kind(&self) -> u8 {
        match self {
            Self::Ping { .. } => KIND_PING,
            Self::Pong { .. } => KIND_PONG,
            Self::ReflectRequest { .. } => KIND_REFLECT_REQUEST,
            Self::ReflectResponse { .. } => KIND_REFLECT_RESPONSE,
            Self::RelayBind { .. } => KIND_RELAY_BIND,
            Self::RelayBindAck { .. } => KIND_RELAY_BIND_ACK,
            Self::PathStats { .. } => KIND_PATH_STATS,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Ping { pad, .. } | Self::ReflectRequest { pad, .. } => {
                usize::from(*pad).max(ADDR_LEN)
            }
            Self::Pong { .. } | Self::ReflectResponse { .. } => ADDR_LEN,
            Self::RelayBind { .. } | Self::RelayBindAck { .. } => RELAY_FIELDS_LEN + ADDR_LEN,
            Self::PathStats { .. } => PATH_STATS_LEN,
        }
    }

    fn parse(kind: u8, body: &[u8]) -> Result<Self, WireError> {
        let exact = |len: usize| {
            if body.len() == len {
                Ok(())
            } else {
                Err(WireError::BadBodyLength)
            }
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(match kind {
            KIND_PING | KIND_REFLECT_REQUEST => {
                if body.len() < ADDR_LEN {
                    return Err(WireError::BadBodyLength);
                }
                // new_checked bounds the body by MAX_BODY, so this fits.
                let pad = body.len() as u16;
                if kind == KIND_PING {
                    Self::Ping {
                        pad,
                        policy: body[0],
                    }
                } else {
                    Self::ReflectRequest {
                        assoc: u64_at(0),
                        pad,
                    }
                }
            }
            KIND_PONG | KIND_REFLECT_RESPONSE => {
                exact(ADDR_LEN)?;
                let observed = AddrRepr::parse(body)?;
                if kind == KIND_PONG {
                    Self::Pong { observed }
                } else {
                    Self::ReflectResponse { observed }
                }
            }
            KIND_RELAY_BIND => {
                exact(RELAY_FIELDS_LEN + ADDR_LEN)?;
                Self::RelayBind {
                    allocation: u64_at(0),
                    leg: body[8],
                    cookie: u64_at(9),
                }
            }
            KIND_RELAY_BIND_ACK => {
                exact(RELAY_FIELDS_LEN + ADDR_LEN)?;
                Self::RelayBindAck {
                    allocation: u64_at(0),
                    leg: body[8],
                    cookie: u64_at(9),
                    observed: AddrRepr::parse(&body[RELAY_FIELDS_LEN..])?,
                }
            }
            KIND_PATH_STATS => {
                exact(PATH_STATS_LEN)?;
                Self::PathStats {
                    seq: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    rx_packets: u64_at(4),
                    rx_bytes: u64_at(12),
                    last_rx_us: u64_at(20),
                }
            }
            other => return Err(WireError::UnknownKind(other)),
        })
    }

    fn emit(&self, body: &mut [u8]) {
        body.fill(0);
        match *self {
            Self::Ping { policy, .. } => body[0] = policy,
            Self::ReflectRequest { assoc, .. } => body[..8].copy_from_slice(&assoc.to_be_bytes()),
            Self::Pong { observed } | Self::ReflectResponse { observed } => observed.emit(body),
            Self::RelayBind {
                allocation,
                leg,
                cookie,
            } => {
                body[..8].copy_from_slice(&allocation.to_be_bytes());
                body[8] = leg;
                body[9..17].copy_from_slice(&cookie.to_be_bytes());
            }
            Self::RelayBindAck {
                allocation,
                leg,
                cookie,
                observed,
            } => {
                body[..8].copy_from_slice(&allocation.to_be_bytes());
                body[8] = leg;
                body[9..17].copy_from_slice(&cookie.to_be_bytes());
                observed.emit(&mut body[RELAY_FIELDS_LEN..]);
            }
            Self::PathStats {
                seq,
                rx_packets,
                rx_bytes,
                last_rx_us,
            } => {
                body[..4].copy_from_slice(&seq.to_be_bytes());
                body[4..12].copy_from_slice(&rx_packets.to_be_bytes());
                body[12..20].copy_from_slice(&rx_bytes.to_be_bytes());
                body[20..28].copy_from_slice(&last_rx_us.to_be_bytes());
            }
        }
    }
}

/// A parsed control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRepr {
    /// Transaction id: pairs a pong with its ping, and feeds the replay cache.
    pub txid: u64,
    /// The sender's wall-clock timestamp in microseconds.
    pub timestamp_us: u64,
    /// What the packet says.
    pub body: ControlBody,
}

impl ControlRepr {
    /// Parses a checked packet. The tag is not looked at: see [`classify`].
    ///
    /// # Errors
    /// When the body does not fit its kind.
    pub fn parse<T: AsRef<[u8]>>(packet: &ControlPacket<T>) -> Result<Self, WireError> {
        Ok(Self {
            txid: packet.txid(),
            timestamp_us: packet.timestamp_us(),
            body: ControlBody::parse(packet.kind(), packet.body())?,
        })
    }

    /// Encoded size, tag included.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body.len() + TAG_LEN
    }

    /// Writes the packet, tagged under `key`, into the start of `buf` and
    /// returns its length.
    ///
    /// # Panics
    /// If `buf` is shorter than [`ControlRepr::buffer_len`].
    pub fn emit(&self, buf: &mut [u8], key: &AuthKey) -> usize {
        let len = self.buffer_len();
        let body_len = self.body.len();
        let buf = &mut buf[..len];
        buf[..8].copy_from_slice(&MAGIC);
        buf[8] = VERSION;
        buf[9] = self.body.kind();
        // Bodies are at most MAX_BODY bytes, well inside u16.
        buf[10..12].copy_from_slice(&(body_len as u16).to_be_bytes());
        buf[12..20].copy_from_slice(&self.txid.to_be_bytes());
        buf[20..28].copy_from_slice(&self.timestamp_us.to_be_bytes());
        self.body.emit(&mut buf[HEADER_LEN..HEADER_LEN + body_len]);
        let tag = key.tag(&buf[..len - TAG_LEN]);
        buf[len - TAG_LEN..].copy_from_slice(&tag);
        len
    }

    /// The packet as a new buffer, tagged under `key`.
    pub fn to_bytes(&self, key: &AuthKey) -> Bytes {
        let mut buf = BytesMut::zeroed(self.buffer_len());
        self.emit(&mut buf, key);
        buf.freeze()
    }

    /// Appends the packet, tagged under `key`, to `out`.
    pub fn emit_into(&self, out: &mut BytesMut, key: &AuthKey) {
        let start = out.len();
        out.put_bytes(0, self.buffer_len());
        self.emit(&mut out[start..], key);
    }
}

/// What a datagram on a mesh socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// Not a control packet under this key: carry it unchanged.
    Data,
    /// An authentic control packet.
    Control(ControlRepr),
    /// Authentic (the tag verifies) but not understood, for instance a kind
    /// from a newer version: drop and count.
    Unintelligible(WireError),
}

/// Decides whether `datagram` is a control packet under `key`. Data is
/// recognised after one 8-byte comparison in the common case.
pub fn classify(datagram: &[u8], key: &AuthKey) -> Classified {
    if datagram.len() < MIN_LEN || datagram[..8] != MAGIC {
        return Classified::Data;
    }
    let Ok(packet) = ControlPacket::new_checked(datagram) else {
        return Classified::Data;
    };
    if !packet.verify(key) {
        return Classified::Data;
    }
    match ControlRepr::parse(&packet) {
        Ok(repr) => Classified::Control(repr),
        Err(err) => Classified::Unintelligible(err),
    }
}

#[cfg(test)]
mod tests;
