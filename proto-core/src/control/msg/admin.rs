//! Admin commands (`tlctl` → coordinator) and their replies.

use super::node::RejectCode;
use super::prim::{list_len, name_len, text_len, wire_enum, Codec, Name, PeerRef, Reader, Writer};
use super::{MsgError, MAX_REASON_LEN, MAX_TOKEN_TEXT_LEN};
use crate::id::{AssocId, NodeId};

/// Most entries in an admin list reply (the frame limit may bind first).
pub const MAX_LIST: usize = 4096;
/// Longest status document, in bytes.
pub const MAX_STATUS_JSON: usize = 60_000;

const CMD_INVITE: u8 = 1;
const CMD_ADMIT: u8 = 2;
const CMD_REVOKE: u8 = 3;
const CMD_READMIT: u8 = 4;
const CMD_LIST_NODES: u8 = 5;
const CMD_ASSOC_CREATE: u8 = 6;
const CMD_ASSOC_DELETE: u8 = 7;
const CMD_ASSOC_LIST: u8 = 8;
const CMD_STATUS: u8 = 9;
const CMD_ASSOC_REKEY: u8 = 10;
const CMD_ASSOC_ALLOW: u8 = 11;

const REPLY_INVITED: u8 = 1;
const REPLY_DONE: u8 = 2;
const REPLY_NODES: u8 = 3;
const REPLY_ASSOCS: u8 = 4;
const REPLY_STATUS: u8 = 5;
const REPLY_CREATED: u8 = 6;

wire_enum! {
    /// A node's admission state (DESIGN §4).
    AdmissionState {
        /// Enrolled or invited, not admitted yet.
        Pending = 1 => "pending",
        /// May open sessions.
        Admitted = 2 => "admitted",
        /// Hard-revoked.
        Revoked = 3 => "revoked",
    }
}

wire_enum! {
    /// Who made an association.
    AssocOrigin {
        /// Both nodes declared each other's service.
        MutualConsent = 1 => "mutual-consent",
        /// An admin created it.
        Admin = 2 => "admin",
    }
}

wire_enum! {
    /// Where an association stands.
    AssocState {
        /// Installed on its ends (whether or not they are online now).
        Installed = 1 => "installed",
        /// Allowed, but not installed: an end is not admitted or does not
        /// declare the service, or a fresh key is being written.
        Waiting = 2 => "waiting",
        /// Deleted by an admin: it stays withdrawn until allowed again.
        Deleted = 3 => "deleted",
    }
}

/// What an admin asks the coordinator to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminCommand {
    /// Issue a one-time join token for `node`.
    Invite {
        /// The node to invite.
        node: Name,
        /// Admit it as soon as it enrolls.
        admit: bool,
        /// Lifetime of the join token in seconds.
        ttl_s: u32,
    },
    /// Admit a pending node.
    Admit {
        /// The node.
        node: Name,
    },
    /// Hard-revoke a node.
    Revoke {
        /// The node.
        node: Name,
    },
    /// Admit a revoked node again, as a fresh event.
    Readmit {
        /// The node.
        node: Name,
    },
    /// List the nodes.
    ListNodes,
    /// Create an association between two services.
    AssocCreate {
        /// One side.
        a: PeerRef,
        /// The other side.
        b: PeerRef,
    },
    /// Delete an association: it is withdrawn and stays so, even if both
    /// ends still declare each other, until allowed or created again.
    AssocDelete {
        /// The association.
        assoc: AssocId,
    },
    /// Replace an association's key: a new epoch, pushed to both ends.
    AssocRekey {
        /// The association.
        assoc: AssocId,
    },
    /// Lift the deletion of an association.
    AssocAllow {
        /// The association.
        assoc: AssocId,
    },
    /// List the associations.
    AssocList,
    /// The coordinator's status document.
    Status,
}

