mod malformed;
mod samples;
mod strategy;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn peer(s: &str) -> PeerRef {
    s.parse().unwrap()
}

fn to_bytes(msg: &Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(msg, &mut out).unwrap();
    out.to_vec()
}

fn frame(code: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 2) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&[VERSION, code]);
    out.extend_from_slice(body);
    out
}

/// Pushes `stream` in chunks of the given sizes (cycled), draining after
/// every push, and checks the buffer bound on the way.
fn decode_chunked(stream: &[u8], sizes: &[usize]) -> Result<Vec<Message>, MsgError> {
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        decoder.push(piece);
        while let Some(msg) = decoder.next()? {
            out.push(msg);
        }
        assert!(decoder.buffered() < LEN_PREFIX + MAX_FRAME);
    }
    assert_eq!(decoder.buffered(), 0, "a partial frame was left");
    Ok(out)
}

fn decode_one(bytes: &[u8]) -> Result<Message, MsgError> {
    let mut decoder = FrameDecoder::new();
    decoder.push(bytes);
    let msg = decoder.next()?.expect("a whole frame");
    assert_eq!(decoder.buffered(), 0);
    Ok(msg)
}

/// A `Nodes` reply whose frame length is exactly [`MAX_FRAME`].
fn largest_nodes_reply() -> Message {
    // Body: request id 4, outcome 1, reply tag 1, count 2, then entries of
    // 20 bytes plus the name.
    let mut nodes = Vec::new();
    let mut room = MAX_FRAME - 2 - 8;
    let mut id = 0;
    while room > 0 {
        let name_len = (room - 20).min(MAX_NAME_LEN);
        nodes.push(NodeInfo {
            node_id: NodeId(id),
            name: name(&"n".repeat(name_len)),
            state: AdmissionState::Admitted,
            connected: id % 2 == 0,
            last_seen_unix_s: 1_700_000_000 + id,
        });
        room -= 20 + name_len;
        id += 1;
    }
    Message::AdminResponse {
        request_id: 7,
        result: Ok(AdminReply::Nodes(nodes)),
    }
}

