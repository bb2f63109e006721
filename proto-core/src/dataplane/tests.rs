//! Two data planes in virtual time with a fixed one-way delay: the smallest
//! harness that exercises install, binding, validation, forwarding,
//! rebinding, failure and withdrawal.

mod punch;
mod rekey;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;
use crate::wire::{AuthKey, MAGIC};

const DELAY: Duration = Duration::from_millis(5);
const ASSOC: AssocId = AssocId(7);
/// Node 0's mesh address, as node 1 knows it before a rebinding.
const OLD_MAPPING: &str = "192.0.2.1:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Node {
    plane: DataPlane,
    bound: BTreeMap<SocketId, SocketAddr>,
    target: SocketAddr,
    delivered: Vec<Bytes>,
    events: Vec<DataEvent>,
}

struct Net {
    now: Instant,
    nodes: [Node; 2],
    /// (arrival, seq) -> (dst, src, payload)
    in_flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Bytes)>,
    seq: u64,
    /// Rewrites the source of node 0's mesh packets (a NAT rebinding);
    /// what node 1 sends to node 0's old address is lost.
    rebind: Option<SocketAddr>,
    /// Drops everything while set.
    blackhole: bool,
    /// Packets and bytes sent to each mesh destination.
    sent_to: BTreeMap<SocketAddr, (u64, u64)>,
    /// A NAT in front of each node's mesh sockets, when set.
    nats: Option<[PerDestinationNat; 2]>,
    /// One-way delay of every packet ([`DELAY`] unless a test sets it).
    delay: Duration,
}

/// A NAT that maps every destination to a new outside port, in sequence
/// from 50,000, on the node's own address, and lets in only what comes
/// from an address a mapping has sent to (RFC 4787's address-and-port
/// dependent mapping, address-dependent filtering).
#[derive(Default)]
struct PerDestinationNat {
    /// (inside, destination) -> outside port.
    mappings: BTreeMap<(SocketAddr, SocketAddr), u16>,
}

impl PerDestinationNat {
    fn outbound(&mut self, inside: SocketAddr, dst: SocketAddr) -> SocketAddr {
        let next = 50_000 + self.mappings.len() as u16;
        let port = *self.mappings.entry((inside, dst)).or_insert(next);
        SocketAddr::new(inside.ip(), port)
    }

    /// The inside address `dst` leads to, if `src` may come in.
    fn inbound(&self, dst: SocketAddr, src: SocketAddr) -> Option<SocketAddr> {
        let mut mapping = self
            .mappings
            .iter()
            .filter(|(&(inside, _), &port)| inside.ip() == dst.ip() && port == dst.port());
        let inside = mapping.next().map(|(&(inside, _), _)| inside)?;
        let sent_there = self
            .mappings
            .iter()
            .any(|(&(i, to), &port)| i == inside && port == dst.port() && to.ip() == src.ip());
        sent_there.then_some(inside)
    }
}

fn uplink(id: u16, bind: &str) -> UplinkSpec {
    UplinkSpec::new(UplinkId(id), format!("up{id}"), bind.parse().unwrap())
}

fn spec(ingress: &str, target: &str, remotes: &[&str]) -> AssociationSpec {
    AssociationSpec {
        id: ASSOC,
        service: ServiceId(1),
        peer: "peer/wg0".to_owned(),
        key: [3; 32],
        ingress: addr(ingress),
        target: addr(target),
        mesh_port: 40_000,
        remotes: remotes.iter().map(|r| addr(r)).collect(),
    }
}

impl Net {
    /// Node 0 on 192.0.2.1; node 1 on 198.51.100.2 and, with `intranet`,
    /// also on 10.0.0.2.
    fn new(intranet: bool) -> Self {
        Self::with(intranet, |_| {})
    }

    /// As [`Net::new`], both planes' configuration adjusted by `adjust`.
    fn with(intranet: bool, adjust: impl Fn(&mut DataPlaneConfig)) -> Self {
        let mut b_remotes = vec!["198.51.100.2:40000"];
        if intranet {
            b_remotes.push("10.0.0.2:40000");
        }
        Self::build(intranet, &b_remotes, &["192.0.2.1:40000"], adjust)
    }

    /// Node 0 and node 1 each behind a [`PerDestinationNat`]. Node 0 is
    /// given node 1's first mapping, towards node 0's mesh socket, as the
    /// predicted candidate; node 1 only node 0's inside address.
    fn behind_nats() -> Self {
        let mut net = Self::build(false, &["198.51.100.2:50000"], &["192.0.2.1:40000"], |_| {});
        net.nats = Some(Default::default());
        net
    }

