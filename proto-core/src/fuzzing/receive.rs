//! The data plane's receive path under arbitrary datagrams: two installed
//! associations, each with a validated path, fed whatever the input says on
//! any of their sockets (or none), from the validated peers, the local
//! services, strangers or a rebound peer, with raw bytes, the control magic,
//! authentic control packets under either association's key, replays and
//! datagrams far larger than any MTU, with time passing in between.
//!
//! Input layout: a sequence of records, each an opcode byte and its
//! arguments; missing bytes read as zero, so every input is valid.

mod seeds;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::dataplane::{
    AssocCounters, AssociationSpec, DataEvent, DataPlane, DataPlaneConfig, PathState, Traffic,
    UplinkSpec, MAX_PATHS, MAX_PENDING, REPLAY_CAPACITY,
};
use crate::id::{AssocId, PathId, ServiceId, SocketId, UplinkId};
use crate::machine::{Datagram, Input, Output, StateMachine};
use crate::time::WallClock;
use crate::wire::{classify, AddrRepr, AuthKey, Classified, ControlBody, ControlRepr, MAGIC};

pub use seeds::dataplane_receive_seeds;

const UNIX_START_US: u64 = 1_760_000_000_000_000;
/// Most outputs one input may cause: a probe round over every path of both
/// associations, and its events.
const MAX_OUTPUTS_PER_STEP: usize = 4 * MAX_PATHS + 16;
/// Largest datagram the input may ask for (a UDP datagram's maximum).
const MAX_DATAGRAM: usize = 65_535;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a fixed address")
}

/// One installed association as the harness knows it.
struct Side {
    id: AssocId,
    key: AuthKey,
    key_bytes: [u8; 32],
    ingress: SocketAddr,
    target: SocketAddr,
    /// The peer's configured candidate, validated during set-up.
    peer: SocketAddr,
    /// The same peer after a NAT rebinding.
    rebound: SocketAddr,
}

fn sides() -> [Side; 2] {
    let side = |n: u64, key: u8, ingress, target, peer, rebound| Side {
        id: AssocId(n),
        key: AuthKey::new(&[key; 32]),
        key_bytes: [key; 32],
        ingress: addr(ingress),
        target: addr(target),
        peer: addr(peer),
        rebound: addr(rebound),
    };
    [
        side(
            1,
            0xA1,
            "127.0.0.1:41000",
            "127.0.0.1:51820",
            "198.51.100.7:40000",
            "198.51.100.7:51111",
        ),
        side(
            2,
            0xB2,
            "127.0.0.1:41001",
            "127.0.0.1:51821",
            "203.0.113.9:40001",
            "203.0.113.9:52222",
        ),
    ]
}

/// Reads the input; past its end every byte is zero.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| (v << 8) | u64::from(self.byte()))
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let take = len.min(self.data.len());
        let (head, rest) = self.data.split_at(take);
        self.data = rest;
        head.to_vec()
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// What a datagram for another association must not change.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    counters: AssocCounters,
    current: Option<PathId>,
    replay_len: usize,
    paths: Vec<(PathId, SocketAddr, PathState, u64, u64, Traffic, Traffic)>,
}

/// Where a transmit went, as the harness classifies it.
struct Sent {
    socket: SocketId,
    dst: SocketAddr,
    payload: Bytes,
}

/// The data plane, its sockets as the harness bound them, and a model of
/// what the authentic peers and everyone else have done.
struct Rig {
    plane: DataPlane,
    now: Instant,
    wall: WallClock,
    sides: [Side; 2],
    bound: BTreeMap<SocketId, SocketAddr>,
    next_port: u16,
    /// Pings the plane sent, by (side, destination): their txids.
    pings: BTreeMap<(usize, SocketAddr), VecDeque<u64>>,
    /// Remote addresses that proved the key of a side (a pong validated them).
    validated: BTreeSet<(usize, SocketAddr)>,
    /// Addresses that sent an authentic control packet to a side.
    authentic: BTreeSet<(usize, SocketAddr)>,
    /// Bytes each address sent into a side's mesh socket, and bytes that
    /// side's mesh socket sent it.
    bytes_in: BTreeMap<(usize, SocketAddr), u64>,
    bytes_out: BTreeMap<(usize, SocketAddr), u64>,
    /// Authentic control packets the input made, for replays.
    crafted: VecDeque<(usize, Bytes)>,
    /// Whether the peers answer the plane's pings to their addresses.
    answering: bool,
}

