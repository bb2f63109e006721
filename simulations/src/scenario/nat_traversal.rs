//! NAT traversal end to end (DESIGN §7): two enrolled nodes, each behind
//! its own RFC 4787 NAT (or none), and a public coordinator with a second
//! reflector address. The nodes form an association by mutual consent;
//! every mesh socket asks both reflector addresses for its outside address
//! and classifies its NAT; the coordinator passes the candidates
//! (reflexive, or predicted for a sequential allocator) to the other end,
//! and both probe them at once. The summary says which NAT each node saw,
//! whether a direct path was validated and how long after the association
//! was installed, and how much of a UDP flow crossed.
//!
//! `tl-sim table nat-matrix` runs every pair of NAT behaviours over
//! several seeds ([`matrix`]) for docs/nat-matrix.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use transitloom_proto_core::coordinator::registry::Registry;
use transitloom_proto_core::coordinator::Coordinator;
use transitloom_proto_core::csprng::Drbg;
use transitloom_proto_core::dataplane::DataEvent;
use transitloom_proto_core::node::{Node, NodeEvent, ServiceSpec};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::ServiceId;

use super::control_plane::{hub_config, install_coordinator, ip, make_pki, UNIX_START};
use super::params::Allowed::{OneOf, Range};
use super::reconnect_storm::{enrolled, node_config};
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::apps::{UdpSink, UdpSource};
use crate::link::LinkParams;
use crate::nat::{Allocation, Filtering, Mapping, NatParams};
use crate::world::{HostId, SegmentId, World};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "nat-pair",
    about: "two nodes behind NATs of the given behaviours find a direct path through the reflector and hole punching",
    params: PARAMS,
    run,
};

/// The name `tl-sim table` knows the whole matrix by.
pub const MATRIX_NAME: &str = "nat-matrix";

const MAPPINGS: &[&str] = &["none", "eim", "adm", "apdm"];
const FILTERINGS: &[&str] = &["eif", "adf", "apdf"];
const ALLOCATIONS: &[&str] = &["preserving", "sequential", "random"];

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "a_mapping",
        default: "eim",
        about: "alpha's NAT mapping (none: alpha is on a public address)",
        allowed: OneOf(MAPPINGS),
    },
    ParamSpec {
        name: "a_filtering",
        default: "apdf",
        about: "alpha's NAT filtering",
        allowed: OneOf(FILTERINGS),
    },
    ParamSpec {
        name: "a_allocation",
        default: "random",
        about: "alpha's NAT port allocation",
        allowed: OneOf(ALLOCATIONS),
    },
    ParamSpec {
        name: "b_mapping",
        default: "eim",
        about: "beta's NAT mapping (none: beta is on a public address)",
        allowed: OneOf(MAPPINGS),
    },
    ParamSpec {
        name: "b_filtering",
        default: "apdf",
        about: "beta's NAT filtering",
        allowed: OneOf(FILTERINGS),
    },
    ParamSpec {
        name: "b_allocation",
        default: "random",
        about: "beta's NAT port allocation",
        allowed: OneOf(ALLOCATIONS),
    },
    ParamSpec {
        name: "extra_reflector",
        default: "1",
        about: "whether the coordinator announces a second reflector address (1) or not (0)",
        allowed: Range(0.0, 1.0),
    },
    ParamSpec {
        name: "delay_ms",
        default: "10",
        about: "one-way delay of each access link",
        allowed: Range(0.0, 1_000.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "6",
        about: "virtual run time",
        allowed: Range(2.0, 600.0),
    },
];

/// One side's NAT, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// `None`: the node has a public address.
    pub nat: Option<NatParams>,
}

impl Side {
    fn from_words(mapping: &str, filtering: &str, allocation: &str) -> Self {
        let mapping = match mapping {
            "none" => return Self { nat: None },
            "eim" => Mapping::EndpointIndependent,
            "adm" => Mapping::AddressDependent,
            _ => Mapping::AddressPortDependent,
        };
        let filtering = match filtering {
            "eif" => Filtering::EndpointIndependent,
            "adf" => Filtering::AddressDependent,
            _ => Filtering::AddressPortDependent,
        };
        let allocation = match allocation {
            "preserving" => Allocation::Preserving,
            "sequential" => Allocation::Sequential,
            _ => Allocation::Random,
        };
        Self {
            nat: Some(NatParams {
                mapping,
                filtering,
                allocation,
                ..NatParams::cone()
            }),
        }
    }

