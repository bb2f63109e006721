//! A relay between two endpoints while an attacker tries everything it
//! should refuse (issue 5, item 7): the real `Relay` on a public host, two
//! endpoints binding the legs of one allocation and sending numbered data
//! through it, and Mallory sending unsolicited data, binds under guessed
//! keys, replays of a captured bind, bind-sized junk, and binds for its own
//! allocation after the relay released it. One endpoint binds a second
//! late (data before both legs are bound), the other moves to a new port
//! mid-run (a leg moves only with a fresh bind), and the second endpoint's
//! node is revoked near the end.
//!
//! Invariants, checked after every event: nothing reaches Mallory from the
//! endpoints' allocation, and nothing larger than what it sent from
//! anywhere; the endpoints receive only each other's payloads, unchanged,
//! and acknowledgements of their own binds; the legs are only ever the
//! endpoints' addresses; nothing is forwarded before both legs are bound;
//! the relay's tables stay bounded. At the end: nothing delivered after the
//! revoke (beyond one link delay), no acknowledgement after the release.

mod attacker;
mod endpoint;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use transitloom_proto_core::relay::{
    AllocationCounters, AllocationSpec, DropReason, Relay, RelayConfig, RelayEvent,
    BIND_REPLAY_CAPACITY,
};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::{AssocId, NodeId};

use super::params::Allowed::Range;
use super::{ms, ParamSpec, Params, Scenario, Summary};
use crate::link::{LinkParams, Loss};
use crate::world::{HostId, World, INBOX_LIMIT};
use crate::SimError;
use attacker::{Attacker, AttackerConfig};
use endpoint::{EndpointConfig, EndpointEvent, LegEndpoint};

pub(super) const SCENARIO: Scenario = Scenario {
    name: "relay-abuse",
    about: "a relay carries two endpoints' data unchanged while an attacker's binds, replays and floods get nothing",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "delay_ms",
        default: "10",
        about: "one-way delay of each host's link",
        allowed: Range(0.0, 1_000.0),
    },
    ParamSpec {
        name: "jitter_ms",
        default: "2",
        about: "extra one-way delay, uniform in [0, jitter]",
        allowed: Range(0.0, 100.0),
    },
    ParamSpec {
        name: "loss",
        default: "0.01",
        about: "independent loss probability per direction",
        allowed: Range(0.0, 0.5),
    },
    ParamSpec {
        name: "data_pps",
        default: "200",
        about: "payloads per second from each endpoint",
        allowed: Range(1.0, 10_000.0),
    },
    ParamSpec {
        name: "attack_every_ms",
        default: "5",
        about: "time between the attacker's datagrams",
        allowed: Range(0.1, 1_000.0),
    },
    ParamSpec {
        name: "second_leg_at_s",
        default: "1",
        about: "when the second endpoint starts binding",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "release_at_s",
        default: "3",
        about: "when the relay releases the attacker's own allocation",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "move_at_s",
        default: "4",
        about: "when the first endpoint moves to a new port",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "revoke_at_s",
        default: "7",
        about: "when the second endpoint's node is revoked",
        allowed: Range(0.0, 3_600.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "10",
        about: "virtual run time",
        allowed: Range(1.0, 3_600.0),
    },
];

