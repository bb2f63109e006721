//! Three coordinators share one replicated log (DESIGN §4) while two nodes
//! carry UDP between their services. Both nodes list the coordinators in
//! one order and meet at the first. That coordinator is cut off: the
//! other two elect a leader, the nodes move to the next coordinator, which
//! knows them from the shared log, and the association comes back with
//! the key in the log. Then an admin at the third coordinator revokes
//! beta: the write commits through the majority and the coordinator that
//! holds both sessions withdraws the association, so data stops. The cut
//! coordinator comes back and catches up.
//!
//! Invariants: never two leaders in one term; every coordinator ends with
//! the same log applied; nothing is delivered later than the bound after
//! the revoke.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use transitloom_proto_core::admin::{AdminClient, AdminEvent};
use transitloom_proto_core::control::msg::{AdminCommand, Name};
use transitloom_proto_core::control::quic::QuicTiming;
use transitloom_proto_core::control::tls_config::{client_config, server_config, ClientAuth};
use transitloom_proto_core::control::token::TokenVerifier;
use transitloom_proto_core::coordinator::machine::{AppliedLog, ClusterConfig, ClusterPeer};
use transitloom_proto_core::coordinator::registry::{Admission, Op};
use transitloom_proto_core::coordinator::replica::{
    HardState, LogEntry, Replica, ReplicaConfig, Restored, Role, DEFAULT_TICK,
};
use transitloom_proto_core::coordinator::{Coordinator, CoordinatorConfig, HandshakeLimit};
use transitloom_proto_core::csprng::Drbg;
use transitloom_proto_core::node::{Node, NodeEvent, ServiceSpec};
use transitloom_proto_core::pki::{self, CertTerms};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::ServiceId;

use super::control_plane::{identity, ip, key, make_pki, InMemoryCoordinator, Pki, UNIX_START};
use super::params::Allowed::Range;
use super::reconnect_storm::{enrolled, node_config};
use super::{ParamSpec, Params, Scenario, Summary};
use crate::apps::{UdpSink, UdpSource};
use crate::link::{LinkParams, Loss};
use crate::world::{HostId, WireId, World};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "coordinator-cluster",
    about: "three coordinators share one log: one cut off, the nodes move on, a revoke at another stops data",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "cut_at_s",
        default: "10",
        about: "when the nodes' first coordinator is cut off",
        allowed: Range(5.0, 3_600.0),
    },
    ParamSpec {
        name: "revoke_at_s",
        default: "30",
        about: "when the admin at the third coordinator revokes beta",
        allowed: Range(5.0, 3_600.0),
    },
    ParamSpec {
        name: "heal_at_s",
        default: "40",
        about: "when the cut coordinator comes back",
        allowed: Range(5.0, 3_600.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "50",
        about: "virtual run time",
        allowed: Range(10.0, 7_200.0),
    },
    ParamSpec {
        name: "delay_ms",
        default: "10",
        about: "one-way delay of each access link",
        allowed: Range(0.0, 1_000.0),
    },
    ParamSpec {
        name: "loss",
        default: "0.01",
        about: "independent loss per access link direction",
        allowed: Range(0.0, 0.5),
    },
];

const NAMES: [&str; 3] = ["hub-a", "hub-b", "hub-c"];

/// Data may land this long after the revoke was asked: the write commits
/// through the majority (a round trip or two between coordinators), then
/// the withdrawal is one push to the peer.
const REVOKE_BOUND: Duration = Duration::from_secs(2);

/// A coordinator's certificates: (intermediate, its key, server, its key).
type Creds = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// The first coordinator takes `pki`'s own; the others are signed here.
fn coordinator_creds(pki: &Pki, drbg: &mut Drbg) -> Result<Vec<Creds>, SimError> {
    let fail = |e: pki::PkiError| SimError::Topology(format!("cluster PKI: {e}"));
    let mut out = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let serial = 40 + 2 * i as u8;
        let terms = |serial: u8| CertTerms {
            name,
            not_before_unix_s: (UNIX_START - 3_600) as i64,
            validity_days: 30,
            serial: [serial; 16],
        };
        let (inter, server) = (key(drbg), key(drbg));
        let intermediate = pki::sign_coordinator_intermediate(
            &pki.root,
            &pki.root_key,
            &inter.public,
            &terms(serial),
        )
        .map_err(fail)?;
        let server_cert = pki::sign_coordinator_server(
            &intermediate,
            &inter.pkcs8,
            &server.public,
            &terms(serial + 1),
        )
        .map_err(fail)?;
        out.push((intermediate, inter.pkcs8, server_cert, server.pkcs8));
    }
    Ok(out)
}

