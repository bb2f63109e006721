//! Two real nodes and a real coordinator in virtual time (mutual TLS over
//! QUIC, mutual-consent associations, path validation), used to check that
//! [`Node::reconfigure`] disturbs only what changed. The harness also
//! carries byte streams (TCP) between the nodes and the coordinator, and
//! can block a node's UDP to the coordinator, for the TCP fallback's tests
//! in [`tcp_fallback`].

mod node_relay;
mod rekey;
mod renewal;
mod tcp_fallback;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;
use crate::control::quic::QuicTiming;
use crate::control::tls_config::{server_config, ClientAuth, TlsIdentity};
use crate::control::token::TokenVerifier;
use crate::coordinator::registry::{Op, Registry};
use crate::coordinator::{Coordinator, CoordinatorConfig, CoordinatorEvent};
use crate::dataplane::{AssociationView, PathState, UplinkSpec};
use crate::id::{PathId, UplinkId};
use crate::machine::{Datagram, Input, StreamId};
use crate::pki::{self, CertTerms, Ed25519PublicKey};
use crate::time::WallClock;

const UNIX_NOW: u64 = 1_760_000_000;
const DELAY: Duration = Duration::from_millis(5);
const HUB: &str = "hub";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn terms(name: &str, serial: u8) -> CertTerms<'_> {
    CertTerms {
        name,
        not_before_unix_s: (UNIX_NOW - 3_600) as i64,
        validity_days: 30,
        serial: [serial; 16],
    }
}

fn key(seed: u8) -> (Vec<u8>, Ed25519PublicKey) {
    let pkcs8 = pki::ed25519_pkcs8_from_seed(&[seed; 32]);
    let raw = pki::ed25519_key_pair(&pkcs8)
        .unwrap()
        .public_key_raw()
        .to_vec();
    (pkcs8, Ed25519PublicKey(raw.try_into().unwrap()))
}

fn identity(chain: &[&[u8]], key: &[u8]) -> TlsIdentity {
    TlsIdentity {
        chain: chain
            .iter()
            .map(|c| CertificateDer::from(c.to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
    }
}

/// A service with its peers and their ingress addresses.
fn service(id: u32, name: &str, target: &str, peers: &[(&str, &str)]) -> ServiceSpec {
    ServiceSpec {
        id: ServiceId(id),
        name: name.to_owned(),
        target: addr(target),
        peers: peers
            .iter()
            .map(|(p, ingress)| ((*p).to_owned(), addr(ingress)))
            .collect(),
    }
}

struct Host {
    node: Node,
    public: IpAddr,
    bound: BTreeMap<SocketId, SocketAddr>,
    closed: Vec<SocketId>,
    next_port: u16,
    events: Vec<NodeEvent>,
    /// What left towards a local service: (from, to, payload).
    local: Vec<(SocketAddr, SocketAddr, Bytes)>,
}

/// One end of a stream in the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Coordinator,
    Host(usize),
}

/// What crosses a stream.
#[derive(Debug)]
enum Wire {
    Opened,
    Bytes(Bytes),
    Closed,
}

struct Mesh {
    now: Instant,
    coordinator: Coordinator,
    listen: SocketAddr,
    hub_socket: Option<SocketId>,
    /// The coordinator's TCP listener, once open.
    hub_listener: Option<SocketId>,
    hosts: Vec<Host>,
    in_flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Bytes)>,
    /// (arrival, seq) -> (to, its stream, what)
    streams_in_flight: BTreeMap<(Instant, u64), (End, StreamId, Wire)>,
    /// Each stream end's peer end.
    stream_peer: BTreeMap<(End, StreamId), (End, StreamId)>,
    next_accepted: u64,
    seq: u64,
    /// Hosts whose UDP to and from the coordinator is dropped.
    udp_blocked: BTreeSet<usize>,
    /// Every stream byte and close is lost (a dead peer or path).
    streams_dead: bool,
    /// The coordinator's sockets besides its control socket (its relay).
    hub_bound: BTreeMap<SocketId, SocketAddr>,
    hub_next_port: u16,
    /// Datagrams from the first address to the second are dropped (a
    /// direct path that cannot work, e.g. two symmetric NATs).
    blocked: BTreeSet<(IpAddr, IpAddr)>,
    /// A node's socket asked for at one of these addresses fails to bind
    /// (the port is taken).
    taken: BTreeSet<SocketAddr>,
}

