//! Associations in the registry: one record per pair of services, whoever
//! made it (an admin, or both ends declaring each other), with its current
//! key epoch and whether an admin deleted it. Records are never forgotten
//! (except by the old [`Op::AssocDelete`]), so a pair keeps its id for
//! good: across coordinator restarts, withdrawals and re-formations.

use std::collections::{BTreeMap, BTreeSet};

use super::{Op, Registry, RegistryError, ServiceRef, CONSENT_ASSOC_BASE};
use crate::id::AssocId;
use crate::wire::KEY_LEN;

/// An association key. Its `Debug` hides the bytes, so logs of operations
/// and records never show one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AssocSecret(pub [u8; KEY_LEN]);

impl std::fmt::Debug for AssocSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AssocSecret(..)")
    }
}

/// Who made an association.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Both ends declared each other's service.
    MutualConsent,
    /// An admin created it (or re-allowed a deleted one with `assoc create`).
    Admin,
}

/// The key of one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochKey {
    /// Counts from 1; bumped at every fresh key.
    pub epoch: u32,
    /// The 32-byte key both ends hold.
    pub key: AssocSecret,
    /// When it was made (the coordinator's wall clock); periodic rekeying
    /// counts from here.
    pub at_unix_s: u64,
}

/// An association the registry knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssocRecord {
    /// Its id.
    pub id: AssocId,
    /// One end.
    pub a: ServiceRef,
    /// The other end.
    pub b: ServiceRef,
    /// Who made it.
    pub origin: Origin,
    /// An admin deleted it: it is not installed, whoever declares it,
    /// until an admin allows it again.
    pub deleted: bool,
    /// The current key; none until the first one is written.
    pub key: Option<EpochKey>,
    /// An end was revoked, or an admin deleted the association, since the
    /// current key was written: the key must not be installed again, the
    /// next install needs a fresh one.
    pub key_retired: bool,
}

impl AssocRecord {
    /// The key to install, unless a fresh one is needed first.
    pub fn usable_key(&self) -> Option<&EpochKey> {
        self.key.as_ref().filter(|_| !self.key_retired)
    }

    /// The epoch the next key gets.
    pub fn next_epoch(&self) -> u32 {
        self.key.map_or(1, |k| k.epoch.saturating_add(1))
    }
}

/// The two ends in order, so each pair has one entry however it is named.
pub(crate) fn pair(a: &ServiceRef, b: &ServiceRef) -> (ServiceRef, ServiceRef) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

/// The association records and their indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct AssocRecords {
    by_id: BTreeMap<AssocId, AssocRecord>,
    by_pair: BTreeMap<(ServiceRef, ServiceRef), AssocId>,
    by_node: BTreeMap<String, BTreeSet<AssocId>>,
    next_admin: u64,
    next_consent: u64,
}

impl AssocRecords {
    fn insert(&mut self, record: AssocRecord) {
        self.by_pair.insert(pair(&record.a, &record.b), record.id);
        for node in [&record.a.node, &record.b.node] {
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(record.id);
        }
        self.by_id.insert(record.id, record);
    }

    fn remove(&mut self, id: AssocId) {
        let Some(record) = self.by_id.remove(&id) else {
            return;
        };
        self.by_pair.remove(&pair(&record.a, &record.b));
        for node in [&record.a.node, &record.b.node] {
            if let Some(set) = self.by_node.get_mut(node) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
    }
}

impl Registry {
    /// Every association record, by id.
    pub fn assocs(&self) -> impl Iterator<Item = &AssocRecord> {
        self.assoc_records.by_id.values()
    }

    /// One association record.
    pub fn assoc(&self, id: AssocId) -> Option<&AssocRecord> {
        self.assoc_records.by_id.get(&id)
    }

    /// The record of the pair `a`–`b`, in either order.
    pub fn assoc_between(&self, a: &ServiceRef, b: &ServiceRef) -> Option<&AssocRecord> {
        let id = self.assoc_records.by_pair.get(&pair(a, b))?;
        self.assoc_records.by_id.get(id)
    }