    fn build(
        intranet: bool,
        a_remotes: &[&str],
        b_remotes: &[&str],
        adjust: impl Fn(&mut DataPlaneConfig),
    ) -> Self {
        let now = crate::test_epoch();
        let wall = WallClock::new(now, 1_760_000_000_000_000);
        let mut b_uplinks = vec![uplink(0, "198.51.100.2")];
        if intranet {
            b_uplinks.push(uplink(1, "10.0.0.2"));
        }
        let mut a_config = DataPlaneConfig::new(vec![uplink(0, "192.0.2.1")], 1, wall);
        let mut b_config = DataPlaneConfig::new(b_uplinks, 2, wall);
        adjust(&mut a_config);
        adjust(&mut b_config);
        let mut a = DataPlane::new(a_config);
        let mut b = DataPlane::new(b_config);
        a.install(spec("127.0.0.1:41000", "127.0.0.1:51820", a_remotes))
            .unwrap();
        b.install(spec("127.0.0.1:41000", "127.0.0.1:51820", b_remotes))
            .unwrap();
        let node = |plane, target| Node {
            plane,
            bound: BTreeMap::new(),
            target: addr(target),
            delivered: Vec::new(),
            events: Vec::new(),
        };
        Self {
            now,
            nodes: [node(a, "127.0.0.1:51820"), node(b, "127.0.0.1:51820")],
            in_flight: BTreeMap::new(),
            seq: 0,
            rebind: None,
            blackhole: false,
            sent_to: BTreeMap::new(),
            nats: None,
            delay: DELAY,
        }
    }

    fn drain(&mut self, n: usize) {
        while let Some(output) = self.nodes[n].plane.poll_output() {
            let now = self.now;
            match output {
                Output::BindSocket { socket, local } => {
                    self.nodes[n].bound.insert(socket, local);
                    self.nodes[n]
                        .plane
                        .handle_input(now, Input::SocketBound { socket, local });
                }
                Output::CloseSocket { socket } => {
                    self.nodes[n].bound.remove(&socket);
                }
                Output::Transmit(t) => {
                    let local = self.nodes[n].bound[&t.socket];
                    if t.dst == self.nodes[n].target {
                        assert_eq!(
                            local,
                            addr("127.0.0.1:41000"),
                            "delivered from the ingress socket"
                        );
                        self.nodes[n].delivered.push(t.payload);
                        continue;
                    }
                    let sent = self.sent_to.entry(t.dst).or_default();
                    sent.0 += 1;
                    sent.1 += t.payload.len() as u64;
                    if self.blackhole {
                        continue;
                    }
                    let src = match (n, self.rebind, self.nats.as_mut()) {
                        (_, _, Some(nats)) => nats[n].outbound(local, t.dst),
                        (0, Some(rebound), _) => rebound,
                        _ => local,
                    };
                    self.seq += 1;
                    self.in_flight
                        .insert((now + self.delay, self.seq), (t.dst, src, t.payload));
                }
                Output::Event(e) => self.nodes[n].events.push(e),
                Output::Deliver { .. } => unreachable!("the data plane delivers through sockets"),
                other => unreachable!("the data plane owns no streams: {other:?}"),
            }
        }
    }

