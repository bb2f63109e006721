//! The discrete-event world: hosts, network segments, wires (each a pair of
//! one-way [`Link`]s) and NAT boxes, driven from one event queue ordered by
//! (time, sequence). Everything random comes from the world's seed; the
//! [`TraceHash`] of a run proves that the same seed gives the same run.

mod host;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use transitloom_proto_core::driver::Pump;
use transitloom_proto_core::rng::Rng;
use transitloom_proto_core::StateMachine;

pub use host::{HostApp, Hosted, SimClock, SimIo, INBOX_LIMIT};

use crate::link::{DropReason, Fate, Link, LinkParams};
use crate::nat::{NatBox, NatParams};
use crate::trace::{fingerprint, TraceHash};
use crate::SimError;

/// A host in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostId(pub usize);
/// A network segment (a switch, a LAN, the public internet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentId(pub usize);
/// A wire between an endpoint (host interface or NAT side) and a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WireId(pub usize);
/// A NAT box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatId(pub usize);

/// Which way along a wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    /// From the endpoint into the segment (a host's upload).
    ToSegment,
    /// From the segment to the endpoint (a host's download).
    ToEndpoint,
}

/// Packets pass through at most this many segments (routing loops die).
const HOP_LIMIT: u8 = 8;

#[derive(Debug, Clone)]
struct Packet {
    src: SocketAddr,
    dst: SocketAddr,
    payload: Bytes,
    hops: u8,
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Host(HostId),
    NatInside(NatId),
    NatOutside(NatId),
}

#[derive(Debug)]
struct Wire {
    endpoint: Endpoint,
    segment: SegmentId,
    to_segment: Link,
    to_endpoint: Link,
}

impl Wire {
    fn link_mut(&mut self, dir: Dir) -> &mut Link {
        match dir {
            Dir::ToSegment => &mut self.to_segment,
            Dir::ToEndpoint => &mut self.to_endpoint,
        }
    }
}

#[derive(Debug)]
struct Segment {
    name: String,
    routes: BTreeMap<IpAddr, WireId>,
    default: Option<WireId>,
    /// Address pairs (lower first) whose packets the segment drops, both
    /// ways: a firewall between two hosts that leaves their other traffic.
    blocked: BTreeSet<(IpAddr, IpAddr)>,
}

struct Host {
    name: String,
    /// (address, wire) per interface.
    ifaces: Vec<(IpAddr, WireId)>,
    app: Option<Box<dyn HostApp>>,
    io: SimIo,
    pump: Pump,
    wakes: BTreeSet<Instant>,
}

#[derive(Debug)]
struct Nat {
    name: String,
    nat: NatBox,
    inside: WireId,
    outside: WireId,
}

type Action = Box<dyn FnOnce(&mut World)>;
type Invariant = Box<dyn FnMut(&World) -> Result<(), String>>;

enum Event {
    Arrive {
        wire: WireId,
        dir: Dir,
        generation: u64,
        packet: Packet,
    },
    Wake(HostId),
    Action(Action),
}

/// Counters of what the world did with packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// Datagrams hosts sent.
    pub sent: u64,
    /// Datagrams that reached a host socket.
    pub delivered: u64,
    /// Dropped by a link, per reason: down, mtu, queue, loss.
    pub link_dropped: [u64; 4],
    /// Lost in flight because their link went down.
    pub lost_in_flight: u64,
    /// No route in a segment.
    pub no_route: u64,
    /// No socket bound at the destination host.
    pub no_socket: u64,
    /// Dropped by a NAT (unmapped, filtered, exhausted, no hairpinning).
    pub nat_dropped: u64,
    /// A host's inbox was full.
    pub inbox_overflow: u64,
    /// The hop limit expired.
    pub hop_limit: u64,
    /// Dropped by a segment's block between two addresses.
    pub blocked: u64,
}

