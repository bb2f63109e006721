//! Message bodies: the type codes and each message's fields in order.

use bytes::Bytes;

use super::admin::AdminResult;
use super::prim::{list_len, name_len, text_len, Codec, Reader, Writer};
use super::raft::RaftMessage;
use super::{
    AdminCommand, Message, MsgError, RejectCode, RelaySite, WithdrawReason, LEN_PREFIX,
    MAX_CANDIDATES, MAX_CHAIN, MAX_DER_LEN, MAX_REASON_LEN, MAX_REFLECTORS, MAX_SERVICES,
    MAX_TOKEN_LEN, MAX_TOKEN_TEXT_LEN,
};
use crate::id::{AssocId, NodeId};
use crate::wire::{ADDR_LEN, KEY_LEN};

const HELLO: u8 = 0x01;
const WELCOME: u8 = 0x02;
const REJECT: u8 = 0x03;
const ENROLL: u8 = 0x04;
const ENROLLED: u8 = 0x05;
const TOKEN_REQUEST: u8 = 0x06;
const TOKEN_GRANT: u8 = 0x07;
const RENEW: u8 = 0x08;
const RENEWED: u8 = 0x09;
const REGISTER_SERVICES: u8 = 0x10;
const CANDIDATES: u8 = 0x11;
const ASSOCIATION_INSTALLED: u8 = 0x12;
const ASSOCIATION_WITHDRAWN: u8 = 0x13;
const PUNCH: u8 = 0x14;
const RELAY_ALLOCATION: u8 = 0x15;
const REVOKED: u8 = 0x16;
const REFLECTORS: u8 = 0x17;
const RELAY_HOST_OFFER: u8 = 0x18;
const RELAY_ALLOCATE: u8 = 0x19;
const RELAY_OPENED: u8 = 0x1a;
const RELAY_RELEASE: u8 = 0x1b;
const RELAY_HOST_REFUSED: u8 = 0x1c;
const RAFT: u8 = 0x30;
const KEEPALIVE: u8 = 0x20;
const KEEPALIVE_ACK: u8 = 0x21;
const ADMIN_REQUEST: u8 = 0x40;
const ADMIN_RESPONSE: u8 = 0x41;

