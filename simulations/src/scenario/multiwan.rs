//! Two WAN uplinks under one real TCP flow (issue 6, item 5). Node alpha has
//! two uplinks, each its own wire and link (rate, one-way delay, loss and a
//! drop-tail queue, the same both ways); node beta has one fat, short link.
//! So alpha's links are the bottlenecks: data queues at the upload of each,
//! ACKs at the download. A smoltcp flow goes from behind alpha to behind
//! beta the way WireGuard carries it (IP packets as UDP datagrams through
//! the ingress sockets), its ACKs back through the mesh.
//!
//! The summary is what the data planes' scheduling makes of that: goodput
//! against the sum of the links and the best one, each link's share of data
//! and ACK bytes (from the data planes' per-path counters), reordering at
//! the receiver, retransmissions, and after a cut the stall and the
//! recovery. Invariants: the receiver reads exactly the sender's stream, and
//! no data leaves on a path its data plane holds failed or still probing.
//! The named cases are in [`CASES`].

mod cases;
mod measure;
mod report;
mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use transitloom_proto_core::dataplane::{
    AssociationSpec, DataPlane, DataPlaneConfig, UplinkPolicy, UplinkPriority, UplinkSpec,
};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::{AssocId, ServiceId, UplinkId};

pub use cases::{markdown, table, Case, CASES};

use super::params::Allowed::{OneOf, Range};
use super::{ParamSpec, Params, Scenario, Summary};
use crate::apps::{TcpFlow, TcpOverUdp};
use crate::link::{LinkParams, Loss};
use crate::world::{HostId, SegmentId, WireId, World};
use crate::SimError;

/// The scenario's name, for `tl-sim run`.
pub const SCENARIO_NAME: &str = "multiwan";

pub(super) const SCENARIO: Scenario = Scenario {
    name: SCENARIO_NAME,
    about: "a real TCP flow from a node with two uplinks: aggregation, shares, reordering, failover, backup and metered policy",
    params: PARAMS,
    run,
};

const YES_NO: super::params::Allowed = OneOf(&["0", "1"]);

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "rate1_mbps",
        default: "50",
        about: "rate of alpha's link 1, each direction",
        allowed: Range(0.1, 10_000.0),
    },
    ParamSpec {
        name: "delay1_ms",
        default: "20",
        about: "one-way delay of alpha's link 1",
        allowed: Range(0.0, 1_000.0),
    },
    ParamSpec {
        name: "loss1",
        default: "0",
        about: "independent loss per direction of alpha's link 1",
        allowed: Range(0.0, 0.5),
    },
    ParamSpec {
        name: "rate2_mbps",
        default: "50",
        about: "rate of alpha's link 2, each direction",
        allowed: Range(0.1, 10_000.0),
    },
    ParamSpec {
        name: "delay2_ms",
        default: "20",
        about: "one-way delay of alpha's link 2",
        allowed: Range(0.0, 1_000.0),
    },
    ParamSpec {
        name: "loss2",
        default: "0",
        about: "independent loss per direction of alpha's link 2",
        allowed: Range(0.0, 0.5),
    },
    ParamSpec {
        name: "queue_bdp",
        default: "1",
        about: "drop-tail queue of each alpha link direction, in its own bandwidth-delay products (rate x round trip)",
        allowed: Range(0.05, 20.0),
    },
    ParamSpec {
        name: "window_bdp",
        default: "1.2",
        about: "TCP buffers (so the largest window) in bandwidth-delay products of the sum of the links at the longer round trip (what fills both when packets arrive in order), at least 64 KiB",
        allowed: Range(0.05, 100.0),
    },
    ParamSpec {
        name: "backup2",
        default: "0",
        about: "uplink 2 has priority backup (1) instead of primary (0)",
        allowed: YES_NO,
    },
    ParamSpec {
        name: "metered2",
        default: "0",
        about: "uplink 2 is metered (1)",
        allowed: YES_NO,
    },
    ParamSpec {
        name: "hints",
        default: "0",
        about: "each uplink carries its link rate as capacity hint (1)",
        allowed: YES_NO,
    },
    ParamSpec {
        name: "cut1_at_s",
        default: "0",
        about: "link 1 goes down (sockets stay, packets vanish) at this time (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "restore1_at_s",
        default: "0",
        about: "link 1 comes back at this time (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "cut2_at_s",
        default: "0",
        about: "link 2 goes down (sockets stay, packets vanish) at this time (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "restore2_at_s",
        default: "0",
        about: "link 2 comes back at this time (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "ip_mtu",
        default: "1380",
        about: "the tunnel's IP MTU (largest datagram; the links' MTU is 1500)",
        allowed: Range(576.0, 1_500.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "8",
        about: "virtual run time (the flow starts at 1 s; goodput counts from 2 s)",
        allowed: Range(2.5, 3_600.0),
    },
];

