//! Which associations should exist, and the live table that makes them so:
//! mutual consent (each end's service declares the other) plus admin-created
//! ones, between admitted nodes whose services are registered, less those
//! an admin deleted. Reconciling the table against that set yields what to
//! install, what to withdraw, and what must be written first: a record for
//! a newly consented pair, or a fresh key. Ids and keys come from the
//! registry, so they are the same after a coordinator restart.

use std::collections::{BTreeMap, BTreeSet};

use super::registry::{Admission, Origin, Registry, ServiceRef};
use crate::control::msg::{Candidate, ServiceDecl};
use crate::id::AssocId;
use crate::wire::KEY_LEN;

/// The two ends of an association, in order (so each pair has one key).
pub(crate) type Ends = (ServiceRef, ServiceRef);

fn ends(a: ServiceRef, b: ServiceRef) -> Ends {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// What an association that should exist has in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Its record.
    Record(AssocId),
    /// No record yet: both ends consent to a pair never formed before.
    Form,
}

/// What the coordinator must write before an association can be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// A record for a newly consented pair ([`Op::AssocForm`](super::registry::Op::AssocForm)).
    Form(Ends),
    /// A fresh key ([`Op::AssocKey`](super::registry::Op::AssocKey)).
    Key(AssocId),
}

/// A live association.
#[derive(Debug, Clone)]
pub(crate) struct LiveAssoc {
    pub(crate) id: AssocId,
    pub(crate) epoch: u32,
    pub(crate) key: [u8; KEY_LEN],
    /// When the current key was made, for periodic rekeying.
    pub(crate) keyed_at_unix_s: u64,
    /// The last candidates each end reported, by node name.
    pub(crate) candidates: BTreeMap<String, Vec<Candidate>>,
}

/// What a reconciliation changed and what it needs written.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    pub(crate) installed: Vec<Ends>,
    pub(crate) withdrawn: Vec<(Ends, LiveAssoc)>,
    pub(crate) needs: Vec<Need>,
}

/// How long an association key is used before the coordinator replaces it
/// (both ends online), by default: a day.
pub const DEFAULT_ASSOC_KEY_LIFETIME_S: u64 = 86_400;
/// The shortest key lifetime: every rekey is a durable write and a push to
/// both ends.
pub const MIN_ASSOC_KEY_LIFETIME_S: u64 = 60;
/// The longest key lifetime.
pub const MAX_ASSOC_KEY_LIFETIME_S: u64 = 365 * 86_400;

/// The live associations, indexed by end node and by id so that one
/// node's changes cost in its own associations, not in the whole table.
#[derive(Debug)]
pub(crate) struct AssocTable {
    pub(crate) live: BTreeMap<Ends, LiveAssoc>,
    by_node: BTreeMap<String, BTreeSet<Ends>>,
    by_id: BTreeMap<AssocId, Ends>,
    /// Withdrawn since this coordinator started: both ends dropped the
    /// key, so the association comes back under a fresh one.
    stale: BTreeSet<AssocId>,
    /// When each live association's key is due to be replaced (wall
    /// clock), earliest first.
    due: BTreeSet<(u64, AssocId)>,
    key_lifetime_s: u64,
}

impl Default for AssocTable {
    fn default() -> Self {
        Self {
            live: BTreeMap::new(),
            by_node: BTreeMap::new(),
            by_id: BTreeMap::new(),
            stale: BTreeSet::new(),
            due: BTreeSet::new(),
            key_lifetime_s: DEFAULT_ASSOC_KEY_LIFETIME_S,
        }
    }
}

/// Who counts as admitted when forming associations: the registry says
/// admitted and the node's admission has not lapsed (its last token
/// expired without a fresh one).
struct Standing<'a> {
    registry: &'a Registry,
    lapsed: &'a BTreeSet<String>,
}

impl Standing<'_> {
    fn admitted(&self, node: &str) -> bool {
        !self.lapsed.contains(node)
            && self
                .registry
                .node(node)
                .is_some_and(|n| n.admission == Admission::Admitted)
    }
}

fn has(services: &BTreeMap<String, Vec<ServiceDecl>>, r: &ServiceRef) -> bool {
    services
        .get(&r.node)
        .is_some_and(|list| list.iter().any(|s| s.name.as_str() == r.service))
}