#[test]
fn every_single_byte_change_of_a_sample_is_rejected_or_canonical() {
    for msg in samples::samples() {
        let bytes = to_bytes(&msg);
        assert_eq!(decode_one(&bytes), Ok(msg));
        for at in 0..bytes.len() {
            let original = bytes[at];
            for value in [
                0,
                1,
                2,
                3,
                0x7f,
                0x80,
                0xff,
                original ^ 1,
                original.wrapping_add(1),
            ] {
                let mut data = vec![0xff]; // one push
                data.extend_from_slice(&bytes);
                data[1 + at] = value;
                crate::fuzzing::control_message(&data);
                data[0] = 0; // one byte at a time
                crate::fuzzing::control_message(&data);
            }
        }
    }
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in strategy::message()) {
        let bytes = to_bytes(&msg);
        prop_assert_eq!(bytes.len(), msg.encoded_len());
        prop_assert_eq!(&bytes[..4], &((bytes.len() - 4) as u32).to_be_bytes());
        prop_assert_eq!(bytes[4], VERSION);
        prop_assert_eq!(bytes[5], msg.type_code());
        prop_assert_eq!(decode_one(&bytes), Ok(msg));
    }

    #[test]
    fn streams_round_trip_in_any_chunking(
        msgs in prop::collection::vec(strategy::message(), 1..6),
        sizes in prop::collection::vec(1usize..400, 1..16),
    ) {
        let stream: Vec<u8> = msgs.iter().flat_map(to_bytes).collect();
        prop_assert_eq!(decode_chunked(&stream, &sizes), Ok(msgs));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        crate::fuzzing::control_message(&data);
    }

    #[test]
    fn arbitrary_bodies_never_panic_and_decode_canonically(
        code in prop::sample::select(TYPE_CODES),
        body in prop::collection::vec(any::<u8>(), 0..200),
        chunk in any::<u8>(),
    ) {
        let mut data = vec![chunk];
        data.extend(frame(code, &body));
        crate::fuzzing::control_message(&data);
    }

    #[test]
    fn mutated_frames_that_decode_are_canonical(
        msgs in prop::collection::vec(strategy::message(), 1..3),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        chunk in any::<u8>(),
    ) {
        let mut data = vec![chunk];
        data.extend(msgs.iter().flat_map(to_bytes));
        for (at, byte) in flips {
            let at = 1 + at.index(data.len() - 1);
            data[at] = byte;
        }
        crate::fuzzing::control_message(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn one_byte_chunks_round_trip(msgs in prop::collection::vec(strategy::message(), 1..4)) {
        let stream: Vec<u8> = msgs.iter().flat_map(to_bytes).collect();
        prop_assert_eq!(decode_chunked(&stream, &[1]), Ok(msgs));
    }
}

const TYPE_CODES: &[u8] = &[
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
    0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x20, 0x21, 0x30, 0x40, 0x41,
];

#[test]
fn type_codes_are_stable() {
    let key = [9u8; 32];
    let relay = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7443);
    let table = [
        (
            Message::Hello {
                node: name("alpha"),
                token: Bytes::new(),
                advertise_private: false,
            },
            0x01,
        ),
        (
            Message::Welcome {
                node_id: NodeId(1),
                token_expires_unix_s: 2,
            },
            0x02,
        ),
        (
            Message::Reject {
                code: RejectCode::Pending,
                reason: String::new(),
            },
            0x03,
        ),
        (
            Message::Enroll {
                join_token: "j".into(),
                csr_der: Bytes::new(),
            },
            0x04,
        ),
        (
            Message::Enrolled {
                node_id: NodeId(1),
                chain_der: vec![],
            },
            0x05,
        ),
        (Message::TokenRequest, 0x06),
        (
            Message::TokenGrant {
                token: Bytes::new(),
                expires_unix_s: 1,
            },
            0x07,
        ),
        (
            Message::Renew {
                csr_der: Bytes::new(),
            },
            0x08,
        ),
        (Message::Renewed { chain_der: vec![] }, 0x09),
        (Message::RegisterServices { services: vec![] }, 0x10),
        (
            Message::Candidates {
                assoc: AssocId(1),
                candidates: vec![],
            },
            0x11,
        ),
        (
            Message::AssociationInstalled {
                assoc: AssocId(1),
                epoch: 1,
                service: name("wg0"),
                peer: peer("beta/wg0"),
                key,
                mode: Mode::WholePacket,
                relay: RelayPolicy::Allow,
            },
            0x12,
        ),
        (
            Message::AssociationWithdrawn {
                assoc: AssocId(1),
                reason: WithdrawReason::Rekey,
            },
            0x13,
        ),
        (
            Message::Punch {
                assoc: AssocId(1),
                at_unix_ms: 1,
            },
            0x14,
        ),
        (
            Message::RelayAllocation {
                assoc: AssocId(1),
                relay,
                allocation: 1,
                leg: 0,
                key,
                site: RelaySite::Coordinator,
            },
            0x15,
        ),
        (
            Message::Revoked {
                reason: String::new(),
            },
            0x16,
        ),
        (Message::Reflectors { extra: vec![relay] }, 0x17),
        (
            Message::RelayHostOffer {
                ip: relay.ip(),
                max_allocations: 1,
                quota_per_node: 1,
            },
            0x18,
        ),
        (
            Message::RelayAllocate {
                allocation: 1,
                assoc: AssocId(1),
                key,
                nodes: [NodeId(1), NodeId(2)],
            },
            0x19,
        ),
        (
            Message::RelayOpened {
                allocation: 1,
                relay,
            },
            0x1a,
        ),
        (
            Message::RelayRelease {
                assoc: AssocId(1),
                allocation: 1,
            },
            0x1b,
        ),
        (Message::RelayHostRefused { seen: relay.ip() }, 0x1c),
        (Message::Keepalive { seq: 1 }, 0x20),
        (Message::KeepaliveAck { seq: 1 }, 0x21),
        (Message::Raft(RaftMessage::default()), 0x30),
        (
            Message::AdminRequest {
                request_id: 1,
                command: AdminCommand::Status,
            },
            0x40,
        ),
        (
            Message::AdminResponse {
                request_id: 1,
                result: Ok(AdminReply::Done),
            },
            0x41,
        ),
    ];
    assert_eq!(table.len(), TYPE_CODES.len());
    for ((msg, code), listed) in table.iter().zip(TYPE_CODES) {
        assert_eq!(msg.type_code(), *code, "{}", msg.name());
        assert_eq!(code, listed);
        assert_eq!(to_bytes(msg)[5], *code);
    }
}

