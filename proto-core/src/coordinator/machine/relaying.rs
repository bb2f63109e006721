//! The coordinator's side of relaying (DESIGN §7): its own relay, the
//! nodes that offer relaying, and placing each association's allocation
//! on one of them (the policy is in [`relay_place`](super::super::relay_place)).

use std::net::SocketAddr;
use std::time::Instant;

use super::super::relay_place::{HostOffer, Site};
use super::{Coordinator, CoordinatorEvent, Ends};
use crate::control::msg::Message;
use crate::id::AssocId;
use crate::relay::{HostNote, Relay, RelayHost, RelayHosting};

/// Where one association's relay allocation lives, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayPlacement {
    /// The association.
    pub assoc: AssocId,
    /// The allocation's id.
    pub allocation: u64,
    /// The relaying node, or `None` for the coordinator's own relay.
    pub node: Option<String>,
    /// Where the ends reach it, once its port is open.
    pub addr: Option<SocketAddr>,
}

impl Coordinator {
    /// Hosts a relay for the nodes (DESIGN §7): an association no relaying
    /// node can take gets an allocation here, announced to both ends, which
    /// keep the relay path validated beside their direct ones. Call before
    /// the first [`poll_output`], or later: associations placed before keep
    /// their place.
    ///
    /// [`poll_output`]: crate::machine::StateMachine::poll_output
    pub fn host_relay(&mut self, hosting: RelayHosting) {
        self.relays.own = Some(RelayHost::new(hosting));
    }

    /// The hosted relay, if any, for status.
    pub fn relay(&self) -> Option<&Relay> {
        self.relays.own.as_ref().map(RelayHost::relay)
    }

    /// Where every association's relay allocation lives, by association.
    pub fn relay_placements(&self) -> Vec<RelayPlacement> {
        self.relays
            .placements()
            .map(|(assoc, p)| RelayPlacement {
                assoc,
                allocation: p.allocation,
                node: match &p.site {
                    Site::Coordinator => None,
                    Site::Node(n) => Some(n.clone()),
                },
                addr: p.addr,
            })
            .collect()
    }

    /// The nodes that offer relaying now, with the address they offered.
    pub fn relay_nodes(&self) -> Vec<(String, std::net::IpAddr)> {
        self.relays
            .offers()
            .map(|(n, o)| (n.to_owned(), o.ip))
            .collect()
    }

    /// Makes sure `assoc` has a relay allocation and tells the end `here`
    /// its leg, once the allocation's port is open.
    pub(super) fn offer_relay(&mut self, now: Instant, assoc: AssocId, ends: &Ends, here: &str) {
        if self.relays.placement(assoc).is_none() {
            self.place_relay(now, assoc, ends, None);
        }
        self.announce_relay(now, assoc, Some(here));
    }

    /// Places `assoc`'s allocation (never on `exclude`) and, on a relaying
    /// node, asks the node for it.
    fn place_relay(&mut self, now: Instant, assoc: AssocId, ends: &Ends, exclude: Option<&str>) {
        let ids = [&ends.0.node, &ends.1.node].map(|n| self.registry.node(n).map(|r| r.id));
        let [Some(id0), Some(id1)] = ids else {
            return;
        };
        let legs = [(ends.0.node.as_str(), id0), (ends.1.node.as_str(), id1)];
        let key = self.drbg.key();
        let Some(Site::Node(node)) = self.relays.place(now, assoc, legs, key, exclude) else {
            return;
        };
        let Some(p) = self.relays.placement(assoc) else {
            return;
        };
        let message = Message::RelayAllocate {
            allocation: p.allocation,
            assoc,
            key: p.key,
            nodes: [id0, id1],
        };
        if let Some(&conn) = self.online.get(&node) {
            self.send(now, conn, &message);
        }
    }

    /// Tells the online ends of `assoc` (or only `only`) their relay leg,
    /// once its port is open.
    fn announce_relay(&mut self, now: Instant, assoc: AssocId, only: Option<&str>) {
        let Some(p) = self.relays.placement(assoc).cloned() else {
            return;
        };
        let Some(relay) = p.addr else {
            return;
        };
        for (leg, node) in p.legs.iter().enumerate() {
            if only.is_some_and(|o| o != node) {
                continue;
            }
            if let Some(&conn) = self.online.get(node) {
                let message = Message::RelayAllocation {
                    assoc,
                    relay,
                    allocation: p.allocation,
                    leg: leg as u8,
                    key: p.key,
                    site: p.site.wire(),
                };
                self.send(now, conn, &message);
            }
        }
    }

