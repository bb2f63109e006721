//! Two public hosts validate a path with authenticated probes over an
//! impaired link, then carry data over it byte-for-byte.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use transitloom_proto_core::probe::{ProbeEvent, Prober, ProberConfig, MAX_PATHS};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::wire::MAGIC;

use super::params::Allowed::Range;
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::link::{LinkParams, Loss};
use crate::world::{HostId, World, INBOX_LIMIT};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "probe-pair",
    about: "two public hosts validate a path with authenticated probes and carry data unchanged",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "delay_ms",
        default: "20",
        about: "one-way delay",
        allowed: Range(0.0, 10_000.0),
    },
    ParamSpec {
        name: "jitter_ms",
        default: "2",
        about: "extra one-way delay, uniform in [0, jitter]",
        allowed: Range(0.0, 1_000.0),
    },
    ParamSpec {
        name: "loss",
        default: "0.01",
        about: "independent loss probability per direction",
        allowed: Range(0.0, 1.0),
    },
    ParamSpec {
        name: "rate_mbps",
        default: "100",
        about: "link rate per direction",
        allowed: Range(0.01, 100_000.0),
    },
    ParamSpec {
        name: "interval_ms",
        default: "100",
        about: "probe interval",
        allowed: Range(10.0, 10_000.0),
    },
    ParamSpec {
        name: "data_pps",
        default: "200",
        about: "data packets per second from alpha to beta",
        allowed: Range(0.0, 100_000.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "10",
        about: "virtual run time",
        allowed: Range(1.0, 3_600.0),
    },
];

/// The payload numbered `seq`: every tenth one starts with the control magic
/// to prove that data which looks like control is still carried unchanged.
pub(crate) fn payload(seq: u64) -> Bytes {
    let mut out = Vec::with_capacity(1_400);
    if seq.is_multiple_of(10) {
        out.extend_from_slice(&MAGIC);
    }
    out.extend_from_slice(&seq.to_be_bytes());
    let len = 16 + (seq as usize * 37) % 1_380;
    while out.len() < len {
        out.push((seq as usize * 31 + out.len()) as u8);
    }
    Bytes::from(out)
}

/// The sequence number of a payload, if it is exactly what [`payload`] makes.
pub(crate) fn payload_seq(data: &[u8]) -> Option<u64> {
    let body = data.strip_prefix(&MAGIC[..]).unwrap_or(data);
    let seq = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    (payload(seq) == data).then_some(seq)
}

pub(crate) fn prober(
    world: &World,
    local: SocketAddr,
    remotes: Vec<SocketAddr>,
    interval: Duration,
    seed: u64,
) -> Prober {
    Prober::new(ProberConfig {
        local,
        key: [0x5A; 32],
        remotes,
        interval,
        failed_after: 4,
        seed,
        wall_clock: WallClock::new(world.epoch(), 1_760_000_000_000_000),
    })
}

/// Sends numbered payloads from `from` at `pps`, between `start` and `stop`.
pub(crate) fn send_data(
    world: &mut World,
    from: HostId,
    pps: f64,
    start: Duration,
    stop: Duration,
) {
    if pps <= 0.0 {
        return;
    }
    let mut seq = 0u64;
    world.every(start, Duration::from_secs_f64(1.0 / pps), stop, move |w| {
        if let Some(app) = w.app::<Prober>(from) {
            app.machine.send_data(payload(seq));
            seq += 1;
            w.wake(from);
        }
    });
}

/// Registers the invariant that no table grows without bound: prober path
/// tables, NAT mappings and host inboxes.
pub(crate) fn bounded_tables(world: &mut World, hosts: &[HostId]) {
    let hosts = hosts.to_vec();
    world.add_invariant("tables bounded", move |w| {
        for &host in &hosts {
            if let Some(app) = w.app_ref::<Prober>(host) {
                let paths = app.machine.paths().count();
                if paths > MAX_PATHS {
                    return Err(format!("{} tracks {paths} paths", w.host_name(host)));
                }
            }
            if w.inbox_len(host) > INBOX_LIMIT {
                return Err(format!("{} inbox over its limit", w.host_name(host)));
            }
        }
        Ok(())
    });
}

/// Rows about what `to` delivered of what `from` sent.
pub(crate) fn data_rows(world: &World, from: HostId, to: HostId, summary: &mut Summary) {
    let delivered = world
        .app_ref::<Prober>(to)
        .map(|a| a.delivered.as_slice())
        .unwrap_or_default();
    let unchanged = delivered
        .iter()
        .filter(|(_, _, p)| payload_seq(p).is_some())
        .count();
    let counters = world
        .app_ref::<Prober>(from)
        .map(|a| a.machine.counters())
        .unwrap_or_default();
    summary.row("data sent", counters.data_sent);
    summary.row("data refused (no validated path)", counters.data_no_path);
    summary.row("data delivered", delivered.len());
    summary.row("data delivered unchanged", unchanged);
    if unchanged != delivered.len() {
        summary.violations.push(format!(
            "{} delivered payloads were altered",
            delivered.len() - unchanged
        ));
    }
}

pub(crate) fn validated_at(world: &World, host: HostId) -> Option<Duration> {
    world
        .app_ref::<Prober>(host)?
        .events
        .iter()
        .find_map(|(at, e)| match e {
            ProbeEvent::PathValidated { .. } => Some(*at),
            _ => None,
        })
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let mut world = World::new(seed);
    let internet = world.add_segment("internet");
    let link = LinkParams {
        delay: Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
        jitter: Duration::from_secs_f64(p.f64("jitter_ms") / 1e3),
        loss: Loss::Independent(p.f64("loss")),
        rate_bps: Some((p.f64("rate_mbps") * 1e6) as u64),
        queue_bytes: 256 * 1024,
        ..LinkParams::ideal()
    };
    let (ip_a, ip_b) = (
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20)),
    );
    let a = world.add_host("alpha");
    let b = world.add_host("beta");
    world.add_iface(a, ip_a, internet, link.clone(), link.clone())?;
    world.add_iface(b, ip_b, internet, link.clone(), link)?;
    let (sa, sb) = (SocketAddr::new(ip_a, 40_000), SocketAddr::new(ip_b, 40_000));
    let interval = Duration::from_secs_f64(p.f64("interval_ms") / 1e3);
    let (seed_a, seed_b) = (world.fork_seed(), world.fork_seed());
    let alpha = prober(&world, sa, vec![sb], interval, seed_a);
    let beta = prober(&world, sb, vec![sa], interval, seed_b);
    world.install(a, alpha);
    world.install(b, beta);
    bounded_tables(&mut world, &[a, b]);
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    send_data(
        &mut world,
        a,
        p.f64("data_pps"),
        Duration::from_millis(500),
        duration,
    );
    world.run_for(duration);

    let mut summary = Summary::default();
    for (host, name) in [(a, "alpha"), (b, "beta")] {
        let at = validated_at(&world, host).map_or("never".to_owned(), ms);
        summary.row(&format!("{name} path validated at"), at);
        let app = world.app_ref::<Prober>(host).expect("installed");
        let srtt = app.machine.paths().find_map(|(_, path)| path.srtt);
        summary.row(
            &format!("{name} smoothed rtt"),
            srtt.map_or("none".to_owned(), ms),
        );
        let c = app.machine.counters();
        summary.row(
            &format!("{name} pings sent / pongs matched"),
            format!("{} / {}", c.pings_sent, c.pongs_matched),
        );
    }
    data_rows(&world, a, b, &mut summary);
    summary.finish(&world);
    Ok(summary)
}