    /// The records with an end at `node`, by id.
    pub fn assocs_of<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a AssocRecord> + 'a {
        self.assoc_records
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.assoc_records.by_id.get(id))
    }

    /// Whether an association operation may be appended now.
    pub(super) fn check_assoc(&self, op: &Op) -> Result<(), RegistryError> {
        let known = |node: &str| {
            if self.nodes.contains_key(node) {
                Ok(())
            } else {
                Err(RegistryError::UnknownNode(node.to_owned()))
            }
        };
        let bad = |a: &ServiceRef, b: &ServiceRef, why| {
            Err(RegistryError::BadAssociation(format!("{a} to {b}"), why))
        };
        let record = |id: &AssocId| {
            self.assoc_records
                .by_id
                .get(id)
                .ok_or(RegistryError::UnknownAssociation(*id))
        };
        match op {
            Op::AssocCreate { a, b } | Op::AssocForm { a, b } => {
                known(&a.node)?;
                known(&b.node)?;
                if a == b {
                    return bad(a, b, "both ends are the same service");
                }
                match (op, self.assoc_between(a, b)) {
                    (_, None) => Ok(()),
                    // Creating a pair that exists by consent, or that an
                    // admin deleted, makes it (again) an admin association.
                    (Op::AssocCreate { .. }, Some(r)) if r.deleted || r.origin != Origin::Admin => {
                        Ok(())
                    }
                    _ => bad(a, b, "it exists already"),
                }
            }
            Op::AssocDelete { assoc } => record(assoc).map(drop),
            Op::AssocDeny { assoc } => match record(assoc)? {
                r if r.deleted => bad(&r.a, &r.b, "it is deleted already"),
                _ => Ok(()),
            },
            Op::AssocAllow { assoc } => match record(assoc)? {
                r if !r.deleted => bad(&r.a, &r.b, "it is not deleted"),
                _ => Ok(()),
            },
            Op::AssocKey { assoc, epoch, .. } => {
                let r = record(assoc)?;
                if *epoch != r.next_epoch() || r.key.is_some_and(|k| k.epoch == u32::MAX) {
                    return bad(
                        &r.a,
                        &r.b,
                        "the key's epoch does not follow the current one",
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Applies a checked association operation.
    pub(super) fn apply_assoc(&mut self, op: &Op) {
        let records = &mut self.assoc_records;
        match op {
            Op::AssocCreate { a, b } => match records.by_pair.get(&pair(a, b)).copied() {
                Some(id) => {
                    let r = records.by_id.get_mut(&id).expect("indexed");
                    r.origin = Origin::Admin;
                    r.deleted = false;
                }
                None => {
                    records.next_admin += 1;
                    let id = AssocId(records.next_admin);
                    records.insert(new_record(id, a, b, Origin::Admin));
                }
            },
            Op::AssocForm { a, b } => {
                records.next_consent += 1;
                let id = AssocId(CONSENT_ASSOC_BASE + records.next_consent);
                let (a, b) = pair(a, b);
                records.insert(new_record(id, &a, &b, Origin::MutualConsent));
            }
            // Written before deletions were kept: forgets the record.
            Op::AssocDelete { assoc } => records.remove(*assoc),
            Op::AssocDeny { assoc } => {
                // Both ends drop the key; allowed again, it comes back
                // under a fresh one, restarts or not.
                if let Some(r) = records.by_id.get_mut(assoc) {
                    r.deleted = true;
                    r.key_retired = r.key.is_some();
                }
            }
            Op::AssocAllow { assoc } => {
                if let Some(r) = records.by_id.get_mut(assoc) {
                    r.deleted = false;
                }
            }
            Op::AssocKey {
                assoc,
                epoch,
                key,
                at_unix_s,
            } => {
                if let Some(r) = records.by_id.get_mut(assoc) {
                    r.key = Some(EpochKey {
                        epoch: *epoch,
                        key: *key,
                        at_unix_s: *at_unix_s,
                    });
                    r.key_retired = false;
                }
            }
            _ => {}
        }
    }

    /// A revoked node's associations must not come back under a key it
    /// knows: readmission is a fresh event (DESIGN §4).
    pub(super) fn retire_keys_of(&mut self, node: &str) {
        let records = &mut self.assoc_records;
        for id in records.by_node.get(node).into_iter().flatten() {
            if let Some(r) = records.by_id.get_mut(id) {
                r.key_retired = r.key.is_some();
            }
        }
    }
}

fn new_record(id: AssocId, a: &ServiceRef, b: &ServiceRef, origin: Origin) -> AssocRecord {
    AssocRecord {
        id,
        a: a.clone(),
        b: b.clone(),
        origin,
        deleted: false,
        key: None,
        key_retired: false,
    }
}
