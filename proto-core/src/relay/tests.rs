//! The relay in virtual time: a host that binds ports as asked, two
//! endpoints that bind their legs, and strangers. Abuse cases live in
//! `tests/abuse.rs`, limits in `tests/limits.rs`, the random-sequence
//! property in `tests/property.rs`.

mod abuse;
mod limits;
mod property;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;
use crate::time::WallClock;
use crate::wire::{AuthKey, KEY_LEN};

const UNIX_START_US: u64 = 1_760_000_000_000_000;
const KEY: [u8; KEY_LEN] = [0x42; KEY_LEN];
const ALLOC: u64 = 77;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Endpoint addresses as the relay sees them (after their NATs).
fn alice() -> SocketAddr {
    addr("198.51.100.7:40000")
}
fn bob() -> SocketAddr {
    addr("203.0.113.9:41000")
}
fn mallory() -> SocketAddr {
    addr("192.0.2.66:6666")
}

fn spec(allocation: u64, nodes: [u64; 2]) -> AllocationSpec {
    AllocationSpec {
        allocation,
        assoc: AssocId(allocation + 1_000),
        key: KEY,
        nodes: [NodeId(nodes[0]), NodeId(nodes[1])],
        local: addr("192.0.2.1:0"),
    }
}

/// The relay, the host's bound sockets, and what came out.
struct Rig {
    relay: Relay,
    now: Instant,
    wall: WallClock,
    bound: BTreeMap<SocketId, SocketAddr>,
    closed: Vec<SocketId>,
    events: Vec<RelayEvent>,
    next_port: u16,
    /// Timestamps of crafted binds go up by one each, so each is fresh.
    next_ts: u64,
    /// Whether the next bind request fails.
    fail_next_bind: bool,
    /// Cookies the relay sent, by (allocation, leg, address).
    cookies: BTreeMap<(u64, u8, SocketAddr), u64>,
}

