//! The relay (DESIGN §7): one UDP port per relay path, two legs pinned by
//! authenticated binds, raw datagrams forwarded between them byte-for-byte.
//! Coordinator relays and node relays host this same machine.
//!
//! For each allocation the host (a coordinator or a relaying node) calls
//! [`Relay::allocate`] with the allocation id, the key the coordinator
//! pushes to both endpoints, and the two nodes; the relay asks its driver for
//! a socket ([`Output::BindSocket`]) and reports the bound address with
//! [`RelayEvent::Allocated`]. Each endpoint then binds its leg from its mesh
//! socket in two steps: an authentic [`ControlBody::RelayBind`] without a
//! cookie is answered with a [`ControlBody::RelayBindAck`] carrying the
//! cookie of the address it came from (keyed by the relay's own secret);
//! the bind that carries that cookie back pins the leg to that exact
//! address (and later ones refresh it, one round trip each). Every answer
//! is exactly as large as the bind (no amplification), and each bind is
//! answered at most once (replays are refused per leg). The cookie is what
//! makes a captured bind useless elsewhere: replayed from another address,
//! even ahead of the original, it is answered with that address's cookie,
//! which only a key holder could send back; and a key holder cannot aim a
//! leg at an address it does not receive at. Once both legs are pinned,
//! every other datagram from one leg goes to the other unchanged, with no
//! header. Datagrams from any other address are dropped and counted, and
//! create no state.
//!
//! Bounds: allocations in total and per node, a token bucket per path and
//! direction, idle expiry, a small replay cache per leg. A relay never
//! forwards what comes from one of its own allocation ports, so a datagram
//! crosses at most one relay hop here.

mod allocation;
mod bucket;
mod config;
mod event;
mod host;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use allocation::{AllocationCounters, DropReason, RelayLeg, Traffic, BIND_REPLAY_CAPACITY};
pub use bucket::RateLimit;
pub use config::{AllocationSpec, RelayConfig};
pub use event::{RelayError, RelayEvent, ReleaseReason};
pub use host::RelayHosting;
pub(crate) use host::{HostNote, RelayHost};

use crate::id::{AssocId, NodeId, SocketId};
use crate::machine::{Datagram, Input, Output, StateMachine, Transmit};
use crate::rng::Rng;
use crate::time::duration_us;
use crate::timer::TimerTable;
use crate::wire::control::{HEADER_LEN, MIN_LEN};
use crate::wire::{
    classify, AddrRepr, AuthKey, Classified, ControlBody, ControlRepr, ADDR_LEN, KEY_LEN, MAGIC,
};
use allocation::{Allocation, BindVerdict};

/// Size of a relay bind and of its acknowledgement, tag included: the only
/// datagram size the relay ever inspects for authenticity.
pub const BIND_LEN: usize = MIN_LEN + 17 + ADDR_LEN;

/// Refused binds are reported at most this often per allocation (they are
/// always counted).
const REFUSAL_EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Size of each block forwarded payloads are copied into.
const ARENA_BLOCK: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Time to check whether an allocation went idle.
    Idle(SocketId),
}

/// Counters that belong to no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Datagrams on a socket that is no longer an allocation's (released,
    /// its close not yet done by the driver).
    pub unknown_socket: u64,
    /// Allocations refused for a quota or the table's bound.
    pub refused_allocations: u64,
}

/// The relay machine. See the module docs.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    /// Allocations by their socket: the lookup every datagram makes.
    allocs: BTreeMap<SocketId, Allocation>,
    by_id: BTreeMap<u64, SocketId>,
    by_node: BTreeMap<NodeId, BTreeSet<u64>>,
    /// The bound address of every allocation port, and its socket.
    own: BTreeMap<SocketAddr, SocketId>,
    /// The port of every allocation socket, with how many sockets have it.
    own_ports: BTreeMap<u16, usize>,
    next_socket: u32,
    timers: TimerTable<Timer>,
    outputs: VecDeque<Output<RelayEvent>>,
    counters: RelayCounters,
    arena: BytesMut,
    /// The relay's secret for bind cookies, from the seed.
    cookie_key: AuthKey,
}

/// A read-only view of one allocation, for status and metrics.
#[derive(Debug, Clone, Copy)]
pub struct AllocationView<'a> {
    inner: &'a Allocation,
}