const ALLOCATION: u64 = 1;
const MALLORY_ALLOCATION: u64 = 2;
const KEY: [u8; 32] = [0x4B; 32];
const MALLORY_KEY: [u8; 32] = [0x66; 32];
const BETA_NODE: NodeId = NodeId(2);

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The hosts and addresses of a run.
struct Cast {
    relay: HostId,
    alpha: HostId,
    beta: HostId,
    mallory: HostId,
    port: SocketAddr,
    mallory_port: SocketAddr,
    alpha_at: [SocketAddr; 2],
    beta_at: SocketAddr,
    mallory_at: SocketAddr,
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let mut world = World::new(seed);
    let secs = |name: &str| Duration::from_secs_f64(p.f64(name));
    let internet = world.add_segment("internet");
    let link = LinkParams {
        delay: Duration::from_secs_f64(p.f64("delay_ms") / 1e3),
        jitter: Duration::from_secs_f64(p.f64("jitter_ms") / 1e3),
        loss: Loss::Independent(p.f64("loss")),
        rate_bps: Some(100_000_000),
        queue_bytes: 256 * 1024,
        ..LinkParams::ideal()
    };
    let max_one_way = 2 * (link.delay + link.jitter) + Duration::from_millis(5);
    let mut host = |name: &str, addr: IpAddr| -> Result<HostId, SimError> {
        let h = world.add_host(name);
        world.add_iface(h, addr, internet, link.clone(), link.clone())?;
        Ok(h)
    };
    let relay_ip = ip(203, 0, 113, 1);
    let cast = Cast {
        relay: host("relay", relay_ip)?,
        alpha: host("alpha", ip(192, 0, 2, 10))?,
        beta: host("beta", ip(198, 51, 100, 20))?,
        mallory: host("mallory", ip(192, 0, 2, 66))?,
        port: SocketAddr::new(relay_ip, 3_478),
        mallory_port: SocketAddr::new(relay_ip, 3_479),
        alpha_at: [
            SocketAddr::new(ip(192, 0, 2, 10), 40_000),
            SocketAddr::new(ip(192, 0, 2, 10), 40_001),
        ],
        beta_at: SocketAddr::new(ip(198, 51, 100, 20), 41_000),
        mallory_at: SocketAddr::new(ip(192, 0, 2, 66), 6_666),
    };
    let epoch = world.epoch();
    let wall = WallClock::new(epoch, 1_760_000_000_000_000);

    let mut config = RelayConfig::new(wall, world.fork_seed());
    config.own_ips = vec![relay_ip];
    world.install(cast.relay, Relay::new(config));
    let now = world.now();
    let relay = &mut world.app::<Relay>(cast.relay).expect("installed").machine;
    for (allocation, key, nodes, local) in [
        (ALLOCATION, KEY, [1, BETA_NODE.0], cast.port),
        (MALLORY_ALLOCATION, MALLORY_KEY, [3, 4], cast.mallory_port),
    ] {
        relay
            .allocate(
                now,
                AllocationSpec {
                    allocation,
                    assoc: AssocId(allocation),
                    key,
                    nodes: nodes.map(NodeId),
                    local,
                },
            )
            .expect("two allocations fit");
    }
    world.wake(cast.relay);

    let gap = Duration::from_secs_f64(1.0 / p.f64("data_pps"));
    let endpoint = |local, leg, tag, peer_tag, bind_from, move_at| EndpointConfig {
        local,
        relay: cast.port,
        key: KEY,
        allocation: ALLOCATION,
        leg,
        tag,
        peer_tag,
        wall,
        bind_from,
        bind_every: Duration::from_secs(1),
        data_from: epoch + Duration::from_millis(200),
        data_every: gap,
        move_at,
    };
    let alpha = endpoint(
        cast.alpha_at[0],
        0,
        b'A',
        b'B',
        epoch,
        Some(epoch + secs("move_at_s")),
    );
    let beta = endpoint(
        cast.beta_at,
        1,
        b'B',
        b'A',
        epoch + secs("second_leg_at_s"),
        None,
    );
    world.install(cast.alpha, LegEndpoint::new(alpha));
    world.install(cast.beta, LegEndpoint::new(beta));
    world.install(
        cast.mallory,
        Attacker::new(AttackerConfig {
            local: cast.mallory_at,
            target: cast.port,
            target_allocation: ALLOCATION,
            own: cast.mallory_port,
            own_allocation: MALLORY_ALLOCATION,
            own_key: MALLORY_KEY,
            wall,
            from: epoch + Duration::from_millis(100),
            every: Duration::from_secs_f64(p.f64("attack_every_ms") / 1e3),
            check_key: KEY,
        }),
    );

    let duration = secs("duration_s");
    // Mallory captures alpha's binds off the wire.
    let (alpha_host, mallory_host) = (cast.alpha, cast.mallory);
    world.every(
        Duration::ZERO,
        Duration::from_millis(50),
        duration,
        move |w| {
            let captured = w
                .app_ref::<LegEndpoint>(alpha_host)
                .and_then(|a| a.machine.last_bind.clone());
            if let Some(m) = w.app::<Attacker>(mallory_host) {
                m.machine.captured = captured;
            }
        },
    );
    let relay_host = cast.relay;
    world.at(secs("release_at_s"), move |w| {
        if let Some(r) = w.app::<Relay>(relay_host) {
            r.machine
                .release(MALLORY_ALLOCATION)
                .expect("allocated at the start");
        }
        w.wake(relay_host);
    });
    world.at(secs("revoke_at_s"), move |w| {
        if let Some(r) = w.app::<Relay>(relay_host) {
            r.machine.release_node(BETA_NODE);
        }
        w.wake(relay_host);
    });
    invariants(&mut world, &cast);
    world.run_for(duration);
    Ok(summary(&world, &cast, p, epoch, max_one_way))
}

