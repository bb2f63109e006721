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
use transitloom_proto_core::coordinator::RelayHosting;
use transitloom_proto_core::csprng::Drbg;
use transitloom_proto_core::dataplane::{BirthdayConfig, DataEvent, PunchConfig};
use transitloom_proto_core::node::{Node, NodeEvent, ServiceSpec};
use transitloom_proto_core::relay::RelayConfig;
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::ServiceId;

use super::control_plane::{
    add_admin, hub_config, hub_coordinator, install_coordinator, ip, make_pki, revoke_at_time,
    InMemoryCoordinator, UNIX_START,
};
use super::params::Allowed::{OneOf, Range};
use super::reconnect_storm::{enrolled, node_config};
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::apps::{UdpSink, UdpSource};
use crate::link::LinkParams;
use crate::nat::{Allocation, Filtering, Mapping, NatParams};
use crate::world::{HostId, SegmentId, World};
use crate::SimError;

mod relay_node;

pub use relay_node::GAMMA_IP;

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
        name: "relay",
        default: "1",
        about: "whether the coordinator hosts a relay for the association (1) or not (0)",
        allowed: Range(0.0, 1.0),
    },
    ParamSpec {
        name: "relay_node",
        default: "0",
        about: "whether a third node, gamma, on a public address relays for the pair (1: the coordinator places the allocation there) or not (0)",
        allowed: Range(0.0, 1.0),
    },
    ParamSpec {
        name: "relay_node_at_s",
        default: "0",
        about: "with relay_node=1, when gamma starts (0: at once); an association placed on the coordinator's relay before then moves onto gamma",
        allowed: Range(0.0, 600.0),
    },
    ParamSpec {
        name: "revoke",
        default: "none",
        about: "the node an admin revokes at revoke_at_s (beta: an end; gamma: the relay node)",
        allowed: OneOf(&["none", "beta", "gamma"]),
    },
    ParamSpec {
        name: "revoke_at_s",
        default: "4",
        about: "when `revoke` is revoked",
        allowed: Range(0.0, 600.0),
    },
    ParamSpec {
        name: "cut_at_s",
        default: "0",
        about: "the direct path between the two NATs is cut at this time (0: never); the coordinator stays reachable",
        allowed: Range(0.0, 600.0),
    },
    ParamSpec {
        name: "restore_at_s",
        default: "0",
        about: "the direct path is restored at this time (0: never)",
        allowed: Range(0.0, 600.0),
    },
    ParamSpec {
        name: "flap_ms",
        default: "0",
        about: "between cut and restore the direct path flaps: down and up for this long in turn (0: down throughout)",
        allowed: Range(0.0, 60_000.0),
    },
    ParamSpec {
        name: "rebind_at_s",
        default: "0",
        about: "alpha's NAT forgets every mapping at this time (0: never)",
        allowed: Range(0.0, 600.0),
    },
    ParamSpec {
        name: "renumber_at_s",
        default: "0",
        about: "alpha's NAT gets a new public address at this time (0: never)",
        allowed: Range(0.0, 600.0),
    },
    ParamSpec {
        name: "birthday",
        default: "0",
        about: "whether both nodes do bounded birthday probing (1) or not (0), with its default caps",
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
    pub fn hard(&self) -> bool {
        !self.independent()
            && self
                .nat
                .as_ref()
                .is_some_and(|n| n.allocation == Allocation::Random)
    }
}

/// Whether a pair gets a direct path, and why (or why not), from the rules
/// the nodes follow (DESIGN §7). A side is *hard* when its NAT maps per
/// destination and allocates ports at random: nobody can learn or predict
/// the mapping it will use towards the peer. Every other side offers a
/// usable candidate (its reflexive address, or the predicted ports of a
/// sequential allocator), so two of them always meet directly. With a
/// hard side, a direct path exists where one side's probe gets in and its
/// answer gets back (see [`probe_gets_in`] and [`answer_gets_back`]): a
/// pong from another port of the pinged address validates a path. The
/// matrix measures every pair against this (docs/nat-matrix.md); birthday
/// probing (DESIGN §7's opt-in) can take some of the rest direct.
pub fn direct_expected(a: &Side, b: &Side) -> (bool, &'static str) {
    if !a.hard() && !b.hard() {
        return (true, "a usable candidate on both sides");
    }
    if one_side_opens(a, b) || one_side_opens(b, a) {
        return (true, "one side's probes get in, and the answers back");
    }
    match (a.hard(), b.hard()) {
        (true, true) => (false, "both sides hard"),
        _ => (false, "one side hard"),
    }
}

