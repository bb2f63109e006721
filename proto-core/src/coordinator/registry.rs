//! The ordered operation log and the registry it builds (DESIGN §4). Admin
//! writes — invite, enroll, admit, revoke, readmit, association create,
//! delete, allow and rekey — certificate renewals, and the coordinator's own
//! association writes (a pair formed by mutual consent, a fresh key) are
//! checked against the current state, appended, persisted by the driver,
//! and only then applied. Applying is deterministic, so replaying
//! the log after a restart rebuilds the same registry.

use std::collections::BTreeMap;

mod assoc;
mod codec;

pub use assoc::{AssocRecord, AssocSecret, EpochKey, Origin};
pub use codec::OpDecodeError;

use crate::id::{AssocId, NodeId};

/// A node's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Admission {
    /// Enrolled, waiting for an admin to admit it.
    Pending,
    /// May hold sessions and tokens.
    Admitted,
    /// Refused everything until readmitted.
    Revoked,
}

impl Admission {
    /// The name status uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Admitted => "admitted",
            Self::Revoked => "revoked",
        }
    }
}

/// `node/service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRef {
    /// The node's name.
    pub node: String,
    /// The service's name.
    pub service: String,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.node, self.service)
    }
}

/// One entry of the operation log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// A one-time join token for `node` (only its digest is kept).
    Invite {
        /// The node's name.
        node: String,
        /// SHA-256 of the token's secret.
        digest: [u8; 32],
        /// The token is refused after this time.
        expires_unix_s: u64,
        /// Admit the node as soon as it enrolls.
        admit: bool,
    },
    /// A node presented its join token and got a certificate.
    Enroll {
        /// The node's name.
        node: String,
        /// SHA-256 of the issued certificate.
        fingerprint: [u8; 32],
        /// When (the coordinator's wall clock).
        at_unix_s: u64,
    },
    /// A node renewed its certificate: the new one becomes current, and
    /// the one it renewed from stays accepted (until it expires, or until
    /// the node renews from a newer one), so a node that never received
    /// the new certificate can still connect and ask again.
    Renew {
        /// The node's name.
        node: String,
        /// SHA-256 of the issued certificate.
        fingerprint: [u8; 32],
        /// SHA-256 of the certificate the node presented to ask.
        renewed_from: [u8; 32],
        /// When (the coordinator's wall clock).
        at_unix_s: u64,
    },
    /// A pending node is admitted.
    Admit {
        /// The node's name.
        node: String,
    },
    /// A node is revoked: sessions, tokens and associations end.
    Revoke {
        /// The node's name.
        node: String,
    },
    /// A revoked node is admitted again, as a fresh event.
    Readmit {
        /// The node's name.
        node: String,
    },
    /// An admin creates an association.
    AssocCreate {
        /// One end.
        a: ServiceRef,
        /// The other end.
        b: ServiceRef,
    },
    /// Written by older coordinators when an admin deleted an
    /// (admin-created) association: forgets its record. Replayed as then;
    /// deletions are now [`Op::AssocDeny`].
    AssocDelete {
        /// Its id.
        assoc: AssocId,
    },
    /// Both ends declared each other's service: the pair gets an id, kept
    /// for good.
    AssocForm {
        /// One end.
        a: ServiceRef,
        /// The other end.
        b: ServiceRef,
    },
    /// An association's key for a new epoch.
    AssocKey {
        /// The association.
        assoc: AssocId,
        /// The new epoch: one more than the current one (1 for the first).
        epoch: u32,
        /// The key.
        key: AssocSecret,
        /// When it was made (the coordinator's wall clock).
        at_unix_s: u64,
    },
    /// An admin deletes an association: it is withdrawn and stays so,
    /// whoever declares it, until [`Op::AssocAllow`] or [`Op::AssocCreate`].
    AssocDeny {
        /// The association.
        assoc: AssocId,
    },
    /// An admin lifts the deletion of an association.
    AssocAllow {
        /// The association.
        assoc: AssocId,
    },
}