/// Adds to `out` every mutual-consent association `node` declares and its
/// peer declares back.
fn consented(
    standing: &Standing<'_>,
    services: &BTreeMap<String, Vec<ServiceDecl>>,
    node: &str,
    out: &mut BTreeMap<Ends, Want>,
) {
    if !standing.admitted(node) {
        return;
    }
    let Some(list) = services.get(node) else {
        return;
    };
    for decl in list {
        for peer in &decl.peers {
            let here = ServiceRef {
                node: node.to_owned(),
                service: decl.name.as_str().to_owned(),
            };
            let there = ServiceRef {
                node: peer.node.as_str().to_owned(),
                service: peer.service.as_str().to_owned(),
            };
            if here == there || !standing.admitted(&there.node) {
                continue;
            }
            let consents = services.get(&there.node).is_some_and(|theirs| {
                theirs.iter().any(|s| {
                    s.name.as_str() == there.service
                        && s.peers.iter().any(|p| {
                            p.node.as_str() == here.node && p.service.as_str() == here.service
                        })
                })
            });
            if !consents {
                continue;
            }
            match standing.registry.assoc_between(&here, &there) {
                // Deleted by an admin: consent does not bring it back.
                Some(record) if record.deleted => {}
                Some(record) => {
                    out.insert(ends(here, there), Want::Record(record.id));
                }
                None => {
                    out.insert(ends(here, there), Want::Form);
                }
            }
        }
    }
}

/// Adds to `out` every admin-created association with an end at `node`
/// between admitted, registered services.
fn admin_created(
    standing: &Standing<'_>,
    services: &BTreeMap<String, Vec<ServiceDecl>>,
    node: &str,
    out: &mut BTreeMap<Ends, Want>,
) {
    for record in standing.registry.assocs_of(node) {
        if record.origin == Origin::Admin
            && !record.deleted
            && standing.admitted(&record.a.node)
            && standing.admitted(&record.b.node)
            && has(services, &record.a)
            && has(services, &record.b)
        {
            out.insert(
                ends(record.a.clone(), record.b.clone()),
                Want::Record(record.id),
            );
        }
    }
}

/// The associations that should exist now with `node` as an end. Costs in
/// `node`'s declarations and records, not in the number of nodes.
pub(crate) fn desired_for(
    registry: &Registry,
    lapsed: &BTreeSet<String>,
    services: &BTreeMap<String, Vec<ServiceDecl>>,
    node: &str,
) -> BTreeMap<Ends, Want> {
    let standing = Standing { registry, lapsed };
    let mut out = BTreeMap::new();
    consented(&standing, services, node, &mut out);
    admin_created(&standing, services, node, &mut out);
    out
}

impl AssocTable {
    /// Brings `node`'s associations to `desired` (which holds only ends
    /// with `node`, as [`desired_for`] returns); the rest of the table is
    /// untouched. An association is installed with the key its record
    /// holds; one without a record, or whose key is retired or was
    /// withdrawn from both ends, waits for the writes in `needs`.
    pub(crate) fn reconcile_node(
        &mut self,
        node: &str,
        desired: &BTreeMap<Ends, Want>,
        registry: &Registry,
    ) -> Reconciled {
        let candidates: Vec<Ends> = self
            .by_node
            .get(node)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        let gone: Vec<Ends> = candidates
            .into_iter()
            .filter(|e| {
                let Some(live) = self.live.get(e) else {
                    return false;
                };
                desired.get(e) != Some(&Want::Record(live.id))
            })
            .collect();
        let mut out = Reconciled::default();
        for e in gone {
            if let Some(live) = self.remove(&e) {
                self.stale.insert(live.id);
                out.withdrawn.push((e, live));
            }
        }
        for (e, want) in desired {
            if self.live.contains_key(e) {
                continue;
            }
            let id = match want {
                Want::Form => {
                    out.needs.push(Need::Form(e.clone()));
                    continue;
                }
                Want::Record(id) => *id,
            };
            let key = registry
                .assoc(id)
                .and_then(|r| r.usable_key())
                .filter(|_| !self.stale.contains(&id));
            let Some(key) = key else {
                out.needs.push(Need::Key(id));
                continue;
            };
            self.insert(
                e.clone(),
                LiveAssoc {
                    id,
                    epoch: key.epoch,
                    key: key.key.0,
                    keyed_at_unix_s: key.at_unix_s,
                    candidates: BTreeMap::new(),
                },
            );
            out.installed.push(e.clone());
        }
        out
    }