/// The simulated network. See the module docs.
pub struct World {
    epoch: Instant,
    now: Instant,
    rng: Rng,
    seq: u64,
    queue: BTreeMap<(Instant, u64), Event>,
    hosts: Vec<Host>,
    segments: Vec<Segment>,
    wires: Vec<Wire>,
    nats: Vec<Nat>,
    trace: TraceHash,
    stats: WorldStats,
    invariants: Vec<(String, Invariant)>,
    violations: Vec<String>,
    events_run: u64,
}

impl Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("elapsed", &self.elapsed())
            .field("hosts", &self.hosts.len())
            .field("segments", &self.segments)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn addr_words(addr: SocketAddr) -> [u64; 3] {
    let octets = match addr.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&octets[..8]);
    lo.copy_from_slice(&octets[8..]);
    [
        u64::from_be_bytes(hi),
        u64::from_be_bytes(lo),
        u64::from(addr.port()),
    ]
}

impl World {
    /// An empty world whose every random choice follows from `seed`.
    pub fn new(seed: u64) -> Self {
        // The one real clock read: virtual time is an offset from it, and
        // nothing observable depends on its value.
        #[allow(clippy::disallowed_methods)]
        let epoch = Instant::now();
        let mut trace = TraceHash::default();
        trace.record(&[seed]);
        Self {
            epoch,
            now: epoch,
            rng: Rng::new(seed),
            seq: 0,
            queue: BTreeMap::new(),
            hosts: Vec::new(),
            segments: Vec::new(),
            wires: Vec::new(),
            nats: Vec::new(),
            trace,
            stats: WorldStats::default(),
            invariants: Vec::new(),
            violations: Vec::new(),
            events_run: 0,
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The instant the world started at.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// A child random generator, for machines and apps placed in the world.
    pub fn fork_rng(&mut self) -> Rng {
        self.rng.fork()
    }

    /// A new seed drawn from the world's generator.
    pub fn fork_seed(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Adds a segment; `name` is for summaries.
    pub fn add_segment(&mut self, name: &str) -> SegmentId {
        self.segments.push(Segment {
            name: name.to_owned(),
            routes: BTreeMap::new(),
            default: None,
            blocked: BTreeSet::new(),
        });
        SegmentId(self.segments.len() - 1)
    }

    /// Adds a host with no interface yet.
    pub fn add_host(&mut self, name: &str) -> HostId {
        self.hosts.push(Host {
            name: name.to_owned(),
            ifaces: Vec::new(),
            app: None,
            io: SimIo::default(),
            pump: Pump::new(64, 4_096),
            wakes: BTreeSet::new(),
        });
        HostId(self.hosts.len() - 1)
    }

    /// Gives `host` an interface with address `addr` on `segment`, over a
    /// wire whose upload is `up` and download is `down`.
    ///
    /// # Errors
    /// Invalid link parameters, or an address already used on the segment.
    pub fn add_iface(
        &mut self,
        host: HostId,
        addr: IpAddr,
        segment: SegmentId,
        up: LinkParams,
        down: LinkParams,
    ) -> Result<WireId, SimError> {
        self.check_free(segment, addr)?;
        let wire = self.add_wire(Endpoint::Host(host), segment, up, down)?;
        self.route(segment, addr, wire)?;
        let h = &mut self.hosts[host.0];
        h.ifaces.push((addr, wire));
        h.io.addrs.push(addr);
        Ok(wire)
    }

    /// Adds a NAT whose public side has `public_ip` on `outside` and whose
    /// inside is the default gateway of `inside`. Both wires start ideal;
    /// change them with [`World::link_mut`].
    ///
    /// # Errors
    /// Invalid NAT parameters, or an address clash on `outside`.
    pub fn add_nat(
        &mut self,
        name: &str,
        params: NatParams,
        public_ip: IpAddr,
        outside: SegmentId,
        inside: SegmentId,
    ) -> Result<NatId, SimError> {
        self.check_free(outside, public_ip)?;
        let nat = NatBox::new(params, public_ip, self.rng.fork())?;
        let id = NatId(self.nats.len());
        let out_wire = self.add_wire(
            Endpoint::NatOutside(id),
            outside,
            LinkParams::ideal(),
            LinkParams::ideal(),
        )?;
        let in_wire = self.add_wire(
            Endpoint::NatInside(id),
            inside,
            LinkParams::ideal(),
            LinkParams::ideal(),
        )?;
        self.route(outside, public_ip, out_wire)?;
        self.segments[inside.0].default = Some(in_wire);
        self.nats.push(Nat {
            name: name.to_owned(),
            nat,
            inside: in_wire,
            outside: out_wire,
        });
        Ok(id)
    }

    fn add_wire(
        &mut self,
        endpoint: Endpoint,
        segment: SegmentId,
        up: LinkParams,
        down: LinkParams,
    ) -> Result<WireId, SimError> {
        let to_segment = Link::new(up, self.rng.fork())?;
        let to_endpoint = Link::new(down, self.rng.fork())?;
        self.wires.push(Wire {
            endpoint,
            segment,
            to_segment,
            to_endpoint,
        });
        Ok(WireId(self.wires.len() - 1))
    }

    fn check_free(&self, segment: SegmentId, addr: IpAddr) -> Result<(), SimError> {
        let seg = self
            .segments
            .get(segment.0)
            .ok_or_else(|| SimError::Topology(format!("no segment {segment:?}")))?;
        if seg.routes.contains_key(&addr) {
            return Err(SimError::Topology(format!(
                "address {addr} is used twice on segment {}",
                seg.name
            )));
        }
        Ok(())
    }

    fn route(&mut self, segment: SegmentId, addr: IpAddr, wire: WireId) -> Result<(), SimError> {
        self.check_free(segment, addr)?;
        self.segments[segment.0].routes.insert(addr, wire);
        Ok(())
    }

    /// Drops (`true`) or passes again (`false`) every packet between `a`
    /// and `b` on `segment`, both ways; their traffic with anyone else
    /// is untouched.
    pub fn set_blocked(&mut self, segment: SegmentId, a: IpAddr, b: IpAddr, blocked: bool) {
        let pair = if a <= b { (a, b) } else { (b, a) };
        let set = &mut self.segments[segment.0].blocked;
        if blocked {
            set.insert(pair);
        } else {
            set.remove(&pair);
        }
    }

    /// Makes `via` the way out of `segment` for unknown destinations.
    pub fn set_default_route(&mut self, segment: SegmentId, via: WireId) {
        self.segments[segment.0].default = Some(via);
    }

    /// Runs `machine` on `host` (replacing what ran there, like a restart:
    /// its sockets close and queued datagrams are lost).
    pub fn install<M>(&mut self, host: HostId, machine: M)
    where
        M: StateMachine + 'static,
        M::Event: Debug + 'static,
    {
        let h = &mut self.hosts[host.0];
        h.io.reset();
        h.app = Some(Box::new(Hosted::new(machine, self.epoch)));
        self.wake(host);
    }

    /// Stops whatever runs on `host` (a crash): sockets close, nothing runs.
    pub fn stop(&mut self, host: HostId) {
        let h = &mut self.hosts[host.0];
        h.io.reset();
        h.app = None;
    }

    /// The machine on `host`, if it is of type `M`.
    pub fn app<M>(&mut self, host: HostId) -> Option<&mut Hosted<M>>
    where
        M: StateMachine + 'static,
        M::Event: Debug + 'static,
    {
        self.hosts[host.0].app.as_mut()?.as_any_mut().downcast_mut()
    }

    /// The machine on `host`, read-only.
    pub fn app_ref<M>(&self, host: HostId) -> Option<&Hosted<M>>
    where
        M: StateMachine + 'static,
        M::Event: Debug + 'static,
    {
        self.hosts[host.0].app.as_ref()?.as_any().downcast_ref()
    }

    /// Schedules a pump of `host` now (after a scenario changed its machine).
    pub fn wake(&mut self, host: HostId) {
        let now = self.now;
        self.schedule_wake(host, now);
    }

    fn schedule_wake(&mut self, host: HostId, at: Instant) {
        if self.hosts[host.0].wakes.insert(at) {
            self.push(at, Event::Wake(host));
        }
    }

    /// Runs `action` at `offset` after the world's start.
    pub fn at(&mut self, offset: Duration, action: impl FnOnce(&mut World) + 'static) {
        let at = (self.epoch + offset).max(self.now);
        self.push(at, Event::Action(Box::new(action)));
    }

    /// Runs `action` every `period` from `start` until `stop` (offsets from the start).
    pub fn every(
        &mut self,
        start: Duration,
        period: Duration,
        stop: Duration,
        action: impl FnMut(&mut World) + 'static,
    ) {
        fn step(
            world: &mut World,
            at: Duration,
            period: Duration,
            stop: Duration,
            mut action: Box<dyn FnMut(&mut World)>,
        ) {
            action(world);
            let next = at + period;
            if next < stop {
                world.at(next, move |w| step(w, next, period, stop, action));
            }
        }
        assert!(period > Duration::ZERO, "a repeating action needs a period");
        let action: Box<dyn FnMut(&mut World)> = Box::new(action);
        if start < stop {
            self.at(start, move |w| step(w, start, period, stop, action));
        }
    }

    /// One direction of a wire's link, to change its parameters or state.
    pub fn link_mut(&mut self, wire: WireId, dir: Dir) -> &mut Link {
        self.wires[wire.0].link_mut(dir)
    }

    /// One direction of a wire's link, read-only.
    pub fn link(&self, wire: WireId, dir: Dir) -> &Link {
        match dir {
            Dir::ToSegment => &self.wires[wire.0].to_segment,
            Dir::ToEndpoint => &self.wires[wire.0].to_endpoint,
        }
    }

    /// Takes both directions of a wire down or up; packets in flight on a
    /// wire that goes down are lost.
    pub fn set_wire_up(&mut self, wire: WireId, up: bool) {
        let w = &mut self.wires[wire.0];
        w.to_segment.set_up(up);
        w.to_endpoint.set_up(up);
        let at = self.now - self.epoch;
        self.trace
            .record(&[6, at.as_nanos() as u64, wire.0 as u64, u64::from(up)]);
    }

    /// A NAT box, to rebind it or change its address.
    pub fn nat_mut(&mut self, nat: NatId) -> &mut NatBox {
        &mut self.nats[nat.0].nat
    }

    /// A NAT box, read-only.
    pub fn nat(&self, nat: NatId) -> &NatBox {
        &self.nats[nat.0].nat
    }

    /// Moves a NAT to a new public address (routes follow); its mappings are lost.
    ///
    /// # Errors
    /// When the address is already used on the NAT's outside segment.
    pub fn set_nat_public_ip(&mut self, nat: NatId, ip: IpAddr) -> Result<(), SimError> {
        let (old, outside) = {
            let n = &self.nats[nat.0];
            (n.nat.public_ip(), n.outside)
        };
        let segment = self.wires[outside.0].segment;
        self.segments[segment.0].routes.remove(&old);
        self.route(segment, ip, outside)?;
        self.nats[nat.0].nat.set_public_ip(ip);
        Ok(())
    }

    /// Checks `check` after every event; failures are collected in
    /// [`World::violations`].
    pub fn add_invariant(
        &mut self,
        name: &str,
        check: impl FnMut(&World) -> Result<(), String> + 'static,
    ) {
        self.invariants.push((name.to_owned(), Box::new(check)));
    }

    /// Every invariant violation so far, with its time.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The trace hash of everything that happened so far.
    pub fn trace(&self) -> TraceHash {
        self.trace
    }

    /// Packet counters.
    pub fn stats(&self) -> &WorldStats {
        &self.stats
    }

    /// Events processed so far.
    pub fn events_run(&self) -> u64 {
        self.events_run
    }

    /// A host's name.
    pub fn host_name(&self, host: HostId) -> &str {
        &self.hosts[host.0].name
    }

    /// A NAT's name.
    pub fn nat_name(&self, nat: NatId) -> &str {
        &self.nats[nat.0].name
    }

    /// The addresses of a host's interfaces, in the order they were added.
    pub fn host_addrs(&self, host: HostId) -> Vec<IpAddr> {
        self.hosts[host.0]
            .ifaces
            .iter()
            .map(|&(ip, _)| ip)
            .collect()
    }

    /// Datagrams waiting in a host's inbox (bounded by [`INBOX_LIMIT`]).
    pub fn inbox_len(&self, host: HostId) -> usize {
        self.hosts[host.0].io.inbox.len()
    }

    /// Runs events for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until);
    }

    /// Runs every event due up to `until`, then sets the clock to `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(entry) = self.queue.first_entry() {
            let &(at, _) = entry.key();
            if at > until {
                break;
            }
            let event = entry.remove();
            self.now = at;
            self.events_run += 1;
            self.dispatch(event);
            self.check_invariants();
        }
        self.now = self.now.max(until);
    }

