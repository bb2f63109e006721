//! Where each association's relay allocation lives (DESIGN §7): on a node
//! that offers relaying (`[relay] data = true` on the node) or on the
//! coordinator's own relay. Both run the same [`Relay`] machine through the
//! same [`RelayHost`]; this table only decides and remembers the place.
//!
//! One allocation per live association, whether or not a direct path
//! exists: the relay path is validated and waiting, so failing over to it
//! is as fast as failing over between direct paths. The policy:
//!
//! - a node relay is preferred when one can take the association: it is
//!   online, offered relaying, is neither end, and holds fewer allocations
//!   than it offered, and fewer than its per-node quota for each end. Among
//!   those, the one holding the fewest allocations (then the first by
//!   name). Relayed bandwidth then costs the relaying node's uplink, not
//!   the coordinator's;
//! - otherwise the coordinator's own relay, when it hosts one;
//! - a placement stays where it is while its host lives: an association
//!   on the coordinator's relay does not move when a node starts offering.
//!   When a relay node goes (session closed, revoked), its associations
//!   move at once: the ends are told to drop the leg, and the association
//!   is placed again by the same rule.
//!
//! A node relay's allocation is announced to the ends only after the node
//! reported its port open (`RelayOpened`), so no end binds to a port that
//! is not there.
//!
//! [`Relay`]: crate::relay::Relay

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::control::msg::RelaySite;
use crate::id::{AssocId, NodeId};
use crate::relay::RelayHost;
use crate::wire::KEY_LEN;

/// Where an allocation lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Site {
    /// The coordinator's own relay.
    Coordinator,
    /// A relaying node, by name.
    Node(String),
}

impl Site {
    pub(crate) fn wire(&self) -> RelaySite {
        match self {
            Self::Coordinator => RelaySite::Coordinator,
            Self::Node(_) => RelaySite::Node,
        }
    }
}

/// One association's allocation.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) site: Site,
    pub(crate) allocation: u64,
    pub(crate) key: [u8; KEY_LEN],
    /// The node names of leg 0 and leg 1.
    pub(crate) legs: [String; 2],
    /// Where the ends reach it, once its port is open.
    pub(crate) addr: Option<SocketAddr>,
}

/// What a relaying node offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostOffer {
    pub(crate) ip: IpAddr,
    pub(crate) max_allocations: u32,
    pub(crate) quota_per_node: u32,
}

/// The relays the coordinator can place allocations on, and the placements.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    /// The coordinator's own relay, if it hosts one.
    pub(crate) own: Option<RelayHost>,
    /// Online nodes that offered relaying.
    offers: BTreeMap<String, HostOffer>,
    placed: BTreeMap<AssocId, Placement>,
    by_allocation: BTreeMap<u64, AssocId>,
    next_allocation: u64,
}

impl Relays {
    /// The placement of `assoc`, if it has one.
    pub(crate) fn placement(&self, assoc: AssocId) -> Option<&Placement> {
        self.placed.get(&assoc)
    }

