//! The coordinator's UDP edge besides QUIC: the reflector on the control
//! socket and on extra addresses (DESIGN §5), and the relay it hosts for
//! its nodes (DESIGN §7).

use std::net::SocketAddr;
use std::time::Instant;

use super::super::reflector;
use super::super::relay_host::{HostAction, RelayHost, RelayHosting};
use super::{msg, Coordinator, Ends, ExtraReflector, REFLECTOR_SOCKETS};
use crate::control::msg::Message;
use crate::id::{AssocId, SocketId};
use crate::machine::{Output, Transmit};

impl Coordinator {
    /// Opens extra reflector addresses (DESIGN §5), at most
    /// [`msg::MAX_REFLECTORS`]: each is bound as its own UDP socket and
    /// pushed to every node after `Welcome`. A node that asks the
    /// reflector at two addresses from one mesh socket learns whether its
    /// NAT maps per destination, and how it allocates ports. Call before
    /// the first [`poll_output`]; the addresses must be reachable by nodes
    /// as they are (no wildcard).
    ///
    /// [`poll_output`]: crate::machine::StateMachine::poll_output
    pub fn set_reflectors(&mut self, extra: &[SocketAddr]) {
        for (i, &local) in extra.iter().take(msg::MAX_REFLECTORS).enumerate() {
            let socket = SocketId(REFLECTOR_SOCKETS.0 + i as u32);
            self.outputs.push_back(Output::BindSocket { socket, local });
            self.reflectors.push(ExtraReflector {
                socket,
                advertised: local,
            });
        }
    }

    /// Hosts a relay for the nodes (DESIGN §7): every live association
    /// gets an allocation, announced to both ends, which keep the relay
    /// path validated beside their direct ones. Call before the first
    /// [`poll_output`].
    ///
    /// [`poll_output`]: crate::machine::StateMachine::poll_output
    pub fn host_relay(&mut self, hosting: RelayHosting) {
        self.relay = Some(RelayHost::new(hosting));
    }

    /// The hosted relay, if any, for status.
    pub fn relay(&self) -> Option<&crate::relay::Relay> {
        self.relay.as_ref().map(RelayHost::relay)
    }

    /// Makes sure `assoc` has a relay allocation and tells the end `here`
    /// its leg, once the allocation's port is open.
    pub(super) fn offer_relay(&mut self, now: Instant, assoc: AssocId, ends: &Ends, here: &str) {
        let Some(host) = self.relay.as_mut() else {
            return;
        };
        let ids = [&ends.0.node, &ends.1.node].map(|n| self.registry.node(n).map(|r| r.id));
        let [Some(id0), Some(id1)] = ids else {
            return;
        };
        let legs = [(ends.0.node.as_str(), id0), (ends.1.node.as_str(), id1)];
        if !host.ensure(now, assoc, legs, &mut self.drbg) {
            return;
        }
        self.announce_relay(now, assoc, Some(here));
    }

    /// Tells the online ends of `assoc` (or only `only`) their relay leg.
    pub(super) fn announce_relay(&mut self, now: Instant, assoc: AssocId, only: Option<&str>) {
        let Some(hosted) = self.relay.as_ref().and_then(|h| h.hosted(assoc)).cloned() else {
            return;
        };
        let Some(relay) = hosted.addr else {
            return;
        };
        for (leg, node) in hosted.legs.iter().enumerate() {
            if only.is_some_and(|o| o != node) {
                continue;
            }
            if let Some(&conn) = self.online.get(node) {
                let message = Message::RelayAllocation {
                    assoc,
                    relay,
                    allocation: hosted.allocation,
                    leg: leg as u8,
                    key: hosted.key,
                };
                self.send(now, conn, &message);
            }
        }
    }

    /// Moves the relay's outputs and acts on what it reports.
    pub(super) fn drain_relay(&mut self, now: Instant) {
        let Some(host) = self.relay.as_mut() else {
            return;
        };
        for action in host.drain(&mut self.outputs) {
            match action {
                HostAction::Announce(assoc) => self.announce_relay(now, assoc, None),
            }
        }
    }

    /// The extra reflector addresses.
    pub fn reflectors(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.reflectors.iter().map(|r| r.advertised)
    }

    pub(super) fn reflect(
        &mut self,
        now: Instant,
        socket: SocketId,
        src: SocketAddr,
        payload: &[u8],
    ) {
        let assocs = &self.assocs;
        let key_of = |id| assocs.key(id).copied();
        match reflector::answer(key_of, &self.config.wall_clock, now, src, payload) {
            Ok(payload) => {
                self.counters.reflected += 1;
                self.outputs.push_back(Output::Transmit(Transmit {
                    socket,
                    dst: src,
                    payload,
                }));
            }
            Err(refusal) => {
                *self
                    .counters
                    .reflect_refused
                    .entry(refusal.as_str())
                    .or_default() += 1;
                tracing::trace!(%src, reason = refusal.as_str(), "reflect request refused");
            }
        }
    }
}
