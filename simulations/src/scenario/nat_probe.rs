//! A host behind an RFC 4787 NAT probes a public host: the pong tells it its
//! reflexive address, the public host learns the mapped address from the
//! pings, and (in `nat-rebind`) re-validates within one probe interval when
//! the NAT forgets its mappings mid-flow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use transitloom_proto_core::probe::{PathState, ProbeEvent, Prober};

use super::params::Allowed::{OneOf, Range};
use super::probe_pair::{bounded_tables, data_rows, prober, send_data, validated_at};
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::link::LinkParams;
use crate::nat::{Allocation, Filtering, Mapping, NatParams};
use crate::world::World;
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "nat-probe",
    about: "a host behind a NAT learns its reflexive address; the public peer validates the mapped address",
    params: PARAMS,
    run: |seed, p| run(seed, p, false),
};

pub(super) const REBIND: Scenario = Scenario {
    name: "nat-rebind",
    about: "the NAT forgets its mappings mid-flow; the public peer re-validates the new mapping",
    params: PARAMS,
    run: |seed, p| run(seed, p, true),
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "mapping",
        default: "eim",
        about: "NAT mapping: endpoint-independent, address-dependent, address-and-port-dependent",
        allowed: OneOf(&["eim", "adm", "apdm"]),
    },
    ParamSpec {
        name: "filtering",
        default: "apdf",
        about: "NAT filtering",
        allowed: OneOf(&["eif", "adf", "apdf"]),
    },
    ParamSpec {
        name: "allocation",
        default: "random",
        about: "NAT port allocation",
        allowed: OneOf(&["preserving", "sequential", "random"]),
    },
    ParamSpec {
        name: "delay_ms",
        default: "15",
        about: "one-way delay of each access link",
        allowed: Range(0.0, 10_000.0),
    },
    ParamSpec {
        name: "interval_ms",
        default: "100",
        about: "probe interval",
        allowed: Range(10.0, 10_000.0),
    },
    ParamSpec {
        name: "data_pps",
        default: "100",
        about: "data packets per second from the NATed host",
        allowed: Range(0.0, 100_000.0),
    },
    ParamSpec {
        name: "rebind_at_s",
        default: "5",
        about: "when the NAT forgets its mappings (nat-rebind)",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "10",
        about: "virtual run time",
        allowed: Range(1.0, 3_600.0),
    },
];

fn nat_params(p: &Params) -> NatParams {
    NatParams {
        mapping: match p.word("mapping") {
            "eim" => Mapping::EndpointIndependent,
            "adm" => Mapping::AddressDependent,
            _ => Mapping::AddressPortDependent,
        },
        filtering: match p.word("filtering") {
            "eif" => Filtering::EndpointIndependent,
            "adf" => Filtering::AddressDependent,
            _ => Filtering::AddressPortDependent,
        },
        allocation: match p.word("allocation") {
            "preserving" => Allocation::Preserving,
            "sequential" => Allocation::Sequential,
            _ => Allocation::Random,
        },
        ..NatParams::cone()
    }
}

fn run(seed: u64, p: &Params, rebind: bool) -> Result<Summary, SimError> {
    let mut world = World::new(seed);
    let internet = world.add_segment("internet");
    let lan = world.add_segment("lan");
    let access = LinkParams {
        delay: Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
        ..LinkParams::ideal()
    };
    let public_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    let nat = world.add_nat("nat", nat_params(p), public_ip, internet, lan)?;
    let (ip_a, ip_b) = (
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20)),
    );
    let a = world.add_host("alpha");
    let b = world.add_host("beta");
    world.add_iface(a, ip_a, lan, access.clone(), access.clone())?;
    world.add_iface(b, ip_b, internet, access.clone(), access)?;
    let (sa, sb) = (SocketAddr::new(ip_a, 40_000), SocketAddr::new(ip_b, 40_000));
    let interval = Duration::from_secs_f64(p.f64("interval_ms") / 1e3);
    let (seed_a, seed_b) = (world.fork_seed(), world.fork_seed());
    // beta knows no address for alpha: it learns the mapped one from pings.
    let alpha = prober(&world, sa, vec![sb], interval, seed_a);
    let beta = prober(&world, sb, Vec::new(), interval, seed_b);
    world.install(a, alpha);
    world.install(b, beta);
    bounded_tables(&mut world, &[a, b]);
    let max_mappings = nat_params(p).max_mappings;
    world.add_invariant("nat mappings bounded", move |w| {
        let count = w.nat(nat).mapping_count();
        if count > max_mappings {
            return Err(format!("{count} mappings, limit {max_mappings}"));
        }
        Ok(())
    });
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    send_data(
        &mut world,
        a,
        p.f64("data_pps"),
        Duration::from_millis(500),
        duration,
    );
    let rebind_at = Duration::from_secs_f64(p.f64("rebind_at_s"));
    if rebind {
        world.at(rebind_at, move |w| {
            let now = w.now();
            w.nat_mut(nat).rebind(now);
        });
    }
    world.run_for(duration);

    let mut summary = Summary::default();
    summary.row(
        "nat",
        format!(
            "{} / {} / {}",
            p.word("mapping"),
            p.word("filtering"),
            p.word("allocation")
        ),
    );
    let alpha = world.app_ref::<Prober>(a).expect("installed");
    let observed: Vec<String> = alpha
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            ProbeEvent::Observed { observed } => Some(format!("{observed} at {}", ms(*at))),
            _ => None,
        })
        .collect();
    summary.row(
        "alpha reflexive address",
        if observed.is_empty() {
            "none".to_owned()
        } else {
            observed.join(", ")
        },
    );
    summary.row(
        "alpha validated beta at",
        validated_at(&world, a).map_or("never".to_owned(), ms),
    );
    let beta = world.app_ref::<Prober>(b).expect("installed");
    let active: Vec<String> = beta
        .machine
        .paths()
        .filter(|(_, path)| path.state == PathState::Active)
        .map(|(remote, _)| remote.to_string())
        .collect();
    summary.row(
        "beta active paths",
        if active.is_empty() {
            "none".to_owned()
        } else {
            active.join(", ")
        },
    );
    summary.row(
        "beta validated alpha at",
        validated_at(&world, b).map_or("never".to_owned(), ms),
    );
    if rebind {
        let revalidated = beta.events.iter().filter_map(|(at, e)| match e {
            ProbeEvent::PathValidated { .. } if *at > rebind_at => Some(*at - rebind_at),
            _ => None,
        });
        summary.row(
            "beta revalidated after rebind in",
            revalidated.min().map_or("never".to_owned(), ms),
        );
        let times: Vec<Duration> = beta.delivered.iter().map(|(at, _, _)| *at).collect();
        let gap = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        summary.row("longest delivery gap", ms(gap));
        summary.row(
            "beta data dropped (unvalidated)",
            beta.machine.counters().data_unvalidated,
        );
    }
    summary.row("nat mappings", world.nat(nat).mapping_count());
    data_rows(&world, a, b, &mut summary);
    summary.finish(&world);
    Ok(summary)
}
