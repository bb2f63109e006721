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
//!   online, offered relaying at an address others reach (a public one, or
//!   the very address its session comes from: not behind a NAT, see
//!   `reachable_offer`), is neither end, and holds fewer allocations
//!   than it offered, and fewer than its per-node quota for each end. Among
//!   those, the one holding the fewest allocations (then the first by
//!   name). Relayed bandwidth then costs the relaying node's uplink, not
//!   the coordinator's;
//! - otherwise the coordinator's own relay, when it hosts one;
//! - an association on the coordinator's relay moves to a node relay when
//!   one starts offering and can take it (a node relay exists to take
//!   relaying off the coordinator), make-before-break: the new allocation
//!   is opened and announced while the old one keeps forwarding, and the
//!   old one is released [`RELAY_HANDOVER`] later, once the ends have
//!   validated the new path and moved their data onto it. An association
//!   on a relaying node stays there while that node lives;
//! - when a relay node goes (session closed, revoked), its associations
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
use std::time::{Duration, Instant};

use crate::control::msg::RelaySite;
use crate::id::{AssocId, NodeId};
use crate::relay::RelayHost;
use crate::wire::KEY_LEN;

/// How long a replaced allocation keeps forwarding after its successor was
/// announced: the ends bind the new one and validate its path within a
/// few round trips, and move their data onto it as soon as it is (the
/// old path is scheduled below it), so by then nothing uses the old one.
pub const RELAY_HANDOVER: Duration = Duration::from_secs(5);

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
    /// Online nodes whose offer was refused (behind a NAT): the address
    /// offered and the one the session came from.
    refused: BTreeMap<String, (IpAddr, IpAddr)>,
    placed: BTreeMap<AssocId, Placement>,
    /// Allocations asked of a relaying node to replace the placement on
    /// the coordinator's relay, not open yet.
    moving: BTreeMap<AssocId, Placement>,
    /// Replaced allocations, released at the instant given.
    retiring: BTreeMap<AssocId, (Placement, Instant)>,
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
        self.refused.remove(node);
        self.offers.insert(node.to_owned(), offer);
    }

    /// Records a node's refused offer.
    pub(crate) fn refuse(&mut self, node: &str, offered: IpAddr, seen: IpAddr) {
        self.refused.insert(node.to_owned(), (offered, seen));
    }

    /// The refused offers of online nodes.
    pub(crate) fn refused(&self) -> impl Iterator<Item = (&str, &(IpAddr, IpAddr))> + '_ {
        self.refused.iter().map(|(n, r)| (n.as_str(), r))
    }

    /// Forgets the refused offers of nodes `online` no longer holds.
    pub(crate) fn forget_refused(&mut self, online: impl Fn(&str) -> bool) {
        self.refused.retain(|n, _| online(n));
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
        for p in self.placed.values().chain(self.moving.values()) {
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

    /// Asks for a node relay allocation to replace `assoc`'s placement on
    /// the coordinator's relay, when one can take it and no move is under
    /// way; the new placement, for the coordinator to send to the node.
    pub(crate) fn begin_move(
        &mut self,
        assoc: AssocId,
        key: [u8; KEY_LEN],
    ) -> Option<(String, &Placement)> {
        let p = self.placed.get(&assoc)?;
        if p.site != Site::Coordinator
            || p.addr.is_none()
            || self.moving.contains_key(&assoc)
            || self.retiring.contains_key(&assoc)
        {
            return None;
        }
        let legs = p.legs.clone();
        let node = self.choose_node([&legs[0], &legs[1]], None)?;
        let allocation = self.next_allocation.max(1);
        self.next_allocation = allocation + 1;
        tracing::info!(%assoc, allocation, %node, "relay allocation moves to a relaying node");
        self.by_allocation.insert(allocation, assoc);
        let p = self.moving.entry(assoc).or_insert(Placement {
            site: Site::Node(node.clone()),
            allocation,
            key,
            legs,
            addr: None,
        });
        Some((node, p))
    }

    /// The associations on the coordinator's relay whose allocation is
    /// open and not being moved.
    pub(crate) fn on_coordinator(&self) -> Vec<AssocId> {
        self.placed
            .iter()
            .filter(|(a, p)| {
                p.site == Site::Coordinator
                    && p.addr.is_some()
                    && !self.moving.contains_key(a)
                    && !self.retiring.contains_key(a)
            })
            .map(|(&a, _)| a)
            .collect()
    }

    /// Forgets a move under way (the node refused, failed or went); the
    /// placement it was to replace stays. The abandoned placement.
    pub(crate) fn cancel_move(&mut self, assoc: AssocId) -> Option<Placement> {
        let p = self.moving.remove(&assoc)?;
        self.by_allocation.remove(&p.allocation);
        Some(p)
    }

    /// Whether `allocation` is the new one of `assoc`'s move under way.
    pub(crate) fn is_moving(&self, assoc: AssocId, allocation: u64) -> bool {
        self.moving
            .get(&assoc)
            .is_some_and(|p| p.allocation == allocation)
    }

    /// The moves under way to `node`.
    pub(crate) fn moving_to(&self, node: &str) -> Vec<AssocId> {
        self.moving
            .iter()
            .filter(|(_, p)| p.site == Site::Node(node.to_owned()))
            .map(|(&a, _)| a)
            .collect()
    }

    /// When the next replaced allocation is due for release.
    pub(crate) fn next_retire(&self) -> Option<Instant> {
        self.retiring.values().map(|&(_, at)| at).min()
    }

    /// Takes the replaced allocations due at `now` (releasing those on the
    /// coordinator's relay), for the coordinator to tell the ends.
    pub(crate) fn retire_due(&mut self, now: Instant) -> Vec<(AssocId, Placement)> {
        let due: Vec<AssocId> = self
            .retiring
            .iter()
            .filter(|(_, &(_, at))| at <= now)
            .map(|(&a, _)| a)
            .collect();
        due.into_iter()
            .filter_map(|assoc| self.take_retiring(assoc).map(|p| (assoc, p)))
            .collect()
    }

    /// Forgets `assoc`'s replaced allocation, releasing it on the
    /// coordinator's relay.
    pub(crate) fn take_retiring(&mut self, assoc: AssocId) -> Option<Placement> {
        let (p, _) = self.retiring.remove(&assoc)?;
        self.by_allocation.remove(&p.allocation);
        if p.site == Site::Coordinator {
            if let Some(own) = self.own.as_mut() {
                own.release(p.allocation);
            }
        }
        Some(p)
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
    /// placement at `site` (a node may only speak for its own). A move's
    /// new allocation takes the placement's place, and the one it replaces
    /// retires until `now` + [`RELAY_HANDOVER`].
    pub(crate) fn opened(
        &mut self,
        now: Instant,
        site: &Site,
        allocation: u64,
        addr: SocketAddr,
    ) -> bool {
        let Some(&assoc) = self.by_allocation.get(&allocation) else {
            return false;
        };
        let moved = self
            .moving
            .get(&assoc)
            .is_some_and(|p| p.allocation == allocation && &p.site == site);
        if moved {
            let Some(mut p) = self.moving.remove(&assoc) else {
                return false;
            };
            p.addr = Some(addr);
            if let Some(old) = self.placed.insert(assoc, p) {
                self.retiring.insert(assoc, (old, now + RELAY_HANDOVER));
            }
            return true;
        }
        let assoc = &assoc;
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