/// Registers the invariants checked after every event.
fn invariants(world: &mut World, cast: &Cast) {
    let (relay, alpha, beta, mallory) = (cast.relay, cast.alpha, cast.beta, cast.mallory);
    let (alpha_at, beta_at, mallory_at) = (cast.alpha_at, cast.beta_at, cast.mallory_at);
    world.add_invariant("the attacker gets nothing through", move |w| {
        let Some(m) = w.app_ref::<Attacker>(mallory) else {
            return Ok(());
        };
        let r = m.machine.returns;
        if r.not_cookies > 0 {
            return Err(format!(
                "{} datagrams from the endpoints' allocation reached the attacker that were not its own cookie",
                r.not_cookies
            ));
        }
        if r.oversized > 0 || r.from_target.1 > m.machine.sent.0 || r.from_own.1 > m.machine.sent.1 {
            return Err("the attacker got more than it sent".to_owned());
        }
        Ok(())
    });
    let mut seen = [0usize; 2];
    world.add_invariant("endpoints receive only each other's data", move |w| {
        for (n, host) in [alpha, beta].into_iter().enumerate() {
            let Some(e) = w.app_ref::<LegEndpoint>(host) else {
                continue;
            };
            for (at, event) in &e.events[seen[n].min(e.events.len())..] {
                if let EndpointEvent::Foreign { len } = event {
                    return Err(format!(
                        "{} received {len} foreign bytes at {}",
                        w.host_name(host),
                        ms(*at)
                    ));
                }
            }
            seen[n] = e.events.len();
        }
        Ok(())
    });
    world.add_invariant(
        "legs only at the endpoints, data only between bound legs",
        move |w| {
            let Some(r) = w.app_ref::<Relay>(relay) else {
                return Ok(());
            };
            if r.machine.allocations().count() > 2 {
                return Err("more allocations than were made".to_owned());
            }
            for view in r.machine.allocations() {
                let [leg0, leg1] = view.legs().clone().map(|l| l.addr);
                let allowed = if view.id() == ALLOCATION {
                    leg0.is_none_or(|a| alpha_at.contains(&a)) && leg1.is_none_or(|a| a == beta_at)
                } else {
                    leg0.is_none_or(|a| a == mallory_at) && leg1.is_none()
                };
                if !allowed {
                    return Err(format!(
                        "allocation {} has legs {leg0:?} and {leg1:?}",
                        view.id()
                    ));
                }
                let c = view.counters();
                if !view.is_ready() && c.forwarded.iter().any(|t| t.packets > 0) {
                    return Err(format!(
                        "allocation {} forwarded before both legs were bound",
                        view.id()
                    ));
                }
                if view
                    .legs()
                    .iter()
                    .any(|l| l.replay_len() > BIND_REPLAY_CAPACITY)
                {
                    return Err("a replay cache over its bound".to_owned());
                }
            }
            if w.inbox_len(relay) > INBOX_LIMIT {
                return Err("the relay's inbox over its limit".to_owned());
            }
            Ok(())
        },
    );
}

/// The endpoints' allocation's counters: live, or as released.
fn allocation_counters(world: &World, relay: HostId) -> AllocationCounters {
    let Some(r) = world.app_ref::<Relay>(relay) else {
        return AllocationCounters::default();
    };
    if let Some(view) = r.machine.allocation(ALLOCATION) {
        return view.counters();
    }
    r.events
        .iter()
        .find_map(|(_, e)| match e {
            RelayEvent::Released {
                allocation: ALLOCATION,
                counters,
                ..
            } => Some(*counters),
            _ => None,
        })
        .unwrap_or_default()
}