impl Message {
    /// The stable type code (see the table in the module docs).
    pub fn type_code(&self) -> u8 {
        match self {
            Self::Hello { .. } => HELLO,
            Self::Welcome { .. } => WELCOME,
            Self::Reject { .. } => REJECT,
            Self::Enroll { .. } => ENROLL,
            Self::Enrolled { .. } => ENROLLED,
            Self::TokenRequest => TOKEN_REQUEST,
            Self::TokenGrant { .. } => TOKEN_GRANT,
            Self::Renew { .. } => RENEW,
            Self::Renewed { .. } => RENEWED,
            Self::RegisterServices { .. } => REGISTER_SERVICES,
            Self::Candidates { .. } => CANDIDATES,
            Self::AssociationInstalled { .. } => ASSOCIATION_INSTALLED,
            Self::AssociationWithdrawn { .. } => ASSOCIATION_WITHDRAWN,
            Self::Punch { .. } => PUNCH,
            Self::RelayAllocation { .. } => RELAY_ALLOCATION,
            Self::Revoked { .. } => REVOKED,
            Self::Reflectors { .. } => REFLECTORS,
            Self::RelayHostOffer { .. } => RELAY_HOST_OFFER,
            Self::RelayAllocate { .. } => RELAY_ALLOCATE,
            Self::RelayOpened { .. } => RELAY_OPENED,
            Self::RelayRelease { .. } => RELAY_RELEASE,
            Self::RelayHostRefused { .. } => RELAY_HOST_REFUSED,
            Self::Raft(_) => RAFT,
            Self::Keepalive { .. } => KEEPALIVE,
            Self::KeepaliveAck { .. } => KEEPALIVE_ACK,
            Self::AdminRequest { .. } => ADMIN_REQUEST,
            Self::AdminResponse { .. } => ADMIN_RESPONSE,
        }
    }

    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "Hello",
            Self::Welcome { .. } => "Welcome",
            Self::Reject { .. } => "Reject",
            Self::Enroll { .. } => "Enroll",
            Self::Enrolled { .. } => "Enrolled",
            Self::TokenRequest => "TokenRequest",
            Self::TokenGrant { .. } => "TokenGrant",
            Self::Renew { .. } => "Renew",
            Self::Renewed { .. } => "Renewed",
            Self::RegisterServices { .. } => "RegisterServices",
            Self::Candidates { .. } => "Candidates",
            Self::AssociationInstalled { .. } => "AssociationInstalled",
            Self::AssociationWithdrawn { .. } => "AssociationWithdrawn",
            Self::Punch { .. } => "Punch",
            Self::RelayAllocation { .. } => "RelayAllocation",
            Self::Reflectors { .. } => "Reflectors",
            Self::RelayHostOffer { .. } => "RelayHostOffer",
            Self::RelayAllocate { .. } => "RelayAllocate",
            Self::RelayOpened { .. } => "RelayOpened",
            Self::RelayRelease { .. } => "RelayRelease",
            Self::RelayHostRefused { .. } => "RelayHostRefused",
            Self::Revoked { .. } => "Revoked",
            Self::Raft(_) => "Raft",
            Self::Keepalive { .. } => "Keepalive",
            Self::KeepaliveAck { .. } => "KeepaliveAck",
            Self::AdminRequest { .. } => "AdminRequest",
            Self::AdminResponse { .. } => "AdminResponse",
        }
    }

    /// Size of the whole frame [`encode`](super::encode) appends, length
    /// prefix included (also for a message too large to encode).
    pub fn encoded_len(&self) -> usize {
        LEN_PREFIX + 2 + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Self::Hello { node, token, .. } => name_len(node) + text_len(token) + 1,
            Self::Welcome { .. } => 8 + 8,
            Self::Reject { reason, .. } => 1 + text_len(reason.as_bytes()),
            Self::Enroll {
                join_token,
                csr_der,
            } => text_len(join_token.as_bytes()) + text_len(csr_der),
            Self::Enrolled { chain_der, .. } => 8 + chain_len(chain_der),
            Self::Renew { csr_der } => text_len(csr_der),
            Self::Renewed { chain_der } => chain_len(chain_der),
            Self::TokenRequest => 0,
            Self::TokenGrant { token, .. } => text_len(token) + 8,
            Self::RegisterServices { services } => list_len(services),
            Self::Candidates { candidates, .. } => 8 + list_len(candidates),
            Self::AssociationInstalled { service, peer, .. } => {
                8 + 4 + name_len(service) + peer.wire_len() + KEY_LEN + 1 + 1
            }
            Self::AssociationWithdrawn { .. } => 8 + 1,
            Self::Punch { .. } => 8 + 8,
            Self::RelayAllocation { .. } => 8 + ADDR_LEN + 8 + 1 + KEY_LEN + 1,
            Self::RelayHostOffer { .. } => ADDR_LEN + 4 + 4,
            Self::RelayAllocate { .. } => 8 + 8 + KEY_LEN + 8 + 8,
            Self::RelayOpened { .. } => 8 + ADDR_LEN,
            Self::RelayRelease { .. } => 8 + 8,
            Self::RelayHostRefused { .. } => ADDR_LEN,
            Self::Revoked { reason } => text_len(reason.as_bytes()),
            Self::Reflectors { extra } => 2 + extra.len() * ADDR_LEN,
            Self::Raft(m) => m.wire_len(),
            Self::Keepalive { .. } | Self::KeepaliveAck { .. } => 8,
            Self::AdminRequest { command, .. } => 4 + command.wire_len(),
            Self::AdminResponse { result, .. } => 4 + result.wire_len(),
        }
    }

    /// Appends the body; fails on the first field over its cap.
    pub(super) fn put_body(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        match self {
            Self::Hello {
                node,
                token,
                advertise_private,
            } => {
                w.name(node);
                w.blob("Hello.token", token, MAX_TOKEN_LEN)?;
                w.bool(*advertise_private);
            }
            Self::Welcome {
                node_id,
                token_expires_unix_s,
            } => {
                w.u64(node_id.0);
                w.u64(*token_expires_unix_s);
            }
            Self::Reject { code, reason } => {
                code.put(w)?;
                w.text("Reject.reason", reason, MAX_REASON_LEN)?;
            }
            Self::Enroll {
                join_token,
                csr_der,
            } => {
                w.text("Enroll.join_token", join_token, MAX_TOKEN_TEXT_LEN)?;
                w.blob("Enroll.csr_der", csr_der, MAX_DER_LEN)?;
            }
            Self::Enrolled { node_id, chain_der } => {
                w.u64(node_id.0);
                put_chain(w, "Enrolled.chain_der", "Enrolled.chain_der[]", chain_der)?;
            }
            Self::Renew { csr_der } => w.blob("Renew.csr_der", csr_der, MAX_DER_LEN)?,
            Self::Renewed { chain_der } => {
                put_chain(w, "Renewed.chain_der", "Renewed.chain_der[]", chain_der)?;
            }
            Self::TokenRequest => {}
            Self::TokenGrant {
                token,
                expires_unix_s,
            } => {
                w.blob("TokenGrant.token", token, MAX_TOKEN_LEN)?;
                w.u64(*expires_unix_s);
            }
            Self::RegisterServices { services } => {
                w.list("RegisterServices.services", services, MAX_SERVICES)?;
            }
            Self::Candidates { assoc, candidates } => {
                w.u64(assoc.0);
                w.list("Candidates.candidates", candidates, MAX_CANDIDATES)?;
            }
            Self::AssociationInstalled {
                assoc,
                epoch,
                service,
                peer,
                key,
                mode,
                relay,
            } => {
                w.u64(assoc.0);
                w.u32(*epoch);
                w.name(service);
                peer.put(w)?;
                w.key(key);
                mode.put(w)?;
                relay.put(w)?;
            }
            Self::AssociationWithdrawn { assoc, reason } => {
                w.u64(assoc.0);
                reason.put(w)?;
            }
            Self::Punch { assoc, at_unix_ms } => {
                w.u64(assoc.0);
                w.u64(*at_unix_ms);
            }
            Self::RelayAllocation {
                assoc,
                relay,
                allocation,
                leg,
                key,
                site,
            } => {
                w.u64(assoc.0);
                w.addr(*relay);
                w.u64(*allocation);
                w.u8(*leg);
                w.key(key);
                site.put(w)?;
            }
            Self::RelayHostOffer {
                ip,
                max_allocations,
                quota_per_node,
            } => {
                w.ip(*ip);
                w.u32(*max_allocations);
                w.u32(*quota_per_node);
            }
            Self::RelayAllocate {
                allocation,
                assoc,
                key,
                nodes,
            } => {
                w.u64(*allocation);
                w.u64(assoc.0);
                w.key(key);
                w.u64(nodes[0].0);
                w.u64(nodes[1].0);
            }
            Self::RelayOpened { allocation, relay } => {
                w.u64(*allocation);
                w.addr(*relay);
            }
            Self::RelayRelease { assoc, allocation } => {
                w.u64(assoc.0);
                w.u64(*allocation);
            }
            Self::RelayHostRefused { seen } => w.ip(*seen),
            Self::Revoked { reason } => w.text("Revoked.reason", reason, MAX_REASON_LEN)?,
            Self::Reflectors { extra } => {
                w.list_with("Reflectors.extra", extra, MAX_REFLECTORS, |w, addr| {
                    w.addr(*addr);
                    Ok(())
                })?;
            }
            Self::Raft(m) => m.put(w)?,
            Self::Keepalive { seq } | Self::KeepaliveAck { seq } => w.u64(*seq),
            Self::AdminRequest {
                request_id,
                command,
            } => {
                w.u32(*request_id);
                command.put(w)?;
            }
            Self::AdminResponse { request_id, result } => {
                w.u32(*request_id);
                result.put(w)?;
            }
        }
        Ok(())
    }

    /// Decodes the body of a message of type `code`; all of `body` must be
    /// used.
    pub(super) fn take_body(code: u8, body: &[u8]) -> Result<Self, MsgError> {
        let mut reader = Reader::new(body);
        let r = &mut reader;
        let msg = match code {
            HELLO => Self::Hello {
                node: r.name("Hello.node")?,
                token: r.blob("Hello.token", MAX_TOKEN_LEN)?,
                advertise_private: r.bool("Hello.advertise_private")?,
            },
            WELCOME => Self::Welcome {
                node_id: NodeId(r.u64("Welcome.node_id")?),
                token_expires_unix_s: r.u64("Welcome.token_expires_unix_s")?,
            },
            REJECT => Self::Reject {
                code: RejectCode::take(r)?,
                reason: r.text("Reject.reason", MAX_REASON_LEN)?,
            },
            ENROLL => Self::Enroll {
                join_token: r.text("Enroll.join_token", MAX_TOKEN_TEXT_LEN)?,
                csr_der: r.blob("Enroll.csr_der", MAX_DER_LEN)?,
            },
            ENROLLED => Self::Enrolled {
                node_id: NodeId(r.u64("Enrolled.node_id")?),
                chain_der: take_chain(r, "Enrolled.chain_der", "Enrolled.chain_der[]")?,
            },
            RENEW => Self::Renew {
                csr_der: r.blob("Renew.csr_der", MAX_DER_LEN)?,
            },
            RENEWED => Self::Renewed {
                chain_der: take_chain(r, "Renewed.chain_der", "Renewed.chain_der[]")?,
            },
            TOKEN_REQUEST => Self::TokenRequest,
            TOKEN_GRANT => Self::TokenGrant {
                token: r.blob("TokenGrant.token", MAX_TOKEN_LEN)?,
                expires_unix_s: r.u64("TokenGrant.expires_unix_s")?,
            },
            REGISTER_SERVICES => Self::RegisterServices {
                services: r.list("RegisterServices.services", MAX_SERVICES)?,
            },
            CANDIDATES => Self::Candidates {
                assoc: AssocId(r.u64("Candidates.assoc")?),
                candidates: r.list("Candidates.candidates", MAX_CANDIDATES)?,
            },
            ASSOCIATION_INSTALLED => Self::AssociationInstalled {
                assoc: AssocId(r.u64("AssociationInstalled.assoc")?),
                epoch: r.u32("AssociationInstalled.epoch")?,
                service: r.name("AssociationInstalled.service")?,
                peer: Codec::take(r)?,
                key: r.key("AssociationInstalled.key")?,
                mode: Codec::take(r)?,
                relay: Codec::take(r)?,
            },
            ASSOCIATION_WITHDRAWN => Self::AssociationWithdrawn {
                assoc: AssocId(r.u64("AssociationWithdrawn.assoc")?),
                reason: WithdrawReason::take(r)?,
            },
            PUNCH => Self::Punch {
                assoc: AssocId(r.u64("Punch.assoc")?),
                at_unix_ms: r.u64("Punch.at_unix_ms")?,
            },
            RELAY_ALLOCATION => Self::RelayAllocation {
                assoc: AssocId(r.u64("RelayAllocation.assoc")?),
                relay: r.addr("RelayAllocation.relay")?,
                allocation: r.u64("RelayAllocation.allocation")?,
                leg: r.u8("RelayAllocation.leg")?,
                key: r.key("RelayAllocation.key")?,
                site: RelaySite::take(r)?,
            },
            RELAY_HOST_OFFER => Self::RelayHostOffer {
                ip: r.ip("RelayHostOffer.ip")?,
                max_allocations: r.u32("RelayHostOffer.max_allocations")?,
                quota_per_node: r.u32("RelayHostOffer.quota_per_node")?,
            },
            RELAY_ALLOCATE => Self::RelayAllocate {
                allocation: r.u64("RelayAllocate.allocation")?,
                assoc: AssocId(r.u64("RelayAllocate.assoc")?),
                key: r.key("RelayAllocate.key")?,
                nodes: [
                    NodeId(r.u64("RelayAllocate.nodes")?),
                    NodeId(r.u64("RelayAllocate.nodes")?),
                ],
            },
            RELAY_OPENED => Self::RelayOpened {
                allocation: r.u64("RelayOpened.allocation")?,
                relay: r.addr("RelayOpened.relay")?,
            },
            RELAY_RELEASE => Self::RelayRelease {
                assoc: AssocId(r.u64("RelayRelease.assoc")?),
                allocation: r.u64("RelayRelease.allocation")?,
            },
            RELAY_HOST_REFUSED => Self::RelayHostRefused {
                seen: r.ip("RelayHostRefused.seen")?,
            },
            REVOKED => Self::Revoked {
                reason: r.text("Revoked.reason", MAX_REASON_LEN)?,
            },
            REFLECTORS => Self::Reflectors {
                extra: r.list_with("Reflectors.extra", MAX_REFLECTORS, |r| {
                    r.addr("Reflectors.extra")
                })?,
            },
            RAFT => Self::Raft(RaftMessage::take(r)?),
            KEEPALIVE => Self::Keepalive {
                seq: r.u64("Keepalive.seq")?,
            },
            KEEPALIVE_ACK => Self::KeepaliveAck {
                seq: r.u64("KeepaliveAck.seq")?,
            },
            ADMIN_REQUEST => Self::AdminRequest {
                request_id: r.u32("AdminRequest.request_id")?,
                command: AdminCommand::take(r)?,
            },
            ADMIN_RESPONSE => Self::AdminResponse {
                request_id: r.u32("AdminResponse.request_id")?,
                result: AdminResult::take(r)?,
            },
            other => return Err(MsgError::UnknownType(other)),
        };
        reader.finish(msg.name())?;
        Ok(msg)
    }

    /// True when this build knows the type code.
    pub(super) fn is_known_type(code: u8) -> bool {
        matches!(
            code,
            HELLO
                | WELCOME
                | REJECT
                | ENROLL
                | ENROLLED
                | TOKEN_REQUEST
                | TOKEN_GRANT
                | RENEW
                | RENEWED
                | REGISTER_SERVICES
                | CANDIDATES
                | ASSOCIATION_INSTALLED
                | ASSOCIATION_WITHDRAWN
                | PUNCH
                | RELAY_ALLOCATION
                | REVOKED
                | REFLECTORS
                | RAFT
                | RELAY_HOST_OFFER
                | RELAY_ALLOCATE
                | RELAY_OPENED
                | RELAY_RELEASE
                | RELAY_HOST_REFUSED
                | KEEPALIVE
                | KEEPALIVE_ACK
                | ADMIN_REQUEST
                | ADMIN_RESPONSE
        )
    }
}

/// Bytes of a certificate chain: a u16 count, then each certificate.
fn chain_len(chain: &[Bytes]) -> usize {
    2 + chain.iter().map(|c| text_len(c)).sum::<usize>()
}

fn put_chain(
    w: &mut Writer<'_>,
    field: &'static str,
    item: &'static str,
    chain: &[Bytes],
) -> Result<(), MsgError> {
    w.list_with(field, chain, MAX_CHAIN, |w, cert| {
        w.blob(item, cert, MAX_DER_LEN)
    })
}

fn take_chain(
    r: &mut Reader<'_>,
    field: &'static str,
    item: &'static str,
) -> Result<Vec<Bytes>, MsgError> {
    r.list_with(field, MAX_CHAIN, |r| r.blob(item, MAX_DER_LEN))
}
