//! The control plane end to end in virtual time: a coordinator, an admin,
//! and two nodes that enroll with join tokens, get admission tokens, form an
//! association by mutual consent, exchange candidates and carry UDP between
//! their local services; then the admin revokes one node mid-flow. Every
//! handshake is real mutual TLS over QUIC through the simulated network.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use transitloom_proto_core::admin::{AdminClient, AdminEvent};
use transitloom_proto_core::control::msg::{AdminCommand, AdminReply, Name};
use transitloom_proto_core::control::quic::QuicTiming;
use transitloom_proto_core::control::tls_config::{server_config, ClientAuth, TlsIdentity};
use transitloom_proto_core::control::token::TokenVerifier;
use transitloom_proto_core::coordinator::registry::{Op, Registry};
use transitloom_proto_core::coordinator::replica::{HardState, LogEntry};
use transitloom_proto_core::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorEvent, HandshakeLimit,
};
use transitloom_proto_core::csprng::Drbg;
use transitloom_proto_core::dataplane::UplinkSpec;
use transitloom_proto_core::node::{
    Credentials, Node, NodeConfig, NodeEvent, ServiceSpec, SessionState,
};
use transitloom_proto_core::pki::{self, CertTerms, Ed25519PublicKey};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::{Input, Output, ServiceId, StateMachine, UplinkId};

use super::mesh_udp::node_with_service;
use super::params::Allowed::Range;
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::apps::{UdpSink, UdpSource};
use crate::link::{LinkParams, Loss};
use crate::world::{HostId, World};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "control-plane",
    about: "nodes enroll, form an association by mutual consent and carry UDP; then one is revoked mid-flow",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "delay_ms",
        default: "15",
        about: "one-way delay of each access link",
        allowed: Range(0.0, 5_000.0),
    },
    ParamSpec {
        name: "loss",
        default: "0.01",
        about: "independent loss per access link direction",
        allowed: Range(0.0, 0.5),
    },
    ParamSpec {
        name: "rate_mbps",
        default: "2",
        about: "UDP load from alpha's service to beta's",
        allowed: Range(0.01, 1_000.0),
    },
    ParamSpec {
        name: "restart_at_s",
        default: "0",
        about: "the coordinator restarts from its log at this time (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "revoke_at_s",
        default: "8",
        about: "when the admin revokes beta (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "12",
        about: "virtual run time",
        allowed: Range(3.0, 3_600.0),
    },
];

pub(super) const UNIX_START: u64 = 1_760_000_000;
pub(super) const COORDINATOR: &str = "hub";

pub(super) fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// A coordinator whose log is kept in memory and made durable at once: its
/// own operation log, or (in a cluster) its replica of the shared log.
#[derive(Debug)]
pub struct InMemoryCoordinator {
    /// The coordinator.
    pub coordinator: Coordinator,
    /// Its operation log (a lone coordinator).
    pub log: Vec<Op>,
    /// Its stored entries of the replicated log (a cluster).
    pub entries: Vec<LogEntry>,
    /// Its stored hard state (a cluster).
    pub hard_state: HardState,
    now: Option<Instant>,
    ready: VecDeque<Output<CoordinatorEvent>>,
}

impl InMemoryCoordinator {
    /// A coordinator with the log it was built from.
    pub fn new(coordinator: Coordinator, log: Vec<Op>) -> Self {
        Self {
            coordinator,
            log,
            entries: Vec::new(),
            hard_state: HardState::default(),
            now: None,
            ready: VecDeque::new(),
        }
    }
}

impl StateMachine for InMemoryCoordinator {
    type Event = CoordinatorEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.now = Some(now);
        self.coordinator.handle_input(now, input);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        self.coordinator.handle_timeout(now);
    }

    fn poll_output(&mut self) -> Option<Output<CoordinatorEvent>> {
        if let Some(output) = self.ready.pop_front() {
            return Some(output);
        }
        let output = self.coordinator.poll_output()?;
        match &output {
            Output::Event(CoordinatorEvent::Append(op)) => {
                self.log.push(op.clone());
                if let Some(now) = self.now {
                    self.coordinator.committed(now);
                }
            }
            Output::Event(CoordinatorEvent::Persist {
                hard_state,
                entries,
            }) => {
                if let Some(hs) = hard_state {
                    self.hard_state = *hs;
                }
                if let Some(first) = entries.first() {
                    self.entries.retain(|e| e.index < first.index);
                    self.entries.extend(entries.iter().cloned());
                }
                if let Some(now) = self.now {
                    self.coordinator.persisted(now);
                }
            }
            _ => {}
        }
        Some(output)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.coordinator.poll_timeout()
    }
}

