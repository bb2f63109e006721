//! Hosting a [`Relay`]: what a coordinator and a relaying node share
//! (DESIGN §7, "coordinator relay and node relay are the same code").
//!
//! The host opens allocations the coordinator decided on (ids and keys are
//! the coordinator's), picks each one's port from the configured range,
//! routes datagrams of its sockets to the relay, and turns the relay's
//! events into the two facts its owner acts on: an allocation's port is
//! open (tell the ends, or the coordinator), or an allocation ended by
//! itself (its port failed, or it expired).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{AllocationSpec, Relay, RelayConfig, RelayError, RelayEvent};
use crate::id::{AssocId, NodeId, SocketId};
use crate::machine::{Input, Output, StateMachine};
use crate::wire::KEY_LEN;

/// How a coordinator or a node relays.
#[derive(Debug, Clone)]
pub struct RelayHosting {
    /// The relay's behaviour (quotas, rate limit, idle expiry).
    pub relay: RelayConfig,
    /// The address allocation ports bind to.
    pub bind_ip: IpAddr,
    /// The address nodes send to (the bind address, or the public one in
    /// front of it).
    pub advertise_ip: IpAddr,
    /// Ports to allocate from, in turn (inclusive); `None`: any port.
    pub ports: Option<(u16, u16)>,
}

/// What the host's owner must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostNote {
    /// The allocation's port is open; the ends send to `addr`.
    Opened {
        allocation: u64,
        assoc: AssocId,
        addr: SocketAddr,
    },
    /// The allocation ended without being asked to (its port could not be
    /// opened, or it expired).
    Closed { allocation: u64, assoc: AssocId },
}

/// A relay and the allocations its owner asked for.
#[derive(Debug)]
pub(crate) struct RelayHost {
    relay: Relay,
    config: RelayHosting,
    /// The association of every allocation the owner has not released.
    assocs: BTreeMap<u64, AssocId>,
    next_port: u16,
}

impl RelayHost {
    pub(crate) fn new(config: RelayHosting) -> Self {
        Self {
            relay: Relay::new(config.relay.clone()),
            next_port: config.ports.map_or(0, |(lo, _)| lo),
            config,
            assocs: BTreeMap::new(),
        }
    }

    /// The relay, for status.
    pub(crate) fn relay(&self) -> &Relay {
        &self.relay
    }

    /// How it is configured.
    pub(crate) fn hosting(&self) -> &RelayHosting {
        &self.config
    }

    /// Opens an allocation on the next port of the range; its port's
    /// opening comes out of [`drain`](Self::drain).
    pub(crate) fn allocate(
        &mut self,
        now: Instant,
        allocation: u64,
        assoc: AssocId,
        key: [u8; KEY_LEN],
        nodes: [NodeId; 2],
    ) -> Result<(), RelayError> {
        let spec = AllocationSpec {
            allocation,
            assoc,
            key,
            nodes,
            local: SocketAddr::new(self.config.bind_ip, self.peek_port()),
        };
        self.relay.allocate(now, spec)?;
        self.take_port();
        self.assocs.insert(allocation, assoc);
        Ok(())
    }

    /// Releases an allocation at the owner's word: its port closes at once
    /// and no note follows.
    pub(crate) fn release(&mut self, allocation: u64) {
        self.assocs.remove(&allocation);
        let _ = self.relay.release(allocation);
    }

    /// Releases every allocation.
    pub(crate) fn release_all(&mut self) {
        let ids: Vec<u64> = std::mem::take(&mut self.assocs).into_keys().collect();
        for id in ids {
            let _ = self.relay.release(id);
        }
    }

    /// The association of an allocation the owner holds.
    pub(crate) fn assoc_of(&self, allocation: u64) -> Option<AssocId> {
        self.assocs.get(&allocation).copied()
    }

    fn peek_port(&self) -> u16 {
        self.next_port
    }

    /// Moves on to the next port of the range, in turn.
    fn take_port(&mut self) {
        if let Some((lo, hi)) = self.config.ports {
            let port = self.next_port;
            self.next_port = if port >= hi { lo } else { port + 1 };
        }
    }

    pub(crate) fn owns(&self, socket: SocketId) -> bool {
        self.relay.owns_socket(socket)
    }

    pub(crate) fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.relay.handle_input(now, input);
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.relay.poll_timeout().is_some_and(|at| at <= now) {
            self.relay.handle_timeout(now);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.relay.poll_timeout()
    }

    /// Moves the relay's outputs to `out` (its events wrapped by `wrap`),
    /// and returns what the owner must act on.
    pub(crate) fn drain<E>(
        &mut self,
        out: &mut VecDeque<Output<E>>,
        wrap: fn(RelayEvent) -> E,
    ) -> Vec<HostNote> {
        let mut notes = Vec::new();
        while let Some(output) = self.relay.poll_output() {
            if let Output::Event(event) = &output {
                notes.extend(self.on_event(event));
            }
            out.push_back(output.map_event(wrap));
        }
        notes
    }

    fn on_event(&mut self, event: &RelayEvent) -> Option<HostNote> {
        match *event {
            RelayEvent::Allocated { allocation, local } => {
                let assoc = *self.assocs.get(&allocation)?;
                let addr = SocketAddr::new(self.config.advertise_ip, local.port());
                tracing::debug!(%assoc, allocation, %local, %addr, "relay allocation open");
                Some(HostNote::Opened {
                    allocation,
                    assoc,
                    addr,
                })
            }
            RelayEvent::AllocationFailed { allocation, reason } => {
                let assoc = self.assocs.remove(&allocation)?;
                tracing::warn!(%assoc, allocation, ?reason, "a relay port could not be opened");
                Some(HostNote::Closed { allocation, assoc })
            }
            RelayEvent::Released {
                allocation, reason, ..
            } => {
                // Released at the owner's word is no longer in the table;
                // what is still there expired.
                let assoc = self.assocs.remove(&allocation)?;
                tracing::debug!(%assoc, allocation, ?reason, "relay allocation ended");
                Some(HostNote::Closed { allocation, assoc })
            }
            RelayEvent::LegBound {
                allocation,
                leg,
                addr,
                ready,
                ..
            } => {
                tracing::debug!(allocation, leg, %addr, ready, "relay leg bound");
                None
            }
            RelayEvent::BindRefused {
                allocation,
                src,
                reason,
            } => {
                tracing::debug!(allocation, %src, ?reason, "relay bind refused");
                None
            }
        }
    }
}
