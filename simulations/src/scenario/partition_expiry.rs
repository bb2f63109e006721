//! A node partitioned from the coordinator stops being admitted when its
//! token expires. Alpha and beta are associated and carry UDP both ways;
//! then alpha's path to the coordinator is cut while the path between the
//! two nodes stays up. Alpha cannot refresh its admission token. While the
//! token is valid the data plane keeps going (it does not need the
//! coordinator); once it expires, the coordinator withdraws alpha's
//! associations from beta (DESIGN §4: admission needs a valid token), beta
//! drops the forwarding state, and data stops both ways. When the
//! partition heals, alpha gets a fresh token and is associated again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use transitloom_proto_core::csprng::Drbg;
use transitloom_proto_core::node::{Node, NodeEvent, ServiceSpec};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::ServiceId;

use super::control_plane::{
    hub_config, install_hub, ip, make_pki, InMemoryCoordinator, UNIX_START,
};
use super::params::Allowed::Range;
use super::reconnect_storm::{enrolled, node_config};
use super::{ParamSpec, Params, Scenario, Summary};
use crate::apps::{UdpSink, UdpSource};
use crate::link::{LinkParams, Loss};
use crate::world::{HostId, World};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "partition-expiry",
    about:
        "a node cut off from the coordinator is no longer carried once its admission token expires",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "token_lifetime_s",
        default: "60",
        about: "admission token lifetime (nodes refresh at half-life, never sooner than 30 s)",
        allowed: Range(31.0, 3_600.0),
    },
    ParamSpec {
        name: "cut_at_s",
        default: "10",
        about: "when alpha's path to the coordinator goes down (the node-to-node path stays up)",
        allowed: Range(5.0, 3_600.0),
    },
    ParamSpec {
        name: "heal_at_s",
        default: "0",
        about: "when alpha's path to the coordinator comes back (0: never)",
        allowed: Range(0.0, 7_200.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "90",
        about: "virtual run time",
        allowed: Range(10.0, 7_200.0),
    },
    ParamSpec {
        name: "delay_ms",
        default: "15",
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

/// Data may still land this long after the token expired: the withdrawal
/// is one push from the coordinator to the peer.
const STOP_BOUND: Duration = Duration::from_secs(1);

/// A node with a control interface, a separate data interface (so the
/// control path can be cut alone), and a local service host.
struct Site {
    node: HostId,
    service: HostId,
    control_wire: crate::world::WireId,
}

fn site(
    world: &mut World,
    name: &str,
    control_ip: std::net::IpAddr,
    data_ip: std::net::IpAddr,
    internet: crate::world::SegmentId,
    link: &LinkParams,
) -> Result<Site, SimError> {
    let node = world.add_host(name);
    let control_wire = world.add_iface(node, control_ip, internet, link.clone(), link.clone())?;
    world.add_iface(node, data_ip, internet, link.clone(), link.clone())?;
    let service = world.add_host(&format!("{name}-service"));
    let lo = world.add_segment(&format!("{name}-lo"));
    let ideal = LinkParams::ideal();
    world.add_iface(node, ip(127, 0, 0, 1), lo, ideal.clone(), ideal.clone())?;
    world.add_iface(service, ip(127, 0, 0, 2), lo, ideal.clone(), ideal)?;
    Ok(Site {
        node,
        service,
        control_wire,
    })
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let lifetime = p.u64("token_lifetime_s");
    let cut_at = Duration::from_secs_f64(p.f64("cut_at_s"));
    let heal_at = Duration::from_secs_f64(p.f64("heal_at_s"));
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
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

    let hub_ip = ip(203, 0, 113, 1);
    let hub = world.add_host("hub");
    world.add_iface(hub, hub_ip, internet, link.clone(), link.clone())?;
    let listen = SocketAddr::new(hub_ip, 7443);
    let config = hub_config(&pki, listen, wall, lifetime)?;

    let ingress = SocketAddr::new(ip(127, 0, 0, 1), 41_000);
    let service_addr = SocketAddr::new(ip(127, 0, 0, 2), 51_820);
    let mut log = Vec::new();
    let mut sites = Vec::new();
    for (name, peer, control_ip, data_ip) in [
        ("alpha", "beta", ip(192, 0, 2, 10), ip(192, 0, 2, 11)),
        ("beta", "alpha", ip(198, 51, 100, 20), ip(198, 51, 100, 21)),
    ] {
        let s = site(&mut world, name, control_ip, data_ip, internet, &link)?;
        let (tls, ops) = enrolled(&pki, &mut drbg, name)?;
        log.extend(ops);
        let mut node_config = node_config(name, data_ip, listen, &root, tls, wall, drbg.key());
        node_config.control_bind = SocketAddr::new(control_ip, 0);
        node_config.services = vec![ServiceSpec {
            id: ServiceId(1),
            name: "wg0".to_owned(),
            target: service_addr,
            peers: BTreeMap::from([(format!("{peer}/wg0"), ingress)]),
        }];
        let node = Node::new(node_config).map_err(|e| SimError::Topology(e.to_string()))?;
        world.install(s.node, node);
        sites.push(s);
    }
    install_hub(&mut world, hub, &config, log, drbg.fork())?;
    let epoch = world.epoch();
    let (alpha, beta) = (&sites[0], &sites[1]);
    // Alpha's service sends to beta's: 1000-byte datagrams, 50 a second.
    world.install(
        alpha.service,
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
    world.install(beta.service, UdpSink::new(service_addr, epoch));
    let control_wire = alpha.control_wire;
    world.at(cut_at, move |w| w.set_wire_up(control_wire, false));
    if heal_at > Duration::ZERO {
        world.at(heal_at, move |w| w.set_wire_up(control_wire, true));
    }
    world.run_until(epoch + duration);

    let events = |host: HostId| -> &[(Duration, NodeEvent)] {
        world
            .app_ref::<Node>(host)
            .map_or(&[], |a| a.events.as_slice())
    };
    let shown = |t: Option<Duration>| t.map_or("never".to_owned(), seconds);
    let sink = &world
        .app_ref::<UdpSink>(beta.service)
        .expect("installed")
        .machine;
    let delivered = |from: Duration, to: Duration| {
        sink.arrivals()
            .iter()
            .filter(|a| a.at >= from && a.at < to)
            .count()
    };
    // The token alpha held when the cut came: the newest granted before it.
    let expiry = events(alpha.node)
        .iter()
        .filter(|(at, _)| *at < cut_at)
        .filter_map(|(_, e)| match e {
            NodeEvent::Token { expires_unix_s } => Some(*expires_unix_s),
            _ => None,
        })
        .next_back()
        .map(|unix| Duration::from_secs(unix.saturating_sub(UNIX_START)));
    let installed_at = events(beta.node)
        .iter()
        .find(|(_, e)| matches!(e, NodeEvent::Installed { .. }))
        .map(|(at, _)| *at);
    let withdrawn_at = events(beta.node)
        .iter()
        .find(|(at, e)| *at >= cut_at && matches!(e, NodeEvent::Withdrawn { .. }))
        .map(|(at, _)| *at);
    let healed = heal_at > Duration::ZERO;
    let partition_end = if healed { heal_at } else { duration };

    let mut summary = Summary::default();
    summary.row("token lifetime", format!("{lifetime} s"));
    summary.row("beta's association installed at", shown(installed_at));
    summary.row("alpha cut off from the coordinator at", seconds(cut_at));
    summary.row("alpha's token expires at", shown(expiry));
    summary.row("beta withdrew the association at", shown(withdrawn_at));
    let mut violations = Vec::new();
    match (expiry, withdrawn_at) {
        (Some(expiry), _) if expiry >= partition_end => violations.push(
            "the token outlives the partition: shorten token_lifetime_s or lengthen the run"
                .to_owned(),
        ),
        (Some(expiry), withdrawn) => {
            summary.row(
                "beta withdrew it after the expiry in",
                shown(withdrawn.map(|w| w.saturating_sub(expiry))),
            );
            if withdrawn.is_none_or(|w| w > expiry + STOP_BOUND || w < expiry) {
                violations.push(format!(
                    "beta did not withdraw alpha's association within {} of the expiry",
                    seconds(STOP_BOUND)
                ));
            }
            let kept = delivered(cut_at + Duration::from_secs(1), expiry);
            summary.row("datagrams delivered between the cut and the expiry", kept);
            if kept == 0 {
                violations.push("data stopped before the token expired".to_owned());
            }
            let last = sink
                .arrivals()
                .iter()
                .filter(|a| a.at < partition_end)
                .map(|a| a.at)
                .next_back();
            summary.row(
                "last datagram delivered after the expiry",
                shown(last.map(|l| l.saturating_sub(expiry))),
            );
            let late = delivered(expiry + STOP_BOUND, partition_end);
            summary.row("datagrams delivered later than 1 s after the expiry", late);
            if late > 0 {
                violations.push(format!(
                    "{late} datagrams delivered later than {} after alpha's token expired",
                    seconds(STOP_BOUND)
                ));
            }
        }
        (None, _) => violations.push("alpha never got a token before the cut".to_owned()),
    }
    if healed {
        let again = events(alpha.node)
            .iter()
            // Alpha never saw the withdrawal (it was cut off): it gets the
            // association's fresh key as a new epoch of the one it holds.
            .find(|(at, e)| {
                *at >= heal_at
                    && matches!(e, NodeEvent::Installed { .. } | NodeEvent::Rekeyed { .. })
            })
            .map(|(at, _)| at.saturating_sub(heal_at));
        summary.row("alpha associated again after the heal in", shown(again));
        summary.row(
            "datagrams delivered after the heal",
            delivered(heal_at, duration),
        );
    }
    let hub_counters = world
        .app_ref::<InMemoryCoordinator>(hub)
        .map(|a| a.machine.coordinator.counters().lapsed)
        .unwrap_or(0);
    summary.row("admissions lapsed at the coordinator", hub_counters);
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