    /// `assoc` was withdrawn: its allocations go at once (the current
    /// one, and one being moved to or from), on the coordinator's relay
    /// or on the relaying node (told to drop it).
    pub(super) fn release_relay(&mut self, now: Instant, assoc: AssocId) {
        let gone = [
            self.relays.remove(assoc),
            self.relays.cancel_move(assoc),
            self.relays.take_retiring(assoc),
        ];
        for p in gone.into_iter().flatten() {
            if let Site::Node(node) = &p.site {
                self.tell(now, node, assoc, p.allocation);
            }
        }
    }

    /// Moves each association on the coordinator's relay whose ends are
    /// both online onto a relaying node that can take it (see
    /// [`relay_place`](super::super::relay_place)): the node is asked for
    /// the allocation, announced to the ends once it is open, and the old
    /// one is released
    /// [`RELAY_HANDOVER`](super::super::relay_place::RELAY_HANDOVER) after.
    fn move_to_nodes(&mut self, now: Instant) {
        for assoc in self.relays.on_coordinator() {
            let Some(ends) = self.assocs.ends_of(assoc).cloned() else {
                continue;
            };
            if !(self.online.contains_key(&ends.0.node) && self.online.contains_key(&ends.1.node)) {
                continue;
            }
            let ids = [&ends.0.node, &ends.1.node].map(|n| self.registry.node(n).map(|r| r.id));
            let [Some(id0), Some(id1)] = ids else {
                continue;
            };
            let key = self.drbg.key();
            let Some((node, p)) = self.relays.begin_move(assoc, key) else {
                continue;
            };
            let message = Message::RelayAllocate {
                allocation: p.allocation,
                assoc,
                key: p.key,
                nodes: [id0, id1],
            };
            if let Some(&conn) = self.online.get(&node) {
                self.send(now, conn, &message);
            }
        }
    }

    /// When the next replaced allocation is released.
    pub(super) fn next_relay_retire(&self) -> Option<Instant> {
        self.relays.next_retire()
    }

    /// Releases the replaced allocations whose handover is over, and tells
    /// the ends (and a relaying node) to drop them.
    pub(super) fn retire_relays(&mut self, now: Instant) {
        for (assoc, p) in self.relays.retire_due(now) {
            tracing::info!(%assoc, allocation = p.allocation, site = ?p.site, "replaced relay allocation released");
            let mut told = p.legs.to_vec();
            if let Site::Node(node) = &p.site {
                told.push(node.clone());
            }
            for node in &told {
                self.tell(now, node, assoc, p.allocation);
            }
        }
    }

    /// Sends `RelayRelease` to `node`, if it is online.
    fn tell(&mut self, now: Instant, node: &str, assoc: AssocId, allocation: u64) {
        if let Some(&conn) = self.online.get(node) {
            self.send(now, conn, &Message::RelayRelease { assoc, allocation });
        }
    }

    /// `assoc`'s allocation is gone or must go: the ends (and the relaying
    /// node) drop it; when `replace`, it is placed again, never on
    /// `exclude`.
    fn move_relay(&mut self, now: Instant, assoc: AssocId, replace: bool, exclude: Option<&str>) {
        let Some(p) = self.relays.remove(assoc) else {
            return;
        };
        tracing::info!(%assoc, allocation = p.allocation, site = ?p.site, replace, "relay allocation moves");
        let mut told = p.legs.to_vec();
        if let Site::Node(node) = &p.site {
            told.push(node.clone());
        }
        for node in &told {
            self.tell(now, node, assoc, p.allocation);
        }
        if !replace {
            return;
        }
        if let Some(ends) = self.assocs.ends_of(assoc).cloned() {
            self.place_relay(now, assoc, &ends, exclude);
            self.announce_relay(now, assoc, None);
        }
    }