    fn push(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn nanos(&self) -> u64 {
        (self.now - self.epoch).as_nanos() as u64
    }

    fn check_invariants(&mut self) {
        if self.invariants.is_empty() {
            return;
        }
        let mut invariants = std::mem::take(&mut self.invariants);
        for (name, check) in &mut invariants {
            if let Err(reason) = check(self) {
                if self.violations.len() < 100 {
                    self.violations
                        .push(format!("{:?} {name}: {reason}", self.elapsed()));
                }
            }
        }
        self.invariants = invariants;
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Wake(host) => {
                self.hosts[host.0].wakes.remove(&self.now);
                self.run_host(host);
            }
            Event::Action(action) => {
                let t = self.nanos();
                self.trace.record(&[7, t]);
                action(self);
            }
            Event::Arrive {
                wire,
                dir,
                generation,
                packet,
            } => {
                let link = self.wires[wire.0].link_mut(dir);
                if link.generation() != generation || !link.is_up() {
                    self.stats.lost_in_flight += 1;
                    return;
                }
                match dir {
                    Dir::ToSegment => self.at_segment(self.wires[wire.0].segment, wire, packet),
                    Dir::ToEndpoint => self.at_endpoint(wire, packet),
                }
            }
        }
    }

    fn run_host(&mut self, host: HostId) {
        let now = self.now;
        let h = &mut self.hosts[host.0];
        let Some(app) = h.app.as_mut() else {
            return;
        };
        let report = app.pump(&mut h.pump, &mut h.io, &SimClock(now));
        let outbox = std::mem::take(&mut h.io.outbox);
        let t = self.nanos();
        self.trace.record(&[
            5,
            t,
            host.0 as u64,
            report.received as u64,
            outbox.len() as u64,
        ]);
        for transmit in outbox {
            self.send_from_host(host, transmit);
        }
        if report.more_pending {
            self.schedule_wake(host, now);
        } else if let Some(at) = report.next_deadline {
            self.schedule_wake(host, at.max(now));
        }
    }

