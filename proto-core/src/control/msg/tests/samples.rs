//! One small message of every variant, admin command and reply: the
//! mutation test walks them, and they seeded the fuzz corpus.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;

use super::super::*;
use super::{name, peer};

/// One small message of every variant, every admin command and reply.
pub(super) fn samples() -> Vec<Message> {
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40112);
    let v6 = SocketAddr::new("2001:db8::1".parse().unwrap(), 51820);
    let key = [0x5a; 32];
    let admin = |command| Message::AdminRequest {
        request_id: 42,
        command,
    };
    let reply = |result| Message::AdminResponse {
        request_id: 42,
        result,
    };
    vec![
        Message::Hello {
            node: name("alpha"),
            token: Bytes::from_static(b"admission-token"),
            advertise_private: true,
        },
        Message::Welcome {
            node_id: NodeId(3),
            token_expires_unix_s: 1_700_000_600,
        },
        Message::Reject {
            code: RejectCode::TokenExpired,
            reason: "token expired".into(),
        },
        Message::Enroll {
            join_token: "join.abc".into(),
            csr_der: Bytes::from_static(&[0x30, 3, 1, 2, 3]),
        },
        Message::Enrolled {
            node_id: NodeId(3),
            chain_der: vec![
                Bytes::from_static(&[0x30, 1, 0]),
                Bytes::from_static(&[0x30, 1, 1]),
            ],
        },
        Message::TokenRequest,
        Message::TokenGrant {
            token: Bytes::from_static(b"tok"),
            expires_unix_s: 1_700_001_200,
        },
        Message::Renew {
            csr_der: Bytes::from_static(&[0x30, 3, 4, 5, 6]),
        },
        Message::Renewed {
            chain_der: vec![
                Bytes::from_static(&[0x30, 1, 2]),
                Bytes::from_static(&[0x30, 1, 3]),
            ],
        },
        Message::RegisterServices {
            services: vec![
                ServiceDecl {
                    name: name("wg0"),
                    peers: vec![peer("beta/wg0"), peer("gamma/wg0")],
                },
                ServiceDecl {
                    name: name("dns"),
                    peers: vec![],
                },
            ],
        },
        Message::Candidates {
            assoc: AssocId(9),
            candidates: vec![
                Candidate {
                    addr: v4,
                    kind: CandidateKind::ServerReflexive,
                    uplink: name("fiber"),
                },
                Candidate {
                    addr: v6,
                    kind: CandidateKind::Host,
                    uplink: name("lte"),
                },
            ],
        },
        Message::AssociationInstalled {
            assoc: AssocId(9),
            epoch: 2,
            service: name("wg0"),
            peer: peer("beta/wg0"),
            key,
            mode: Mode::WholePacket,
            relay: RelayPolicy::Allow,
        },
        Message::AssociationWithdrawn {
            assoc: AssocId(9),
            reason: WithdrawReason::PeerGone,
        },
        Message::Punch {
            assoc: AssocId(9),
            at_unix_ms: 1_700_000_000_250,
        },
        Message::RelayAllocation {
            assoc: AssocId(9),
            relay: v4,
            allocation: 77,
            leg: 1,
            key,
            site: RelaySite::Node,
        },
        Message::RelayHostOffer {
            ip: v6.ip(),
            max_allocations: 1024,
            quota_per_node: 16,
        },
        Message::RelayAllocate {
            allocation: 77,
            assoc: AssocId(9),
            key,
            nodes: [NodeId(3), NodeId(4)],
        },
        Message::RelayOpened {
            allocation: 77,
            relay: v4,
        },
        Message::RelayRelease {
            assoc: AssocId(9),
            allocation: 77,
        },
        Message::RelayHostRefused { seen: v4.ip() },
        Message::Revoked {
            reason: "revoked by admin".into(),
        },
        Message::Keepalive { seq: 1 },
        Message::KeepaliveAck { seq: 1 },
        Message::Raft(RaftMessage {
            kind: 3,
            to: 2,
            from: 1,
            term: 4,
            log_term: 4,
            index: 17,
            entries: vec![
                RaftEntry {
                    term: 4,
                    index: 18,
                    data: Bytes::from_static(b"\x04op"),
                    context: Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 9]),
                },
                RaftEntry {
                    term: 4,
                    index: 19,
                    ..RaftEntry::default()
                },
            ],
            commit: 17,
            commit_term: 4,
            reject: true,
            reject_hint: 12,
            request_snapshot: 0,
            priority: -1,
            context: Bytes::from_static(b"campaign"),
        }),
        admin(AdminCommand::Invite {
            node: name("delta"),
            admit: true,
            ttl_s: 3600,
        }),
        admin(AdminCommand::Admit {
            node: name("delta"),
        }),
        admin(AdminCommand::Revoke {
            node: name("delta"),
        }),
        admin(AdminCommand::Readmit {
            node: name("delta"),
        }),
        admin(AdminCommand::ListNodes),
        admin(AdminCommand::AssocCreate {
            a: peer("alpha/wg0"),
            b: peer("beta/wg0"),
        }),
        admin(AdminCommand::AssocDelete { assoc: AssocId(9) }),
        admin(AdminCommand::AssocRekey { assoc: AssocId(9) }),
        admin(AdminCommand::AssocAllow { assoc: AssocId(9) }),
        admin(AdminCommand::AssocList),
        admin(AdminCommand::Status),
        reply(Ok(AdminReply::Invited {
            join_token: "join.abc".into(),
        })),
        reply(Ok(AdminReply::Done)),
        reply(Ok(AdminReply::Nodes(vec![NodeInfo {
            node_id: NodeId(3),
            name: name("alpha"),
            state: AdmissionState::Admitted,
            connected: true,
            last_seen_unix_s: 1_700_000_000,
        }]))),
        reply(Ok(AdminReply::Assocs(vec![AssocInfo {
            assoc: AssocId(9),
            a: peer("alpha/wg0"),
            b: peer("beta/wg0"),
            epoch: 2,
            origin: AssocOrigin::MutualConsent,
            state: AssocState::Installed,
            up: true,
        }]))),
        reply(Ok(AdminReply::Status {
            json: "{\"nodes\":2}".into(),
        })),
        reply(Ok(AdminReply::Created { assoc: AssocId(9) })),
        reply(Err(AdminError {
            code: RejectCode::NotAdmin,
            reason: "not an admin".into(),
        })),
    ]
}