/// Why an operation was refused (nothing was appended).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No node by that name.
    #[error("no node named {0:?}")]
    UnknownNode(String),
    /// The node is enrolled and not revoked: revoke it before inviting again.
    #[error("node {0:?} is enrolled; revoke it before inviting it again")]
    AlreadyEnrolled(String),
    /// No unused invitation matches.
    #[error("no valid join token for {0:?}")]
    JoinTokenInvalid(String),
    /// The invitation was used already.
    #[error("the join token for {0:?} was used already")]
    JoinTokenUsed(String),
    /// The invitation expired.
    #[error("the join token for {0:?} expired")]
    JoinTokenExpired(String),
    /// The transition does not apply to the node's state.
    #[error("node {node:?} is {state}, so it cannot be {action}")]
    WrongState {
        /// The node.
        node: String,
        /// Its state.
        state: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// The association exists already, or joins a service to itself.
    #[error("association {0} cannot be created: {1}")]
    BadAssociation(String, &'static str),
    /// No association with that id.
    #[error("no association {0}")]
    UnknownAssociation(AssocId),
    /// A renewal asked with a certificate the node does not hold.
    #[error("node {0:?} asked to renew with a certificate that is not its own")]
    NotItsCertificate(String),
}

/// What the registry knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its standing.
    pub admission: Admission,
    /// Bumped at every revoke and readmit: tokens of an older epoch are void.
    pub epoch: u64,
    /// The fingerprint of its current certificate.
    pub fingerprint: [u8; 32],
    /// The certificate its current one was renewed from, still accepted:
    /// the renewal may not have reached the node.
    pub previous_fingerprint: Option<[u8; 32]>,
    /// When it last enrolled (the coordinator's wall clock).
    pub enrolled_at_unix_s: u64,
}