impl Rig {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut RelayConfig)) -> Self {
        let now = crate::test_epoch();
        let wall = WallClock::new(now, UNIX_START_US);
        let mut config = RelayConfig::new(wall, 7);
        tune(&mut config);
        Self {
            relay: Relay::new(config),
            now,
            wall,
            bound: BTreeMap::new(),
            closed: Vec::new(),
            events: Vec::new(),
            next_port: 50_000,
            next_ts: 0,
            fail_next_bind: false,
            cookies: BTreeMap::new(),
        }
    }

    /// Drains every output, binding sockets as asked; returns the transmits.
    fn drain(&mut self) -> Vec<Transmit> {
        let mut sent = Vec::new();
        while let Some(output) = self.relay.poll_output() {
            match output {
                Output::BindSocket { socket, mut local } => {
                    let now = self.now;
                    if std::mem::take(&mut self.fail_next_bind) {
                        let reason = std::io::ErrorKind::AddrInUse;
                        self.relay
                            .handle_input(now, Input::SocketFailed { socket, reason });
                        continue;
                    }
                    if local.port() == 0 {
                        local.set_port(self.next_port);
                        self.next_port += 1;
                    }
                    assert!(self.bound.insert(socket, local).is_none(), "bound twice");
                    self.relay
                        .handle_input(now, Input::SocketBound { socket, local });
                }
                Output::CloseSocket { socket } => {
                    assert!(
                        self.bound.remove(&socket).is_some(),
                        "closed {socket} twice"
                    );
                    self.closed.push(socket);
                }
                Output::Transmit(t) => {
                    assert!(
                        self.bound.contains_key(&t.socket),
                        "sent from a closed socket"
                    );
                    sent.push(t);
                }
                Output::Event(e) => self.events.push(e),
                other => panic!("a relay asks for no streams: {other:?}"),
            }
        }
        sent
    }

    /// Allocates and binds; returns the allocation's socket and address.
    fn allocate(&mut self, spec: AllocationSpec) -> (SocketId, SocketAddr) {
        let id = spec.allocation;
        self.relay.allocate(self.now, spec).expect("allocation");
        assert!(self.drain().is_empty());
        let view = self.relay.allocation(id).expect("allocated");
        let local = view.local().expect("bound");
        assert!(self.events.contains(&RelayEvent::Allocated {
            allocation: id,
            local
        }));
        (view.socket(), local)
    }

    /// Feeds one datagram and returns what the relay sent.
    fn recv(&mut self, socket: SocketId, src: SocketAddr, payload: &[u8]) -> Vec<Transmit> {
        let now = self.now;
        self.relay.handle_input(
            now,
            Input::Datagram(Datagram {
                socket,
                src,
                payload,
            }),
        );
        self.drain()
    }

    /// A fresh bind under `key`, carrying `cookie` (0: none).
    fn bind_packet(&mut self, key: &[u8; KEY_LEN], allocation: u64, leg: u8, cookie: u64) -> Bytes {
        self.next_ts += 1;
        ControlRepr {
            txid: self.next_ts,
            timestamp_us: self.wall.unix_us(self.now) + self.next_ts,
            body: ControlBody::RelayBind {
                allocation,
                leg,
                cookie,
            },
        }
        .to_bytes(&AuthKey::new(key))
    }

    /// The cookie the relay sent `src` for a leg (0: none yet).
    fn cookie(&self, allocation: u64, leg: u8, src: SocketAddr) -> u64 {
        self.cookies
            .get(&(allocation, leg, src))
            .copied()
            .unwrap_or(0)
    }

    /// Sends a bind and checks the answer: one authentic acknowledgement,
    /// back to `src`, as large as the bind, naming the leg and `src`.
    /// Returns (and remembers) the cookie it carries.
    fn expect_ack(
        &mut self,
        socket: SocketId,
        src: SocketAddr,
        packet: &[u8],
        (allocation, leg): (u64, u8),
    ) -> u64 {
        let sent = self.recv(socket, src, packet);
        assert_eq!(sent.len(), 1, "one acknowledgement");
        let ack = &sent[0];
        assert_eq!((ack.socket, ack.dst), (socket, src));
        assert_eq!(ack.payload.len(), packet.len(), "ack as large as the bind");
        let cookie = match classify(&ack.payload, &AuthKey::new(&KEY)) {
            Classified::Control(ControlRepr {
                body:
                    ControlBody::RelayBindAck {
                        allocation: a,
                        leg: l,
                        cookie,
                        observed,
                    },
                ..
            }) if (a, l, observed) == (allocation, leg, AddrRepr(src)) => cookie,
            other => panic!("not the acknowledgement expected: {other:?}"),
        };
        self.cookies.insert((allocation, leg, src), cookie);
        cookie
    }

    /// Binds `leg` of `allocation` from `src` as an endpoint does: a bind
    /// without a cookie is answered with one and pins nothing; the bind
    /// that carries it pins the leg. With its cookie known, one bind
    /// refreshes.
    fn bind(&mut self, socket: SocketId, allocation: u64, leg: u8, src: SocketAddr) {
        let mut cookie = self.cookie(allocation, leg, src);
        if cookie == 0 {
            let before = self.relay.allocation(allocation).unwrap().legs()[usize::from(leg)].addr;
            let first = self.bind_packet(&KEY, allocation, leg, 0);
            cookie = self.expect_ack(socket, src, &first, (allocation, leg));
            let after = self.relay.allocation(allocation).unwrap().legs()[usize::from(leg)].addr;
            assert_eq!(before, after, "a bind without its cookie pinned the leg");
        }
        let packet = self.bind_packet(&KEY, allocation, leg, cookie);
        assert_eq!(
            self.expect_ack(socket, src, &packet, (allocation, leg)),
            cookie,
            "the cookie of {src} changed"
        );
        let view = self.relay.allocation(allocation).unwrap();
        assert_eq!(view.legs()[usize::from(leg)].addr, Some(src), "not pinned");
    }

    /// One allocation with alice on leg 0 and bob on leg 1.
    fn ready() -> (Self, SocketId, SocketAddr) {
        let mut rig = Self::new();
        let (socket, local) = rig.allocate(spec(ALLOC, [1, 2]));
        rig.bind(socket, ALLOC, 0, alice());
        rig.bind(socket, ALLOC, 1, bob());
        assert!(rig.relay.allocation(ALLOC).unwrap().is_ready());
        (rig, socket, local)
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.relay.poll_timeout().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            let now = self.now;
            self.relay.handle_timeout(now);
            assert!(self.drain().is_empty(), "timers send nothing");
        }
        self.now = until;
    }

    fn counters(&self) -> AllocationCounters {
        self.relay.allocation(ALLOC).unwrap().counters()
    }
}

