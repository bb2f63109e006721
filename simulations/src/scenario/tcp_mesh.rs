//! A real TCP flow (smoltcp) carried through the mesh the way WireGuard's
//! packets are: the sender's IP packets go as UDP datagrams into alpha's
//! ingress, across one link to beta, and out of beta's ingress to the
//! receiver. In the same run an identical pair talks directly over an
//! identical link, so the mesh's cost is a ratio against that baseline.
//! Invariant: each receiver reads exactly the sender's byte stream.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use transitloom_proto_core::dataplane::{
    AssociationSpec, DataEvent, DataPlane, DataPlaneConfig, UplinkSpec,
};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::{AssocId, ServiceId, UplinkId};

use super::params::Allowed::Range;
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::apps::{TcpFlow, TcpOverUdp};
use crate::link::{LinkParams, Loss};
use crate::world::{Dir, HostId, SegmentId, WireId, World};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "tcp-mesh",
    about: "a real TCP flow through the mesh over one link, against the same flow sent directly",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "rate_mbps",
        default: "50",
        about: "link rate, each direction",
        allowed: Range(0.1, 10_000.0),
    },
    ParamSpec {
        name: "delay_ms",
        default: "20",
        about: "one-way delay of the link",
        allowed: Range(0.0, 1_000.0),
    },
    ParamSpec {
        name: "loss",
        default: "0",
        about: "independent loss per direction of the link",
        allowed: Range(0.0, 0.5),
    },
    ParamSpec {
        name: "reorder",
        default: "0",
        about: "probability per direction that a packet is held 5 ms and overtaken",
        allowed: Range(0.0, 0.5),
    },
    ParamSpec {
        name: "duplicate",
        default: "0",
        about: "probability per direction that a packet is delivered twice",
        allowed: Range(0.0, 0.5),
    },
    ParamSpec {
        name: "queue_bdp",
        default: "1",
        about: "drop-tail queue in bandwidth-delay products (rate x round trip)",
        allowed: Range(0.05, 20.0),
    },
    ParamSpec {
        name: "ip_mtu",
        default: "1380",
        about: "the tunnel's IP MTU (largest datagram; the link's MTU is 1500)",
        allowed: Range(576.0, 1_500.0),
    },
    ParamSpec {
        name: "window_bdp",
        default: "1.5",
        about: "TCP send and receive buffers (so the largest window) in bandwidth-delay products, at least 64 KiB",
        allowed: Range(0.1, 100.0),
    },
    ParamSpec {
        name: "bytes",
        default: "0",
        about: "stream length, then the sender closes (0: send until the end)",
        allowed: Range(0.0, 1e12),
    },
    ParamSpec {
        name: "duration_s",
        default: "10",
        about: "virtual run time",
        allowed: Range(2.0, 3_600.0),
    },
];

const ASSOC: AssocId = AssocId(1);
const MESH_PORT: u16 = 40_000;
const SERVICE_PORT: u16 = 51_820;
const INGRESS_PORT: u16 = 41_000;
/// The link's MTU (UDP payload), as on an Ethernet path.
const LINK_MTU: usize = 1_500;
/// The smallest TCP buffer (a zero-delay link has no bandwidth-delay product).
const MIN_BUFFER: usize = 64 * 1024;
/// The senders connect at 1 s, once the mesh path is validated.
const START: Duration = Duration::from_secs(1);
/// Goodput is measured from one second into the flow (past slow start).
const WARMUP: Duration = Duration::from_secs(1);

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// A node with its uplink on `segment` over `link`, and a loopback segment
/// holding its local service host: (node, service, uplink wire).
fn node_with_service(
    world: &mut World,
    name: &str,
    uplink_ip: IpAddr,
    segment: SegmentId,
    link: &LinkParams,
) -> Result<(HostId, HostId, WireId), SimError> {
    let node = world.add_host(name);
    let service = world.add_host(&format!("{name}-service"));
    let lo = world.add_segment(&format!("{name}-lo"));
    let ideal = LinkParams::ideal();
    let wire = world.add_iface(node, uplink_ip, segment, link.clone(), link.clone())?;
    world.add_iface(node, ip(127, 0, 0, 1), lo, ideal.clone(), ideal.clone())?;
    world.add_iface(service, ip(127, 0, 0, 2), lo, ideal.clone(), ideal)?;
    Ok((node, service, wire))
}

fn plane(world: &mut World, uplink_ip: IpAddr, remote: SocketAddr) -> DataPlane {
    let wall = WallClock::new(world.epoch(), 1_760_000_000_000_000);
    let uplink = UplinkSpec::new(UplinkId(0), "wan", uplink_ip);
    let mut plane = DataPlane::new(DataPlaneConfig::new(vec![uplink], world.fork_seed(), wall));
    plane
        .install(AssociationSpec {
            id: ASSOC,
            service: ServiceId(0),
            peer: "peer/tcp".to_owned(),
            key: [0x22; 32],
            ingress: SocketAddr::new(ip(127, 0, 0, 1), INGRESS_PORT),
            target: SocketAddr::new(ip(127, 0, 0, 2), SERVICE_PORT),
            mesh_port: MESH_PORT,
            remotes: vec![remote],
        })
        .expect("a fresh data plane accepts its first association");
    plane
}