#[test]
fn golden_encodings() {
    assert_eq!(
        to_bytes(&Message::Keepalive { seq: 0x0102 }),
        [0, 0, 0, 10, 1, 0x20, 0, 0, 0, 0, 0, 0, 1, 2]
    );
    assert_eq!(
        to_bytes(&Message::Hello {
            node: name("ab"),
            token: Bytes::from_static(&[0xee]),
            advertise_private: true
        }),
        [0, 0, 0, 10, 1, 0x01, 0, 2, b'a', b'b', 0, 1, 0xee, 1]
    );
    assert_eq!(
        to_bytes(&Message::AdminRequest {
            request_id: 3,
            command: AdminCommand::Invite {
                node: name("c"),
                admit: true,
                ttl_s: 600
            }
        }),
        [0, 0, 0, 15, 1, 0x40, 0, 0, 0, 3, 1, 0, 1, b'c', 1, 0, 0, 2, 0x58]
    );
    assert_eq!(
        to_bytes(&Message::Renew {
            csr_der: Bytes::from_static(&[0x30, 0])
        }),
        [0, 0, 0, 6, 1, 0x08, 0, 2, 0x30, 0]
    );
    assert_eq!(
        to_bytes(&Message::Renewed {
            chain_der: vec![Bytes::from_static(&[0x30, 0]), Bytes::new()]
        }),
        [0, 0, 0, 10, 1, 0x09, 0, 2, 0, 2, 0x30, 0, 0, 0]
    );
    assert_eq!(
        to_bytes(&Message::AdminResponse {
            request_id: 3,
            result: Err(AdminError {
                code: RejectCode::NotAdmin,
                reason: "x".into()
            })
        }),
        [0, 0, 0, 11, 1, 0x41, 0, 0, 0, 3, 1, 13, 0, 1, b'x']
    );
}

#[test]
fn header_errors_do_not_wait_for_the_body() {
    for (prefix, expected) in [
        (vec![0, 1, 0, 1], MsgError::FrameTooLarge { len: 65_537 }),
        (
            vec![0xff; 4],
            MsgError::FrameTooLarge {
                len: u32::MAX as usize,
            },
        ),
        (vec![0, 0, 1, 0, 7], MsgError::UnsupportedVersion(7)),
        (vec![0, 0, 1, 0, 1, 0x42], MsgError::UnknownType(0x42)),
    ] {
        let mut decoder = FrameDecoder::new();
        decoder.push(&prefix);
        assert_eq!(decoder.next(), Err(expected));
    }
}

#[test]
fn an_error_is_final() {
    let mut decoder = FrameDecoder::new();
    decoder.push(&frame(0x9f, &[]));
    assert_eq!(decoder.next(), Err(MsgError::UnknownType(0x9f)));
    decoder.push(&to_bytes(&Message::TokenRequest));
    assert_eq!(decoder.next(), Err(MsgError::UnknownType(0x9f)));
    assert_eq!(decoder.buffered(), 0);
    assert_eq!(decoder.error(), Some(&MsgError::UnknownType(0x9f)));
}

#[test]
fn messages_before_an_error_are_delivered() {
    let mut stream = to_bytes(&Message::Keepalive { seq: 1 });
    stream.extend(frame(0x9f, &[]));
    let mut decoder = FrameDecoder::new();
    decoder.push(&stream);
    assert_eq!(decoder.next(), Ok(Some(Message::Keepalive { seq: 1 })));
    assert_eq!(decoder.next(), Err(MsgError::UnknownType(0x9f)));
}