impl Rig {
    fn new(epoch: Instant) -> Self {
        let wall = WallClock::new(epoch, UNIX_START_US);
        let uplink = UplinkSpec::new(UplinkId(0), "wan", addr("192.0.2.1:0").ip());
        let mut plane = DataPlane::new(DataPlaneConfig::new(vec![uplink], 7, wall));
        let sides = sides();
        for (n, side) in sides.iter().enumerate() {
            plane
                .install(AssociationSpec {
                    id: side.id,
                    service: ServiceId(n as u32 + 1),
                    peer: format!("peer{n}/svc"),
                    key: side.key_bytes,
                    ingress: side.ingress,
                    target: side.target,
                    mesh_port: 0,
                    remotes: vec![side.peer],
                })
                .expect("two distinct associations install");
        }
        let mut rig = Self {
            plane,
            now: epoch,
            wall,
            sides,
            bound: BTreeMap::new(),
            next_port: 40_000,
            pings: BTreeMap::new(),
            validated: BTreeSet::new(),
            authentic: BTreeSet::new(),
            bytes_in: BTreeMap::new(),
            bytes_out: BTreeMap::new(),
            crafted: VecDeque::new(),
            answering: true,
        };
        // Bind, then let both peers answer the first probes.
        rig.drain();
        rig.advance(Duration::from_millis(1));
        for side in &rig.sides {
            let view = rig.plane.association(side.id).expect("installed");
            assert!(view.is_up(), "set-up validates both paths");
        }
        rig
    }

    fn side_of_socket(&self, socket: SocketId) -> Option<(usize, bool)> {
        self.sides.iter().enumerate().find_map(|(n, side)| {
            let view = self.plane.association(side.id)?;
            if view.ingress_socket() == socket {
                Some((n, true))
            } else if view.mesh_sockets().any(|(_, s)| s == socket) {
                Some((n, false))
            } else {
                None
            }
        })
    }

    fn ingress_socket(&self, n: usize) -> SocketId {
        self.plane
            .association(self.sides[n].id)
            .expect("installed")
            .ingress_socket()
    }

    fn mesh_socket(&self, n: usize) -> SocketId {
        let view = self.plane.association(self.sides[n].id).expect("installed");
        let socket = view.mesh_sockets().next().expect("one uplink").1;
        socket
    }

    fn path_active(&self, n: usize, remote: SocketAddr) -> bool {
        let view = self.plane.association(self.sides[n].id).expect("installed");
        let active = view
            .paths()
            .any(|p| p.remote == remote && p.state == PathState::Active);
        active
    }

    /// Drains every output, binding sockets as asked; returns the transmits
    /// and the events, and checks what must hold of any output.
    fn drain(&mut self) -> (Vec<Sent>, Vec<DataEvent>) {
        let mut sent = Vec::new();
        let mut events = Vec::new();
        let mut count = 0;
        while let Some(output) = self.plane.poll_output() {
            count += 1;
            assert!(
                count <= MAX_OUTPUTS_PER_STEP,
                "one input caused more than {MAX_OUTPUTS_PER_STEP} outputs"
            );
            match output {
                Output::BindSocket { socket, mut local } => {
                    if local.port() == 0 {
                        local.set_port(self.next_port);
                        self.next_port += 1;
                    }
                    assert!(
                        self.bound.insert(socket, local).is_none(),
                        "{socket} bound twice"
                    );
                    let now = self.now;
                    self.plane
                        .handle_input(now, Input::SocketBound { socket, local });
                }
                Output::CloseSocket { socket } => panic!("{socket} closed: nothing was withdrawn"),
                Output::Transmit(t) => {
                    assert!(
                        self.bound.contains_key(&t.socket),
                        "sent from {} which is not bound",
                        t.socket
                    );
                    if let Some((n, false)) = self.side_of_socket(t.socket) {
                        *self.bytes_out.entry((n, t.dst)).or_default() += t.payload.len() as u64;
                        if let Classified::Control(repr) = classify(&t.payload, &self.sides[n].key)
                        {
                            if let ControlBody::Ping { .. } = repr.body {
                                let txids = self.pings.entry((n, t.dst)).or_default();
                                if txids.len() == MAX_PENDING {
                                    txids.pop_front();
                                }
                                txids.push_back(repr.txid);
                            }
                        }
                    }
                    sent.push(Sent {
                        socket: t.socket,
                        dst: t.dst,
                        payload: t.payload,
                    });
                }
                Output::Deliver { .. } => panic!("the data plane delivers through sockets"),
                Output::Event(event) => events.push(event),
                other => panic!("the data plane owns no streams: {other:?}"),
            }
        }
        (sent, events)
    }