    /// A short label: `eim/apdf/random`, or `public`.
    pub fn label(&self) -> String {
        let Some(nat) = &self.nat else {
            return "public".to_owned();
        };
        let m = match nat.mapping {
            Mapping::EndpointIndependent => "eim",
            Mapping::AddressDependent => "adm",
            Mapping::AddressPortDependent => "apdm",
        };
        let f = match nat.filtering {
            Filtering::EndpointIndependent => "eif",
            Filtering::AddressDependent => "adf",
            Filtering::AddressPortDependent => "apdf",
        };
        let a = match nat.allocation {
            Allocation::Preserving => "preserving",
            Allocation::Sequential => "sequential",
            Allocation::Random => "random",
        };
        format!("{m}/{f}/{a}")
    }

    /// Whether one mapping serves every destination (or there is no NAT).
    fn independent(&self) -> bool {
        self.nat
            .as_ref()
            .is_none_or(|n| n.mapping == Mapping::EndpointIndependent)
    }

    /// Maps per destination and allocates at random: no usable candidate.
    fn hard(&self) -> bool {
        !self.independent()
            && self
                .nat
                .as_ref()
                .is_some_and(|n| n.allocation == Allocation::Random)
    }
}

/// Whether a direct path is guaranteed for a pair, and why (or why not).
/// A side is *hard* when its NAT maps per destination and allocates ports
/// at random: nobody can learn or predict the mapping it will use towards
/// the peer. Every other side offers a usable candidate (its reflexive
/// address, or the predicted ports of a sequential allocator), so two of
/// them always meet directly. A hard side meets the peer directly only
/// where the peer's NAT happens to let its probes in (the matrix shows
/// which); elsewhere it needs a relay, or birthday probing (DESIGN §7's
/// opt-in for one hard side).
pub fn direct_expected(a: &Side, b: &Side) -> (bool, &'static str) {
    match (a.hard(), b.hard()) {
        (false, false) => (true, "a usable candidate on both sides"),
        (true, true) => (false, "both sides hard"),
        _ => (false, "one side hard"),
    }
}

/// How one pair went.
#[derive(Debug, Clone)]
pub struct PairOutcome {
    /// What alpha's reflector answers classified (mapping/allocation).
    pub alpha_saw: String,
    /// The same for beta.
    pub beta_saw: String,
    /// From the later of the two installs to alpha's first validated path.
    pub first_path: Option<Duration>,
    /// The remote address of that path.
    pub remote: Option<SocketAddr>,
    /// Datagrams sent by alpha's service and delivered to beta's.
    pub sent: u64,
    /// Datagrams delivered.
    pub delivered: u64,
    /// The run's trace hash and events, for the summary.
    trace: (u64, u64),
}