/// A sender and a receiver, and the wire whose upload is the link.
struct Pair {
    name: &'static str,
    sender: HostId,
    receiver: HostId,
    link: WireId,
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let mut world = World::new(seed);
    let internet = world.add_segment("internet");
    let rate_bps = p.f64("rate_mbps") * 1e6;
    let delay = Duration::from_secs_f64(p.f64("delay_ms") / 1e3);
    let bdp = rate_bps / 8.0 * 2.0 * delay.as_secs_f64();
    let queue_bytes = ((bdp * p.f64("queue_bdp")) as usize).max(LINK_MTU);
    let link = LinkParams {
        delay,
        loss: Loss::Independent(p.f64("loss")),
        rate_bps: Some(rate_bps as u64),
        queue_bytes,
        mtu: LINK_MTU,
        reorder: p.f64("reorder"),
        reorder_delay: Duration::from_millis(5),
        duplicate: p.f64("duplicate"),
        ..LinkParams::ideal()
    };
    let ideal = LinkParams::ideal();

    // Through the mesh: the link is alpha's uplink, beta's is ideal.
    let (alpha_ip, beta_ip) = (ip(192, 0, 2, 10), ip(198, 51, 100, 20));
    let (alpha, alpha_service, mesh_link) =
        node_with_service(&mut world, "alpha", alpha_ip, internet, &link)?;
    let (beta, beta_service, _) = node_with_service(&mut world, "beta", beta_ip, internet, &ideal)?;
    let alpha_plane = plane(&mut world, alpha_ip, SocketAddr::new(beta_ip, MESH_PORT));
    let beta_plane = plane(&mut world, beta_ip, SocketAddr::new(alpha_ip, MESH_PORT));
    world.install(alpha, alpha_plane);
    world.install(beta, beta_plane);

    // Directly: an identical link, no mesh.
    let (direct_a_ip, direct_b_ip) = (ip(192, 0, 2, 30), ip(198, 51, 100, 30));
    let direct_a = world.add_host("direct-sender");
    let direct_b = world.add_host("direct-receiver");
    let direct_link = world.add_iface(direct_a, direct_a_ip, internet, link.clone(), link)?;
    world.add_iface(direct_b, direct_b_ip, internet, ideal.clone(), ideal)?;

    let epoch = world.epoch();
    let limit = Some(p.u64("bytes")).filter(|&b| b > 0);
    let service = SocketAddr::new(ip(127, 0, 0, 2), SERVICE_PORT);
    let ingress = SocketAddr::new(ip(127, 0, 0, 1), INGRESS_PORT);
    let base = TcpFlow {
        local: service,
        peer: ingress,
        ip_mtu: p.u64("ip_mtu") as usize,
        buffer: ((bdp * p.f64("window_bdp")) as usize).max(MIN_BUFFER),
        start: START,
        seed: 0,
    };
    // Behind a node, each end talks to its node's ingress (as WireGuard's
    // Endpoint does); directly, each end talks to the other.
    let (direct_a_addr, direct_b_addr) = (
        SocketAddr::new(direct_a_ip, SERVICE_PORT),
        SocketAddr::new(direct_b_ip, SERVICE_PORT),
    );
    let flows = [
        (
            alpha_service,
            beta_service,
            (service, ingress),
            (service, ingress),
        ),
        (
            direct_a,
            direct_b,
            (direct_a_addr, direct_b_addr),
            (direct_b_addr, direct_a_addr),
        ),
    ];
    for (sender, receiver, (out_local, out_peer), (back_local, back_peer)) in flows {
        let out = TcpFlow {
            local: out_local,
            peer: out_peer,
            seed: world.fork_seed(),
            ..base
        };
        let back = TcpFlow {
            local: back_local,
            peer: back_peer,
            seed: world.fork_seed(),
            ..base
        };
        world.install(sender, TcpOverUdp::sender(out, limit, epoch));
        world.install(receiver, TcpOverUdp::receiver(back, epoch));
    }
    let pairs = [
        Pair {
            name: "mesh",
            sender: alpha_service,
            receiver: beta_service,
            link: mesh_link,
        },
        Pair {
            name: "direct",
            sender: direct_a,
            receiver: direct_b,
            link: direct_link,
        },
    ];
    for pair in &pairs {
        let (name, sender, receiver) = (pair.name, pair.sender, pair.receiver);
        world.add_invariant(&format!("{name} stream intact"), move |w| {
            let tx = &w.app_ref::<TcpOverUdp>(sender).expect("installed").machine;
            let rx = &w
                .app_ref::<TcpOverUdp>(receiver)
                .expect("installed")
                .machine;
            if rx.corrupt() > 0 {
                return Err(format!("{} bytes differ from the stream", rx.corrupt()));
            }
            if rx.received() > tx.written() {
                return Err(format!(
                    "{} bytes read, {} written",
                    rx.received(),
                    tx.written()
                ));
            }
            Ok(())
        });
    }
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    world.run_for(duration);