    fn send_from_host(&mut self, host: HostId, transmit: transitloom_proto_core::Transmit) {
        let h = &self.hosts[host.0];
        let Some(&local) = h.io.sockets.get(&transmit.socket) else {
            return;
        };
        let iface = if local.ip().is_unspecified() {
            h.ifaces.first()
        } else {
            h.ifaces.iter().find(|(ip, _)| *ip == local.ip())
        };
        let Some(&(ip, wire)) = iface else {
            return;
        };
        self.stats.sent += 1;
        let packet = Packet {
            src: SocketAddr::new(ip, local.port()),
            dst: transmit.dst,
            payload: transmit.payload,
            hops: 0,
        };
        let t = self.nanos();
        let [a, b, p] = addr_words(packet.dst);
        self.trace.record(&[
            1,
            t,
            host.0 as u64,
            a,
            b,
            p,
            packet.payload.len() as u64,
            fingerprint(&packet.payload),
        ]);
        self.send_on(wire, Dir::ToSegment, packet);
    }

    fn send_on(&mut self, wire: WireId, dir: Dir, packet: Packet) {
        let now = self.now;
        let link = self.wires[wire.0].link_mut(dir);
        let generation = link.generation();
        let fate = link.transmit(now, packet.payload.len());
        let t = self.nanos();
        match fate {
            Fate::Dropped(reason) => {
                let index = match reason {
                    DropReason::Down => 0,
                    DropReason::Mtu => 1,
                    DropReason::Queue => 2,
                    DropReason::Loss => 3,
                };
                self.stats.link_dropped[index] += 1;
                self.trace
                    .record(&[2, t, wire.0 as u64, dir as u64, index as u64]);
            }
            Fate::Delivered { at, duplicate_at } => {
                let arrive = (at - self.epoch).as_nanos() as u64;
                self.trace
                    .record(&[3, t, wire.0 as u64, dir as u64, arrive]);
                if let Some(dup) = duplicate_at {
                    self.push(
                        dup,
                        Event::Arrive {
                            wire,
                            dir,
                            generation,
                            packet: packet.clone(),
                        },
                    );
                }
                self.push(
                    at,
                    Event::Arrive {
                        wire,
                        dir,
                        generation,
                        packet,
                    },
                );
            }
        }
    }