/// The log every coordinator starts from: the nodes' invitations and
/// enrollments, committed in term 1.
fn initial_log(ops: &[Op]) -> Restored {
    let entries: Vec<LogEntry> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| LogEntry {
            term: 1,
            index: i as u64 + 1,
            data: Bytes::from(op.encode()),
            context: Bytes::new(),
        })
        .collect();
    let commit = entries.len() as u64;
    Restored {
        hard_state: HardState {
            term: 1,
            vote: 0,
            commit,
        },
        entries,
        applied: commit,
    }
}

#[allow(clippy::too_many_arguments)]
fn cluster_coordinator(
    pki: &Pki,
    creds: &[Creds],
    i: usize,
    listens: &[SocketAddr],
    wall: WallClock,
    log: &Restored,
    seed: &mut Drbg,
    now: Instant,
) -> Result<InMemoryCoordinator, SimError> {
    let fail = |e: &dyn std::fmt::Display| SimError::Topology(format!("{}: {e}", NAMES[i]));
    let (inter, inter_key, server, server_key) = &creds[i];
    let root = CertificateDer::from(pki.root.clone());
    let tls = server_config(
        &root,
        identity(&[server, inter], server_key),
        ClientAuth::Optional,
    )
    .map_err(|e| fail(&e))?;
    let client_tls =
        client_config(&root, Some(identity(&[server, inter], server_key))).map_err(|e| fail(&e))?;
    let mut verifier = TokenVerifier::new();
    verifier.trust(
        NAMES[i],
        pki::ed25519_public_key(inter).map_err(|e| fail(&e))?,
    );
    let config = CoordinatorConfig {
        name: NAMES[i].to_owned(),
        listen: listens[i],
        tls,
        intermediate_der: inter.clone(),
        intermediate_key: inter_key.clone(),
        verifier,
        token_lifetime_s: 600,
        wall_clock: wall,
        timing: QuicTiming::default(),
        handshake_limit: HandshakeLimit::default(),
    };
    let applied = AppliedLog::replay(&log.entries);
    let mut coordinator =
        Coordinator::new(config, applied.registry.clone(), seed.fork()).map_err(|e| fail(&e))?;
    let id = i as u64 + 1;
    let replica = Replica::new(
        &ReplicaConfig {
            id,
            voters: vec![1, 2, 3],
            tick: DEFAULT_TICK,
        },
        log.clone(),
        seed.fork(),
        now,
    )
    .map_err(|e| fail(&e))?;
    let peers = (0..NAMES.len())
        .filter(|&j| j != i)
        .map(|j| ClusterPeer {
            id: j as u64 + 1,
            name: NAMES[j].to_owned(),
            addr: listens[j],
        })
        .collect();
    coordinator.join_cluster(
        ClusterConfig {
            id,
            peers,
            client_tls,
        },
        replica,
        &applied,
        now,
    );
    let mut app = InMemoryCoordinator::new(coordinator, Vec::new());
    app.entries = log.entries.clone();
    app.hard_state = log.hard_state;
    Ok(app)
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[allow(clippy::too_many_lines)]
fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let cut_at = Duration::from_secs_f64(p.f64("cut_at_s"));
    let revoke_at = Duration::from_secs_f64(p.f64("revoke_at_s"));
    let heal_at = Duration::from_secs_f64(p.f64("heal_at_s"));
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    if !(cut_at < revoke_at && revoke_at < heal_at && heal_at < duration) {
        return Err(SimError::Topology(
            "cut_at_s < revoke_at_s < heal_at_s < duration_s is required".to_owned(),
        ));
    }
    let mut world = World::new(seed);
    let mut drbg = Drbg::from_u64(world.fork_seed());
    let pki = make_pki(&mut drbg)?;
    let creds = coordinator_creds(&pki, &mut drbg)?;
    let root = CertificateDer::from(pki.root.clone());
    let wall = WallClock::new(world.epoch(), UNIX_START * 1_000_000);
    let internet = world.add_segment("internet");
    let link = LinkParams {
        delay: Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
        loss: Loss::Independent(p.f64("loss")),
        ..LinkParams::ideal()
    };

    let mut hubs: Vec<HostId> = Vec::new();
    let mut wires: Vec<WireId> = Vec::new();
    let mut listens = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let hub_ip = ip(203, 0, 113, i as u8 + 1);
        let hub = world.add_host(name);
        wires.push(world.add_iface(hub, hub_ip, internet, link.clone(), link.clone())?);
        hubs.push(hub);
        listens.push(SocketAddr::new(hub_ip, 7443));
    }

    // The nodes, enrolled by the first coordinator's intermediate, in the
    // log every coordinator starts from.
    let ingress = SocketAddr::new(ip(127, 0, 0, 1), 41_000);
    let service_addr = SocketAddr::new(ip(127, 0, 0, 2), 51_820);
    let mut ops = Vec::new();
    let mut sites = Vec::new();
    for (name, peer, public) in [
        ("alpha", "beta", ip(192, 0, 2, 10)),
        ("beta", "alpha", ip(198, 51, 100, 20)),
    ] {
        let node = world.add_host(name);
        world.add_iface(node, public, internet, link.clone(), link.clone())?;
        let service = world.add_host(&format!("{name}-service"));
        let lo = world.add_segment(&format!("{name}-lo"));
        let ideal = LinkParams::ideal();
        world.add_iface(node, ip(127, 0, 0, 1), lo, ideal.clone(), ideal.clone())?;
        world.add_iface(service, ip(127, 0, 0, 2), lo, ideal.clone(), ideal)?;
        let (tls, enroll) = enrolled(&pki, &mut drbg, name)?;
        ops.extend(enroll);
        let mut config = node_config(name, public, listens[0], &root, tls, wall, drbg.key());
        config.coordinators = listens.clone();
        config.coordinator_names = listens
            .iter()
            .zip(NAMES)
            .map(|(a, n)| (*a, n.to_owned()))
            .collect::<BTreeMap<_, _>>();
        config.services = vec![ServiceSpec {
            id: ServiceId(1),
            name: "wg0".to_owned(),
            target: service_addr,
            peers: BTreeMap::from([(format!("{peer}/wg0"), ingress)]),
        }];
        let machine = Node::new(config).map_err(|e| SimError::Topology(e.to_string()))?;
        world.install(node, machine);
        sites.push((node, service));
    }
    let log = initial_log(&ops);
    let now = world.epoch();
    for (i, &hub) in hubs.iter().enumerate() {
        let c = cluster_coordinator(&pki, &creds, i, &listens, wall, &log, &mut drbg, now)?;
        world.install(hub, c);
    }

    // The admin talks to the third coordinator.
    let ops_ip = ip(192, 0, 2, 99);
    let admin_host = world.add_host("ops");
    world.add_iface(admin_host, ops_ip, internet, link.clone(), link.clone())?;
    let admin = AdminClient::new(
        SocketAddr::new(ops_ip, 0),
        listens[2],
        NAMES[2],
        root.clone(),
        identity(&[&pki.admin], &pki.admin_key),
        wall,
        drbg.fork(),
    )
    .map_err(|e| SimError::Topology(e.to_string()))?;
    world.install(admin_host, admin);

    let epoch = world.epoch();
    let ((alpha, alpha_service), (_, beta_service)) = (sites[0], sites[1]);
    world.install(
        alpha_service,
        UdpSource::new(
            service_addr,
            ingress,
            1_000,
            400e3,
            1,
            epoch,
            Duration::from_secs(3),
            duration,
        ),
    );
    world.install(beta_service, UdpSink::new(service_addr, epoch));

    // Leaders seen, by term, sampled every 50 ms.
    let leaders: std::rc::Rc<std::cell::RefCell<BTreeMap<u64, Vec<u64>>>> = Default::default();
    let seen = leaders.clone();
    let sampled = hubs.clone();
    world.every(
        Duration::ZERO,
        Duration::from_millis(50),
        duration,
        move |w| {
            for &hub in &sampled {
                let Some(app) = w.app_ref::<InMemoryCoordinator>(hub) else {
                    continue;
                };
                if let Some(status) = app.machine.coordinator.cluster_status() {
                    if status.replica.role == Role::Leader {
                        let mut seen = seen.borrow_mut();
                        let ids = seen.entry(status.replica.term).or_default();
                        if !ids.contains(&status.replica.id) {
                            ids.push(status.replica.id);
                        }
                    }
                }
            }
        },
    );
    let first = wires[0];
    world.at(cut_at, move |w| w.set_wire_up(first, false));
    world.at(revoke_at, move |w| {
        let now = w.now();
        let admin = &mut w.app::<AdminClient>(admin_host).expect("installed").machine;
        admin.request(
            now,
            AdminCommand::Revoke {
                node: Name::new("beta").expect("a valid name"),
            },
        );
        w.wake(admin_host);
    });
    world.at(heal_at, move |w| w.set_wire_up(first, true));
    world.run_until(epoch + duration);

    let mut summary = Summary::default();
    let mut violations = Vec::new();
    let node_events = |host: HostId| -> &[(Duration, NodeEvent)] {
        world
            .app_ref::<Node>(host)
            .map_or(&[], |a| a.events.as_slice())
    };
    let sink = &world
        .app_ref::<UdpSink>(beta_service)
        .expect("installed")
        .machine;
    let arrivals: Vec<Duration> = sink.arrivals().iter().map(|a| a.at).collect();
    let shown = |t: Option<Duration>| t.map_or("never".to_owned(), seconds);

    let elected = leaders.borrow();
    let first_leader = elected.iter().next().map(|(term, ids)| {
        format!(
            "hub-{} (term {term})",
            ids.iter()
                .map(|i| (b'a' + *i as u8 - 1) as char)
                .collect::<String>()
        )
    });
    summary.row(
        "first leader",
        first_leader.unwrap_or_else(|| "none".to_owned()),
    );
    summary.row("terms with a leader", elected.len());
    for (term, ids) in elected.iter() {
        if ids.len() > 1 {
            violations.push(format!("two leaders in term {term}: {ids:?}"));
        }
    }

    // The cut: data stops while the nodes move, and comes back.
    let before = arrivals.iter().rfind(|&&a| a < cut_at).copied();
    let after = arrivals.iter().find(|&&a| a >= cut_at).copied();
    summary.row("nodes' first coordinator cut off at", seconds(cut_at));
    summary.row(
        "longest gap in delivery around the cut",
        shown(before.zip(after).map(|(b, a)| a.saturating_sub(b))),
    );
    let moved = node_events(alpha)
        .iter()
        .find(|(at, e)| *at > cut_at && matches!(e, NodeEvent::Session(s) if s.as_str() == "live"))
        .map(|(at, _)| at.saturating_sub(cut_at));
    summary.row("alpha live at another coordinator after", shown(moved));
    if after.is_none_or(|a| a >= revoke_at) {
        violations.push("data did not come back after the cut before the revoke".to_owned());
    }

    // The revoke, asked at the third coordinator.
    let reply = world.app_ref::<AdminClient>(admin_host).and_then(|a| {
        a.events
            .iter()
            .find(|(_, e)| matches!(e, AdminEvent::Reply { .. }))
            .map(|(at, e)| (*at, format!("{e:?}")))
    });
    summary.row(
        "revoke answered after",
        shown(reply.as_ref().map(|(at, _)| at.saturating_sub(revoke_at))),
    );
    match &reply {
        Some((_, text)) if text.contains("Ok(") => {}
        other => violations.push(format!("the revoke was not acknowledged: {other:?}")),
    }
    let last = arrivals.iter().rfind(|&&a| a < heal_at).copied();
    summary.row(
        "last datagram after the revoke was asked",
        shown(last.map(|l| l.saturating_sub(revoke_at))),
    );
    let late = arrivals
        .iter()
        .filter(|&&a| a >= revoke_at + REVOKE_BOUND)
        .count();
    summary.row("datagrams delivered later than 2 s after the revoke", late);
    if late > 0 {
        violations.push(format!(
            "{late} datagrams delivered later than {} after the revoke",
            seconds(REVOKE_BOUND)
        ));
    }

    // Every coordinator ends with the same log applied, the cut one too.
    let states: Vec<(u64, Option<Admission>, usize)> = hubs
        .iter()
        .map(|&hub| {
            let app = world
                .app_ref::<InMemoryCoordinator>(hub)
                .expect("installed");
            let c = &app.machine.coordinator;
            (
                c.cluster_status().map_or(0, |s| s.replica.commit),
                c.registry().node("beta").map(|n| n.admission),
                c.cluster_status().map_or(0, |s| s.pending),
            )
        })
        .collect();
    for (i, (commit, beta, pending)) in states.iter().enumerate() {
        summary.row(
            &format!("{}: commit index, beta, pending writes", NAMES[i]),
            format!(
                "{commit}, {}, {pending}",
                beta.map_or("unknown", Admission::as_str)
            ),
        );
        if *beta != Some(Admission::Revoked) {
            violations.push(format!("{} does not hold beta revoked", NAMES[i]));
        }
        if *commit != states[0].0 {
            violations.push(format!("{} ended at another commit index", NAMES[i]));
        }
    }
    summary.throughput(
        "alpha to beta",
        sink.arrivals(),
        Duration::from_millis(500),
        duration,
    );
    summary.row("datagrams delivered", sink.packets);
    summary.row("altered", sink.malformed);
    if sink.malformed > 0 {
        violations.push(format!("{} datagrams altered", sink.malformed));
    }
    summary.violations = violations;
    summary.finish(&world);
    Ok(summary)
}
