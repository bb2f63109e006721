//! A constant-rate UDP source saturates a rate-limited link with a drop-tail
//! queue: goodput, loss and queueing delay show the link model at work.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::params::Allowed::Range;
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::apps::{UdpSink, UdpSource};
use crate::link::{LinkParams, Loss};
use crate::world::{Dir, World};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "saturate",
    about: "a UDP source saturates a rate-limited link: goodput, loss and queueing delay",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "rate_mbps",
        default: "10",
        about: "bottleneck rate",
        allowed: Range(0.01, 100_000.0),
    },
    ParamSpec {
        name: "offered_mbps",
        default: "15",
        about: "source rate",
        allowed: Range(0.01, 100_000.0),
    },
    ParamSpec {
        name: "delay_ms",
        default: "20",
        about: "one-way delay",
        allowed: Range(0.0, 10_000.0),
    },
    ParamSpec {
        name: "loss",
        default: "0",
        about: "independent loss probability",
        allowed: Range(0.0, 1.0),
    },
    ParamSpec {
        name: "queue_kb",
        default: "64",
        about: "drop-tail queue size",
        allowed: Range(2.0, 1_000_000.0),
    },
    ParamSpec {
        name: "size",
        default: "1200",
        about: "datagram size in bytes",
        allowed: Range(16.0, 1_500.0),
    },
    ParamSpec {
        name: "down_at_s",
        default: "0",
        about: "take the link down at this time (0: never)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "down_for_s",
        default: "1",
        about: "how long the link stays down",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "10",
        about: "virtual run time",
        allowed: Range(1.0, 3_600.0),
    },
];

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let mut world = World::new(seed);
    let internet = world.add_segment("internet");
    let bottleneck = LinkParams {
        delay: Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
        loss: Loss::Independent(p.f64("loss")),
        rate_bps: Some((p.f64("rate_mbps") * 1e6) as u64),
        queue_bytes: (p.f64("queue_kb") * 1024.0) as usize,
        mtu: 1_500,
        ..LinkParams::ideal()
    };
    let (ip_a, ip_b) = (
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20)),
    );
    let a = world.add_host("source");
    let b = world.add_host("sink");
    let wire = world.add_iface(a, ip_a, internet, bottleneck, LinkParams::ideal())?;
    world.add_iface(b, ip_b, internet, LinkParams::ideal(), LinkParams::ideal())?;
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    let epoch = world.epoch();
    let (sa, sb) = (SocketAddr::new(ip_a, 5_000), SocketAddr::new(ip_b, 5_001));
    let size = p.u64("size") as usize;
    world.install(
        a,
        UdpSource::new(
            sa,
            sb,
            size,
            p.f64("offered_mbps") * 1e6,
            1,
            epoch,
            Duration::ZERO,
            duration,
        ),
    );
    world.install(b, UdpSink::new(sb, epoch));
    let down_at = p.f64("down_at_s");
    if down_at > 0.0 {
        let down_for = Duration::from_secs_f64(p.f64("down_for_s"));
        world.at(Duration::from_secs_f64(down_at), move |w| {
            w.set_wire_up(wire, false)
        });
        world.at(Duration::from_secs_f64(down_at) + down_for, move |w| {
            w.set_wire_up(wire, true)
        });
    }
    world.run_for(duration + Duration::from_secs(2));

    let mut summary = Summary::default();
    let sent = world
        .app_ref::<UdpSource>(a)
        .map_or(0, |s| s.machine.sent());
    let sink = &world.app_ref::<UdpSink>(b).expect("installed").machine;
    // Measure over the steady part: skip the first second (queue filling).
    let window = duration
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(1));
    let goodput =
        sink.bytes_between(Duration::from_secs(1), duration) as f64 * 8.0 / window.as_secs_f64();
    summary.row("offered", format!("{:.2} Mbit/s", p.f64("offered_mbps")));
    summary.row("goodput", format!("{:.2} Mbit/s", goodput / 1e6));
    summary.row("datagrams sent", sent);
    summary.row("datagrams received", sink.packets);
    let loss = 1.0 - sink.unique() as f64 / sent.max(1) as f64;
    summary.row("loss", format!("{:.2} %", loss * 100.0));
    let stats = world.link(wire, Dir::ToSegment).stats();
    summary.row("queue drops", stats.dropped_queue);
    summary.row("random losses", stats.dropped_loss);
    summary.row(
        "dropped while down",
        stats.dropped_down + world.stats().lost_in_flight,
    );
    let delays: Vec<Duration> = sink.arrivals().iter().map(|a| a.delay).collect();
    if !delays.is_empty() {
        let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
        summary.row("one-way delay mean", ms(mean));
        summary.row(
            "one-way delay max",
            ms(delays.iter().copied().max().unwrap_or_default()),
        );
    }
    summary.throughput(
        "link (Mbit/s)",
        sink.arrivals(),
        Duration::from_millis(100),
        duration,
    );
    summary.finish(&world);
    Ok(summary)
}