    let mut summary = Summary::default();
    summary.row(
        "link",
        format!(
            "{} Mbit/s, {} ms one way, loss {} %, reorder {} %, duplicate {} %, queue {} kB",
            p.f64("rate_mbps"),
            p.f64("delay_ms"),
            p.f64("loss") * 100.0,
            p.f64("reorder") * 100.0,
            p.f64("duplicate") * 100.0,
            queue_bytes / 1_000
        ),
    );
    summary.row(
        "TCP window (buffers)",
        format!("{} kB", base.buffer / 1_000),
    );
    let beta_events = &world.app_ref::<DataPlane>(beta).expect("installed").events;
    let validated = beta_events
        .iter()
        .find_map(|(at, e)| matches!(e, DataEvent::PathValidated { .. }).then_some(*at));
    summary.row(
        "mesh path validated at",
        validated.map_or("never".to_owned(), ms),
    );
    let from = START + WARMUP;
    let window = duration.saturating_sub(from).max(Duration::from_millis(1));
    let mut goodputs = Vec::new();
    for pair in &pairs {
        let name = pair.name;
        let tx = &world
            .app_ref::<TcpOverUdp>(pair.sender)
            .expect("installed")
            .machine;
        let rx = &world
            .app_ref::<TcpOverUdp>(pair.receiver)
            .expect("installed")
            .machine;
        // A whole stream counts from connect to its end; an endless one
        // from a second into the flow to the end of the run.
        let goodput = match (limit, rx.finished_at()) {
            (Some(bytes), Some(end)) => {
                bytes as f64 * 8.0 / end.saturating_sub(START).as_secs_f64().max(1e-3)
            }
            _ => rx.bytes_between(from, duration) as f64 * 8.0 / window.as_secs_f64(),
        };
        goodputs.push(goodput);
        summary.row(
            &format!("{name} established at"),
            rx.established_at().map_or("never".to_owned(), ms),
        );
        summary.row(
            &format!("{name} goodput"),
            format!("{:.2} Mbit/s", goodput / 1e6),
        );
        summary.row(
            &format!("{name} goodput / link rate"),
            format!("{:.1} %", 100.0 * goodput / rate_bps),
        );
        summary.row(&format!("{name} bytes delivered"), rx.received());
        if limit.is_some() {
            summary.row(
                &format!("{name} stream complete at"),
                rx.finished_at().map_or("never".to_owned(), ms),
            );
        }
        summary.row(&format!("{name} corrupt bytes"), rx.corrupt());
        let stats = tx.stats();
        summary.row(
            &format!("{name} retransmitted segments"),
            format!(
                "{} of {} ({:.2} %)",
                stats.retransmitted,
                stats.packets_out,
                100.0 * stats.retransmitted as f64 / stats.packets_out.max(1) as f64
            ),
        );
        let rtt = match stats.rtt_mean() {
            Some(mean) => format!(
                "{} / {} / {}",
                ms(stats.rtt_min),
                ms(mean),
                ms(stats.rtt_max)
            ),
            None => "no sample".to_owned(),
        };
        summary.row(&format!("{name} RTT min / mean / max"), rtt);
        let up = world.link(pair.link, Dir::ToSegment).stats();
        summary.row(
            &format!("{name} link drops (queue / random)"),
            format!("{} / {}", up.dropped_queue, up.dropped_loss),
        );
        goodput_series(
            &mut summary,
            &format!("{name} (Mbit/s)"),
            rx.arrivals(),
            duration,
        );
    }
    summary.row(
        "mesh / direct goodput",
        format!("{:.1} %", 100.0 * goodputs[0] / goodputs[1].max(1.0)),
    );
    summary.finish(&world);
    Ok(summary)
}

/// Adds series `name`: bytes read per 100 ms bucket, in Mbit/s.
fn goodput_series(summary: &mut Summary, name: &str, reads: &[(Duration, u64)], until: Duration) {
    let width = Duration::from_millis(100).as_secs_f64();
    let mut bytes = vec![0u64; (until.as_secs_f64() / width).ceil() as usize];
    for (at, n) in reads {
        if let Some(slot) = bytes.get_mut((at.as_secs_f64() / width) as usize) {
            *slot += n;
        }
    }
    for (i, b) in bytes.iter().enumerate() {
        summary.series.push((
            name.to_owned(),
            i as f64 * width,
            *b as f64 * 8.0 / width / 1e6,
        ));
    }
}