    /// The peers answer the plane's outstanding pings to their own
    /// addresses (configured and rebound), as authentic peers do.
    fn answer_pings(&mut self) {
        if !self.answering {
            return;
        }
        for n in 0..2 {
            for from in [self.sides[n].peer, self.sides[n].rebound] {
                let Some(txids) = self.pings.get(&(n, from)).cloned() else {
                    continue;
                };
                for txid in txids {
                    let pong = ControlRepr {
                        txid,
                        timestamp_us: self.wall.unix_us(self.now),
                        body: ControlBody::Pong {
                            observed: AddrRepr(addr("192.0.2.1:40000")),
                        },
                    }
                    .to_bytes(&self.sides[n].key);
                    let socket = self.mesh_socket(n);
                    self.receive(socket, from, &pong);
                }
                self.pings.remove(&(n, from));
            }
        }
    }

    /// Everything observable of side `n`, to prove a datagram for the other
    /// side left it alone.
    fn fingerprint(&self, n: usize) -> Fingerprint {
        let view = self.plane.association(self.sides[n].id).expect("installed");
        Fingerprint {
            counters: view.counters(),
            current: view.current_path(),
            replay_len: view.replay_len(),
            paths: view
                .paths()
                .map(|p| (p.id, p.remote, p.state, p.pings, p.pongs, p.tx, p.rx))
                .collect(),
        }
    }