fn summary(
    world: &World,
    cast: &Cast,
    p: &Params,
    epoch: Instant,
    max_one_way: Duration,
) -> Summary {
    let mut summary = Summary::default();
    let secs = |name: &str| Duration::from_secs_f64(p.f64(name));
    let revoke = secs("revoke_at_s");
    let ready_at = world.app_ref::<Relay>(cast.relay).and_then(|r| {
        r.events.iter().find_map(|(at, e)| match e {
            RelayEvent::LegBound {
                allocation: ALLOCATION,
                ready: true,
                ..
            } => Some(*at),
            _ => None,
        })
    });
    summary.row(
        "both legs bound at",
        ready_at.map_or("never".to_owned(), ms),
    );
    for (host, name) in [(cast.alpha, "alpha"), (cast.beta, "beta")] {
        let Some(e) = world.app_ref::<LegEndpoint>(host) else {
            continue;
        };
        let acks: Vec<(Duration, SocketAddr)> = e
            .events
            .iter()
            .filter_map(|(at, ev)| match ev {
                EndpointEvent::Acked {
                    observed,
                    pinned: true,
                } => Some((*at, *observed)),
                _ => None,
            })
            .collect();
        let received: Vec<Duration> = e
            .events
            .iter()
            .filter_map(|(at, ev)| matches!(ev, EndpointEvent::Received { .. }).then_some(*at))
            .collect();
        let sent = e.machine.sent.len();
        summary.row(
            &format!("{name} binds that pinned or refreshed"),
            acks.len(),
        );
        summary.row(&format!("{name} payloads sent"), sent);
        summary.row(&format!("{name} payloads received"), received.len());
        let late = received
            .iter()
            .filter(|&&at| at > revoke + max_one_way)
            .count();
        summary.row(&format!("{name} payloads received after the revoke"), late);
        if late > 0 {
            summary
                .violations
                .push(format!("{name} received {late} payloads after the revoke"));
        }
        if let (Some(first), Some(ready)) = (received.first(), ready_at) {
            if *first < ready {
                summary.violations.push(format!(
                    "{name} received data at {} before both legs were bound at {}",
                    ms(*first),
                    ms(ready)
                ));
            }
        }
        let expected: &[SocketAddr] = if host == cast.alpha {
            &cast.alpha_at
        } else {
            std::slice::from_ref(&cast.beta_at)
        };
        if let Some((at, wrong)) = acks.iter().find(|(_, o)| !expected.contains(o)) {
            summary
                .violations
                .push(format!("{name} was acknowledged at {wrong} at {}", ms(*at)));
        }
    }
    let moved = world
        .app_ref::<Relay>(cast.relay)
        .is_some_and(|r| {
            r.events.iter().any(|(_, e)| {
                matches!(e, RelayEvent::LegBound { allocation: ALLOCATION, moved_from: Some(from), .. } if *from == cast.alpha_at[0])
            })
        });
    summary.row("alpha's leg moved with its fresh bind", moved);
    let c = allocation_counters(world, cast.relay);
    summary.row(
        "relay forwarded alpha → beta / beta → alpha",
        format!("{} / {}", c.forwarded[0].packets, c.forwarded[1].packets),
    );
    summary.row("relay binds that pinned or refreshed", c.binds);
    summary.row("relay binds answered with a cookie", c.challenges);
    for reason in DropReason::ALL {
        summary.row(&format!("relay dropped: {reason}"), c.dropped(reason));
    }
    if let Some(m) = world.app_ref::<Attacker>(cast.mallory) {
        let m = &m.machine;
        summary.row(
            "attacker bytes sent (target / own allocation)",
            format!("{} / {}", m.sent.0, m.sent.1),
        );
        summary.row(
            "attacker bytes received (target / own allocation)",
            format!("{} / {}", m.returns.from_target.1, m.returns.from_own.1),
        );
        summary.row(
            "attacker received other than its own cookie",
            m.returns.not_cookies,
        );
        let release = epoch + secs("release_at_s") + max_one_way;
        let after = m.last_from_own.filter(|&at| at > release);
        summary.row(
            "attacker answered after its allocation was released",
            after.is_some(),
        );
        if let Some(at) = after {
            summary.violations.push(format!(
                "the released allocation answered at {}",
                ms(at - epoch)
            ));
        }
    }
    summary.finish(world);
    summary
}
