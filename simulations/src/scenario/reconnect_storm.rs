//! A reconnect storm: many enrolled nodes hold control sessions to one
//! coordinator, which restarts from its operation log. Every node notices
//! its dead session (idle timeout), and all of them reconnect against the
//! coordinator's handshake limit; their jittered exponential backoff
//! (DESIGN §5) spreads the retries of those refused. Every node must be
//! admitted again within 60 s of the restart. Real mutual-TLS QUIC
//! handshakes, tokens and hellos throughout.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use transitloom_proto_core::control::quic::QuicTiming;
use transitloom_proto_core::control::tls_config::TlsIdentity;
use transitloom_proto_core::control::token::JoinToken;
use transitloom_proto_core::coordinator::registry::Op;
use transitloom_proto_core::coordinator::HandshakeLimit;
use transitloom_proto_core::csprng::Drbg;
use transitloom_proto_core::dataplane::UplinkSpec;
use transitloom_proto_core::node::{Credentials, Node, NodeConfig, NodeEvent, SessionState};
use transitloom_proto_core::pki;
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::UplinkId;

use super::control_plane::{
    hub_config, identity, install_hub, ip, key, make_pki, restart_hub, InMemoryCoordinator, Pki,
    COORDINATOR, UNIX_START,
};
use super::params::Allowed::Range;
use super::{ParamSpec, Params, Scenario, Summary};
use crate::link::{LinkParams, Loss};
use crate::world::{HostId, World};
use crate::SimError;

pub(super) const SCENARIO: Scenario = Scenario {
    name: "reconnect-storm",
    about: "N nodes reconnect at once after a coordinator restart; all must be admitted again within 60 s",
    params: PARAMS,
    run,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "nodes",
        default: "1000",
        about: "enrolled, admitted nodes holding a session",
        allowed: Range(1.0, 5_000.0),
    },
    ParamSpec {
        name: "handshakes_per_s",
        default: "50",
        about: "the coordinator's handshake limit (new sessions per second, burst of one second)",
        allowed: Range(1.0, 100_000.0),
    },
    ParamSpec {
        name: "restart_at_s",
        default: "90",
        about: "when the coordinator restarts from its log (every node must be live by then)",
        allowed: Range(1.0, 3_600.0),
    },
    ParamSpec {
        name: "duration_s",
        default: "160",
        about: "virtual run time (at least restart_at_s + 60)",
        allowed: Range(2.0, 7_200.0),
    },
    ParamSpec {
        name: "delay_ms",
        default: "20",
        about: "one-way delay of each access link",
        allowed: Range(0.0, 5_000.0),
    },
    ParamSpec {
        name: "loss",
        default: "0",
        about: "independent loss per access link direction",
        allowed: Range(0.0, 0.5),
    },
];

/// How soon after a restart every node must be admitted again.
pub(super) const RECOVERY_BOUND: Duration = Duration::from_secs(60);

/// A node enrolled before the run starts: its TLS identity, and the log
/// entries (invite with admission, enrollment) that made it so.
pub(super) fn enrolled(
    pki: &Pki,
    drbg: &mut Drbg,
    name: &str,
) -> Result<(TlsIdentity, [Op; 2]), SimError> {
    let fail = |e: &dyn std::fmt::Display| SimError::Topology(format!("node {name}: {e}"));
    let node_key = key(drbg);
    let csr = pki::node_csr(&node_key.pkcs8).map_err(|e| fail(&e))?;
    let mut serial = [0u8; 16];
    drbg.fill(&mut serial);
    let cert = pki::sign_node_csr(
        &pki.intermediate,
        &pki.intermediate_key,
        &csr,
        name,
        (UNIX_START - 3_600) as i64,
        30,
        serial,
    )
    .map_err(|e| fail(&e))?;
    let invite = JoinToken::generate(drbg, name).map_err(|e| fail(&e))?;
    let ops = [
        Op::Invite {
            node: name.to_owned(),
            digest: invite.digest(),
            expires_unix_s: UNIX_START + 3_600,
            admit: true,
        },
        Op::Enroll {
            node: name.to_owned(),
            fingerprint: pki::cert_fingerprint(&cert),
            at_unix_s: UNIX_START - 60,
        },
    ];
    Ok((identity(&[&cert, &pki.intermediate], &node_key.pkcs8), ops))
}