    /// Feeds one datagram and checks everything it caused.
    fn receive(&mut self, socket: SocketId, src: SocketAddr, payload: &[u8]) {
        let target = self.side_of_socket(socket);
        let others: Vec<(usize, Fingerprint)> = (0..2)
            .filter(|&n| target.is_none_or(|(t, _)| t != n))
            .map(|n| (n, self.fingerprint(n)))
            .collect();
        // What this datagram is to the side whose socket it reached.
        let mut authentic_pong = false;
        if let Some((n, false)) = target {
            *self.bytes_in.entry((n, src)).or_default() += payload.len() as u64;
            if let Classified::Control(repr) = classify(payload, &self.sides[n].key) {
                self.authentic.insert((n, src));
                // A pong answers one of our pings to this host; it may come
                // from another port than the one pinged.
                authentic_pong = matches!(repr.body, ControlBody::Pong { .. })
                    && self.pings.iter().any(|((m, to), t)| {
                        *m == n && to.ip() == src.ip() && t.contains(&repr.txid)
                    });
            }
        }
        let was_active = target.is_some_and(|(n, _)| self.path_active(n, src));
        let now = self.now;
        self.plane.handle_input(
            now,
            Input::Datagram(Datagram {
                socket,
                src,
                payload,
            }),
        );
        let (sent, events) = self.drain();
        for (n, before) in others {
            assert_eq!(
                self.fingerprint(n),
                before,
                "a datagram for another socket changed association {}",
                self.sides[n].id
            );
        }
        let Some((n, is_ingress)) = target else {
            assert!(
                sent.is_empty() && events.is_empty(),
                "a datagram on an unknown socket had effects"
            );
            return;
        };
        let side = &self.sides[n];
        let ingress_socket = self.ingress_socket(n);
        let mesh_socket = self.mesh_socket(n);
        for event in &events {
            if let DataEvent::PathValidated { assoc, remote, .. } = event {
                assert_eq!(*assoc, side.id, "validated on the wrong association");
                // The pong may come from another port of the address we
                // pinged (a NAT that maps per destination answers from a
                // new mapping): the path validated is the one pinged.
                assert_eq!(
                    remote.ip(),
                    src.ip(),
                    "validated an address of another host than the sender's"
                );
                assert!(
                    authentic_pong,
                    "a path was validated without an authentic pong to one of our pings"
                );
                self.validated.insert((n, *remote));
                self.validated.insert((n, src));
            }
        }
        if is_ingress {
            if src != side.target {
                assert!(sent.is_empty(), "a foreign source reached the mesh");
                return;
            }
            assert!(sent.len() <= 1, "one datagram left {} times", sent.len());
            for s in &sent {
                assert_eq!(s.socket, mesh_socket, "carried from another socket");
                assert_eq!(&s.payload[..], payload, "carried altered");
                assert!(
                    self.validated.contains(&(n, s.dst)) && self.path_active(n, s.dst),
                    "carried to {} which is not a validated path",
                    s.dst
                );
            }
            return;
        }
        // A mesh datagram: at most one delivery, from the ingress socket to
        // this side's service, unchanged, from a validated path only.
        let mut deliveries = 0;
        for s in &sent {
            if s.socket == ingress_socket {
                deliveries += 1;
                assert_eq!(s.dst, side.target, "delivered to another service");
                assert_eq!(&s.payload[..], payload, "delivered altered");
                assert!(
                    was_active && self.validated.contains(&(n, src)),
                    "delivered data from {src}, which is not a validated path"
                );
            } else {
                // Anything else answers the sender, from the same socket,
                // and is never larger than what it answers.
                assert_eq!(s.dst, src, "a mesh datagram caused a send elsewhere");
                assert_eq!(s.socket, mesh_socket, "answered from another socket");
                assert!(
                    s.payload.len() <= payload.len(),
                    "a {}-byte datagram was answered with {} bytes",
                    payload.len(),
                    s.payload.len()
                );
            }
        }
        assert!(deliveries <= 1, "one datagram delivered {deliveries} times");
        assert!(sent.len() <= 3, "one datagram caused {} sends", sent.len());
    }

