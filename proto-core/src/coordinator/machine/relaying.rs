//! The coordinator's side of relaying (DESIGN §7): its own relay, the
//! nodes that offer relaying, and placing each association's allocation
//! on one of them (the policy is in [`relay_place`](super::super::relay_place)).

use std::net::{IpAddr, SocketAddr};
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

    /// Relay offers refused because the node's relay would sit behind a
    /// NAT: the node, the address it offered and the address its session
    /// came from.
    pub fn relay_offers_refused(&self) -> Vec<(String, IpAddr, IpAddr)> {
        self.relays
            .refused()
            .map(|(n, &(offered, seen))| (n.to_owned(), offered, seen))
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
        let (allocation, key) = (p.allocation, p.key);
        self.ask_to_allocate(now, &node, assoc, allocation, key, [id0, id1]);
    }

    /// Asks relaying node `node` to open `allocation` for `assoc` between
    /// `nodes`, if it is online (it reports the port open).
    fn ask_to_allocate(
        &mut self,
        now: Instant,
        node: &str,
        assoc: AssocId,
        allocation: u64,
        key: [u8; crate::wire::KEY_LEN],
        nodes: [crate::id::NodeId; 2],
    ) {
        let message = Message::RelayAllocate {
            allocation,
            assoc,
            key,
            nodes,
        };
        if let Some(&conn) = self.online.get(node) {
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
            let (allocation, key) = (p.allocation, p.key);
            self.ask_to_allocate(now, &node, assoc, allocation, key, [id0, id1]);
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

    /// What a welcomed node says about the relay it hosts; `seen` is the
    /// address its session comes from.
    pub(super) fn on_relay_message(
        &mut self,
        now: Instant,
        node: &str,
        seen: IpAddr,
        message: Message,
    ) {
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
                if !reachable_offer(ip, seen) {
                    tracing::warn!(
                        %node, offered = %ip, %seen,
                        "relay offer refused: a local address other than the one the node is \
                         seen from sits behind a NAT; set the node's relay.advertise_ip to its \
                         public address (with the ports forwarded)"
                    );
                    self.relays.refuse(node, ip, seen);
                    if let Some(&conn) = self.online.get(node) {
                        self.send(now, conn, &Message::RelayHostRefused { seen });
                    }
                    return;
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
        self.relays.forget_refused(|n| online.contains_key(n));
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

/// Whether other nodes can reach a relay offered at `offered` by a node
/// whose session comes from `seen` (DESIGN §7: a relay behind a NAT that
/// does not forward its ports would take allocations nobody can bind). A
/// global address is taken as reachable (the node's own public address,
/// or a NAT's address its operator forwards to it as `advertise_ip`); a
/// local one (private, shared carrier-grade, link-local, loopback, unique
/// local) only when the coordinator sees the node at that very address, so
/// no NAT stands between them.
pub(crate) fn reachable_offer(offered: IpAddr, seen: IpAddr) -> bool {
    let offered = offered.to_canonical();
    !is_local(offered) || offered == seen.to_canonical()
}

/// An address that is not routed on the public internet.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                // 100.64.0.0/10, shared by carrier-grade NATs (RFC 6598).
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                // fc00::/7, unique local; fe80::/10, link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reachable_offer;

    #[test]
    fn a_local_relay_address_is_taken_only_where_the_node_is_seen() {
        let ip = |s: &str| s.parse().unwrap();
        let cases = [
            // A public address: its own, or its NAT's, forwarded.
            ("203.0.113.30", "203.0.113.30", true),
            ("198.51.100.7", "203.0.113.30", true),
            ("2001:db8::7", "2001:db8::9", true),
            // A private address seen as another: behind a NAT.
            ("192.168.1.20", "203.0.113.30", false),
            ("10.0.0.5", "198.51.100.7", false),
            ("172.20.0.5", "198.51.100.7", false),
            ("100.64.3.2", "198.51.100.7", false),
            ("169.254.1.1", "198.51.100.7", false),
            ("fd00::5", "2001:db8::9", false),
            ("fe80::1", "2001:db8::9", false),
            ("127.0.0.1", "203.0.113.30", false),
            // Seen at that very address: no NAT between (a LAN, one host).
            ("10.0.0.5", "10.0.0.5", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("10.0.0.5", "::ffff:10.0.0.5", true),
            ("172.32.0.1", "198.51.100.7", true),
        ];
        for (offered, seen, want) in cases {
            assert_eq!(
                reachable_offer(ip(offered), ip(seen)),
                want,
                "{offered} seen as {seen}"
            );
        }
    }
}