impl Codec for AdminCommand {
    fn wire_len(&self) -> usize {
        1 + match self {
            Self::Invite { node, .. } => name_len(node) + 1 + 4,
            Self::Admit { node } | Self::Revoke { node } | Self::Readmit { node } => name_len(node),
            Self::ListNodes | Self::AssocList | Self::Status => 0,
            Self::AssocCreate { a, b } => a.wire_len() + b.wire_len(),
            Self::AssocDelete { .. } | Self::AssocRekey { .. } | Self::AssocAllow { .. } => 8,
        }
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        match self {
            Self::Invite { node, admit, ttl_s } => {
                w.u8(CMD_INVITE);
                w.name(node);
                w.bool(*admit);
                w.u32(*ttl_s);
            }
            Self::Admit { node } => {
                w.u8(CMD_ADMIT);
                w.name(node);
            }
            Self::Revoke { node } => {
                w.u8(CMD_REVOKE);
                w.name(node);
            }
            Self::Readmit { node } => {
                w.u8(CMD_READMIT);
                w.name(node);
            }
            Self::ListNodes => w.u8(CMD_LIST_NODES),
            Self::AssocCreate { a, b } => {
                w.u8(CMD_ASSOC_CREATE);
                a.put(w)?;
                b.put(w)?;
            }
            Self::AssocDelete { assoc } => {
                w.u8(CMD_ASSOC_DELETE);
                w.u64(assoc.0);
            }
            Self::AssocRekey { assoc } => {
                w.u8(CMD_ASSOC_REKEY);
                w.u64(assoc.0);
            }
            Self::AssocAllow { assoc } => {
                w.u8(CMD_ASSOC_ALLOW);
                w.u64(assoc.0);
            }
            Self::AssocList => w.u8(CMD_ASSOC_LIST),
            Self::Status => w.u8(CMD_STATUS),
        }
        Ok(())
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(match r.u8("AdminCommand")? {
            CMD_INVITE => Self::Invite {
                node: r.name("Invite.node")?,
                admit: r.bool("Invite.admit")?,
                ttl_s: r.u32("Invite.ttl_s")?,
            },
            CMD_ADMIT => Self::Admit {
                node: r.name("Admit.node")?,
            },
            CMD_REVOKE => Self::Revoke {
                node: r.name("Revoke.node")?,
            },
            CMD_READMIT => Self::Readmit {
                node: r.name("Readmit.node")?,
            },
            CMD_LIST_NODES => Self::ListNodes,
            CMD_ASSOC_CREATE => Self::AssocCreate {
                a: PeerRef::take(r)?,
                b: PeerRef::take(r)?,
            },
            CMD_ASSOC_DELETE => Self::AssocDelete {
                assoc: AssocId(r.u64("AssocDelete.assoc")?),
            },
            CMD_ASSOC_REKEY => Self::AssocRekey {
                assoc: AssocId(r.u64("AssocRekey.assoc")?),
            },
            CMD_ASSOC_ALLOW => Self::AssocAllow {
                assoc: AssocId(r.u64("AssocAllow.assoc")?),
            },
            CMD_ASSOC_LIST => Self::AssocList,
            CMD_STATUS => Self::Status,
            value => {
                return Err(MsgError::UnknownCode {
                    kind: "AdminCommand",
                    value,
                })
            }
        })
    }
}

/// One node as `tlctl node list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id.
    pub node_id: NodeId,
    /// Its name.
    pub name: Name,
    /// Its admission state.
    pub state: AdmissionState,
    /// Whether it has a control session now.
    pub connected: bool,
    /// Wall-clock time it was last heard from (0: never).
    pub last_seen_unix_s: u64,
}

impl Codec for NodeInfo {
    fn wire_len(&self) -> usize {
        8 + name_len(&self.name) + 1 + 1 + 8
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        w.u64(self.node_id.0);
        w.name(&self.name);
        self.state.put(w)?;
        w.bool(self.connected);
        w.u64(self.last_seen_unix_s);
        Ok(())
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(Self {
            node_id: NodeId(r.u64("NodeInfo.node_id")?),
            name: r.name("NodeInfo.name")?,
            state: AdmissionState::take(r)?,
            connected: r.bool("NodeInfo.connected")?,
            last_seen_unix_s: r.u64("NodeInfo.last_seen_unix_s")?,
        })
    }
}

/// One association as `tlctl assoc list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssocInfo {
    /// Its id.
    pub assoc: AssocId,
    /// One side.
    pub a: PeerRef,
    /// The other side.
    pub b: PeerRef,
    /// Its current key epoch (0: no key yet).
    pub epoch: u32,
    /// Who made it.
    pub origin: AssocOrigin,
    /// Installed, waiting or deleted.
    pub state: AssocState,
    /// Whether it is installed and both ends have a control session.
    pub up: bool,
}

impl Codec for AssocInfo {
    fn wire_len(&self) -> usize {
        8 + self.a.wire_len() + self.b.wire_len() + 4 + 1 + 1 + 1
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        w.u64(self.assoc.0);
        self.a.put(w)?;
        self.b.put(w)?;
        w.u32(self.epoch);
        self.origin.put(w)?;
        self.state.put(w)?;
        w.bool(self.up);
        Ok(())
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(Self {
            assoc: AssocId(r.u64("AssocInfo.assoc")?),
            a: PeerRef::take(r)?,
            b: PeerRef::take(r)?,
            epoch: r.u32("AssocInfo.epoch")?,
            origin: AssocOrigin::take(r)?,
            state: AssocState::take(r)?,
            up: r.bool("AssocInfo.up")?,
        })
    }
}