    fn at_segment(&mut self, segment: SegmentId, from: WireId, mut packet: Packet) {
        packet.hops += 1;
        if packet.hops > HOP_LIMIT {
            self.stats.hop_limit += 1;
            return;
        }
        let seg = &self.segments[segment.0];
        if !seg.blocked.is_empty() {
            let (a, b) = (packet.src.ip(), packet.dst.ip());
            if seg.blocked.contains(&if a <= b { (a, b) } else { (b, a) }) {
                self.stats.blocked += 1;
                return;
            }
        }
        let next = seg.routes.get(&packet.dst.ip()).copied().or(seg.default);
        match next {
            // Never back out of the wire it came in on: that is a routing loop.
            Some(wire) if wire != from => self.send_on(wire, Dir::ToEndpoint, packet),
            _ => self.stats.no_route += 1,
        }
    }

    fn at_endpoint(&mut self, wire: WireId, packet: Packet) {
        match self.wires[wire.0].endpoint {
            Endpoint::Host(host) => self.at_host(host, packet),
            Endpoint::NatInside(nat) => self.nat_outbound(nat, packet),
            Endpoint::NatOutside(nat) => self.nat_inbound(nat, packet),
        }
    }

    fn at_host(&mut self, host: HostId, packet: Packet) {
        let h = &mut self.hosts[host.0];
        let Some(socket) = h.io.socket_for(packet.dst) else {
            self.stats.no_socket += 1;
            return;
        };
        if h.io.inbox.len() >= INBOX_LIMIT {
            self.stats.inbox_overflow += 1;
            return;
        }
        h.io.inbox.push_back((socket, packet.src, packet.payload));
        self.stats.delivered += 1;
        self.wake(host);
    }