    /// The node and socket that own `dst` (a rebound address maps to node 0).
    fn owner(&self, dst: SocketAddr) -> Option<(usize, SocketId)> {
        let dst = if Some(dst) == self.rebind {
            addr("192.0.2.1:40000")
        } else {
            dst
        };
        (0..2).find_map(|n| {
            self.nodes[n]
                .bound
                .iter()
                .find(|(_, &local)| local == dst)
                .map(|(&socket, _)| (n, socket))
        })
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            self.drain(0);
            self.drain(1);
            let next_packet = self.in_flight.keys().next().map(|&(at, _)| at);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.plane.poll_timeout())
                .min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = next;
            if next_packet == Some(next) {
                let (_, (dst, src, payload)) = self.in_flight.pop_first().unwrap();
                let dst = match self.nats.as_ref() {
                    Some(nats) => nats.iter().find_map(|nat| nat.inbound(dst, src)),
                    // A rebinding NAT forgot node 0's old mapping: what
                    // arrives there goes nowhere.
                    None if self.rebind.is_some() && dst == addr(OLD_MAPPING) => None,
                    None => Some(dst),
                };
                if let Some((n, socket)) = dst.and_then(|dst| self.owner(dst)) {
                    let d = Datagram {
                        socket,
                        src,
                        payload: &payload,
                    };
                    self.nodes[n].plane.handle_input(next, Input::Datagram(d));
                }
            } else {
                for n in 0..2 {
                    if self.nodes[n].plane.poll_timeout() == Some(next) {
                        self.nodes[n].plane.handle_timeout(next);
                    }
                }
            }
        }
        self.now = until;
    }

    /// The local service of node `n` sends `payload` to its ingress from `src`.
    fn service_sends(&mut self, n: usize, src: SocketAddr, payload: &[u8]) {
        let ingress = self.nodes[n]
            .plane
            .association(ASSOC)
            .unwrap()
            .inner
            .ingress_socket;
        let d = Datagram {
            socket: ingress,
            src,
            payload,
        };
        let now = self.now;
        self.nodes[n].plane.handle_input(now, Input::Datagram(d));
    }

    /// Node `n`'s mesh socket (its only uplink's) receives `payload` from
    /// `src`, now.
    fn mesh_receives(&mut self, n: usize, src: SocketAddr, payload: &[u8]) {
        let socket =
            self.nodes[n].plane.association(ASSOC).unwrap().inner.mesh[&UplinkId(0)].socket;
        let d = Datagram {
            socket,
            src,
            payload,
        };
        let now = self.now;
        self.nodes[n].plane.handle_input(now, Input::Datagram(d));
    }

    fn view(&self, n: usize) -> AssociationView<'_> {
        self.nodes[n].plane.association(ASSOC).unwrap()
    }
}

fn payload(i: usize) -> Vec<u8> {
    let len = 1 + i % 1_400;
    let mut p: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
    if i.is_multiple_of(5) {
        let n = MAGIC.len().min(len);
        p[..n].copy_from_slice(&MAGIC[..n]);
    }
    p
}

#[test]
fn the_reorder_bound_reaches_installed_and_new_associations() {
    let mut net = Net::new(false);
    let plane = &mut net.nodes[0].plane;
    plane.set_reorder_bound(200);
    let mut spec2 = spec(
        "127.0.0.1:41001",
        "127.0.0.1:51821",
        &["198.51.100.2:40000"],
    );
    spec2.id = AssocId(ASSOC.0 + 1);
    plane.install(spec2).unwrap();
    let bounds: Vec<u32> = plane
        .assocs
        .values()
        .map(|a| a.sched.reorder_bound)
        .collect();
    assert_eq!(bounds, vec![200, 200]);
    // Zero would leave the hysteresis no margin at all: it is one.
    plane.set_reorder_bound(0);
    assert!(plane.assocs.values().all(|a| a.sched.reorder_bound == 1));
}

#[test]
fn paths_validate_and_data_crosses_byte_for_byte() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    assert!(net.view(0).is_up() && net.view(1).is_up());
    assert!(net.nodes[0]
        .events
        .contains(&DataEvent::AssociationUp(ASSOC)));
    let target = net.nodes[0].target;
    let sent: Vec<Vec<u8>> = (0..1_400).map(payload).collect();
    for p in &sent {
        net.service_sends(0, target, p);
        net.advance(Duration::from_micros(100));
    }
    net.advance(Duration::from_millis(20));
    let got: Vec<Vec<u8>> = net.nodes[1].delivered.iter().map(|b| b.to_vec()).collect();
    assert_eq!(got, sent);
    let c = net.view(1).counters();
    assert_eq!(c.delivered.packets, 1_400);
    assert_eq!(net.view(0).counters().ingress.packets, 1_400);
}

#[test]
fn only_the_service_target_may_send_into_the_ingress() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    net.service_sends(0, addr("127.0.0.1:9999"), b"intruder");
    net.advance(Duration::from_millis(20));
    assert!(net.nodes[1].delivered.is_empty());
    assert_eq!(net.view(0).counters().ingress_foreign, 1);
}

#[test]
fn nothing_is_carried_before_validation() {
    let mut net = Net::new(false);
    // Nothing is bound or validated yet at time zero.
    let target = net.nodes[0].target;
    net.drain(0);
    net.service_sends(0, target, b"too early");
    net.advance(Duration::from_millis(50));
    assert!(net.nodes[1].delivered.is_empty());
    assert_eq!(net.view(0).counters().no_path, 1);
}

