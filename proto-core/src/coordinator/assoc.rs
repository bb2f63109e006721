//! Which associations should exist, and the live table that makes them so:
//! mutual consent (each end's service declares the other) plus admin-created
//! ones, between admitted nodes whose services are registered. Reconciling
//! the table against that set yields what to install and what to withdraw.

use std::collections::BTreeMap;

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

/// The live associations.
#[derive(Debug, Default)]
pub(crate) struct AssocTable {
    pub(crate) live: BTreeMap<Ends, LiveAssoc>,
    next_consent: u64,
}

/// Every association that should exist now, with its admin id if any.
pub(crate) fn desired(
    registry: &Registry,
    services: &BTreeMap<String, Vec<ServiceDecl>>,
) -> BTreeMap<Ends, Option<AssocId>> {
    let admitted = |node: &str| {
        registry
            .node(node)
            .is_some_and(|n| n.admission == Admission::Admitted)
    };
    let has = |r: &ServiceRef| {
        services
            .get(&r.node)
            .is_some_and(|list| list.iter().any(|s| s.name.as_str() == r.service))
    };
    let mut out = BTreeMap::new();
    for (node, list) in services.iter().filter(|(node, _)| admitted(node)) {
        for decl in list {
            for peer in &decl.peers {
                let here = ServiceRef {
                    node: node.clone(),
                    service: decl.name.as_str().to_owned(),
                };
                let there = ServiceRef {
                    node: peer.node.as_str().to_owned(),
                    service: peer.service.as_str().to_owned(),
                };
                if here == there || !admitted(&there.node) {
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
    for record in registry.assocs() {
        if admitted(&record.a.node) && admitted(&record.b.node) && has(&record.a) && has(&record.b)
        {
            out.insert(ends(record.a.clone(), record.b.clone()), Some(record.id));
        }
    }
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
        let gone: Vec<Ends> = self
            .live
            .iter()
            .filter(|(e, live)| match desired.get(*e) {
                None => true,
                // An admin id appeared or vanished for the same ends: re-form.
                Some(admin) => admin.is_some() != (live.origin == Origin::Admin),
            })
            .map(|(e, _)| e.clone())
            .collect();
        let withdrawn: Vec<(Ends, LiveAssoc)> = gone
            .into_iter()
            .filter_map(|e| self.live.remove(&e).map(|live| (e, live)))
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
            self.live.insert(
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

    /// Mutable access by id.
    pub(crate) fn by_id_mut(&mut self, id: AssocId) -> Option<(&Ends, &mut LiveAssoc)> {
        self.live.iter_mut().find(|(_, l)| l.id == id)
    }

    /// The associations `node` is an end of.
    pub(crate) fn of_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a Ends, &'a LiveAssoc)> + 'a {
        self.live
            .iter()
            .filter(move |(e, _)| e.0.node == node || e.1.node == node)
    }
}