/// Whether `x`'s probes get into `y`, `y`'s answers get back to `x`, and
/// `y` then validates its own path to where `x`'s probes came from.
fn one_side_opens(x: &Side, y: &Side) -> bool {
    probe_gets_in(x, y) && answer_gets_back(x, y) && answer_is_answered(x, y)
}

fn filtering(side: &Side) -> Filtering {
    side.nat
        .as_ref()
        .map_or(Filtering::EndpointIndependent, |n| n.filtering)
}

fn mapping(side: &Side) -> Option<Mapping> {
    side.nat.as_ref().map(|n| n.mapping)
}

/// `x`'s probe to one of `y`'s candidates gets through `y`'s NAT: `y`
/// lets anyone in on a live mapping (its reflexive one, at least); or
/// `y`'s candidate is the mapping it uses towards `x` (not hard) and it
/// filters by address only; or it filters by port too, and `x`'s probe
/// comes from the port `y` was told to expect (neither side hard).
fn probe_gets_in(x: &Side, y: &Side) -> bool {
    match filtering(y) {
        Filtering::EndpointIndependent => true,
        Filtering::AddressDependent => !y.hard(),
        Filtering::AddressPortDependent => !y.hard() && !x.hard(),
    }
}

/// `y` answers `x`'s probe from a port `x` has sent to: one mapping for
/// every destination, one per destination address (when that is the
/// candidate `x` probed: not hard), or per destination with predictable
/// ports, when `x` probed all of them from the one source the answer goes
/// to.
fn answers_from_a_probed_port(x: &Side, y: &Side) -> bool {
    match mapping(y) {
        None | Some(Mapping::EndpointIndependent) => true,
        Some(Mapping::AddressDependent) => !y.hard(),
        Some(Mapping::AddressPortDependent) => {
            !y.hard() && (!x.hard() || mapping(x) == Some(Mapping::AddressDependent))
        }
    }
}

/// `y`'s answer gets through `x`'s NAT: it filters by address at most, or
/// the answer comes from a port `x` has sent to.
fn answer_gets_back(x: &Side, y: &Side) -> bool {
    filtering(x) != Filtering::AddressPortDependent || answers_from_a_probed_port(x, y)
}

/// `y`'s probes to where `x`'s came from (a peer-reflexive candidate) are
/// answered through `y`'s NAT: it filters by address at most, or `x`
/// answers from the port `y`'s probe went to (one mapping per
/// destination address at most).
fn answer_is_answered(x: &Side, y: &Side) -> bool {
    filtering(y) != Filtering::AddressPortDependent
        || matches!(
            mapping(x),
            None | Some(Mapping::EndpointIndependent | Mapping::AddressDependent)
        )
}

/// How one pair went.
#[derive(Debug, Clone)]
pub struct PairOutcome {
    /// What alpha's reflector answers classified (mapping/allocation).
    pub alpha_saw: String,
    /// The same for beta.
    pub beta_saw: String,
    /// From the later of the two installs to alpha's first validated path
    /// (direct or relayed).
    pub first_path: Option<Duration>,
    /// The same for its first direct path.
    pub first_direct: Option<Duration>,
    /// The remote address of the first path.
    pub remote: Option<SocketAddr>,
    /// Whether the path carrying alpha's data at the end is relayed.
    pub ends_relayed: Option<bool>,
    /// The kind of that path (`direct-public`, `node-relay`, …).
    pub ends_kind: Option<&'static str>,
    /// That path's remote address.
    pub ends_remote: Option<SocketAddr>,
    /// Allocations the coordinator's relay holds at the end (with `relay`).
    pub hub_allocations: Option<usize>,
    /// Gamma's relay at the end (with `relay_node`): bytes forwarded and
    /// allocations held.
    pub gamma: Option<(u64, usize)>,
    /// When alpha's data moved, and whether onto a relay.
    pub switches: Vec<(Duration, bool)>,
    /// Arrival times at beta's service.
    pub arrivals: Vec<Duration>,
    /// Datagrams sent by alpha's service and delivered to beta's.
    pub sent: u64,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Invariant violations (the relay-node invariant with `revoke`).
    pub violations: Vec<String>,
    /// Birthday probes (or temporary socket pings) each node sent.
    pub birthday_probes: [u64; 2],
    /// Temporary sockets each node opened for birthday probing.
    pub birthday_sockets: [u64; 2],
    /// The first direct path's remote address, as alpha saw it.
    pub direct_remote: Option<SocketAddr>,
    /// The run's trace hash and events, for the summary.
    trace: (u64, u64),
}

