//! Proptest strategies for every message with arbitrary valid contents.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::Union;

use super::super::*;

pub(super) fn name() -> impl Strategy<Value = Name> {
    "[a-z0-9._-]{1,63}".prop_map(|s| Name::new(&s).expect("the regex only makes valid names"))
}

pub(super) fn peer() -> impl Strategy<Value = PeerRef> {
    (name(), name()).prop_map(|(node, service)| PeerRef { node, service })
}

/// Text of at most `max_bytes` bytes, any characters.
pub(super) fn text(max_bytes: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max_bytes / 4).prop_map(String::from_iter)
}

pub(super) fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

pub(super) fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(ip.into()), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (addr(), prop::sample::select(CandidateKind::ALL), name())
        .prop_map(|(addr, kind, uplink)| Candidate { addr, kind, uplink })
}

fn service_decl() -> impl Strategy<Value = ServiceDecl> {
    (name(), prop::collection::vec(peer(), 0..4))
        .prop_map(|(name, peers)| ServiceDecl { name, peers })
}

fn node_info() -> impl Strategy<Value = NodeInfo> {
    (
        any::<u64>(),
        name(),
        prop::sample::select(AdmissionState::ALL),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(id, name, state, connected, last_seen_unix_s)| NodeInfo {
            node_id: NodeId(id),
            name,
            state,
            connected,
            last_seen_unix_s,
        })
}

fn assoc_info() -> impl Strategy<Value = AssocInfo> {
    (
        any::<u64>(),
        peer(),
        peer(),
        any::<u32>(),
        prop::sample::select(AssocOrigin::ALL),
        prop::sample::select(AssocState::ALL),
        any::<bool>(),
    )
        .prop_map(|(id, a, b, epoch, origin, state, up)| AssocInfo {
            assoc: AssocId(id),
            a,
            b,
            epoch,
            origin,
            state,
            up,
        })
}

fn reject_code() -> impl Strategy<Value = RejectCode> {
    prop::sample::select(RejectCode::ALL)
}

pub(super) fn admin_command() -> impl Strategy<Value = AdminCommand> {
    prop_oneof![
        (name(), any::<bool>(), any::<u32>())
            .prop_map(|(node, admit, ttl_s)| AdminCommand::Invite { node, admit, ttl_s }),
        name().prop_map(|node| AdminCommand::Admit { node }),
        name().prop_map(|node| AdminCommand::Revoke { node }),
        name().prop_map(|node| AdminCommand::Readmit { node }),
        Just(AdminCommand::ListNodes),
        (peer(), peer()).prop_map(|(a, b)| AdminCommand::AssocCreate { a, b }),
        any::<u64>().prop_map(|id| AdminCommand::AssocDelete { assoc: AssocId(id) }),
        any::<u64>().prop_map(|id| AdminCommand::AssocRekey { assoc: AssocId(id) }),
        any::<u64>().prop_map(|id| AdminCommand::AssocAllow { assoc: AssocId(id) }),
        Just(AdminCommand::AssocList),
        Just(AdminCommand::Status),
    ]
}

pub(super) fn admin_result() -> impl Strategy<Value = Result<AdminReply, AdminError>> {
    prop_oneof![
        text(MAX_TOKEN_TEXT_LEN).prop_map(|join_token| Ok(AdminReply::Invited { join_token })),
        Just(Ok(AdminReply::Done)),
        prop::collection::vec(node_info(), 0..8).prop_map(|n| Ok(AdminReply::Nodes(n))),
        prop::collection::vec(assoc_info(), 0..8).prop_map(|a| Ok(AdminReply::Assocs(a))),
        text(2000).prop_map(|json| Ok(AdminReply::Status { json })),
        any::<u64>().prop_map(|id| Ok(AdminReply::Created { assoc: AssocId(id) })),
        (reject_code(), text(MAX_REASON_LEN))
            .prop_map(|(code, reason)| Err(AdminError { code, reason })),
    ]
}