/// The config of an enrolled node without services.
pub(super) fn node_config(
    name: &str,
    public: std::net::IpAddr,
    coordinator: SocketAddr,
    root: &CertificateDer<'static>,
    identity: TlsIdentity,
    wall: WallClock,
    seed: [u8; 32],
) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        coordinators: vec![coordinator],
        coordinator_name: COORDINATOR.to_owned(),
        coordinator_names: Default::default(),
        root: root.clone(),
        credentials: Credentials::Enrolled(identity),
        control_bind: SocketAddr::new(public, 0),
        advertise_private: false,
        services: Vec::new(),
        uplinks: vec![UplinkSpec::new(UplinkId(0), "wan", public)],
        wall_clock: wall,
        timing: QuicTiming::default(),
        seed,
    }
}

/// Sessions started and attempts refused so far, across restarts.
#[derive(Debug, Default, Clone, Copy)]
struct Starts {
    started: u64,
    throttled: u64,
}

fn hub_starts(w: &World, hub: HostId) -> Starts {
    w.app_ref::<InMemoryCoordinator>(hub)
        .map(|a| {
            let c = a.machine.coordinator.counters();
            Starts {
                started: c.handshakes,
                throttled: c.handshakes_throttled,
            }
        })
        .unwrap_or_default()
}