/// Runs one pair with `seed`.
///
/// # Errors
/// A topology the simulator refuses.
pub fn run_pair(
    seed: u64,
    a: &Side,
    b: &Side,
    extra_reflector: bool,
    delay: Duration,
    duration: Duration,
) -> Result<PairOutcome, SimError> {
    let mut world = World::new(seed);
    let mut drbg = Drbg::from_u64(world.fork_seed());
    let pki = make_pki(&mut drbg)?;
    let root = CertificateDer::from(pki.root.clone());
    let wall = WallClock::new(world.epoch(), UNIX_START * 1_000_000);
    let internet = world.add_segment("internet");
    let link = LinkParams {
        delay,
        ..LinkParams::ideal()
    };

    // The coordinator, with a second address for the reflector.
    let hub_ip = ip(203, 0, 113, 1);
    let extra_ip = ip(203, 0, 113, 2);
    let hub = world.add_host("hub");
    world.add_iface(hub, hub_ip, internet, link.clone(), link.clone())?;
    world.add_iface(hub, extra_ip, internet, link.clone(), link.clone())?;
    let listen = SocketAddr::new(hub_ip, 7443);
    let config = hub_config(&pki, listen, wall, 600)?;

    let mut log = Vec::new();
    let ingress = SocketAddr::new(ip(127, 0, 0, 1), 41_000);
    let service_addr = SocketAddr::new(ip(127, 0, 0, 2), 51_820);
    let mut hosts = Vec::new();
    for (i, (name, peer, side)) in [("alpha", "beta", a), ("beta", "alpha", b)]
        .into_iter()
        .enumerate()
    {
        let (tls, ops) = enrolled(&pki, &mut drbg, name)?;
        log.extend(ops);
        let k = i as u8 + 1;
        let public = ip(198, 51, 100 + k, 1);
        let (uplink_ip, segment): (IpAddr, SegmentId) = match &side.nat {
            None => (public, internet),
            Some(params) => {
                let lan = world.add_segment(&format!("{name}-lan"));
                world.add_nat(
                    &format!("{name}-nat"),
                    params.clone(),
                    public,
                    internet,
                    lan,
                )?;
                (ip(10, 0, k, 2), lan)
            }
        };
        let (node, service) =
            super::mesh_udp::node_with_service(&mut world, name, uplink_ip, segment, &link)?;
        let mut config = node_config(name, uplink_ip, listen, &root, tls, wall, drbg.key());
        config.services = vec![ServiceSpec {
            id: ServiceId(1),
            name: "wg0".to_owned(),
            target: service_addr,
            peers: BTreeMap::from([(format!("{peer}/wg0"), ingress)]),
        }];
        world.install(
            node,
            Node::new(config).map_err(|e| SimError::Topology(e.to_string()))?,
        );
        hosts.push((node, service));
    }
    let mut registry = Registry::new();
    for op in &log {
        registry
            .apply(op)
            .map_err(|e| SimError::Topology(format!("the log does not replay: {e}")))?;
    }
    let mut coordinator = Coordinator::new(config, registry, drbg.fork())
        .map_err(|e| SimError::Topology(e.to_string()))?;
    if extra_reflector {
        coordinator.set_reflectors(&[SocketAddr::new(extra_ip, 7443)]);
    }
    install_coordinator(&mut world, hub, coordinator, log);

    let [(alpha, alpha_service), (beta, beta_service)] = [hosts[0], hosts[1]];
    let epoch = world.epoch();
    let start = Duration::from_secs(1);
    world.install(
        alpha_service,
        UdpSource::new(service_addr, ingress, 200, 0.2e6, 1, epoch, start, duration),
    );
    world.install(beta_service, UdpSink::new(service_addr, epoch));
    world.run_until(epoch + duration + Duration::from_millis(200));

    let node = |host: HostId| world.app_ref::<Node>(host).expect("installed");
    let installed_at = |host: HostId| {
        node(host)
            .events
            .iter()
            .find(|(_, e)| matches!(e, NodeEvent::Installed { .. }))
            .map(|(at, _)| *at)
    };
    let both = installed_at(alpha)
        .zip(installed_at(beta))
        .map(|(x, y)| x.max(y));
    let first = node(alpha).events.iter().find_map(|(at, e)| match e {
        NodeEvent::Data(DataEvent::PathValidated { remote, .. }) => Some((*at, *remote)),
        _ => None,
    });
    let saw = |host: HostId| {
        let plane = node(host).machine.data_plane();
        let class = plane.nat_class(transitloom_proto_core::UplinkId(0));
        format!("{}/{}", class.mapping.as_str(), class.allocation.as_str())
    };
    let sink = &world
        .app_ref::<UdpSink>(beta_service)
        .expect("installed")
        .machine;
    let sent = world
        .app_ref::<UdpSource>(alpha_service)
        .map_or(0, |s| s.machine.sent());
    Ok(PairOutcome {
        alpha_saw: saw(alpha),
        beta_saw: saw(beta),
        first_path: first
            .zip(both)
            .map(|((at, _), installed)| at.saturating_sub(installed)),
        remote: first.map(|(_, r)| r),
        sent,
        delivered: sink.packets,
        trace: (world.trace().value(), world.events_run()),
    })
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let a = Side::from_words(
        p.word("a_mapping"),
        p.word("a_filtering"),
        p.word("a_allocation"),
    );
    let b = Side::from_words(
        p.word("b_mapping"),
        p.word("b_filtering"),
        p.word("b_allocation"),
    );
    let out = run_pair(
        seed,
        &a,
        &b,
        p.u64("extra_reflector") == 1,
        Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
        Duration::from_secs_f64(p.f64("duration_s")),
    )?;
    let mut summary = Summary::default();
    summary.row("alpha's NAT", a.label());
    summary.row("beta's NAT", b.label());
    summary.row("alpha's reflectors classify it as", &out.alpha_saw);
    summary.row("beta's reflectors classify it as", &out.beta_saw);
    summary.row(
        "first validated path after install",
        out.first_path.map_or("never".to_owned(), ms),
    );
    summary.row(
        "its remote address",
        out.remote.map_or("-".to_owned(), |r| r.to_string()),
    );
    let (expected, why) = direct_expected(&a, &b);
    summary.row(
        "direct path expected",
        format!("{} ({why})", if expected { "yes" } else { "no" }),
    );
    summary.row("datagrams sent", out.sent);
    summary.row("datagrams delivered", out.delivered);
    summary.trace_hash = out.trace.0;
    summary.events = out.trace.1;
    Ok(summary)
}