#[test]
fn a_rebound_peer_is_challenged_and_revalidated_within_one_interval() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    net.rebind = Some(addr("192.0.2.1:51111"));
    let target = net.nodes[0].target;
    let big = vec![0x42u8; 200];
    net.service_sends(0, target, &big);
    net.advance(Duration::from_millis(30));
    // Dropped (unvalidated source), but it earned an immediate challenge.
    assert!(net.nodes[1].delivered.is_empty());
    assert_eq!(net.view(1).counters().unvalidated, 1);
    let rebound = net
        .view(1)
        .paths()
        .find(|p| p.remote == addr("192.0.2.1:51111"))
        .map(|p| p.state);
    assert_eq!(
        rebound,
        Some(PathState::Active),
        "validated within one round trip"
    );
    net.service_sends(0, target, &big);
    net.advance(Duration::from_millis(30));
    assert_eq!(net.nodes[1].delivered.len(), 1);
    // node 1 answers over the new path, which it prefers once the old one is stale.
    net.advance(Duration::from_millis(600));
    net.service_sends(1, target, b"reply");
    net.advance(Duration::from_millis(30));
    assert_eq!(net.nodes[0].delivered, vec![Bytes::from_static(b"reply")]);
}

#[test]
fn a_peer_that_answers_from_a_new_mapping_still_gets_a_path() {
    // Both NATs map per destination: every answer leaves from a mapping
    // the pinger never sent to, so no pong comes from the address its ping
    // went to. Each ping got through all the same.
    let mut net = Net::behind_nats();
    net.advance(Duration::from_secs(1));
    assert!(net.view(0).is_up() && net.view(1).is_up());
    for n in 0..2 {
        let path = net.view(n).paths().find(|p| p.state == PathState::Active);
        let path = path.expect("an active path");
        let answers = path.answers_from.expect("answers from another port");
        assert_eq!(answers.ip(), path.remote.ip());
        assert_ne!(answers, path.remote);
    }
    // Data crosses both ways, byte for byte, and the receivers' reports
    // reach the senders.
    let target = net.nodes[0].target;
    let sent: Vec<Vec<u8>> = (0..300).map(payload).collect();
    for p in &sent {
        net.service_sends(0, target, p);
        net.service_sends(1, target, p);
        net.advance(Duration::from_millis(2));
    }
    net.advance(Duration::from_millis(500));
    for n in 0..2 {
        let got: Vec<Vec<u8>> = net.nodes[n].delivered.iter().map(|b| b.to_vec()).collect();
        assert_eq!(got, sent, "node {n} got everything");
        assert_eq!(net.view(n).counters().unvalidated, 0);
        let reports: u64 = net.view(n).paths().map(|p| p.estimates().reports).sum();
        assert!(reports > 0, "node {n} heard reports");
    }
    // However many of them validated, one carries: they all lead through
    // the same two NATs.
    let now = net.now;
    for n in 0..2 {
        let choices = net.nodes[n].plane.path_choices(now, ASSOC).unwrap();
        let carrying = choices.iter().filter(|c| c.reason == Reason::Carrying);
        assert_eq!(carrying.count(), 1, "node {n}: {choices:?}");
        let active = net.view(n).paths().filter(|p| p.state == PathState::Active);
        let redundant = choices.iter().filter(|c| c.reason == Reason::Redundant);
        assert_eq!(
            redundant.count(),
            active.count() - 1,
            "node {n}: {choices:?}"
        );
    }
    // Answering from a new mapping does not teach the peer a new path each
    // time: a handful of mappings, not one per ping.
    let nats = net.nats.as_ref().unwrap();
    for (n, nat) in nats.iter().enumerate() {
        assert!(net.view(n).paths().count() <= 3, "node {n}'s paths");
        assert!(nat.mappings.len() <= 4, "node {n}'s mappings");
    }
}

#[test]
fn small_unvalidated_data_earns_no_challenge() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    net.rebind = Some(addr("192.0.2.1:51111"));
    let pings_before: u64 = net.view(1).paths().map(|p| p.pings).sum();
    // Only the data packet arrives from the new address (node 0's own
    // pings from there would rightly teach it).
    let (n, socket) = net.owner(addr("198.51.100.2:40000")).unwrap();
    let d = Datagram {
        socket,
        src: addr("192.0.2.1:51111"),
        payload: b"tiny",
    };
    let now = net.now;
    net.nodes[n].plane.handle_input(now, Input::Datagram(d));
    net.drain(1);
    let pings_after: u64 = net.view(1).paths().map(|p| p.pings).sum();
    assert_eq!(
        pings_before, pings_after,
        "a 4-byte packet must not trigger a 63-byte ping"
    );
}