/// How a pair is run.
#[derive(Debug, Clone, Copy)]
pub struct PairOptions {
    /// The coordinator announces a second reflector address.
    pub extra_reflector: bool,
    /// The coordinator hosts a relay.
    pub relay: bool,
    /// A third node, gamma, relays for the pair.
    pub relay_node: bool,
    /// When gamma starts (`None`: with the others).
    pub relay_node_at: Option<Duration>,
    /// An admin revokes this node (`beta` or `gamma`) at this time.
    pub revoke: Option<(Duration, &'static str)>,
    /// One-way delay of each access link.
    pub delay: Duration,
    /// Virtual run time.
    pub duration: Duration,
    /// When the direct path between the NATs is cut, and restored; with a
    /// flap period it goes down and up in turn in between.
    pub cut: Option<Cut>,
    /// When alpha's NAT forgets every mapping.
    pub rebind_at: Option<Duration>,
    /// When alpha's NAT gets a new public address.
    pub renumber_at: Option<Duration>,
    /// Both nodes do birthday probing with these caps (`None`: off).
    pub birthday: Option<BirthdayConfig>,
}

/// A cut of the direct path between the two nodes' public addresses.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// When it starts.
    pub at: Duration,
    /// When the path is back for good (`None`: never).
    pub restore: Option<Duration>,
    /// Down and up for this long in turn until the restore (`None`: down
    /// throughout).
    pub flap: Option<Duration>,
}

impl Default for PairOptions {
    /// Two reflector addresses, a relay, 10 ms links, 6 s, no cut.
    fn default() -> Self {
        Self {
            extra_reflector: true,
            relay: true,
            relay_node: false,
            relay_node_at: None,
            revoke: None,
            delay: Duration::from_millis(10),
            duration: Duration::from_secs(6),
            cut: None,
            rebind_at: None,
            renumber_at: None,
            birthday: None,
        }
    }
}