impl Mesh {
    /// A coordinator that has enrolled and admitted alpha and beta, and the
    /// two nodes with these services.
    fn new(alpha: Vec<ServiceSpec>, beta: Vec<ServiceSpec>) -> Self {
        Self::with_nodes(vec![
            ("alpha", "192.0.2.10", alpha),
            ("beta", "198.51.100.20", beta),
        ])
    }

    /// A coordinator that has enrolled and admitted these nodes (name,
    /// public address, services), and the nodes.
    fn with_nodes(nodes: Vec<(&str, &str, Vec<ServiceSpec>)>) -> Self {
        let now = crate::test_epoch();
        let wall = WallClock::new(now, UNIX_NOW * 1_000_000);
        let (root_key, _) = key(1);
        let root = pki::self_signed_root(&root_key, &terms("transitloom root", 1)).unwrap();
        let (inter_key, inter_pub) = key(2);
        let inter =
            pki::sign_coordinator_intermediate(&root, &root_key, &inter_pub, &terms(HUB, 2))
                .unwrap();
        let (server_key, server_pub) = key(3);
        let server =
            pki::sign_coordinator_server(&inter, &inter_key, &server_pub, &terms(HUB, 3)).unwrap();
        let root_der = CertificateDer::from(root.clone());
        let tls = server_config(
            &root_der,
            identity(&[&server, &inter], &server_key),
            ClientAuth::Optional,
        )
        .unwrap();
        let mut verifier = TokenVerifier::new();
        verifier.trust(HUB, pki::ed25519_public_key(&inter).unwrap());
        let listen = addr("203.0.113.1:7443");
        let mut registry = Registry::new();
        let mut hosts = Vec::new();
        for (i, (name, public, services)) in nodes.into_iter().enumerate() {
            let (node_key, node_pub) = key(10 + i as u8);
            let cert =
                pki::sign_node(&inter, &inter_key, &node_pub, &terms(name, 10 + i as u8)).unwrap();
            for op in [
                Op::Invite {
                    node: name.to_owned(),
                    digest: [i as u8; 32],
                    expires_unix_s: UNIX_NOW + 3_600,
                    admit: true,
                },
                Op::Enroll {
                    node: name.to_owned(),
                    fingerprint: pki::cert_fingerprint(&cert),
                    at_unix_s: UNIX_NOW,
                },
            ] {
                registry.apply(&op).unwrap();
            }
            let public: IpAddr = public.parse().unwrap();
            let node = Node::new(NodeConfig {
                name: name.to_owned(),
                coordinators: vec![listen],
                coordinator_name: HUB.to_owned(),
                coordinator_names: Default::default(),
                root: root_der.clone(),
                credentials: Credentials::Enrolled(identity(&[&cert, &inter], &node_key)),
                control_bind: SocketAddr::new(public, 0),
                advertise_private: false,
                services,
                uplinks: vec![UplinkSpec::new(UplinkId(0), "wan", public)],
                wall_clock: wall,
                timing: QuicTiming::default(),
                seed: [20 + i as u8; 32],
            })
            .unwrap();
            hosts.push(Host {
                node,
                public,
                bound: BTreeMap::new(),
                closed: Vec::new(),
                next_port: 40_000,
                events: Vec::new(),
                local: Vec::new(),
            });
        }
        let coordinator = Coordinator::new(
            CoordinatorConfig {
                name: HUB.to_owned(),
                listen,
                tls,
                intermediate_der: inter,
                intermediate_key: inter_key,
                verifier,
                token_lifetime_s: 600,
                wall_clock: wall,
                timing: QuicTiming::default(),
                handshake_limit: Default::default(),
            },
            registry,
            crate::csprng::Drbg::from_u64(99),
        )
        .unwrap();
        Self {
            now,
            coordinator,
            listen,
            hub_socket: None,
            hub_listener: None,
            hosts,
            in_flight: BTreeMap::new(),
            streams_in_flight: BTreeMap::new(),
            stream_peer: BTreeMap::new(),
            next_accepted: 0,
            seq: 0,
            udp_blocked: BTreeSet::new(),
            streams_dead: false,
            hub_bound: BTreeMap::new(),
            hub_next_port: 30_000,
            blocked: BTreeSet::new(),
            taken: BTreeSet::new(),
        }
    }