/// The `q`-quantile of sorted `times` (nearest rank).
fn quantile(times: &[Duration], q: f64) -> Option<Duration> {
    if times.is_empty() {
        return None;
    }
    let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
    Some(times[rank - 1])
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn run(seed: u64, p: &Params) -> Result<Summary, SimError> {
    let count = p.u64("nodes") as usize;
    let restart_at = Duration::from_secs_f64(p.f64("restart_at_s"));
    let duration = Duration::from_secs_f64(p.f64("duration_s"));
    if duration < restart_at + RECOVERY_BOUND {
        return Err(SimError::Param {
            name: "duration_s".to_owned(),
            reason: format!(
                "{} ends before restart_at_s + 60 s, so recovery cannot be judged",
                duration.as_secs_f64()
            ),
        });
    }
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
    let mut config = hub_config(&pki, listen, wall, 600)?;
    let limit = HandshakeLimit::per_second(p.u64("handshakes_per_s") as u32);
    config.handshake_limit = limit;

    // Every node is enrolled and admitted in the log before the run.
    let mut log = Vec::with_capacity(2 * count);
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("n{i:04}");
        let (tls, ops) = enrolled(&pki, &mut drbg, &name)?;
        log.extend(ops);
        let k = i + 1;
        let public = ip(100, 64 + (k >> 16) as u8, (k >> 8) as u8, k as u8);
        let host = world.add_host(&name);
        world.add_iface(host, public, internet, link.clone(), link.clone())?;
        let node = Node::new(node_config(
            &name,
            public,
            listen,
            &root,
            tls,
            wall,
            drbg.key(),
        ))
        .map_err(|e| SimError::Topology(e.to_string()))?;
        nodes.push((host, node));
    }
    install_hub(&mut world, hub, &config, log, drbg.fork())?;
    let hosts: Vec<HostId> = nodes.iter().map(|(h, _)| *h).collect();
    for (host, node) in nodes {
        world.install(host, node);
    }

    // Once a second: the coordinator's session starts and refusals.
    let carried = Rc::new(RefCell::new(Starts::default()));
    let samples: Rc<RefCell<Vec<(Duration, Starts)>>> = Rc::default();
    {
        let (carried, samples) = (carried.clone(), samples.clone());
        world.every(Duration::ZERO, Duration::from_secs(1), duration, move |w| {
            let base = *carried.borrow();
            let now = hub_starts(w, hub);
            samples.borrow_mut().push((
                w.elapsed(),
                Starts {
                    started: base.started + now.started,
                    throttled: base.throttled + now.throttled,
                },
            ));
        });
    }
    let live_before = Rc::new(RefCell::new(0usize));
    {
        let (carried, live_before, hosts) = (carried.clone(), live_before.clone(), hosts.clone());
        let restart_seed = drbg.fork();
        world.at(restart_at, move |w| {
            *live_before.borrow_mut() = hosts
                .iter()
                .filter(|&&h| {
                    w.app_ref::<Node>(h)
                        .is_some_and(|n| n.machine.session_state() == SessionState::Live)
                })
                .count();
            let old = hub_starts(w, hub);
            let mut c = carried.borrow_mut();
            c.started += old.started;
            c.throttled += old.throttled;
            drop(c);
            restart_hub(w, hub, &config, restart_seed);
        });
    }
    world.run_until(world.epoch() + duration);

    // When each node was admitted again (its first Welcome after the restart).
    let mut back: Vec<Duration> = hosts
        .iter()
        .filter_map(|&h| {
            world.app_ref::<Node>(h)?.events.iter().find_map(|(at, e)| {
                (*at > restart_at && *e == NodeEvent::Session(SessionState::Live))
                    .then(|| *at - restart_at)
            })
        })
        .collect();
    back.sort();
    let mut summary = Summary::default();
    let live_before = *live_before.borrow();
    summary.row("nodes", count);
    summary.row("handshake limit", format!("{} per s", limit.per_s));
    summary.row("nodes live before the restart", live_before);
    summary.row("nodes admitted again", back.len());
    let shown = |d: Option<Duration>| d.map_or("never".to_owned(), seconds);
    for (label, q) in [("50%", 0.5), ("95%", 0.95), ("100%", 1.0)] {
        let at = if back.len() == count {
            quantile(&back, q)
        } else {
            // Not everyone came back: only the quantiles reached are real.
            quantile(&back, q * count as f64 / back.len().max(1) as f64)
                .filter(|_| (q * count as f64).ceil() as usize <= back.len())
        };
        summary.row(&format!("{label} admitted again after"), shown(at));
    }

    // Per-second rates from the cumulative samples.
    let samples = samples.borrow();
    let mut peak_started = (0u64, Duration::ZERO);
    let mut peak_attempts = (0u64, Duration::ZERO);
    let (mut started_after, mut throttled_after) = (0u64, 0u64);
    for pair in samples.windows(2) {
        let ((_, a), (at, b)) = (pair[0], pair[1]);
        let started = b.started - a.started;
        let attempts = started + (b.throttled - a.throttled);
        let t = at.as_secs_f64();
        summary
            .series
            .push(("session starts/s".to_owned(), t, started as f64));
        summary
            .series
            .push(("attempts/s".to_owned(), t, attempts as f64));
        if at > restart_at {
            started_after += started;
            throttled_after += b.throttled - a.throttled;
            if started > peak_started.0 {
                peak_started = (started, at - restart_at);
            }
            if attempts > peak_attempts.0 {
                peak_attempts = (attempts, at - restart_at);
            }
        }
    }
    summary.row(
        "peak session starts per second after the restart",
        format!(
            "{} (in the second before +{})",
            peak_started.0,
            seconds(peak_started.1)
        ),
    );
    summary.row(
        "peak attempts per second after the restart",
        format!(
            "{} (in the second before +{})",
            peak_attempts.0,
            seconds(peak_attempts.1)
        ),
    );
    summary.row("sessions started after the restart", started_after);
    summary.row(
        "attempts refused by the limit after the restart",
        throttled_after,
    );

    if live_before < count {
        summary.violations.push(format!(
            "only {live_before} of {count} nodes were live at the restart: raise restart_at_s"
        ));
    }
    if back.len() < count {
        summary.violations.push(format!(
            "{} of {count} nodes were never admitted again",
            count - back.len()
        ));
    }
    if let Some(&last) = back.last() {
        if last > RECOVERY_BOUND {
            let late = back.iter().filter(|&&t| t > RECOVERY_BOUND).count();
            summary.violations.push(format!(
                "{late} nodes were admitted again later than 60 s after the restart (last at +{})",
                seconds(last)
            ));
        }
    }
    summary.finish(&world);
    Ok(summary)
}