    /// A fresh key was written for `id`: it may be installed again. True
    /// when the association is live (its ends must be told).
    pub(crate) fn rekeyed(
        &mut self,
        id: AssocId,
        epoch: u32,
        key: [u8; KEY_LEN],
        at_unix_s: u64,
    ) -> bool {
        self.stale.remove(&id);
        let lifetime = self.key_lifetime_s;
        let Some(e) = self.by_id.get(&id) else {
            return false;
        };
        let Some(live) = self.live.get_mut(e) else {
            return false;
        };
        self.due
            .remove(&(live.keyed_at_unix_s.saturating_add(lifetime), live.id));
        live.epoch = epoch;
        live.key = key;
        live.keyed_at_unix_s = at_unix_s;
        self.due.insert((at_unix_s.saturating_add(lifetime), id));
        true
    }

    /// Sets how long a key is used before it is replaced.
    pub(crate) fn set_key_lifetime(&mut self, lifetime_s: u64) {
        self.key_lifetime_s = lifetime_s;
        self.due = self
            .live
            .values()
            .map(|l| (l.keyed_at_unix_s.saturating_add(lifetime_s), l.id))
            .collect();
    }

    /// How long a key is used before it is replaced.
    pub(crate) fn key_lifetime_s(&self) -> u64 {
        self.key_lifetime_s
    }

    /// When the next key is due to be replaced (wall clock).
    pub(crate) fn next_rekey(&self) -> Option<u64> {
        self.due.first().map(|d| d.0)
    }

    /// Takes the live associations whose key is due at `now_unix_s` off
    /// the schedule; [`AssocTable::reschedule`] puts one back.
    pub(crate) fn take_due(&mut self, now_unix_s: u64) -> Vec<AssocId> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.due.first() {
            if at > now_unix_s {
                break;
            }
            self.due.pop_first();
            out.push(id);
        }
        out
    }

    /// Puts a live association back on the rekey schedule.
    pub(crate) fn reschedule(&mut self, id: AssocId) {
        if let Some(live) = self.by_id.get(&id).and_then(|e| self.live.get(e)) {
            self.due
                .insert((live.keyed_at_unix_s.saturating_add(self.key_lifetime_s), id));
        }
    }

    /// The ends of a live association.
    pub(crate) fn ends_of(&self, id: AssocId) -> Option<&Ends> {
        self.by_id.get(&id)
    }

    fn insert(&mut self, e: Ends, live: LiveAssoc) {
        for node in [&e.0.node, &e.1.node] {
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(e.clone());
        }
        self.by_id.insert(live.id, e.clone());
        self.due.insert((
            live.keyed_at_unix_s.saturating_add(self.key_lifetime_s),
            live.id,
        ));
        self.live.insert(e, live);
    }

    fn remove(&mut self, e: &Ends) -> Option<LiveAssoc> {
        let live = self.live.remove(e)?;
        for node in [&e.0.node, &e.1.node] {
            if let Some(set) = self.by_node.get_mut(node) {
                set.remove(e);
                if set.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
        self.by_id.remove(&live.id);
        self.due.remove(&(
            live.keyed_at_unix_s.saturating_add(self.key_lifetime_s),
            live.id,
        ));
        Some(live)
    }

    /// The current key of a live association.
    pub(crate) fn key(&self, id: AssocId) -> Option<&[u8; KEY_LEN]> {
        let ends = self.by_id.get(&id)?;
        self.live.get(ends).map(|live| &live.key)
    }

    /// Mutable access by id.
    pub(crate) fn by_id_mut(&mut self, id: AssocId) -> Option<(&Ends, &mut LiveAssoc)> {
        let e = self.by_id.get(&id)?;
        let live = self.live.get_mut(e)?;
        Some((e, live))
    }

    /// The associations `node` is an end of.
    pub(crate) fn of_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a Ends, &'a LiveAssoc)> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|e| self.live.get_key_value(e))
    }
}