    fn nat_outbound(&mut self, nat: NatId, packet: Packet) {
        let now = self.now;
        let n = &mut self.nats[nat.0];
        let Some(public_src) = n.nat.outbound(now, packet.src, packet.dst) else {
            self.stats.nat_dropped += 1;
            return;
        };
        let (inside, outside) = (n.inside, n.outside);
        if packet.dst.ip() == n.nat.public_ip() {
            // Hairpinning: translate the source, then treat it as arriving outside.
            let inner = if n.nat.hairpinning() {
                n.nat.inbound(now, public_src, packet.dst)
            } else {
                None
            };
            let Some(inner_dst) = inner else {
                self.stats.nat_dropped += 1;
                return;
            };
            let hairpinned = Packet {
                src: public_src,
                dst: inner_dst,
                ..packet
            };
            self.send_on(inside, Dir::ToSegment, hairpinned);
            return;
        }
        let translated = Packet {
            src: public_src,
            ..packet
        };
        self.send_on(outside, Dir::ToSegment, translated);
    }

    fn nat_inbound(&mut self, nat: NatId, packet: Packet) {
        let now = self.now;
        let n = &mut self.nats[nat.0];
        let Some(inner_dst) = n.nat.inbound(now, packet.src, packet.dst) else {
            self.stats.nat_dropped += 1;
            return;
        };
        let inside = n.inside;
        let translated = Packet {
            dst: inner_dst,
            ..packet
        };
        self.send_on(inside, Dir::ToSegment, translated);
    }
}
