//! The relay under arbitrary datagrams: three allocation slots (one with
//! both legs bound, one with one leg, one with none at the start), fed
//! whatever the input says on their ports (or a released or unknown one),
//! from the legs, their rebound addresses, strangers and the relay's own
//! ports, with raw bytes, the control magic, authentic binds under the
//! right key, a shared key or a foreign one, acknowledgements, the
//! endpoints' own probes, replays and datagrams up to 65,535 bytes; with
//! time passing, releases, revocations and new allocations in between.
//!
//! Input layout: a sequence of records, each an opcode byte and its
//! arguments; missing bytes read as zero, so every input is valid.

mod input;
mod seeds;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::id::{AssocId, NodeId, SocketId};
use crate::machine::{Datagram, Input, Output, StateMachine, Transmit};
use crate::relay::{
    AllocationCounters, AllocationSpec, RateLimit, Relay, RelayConfig, RelayError, RelayEvent,
    ReleaseReason, BIND_LEN, BIND_REPLAY_CAPACITY,
};
use crate::time::WallClock;
use crate::wire::{classify, AuthKey, Classified, ControlBody, ControlRepr, MAGIC};

pub use seeds::relay_receive_seeds;

/// The record format of `relay_receive` inputs, for the property test.
#[cfg(test)]
pub(crate) mod records {
    pub(crate) use super::seeds::{encode, AllocSel, CookieSel, Crafted, Key, Op, Pay, Sock, Src};
}

const UNIX_START_US: u64 = 1_760_000_000_000_000;
/// Allocation slots the input addresses.
const SLOTS: usize = 3;
const QUOTA: usize = 2;
const MAX_ALLOCATIONS: usize = 4;
const IDLE: Duration = Duration::from_secs(5);
const MAX_DATAGRAM: usize = 65_535;
/// The relay's public address besides its sockets' own.
const OWN_IP: [u8; 4] = [203, 0, 113, 250];
/// Slots 0 and 1 share a key, so an authentic bind for one reaches the
/// other's port; slot 2 has its own.
const KEYS: [[u8; 32]; 3] = [[0xA1; 32], [0xA1; 32], [0xC3; 32]];
const FOREIGN_KEY: [u8; 32] = [0x5F; 32];
/// The nodes of each slot's two legs: every node is in two slots, so a
/// quota of two is reached and a revocation touches two slots.
const NODES: [[u64; 2]; SLOTS] = [[1, 2], [1, 3], [2, 3]];

fn v4(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// The endpoint of leg `leg` of slot `k` as the relay sees it, and where it
/// shows up after its NAT rebinds.
fn endpoint(k: usize, leg: usize, rebound: bool) -> SocketAddr {
    let host = k as u8 + 1;
    let port = 40_000 + leg as u16 * 1_000 + u16::from(rebound);
    if leg == 0 {
        v4([198, 51, 100, host], port)
    } else {
        v4([203, 0, 113, host], port)
    }
}

/// What the harness knows of one live allocation.
#[derive(Debug, Clone, Copy)]
struct Live {
    id: u64,
    socket: SocketId,
    local: SocketAddr,
}

/// Everything observable of one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    legs: [(Option<SocketAddr>, Option<Instant>, usize); 2],
    counters: AllocationCounters,
}

fn snapshot(relay: &Relay, id: u64) -> Option<Snapshot> {
    let view = relay.allocation(id)?;
    let leg = |n: usize| {
        let l = &view.legs()[n];
        (l.addr, l.last_bind, l.replay_len())
    };
    Some(Snapshot {
        legs: [leg(0), leg(1)],
        counters: view.counters(),
    })
}

/// Datagrams the allocation accounted for: forwarded, bound or dropped.
fn accounted(c: &AllocationCounters) -> u64 {
    c.forwarded[0].packets + c.forwarded[1].packets + c.binds + c.challenges + c.dropped_total()
}

/// The relay, its sockets as the harness bound them, and what the input
/// has done so far.
struct Rig {
    relay: Relay,
    now: Instant,
    wall: WallClock,
    slots: [Option<Live>; SLOTS],
    generation: u64,
    bound: BTreeMap<SocketId, SocketAddr>,
    next_port: u16,
    /// Sockets of released allocations, for late datagrams.
    released: Vec<SocketId>,
    /// Binds the relay answered, by allocation: never answered twice.
    answered: BTreeSet<(u64, Vec<u8>)>,
    /// The cookie the relay sent each (allocation, leg, address): the only
    /// way an address learns its own.
    cookies: BTreeMap<(u64, u8, SocketAddr), u64>,
    /// Authentic packets the input made, for replays.
    crafted: Vec<Bytes>,
    /// Whether the next port the relay asks for fails to bind.
    fail_next_bind: bool,
}

