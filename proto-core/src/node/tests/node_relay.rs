//! Node relays (DESIGN §7): a real coordinator, two nodes that cannot
//! reach each other directly, and a third node that hosts the same relay
//! machine as the coordinator. The coordinator places the association's
//! allocation on the relaying node, announces it only once the node
//! reported the port open, moves it when the relaying node is revoked, and
//! has it released at once when an end is revoked. It never places more on
//! a relaying node than its offer allows, refuses a relaying node behind a
//! NAT, and moves an association from its own relay onto a relaying node
//! that comes later without losing a datagram (make-before-break).

use super::*;
use crate::coordinator::registry::Op;
use crate::coordinator::RelayHosting;
use crate::dataplane::PathKind;
use crate::relay::RelayConfig;

const GAMMA: &str = "203.0.113.30";

fn wall(mesh: &Mesh) -> WallClock {
    WallClock::new(mesh.now, UNIX_NOW * 1_000_000)
}

fn hosting(wall: WallClock, ip: IpAddr, seed: u64, ports: (u16, u16)) -> RelayHosting {
    let mut relay = RelayConfig::new(wall, seed);
    relay.own_ips = vec![ip];
    RelayHosting {
        relay,
        bind_ip: ip,
        advertise_ip: ip,
        ports: Some(ports),
    }
}

/// Alpha and beta (one association, no direct path between them) and
/// gamma, which relays; run until the association is up.
fn relayed_mesh() -> Mesh {
    let mut mesh = relay_nodes(&[]);
    mesh.run(Duration::from_secs(10));
    mesh
}

/// Alpha, beta and gamma as in [`relayed_mesh`], and `more` relaying
/// nodes (name, address) after gamma; not started.
fn relay_nodes(more: &[(&str, &str)]) -> Mesh {
    let mut nodes = vec![
        (
            "alpha",
            "192.0.2.10",
            vec![service(
                1,
                "wg0",
                "127.0.0.1:51820",
                &[("beta/wg0", "127.0.0.1:41000")],
            )],
        ),
        (
            "beta",
            "198.51.100.20",
            vec![service(
                1,
                "wg0",
                "127.0.0.1:51820",
                &[("alpha/wg0", "127.0.0.1:41000")],
            )],
        ),
        ("gamma", GAMMA, Vec::new()),
    ];
    nodes.extend(more.iter().map(|&(name, ip)| (name, ip, Vec::new())));
    let mut mesh = Mesh::with_nodes(nodes);
    let (a, b) = (mesh.hosts[0].public, mesh.hosts[1].public);
    mesh.blocked.extend([(a, b), (b, a)]);
    for i in 2..mesh.hosts.len() {
        let ports = (45_000 + 100 * i as u16, 45_099 + 100 * i as u16);
        let hosting = hosting(wall(&mesh), mesh.hosts[i].public, i as u64, ports);
        mesh.hosts[i].node.host_relay(hosting);
    }
    mesh
}

fn relay_paths(mesh: &Mesh, host: usize, peer: &str) -> Vec<(PathKind, SocketAddr, PathState)> {
    mesh.assoc(host, "wg0", peer)
        .map(|v| {
            v.paths()
                .filter(|p| p.kind.is_relay())
                .map(|p| (p.kind, p.remote, p.state))
                .collect()
        })
        .unwrap_or_default()
}

/// Both ends of the association are up with an active path of `kind`
/// through `relay`.
fn both_ends_active_on(mesh: &Mesh, kind: PathKind, relay: SocketAddr) {
    for (host, peer) in [(0, "beta/wg0"), (1, "alpha/wg0")] {
        let paths = relay_paths(mesh, host, peer);
        assert!(
            paths
                .iter()
                .any(|&(k, r, s)| k == kind && r == relay && s == PathState::Active),
            "host {host}: {paths:?}"
        );
        assert!(mesh.assoc(host, "wg0", peer).unwrap().is_up());
    }
}

/// Alpha's service sends `n` distinct datagrams; true when beta's service
/// got exactly them, in order, from its ingress.
fn carries(mesh: &mut Mesh, n: u8) -> bool {
    let before = mesh.hosts[1].local.len();
    let sent: Vec<Vec<u8>> = (0..n)
        .map(|i| (0..200u16).map(|j| (j as u8) ^ i).collect())
        .collect();
    for payload in &sent {
        mesh.service_sends(0, "wg0", "beta/wg0", payload);
        mesh.run(Duration::from_millis(20));
    }
    mesh.run(Duration::from_millis(100));
    let got: Vec<&[u8]> = mesh.hosts[1].local[before..]
        .iter()
        .map(|(from, to, payload)| {
            assert_eq!(*from, addr("127.0.0.1:41000"));
            assert_eq!(*to, addr("127.0.0.1:51820"));
            &payload[..]
        })
        .collect();
    got == sent.iter().map(Vec::as_slice).collect::<Vec<_>>()
}