#[test]
fn a_maximal_frame_trickled_in_never_grows_the_buffer_past_the_limit() {
    let msg = largest_nodes_reply();
    let bytes = to_bytes(&msg);
    assert_eq!(bytes.len(), LEN_PREFIX + MAX_FRAME);
    assert_eq!(&bytes[..4], &(MAX_FRAME as u32).to_be_bytes());
    let mut decoder = FrameDecoder::new();
    let (last, head) = bytes.split_last().unwrap();
    for byte in head {
        decoder.push(std::slice::from_ref(byte));
        assert_eq!(decoder.next(), Ok(None));
        assert!(decoder.buffered() < LEN_PREFIX + MAX_FRAME);
    }
    decoder.push(&[*last]);
    assert_eq!(decoder.buffered(), LEN_PREFIX + MAX_FRAME);
    assert_eq!(decoder.next(), Ok(Some(msg)));
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn pushing_without_draining_is_refused() {
    let bytes = to_bytes(&largest_nodes_reply());
    let mut decoder = FrameDecoder::new();
    decoder.push(&bytes);
    decoder.push(&bytes);
    assert_eq!(decoder.next(), Err(MsgError::Undrained));
    assert_eq!(decoder.buffered(), 0);
    // Small frames may pile up between drains; they are all delivered.
    let small = to_bytes(&Message::Keepalive { seq: 5 });
    let mut decoder = FrameDecoder::new();
    for _ in 0..3 {
        decoder.push(&small);
    }
    for _ in 0..3 {
        assert_eq!(decoder.next(), Ok(Some(Message::Keepalive { seq: 5 })));
    }
    assert_eq!(decoder.next(), Ok(None));
}

#[test]
fn encode_refuses_what_would_not_decode_and_appends_nothing() {
    let mut nodes = largest_nodes_reply();
    if let Message::AdminResponse {
        result: Ok(AdminReply::Nodes(list)),
        ..
    } = &mut nodes
    {
        list.push(list[0].clone());
    }
    let over = nodes.encoded_len() - LEN_PREFIX;
    let candidate = Candidate {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1),
        kind: CandidateKind::Host,
        uplink: name("fiber"),
    };
    let table = [
        (nodes, MsgError::FrameTooLarge { len: over }),
        (
            Message::Reject {
                code: RejectCode::Internal,
                reason: "x".repeat(256),
            },
            MsgError::TooLong {
                field: "Reject.reason",
                len: 256,
                max: 255,
            },
        ),
        (
            Message::Revoked {
                reason: "x".repeat(70_000),
            },
            MsgError::FrameTooLarge { len: 70_004 },
        ),
        (
            Message::Candidates {
                assoc: AssocId(1),
                candidates: vec![candidate; 65],
            },
            MsgError::TooMany {
                field: "Candidates.candidates",
                count: 65,
                max: 64,
            },
        ),
        (
            Message::Enrolled {
                node_id: NodeId(1),
                chain_der: vec![Bytes::new(); 5],
            },
            MsgError::TooMany {
                field: "Enrolled.chain_der",
                count: 5,
                max: 4,
            },
        ),
        (
            Message::Renewed {
                chain_der: vec![Bytes::new(); 5],
            },
            MsgError::TooMany {
                field: "Renewed.chain_der",
                count: 5,
                max: 4,
            },
        ),
        (
            Message::Renew {
                csr_der: Bytes::from(vec![0; 4097]),
            },
            MsgError::TooLong {
                field: "Renew.csr_der",
                len: 4097,
                max: 4096,
            },
        ),
        (
            Message::Hello {
                node: name("a"),
                token: Bytes::from(vec![0; 1025]),
                advertise_private: false,
            },
            MsgError::TooLong {
                field: "Hello.token",
                len: 1025,
                max: 1024,
            },
        ),
    ];
    for (msg, expected) in table {
        let mut out = BytesMut::new();
        out.put_slice(b"kept");
        assert_eq!(encode(&msg, &mut out), Err(expected), "{}", msg.name());
        assert_eq!(&out[..], b"kept");
    }
}

#[test]
fn names_are_validated() {
    let long = "a".repeat(63);
    for ok in ["a", "wg0", "alpha-1.b_c", "0", "...", long.as_str()] {
        assert_eq!(Name::new(ok).unwrap().as_str(), ok);
        assert_eq!(ok.parse::<Name>().unwrap().to_string(), ok);
    }
    let table = [
        ("", MsgError::NameEmpty),
        (&"a".repeat(64), MsgError::NameTooLong { len: 64 }),
        (
            "Bad Name",
            MsgError::NameCharset {
                name: "Bad Name".into(),
            },
        ),
        (
            "UPPER",
            MsgError::NameCharset {
                name: "UPPER".into(),
            },
        ),
        ("a/b", MsgError::NameCharset { name: "a/b".into() }),
        ("é", MsgError::NameCharset { name: "é".into() }),
        (" a", MsgError::NameCharset { name: " a".into() }),
        ("a\0", MsgError::NameCharset { name: "a\0".into() }),
    ];
    for (bad, expected) in table {
        assert_eq!(Name::new(bad), Err(expected), "{bad:?}");
    }
}