impl<'a> AllocationView<'a> {
    /// Its id.
    pub fn id(&self) -> u64 {
        self.inner.spec.allocation
    }

    /// The association it carries.
    pub fn assoc(&self) -> AssocId {
        self.inner.spec.assoc
    }

    /// The nodes of leg 0 and leg 1.
    pub fn nodes(&self) -> [NodeId; 2] {
        self.inner.spec.nodes
    }

    /// The relay's socket for it.
    pub fn socket(&self) -> SocketId {
        self.inner.socket
    }

    /// Where its port is bound, once it is.
    pub fn local(&self) -> Option<SocketAddr> {
        self.inner.local
    }

    /// Its two legs.
    pub fn legs(&self) -> &'a [RelayLeg; 2] {
        &self.inner.legs
    }

    /// True when both legs are pinned.
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// Its counters.
    pub fn counters(&self) -> AllocationCounters {
        self.inner.counters
    }

    /// Its last accepted bind or forwarded datagram (or its creation).
    pub fn last_activity(&self) -> Instant {
        self.inner.last_activity
    }
}

impl Relay {
    /// A relay with no allocation.
    pub fn new(config: RelayConfig) -> Self {
        let mut secret = [0u8; KEY_LEN];
        Rng::new(config.seed).fill(&mut secret);
        Self {
            cookie_key: AuthKey::new(&secret),
            next_socket: config.socket_base,
            config,
            allocs: BTreeMap::new(),
            by_id: BTreeMap::new(),
            by_node: BTreeMap::new(),
            own: BTreeMap::new(),
            own_ports: BTreeMap::new(),
            timers: TimerTable::default(),
            outputs: VecDeque::new(),
            counters: RelayCounters::default(),
            arena: BytesMut::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Creates an allocation and asks for its port; nothing is forwarded
    /// until both legs bind. The idle timer starts now.
    ///
    /// # Errors
    /// When the id exists, either node holds its quota, or the relay is
    /// full; nothing changes then.
    pub fn allocate(&mut self, now: Instant, spec: AllocationSpec) -> Result<(), RelayError> {
        if self.by_id.contains_key(&spec.allocation) {
            return Err(RelayError::Exists(spec.allocation));
        }
        if self.allocs.len() >= self.config.max_allocations {
            self.counters.refused_allocations += 1;
            return Err(RelayError::Full(self.config.max_allocations));
        }
        for node in spec.nodes {
            let held = self.by_node.get(&node).map_or(0, BTreeSet::len);
            if held >= self.config.quota_per_node {
                self.counters.refused_allocations += 1;
                return Err(RelayError::QuotaExceeded {
                    node,
                    quota: self.config.quota_per_node,
                });
            }
        }
        let socket = self.next_socket_id();
        let id = spec.allocation;
        for node in spec.nodes {
            self.by_node.entry(node).or_default().insert(id);
        }
        self.outputs.push_back(Output::BindSocket {
            socket,
            local: spec.local,
        });
        tracing::debug!(allocation = id, assoc = %spec.assoc, nodes = ?spec.nodes, "relay allocation created");
        let window_us = duration_us(self.config.replay_window);
        let alloc = Allocation::new(now, spec, socket, window_us, self.config.rate_limit);
        self.allocs.insert(socket, alloc);
        self.by_id.insert(id, socket);
        self.timers
            .set(Timer::Idle(socket), now + self.config.idle_timeout);
        Ok(())
    }

    /// Releases an allocation: its port closes and nothing more crosses it.
    ///
    /// # Errors
    /// When it does not exist.
    pub fn release(&mut self, allocation: u64) -> Result<(), RelayError> {
        let socket = *self
            .by_id
            .get(&allocation)
            .ok_or(RelayError::Unknown(allocation))?;
        self.remove(socket, ReleaseReason::Released);
        Ok(())
    }

    /// Releases every allocation of a withdrawn association at once;
    /// returns how many there were.
    pub fn release_assoc(&mut self, assoc: AssocId) -> usize {
        let sockets: Vec<SocketId> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.spec.assoc == assoc)
            .map(|(&s, _)| s)
            .collect();
        for &socket in &sockets {
            self.remove(socket, ReleaseReason::Withdrawn);
        }
        sockets.len()
    }

    /// Releases every allocation a node takes part in (it was revoked), at
    /// once; returns how many there were.
    pub fn release_node(&mut self, node: NodeId) -> usize {
        let ids: Vec<u64> = self
            .by_node
            .get(&node)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        for id in &ids {
            if let Some(&socket) = self.by_id.get(id) {
                self.remove(socket, ReleaseReason::NodeRevoked(node));
            }
        }
        ids.len()
    }

    /// Every allocation, in socket order.
    pub fn allocations(&self) -> impl Iterator<Item = AllocationView<'_>> + '_ {
        self.allocs.values().map(|inner| AllocationView { inner })
    }

    /// One allocation.
    pub fn allocation(&self, allocation: u64) -> Option<AllocationView<'_>> {
        let socket = self.by_id.get(&allocation)?;
        self.allocs
            .get(socket)
            .map(|inner| AllocationView { inner })
    }