    fn post(&mut self, to: End, stream: StreamId, wire: Wire) {
        if self.streams_dead {
            return;
        }
        self.seq += 1;
        self.streams_in_flight
            .insert((self.now + DELAY, self.seq), (to, stream, wire));
    }

    /// A stream output of `from`.
    fn stream_output(&mut self, from: End, output: Output<()>) {
        let now = self.now;
        match output {
            Output::ConnectStream { stream, remote } => {
                let Some(listener) = self.hub_listener.filter(|_| remote == self.listen) else {
                    self.post(from, stream, Wire::Closed);
                    return;
                };
                self.next_accepted += 1;
                let accepted = StreamId(StreamId::ACCEPTED | self.next_accepted);
                self.stream_peer
                    .insert((from, stream), (End::Coordinator, accepted));
                self.stream_peer
                    .insert((End::Coordinator, accepted), (from, stream));
                let End::Host(n) = from else { return };
                let remote = SocketAddr::new(self.hosts[n].public, 50_000);
                self.coordinator.handle_input(
                    now,
                    Input::StreamAccepted {
                        listener,
                        stream: accepted,
                        remote,
                    },
                );
                self.post(from, stream, Wire::Opened);
            }
            Output::StreamWrite { stream, bytes } => {
                if let Some(&(to, peer)) = self.stream_peer.get(&(from, stream)) {
                    self.post(to, peer, Wire::Bytes(bytes));
                }
            }
            Output::CloseStream { stream } => {
                if let Some((to, peer)) = self.stream_peer.remove(&(from, stream)) {
                    self.stream_peer.remove(&(to, peer));
                    self.post(to, peer, Wire::Closed);
                }
            }
            _ => {}
        }
    }

    fn deliver_stream(&mut self, to: End, stream: StreamId, wire: Wire) {
        let now = self.now;
        let input = match &wire {
            Wire::Opened => Input::StreamOpened {
                stream,
                local: addr("192.0.2.99:50000"),
            },
            Wire::Bytes(bytes) => Input::StreamData { stream, bytes },
            Wire::Closed => Input::StreamClosed {
                stream,
                error: None,
            },
        };
        match to {
            End::Coordinator => self.coordinator.handle_input(now, input),
            End::Host(n) => self.hosts[n].node.handle_input(now, input),
        }
    }

    fn send(&mut self, dst: SocketAddr, src: SocketAddr, payload: Bytes) {
        if self.blocked.contains(&(src.ip(), dst.ip())) {
            return;
        }
        self.seq += 1;
        self.in_flight
            .insert((self.now + DELAY, self.seq), (dst, src, payload));
    }