/// A successful admin command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminReply {
    /// The join token of an invite.
    Invited {
        /// The one-time join token (at most 255 bytes).
        join_token: String,
    },
    /// The command took effect.
    Done,
    /// The nodes (at most [`MAX_LIST`]).
    Nodes(Vec<NodeInfo>),
    /// The associations (at most [`MAX_LIST`]).
    Assocs(Vec<AssocInfo>),
    /// The coordinator's status.
    Status {
        /// The status document as JSON (at most [`MAX_STATUS_JSON`] bytes).
        json: String,
    },
    /// The association an admin created, with the id the coordinator gave it.
    Created {
        /// Its id.
        assoc: AssocId,
    },
}

impl Codec for AdminReply {
    fn wire_len(&self) -> usize {
        1 + match self {
            Self::Invited { join_token } => text_len(join_token.as_bytes()),
            Self::Done => 0,
            Self::Nodes(nodes) => list_len(nodes),
            Self::Assocs(assocs) => list_len(assocs),
            Self::Status { json } => text_len(json.as_bytes()),
            Self::Created { .. } => 8,
        }
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        match self {
            Self::Invited { join_token } => {
                w.u8(REPLY_INVITED);
                w.text("Invited.join_token", join_token, MAX_TOKEN_TEXT_LEN)
            }
            Self::Done => {
                w.u8(REPLY_DONE);
                Ok(())
            }
            Self::Nodes(nodes) => {
                w.u8(REPLY_NODES);
                w.list("Nodes", nodes, MAX_LIST)
            }
            Self::Assocs(assocs) => {
                w.u8(REPLY_ASSOCS);
                w.list("Assocs", assocs, MAX_LIST)
            }
            Self::Status { json } => {
                w.u8(REPLY_STATUS);
                w.text("Status.json", json, MAX_STATUS_JSON)
            }
            Self::Created { assoc } => {
                w.u8(REPLY_CREATED);
                w.u64(assoc.0);
                Ok(())
            }
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(match r.u8("AdminReply")? {
            REPLY_INVITED => Self::Invited {
                join_token: r.text("Invited.join_token", MAX_TOKEN_TEXT_LEN)?,
            },
            REPLY_DONE => Self::Done,
            REPLY_NODES => Self::Nodes(r.list("Nodes", MAX_LIST)?),
            REPLY_ASSOCS => Self::Assocs(r.list("Assocs", MAX_LIST)?),
            REPLY_STATUS => Self::Status {
                json: r.text("Status.json", MAX_STATUS_JSON)?,
            },
            REPLY_CREATED => Self::Created {
                assoc: AssocId(r.u64("Created.assoc")?),
            },
            value => {
                return Err(MsgError::UnknownCode {
                    kind: "AdminReply",
                    value,
                })
            }
        })
    }
}

/// A failed admin command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// What kind of failure.
    pub code: RejectCode,
    /// Details for the operator (at most 255 bytes).
    pub reason: String,
}

impl Codec for AdminError {
    fn wire_len(&self) -> usize {
        1 + text_len(self.reason.as_bytes())
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        self.code.put(w)?;
        w.text("AdminError.reason", &self.reason, MAX_REASON_LEN)
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(Self {
            code: RejectCode::take(r)?,
            reason: r.text("AdminError.reason", MAX_REASON_LEN)?,
        })
    }
}

const OUTCOME_OK: u8 = 0;
const OUTCOME_ERR: u8 = 1;

/// The result of an admin command on the wire: an outcome byte (0 ok,
/// 1 error), then the reply or the error.
pub(super) type AdminResult = Result<AdminReply, AdminError>;

impl Codec for AdminResult {
    fn wire_len(&self) -> usize {
        1 + match self {
            Ok(reply) => reply.wire_len(),
            Err(err) => err.wire_len(),
        }
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        match self {
            Ok(reply) => {
                w.u8(OUTCOME_OK);
                reply.put(w)
            }
            Err(err) => {
                w.u8(OUTCOME_ERR);
                err.put(w)
            }
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        match r.u8("AdminResponse.result")? {
            OUTCOME_OK => Ok(Ok(AdminReply::take(r)?)),
            OUTCOME_ERR => Ok(Err(AdminError::take(r)?)),
            value => Err(MsgError::UnknownCode {
                kind: "AdminResponse.result",
                value,
            }),
        }
    }
}