    /// Lets `by` pass, firing due timers; the peers answer probes if they do.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.plane.poll_timeout().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            let now = self.now;
            self.plane.handle_timeout(now);
            let (sent, _) = self.drain();
            for s in &sent {
                let (n, ingress) = self.side_of_socket(s.socket).expect("our socket");
                assert!(!ingress, "a timer sent from an ingress socket");
                assert!(
                    matches!(
                        classify(&s.payload, &self.sides[n].key),
                        Classified::Control(_)
                    ),
                    "a timer sent something other than an authentic control packet"
                );
            }
            self.answer_pings();
        }
        self.now = until;
        // Challenges sent since the last timer are answered too.
        self.answer_pings();
    }

    /// Checks the bounds that must hold after any input.
    fn check_bounds(&self) {
        for side in &self.sides {
            let view = self.plane.association(side.id).expect("installed");
            assert!(
                view.paths().count() <= MAX_PATHS,
                "path table over its bound"
            );
            assert!(
                view.replay_len() <= REPLAY_CAPACITY,
                "replay cache over its bound"
            );
            for p in view.paths() {
                assert!(
                    p.outstanding() <= MAX_PENDING,
                    "pending pings over their bound"
                );
            }
        }
        assert_eq!(self.bound.len(), 4, "sockets came or went");
    }

    /// A source address the input picks.
    fn source(&self, r: &mut Reader<'_>) -> SocketAddr {
        match r.byte() % 8 {
            0 => self.sides[0].peer,
            1 => self.sides[1].peer,
            2 => self.sides[0].target,
            3 => self.sides[1].target,
            4 => self.sides[0].rebound,
            5 => self.sides[1].rebound,
            // Strangers: a small space, so the fuzzer can repeat one.
            6 => SocketAddr::new(addr("203.0.113.66:0").ip(), 10_000 + u16::from(r.byte())),
            _ => SocketAddr::new(
                addr("198.18.0.0:0").ip(),
                (u16::from(r.byte()) << 8) | u16::from(r.byte()),
            ),
        }
    }

    /// An authentic control packet under side `n`'s key.
    fn control(&mut self, n: usize, src: SocketAddr, r: &mut Reader<'_>) -> Bytes {
        let kind = r.byte();
        let txid = match kind % 4 {
            // Answer one of the plane's real pings to this address.
            1 => self
                .pings
                .get(&(n, src))
                .and_then(|t| t.get(usize::from(r.byte()) % t.len().max(1)).copied())
                .unwrap_or_else(|| r.u64()),
            _ => r.u64(),
        };
        // Mostly fresh timestamps, sometimes far in the past or future.
        let skew = i64::from(r.byte() as i8) * 100_000;
        let timestamp_us = self.wall.unix_us(self.now).saturating_add_signed(skew);
        let body = match kind % 4 {
            0 => ControlBody::Ping {
                pad: r.u16() % 1_401,
                policy: (kind >> 2) & 3,
            },
            1 | 2 => ControlBody::Pong {
                observed: AddrRepr(src),
            },
            _ => ControlBody::ReflectRequest {
                assoc: r.u64(),
                pad: r.u16() % 1_401,
            },
        };
        let packet = ControlRepr {
            txid,
            timestamp_us,
            body,
        }
        .to_bytes(&self.sides[n].key);
        if self.crafted.len() == 16 {
            self.crafted.pop_front();
        }
        self.crafted.push_back((n, packet.clone()));
        packet
    }

    /// One record of the input.
    fn step(&mut self, r: &mut Reader<'_>) {
        match r.byte() % 8 {
            0..=4 => {
                let socket = match r.byte() % 5 {
                    0 => self.ingress_socket(0),
                    1 => self.ingress_socket(1),
                    2 => self.mesh_socket(0),
                    3 => self.mesh_socket(1),
                    _ => SocketId(1_000 + u32::from(r.byte())),
                };
                let src = self.source(r);
                let payload: Vec<u8> = match r.byte() % 6 {
                    0 => {
                        let len = usize::from(r.byte());
                        r.bytes(len)
                    }
                    1 => {
                        let len = usize::from(r.byte());
                        let mut p = MAGIC.to_vec();
                        p.extend(r.bytes(len));
                        p
                    }
                    2 => self.control(0, src, r).to_vec(),
                    3 => self.control(1, src, r).to_vec(),
                    4 => {
                        // Larger than any MTU, up to a UDP datagram's maximum.
                        let len = usize::from(r.u16()).min(MAX_DATAGRAM);
                        let fill = r.byte();
                        let mut p = vec![fill; len];
                        if fill & 1 == 1 {
                            let n = MAGIC.len().min(len);
                            p[..n].copy_from_slice(&MAGIC[..n]);
                        }
                        p
                    }
                    _ => {
                        let at = usize::from(r.byte());
                        match self.crafted.len() {
                            0 => Vec::new(),
                            len => self.crafted[at % len].1.to_vec(),
                        }
                    }
                };
                self.receive(socket, src, &payload);
            }
            5 => {
                let ms = u64::from(r.u16() % 2_000);
                self.advance(Duration::from_millis(ms));
            }
            6 => self.answering = !self.answering,
            _ => {
                // A burst: the same datagram many times (a flood).
                let socket = if r.byte() & 1 == 0 {
                    self.mesh_socket(0)
                } else {
                    self.mesh_socket(1)
                };
                let src = self.source(r);
                let len = usize::from(r.byte());
                let payload = r.bytes(len);
                for _ in 0..(1 + r.byte() % 64) {
                    self.receive(socket, src, &payload);
                }
            }
        }
        self.check_bounds();
    }

    /// What must still hold after the input: an unvalidated address got
    /// no more bytes than it sent, and the authentic peer can still move to
    /// a new address unless every path is in use.
    fn finish(&mut self) {
        for (&(n, dst), &out) in &self.bytes_out {
            let known = dst == self.sides[n].peer || self.authentic.contains(&(n, dst));
            if !known {
                let sent_in = self.bytes_in.get(&(n, dst)).copied().unwrap_or(0);
                assert!(
                    out <= sent_in,
                    "{dst} never proved a key and got {out} bytes for the {sent_in} it sent"
                );
            }
        }
        let fresh = addr("198.51.100.7:49999");
        let n = 0;
        let all_active = {
            let view = self.plane.association(self.sides[n].id).expect("installed");
            view.paths().count() == MAX_PATHS && view.paths().all(|p| p.state == PathState::Active)
        };
        // Newer than anything the input made (its skew is under 13 s), so
        // never a replay.
        let ping = ControlRepr {
            txid: 0,
            timestamp_us: self.wall.unix_us(self.now) + 13_000_000,
            body: ControlBody::Ping { pad: 19, policy: 0 },
        }
        .to_bytes(&self.sides[n].key);
        let socket = self.mesh_socket(n);
        self.receive(socket, fresh, &ping);
        let learned = self
            .plane
            .association(self.sides[n].id)
            .expect("installed")
            .paths()
            .any(|p| p.remote == fresh);
        assert!(
            learned || all_active,
            "the authentic peer at a new address was not learned"
        );
    }
}