    /// What a welcomed node says about the relay it hosts.
    pub(super) fn on_relay_message(&mut self, now: Instant, node: &str, message: Message) {
        match message {
            Message::RelayHostOffer {
                ip,
                max_allocations,
                quota_per_node,
            } => {
                if ip.is_unspecified() || ip.is_multicast() {
                    tracing::warn!(%node, %ip, "relay offer at an address nodes cannot send to ignored");
                    return;
                }
                // Sent after every welcome: whatever the node held before
                // is gone (a node drops its allocations with its session).
                self.relays.drop_offers_except(|n| n != node);
                for assoc in self.relays.moving_to(node) {
                    self.relays.cancel_move(assoc);
                }
                for assoc in self.relays.placed_on(node) {
                    self.move_relay(now, assoc, true, Some(node));
                }
                tracing::info!(%node, %ip, max_allocations, quota_per_node, "node offers relaying");
                self.relays.offer(
                    node,
                    HostOffer {
                        ip,
                        max_allocations,
                        quota_per_node,
                    },
                );
                self.place_unplaced(now);
                self.move_to_nodes(now);
            }
            Message::RelayOpened { allocation, relay } => {
                let site = Site::Node(node.to_owned());
                let offered = self
                    .relays
                    .offers()
                    .any(|(n, o)| n == node && o.ip == relay.ip());
                if offered && self.relays.opened(now, &site, allocation, relay) {
                    if let Some(assoc) = self.relays.assoc_of(allocation) {
                        self.announce_relay(now, assoc, None);
                    }
                    return;
                }
                // Not one we asked this node for (any more), or at another
                // address than it offered: it goes.
                tracing::debug!(%node, allocation, %relay, "unexpected relay allocation released");
                let assoc = self.relays.assoc_of(allocation);
                self.tell(now, node, assoc.unwrap_or(AssocId(0)), allocation);
                if let Some(assoc) = assoc.filter(|&a| self.relays.is_moving(a, allocation)) {
                    self.relays.cancel_move(assoc);
                    return;
                }
                if let Some(assoc) = assoc.filter(|&a| self.placed_at(a, &site, allocation)) {
                    self.move_relay(now, assoc, true, Some(node));
                }
            }
            Message::RelayRelease { assoc, allocation } => {
                let site = Site::Node(node.to_owned());
                if self.relays.is_moving(assoc, allocation) {
                    // Refused or failed: the association stays where it is.
                    self.relays.cancel_move(assoc);
                    return;
                }
                if !self.placed_at(assoc, &site, allocation) {
                    return;
                }
                // Refused or failed before it opened: another relay may
                // take it. Expired once open: both legs fell silent, so it
                // is placed again only at the association's next push.
                let opened = self
                    .relays
                    .placement(assoc)
                    .is_some_and(|p| p.addr.is_some());
                self.move_relay(now, assoc, !opened, Some(node));
            }
            _ => {}
        }
    }

    fn placed_at(&self, assoc: AssocId, site: &Site, allocation: u64) -> bool {
        self.relays
            .placement(assoc)
            .is_some_and(|p| &p.site == site && p.allocation == allocation)
    }

    /// Places every live association that has no allocation (a relaying
    /// node appeared, and nothing else could take them).
    fn place_unplaced(&mut self, now: Instant) {
        let unplaced: Vec<(Ends, AssocId)> = self
            .assocs
            .live
            .iter()
            .filter(|(_, live)| self.relays.placement(live.id).is_none())
            .filter(|(ends, _)| {
                self.online.contains_key(&ends.0.node) || self.online.contains_key(&ends.1.node)
            })
            .map(|(ends, live)| (ends.clone(), live.id))
            .collect();
        for (ends, assoc) in unplaced {
            self.place_relay(now, assoc, &ends, None);
            self.announce_relay(now, assoc, None);
        }
    }

    /// Relaying nodes that went offline (closed, revoked, lapsed): their
    /// associations move to another relay at once.
    pub(super) fn sweep_relay_nodes(&mut self, now: Instant) {
        let online = &self.online;
        let gone = self.relays.drop_offers_except(|n| online.contains_key(n));
        for node in gone {
            tracing::info!(%node, "relaying node gone; its allocations move");
            for assoc in self.relays.moving_to(&node) {
                self.relays.cancel_move(assoc);
            }
            for assoc in self.relays.placed_on(&node) {
                self.move_relay(now, assoc, true, Some(&node));
            }
        }
    }

    /// Moves the hosted relay's outputs and acts on what it reports.
    pub(super) fn drain_relay(&mut self, now: Instant) {
        let Some(host) = self.relays.own.as_mut() else {
            return;
        };
        for note in host.drain(&mut self.outputs, CoordinatorEvent::Relay) {
            match note {
                HostNote::Opened {
                    allocation,
                    assoc,
                    addr,
                } => {
                    if self
                        .relays
                        .opened(now, &Site::Coordinator, allocation, addr)
                    {
                        self.announce_relay(now, assoc, None);
                    }
                }
                HostNote::Closed { allocation, assoc } => {
                    // Failed or expired: forgotten, so the association's
                    // next push allocates afresh.
                    if self.placed_at(assoc, &Site::Coordinator, allocation) {
                        self.move_relay(now, assoc, false, None);
                    }
                }
            }
        }
    }
}
