//! Which associations should exist, and the live table that makes them so:
//! mutual consent (each end's service declares the other) plus admin-created
//! ones, between admitted nodes whose services are registered. Reconciling
//! the table against that set yields what to install and what to withdraw.

use std::collections::{BTreeMap, BTreeSet};

use super::registry::{Admission, Registry, ServiceRef, CONSENT_ASSOC_BASE};
use crate::control::msg::{Candidate, ServiceDecl};
use crate::csprng::Drbg;
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

/// How an association came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    MutualConsent,
    Admin,
}

/// A live association.
#[derive(Debug, Clone)]
pub(crate) struct LiveAssoc {
    pub(crate) id: AssocId,
    pub(crate) epoch: u32,
    pub(crate) key: [u8; KEY_LEN],
    pub(crate) origin: Origin,
    /// The last candidates each end reported, by node name.
    pub(crate) candidates: BTreeMap<String, Vec<Candidate>>,
}

/// The live associations, indexed by end node and by id so that one
/// node's changes cost in its own associations, not in the whole table.
#[derive(Debug, Default)]
pub(crate) struct AssocTable {
    pub(crate) live: BTreeMap<Ends, LiveAssoc>,
    by_node: BTreeMap<String, BTreeSet<Ends>>,
    by_id: BTreeMap<AssocId, Ends>,
    next_consent: u64,
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
    out: &mut BTreeMap<Ends, Option<AssocId>>,
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
            if consents {
                out.insert(ends(here, there), None);
            }
        }
    }
}

/// Adds to `out` every admin-created association between admitted,
/// registered services that `wanted` accepts.
fn admin_created(
    standing: &Standing<'_>,
    services: &BTreeMap<String, Vec<ServiceDecl>>,
    wanted: impl Fn(&ServiceRef, &ServiceRef) -> bool,
    out: &mut BTreeMap<Ends, Option<AssocId>>,
) {
    for record in standing.registry.assocs() {
        if wanted(&record.a, &record.b)
            && standing.admitted(&record.a.node)
            && standing.admitted(&record.b.node)
            && has(services, &record.a)
            && has(services, &record.b)
        {
            out.insert(ends(record.a.clone(), record.b.clone()), Some(record.id));
        }
    }
}

/// Every association that should exist now, with its admin id if any.
pub(crate) fn desired(
    registry: &Registry,
    lapsed: &BTreeSet<String>,
    services: &BTreeMap<String, Vec<ServiceDecl>>,
) -> BTreeMap<Ends, Option<AssocId>> {
    let standing = Standing { registry, lapsed };
    let mut out = BTreeMap::new();
    for node in services.keys() {
        consented(&standing, services, node, &mut out);
    }
    admin_created(&standing, services, |_, _| true, &mut out);
    out
}

/// The associations that should exist now with `node` as an end. Costs in
/// `node`'s declarations (and the admin-created associations), not in the
/// number of nodes.
pub(crate) fn desired_for(
    registry: &Registry,
    lapsed: &BTreeSet<String>,
    services: &BTreeMap<String, Vec<ServiceDecl>>,
    node: &str,
) -> BTreeMap<Ends, Option<AssocId>> {
    let standing = Standing { registry, lapsed };
    let mut out = BTreeMap::new();
    consented(&standing, services, node, &mut out);
    admin_created(
        &standing,
        services,
        |a, b| a.node == node || b.node == node,
        &mut out,
    );
    out
}

impl AssocTable {
    /// Brings the live table to `desired`: returns the ends installed and
    /// the associations withdrawn.
    pub(crate) fn reconcile(
        &mut self,
        desired: &BTreeMap<Ends, Option<AssocId>>,
        drbg: &mut Drbg,
    ) -> (Vec<Ends>, Vec<(Ends, LiveAssoc)>) {
        let candidates: Vec<Ends> = self.live.keys().cloned().collect();
        self.reconcile_among(candidates, desired, drbg)
    }

    /// Brings `node`'s associations to `desired` (which holds only ends
    /// with `node`, as [`desired_for`] returns); the rest of the table is
    /// untouched.
    pub(crate) fn reconcile_node(
        &mut self,
        node: &str,
        desired: &BTreeMap<Ends, Option<AssocId>>,
        drbg: &mut Drbg,
    ) -> (Vec<Ends>, Vec<(Ends, LiveAssoc)>) {
        let candidates: Vec<Ends> = self
            .by_node
            .get(node)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        self.reconcile_among(candidates, desired, drbg)
    }

    /// Withdraws those of `candidates` that `desired` lacks (or whose admin
    /// id changed) and installs what `desired` has and the table lacks.
    fn reconcile_among(
        &mut self,
        candidates: Vec<Ends>,
        desired: &BTreeMap<Ends, Option<AssocId>>,
        drbg: &mut Drbg,
    ) -> (Vec<Ends>, Vec<(Ends, LiveAssoc)>) {
        let gone: Vec<Ends> = candidates
            .into_iter()
            .filter(|e| {
                let Some(live) = self.live.get(e) else {
                    return false;
                };
                match desired.get(e) {
                    None => true,
                    // An admin id appeared or vanished for the same ends: re-form.
                    Some(admin) => admin.is_some() != (live.origin == Origin::Admin),
                }
            })
            .collect();
        let withdrawn: Vec<(Ends, LiveAssoc)> = gone
            .into_iter()
            .filter_map(|e| self.remove(&e).map(|live| (e, live)))
            .collect();
        let mut installed = Vec::new();
        for (e, admin) in desired {
            if self.live.contains_key(e) {
                continue;
            }
            let (id, origin) = match admin {
                Some(id) => (*id, Origin::Admin),
                None => {
                    self.next_consent += 1;
                    (
                        AssocId(CONSENT_ASSOC_BASE + self.next_consent),
                        Origin::MutualConsent,
                    )
                }
            };
            self.insert(
                e.clone(),
                LiveAssoc {
                    id,
                    epoch: 1,
                    key: drbg.key(),
                    origin,
                    candidates: BTreeMap::new(),
                },
            );
            installed.push(e.clone());
        }
        (installed, withdrawn)
    }

    fn insert(&mut self, e: Ends, live: LiveAssoc) {
        for node in [&e.0.node, &e.1.node] {
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(e.clone());
        }
        self.by_id.insert(live.id, e.clone());
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
