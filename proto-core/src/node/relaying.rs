//! A node that relays for others (DESIGN §7, node relay): the same
//! [`Relay`] machine the coordinator hosts, through the same
//! [`RelayHost`], on the node's own UDP ports. The node offers relaying
//! after every welcome (`RelayHostOffer`); the coordinator asks it for
//! allocations (`RelayAllocate`) and releases them (`RelayRelease`); the
//! node reports each port open (`RelayOpened`), and an allocation that
//! failed or expired (`RelayRelease`). Allocations live no longer than
//! the control session: when it ends, or the node is revoked, every one
//! is released at once, and the coordinator moves the associations.

use std::net::IpAddr;
use std::time::Instant;

use super::{Node, NodeEvent, SessionState};
use crate::control::msg::Message;
use crate::id::{AssocId, NodeId};
use crate::machine::Input;
use crate::relay::{HostNote, Relay, RelayHost, RelayHosting};
use crate::wire::KEY_LEN;

impl Node {
    /// Relays for other nodes (DESIGN §7): offered to the coordinator
    /// after every welcome. Call before the first
    /// [`poll_output`](crate::machine::StateMachine::poll_output).
    pub fn host_relay(&mut self, hosting: RelayHosting) {
        self.relay = Some(RelayHost::new(hosting));
    }

    /// The relay it hosts, if any, for status.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref().map(RelayHost::relay)
    }

    /// When the coordinator refused the relay offered at the last welcome:
    /// the address offered and the one the node's session comes from.
    pub fn relay_refused(&self) -> Option<(IpAddr, IpAddr)> {
        let offered = self.relay.as_ref()?.hosting().advertise_ip;
        self.relay_refused.map(|seen| (offered, seen))
    }

    /// The coordinator refused the relay offered: no allocation will come
    /// until the node offers an address other nodes can reach.
    pub(super) fn relay_refused_at(&mut self, seen: IpAddr) {
        let Some(host) = self.relay.as_ref() else {
            return;
        };
        tracing::warn!(
            offered = %host.hosting().advertise_ip, %seen,
            "the coordinator refused this node's relay: the address offered is a local one and \
             the node is seen from another (behind a NAT); set [relay] advertise_ip to the \
             public address, with the relay ports forwarded"
        );
        self.relay_refused = Some(seen);
    }

    /// Whether `input` is for one of the hosted relay's sockets.
    pub(super) fn hosts(&self, input: &Input<'_>) -> bool {
        let socket = match input {
            Input::Datagram(d) => d.socket,
            Input::SocketBound { socket, .. } | Input::SocketFailed { socket, .. } => *socket,
            _ => return false,
        };
        self.relay.as_ref().is_some_and(|h| h.owns(socket))
    }

    /// Allocations live no longer than the session that asked for them:
    /// once it is not live (lost, shut down, revoked) every one goes, and
    /// the coordinator moves the associations elsewhere.
    pub(super) fn relay_follows_session(&mut self, now: Instant) {
        if self.session.state() == SessionState::Live {
            return;
        }
        if let Some(host) = self.relay.as_mut() {
            host.release_all();
        }
        self.drain_relay(now);
    }

    /// The session went live: offer relaying.
    pub(super) fn session_changed(&mut self, now: Instant, state: SessionState) {
        let Some(host) = self.relay.as_mut() else {
            return;
        };
        if state != SessionState::Live {
            return;
        }
        self.relay_refused = None;
        let hosting = host.hosting();
        let offer = Message::RelayHostOffer {
            ip: hosting.advertise_ip,
            max_allocations: u32::try_from(hosting.relay.max_allocations).unwrap_or(u32::MAX),
            quota_per_node: u32::try_from(hosting.relay.quota_per_node).unwrap_or(u32::MAX),
        };
        self.session.send_live(now, &mut self.transport, &offer);
    }

    /// The coordinator asks for an allocation; refused at once when the
    /// relay cannot take it.
    pub(super) fn host_allocate(
        &mut self,
        now: Instant,
        allocation: u64,
        assoc: AssocId,
        key: [u8; KEY_LEN],
        nodes: [NodeId; 2],
    ) {
        let refused = match self.relay.as_mut() {
            None => true,
            Some(host) => match host.allocate(now, allocation, assoc, key, nodes) {
                Ok(()) => false,
                Err(err) => {
                    tracing::warn!(%assoc, allocation, %err, "relay allocation refused");
                    true
                }
            },
        };
        if refused {
            let release = Message::RelayRelease { assoc, allocation };
            self.session.send_live(now, &mut self.transport, &release);
        }
        self.drain_relay(now);
    }

    /// The coordinator released an allocation: the hosted one, or this
    /// node's leg of it.
    pub(super) fn relay_released(&mut self, assoc: AssocId, allocation: u64) {
        if let Some(host) = self.relay.as_mut() {
            if host.assoc_of(allocation) == Some(assoc) {
                host.release(allocation);
            }
        }
        if self.installed.contains_key(&assoc) {
            self.plane.drop_relay(assoc, allocation);
        }
    }

    /// Moves the hosted relay's outputs and tells the coordinator what it
    /// must know.
    pub(super) fn drain_relay(&mut self, now: Instant) {
        let Some(host) = self.relay.as_mut() else {
            return;
        };
        for note in host.drain(&mut self.outputs, NodeEvent::Relay) {
            let message = match note {
                HostNote::Opened {
                    allocation, addr, ..
                } => Message::RelayOpened {
                    allocation,
                    relay: addr,
                },
                HostNote::Closed { allocation, assoc } => {
                    Message::RelayRelease { assoc, allocation }
                }
            };
            self.session.send_live(now, &mut self.transport, &message);
        }
    }
}
