//! Each malformation class and the exact error it yields.

use super::super::*;
use super::{frame, name, peer, to_bytes};

#[test]
fn each_malformation_has_its_error() {
    let keepalive = 7u64.to_be_bytes();
    let hello = |name: &[u8], flag: u8| {
        let mut body = (name.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(name);
        body.extend_from_slice(&[0, 0, flag]);
        frame(0x01, &body)
    };
    let text_body = |code: u8, bytes: &[u8]| {
        let mut body = vec![code];
        body.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        body.extend_from_slice(bytes);
        body
    };
    let relay = |family: u8, tail: u8| {
        let mut body = vec![0; 8];
        body.push(family);
        body.extend_from_slice(&[10, 0, 0, 1]);
        body.extend_from_slice(&[0; 12]);
        body[20] = tail;
        body.extend_from_slice(&[0, 80]);
        body.extend_from_slice(&[0; 8 + 1 + 32]);
        body.push(1);
        frame(0x15, &body)
    };
    let host_offer = |port: u8| {
        let mut body = vec![4, 192, 0, 2, 9];
        body.extend_from_slice(&[0; 12]);
        body.extend_from_slice(&[0, port]);
        body.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 2]);
        frame(0x18, &body)
    };
    let admin_request = |tail: &[u8]| {
        let mut body = vec![0, 0, 0, 1];
        body.extend_from_slice(tail);
        frame(0x40, &body)
    };
    let admin_response = |tail: &[u8]| {
        let mut body = vec![0, 0, 0, 1];
        body.extend_from_slice(tail);
        frame(0x41, &body)
    };
    let mut trailing = frame(0x20, &keepalive);
    trailing.extend_from_slice(&[0; 4]);
    trailing[3] += 4;
    let mut hello_trailing = hello(b"alpha", 1);
    hello_trailing.extend_from_slice(&[1, 2, 3, 4]);
    hello_trailing[3] += 4;
    let mut too_many_certs = vec![0; 8];
    too_many_certs.extend_from_slice(&[0, 5]);
    let mut big_cert = vec![0; 8];
    big_cert.extend_from_slice(&[0, 1, 0x10, 0x01]);
    big_cert.resize(big_cert.len() + 4097, 0);
    let mut big_csr = vec![0x10, 0x01];
    big_csr.resize(big_csr.len() + 4097, 0);
    let mut big_renewed_cert = vec![0, 1, 0x10, 0x01];
    big_renewed_cert.resize(big_renewed_cert.len() + 4097, 0);
    let mut big_json = vec![0, 5];
    big_json.extend_from_slice(&60_001u16.to_be_bytes());
    big_json.resize(big_json.len() + 60_001, b' ');

    let table: Vec<(&str, Vec<u8>, MsgError, &str)> = vec![
        (
            "oversized length",
            70_000u32.to_be_bytes().to_vec(),
            MsgError::FrameTooLarge { len: 70_000 },
            "frame of 70000 bytes exceeds 65536",
        ),
        (
            "length below the header",
            vec![0, 0, 0, 1],
            MsgError::FrameTooShort { len: 1 },
            "",
        ),
        (
            "zero length",
            vec![0, 0, 0, 0],
            MsgError::FrameTooShort { len: 0 },
            "",
        ),
        (
            "unknown version",
            vec![0, 0, 0, 2, 2, 0x06],
            MsgError::UnsupportedVersion(2),
            "",
        ),
        (
            "unknown type",
            frame(0x9f, &[]),
            MsgError::UnknownType(0x9f),
            "unknown message type 0x9f",
        ),
        ("type zero", frame(0x00, &[]), MsgError::UnknownType(0), ""),
        (
            "truncated integer",
            frame(0x20, &keepalive[..7]),
            MsgError::Truncated {
                field: "Keepalive.seq",
            },
            "body ends inside Keepalive.seq",
        ),
        (
            "truncated string",
            frame(0x16, &[0, 3, b'a']),
            MsgError::Truncated {
                field: "Revoked.reason",
            },
            "",
        ),
        (
            "trailing bytes",
            trailing,
            MsgError::TrailingBytes {
                message: "Keepalive",
                count: 4,
            },
            "4 trailing bytes after Keepalive",
        ),
        (
            "trailing bytes after Hello",
            hello_trailing,
            MsgError::TrailingBytes {
                message: "Hello",
                count: 4,
            },
            "4 trailing bytes after Hello",
        ),
        (
            "empty body with fields",
            frame(0x02, &[]),
            MsgError::Truncated {
                field: "Welcome.node_id",
            },
            "",
        ),
        (
            "body on an empty message",
            frame(0x06, &[0]),
            MsgError::TrailingBytes {
                message: "TokenRequest",
                count: 1,
            },
            "",
        ),
        (
            "bool out of range",
            hello(b"alpha", 2),
            MsgError::BadBool {
                field: "Hello.advertise_private",
                value: 2,
            },
            "Hello.advertise_private is 0x02, not a bool (0 or 1)",
        ),
        (
            "name with a space",
            hello(b"Bad Name", 0),
            MsgError::NameCharset {
                name: "Bad Name".into(),
            },
            "name \"Bad Name\" has a character outside [a-z0-9._-]",
        ),
        (
            "empty name",
            hello(b"", 0),
            MsgError::NameEmpty,
            "name is empty",
        ),
        (
            "long name",
            hello(&[b'a'; 64], 0),
            MsgError::NameTooLong { len: 64 },
            "name of 64 bytes exceeds 63",
        ),
        (
            "non-UTF-8 name",
            hello(&[0xff, b'a'], 0),
            MsgError::NameCharset {
                name: "\u{fffd}a".into(),
            },
            "",
        ),
        (
            "non-UTF-8 text",
            frame(0x03, &text_body(1, &[0xc3, 0x28])),
            MsgError::NotUtf8 {
                field: "Reject.reason",
            },
            "Reject.reason is not UTF-8",
        ),
        (
            "text over its cap",
            frame(0x03, &text_body(1, &[b'x'; 256])),
            MsgError::TooLong {
                field: "Reject.reason",
                len: 256,
                max: 255,
            },
            "Reject.reason of 256 bytes exceeds 255",
        ),
        (
            "unknown reject code",
            frame(0x03, &text_body(20, b"")),
            MsgError::UnknownCode {
                kind: "RejectCode",
                value: 20,
            },
            "unknown RejectCode 20",
        ),
        (
            "reject code zero",
            frame(0x03, &text_body(0, b"")),
            MsgError::UnknownCode {
                kind: "RejectCode",
                value: 0,
            },
            "",
        ),
        (
            "list over its cap",
            frame(0x11, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 65]),
            MsgError::TooMany {
                field: "Candidates.candidates",
                count: 65,
                max: 64,
            },
            "Candidates.candidates has 65 entries, more than 64",
        ),
        (
            "list longer than the body",
            frame(0x11, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 64]),
            MsgError::Truncated {
                field: "Candidate.addr",
            },
            "",
        ),
        (
            "too many certificates",
            frame(0x05, &too_many_certs),
            MsgError::TooMany {
                field: "Enrolled.chain_der",
                count: 5,
                max: 4,
            },
            "",
        ),
        (
            "certificate over its cap",
            frame(0x05, &big_cert),
            MsgError::TooLong {
                field: "Enrolled.chain_der[]",
                len: 4097,
                max: 4096,
            },
            "",
        ),
        (
            "renewal request over its cap",
            frame(0x08, &big_csr),
            MsgError::TooLong {
                field: "Renew.csr_der",
                len: 4097,
                max: 4096,
            },
            "Renew.csr_der of 4097 bytes exceeds 4096",
        ),
        (
            "truncated renewal request",
            frame(0x08, &[0, 9, 0x30, 7]),
            MsgError::Truncated {
                field: "Renew.csr_der",
            },
            "body ends inside Renew.csr_der",
        ),
        (
            "empty renewal request",
            frame(0x08, &[]),
            MsgError::Truncated {
                field: "Renew.csr_der",
            },
            "",
        ),
        (
            "trailing bytes after Renew",
            frame(0x08, &[0, 1, 0x30, 0]),
            MsgError::TrailingBytes {
                message: "Renew",
                count: 1,
            },
            "1 trailing bytes after Renew",
        ),
        (
            "too many renewed certificates",
            frame(0x09, &[0, 5]),
            MsgError::TooMany {
                field: "Renewed.chain_der",
                count: 5,
                max: 4,
            },
            "",
        ),
        (
            "renewed certificate over its cap",
            frame(0x09, &big_renewed_cert),
            MsgError::TooLong {
                field: "Renewed.chain_der[]",
                len: 4097,
                max: 4096,
            },
            "",
        ),
        (
            "renewed chain shorter than its count",
            frame(0x09, &[0, 2, 0, 1, 0x30]),
            MsgError::Truncated {
                field: "Renewed.chain_der[]",
            },
            "",
        ),
        (
            "unknown address family",
            relay(5, 0),
            MsgError::BadAddress {
                field: "RelayAllocation.relay",
            },
            "RelayAllocation.relay is not a valid socket address",
        ),
        (
            "non-canonical IPv4",
            relay(4, 1),
            MsgError::BadAddress {
                field: "RelayAllocation.relay",
            },
            "",
        ),
        (
            "relay host offer with a port",
            host_offer(1),
            MsgError::BadAddress {
                field: "RelayHostOffer.ip",
            },
            "RelayHostOffer.ip is not a valid socket address",
        ),
        (
            "unknown relay site",
            {
                let mut bytes = relay(4, 0);
                *bytes.last_mut().unwrap() = 3;
                bytes
            },
            MsgError::UnknownCode {
                kind: "RelaySite",
                value: 3,
            },
            "unknown RelaySite 3",
        ),
        (
            "relay allocate without its second node",
            frame(0x19, &[0; 8 + 8 + 32 + 8]),
            MsgError::Truncated {
                field: "RelayAllocate.nodes",
            },
            "",
        ),
        (
            "relay host refusal with a port",
            {
                let mut body = vec![4, 192, 0, 2, 9];
                body.extend_from_slice(&[0; 12]);
                body.extend_from_slice(&[0, 1]);
                frame(0x1c, &body)
            },
            MsgError::BadAddress {
                field: "RelayHostRefused.seen",
            },
            "",
        ),
        (
            "raft message of an unknown kind",
            frame(0x30, &[19]),
            MsgError::UnknownCode {
                kind: "raft message kind",
                value: 19,
            },
            "",
        ),
        (
            "raft entry cut inside its data",
            {
                let mut bytes = to_bytes(&Message::Raft(RaftMessage {
                    entries: vec![RaftEntry {
                        data: Bytes::from_static(b"abcd"),
                        ..RaftEntry::default()
                    }],
                    ..RaftMessage::default()
                }));
                // Drop the entry's context length and the last data byte,
                // then fix the frame length.
                bytes.truncate(bytes.len() - 3);
                let len = u32::try_from(bytes.len() - 4).unwrap();
                bytes[..4].copy_from_slice(&len.to_be_bytes());
                bytes
            },
            MsgError::Truncated {
                field: "RaftEntry.data",
            },
            "",
        ),
        (
            "relay release with trailing bytes",
            frame(0x1b, &[0; 17]),
            MsgError::TrailingBytes {
                message: "RelayRelease",
                count: 1,
            },
            "",
        ),
        (
            "unknown mode",
            {
                let mut bytes = to_bytes(&Message::AssociationInstalled {
                    assoc: AssocId(1),
                    epoch: 1,
                    service: name("wg0"),
                    peer: peer("b/wg0"),
                    key: [0; 32],
                    mode: Mode::Segmented,
                    relay: RelayPolicy::Only,
                });
                let at = bytes.len() - 2;
                bytes[at] = 9;
                bytes
            },
            MsgError::UnknownCode {
                kind: "Mode",
                value: 9,
            },
            "",
        ),
        (
            "unknown withdraw reason",
            frame(0x13, &[0, 0, 0, 0, 0, 0, 0, 1, 0]),
            MsgError::UnknownCode {
                kind: "WithdrawReason",
                value: 0,
            },
            "",
        ),
        (
            "unknown admin command",
            admin_request(&[12]),
            MsgError::UnknownCode {
                kind: "AdminCommand",
                value: 12,
            },
            "unknown AdminCommand 12",
        ),
        (
            "unknown admin outcome",
            admin_response(&[2]),
            MsgError::UnknownCode {
                kind: "AdminResponse.result",
                value: 2,
            },
            "",
        ),
        (
            "unknown admin reply",
            admin_response(&[0, 7]),
            MsgError::UnknownCode {
                kind: "AdminReply",
                value: 7,
            },
            "",
        ),
        (
            "unknown admission state",
            admin_response(&[0, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b'a', 4, 0]),
            MsgError::UnknownCode {
                kind: "AdmissionState",
                value: 4,
            },
            "",
        ),
        (
            "truncated created id",
            admin_response(&[0, 6, 0, 0, 0, 0, 0, 0, 9]),
            MsgError::Truncated {
                field: "Created.assoc",
            },
            "",
        ),
        (
            "status over its cap",
            admin_response(&big_json),
            MsgError::TooLong {
                field: "Status.json",
                len: 60_001,
                max: 60_000,
            },
            "",
        ),
    ];
    for (what, bytes, expected, text) in table {
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes);
        let err = decoder.next().expect_err(what);
        assert_eq!(err, expected, "{what}");
        if !text.is_empty() {
            assert_eq!(err.to_string(), text, "{what}");
        }
    }
}