    fn drain(&mut self) {
        let now = self.now;
        while let Some(output) = self.coordinator.poll_output() {
            match output {
                Output::BindSocket { socket, local }
                    if socket == crate::coordinator::machine::CONTROL_SOCKET =>
                {
                    self.hub_socket = Some(socket);
                    self.coordinator
                        .handle_input(now, Input::SocketBound { socket, local });
                }
                Output::BindSocket { socket, mut local } => {
                    if local.port() == 0 {
                        local = SocketAddr::new(self.listen.ip(), self.hub_next_port);
                        self.hub_next_port += 1;
                    }
                    self.hub_bound.insert(socket, local);
                    self.coordinator
                        .handle_input(now, Input::SocketBound { socket, local });
                }
                Output::CloseSocket { socket } => {
                    self.hub_bound.remove(&socket);
                }
                Output::Transmit(t) => {
                    let src = self.hub_bound.get(&t.socket).copied();
                    self.send(t.dst, src.unwrap_or(self.listen), t.payload)
                }
                Output::Event(CoordinatorEvent::Append(_)) => self.coordinator.committed(now),
                Output::ListenStream { listener, local } => {
                    self.hub_listener = Some(listener);
                    self.coordinator.handle_input(
                        now,
                        Input::SocketBound {
                            socket: listener,
                            local,
                        },
                    );
                }
                Output::Event(_) => {}
                other => self.stream_output(End::Coordinator, other.map_event(|_| ())),
            }
        }
        for n in 0..self.hosts.len() {
            while let Some(output) = self.hosts[n].node.poll_output() {
                let host = &mut self.hosts[n];
                match output {
                    Output::BindSocket { socket, local } if self.taken.contains(&local) => {
                        let reason = std::io::ErrorKind::AddrInUse;
                        host.node
                            .handle_input(now, Input::SocketFailed { socket, reason });
                    }
                    Output::BindSocket { socket, mut local } => {
                        if local.port() == 0 {
                            local = SocketAddr::new(host.public, host.next_port);
                            host.next_port += 1;
                        }
                        host.bound.insert(socket, local);
                        host.node
                            .handle_input(now, Input::SocketBound { socket, local });
                    }
                    Output::CloseSocket { socket } => {
                        host.bound.remove(&socket);
                        host.closed.push(socket);
                    }
                    Output::Transmit(t) => {
                        let src = host.bound[&t.socket];
                        if t.dst.ip().is_loopback() {
                            host.local.push((src, t.dst, t.payload));
                        } else if !(self.udp_blocked.contains(&n) && t.dst == self.listen) {
                            self.send(t.dst, src, t.payload);
                        }
                    }
                    Output::Event(e) => host.events.push(e),
                    other => self.stream_output(End::Host(n), other.map_event(|_| ())),
                }
            }
        }
    }

    fn run(&mut self, duration: Duration) {
        let until = self.now + duration;
        loop {
            self.drain();
            let packet = self.in_flight.keys().next().map(|k| k.0);
            let wire = self.streams_in_flight.keys().next().map(|k| k.0);
            let timers = self
                .hosts
                .iter()
                .filter_map(|h| h.node.poll_timeout())
                .chain(self.coordinator.poll_timeout())
                .min();
            let Some(next) = [packet, wire, timers]
                .into_iter()
                .flatten()
                .min()
                .filter(|&t| t <= until)
            else {
                break;
            };
            self.now = self.now.max(next);
            let now = self.now;
            if wire == Some(next) && packet != Some(next) {
                let (_, (to, stream, wire)) = self.streams_in_flight.pop_first().unwrap();
                self.deliver_stream(to, stream, wire);
            } else if packet == Some(next) {
                let (_, (dst, src, payload)) = self.in_flight.pop_first().unwrap();
                let d = |socket| Datagram {
                    socket,
                    src,
                    payload: &payload,
                };
                let hub = self.hub_bound.iter().find(|(_, &a)| a == dst);
                if let Some((&socket, _)) = hub {
                    self.coordinator
                        .handle_input(now, Input::Datagram(d(socket)));
                } else if dst == self.listen {
                    if let Some(socket) = self.hub_socket {
                        self.coordinator
                            .handle_input(now, Input::Datagram(d(socket)));
                    }
                } else if let Some((host, socket)) = self.hosts.iter_mut().find_map(|h| {
                    let socket = h.bound.iter().find(|(_, &a)| a == dst).map(|(&s, _)| s);
                    socket.map(|s| (h, s))
                }) {
                    host.node.handle_input(now, Input::Datagram(d(socket)));
                }
            } else {
                if self.coordinator.poll_timeout().is_some_and(|t| t <= now) {
                    self.coordinator.handle_timeout(now);
                }
                for h in &mut self.hosts {
                    if h.node.poll_timeout().is_some_and(|t| t <= now) {
                        h.node.handle_timeout(now);
                    }
                }
            }
        }
        self.now = until;
    }

    fn assoc(&self, host: usize, service: &str, peer: &str) -> Option<AssociationView<'_>> {
        let node = &self.hosts[host].node;
        node.data_plane()
            .associations()
            .find(|v| node.association_names(v.spec().id) == Some((service, peer)))
    }

    /// The local service of `host` sends into an association's ingress.
    fn service_sends(&mut self, host: usize, service: &str, peer: &str, payload: &[u8]) {
        let view = self.assoc(host, service, peer).expect("installed");
        let (socket, src) = (view.ingress_socket(), view.spec().target);
        let now = self.now;
        self.hosts[host].node.handle_input(
            now,
            Input::Datagram(Datagram {
                socket,
                src,
                payload,
            }),
        );
    }
}