const ASSOC: AssocId = AssocId(1);
const MESH_PORT: u16 = 40_000;
const SERVICE_PORT: u16 = 51_820;
const INGRESS_PORT: u16 = 41_000;
/// The links' MTU (UDP payload), as on an Ethernet path.
const LINK_MTU: usize = 1_500;
/// The smallest TCP buffer.
const MIN_BUFFER: usize = 64 * 1024;
/// The sender connects at 1 s, once the mesh paths are validated.
const START: Duration = Duration::from_secs(1);
/// Goodput is measured from one second into the flow (past slow start).
const WARMUP: Duration = Duration::from_secs(1);
/// Beta's link: fat and short, never the bottleneck.
const BETA_RATE_BPS: u64 = 10_000_000_000;
const BETA_DELAY: Duration = Duration::from_millis(1);
const BETA_QUEUE: usize = 16 << 20;
/// Resolution of the per-path throughput series.
const BUCKET: Duration = Duration::from_millis(100);
/// After a cut the flow has recovered once a window this long carries
/// [`RECOVERED`] of its goodput before the cut (or of the surviving link's
/// rate, if that is less).
const RECOVERY_WINDOW: Duration = Duration::from_millis(200);
const RECOVERED: f64 = 0.8;
/// Alpha's uplink addresses, beta's address.
const ALPHA_IPS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
];
const BETA_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20));
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const SERVICE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// One of alpha's links as the parameters describe it.
#[derive(Debug, Clone)]
struct AlphaLink {
    rate_bps: f64,
    delay: Duration,
    loss: f64,
    /// Round trip of a path over it, without queueing.
    rtt: Duration,
    queue_bytes: usize,
    policy: UplinkPolicy,
    cut: Option<Duration>,
    restore: Option<Duration>,
}

impl AlphaLink {
    fn from_params(p: &Params, n: u8) -> Result<Self, SimError> {
        let rate_bps = p.f64(&format!("rate{n}_mbps")) * 1e6;
        let delay = Duration::from_secs_f64(p.f64(&format!("delay{n}_ms")) / 1e3);
        let rtt = 2 * (delay + BETA_DELAY);
        let bdp = rate_bps / 8.0 * rtt.as_secs_f64();
        let second = |name: &str| Some(p.f64(name)).filter(|&s| s > 0.0);
        let cut = second(&format!("cut{n}_at_s"));
        let restore_name = format!("restore{n}_at_s");
        let restore = second(&restore_name);
        if restore.is_some_and(|r| cut.is_none_or(|c| r <= c)) {
            return Err(SimError::Param {
                name: restore_name,
                reason: format!("a restore needs an earlier cut{n}_at_s"),
            });
        }
        let policy = UplinkPolicy {
            priority: if n == 2 && p.word("backup2") == "1" {
                UplinkPriority::Backup
            } else {
                UplinkPriority::Primary
            },
            metered: n == 2 && p.word("metered2") == "1",
            capacity_bps: (p.word("hints") == "1").then_some(rate_bps as u64),
        };
        Ok(Self {
            rate_bps,
            delay,
            loss: p.f64(&format!("loss{n}")),
            rtt,
            queue_bytes: ((bdp * p.f64("queue_bdp")) as usize).max(LINK_MTU),
            policy,
            cut: cut.map(Duration::from_secs_f64),
            restore: restore.map(Duration::from_secs_f64),
        })
    }

    fn params(&self) -> LinkParams {
        LinkParams {
            delay: self.delay,
            loss: Loss::Independent(self.loss),
            rate_bps: Some(self.rate_bps as u64),
            queue_bytes: self.queue_bytes,
            mtu: LINK_MTU,
            ..LinkParams::ideal()
        }
    }

    /// Whether the link is up at `at`.
    fn up_at(&self, at: Duration) -> bool {
        match (self.cut, self.restore) {
            (Some(cut), restore) => at < cut || restore.is_some_and(|r| at >= r),
            (None, _) => true,
        }
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "{} Mbit/s, {} ms one way, loss {} %, queue {} kB, {}",
            self.rate_bps / 1e6,
            self.delay.as_secs_f64() * 1e3,
            self.loss * 100.0,
            self.queue_bytes / 1_000,
            self.policy.priority.as_str()
        );
        if self.policy.metered {
            text.push_str(", metered");
        }
        if let Some(hint) = self.policy.capacity_bps {
            text.push_str(&format!(", hint {} Mbit/s", hint as f64 / 1e6));
        }
        text
    }
}

/// A node and the host of its local service on a loopback segment.
fn node_with_service(world: &mut World, name: &str) -> Result<(HostId, HostId), SimError> {
    let node = world.add_host(name);
    let service = world.add_host(&format!("{name}-service"));
    let lo = world.add_segment(&format!("{name}-lo"));
    let ideal = LinkParams::ideal();
    world.add_iface(node, LOCAL, lo, ideal.clone(), ideal.clone())?;
    world.add_iface(service, SERVICE, lo, ideal.clone(), ideal)?;
    Ok((node, service))
}