/// Runs one pair with `seed`.
///
/// # Errors
/// A topology the simulator refuses.
pub fn run_pair(
    seed: u64,
    a: &Side,
    b: &Side,
    options: PairOptions,
) -> Result<PairOutcome, SimError> {
    let PairOptions {
        extra_reflector,
        relay,
        relay_node,
        relay_node_at,
        revoke,
        delay,
        duration,
        cut,
        rebind_at,
        renumber_at,
        birthday,
    } = options;
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
    let mut alpha_nat = None;
    for (i, (name, peer, side)) in [("alpha", "beta", a), ("beta", "alpha", b)]
        .into_iter()
        .enumerate()
    {
        let (tls, ops) = enrolled(&pki, &mut drbg, name)?;
        log.extend(ops);
        let k = i as u8 + 1;
        let public = public_ips()[i];
        let (uplink_ip, segment): (IpAddr, SegmentId) = match &side.nat {
            None => (public, internet),
            Some(params) => {
                let lan = world.add_segment(&format!("{name}-lan"));
                let nat = world.add_nat(
                    &format!("{name}-nat"),
                    params.clone(),
                    public,
                    internet,
                    lan,
                )?;
                if i == 0 {
                    alpha_nat = Some(nat);
                }
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
        let mut machine = Node::new(config).map_err(|e| SimError::Topology(e.to_string()))?;
        machine.set_punch(PunchConfig {
            birthday,
            ..PunchConfig::default()
        });
        world.install(node, machine);
        hosts.push((node, service));
    }
    let gamma = if relay_node {
        let (host, ops) = relay_node::add_relay_node(
            &mut world,
            &pki,
            &mut drbg,
            (internet, &link),
            listen,
            wall,
            relay_node_at,
        )?;
        log.extend(ops);
        Some(host)
    } else {
        None
    };
    let mut coordinator = hub_coordinator(&config, &log, drbg.fork())?;
    if extra_reflector {
        // A second address, and a second port of the first: together they
        // tell endpoint-independent, address-dependent and
        // address-and-port-dependent mapping apart.
        coordinator.set_reflectors(&[
            SocketAddr::new(extra_ip, 7443),
            SocketAddr::new(hub_ip, 7444),
        ]);
    }
    if relay {
        coordinator.host_relay(RelayHosting {
            relay: RelayConfig::new(wall, drbg.next_u64()),
            bind_ip: hub_ip,
            advertise_ip: hub_ip,
            ports: Some((40_000, 40_999)),
        });
    }
    install_coordinator(&mut world, hub, coordinator, log);
    if let Some((at, node)) = revoke {
        let ops = add_admin(
            &mut world,
            &pki,
            (internet, &link),
            listen,
            wall,
            drbg.fork(),
        )?;
        revoke_at_time(&mut world, ops, at, node);
        if let Some(gamma) = gamma {
            // The revoke crosses two control round trips at most.
            relay_node::nothing_forwarded_after(&mut world, gamma, at + Duration::from_secs(1));
        }
    }

    let [(alpha, alpha_service), (beta, beta_service)] = [hosts[0], hosts[1]];
    if let Some(cut) = cut {
        schedule_cut(&mut world, internet, cut, duration);
    }
    if let (Some(at), Some(nat)) = (rebind_at, alpha_nat) {
        world.at(at, move |w| {
            let now = w.now();
            w.nat_mut(nat).rebind(now);
        });
    }
    if let (Some(at), Some(nat)) = (renumber_at, alpha_nat) {
        world.at(at, move |w| {
            w.set_nat_public_ip(nat, RENUMBERED)
                .expect("the new address is free");
        });
    }
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
    let validated = |direct_only: bool| {
        node(alpha).events.iter().find_map(|(at, e)| match e {
            NodeEvent::Data(DataEvent::PathValidated { remote, .. })
                if !direct_only || (remote.ip() != hub_ip && !relay_node::is_gamma(*remote)) =>
            {
                Some((*at, *remote))
            }
            _ => None,
        })
    };
    let first = validated(false);
    let first_direct = validated(true);
    let ends_path = node(alpha)
        .machine
        .data_plane()
        .associations()
        .next()
        .and_then(|a| {
            let current = a.current_path()?;
            a.paths()
                .find(|p| p.id == current)
                .map(|p| (p.kind, p.remote))
        });
    let ends_kind = ends_path.map(|(k, _)| k);
    let hub_allocations = world.app_ref::<InMemoryCoordinator>(hub).and_then(|c| {
        c.machine
            .coordinator
            .relay()
            .map(|r| r.allocations().count())
    });
    let saw = |host: HostId| {
        let plane = node(host).machine.data_plane();
        let class = plane.nat_class(transitloom_proto_core::UplinkId(0));
        format!("{}/{}", class.mapping.as_str(), class.allocation.as_str())
    };
    let relayed_path = |id| {
        node(alpha)
            .machine
            .data_plane()
            .associations()
            .flat_map(|a| a.paths())
            .find(|p| p.id == id)
            .is_some_and(|p| p.kind.is_relay())
    };
    let switches = node(alpha)
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            NodeEvent::Data(DataEvent::PathSwitched { to, .. }) => Some((*at, relayed_path(*to))),
            _ => None,
        })
        .collect();
    let sink = &world
        .app_ref::<UdpSink>(beta_service)
        .expect("installed")
        .machine;
    let arrivals = sink.arrivals().iter().map(|a| a.at).collect();
    let sent = world
        .app_ref::<UdpSource>(alpha_service)
        .map_or(0, |s| s.machine.sent());
    let counters = |host: HostId| {
        node(host)
            .machine
            .data_plane()
            .associations()
            .next()
            .map(|a| a.counters())
            .unwrap_or_default()
    };
    let (ca, cb) = (counters(alpha), counters(beta));
    Ok(PairOutcome {
        alpha_saw: saw(alpha),
        beta_saw: saw(beta),
        first_path: first
            .zip(both)
            .map(|((at, _), installed)| at.saturating_sub(installed)),
        first_direct: first_direct
            .zip(both)
            .map(|((at, _), installed)| at.saturating_sub(installed)),
        ends_relayed: ends_kind.map(|k| k.is_relay()),
        ends_kind: ends_kind.map(|k| k.as_str()),
        ends_remote: ends_path.map(|(_, r)| r),
        hub_allocations,
        gamma: gamma.map(|g| relay_node::gamma_relay(&world, g)),
        switches,
        arrivals,
        remote: first.map(|(_, r)| r),
        direct_remote: first_direct.map(|(_, r)| r),
        birthday_probes: [ca.birthday_probes, cb.birthday_probes],
        birthday_sockets: [ca.birthday_sockets, cb.birthday_sockets],
        sent,
        delivered: sink.packets,
        violations: world.violations().to_vec(),
        trace: (world.trace().value(), world.events_run()),
    })
}