/// What must survive for an untouched association.
#[derive(Debug, PartialEq, Eq)]
struct Kept {
    id: AssocId,
    ingress_socket: SocketId,
    ingress_local: Option<SocketAddr>,
    mesh: Vec<(UplinkId, SocketId, Option<SocketAddr>)>,
    paths: Vec<(PathId, SocketAddr, PathState, u64, u64)>,
    ingress_packets: u64,
    delivered_packets: u64,
}

fn kept(view: &AssociationView<'_>) -> Kept {
    let locals: BTreeMap<UplinkId, Option<SocketAddr>> = view.mesh_locals().collect();
    Kept {
        id: view.spec().id,
        ingress_socket: view.ingress_socket(),
        ingress_local: view.ingress_local(),
        mesh: view
            .mesh_sockets()
            .map(|(u, s)| (u, s, locals[&u]))
            .collect(),
        paths: view
            .paths()
            .map(|p| (p.id, p.remote, p.state, p.tx.packets, p.rx.packets))
            .collect(),
        ingress_packets: view.counters().ingress.packets,
        delivered_packets: view.counters().delivered.packets,
    }
}

fn alpha_services() -> Vec<ServiceSpec> {
    vec![
        service(
            1,
            "wg0",
            "127.0.0.1:51820",
            &[("beta/wg0", "127.0.0.1:41000")],
        ),
        service(
            2,
            "wg1",
            "127.0.0.1:51821",
            &[("beta/wg1", "127.0.0.1:41001")],
        ),
    ]
}

fn beta_services() -> Vec<ServiceSpec> {
    vec![
        service(
            1,
            "wg0",
            "127.0.0.1:51820",
            &[("alpha/wg0", "127.0.0.1:41000")],
        ),
        service(
            2,
            "wg1",
            "127.0.0.1:51821",
            &[("alpha/wg1", "127.0.0.1:41001")],
        ),
        service(
            3,
            "wg2",
            "127.0.0.1:51822",
            &[("alpha/wg0", "127.0.0.1:41002")],
        ),
    ]
}

/// Both associations of alpha up, with some traffic on wg0.
fn running_mesh() -> Mesh {
    let mut mesh = Mesh::new(alpha_services(), beta_services());
    mesh.run(Duration::from_secs(3));
    for (service, peer) in [("wg0", "beta/wg0"), ("wg1", "beta/wg1")] {
        let view = mesh.assoc(0, service, peer).expect("installed");
        assert!(view.is_up(), "{service} is up: {:?}", mesh.hosts[0].events);
    }
    assert!(
        mesh.assoc(0, "wg0", "beta/wg2").is_none(),
        "not declared yet"
    );
    for i in 0..5u8 {
        mesh.service_sends(0, "wg0", "beta/wg0", &[i; 100]);
    }
    mesh.run(Duration::from_millis(50));
    assert_eq!(mesh.hosts[1].local.len(), 5);
    mesh
}