/// Every side a NAT matrix covers: public, then mapping × filtering ×
/// allocation.
pub fn all_sides() -> Vec<Side> {
    let mut sides = vec![Side { nat: None }];
    for m in &MAPPINGS[1..] {
        for f in FILTERINGS {
            for a in ALLOCATIONS {
                sides.push(Side::from_words(m, f, a));
            }
        }
    }
    sides
}

/// One cell of the matrix: outcomes over `seeds`.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The two sides.
    pub pair: (Side, Side),
    /// Runs with a validated direct path.
    pub direct: usize,
    /// Runs.
    pub runs: usize,
    /// Time to the first path of each run that had one.
    pub times: Vec<Duration>,
}

/// Runs every unordered pair of [`all_sides`] with each seed.
///
/// # Errors
/// A topology the simulator refuses.
pub fn cells(seeds: &[u64]) -> Result<Vec<Cell>, SimError> {
    let sides = all_sides();
    let mut out = Vec::new();
    for (i, a) in sides.iter().enumerate() {
        for b in &sides[i..] {
            let mut cell = Cell {
                pair: (a.clone(), b.clone()),
                direct: 0,
                runs: 0,
                times: Vec::new(),
            };
            for &seed in seeds {
                let o = run_pair(
                    seed,
                    a,
                    b,
                    true,
                    Duration::from_millis(10),
                    Duration::from_secs(6),
                )?;
                cell.runs += 1;
                if let Some(t) = o.first_path {
                    cell.direct += 1;
                    cell.times.push(t);
                }
            }
            out.push(cell);
        }
    }
    Ok(out)
}

/// The matrix as markdown, for docs/nat-matrix.md.
///
/// # Errors
/// A topology the simulator refuses.
pub fn matrix(seeds: &[u64]) -> Result<String, SimError> {
    let cells = cells(seeds)?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| alpha | beta | outcome | direct runs | median time to first path | guaranteed |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    for c in &cells {
        let mut times = c.times.clone();
        times.sort();
        let median = times
            .get(times.len() / 2)
            .map_or("-".to_owned(), |d| ms(*d));
        let expected = match direct_expected(&c.pair.0, &c.pair.1) {
            (true, _) => "direct".to_owned(),
            (false, why) => format!("relay ({why})"),
        };
        let outcome = if c.direct == c.runs {
            "direct"
        } else if c.direct == 0 {
            "none"
        } else {
            "direct (some seeds)"
        };
        let _ = writeln!(
            t,
            "| {} | {} | {outcome} | {}/{} | {median} | {expected} |",
            c.pair.0.label(),
            c.pair.1.label(),
            c.direct,
            c.runs,
        );
    }
    Ok(t)
}
