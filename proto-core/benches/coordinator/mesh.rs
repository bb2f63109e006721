//! An in-memory mesh for the coordinator benchmarks: one real Coordinator,
//! one admin client and any number of real Node machines, joined by a
//! zero-latency network of queues in virtual time. No sockets: each
//! machine's BindSocket is answered at once and its datagrams are routed by
//! destination address. The time spent inside the coordinator's calls is
//! accumulated apart, so a benchmark can report the coordinator's own cost.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use transitloom_proto_core::admin::AdminClient;
use transitloom_proto_core::control::msg::{AdminCommand, Name};
use transitloom_proto_core::control::quic::QuicTiming;
use transitloom_proto_core::control::tls_config::{server_config, ClientAuth, TlsIdentity};
use transitloom_proto_core::control::token::{JoinToken, TokenVerifier};
use transitloom_proto_core::coordinator::registry::{Op, Registry};
use transitloom_proto_core::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorEvent, HandshakeLimit,
};
use transitloom_proto_core::csprng::Drbg;
use transitloom_proto_core::dataplane::UplinkSpec;
use transitloom_proto_core::node::{Credentials, Node, NodeConfig, ServiceSpec, SessionState};
use transitloom_proto_core::pki::{self, CertTerms, Ed25519PublicKey};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::{
    Datagram, Input, Output, ServiceId, SocketId, StateMachine, UplinkId,
};

const UNIX_START: u64 = 1_760_000_000;
const COORDINATOR: &str = "hub";
const HUB: usize = 0;
const ADMIN: usize = 1;

/// The clock is read here only: virtual time needs an origin, and the
/// benchmarks measure the real time spent in the coordinator.
#[allow(clippy::disallowed_methods)]
pub fn clock() -> Instant {
    Instant::now()
}

fn ip(i: usize) -> IpAddr {
    let k = i + 1;
    IpAddr::V4(Ipv4Addr::new(
        100,
        64 + (k >> 16) as u8,
        (k >> 8) as u8,
        k as u8,
    ))
}

struct Key {
    pkcs8: Vec<u8>,
    public: Ed25519PublicKey,
}

fn key(drbg: &mut Drbg) -> Key {
    let pkcs8 = pki::ed25519_pkcs8_from_seed(&drbg.key());
    let pair = pki::ed25519_key_pair(&pkcs8).expect("a valid key");
    let public = Ed25519PublicKey(pair.public_key_raw().try_into().expect("32 bytes"));
    Key { pkcs8, public }
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

fn terms(name: &str, serial: u8) -> CertTerms<'_> {
    CertTerms {
        name,
        not_before_unix_s: (UNIX_START - 3_600) as i64,
        validity_days: 30,
        serial: [serial; 16],
    }
}

/// The root, the coordinator's intermediate and server certificate, and
/// an admin certificate.
pub struct Pki {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    intermediate_key: Vec<u8>,
    server: Vec<u8>,
    server_key: Vec<u8>,
    admin: Vec<u8>,
    admin_key: Vec<u8>,
}

impl Pki {
    pub fn new(drbg: &mut Drbg) -> Self {
        let (root_key, inter, server, admin) = (key(drbg), key(drbg), key(drbg), key(drbg));
        let root = pki::self_signed_root(&root_key.pkcs8, &terms("transitloom root", 1)).unwrap();
        let intermediate = pki::sign_coordinator_intermediate(
            &root,
            &root_key.pkcs8,
            &inter.public,
            &terms(COORDINATOR, 2),
        )
        .unwrap();
        let server_cert = pki::sign_coordinator_server(
            &intermediate,
            &inter.pkcs8,
            &server.public,
            &terms(COORDINATOR, 3),
        )
        .unwrap();
        let admin_cert =
            pki::sign_admin(&root, &root_key.pkcs8, &admin.public, &terms("ops", 4)).unwrap();
        Self {
            root,
            intermediate,
            intermediate_key: inter.pkcs8,
            server: server_cert,
            server_key: server.pkcs8,
            admin: admin_cert,
            admin_key: admin.pkcs8,
        }
    }