    /// Every placement, by association.
    pub(crate) fn placements(&self) -> impl Iterator<Item = (AssocId, &Placement)> + '_ {
        self.placed.iter().map(|(&a, p)| (a, p))
    }

    /// The association an allocation carries.
    pub(crate) fn assoc_of(&self, allocation: u64) -> Option<AssocId> {
        self.by_allocation.get(&allocation).copied()
    }

    /// Records a node's offer (it is online and welcomed).
    pub(crate) fn offer(&mut self, node: &str, offer: HostOffer) {
        self.offers.insert(node.to_owned(), offer);
    }

    /// The nodes that offered relaying, with their offers.
    pub(crate) fn offers(&self) -> impl Iterator<Item = (&str, &HostOffer)> + '_ {
        self.offers.iter().map(|(n, o)| (n.as_str(), o))
    }

    /// Forgets the offers of nodes `online` no longer holds; returns them.
    pub(crate) fn drop_offers_except(&mut self, online: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.offers.keys().filter(|n| !online(n)).cloned().collect();
        for node in &gone {
            self.offers.remove(node);
        }
        gone
    }

    /// The associations placed on a relaying node.
    pub(crate) fn placed_on(&self, node: &str) -> Vec<AssocId> {
        self.placed
            .iter()
            .filter(|(_, p)| p.site == Site::Node(node.to_owned()))
            .map(|(&a, _)| a)
            .collect()
    }

    /// The relaying node that should take an association between `legs`:
    /// see the module docs.
    fn choose_node(&self, legs: [&str; 2], exclude: Option<&str>) -> Option<String> {
        let mut load: BTreeMap<&str, (u32, [u32; 2])> = BTreeMap::new();
        for p in self.placed.values() {
            if let Site::Node(n) = &p.site {
                let entry = load.entry(n.as_str()).or_default();
                entry.0 += 1;
                for (i, leg) in legs.iter().enumerate() {
                    if p.legs.iter().any(|l| l == leg) {
                        entry.1[i] += 1;
                    }
                }
            }
        }
        self.offers
            .iter()
            .filter(|(n, _)| !legs.contains(&n.as_str()) && exclude != Some(n.as_str()))
            .filter_map(|(n, o)| {
                let (total, per_end) = load.get(n.as_str()).copied().unwrap_or_default();
                let fits = total < o.max_allocations
                    && per_end.iter().all(|&held| held < o.quota_per_node);
                fits.then_some((total, n))
            })
            .min()
            .map(|(_, n)| n.clone())
    }

    /// Places `assoc` between the nodes `legs` (names and ids) by the
    /// policy in the module docs, never on the node `exclude`. On a node,
    /// the coordinator sends it the allocation; on the coordinator's relay,
    /// the port's opening is drained later. `None` when no relay can take
    /// it.
    pub(crate) fn place(
        &mut self,
        now: std::time::Instant,
        assoc: AssocId,
        legs: [(&str, NodeId); 2],
        key: [u8; KEY_LEN],
        exclude: Option<&str>,
    ) -> Option<Site> {
        let allocation = self.next_allocation.max(1);
        let site = if let Some(node) = self.choose_node([legs[0].0, legs[1].0], exclude) {
            Site::Node(node)
        } else {
            let own = self.own.as_mut()?;
            if let Err(err) = own.allocate(now, allocation, assoc, key, [legs[0].1, legs[1].1]) {
                tracing::warn!(%assoc, %err, "no relay allocation for the association");
                return None;
            }
            Site::Coordinator
        };
        self.next_allocation = allocation + 1;
        tracing::debug!(%assoc, allocation, ?site, "relay allocation placed");
        self.by_allocation.insert(allocation, assoc);
        self.placed.insert(
            assoc,
            Placement {
                site: site.clone(),
                allocation,
                key,
                legs: [legs[0].0.to_owned(), legs[1].0.to_owned()],
                addr: None,
            },
        );
        Some(site)
    }

    /// The port of `allocation` is open at `addr`: true when it is a
    /// placement at `site` (a node may only speak for its own).
    pub(crate) fn opened(&mut self, site: &Site, allocation: u64, addr: SocketAddr) -> bool {
        let Some(assoc) = self.by_allocation.get(&allocation) else {
            return false;
        };
        let Some(p) = self.placed.get_mut(assoc).filter(|p| &p.site == site) else {
            return false;
        };
        p.addr = Some(addr);
        true
    }

    /// Forgets `assoc`'s placement (releasing it on the coordinator's own
    /// relay) and returns it, for the coordinator to tell a relaying node
    /// and the ends.
    pub(crate) fn remove(&mut self, assoc: AssocId) -> Option<Placement> {
        let p = self.placed.remove(&assoc)?;
        self.by_allocation.remove(&p.allocation);
        if p.site == Site::Coordinator {
            if let Some(own) = self.own.as_mut() {
                own.release(p.allocation);
            }
        }
        Some(p)
    }
}