/// Alpha's NAT's public address after `renumber_at_s`.
const RENUMBERED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 101, 77));

/// The nodes' public addresses: alpha's and beta's (their NAT's, or their
/// own when public).
fn public_ips() -> [IpAddr; 2] {
    [ip(198, 51, 101, 1), ip(198, 51, 102, 1)]
}

/// Blocks the direct path between the two nodes on `internet` as `cut`
/// says, until `end`.
fn schedule_cut(world: &mut World, internet: SegmentId, cut: Cut, end: Duration) {
    let [a, b] = public_ips();
    let restore = cut.restore.unwrap_or(end + Duration::from_secs(1));
    let mut at = cut.at;
    let mut down = true;
    while at < restore {
        world.at(at, move |w| w.set_blocked(internet, a, b, down));
        let Some(flap) = cut.flap else {
            break;
        };
        at += flap;
        down = !down;
    }
    if cut.restore.is_some() {
        world.at(restore, move |w| w.set_blocked(internet, a, b, false));
    }
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
        PairOptions {
            extra_reflector: p.u64("extra_reflector") == 1,
            relay: p.u64("relay") == 1,
            relay_node: p.u64("relay_node") == 1,
            relay_node_at: secs(p.f64("relay_node_at_s")),
            revoke: match p.word("revoke") {
                "beta" => Some("beta"),
                "gamma" => Some("gamma"),
                _ => None,
            }
            .map(|node| (Duration::from_secs_f64(p.f64("revoke_at_s")), node)),
            delay: Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
            duration: Duration::from_secs_f64(p.f64("duration_s")),
            cut: cut_of(p),
            rebind_at: secs(p.f64("rebind_at_s")),
            renumber_at: secs(p.f64("renumber_at_s")),
            birthday: (p.u64("birthday") == 1).then(BirthdayConfig::default),
        },
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
    summary.row(
        "first direct path after install",
        out.first_direct.map_or("never".to_owned(), ms),
    );
    summary.row(
        "data goes at the end through",
        match out.ends_kind {
            None => "nothing",
            Some("coordinator-relay") => "the coordinator's relay",
            Some("node-relay") => "gamma's relay (a node relay)",
            Some(_) => "a direct path",
        },
    );
    if let Some((bytes, allocations)) = out.gamma {
        summary.row("gamma's relay at the end: allocations", allocations);
        summary.row("gamma's relay at the end: bytes forwarded", bytes);
    }
    if let Some(allocations) = out.hub_allocations {
        summary.row(
            "the coordinator's relay at the end: allocations",
            allocations,
        );
    }
    let (expected, why) = direct_expected(&a, &b);
    summary.row(
        "direct path expected",
        format!("{} ({why})", if expected { "yes" } else { "no" }),
    );
    if p.u64("birthday") == 1 {
        summary.row(
            "birthday probes sent (alpha, beta)",
            format!("{}, {}", out.birthday_probes[0], out.birthday_probes[1]),
        );
        summary.row(
            "temporary sockets opened (alpha, beta)",
            format!("{}, {}", out.birthday_sockets[0], out.birthday_sockets[1]),
        );
    }
    summary.row("datagrams sent", out.sent);
    summary.row("datagrams delivered", out.delivered);
    for (name, at) in [
        ("gamma's start", secs(p.f64("relay_node_at_s"))),
        ("alpha's NAT rebinding", secs(p.f64("rebind_at_s"))),
        ("alpha's new public address", secs(p.f64("renumber_at_s"))),
    ] {
        let Some(at) = at else {
            continue;
        };
        summary.row(
            &format!("longest gap between arrivals after {name}"),
            longest_gap_after(&out.arrivals, at).map_or("-".to_owned(), ms),
        );
    }
    if let Some(cut) = cut_of(p) {
        let after = |from: Duration, relayed: bool| {
            out.switches
                .iter()
                .find(|(at, r)| *at >= from && *r == relayed)
                .map(|(at, _)| *at - from)
        };
        summary.row(
            "data onto the relay after the cut in",
            after(cut.at, true).map_or("never".to_owned(), ms),
        );
        if let Some(restore) = cut.restore {
            summary.row(
                "data back on a direct path after the restore in",
                after(restore, false).map_or("never".to_owned(), ms),
            );
        }
        summary.row(
            "longest gap between arrivals after the cut",
            out.arrivals
                .windows(2)
                .filter(|w| w[1] >= cut.at)
                .map(|w| w[1] - w[0])
                .max()
                .map_or("-".to_owned(), ms),
        );
        summary.row("times data moved between paths", out.switches.len());
    }
    summary.trace_hash = out.trace.0;
    summary.events = out.trace.1;
    summary.violations = out.violations;
    Ok(summary)
}