    /// A node certificate and key for `name`, and the log entries that
    /// enrolled and admitted it.
    pub fn enroll(&self, drbg: &mut Drbg, name: &str) -> (TlsIdentity, [Op; 2]) {
        let node_key = key(drbg);
        let cert = pki::sign_node(
            &self.intermediate,
            &self.intermediate_key,
            &node_key.public,
            &terms(name, 5),
        )
        .unwrap();
        let invite = JoinToken::generate(drbg, name).unwrap();
        let ops = [
            Op::Invite {
                node: name.to_owned(),
                digest: invite.digest(),
                expires_unix_s: UNIX_START + 3_600,
                admit: true,
            },
            Op::Enroll {
                node: name.to_owned(),
                fingerprint: pki::cert_fingerprint(&cert),
                at_unix_s: UNIX_START - 60,
            },
        ];
        (identity(&[&cert, &self.intermediate], &node_key.pkcs8), ops)
    }
}

/// A node to be: its name, identity and the peers its one service
/// consents to (node names; the service is called `svc` everywhere).
pub struct Member {
    pub name: String,
    pub tls: TlsIdentity,
    pub peers: Vec<String>,
}

impl Member {
    fn clone_identity(&self) -> TlsIdentity {
        TlsIdentity {
            chain: self.tls.chain.clone(),
            key: self.tls.key.clone_key(),
        }
    }
}

enum Machine {
    Hub(Box<Coordinator>),
    Admin(Box<AdminClient>),
    Node(Box<Node>),
    Gone,
}

/// Something for a machine.
enum Delivery {
    /// Its socket is bound at `local`.
    Bound {
        to: usize,
        socket: SocketId,
        local: SocketAddr,
    },
    /// A datagram for its socket.
    Datagram {
        to: usize,
        socket: SocketId,
        src: SocketAddr,
        payload: Bytes,
    },
}

impl Delivery {
    fn to(&self) -> usize {
        match self {
            Self::Bound { to, .. } | Self::Datagram { to, .. } => *to,
        }
    }
}

/// The mesh. Machine 0 is the coordinator, 1 the admin, then the nodes.
pub struct Mesh {
    pub now: Instant,
    wall: WallClock,
    root: CertificateDer<'static>,
    listen: SocketAddr,
    machines: Vec<Machine>,
    /// Bound sockets: address → (machine, socket).
    sockets: BTreeMap<SocketAddr, (usize, SocketId)>,
    /// Each machine's sockets, to unbind a machine that leaves.
    bound: Vec<Vec<SocketAddr>>,
    deadlines: BTreeSet<(Instant, usize)>,
    deadline_of: Vec<Option<Instant>>,
    queue: VecDeque<Delivery>,
    next_port: u16,
    drbg: Drbg,
    /// Real time spent inside the coordinator's calls.
    pub hub_busy: Duration,
    /// Nodes by name.
    pub index: BTreeMap<String, usize>,
}

