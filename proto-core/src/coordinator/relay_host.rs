//! The coordinator as a relay host (DESIGN §7): one [`Relay`] allocation
//! per live association (every association's policy is `allow` for now),
//! made when the association is first pushed to an end and released when
//! it is withdrawn. Each end is told its leg with [`Message::RelayAllocation`]
//! once the allocation's port is open; the nodes bind their legs from
//! their mesh sockets and probe the relay path like any other, and their
//! schedulers prefer a direct path whenever one is usable.
//!
//! An allocation per association, whether or not a direct path exists, is
//! what makes failover to the relay as fast as failover between direct
//! paths: the relay path is validated and waiting. It costs one UDP port
//! per association and the probes that keep it validated.
//!
//! [`Message::RelayAllocation`]: crate::control::msg::Message::RelayAllocation

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::CoordinatorEvent;
use crate::csprng::Drbg;
use crate::id::{AssocId, NodeId, SocketId};
use crate::machine::{Input, Output, StateMachine};
use crate::relay::{AllocationSpec, Relay, RelayConfig, RelayEvent};
use crate::wire::KEY_LEN;

/// How the coordinator relays.
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

/// One association's allocation.
#[derive(Debug, Clone)]
pub(crate) struct Hosted {
    pub(crate) allocation: u64,
    pub(crate) key: [u8; KEY_LEN],
    /// The node names of leg 0 and leg 1.
    pub(crate) legs: [String; 2],
    /// Where nodes reach it, once its port is open.
    pub(crate) addr: Option<SocketAddr>,
}

/// What the host tells the coordinator to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostAction {
    /// Tell these ends their leg of this association's allocation.
    Announce(AssocId),
}

/// The relay and which association each allocation carries.
#[derive(Debug)]
pub(crate) struct RelayHost {
    relay: Relay,
    config: RelayHosting,
    by_assoc: BTreeMap<AssocId, Hosted>,
    by_allocation: BTreeMap<u64, AssocId>,
    next_allocation: u64,
    next_port: u16,
}

impl RelayHost {
    pub(crate) fn new(config: RelayHosting) -> Self {
        Self {
            relay: Relay::new(config.relay.clone()),
            next_port: config.ports.map_or(0, |(lo, _)| lo),
            config,
            by_assoc: BTreeMap::new(),
            by_allocation: BTreeMap::new(),
            next_allocation: 1,
        }
    }

    /// The relay, for status.
    pub(crate) fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The allocation of `assoc`, if any.
    pub(crate) fn hosted(&self, assoc: AssocId) -> Option<&Hosted> {
        self.by_assoc.get(&assoc)
    }

    /// Makes sure `assoc` has an allocation between the nodes `legs`
    /// (names and ids); true when one exists now.
    pub(crate) fn ensure(
        &mut self,
        now: Instant,
        assoc: AssocId,
        legs: [(&str, NodeId); 2],
        drbg: &mut Drbg,
    ) -> bool {
        if self.by_assoc.contains_key(&assoc) {
            return true;
        }
        let allocation = self.next_allocation;
        let key = drbg.key();
        let spec = AllocationSpec {
            allocation,
            assoc,
            key,
            nodes: [legs[0].1, legs[1].1],
            local: SocketAddr::new(self.config.bind_ip, self.take_port()),
        };
        if let Err(err) = self.relay.allocate(now, spec) {
            tracing::warn!(%assoc, %err, "no relay allocation for the association");
            return false;
        }
        self.next_allocation += 1;
        self.by_allocation.insert(allocation, assoc);
        self.by_assoc.insert(
            assoc,
            Hosted {
                allocation,
                key,
                legs: [legs[0].0.to_owned(), legs[1].0.to_owned()],
                addr: None,
            },
        );
        true
    }

    /// Releases `assoc`'s allocation (withdrawn): its port closes at once.
    pub(crate) fn release(&mut self, assoc: AssocId) {
        if let Some(hosted) = self.by_assoc.remove(&assoc) {
            self.by_allocation.remove(&hosted.allocation);
            let _ = self.relay.release(hosted.allocation);
        }
    }

    /// The next port of the range, in turn.
    fn take_port(&mut self) -> u16 {
        let Some((lo, hi)) = self.config.ports else {
            return 0;
        };
        let port = self.next_port;
        self.next_port = if port >= hi { lo } else { port + 1 };
        port
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

    /// Moves the relay's outputs to `out` (its events as
    /// [`CoordinatorEvent::Relay`]), and returns what the coordinator must
    /// tell nodes.
    pub(crate) fn drain(
        &mut self,
        out: &mut VecDeque<Output<CoordinatorEvent>>,
    ) -> Vec<HostAction> {
        let mut actions = Vec::new();
        while let Some(output) = self.relay.poll_output() {
            if let Output::Event(event) = &output {
                if let Some(action) = self.on_event(event.clone()) {
                    actions.push(action);
                }
            }
            out.push_back(output.map_event(CoordinatorEvent::Relay));
        }
        actions
    }

    fn on_event(&mut self, event: RelayEvent) -> Option<HostAction> {
        match event {
            RelayEvent::Allocated { allocation, local } => {
                let assoc = *self.by_allocation.get(&allocation)?;
                let hosted = self.by_assoc.get_mut(&assoc)?;
                hosted.addr = Some(SocketAddr::new(self.config.advertise_ip, local.port()));
                tracing::debug!(%assoc, allocation, %local, "relay allocation open");
                Some(HostAction::Announce(assoc))
            }
            RelayEvent::AllocationFailed { allocation, reason } => {
                let assoc = self.by_allocation.remove(&allocation)?;
                self.by_assoc.remove(&assoc);
                tracing::warn!(%assoc, allocation, ?reason, "a relay port could not be opened");
                None
            }
            RelayEvent::Released {
                allocation, reason, ..
            } => {
                // Expired (both legs silent): forget it, so the next push
                // of the association allocates afresh.
                if let Some(assoc) = self.by_allocation.remove(&allocation) {
                    self.by_assoc.remove(&assoc);
                    tracing::debug!(%assoc, allocation, ?reason, "relay allocation released");
                }
                None
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