#[test]
fn a_reload_withdraws_and_adds_associations_without_touching_the_others() {
    let mut mesh = running_mesh();
    let before = kept(&mesh.assoc(0, "wg0", "beta/wg0").unwrap());
    let wg1 = mesh.assoc(0, "wg1", "beta/wg1").unwrap();
    let wg1_id = wg1.spec().id;
    let wg1_sockets: BTreeSet<SocketId> = std::iter::once(wg1.ingress_socket())
        .chain(wg1.mesh_sockets().map(|(_, s)| s))
        .collect();
    let beta_wg1 = mesh.assoc(1, "wg1", "alpha/wg1").unwrap().spec().id;
    assert_eq!(beta_wg1, wg1_id);

    // wg1 is gone; wg0 also consents to beta/wg2 now.
    let now = mesh.now;
    let report = mesh.hosts[0]
        .node
        .reconfigure(
            now,
            vec![service(
                1,
                "wg0",
                "127.0.0.1:51820",
                &[
                    ("beta/wg0", "127.0.0.1:41000"),
                    ("beta/wg2", "127.0.0.1:41002"),
                ],
            )],
        )
        .unwrap();
    assert_eq!(report.services_removed, vec!["wg1".to_owned()]);
    assert_eq!(
        report.associations_added,
        vec![("wg0".to_owned(), "beta/wg2".to_owned())]
    );
    assert_eq!(
        report.associations_removed,
        vec![("wg1".to_owned(), "beta/wg1".to_owned())]
    );
    assert_eq!(report.withdrawn, vec![wg1_id]);
    assert!(report.ingress_moved.is_empty());
    // Withdrawn at once, locally.
    mesh.drain();
    assert!(mesh.assoc(0, "wg1", "beta/wg1").is_none());
    let closed: BTreeSet<SocketId> = mesh.hosts[0].closed.iter().copied().collect();
    assert_eq!(closed, wg1_sockets, "exactly wg1's sockets closed");

    mesh.run(Duration::from_secs(3));
    // The coordinator was told: beta lost wg1 and both ends got wg0-wg2.
    assert!(mesh.assoc(1, "wg1", "alpha/wg1").is_none());
    assert!(mesh.hosts[1]
        .events
        .contains(&NodeEvent::Withdrawn { assoc: wg1_id }));
    let added = mesh
        .assoc(0, "wg0", "beta/wg2")
        .expect("installed on alpha");
    assert!(added.is_up(), "the new association validated its path");
    assert_eq!(added.ingress_local(), Some(addr("127.0.0.1:41002")));
    let at_beta = mesh
        .assoc(1, "wg2", "alpha/wg0")
        .expect("installed on beta");
    assert_eq!(at_beta.spec().id, added.spec().id);

    // The untouched association: same id, sockets, paths and counters.
    let after = kept(&mesh.assoc(0, "wg0", "beta/wg0").unwrap());
    assert_eq!(after, before);
    assert!(after.paths.iter().all(|p| p.2 == PathState::Active));
    assert_eq!(mesh.hosts[0].closed.len(), wg1_sockets.len());
    mesh.service_sends(0, "wg0", "beta/wg0", b"still carried");
    mesh.run(Duration::from_millis(50));
    let last = mesh.hosts[1].local.last().unwrap();
    assert_eq!(last.2, Bytes::from_static(b"still carried"));
    assert_eq!(last.0, addr("127.0.0.1:41000"), "from beta's wg0 ingress");
}

#[test]
fn an_edited_ingress_or_target_moves_only_that_binding() {
    let mut mesh = running_mesh();
    let wg0 = kept(&mesh.assoc(0, "wg0", "beta/wg0").unwrap());
    let wg1 = kept(&mesh.assoc(0, "wg1", "beta/wg1").unwrap());
    let now = mesh.now;
    let report = mesh.hosts[0]
        .node
        .reconfigure(
            now,
            vec![
                service(
                    1,
                    "wg0",
                    "127.0.0.1:51830",
                    &[("beta/wg0", "127.0.0.1:41000")],
                ),
                service(
                    2,
                    "wg1",
                    "127.0.0.1:51821",
                    &[("beta/wg1", "127.0.0.1:41011")],
                ),
            ],
        )
        .unwrap();
    assert_eq!(report.services_retargeted, vec!["wg0".to_owned()]);
    assert_eq!(
        report.ingress_moved,
        vec![("wg1".to_owned(), "beta/wg1".to_owned())]
    );
    assert!(report.withdrawn.is_empty());
    mesh.run(Duration::from_millis(100));
    assert_eq!(mesh.hosts[0].closed, vec![wg1.ingress_socket]);

    // wg1: a new ingress socket on the new address; mesh sockets and paths kept.
    let moved = kept(&mesh.assoc(0, "wg1", "beta/wg1").unwrap());
    assert_ne!(moved.ingress_socket, wg1.ingress_socket);
    assert_eq!(moved.ingress_local, Some(addr("127.0.0.1:41011")));
    assert_eq!(
        (moved.id, &moved.mesh, &moved.paths),
        (wg1.id, &wg1.mesh, &wg1.paths)
    );

    // wg0: same sockets; mesh data now goes to the new target.
    assert_eq!(kept(&mesh.assoc(0, "wg0", "beta/wg0").unwrap()), wg0);
    mesh.service_sends(1, "wg0", "alpha/wg0", b"to the new target");
    mesh.run(Duration::from_millis(50));
    let last = mesh.hosts[0].local.last().unwrap();
    assert_eq!(
        (last.0, last.1),
        (addr("127.0.0.1:41000"), addr("127.0.0.1:51830"))
    );
    // And only the new target may send into its ingress.
    let now = mesh.now;
    let ingress = mesh.assoc(0, "wg0", "beta/wg0").unwrap().ingress_socket();
    mesh.hosts[0].node.handle_input(
        now,
        Input::Datagram(Datagram {
            socket: ingress,
            src: addr("127.0.0.1:51820"),
            payload: b"old target",
        }),
    );
    assert_eq!(
        mesh.assoc(0, "wg0", "beta/wg0")
            .unwrap()
            .counters()
            .ingress_foreign,
        1
    );
}