/// A payload of `len` bytes, different for every length.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn an_allocation_opens_one_port_and_reports_it() {
    let mut rig = Rig::new();
    let (socket, local) = rig.allocate(spec(ALLOC, [1, 2]));
    assert_eq!(rig.bound.get(&socket), Some(&local));
    assert!(rig.relay.owns_socket(socket));
    let (other, other_local) = rig.allocate(spec(ALLOC + 1, [1, 2]));
    assert_ne!(socket, other);
    assert_ne!(local, other_local, "one port per relay path");
    assert_eq!(rig.relay.node_allocations(NodeId(1)), 2);
}

#[test]
fn binds_pin_both_legs_and_are_answered_at_their_size() {
    let (rig, _, _) = Rig::ready();
    let view = rig.relay.allocation(ALLOC).unwrap();
    assert_eq!(view.legs()[0].addr, Some(alice()));
    assert_eq!(view.legs()[1].addr, Some(bob()));
    assert_eq!(view.counters().binds, 2);
    assert_eq!(
        view.counters().challenges,
        2,
        "each leg was sent its cookie once"
    );
    let bound: Vec<_> = rig
        .events
        .iter()
        .filter_map(|e| match e {
            RelayEvent::LegBound {
                leg, addr, ready, ..
            } => Some((*leg, *addr, *ready)),
            _ => None,
        })
        .collect();
    assert_eq!(bound, vec![(0, alice(), false), (1, bob(), true)]);
}

#[test]
fn every_payload_from_1_to_1400_bytes_crosses_unchanged_both_ways() {
    let (mut rig, socket, _) = Rig::ready();
    let foreign = AuthKey::new(&[0x99; KEY_LEN]);
    let mut cases: Vec<Vec<u8>> = (0..=1_400).map(|len| payload(len, len as u8)).collect();
    // Datagrams that start with the control magic but are not binds under
    // the allocation key: junk, a bind under another key (exactly bind
    // sized), and truncated magic.
    for len in [8, 20, MIN_LEN, BIND_LEN - 1, BIND_LEN, BIND_LEN + 1, 1_400] {
        let mut p = payload(len, 3);
        p[..8].copy_from_slice(&MAGIC);
        cases.push(p);
    }
    cases.push(MAGIC[..5].to_vec());
    let foreign_bind = ControlRepr {
        txid: 1,
        timestamp_us: UNIX_START_US,
        body: ControlBody::RelayBind {
            allocation: ALLOC,
            leg: 0,
            cookie: 0,
        },
    }
    .to_bytes(&foreign);
    cases.push(foreign_bind.to_vec());
    // The endpoints' own probes under the same key are theirs, not ours:
    // an authentic ping of exactly a bind's size crosses too.
    let ping = ControlRepr {
        txid: 9,
        timestamp_us: UNIX_START_US,
        body: ControlBody::Ping { pad: 36, policy: 0 },
    }
    .to_bytes(&AuthKey::new(&KEY));
    assert_eq!(ping.len(), BIND_LEN);
    cases.push(ping.to_vec());

    let mut bytes = [0u64; 2];
    for (i, case) in cases.iter().enumerate() {
        let (from, to, dir) = if i % 2 == 0 {
            (alice(), bob(), 0)
        } else {
            (bob(), alice(), 1)
        };
        let sent = rig.recv(socket, from, case);
        assert_eq!(
            sent.len(),
            1,
            "case {i} ({} bytes) not forwarded",
            case.len()
        );
        assert_eq!(sent[0].socket, socket);
        assert_eq!(sent[0].dst, to);
        assert_eq!(&sent[0].payload[..], &case[..], "case {i} altered");
        bytes[dir] += case.len() as u64;
    }
    let counters = rig.counters();
    assert_eq!(counters.dropped_total(), 0);
    assert_eq!(counters.forwarded[0].bytes, bytes[0]);
    assert_eq!(counters.forwarded[1].bytes, bytes[1]);
    assert_eq!(
        counters.forwarded[0].packets + counters.forwarded[1].packets,
        cases.len() as u64
    );
}