#[test]
fn a_dead_path_fails_within_a_second() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    net.blackhole = true;
    net.advance(Duration::from_millis(1_000));
    assert!(!net.view(0).is_up(), "still up a second after the cut");
    assert!(net.nodes[0]
        .events
        .contains(&DataEvent::AssociationDown(ASSOC)));
    net.blackhole = false;
    net.advance(Duration::from_millis(300));
    assert!(net.view(0).is_up(), "comes back when probes are answered");
}

#[test]
fn a_path_with_a_long_round_trip_stays_up_while_it_carries_data() {
    // 1.2 s round trips: a relayed path over two satellite hops. Pings
    // are answered, only late; the path must not fail for want of patience,
    // nor lose its pings to the outstanding-ping bound.
    let mut net = Net::new(false);
    net.delay = Duration::from_millis(600);
    net.advance(Duration::from_millis(1_500));
    assert!(net.view(0).is_up(), "the path validates");
    let target = net.nodes[0].target;
    for i in 0..200 {
        net.service_sends(0, target, &payload(i));
        net.advance(Duration::from_millis(20));
    }
    net.advance(Duration::from_millis(1_500));
    let failed = |net: &Net, n: usize| {
        net.nodes[n]
            .events
            .iter()
            .filter(|e| matches!(e, DataEvent::PathFailed { .. }))
            .count()
    };
    assert_eq!((failed(&net, 0), failed(&net, 1)), (0, 0), "no path failed");
    assert_eq!(net.nodes[1].delivered.len(), 200, "everything arrived");
    let path = net.view(0).paths().next().unwrap();
    assert_eq!(path.estimates().probe_loss, 0.0, "no ping counted lost");
    // And it still fails when it dies under data, within its deadline
    // (its round trip, variance and a probe interval: about 1.35 s).
    net.blackhole = true;
    for i in 0..150 {
        net.service_sends(0, target, &payload(i));
        net.advance(Duration::from_millis(20));
    }
    assert_eq!(failed(&net, 0), 1, "failed within 3 s of dying");
}

#[test]
fn a_new_path_is_pinged_fast_until_its_loss_is_known_then_at_the_idle_interval() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(1_000));
    let pings = |net: &Net| net.view(0).paths().next().map(|p| (p.pings, p.proving()));
    let (first, proving) = pings(&net).unwrap();
    assert!(!proving, "proven within a second");
    assert!(
        (PROVING_PINGS..PROVING_PINGS + 8).contains(&first),
        "{first} pings"
    );
    net.advance(Duration::from_millis(1_000));
    let (then, _) = pings(&net).unwrap();
    assert!(
        (3..=5).contains(&(then - first)),
        "{} more in a second",
        then - first
    );
}

#[test]
fn a_reachable_intranet_path_is_preferred() {
    let mut net = Net::new(true);
    net.advance(Duration::from_millis(50));
    let states: Vec<(PathKind, PathState)> =
        net.view(0).paths().map(|p| (p.kind, p.state)).collect();
    assert_eq!(
        states,
        vec![
            (PathKind::DirectIntranet, PathState::Active),
            (PathKind::DirectPublic, PathState::Active)
        ]
    );
    let target = net.nodes[0].target;
    net.service_sends(0, target, b"via the lan");
    let current = net.view(0).current_path().unwrap();
    let chosen = net.view(0).paths().find(|p| p.id == current).unwrap().kind;
    assert_eq!(chosen, PathKind::DirectIntranet);
}

#[test]
fn a_peer_uplinks_policy_is_learned_from_its_pings() {
    // Node 1's intranet uplink is metered: its pings say so, and node 0
    // (whose own uplink is unmetered) keeps data off that address too.
    let metered = UplinkPolicy {
        metered: true,
        ..UplinkPolicy::default()
    };
    let mut net = Net::with(true, |config| {
        for uplink in &mut config.uplinks {
            if uplink.bind.to_string() == "10.0.0.2" {
                uplink.policy = metered;
            }
        }
    });
    net.advance(Duration::from_millis(50));
    let lan = net
        .view(0)
        .paths()
        .find(|p| p.kind == PathKind::DirectIntranet)
        .map(|p| (p.state, p.remote_policy));
    assert_eq!(lan, Some((PathState::Active, PING_METERED)));
    let target = net.nodes[0].target;
    for i in 0..50 {
        net.service_sends(0, target, &payload(i));
    }
    let current = net.view(0).current_path().unwrap();
    let chosen = net.view(0).paths().find(|p| p.id == current).unwrap().kind;
    assert_eq!(chosen, PathKind::DirectPublic);
    let now = net.now;
    let reasons: Vec<Reason> = net.nodes[0]
        .plane
        .path_choices(now, ASSOC)
        .unwrap()
        .iter()
        .map(|c| c.reason)
        .collect();
    assert_eq!(reasons, vec![Reason::Metered, Reason::Carrying]);
    let lan_data = net
        .view(0)
        .paths()
        .find(|p| p.kind == PathKind::DirectIntranet)
        .map(|p| p.tx.packets);
    assert_eq!(lan_data, Some(0), "no data to the peer's metered uplink");
}