impl Mesh {
    /// A coordinator whose log enrolled `members` (not yet connected) and
    /// an admin client.
    pub fn new(pki: &Pki, log: Vec<Op>, drbg: &mut Drbg) -> Self {
        let now = clock();
        let wall = WallClock::new(now, UNIX_START * 1_000_000);
        let root = CertificateDer::from(pki.root.clone());
        let tls = server_config(
            &root,
            identity(&[&pki.server, &pki.intermediate], &pki.server_key),
            ClientAuth::Optional,
        )
        .unwrap();
        let mut verifier = TokenVerifier::new();
        verifier.trust(
            COORDINATOR,
            pki::ed25519_public_key(&pki.intermediate).unwrap(),
        );
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 7443);
        let config = CoordinatorConfig {
            name: COORDINATOR.to_owned(),
            listen,
            tls,
            intermediate_der: pki.intermediate.clone(),
            intermediate_key: pki.intermediate_key.clone(),
            verifier,
            token_lifetime_s: 600,
            wall_clock: wall,
            timing: QuicTiming::default(),
            // The benchmarks measure capacity, not the limit.
            handshake_limit: HandshakeLimit::per_second(1_000_000),
        };
        let mut registry = Registry::new();
        for op in &log {
            registry.apply(op).unwrap();
        }
        let hub = Coordinator::new(config, registry, drbg.fork()).unwrap();
        let admin = AdminClient::new(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 0),
            listen,
            COORDINATOR,
            root.clone(),
            identity(&[&pki.admin], &pki.admin_key),
            wall,
            drbg.fork(),
        )
        .unwrap();
        let mut mesh = Self {
            now,
            wall,
            root,
            listen,
            machines: vec![Machine::Hub(Box::new(hub)), Machine::Admin(Box::new(admin))],
            sockets: BTreeMap::new(),
            bound: vec![Vec::new(), Vec::new()],
            deadlines: BTreeSet::new(),
            deadline_of: vec![None, None],
            queue: VecDeque::new(),
            next_port: 1_024,
            drbg: drbg.fork(),
            hub_busy: Duration::ZERO,
            index: BTreeMap::new(),
        };
        mesh.drain(HUB);
        mesh.drain(ADMIN);
        mesh
    }

    /// Starts a node for `member`; returns its machine index.
    pub fn join(&mut self, member: &Member) -> usize {
        let i = self.machines.len();
        let public = ip(i);
        let peers = member
            .peers
            .iter()
            .enumerate()
            .map(|(k, p)| {
                (
                    format!("{p}/svc"),
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 41_000 + k as u16),
                )
            })
            .collect();
        let services = if member.peers.is_empty() {
            Vec::new()
        } else {
            vec![ServiceSpec {
                id: ServiceId(1),
                name: "svc".to_owned(),
                target: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 51_820),
                peers,
            }]
        };
        let config = NodeConfig {
            name: member.name.clone(),
            coordinators: vec![self.listen],
            coordinator_name: COORDINATOR.to_owned(),
            coordinator_names: Default::default(),
            root: self.root.clone(),
            credentials: Credentials::Enrolled(member.clone_identity()),
            control_bind: SocketAddr::new(public, 0),
            advertise_private: false,
            services,
            uplinks: vec![UplinkSpec::new(UplinkId(0), "wan", public)],
            wall_clock: self.wall,
            timing: QuicTiming::default(),
            seed: self.drbg.key(),
        };
        self.machines
            .push(Machine::Node(Box::new(Node::new(config).unwrap())));
        self.bound.push(Vec::new());
        self.deadline_of.push(None);
        self.index.insert(member.name.clone(), i);
        self.drain(i);
        i
    }

    /// Removes machine `i` (its sockets go; datagrams to it are lost).
    pub fn leave(&mut self, i: usize) {
        self.machines[i] = Machine::Gone;
        for addr in std::mem::take(&mut self.bound[i]) {
            self.sockets.remove(&addr);
        }
        if let Some(at) = self.deadline_of[i].take() {
            self.deadlines.remove(&(at, i));
        }
        self.queue.retain(|d| d.to() != i);
    }

    /// The session state of node `i`.
    pub fn state(&self, i: usize) -> Option<SessionState> {
        match &self.machines[i] {
            Machine::Node(n) => Some(n.session_state()),
            _ => None,
        }
    }

    /// The coordinator.
    pub fn hub(&self) -> &Coordinator {
        match &self.machines[HUB] {
            Machine::Hub(h) => h,
            _ => unreachable!("machine 0 is the coordinator"),
        }
    }

    /// Asks the admin client to run `command`.
    pub fn admin(&mut self, command: AdminCommand) {
        let now = self.now;
        if let Machine::Admin(a) = &mut self.machines[ADMIN] {
            a.request(now, command);
        }
        self.drain(ADMIN);
    }

    /// Revokes `node` through the admin session.
    pub fn revoke(&mut self, node: &str) {
        self.admin(AdminCommand::Revoke {
            node: Name::new(node).unwrap(),
        });
    }

    /// Readmits `node` through the admin session.
    pub fn readmit(&mut self, node: &str) {
        self.admin(AdminCommand::Readmit {
            node: Name::new(node).unwrap(),
        });
    }

    /// Runs machine `i`'s input, timing it when it is the coordinator.
    fn call(&mut self, i: usize, f: impl FnOnce(&mut dyn Drive, Instant)) {
        let now = self.now;
        let started = (i == HUB).then(clock);
        match &mut self.machines[i] {
            Machine::Hub(m) => f(m.as_mut(), now),
            Machine::Admin(m) => f(m.as_mut(), now),
            Machine::Node(m) => f(m.as_mut(), now),
            Machine::Gone => return,
        }
        if let Some(started) = started {
            self.hub_busy += started.elapsed();
        }
        self.drain(i);
    }

    /// Moves machine `i`'s outputs into the network.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        let started = (i == HUB).then(clock);
        let mut outputs = Vec::new();
        let deadline = match &mut self.machines[i] {
            Machine::Hub(m) => {
                while let Some(o) = m.poll_output() {
                    if let Output::Event(CoordinatorEvent::Append(_)) = &o {
                        // The log is in memory: durable at once.
                        m.committed(now);
                    }
                    outputs.push(o.map_event(|_| ()));
                }
                m.poll_timeout()
            }
            Machine::Admin(m) => {
                while let Some(o) = m.poll_output() {
                    outputs.push(o.map_event(|_| ()));
                }
                m.poll_timeout()
            }
            Machine::Node(m) => {
                while let Some(o) = m.poll_output() {
                    outputs.push(o.map_event(|_| ()));
                }
                m.poll_timeout()
            }
            Machine::Gone => return,
        };
        if let Some(started) = started {
            self.hub_busy += started.elapsed();
        }
        if let Some(at) = self.deadline_of[i].take() {
            self.deadlines.remove(&(at, i));
        }
        if let Some(at) = deadline {
            self.deadline_of[i] = Some(at);
            self.deadlines.insert((at, i));
        }
        for output in outputs {
            match output {
                Output::Transmit(t) => {
                    let Some(&src) = self.bound[i]
                        .iter()
                        .find(|a| self.sockets.get(a) == Some(&(i, t.socket)))
                    else {
                        continue;
                    };
                    if let Some(&(to, socket)) = self.sockets.get(&t.dst) {
                        self.queue.push_back(Delivery::Datagram {
                            to,
                            socket,
                            src,
                            payload: t.payload,
                        });
                    }
                }
                Output::BindSocket { socket, mut local } => {
                    if local.port() == 0 {
                        self.next_port = self.next_port.wrapping_add(1).max(1_024);
                        local.set_port(self.next_port);
                    }
                    self.sockets.insert(local, (i, socket));
                    self.bound[i].push(local);
                    self.queue.push_back(Delivery::Bound {
                        to: i,
                        socket,
                        local,
                    });
                }
                Output::CloseSocket { socket } => {
                    let gone: Vec<SocketAddr> = self.bound[i]
                        .iter()
                        .copied()
                        .filter(|a| self.sockets.get(a) == Some(&(i, socket)))
                        .collect();
                    for a in gone {
                        self.sockets.remove(&a);
                        self.bound[i].retain(|b| *b != a);
                    }
                }
                _ => {}
            }
        }
    }

    /// Delivers every queued datagram and fires every timer due by now,
    /// until nothing is left; virtual time does not move.
    pub fn settle(&mut self) {
        loop {
            match self.queue.pop_front() {
                Some(Delivery::Bound { to, socket, local }) => {
                    self.call(to, |m, now| {
                        m.input(now, Input::SocketBound { socket, local })
                    });
                    continue;
                }
                Some(Delivery::Datagram {
                    to,
                    socket,
                    src,
                    payload,
                }) => {
                    self.call(to, |m, now| {
                        m.input(
                            now,
                            Input::Datagram(Datagram {
                                socket,
                                src,
                                payload: &payload,
                            }),
                        )
                    });
                    continue;
                }
                None => {}
            }
            match self.deadlines.first() {
                Some(&(at, i)) if at <= self.now => {
                    self.deadlines.remove(&(at, i));
                    self.deadline_of[i] = None;
                    self.call(i, |m, now| m.timeout(now));
                }
                _ => return,
            }
        }
    }

    /// Advances virtual time to `until`, handling everything due on the way.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            self.settle();
            match self.deadlines.first() {
                Some(&(at, _)) if at <= until => self.now = self.now.max(at),
                _ => break,
            }
        }
        self.now = self.now.max(until);
        self.settle();
    }

    /// Advances virtual time by `d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs in steps of `step` until every node in `nodes` is live.
    pub fn until_live(&mut self, nodes: &[usize], step: Duration, max: Duration) {
        let end = self.now + max;
        while self.now < end {
            self.settle();
            if nodes
                .iter()
                .all(|&i| self.state(i) == Some(SessionState::Live))
            {
                return;
            }
            self.run_for(step);
        }
        panic!("nodes not live within {max:?}");
    }
}

/// The calls the mesh makes on any machine.
trait Drive {
    fn input(&mut self, now: Instant, input: Input<'_>);
    fn timeout(&mut self, now: Instant);
}

impl<M: StateMachine> Drive for M {
    fn input(&mut self, now: Instant, input: Input<'_>) {
        self.handle_input(now, input);
    }

    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
}