/// Runs the data plane's receive path on `data` (see the module docs),
/// starting at `epoch`, and checks the invariants that must hold for any
/// input: no panic; every delivered datagram leaves the correct
/// association's ingress socket for its own service, byte-for-byte, and only
/// from a validated path; data from the local service leaves only on a
/// validated path of its own association; nothing reaches the other
/// association's state; answers are never larger than what they answer; an
/// address that never proved the key gets no more bytes than it sent;
/// paths, replay cache, pending pings and outputs per input stay bounded;
/// and a flood cannot keep the authentic peer from moving to a new address.
///
/// # Panics
/// When an invariant is broken; that is the finding.
pub fn dataplane_receive(data: &[u8], epoch: Instant) {
    let mut rig = Rig::new(epoch);
    let mut reader = Reader { data };
    let mut steps = 0;
    while !reader.is_empty() && steps < 4_096 {
        rig.step(&mut reader);
        steps += 1;
    }
    rig.finish();
}

/// A data plane set up as the harness sets it up (two associations, each
/// with its path to its peer validated), handed over for benchmarks of the
/// receive path.
#[derive(Debug)]
pub struct ValidatedPlane {
    /// The plane, its outputs drained.
    pub plane: DataPlane,
    /// The first association's mesh socket.
    pub mesh: SocketId,
    /// The first association's ingress socket.
    pub ingress: SocketId,
    /// The first association's validated peer.
    pub peer: SocketAddr,
    /// The first association's service target (the only sender its
    /// ingress accepts).
    pub target: SocketAddr,
    /// The plane's time after set-up.
    pub now: Instant,
}

impl ValidatedPlane {
    /// Sets the plane up, starting at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        let rig = Rig::new(epoch);
        let (mesh, ingress) = (rig.mesh_socket(0), rig.ingress_socket(0));
        Self {
            mesh,
            ingress,
            peer: rig.sides[0].peer,
            target: rig.sides[0].target,
            now: rig.now,
            plane: rig.plane,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_seed_runs_clean() {
        let seeds = dataplane_receive_seeds();
        assert!(seeds.len() >= 20);
        for (name, input) in seeds {
            let run = std::panic::catch_unwind(|| dataplane_receive(&input, crate::test_epoch()));
            assert!(run.is_ok(), "seed {name} broke an invariant");
        }
    }

    fn seeded_input() -> impl Strategy<Value = Vec<u8>> {
        let seeds: Vec<Vec<u8>> = dataplane_receive_seeds()
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..1_024),
            // A seed with random records spliced in, so runs start from
            // meaningful states more often than random bytes reach them.
            (
                proptest::sample::select(seeds),
                proptest::collection::vec(any::<u8>(), 0..256),
                any::<prop::sample::Index>(),
            )
                .prop_map(|(seed, extra, at)| {
                    let at = at.index(seed.len() + 1);
                    let mut input = seed[..at].to_vec();
                    input.extend(extra);
                    input.extend(&seed[at..]);
                    input
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn any_input_keeps_the_receive_path_invariants(input in seeded_input()) {
            dataplane_receive(&input, crate::test_epoch());
        }
    }
}