fn forwarded_bytes(mesh: &Mesh, host: usize) -> u64 {
    mesh.hosts[host]
        .node
        .relay()
        .map(|r| {
            r.allocations()
                .map(|a| a.counters().forwarded.iter().map(|c| c.bytes).sum::<u64>())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn traffic_crosses_a_node_relay_byte_for_byte() {
    let mut mesh = relayed_mesh();
    let placements = mesh.coordinator.relay_placements();
    assert_eq!(placements.len(), 1, "{placements:?}");
    assert_eq!(placements[0].node.as_deref(), Some("gamma"));
    let relay = placements[0].addr.expect("the port is open");
    assert_eq!(relay.ip(), mesh.hosts[2].public);
    let gamma = mesh.hosts[2].node.relay().unwrap();
    let allocs: Vec<_> = gamma.allocations().collect();
    assert_eq!(allocs.len(), 1);
    assert!(allocs[0].is_ready(), "both legs bound");
    assert_eq!(allocs[0].id(), placements[0].allocation);
    both_ends_active_on(&mesh, PathKind::NodeRelay, relay);
    let before = forwarded_bytes(&mesh, 2);
    assert!(carries(&mut mesh, 20), "{:?}", mesh.hosts[1].local.len());
    assert!(
        forwarded_bytes(&mesh, 2) >= before + 20 * 200,
        "the data crossed gamma"
    );
}

#[test]
fn revoking_the_relay_node_moves_the_association_to_the_coordinator_relay() {
    let mut mesh = relayed_mesh();
    assert_eq!(
        mesh.coordinator.relay_placements()[0].node.as_deref(),
        Some("gamma")
    );
    // Only now the coordinator relays too: placements made before stay.
    let ip = mesh.listen.ip();
    let hosting = hosting(wall(&mesh), ip, 8, (30_000, 30_099));
    mesh.coordinator.host_relay(hosting);
    mesh.run(Duration::from_secs(1));
    assert_eq!(
        mesh.coordinator.relay_placements()[0].node.as_deref(),
        Some("gamma")
    );
    let now = mesh.now;
    mesh.coordinator.append_for_test(
        now,
        Op::Revoke {
            node: "gamma".to_owned(),
        },
    );
    mesh.run(Duration::from_millis(200));
    // The revoked relay dropped everything at once and forwards nothing.
    assert_eq!(mesh.hosts[2].node.relay().unwrap().allocations().count(), 0);
    let forwarded = forwarded_bytes(&mesh, 2);
    mesh.run(Duration::from_secs(5));
    let placements = mesh.coordinator.relay_placements();
    assert_eq!(placements.len(), 1, "{placements:?}");
    assert_eq!(placements[0].node, None, "on the coordinator's relay");
    let relay = placements[0].addr.expect("open");
    assert_eq!(relay.ip(), ip);
    for (host, peer) in [(0, "beta/wg0"), (1, "alpha/wg0")] {
        let paths = relay_paths(&mesh, host, peer);
        assert!(
            paths
                .iter()
                .all(|&(k, _, _)| k == PathKind::CoordinatorRelay),
            "host {host}: gamma's path is gone: {paths:?}"
        );
    }
    both_ends_active_on(&mesh, PathKind::CoordinatorRelay, relay);
    assert!(carries(&mut mesh, 10));
    assert_eq!(forwarded_bytes(&mesh, 2), forwarded);
    let hub = mesh.coordinator.relay().unwrap();
    assert_eq!(hub.allocations().count(), 1);
}

#[test]
fn revoking_an_end_releases_the_allocation_at_the_relay_node_at_once() {
    let mut mesh = relayed_mesh();
    assert!(carries(&mut mesh, 3));
    assert_eq!(mesh.hosts[2].node.relay().unwrap().allocations().count(), 1);
    let now = mesh.now;
    mesh.coordinator.append_for_test(
        now,
        Op::Revoke {
            node: "beta".to_owned(),
        },
    );
    // One control message away, not an idle expiry.
    mesh.run(Duration::from_millis(100));
    assert_eq!(mesh.hosts[2].node.relay().unwrap().allocations().count(), 0);
    assert!(mesh.coordinator.relay_placements().is_empty());
    let released = mesh.hosts[2].events.iter().any(|e| {
        matches!(
            e,
            NodeEvent::Relay(crate::relay::RelayEvent::Released {
                reason: crate::relay::ReleaseReason::Released,
                ..
            })
        )
    });
    assert!(released, "{:?}", mesh.hosts[2].events);
}

#[test]
fn a_relay_node_that_disconnects_hands_its_associations_on() {
    let mut mesh = relayed_mesh();
    let first = mesh.coordinator.relay_placements()[0].clone();
    // Gamma's control session ends (its daemon stops).
    let now = mesh.now;
    mesh.hosts[2].node.shut_down(now);
    mesh.run(Duration::from_millis(300));
    assert_eq!(mesh.hosts[2].node.relay().unwrap().allocations().count(), 0);
    let placements = mesh.coordinator.relay_placements();
    assert!(
        placements.iter().all(|p| p.allocation != first.allocation),
        "{placements:?}"
    );
    // No other relay: the ends dropped the leg rather than keep a dead one.
    assert!(placements.is_empty(), "{placements:?}");
    for (host, peer) in [(0, "beta/wg0"), (1, "alpha/wg0")] {
        assert!(relay_paths(&mesh, host, peer).is_empty(), "host {host}");
        let view = mesh.assoc(host, "wg0", peer).unwrap();
        assert!(view.relay().is_none(), "host {host}");
    }
}

#[test]
fn a_relaying_node_whose_port_fails_hands_the_allocation_to_another() {
    // Gamma is asked first (it is online first), but none of its ports
    // opens: the allocation goes to delta, the other relaying node.
    let mut mesh = relay_nodes(&[("delta", "203.0.113.40")]);
    let gamma = mesh.hosts[2].public;
    mesh.taken
        .extend((45_200..=45_299).map(|port| SocketAddr::new(gamma, port)));
    mesh.run(Duration::from_secs(10));
    let failed = mesh.hosts[2].events.iter().any(|e| {
        matches!(
            e,
            NodeEvent::Relay(crate::relay::RelayEvent::AllocationFailed { .. })
        )
    });
    assert!(failed, "gamma was asked first: {:?}", mesh.hosts[2].events);
    let placements = mesh.coordinator.relay_placements();
    assert_eq!(placements.len(), 1, "{placements:?}");
    assert_eq!(placements[0].node.as_deref(), Some("delta"));
    assert_eq!(mesh.hosts[2].node.relay().unwrap().allocations().count(), 0);
    let relay = placements[0].addr.unwrap();
    assert_eq!(relay.ip(), mesh.hosts[3].public);
    both_ends_active_on(&mesh, PathKind::NodeRelay, relay);
    assert!(carries(&mut mesh, 5));
}

/// Both services send one distinct datagram each 20 ms for `duration`;
/// how many each sent, and whether each side got exactly the other's, in
/// order.
fn both_ways(mesh: &mut Mesh, duration: Duration, round: u8) -> (usize, bool) {
    let before = [mesh.hosts[0].local.len(), mesh.hosts[1].local.len()];
    let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let steps = (duration.as_millis() / 20) as usize;
    for i in 0..steps {
        for (host, peer) in [(0, "beta/wg0"), (1, "alpha/wg0")] {
            let mut payload = vec![round, host as u8];
            payload.extend_from_slice(&(i as u32).to_be_bytes());
            payload.resize(120, 0x5a);
            mesh.service_sends(host, "wg0", peer, &payload);
            sent[host].push(payload);
        }
        mesh.run(Duration::from_millis(20));
    }
    mesh.run(Duration::from_millis(200));
    let got = |host: usize| -> Vec<Vec<u8>> {
        mesh.hosts[host].local[before[host]..]
            .iter()
            .map(|(_, _, p)| p.to_vec())
            .collect()
    };
    (steps, got(1) == sent[0] && got(0) == sent[1])
}

#[test]
fn an_association_on_the_coordinator_relay_moves_to_a_node_relay_without_a_gap() {
    let mut mesh = relay_nodes(&[]);
    let ip = mesh.listen.ip();
    let hub = hosting(wall(&mesh), ip, 8, (30_000, 30_099));
    mesh.coordinator.host_relay(hub);
    // Gamma starts later: only the coordinator relays at first.
    let gamma = mesh.hosts.remove(2);
    mesh.run(Duration::from_secs(10));
    let first = mesh.coordinator.relay_placements();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].node, None, "on the coordinator's relay");
    let old = first[0].addr.expect("open");
    both_ends_active_on(&mesh, PathKind::CoordinatorRelay, old);
    let (_, clean) = both_ways(&mut mesh, Duration::from_secs(1), 0);
    assert!(clean, "carried over the coordinator's relay");

    // Gamma comes online and offers relaying while data flows both ways.
    mesh.hosts.push(gamma);
    let (sent, clean) = both_ways(&mut mesh, Duration::from_secs(8), 1);
    assert!(sent >= 400, "{sent}");
    assert!(clean, "a datagram was lost or reordered during the move");

    let placements = mesh.coordinator.relay_placements();
    assert_eq!(placements.len(), 1, "{placements:?}");
    assert_eq!(placements[0].node.as_deref(), Some("gamma"), "moved");
    assert_ne!(placements[0].allocation, first[0].allocation);
    let new = placements[0].addr.expect("open");
    assert_eq!(new.ip(), mesh.hosts[2].public);
    both_ends_active_on(&mesh, PathKind::NodeRelay, new);
    // The old allocation was released after the handover, at the relay
    // and at both ends.
    assert_eq!(mesh.coordinator.relay().unwrap().allocations().count(), 0);
    for (host, peer) in [(0, "beta/wg0"), (1, "alpha/wg0")] {
        let paths = relay_paths(&mesh, host, peer);
        assert!(
            paths.iter().all(|&(_, r, _)| r != old),
            "host {host}: the old relay's path is gone: {paths:?}"
        );
    }
    let before = forwarded_bytes(&mesh, 2);
    let (_, clean) = both_ways(&mut mesh, Duration::from_secs(1), 2);
    assert!(clean);
    assert!(
        forwarded_bytes(&mesh, 2) >= before + 2 * 50 * 120,
        "the data crosses gamma now"
    );
}

#[test]
fn a_move_the_relaying_node_refuses_leaves_the_association_where_it_was() {
    let mut mesh = relay_nodes(&[]);
    let ip = mesh.listen.ip();
    let hub = hosting(wall(&mesh), ip, 8, (30_000, 30_099));
    mesh.coordinator.host_relay(hub);
    let gamma = mesh.hosts.remove(2);
    mesh.run(Duration::from_secs(10));
    let first = mesh.coordinator.relay_placements()[0].clone();
    assert_eq!(first.node, None);
    // None of gamma's relay ports can open.
    let g = gamma.public;
    mesh.taken
        .extend((45_200..=45_299).map(|port| SocketAddr::new(g, port)));
    mesh.hosts.push(gamma);
    let (_, clean) = both_ways(&mut mesh, Duration::from_secs(8), 1);
    assert!(clean, "nothing lost while the move failed");
    let failed = mesh.hosts[2].events.iter().any(|e| {
        matches!(
            e,
            NodeEvent::Relay(crate::relay::RelayEvent::AllocationFailed { .. })
        )
    });
    assert!(failed, "gamma was asked: {:?}", mesh.hosts[2].events);
    let placements = mesh.coordinator.relay_placements();
    assert_eq!(placements, vec![first.clone()], "stays on the coordinator");
    both_ends_active_on(&mesh, PathKind::CoordinatorRelay, first.addr.unwrap());
}

#[test]
fn a_relaying_node_behind_a_nat_is_not_chosen() {
    // Gamma's relay binds a private address while the coordinator sees
    // its session come from its public one: a NAT stands between, and
    // nobody outside could reach its ports. Delta's session comes from
    // its own (private) address: no NAT between it and the coordinator.
    let mut mesh = relay_nodes(&[("delta", "10.0.0.40")]);
    let private: IpAddr = "10.0.0.30".parse().unwrap();
    let behind_nat = hosting(wall(&mesh), private, 2, (45_200, 45_299));
    mesh.hosts[2].node.host_relay(behind_nat);
    mesh.run(Duration::from_secs(10));
    let refused = mesh.coordinator.relay_offers_refused();
    assert_eq!(
        refused,
        vec![("gamma".to_owned(), private, mesh.hosts[2].public)],
        "{refused:?}"
    );
    // Gamma is told, and says so; delta is not refused.
    assert_eq!(
        mesh.hosts[2].node.relay_refused(),
        Some((private, mesh.hosts[2].public))
    );
    assert_eq!(mesh.hosts[3].node.relay_refused(), None);
    let nodes = mesh.coordinator.relay_nodes();
    assert_eq!(nodes, vec![("delta".to_owned(), mesh.hosts[3].public)]);
    let placements = mesh.coordinator.relay_placements();
    assert_eq!(placements.len(), 1, "{placements:?}");
    assert_eq!(placements[0].node.as_deref(), Some("delta"));
    assert_eq!(mesh.hosts[2].node.relay().unwrap().allocations().count(), 0);
    both_ends_active_on(&mesh, PathKind::NodeRelay, placements[0].addr.unwrap());
    assert!(carries(&mut mesh, 5));
}

#[test]
fn a_retiring_leg_carries_until_its_successor_works_and_goes_if_never_released() {
    let mut mesh = relayed_mesh();
    let relay = mesh.coordinator.relay_placements()[0].addr.unwrap();
    let id = mesh.assoc(0, "wg0", "beta/wg0").unwrap().spec().id;
    // A new allocation at an address that never answers, as a coordinator
    // that restarted might announce, and then never releases the old one.
    let offer = crate::dataplane::RelayOffer {
        relay: addr("203.0.113.99:45000"),
        allocation: 999,
        leg: 0,
        key: [7; 32],
        kind: PathKind::NodeRelay,
    };
    let now = mesh.now;
    mesh.hosts[0].node.plane.add_relay(now, id, offer).unwrap();
    mesh.run(Duration::from_secs(1));
    let old_path = |mesh: &Mesh| {
        relay_paths(mesh, 0, "beta/wg0")
            .into_iter()
            .find(|&(_, r, _)| r == relay)
    };
    assert_eq!(
        old_path(&mesh).map(|(_, _, s)| s),
        Some(PathState::Active),
        "the retiring leg's path stays"
    );
    assert!(
        carries(&mut mesh, 5),
        "and carries while the new one is not usable"
    );
    mesh.run(crate::dataplane::RELAY_RETIRE_MAX);
    assert_eq!(old_path(&mesh), None, "dropped once the bound passed");
    let view = mesh.assoc(0, "wg0", "beta/wg0").unwrap();
    assert_eq!(view.relay().unwrap().0.allocation, 999);
}

#[test]
fn the_coordinator_places_no_more_on_a_relaying_node_than_it_announced() {
    // Alpha has two associations (with beta and with delta), none of which
    // can go direct; gamma relays but takes one allocation only, either
    // for its whole table or per node (alpha is an end of both).
    for (max, quota) in [(1, 16), (1_024, 1)] {
        let mut mesh = Mesh::with_nodes(vec![
            (
                "alpha",
                "192.0.2.10",
                vec![service(
                    1,
                    "wg0",
                    "127.0.0.1:51820",
                    &[
                        ("beta/wg0", "127.0.0.1:41000"),
                        ("delta/wg0", "127.0.0.1:41001"),
                    ],
                )],
            ),
            (
                "beta",
                "198.51.100.20",
                vec![service(
                    1,
                    "wg0",
                    "127.0.0.1:51820",
                    &[("alpha/wg0", "127.0.0.1:41000")],
                )],
            ),
            ("gamma", GAMMA, Vec::new()),
            (
                "delta",
                "198.51.100.40",
                vec![service(
                    1,
                    "wg0",
                    "127.0.0.1:51820",
                    &[("alpha/wg0", "127.0.0.1:41000")],
                )],
            ),
        ]);
        let [a, b, d] = [0, 1, 3].map(|i| mesh.hosts[i].public);
        mesh.blocked.extend([(a, b), (b, a), (a, d), (d, a)]);
        let mut gamma = hosting(wall(&mesh), mesh.hosts[2].public, 2, (45_200, 45_299));
        gamma.relay.max_allocations = max;
        gamma.relay.quota_per_node = quota;
        mesh.hosts[2].node.host_relay(gamma);
        let ip = mesh.listen.ip();
        let hub = hosting(wall(&mesh), ip, 8, (30_000, 30_099));
        mesh.coordinator.host_relay(hub);
        mesh.run(Duration::from_secs(10));
        let placements = mesh.coordinator.relay_placements();
        assert_eq!(placements.len(), 2, "{placements:?}");
        let on_gamma = placements
            .iter()
            .filter(|p| p.node.as_deref() == Some("gamma"))
            .count();
        assert_eq!(on_gamma, 1, "max {max}, quota {quota}: {placements:?}");
        assert!(
            placements.iter().all(|p| p.addr.is_some()),
            "{placements:?}"
        );
        let refused = mesh.hosts[2]
            .node
            .relay()
            .unwrap()
            .counters()
            .refused_allocations;
        assert_eq!(refused, 0, "never asked beyond its offer");
        for (host, peer) in [(1, "alpha/wg0"), (3, "alpha/wg0")] {
            assert!(
                mesh.assoc(host, "wg0", peer).unwrap().is_up(),
                "host {host}"
            );
        }
    }
}
