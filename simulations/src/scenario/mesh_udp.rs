//! The data plane end to end: a UDP service behind node alpha sends through
//! alpha's ingress, across an impaired path (optionally through a NAT that
//! rebinds mid-flow), to node beta, which delivers to its local service.
//! Invariants: nothing is altered, nothing is delivered after the
//! association is withdrawn, every table stays bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use transitloom_proto_core::dataplane::{
    AssociationSpec, DataEvent, DataPlane, DataPlaneConfig, UplinkSpec, MAX_PATHS,
};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::{AssocId, ServiceId, UplinkId};

use super::params::Allowed::{OneOf, Range};
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::apps::{UdpSink, UdpSource};
use crate::link::{LinkParams, Loss};
use crate::nat::NatParams;
use crate::world::{HostId, World};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "mesh-udp",
    about: "a UDP service crosses the data plane over an impaired path, optionally behind a rebinding NAT",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "delay_ms",
        default: "20",
        about: "one-way delay of each access link",
        allowed: Range(0.0, 10_000.0),
    },
    ParamSpec {
        name: "jitter_ms",
        default: "1",
        about: "extra delay, uniform in [0, jitter]",
        allowed: Range(0.0, 1_000.0),
    },
    ParamSpec {
        name: "loss",
        default: "0.01",
        about: "independent loss per access link direction",
        allowed: Range(0.0, 1.0),
    },
    ParamSpec {
        name: "duplicate",
        default: "0.01",
        about: "duplication probability per access link direction",
        allowed: Range(0.0, 1.0),
    },
    ParamSpec {
        name: "reorder",
        default: "0.01",
        about: "reordering probability per access link direction",
        allowed: Range(0.0, 1.0),
    },
    ParamSpec {
        name: "rate_mbps",
        default: "5",
        about: "offered UDP load",
        allowed: Range(0.01, 10_000.0),
    },
    ParamSpec {
        name: "size",
        default: "1200",
        about: "datagram size",
        allowed: Range(16.0, 1_400.0),
    },
    ParamSpec {
        name: "nat",
        default: "none",
        about: "a NAT in front of alpha",
        allowed: OneOf(&["none", "cone", "symmetric"]),
    },
    ParamSpec {
        name: "rebind_at_s",
        default: "0",
        about: "the NAT forgets its mappings at this time (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "withdraw_at_s",
        default: "0",
        about: "beta withdraws the association at this time (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "10",
        about: "virtual run time",
        allowed: Range(1.0, 3_600.0),
    },
];

const ASSOC: AssocId = AssocId(1);
const MESH_PORT: u16 = 40_000;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// Adds a node host with a public (or LAN) uplink and a loopback segment
/// holding its local service host; returns (node, service).
pub(super) fn node_with_service(
    world: &mut World,
    name: &str,
    uplink_ip: IpAddr,
    segment: crate::world::SegmentId,
    link: &LinkParams,
) -> Result<(HostId, HostId), SimError> {
    let node = world.add_host(name);
    let service = world.add_host(&format!("{name}-service"));
    let lo = world.add_segment(&format!("{name}-lo"));
    world.add_iface(node, uplink_ip, segment, link.clone(), link.clone())?;
    world.add_iface(
        node,
        ip(127, 0, 0, 1),
        lo,
        LinkParams::ideal(),
        LinkParams::ideal(),
    )?;
    world.add_iface(
        service,
        ip(127, 0, 0, 2),
        lo,
        LinkParams::ideal(),
        LinkParams::ideal(),
    )?;
    Ok((node, service))
}