/// Any message, every variant equally likely.
pub(super) fn message() -> impl Strategy<Value = Message> {
    Union::new([
        (name(), blob(MAX_TOKEN_LEN), any::<bool>())
            .prop_map(|(node, token, advertise_private)| Message::Hello {
                node,
                token,
                advertise_private,
            })
            .boxed(),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, token_expires_unix_s)| Message::Welcome {
                node_id: NodeId(id),
                token_expires_unix_s,
            })
            .boxed(),
        (reject_code(), text(MAX_REASON_LEN))
            .prop_map(|(code, reason)| Message::Reject { code, reason })
            .boxed(),
        (text(MAX_TOKEN_TEXT_LEN), blob(MAX_DER_LEN))
            .prop_map(|(join_token, csr_der)| Message::Enroll {
                join_token,
                csr_der,
            })
            .boxed(),
        (
            any::<u64>(),
            prop::collection::vec(blob(MAX_DER_LEN), 0..=MAX_CHAIN),
        )
            .prop_map(|(id, chain_der)| Message::Enrolled {
                node_id: NodeId(id),
                chain_der,
            })
            .boxed(),
        Just(Message::TokenRequest).boxed(),
        blob(MAX_DER_LEN)
            .prop_map(|csr_der| Message::Renew { csr_der })
            .boxed(),
        prop::collection::vec(blob(MAX_DER_LEN), 0..=MAX_CHAIN)
            .prop_map(|chain_der| Message::Renewed { chain_der })
            .boxed(),
        (blob(MAX_TOKEN_LEN), any::<u64>())
            .prop_map(|(token, expires_unix_s)| Message::TokenGrant {
                token,
                expires_unix_s,
            })
            .boxed(),
        prop::collection::vec(service_decl(), 0..6)
            .prop_map(|services| Message::RegisterServices { services })
            .boxed(),
        (any::<u64>(), prop::collection::vec(candidate(), 0..12))
            .prop_map(|(id, candidates)| Message::Candidates {
                assoc: AssocId(id),
                candidates,
            })
            .boxed(),
        (
            (any::<u64>(), any::<u32>(), name(), peer()),
            (
                any::<[u8; 32]>(),
                prop::sample::select(Mode::ALL),
                prop::sample::select(RelayPolicy::ALL),
            ),
        )
            .prop_map(|((id, epoch, service, peer), (key, mode, relay))| {
                Message::AssociationInstalled {
                    assoc: AssocId(id),
                    epoch,
                    service,
                    peer,
                    key,
                    mode,
                    relay,
                }
            })
            .boxed(),
        (any::<u64>(), prop::sample::select(WithdrawReason::ALL))
            .prop_map(|(id, reason)| Message::AssociationWithdrawn {
                assoc: AssocId(id),
                reason,
            })
            .boxed(),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, at_unix_ms)| Message::Punch {
                assoc: AssocId(id),
                at_unix_ms,
            })
            .boxed(),
        (
            any::<u64>(),
            addr(),
            any::<u64>(),
            any::<u8>(),
            any::<[u8; 32]>(),
            prop::sample::select(RelaySite::ALL),
        )
            .prop_map(
                |(id, relay, allocation, leg, key, site)| Message::RelayAllocation {
                    assoc: AssocId(id),
                    relay,
                    allocation,
                    leg,
                    key,
                    site,
                },
            )
            .boxed(),
        (addr(), any::<u32>(), any::<u32>())
            .prop_map(
                |(addr, max_allocations, quota_per_node)| Message::RelayHostOffer {
                    ip: addr.ip(),
                    max_allocations,
                    quota_per_node,
                },
            )
            .boxed(),
        (
            any::<u64>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<[u64; 2]>(),
        )
            .prop_map(|(allocation, assoc, key, nodes)| Message::RelayAllocate {
                allocation,
                assoc: AssocId(assoc),
                key,
                nodes: nodes.map(NodeId),
            })
            .boxed(),
        (any::<u64>(), addr())
            .prop_map(|(allocation, relay)| Message::RelayOpened { allocation, relay })
            .boxed(),
        (any::<u64>(), any::<u64>())
            .prop_map(|(assoc, allocation)| Message::RelayRelease {
                assoc: AssocId(assoc),
                allocation,
            })
            .boxed(),
        addr()
            .prop_map(|seen| Message::RelayHostRefused { seen: seen.ip() })
            .boxed(),
        text(MAX_REASON_LEN)
            .prop_map(|reason| Message::Revoked { reason })
            .boxed(),
        prop::collection::vec(addr(), 0..=MAX_REFLECTORS)
            .prop_map(|extra| Message::Reflectors { extra })
            .boxed(),
        raft_message().prop_map(Message::Raft).boxed(),
        any::<u64>()
            .prop_map(|seq| Message::Keepalive { seq })
            .boxed(),
        any::<u64>()
            .prop_map(|seq| Message::KeepaliveAck { seq })
            .boxed(),
        (any::<u32>(), admin_command())
            .prop_map(|(request_id, command)| Message::AdminRequest {
                request_id,
                command,
            })
            .boxed(),
        (any::<u32>(), admin_result())
            .prop_map(|(request_id, result)| Message::AdminResponse { request_id, result })
            .boxed(),
    ])
}

fn raft_entry() -> impl Strategy<Value = RaftEntry> {
    (
        any::<u64>(),
        any::<u64>(),
        blob(MAX_RAFT_DATA),
        blob(MAX_RAFT_CONTEXT),
    )
        .prop_map(|(term, index, data, context)| RaftEntry {
            term,
            index,
            data,
            context,
        })
}

fn raft_message() -> impl Strategy<Value = RaftMessage> {
    (
        (0..=MAX_RAFT_KIND, any::<[u64; 7]>(), any::<bool>()),
        (any::<u64>(), any::<u64>(), any::<i64>()),
        blob(MAX_RAFT_CONTEXT),
        prop::collection::vec(raft_entry(), 0..4),
    )
        .prop_map(
            |((kind, n, reject), (reject_hint, request_snapshot, priority), context, entries)| {
                RaftMessage {
                    kind,
                    to: n[0],
                    from: n[1],
                    term: n[2],
                    log_term: n[3],
                    index: n[4],
                    entries,
                    commit: n[5],
                    commit_term: n[6],
                    reject,
                    reject_hint,
                    request_snapshot,
                    priority,
                    context,
                }
            },
        )
}
