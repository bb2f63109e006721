//! The reflector (DESIGN §5): on the coordinator's UDP port, and on any
//! extra reflector address, an authentic [`ControlBody::ReflectRequest`]
//! from a node's mesh socket is answered with the address it came from.
//! That answer is the node's server-reflexive candidate; the answers of two
//! reflector addresses to the same mesh socket, compared, tell the node how
//! its NAT maps and allocates ports.
//!
//! A request names its association and is signed with that association's
//! key, which the coordinator made: only the two ends of a live
//! association can use the reflector, and a withdrawal (revoke, delete)
//! ends it at once. The answer is signed with the same key, so a node
//! believes only its own coordinator. Requests whose timestamp is far from
//! the coordinator's clock are refused; a replay inside the window is
//! answered, which is harmless: the answer goes to the replay's source and
//! is never larger than the request, so the reflector amplifies nothing.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::id::AssocId;
use crate::time::WallClock;
use crate::wire::control::KIND_REFLECT_REQUEST;
use crate::wire::{
    classify, AddrRepr, AuthKey, Classified, ControlBody, ControlPacket, ControlRepr, KEY_LEN,
    MAGIC,
};

/// A request may be this far from the coordinator's clock, either way.
pub const REFLECT_WINDOW_US: u64 = 30_000_000;

/// Why a datagram on a reflector socket got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a mesh control packet, or not one that verifies.
    NotAuthentic,
    /// The association it names is not live.
    UnknownAssociation,
    /// Authentic but not a reflect request.
    NotARequest,
    /// Its timestamp is outside [`REFLECT_WINDOW_US`].
    Stale,
}

impl Refusal {
    /// Every reason, for metrics.
    pub const ALL: [Self; 4] = [
        Self::NotAuthentic,
        Self::UnknownAssociation,
        Self::NotARequest,
        Self::Stale,
    ];

    /// A stable name for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAuthentic => "not-authentic",
            Self::UnknownAssociation => "unknown-association",
            Self::NotARequest => "not-a-request",
            Self::Stale => "stale",
        }
    }
}

/// Whether a datagram on the coordinator's UDP socket is for the
/// reflector: mesh control packets start with [`MAGIC`], whose first byte
/// (0x00) no QUIC packet has.
pub fn is_mesh_control(payload: &[u8]) -> bool {
    payload.len() >= MAGIC.len() && payload[..MAGIC.len()] == MAGIC
}

/// The answer to `payload` from `src`, or why there is none; `key_of`
/// gives a live association's key.
pub(crate) fn answer(
    key_of: impl Fn(AssocId) -> Option<[u8; KEY_LEN]>,
    wall: &WallClock,
    now: Instant,
    src: SocketAddr,
    payload: &[u8],
) -> Result<Bytes, Refusal> {
    // The association is read before the tag is checked: the request
    // names the key that signs it. A forged id costs one lookup.
    let assoc = requested_assoc(payload).ok_or(Refusal::NotARequest)?;
    let key = key_of(AssocId(assoc)).ok_or(Refusal::UnknownAssociation)?;
    let key = AuthKey::new(&key);
    let Classified::Control(repr) = classify(payload, &key) else {
        return Err(Refusal::NotAuthentic);
    };
    let ControlBody::ReflectRequest { assoc: named, .. } = repr.body else {
        return Err(Refusal::NotARequest);
    };
    if named != assoc {
        return Err(Refusal::NotAuthentic);
    }
    let clock = wall.unix_us(now);
    if repr.timestamp_us.abs_diff(clock) > REFLECT_WINDOW_US {
        return Err(Refusal::Stale);
    }
    let response = ControlRepr {
        txid: repr.txid,
        timestamp_us: clock,
        body: ControlBody::ReflectResponse {
            observed: AddrRepr(src),
        },
    };
    Ok(response.to_bytes(&key))
}

/// The association a reflect request names, read before authentication.
fn requested_assoc(payload: &[u8]) -> Option<u64> {
    let packet = ControlPacket::new_checked(payload).ok()?;
    if packet.kind() != KIND_REFLECT_REQUEST {
        return None;
    }
    let id = packet.body().get(..8)?;
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KEY: [u8; KEY_LEN] = [7; KEY_LEN];
    const ASSOC: u64 = 42;

    fn key_of(id: AssocId) -> Option<[u8; KEY_LEN]> {
        (id == AssocId(ASSOC)).then_some(KEY)
    }

    fn request(assoc: u64, key: &[u8; KEY_LEN], timestamp_us: u64) -> Bytes {
        ControlRepr {
            txid: 9,
            timestamp_us,
            body: ControlBody::ReflectRequest {
                assoc,
                pad: crate::wire::ADDR_LEN as u16,
            },
        }
        .to_bytes(&AuthKey::new(key))
    }

    fn setup() -> (WallClock, Instant, u64, SocketAddr) {
        let now = crate::test_epoch();
        let wall = WallClock::new(now, 1_760_000_000_000_000);
        let src: SocketAddr = "198.51.100.7:40000".parse().expect("an address");
        (wall, now, wall.unix_us(now), src)
    }

    #[test]
    fn an_authentic_request_is_answered_with_its_source_no_larger_and_signed() {
        let (wall, now, t, src) = setup();
        let req = request(ASSOC, &KEY, t);
        assert!(is_mesh_control(&req));
        let answer = answer(key_of, &wall, now, src, &req).expect("answered");
        assert!(answer.len() <= req.len());
        let Classified::Control(repr) = classify(&answer, &AuthKey::new(&KEY)) else {
            panic!("the answer verifies under the association key");
        };
        assert_eq!(repr.txid, 9);
        assert_eq!(
            repr.body,
            ControlBody::ReflectResponse {
                observed: AddrRepr(src)
            }
        );
    }

    #[test]
    fn forged_unknown_stale_and_other_packets_are_refused() {
        let (wall, now, t, src) = setup();
        let cases = [
            (request(ASSOC, &[8; KEY_LEN], t), Refusal::NotAuthentic),
            (request(43, &KEY, t), Refusal::UnknownAssociation),
            (
                request(ASSOC, &KEY, t - REFLECT_WINDOW_US - 1),
                Refusal::Stale,
            ),
            (
                request(ASSOC, &KEY, t + REFLECT_WINDOW_US + 1),
                Refusal::Stale,
            ),
            (
                Bytes::from_static(b"\x00not a control packet"),
                Refusal::NotARequest,
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(answer(key_of, &wall, now, src, &payload), Err(want));
        }
        // A ping signed with the right key is not a reflect request.
        let ping = ControlRepr {
            txid: 1,
            timestamp_us: t,
            body: ControlBody::Ping {
                pad: crate::wire::ADDR_LEN as u16,
                policy: 0,
            },
        }
        .to_bytes(&AuthKey::new(&KEY));
        assert_eq!(
            answer(key_of, &wall, now, src, &ping),
            Err(Refusal::NotARequest)
        );
        // The window is inclusive of its edge.
        let edge = request(ASSOC, &KEY, t - REFLECT_WINDOW_US);
        assert!(answer(key_of, &wall, now + Duration::ZERO, src, &edge).is_ok());
    }

    #[test]
    fn quic_packets_are_not_mesh_control() {
        // QUIC long and short headers set the fixed bit (0x40).
        assert!(!is_mesh_control(&[0xc0; 40]));
        assert!(!is_mesh_control(&[0x40; 40]));
        assert!(!is_mesh_control(&MAGIC[..7]));
    }
}