fn secs(s: f64) -> Option<Duration> {
    (s > 0.0).then(|| Duration::from_secs_f64(s))
}

/// The longest time between two arrivals (or from `at` to the first one)
/// after `at`.
pub fn longest_gap_after(arrivals: &[Duration], at: Duration) -> Option<Duration> {
    let mut last = at;
    let mut longest = None;
    for &t in arrivals.iter().filter(|&&t| t >= at) {
        let gap = t - last;
        longest = Some(longest.map_or(gap, |l: Duration| l.max(gap)));
        last = t;
    }
    longest
}

fn cut_of(p: &Params) -> Option<Cut> {
    let at = p.f64("cut_at_s");
    if at <= 0.0 {
        return None;
    }
    let restore = p.f64("restore_at_s");
    let flap = p.f64("flap_ms");
    Some(Cut {
        at: Duration::from_secs_f64(at),
        restore: (restore > 0.0).then(|| Duration::from_secs_f64(restore)),
        flap: (flap > 0.0).then(|| Duration::from_secs_f64(flap / 1e3)),
    })
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
    /// Runs with any validated path (direct or relayed).
    pub connected: usize,
    /// Runs.
    pub runs: usize,
    /// Time to the first path of each run that had one.
    pub times: Vec<Duration>,
    /// Runs with a direct path once both nodes probe birthday-style
    /// (default caps, runs of [`BIRTHDAY_RUN`]); `None` where every run
    /// was direct without it.
    pub birthday_direct: Option<usize>,
}

/// How long a matrix run with birthday probing lasts: the attempt starts
/// a second after the punch and spends its probes within about 8 s.
pub const BIRTHDAY_RUN: Duration = Duration::from_secs(12);

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
                connected: 0,
                runs: 0,
                times: Vec::new(),
                birthday_direct: None,
            };
            for &seed in seeds {
                let o = run_pair(seed, a, b, PairOptions::default())?;
                cell.runs += 1;
                if o.first_direct.is_some() {
                    cell.direct += 1;
                }
                if let Some(t) = o.first_path {
                    cell.connected += 1;
                    cell.times.push(t);
                }
            }
            if cell.direct < cell.runs {
                let mut direct = 0;
                for &seed in seeds {
                    let options = PairOptions {
                        birthday: Some(BirthdayConfig::default()),
                        duration: BIRTHDAY_RUN,
                        ..PairOptions::default()
                    };
                    // Direct at the end, not just once: a path that
                    // validated and failed again does not count.
                    if run_pair(seed, a, b, options)?.ends_relayed == Some(false) {
                        direct += 1;
                    }
                }
                cell.birthday_direct = Some(direct);
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
        "| alpha | beta | outcome | direct runs | connected runs | median time to first path | expected | direct runs with birthday probing |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
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
        } else if c.connected < c.runs {
            "NOT CONNECTED"
        } else if c.direct == 0 {
            "relay"
        } else {
            "direct or relay"
        };
        let birthday = c
            .birthday_direct
            .map_or("-".to_owned(), |d| format!("{d}/{}", c.runs));
        let _ = writeln!(
            t,
            "| {} | {} | {outcome} | {}/{} | {}/{} | {median} | {expected} | {birthday} |",
            c.pair.0.label(),
            c.pair.1.label(),
            c.direct,
            c.runs,
            c.connected,
            c.runs,
        );
    }
    Ok(t)
}
