//! A third node that relays for the pair (DESIGN §7, node relay): gamma,
//! on a public address, hosts the same relay machine as the coordinator,
//! and the coordinator places the pair's allocation there. An invariant
//! checks that once an association is withdrawn (an end revoked), or the
//! relay node itself is revoked, gamma forwards nothing more for it.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use transitloom_proto_core::coordinator::registry::Op;
use transitloom_proto_core::coordinator::RelayHosting;
use transitloom_proto_core::csprng::Drbg;
use transitloom_proto_core::node::Node;
use transitloom_proto_core::relay::RelayConfig;
use transitloom_proto_core::time::WallClock;

use super::super::control_plane::Pki;
use super::super::reconnect_storm::{enrolled, node_config};
use crate::link::LinkParams;
use crate::world::{HostId, SegmentId, World};
use crate::SimError;

/// Gamma's public address.
pub const GAMMA_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 103, 1));

/// Adds gamma, relaying on `GAMMA_IP` ports 45000-45999, to `internet`,
/// started at once or at `start`; returns its host and the log entries
/// that enroll it.
pub(super) fn add_relay_node(
    world: &mut World,
    pki: &Pki,
    drbg: &mut Drbg,
    (internet, link): (SegmentId, &LinkParams),
    listen: SocketAddr,
    wall: WallClock,
    start: Option<Duration>,
) -> Result<(HostId, [Op; 2]), SimError> {
    let (tls, ops) = enrolled(pki, drbg, "gamma")?;
    let host = world.add_host("gamma");
    world.add_iface(host, GAMMA_IP, internet, link.clone(), link.clone())?;
    let root = CertificateDer::from(pki.root.clone());
    let config = node_config("gamma", GAMMA_IP, listen, &root, tls, wall, drbg.key());
    let mut node = Node::new(config).map_err(|e| SimError::Topology(e.to_string()))?;
    let mut relay = RelayConfig::new(wall, drbg.next_u64());
    relay.own_ips = vec![GAMMA_IP];
    node.host_relay(RelayHosting {
        relay,
        bind_ip: GAMMA_IP,
        advertise_ip: GAMMA_IP,
        ports: Some((45_000, 45_999)),
    });
    match start {
        Some(at) => world.at(at, move |w| w.install(host, node)),
        None => world.install(host, node),
    }
    Ok((host, ops))
}

/// Bytes gamma's relay forwarded in all, and its allocations now.
pub(super) fn gamma_relay(w: &World, gamma: HostId) -> (u64, usize) {
    let Some(relay) = w.app_ref::<Node>(gamma).and_then(|n| {
        n.machine
            .relay()
            .map(|r| r.allocations().collect::<Vec<_>>())
    }) else {
        return (0, 0);
    };
    let bytes = relay
        .iter()
        .map(|a| a.counters().forwarded.iter().map(|c| c.bytes).sum::<u64>())
        .sum();
    (bytes, relay.len())
}

/// From `bound` on (a revocation plus the time its push takes), gamma
/// holds no allocation and forwards not one byte more. `floor` keeps the
/// bytes seen at the bound, since a released allocation takes its counters
/// with it.
pub(super) fn nothing_forwarded_after(world: &mut World, gamma: HostId, bound: Duration) {
    let floor: Rc<Cell<Option<u64>>> = Rc::new(Cell::new(None));
    world.add_invariant(
        "relay forwards nothing for withdrawn associations",
        move |w| {
            if w.elapsed() < bound {
                return Ok(());
            }
            let (bytes, allocations) = gamma_relay(w, gamma);
            if allocations > 0 {
                return Err(format!("gamma still holds {allocations} allocations"));
            }
            match floor.get() {
                None => floor.set(Some(bytes)),
                Some(was) if bytes > was => {
                    return Err(format!("gamma forwarded {} bytes more", bytes - was))
                }
                Some(_) => {}
            }
            Ok(())
        },
    );
}

/// Gamma's address, to tell its relay paths from the coordinator's.
pub(super) fn is_gamma(addr: SocketAddr) -> bool {
    addr.ip() == GAMMA_IP
}