pub(super) struct Key {
    pub(super) pkcs8: Vec<u8>,
    pub(super) public: Ed25519PublicKey,
}

pub(super) fn key(drbg: &mut Drbg) -> Key {
    let pkcs8 = pki::ed25519_pkcs8_from_seed(&drbg.key());
    let pair = pki::ed25519_key_pair(&pkcs8).expect("a valid key");
    let public = Ed25519PublicKey(pair.public_key_raw().try_into().expect("32 bytes"));
    Key { pkcs8, public }
}

pub(super) fn identity(chain: &[&[u8]], key: &[u8]) -> TlsIdentity {
    TlsIdentity {
        chain: chain
            .iter()
            .map(|c| CertificateDer::from(c.to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
    }
}

pub(super) struct Pki {
    pub(super) root: Vec<u8>,
    /// Kept to sign more coordinators (a cluster's).
    pub(super) root_key: Vec<u8>,
    pub(super) intermediate: Vec<u8>,
    pub(super) intermediate_key: Vec<u8>,
    pub(super) server: Vec<u8>,
    pub(super) server_key: Vec<u8>,
    pub(super) admin: Vec<u8>,
    pub(super) admin_key: Vec<u8>,
}

pub(super) fn make_pki(drbg: &mut Drbg) -> Result<Pki, SimError> {
    let fail = |e: pki::PkiError| SimError::Topology(format!("test PKI: {e}"));
    let mut serial = 0u8;
    let mut terms = |name: &'static str| {
        serial += 1;
        CertTerms {
            name,
            not_before_unix_s: (UNIX_START - 3_600) as i64,
            validity_days: 30,
            serial: [serial; 16],
        }
    };
    let (root_key, inter, server, admin) = (key(drbg), key(drbg), key(drbg), key(drbg));
    let root = pki::self_signed_root(&root_key.pkcs8, &terms("transitloom root")).map_err(fail)?;
    let intermediate = pki::sign_coordinator_intermediate(
        &root,
        &root_key.pkcs8,
        &inter.public,
        &terms(COORDINATOR),
    )
    .map_err(fail)?;
    let server_cert = pki::sign_coordinator_server(
        &intermediate,
        &inter.pkcs8,
        &server.public,
        &terms(COORDINATOR),
    )
    .map_err(fail)?;
    let admin_cert =
        pki::sign_admin(&root, &root_key.pkcs8, &admin.public, &terms("ops")).map_err(fail)?;
    Ok(Pki {
        root,
        root_key: root_key.pkcs8,
        intermediate,
        intermediate_key: inter.pkcs8,
        server: server_cert,
        server_key: server.pkcs8,
        admin: admin_cert,
        admin_key: admin.pkcs8,
    })
}

/// The coordinator's configuration: `pki`'s server identity, every node
/// and admin certificate of its root accepted, tokens of `token_lifetime_s`.
pub(super) fn hub_config(
    pki: &Pki,
    listen: SocketAddr,
    wall: WallClock,
    token_lifetime_s: u64,
) -> Result<CoordinatorConfig, SimError> {
    let root = CertificateDer::from(pki.root.clone());
    let tls = server_config(
        &root,
        identity(&[&pki.server, &pki.intermediate], &pki.server_key),
        ClientAuth::Optional,
    )
    .map_err(|e| SimError::Topology(e.to_string()))?;
    let mut verifier = TokenVerifier::new();
    verifier.trust(
        COORDINATOR,
        pki::ed25519_public_key(&pki.intermediate)
            .map_err(|e| SimError::Topology(e.to_string()))?,
    );
    Ok(CoordinatorConfig {
        name: COORDINATOR.to_owned(),
        listen,
        tls,
        intermediate_der: pki.intermediate.clone(),
        intermediate_key: pki.intermediate_key.clone(),
        verifier,
        token_lifetime_s,
        wall_clock: wall,
        timing: QuicTiming::default(),
        handshake_limit: HandshakeLimit::default(),
    })
}

/// Installs a coordinator on `hub` whose registry is `log` replayed.
pub(super) fn install_hub(
    world: &mut World,
    hub: HostId,
    config: &CoordinatorConfig,
    log: Vec<Op>,
    seed: Drbg,
) -> Result<(), SimError> {
    let coordinator = hub_coordinator(config, &log, seed)?;
    install_coordinator(world, hub, coordinator, log);
    Ok(())
}

/// A coordinator whose registry is `log` replayed.
/// An admin host (`ops`, at 192.0.2.99) with the admin certificate of
/// `pki`, talking to the coordinator at `listen`.
pub(super) fn add_admin(
    world: &mut World,
    pki: &Pki,
    (segment, link): (crate::world::SegmentId, &LinkParams),
    listen: SocketAddr,
    wall: WallClock,
    seed: Drbg,
) -> Result<HostId, SimError> {
    let ops_ip = ip(192, 0, 2, 99);
    let ops = world.add_host("ops");
    world.add_iface(ops, ops_ip, segment, link.clone(), link.clone())?;
    let admin = AdminClient::new(
        SocketAddr::new(ops_ip, 0),
        listen,
        COORDINATOR,
        CertificateDer::from(pki.root.clone()),
        identity(&[&pki.admin], &pki.admin_key),
        wall,
        seed,
    )
    .map_err(|e| SimError::Topology(e.to_string()))?;
    world.install(ops, admin);
    Ok(ops)
}

/// The admin on `ops` revokes `node` at `at`.
pub(super) fn revoke_at_time(world: &mut World, ops: HostId, at: Duration, node: &'static str) {
    world.at(at, move |w| {
        let now = w.now();
        let admin = &mut w.app::<AdminClient>(ops).expect("installed").machine;
        admin.request(
            now,
            AdminCommand::Revoke {
                node: Name::new(node).expect("a valid name"),
            },
        );
        w.wake(ops);
    });
}

pub(super) fn hub_coordinator(
    config: &CoordinatorConfig,
    log: &[Op],
    seed: Drbg,
) -> Result<Coordinator, SimError> {
    let mut registry = Registry::new();
    for op in log {
        registry
            .apply(op)
            .map_err(|e| SimError::Topology(format!("the log does not replay: {e}")))?;
    }
    Coordinator::new(config.clone(), registry, seed).map_err(|e| SimError::Topology(e.to_string()))
}

/// Installs `coordinator`, built from `log`, on `hub`.
pub(super) fn install_coordinator(
    world: &mut World,
    hub: HostId,
    coordinator: Coordinator,
    log: Vec<Op>,
) {
    world.install(hub, InMemoryCoordinator::new(coordinator, log));
}

/// A coordinator restart: a fresh machine whose state comes from the log
/// of the one it replaces (sessions and everything transient are lost).
pub(super) fn restart_hub(w: &mut World, hub: HostId, config: &CoordinatorConfig, seed: Drbg) {
    let log = w
        .app_ref::<InMemoryCoordinator>(hub)
        .expect("installed")
        .machine
        .log
        .clone();
    install_hub(w, hub, config, log, seed).expect("the same log and config start again");
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let mut world = World::new(seed);
    let mut drbg = Drbg::from_u64(world.fork_seed());
    let pki = make_pki(&mut drbg)?;
    let root = CertificateDer::from(pki.root.clone());
    let wall = WallClock::new(world.epoch(), UNIX_START * 1_000_000);
    let internet = world.add_segment("internet");
    let link = LinkParams {
        delay: Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
        loss: Loss::Independent(p.f64("loss")),
        ..LinkParams::ideal()
    };

    // The coordinator.
    let hub_ip = ip(203, 0, 113, 1);
    let hub = world.add_host("hub");
    world.add_iface(hub, hub_ip, internet, link.clone(), link.clone())?;
    let listen = SocketAddr::new(hub_ip, 7443);
    let config = hub_config(&pki, listen, wall, 600)?;
    install_hub(&mut world, hub, &config, Vec::new(), drbg.fork())?;

    // The admin invites both nodes.
    let ops = add_admin(
        &mut world,
        &pki,
        (internet, &link),
        listen,
        wall,
        drbg.fork(),
    )?;
    world.at(Duration::from_millis(10), move |w| {
        let now = w.now();
        let admin = &mut w.app::<AdminClient>(ops).expect("installed").machine;
        for name in ["alpha", "beta"] {
            admin.request(
                now,
                AdminCommand::Invite {
                    node: Name::new(name).expect("a valid name"),
                    admit: true,
                    ttl_s: 3_600,
                },
            );
        }
        w.wake(ops);
    });
    // Wait for both join tokens (handshakes may need retransmissions).
    let mut tokens: Vec<String> = Vec::new();
    for _ in 0..100 {
        world.run_for(Duration::from_millis(100));
        tokens = world
            .app_ref::<AdminClient>(ops)
            .expect("installed")
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                AdminEvent::Reply {
                    result: Ok(AdminReply::Invited { join_token }),
                    ..
                } => Some(join_token.clone()),
                _ => None,
            })
            .collect();
        if tokens.len() == 2 {
            break;
        }
    }
    if tokens.len() != 2 {
        return Err(SimError::Topology(format!(
            "the admin got {} join tokens, expected 2",
            tokens.len()
        )));
    }

    // Two nodes enroll with their join tokens and keys of their own.
    let ingress = SocketAddr::new(ip(127, 0, 0, 1), 41_000);
    let service_addr = SocketAddr::new(ip(127, 0, 0, 2), 51_820);
    let mut nodes = Vec::new();
    for (i, (name, peer, public)) in [
        ("alpha", "beta", ip(192, 0, 2, 10)),
        ("beta", "alpha", ip(198, 51, 100, 20)),
    ]
    .into_iter()
    .enumerate()
    {
        let (node, service) = node_with_service(&mut world, name, public, internet, &link)?;
        let node_key = key(&mut drbg);
        let csr = pki::node_csr(&node_key.pkcs8).map_err(|e| SimError::Topology(e.to_string()))?;
        let config = NodeConfig {
            name: name.to_owned(),
            coordinators: vec![listen],
            coordinator_name: COORDINATOR.to_owned(),
            coordinator_names: Default::default(),
            root: root.clone(),
            credentials: Credentials::Enroll {
                join_token: tokens[i].clone(),
                key_pkcs8: node_key.pkcs8,
                csr_der: csr,
            },
            control_bind: SocketAddr::new(public, 0),
            advertise_private: false,
            services: vec![ServiceSpec {
                id: ServiceId(1),
                name: "wg0".to_owned(),
                target: service_addr,
                peers: BTreeMap::from([(format!("{peer}/wg0"), ingress)]),
            }],
            uplinks: vec![UplinkSpec::new(UplinkId(0), "wan", public)],
            wall_clock: wall,
            timing: QuicTiming::default(),
            seed: drbg.key(),
        };
        world.install(
            node,
            Node::new(config).map_err(|e| SimError::Topology(e.to_string()))?,
        );
        nodes.push((node, service));
    }
    let [(alpha, alpha_service), (beta, beta_service)] = [nodes[0], nodes[1]];
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    let epoch = world.epoch();
    let start = Duration::from_secs(3);
    world.install(
        alpha_service,
        UdpSource::new(
            service_addr,
            ingress,
            1_000,
            p.f64("rate_mbps") * 1e6,
            1,
            epoch,
            start,
            duration,
        ),
    );
    world.install(beta_service, UdpSink::new(service_addr, epoch));

    let restart_at = Duration::from_secs_f64(p.f64("restart_at_s"));
    if restart_at > Duration::ZERO {
        let restart_seed = drbg.fork();
        world.at(restart_at, move |w| {
            restart_hub(w, hub, &config, restart_seed)
        });
    }
    let revoke_at = Duration::from_secs_f64(p.f64("revoke_at_s"));
    if revoke_at > Duration::ZERO {
        revoke_at_time(&mut world, ops, revoke_at, "beta");
        // DESIGN §4: no revoked node is carried after the revoke bound.
        let bound = revoke_at + Duration::from_secs(1);
        world.add_invariant("nothing carried after the revoke bound", move |w| {
            let sink = &w
                .app_ref::<UdpSink>(beta_service)
                .expect("installed")
                .machine;
            match sink.arrivals().last() {
                Some(a) if a.at > bound => {
                    Err(format!("datagram {} delivered at {:?}", a.seq, a.at))
                }
                _ => Ok(()),
            }
        });
    }
    world.run_until(epoch + duration + Duration::from_millis(500));

    let mut summary = Summary::default();
    let event_time = |host: HostId, want: &dyn Fn(&NodeEvent) -> bool| {
        world
            .app_ref::<Node>(host)
            .and_then(|a| a.events.iter().find(|(_, e)| want(e)).map(|(at, _)| *at))
    };
    let shown = |t: Option<Duration>| t.map_or("never".to_owned(), ms);
    for (host, name) in [(alpha, "alpha"), (beta, "beta")] {
        summary.row(
            &format!("{name} enrolled at"),
            shown(event_time(host, &|e| {
                matches!(e, NodeEvent::Enrolled { .. })
            })),
        );
        summary.row(
            &format!("{name} association installed at"),
            shown(event_time(host, &|e| {
                matches!(e, NodeEvent::Installed { .. })
            })),
        );
    }
    let mut reinstalled_after_restart = 0;
    if restart_at > Duration::ZERO {
        // The replayed log holds the ids and keys the nodes have: they are
        // re-associated once their session is live again (the coordinator
        // sends its associations after the hello), with nothing to change.
        let again = world.app_ref::<Node>(alpha).and_then(|a| {
            a.events
                .iter()
                .find(|(at, e)| *at > restart_at && *e == NodeEvent::Session(SessionState::Live))
                .map(|(at, _)| *at - restart_at)
        });
        summary.row("alpha re-associated after the restart in", shown(again));
        reinstalled_after_restart = [alpha, beta]
            .into_iter()
            .filter_map(|host| world.app_ref::<Node>(host))
            .flat_map(|a| a.events.iter())
            .filter(|(at, e)| {
                *at > restart_at
                    && matches!(
                        e,
                        NodeEvent::Installed { .. }
                            | NodeEvent::Rekeyed { .. }
                            | NodeEvent::Withdrawn { .. }
                    )
            })
            .count();
        summary.row(
            "associations changed by the restart",
            reinstalled_after_restart,
        );
        let sink = &world
            .app_ref::<UdpSink>(beta_service)
            .expect("installed")
            .machine;
        let window = |from: Duration, to: Duration| {
            sink.arrivals()
                .iter()
                .filter(|a| a.at >= from && a.at < to)
                .count()
        };
        summary.row(
            "datagrams delivered in the 5 s after the restart",
            window(restart_at, restart_at + Duration::from_secs(5)),
        );
    }
    let sent = world
        .app_ref::<UdpSource>(alpha_service)
        .map_or(0, |s| s.machine.sent());
    let sink = &world
        .app_ref::<UdpSink>(beta_service)
        .expect("installed")
        .machine;
    summary.row("datagrams sent", sent);
    summary.row("datagrams delivered", sink.packets);
    summary.throughput(
        "alpha → beta (Mbit/s)",
        sink.arrivals(),
        Duration::from_millis(250),
        duration + Duration::from_millis(500),
    );
    summary.row("altered", sink.malformed);
    if revoke_at > Duration::ZERO {
        let withdrawn = event_time(alpha, &|e| matches!(e, NodeEvent::Withdrawn { .. }));
        summary.row(
            "alpha withdrew the association after the revoke in",
            shown(withdrawn.map(|t| t.saturating_sub(revoke_at))),
        );
        let revoked = event_time(beta, &|e| {
            matches!(e, NodeEvent::Revoked | NodeEvent::Refused { .. })
        });
        summary.row(
            "beta told it is revoked after",
            shown(revoked.map(|t| t.saturating_sub(revoke_at))),
        );
        let last = sink
            .arrivals()
            .last()
            .map(|a| a.at.saturating_sub(revoke_at));
        summary.row("last datagram delivered after the revoke", shown(last));
    }
    let log = &world
        .app_ref::<InMemoryCoordinator>(hub)
        .expect("installed")
        .machine
        .log;
    summary.row("operations logged", log.len());
    summary.finish(&world);
    if sink.malformed > 0 {
        summary
            .violations
            .push(format!("{} datagrams altered", sink.malformed));
    }
    // A restart changes no association (a revoke after it would).
    let revoked_after_restart = revoke_at > restart_at;
    if reinstalled_after_restart > 0 && !revoked_after_restart {
        summary.violations.push(format!(
            "the restart changed {reinstalled_after_restart} association(s) on the nodes"
        ));
    }
    Ok(summary)
}