fn plane(world: &mut World, uplink_ip: IpAddr, remotes: Vec<SocketAddr>) -> DataPlane {
    let wall = WallClock::new(world.epoch(), 1_760_000_000_000_000);
    let uplink = UplinkSpec::new(UplinkId(0), "wan", uplink_ip);
    let mut plane = DataPlane::new(DataPlaneConfig::new(vec![uplink], world.fork_seed(), wall));
    plane
        .install(AssociationSpec {
            id: ASSOC,
            service: ServiceId(0),
            peer: "peer/svc".to_owned(),
            key: [0x11; 32],
            ingress: SocketAddr::new(ip(127, 0, 0, 1), 41_000),
            target: SocketAddr::new(ip(127, 0, 0, 2), 51_820),
            mesh_port: MESH_PORT,
            remotes,
        })
        .expect("a fresh data plane accepts its first association");
    plane
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let mut world = World::new(seed);
    let internet = world.add_segment("internet");
    let link = LinkParams {
        delay: Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
        jitter: Duration::from_secs_f64(p.f64("jitter_ms") / 1e3),
        loss: Loss::Independent(p.f64("loss")),
        duplicate: p.f64("duplicate"),
        reorder: p.f64("reorder"),
        reorder_delay: Duration::from_millis(3),
        ..LinkParams::ideal()
    };
    let beta_ip = ip(198, 51, 100, 20);
    let (alpha_ip, alpha_segment, nat) = match p.word("nat") {
        "none" => (ip(192, 0, 2, 10), internet, None),
        kind => {
            let lan = world.add_segment("alpha-lan");
            let params = if kind == "cone" {
                NatParams::cone()
            } else {
                NatParams::symmetric()
            };
            let nat = world.add_nat("nat", params, ip(203, 0, 113, 1), internet, lan)?;
            (ip(10, 0, 0, 2), lan, Some(nat))
        }
    };
    let (alpha, alpha_service) =
        node_with_service(&mut world, "alpha", alpha_ip, alpha_segment, &link)?;
    let (beta, beta_service) = node_with_service(&mut world, "beta", beta_ip, internet, &link)?;
    // Behind a NAT, beta learns alpha's mapped address from alpha's pings.
    let alpha_remote = if nat.is_some() {
        Vec::new()
    } else {
        vec![SocketAddr::new(alpha_ip, MESH_PORT)]
    };
    let alpha_plane = plane(
        &mut world,
        alpha_ip,
        vec![SocketAddr::new(beta_ip, MESH_PORT)],
    );
    let beta_plane = plane(&mut world, beta_ip, alpha_remote);
    world.install(alpha, alpha_plane);
    world.install(beta, beta_plane);

    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    let epoch = world.epoch();
    let service_addr = SocketAddr::new(ip(127, 0, 0, 2), 51_820);
    let ingress = SocketAddr::new(ip(127, 0, 0, 1), 41_000);
    let source = UdpSource::new(
        service_addr,
        ingress,
        p.u64("size") as usize,
        p.f64("rate_mbps") * 1e6,
        1,
        epoch,
        Duration::from_millis(500),
        duration,
    );
    world.install(alpha_service, source);
    world.install(beta_service, UdpSink::new(service_addr, epoch));

    world.add_invariant("tables bounded", move |w| {
        for host in [alpha, beta] {
            let plane = &w.app_ref::<DataPlane>(host).expect("installed").machine;
            if plane.associations().any(|a| a.paths().count() > MAX_PATHS) {
                return Err(format!("{} path table over its bound", w.host_name(host)));
            }
        }
        Ok(())
    });
    world.add_invariant("nothing altered", move |w| {
        let sink = &w
            .app_ref::<UdpSink>(beta_service)
            .expect("installed")
            .machine;
        match sink.malformed {
            0 => Ok(()),
            n => Err(format!("{n} datagrams arrived altered")),
        }
    });
    let withdraw_at = Duration::from_secs_f64(p.f64("withdraw_at_s"));
    if withdraw_at > Duration::ZERO {
        world.at(withdraw_at, move |w| {
            let plane = &mut w.app::<DataPlane>(beta).expect("installed").machine;
            plane.withdraw(ASSOC).expect("installed");
            w.wake(beta);
        });
        // The service host is one ideal hop away: allow a microsecond.
        let bound = withdraw_at + Duration::from_micros(1);
        world.add_invariant("nothing delivered after withdrawal", move |w| {
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
    let rebind_at = Duration::from_secs_f64(p.f64("rebind_at_s"));
    if let (Some(nat), true) = (nat, rebind_at > Duration::ZERO) {
        world.at(rebind_at, move |w| {
            let now = w.now();
            w.nat_mut(nat).rebind(now);
        });
    }
    world.run_for(duration + Duration::from_millis(500));

    let mut summary = Summary::default();
    let sent = world
        .app_ref::<UdpSource>(alpha_service)
        .map_or(0, |s| s.machine.sent());
    let sink = &world
        .app_ref::<UdpSink>(beta_service)
        .expect("installed")
        .machine;
    let beta_events = &world.app_ref::<DataPlane>(beta).expect("installed").events;
    let validated = |events: &[(Duration, DataEvent)]| {
        events
            .iter()
            .find_map(|(at, e)| matches!(e, DataEvent::PathValidated { .. }).then_some(*at))
    };
    let alpha_events = &world.app_ref::<DataPlane>(alpha).expect("installed").events;
    summary.row(
        "alpha validated at",
        validated(alpha_events).map_or("never".to_owned(), ms),
    );
    summary.row(
        "beta validated at",
        validated(beta_events).map_or("never".to_owned(), ms),
    );
    summary.row("datagrams sent", sent);
    summary.row("datagrams delivered", sink.packets);
    summary.row(
        "delivered (unique)",
        format!("{:.2} %", 100.0 * sink.unique() as f64 / sent.max(1) as f64),
    );
    summary.row(
        "duplicates / reordered",
        format!("{} / {}", sink.duplicates, sink.reordered),
    );
    summary.row("altered", sink.malformed);
    let gap = sink
        .arrivals()
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default();
    summary.row("longest delivery gap", ms(gap));
    if nat.is_some() && rebind_at > Duration::ZERO {
        let again = beta_events.iter().find_map(|(at, e)| {
            (matches!(e, DataEvent::PathValidated { .. }) && *at > rebind_at)
                .then(|| *at - rebind_at)
        });
        let again = again.map_or("not needed (the NAT kept its mapping)".to_owned(), ms);
        summary.row("beta validated a new path after rebind in", again);
    }
    let counters = world
        .app_ref::<DataPlane>(beta)
        .and_then(|a| a.machine.association(ASSOC).map(|v| v.counters()));
    if let Some(c) = counters {
        summary.row("beta dropped (unvalidated source)", c.unvalidated);
    }
    summary.finish(&world);
    Ok(summary)
}