#[test]
fn withdrawal_closes_sockets_and_stops_forwarding() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    net.nodes[1].plane.withdraw(ASSOC).unwrap();
    net.drain(1);
    assert!(net.nodes[1].bound.is_empty(), "every socket closed");
    let target = net.nodes[0].target;
    net.service_sends(0, target, b"after withdraw");
    net.advance(Duration::from_millis(50));
    assert!(net.nodes[1].delivered.is_empty());
    assert_eq!(
        net.nodes[1].plane.withdraw(ASSOC),
        Err(DataPlaneError::NotInstalled(ASSOC))
    );
}

#[test]
fn uplink_counters_add_up_the_paths_and_outlive_them() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let target = net.nodes[0].target;
    for i in 0..20 {
        net.service_sends(0, target, &payload(i));
    }
    net.advance(Duration::from_millis(50));
    let uplink = UplinkId(0);
    let sum = |net: &Net, n: usize| {
        net.view(n)
            .paths()
            .filter(|p| p.uplink == uplink)
            .fold((0, 0), |(tx, rx), p| (tx + p.tx.bytes, rx + p.rx.bytes))
    };
    let sent = net.nodes[0].plane.uplink_traffic(uplink).sent;
    let received = net.nodes[1].plane.uplink_traffic(uplink).received;
    assert_eq!(sent.packets, 20);
    assert_eq!((sent.bytes, 0), sum(&net, 0));
    assert_eq!((0, received.bytes), sum(&net, 1));
    assert_eq!(received, sent);
    // The association goes, and its paths with it: the counts stay.
    net.nodes[1].plane.withdraw(ASSOC).unwrap();
    assert!(net.nodes[1].plane.association(ASSOC).is_none());
    assert_eq!(net.nodes[1].plane.uplink_traffic(uplink).received, received);
    assert_eq!(
        net.nodes[1].plane.uplink_traffic(UplinkId(7)),
        UplinkTraffic::default()
    );
}

#[test]
fn install_refuses_duplicates_and_ingress_conflicts() {
    let mut net = Net::new(false);
    let plane = &mut net.nodes[0].plane;
    let again = spec("127.0.0.1:41001", "127.0.0.1:51820", &[]);
    assert_eq!(
        plane.install(again),
        Err(DataPlaneError::AlreadyInstalled(ASSOC))
    );
    let mut clash = spec("127.0.0.1:41000", "127.0.0.1:51820", &[]);
    clash.id = AssocId(8);
    assert_eq!(
        plane.install(clash),
        Err(DataPlaneError::IngressInUse {
            ingress: addr("127.0.0.1:41000"),
            by: ASSOC
        })
    );
}

#[test]
fn replayed_and_foreign_key_control_packets_are_not_obeyed() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let now = net.now;
    let ping = ControlRepr {
        txid: 1,
        timestamp_us: net.nodes[1].plane.config().wall_clock.unix_us(now),
        body: ControlBody::Ping { pad: 19, policy: 0 },
    };
    let src = addr("192.0.2.1:40000");
    let authentic = ping.to_bytes(&AuthKey::new(&[3; 32]));
    for _ in 0..3 {
        net.mesh_receives(1, src, &authentic);
    }
    assert_eq!(net.view(1).counters().replays, 2);
    // Under another key it is just data from a validated path: delivered unchanged.
    let foreign = ping.to_bytes(&AuthKey::new(&[4; 32]));
    net.mesh_receives(1, src, &foreign);
    net.drain(1);
    assert_eq!(
        net.nodes[1].delivered.last().map(|b| b.to_vec()),
        Some(foreign.to_vec())
    );
}

#[test]
fn a_reflector_whose_clock_runs_ahead_does_not_shut_the_peer_out() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(1));
    let now = net.now;
    // A reflector's answer carries the reflector's time, here 20 s ahead
    // of the peer's (another machine, another clock). Taken into the
    // peer's replay window, it would make every packet of the peer's look
    // 20 s old.
    let ahead = ControlRepr {
        txid: 5,
        timestamp_us: net.nodes[0].plane.config().wall_clock.unix_us(now) + 20_000_000,
        body: ControlBody::ReflectResponse {
            observed: AddrRepr(addr("192.0.2.1:40000")),
        },
    };
    let payload = ahead.to_bytes(&AuthKey::new(&[3; 32]));
    net.mesh_receives(0, addr("203.0.113.1:7443"), &payload);
    net.advance(Duration::from_millis(100));
    assert!(net.view(0).is_up() && net.view(1).is_up());
    assert_eq!(net.view(0).counters().replays, 0);
}