#[test]
fn a_bind_from_a_pinned_leg_refreshes_and_is_answered_not_forwarded() {
    let (mut rig, socket, _) = Rig::ready();
    let before = rig.events.len();
    rig.bind(socket, ALLOC, 0, alice());
    let view = rig.relay.allocation(ALLOC).unwrap();
    assert_eq!(view.counters().binds, 3);
    assert_eq!(view.counters().forwarded[0].packets, 0);
    assert_eq!(view.legs()[0].last_bind, Some(rig.now));
    assert_eq!(rig.events.len(), before, "a refresh does not move the leg");
}

#[test]
fn a_leg_moves_only_with_a_fresh_authentic_bind() {
    let (mut rig, socket, _) = Rig::ready();
    let rebound = addr("198.51.100.7:40999");
    // Data from the new address is not the leg's yet.
    assert!(rig.recv(socket, rebound, b"early").is_empty());
    rig.bind(socket, ALLOC, 0, rebound);
    assert!(rig.events.contains(&RelayEvent::LegBound {
        allocation: ALLOC,
        leg: 0,
        addr: rebound,
        moved_from: Some(alice()),
        ready: true,
    }));
    // The old address is a stranger now; bob's data goes to the new one.
    assert!(rig.recv(socket, alice(), b"stale").is_empty());
    let sent = rig.recv(socket, bob(), b"to the new leg");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].dst, rebound);
}

#[test]
fn release_closes_the_port_and_later_datagrams_go_nowhere() {
    let (mut rig, socket, _) = Rig::ready();
    rig.recv(socket, alice(), b"one");
    rig.relay.release(ALLOC).unwrap();
    assert!(rig.drain().is_empty());
    assert_eq!(rig.closed, vec![socket]);
    assert!(matches!(
        rig.events.last(),
        Some(RelayEvent::Released {
            allocation: ALLOC,
            reason: ReleaseReason::Released,
            counters,
        }) if counters.forwarded[0].packets == 1
    ));
    assert_eq!(rig.relay.release(ALLOC), Err(RelayError::Unknown(ALLOC)));
    assert_eq!(rig.relay.node_allocations(NodeId(1)), 0);
    // The driver may still hand over datagrams that were queued.
    rig.bound.insert(socket, addr("192.0.2.1:50000"));
    let cookie = rig.cookie(ALLOC, 0, alice());
    let bind = rig.bind_packet(&KEY, ALLOC, 0, cookie);
    assert!(rig.recv(socket, alice(), &bind).is_empty());
    assert!(rig.recv(socket, alice(), b"late data").is_empty());
    assert_eq!(rig.relay.counters().unknown_socket, 2);
    assert!(rig.relay.allocation(ALLOC).is_none());
}

#[test]
fn a_withdrawn_association_takes_its_allocations_with_it() {
    let mut rig = Rig::new();
    let (a, _) = rig.allocate(spec(1, [1, 2]));
    let (b, _) = rig.allocate(spec(2, [1, 2]));
    let mut other = spec(3, [1, 2]);
    other.assoc = AssocId(1_001);
    let (c, _) = rig.allocate(other);
    assert_eq!(rig.relay.release_assoc(AssocId(1_001)), 2);
    rig.drain();
    assert_eq!(rig.closed, vec![a, c]);
    assert!(rig.relay.owns_socket(b));
    assert_eq!(rig.relay.allocations().count(), 1);
}

#[test]
fn a_failed_port_removes_the_allocation_and_frees_the_quota() {
    let mut rig = Rig::with(|c| c.quota_per_node = 1);
    rig.fail_next_bind = true;
    rig.relay.allocate(rig.now, spec(ALLOC, [1, 2])).unwrap();
    rig.drain();
    assert_eq!(
        rig.events,
        vec![RelayEvent::AllocationFailed {
            allocation: ALLOC,
            reason: std::io::ErrorKind::AddrInUse,
        }]
    );
    assert!(rig.relay.allocation(ALLOC).is_none());
    assert_eq!(rig.relay.poll_timeout(), None, "no timer left behind");
    rig.allocate(spec(ALLOC, [1, 2]));
}