    /// How many allocations a node takes part in.
    pub fn node_allocations(&self, node: NodeId) -> usize {
        self.by_node.get(&node).map_or(0, BTreeSet::len)
    }

    /// True when `socket` is one of the relay's (for a host that routes
    /// datagrams of several machines).
    pub fn owns_socket(&self, socket: SocketId) -> bool {
        self.allocs.contains_key(&socket)
    }

    /// Counters that belong to no allocation.
    pub fn counters(&self) -> RelayCounters {
        self.counters
    }

    fn next_socket_id(&mut self) -> SocketId {
        // Ids are not reused while an allocation holds them; wrapping
        // after four billion allocations skips the ones in use.
        loop {
            let id = SocketId(self.next_socket);
            self.next_socket = self
                .next_socket
                .checked_add(1)
                .unwrap_or(self.config.socket_base);
            if !self.allocs.contains_key(&id) {
                return id;
            }
        }
    }

    /// Takes an allocation out of every table and stops its timer.
    fn take(&mut self, socket: SocketId) -> Option<Allocation> {
        let alloc = self.allocs.remove(&socket)?;
        let id = alloc.spec.allocation;
        self.by_id.remove(&id);
        for node in alloc.spec.nodes {
            if let Some(ids) = self.by_node.get_mut(&node) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
        if let Some(local) = alloc.local {
            self.forget_own(local);
        }
        self.timers.stop(Timer::Idle(socket));
        Some(alloc)
    }

    fn remove(&mut self, socket: SocketId, reason: ReleaseReason) {
        let Some(alloc) = self.take(socket) else {
            return;
        };
        let id = alloc.spec.allocation;
        self.outputs.push_back(Output::CloseSocket { socket });
        tracing::debug!(allocation = id, assoc = %alloc.spec.assoc, ?reason, "relay allocation released");
        self.outputs.push_back(Output::Event(RelayEvent::Released {
            allocation: id,
            reason,
            counters: alloc.counters,
        }));
    }

    fn forget_own(&mut self, local: SocketAddr) {
        self.own.remove(&local);
        if let Some(n) = self.own_ports.get_mut(&local.port()) {
            *n -= 1;
            if *n == 0 {
                self.own_ports.remove(&local.port());
            }
        }
    }

    /// True when `src` may be one of this relay's allocation ports: a
    /// datagram from there was forwarded by us once already. Besides exact
    /// matches, any loopback address or configured own address with the
    /// port of one of our sockets counts (a wildcard bind, a NAT's
    /// hairpin), erring on the side of refusing.
    fn is_own(&self, src: SocketAddr) -> bool {
        if self.own.contains_key(&src) {
            return true;
        }
        let ip = src.ip();
        (ip.is_loopback() || ip.is_unspecified() || self.config.own_ips.contains(&ip))
            && self.own_ports.contains_key(&src.port())
    }

    fn on_bound(&mut self, socket: SocketId, local: SocketAddr) {
        let Some(old) = self.allocs.get_mut(&socket).map(|a| a.local.replace(local)) else {
            return;
        };
        if let Some(old) = old {
            self.forget_own(old);
        }
        self.own.insert(local, socket);
        *self.own_ports.entry(local.port()).or_default() += 1;
        // A leg pinned before this port was ours would now be a second hop.
        let is_own = |addr: Option<SocketAddr>| addr.is_some_and(|a| self.is_own(a));
        let stale: Vec<(SocketId, usize)> = self
            .allocs
            .iter()
            .flat_map(|(&s, a)| {
                (0..2)
                    .filter(|&l| is_own(a.legs[l].addr))
                    .map(move |l| (s, l))
            })
            .collect();
        for (s, l) in stale {
            if let Some(alloc) = self.allocs.get_mut(&s) {
                tracing::debug!(
                    allocation = alloc.spec.allocation,
                    leg = l,
                    "leg unpinned: its address is a relay port now"
                );
                alloc.legs[l].addr = None;
            }
        }
        let Some(alloc) = self.allocs.get(&socket) else {
            return;
        };
        let allocation = alloc.spec.allocation;
        tracing::debug!(allocation, %local, "relay port open");
        self.outputs
            .push_back(Output::Event(RelayEvent::Allocated { allocation, local }));
    }

    fn on_bind_failed(&mut self, socket: SocketId, reason: std::io::ErrorKind) {
        let Some(alloc) = self.take(socket) else {
            return;
        };
        let id = alloc.spec.allocation;
        tracing::warn!(allocation = id, ?reason, "relay port could not be opened");
        self.outputs
            .push_back(Output::Event(RelayEvent::AllocationFailed {
                allocation: id,
                reason,
            }));
    }

    fn on_datagram(&mut self, now: Instant, datagram: Datagram<'_>) {
        let Datagram {
            socket,
            src,
            payload,
        } = datagram;
        let Some(alloc) = self.allocs.get_mut(&socket) else {
            self.counters.unknown_socket += 1;
            return;
        };
        // Only a bind-sized datagram that starts with the magic can be a
        // bind; everything else skips the tag check.
        let maybe_bind = payload.len() == BIND_LEN && payload[..MAGIC.len()] == MAGIC;
        let leg = alloc.leg_of(src);
        if maybe_bind {
            match classify(payload, &alloc.key) {
                Classified::Control(repr)
                    if matches!(
                        repr.body,
                        ControlBody::RelayBind { .. } | ControlBody::RelayBindAck { .. }
                    ) =>
                {
                    self.on_bind(now, socket, src, repr);
                    return;
                }
                Classified::Data if leg.is_none() => {
                    alloc.counters.drop(DropReason::Unauthenticated);
                    tracing::trace!(%socket, %src, "unauthenticated bind dropped");
                    return;
                }
                // Anything else authentic (the endpoints' own probes under
                // the same key) or not is data between the legs.
                _ => {}
            }
        }
        // A leg is never pinned to one of our own ports (see
        // `Allocation::admit_bind`), so a datagram from one ends here too.
        let Some(from) = leg else {
            alloc.counters.drop(DropReason::UnknownSource);
            tracing::trace!(%socket, %src, "datagram from an unknown source dropped");
            return;
        };
        let Some(dst) = alloc.legs[1 - from].addr else {
            alloc.counters.drop(DropReason::PeerUnbound);
            return;
        };
        if !alloc.legs[from].bucket.take(now, payload.len()) {
            alloc.counters.drop(DropReason::RateLimited);
            return;
        }
        alloc.count_forwarded(from, payload.len(), now);
        self.outputs.push_back(Output::Transmit(Transmit {
            socket,
            dst,
            payload: own(&mut self.arena, payload),
        }));
    }

    /// The cookie of `src` for one leg of one allocation: only a bind that
    /// carries it pins the leg, and only `src` is told it, so a bind
    /// replayed from another address (even one that outruns the original)
    /// pins nothing. Never 0, which means "no cookie".
    fn cookie(&self, allocation: u64, leg: u8, src: SocketAddr) -> u64 {
        let mut input = [0u8; 9 + ADDR_LEN];
        input[..8].copy_from_slice(&allocation.to_be_bytes());
        input[8] = leg;
        AddrRepr(src).emit(&mut input[9..]);
        let tag = self.cookie_key.tag(&input);
        let mut cookie = [0u8; 8];
        cookie.copy_from_slice(&tag[..8]);
        u64::from_be_bytes(cookie).max(1)
    }

    fn on_bind(&mut self, now: Instant, socket: SocketId, src: SocketAddr, repr: ControlRepr) {
        let wall = self.config.wall_clock.unix_us(now);
        let own_source = self.is_own(src);
        let (id, leg_byte) = match (self.allocs.get(&socket), repr.body) {
            (Some(alloc), ControlBody::RelayBind { leg, .. }) => (alloc.spec.allocation, leg),
            (Some(alloc), _) => (alloc.spec.allocation, 0),
            (None, _) => return,
        };
        let cookie = self.cookie(id, leg_byte, src);
        let Some(alloc) = self.allocs.get_mut(&socket) else {
            return;
        };
        let (leg, pin) = match alloc.admit_bind(&repr, src, own_source, cookie) {
            Ok(BindVerdict::Pin(leg)) => (leg, true),
            Ok(BindVerdict::Challenge(leg)) => (leg, false),
            Err(reason) => {
                alloc.counters.drop(reason);
                tracing::debug!(allocation = id, %src, %reason, "relay bind refused");
                if alloc.report_refusal(now, REFUSAL_EVENT_INTERVAL) {
                    self.outputs
                        .push_back(Output::Event(RelayEvent::BindRefused {
                            allocation: id,
                            src,
                            reason,
                        }));
                }
                return;
            }
        };
        // Either way the answer is exactly as large as the bind.
        let ack = ControlRepr {
            txid: repr.txid,
            timestamp_us: wall,
            body: ControlBody::RelayBindAck {
                allocation: id,
                leg,
                cookie,
                observed: AddrRepr(src),
            },
        };
        debug_assert_eq!(ack.buffer_len(), BIND_LEN);
        self.outputs.push_back(Output::Transmit(Transmit {
            socket,
            dst: src,
            payload: ack.to_bytes(&alloc.key),
        }));
        if !pin {
            alloc.counters.challenges += 1;
            tracing::trace!(allocation = id, leg, %src, "relay bind answered with a cookie");
            return;
        }
        let leg_state = &mut alloc.legs[usize::from(leg)];
        let before = leg_state.addr.replace(src);
        leg_state.last_bind = Some(now);
        alloc.last_activity = now;
        alloc.counters.binds += 1;
        if before != Some(src) {
            let ready = alloc.is_ready();
            tracing::debug!(allocation = id, leg, addr = %src, moved_from = ?before, ready, "relay leg bound");
            self.outputs.push_back(Output::Event(RelayEvent::LegBound {
                allocation: id,
                leg,
                addr: src,
                moved_from: before,
                ready,
            }));
        }
    }

    fn on_idle_check(&mut self, now: Instant, socket: SocketId) {
        let idle = self.config.idle_timeout;
        let Some(alloc) = self.allocs.get(&socket) else {
            return;
        };
        let due = alloc.last_activity + idle;
        if due <= now {
            self.remove(socket, ReleaseReason::Expired);
        } else {
            // Activity since the timer was set: look again when it could
            // have gone idle at the earliest.
            self.timers.set(Timer::Idle(socket), due);
        }
    }
}

impl StateMachine for Relay {
    type Event = RelayEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Datagram(datagram) => self.on_datagram(now, datagram),
            Input::SocketBound { socket, local } => self.on_bound(socket, local),
            Input::SocketFailed { socket, reason } => self.on_bind_failed(socket, reason),
            // A relay owns no byte streams.
            Input::StreamAccepted { .. }
            | Input::StreamOpened { .. }
            | Input::StreamData { .. }
            | Input::StreamClosed { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Idle(socket) => self.on_idle_check(now, socket),
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<RelayEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }
}

/// An owned copy of `payload` for an output, carved from a shared block:
/// forwarding costs a copy but no allocation per datagram.
fn own(arena: &mut BytesMut, payload: &[u8]) -> Bytes {
    if arena.capacity() < payload.len() {
        *arena = BytesMut::with_capacity(ARENA_BLOCK.max(payload.len()));
    }
    arena.extend_from_slice(payload);
    arena.split().freeze()
}

const _: () = assert!(BIND_LEN == HEADER_LEN + 17 + ADDR_LEN + crate::wire::TAG_LEN);

#[cfg(test)]
mod tests;