#[test]
fn peer_refs_read_and_print_as_node_slash_service() {
    let p = peer("beta/wg0");
    assert_eq!(p.node.as_str(), "beta");
    assert_eq!(p.service.as_str(), "wg0");
    assert_eq!(p.to_string(), "beta/wg0");
    assert_eq!(
        "beta".parse::<PeerRef>(),
        Err(MsgError::BadPeerRef {
            text: "beta".into()
        })
    );
    assert_eq!("beta/".parse::<PeerRef>(), Err(MsgError::NameEmpty));
    assert_eq!("/wg0".parse::<PeerRef>(), Err(MsgError::NameEmpty));
    assert_eq!(
        "a/b/c".parse::<PeerRef>(),
        Err(MsgError::NameCharset { name: "b/c".into() })
    );
}

#[test]
fn code_enums_have_dense_codes_and_unique_names() {
    fn check<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        code: fn(T) -> u8,
        from_code: fn(u8) -> Option<T>,
        as_str: fn(T) -> &'static str,
        from_name: fn(&str) -> Option<T>,
    ) {
        for (i, &v) in all.iter().enumerate() {
            assert_eq!(usize::from(code(v)), i + 1, "{v:?}");
            assert_eq!(from_code(code(v)), Some(v));
            assert_eq!(from_name(as_str(v)), Some(v));
        }
        assert_eq!(from_code(0), None);
        assert_eq!(from_code(all.len() as u8 + 1), None);
    }
    check(
        RejectCode::ALL,
        RejectCode::code,
        RejectCode::from_code,
        RejectCode::as_str,
        RejectCode::from_name,
    );
    check(
        CandidateKind::ALL,
        CandidateKind::code,
        CandidateKind::from_code,
        CandidateKind::as_str,
        CandidateKind::from_name,
    );
    check(
        Mode::ALL,
        Mode::code,
        Mode::from_code,
        Mode::as_str,
        Mode::from_name,
    );
    check(
        RelayPolicy::ALL,
        RelayPolicy::code,
        RelayPolicy::from_code,
        RelayPolicy::as_str,
        RelayPolicy::from_name,
    );
    check(
        WithdrawReason::ALL,
        WithdrawReason::code,
        WithdrawReason::from_code,
        WithdrawReason::as_str,
        WithdrawReason::from_name,
    );
    check(
        AdmissionState::ALL,
        AdmissionState::code,
        AdmissionState::from_code,
        AdmissionState::as_str,
        AdmissionState::from_name,
    );
    check(
        AssocOrigin::ALL,
        AssocOrigin::code,
        AssocOrigin::from_code,
        AssocOrigin::as_str,
        AssocOrigin::from_name,
    );
    check(
        AssocState::ALL,
        AssocState::code,
        AssocState::from_code,
        AssocState::as_str,
        AssocState::from_name,
    );
    assert_eq!(RejectCode::ALL.len(), 19);
    assert_eq!(RejectCode::WrongState.as_str(), "wrong-state");
    assert_eq!(
        RejectCode::from_code(18),
        Some(RejectCode::UnknownAssociation)
    );
    assert_eq!(RejectCode::from_code(19), Some(RejectCode::NoMajority));
    assert_eq!(RejectCode::TokenExpired.as_str(), "token-expired");
    assert_eq!(RejectCode::JoinTokenUsed.to_string(), "join-token-used");
    assert_eq!(Mode::WholePacket.as_str(), "whole-packet");
    assert_eq!(RelayPolicy::Never.as_str(), "never");
    assert_eq!(AdmissionState::Admitted.as_str(), "admitted");
}

#[test]
fn ipv6_scope_is_not_carried() {
    let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
        "fe80::1".parse().unwrap(),
        9,
        7,
        3,
    ));
    let msg = Message::Candidates {
        assoc: AssocId(1),
        candidates: vec![Candidate {
            addr: scoped,
            kind: CandidateKind::Host,
            uplink: name("lan"),
        }],
    };
    let Ok(Message::Candidates { candidates, .. }) = decode_one(&to_bytes(&msg)) else {
        panic!("did not decode");
    };
    assert_eq!(
        candidates[0].addr,
        SocketAddr::new("fe80::1".parse().unwrap(), 9)
    );
}
