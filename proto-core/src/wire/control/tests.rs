use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

fn key(byte: u8) -> AuthKey {
    AuthKey::new(&[byte; 32])
}

fn v4(a: u8, port: u16) -> AddrRepr {
    AddrRepr(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, a)),
        port,
    ))
}

fn addr_strategy() -> impl Strategy<Value = AddrRepr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| AddrRepr(SocketAddr::new(IpAddr::V4(ip.into()), port))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| AddrRepr(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))),
    ]
}

fn body_strategy() -> impl Strategy<Value = ControlBody> {
    prop_oneof![
        (ADDR_LEN as u16..=MAX_BODY as u16, any::<u8>())
            .prop_map(|(pad, policy)| ControlBody::Ping { pad, policy }),
        addr_strategy().prop_map(|observed| ControlBody::Pong { observed }),
        (any::<u64>(), ADDR_LEN as u16..=MAX_BODY as u16)
            .prop_map(|(assoc, pad)| ControlBody::ReflectRequest { assoc, pad }),
        addr_strategy().prop_map(|observed| ControlBody::ReflectResponse { observed }),
        (any::<u64>(), any::<u8>(), any::<u64>()).prop_map(|(allocation, leg, cookie)| {
            ControlBody::RelayBind {
                allocation,
                leg,
                cookie,
            }
        }),
        (any::<u64>(), any::<u8>(), any::<u64>(), addr_strategy()).prop_map(
            |(allocation, leg, cookie, observed)| ControlBody::RelayBindAck {
                allocation,
                leg,
                cookie,
                observed,
            }
        ),
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(seq, rx_packets, rx_bytes, last_rx_us)| ControlBody::PathStats {
                seq,
                rx_packets,
                rx_bytes,
                last_rx_us
            }
        ),
    ]
}

fn repr_strategy() -> impl Strategy<Value = ControlRepr> {
    (any::<u64>(), any::<u64>(), body_strategy()).prop_map(|(txid, timestamp_us, body)| {
        ControlRepr {
            txid,
            timestamp_us,
            body,
        }
    })
}

proptest! {
    #[test]
    fn every_message_round_trips(repr in repr_strategy()) {
        let k = key(1);
        let bytes = repr.to_bytes(&k);
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        prop_assert_eq!(classify(&bytes, &k), Classified::Control(repr));
    }

    #[test]
    fn a_different_key_makes_it_data(repr in repr_strategy()) {
        let bytes = repr.to_bytes(&key(1));
        prop_assert_eq!(classify(&bytes, &key(2)), Classified::Data);
    }

    #[test]
    fn any_flipped_bit_makes_it_data(repr in repr_strategy(), bit in any::<prop::sample::Index>()) {
        let k = key(3);
        let mut bytes = repr.to_bytes(&k).to_vec();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(classify(&bytes, &k), Classified::Data);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = classify(&bytes, &key(4));
        if let Ok(packet) = ControlPacket::new_checked(&bytes[..]) {
            let _ = ControlRepr::parse(&packet);
            let _ = packet.verify(&key(4));
        }
    }

    #[test]
    fn arbitrary_bytes_behind_the_magic_never_panic(tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&tail);
        let _ = classify(&bytes, &key(5));
        if let Ok(packet) = ControlPacket::new_checked(&bytes[..]) {
            let _ = ControlRepr::parse(&packet);
        }
    }

    #[test]
    fn responses_are_never_larger_than_their_requests(pad in ADDR_LEN as u16..=MAX_BODY as u16, observed in addr_strategy()) {
        let ping = ControlRepr { txid: 1, timestamp_us: 2, body: ControlBody::Ping { pad, policy: PING_METERED } };
        let pong = ControlRepr { txid: 1, timestamp_us: 3, body: ControlBody::Pong { observed } };
        prop_assert!(pong.buffer_len() <= ping.buffer_len());
        let request = ControlRepr { txid: 1, timestamp_us: 2, body: ControlBody::ReflectRequest { assoc: 5, pad } };
        let response = ControlRepr { txid: 1, timestamp_us: 3, body: ControlBody::ReflectResponse { observed } };
        prop_assert!(response.buffer_len() <= request.buffer_len());
        let bind = ControlRepr { txid: 1, timestamp_us: 2, body: ControlBody::RelayBind { allocation: 9, leg: 1, cookie: 0 } };
        let ack = ControlRepr { txid: 1, timestamp_us: 3, body: ControlBody::RelayBindAck { allocation: 9, leg: 1, cookie: 7, observed } };
        prop_assert!(ack.buffer_len() <= bind.buffer_len());
    }
}

#[test]
fn wireguard_and_quic_first_bytes_are_never_magic() {
    // WireGuard message types are 1..=4; QUIC packets set the fixed bit 0x40.
    for first in [1u8, 2, 3, 4, 0x40, 0xC0] {
        assert_ne!(MAGIC[0], first);
    }
    assert_eq!(MAGIC[0], 0x00);
}

#[test]
fn data_that_starts_with_the_magic_stays_data() {
    let k = key(6);
    let mut payload = MAGIC.to_vec();
    payload.resize(200, 0xAB);
    assert_eq!(classify(&payload, &k), Classified::Data);
}

#[test]
fn framing_errors_are_named() {
    let k = key(7);
    let ping = ControlRepr {
        txid: 5,
        timestamp_us: 6,
        body: ControlBody::Ping { pad: 19, policy: 0 },
    };
    let bytes = ping.to_bytes(&k).to_vec();
    assert_eq!(
        ControlPacket::new_checked(&bytes[..10]).unwrap_err(),
        WireError::Truncated
    );
    let mut wrong_version = bytes.clone();
    wrong_version[8] = 9;
    assert_eq!(
        ControlPacket::new_checked(&wrong_version[..]).unwrap_err(),
        WireError::UnsupportedVersion(9)
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        ControlPacket::new_checked(&longer[..]).unwrap_err(),
        WireError::LengthMismatch
    );
    let mut not_magic = bytes.clone();
    not_magic[3] ^= 1;
    assert_eq!(
        ControlPacket::new_checked(&not_magic[..]).unwrap_err(),
        WireError::BadMagic
    );
}

#[test]
fn an_authentic_unknown_kind_is_unintelligible_not_data() {
    let k = key(8);
    let mut bytes = ControlRepr {
        txid: 1,
        timestamp_us: 1,
        body: ControlBody::Pong {
            observed: v4(1, 80),
        },
    }
    .to_bytes(&k)
    .to_vec();
    bytes[9] = 200;
    let len = bytes.len();
    let tag = k.tag(&bytes[..len - TAG_LEN]);
    bytes[len - TAG_LEN..].copy_from_slice(&tag);
    assert_eq!(
        classify(&bytes, &k),
        Classified::Unintelligible(WireError::UnknownKind(200))
    );
}

#[test]
fn non_canonical_ipv4_is_rejected() {
    let k = key(9);
    let mut bytes = ControlRepr {
        txid: 1,
        timestamp_us: 1,
        body: ControlBody::Pong {
            observed: v4(1, 80),
        },
    }
    .to_bytes(&k)
    .to_vec();
    bytes[HEADER_LEN + 10] = 1; // inside the twelve bytes that must be zero
    let len = bytes.len();
    let tag = k.tag(&bytes[..len - TAG_LEN]);
    bytes[len - TAG_LEN..].copy_from_slice(&tag);
    assert_eq!(
        classify(&bytes, &k),
        Classified::Unintelligible(WireError::BadAddress)
    );
}