#[test]
fn a_flood_of_sources_cannot_grow_the_path_table() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let junk = vec![0xEEu8; 500];
    for port in 0..10_000u16 {
        let src = SocketAddr::new(addr("203.0.113.66:1").ip(), 10_000 + port);
        net.mesh_receives(1, src, &junk);
    }
    net.drain(1);
    assert!(net.view(1).paths().count() <= MAX_PATHS);
    assert_eq!(net.view(1).counters().unvalidated, 10_000);
    assert!(net.nodes[1].delivered.is_empty());
    // Only a probe interval's budget of sources was challenged; the rest
    // cost a lookup and a count (benches/receive.rs, flood/spoofed).
    let c = net.view(1).counters();
    assert_eq!(
        c.challenges_suppressed,
        10_000 - u64::from(super::association::DATA_CHALLENGES)
    );
    // Found by the dataplane_receive fuzz target: a flood once filled the
    // path table for good, so the peer could no longer move to a new
    // address. Under the flood's spent budget, the rebound peer's own
    // authenticated probes teach its address within one probe interval.
    net.rebind = Some(addr("192.0.2.1:51111"));
    let target = net.nodes[0].target;
    net.service_sends(0, target, &[0x42; 200]);
    net.advance(Duration::from_millis(280));
    let rebound = net
        .view(1)
        .paths()
        .find(|p| p.remote == addr("192.0.2.1:51111"))
        .map(|p| p.state);
    assert_eq!(
        rebound,
        Some(PathState::Active),
        "revalidated after the flood"
    );
    net.service_sends(0, target, b"after the flood");
    net.advance(Duration::from_millis(30));
    assert_eq!(
        net.nodes[1].delivered.last().map(|b| b.to_vec()),
        Some(b"after the flood".to_vec())
    );
}

#[test]
fn a_spoofed_source_is_challenged_once_per_datagram_and_never_probed() {
    // Found by the dataplane_receive fuzz target: an address learned from
    // data was probed every interval forever, so one spoofed datagram made
    // the node ping a victim without end.
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let victim = addr("203.0.113.66:9999");
    let junk = vec![0xEEu8; 200];
    net.mesh_receives(1, victim, &junk);
    net.advance(Duration::from_secs(3));
    let (packets, bytes) = net.sent_to.get(&victim).copied().unwrap_or_default();
    assert_eq!(packets, 1, "one challenge, no probes");
    assert!(bytes <= junk.len() as u64);
    // An authentic ping from there makes it a path worth probing.
    let ping = ControlRepr {
        txid: 9,
        timestamp_us: net.nodes[1].plane.config().wall_clock.unix_us(net.now),
        body: ControlBody::Ping { pad: 19, policy: 0 },
    }
    .to_bytes(&AuthKey::new(&[3; 32]));
    net.mesh_receives(1, victim, &ping);
    net.advance(Duration::from_secs(1));
    assert!(net.sent_to[&victim].0 > 3, "probed once it proved the key");
}