fn plane(world: &mut World, uplinks: Vec<UplinkSpec>, remotes: Vec<SocketAddr>) -> DataPlane {
    let wall = WallClock::new(world.epoch(), 1_760_000_000_000_000);
    let mut plane = DataPlane::new(DataPlaneConfig::new(uplinks, world.fork_seed(), wall));
    plane
        .install(AssociationSpec {
            id: ASSOC,
            service: ServiceId(0),
            peer: "peer/tcp".to_owned(),
            key: [0x33; 32],
            ingress: SocketAddr::new(LOCAL, INGRESS_PORT),
            target: SocketAddr::new(SERVICE, SERVICE_PORT),
            mesh_port: MESH_PORT,
            remotes,
        })
        .expect("a fresh data plane accepts its first association");
    plane
}

/// The built world and what the summary needs to find in it.
struct Rig {
    world: World,
    links: [AlphaLink; 2],
    wires: [WireId; 2],
    alpha: HostId,
    beta: HostId,
    sender: HostId,
    receiver: HostId,
    buffer: usize,
}

fn build(seed: u64, p: &Params) -> Result<Rig, SimError> {
    let links = [AlphaLink::from_params(p, 1)?, AlphaLink::from_params(p, 2)?];
    let mut world = World::new(seed);
    let internet: SegmentId = world.add_segment("internet");
    let (alpha, sender) = node_with_service(&mut world, "alpha")?;
    let (beta, receiver) = node_with_service(&mut world, "beta")?;
    let mut wires = Vec::new();
    let mut uplinks = Vec::new();
    for (i, (link, ip)) in links.iter().zip(ALPHA_IPS).enumerate() {
        wires.push(world.add_iface(alpha, ip, internet, link.params(), link.params())?);
        let mut uplink = UplinkSpec::new(UplinkId(i as u16), format!("wan{}", i + 1), ip);
        uplink.policy = link.policy;
        uplinks.push(uplink);
    }
    let beta_link = LinkParams {
        delay: BETA_DELAY,
        rate_bps: Some(BETA_RATE_BPS),
        queue_bytes: BETA_QUEUE,
        mtu: LINK_MTU,
        ..LinkParams::ideal()
    };
    world.add_iface(beta, BETA_IP, internet, beta_link.clone(), beta_link)?;
    let alpha_plane = plane(
        &mut world,
        uplinks,
        vec![SocketAddr::new(BETA_IP, MESH_PORT)],
    );
    let beta_plane = plane(
        &mut world,
        vec![UplinkSpec::new(UplinkId(0), "wan", BETA_IP)],
        ALPHA_IPS
            .iter()
            .map(|&ip| SocketAddr::new(ip, MESH_PORT))
            .collect(),
    );
    world.install(alpha, alpha_plane);
    world.install(beta, beta_plane);

    let longest = links[0].rtt.max(links[1].rtt);
    let sum_bps = links[0].rate_bps + links[1].rate_bps;
    let bdp = sum_bps / 8.0 * longest.as_secs_f64();
    let buffer = ((bdp * p.f64("window_bdp")) as usize).max(MIN_BUFFER);
    let (service, ingress) = (
        SocketAddr::new(SERVICE, SERVICE_PORT),
        SocketAddr::new(LOCAL, INGRESS_PORT),
    );
    let epoch = world.epoch();
    for (host, sending) in [(sender, true), (receiver, false)] {
        let flow = TcpFlow {
            local: service,
            peer: ingress,
            ip_mtu: p.u64("ip_mtu") as usize,
            buffer,
            start: START,
            seed: world.fork_seed(),
        };
        let app = if sending {
            TcpOverUdp::sender(flow, None, epoch)
        } else {
            TcpOverUdp::receiver(flow, epoch)
        };
        world.install(host, app);
    }
    world.add_invariant("stream intact", move |w| {
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
    for (link, &wire) in links.iter().zip(&wires) {
        if let Some(cut) = link.cut {
            world.at(cut, move |w| w.set_wire_up(wire, false));
        }
        if let Some(restore) = link.restore {
            world.at(restore, move |w| w.set_wire_up(wire, true));
        }
    }
    Ok(Rig {
        world,
        links,
        wires: [wires[0], wires[1]],
        alpha,
        beta,
        sender,
        receiver,
        buffer,
    })
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let mut rig = build(seed, p)?;
    let hosts = [rig.alpha, rig.beta];
    let seen = watch::install(&mut rig.world, hosts, ASSOC, ALPHA_IPS);
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    rig.world.run_for(duration);
    let seen = seen.borrow();
    let mut summary = Summary::default();
    report::summarize(&mut summary, &rig, &seen, duration);
    summary.trace_hash = rig.world.trace().value();
    summary.events = rig.world.events_run();
    summary
        .violations
        .extend(rig.world.violations().iter().cloned());
    Ok(summary)
}