impl NodeRecord {
    /// Whether a session presenting the certificate `fingerprint` is this
    /// node's (the current certificate, or the one it was renewed from).
    pub fn holds(&self, fingerprint: &[u8; 32]) -> bool {
        &self.fingerprint == fingerprint || self.previous_fingerprint.as_ref() == Some(fingerprint)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Invite {
    digest: [u8; 32],
    expires_unix_s: u64,
    admit: bool,
    used: bool,
}

/// The state built from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    nodes: BTreeMap<String, NodeRecord>,
    invites: BTreeMap<String, Invite>,
    assoc_records: assoc::AssocRecords,
    next_node: u64,
    applied: u64,
}

/// Association ids below this are for admin-created ones; consent-formed
/// associations take ids from the top half, so the two never collide.
pub const CONSENT_ASSOC_BASE: u64 = 1 << 63;

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many operations were applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.get(name)
    }

    /// A node by id.
    pub fn node_by_id(&self, id: NodeId) -> Option<&NodeRecord> {
        self.nodes.values().find(|n| n.id == id)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// Whether `op` may be appended now (at wall-clock `now_unix_s`).
    ///
    /// # Errors
    /// Why it may not; nothing changes.
    pub fn check(&self, op: &Op, now_unix_s: u64) -> Result<(), RegistryError> {
        let node_state = |name: &str| {
            self.nodes
                .get(name)
                .map(|n| n.admission)
                .ok_or_else(|| RegistryError::UnknownNode(name.to_owned()))
        };
        let wrong = |node: &str, state: Admission, action| RegistryError::WrongState {
            node: node.to_owned(),
            state: state.as_str(),
            action,
        };
        match op {
            Op::Invite { node, .. } => match self.nodes.get(node) {
                Some(n) if n.admission != Admission::Revoked => {
                    Err(RegistryError::AlreadyEnrolled(node.clone()))
                }
                _ => Ok(()),
            },
            Op::Enroll {
                node, at_unix_s, ..
            } => {
                let invite = self
                    .invites
                    .get(node)
                    .ok_or_else(|| RegistryError::JoinTokenInvalid(node.clone()))?;
                if invite.used {
                    return Err(RegistryError::JoinTokenUsed(node.clone()));
                }
                if *at_unix_s > invite.expires_unix_s || now_unix_s > invite.expires_unix_s {
                    return Err(RegistryError::JoinTokenExpired(node.clone()));
                }
                // Only a new or revoked node enrolls: an enrolled node's
                // certificate is never replaced under a live session.
                if self
                    .nodes
                    .get(node)
                    .is_some_and(|n| n.admission != Admission::Revoked)
                {
                    return Err(RegistryError::AlreadyEnrolled(node.clone()));
                }
                Ok(())
            }
            Op::Renew {
                node, renewed_from, ..
            } => {
                let record = self
                    .nodes
                    .get(node)
                    .ok_or_else(|| RegistryError::UnknownNode(node.clone()))?;
                if record.admission != Admission::Admitted {
                    return Err(wrong(node, record.admission, "renewed"));
                }
                if !record.holds(renewed_from) {
                    return Err(RegistryError::NotItsCertificate(node.clone()));
                }
                Ok(())
            }
            Op::Admit { node } => match node_state(node)? {
                Admission::Pending => Ok(()),
                state => Err(wrong(node, state, "admitted")),
            },
            Op::Revoke { node } => match node_state(node)? {
                Admission::Revoked => Err(wrong(node, Admission::Revoked, "revoked")),
                _ => Ok(()),
            },
            Op::Readmit { node } => match node_state(node)? {
                Admission::Revoked => Ok(()),
                state => Err(wrong(node, state, "readmitted")),
            },
            Op::AssocCreate { .. }
            | Op::AssocDelete { .. }
            | Op::AssocForm { .. }
            | Op::AssocKey { .. }
            | Op::AssocDeny { .. }
            | Op::AssocAllow { .. } => self.check_assoc(op),
        }
    }

    /// The node a join token with `digest` enrolled, when that enrollment
    /// may be answered again: the invitation is used, still unexpired at
    /// `now_unix_s`, and the node not revoked. A node whose answer was lost
    /// retries with the same token.
    pub fn repeatable_enrollment(
        &self,
        node: &str,
        digest: &[u8; 32],
        now_unix_s: u64,
    ) -> Option<&NodeRecord> {
        let invite = self.invites.get(node)?;
        if &invite.digest != digest || !invite.used || now_unix_s > invite.expires_unix_s {
            return None;
        }
        self.nodes
            .get(node)
            .filter(|n| n.admission != Admission::Revoked)
    }

    /// Checks the digest of a presented join token against the invitation.
    pub fn invite_matches(&self, node: &str, digest: &[u8; 32]) -> bool {
        self.invites.get(node).is_some_and(|i| &i.digest == digest)
    }

    /// Applies a checked operation.
    ///
    /// # Errors
    /// When `op` does not apply (a log that was not written by [`Registry::check`]
    /// first, i.e. a corrupt log); the registry is unchanged.
    pub fn apply(&mut self, op: &Op) -> Result<(), RegistryError> {
        // Wall-clock checks were made when the op was appended; replay
        // accepts what was accepted then.
        self.check(op, 0)?;
        match op {
            Op::Invite {
                node,
                digest,
                expires_unix_s,
                admit,
            } => {
                self.invites.insert(
                    node.clone(),
                    Invite {
                        digest: *digest,
                        expires_unix_s: *expires_unix_s,
                        admit: *admit,
                        used: false,
                    },
                );
            }
            Op::Enroll {
                node,
                fingerprint,
                at_unix_s,
            } => {
                let invite = self.invites.get_mut(node).expect("checked");
                invite.used = true;
                let admission = if invite.admit {
                    Admission::Admitted
                } else {
                    Admission::Pending
                };
                match self.nodes.get_mut(node) {
                    // A revoked node re-enrolling keeps its id; the new
                    // certificate replaces the old one.
                    Some(record) => {
                        record.fingerprint = *fingerprint;
                        record.previous_fingerprint = None;
                        record.enrolled_at_unix_s = *at_unix_s;
                        record.admission = admission;
                        record.epoch += 1;
                    }
                    None => {
                        self.next_node += 1;
                        self.nodes.insert(
                            node.clone(),
                            NodeRecord {
                                id: NodeId(self.next_node),
                                name: node.clone(),
                                admission,
                                epoch: 1,
                                fingerprint: *fingerprint,
                                previous_fingerprint: None,
                                enrolled_at_unix_s: *at_unix_s,
                            },
                        );
                    }
                }
            }
            Op::Renew {
                node,
                fingerprint,
                renewed_from,
                ..
            } => {
                let record = self.nodes.get_mut(node).expect("checked");
                record.previous_fingerprint = Some(*renewed_from).filter(|f| f != fingerprint);
                record.fingerprint = *fingerprint;
            }
            Op::Admit { node } => self.set(node, Admission::Admitted, false),
            Op::Revoke { node } => {
                self.set(node, Admission::Revoked, true);
                self.retire_keys_of(node);
            }
            Op::Readmit { node } => self.set(node, Admission::Admitted, true),
            Op::AssocCreate { .. }
            | Op::AssocDelete { .. }
            | Op::AssocForm { .. }
            | Op::AssocKey { .. }
            | Op::AssocDeny { .. }
            | Op::AssocAllow { .. } => self.apply_assoc(op),
        }
        self.applied += 1;
        Ok(())
    }

    fn set(&mut self, node: &str, admission: Admission, new_epoch: bool) {
        let record = self.nodes.get_mut(node).expect("checked");
        record.admission = admission;
        if new_epoch {
            record.epoch += 1;
        }
    }
}

#[cfg(test)]
mod tests;