impl Rig {
    fn new(epoch: Instant) -> Self {
        let wall = WallClock::new(epoch, UNIX_START_US);
        let mut config = RelayConfig::new(wall, 0x5eed);
        config.quota_per_node = QUOTA;
        config.max_allocations = MAX_ALLOCATIONS;
        config.rate_limit = Some(RateLimit {
            bytes_per_s: 1_000_000,
            burst_bytes: 100_000,
        });
        config.idle_timeout = IDLE;
        config.replay_window = Duration::from_secs(2);
        config.own_ips = vec![IpAddr::from(OWN_IP)];
        config.socket_base = 100;
        let mut rig = Self {
            relay: Relay::new(config),
            now: epoch,
            wall,
            slots: [None; SLOTS],
            generation: 0,
            bound: BTreeMap::new(),
            next_port: 30_000,
            released: Vec::new(),
            answered: BTreeSet::new(),
            cookies: BTreeMap::new(),
            crafted: Vec::new(),
            fail_next_bind: false,
        };
        for k in 0..SLOTS {
            rig.allocate(k, false);
            assert!(rig.slots[k].is_some(), "set-up allocates every slot");
        }
        // Slot 0 ready, slot 1 with one leg, slot 2 with none.
        for (k, leg) in [(0, 0), (0, 1), (1, 0)] {
            let live = rig.slots[k].expect("allocated");
            let src = endpoint(k, leg, false);
            rig.bind_both_steps(live, leg as u8, KEYS[k], src, k as u64 * 4 + leg as u64 * 2);
        }
        assert!(rig
            .relay
            .allocation(rig.slots[0].expect("live").id)
            .is_some_and(|v| v.is_ready()));
        rig
    }

    /// Whether `addr` is, or may be, one of the relay's own ports.
    fn is_own(&self, addr: SocketAddr) -> bool {
        self.bound.values().any(|local| {
            *local == addr
                || (local.port() == addr.port()
                    && (addr.ip().is_loopback()
                        || addr.ip().is_unspecified()
                        || addr.ip() == IpAddr::from(OWN_IP)))
        })
    }