#[test]
fn ingress_addresses_move_and_swap_without_touching_mesh_sockets() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let mut other = spec("127.0.0.1:41001", "127.0.0.1:51821", &[]);
    other.id = AssocId(8);
    net.nodes[0].plane.install(other).unwrap();
    net.drain(0);
    let mesh_before: Vec<(UplinkId, SocketId)> = net.view(0).mesh_sockets().collect();
    let paths_before: Vec<(PathId, PathState)> =
        net.view(0).paths().map(|p| (p.id, p.state)).collect();
    let plane = &mut net.nodes[0].plane;
    assert_eq!(
        plane.move_ingress(&[(ASSOC, addr("127.0.0.1:41001"))]),
        Err(DataPlaneError::IngressInUse {
            ingress: addr("127.0.0.1:41001"),
            by: AssocId(8)
        })
    );
    assert_eq!(
        plane.move_ingress(&[(AssocId(9), addr("127.0.0.1:41009"))]),
        Err(DataPlaneError::NotInstalled(AssocId(9)))
    );
    assert!(
        plane.poll_output().is_none(),
        "a refused move changes nothing"
    );
    let old = [ASSOC, AssocId(8)].map(|id| plane.association(id).unwrap().ingress_socket());
    plane
        .move_ingress(&[
            (ASSOC, addr("127.0.0.1:41001")),
            (AssocId(8), addr("127.0.0.1:41000")),
        ])
        .unwrap();
    let outputs: Vec<Output<DataEvent>> = std::iter::from_fn(|| plane.poll_output()).collect();
    let kinds: Vec<&str> = outputs
        .iter()
        .map(|o| match o {
            Output::CloseSocket { .. } => "close",
            Output::BindSocket { .. } => "bind",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["close", "close", "bind", "bind"],
        "both free before either binds"
    );
    assert!(matches!(outputs[0], Output::CloseSocket { socket } if socket == old[0]));
    let view = net.nodes[0].plane.association(ASSOC).unwrap();
    assert_ne!(view.ingress_socket(), old[0]);
    assert_eq!(view.spec().ingress, addr("127.0.0.1:41001"));
    assert_eq!(view.mesh_sockets().collect::<Vec<_>>(), mesh_before);
    assert_eq!(
        view.paths().map(|p| (p.id, p.state)).collect::<Vec<_>>(),
        paths_before
    );
    // Data still crosses, through the new ingress socket.
    for output in outputs {
        if let Output::BindSocket { socket, local } = output {
            net.nodes[0].bound.insert(socket, local);
        }
    }
    for socket in old {
        net.nodes[0].bound.remove(&socket);
    }
    let target = net.nodes[0].target;
    net.service_sends(0, target, b"after the move");
    net.advance(Duration::from_millis(20));
    assert_eq!(
        net.nodes[1].delivered.last().map(|b| b.to_vec()),
        Some(b"after the move".to_vec())
    );
}

#[test]
fn forwarded_payloads_are_exact_copies_carved_from_shared_blocks() {
    let mut arena = bytes::BytesMut::new();
    let a = super::own(&mut arena, b"first");
    let b = super::own(&mut arena, &[7u8; 1_400]);
    assert_eq!(&a[..], b"first");
    assert_eq!(&b[..], &[7u8; 1_400][..]);
    // Consecutive payloads sit next to each other in one block.
    assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
    // A payload larger than what is left starts a new block, and one larger
    // than a block still fits.
    let big = super::own(&mut arena, &vec![1u8; super::ARENA_BLOCK + 1]);
    assert_eq!(big.len(), super::ARENA_BLOCK + 1);
    assert!(big.iter().all(|&x| x == 1));
    assert_eq!(&a[..], b"first", "earlier payloads are untouched");
}

#[test]
fn an_uplink_that_loses_and_regains_its_address_is_rebound_without_a_restart() {
    let mut net = Net::new(true);
    net.advance(Duration::from_millis(50));
    let lan = UplinkId(1);
    let on_lan = |net: &Net| {
        net.view(1)
            .paths()
            .filter(|p| p.uplink == lan && p.state == PathState::Active)
            .count()
    };
    assert_eq!(on_lan(&net), 1);

    // The address goes: the socket closes and its path fails at once.
    net.nodes[1]
        .plane
        .set_uplink_address(net.now, lan, None)
        .unwrap();
    net.drain(1);
    assert_eq!(on_lan(&net), 0);
    assert!(!net.nodes[1]
        .bound
        .values()
        .any(|a| a.ip() == addr("10.0.0.2:0").ip()));
    assert!(net.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, DataEvent::PathFailed { .. })));
    assert!(net.view(1).is_up(), "the other uplink still carries it");
    let target = net.nodes[1].target;
    net.service_sends(1, target, b"over the wan");
    net.advance(Duration::from_millis(20));
    assert_eq!(
        net.nodes[0].delivered.last().unwrap().as_ref(),
        b"over the wan"
    );

    // It comes back on another address: bound and validated again.
    net.nodes[1]
        .plane
        .set_uplink_address(net.now, lan, Some("10.0.0.3".parse().unwrap()))
        .unwrap();
    net.advance(Duration::from_millis(300));
    assert!(net.nodes[1]
        .bound
        .values()
        .any(|a| *a == addr("10.0.0.3:40000")));
    assert_eq!(on_lan(&net), 1, "validated from its new address");
    assert!(net
        .view(0)
        .paths()
        .any(|p| p.remote == addr("10.0.0.3:40000") && p.state == PathState::Active));

    assert_eq!(
        net.nodes[1]
            .plane
            .set_uplink_address(net.now, UplinkId(9), None),
        Err(DataPlaneError::NoSuchUplink(UplinkId(9)))
    );
}

mod events;