#[test]
fn a_reload_that_repeats_the_configuration_changes_nothing() {
    let mut mesh = running_mesh();
    let wg0 = kept(&mesh.assoc(0, "wg0", "beta/wg0").unwrap());
    let now = mesh.now;
    let report = mesh.hosts[0]
        .node
        .reconfigure(now, alpha_services())
        .unwrap();
    assert!(report.is_empty(), "{report:?}");
    mesh.run(Duration::from_secs(1));
    assert!(mesh.hosts[0].closed.is_empty());
    assert_eq!(kept(&mesh.assoc(0, "wg0", "beta/wg0").unwrap()), wg0);
}

#[test]
fn a_bad_set_of_services_is_refused_and_nothing_changes() {
    let mut mesh = running_mesh();
    let wg0 = kept(&mesh.assoc(0, "wg0", "beta/wg0").unwrap());
    let now = mesh.now;
    let shared = vec![
        service(
            1,
            "wg0",
            "127.0.0.1:51820",
            &[("beta/wg0", "127.0.0.1:41000")],
        ),
        service(
            2,
            "wg1",
            "127.0.0.1:51821",
            &[("beta/wg1", "127.0.0.1:41000")],
        ),
    ];
    assert!(matches!(
        mesh.hosts[0].node.reconfigure(now, shared),
        Err(ReconfigureError::IngressShared { .. })
    ));
    let twice = vec![
        service(1, "wg0", "127.0.0.1:51820", &[]),
        service(2, "wg0", "127.0.0.1:51821", &[]),
    ];
    assert_eq!(
        mesh.hosts[0].node.reconfigure(now, twice),
        Err(ReconfigureError::DuplicateService("wg0".to_owned()))
    );
    let bad_peer = vec![service(
        1,
        "wg0",
        "127.0.0.1:51820",
        &[("beta", "127.0.0.1:41000")],
    )];
    assert!(matches!(
        mesh.hosts[0].node.reconfigure(now, bad_peer),
        Err(ReconfigureError::Name { .. })
    ));
    assert_eq!(mesh.hosts[0].node.services(), alpha_services().as_slice());
    mesh.run(Duration::from_millis(500));
    assert!(mesh.hosts[0].closed.is_empty());
    assert_eq!(kept(&mesh.assoc(0, "wg0", "beta/wg0").unwrap()), wg0);
}

#[test]
fn a_node_that_shuts_down_is_offline_at_the_coordinator_at_once_and_stays_away() {
    let mut mesh = running_mesh();
    assert!(mesh.coordinator.online().any(|n| n == "beta"));
    let now = mesh.now;
    mesh.hosts[1].node.shut_down(now);
    // One network delay for the close, far below the idle timeout.
    mesh.run(Duration::from_millis(100));
    assert!(
        !mesh.coordinator.online().any(|n| n == "beta"),
        "beta still online: the close did not reach the coordinator"
    );
    assert!(mesh.coordinator.online().any(|n| n == "alpha"));
    // Beta never comes back on its own. (Alpha keeps the association
    // installed, as with any node out of the coordinator's sight, until
    // beta's admission token lapses.)
    mesh.run(Duration::from_secs(30));
    assert!(!mesh.coordinator.online().any(|n| n == "beta"));
    assert_eq!(mesh.hosts[1].node.session_state(), SessionState::Idle);
}