    fn live(&self) -> impl Iterator<Item = Live> + '_ {
        self.slots.iter().flatten().copied()
    }

    /// Drains every output of a command or a timer: ports bound or closed,
    /// and nothing sent. Returns the events.
    fn drain_command(&mut self) -> Vec<RelayEvent> {
        let mut events = Vec::new();
        while let Some(output) = self.relay.poll_output() {
            match output {
                Output::BindSocket { socket, local } => {
                    let now = self.now;
                    if std::mem::take(&mut self.fail_next_bind) {
                        let reason = std::io::ErrorKind::AddrNotAvailable;
                        self.relay
                            .handle_input(now, Input::SocketFailed { socket, reason });
                        continue;
                    }
                    let mut local = local;
                    if local.port() == 0 {
                        local.set_port(self.next_port);
                        self.next_port = self.next_port.wrapping_add(1).max(30_000);
                    }
                    assert!(
                        self.bound.insert(socket, local).is_none(),
                        "{socket} bound twice"
                    );
                    self.relay
                        .handle_input(now, Input::SocketBound { socket, local });
                }
                Output::CloseSocket { socket } => {
                    assert!(
                        self.bound.remove(&socket).is_some(),
                        "{socket} closed twice"
                    );
                    if self.released.len() == 8 {
                        self.released.remove(0);
                    }
                    self.released.push(socket);
                }
                Output::Transmit(t) => panic!("a command or timer sent {} bytes", t.payload.len()),
                Output::Event(event) => events.push(event),
                other => panic!("a relay asks for no streams: {other:?}"),
            }
        }
        // Slots whose allocation is gone are empty now.
        for k in 0..SLOTS {
            if let Some(live) = self.slots[k] {
                if self.relay.allocation(live.id).is_none() {
                    self.slots[k] = None;
                }
            }
        }
        events
    }

    fn allocate(&mut self, k: usize, fail: bool) {
        if self.slots[k].is_some() {
            return;
        }
        self.generation += 1;
        let id = (self.generation << 8) | k as u64;
        let spec = AllocationSpec {
            allocation: id,
            assoc: AssocId(k as u64),
            key: KEYS[k],
            nodes: NODES[k].map(NodeId),
            local: v4([192, 0, 2, 1], 0),
        };
        self.fail_next_bind = fail;
        let result = self.relay.allocate(self.now, spec);
        let events = self.drain_command();
        self.fail_next_bind = false;
        match result {
            Ok(()) if fail => {
                assert!(events.iter().any(|e| matches!(e, RelayEvent::AllocationFailed { allocation, .. } if *allocation == id)));
                assert!(
                    self.relay.allocation(id).is_none(),
                    "a failed port left its allocation"
                );
            }
            Ok(()) => {
                let view = self.relay.allocation(id).expect("allocated");
                let local = view.local().expect("bound at once");
                assert!(events.contains(&RelayEvent::Allocated {
                    allocation: id,
                    local
                }));
                self.slots[k] = Some(Live {
                    id,
                    socket: view.socket(),
                    local,
                });
            }
            Err(RelayError::QuotaExceeded { node, quota }) => {
                assert_eq!(quota, QUOTA);
                assert!(
                    self.relay.node_allocations(node) >= QUOTA,
                    "refused under quota"
                );
            }
            Err(RelayError::Full(max)) => {
                assert_eq!(
                    self.relay.allocations().count(),
                    max,
                    "refused when not full"
                );
            }
            Err(err) => panic!("unexpected refusal: {err}"),
        }
    }

    /// An allocation outside the slots, for slot `k`'s first node and a
    /// node of its own: refused when that node holds its quota, released
    /// at once otherwise.
    fn allocate_extra(&mut self, k: usize) {
        self.generation += 1;
        let id = (self.generation << 8) | 0xff;
        let node = NodeId(NODES[k][0]);
        let held = self.relay.node_allocations(node);
        let spec = AllocationSpec {
            allocation: id,
            assoc: AssocId(99),
            key: FOREIGN_KEY,
            nodes: [node, NodeId(4)],
            local: v4([192, 0, 2, 1], 0),
        };
        match self.relay.allocate(self.now, spec) {
            Ok(()) => {
                assert!(held < QUOTA, "allocated over the quota");
                self.drain_command();
                self.relay.release(id).expect("just allocated");
                self.drain_command();
            }
            Err(RelayError::QuotaExceeded { node: refused, .. }) => {
                assert_eq!(refused, node);
                assert!(held >= QUOTA, "refused under the quota");
                assert!(self.drain_command().is_empty(), "a refusal had effects");
            }
            Err(err) => panic!("unexpected refusal: {err}"),
        }
    }

    /// An authentic bind under `key`, its timestamp `skew` tenths of a
    /// second off the relay's clock.
    fn bind(
        &mut self,
        (allocation, leg, cookie): (u64, u8, u64),
        key: [u8; 32],
        skew_us: i64,
        txid: u64,
    ) -> Bytes {
        let body = ControlBody::RelayBind {
            allocation,
            leg,
            cookie,
        };
        self.control(body, key, skew_us, txid)
    }

    /// Binds a leg as an endpoint does: a bind without a cookie, answered
    /// with the cookie, then the bind that carries it.
    fn bind_both_steps(&mut self, live: Live, leg: u8, key: [u8; 32], src: SocketAddr, txid: u64) {
        self.bind_both_steps_at(live, leg, key, src, txid, 100_000);
    }

    /// The same, with timestamps `skew_us` off the relay's clock (later
    /// than anything the input sent for that leg, when that matters).
    fn bind_both_steps_at(
        &mut self,
        live: Live,
        leg: u8,
        key: [u8; 32],
        src: SocketAddr,
        txid: u64,
        skew_us: i64,
    ) {
        let first = self.bind((live.id, leg, 0), key, skew_us, txid);
        self.receive(live.socket, src, &first);
        let cookie = *self
            .cookies
            .get(&(live.id, leg, src))
            .expect("a bind without a cookie is answered with one");
        let second = self.bind((live.id, leg, cookie), key, skew_us, txid + 1);
        self.receive(live.socket, src, &second);
        let view = self.relay.allocation(live.id).expect("live");
        assert_eq!(
            view.legs()[usize::from(leg)].addr,
            Some(src),
            "a bind with its cookie did not pin the leg"
        );
    }

    fn control(&mut self, body: ControlBody, key: [u8; 32], skew_us: i64, txid: u64) -> Bytes {
        let timestamp_us = self.wall.unix_us(self.now).saturating_add_signed(skew_us);
        let packet = ControlRepr {
            txid,
            timestamp_us,
            body,
        }
        .to_bytes(&AuthKey::new(&key));
        if self.crafted.len() == 16 {
            self.crafted.remove(0);
        }
        self.crafted.push(packet.clone());
        packet
    }

    /// Feeds one datagram and checks everything it caused.
    fn receive(&mut self, socket: SocketId, src: SocketAddr, payload: &[u8]) {
        let target = self.live().find(|l| l.socket == socket);
        let before: BTreeMap<u64, Snapshot> = self
            .live()
            .filter_map(|l| Some((l.id, snapshot(&self.relay, l.id)?)))
            .collect();
        let unknown_before = self.relay.counters().unknown_socket;
        let now = self.now;
        self.relay.handle_input(
            now,
            Input::Datagram(Datagram {
                socket,
                src,
                payload,
            }),
        );
        let mut sent: Vec<Transmit> = Vec::new();
        let mut events = Vec::new();
        while let Some(output) = self.relay.poll_output() {
            match output {
                Output::Transmit(t) => sent.push(t),
                Output::Event(e) => events.push(e),
                other => panic!("a datagram caused {other:?}"),
            }
        }
        assert!(sent.len() <= 1, "one datagram caused {} sends", sent.len());
        assert!(
            events.len() <= 1,
            "one datagram caused {} events",
            events.len()
        );
        // Nothing but the target allocation changed.
        for (&id, snap) in &before {
            if target.is_none_or(|t| t.id != id) {
                assert_eq!(
                    snapshot(&self.relay, id).as_ref(),
                    Some(snap),
                    "a datagram on another port changed allocation {id}"
                );
            }
        }
        let Some(target) = target else {
            assert!(
                sent.is_empty() && events.is_empty(),
                "a datagram on a dead port had effects"
            );
            assert_eq!(self.relay.counters().unknown_socket, unknown_before + 1);
            return;
        };
        let old = &before[&target.id];
        let new = snapshot(&self.relay, target.id).expect("a datagram released nothing");
        assert_eq!(
            accounted(&new.counters),
            accounted(&old.counters) + 1,
            "a datagram was not accounted exactly once"
        );
        let key = AuthKey::new(&KEYS[target.id as usize & 0xff]);
        let as_bind = match classify(payload, &key) {
            Classified::Control(repr) => match repr.body {
                ControlBody::RelayBind { .. } | ControlBody::RelayBindAck { .. } => Some(repr),
                _ => None,
            },
            _ => None,
        };
        for (n, leg) in new.legs.iter().enumerate() {
            if let Some(addr) = leg.0 {
                assert!(
                    !self.is_own(addr),
                    "leg {n} of {} pinned to our own {addr}",
                    target.id
                );
            }
        }
        if let (Some(a), Some(b)) = (new.legs[0].0, new.legs[1].0) {
            assert_ne!(a, b, "both legs on one address");
        }
        let Some(t) = sent.pop() else {
            assert_eq!(new.legs, old.legs, "state changed without an answer");
            return;
        };
        let addrs = |s: &Snapshot| s.legs.map(|l| (l.0, l.1));
        assert_eq!(t.socket, socket, "sent from another port");
        assert!(!self.is_own(t.dst), "sent to our own port {}", t.dst);
        if let Some(bind) = as_bind {
            // The only answer: an acknowledgement of a fresh authentic bind
            // for this allocation, to its sender, as large as the bind.
            let ControlBody::RelayBind {
                allocation,
                leg,
                cookie: offered,
            } = bind.body
            else {
                panic!("an acknowledgement was answered");
            };
            assert_eq!(
                allocation, target.id,
                "a bind for another allocation was accepted"
            );
            assert!(leg <= 1, "a bind for leg {leg} was accepted");
            assert_eq!(t.dst, src, "an acknowledgement went elsewhere");
            assert_eq!(
                t.payload.len(),
                payload.len(),
                "acknowledgement of another size"
            );
            assert_eq!(payload.len(), BIND_LEN);
            let cookie = match classify(&t.payload, &key) {
                Classified::Control(ControlRepr {
                    txid,
                    body:
                        ControlBody::RelayBindAck {
                            allocation: a,
                            leg: l,
                            cookie,
                            observed,
                        },
                    ..
                }) if txid == bind.txid && a == allocation && l == leg && observed.0 == src => {
                    cookie
                }
                other => panic!("not the acknowledgement of this bind: {other:?}"),
            };
            assert_ne!(cookie, 0, "an acknowledgement without a cookie");
            // An address's cookie is its own and does not change.
            let learned = self.cookies.get(&(allocation, leg, src)).copied();
            let known = *self.cookies.entry((allocation, leg, src)).or_insert(cookie);
            assert_eq!(known, cookie, "the cookie of {src} changed");
            assert!(
                self.answered.insert((target.id, payload.to_vec())),
                "a bind was answered twice (a replay)"
            );
            let this = usize::from(leg);
            assert_eq!(
                new.legs[1 - this],
                old.legs[1 - this],
                "the other leg changed"
            );
            if offered == cookie {
                // Return routability: only an address that was sent its
                // cookie can pin a leg.
                assert_eq!(
                    learned,
                    Some(cookie),
                    "pinned with a cookie {src} was never sent"
                );
                assert_eq!(
                    new.legs[this].0,
                    Some(src),
                    "bound with its cookie but not pinned"
                );
                assert_eq!(new.counters.binds, old.counters.binds + 1);
            } else {
                assert_eq!(
                    addrs(&new),
                    addrs(old),
                    "a bind without its cookie moved a leg"
                );
                assert_eq!(new.counters.challenges, old.counters.challenges + 1);
            }
            return;
        }
        // A forward: from a pinned leg to the other, unchanged.
        assert_eq!(&t.payload[..], payload, "forwarded altered");
        assert_eq!(new.legs, old.legs, "a forward changed a leg");
        let from = old
            .legs
            .iter()
            .position(|l| l.0 == Some(src))
            .expect("forwarded from an address that is no leg");
        assert_eq!(
            Some(t.dst),
            old.legs[1 - from].0,
            "forwarded to another address than the other leg"
        );
        assert_eq!(
            new.counters.forwarded[from].bytes,
            old.counters.forwarded[from].bytes + payload.len() as u64
        );
        assert!(events.is_empty(), "a forward caused an event");
    }

    /// Lets `by` pass, firing due timers.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.relay.poll_timeout().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            let now = self.now;
            let before: Vec<(u64, Instant)> = self
                .relay
                .allocations()
                .map(|v| (v.id(), v.last_activity()))
                .collect();
            self.relay.handle_timeout(now);
            for event in self.drain_command() {
                let RelayEvent::Released {
                    allocation,
                    reason: ReleaseReason::Expired,
                    ..
                } = event
                else {
                    panic!("a timer caused {event:?}");
                };
                let last = before
                    .iter()
                    .find(|(id, _)| *id == allocation)
                    .expect("was live")
                    .1;
                assert!(
                    last + IDLE <= now,
                    "allocation {allocation} expired while active"
                );
            }
        }
        self.now = until;
        for view in self.relay.allocations() {
            assert!(
                view.last_activity() + IDLE > until,
                "allocation {} overdue",
                view.id()
            );
        }
    }

    fn release(&mut self, which: u8, k: usize) {
        let before: Vec<u64> = self.live().map(|l| l.id).collect();
        let (gone, node): (Vec<u64>, Option<NodeId>) = match which % 4 {
            0 => {
                let Some(live) = self.slots[k] else {
                    assert!(self.relay.release(u64::MAX).is_err());
                    return;
                };
                self.relay.release(live.id).expect("live");
                (vec![live.id], None)
            }
            1 => {
                let node = NodeId(NODES[k][usize::from(which >> 7)]);
                let n = self.relay.release_node(node);
                let gone: Vec<u64> = self
                    .live()
                    .filter(|l| NODES[l.id as usize & 0xff].contains(&node.0))
                    .map(|l| l.id)
                    .collect();
                assert_eq!(n, gone.len());
                (gone, Some(node))
            }
            2 => {
                let n = self.relay.release_assoc(AssocId(k as u64));
                let gone: Vec<u64> = self.slots[k].iter().map(|l| l.id).collect();
                assert_eq!(n, gone.len());
                (gone, None)
            }
            _ if which & 0x40 != 0 => {
                self.allocate_extra(k);
                return;
            }
            _ => {
                self.allocate(k, which & 0x80 != 0);
                return;
            }
        };
        let mut gone = gone;
        gone.sort_unstable();
        let events = self.drain_command();
        let mut released: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                RelayEvent::Released { allocation, .. } => Some(*allocation),
                _ => None,
            })
            .collect();
        released.sort_unstable();
        assert_eq!(released, gone, "released other allocations than asked");
        for id in before {
            assert_eq!(self.relay.allocation(id).is_some(), !gone.contains(&id));
        }
        if let Some(node) = node {
            assert_eq!(
                self.relay.node_allocations(node),
                0,
                "a revoked node keeps allocations"
            );
        }
    }

    fn check_bounds(&self) {
        let count = self.relay.allocations().count();
        assert!(count <= MAX_ALLOCATIONS, "allocation table over its bound");
        assert_eq!(self.bound.len(), count, "ports open without an allocation");
        for node in 0..5 {
            assert!(
                self.relay.node_allocations(NodeId(node)) <= QUOTA,
                "node over its quota"
            );
        }
        for view in self.relay.allocations() {
            for leg in view.legs() {
                assert!(
                    leg.replay_len() <= BIND_REPLAY_CAPACITY,
                    "replay cache over its bound"
                );
            }
        }
    }

    /// What must still hold after the input: every live allocation takes a
    /// fresh bind from its endpoint's new address, so no flood or replay
    /// locked the endpoints out, and then forwards to it.
    fn finish(&mut self) {
        let slots = self.slots;
        for (k, live) in slots.into_iter().enumerate() {
            let Some(live) = live else {
                continue;
            };
            let fresh = v4([198, 51, 100, 200 + k as u8], 49_999);
            // Newer than anything the input made (its skew is under 13 s);
            // the two steps assert that the leg moved.
            self.bind_both_steps_at(live, 0, KEYS[k], fresh, u64::MAX - 1, 14_000_000);
        }
        // A moment later (the rate limit refills), what the other legs send
        // reaches the new addresses.
        self.advance(Duration::from_millis(200));
        for live in self.live().collect::<Vec<_>>() {
            let Some(other) = self
                .relay
                .allocation(live.id)
                .and_then(|v| v.legs()[1].addr)
            else {
                continue;
            };
            let before = snapshot(&self.relay, live.id).expect("live").counters;
            self.receive(live.socket, other, &[0x5a; 100]);
            let after = snapshot(&self.relay, live.id).expect("live").counters;
            assert_eq!(
                after.forwarded[1].packets,
                before.forwarded[1].packets + 1,
                "the other leg's data did not reach the new address"
            );
        }
    }
}

/// Runs the relay on `data` (see the module docs), starting at `epoch`,
/// and checks the invariants that must hold for any input: no panic; a
/// datagram is accounted exactly once (forwarded, bound or dropped by
/// reason) and touches no other allocation; a forward leaves the port it
/// arrived on, byte-for-byte, from one pinned leg to the other; the only
/// other answer is the acknowledgement of a fresh authentic bind for this
/// allocation, to its sender, as large as the bind; a bind is never
/// accepted twice; nothing changes without an answer; no leg is pinned to
/// one of the relay's own ports, and both legs are never one address;
/// idle allocations expire and active ones do not; releases and
/// revocations remove exactly what they name; tables stay bounded; and an
/// endpoint can always bind anew afterwards.
///
/// # Panics
/// When an invariant is broken; that is the finding.
pub fn relay_receive(data: &[u8], epoch: Instant) {
    let mut rig = Rig::new(epoch);
    let mut reader = input::Reader::new(data);
    let mut steps = 0;
    while !reader.is_empty() && steps < 4_096 {
        rig.step(&mut reader);
        steps += 1;
    }
    rig.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs_clean() {
        let seeds = relay_receive_seeds();
        assert!(seeds.len() >= 12);
        for (name, input) in seeds {
            let run = std::panic::catch_unwind(|| relay_receive(&input, crate::test_epoch()));
            assert!(run.is_ok(), "seed {name} broke an invariant");
        }
    }
}
